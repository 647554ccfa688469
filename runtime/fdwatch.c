/*
** fdwatch.c: raw descriptor watchers for reactor.addReader/addWriter.
** A watcher ("braid.fdwatch") holds an embedded event registered with the
** flags braid.fdesc asks for; while any flag is set it anchors itself in
** the registry and counts as reactor work. Its user value is the Lua
** callback, called as cb(readable, writable, closed) in a protected
** trampoline; closed is true (and the watcher no longer watching) when its
** descriptor was found closed under it.
**
** A descriptor closed while watched: epoll drops it by itself, but poll
** reports POLLNVAL (which libevent hands on as readable and writable) on
** every turn, and select fails the whole wait with EBADF (libevent returns
** at once, every turn): both would spin. So a wakeup on a closed descriptor
** is delivered as closed, and when the loop's wait fails,
** braid_fdwatch_preen() finds the anchored watchers whose descriptor is
** closed, stops them and delivers closed to each.
*/
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <limits.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "braid.h"

#define FDW_META "braid.fdwatch"
#define FDW_CLOSED 0x4000 /* fdw_deliver_p's what: the descriptor is closed */

struct fdw {
  struct event ev;
  int fd;
  short flags;   /* flags ev is added with, 0 = idle */
  int self_ref;
  int preened;   /* stopped by braid_fdwatch_preen, closed not yet delivered */
  struct fdw *prev, *next; /* in `anchored` while self_ref is set */
};

static struct fdw *anchored; /* the watchers anchored in the registry */

static int fd_closed(int fd) {
  return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

static void fdw_cb(evutil_socket_t fd, short what, void *arg);

static void fdw_stop(struct fdw *w) {
  if (w->flags) event_del(&w->ev);
  w->flags = 0;
}

static void fdw_release(lua_State *L, struct fdw *w) {
  fdw_stop(w);
  w->preened = 0;
  if (w->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref);
    w->self_ref = LUA_NOREF;
    if (w->prev) w->prev->next = w->next;
    else anchored = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
    braid_work(-1);
  }
}

static int fdw_deliver_p(lua_State *L) {
  struct fdw *w = lua_touserdata(L, 1);
  short what = (short)lua_tointeger(L, 2);
  if (w->self_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->self_ref);
  lua_getiuservalue(L, -1, 1);
  lua_pushboolean(L, (what & EV_READ) != 0);
  lua_pushboolean(L, (what & EV_WRITE) != 0);
  lua_pushboolean(L, (what & FDW_CLOSED) != 0);
  braid_pcall(L, 3, 0);
  return 0;
}

static void fdw_deliver(struct fdw *w, short what) {
  lua_State *L = braid_loop()->L;
  lua_pushcfunction(L, fdw_deliver_p);
  lua_pushlightuserdata(L, w);
  lua_pushinteger(L, what);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) braid_report_error(L);
}

static void fdw_cb(evutil_socket_t fd, short what, void *arg) {
  struct fdw *w = arg;
  if (fd_closed((int)fd)) { /* poll's POLLNVAL: no doRead on a closed descriptor */
    fdw_stop(w);
    what = FDW_CLOSED;
  }
  fdw_deliver(w, what);
}

int braid_fdwatch_preen(void) {
  int n = 0;
  for (struct fdw *w = anchored; w; w = w->next) {
    if (w->flags && fd_closed(w->fd)) {
      fdw_stop(w);
      w->preened = 1;
      n++;
    }
  }
  /* one at a time, from the start again: a callback may release others */
  for (;;) {
    struct fdw *w = anchored;
    while (w && !w->preened) w = w->next;
    if (!w) break;
    w->preened = 0;
    fdw_deliver(w, FDW_CLOSED);
  }
  return n;
}

/* Whether epoll can watch fd; if not, errno says why. A descriptor that is
** not open (EBADF), a regular file or a directory (EPERM, as epoll_ctl
** would say) is refused here: libevent would print its own warning to
** stderr before failing. */
static int watchable(int fd) {
  struct stat sb;
  if (fstat(fd, &sb) == -1) return 0;
  if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)) {
    errno = EPERM;
    return 0;
  }
  /* a device: some can be polled (a terminal), some not (/dev/null), and
  ** libevent's epoll backend finds out only at its next wait, warning on
  ** stderr. Asking a throwaway epoll instance tells now (addReader is
  ** rare; poll and select watch any device). */
  if ((S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode))
      && strcmp(event_base_get_method(braid_loop()->base), "epoll") == 0) {
    int ep = epoll_create1(EPOLL_CLOEXEC), ok = 1;
    if (ep >= 0) {
      struct epoll_event e = { .events = EPOLLIN, .data = { .fd = fd } };
      ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0;
      int err = errno;
      close(ep);
      errno = err;
    }
    return ok;
  }
  return 1;
}

/* fd_watch(fd, cb) -> watcher */
static int l_fd_watch(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "descriptor must be from 0 to INT_MAX");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  braid_base(L);
  struct fdw *w = lua_newuserdatauv(L, sizeof *w, 1);
  memset(w, 0, sizeof *w);
  w->fd = (int)fd;
  w->self_ref = LUA_NOREF;
  luaL_setmetatable(L, FDW_META);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* w:set(read, write): watch for these; both false makes it idle */
static int fdw_set(lua_State *L) {
  struct fdw *w = luaL_checkudata(L, 1, FDW_META);
  luaL_argcheck(L, w->fd >= 0, 1, "watcher is closed");
  short want = (short)((lua_toboolean(L, 2) ? EV_READ : 0) | (lua_toboolean(L, 3) ? EV_WRITE : 0));
  if (want == w->flags) return 0;
  if (!want) { fdw_release(L, w); return 0; }
  if (w->self_ref == LUA_NOREF) { /* anchored before libevent can call back */
    lua_pushvalue(L, 1);
    w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->prev = NULL;
    w->next = anchored;
    if (anchored) anchored->prev = w;
    anchored = w;
    braid_work(1);
  }
  w->preened = 0;
  fdw_stop(w);
  event_assign(&w->ev, braid_loop()->base, w->fd, want | EV_PERSIST, fdw_cb, w);
  if (!watchable(w->fd) || event_add(&w->ev, NULL) != 0) {
    int err = errno;
    fdw_release(L, w);
    return luaL_error(L, "cannot watch descriptor %d: %s", w->fd, err ? strerror(err) : "event_add failed");
  }
  w->flags = want;
  return 0;
}

static int fdw_close(lua_State *L) {
  struct fdw *w = luaL_checkudata(L, 1, FDW_META);
  fdw_release(L, w);
  w->fd = -1;
  return 0;
}

/* reached once idle (unanchored), or at state close */
static int fdw_gc(lua_State *L) {
  struct fdw *w = luaL_checkudata(L, 1, FDW_META);
  braid_check_finalizer(L);
  fdw_stop(w);
  if (w->self_ref != LUA_NOREF) { /* the state closes: out of the list */
    if (w->prev) w->prev->next = w->next;
    else if (anchored == w) anchored = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
  }
  return 0;
}

static const luaL_Reg fdw_methods[] = {
  { "set", fdw_set },
  { "close", fdw_close },
  { NULL, NULL }
};

void braid_open_fdwatch(lua_State *L) {
  if (luaL_newmetatable(L, FDW_META)) {
    luaL_newlib(L, fdw_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, fdw_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_fd_watch);
  lua_setfield(L, -2, "fd_watch");
}
