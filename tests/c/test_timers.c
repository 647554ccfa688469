/*
** test_timers.c: the timer heap under load, driven through the C API:
** random deadlines fire in (deadline, scheduling) order; random cancels,
** delays and resets leave exactly the surviving calls, in order.
*/
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "braid.h"

static const char *chunk =
  "local core = ...\n"
  "local N = 20000\n"
  "local seed = 12345\n"
  "local function rnd() seed = (seed * 1103515245 + 12345) % 2147483648; return seed end\n"
  "local total = 0\n"
  "-- cancel a quarter (dead keys stay in the heap), then three quarters\n"
  "-- (the heap compacts itself while cancels run)\n"
  "for _, cut in ipairs({ 1, 3 }) do\n"
  "  local fired = {}\n"
  "  local calls = {}\n"
  "  for i = 1, N do\n"
  "    local d = (rnd() % 50) / 1000\n"
  "    calls[i] = { dc = core.callLater(d, function() fired[#fired + 1] = i end), d = d, i = i }\n"
  "  end\n"
  "  local live = {}\n"
  "  for i = 1, N do\n"
  "    local r = rnd() % 4\n"
  "    local c = calls[i]\n"
  "    if r < cut then c.dc:cancel() c.dead = true\n"
  "    elseif r == 3 then c.dc:delay(0.01) end\n"
  "    if not c.dead then live[#live + 1] = c end\n"
  "  end\n"
  "  assert(core.timer_count() == #live, 'live count')\n"
  "  assert(#core.getDelayedCalls() == #live, 'getDelayedCalls count')\n"
  "  while core.timer_count() > 0 do core.iterate(0.1) end\n"
  "  assert(#fired == #live, ('fired %d of %d'):format(#fired, #live))\n"
  "  local seen = {}\n"
  "  for _, i in ipairs(fired) do assert(not seen[i], 'fired twice'); seen[i] = true end\n"
  "  for _, c in ipairs(calls) do assert(not c.dead == (seen[c.i] == true), 'cancelled call fired') end\n"
  "  for k = 2, #fired do\n"
  "    local a, b = calls[fired[k - 1]].dc:getTime(), calls[fired[k]].dc:getTime()\n"
  "    assert(a <= b + 1e-4, 'out of order at ' .. k)\n"
  "  end\n"
  "  total = total + #fired\n"
  "end\n"
  "return total\n";

int main(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "braid.core", luaopen_braid_core, 0);
  if (luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "load: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "FAIL test_timers: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  printf("ok test_timers: %d calls fired in order\n", (int)lua_tointeger(L, -1));
  lua_close(L);
  return 0;
}
