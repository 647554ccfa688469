/*
** threads_copy.c: how braid.threads copies values between Lua states:
** encoded into a malloc'd byte buffer in one state, decoded in another.
**
** Copyable: nil, booleans, numbers, strings and tables of those (keys:
** strings, numbers, booleans), without cycles or metatables, nested at
** most MAX_DEPTH deep. A table reached again by another path is copied
** once and comes out as one table (a reference to it is encoded), so the
** copy keeps the sharing and costs what the values do, not what the paths
** do. Encoding never raises (a refusal comes back as a message naming the
** path of the bad value); decoding may raise for memory only, so callers
** run it protected.
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "threads_copy.h"

#define MAX_DEPTH 64        /* nesting of copied tables */

/* ---- byte buffers ------------------------------------------------------- */

static int buf_reserve(struct buf *b, size_t more) {
  if (b->cap - b->n >= more) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n < more) {
    if (cap > ((size_t)-1) / 2) return ENOMEM;
    cap *= 2;
  }
  char *p = realloc(b->p, cap);
  if (!p) return ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline int buf_put(struct buf *b, const void *s, size_t n) {
  if (b->cap - b->n < n && buf_reserve(b, n)) return ENOMEM;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 0;
}

static inline int buf_byte(struct buf *b, unsigned char c) {
  if (b->n == b->cap && buf_reserve(b, 1)) return ENOMEM;
  b->p[b->n++] = (char)c;
  return 0;
}

static int buf_varint(struct buf *b, uint64_t v) {
  unsigned char t[10];
  size_t n = 0;
  do {
    t[n++] = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return buf_put(b, t, n);
}

void braid_buf_free(struct buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* Tags of encoded values. A list of values is a varint count, then each.
** A table is T_TABLE, u32 array length, u32 count of other pairs (slots
** patched at the end), the array items, then key/value pairs. The array
** items are t[1], t[2], ... up to the first nil (at most #t): #t alone is
** any border, and for a table such as {1, 2, 3, 4, [5] = 5, [8] = 8,
** [16] = 16, ..., [2^40] = 40} it is 2^40, which would be that many nils
** to encode. */
enum { T_NIL, T_FALSE, T_TRUE, T_INT, T_FLT, T_STR, T_TABLE, T_REF };

/* The tables encoded so far, by address: their numbers, from 1 in the
** order they were started (a T_REF names one). Open addressing. */
struct ptrmap {
  const void **k;
  uint32_t *v;
  size_t cap, n;
};

static size_t pm_slot(const struct ptrmap *m, const void *p) {
  size_t h = ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ULL;
  size_t i = h & (m->cap - 1);
  while (m->k[i] && m->k[i] != p) i = (i + 1) & (m->cap - 1);
  return i;
}

static uint32_t pm_get(const struct ptrmap *m, const void *p) {
  if (m->cap == 0) return 0;
  size_t i = pm_slot(m, p);
  return m->k[i] ? m->v[i] : 0;
}

static int pm_put(struct ptrmap *m, const void *p, uint32_t v) {
  if ((m->n + 1) * 2 > m->cap) {
    struct ptrmap g = { NULL, NULL, m->cap ? m->cap * 2 : 16, 0 };
    g.k = calloc(g.cap, sizeof *g.k);
    g.v = malloc(g.cap * sizeof *g.v);
    if (!g.k || !g.v) { free(g.k); free(g.v); return ENOMEM; }
    for (size_t i = 0; i < m->cap; i++)
      if (m->k[i]) {
        size_t j = pm_slot(&g, m->k[i]);
        g.k[j] = m->k[i];
        g.v[j] = m->v[i];
        g.n++;
      }
    free(m->k);
    free(m->v);
    *m = g;
  }
  size_t i = pm_slot(m, p);
  m->k[i] = p;
  m->v[i] = v;
  m->n++;
  return 0;
}

struct enc {
  lua_State *L;
  struct buf *b;
  int depth;
  const void *seen[MAX_DEPTH];  /* the tables being encoded: a cycle points back */
  int keyidx[MAX_DEPTH];        /* stack index of the key per level, 0: array part */
  lua_Integer arri[MAX_DEPTH];  /* array index per level */
  char why[160];                /* what could not be copied, and where */
  int err;                      /* 0, EINVAL (not copyable) or ENOMEM */
  struct ptrmap tables;         /* the tables started so far */
};

static void path_key(struct enc *e, int level, char *out, size_t len) {
  lua_State *L = e->L;
  int k = e->keyidx[level];
  if (k == 0) { snprintf(out, len, "[%lld]", (long long)e->arri[level]); return; }
  switch (lua_type(L, k)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, k, &n);
      int ident = n > 0 && n <= 40 && !(s[0] >= '0' && s[0] <= '9');
      for (size_t i = 0; ident && i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9'))) ident = 0;
      if (ident) snprintf(out, len, ".%s", s);
      else snprintf(out, len, "[\"%.*s%s\"]", (int)(n > 24 ? 24 : n), s, n > 24 ? "..." : "");
      break;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, k)) snprintf(out, len, "[%lld]", (long long)lua_tointeger(L, k));
      else snprintf(out, len, "[%.14g]", (double)lua_tonumber(L, k));
      break;
    case LUA_TBOOLEAN: snprintf(out, len, "[%s]", lua_toboolean(L, k) ? "true" : "false"); break;
    default: snprintf(out, len, "[?]"); break;
  }
}

static const char *type_phrase(int t) {
  switch (t) {
    case LUA_TFUNCTION: return "a function";
    case LUA_TUSERDATA: case LUA_TLIGHTUSERDATA: return "a userdata";
    case LUA_TTHREAD: return "a coroutine";
    case LUA_TTABLE: return "a table";
    default: return "a value";
  }
}

/* Record why (and at which path) the value cannot be copied. */
static int enc_fail(struct enc *e, const char *what, int levels) {
  size_t n = (size_t)snprintf(e->why, sizeof e->why, "%s", what);
  if (levels > 0 && n < sizeof e->why) {
    n += (size_t)snprintf(e->why + n, sizeof e->why - n, " at ");
    for (int i = 0; i < levels && n < sizeof e->why; i++) {
      char k[64];
      path_key(e, i, k, sizeof k);
      n += (size_t)snprintf(e->why + n, sizeof e->why - n, "%s", k);
    }
  }
  e->err = EINVAL;
  return EINVAL;
}

static int enc_value(struct enc *e, int idx);

static int enc_table(struct enc *e, int idx) {
  lua_State *L = e->L;
  struct buf *b = e->b;
  const void *p = lua_topointer(L, idx);
  int d = e->depth;
  for (int i = 0; i < d; i++)
    if (e->seen[i] == p) return enc_fail(e, "a table that contains itself", d);
  uint32_t ref = pm_get(&e->tables, p);
  if (ref) {  /* reached before by another path: the same table */
    if (buf_byte(b, T_REF) || buf_varint(b, ref)) return e->err = ENOMEM;
    return 0;
  }
  if (d >= MAX_DEPTH) return enc_fail(e, "tables nested too deeply", d);
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return enc_fail(e, "a table with a metatable", d);
  }
  if (!lua_checkstack(L, 4)) return e->err = ENOMEM;
  if (e->tables.n >= UINT32_MAX - 1 || pm_put(&e->tables, p, (uint32_t)e->tables.n + 1))
    return e->err = ENOMEM;
  lua_Unsigned len = lua_rawlen(L, idx), narr = 0;
  if (len > UINT32_MAX) len = UINT32_MAX;
  if (buf_byte(b, T_TABLE) || buf_reserve(b, 8)) return e->err = ENOMEM;
  size_t slot = b->n;
  b->n += 8;
  e->seen[d] = p;
  e->depth = d + 1;
  e->keyidx[d] = 0;
  while (narr < len) {
    if (lua_rawgeti(L, idx, (lua_Integer)narr + 1) == LUA_TNIL) {
      lua_pop(L, 1);
      break;
    }
    e->arri[d] = (lua_Integer)++narr;
    int r = enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (r) return r;
  }
  uint32_t nhash = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    int kt = lua_type(L, k);
    if (kt == LUA_TNUMBER && lua_isinteger(L, k)) {
      lua_Integer ki = lua_tointeger(L, k);
      if (ki >= 1 && (lua_Unsigned)ki <= narr) { lua_pop(L, 1); continue; }
    }
    e->keyidx[d] = k;
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      char what[48];
      snprintf(what, sizeof what, "%s key", type_phrase(kt));
      e->keyidx[d] = 0;
      e->arri[d] = 0;
      int r = enc_fail(e, what, d);
      lua_pop(L, 2);
      return r;
    }
    int r = enc_value(e, k);
    if (!r) r = enc_value(e, k + 1);
    lua_pop(L, 1);
    if (r) { lua_pop(L, 1); return r; }
    if (nhash == UINT32_MAX) { lua_pop(L, 1); return e->err = ENOMEM; }
    nhash++;
  }
  uint32_t narr32 = (uint32_t)narr;
  memcpy(b->p + slot, &narr32, 4);
  memcpy(b->p + slot + 4, &nhash, 4);
  e->depth = d;
  return 0;
}

static int enc_value(struct enc *e, int idx) {
  lua_State *L = e->L;
  struct buf *b = e->b;
  int t = lua_type(L, idx);
  switch (t) {
    case LUA_TNIL: return buf_byte(b, T_NIL) ? (e->err = ENOMEM) : 0;
    case LUA_TBOOLEAN:
      return buf_byte(b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE) ? (e->err = ENOMEM) : 0;
    case LUA_TNUMBER: {
      char t9[9];
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        t9[0] = T_INT;
        memcpy(t9 + 1, &v, 8);
      } else {
        double v = (double)lua_tonumber(L, idx);
        t9[0] = T_FLT;
        memcpy(t9 + 1, &v, 8);
      }
      return buf_put(b, t9, 9) ? (e->err = ENOMEM) : 0;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      if (buf_reserve(b, n + 11)) return e->err = ENOMEM;
      buf_byte(b, T_STR);
      buf_varint(b, n);
      buf_put(b, s, n);
      return 0;
    }
    case LUA_TTABLE: return enc_table(e, idx);
    default: return enc_fail(e, type_phrase(t), e->depth);
  }
}

/* Encode the n values from stack index `first` into b. On failure b is
** left as it was and msg reads "<fname>: <what> (<why>) cannot be copied
** <dir>", `what` being "argument #k" (k counted from argn) or, with argn
** 0, "the result". Returns 0, EINVAL or ENOMEM; never raises. */
int braid_copy_encode(lua_State *L, int first, int n, struct buf *b, const char *fname,
                      int argn, const char *dir, char *msg, size_t msglen) {
  struct enc e;
  size_t n0 = b->n;
  e.L = L;
  e.b = b;
  e.err = 0;
  e.tables = (struct ptrmap){ NULL, NULL, 0, 0 };
  if (buf_varint(b, (uint64_t)n)) goto nomem;
  for (int i = 0; i < n; i++) {
    e.depth = 0;
    if (enc_value(&e, first + i)) {
      b->n = n0;
      free(e.tables.k);
      free(e.tables.v);
      if (e.err == ENOMEM) goto nomem;
      if (argn > 0)
        snprintf(msg, msglen, "%s: argument #%d (%s) cannot be copied %s", fname, argn + i, e.why, dir);
      else
        snprintf(msg, msglen, "%s: the result (%s) cannot be copied %s", fname, e.why, dir);
      return EINVAL;
    }
  }
  free(e.tables.k);
  free(e.tables.v);
  return 0;
nomem:
  free(e.tables.k);
  free(e.tables.v);
  b->n = n0;
  snprintf(msg, msglen, "%s: not enough memory to copy the values %s", fname, dir);
  return ENOMEM;
}

/* Encode strings directly (error messages): no Lua stack needed. */
int braid_copy_strings(struct buf *b, int n, const char **s, const size_t *len) {
  if (buf_varint(b, (uint64_t)n)) return ENOMEM;
  for (int i = 0; i < n; i++)
    if (buf_byte(b, T_STR) || buf_varint(b, len[i]) || buf_put(b, s[i], len[i])) return ENOMEM;
  return 0;
}

/* refs: the stack index of the list of the tables decoded so far (a
** T_REF names one), made at the first table, below the values (at base):
** values without tables cost no list */
struct dec { const unsigned char *p; int base, refs; lua_Integer ntables; };

static uint64_t dec_varint(struct dec *d) {
  uint64_t v = 0;
  int shift = 0;
  unsigned char c;
  do {
    c = *d->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    shift += 7;
  } while (c & 0x80);
  return v;
}

/* Push one value; the bytes were made by enc_value (trusted). May raise
** (memory) only: callers run it protected. */
static void dec_value(lua_State *L, struct dec *d) {
  switch (*d->p++) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: { lua_Integer v; memcpy(&v, d->p, 8); d->p += 8; lua_pushinteger(L, v); break; }
    case T_FLT: { double v; memcpy(&v, d->p, 8); d->p += 8; lua_pushnumber(L, (lua_Number)v); break; }
    case T_STR: {
      size_t n = (size_t)dec_varint(d);
      lua_pushlstring(L, (const char *)d->p, n);
      d->p += n;
      break;
    }
    case T_TABLE: {
      uint32_t narr, nhash;
      memcpy(&narr, d->p, 4);
      memcpy(&nhash, d->p + 4, 4);
      d->p += 8;
      luaL_checkstack(L, 4, "copied tables nested too deeply");
      if (!d->refs) {
        lua_newtable(L);
        lua_insert(L, d->base);  /* the values decoded so far move up one */
        d->refs = d->base;
      }
      lua_createtable(L, narr > INT32_MAX ? INT32_MAX : (int)narr, (int)(nhash > INT32_MAX ? INT32_MAX : nhash));
      lua_pushvalue(L, -1);
      lua_rawseti(L, d->refs, ++d->ntables);
      for (uint64_t i = 1; i <= narr; i++) {
        dec_value(L, d);
        lua_rawseti(L, -2, (lua_Integer)i);
      }
      for (uint32_t i = 0; i < nhash; i++) {
        dec_value(L, d);
        dec_value(L, d);
        lua_rawset(L, -3);
      }
      break;
    }
    case T_REF: {
      lua_Integer i = (lua_Integer)dec_varint(d);
      if (i < 1 || i > d->ntables) luaL_error(L, "braid.threads: corrupt value");
      lua_rawgeti(L, d->refs, i);
      break;
    }
    default: luaL_error(L, "braid.threads: corrupt value"); break;
  }
}

/* Push the values of b; returns how many. */
int braid_copy_decode(lua_State *L, const struct buf *b) {
  if (b->n == 0) return 0;
  struct dec d = { (const unsigned char *)b->p, lua_gettop(L) + 1, 0, 0 };
  int n = (int)dec_varint(&d);
  luaL_checkstack(L, n + 5, "too many values to copy");
  for (int i = 0; i < n; i++) dec_value(L, &d);
  if (d.refs) lua_remove(L, d.refs);
  return n;
}
