/*
** reload.c: the file facts braid.reload's watcher compares (stat's mtime,
** size and inode). Polling them from a timer is the portable fallback;
** an inotify watcher on the loop is not written yet (see docs/reload.md).
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "braid.h"

/* core.fileStamp(path) -> "mtime_ns:size:ino" or nil, msg, ENAME.
** One string so the Lua side compares stamps with a single ==. */
static int reload_filestamp(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0)
    return braid_pusherror(L, errno);
  lua_pushfstring(L, "%I:%I:%I:%I",
                  (lua_Integer)st.st_mtim.tv_sec, (lua_Integer)st.st_mtim.tv_nsec,
                  (lua_Integer)st.st_size, (lua_Integer)st.st_ino);
  return 1;
}

static const luaL_Reg reload_funcs[] = {
  {"fileStamp", reload_filestamp},
  {NULL, NULL}
};

void braid_open_reload(lua_State *L) {
  luaL_setfuncs(L, reload_funcs, 0);
}
