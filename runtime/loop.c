/*
** loop.c: the reactor's event loop: the event base, run/iterate/crash, the
** protected call path every callback takes, and error reporting.
**
** One iteration (Twisted's mainLoop): run the per-turn hook if asked, run
** the timers due now, then wait for I/O at most until the next timer is due
** (event_base_loop with EVLOOP_ONCE, bounded by wake_ev).
*/
#define _POSIX_C_SOURCE 200809L
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "braid.h"

static struct braid_loop g_loop = {
  .thread_ref = LUA_NOREF, .msgh_ref = LUA_NOREF,
  .errh_ref = LUA_NOREF, .turn_ref = LUA_NOREF,
};

struct braid_loop *braid_loop(void) { return &g_loop; }

double braid_monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double braid_walltime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void braid_work(long delta) { g_loop.work += delta; }

void braid_pin_library(void) {
  static int pinned;
  Dl_info info;
  if (pinned) return;
  pinned = 1;
  if (dladdr((void *)&g_loop, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg; /* only ends the wait of an iteration */
  g_loop.wake_armed = 0;
}

/* Avoid every method but the requested one, so libevent must use it. */
static int base_config(struct event_config *cfg, const char *want, char *err, size_t errlen) {
  const char **methods = event_get_supported_methods();
  int found = 0;
  for (int i = 0; methods && methods[i]; i++) {
    if (strcmp(methods[i], want) == 0) found = 1;
    else event_config_avoid_method(cfg, methods[i]);
  }
  if (!found) {
    snprintf(err, errlen, "backend '%s' is not supported here", want);
    return -1;
  }
  return 0;
}

struct event_base *braid_base(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  if (lp->base) return lp->base;
  char err[128] = "event_base_new_with_config failed";
  struct event_config *cfg = event_config_new();
  if (!cfg) return luaL_error(L, "event_config_new failed"), NULL;
  if (lp->backend[0] && base_config(cfg, lp->backend, err, sizeof err) != 0) {
    event_config_free(cfg);
    luaL_error(L, "%s", err);
    return NULL;
  }
  /* one thread drives the base: worker threads wake it through an eventfd
  ** (threads.c), so the base needs none of libevent's locks */
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  lp->base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (!lp->base) { luaL_error(L, "%s", err); return NULL; }
  event_base_priority_init(lp->base, 2); /* 0: the reload watcher; 1: everything else */
  lp->wake_ev = evtimer_new(lp->base, wake_cb, NULL);
  if (!lp->wake_ev) {
    event_base_free(lp->base);
    lp->base = NULL;
    luaL_error(L, "evtimer_new failed");
  }
  return lp->base;
}

/* lua.c's msghandler: a traceback string for non-string errors too. */
static int default_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

void braid_push_msgh(lua_State *L) {
  if (g_loop.msgh_ref != LUA_NOREF) lua_rawgeti(L, LUA_REGISTRYINDEX, g_loop.msgh_ref);
  else lua_pushcfunction(L, default_msgh);
}

/* Last resort when no reporter is installed or it failed: stderr. */
static int stderr_report(lua_State *L) {
  const char *s = luaL_tolstring(L, 1, NULL);
  fprintf(stderr, "Unhandled Error\n%s\n", s);
  fflush(stderr);
  return 0;
}

void braid_report_error(lua_State *L) {
  if (!lua_checkstack(L, 4)) { lua_pop(L, 1); return; }
  if (g_loop.errh_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, g_loop.errh_ref);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 0, 0) == LUA_OK) { lua_pop(L, 1); return; }
    /* the reporter failed: show both on stderr, its error first */
    lua_pushcfunction(L, stderr_report);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  lua_pushcfunction(L, stderr_report);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}

int braid_pcall(lua_State *L, int nargs, int nresults) {
  int fidx = lua_gettop(L) - nargs;
  braid_push_msgh(L);
  lua_insert(L, fidx);
  int st = lua_pcall(L, nargs, nresults, fidx);
  lua_remove(L, fidx);
  if (st != LUA_OK) braid_report_error(L);
  return st;
}

/* protected part of braid_raise: 1 class name, 2 message or nil */
static int make_error_p(lua_State *L) {
  int has_msg = !lua_isnil(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "braid.error");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, lua_tostring(L, 1));
  if (has_msg) lua_pushvalue(L, 2);
  lua_call(L, has_msg, 1);
  return 1;
}

int braid_raise(lua_State *L, const char *cls, const char *msg) {
  lua_checkstack(L, 6);
  lua_pushcfunction(L, make_error_p);
  lua_pushstring(L, cls);
  if (msg) lua_pushstring(L, msg);
  else lua_pushnil(L);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {  /* no braid.error here: the text */
    lua_pop(L, 1);
    lua_pushstring(L, msg ? msg : cls);
  }
  return lua_error(L);
}

void braid_check_finalizer(lua_State *L) {
  lua_Debug ar;
  /* Lua names a function the collector calls: metamethod "__gc" */
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.namewhat &&
      strcmp(ar.namewhat, "metamethod") == 0 && ar.name && strcmp(ar.name, "__gc") == 0)
    return;
  luaL_error(L, "__gc is called by the garbage collector only");
}

int braid_pusherror(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushstring(L, strerror(err));
  const char *name = "EUNKNOWN";
  switch (err) {
#define E(x) case x: name = #x; break;
    E(EAGAIN) E(ECONNREFUSED) E(ECONNRESET) E(EPIPE) E(ETIMEDOUT)
    E(EADDRINUSE) E(EADDRNOTAVAIL) E(EACCES) E(ENOENT) E(EMFILE) E(ENFILE)
    E(EINVAL) E(ENOMEM) E(EHOSTUNREACH) E(ENETUNREACH) E(EINTR) E(EBADF)
    E(ENOSPC) E(ENOTDIR) E(EISDIR) E(ENOSYS) E(ENOTSOCK)
#undef E
    default: break;
  }
  lua_pushstring(L, name);
  lua_pushinteger(L, err);
  return 4;
}

/* ---- one iteration ---------------------------------------------------- */

/* 1: whether the turn's due timers have run */
static int turn_p(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g_loop.turn_ref);
  lua_pushvalue(L, 1);
  braid_pcall(L, 1, 0);
  return 0;
}

/* Run the per-turn hook on the loop's thread, protected, if a wake asked
** for it, telling it whether this turn's due timers have run (a stop()'s
** shutdown waits for them, as Twisted fires it at the end of
** runUntilCurrent); returns whether one did. */
static int run_turn_hook(int after_timers) {
  struct braid_loop *lp = &g_loop;
  if (!lp->wake_flag) return 0;
  lp->wake_flag = 0;
  if (lp->turn_ref == LUA_NOREF) return 1;
  lua_State *L = lp->L;
  lua_pushcfunction(L, turn_p);
  lua_pushboolean(L, after_timers);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
  return 1;
}

static int timers_p(lua_State *L) {
  braid_timers_run(L);
  return 0;
}

/* Run the calls that are due; no protected call when none is. Returns
** braid_timers_next() when none was due, or -2 when some ran (the calls
** may have scheduled others: ask again). */
static double run_timers(lua_State *L) {
  double next = braid_timers_next(L);
  if (next != 0) return next;
  lua_pushcfunction(L, timers_p);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) braid_report_error(L);
  return -2;
}

/* max_wait < 0: no bound but the timers' */
static void iterate_once(double max_wait) {
  struct braid_loop *lp = &g_loop;
  lua_State *L = lp->L;
  lp->turns++;
  run_turn_hook(0);
  double next = run_timers(L);
  if (run_turn_hook(1) || next == -2) next = braid_timers_next(L); /* else still current */
  if (lp->stop_flag) return;
  double wait = max_wait;
  if (next >= 0 && (wait < 0 || next < wait)) wait = next;
  if (lp->wake_flag) wait = 0;
  if (wait < 0 || wait > 3600) wait = 3600; /* wake now and then: never block forever on nothing */
  int flags = EVLOOP_ONCE;
  if (wait <= 0) {
    flags |= EVLOOP_NONBLOCK;
  } else {
    struct timeval tv;
    tv.tv_sec = (time_t)wait;
    tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6);
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
    /* the hour-long guard need not be re-armed every turn: an armed
    ** wake_ev fires within the hour anyway */
    if (wait < 3600 || !lp->wake_armed) {
      evtimer_add(lp->wake_ev, &tv);
      lp->wake_armed = 1;
    }
  }
  /* select fails the whole wait on a closed descriptor (EBADF), and
  ** would fail so every turn: the raw descriptors' watchers of closed
  ** descriptors go (a closed fd of braid's own is the caller's mistake) */
  if (event_base_loop(lp->base, flags) < 0) braid_fdwatch_preen();
  /* run(): what fell due while we waited runs on the next turn, after the
  ** callFromThread calls the I/O callbacks queued, as Twisted's mainLoop
  ** (doIteration, then runUntilCurrent: its threadCallQueue first). One
  ** iterate(delay) runs it now, after those calls too. */
  if (wait > 0 && !lp->stop_flag && max_wait >= 0) {
    run_turn_hook(0);
    run_timers(L);
  }
}

static void check_owner(lua_State *L) {
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (main != g_loop.owner) luaL_error(L, "the reactor belongs to another Lua state");
}

/* One full collection before the first run() serves. In generational
** mode a minor collection never frees an object that died old, and what
** startup leaves behind (the modules' loading: 41 KB of the 269 KB heap of
** examples/echo.lua) would wait for a major collection, which a server
** whose heap stays level may never reach; until then every minor
** collection pays for it (callgrind, 10 connections x 4 KiB echo: the
** collector's marking fell from 3.72M to 2.39M instructions over 20,000
** round trips, the loop from 2,854 to 2,780 instructions per round trip).
** The script's collector mode and parameters stay as they are. */
static void collect_startup_garbage(lua_State *L) {
  static int done;
  if (done) return;
  done = 1;
  lua_gc(L, LUA_GCCOLLECT);
}

static int l_run(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  check_owner(L);
  if (lp->in_loop) return braid_raise(L, "ReactorAlreadyRunning", NULL);
  braid_base(L);
  collect_startup_garbage(L);
  lp->in_loop = lp->running = 1;
  lp->has_run = 1;
  lp->stop_flag = 0;
  while (!lp->stop_flag) iterate_once(-1);
  lp->stop_flag = 0;
  lp->in_loop = lp->running = 0;
  return 0;
}

static int l_iterate(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  double delay = luaL_optnumber(L, 1, 0);
  luaL_argcheck(L, delay >= 0, 1, "delay must be a number >= 0");
  check_owner(L);
  if (lp->in_loop) return braid_raise(L, "ReactorAlreadyRunning", NULL);
  braid_base(L);
  lp->in_loop = 1;
  lp->has_run = 1;
  lp->stop_flag = 0;
  iterate_once(delay);
  lp->stop_flag = 0;
  lp->in_loop = 0;
  return 0;
}

/* Leave run() after the current iteration, without triggers. */
static int l_crash(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  (void)L;
  lp->stop_flag = 1;
  if (lp->base) event_base_loopbreak(lp->base);
  return 0;
}

static int l_running(lua_State *L) {
  lua_pushboolean(L, g_loop.running);
  return 1;
}

static int l_in_loop(lua_State *L) {
  lua_pushboolean(L, g_loop.in_loop);
  return 1;
}

static int l_has_run(lua_State *L) {
  lua_pushboolean(L, g_loop.has_run);
  return 1;
}

static int l_work(lua_State *L) {
  lua_pushinteger(L, g_loop.work);
  return 1;
}

/* Ask for the turn hook and a non-blocking next wait. Safe from __gc. */
static int l_wake(lua_State *L) {
  (void)L;
  g_loop.wake_flag = 1;
  if (g_loop.base && g_loop.in_loop) event_base_loopbreak(g_loop.base);
  return 0;
}

static void set_ref(lua_State *L, int *ref) {
  if (*ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, 1);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

static int l_set_msgh(lua_State *L) { set_ref(L, &g_loop.msgh_ref); return 0; }
static int l_set_error_handler(lua_State *L) { set_ref(L, &g_loop.errh_ref); return 0; }
static int l_set_turn_hook(lua_State *L) { set_ref(L, &g_loop.turn_ref); return 0; }

/* Call f(...) protected, reporting its error as a loop callback would. */
static int l_pcall_report(lua_State *L) {
  luaL_checkany(L, 1);
  int st = braid_pcall(L, lua_gettop(L) - 1, LUA_MULTRET);
  lua_pushboolean(L, st == LUA_OK);
  lua_insert(L, 1);
  return lua_gettop(L);
}

static int l_report_error(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  braid_report_error(L);
  return 0;
}

static int l_set_backend(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *ok[] = { "epoll", "poll", "select", NULL };
  int i;
  for (i = 0; ok[i]; i++) if (strcmp(name, ok[i]) == 0) break;
  if (!ok[i]) return luaL_argerror(L, 1, lua_pushfstring(L, "unknown backend '%s' (epoll, poll or select)", name));
  if (g_loop.base) {
    if (strcmp(event_base_get_method(g_loop.base), name) == 0) return 0;
    return luaL_error(L, "the reactor is already using backend '%s'", event_base_get_method(g_loop.base));
  }
  snprintf(g_loop.backend, sizeof g_loop.backend, "%s", name);
  return 0;
}

static int l_backend(lua_State *L) {
  lua_pushstring(L, event_base_get_method(braid_base(L)));
  return 1;
}

static int l_seconds(lua_State *L) {
  lua_pushnumber(L, braid_walltime());
  return 1;
}

static int l_monotonic(lua_State *L) {
  lua_pushnumber(L, braid_monotonic());
  return 1;
}

static int l_versions(lua_State *L) {
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, BRAID_VERSION);
  lua_setfield(L, -2, "braid");
  lua_pushliteral(L, LUA_RELEASE);
  lua_setfield(L, -2, "lua");
  lua_pushstring(L, event_get_version());
  lua_setfield(L, -2, "libevent");
  return 1;
}

static const luaL_Reg loop_funcs[] = {
  { "run", l_run },
  { "iterate", l_iterate },
  { "crash", l_crash },
  { "running", l_running },
  { "in_loop", l_in_loop },
  { "has_run", l_has_run },
  { "work", l_work },
  { "wake", l_wake },
  { "set_msgh", l_set_msgh },
  { "set_error_handler", l_set_error_handler },
  { "set_turn_hook", l_set_turn_hook },
  { "pcall_report", l_pcall_report },
  { "report_error", l_report_error },
  { "set_backend", l_set_backend },
  { "backend", l_backend },
  { "seconds", l_seconds },
  { "monotonic", l_monotonic },
  { "versions", l_versions },
  { NULL, NULL }
};

/* Tear down when the owning state closes (registered first, so its __gc
** runs after every other braid object's). */
static int loop_gc(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  braid_check_finalizer(L); /* the sentinel is reachable through debug.getregistry() */
  if (lp->wake_ev) event_free(lp->wake_ev);
  if (lp->base) event_base_free(lp->base);
  lp->wake_ev = NULL;
  lp->wake_armed = 0;
  lp->base = NULL;
  lp->L = lp->owner = NULL;
  lp->thread_ref = lp->msgh_ref = lp->errh_ref = lp->turn_ref = LUA_NOREF;
  lp->in_loop = lp->running = lp->stop_flag = lp->wake_flag = lp->has_run = 0;
  lp->work = 0;
  return 0;
}

void braid_open_loop(lua_State *L) {
  struct braid_loop *lp = &g_loop;
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (lp->owner && lp->owner != main)
    luaL_error(L, "braid.core: the reactor already belongs to another Lua state");
  if (!lp->owner) {
    lp->owner = main;
    /* sentinel whose __gc frees the loop when the state closes */
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, loop_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.loop.sentinel");
    lp->L = lua_newthread(L);
    lp->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  luaL_setfuncs(L, loop_funcs, 0);
}
