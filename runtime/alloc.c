/*
** alloc.c: the Lua allocator of the states the braid executable makes (its
** main state and the thread pool's workers; braid.core loaded into lua5.4
** uses its host's).
**
** Lua passes the size of every block it frees or resizes, so small blocks
** need no header: blocks of up to SMALL_MAX bytes come from size classes
** (multiples of 16 bytes) carved out of 64 KiB chunks and kept on a free
** list per class when freed; larger blocks are malloc's. A block's origin
** is told by the size Lua gives with it. Tables, strings, closures and
** userdata of a network server are almost all small and short-lived: a
** free-list pop and push cost a few instructions where malloc and free
** cost about a hundred each (docs/benchmarks.md, "Allocator").
**
** Blocks of more than LARGE_MIN up to LARGE_MAX bytes (the strings of socket reads:
** dataReceived's data is a fresh string per read, and garbage soon after)
** are malloc's, rounded up to a multiple of LARGE_GRAIN; a freed one waits
** on its class's free list, up to CACHE_MAX bytes in all, for the next
** block of its class, which is then still warm in the cache. Beyond
** CACHE_MAX they go back to free(), so a burst of large strings is not
** held for good. Blocks between SMALL_MAX and LARGE_MIN (a transport's
** userdata among them: one per connection, long-lived) and beyond
** LARGE_MAX are plain malloc's of their exact size, as rounding the former
** up would cost every idle connection up to LARGE_GRAIN bytes.
**
** Invariants:
** - One pool per Lua state, used by the one thread running that state (a
**   worker's state by its worker): no locking.
** - Chunks are never returned before the state closes; braid_close_state
**   frees them all. Freed small blocks only ever serve their own class.
** - A small block is handed to free() never; a plain one when Lua frees
**   it; a cached-class one when the cache is full, or when the state
**   closes.
** - A block of a cached class has room for the whole class (malloc'd at
**   the class's size), so any size of its class may reuse it.
** - Under AddressSanitizer, or with BRAID_ALLOC=system in the environment
**   (for valgrind's memcheck), every block is malloc's, so the tools see
**   each one.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "braid.h"

#if defined(__SANITIZE_ADDRESS__)
#define BRAID_POOL_DEFAULT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID_POOL_DEFAULT 0
#endif
#endif
#ifndef BRAID_POOL_DEFAULT
#define BRAID_POOL_DEFAULT 1
#endif

#define GRAIN 16
#define SMALL_MAX 256
#define NCLASS (SMALL_MAX / GRAIN)
#define CHUNK_BYTES (64 * 1024)
#define LARGE_GRAIN 256
#define LARGE_MIN 1024
#define LARGE_MAX (128 * 1024)
#define NLARGE (LARGE_MAX / LARGE_GRAIN)
#define CACHE_MAX (1024 * 1024)

struct chunk {
  struct chunk *next;
  /* blocks follow, GRAIN-aligned */
};
#define CHUNK_HEAD ((sizeof(struct chunk) + GRAIN - 1) / GRAIN * GRAIN)

struct pool {
  void *free[NCLASS];   /* free blocks per class, linked through their first word */
  char *bump, *end;     /* the unused rest of the newest chunk */
  struct chunk *chunks; /* every chunk, freed at close */
  void *large[NLARGE];  /* cached large blocks per class (first word: next) */
  size_t cached;        /* bytes on those lists */
};

static unsigned cls(size_t size) { return (unsigned)((size - 1) / GRAIN); }

static void *carve(struct pool *p, unsigned c) {
  size_t want = (size_t)(c + 1) * GRAIN;
  if ((size_t)(p->end - p->bump) < want) {
    struct chunk *k = malloc(CHUNK_BYTES);
    if (!k) return NULL;
    /* the rest of the old chunk goes to its free lists, largest first */
    while ((size_t)(p->end - p->bump) >= GRAIN) {
      size_t left = (size_t)(p->end - p->bump);
      unsigned lc = cls(left > SMALL_MAX ? SMALL_MAX : left / GRAIN * GRAIN);
      *(void **)p->bump = p->free[lc];
      p->free[lc] = p->bump;
      p->bump += (size_t)(lc + 1) * GRAIN;
    }
    k->next = p->chunks;
    p->chunks = k;
    p->bump = (char *)k + CHUNK_HEAD;
    p->end = (char *)k + CHUNK_BYTES;
  }
  void *b = p->bump;
  p->bump += want;
  return b;
}

static void *small_alloc(struct pool *p, size_t size) {
  unsigned c = cls(size);
  void *b = p->free[c];
  if (b) {
    p->free[c] = *(void **)b;
    return b;
  }
  return carve(p, c);
}

static void small_free(struct pool *p, void *b, size_t size) {
  unsigned c = cls(size);
  *(void **)b = p->free[c];
  p->free[c] = b;
}

/* the kinds of block, by size */
enum { K_SMALL, K_PLAIN, K_CACHED };
static int kind(size_t size) {
  return size <= SMALL_MAX ? K_SMALL : size > LARGE_MIN && size <= LARGE_MAX ? K_CACHED : K_PLAIN;
}

/* cached classes: (LARGE_MIN, LARGE_MAX] in steps of LARGE_GRAIN (the
** lower classes stay unused) */
static unsigned lcls(size_t size) { return (unsigned)((size - 1) / LARGE_GRAIN); }

static void *large_alloc(struct pool *p, size_t size) {
  if (kind(size) != K_CACHED) return malloc(size);
  unsigned c = lcls(size);
  void *b = p->large[c];
  if (b) {
    p->large[c] = *(void **)b;
    p->cached -= (size_t)(c + 1) * LARGE_GRAIN;
    return b;
  }
  return malloc((size_t)(c + 1) * LARGE_GRAIN);
}

static void large_free(struct pool *p, void *b, size_t size) {
  size_t room;
  unsigned c;
  if (kind(size) != K_CACHED) {
    free(b);
    return;
  }
  c = lcls(size);
  room = (size_t)(c + 1) * LARGE_GRAIN;
  if (p->cached + room > CACHE_MAX) {
    free(b);
    return;
  }
  *(void **)b = p->large[c];
  p->large[c] = b;
  p->cached += room;
}

/* whether a block of osize bytes has room for nsize where it is: both
** sizes of one small class, or of one cached class */
static int same_class(size_t osize, size_t nsize) {
  int k = kind(osize);
  if (k != kind(nsize) || k == K_PLAIN) return 0;
  return k == K_SMALL ? cls(nsize) == cls(osize) : lcls(nsize) == lcls(osize);
}

static void *pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct pool *p = ud;
  if (ptr == NULL) { /* osize is the kind of object, not a size */
    if (nsize == 0) return NULL;
    return nsize <= SMALL_MAX ? small_alloc(p, nsize) : large_alloc(p, nsize);
  }
  if (nsize == 0) {
    if (osize <= SMALL_MAX) small_free(p, ptr, osize);
    else large_free(p, ptr, osize);
    return NULL;
  }
  if (same_class(osize, nsize)) return ptr;
  if (kind(osize) == K_PLAIN && kind(nsize) == K_PLAIN) return realloc(ptr, nsize);
  /* across classes, or between kinds: move the block */
  void *n = nsize <= SMALL_MAX ? small_alloc(p, nsize) : large_alloc(p, nsize);
  if (!n) {
    /* Lua takes it that a shrink never fails: keep the block, which is
    ** larger than asked. When Lua frees it with the smaller size, it joins
    ** that size's class, whose blocks it is at least as large as, and
    ** stays in the pool */
    return nsize < osize ? ptr : NULL;
  }
  memcpy(n, ptr, osize < nsize ? osize : nsize);
  if (osize <= SMALL_MAX) small_free(p, ptr, osize);
  else large_free(p, ptr, osize);
  return n;
}

static void *system_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud; (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

/* as lauxlib's: an error outside any protected call */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                     : "error object is not a string";
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", msg);
  fflush(stderr);
  return 0; /* abort */
}

/* warn(): off until "@on", as lua.c's (lauxlib's warnf functions, which
** are not exported) */
static void warn_off(void *ud, const char *msg, int tocont);
static void warn_cont(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || *msg++ != '@') return 0;
  if (strcmp(msg, "off") == 0) lua_setwarnf(L, warn_off, L);
  else if (strcmp(msg, "on") == 0) lua_setwarnf(L, warn_cont, L);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) {
  warn_control(ud, msg, tocont);
}

static void warn_more(void *ud, const char *msg, int tocont) {
  fputs(msg, stderr);
  if (tocont) return;
  fputs("\n", stderr);
  fflush(stderr);
  lua_setwarnf(ud, warn_cont, ud);
}

static void warn_cont(void *ud, const char *msg, int tocont) {
  if (warn_control(ud, msg, tocont)) return;
  fputs("Lua warning: ", stderr);
  warn_more(ud, msg, tocont);
  if (tocont) lua_setwarnf(ud, warn_more, ud);
}

static int want_pool(void) {
  const char *e = getenv("BRAID_ALLOC");
  if (e && strcmp(e, "system") == 0) return 0;
  if (e && strcmp(e, "pool") == 0) return 1;
  return BRAID_POOL_DEFAULT;
}

lua_State *braid_new_state(void) {
  lua_State *L;
  if (want_pool()) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    L = lua_newstate(pool_alloc, p);
    if (!L) {
      braid_pool_free(p);
      return NULL;
    }
  } else {
    L = lua_newstate(system_alloc, NULL);
    if (!L) return NULL;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  return L;
}

void braid_pool_free(void *ud) {
  struct pool *p = ud;
  if (!p) return;
  for (unsigned c = 0; c < NLARGE; c++) {
    while (p->large[c]) {
      void *b = p->large[c];
      p->large[c] = *(void **)b;
      free(b);
    }
  }
  while (p->chunks) {
    struct chunk *k = p->chunks;
    p->chunks = k->next;
    free(k);
  }
  free(p);
}

void braid_close_state(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  lua_close(L);
  if (f == pool_alloc) braid_pool_free(ud);
}
