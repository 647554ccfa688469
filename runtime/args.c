/*
** args.c: argument checks for braid's C functions, raising braid.error
** objects as API.md asks ("Errors are raised with error(obj)"): a wrong type
** raises TypeError, a wrong value ValueError, with lauxlib's message
** ("bad argument #1 to 'callLater' (number expected, got string)").
**
** braid.h maps lauxlib's luaL_check*, luaL_opt*, luaL_argerror and
** luaL_typeerror (and so luaL_argcheck and luaL_argexpected) onto these for
** every runtime file that includes it; this file alone sees lauxlib's own.
** The checks behave as lauxlib's, message included; only what is raised
** differs. Where braid.error cannot be loaded, the message is raised as
** a plain string, as lauxlib would (braid_raise).
*/
#define BRAID_LAUXLIB_AS_IS
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "braid.h"

/* Raise the message on top as braid.error's class cls (braid_raise). */
static int raise_as(lua_State *L, const char *cls) {
  return braid_raise(L, cls, lua_tostring(L, -1));
}

/* lauxlib's search of package.loaded for a function's name, two levels
** deep ("braid.reactor.callLater"): for functions called without a name
** (through pcall, or from C). */
static int find_field(lua_State *L, int objidx, int level) {
  if (level == 0 || !lua_istable(L, -1)) return 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      if (lua_rawequal(L, objidx, -1)) {
        lua_pop(L, 1);
        return 1;
      } else if (find_field(L, objidx, level - 1)) {
        lua_pushliteral(L, ".");
        lua_replace(L, -3);  /* the table's value: "name" "." "field" */
        lua_concat(L, 3);
        return 1;
      }
    }
    lua_pop(L, 1);
  }
  return 0;
}

static int push_global_name(lua_State *L, lua_Debug *ar) {
  int top = lua_gettop(L);
  lua_getinfo(L, "f", ar);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (find_field(L, top + 1, 2)) {
    const char *name = lua_tostring(L, -1);
    if (strncmp(name, LUA_GNAME ".", 3) == 0) {
      lua_pushstring(L, name + 3);
      lua_remove(L, -2);
    }
    lua_copy(L, -1, top + 1);
    lua_settop(L, top + 1);
    return 1;
  }
  lua_settop(L, top);
  return 0;
}

static int arg_error(lua_State *L, int arg, const char *extramsg, const char *cls) {
  lua_Debug ar;
  if (!lua_getstack(L, 0, &ar)) {
    lua_pushfstring(L, "bad argument #%d (%s)", arg, extramsg);
    return raise_as(L, cls);
  }
  lua_getinfo(L, "n", &ar);
  if (ar.namewhat && strcmp(ar.namewhat, "method") == 0) {
    arg--;  /* self is not counted */
    if (arg == 0) {
      lua_pushfstring(L, "calling '%s' on bad self (%s)", ar.name, extramsg);
      return raise_as(L, cls);
    }
  }
  if (ar.name == NULL) ar.name = push_global_name(L, &ar) ? lua_tostring(L, -1) : "?";
  lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg, ar.name, extramsg);
  return raise_as(L, cls);
}

/* luaL_argerror and luaL_argcheck: a message naming a type ("X expected,
** got Y", lauxlib's integer conversion) is a TypeError; any other (a range,
** an unknown name) a ValueError. */
int braid_argerror(lua_State *L, int arg, const char *extramsg) {
  int type = strstr(extramsg, " expected, got ") != NULL ||
             strstr(extramsg, "no integer representation") != NULL;
  return arg_error(L, arg, extramsg, type ? "TypeError" : "ValueError");
}

int braid_typeerror(lua_State *L, int arg, const char *tname) {
  const char *got;
  if (luaL_getmetafield(L, arg, "__name") == LUA_TSTRING) got = lua_tostring(L, -1);
  else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA) got = "light userdata";
  else got = luaL_typename(L, arg);
  return arg_error(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, got), "TypeError");
}

static void tag_error(lua_State *L, int arg, int tag) {
  braid_typeerror(L, arg, lua_typename(L, tag));
}

void braid_checktype(lua_State *L, int arg, int t) {
  if (lua_type(L, arg) != t) tag_error(L, arg, t);
}

void braid_checkany(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNONE) arg_error(L, arg, "value expected", "TypeError");
}

const char *braid_checklstring(lua_State *L, int arg, size_t *len) {
  const char *s = lua_tolstring(L, arg, len);
  if (!s) tag_error(L, arg, LUA_TSTRING);
  return s;
}

const char *braid_optlstring(lua_State *L, int arg, const char *def, size_t *len) {
  if (lua_isnoneornil(L, arg)) {
    if (len) *len = def ? strlen(def) : 0;
    return def;
  }
  return braid_checklstring(L, arg, len);
}

lua_Number braid_checknumber(lua_State *L, int arg) {
  int isnum;
  lua_Number d = lua_tonumberx(L, arg, &isnum);
  if (!isnum) tag_error(L, arg, LUA_TNUMBER);
  return d;
}

lua_Number braid_optnumber(lua_State *L, int arg, lua_Number def) {
  return lua_isnoneornil(L, arg) ? def : braid_checknumber(L, arg);
}

lua_Integer braid_checkinteger(lua_State *L, int arg) {
  int isnum;
  lua_Integer d = lua_tointegerx(L, arg, &isnum);
  if (!isnum) {
    if (lua_isnumber(L, arg)) arg_error(L, arg, "number has no integer representation", "TypeError");
    else tag_error(L, arg, LUA_TNUMBER);
  }
  return d;
}

lua_Integer braid_optinteger(lua_State *L, int arg, lua_Integer def) {
  return lua_isnoneornil(L, arg) ? def : braid_checkinteger(L, arg);
}

void *braid_checkudata(lua_State *L, int arg, const char *tname) {
  void *p = luaL_testudata(L, arg, tname);
  if (!p) braid_typeerror(L, arg, tname);
  return p;
}

int braid_checkoption(lua_State *L, int arg, const char *def, const char *const lst[]) {
  const char *name = def ? braid_optlstring(L, arg, def, NULL) : braid_checklstring(L, arg, NULL);
  for (int i = 0; lst[i]; i++)
    if (strcmp(lst[i], name) == 0) return i;
  return arg_error(L, arg, lua_pushfstring(L, "invalid option '%s'", name), "ValueError");
}
