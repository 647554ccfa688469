/*
** threads.c: the thread pool behind braid.threads: deferToThread and
** callInThread run a function on a worker thread; inside a worker,
** callFromThread and blockingCallFromThread run one in the main state.
**
** Invariants:
** - Each worker thread owns one Lua state (standard libraries, the main
**   state's package.path/cpath) and never touches the main state or the
**   loop. Values cross between states as bytes (threads_copy.c):
**   nil, booleans, numbers, strings and tables of those, without cycles or
**   metatables. A function crosses as its bytecode (a blob, string.dump)
**   or as a "module.function" name.
** - Workers report through the done queue: the item that makes it
**   non-empty also writes to an eventfd that done_ev watches, and the
**   loop then delivers the whole batch on its own thread. (Not
**   event_active: that would need libevent's locks on every loop turn.)
** - P.lock guards the job queue, the worker list and every worker's
**   fields; P.done_lock guards the done queue, done_ev, efd and notified
**   (the eventfd is written and closed only under it). Lock order:
**   P.lock, then P.done_lock.
** - Jobs, blobs and workers are malloc'd, not Lua memory: a worker
**   abandoned at shutdown (its job never returned) may outlive the main
**   state, so it frees its own things if it ever finishes.
** - Threads start as jobs need them (no idle worker), up to P.max. After a
**   job, a worker polls for the next one for SPIN_SECONDS before sleeping
**   on work_cv (one spinner at a time, only with more than one CPU).
*/
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <lualib.h>
#include <event2/event.h>

#include "braid.h"
#include "threads_copy.h"

#define BLOB_META "braid.threads.blob"
#define FN_CACHE_MAX 128    /* loaded functions a worker keeps */
#define FREE_JOBS_MAX 256   /* recycled job structs */
#define KEEP_BUF 4096       /* a recycled job keeps a buffer this big */
#define MSG_MAX 320
#define SPIN_SECONDS 100e-6 /* an idle worker polls this long before sleeping */

/* ---- shared structures -------------------------------------------------- */

/* A dumped function, shared by the jobs that run it. */
struct blob {
  atomic_long refs;
  uint64_t id;        /* workers cache the loaded function by id */
  size_t len;
  char *desc;         /* "function <file:line>", for logs */
  char bytes[];
};

static void blob_unref(struct blob *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
    free(b->desc);
    free(b);
  }
}

enum { JOB_CALL = 1, JOB_FROM, JOB_BLOCK };  /* to a worker; callFromThread; blocking */
enum { ST_OK, ST_ERR, ST_COPY };

struct job {
  struct job *next;
  int kind;
  int status;
  int want;           /* JOB_CALL: deferToThread (1) or callInThread (0) */
  int target_ref;     /* JOB_CALL: registry ref of the Deferred, or LUA_NOREF */
  struct blob *fn;    /* JOB_CALL: the function, or NULL and `name` */
  char *name;         /* JOB_CALL: "module.function"; JOB_FROM/BLOCK: code or name */
  size_t namelen;
  int isname;         /* JOB_FROM/BLOCK: name (1) or bytecode (0) */
  uint64_t token;     /* JOB_BLOCK: the waiting worker's token */
  struct buf data;    /* arguments; after the call, the result or the error */
};

struct worker {
  struct worker *next;
  pthread_t th;
  lua_State *L;
  struct job *cur;      /* the running job */
  double started;       /* monotonic time cur began */
  int quit;             /* leave when idle (pool shrunk or stopping) */
  int exited;           /* the thread is leaving: join it */
  int detached;         /* abandoned at shutdown: frees itself */
  unsigned gen;         /* package paths generation applied */
  char *path, *cpath;   /* new paths to apply before the next job */
  int ncached;          /* entries of the function cache */
  pthread_cond_t cv;    /* blockingCallFromThread's reply arrived */
  uint64_t wait_token;  /* 0 unless waiting for a reply */
  int reply_ready, reply_ok;
  struct buf reply;
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t work_cv;     /* a job was queued, or a worker must quit */
  pthread_cond_t idle_cv;     /* a worker finished a job or left */
  struct job *head, *tail;    /* queued jobs */
  long queued;
  struct worker *workers;
  int nthreads;               /* workers not asked to quit */
  int nidle;                  /* workers waiting for a job */
  int spinning;               /* a worker polls `kick` before sleeping */
  int spin_ok;                /* more than one CPU: spinning can pay */
  atomic_ulong kick;          /* bumped per job queued: what the spinner polls */
  atomic_int nexited;         /* workers left and not yet joined (read unlocked) */
  int max;
  int closing;                /* stopping: workers must not wait for the main state */
  uint64_t next_token, next_blob;
  unsigned gen;
  char *path, *cpath;

  pthread_mutex_t done_lock;
  struct job *done_head, *done_tail;
  int notified;               /* efd was written and not yet drained */
  struct event *done_ev;
  int efd;                    /* eventfd done_ev watches */

  /* main thread only */
  int on_result_ref, on_call_ref;
  long outstanding;           /* submitted and not yet delivered */
  struct job *free_jobs;
  int nfree;
  struct job *delivering;     /* the batch being delivered */
  struct job *in_hand;        /* the item being delivered (freed if that fails) */
  double grace;               /* seconds lua_close waits for running jobs */
} P = {
  .lock = PTHREAD_MUTEX_INITIALIZER, .work_cv = PTHREAD_COND_INITIALIZER,
  .idle_cv = PTHREAD_COND_INITIALIZER, .done_lock = PTHREAD_MUTEX_INITIALIZER,
  .max = 10, .on_result_ref = LUA_NOREF, .on_call_ref = LUA_NOREF, .grace = 5,
};

static struct job *job_new(void) {
  struct job *j = P.free_jobs;
  if (j) {
    P.free_jobs = j->next;
    P.nfree--;
  } else if (!(j = calloc(1, sizeof *j))) {
    return NULL;
  }
  j->next = NULL;
  j->status = ST_OK;
  j->want = 0;
  j->target_ref = LUA_NOREF;
  j->fn = NULL;
  j->name = NULL;
  j->namelen = 0;
  j->isname = 0;
  j->token = 0;
  j->data.n = 0;
  return j;
}

/* Free a job's contents; recycle it on the main thread (keep = 1). */
static void job_free(struct job *j, int keep) {
  blob_unref(j->fn);
  j->fn = NULL;
  free(j->name);
  j->name = NULL;
  if (keep && P.nfree < FREE_JOBS_MAX) {
    if (j->data.cap > KEEP_BUF) braid_buf_free(&j->data);
    j->next = P.free_jobs;
    P.free_jobs = j;
    P.nfree++;
    return;
  }
  braid_buf_free(&j->data);
  free(j);
}

static void job_free_list(struct job *j, int keep) {
  while (j) {
    struct job *next = j->next;
    job_free(j, keep);
    j = next;
  }
}

/* Queue an item for the loop; the first of a batch wakes it. Any thread. */
static void post_done(struct job *j) {
  j->next = NULL;
  pthread_mutex_lock(&P.done_lock);
  if (!P.done_ev) {  /* the main state is gone */
    pthread_mutex_unlock(&P.done_lock);
    job_free(j, 0);
    return;
  }
  if (P.done_tail) P.done_tail->next = j;
  else P.done_head = j;
  P.done_tail = j;
  if (!P.notified) {
    P.notified = 1;
    uint64_t one = 1;
    ssize_t w;
    do w = write(P.efd, &one, sizeof one); while (w < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so the loop is woken anyway */
  }
  pthread_mutex_unlock(&P.done_lock);
}

/* ---- the worker thread ------------------------------------------------- */

static struct worker *worker_of(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int w_not_here(lua_State *L) {
  return luaL_error(L, "%s cannot be called in a worker thread (use "
                    "threads.callFromThread or threads.blockingCallFromThread)",
                    lua_tostring(L, lua_upvalueindex(1)));
}

static int w_is_io_thread(lua_State *L) {
  lua_pushboolean(L, 0);
  return 1;
}

/* lua_dump writer into a luaL_Buffer begun above the dumped function,
** as lstrlib.c's str_dump does */
struct w_dump { int init; luaL_Buffer b; };

static int w_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  struct w_dump *d = ud;
  if (!d->init) {
    d->init = 1;
    luaL_buffinit(L, &d->b);
  }
  luaL_addlstring(&d->b, p, sz);
  return 0;
}

/* Check f (index 1) and push what names it in the main state: the
** "module.function" string, or its bytecode (cached per function). */
static void w_push_spec(lua_State *L, const char *fname, int *isname) {
  int t = lua_type(L, 1);
  if (t == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    const char *dot = strrchr(s, '.');
    if (strlen(s) != len)
      luaL_error(L, "%s: argument #1 must be a function or a 'module.function' string, got a "
                 "string with a \\0", fname);
    if (!dot || dot == s || dot[1] == '\0')
      luaL_error(L, "%s: argument #1 must be a function or a 'module.function' string, got '%s'", fname, s);
    *isname = 1;
    lua_pushvalue(L, 1);
    return;
  }
  if (t != LUA_TFUNCTION)
    luaL_error(L, "%s: argument #1 must be a function or a 'module.function' string, got %s",
               fname, luaL_typename(L, 1));
  if (lua_iscfunction(L, 1))
    luaL_error(L, "%s: argument #1 (a C function) cannot be copied to the main thread; "
               "pass its name as a 'module.function' string", fname);
  *isname = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, "braid.threads.dumps");
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  for (int i = 1;; i++) {
    const char *up = lua_getupvalue(L, 1, i);
    if (!up) break;
    lua_pop(L, 1);
    if (strcmp(up, "_ENV") != 0)
      luaL_error(L, "%s: argument #1 (a function with upvalue '%s') cannot be copied to the "
                 "main thread; only _ENV may be an upvalue", fname, up);
  }
  struct w_dump d;
  d.init = 0;
  lua_pushvalue(L, 1);  /* lua_dump dumps the function on top */
  lua_dump(L, w_writer, &d, 0);
  if (!d.init) luaL_buffinit(L, &d.b);
  luaL_pushresult(&d.b);
  lua_remove(L, -2);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);  /* dumps[f] = code */
  lua_remove(L, -2);
}

/* callFromThread / blockingCallFromThread in a worker */
static int w_call(lua_State *L, int blocking) {
  struct worker *w = worker_of(L);
  const char *fname = blocking ? "blockingCallFromThread" : "callFromThread";
  int isname = 0, nargs = lua_gettop(L) - 1;
  char msg[MSG_MAX];
  if (nargs < 0) nargs = 0;
  lua_settop(L, nargs + 1);
  w_push_spec(L, fname, &isname);  /* at nargs + 2 */
  size_t clen;
  const char *code = lua_tolstring(L, nargs + 2, &clen);
  struct job *j = calloc(1, sizeof *j);
  if (!j || !(j->name = malloc(clen ? clen : 1))) {
    free(j);
    return luaL_error(L, "%s: not enough memory", fname);
  }
  memcpy(j->name, code, clen);
  j->namelen = clen;
  j->isname = isname;
  j->kind = blocking ? JOB_BLOCK : JOB_FROM;
  j->target_ref = LUA_NOREF;
  if (braid_copy_encode(L, 2, nargs, &j->data, fname, 2, "to the main thread", msg, sizeof msg)) {
    job_free(j, 0);
    return luaL_error(L, "%s", msg);
  }
  pthread_mutex_lock(&P.lock);
  if (w->detached || P.closing) {
    pthread_mutex_unlock(&P.lock);
    job_free(j, 0);
    return luaL_error(L, "%s: the thread pool has been stopped", fname);
  }
  if (blocking) {
    j->token = ++P.next_token;
    w->wait_token = j->token;
    w->reply_ready = 0;
  }
  post_done(j);
  if (!blocking) {
    pthread_mutex_unlock(&P.lock);
    return 0;
  }
  while (!w->reply_ready && !w->detached && !P.closing)
    pthread_cond_wait(&w->cv, &P.lock);
  int ready = w->reply_ready, ok = w->reply_ok;
  w->wait_token = 0;
  w->reply_ready = 0;
  pthread_mutex_unlock(&P.lock);
  /* once wait_token is 0 the main thread no longer writes w->reply */
  if (!ready) return luaL_error(L, "%s: the reactor stopped before the call returned", fname);
  lua_settop(L, 0);
  int n = braid_copy_decode(L, &w->reply);
  if (!ok) return lua_error(L);
  return n;
}

static int w_call_from(lua_State *L) { return w_call(L, 0); }
static int w_blocking_call(lua_State *L) { return w_call(L, 1); }

/* package.preload["braid.threads"] in a worker */
static int w_open_threads(lua_State *L) {
  struct worker *w = lua_touserdata(L, lua_upvalueindex(1));
  lua_createtable(L, 0, 6);
  lua_pushlightuserdata(L, w);
  lua_pushcclosure(L, w_call_from, 1);
  lua_setfield(L, -2, "callFromThread");
  lua_pushlightuserdata(L, w);
  lua_pushcclosure(L, w_blocking_call, 1);
  lua_setfield(L, -2, "blockingCallFromThread");
  lua_pushcfunction(L, w_is_io_thread);
  lua_setfield(L, -2, "isInIOThread");
  const char *no[] = { "deferToThread", "callInThread", "suggestThreadPoolSize",
                       "setShutdownGracePeriod", NULL };
  for (int i = 0; no[i]; i++) {
    lua_pushfstring(L, "threads.%s", no[i]);
    lua_pushcclosure(L, w_not_here, 1);
    lua_setfield(L, -2, no[i]);
  }
  return 1;
}

/* reactor stub: every field is a function raising "reactor.X cannot..." */
static int w_reactor_index(lua_State *L) {
  lua_pushfstring(L, "reactor.%s", luaL_tolstring(L, 2, NULL));
  lua_pushcclosure(L, w_not_here, 1);
  return 1;
}

static int w_open_reactor(lua_State *L) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, w_reactor_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}

static int w_open_core(lua_State *L) {
  return luaL_error(L, "braid.core cannot be loaded in a worker thread");
}

/* os.exit in a worker: it would end the whole process at once, with no
** shutdown (Twisted's sys.exit in a thread only ends that job): it raises,
** and the job fails */
static int w_os_exit(lua_State *L) {
  return luaL_error(L, "os.exit cannot be called in a worker thread (it would end the whole "
                       "process): return or raise instead");
}

static int w_init_p(lua_State *L) {
  struct worker *w = lua_touserdata(L, 1);
  luaL_openlibs(L);
  braid_install_os_execute(L);  /* leaves braid's signal settings alone while a command runs */
  lua_getglobal(L, "os");
  lua_pushcfunction(L, w_os_exit);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "braid.threads.fns");
  lua_newtable(L);  /* weak-keyed: function -> its dump */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "braid.threads.dumps");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushlightuserdata(L, w);
  lua_pushcclosure(L, w_open_threads, 1);
  lua_setfield(L, -2, "braid.threads");
  lua_pushcfunction(L, w_open_reactor);
  lua_setfield(L, -2, "braid.reactor");
  lua_pushcfunction(L, w_open_core);
  lua_setfield(L, -2, "braid.core");
  return 0;
}

/* luaL_tolstring of the value at 1, protected (a __tostring may raise) */
static int w_tostring_p(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* {text of the error, worker traceback}. The text is the error's tostring,
** or a placeholder when that raises: it must not replace the job's error
** (nor, raised in here, repeat the traceback). */
static int w_msgh(lua_State *L) {
  lua_settop(L, 1);
  lua_pushcfunction(L, w_tostring_p);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushfstring(L, "(an error value of type %s that cannot be shown)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, NULL, 1);
  lua_createtable(L, 2, 0);
  lua_insert(L, -3);
  lua_rawseti(L, -3, 2);
  lua_rawseti(L, -2, 1);
  return 1;
}

/* Push the job's function: from the worker's cache, or loaded. */
static void w_push_fn(lua_State *L, struct worker *w, struct job *j, const char *fname) {
  if (j->fn) {
    lua_getfield(L, LUA_REGISTRYINDEX, "braid.threads.fns");
    if (lua_rawgeti(L, -1, (lua_Integer)j->fn->id) == LUA_TFUNCTION) {
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
    if (w->ncached >= FN_CACHE_MAX) {  /* start afresh rather than grow */
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setfield(L, LUA_REGISTRYINDEX, "braid.threads.fns");
      w->ncached = 0;
    }
    if (luaL_loadbufferx(L, j->fn->bytes, j->fn->len, j->fn->desc, "b") != LUA_OK)
      luaL_error(L, "%s: cannot load %s in the worker: %s", fname, j->fn->desc, lua_tostring(L, -1));
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, (lua_Integer)j->fn->id);
    lua_remove(L, -2);
    w->ncached++;
    return;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "braid.threads.fns");
  lua_pushstring(L, j->name);
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  const char *dot = strrchr(j->name, '.');
  lua_pushlstring(L, j->name, (size_t)(dot - j->name));  /* kept for the message */
  lua_getglobal(L, "require");
  lua_pushvalue(L, -2);
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    luaL_error(L, "%s: module '%s' is not a table", fname, lua_tostring(L, -2));
  lua_remove(L, -2);
  int t = lua_getfield(L, -1, dot + 1);
  if (t != LUA_TFUNCTION && !(t != LUA_TNIL && luaL_getmetafield(L, -1, "__call") != LUA_TNIL))
    luaL_error(L, "%s: '%s' is not a function (it is %s)", fname, j->name, luaL_typename(L, -1));
  if (t != LUA_TFUNCTION) lua_pop(L, 1);  /* the __call field */
  lua_remove(L, -2);
  if (t == LUA_TFUNCTION) {
    lua_pushstring(L, j->name);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

static int w_job_p(lua_State *L) {
  struct job *j = lua_touserdata(L, 1);
  struct worker *w = lua_touserdata(L, 2);
  const char *fname = j->want ? "deferToThread" : "callInThread";
  lua_settop(L, 0);
  if (w->path) {
    lua_getglobal(L, "package");
    lua_pushstring(L, w->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, w->cpath);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    free(w->path);
    free(w->cpath);
    w->path = w->cpath = NULL;
  }
  w_push_fn(L, w, j, fname);
  int n = braid_copy_decode(L, &j->data);
  lua_call(L, n, j->want ? 1 : 0);
  j->data.n = 0;
  j->status = ST_OK;
  if (j->want) {
    char msg[MSG_MAX];
    int r = braid_copy_encode(L, 1, 1, &j->data, fname, 0, "from the thread", msg, sizeof msg);
    if (r == ENOMEM) return luaL_error(L, "%s", msg);
    if (r) {
      const char *s = msg;
      size_t len = strlen(msg);
      j->status = ST_COPY;
      if (braid_copy_strings(&j->data, 1, &s, &len)) return luaL_error(L, "not enough memory");
    }
  }
  return 0;
}

/* Trim the frames of the pool's own trampoline off a traceback. */
static size_t trim_traceback(const char *tb, size_t n) {
  static const char tail[] = "\n\t[C]: in ?";
  size_t tl = sizeof tail - 1;
  while (n >= tl && memcmp(tb + n - tl, tail, tl) == 0) n -= tl;
  return n;
}

static void run_job(struct worker *w, struct job *j) {
  lua_State *L = w->L;
  const char *m[2] = { "the worker thread has no Lua state (not enough memory)", "" };
  size_t ml[2];
  int st = LUA_ERRMEM;
  if (L) {
    lua_settop(L, 0);
    lua_pushcfunction(L, w_msgh);
    lua_pushcfunction(L, w_job_p);
    lua_pushlightuserdata(L, j);
    lua_pushlightuserdata(L, w);
    st = lua_pcall(L, 2, 0, 1);
  }
  if (st != LUA_OK) {
    if (L && lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      m[0] = lua_tostring(L, -2);
      m[1] = lua_tostring(L, -1);
    } else if (L && lua_type(L, -1) == LUA_TSTRING) {
      m[0] = lua_tostring(L, -1);
    }
    if (!m[0]) m[0] = "(error object is not a string)";
    if (!m[1]) m[1] = "";
    ml[0] = strlen(m[0]);
    ml[1] = trim_traceback(m[1], strlen(m[1]));
    j->data.n = 0;
    j->status = ST_ERR;
    if (braid_copy_strings(&j->data, 2, m, ml)) {
      j->data.n = 0;  /* delivered as an error without a message */
    }
  }
  if (L) lua_settop(L, 0);
}

/* Poll for a new job for a short while: in a request/response rhythm the
** next job comes back within microseconds, and catching it here saves the
** futex wake-up and context switch that sleeping on work_cv costs (Go's
** scheduler and glibc's adaptive mutexes spin for the same reason). */
static void spin_for_work(unsigned long seen) {
  double until = braid_monotonic() + SPIN_SECONDS;
  for (;;) {
    for (int i = 0; i < 64; i++)
      if (atomic_load_explicit(&P.kick, memory_order_relaxed) != seen) return;
    if (braid_monotonic() >= until) return;
  }
}

static void worker_free(struct worker *w) {
  free(w->path);
  free(w->cpath);
  braid_buf_free(&w->reply);
  pthread_cond_destroy(&w->cv);
  free(w);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  lua_State *L = braid_new_state();
  if (L) {
    lua_pushcfunction(L, w_init_p);
    lua_pushlightuserdata(L, w);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      braid_close_state(L);
      L = NULL;
    }
  }
  w->L = L;
  int ran = 0;  /* a job just finished: another may follow soon */
  pthread_mutex_lock(&P.lock);
  for (;;) {
    if (ran && !P.head && !w->quit && !P.spinning && P.spin_ok) {
      unsigned long seen = atomic_load(&P.kick);
      P.spinning = 1;
      pthread_mutex_unlock(&P.lock);
      spin_for_work(seen);
      pthread_mutex_lock(&P.lock);
      P.spinning = 0;
    }
    ran = 0;
    while (!P.head && !w->quit) {
      P.nidle++;
      pthread_cond_wait(&P.work_cv, &P.lock);
      P.nidle--;
    }
    if (w->quit) {
      /* A job may have been queued for this worker: a spinner asked to
      ** quit (the pool shrank) still counted in P.spinning, so submit
      ** woke nobody and started no thread for it. Hand it on to an idle
      ** worker (if none is idle, the workers that stay are busy and take
      ** it when done). */
      if (P.head) pthread_cond_signal(&P.work_cv);
      break;
    }
    struct job *j = P.head;
    P.head = j->next;
    if (!P.head) P.tail = NULL;
    P.queued--;
    w->cur = j;
    w->started = braid_monotonic();
    if (w->gen != P.gen) {
      free(w->path);
      free(w->cpath);
      w->path = P.path ? strdup(P.path) : NULL;
      w->cpath = P.cpath ? strdup(P.cpath) : NULL;
      if (!w->path || !w->cpath) {
        free(w->path);
        free(w->cpath);
        w->path = w->cpath = NULL;
      } else {
        w->gen = P.gen;
      }
    }
    pthread_mutex_unlock(&P.lock);
    run_job(w, j);
    pthread_mutex_lock(&P.lock);
    w->cur = NULL;
    if (w->detached) {  /* abandoned at shutdown: nobody wants the result */
      job_free(j, 0);
      break;
    }
    post_done(j);
    pthread_cond_broadcast(&P.idle_cv);
    ran = 1;
  }
  pthread_mutex_unlock(&P.lock);
  if (L) braid_close_state(L);
  w->L = NULL;
  pthread_mutex_lock(&P.lock);
  int detached = w->detached;
  if (!detached) {
    w->exited = 1;
    P.nexited++;
    pthread_cond_broadcast(&P.idle_cv);
  }
  pthread_mutex_unlock(&P.lock);
  if (detached) worker_free(w);
  return NULL;
}

/* ---- the pool (main thread) -------------------------------------------- */

/* Join and free a list of workers that left (unlinked from P.workers). */
static void join_workers(struct worker *gone) {
  while (gone) {
    struct worker *next = gone->next;
    pthread_join(gone->th, NULL);
    worker_free(gone);
    gone = next;
  }
}

/* Start one worker; requires P.lock. A worker keeps the signal mask of the
** loop thread: programs a job starts (os.execute, io.popen) inherit it, and
** with every signal blocked a shell never saw SIGCHLD and could not be
** stopped by SIGTERM. A signal the loop watches may land on a worker: the
** handler only wakes the loop (libevent's, with SA_RESTART). */
static int pool_spawn(void) {
  struct worker *w = calloc(1, sizeof *w);
  if (!w) return ENOMEM;
  pthread_cond_init(&w->cv, NULL);
  w->gen = P.gen - 1;  /* apply the paths before the first job */
  int err = pthread_create(&w->th, NULL, worker_main, w);
  if (err) {
    pthread_cond_destroy(&w->cv);
    free(w);
    return err;
  }
  w->next = P.workers;
  P.workers = w;
  P.nthreads++;
  return 0;
}

/* Join the workers that left (pool shrunk). */
static void pool_reap(void) {
  if (atomic_load(&P.nexited) == 0) return;  /* the common case: no lock */
  struct worker *gone = NULL;
  pthread_mutex_lock(&P.lock);
  for (struct worker **pw = &P.workers; *pw;) {
    struct worker *w = *pw;
    if (w->exited) {
      *pw = w->next;
      w->next = gone;
      gone = w;
      P.nexited--;
    } else {
      pw = &w->next;
    }
  }
  pthread_mutex_unlock(&P.lock);
  join_workers(gone);
}

/* Ask workers beyond P.max to leave, idle ones first; requires P.lock. */
static void pool_trim(void) {
  for (int pass = 0; pass < 2 && P.nthreads > P.max; pass++)
    for (struct worker *w = P.workers; w && P.nthreads > P.max; w = w->next)
      if (!w->quit && (pass == 1 || !w->cur)) {
        w->quit = 1;
        P.nthreads--;
      }
  pthread_cond_broadcast(&P.work_cv);
}

struct abandoned { char desc[160]; double secs; int ref; };

static const char *job_desc(const struct job *j) {
  return j->fn ? j->fn->desc : j->name ? j->name : "?";
}

/* Stop every worker. Queued jobs are dropped (returned in *dropped);
** running ones get `timeout` seconds to finish, then are abandoned: their
** threads are detached and described in *ab (malloc'd, *nab entries). */
static void pool_stop(double timeout, struct job **dropped, struct abandoned **ab, int *nab) {
  struct worker *gone = NULL;
  *ab = NULL;
  *nab = 0;
  pthread_mutex_lock(&P.lock);
  P.closing = 1;
  for (struct worker *w = P.workers; w; w = w->next) {
    w->quit = 1;
    pthread_cond_signal(&w->cv);
  }
  pthread_cond_broadcast(&P.work_cv);
  *dropped = P.head;
  P.head = P.tail = NULL;
  P.queued = 0;
  double deadline = braid_monotonic() + (timeout > 0 ? timeout : 0);
  for (;;) {
    int wait = 0;
    double now = braid_monotonic();
    for (struct worker *w = P.workers; w; w = w->next)
      if (!w->exited && (!w->cur || now < deadline)) wait = 1;
    if (!wait) break;
    struct timespec ts;
    double left = deadline - now;
    if (left > 0.05 || left <= 0) left = 0.05;  /* idle workers leave at once */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)left;
    ts.tv_nsec += (long)((left - floor(left)) * 1e9);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&P.idle_cv, &P.lock, &ts);
  }
  int n = 0;
  for (struct worker *w = P.workers; w; w = w->next) if (!w->exited) n++;
  if (n) *ab = calloc((size_t)n, sizeof **ab);
  double now = braid_monotonic();
  while (P.workers) {
    struct worker *w = P.workers;
    P.workers = w->next;
    if (w->exited) {
      w->next = gone;
      gone = w;
      continue;
    }
    w->detached = 1;  /* the thread frees w if its job ever returns */
    pthread_detach(w->th);
    if (*ab) {
      struct abandoned *a = &(*ab)[(*nab)++];
      struct job *j = w->cur;
      snprintf(a->desc, sizeof a->desc, "%s(%s)", j && j->want ? "deferToThread" : "callInThread",
               j ? job_desc(j) : "?");
      a->secs = now - w->started;
      a->ref = j ? j->target_ref : LUA_NOREF;
      if (j) j->target_ref = LUA_NOREF;
    }
  }
  P.nthreads = P.nidle = 0;
  atomic_store(&P.nexited, 0);
  pthread_mutex_unlock(&P.lock);
  join_workers(gone);
  pthread_mutex_lock(&P.lock);
  P.closing = 0;
  pthread_mutex_unlock(&P.lock);
}

/* An abandoned thread may return into this code after the Lua state
** closed (which unloads braid/core.so under lua5.4): pin the library. */

/* ---- delivering results on the loop ------------------------------------ */

static int worker_waiting(uint64_t token) {
  int found = 0;
  pthread_mutex_lock(&P.lock);
  for (struct worker *w = P.workers; w; w = w->next)
    if (w->wait_token == token && !w->reply_ready) found = 1;
  pthread_mutex_unlock(&P.lock);
  return found;
}

/* Hand a reply to the worker waiting with `token`; takes *b's buffer. */
static int reply_to(uint64_t token, int ok, struct buf *b) {
  int found = 0;
  pthread_mutex_lock(&P.lock);
  for (struct worker *w = P.workers; w; w = w->next) {
    if (w->wait_token == token && !w->reply_ready) {
      struct buf t = w->reply;
      w->reply = *b;
      *b = t;
      w->reply_ok = ok;
      w->reply_ready = 1;
      pthread_cond_signal(&w->cv);
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&P.lock);
  braid_buf_free(b);
  return found;
}

static void reply_error(uint64_t token, const char *msg) {
  struct buf b = { NULL, 0, 0 };
  size_t len = strlen(msg);
  if (braid_copy_strings(&b, 1, &msg, &len) == 0) reply_to(token, 0, &b);
  else braid_buf_free(&b);
}

/* Deliver one item; `in_hand` is freed by the caller if this raises. */
static void deliver_one(lua_State *L, struct job *j) {
  if (j->kind == JOB_CALL) {
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, P.on_result_ref);
    if (j->target_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, j->target_ref);
      luaL_unref(L, LUA_REGISTRYINDEX, j->target_ref);
      j->target_ref = LUA_NOREF;
    } else {
      lua_pushnil(L);
    }
    if (j->status == ST_OK) lua_pushboolean(L, 1);
    else if (j->status == ST_ERR) lua_pushboolean(L, 0);
    else lua_pushliteral(L, "copy");
    braid_copy_decode(L, &j->data);
    if (j->status != ST_OK) {
      lua_settop(L, base + 5);
      lua_pushstring(L, job_desc(j));
    }
    P.outstanding--;
    braid_work(-1);
    P.in_hand = NULL;
    job_free(j, 1);
    braid_pcall(L, lua_gettop(L) - base - 1, 0);
    return;
  }
  /* callFromThread / blockingCallFromThread */
  if (j->kind == JOB_BLOCK && !worker_waiting(j->token)) {
    P.in_hand = NULL;
    job_free(j, 1);
    return;
  }
  int base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, P.on_call_ref);
  if (j->kind == JOB_BLOCK) lua_pushinteger(L, (lua_Integer)j->token);
  else lua_pushboolean(L, 0);
  lua_pushlstring(L, j->name, j->namelen);
  lua_pushboolean(L, j->isname);
  braid_copy_decode(L, &j->data);
  uint64_t token = j->kind == JOB_BLOCK ? j->token : 0;
  P.in_hand = NULL;
  job_free(j, 1);
  if (braid_pcall(L, lua_gettop(L) - base - 1, 0) != LUA_OK && token)
    reply_error(token, "blockingCallFromThread: the call failed in the main thread");
}

static int deliver_p(lua_State *L) {
  struct job *j;
  while ((j = P.delivering)) {
    P.delivering = j->next;
    P.in_hand = j;
    deliver_one(L, j);
  }
  return 0;
}

/* Deliver the done queue's items, on the loop's thread or from Lua. */
static void deliver_all(lua_State *L) {
  pthread_mutex_lock(&P.done_lock);
  struct job *list = P.done_head;
  P.done_head = P.done_tail = NULL;
  P.notified = 0;
  pthread_mutex_unlock(&P.done_lock);
  if (!list) return;
  if (P.on_result_ref == LUA_NOREF) {  /* the Lua side never registered */
    job_free_list(list, 1);
    return;
  }
  if (P.delivering) {  /* called from a callback of a delivery: queue behind it */
    struct job *t = P.delivering;
    while (t->next) t = t->next;
    t->next = list;
    return;
  }
  P.delivering = list;
  while (P.delivering) {
    lua_pushcfunction(L, deliver_p);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      braid_report_error(L);
      struct job *j = P.in_hand;  /* the item that failed: drop it */
      P.in_hand = NULL;
      if (j) {
        if (j->kind == JOB_BLOCK) reply_error(j->token, "blockingCallFromThread: the call failed in the main thread");
        if (j->kind == JOB_CALL) {
          if (j->target_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, j->target_ref);
          P.outstanding--;
          braid_work(-1);
        }
        job_free(j, 1);
      }
    }
  }
}

static void done_cb(evutil_socket_t fd, short what, void *arg) {
  uint64_t n;
  (void)what; (void)arg;
  while (read(fd, &n, sizeof n) < 0 && errno == EINTR) {}
  deliver_all(braid_loop()->L);
}

/* ---- Lua-facing functions (main state) --------------------------------- */

static struct blob *blob_check(lua_State *L, int i) {
  struct blob **h = luaL_checkudata(L, i, BLOB_META);
  return *h;
}

/* threads_blob(bytecode, desc) -> blob */
static int l_blob(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *desc = luaL_checkstring(L, 2);
  struct blob **h = lua_newuserdatauv(L, sizeof *h, 0);
  *h = NULL;
  luaL_setmetatable(L, BLOB_META);
  struct blob *b = malloc(sizeof *b + len);
  if (!b || !(b->desc = strdup(desc))) {
    free(b);
    return luaL_error(L, "not enough memory");
  }
  atomic_init(&b->refs, 1);
  b->id = ++P.next_blob;
  b->len = len;
  memcpy(b->bytes, s, len);
  *h = b;
  return 1;
}

static int blob_gc(lua_State *L) {
  struct blob **h = luaL_checkudata(L, 1, BLOB_META);
  braid_check_finalizer(L);
  blob_unref(*h);
  *h = NULL;
  return 0;
}

static int ensure_event(lua_State *L) {
  if (P.done_ev) return 0;
  struct event_base *base = braid_base(L);  /* may raise: before the eventfd exists */
  cpu_set_t cpus;
  int spin_ok = sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1;
  pthread_mutex_lock(&P.lock);
  P.spin_ok = spin_ok;
  pthread_mutex_unlock(&P.lock);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return errno;
  struct event *ev = event_new(base, efd, EV_READ | EV_PERSIST, done_cb, NULL);
  if (!ev || event_add(ev, NULL) != 0) {
    if (ev) event_free(ev);
    close(efd);
    return ENOMEM;
  }
  pthread_mutex_lock(&P.done_lock);
  P.done_ev = ev;
  P.efd = efd;
  pthread_mutex_unlock(&P.done_lock);
  return 0;
}

/* threads_submit(target, fn, ...) -> nil | message
** target: a Deferred (deferToThread: its result comes back) or nil
** (callInThread); fn: a blob or a "module.function" string. */
static int l_submit(lua_State *L) {
  int want = !lua_isnil(L, 1);
  const char *fname = want ? "deferToThread" : "callInThread";
  struct blob *fn = NULL;
  const char *name = NULL;
  char msg[MSG_MAX];
  if (lua_type(L, 2) == LUA_TSTRING) name = lua_tostring(L, 2);
  else fn = blob_check(L, 2);
  if (ensure_event(L)) return luaL_error(L, "%s: not enough memory", fname);
  int ref = LUA_NOREF;
  if (want) {  /* may raise (memory): before anything is allocated */
    lua_pushvalue(L, 1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  struct job *j = job_new();
  int bad = !j;
  if (j) {
    j->kind = JOB_CALL;
    j->want = want;
    j->target_ref = ref;
    if (braid_copy_encode(L, 3, lua_gettop(L) - 2, &j->data, fname, 2, "to a thread", msg, sizeof msg)) {
      job_free(j, 1);
      if (ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ref);
      lua_pushstring(L, msg);
      return 1;
    }
    if (name && !(j->name = strdup(name))) {
      job_free(j, 1);
      bad = 1;
    }
  }
  if (bad) {
    if (ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "%s: not enough memory", fname);
  }
  pool_reap();
  pthread_mutex_lock(&P.lock);
  if (P.queued + 1 > P.nidle + P.spinning && P.nthreads < P.max) {
    int err = pool_spawn();
    if (err && P.nthreads == 0) {
      pthread_mutex_unlock(&P.lock);
      if (j->target_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, j->target_ref);
      job_free(j, 1);
      return luaL_error(L, "%s: cannot start a thread: %s", fname, strerror(err));
    }
  }
  if (fn) {
    atomic_fetch_add(&fn->refs, 1);
    j->fn = fn;
  }
  if (P.tail) P.tail->next = j;
  else P.head = j;
  P.tail = j;
  P.queued++;
  atomic_fetch_add_explicit(&P.kick, 1, memory_order_relaxed);
  if (P.nidle > 0 && P.queued > P.spinning) pthread_cond_signal(&P.work_cv);
  pthread_mutex_unlock(&P.lock);
  P.outstanding++;
  braid_work(1);
  return 0;
}

/* threads_handlers(on_result, on_call) */
static int l_handlers(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (P.on_result_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, P.on_result_ref);
  if (P.on_call_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, P.on_call_ref);
  lua_pushvalue(L, 1);
  P.on_result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  P.on_call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* threads_paths(path, cpath): what workers use from their next job on */
static int l_paths(lua_State *L) {
  const char *path = luaL_checkstring(L, 1), *cpath = luaL_checkstring(L, 2);
  char *p = strdup(path), *c = strdup(cpath);
  if (!p || !c) {
    free(p);
    free(c);
    return luaL_error(L, "not enough memory");
  }
  pthread_mutex_lock(&P.lock);
  free(P.path);
  free(P.cpath);
  P.path = p;
  P.cpath = c;
  P.gen++;
  pthread_mutex_unlock(&P.lock);
  return 0;
}

/* threads_size(n): the most threads the pool runs */
static int l_size(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 1024, 1, "size must be from 1 to 1024");
  pthread_mutex_lock(&P.lock);
  P.max = (int)n;
  pool_trim();
  /* more threads for jobs already queued, one per job no idle thread
  ** takes (a thread just started is not idle yet: count them here) */
  for (long need = P.queued - P.nidle - P.spinning; need > 0 && P.nthreads < P.max; need--)
    if (pool_spawn() != 0) break;
  pthread_mutex_unlock(&P.lock);
  pool_reap();
  return 0;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

/* threads_stats() -> {threads, idle, queued, running, max, outstanding} */
static int l_stats(lua_State *L) {
  pool_reap();
  lua_createtable(L, 0, 6);
  pthread_mutex_lock(&P.lock);
  int running = 0;
  for (struct worker *w = P.workers; w; w = w->next)
    if (w->cur) running++;
  int threads = P.nthreads, idle = P.nidle, max = P.max;
  long queued = P.queued;
  pthread_mutex_unlock(&P.lock);
  set_int(L, "threads", threads);
  set_int(L, "idle", idle);
  set_int(L, "queued", queued);
  set_int(L, "running", running);
  set_int(L, "max", max);
  set_int(L, "outstanding", P.outstanding);
  return 1;
}

/* threads_reply(token, ok, value): blockingCallFromThread's answer */
static int l_reply(lua_State *L) {
  uint64_t token = (uint64_t)luaL_checkinteger(L, 1);
  int ok = lua_toboolean(L, 2);
  struct buf b = { NULL, 0, 0 };
  char msg[MSG_MAX];
  lua_settop(L, 3);
  if (ok) {
    if (braid_copy_encode(L, 3, 1, &b, "blockingCallFromThread", 0, "to the thread", msg, sizeof msg)) {
      const char *s = msg;
      size_t len = strlen(msg);
      ok = 0;
      if (braid_copy_strings(&b, 1, &s, &len)) { braid_buf_free(&b); return luaL_error(L, "not enough memory"); }
    }
  } else {
    size_t len;
    const char *s = luaL_tolstring(L, 3, &len);
    if (braid_copy_strings(&b, 1, &s, &len)) { braid_buf_free(&b); return luaL_error(L, "not enough memory"); }
  }
  lua_pushboolean(L, reply_to(token, ok, &b));
  return 1;
}

/* threads_poll(): deliver what the workers finished, now */
static int l_poll(lua_State *L) {
  deliver_all(L);
  return 0;
}

/* threads_outstanding() -> jobs submitted and not yet delivered */
static int l_outstanding(lua_State *L) {
  lua_pushinteger(L, P.outstanding);
  return 1;
}

/* threads_grace(seconds): how long the pool waits for running jobs when
** the Lua state closes */
static int l_grace(lua_State *L) {
  double g = luaL_checknumber(L, 1);
  luaL_argcheck(L, g >= 0, 1, "grace period must be >= 0");
  P.grace = g;
  return 0;
}

/* threads_stop(timeout) -> list of {desc, seconds} abandoned, dropped count */
static int l_stop(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, 0);
  struct job *dropped;
  struct abandoned *ab;
  int nab, ndropped = 0;
  pool_stop(timeout, &dropped, &ab, &nab);
  for (struct job *j = dropped; j; j = j->next) {
    if (j->target_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, j->target_ref);
    j->target_ref = LUA_NOREF;
    ndropped++;
  }
  job_free_list(dropped, 1);
  P.outstanding -= ndropped + nab;
  braid_work(-(long)(ndropped + nab));
  if (nab > 0) braid_pin_library();
  lua_createtable(L, nab, 0);
  for (int i = 0; i < nab; i++) {
    if (ab[i].ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ab[i].ref);
    lua_createtable(L, 0, 2);
    lua_pushstring(L, ab[i].desc);
    lua_setfield(L, -2, "desc");
    lua_pushnumber(L, ab[i].secs);
    lua_setfield(L, -2, "seconds");
    lua_rawseti(L, -2, i + 1);
  }
  free(ab);
  lua_pushinteger(L, ndropped);
  return 2;
}

/* The owning state closes: stop the pool and free everything. Runs before
** loop.c's sentinel (created earlier, finalized later), so the base and
** done_ev are still there. */
static int threads_gc(lua_State *L) {
  struct job *dropped;
  struct abandoned *ab;
  int nab;
  braid_check_finalizer(L);
  pool_stop(P.grace, &dropped, &ab, &nab);
  job_free_list(dropped, 0);
  if (nab > 0) {
    fprintf(stderr, "braid.threads: %d job(s) still running as the Lua state closes, abandoned:\n", nab);
    for (int i = 0; i < nab; i++) fprintf(stderr, "  %s, running for %.1f s\n", ab[i].desc, ab[i].secs);
    fflush(stderr);
    braid_pin_library();
  }
  free(ab);
  pthread_mutex_lock(&P.done_lock);
  struct event *ev = P.done_ev;
  struct job *left = P.done_head;
  P.done_ev = NULL;
  P.done_head = P.done_tail = NULL;
  P.notified = 0;
  int efd = P.efd;
  P.efd = -1;
  pthread_mutex_unlock(&P.done_lock);
  if (ev) {
    event_free(ev);
    close(efd);
  }
  job_free_list(left, 0);
  job_free_list(P.delivering, 0);  /* a batch cut short: os.exit(c, true) in a callback */
  P.delivering = NULL;
  job_free_list(P.free_jobs, 0);
  P.free_jobs = NULL;
  P.nfree = 0;
  pthread_mutex_lock(&P.lock);
  free(P.path);
  free(P.cpath);
  P.path = P.cpath = NULL;
  pthread_mutex_unlock(&P.lock);
  P.on_result_ref = P.on_call_ref = LUA_NOREF;
  P.outstanding = 0;
  return 0;
}

static const luaL_Reg threads_funcs[] = {
  { "threads_blob", l_blob },
  { "threads_submit", l_submit },
  { "threads_handlers", l_handlers },
  { "threads_paths", l_paths },
  { "threads_size", l_size },
  { "threads_stats", l_stats },
  { "threads_reply", l_reply },
  { "threads_poll", l_poll },
  { "threads_outstanding", l_outstanding },
  { "threads_grace", l_grace },
  { "threads_stop", l_stop },
  { NULL, NULL }
};

void braid_open_threads(lua_State *L) {
  if (luaL_newmetatable(L, BLOB_META)) {
    lua_pushcfunction(L, blob_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "braid.threads.sentinel") == LUA_TNIL) {
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, threads_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.threads.sentinel");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, threads_funcs, 0);
}
