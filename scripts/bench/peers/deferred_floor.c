/*
** deferred_floor.c: the floor under scripts/bench/deferred's chain case, for
** information (not a peer to beat). A Deferred as small as a Lua-callable
** one can be: a C userdata whose user values hold the result and at most
** three callbacks, methods found by an __index C function (which also
** answers `called` and `result`, as a Deferred must), callbacks run with
** lua_call. No errbacks, Failures, pausing, chaining, cancellation or error
** handling. Whatever braid.defer costs above this is what Twisted's
** semantics cost; what this costs is Lua's call and allocation overhead
** (four method calls, three Lua callbacks and one userdata per iteration).
** scripts/bench/deferred builds it as deferred_floor_c.so, a module for
** Debian's lua5.4 (braid links Lua statically: a second copy of Lua cannot
** load into it).
*/
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#define MAXCB 3
#define UV_RESULT 1 /* user values: 1 the result, 2.. the callbacks */

struct floor_d {
  int n;      /* callbacks waiting */
  int called;
};

static struct floor_d *check_d(lua_State *L) {
  return luaL_checkudata(L, 1, "floor.Deferred");
}

static int d_index(lua_State *L) {
  const char *k;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* a method */
  k = lua_tostring(L, 2);
  if (k && strcmp(k, "called") == 0) {
    lua_pushboolean(L, ((struct floor_d *)lua_touserdata(L, 1))->called);
  } else if (k && strcmp(k, "result") == 0) {
    lua_getiuservalue(L, 1, UV_RESULT);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static struct floor_d *push_new(lua_State *L) {
  struct floor_d *d = lua_newuserdatauv(L, sizeof *d, 1 + MAXCB);
  d->n = 0;
  d->called = 0;
  luaL_setmetatable(L, "floor.Deferred");
  return d;
}

/* Run the waiting callbacks of the Deferred at index 1. */
static void run(lua_State *L, struct floor_d *d) {
  int i, r;
  lua_getiuservalue(L, 1, UV_RESULT);
  r = lua_gettop(L);
  for (i = 0; i < d->n; i++) {
    lua_getiuservalue(L, 1, 2 + i);
    lua_pushvalue(L, r);
    lua_call(L, 1, 1);
    lua_replace(L, r);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, 2 + i);
  }
  d->n = 0;
  lua_setiuservalue(L, 1, UV_RESULT);
}

static int d_addCallback(lua_State *L) {
  struct floor_d *d = check_d(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (d->n == MAXCB) return luaL_error(L, "floor Deferred: at most %d callbacks", MAXCB);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 2 + d->n);
  d->n++;
  if (d->called) run(L, d);
  return 1;
}

static int d_callback(lua_State *L) {
  struct floor_d *d = check_d(L);
  if (d->called) return luaL_error(L, "floor Deferred: already called");
  d->called = 1;
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, UV_RESULT);
  run(L, d);
  return 0;
}

static int f_new(lua_State *L) { /* Deferred(): the class table's __call */
  push_new(L);
  return 1;
}

static int f_succeed(lua_State *L) {
  lua_settop(L, 1);
  push_new(L)->called = 1;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_RESULT);
  return 1;
}

static int f_await(lua_State *L) { /* only fired Deferreds: the bench awaits no other */
  struct floor_d *d = check_d(L);
  if (!d->called) return luaL_error(L, "floor Deferred: await of an unfired Deferred");
  lua_getiuservalue(L, 1, UV_RESULT);
  return 1;
}

int luaopen_deferred_floor_c(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"addCallback", d_addCallback}, {"addBoth", d_addCallback},
    {"callback", d_callback}, {NULL, NULL}};
  static const luaL_Reg module[] = {
    {"succeed", f_succeed}, {"await", f_await}, {NULL, NULL}};
  luaL_newmetatable(L, "floor.Deferred");
  luaL_newlib(L, methods);
  lua_pushcclosure(L, d_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, module);
  lua_newtable(L);                      /* Deferred: a callable class table */
  lua_newtable(L);
  lua_pushcfunction(L, f_new);
  lua_setfield(L, -2, "__call");
  lua_setmetatable(L, -2);
  lua_setfield(L, -2, "Deferred");
  return 1;
}
