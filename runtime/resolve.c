/*
** resolve.c: name resolution that never blocks the loop. Each lookup runs
** the system's getaddrinfo (nsswitch: /etc/hosts, DNS...) on a detached
** thread; the result comes back to the loop through event_active on the
** request's own event (libevent is thread-enabled by loop.c).
** Opened from tcp.c (braid_open_resolve).
**
** A request is malloc'd, not Lua memory, so a lookup still running when
** the Lua state closes writes to nothing freed: the userdata handle only
** points at it, and whichever side finishes last (the thread, or the loop
** after delivery/cancel) frees it, under res_lock.
*/
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "braid.h"

#define RES_META "braid.resolve"

struct resreq {
  struct event ev;
  char *name;
  struct addrinfo *ai;
  int err;
  int self_ref;      /* anchors the handle until delivered or cancelled */
  int thread_done;   /* the lookup thread finished */
  int orphaned;      /* the Lua side is gone: the thread frees */
  int delivered;     /* the callback ran or was cancelled */
  int counted;       /* counts as reactor work */
};

struct reshandle { struct resreq *r; };

static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;

static void req_free(struct resreq *r) {
  if (r->ai) freeaddrinfo(r->ai);
  free(r->name);
  free(r);
}

static void *res_thread(void *arg) {
  struct resreq *r = arg;
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  int err = getaddrinfo(r->name, NULL, &hints, &ai);
  pthread_mutex_lock(&res_lock);
  r->err = err;
  r->ai = err ? NULL : ai;
  r->thread_done = 1;
  int orphaned = r->orphaned;
  if (!orphaned) event_active(&r->ev, EV_READ, 0);
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

static void unanchor(lua_State *L, struct resreq *r) {
  if (r->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, r->self_ref);
    r->self_ref = LUA_NOREF;
  }
  if (r->counted) { r->counted = 0; braid_work(-1); }
}

static void res_done_cb(evutil_socket_t fd, short what, void *arg) {
  struct resreq *r = arg;
  lua_State *L = braid_loop()->L;
  (void)fd; (void)what;
  if (!r->delivered) {
    r->delivered = 1;
    lua_pushcfunction(L, res_deliver_p);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
  }
  unanchor(L, r); /* the handle's __gc frees r now the thread is done */
}

/* getaddrinfo(name, cb) -> request with :cancel(); cb(list) or cb(nil, msg) */
static int l_getaddrinfo(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  struct event_base *base = braid_base(L);
  struct reshandle *h = lua_newuserdatauv(L, sizeof *h, 1);
  h->r = NULL;
  luaL_setmetatable(L, RES_META);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  struct resreq *r = calloc(1, sizeof *r);
  if (!r || !(r->name = strdup(name))) { free(r); return luaL_error(L, "out of memory"); }
  r->self_ref = LUA_NOREF;
  event_assign(&r->ev, base, -1, 0, res_done_cb, r);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  h->r = r;
  lua_pushvalue(L, -1);
  r->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r->counted = 1;
  braid_work(1);
  if (pthread_create(&th, &attr, res_thread, r) != 0) {
    pthread_attr_destroy(&attr);
    unanchor(L, r);
    h->r = NULL;
    req_free(r);
    return luaL_error(L, "pthread_create failed");
  }
  pthread_attr_destroy(&attr);
  return 1;
}

/* Stop caring: the callback will not run. */
static int res_cancel(lua_State *L) {
  struct reshandle *h = luaL_checkudata(L, 1, RES_META);
  struct resreq *r = h->r;
  if (!r || r->delivered) return 0;
  r->delivered = 1;
  /* the handle stays anchored until the thread's event arrives (it cannot
  ** be stopped), but no longer keeps the reactor running */
  if (r->counted) { r->counted = 0; braid_work(-1); }
  return 0;
}

static int res_gc(lua_State *L) {
  struct reshandle *h = lua_touserdata(L, 1);
  struct resreq *r = h->r;
  if (!r) return 0;
  h->r = NULL;
  pthread_mutex_lock(&res_lock);
  int done = r->thread_done;
  if (!done) r->orphaned = 1;
  pthread_mutex_unlock(&res_lock);
  if (done) {
    event_del(&r->ev);
    req_free(r);
  }
  return 0;
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
}
