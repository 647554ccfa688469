/*
** main.c: the braid command. Creates the Lua state, makes braid's own
** modules findable without installation, runs the script (lua.c's way:
** `arg`, a traceback message handler), and runs the reactor when the
** script left work pending without running it. --workers N turns this
** process into a supervisor of N such processes.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include <event2/event.h>

#include "braid.h"

#ifndef BRAID_SOURCE_LUA_DIR
#define BRAID_SOURCE_LUA_DIR ""
#endif

static const char *progname = "braid";

struct opts {
  const char *script;
  int script_index;     /* argv index of the script, or argc */
  const char *exec[32]; /* -e chunks, in order */
  int nexec;
  int watch;
  const char *reactor;
  const char *logfile;
  const char *loglevel;
  const char *pidfile;
  const char *console;
  const char *console_auth;
  int workers;
  double shutdown_grace; /* --shutdown-grace, or -1 */
  int version;          /* -v: print the versions first (then run, as lua5.4) */
  char *stdin_chunk;    /* --workers with "-": the script, read once */
  size_t stdin_len;
};

static void usage(FILE *f) {
  fprintf(f,
    "usage: %s [options] script.lua [args...]\n"
    "Run a Lua script on braid's reactor (Twisted's programming model).\n\n"
    "options:\n"
    "  -h, --help            show this help and exit\n"
    "  -v, --version         show braid's, Lua's and libevent's versions and the backend\n"
    "  -e CODE               run CODE before the script (may be repeated)\n"
    "  --watch               reload edited modules in place (see braid.reload)\n"
    "  --reactor NAME        event backend: epoll, poll or select\n"
    "  --logfile PATH|-      start logging to PATH, or to standard output with -\n"
    "  --loglevel LEVEL      least level logged: debug, info, warn, error, critical\n"
    "  --pidfile PATH        write the process id to PATH (removed at exit)\n"
    "  --console ENDPOINT    serve a live Lua console on unix:PATH or tcp:127.0.0.1:PORT\n"
    "  --console-auth FILE   password file for the console\n"
    "  --workers N           run N worker processes of the script under a supervisor\n"
    "  --shutdown-grace SECS with --workers: SIGKILL a worker still running SECS\n"
    "                        after the stop's SIGTERM (default 10)\n"
    "\nThe reactor runs by itself when the script leaves work pending.\n",
    progname);
}

static void die(const char *fmt, const char *a) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, a);
  fputc('\n', stderr);
  exit(1);
}

static void parse(int argc, char **argv, struct opts *o) {
  int i;
  memset(o, 0, sizeof *o);
  o->shutdown_grace = -1;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
#define NEEDVAL() do { \
      if (i + 1 >= argc) die("option '%s' needs a value (try braid --help)", a); \
      val = argv[++i]; } while (0)
    if (a[0] != '-' || strcmp(a, "-") == 0) break;
    if (strcmp(a, "--") == 0) { i++; break; }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
    else if (!strcmp(a, "-v") || !strcmp(a, "--version")) o->version = 1;
    else if (!strcmp(a, "-e")) {
      NEEDVAL();
      if (o->nexec == (int)(sizeof o->exec / sizeof o->exec[0])) die("%s", "too many -e options");
      o->exec[o->nexec++] = val;
    }
    else if (!strcmp(a, "--watch")) o->watch = 1;
    else if (!strcmp(a, "--reactor")) { NEEDVAL(); o->reactor = val; }
    else if (!strcmp(a, "--logfile")) { NEEDVAL(); o->logfile = val; }
    else if (!strcmp(a, "--loglevel")) { NEEDVAL(); o->loglevel = val; }
    else if (!strcmp(a, "--pidfile")) { NEEDVAL(); o->pidfile = val; }
    else if (!strcmp(a, "--console")) { NEEDVAL(); o->console = val; }
    else if (!strcmp(a, "--console-auth")) { NEEDVAL(); o->console_auth = val; }
    else if (!strcmp(a, "--workers")) {
      NEEDVAL();
      /* digits only: strtol alone took ' 2', '+2' and '2 ' */
      long n = 0;
      const char *d = val;
      while (*d >= '0' && *d <= '9' && n <= 1024) n = n * 10 + (*d++ - '0');
      if (d == val || *d || n < 1 || n > 1024)
        die("--workers needs a number from 1 to 1024, got '%s'", val);
      o->workers = (int)n;
    }
    else if (!strcmp(a, "--shutdown-grace")) {
      char *end;
      NEEDVAL();
      /* strtod skips leading space and takes inf, nan and hex: a plain
      ** decimal number only */
      double g = (*val >= '0' && *val <= '9') || *val == '.' ? strtod(val, &end) : -1;
      if (g < 0 || *end || !(g <= 86400) || strpbrk(val, "xXnN"))
        die("--shutdown-grace needs a number of seconds from 0 to 86400, got '%s'", val);
      o->shutdown_grace = g;
    }
    else die("unknown option '%s' (try braid --help)", a);
#undef NEEDVAL
  }
  o->script_index = i;
  o->script = i < argc ? argv[i] : NULL;
  if (o->console_auth && !o->console) die("%s", "--console-auth needs --console");
  if (o->shutdown_grace >= 0 && !o->workers) die("%s", "--shutdown-grace needs --workers");
}

/* braid's Lua directory: $BRAID_LUA_DIR, the installed share/lua/5.4 next
** to the executable, or the source tree this binary was built from. */
static const char *lua_dir(char *buf, size_t len) {
  const char *env = getenv("BRAID_LUA_DIR");
  struct stat st;
  if (env && *env) return env;
  char exe[PATH_MAX - 64];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      snprintf(buf, len, "%s/../share/lua/5.4", exe);
      char probe[PATH_MAX + 32];
      snprintf(probe, sizeof probe, "%s/braid/reactor.lua", buf);
      if (stat(probe, &st) == 0) return buf;
    }
  }
  return BRAID_SOURCE_LUA_DIR;
}

/* error(errors.X): a raised braid.error class (a table whose own `class`
** field is itself) stands for an instance made without arguments, as
** Python's `raise X` and as braid.failure takes it; replace the value at
** idx by that instance, or leave it when the class cannot make one. */
static void instance_of_raised_class(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE || !lua_checkstack(L, 2)) return;
  lua_pushliteral(L, "class");
  int is_cls = lua_rawget(L, idx) == LUA_TTABLE && lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (!is_cls) return;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 0, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TTABLE) lua_replace(L, idx);
  else lua_pop(L, 1);
}

static int msghandler(lua_State *L) {
  instance_of_raised_class(L, 1);
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int st = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return st;
}

static int report(lua_State *L, int st) {
  if (st != LUA_OK) {
    int top = lua_gettop(L);
    instance_of_raised_class(L, -1);
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL && luaL_callmeta(L, -1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);  /* an error object (braid.error's) */
    fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_settop(L, top - 1);
  }
  return st;
}

/* Call require(mod)[fn](arg) protected; returns the status. A require
** that fails reports its traceback; fn's own error (an option's bad value)
** is reported as its one line. */
static int call_module(lua_State *L, const char *mod, const char *fn, const char *arg) {
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  int st = docall(L, 1, 1);
  if (st != LUA_OK) return st;
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  if (arg) lua_pushstring(L, arg);
  return lua_pcall(L, arg ? 1 : 0, 0, 0);
}

static void set_paths(lua_State *L, const char *script) {
  char buf[PATH_MAX];
  const char *ldir = lua_dir(buf, sizeof buf);
  luaL_Buffer b;
  lua_getglobal(L, "package");
  luaL_buffinit(L, &b);
  if (script) {
    const char *slash = strrchr(script, '/');
    if (slash) {
      luaL_addlstring(&b, script, (size_t)(slash - script));
      luaL_addstring(&b, "/?.lua;");
      luaL_addlstring(&b, script, (size_t)(slash - script));
      luaL_addstring(&b, "/?/init.lua;");
    } else {
      luaL_addstring(&b, "./?.lua;./?/init.lua;");
    }
  }
  if (ldir && *ldir) {
    luaL_addstring(&b, ldir);
    luaL_addstring(&b, "/?.lua;");
    luaL_addstring(&b, ldir);
    luaL_addstring(&b, "/?/init.lua;");
  }
  lua_getfield(L, -2, "path");
  luaL_addvalue(&b);
  luaL_pushresult(&b);
  lua_setfield(L, -2, "path");
  /* braid.core is linked in: preload it */
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_braid_core);
  lua_setfield(L, -2, "braid.core");
  lua_pop(L, 2);
}

static void create_arg(lua_State *L, char **argv, int argc, int script) {
  lua_createtable(L, argc - script, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* What read_pidfile found besides a pid */
#define PIDFILE_NONE 0      /* no file (or no regular file: writing it says why) */
#define PIDFILE_INVALID -1  /* a file that holds something else: text, 0 */
#define PIDFILE_UNREADABLE -2 /* a file that cannot be read (errno says why) */
#define PIDFILE_FIFO -3     /* a named pipe: opening it to write would wait for a reader */

/* The pid a pidfile holds (its whole content: a decimal number, blanks
** around it allowed, as twistd's int() takes it), or one of the above. An
** empty file (or blanks only) holds none: there is nothing in it to lose
** (a pidfile made beforehand to give it an owner is one). A file with
** anything else in it is no pidfile of ours: it was taken as no pid and
** overwritten (and removed at exit), so `--pidfile app.conf` destroyed
** the file; twistd refuses such a file ("contains non-numeric value"),
** and so does braid. */
static long read_pidfile(const char *path) {
  char buf[64];
  size_t len = 0;
  /* O_NONBLOCK: a named pipe's open would wait for a writer */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT ? PIDFILE_NONE : PIDFILE_UNREADABLE;
  struct stat st;
  int r = fstat(fd, &st);
  if (r != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return r == 0 && S_ISFIFO(st.st_mode) ? PIDFILE_FIFO : PIDFILE_NONE;
  }
  for (;;) {
    ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); errno = e; return PIDFILE_UNREADABLE; }
    if (n == 0 || (len += (size_t)n) == sizeof buf - 1) break;
  }
  close(fd);
  if (len == sizeof buf - 1) return PIDFILE_INVALID;  /* far longer than a pid */
  buf[len] = '\0';
  const char *p = buf;
  long pid = 0;
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  if (p == buf + len) return PIDFILE_NONE;
  const char *digits = p;
  while (*p >= '0' && *p <= '9' && pid <= INT_MAX) pid = pid * 10 + (*p++ - '0');
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  if (p == digits || p != buf + len || pid < 1 || pid > INT_MAX) return PIDFILE_INVALID;
  return pid;
}

static const char *g_pidfile;
static long g_pid;  /* the pid written to it */
/* at exit: the file goes only while it still holds our pid (another
** instance may have taken it over since) */
static void remove_pidfile(void) {
  if (g_pidfile && read_pidfile(g_pidfile) == g_pid) unlink(g_pidfile);
}

/* As twistd: a pidfile whose process is alive means another instance runs
** (refused); one whose process is gone is stale, and replaced; one that
** holds no pid, or cannot be read, is refused (left as it is). */
static void write_pidfile(const char *path) {
  long other = read_pidfile(path);
  if (other == PIDFILE_UNREADABLE) {
    fprintf(stderr, "%s: cannot read pidfile %s (%s)\n", progname, path, strerror(errno));
    exit(1);
  }
  if (other == PIDFILE_FIFO) {
    fprintf(stderr, "%s: pidfile %s is a named pipe; refusing to use it\n", progname, path);
    exit(1);
  }
  if (other == PIDFILE_INVALID) {
    fprintf(stderr, "%s: pidfile %s holds no pid; refusing to overwrite it\n", progname, path);
    exit(1);
  }
  if (other > 0 && other != (long)getpid() && (kill((pid_t)other, 0) == 0 || errno == EPERM)) {
    fprintf(stderr, "%s: another process (pid %ld) runs with pidfile %s\n", progname, other, path);
    exit(1);
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "%s: cannot write pidfile %s (%s)\n", progname, path, strerror(errno));
    exit(1);
  }
  g_pid = (long)getpid();
  fprintf(f, "%ld\n", g_pid);
  fclose(f);
  g_pidfile = path;
  atexit(remove_pidfile);
}

/* --workers with "-": every worker loads the script, so it is read from
** stdin once, before the first fork (a restarted worker gets it too) */
static void read_stdin_script(struct opts *o) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) die("%s", "cannot read the script from stdin: not enough memory");
  for (;;) {
    if (len == cap) {
      char *p = cap > ((size_t)-1) / 2 ? NULL : realloc(buf, cap * 2);
      if (!p) die("%s", "cannot read the script from stdin: not enough memory");
      buf = p;
      cap *= 2;
    }
    size_t n = fread(buf + len, 1, cap - len, stdin);
    len += n;
    if (n == 0) {
      if (ferror(stdin)) die("cannot read the script from stdin (%s)", strerror(errno));
      break;
    }
  }
  /* as luaL_loadfile: a first line starting with '#' (#!) is skipped, its
  ** newline kept so that line numbers stay right */
  if (len > 0 && buf[0] == '#') {
    size_t i = 0;
    while (i < len && buf[i] != '\n') i++;
    memmove(buf, buf + i, len - i);
    len -= i;
  }
  o->stdin_chunk = buf;
  o->stdin_len = len;
}

/* ---- --workers: a small supervisor ------------------------------------ */

/* The signals the supervisor forwards to every worker as they are: SIGHUP
** (the --watch reload), SIGUSR1 (the --logfile reopen, for logrotate,
** whose postrotate reads the pidfile, which holds the supervisor's pid)
** and SIGUSR2 (the script's own). Left at their default actions, each
** ended the supervisor and left its workers running without it. */
static const int sup_forwarded[] = { SIGHUP, SIGUSR1, SIGUSR2 };
#define NFORWARDED ((int)(sizeof sup_forwarded / sizeof sup_forwarded[0]))
static volatile sig_atomic_t sup_term, sup_pending[NFORWARDED];
static void sup_sig(int s) {
  for (int i = 0; i < NFORWARDED; i++)
    if (sup_forwarded[i] == s) { sup_pending[i] = 1; return; }
  sup_term = s;
}

/* The supervisor's signals stay blocked across fork until the worker has
** put their default handlers back: a SIGTERM sent to a worker that had not
** yet done so ran sup_sig in the worker, which nothing reads (the worker
** kept running and the supervisor waited for ever). One that came that
** early is delivered on the unblock, by the default action: the worker
** stops at once (it has started nothing). */
static pid_t spawn_worker(int id) {
  sigset_t sup, old;
  pid_t parent = getpid();
  sigemptyset(&sup);
  sigaddset(&sup, SIGTERM);
  sigaddset(&sup, SIGINT);
  for (int i = 0; i < NFORWARDED; i++) sigaddset(&sup, sup_forwarded[i]);
  sigprocmask(SIG_BLOCK, &sup, &old);
  pid_t pid = fork();
  if (pid == 0) {
    char buf[16];
    sigset_t none;
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    for (int i = 0; i < NFORWARDED; i++) signal(sup_forwarded[i], SIG_DFL);
#ifdef __linux__
    /* a supervisor that dies without stopping its workers (SIGKILL, a
    ** crash) sends each of them a SIGTERM: they stop as at a SIGTERM to
    ** it, instead of serving on as orphans (holding the shared port
    ** that a new supervisor's workers then share with them). One that is
    ** gone already is seen by the parent pid, and the SIGTERM sent here
    ** is delivered on the unblock below. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) kill(getpid(), SIGTERM);
#else
    (void)parent;
#endif
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    snprintf(buf, sizeof buf, "%d", id);
    setenv("BRAID_WORKER_ID", buf, 1);
    return 0;
  }
  sigprocmask(SIG_SETMASK, &old, NULL);
  return pid;
}

/* How a worker ended, for the supervisor's log: "exited with 3" */
static const char *sup_how(char *buf, size_t len, int st) {
  if (WIFSIGNALED(st)) snprintf(buf, len, "killed by signal %d", WTERMSIG(st));
  else snprintf(buf, len, "exited with %d", WEXITSTATUS(st));
  return buf;
}

/* A worker that dies within SUP_EARLY seconds of its start SUP_EARLY_LIMIT
** times in a row never gets going (the script raises at load, its port
** cannot be bound): the supervisor gives up instead of restarting it for
** ever, as systemd's StartLimitBurst=5 does. */
#define SUP_EARLY 1.0
#define SUP_EARLY_LIMIT 5

struct sup_worker {
  pid_t pid;       /* running, or 0 */
  double started;  /* when it was forked */
  double backoff;  /* the delay before its next restart */
  double due;      /* when it restarts, or 0 */
  int early;       /* deaths in a row within SUP_EARLY of the start */
  int killed;      /* sent SIGKILL after the grace period */
};

/* Worker i died (status st) or could not be forked (how given): restart
** it after its backoff; returns 1 when it has died early too often. */
static int sup_died(struct sup_worker *w, int i, pid_t p, const char *how) {
  double now = braid_monotonic(), lived = now - w->started;
  char who[48];
  if (p > 0) snprintf(who, sizeof who, "worker %d (pid %ld)", i + 1, (long)p);
  else snprintf(who, sizeof who, "worker %d", i + 1);
  if (lived > 10) w->backoff = 0.1;
  w->early = lived < SUP_EARLY ? w->early + 1 : 0;
  if (w->early >= SUP_EARLY_LIMIT) {
    fprintf(stderr, "%s: %s %s; it died within %.0f s of its start %d times in a row:"
            " giving up, stopping the other workers\n", progname, who, how, SUP_EARLY, w->early);
    return 1;
  }
  fprintf(stderr, "%s: %s %s; restarting in %.1f s\n", progname, who, how, w->backoff);
  w->due = now + w->backoff;
  w->backoff = w->backoff * 2 > 10 ? 10 : w->backoff * 2;
  return 0;
}

/* Returns 0 in a worker (which goes on to run the script); the supervisor
** never returns. A worker that dies is restarted with backoff (0.1 s
** doubling to 10 s, reset when it had lived 10 s); one that exits 0 is
** not. SIGTERM/SIGINT stop every worker gracefully; SIGHUP, SIGUSR1 and
** SIGUSR2 are forwarded. A worker still running `grace` seconds after the
** stop's first SIGTERM is sent SIGKILL. The exit status says how the
** supervisor ended, not what happened on the way (a worker that died and
** was restarted): 0 when every worker exited 0, or when a stop ended each
** worker with status 0 or by the SIGTERM (or a terminal's SIGINT); 1 when
** a worker ended a stop otherwise (the SIGKILL too), or when the
** supervisor gave up on a worker (and stopped the others). */
static int supervise(int n, double grace) {
  struct sup_worker *w = calloc((size_t)n, sizeof *w);
  int status = 0, exiting = 0, giveup = 0;
  double stop_at = 0;  /* when the stop's first SIGTERM went out */
  char how[64];
  if (!w) die("%s", "out of memory");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sup_sig;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  for (int i = 0; i < NFORWARDED; i++) sigaction(sup_forwarded[i], &sa, NULL);
  for (int i = 0; i < n; i++) { w[i].backoff = 0.1; w[i].due = -1; }  /* -1: start now */
  for (;;) {
    int alive = 0;
    for (int i = 0; i < n; i++) if (w[i].pid > 0 || w[i].due != 0) alive++;
    if (alive == 0) break;
    if (sup_term || giveup == 1) {  /* again at each one: a second SIGTERM is sent on */
      sup_term = 0;
      if (giveup) giveup = 2;
      if (!exiting) stop_at = braid_monotonic();
      exiting = 1;
      for (int i = 0; i < n; i++) { if (w[i].pid > 0) kill(w[i].pid, SIGTERM); w[i].due = 0; }
    }
    if (exiting && braid_monotonic() >= stop_at + grace) {
      for (int i = 0; i < n; i++) {
        if (w[i].pid <= 0 || w[i].killed) continue;
        w[i].killed = 1;
        fprintf(stderr, "%s: worker %d (pid %ld) still running %.1f s after SIGTERM; sending SIGKILL\n",
                progname, i + 1, (long)w[i].pid, grace);
        kill(w[i].pid, SIGKILL);
      }
    }
    for (int k = 0; k < NFORWARDED; k++) {
      if (!sup_pending[k]) continue;
      sup_pending[k] = 0;
      for (int i = 0; i < n; i++) if (w[i].pid > 0) kill(w[i].pid, sup_forwarded[k]);
    }
    int st;
    pid_t p = waitpid(-1, &st, WNOHANG);
    if (p > 0) {
      for (int i = 0; i < n; i++) {
        if (w[i].pid != p) continue;
        w[i].pid = 0;
        int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (exiting) {
          /* a worker still starting ends by the SIGTERM's default action */
          int stopped = WIFSIGNALED(st) && (WTERMSIG(st) == SIGTERM || WTERMSIG(st) == SIGINT);
          if (w[i].killed) status = 1;  /* said when it was sent */
          else if (!clean && !stopped) {
            status = 1;
            fprintf(stderr, "%s: worker %d (pid %ld) %s while stopping\n", progname, i + 1,
                    (long)p, sup_how(how, sizeof how, st));
          }
        } else if (!clean && sup_died(&w[i], i, p, sup_how(how, sizeof how, st))) {
          giveup = 1;
          status = 1;
        }
      }
      continue;
    }
    double now = braid_monotonic();
    for (int i = 0; i < n && !exiting; i++) {
      if (w[i].due == 0 || now < w[i].due) continue;
      w[i].due = 0;
      w[i].started = now;
      pid_t q = spawn_worker(i + 1);
      if (q == 0) { free(w); return 0; }  /* a worker keeps nothing of the supervisor's */
      if (q > 0) { w[i].pid = q; continue; }
      snprintf(how, sizeof how, "could not be forked (%s)", strerror(errno));
      if (sup_died(&w[i], i, 0, how)) { giveup = 1; status = 1; break; }
    }
    if (giveup == 1) continue;
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  exit(status);
}

static int run_script(lua_State *L, struct opts *o, int argc, char **argv) {
  int st;
  create_arg(L, argv, argc, o->script_index < argc ? o->script_index : 0);
  if (o->reactor) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "braid.core");
    if ((st = docall(L, 1, 1)) != LUA_OK) return report(L, st);
    lua_getfield(L, -1, "set_backend");
    lua_remove(L, -2);
    lua_pushstring(L, o->reactor);
    if ((st = lua_pcall(L, 1, 0, 0)) != LUA_OK) return report(L, st); /* one line */
  }
  if (o->logfile && (st = call_module(L, "braid.log", "startLogging", o->logfile)) != LUA_OK)
    return report(L, st);
  if (o->loglevel && (st = call_module(L, "braid.log", "setLevel", o->loglevel)) != LUA_OK)
    return report(L, st);
  if (o->watch && (st = call_module(L, "braid.reload", "enableWatch", NULL)) != LUA_OK)
    return report(L, st);
  if (o->console) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "braid.console");
    if ((st = docall(L, 1, 1)) != LUA_OK) return report(L, st);
    lua_getfield(L, -1, "serve");
    lua_remove(L, -2);
    lua_pushstring(L, o->console);
    if (o->console_auth) lua_pushstring(L, o->console_auth); else lua_pushnil(L);
    if ((st = lua_pcall(L, 2, 0, 0)) != LUA_OK) return report(L, st); /* one line */
  }
  for (int i = 0; i < o->nexec; i++) {
    st = luaL_loadbuffer(L, o->exec[i], strlen(o->exec[i]), "=(command line)");
    if (st == LUA_OK) st = docall(L, 0, 0);
    if (st != LUA_OK) return report(L, st);
  }
  if (o->script) {  /* main() checked it is readable */
    if (o->stdin_chunk)
      st = luaL_loadbuffer(L, o->stdin_chunk, o->stdin_len, "=stdin");
    else
      st = luaL_loadfile(L, strcmp(o->script, "-") == 0 ? NULL : o->script);
    if (st != LUA_OK) return report(L, st);
    int nargs = 0;
    for (int i = o->script_index + 1; i < argc; i++, nargs++) {
      luaL_checkstack(L, 1, "too many arguments to script");
      lua_pushstring(L, argv[i]);
    }
    if ((st = docall(L, nargs, 0)) != LUA_OK) return report(L, st);
  }
  /* run the reactor if the script left work pending and did not run it */
  if ((st = call_module(L, "braid.reactor", "_runIfPending", NULL)) != LUA_OK)
    return report(L, st);
  return LUA_OK;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  struct opts *o = lua_touserdata(L, 3);
  luaL_checkversion(L);
  luaL_openlibs(L);
  braid_install_os_execute(L);  /* leaves braid's signal settings alone while a command runs */
  lua_gc(L, LUA_GCGEN, 0, 0); /* as lua.c: generational, kind to short-lived strings */
  set_paths(L, o->script);
  lua_pushboolean(L, run_script(L, o, argc, argv) == LUA_OK);
  return 1;
}

static int print_version(void) {
  lua_State *L = braid_new_state();
  if (!L) return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "braid.core", luaopen_braid_core, 0);
  lua_getfield(L, -1, "backend");
  int ok = lua_pcall(L, 0, 1, 0) == LUA_OK;
  printf("braid %s (%s, libevent %s, backend %s)\n", BRAID_VERSION, LUA_RELEASE,
         event_get_version(), ok ? lua_tostring(L, -1) : "?");
  braid_close_state(L);
  return 0;
}

int main(int argc, char **argv) {
  struct opts o;
  if (argv[0] && argv[0][0]) {
    const char *s = strrchr(argv[0], '/');
    progname = s ? s + 1 : argv[0];
  }
  /* BRAID_WORKER_ID is for the workers this process forks, which set it
  ** after the fork: one inherited (a braid that a worker started, with
  ** os.execute or io.popen) made this one a worker too, with
  ** reactor.workerId set and SO_REUSEPORT on its listening ports, so it
  ** shared its parent's port instead of failing to listen on it */
  unsetenv("BRAID_WORKER_ID");
  parse(argc, argv, &o);
  if (o.version) {
    print_version();
    fflush(stdout);
    if (!o.script && o.nexec == 0) return 0;  /* as lua5.4 -v */
  }
  if (!o.script && o.nexec == 0) die("%s", "no script given (try braid --help)");
  if (o.script && strcmp(o.script, "-") != 0 && access(o.script, R_OK) != 0) {
    fprintf(stderr, "%s: cannot open %s (%s)\n", progname, o.script, strerror(errno));
    return 1;
  }
  /* line-buffered even into a pipe: a server's output shows as it happens */
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (o.pidfile) write_pidfile(o.pidfile);
  if (o.workers > 0 && o.script && strcmp(o.script, "-") == 0) read_stdin_script(&o);
  if (o.workers > 0) /* returns only in a worker */
    supervise(o.workers, o.shutdown_grace >= 0 ? o.shutdown_grace : 10);
  if (o.workers > 0 && o.pidfile) g_pidfile = NULL; /* the supervisor owns it */
  lua_State *L = braid_new_state();
  if (!L) die("%s", "cannot create Lua state: not enough memory");
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushlightuserdata(L, &o);
  int st = lua_pcall(L, 3, 1, 0);
  int ok = st == LUA_OK && lua_toboolean(L, -1);
  if (st != LUA_OK) report(L, st);
  braid_close_state(L);
  free(o.stdin_chunk);
  return ok ? 0 : 1;
}
