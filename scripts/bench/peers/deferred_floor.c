/*
** deferred_floor.c: the floor under scripts/bench/deferred's chain case, for
** information (not a peer to beat). A Deferred as small as a Lua-callable
** one can be: a C userdata whose user values hold the result and at most
** three callbacks, its methods in the metatable's __index table, its class
** told by the metatable's address, callbacks run with lua_call. No
** errbacks, Failures, pausing, chaining, cancellation or error handling,
** and no `called`/`result` fields: answering them takes an __index
** function, which makes every method lookup a C call (that version ran the
** chain case in 0.44 s instead of about 0.32 s here). Whatever braid.defer
** costs above this is what Twisted's semantics and a table layout cost;
** what this costs is Lua's call and allocation overhead (four method calls,
** three Lua callbacks and one userdata per iteration).
** scripts/bench/deferred builds it as deferred_floor_c.so, a module for
** Debian's lua5.4 (braid links Lua statically: a second copy of Lua cannot
** load into it).
*/
#include <lua.h>
#include <lauxlib.h>

#define MAXCB 3
#define UV_RESULT 1 /* user values: 1 the result, 2.. the callbacks */

struct floor_d {
  int n;      /* callbacks waiting */
  int called;
};

static const void *floor_mt; /* the metatable of every floor Deferred */

/* self: a floor Deferred, told by its metatable's address (luaL_checkudata
** would look the metatable up in the registry by name at every call) */
static struct floor_d *check_d(lua_State *L) {
  const void *mt = lua_getmetatable(L, 1) ? lua_topointer(L, -1) : NULL;
  if (mt == NULL || mt != floor_mt) luaL_typeerror(L, 1, "floor.Deferred");
  lua_pop(L, 1);
  return lua_touserdata(L, 1);
}

/* a new Deferred; the metatable is upvalue 1 of the calling function */
static struct floor_d *push_new(lua_State *L) {
  struct floor_d *d = lua_newuserdatauv(L, sizeof *d, 1 + MAXCB);
  d->n = 0;
  d->called = 0;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setmetatable(L, -2);
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
  lua_settop(L, 0);                        /* require's name and path */
  luaL_newmetatable(L, "floor.Deferred");  /* 1: the metatable */
  floor_mt = lua_topointer(L, 1);
  luaL_newlib(L, methods);
  lua_setfield(L, 1, "__index");
  luaL_newlibtable(L, module);             /* 2: the module */
  lua_pushvalue(L, 1);
  luaL_setfuncs(L, module, 1);
  lua_newtable(L);                         /* Deferred: a callable class table */
  lua_newtable(L);
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, f_new, 1);
  lua_setfield(L, -2, "__call");
  lua_setmetatable(L, -2);
  lua_setfield(L, 2, "Deferred");
  return 1;
}
