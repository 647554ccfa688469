/*
** signals.c: signal watchers. libevent turns a signal into a loop event, so
** handlers run in the loop, never in signal context.
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <lauxlib.h>

#include "braid.h"

extern char **environ;

#define SIG_META "braid.signal"

struct sigw {
  struct event *ev;
  int signum;
  int self_ref;  /* anchors the watcher while active */
  int fn_ref;
};

static const struct { const char *name; int num; } signames[] = {
  { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "ILL", SIGILL },
  { "TRAP", SIGTRAP }, { "ABRT", SIGABRT }, { "BUS", SIGBUS }, { "FPE", SIGFPE },
  { "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "SEGV", SIGSEGV }, { "USR2", SIGUSR2 },
  { "PIPE", SIGPIPE }, { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "CHLD", SIGCHLD },
  { "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN },
  { "TTOU", SIGTTOU }, { "URG", SIGURG }, { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ },
  { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF }, { "WINCH", SIGWINCH }, { "IO", SIGIO },
  { "SYS", SIGSYS }, { NULL, 0 }
};

static const char *signame(int num) {
  for (int i = 0; signames[i].name; i++)
    if (signames[i].num == num) return signames[i].name;
  return NULL;
}

/* Accepts "SIGHUP", "HUP" (any case) or a number; raises naming argument i. */
static int check_signal(lua_State *L, int i) {
  if (lua_type(L, i) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, i);
    if (n <= 0 || n > 64 || !signame((int)n))
      luaL_argerror(L, i, lua_pushfstring(L, "unknown signal %d", (int)n));
    return (int)n;
  }
  const char *s = luaL_checkstring(L, i);
  const char *name = strncasecmp(s, "SIG", 3) == 0 ? s + 3 : s;
  for (int k = 0; signames[k].name; k++)
    if (strcasecmp(name, signames[k].name) == 0) return signames[k].num;
  return luaL_argerror(L, i, lua_pushfstring(L, "unknown signal '%s'", s));
}

static int l_signum(lua_State *L) {
  int n = check_signal(L, 1);
  lua_pushinteger(L, n);
  lua_pushfstring(L, "SIG%s", signame(n));
  return 2;
}

static void sigw_release(lua_State *L, struct sigw *w) {
  if (w->ev) { event_free(w->ev); w->ev = NULL; }
  if (w->fn_ref != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, w->fn_ref); w->fn_ref = LUA_NOREF; }
  if (w->self_ref != LUA_NOREF) { luaL_unref(L, LUA_REGISTRYINDEX, w->self_ref); w->self_ref = LUA_NOREF; }
}

static int sig_deliver(lua_State *L) {
  struct sigw *w = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->fn_ref);
  lua_pushinteger(L, w->signum);
  lua_pushfstring(L, "SIG%s", signame(w->signum));
  braid_pcall(L, 2, 0);
  return 0;
}

static void sig_cb(evutil_socket_t fd, short what, void *arg) {
  struct sigw *w = arg;
  lua_State *L = braid_loop()->L;
  (void)fd; (void)what;
  if (w->fn_ref == LUA_NOREF) return;
  lua_pushcfunction(L, sig_deliver);
  lua_pushlightuserdata(L, w);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
}

/* signal(sig, f) -> watcher with :cancel() */
static int l_signal(lua_State *L) {
  int n = check_signal(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (n == SIGKILL || n == SIGSTOP)
    return luaL_argerror(L, 1, "SIGKILL and SIGSTOP cannot be caught");
  struct event_base *base = braid_base(L);
  struct sigw *w = lua_newuserdatauv(L, sizeof *w, 0);
  w->ev = NULL;
  w->signum = n;
  w->self_ref = w->fn_ref = LUA_NOREF;
  luaL_setmetatable(L, SIG_META);
  w->ev = evsignal_new(base, n, sig_cb, w);
  if (!w->ev || evsignal_add(w->ev, NULL) != 0) {
    sigw_release(L, w);
    return luaL_error(L, "evsignal_add(%d) failed", n);
  }
  lua_pushvalue(L, 2);
  w->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  w->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int sig_cancel(lua_State *L) {
  struct sigw *w = luaL_checkudata(L, 1, SIG_META);
  sigw_release(L, w);
  return 0;
}

static int sig_active(lua_State *L) {
  struct sigw *w = luaL_checkudata(L, 1, SIG_META);
  lua_pushboolean(L, w->ev != NULL);
  return 1;
}

static int sig_gc(lua_State *L) {
  struct sigw *w = luaL_checkudata(L, 1, SIG_META);
  braid_check_finalizer(L);
  if (w->ev) { event_free(w->ev); w->ev = NULL; } /* refs die with the state */
  return 0;
}

/* Raise a signal at ourselves (tests, and the default SIGINT re-raise). */
static int l_raise(lua_State *L) {
  int n = check_signal(L, 1);
  lua_pushboolean(L, raise(n) == 0);
  return 1;
}

static const luaL_Reg sig_methods[] = {
  { "cancel", sig_cancel },
  { "active", sig_active },
  { NULL, NULL }
};

/* SIGPIPE's handler: nothing to do, the write returns EPIPE. */
static void on_sigpipe(int sig) { (void)sig; }

void braid_open_signals(lua_State *L) {
  /* A write to a closed socket or pipe returns EPIPE instead of ending the
  ** process. A handler that does nothing, not SIG_IGN: an ignored signal
  ** stays ignored across exec, and the commands os.execute and io.popen
  ** run would inherit it (a shell pipeline into `head` never ended); exec
  ** puts a handler back to the default. A handler the host installed
  ** stays. */
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0
      && (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) && !(old.sa_flags & SA_SIGINFO)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
  }
  if (luaL_newmetatable(L, SIG_META)) {
    luaL_newlib(L, sig_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sig_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_signal);
  lua_setfield(L, -2, "signal");
  lua_pushcfunction(L, l_signum);
  lua_setfield(L, -2, "signum");
  lua_pushcfunction(L, l_raise);
  lua_setfield(L, -2, "raise");
}

/* ---- os.execute and Ctrl-C ---------------------------------------------- */

/* os.execute(command) as Lua's own (same results), run with posix_spawn
** and waitpid instead of system(). system() ignores SIGINT and SIGQUIT in
** its caller while the command runs and puts back, when it ends, the
** settings it saw when it began: a Ctrl-C in a terminal ended the command
** and the reactor never heard of it, and a thread-pool job's command that
** spanned reactor.run() starting or stopping put a stale SIGINT setting
** back. Here braid's signal settings are left alone: a Ctrl-C reaches
** braid (its reactor stops, or before run the default action ends it) and
** the command alike, as with Twisted's spawnProcess or Python's
** subprocess. The command gets braid's signal mask and what exec leaves
** of its settings: handlers back at the default, ignored signals ignored
** (as system() gives them). */
static int l_execute(lua_State *L) {
  const char *cmd = luaL_optstring(L, 1, NULL);
  if (cmd == NULL) {  /* is a shell available? */
    lua_pushboolean(L, access("/bin/sh", X_OK) == 0);
    return 1;
  }
  char *argv[] = { "sh", "-c", (char *)cmd, NULL };
  pid_t pid;
  int status, err = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
  if (err != 0) {
    errno = err;
    return luaL_fileresult(L, 0, NULL);
  }
  while (waitpid(pid, &status, 0) == -1)
    if (errno != EINTR) return luaL_fileresult(L, 0, NULL);
  errno = 0;  /* luaL_execresult takes a nonzero status with errno set as a failure to run */
  return luaL_execresult(L, status);
}

void braid_install_os_execute(lua_State *L) {
  if (lua_getglobal(L, "os") == LUA_TTABLE) {
    lua_pushcfunction(L, l_execute);
    lua_setfield(L, -2, "execute");
  }
  lua_pop(L, 1);
}
