/*
** reload.c: what braid.reload's watcher needs from the system.
**
** - core.fileStamp(path): stat's mtime, size and inode in one string, for
**   the polling fallback, SIGHUP and reload.changed().
** - core.realpath(path): the canonical path (the directory to watch).
** - core.inotify(): a "braid.reload.watcher" holding an inotify descriptor
**   and an embedded event on the loop. braid.reload watches the directories
**   of its modules (so a rename-save by vim or sed -i is seen as IN_MOVED_TO
**   of the name) and decides what an event means; this file only reads.
** - core.runLimited(seconds, clock, message, msgh, f, ...): xpcall(f, msgh,
**   ...) stopped with `message` once it has run `seconds` ("cpu": of this
**   thread's CPU; "wall": of the monotonic clock). The console's lines and
**   a reloaded module's load run under it.
**
** Invariants:
** - While started, the watcher anchors itself (self_ref) and its event is
**   added; it is not reactor work (watching never keeps a script running).
** - The libevent callback drains the descriptor before it calls Lua, so a
**   callback that raises cannot leave the level-triggered event spinning.
** - Lua is entered only through a protected trampoline (watch_deliver_p).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>
#ifdef __linux__
#include <sys/inotify.h>
#endif

#include <event2/event.h>
#include <event2/event_struct.h>

#include "braid.h"

#define WATCH_META "braid.reload.watcher"

/* core.fileStamp(path) -> "mtime_s:mtime_ns:size:ino" or nil, msg, ENAME.
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

/* core.realpath(path) -> absolute path or nil, msg, ENAME */
static int reload_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (realpath(path, buf) == NULL)
    return braid_pusherror(L, errno);
  lua_pushstring(L, buf);
  return 1;
}

#ifdef __linux__

struct watcher {
  struct event ev;
  int fd;
  int added;      /* ev is added to the loop */
  int self_ref;   /* anchor while started */
};

/* What braid.reload asks the kernel about, for each watched directory. */
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | \
                    IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | \
                    IN_MOVE_SELF | IN_ONLYDIR)

static struct watcher *watch_check(lua_State *L, int i) {
  struct watcher *w = luaL_checkudata(L, i, WATCH_META);
  luaL_argcheck(L, w->fd >= 0, i, "watcher is closed");
  return w;
}

/* Idempotent: stop delivering and drop the anchor. */
static void watch_stop_(lua_State *L, struct watcher *w) {
  if (w->added) event_del(&w->ev);
  w->added = 0;
  if (w->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
    w->self_ref = LUA_NOREF;
  }
}

/* Push a list of the queued events, each {wd =, mask =, name =?}, reading
** until the descriptor is empty. Returns 0 or the errno of a failed read
** (EAGAIN ends a drain normally and is not returned). */
static int watch_read_(lua_State *L, struct watcher *w) {
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  lua_Integer n = 0;
  int err = 0;
  lua_newtable(L);
  for (;;) {
    ssize_t len = read(w->fd, buf, sizeof buf);
    if (len < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) err = errno;
      break;
    }
    if (len == 0) break;
    for (char *p = buf; p < buf + len; ) {
      const struct inotify_event *e = (const struct inotify_event *)p;
      lua_createtable(L, 0, 3);
      lua_pushinteger(L, e->wd);
      lua_setfield(L, -2, "wd");
      lua_pushinteger(L, (lua_Integer)e->mask);
      lua_setfield(L, -2, "mask");
      if (e->len > 0 && e->name[0]) {
        lua_pushstring(L, e->name);
        lua_setfield(L, -2, "name");
      }
      lua_rawseti(L, -2, ++n);
      p += sizeof *e + e->len;
    }
  }
  return err;
}

/* Protected: read every queued event, then call the callback with them. */
static int watch_deliver_p(lua_State *L) {
  struct watcher *w = lua_touserdata(L, 1);
  if (w->self_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->self_ref);
  lua_getiuservalue(L, -1, 1);          /* the callback */
  watch_read_(L, w);                     /* drained even if the callback raises */
  braid_pcall(L, 1, 0);
  return 0;
}

static void watch_cb(evutil_socket_t fd, short what, void *arg) {
  lua_State *L = braid_loop()->L;
  (void)fd; (void)what;
  lua_pushcfunction(L, watch_deliver_p);
  lua_pushlightuserdata(L, arg);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
}

/* core.inotify() -> watcher, or nil, msg, ENAME (the caller polls instead) */
static int l_inotify(lua_State *L) {
  braid_base(L);
  struct watcher *w = lua_newuserdatauv(L, sizeof *w, 1);
  memset(w, 0, sizeof *w);
  w->fd = -1;
  w->self_ref = LUA_NOREF;
  luaL_setmetatable(L, WATCH_META);     /* "closed" before anything can fail */
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd < 0) return braid_pusherror(L, errno);
  return 1;
}

/* w:add(dir) -> watch descriptor, or nil, msg, ENAME */
static int watch_add(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  const char *dir = luaL_checkstring(L, 2);
  int wd = inotify_add_watch(w->fd, dir, WATCH_MASK);
  if (wd < 0) return braid_pusherror(L, errno);
  lua_pushinteger(L, wd);
  return 1;
}

/* w:remove(wd) -> true, or nil, msg, ENAME */
static int watch_remove(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  int wd = (int)luaL_checkinteger(L, 2);
  if (inotify_rm_watch(w->fd, wd) != 0) return braid_pusherror(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* w:read() -> list of queued events (maybe empty), or nil, msg, ENAME */
static int watch_read(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  int err = watch_read_(L, w);
  if (err) return braid_pusherror(L, err);
  return 1;
}

/* w:start(cb): call cb(events) whenever events are queued */
static int watch_start(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, 1);
  if (w->added) return 0;
  event_assign(&w->ev, braid_base(L), w->fd, EV_READ | EV_PERSIST, watch_cb, w);
  /* first among the events of a turn when the base has priorities: on a
  ** loaded server a save must not wait behind a turn of connections */
  event_priority_set(&w->ev, 0);
  if (event_add(&w->ev, NULL) != 0) return luaL_error(L, "event_add failed");
  w->added = 1;
  if (w->self_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* w:stop(): no more callbacks (watches stay; events queue in the kernel) */
static int watch_stop(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  watch_stop_(L, w);
  return 0;
}

static int watch_fileno(lua_State *L) {
  struct watcher *w = watch_check(L, 1);
  lua_pushinteger(L, w->fd);
  return 1;
}

/* w:close(): idempotent; also __close */
static int watch_close(lua_State *L) {
  struct watcher *w = luaL_checkudata(L, 1, WATCH_META);
  watch_stop_(L, w);
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  return 0;
}

/* __gc: only reached once stopped (the anchor is gone) or at state close */
static int watch_gc(lua_State *L) {
  struct watcher *w = luaL_checkudata(L, 1, WATCH_META);
  braid_check_finalizer(L);
  if (w->added) event_del(&w->ev);
  w->added = 0;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  return 0;
}

static int watch_tostring(lua_State *L) {
  struct watcher *w = luaL_checkudata(L, 1, WATCH_META);
  if (w->fd < 0) lua_pushliteral(L, "<inotify watcher (closed)>");
  else lua_pushfstring(L, "<inotify watcher fd=%d>", w->fd);
  return 1;
}

static const luaL_Reg watch_methods[] = {
  { "add", watch_add },
  { "remove", watch_remove },
  { "read", watch_read },
  { "start", watch_start },
  { "stop", watch_stop },
  { "fileno", watch_fileno },
  { "close", watch_close },
  { NULL, NULL }
};

static const luaL_Reg watch_meta[] = {
  { "__gc", watch_gc },
  { "__close", watch_close },
  { "__tostring", watch_tostring },
  { NULL, NULL }
};

/* core.IN: the mask bits an event may carry */
static void push_masks(lua_State *L) {
  static const struct { const char *name; uint32_t bit; } bits[] = {
    { "CLOSE_WRITE", IN_CLOSE_WRITE }, { "MOVED_TO", IN_MOVED_TO },
    { "MOVED_FROM", IN_MOVED_FROM }, { "CREATE", IN_CREATE },
    { "DELETE", IN_DELETE }, { "MODIFY", IN_MODIFY }, { "ATTRIB", IN_ATTRIB },
    { "DELETE_SELF", IN_DELETE_SELF }, { "MOVE_SELF", IN_MOVE_SELF },
    { "IGNORED", IN_IGNORED }, { "Q_OVERFLOW", IN_Q_OVERFLOW },
    { "ISDIR", IN_ISDIR }, { "UNMOUNT", IN_UNMOUNT },
  };
  lua_createtable(L, 0, (int)(sizeof bits / sizeof bits[0]));
  for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
    lua_pushinteger(L, (lua_Integer)bits[i].bit);
    lua_setfield(L, -2, bits[i].name);
  }
}

#endif /* __linux__ */

/* ---- runLimited ----
**
** A count hook checks the clock every LIMIT_COUNT instructions. Coroutines
** made during the call inherit the hook (lua_newthread copies it), so a
** loop inside coroutine.wrap is stopped too, as debug.sethook's Lua hooks
** cannot (they are kept per thread). Once the time is up the hook runs at
** every instruction and raises each time, so a loop that catches the error
** with pcall is stopped at its next instruction outside the pcall. The
** limit under way is kept in the registry: a hook inherited by a coroutine
** that runs after the call finds none and removes itself. */

#define LIMIT_COUNT 10000

struct limit {
  clockid_t clock;
  double deadline;
  const char *message;  /* the string at index 3 of the runLimited call */
  int expired;
};

static const char LIMIT_KEY = 0;

static double clock_now(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void limit_hook(lua_State *L, lua_Debug *ar) {
  struct limit *lim;
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LIMIT_KEY);
  lim = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lim == NULL) {  /* a coroutine that outlived its call */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (!lim->expired && clock_now(lim->clock) <= lim->deadline) return;
  if (!lim->expired || lua_gethookcount(L) != 1) {
    lim->expired = 1;
    lua_sethook(L, limit_hook, LUA_MASKCOUNT, 1);
  }
  luaL_where(L, 0);
  lua_pushstring(L, lim->message);
  lua_concat(L, 2);
  lua_error(L);
}

/* The message handler of the call: the hook is off while the caller's
** handler (upvalue 1) runs, so that it can build its traceback. */
static int limit_msgh(lua_State *L) {
  lua_sethook(L, NULL, 0, 0);
  if (lua_isnil(L, lua_upvalueindex(1))) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int reload_runlimited(lua_State *L) {
  static const char *const clocks[] = { "cpu", "wall", NULL };
  double seconds = luaL_checknumber(L, 1);
  int which = luaL_checkoption(L, 2, NULL, clocks);
  const char *message = luaL_checkstring(L, 3);
  struct limit lim, *outer;
  lua_Hook hook = lua_gethook(L);
  int mask = lua_gethookmask(L), count = lua_gethookcount(L), status, n;
  luaL_argcheck(L, seconds >= 0, 1, "seconds must be a number >= 0");
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  lim.clock = which == 0 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
  lim.deadline = clock_now(lim.clock) + seconds;
  lim.message = message;
  lim.expired = 0;
  lua_pushvalue(L, 4);
  lua_pushcclosure(L, limit_msgh, 1);
  lua_replace(L, 4);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LIMIT_KEY);
  outer = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, &lim);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LIMIT_KEY);
  lua_sethook(L, limit_hook, LUA_MASKCOUNT, LIMIT_COUNT);
  status = lua_pcall(L, lua_gettop(L) - 5, LUA_MULTRET, 4);
  lua_sethook(L, hook, mask, count);
  if (outer) lua_pushlightuserdata(L, outer);
  else lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LIMIT_KEY);
  n = lua_gettop(L) - 4;  /* the results, or the error */
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, 4);
  return n + 1;
}

static const luaL_Reg reload_funcs[] = {
  { "runLimited", reload_runlimited },
  { "fileStamp", reload_filestamp },
  { "realpath", reload_realpath },
#ifdef __linux__
  { "inotify", l_inotify },
#endif
  { NULL, NULL }
};

void braid_open_reload(lua_State *L) {
#ifdef __linux__
  if (luaL_newmetatable(L, WATCH_META)) {
    luaL_setfuncs(L, watch_meta, 0);
    luaL_newlib(L, watch_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  push_masks(L);
  lua_setfield(L, -2, "IN");
#endif
  luaL_setfuncs(L, reload_funcs, 0);
}
