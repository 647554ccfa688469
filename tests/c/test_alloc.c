/*
** test_alloc.c: braid's pooled Lua allocator (runtime/alloc.c) under a
** workload that allocates, grows, shrinks and frees blocks of every size
** class and across the small/large/cached-large boundaries, checking every byte it
** wrote; then the same workload with the system allocator must give the
** same checksum. Under ASan the pool is forced on here (BRAID_ALLOC=pool),
** so LeakSanitizer checks that closing a state frees every chunk.
*/
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "braid.h"

static const char *chunk =
"local rounds = ...\n"
"local sum = 0\n"
"local keep = {}\n"
"local seed = 12345\n"
"local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end\n"
"for r = 1, rounds do\n"
"  -- strings of every length from 1 to 600: short (interned), long, small and large\n"
"  -- blocks; one round in 8 up to 200,000 (cached large classes, and past them)\n"
"  local len = r % 8 == 0 and 1 + rnd(200000) or 1 + rnd(600)\n"
"  local s = string.rep(string.char(65 + r % 26), len) .. r\n"
"  keep[1 + rnd(512)] = s\n"
"  -- tables that grow past the small blocks and shrink again\n"
"  local t = {}\n"
"  local n = r % 32 == 0 and 1 + rnd(6000) or 1 + rnd(80)\n"
"  for i = 1, n do t[i] = i * r end\n"
"  for i = 1, n do t['k' .. i] = i end\n"
"  for i = n, 1, -1 do t[i] = nil; t['k' .. i] = nil end\n"
"  t.x = r\n"
"  collectgarbage('step', 0)\n"
"  keep[1 + rnd(512)] = t\n"
"  -- closures with upvalues, userdata of odd sizes via string.pack buffers\n"
"  local f = function() return len + r end\n"
"  sum = (sum + f() + #string.pack('s4', s)) % 1000000007\n"
"end\n"
"for i = 1, 512 do\n"
"  local v = keep[i]\n"
"  if type(v) == 'string' then\n"
"    local c = v:byte(1)\n"
"    local body = v:match('^(%a+)')\n"
"    assert(body == string.rep(string.char(c), #body), 'a string changed at ' .. i)\n"
"    sum = (sum + #v * c) % 1000000007\n"
"  elseif type(v) == 'table' then\n"
"    assert(next(v) == 'x' and next(v, 'x') == nil, 'a table changed at ' .. i)\n"
"    sum = (sum + v.x) % 1000000007\n"
"  end\n"
"end\n"
"collectgarbage()\n"
"return sum\n";

static int run(const char *mode, long *sum) {
  setenv("BRAID_ALLOC", mode, 1);
  lua_State *L = braid_new_state();
  if (!L) { fprintf(stderr, "FAIL: %s: no state\n", mode); return 1; }
  luaL_openlibs(L);
  if (luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "FAIL: %s\n", lua_tostring(L, -1));
    braid_close_state(L);
    return 1;
  }
  lua_pushinteger(L, 20000);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "FAIL: %s: %s\n", mode, lua_tostring(L, -1));
    braid_close_state(L);
    return 1;
  }
  *sum = (long)lua_tointeger(L, -1);
  braid_close_state(L);
  return 0;
}

int main(void) {
  long pooled = -1, sys = -2;
  if (run("pool", &pooled) || run("system", &sys)) return 1;
  if (pooled != sys) {
    fprintf(stderr, "FAIL: checksums differ: pool %ld, system %ld\n", pooled, sys);
    return 1;
  }
  /* a state that is only opened and closed gives back everything too */
  setenv("BRAID_ALLOC", "pool", 1);
  lua_State *L = braid_new_state();
  if (!L) return 1;
  braid_close_state(L);
  printf("ok: pool and system allocators agree (checksum %ld)\n", pooled);
  return 0;
}
