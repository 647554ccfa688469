/*
** resolve.c: name resolution that never blocks the loop. Each lookup runs
** the system's getaddrinfo (nsswitch: /etc/hosts, DNS...) on a detached
** thread; the thread reports back by writing the request's eventfd, which
** the request's event watches on the loop. (Not event_active from the
** thread: the base is made with EVENT_BASE_FLAG_NOLOCK, see loop.c.)
** Opened from tcp.c (braid_open_resolve).
**
** A request is malloc'd, not Lua memory, so a lookup still running when
** the Lua state closes writes to nothing freed: the userdata handle only
** points at it, and whichever side finishes last (the thread, or the
** handle's __gc) frees it, under res_lock. The loop side alone closes the
** eventfd; the thread writes it only while the handle lives (!orphaned).
** A lookup may outlive the state, and under lua5.4 closing the state
** unloads braid/core.so: the first lookup pins the library.
**
** At most MAX_RUNNING lookups run at once (a thread each; Twisted resolves
** on a pool of 10 threads); the others wait in a FIFO queue on the loop
** side and start as running ones finish. Only a started lookup has an
** eventfd: a waiting one holds memory only, so a flood of lookups cannot
** take the process's descriptors. A waiting lookup that is cancelled never
** starts: it is finished on the loop (its event made active, with no fd),
** so a flood of lookups that time out against a DNS server that does not
** answer holds MAX_RUNNING threads and descriptors, not one per lookup.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "braid.h"

#define RES_META "braid.resolve"
#define MAX_RUNNING 16

struct resreq {
  struct event ev;   /* EV_READ on efd: the lookup is done */
  char *name;
  struct addrinfo *ai;
  int efd;           /* eventfd the thread writes when done, or -1 */
  int err;
  int family;        /* AF_UNSPEC, AF_INET or AF_INET6: what to ask getaddrinfo for */
  int self_ref;      /* anchors the handle until the thread's event arrives */
  int thread_done;   /* under res_lock: the lookup thread finished */
  int orphaned;      /* under res_lock: the handle is gone, the thread frees */
  int delivered;     /* the callback ran or was cancelled; before, r counts as reactor work */
  int started;       /* its thread was started (else it waits in the queue, or was dropped) */
  int ev_set;        /* ev was assigned (at start, or by finish_unstarted) */
  struct resreq *next_waiting, *prev_waiting;  /* the queue, while it waits */
};

/* loop side only */
static int running;                                /* started, not yet done (res_done_cb) */
static struct resreq *wait_head, *wait_tail;       /* not started yet, FIFO */

struct reshandle { struct resreq *r; };

static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;

static void req_free(struct resreq *r) {
  if (r->efd >= 0) close(r->efd);
  if (r->ai) freeaddrinfo(r->ai);
  free(r->name);
  free(r);
}

static void *res_thread(void *arg) {
  struct resreq *r = arg;
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = r->family;
  hints.ai_socktype = SOCK_STREAM;
  /* no AI_ADDRCONFIG (as Twisted's HostnameEndpoint): glibc would drop
  ** ::1 from "localhost" on a host whose only outside address is IPv4 */
  int err = getaddrinfo(r->name, NULL, &hints, &ai);
  uint64_t one = 1;
  pthread_mutex_lock(&res_lock);
  r->err = err;
  r->ai = err ? NULL : ai;
  r->thread_done = 1;
  int orphaned = r->orphaned;
  if (!orphaned && write(r->efd, &one, sizeof one) < 0) { /* cannot fail: a fresh eventfd */ }
  pthread_mutex_unlock(&res_lock);
  if (orphaned) req_free(r);
  return NULL;
}

/* deliver: stack 1 = request light userdata */
static int res_deliver_p(lua_State *L) {
  struct resreq *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->self_ref);  /* keep the handle on the stack */
  lua_getiuservalue(L, -1, 1);
  if (r->err) {
    lua_pushnil(L);
    lua_pushstring(L, gai_strerror(r->err));
    braid_pcall(L, 2, 0);
    return 0;
  }
  lua_newtable(L);
  int n = 0;
  char host[INET6_ADDRSTRLEN];
  for (struct addrinfo *ai = r->ai; ai; ai = ai->ai_next) {
    const char *fam;
    if (ai->ai_family == AF_INET) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr, host, sizeof host);
      fam = "INET";
    } else if (ai->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr, host, sizeof host);
      fam = "INET6";
    } else continue;
    int seen = 0;                                   /* /etc/hosts may list one twice */
    for (int i = 1; i <= n && !seen; i++) {
      lua_rawgeti(L, -1, i);
      lua_getfield(L, -1, "host");
      seen = strcmp(lua_tostring(L, -1), host) == 0;
      lua_pop(L, 2);
    }
    if (seen) continue;
    lua_createtable(L, 0, 2);
    lua_pushstring(L, fam);
    lua_setfield(L, -2, "family");
    lua_pushstring(L, host);
    lua_setfield(L, -2, "host");
    lua_rawseti(L, -2, ++n);
  }
  braid_pcall(L, 1, 0);
  return 0;
}

/* The callback ran or was cancelled: r no longer keeps the reactor running. */
static void res_settle(struct resreq *r) {
  if (!r->delivered) { r->delivered = 1; braid_work(-1); }
}

static void start_next(void);

static void res_done_cb(evutil_socket_t fd, short what, void *arg) {
  struct resreq *r = arg;
  lua_State *L = braid_loop()->L;
  (void)fd; (void)what;
  if (r->started) {
    running--;
    start_next();
  }
  if (!r->delivered) {
    res_settle(r);
    lua_pushcfunction(L, res_deliver_p);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
  }
  if (r->efd >= 0) close(r->efd); /* a one-shot event: no longer pending */
  r->efd = -1;
  luaL_unref(L, LUA_REGISTRYINDEX, r->self_ref); /* the handle's __gc frees r */
  r->self_ref = LUA_NOREF;
}

/* Finish r without a lookup (not started: cancelled, or its thread could
** not be made): its event, with no fd, is made active, and runs on the
** loop as a lookup's would. */
static void finish_unstarted(struct resreq *r, int err) {
  r->err = err;
  r->thread_done = 1;
  event_assign(&r->ev, braid_loop()->base, -1, 0, res_done_cb, r);
  r->ev_set = 1;
  event_active(&r->ev, EV_READ, 1);
}

/* Start r: its eventfd, its event, then its thread. 0, or an errno with
** *what naming the step that failed (nothing is left open then). */
static int start_thread(struct resreq *r, const char **what) {
  pthread_t th;
  pthread_attr_t attr;
  *what = "eventfd";
  if ((r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return errno;
  event_assign(&r->ev, braid_loop()->base, r->efd, EV_READ, res_done_cb, r);
  r->ev_set = 1;
  *what = "event_add failed";
  int err = event_add(&r->ev, NULL) != 0 ? EINVAL : 0;
  if (!err) {
    *what = "pthread_create failed";
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(&th, &attr, res_thread, r);
    pthread_attr_destroy(&attr);
    if (err) event_del(&r->ev);
  }
  if (err) {
    close(r->efd);
    r->efd = -1;
    return err;
  }
  r->started = 1;
  running++;
  return 0;
}

static void enqueue_waiting(struct resreq *r) {
  r->next_waiting = NULL;
  r->prev_waiting = wait_tail;
  if (wait_tail) wait_tail->next_waiting = r;
  else wait_head = r;
  wait_tail = r;
}

/* Take r out of the queue (a no-op if it is not in it). */
static void unlink_waiting(struct resreq *r) {
  if (r->prev_waiting) r->prev_waiting->next_waiting = r->next_waiting;
  else if (wait_head == r) wait_head = r->next_waiting;
  else return;
  if (r->next_waiting) r->next_waiting->prev_waiting = r->prev_waiting;
  else wait_tail = r->prev_waiting;
  r->next_waiting = r->prev_waiting = NULL;
}

/* Start waiting lookups while there is room. */
static void start_next(void) {
  while (running < MAX_RUNNING && wait_head) {
    struct resreq *r = wait_head;
    const char *what;
    unlink_waiting(r);
    if (start_thread(r, &what)) finish_unstarted(r, EAI_SYSTEM);
  }
}

/* getaddrinfo(name, cb, family?) -> request with :cancel(); cb(list) or
** cb(nil, msg). family: "INET" or "INET6" asks for that family's
** addresses only (Twisted's addressTypes), nil for both. */
static int l_getaddrinfo(lua_State *L) {
  static const char *const families[] = { "UNSPEC", "INET", "INET6", NULL };
  static const int af[] = { AF_UNSPEC, AF_INET, AF_INET6 };
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int family = af[luaL_checkoption(L, 3, "UNSPEC", families)];
  braid_base(L);  /* the loop's base exists (start_thread and finish_unstarted use it) */
  struct reshandle *h = lua_newuserdatauv(L, sizeof *h, 1);
  h->r = NULL;
  luaL_setmetatable(L, RES_META);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* the last thing that may raise */
  const char *fail = "out of memory";
  int err = 0;
  struct resreq *r = calloc(1, sizeof *r);
  if (!r) goto fail;
  r->efd = -1;
  r->family = family;
  r->self_ref = ref;
  if (!(r->name = strdup(name))) goto fail;
  braid_pin_library(); /* the thread may return after the state closed */
  if (running < MAX_RUNNING && !wait_head) {
    if ((err = start_thread(r, &fail))) goto fail;
  } else {
    enqueue_waiting(r);
  }
  h->r = r;
  braid_work(1);
  return 1;
fail:
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  if (r) req_free(r);
  if (err) return luaL_error(L, "%s: %s", fail, strerror(err));
  return luaL_error(L, "%s", fail);
}

/* Stop caring: the callback will not run. The handle stays anchored until
** the thread's event arrives (the lookup cannot be stopped). */
static int res_cancel(lua_State *L) {
  struct reshandle *h = luaL_checkudata(L, 1, RES_META);
  struct resreq *r = h->r;
  if (!r) return 0;
  res_settle(r);
  if (!r->started && !r->thread_done) { /* waiting: it never starts */
    unlink_waiting(r);
    finish_unstarted(r, EAI_CANCELED);
  }
  return 0;
}

/* Reached once delivered, or at state close with the lookup maybe running. */
static int res_gc(lua_State *L) {
  struct reshandle *h = luaL_checkudata(L, 1, RES_META);
  braid_check_finalizer(L);
  struct resreq *r = h->r;
  if (!r) return 0;
  h->r = NULL;
  if (r->ev_set) event_del(&r->ev);
  if (!r->started) { /* waiting at state close: no thread has it */
    unlink_waiting(r);
    req_free(r);
    return 0;
  }
  pthread_mutex_lock(&res_lock);
  int done = r->thread_done, efd = r->efd;
  if (!done) { r->orphaned = 1; r->efd = -1; } /* the thread frees r and never writes efd */
  pthread_mutex_unlock(&res_lock);
  if (done) req_free(r);
  else if (efd >= 0) close(efd);
  return 0;
}

/* resolve_stats() -> running, waiting: lookups with a thread, and queued
** (for specs and the console) */
static int l_resolve_stats(lua_State *L) {
  int waiting = 0;
  for (struct resreq *r = wait_head; r; r = r->next_waiting) waiting++;
  lua_pushinteger(L, running);
  lua_pushinteger(L, waiting);
  return 2;
}

void braid_open_resolve(lua_State *L);
void braid_open_resolve(lua_State *L) {
  if (luaL_newmetatable(L, RES_META)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, res_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, res_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_getaddrinfo);
  lua_setfield(L, -2, "getaddrinfo");
  lua_pushcfunction(L, l_resolve_stats);
  lua_setfield(L, -2, "resolve_stats");
}
