/*
** module.c: luaopen_braid_core assembles the C core from its parts. The
** same function is linked into the braid executable (as a preloaded
** module) and built as lib/lua/5.4/braid/core.so for lua5.4 and busted.
**
** Optional parts are declared weak: a runtime file that defines its opener
** is linked in and opened; none needs an edit here.
*/
#include "braid.h"

#define OPTIONAL_PARTS(X) \
  X(tcp) X(fdwatch) X(framing) X(threads) X(udp) X(tls) X(process) X(reload) \
  X(deferred)
#define DECLARE(name) void braid_open_##name(lua_State *L) __attribute__((weak));
OPTIONAL_PARTS(DECLARE)

int luaopen_braid_core(lua_State *L) {
  lua_newtable(L);
  braid_open_loop(L);
  braid_open_timers(L);
  braid_open_signals(L);
#define OPEN(name) if (braid_open_##name) braid_open_##name(L);
  OPTIONAL_PARTS(OPEN)
  lua_pushliteral(L, BRAID_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
