/*
** framing.c: the byte buffer behind braid.basic's receivers.
** A framebuf holds a connection's unconsumed input in one growable array
** [off, off+len) so finding a delimiter or a length prefix is a memchr or
** a few byte reads, never a Lua string concatenation.
** Invariant: off + len <= cap; data is NULL only when cap is 0.
** A frame is consumed before its string is pushed: lua_pushlstring copies
** the bytes first and may then run the collector, whose finalizers may use
** this same buffer (the bytes stay in place until the string is made;
** fb_trim may give the array back only after that).
*/
#include <stdlib.h>
#include <string.h>
#include "braid.h"

#define FB_META "braid.framebuf"

struct framebuf {
  char *data;
  size_t off, len, cap;
};

/* make room for n more bytes; returns 0, or 1 when out of memory */
static int fb_reserve(struct framebuf *b, size_t n) {
  if (b->off > 0 && (b->off + b->len + n > b->cap || b->off > b->cap / 2)) {
    memmove(b->data, b->data + b->off, b->len); /* compact before growing */
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) return 1;
    b->data = p;
    b->cap = cap;
  }
  return 0;
}

/* methods carry the metatable as upvalue 1: one rawequal instead of
   luaL_checkudata's registry lookup by name, on every line */
static struct framebuf *fb_check(lua_State *L, int i) {
  void *p = lua_touserdata(L, i);
  if (p != NULL && lua_getmetatable(L, i)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ok) return p;
  }
  return luaL_checkudata(L, i, FB_META); /* raises the usual error */
}

static void fb_consume(struct framebuf *b, size_t n) {
  if (n > b->len) n = b->len;
  b->off += n;
  b->len -= n;
  if (b->len == 0) b->off = 0;
}

/* An empty buffer holds no array, as Twisted's goes back to b"": a
** connection that idles keeps nothing of the reads before (a 64 KiB read
** grows the array to 128 KiB). One that still holds a partial frame keeps at
** most FB_KEEP bytes once the rest fits in half of that. */
#define FB_KEEP 4096

/* Called after a frame's string is pushed (its bytes were read from the
** array). A shrinking realloc that fails keeps the larger array. */
static void fb_trim(struct framebuf *b) {
  if (b->len == 0) {
    free(b->data);
    b->data = NULL;
    b->off = b->cap = 0;
    return;
  }
  if (b->cap <= FB_KEEP || b->len > FB_KEEP / 2) return;
  memmove(b->data, b->data + b->off, b->len);
  b->off = 0;
  char *p = realloc(b->data, FB_KEEP);
  if (p != NULL) {
    b->data = p;
    b->cap = FB_KEEP;
  }
}

static int fb_new(lua_State *L) {
  struct framebuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, FB_META);
  return 1;
}

static int fb_append(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  size_t n;
  luaL_checktype(L, 2, LUA_TSTRING); /* a number is refused, as LuaFrameBuffer does */
  const char *s = lua_tolstring(L, 2, &n);
  if (n == 0) return 0;
  if (fb_reserve(b, n)) return luaL_error(L, "framebuf: out of memory");
  memcpy(b->data + b->off + b->len, s, n);
  b->len += n;
  return 0;
}

static const char *fb_find(const char *h, size_t hn, const char *d, size_t dn) {
  if (dn == 0 || hn < dn) return NULL;
  const char *end = h + hn - dn + 1;
  while (h < end) {
    const char *p = memchr(h, d[0], (size_t)(end - h));
    if (p == NULL) return NULL;
    if (memcmp(p, d, dn) == 0) return p;
    h = p + 1;
  }
  return NULL;
}

/* nextLine(delim, max) -> line | nil (need more) | false, "toolong".
   "toolong": a line longer than max, or max + #delim bytes and no delimiter */
static int fb_nextline(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  size_t dn;
  luaL_checktype(L, 2, LUA_TSTRING); /* a number is refused, as LuaFrameBuffer does */
  const char *d = lua_tolstring(L, 2, &dn);
  lua_Integer max = luaL_checkinteger(L, 3);
  luaL_argcheck(L, dn > 0, 2, "empty delimiter");
  const char *start = b->data ? b->data + b->off : NULL;
  const char *p = start ? fb_find(start, b->len, d, dn) : NULL;
  if (p == NULL) { /* as Twisted: a partial line may hold a split delimiter */
    if ((lua_Integer)b->len - (lua_Integer)dn >= max) { /* max + dn may overflow */
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "toolong");
      return 2;
    }
    lua_pushnil(L);
    return 1;
  }
  size_t n = (size_t)(p - start);
  if ((lua_Integer)n > max) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "toolong");
    return 2;
  }
  fb_consume(b, n + dn);
  lua_pushlstring(L, start, n);
  fb_trim(b);
  return 1;
}

/* nextNetstring(max) -> s | nil | false, "malformed"|"toolong" */
static int fb_nextnetstring(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  const unsigned char *s = (const unsigned char *)(b->data ? b->data + b->off : "");
  size_t i = 0, n = 0, maxdigits = 1;
  for (lua_Integer m = max; m >= 10; m /= 10) maxdigits++;
  /* a leading zero is malformed at once, and before too long, as Twisted */
  if (b->len > 1 && s[0] == '0' && s[1] >= '0' && s[1] <= '9') goto malformed;
  while (i < b->len && s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + (s[i] - '0');
    i++;
    if (i > maxdigits || max < 0 || n > (size_t)max) goto toolong; /* 19 digits overflow lua_Integer */
  }
  if (i == b->len) { lua_pushnil(L); return 1; }
  if (i == 0 || s[i] != ':') goto malformed;
  if (b->len < i + 1 + n + 1) { lua_pushnil(L); return 1; }
  if (s[i + 1 + n] != ',') goto malformed;
  fb_consume(b, i + 1 + n + 1);
  lua_pushlstring(L, (const char *)s + i + 1, n);
  fb_trim(b);
  return 1;
toolong:
  lua_pushboolean(L, 0);
  lua_pushliteral(L, "toolong");
  return 2;
malformed:
  lua_pushboolean(L, 0);
  lua_pushliteral(L, "malformed");
  return 2;
}

/* nextPrefixed(k, max) -> s | nil | false, "toolong", length */
static int fb_nextprefixed(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  lua_Integer k = luaL_checkinteger(L, 2);
  lua_Integer max = luaL_checkinteger(L, 3);
  luaL_argcheck(L, k == 1 || k == 2 || k == 4, 2, "prefix must be 1, 2 or 4 bytes");
  if ((lua_Integer)b->len < k) { lua_pushnil(L); return 1; }
  const unsigned char *s = (const unsigned char *)b->data + b->off;
  unsigned long n = 0;
  for (lua_Integer i = 0; i < k; i++) n = (n << 8) | s[i];
  if ((lua_Integer)n > max) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "toolong");
    lua_pushinteger(L, (lua_Integer)n);
    return 3;
  }
  if (b->len < (size_t)k + n) { lua_pushnil(L); return 1; }
  fb_consume(b, (size_t)k + n);
  lua_pushlstring(L, (const char *)s + k, n);
  fb_trim(b);
  return 1;
}

static int fb_take(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "negative count");
  if ((size_t)n > b->len) n = (lua_Integer)b->len;
  const char *start = b->data ? b->data + b->off : "";
  fb_consume(b, (size_t)n);
  lua_pushlstring(L, start, (size_t)n);
  fb_trim(b);
  return 1;
}

static int fb_takeall(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  const char *start = b->data ? b->data + b->off : "";
  size_t n = b->len;
  fb_consume(b, n);
  lua_pushlstring(L, start, n);
  fb_trim(b);
  return 1;
}

static int fb_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fb_check(L, 1)->len);
  return 1;
}

static int fb_clear(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  b->off = b->len = 0;
  fb_trim(b);
  return 0;
}

/* _capacity() -> the bytes the array holds room for (for specs) */
static int fb_capacity(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)fb_check(L, 1)->cap);
  return 1;
}

/* __gc and __close: a buffer's memory may go early (a to-be-closed
** variable); what is left is an empty buffer that works on */
static int fb_gc(lua_State *L) {
  struct framebuf *b = fb_check(L, 1);
  free(b->data);
  b->data = NULL;
  b->off = b->len = b->cap = 0;
  return 0;
}

static const luaL_Reg fb_methods[] = {
  { "append", fb_append },
  { "nextLine", fb_nextline },
  { "nextNetstring", fb_nextnetstring },
  { "nextPrefixed", fb_nextprefixed },
  { "take", fb_take },
  { "takeAll", fb_takeall },
  { "len", fb_len },
  { "clear", fb_clear },
  { "_capacity", fb_capacity },
  { NULL, NULL }
};

static void fb_createmeta(lua_State *L) {
  if (luaL_newmetatable(L, FB_META)) {
    luaL_newlibtable(L, fb_methods);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fb_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, fb_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, fb_gc, 1);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

/* adds framebuf() to the braid.core table on top of the stack */
void braid_open_framing(lua_State *L) {
  fb_createmeta(L);
  lua_pushcfunction(L, fb_new);
  lua_setfield(L, -2, "framebuf");
}

int luaopen_braid_framing(lua_State *L) {
  lua_newtable(L);
  braid_open_framing(L);
  return 1;
}
