/*
** module.c: luaopen_braid_core assembles the C core from its parts. The
** same function is linked into the braid executable (as a preloaded
** module) and built as lib/lua/5.4/braid/core.so for lua5.4 and busted.
*/
#include "braid.h"

int luaopen_braid_core(lua_State *L) {
  lua_newtable(L);
  braid_open_loop(L);
  braid_open_timers(L);
  braid_open_signals(L);
  lua_pushliteral(L, BRAID_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
