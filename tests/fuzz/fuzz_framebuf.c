/*
** fuzz_framebuf.c: runtime/framing.c (braid.core.framebuf) against
** lua/braid/basic.lua's LuaFrameBuffer, the reference it must match.
**
** The input is a program: one opcode byte (mod 9), then its arguments.
**   0 append   n, then n bytes of the input (fewer at its end)
**   1 nextLine delim, max     4 take n        6 clear
**   2 nextNetstring max       5 takeAll       7 len
**   3 nextPrefixed k, max     8 append n, r, n bytes: repeated 1 + 16r
**                               times (at most 64 KiB), to grow the buffer
** Each operation runs on a C and a Lua buffer; every value returned
** (count, types, integer vs float, bytes), and len() after it, must be
** the same. Neither may raise: all arguments are valid. On a difference the
** program is run again, printed as Lua, and the target aborts.
*/
#include "fuzz_lua.h"

static const char *setup =
  "local lua_dir = ...\n"
  "package.path = lua_dir .. '/?.lua;' .. lua_dir .. '/?/init.lua;' .. package.path\n"
  "local basic = require 'braid.basic'\n"
  "assert(basic.cFrameBuffer, 'braid.core has no framebuf')\n"
  "return basic.cFrameBuffer, basic.LuaFrameBuffer.new\n";
enum { NEW_C = 1, NEW_LUA = 2, NSETUP = 2 };

static const struct { const char *s; size_t n; } DELIMS[] = {
  { "\r\n", 2 }, { "\n", 1 }, { "\r", 1 }, { "\0", 1 },
  { "aba", 3 }, { "\r\n\r\n", 4 }, { "::", 2 }, { ",", 1 },
};
#define NDELIMS (sizeof DELIMS / sizeof DELIMS[0])

/* pushes a max: 0..231 as is, else an edge a MAX_LENGTH may take, some
   as integral floats (which framing.c's luaL_checkinteger accepts) */
static void push_max(lua_State *L, uint8_t v) {
  static const lua_Integer ints[16] = {
    -1, 9, 99, 999, 9999, 99999, 65535, 65536,
    2147483647, 4294967295, 4294967296, 1000000000000000000,
    (lua_Integer)1 << 53, LUA_MAXINTEGER - 1, LUA_MAXINTEGER, 100,
  };
  static const lua_Number floats[8] = { 0, 10, 16384, 99999, 1e5, 1e6, 1e15, 1e16 };
  if (v < 232) lua_pushinteger(L, v);
  else if (v < 248) lua_pushinteger(L, ints[v - 232]);
  else lua_pushnumber(L, floats[v - 248]);
}

/* pushes a count for take: 0..247 as is, else a large one */
static void push_count(lua_State *L, uint8_t v) {
  static const lua_Integer edges[8] = {
    255, 256, 4096, 65536, 2147483647, 4294967296, LUA_MAXINTEGER - 1, LUA_MAXINTEGER,
  };
  lua_pushinteger(L, v < 248 ? v : edges[v - 248]);
}

struct reader { const uint8_t *p, *end; };

static uint8_t next_byte(struct reader *r) { return r->p < r->end ? *r->p++ : 0; }

static void show(lua_State *L, int i, char *out, size_t cap) {
  switch (lua_type(L, i)) {
  case LUA_TNIL: snprintf(out, cap, "nil"); break;
  case LUA_TBOOLEAN: snprintf(out, cap, "%s", lua_toboolean(L, i) ? "true" : "false"); break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, i)) snprintf(out, cap, LUA_INTEGER_FMT, lua_tointeger(L, i));
    else snprintf(out, cap, "%.17g (float)", (double)lua_tonumber(L, i));
    break;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, i, &n);
    fuzz_quote(out, cap, s, n);
    break;
  }
  default: snprintf(out, cap, "<%s>", luaL_typename(L, i)); break;
  }
}

static void show_range(lua_State *L, int first, int n, FILE *f) {
  char buf[512];
  if (n == 0) fputs("(nothing)", f);
  for (int i = 0; i < n; i++) {
    show(L, first + i, buf, sizeof buf);
    fprintf(f, "%s%s", i ? ", " : "", buf);
  }
}

static int same_value(lua_State *L, int a, int b) {
  int t = lua_type(L, a);
  if (t != lua_type(L, b)) return 0;
  switch (t) {
  case LUA_TNIL: return 1;
  case LUA_TBOOLEAN: return lua_toboolean(L, a) == lua_toboolean(L, b);
  case LUA_TNUMBER: return lua_isinteger(L, a) == lua_isinteger(L, b) && lua_rawequal(L, a, b);
  case LUA_TSTRING: {
    size_t na, nb;
    const char *sa = lua_tolstring(L, a, &na), *sb = lua_tolstring(L, b, &nb);
    return na == nb && memcmp(sa, sb, na) == 0;
  }
  default: return lua_rawequal(L, a, b);
  }
}

/* buf:name(args): the nargs args are at stack slot args on, left in
   place; pushes the results and returns their count. Raising is a failure:
   every argument the program gives is valid. */
static int call(lua_State *L, int buf, const char *impl, const char *name, int args, int nargs) {
  int top = lua_gettop(L);
  lua_getfield(L, buf, name);
  lua_pushvalue(L, buf);
  for (int i = 0; i < nargs; i++) lua_pushvalue(L, args + i);
  if (lua_pcall(L, 1 + nargs, LUA_MULTRET, 0) != LUA_OK)
    fuzz_fail("%s buffer: %s raised: %s", impl, name, luaL_tolstring(L, -1, NULL));
  return lua_gettop(L) - top;
}

/* run name on both buffers with the top nargs values; compare. Returns 1
   on a difference. With trace, prints the call (always, or only when it
   differs if quiet is set). */
static int both(lua_State *L, int cb, int lb, const char *name, int nargs, FILE *trace,
                int quiet) {
  int args = lua_gettop(L) - nargs + 1;
  int nc = call(L, cb, "C", name, args, nargs);
  int nl = call(L, lb, "Lua", name, args, nargs);
  int rc = lua_gettop(L) - nl - nc + 1, rl = rc + nc;
  int diff = nc != nl;
  for (int i = 0; !diff && i < nc; i++) diff = !same_value(L, rc + i, rl + i);
  if (trace && (diff || !quiet)) {
    char buf[512];
    fprintf(trace, "b:%s(", name);
    for (int i = 0; i < nargs; i++) {
      show(L, args + i, buf, sizeof buf);
      fprintf(trace, "%s%s", i ? ", " : "", buf);
    }
    fputs(")  --> C: ", trace);
    show_range(L, rc, nc, trace);
    if (diff) {
      fputs("  | Lua: ", trace);
      show_range(L, rl, nl, trace);
      fputs("   <== DIFFERENT", trace);
    }
    fputc('\n', trace);
  }
  lua_settop(L, args - 1);
  return diff;
}

/* the program on fresh buffers; 1 on the first difference */
static int run(lua_State *L, const uint8_t *data, size_t size, FILE *trace) {
  struct reader r = { data, data + size };
  lua_pushvalue(L, NEW_C);
  lua_call(L, 0, 1);
  int cb = lua_gettop(L);
  lua_pushvalue(L, NEW_LUA);
  lua_call(L, 0, 1);
  int lb = lua_gettop(L);
  int diff = 0;
  while (!diff && r.p < r.end) {
    const char *name;
    int nargs = 0;
    uint8_t op = next_byte(&r) % 9;
    switch (op) {
    case 0:
    case 8: {
      size_t n = next_byte(&r), times = op == 8 ? 1 + 16 * (size_t)next_byte(&r) : 1;
      size_t avail = (size_t)(r.end - r.p);
      if (n > avail) n = avail;
      if (n > 0 && times > 65536 / n) times = 65536 / n;
      if (times > 1) {
        luaL_Buffer big;
        luaL_buffinit(L, &big);
        for (size_t i = 0; i < times; i++) luaL_addlstring(&big, (const char *)r.p, n);
        luaL_pushresult(&big);
        if (trace) {
          char q[512];
          fuzz_quote(q, sizeof q, (const char *)r.p, n);
          fprintf(trace, "-- the next append is (%s):rep(%zu)\n", q, times);
        }
      } else {
        lua_pushlstring(L, (const char *)r.p, n);
      }
      r.p += n;
      name = "append", nargs = 1;
      break;
    }
    case 1: {
      uint8_t d = next_byte(&r);
      lua_pushlstring(L, DELIMS[d % NDELIMS].s, DELIMS[d % NDELIMS].n);
      push_max(L, next_byte(&r));
      name = "nextLine", nargs = 2;
      break;
    }
    case 2:
      push_max(L, next_byte(&r));
      name = "nextNetstring", nargs = 1;
      break;
    case 3: {
      static const lua_Integer ks[3] = { 1, 2, 4 };
      lua_pushinteger(L, ks[next_byte(&r) % 3]);
      push_max(L, next_byte(&r));
      name = "nextPrefixed", nargs = 2;
      break;
    }
    case 4:
      push_count(L, next_byte(&r));
      name = "take", nargs = 1;
      break;
    case 5: name = "takeAll"; break;
    case 6: name = "clear"; break;
    default: name = "len"; break;
    }
    diff = both(L, cb, lb, name, nargs, trace, 0);
    if (!diff && strcmp(name, "len") != 0) diff = both(L, cb, lb, "len", 0, trace, 1);
  }
  if (!diff) diff = both(L, cb, lb, "takeAll", 0, trace, 0);
  /* free the C buffer's memory now: the GC does not know its size */
  lua_getmetatable(L, cb);
  lua_getfield(L, -1, "__close");
  lua_pushvalue(L, cb);
  lua_call(L, 1, 0);
  return diff;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_state(setup, NSETUP);
  fuzz_begin(L);
  if (run(L, data, size, NULL)) {
    fputs("\nC framebuf and LuaFrameBuffer differ; the program as Lua:\n", stderr);
    fuzz_begin(L);
    run(L, data, size, stderr);
    fuzz_fail("C framebuf and LuaFrameBuffer differ (last line above)");
  }
  fuzz_end(L);
  return 0;
}
