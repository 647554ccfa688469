/*
** tcp.c: stream sockets (TCP v4/v6 and UNIX): listening ports, accept,
** connect, and the transport.
**
** Invariants:
** - A connection is a userdata ("braid.tcp") holding one embedded struct
**   event, registered with exactly the flags it needs (EV_READ while
**   reading, EV_WRITE only while output is queued or a pull producer waits).
**   User values: 1 the protocol, 2 the log system string, 3 a Lua table of
**   extras (created by braid.tcp on demand).
** - Writes go out at once when nothing is queued; the rest waits in an
**   evbuffer made on first need. Reads use one shared 64 KiB buffer.
** - A live connection holds self_ref. Closing closes the fd at once and
**   queues the connection on the pending list; the pending event (run by
**   libevent after the I/O callbacks) delivers connectionLost and drops
**   self_ref. So no close is ever delivered inside a transport method or a
**   protocol callback, and a callback's connection stays valid to its end.
**   A connection on the pending list always holds self_ref.
** - Connections and ports are made (userdata, metatable, self_ref) before
**   their socket exists, as liolib's newprefile: a memory error can then
**   leak no descriptor. A port out of descriptors (EMFILE) sheds the
**   connection with the reserve descriptor, or without one stops watching
**   for PORT_BACKOFF_MS instead of waking for it again and again.
** - Lua work happens in protected trampolines on braid_loop()->L; the
**   policy (Protocol calls, Failures, log system) lives in braid.tcp,
**   reached through handlers it installs with tcp_handlers().
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/buffer.h>

#include "braid.h"

#define CONN_META "braid.tcp"
#define PORT_META "braid.tcp.port"
#define READ_SIZE 65536
#define DEFAULT_BUFSIZE 65536
#define PORT_BACKOFF_MS 100

enum { S_CONNECTING, S_OPEN, S_CLOSED };
/* reasons handed to the lost handler */
enum { R_NONE, R_DONE, R_LOST, R_ABORTED, R_ERROR, R_CONNFAIL };
/* pending deliveries */
enum { P_LOST = 1, P_WLOST = 2, P_CLOSE = 4, P_SHUT = 8 };

struct conn {
  struct event ev;
  struct evbuffer *out;    /* queued output, made on first need */
  struct conn *pend_next;
  size_t bufsize;
  lua_Integer sessionno;
  int fd;
  int self_ref;
  int err;                 /* errno of a failure */
  short evflags;           /* flags ev is added with, 0 = not added */
  unsigned char state, reason, pend;
  unsigned sent_turn;      /* the loop turn of the last write sent whole at once */
  const void *tag;         /* &conn_tag: what conn_check looks for */
  union {                  /* the peer's IP address, kept from accept() or
                           ** connect() (as Twisted keeps it), so getPeer
                           ** still answers once the socket is gone or was
                           ** reset before accept; family 0: not kept */
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } peer;
  unsigned reading : 1, read_closed : 1, write_shut : 1, shut_pending : 1,
           disconnecting : 1, queued : 1, streaming : 1, has_producer : 1,
           prod_paused : 1, pull_kick : 1, lost : 1, is_unix : 1, sent_direct : 1,
           write_held : 1,       /* removeWriter/removeAll: no EV_WRITE until a write,
                                 ** loseConnection or addWriter (Twisted's startWriting) */
           delivering : 1,       /* its dataReceived is running (deliver_fast/deliver_data) */
           wrote_direct : 1,     /* ... and a write of it went out whole at once */
           coal_pending : 1;     /* ... and later writes wait in out for its end */
};

struct port {
  struct event ev;         /* the listening socket's, or the EMFILE back-off timer */
  int fd;
  int self_ref;
  int added;               /* ev is added */
  int is_unix;
  int held;                /* removeReader/removeAll: not accepting until addReader */
};

/* handlers installed by braid.tcp; dataReceived is called from C (the hot
** path) with setsystem (the log system swap), msgh and failed (a protocol
** method raised) from there. These statics, and those below, belong to the
** Lua state: tcp_state_gc resets them when it closes. */
enum { H_EOF, H_LOST, H_ACCEPT, H_CONNECTED, H_PRODUCER, H_WLOST, H_FAILED, H_SETSYS,
       H_MSGH, H_ACCEPTERR, H_COUNT };
static const char *const handler_names[H_COUNT] = {
  "eof", "lost", "accept", "connected", "producer", "wlost", "failed", "setsystem", "msgh",
  "accepterror"
};
static int handlers[H_COUNT] = { LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF,
                                 LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF };
static int data_ref = LUA_NOREF;  /* data_p (below), for both read paths */
static int sys_upv;               /* setsystem's upvalue current_system, or 0 */

static char *rbuf;                 /* shared read buffer */
static struct conn *pend_head, *pend_tail;
static struct event *pend_ev;
static lua_Integer next_session;
static int reserve_fd = -1;       /* spare descriptor for the EMFILE trick */
static struct conn *spare;        /* a conn_new connection the last accept pass did not use */

/* ---- helpers ----------------------------------------------------------- */

static void conn_cb(evutil_socket_t fd, short what, void *arg);

static void conn_setflags(struct conn *c) {
  short want = 0;
  if (c->state == S_CONNECTING) want = EV_WRITE;
  else if (c->state == S_OPEN) {
    if (c->reading && !c->read_closed && !c->disconnecting) want |= EV_READ;
    if (((c->out && evbuffer_get_length(c->out) > 0) || c->pull_kick) && !c->write_held)
      want |= EV_WRITE;
  }
  if (want == c->evflags) return;
  if (c->evflags) event_del(&c->ev);
  c->evflags = 0;
  if (!want) return;
  event_assign(&c->ev, braid_loop()->base, c->fd, want | EV_PERSIST, conn_cb, c);
  if (event_add(&c->ev, NULL) == 0) c->evflags = want;
}

static void pend_cb(evutil_socket_t fd, short what, void *arg);

static void pend_push(struct conn *c, int what) {
  /* only an anchored connection not yet delivered may wait here (a
  ** finalizer run by an allocation may have delivered it meanwhile) */
  if (c->lost || c->self_ref == LUA_NOREF) return;
  c->pend |= what;
  if (!c->queued) {
    c->queued = 1;
    c->pend_next = NULL;
    if (pend_tail) pend_tail->pend_next = c; else pend_head = c;
    pend_tail = c;
  }
  if (!pend_ev) pend_ev = event_new(braid_loop()->base, -1, 0, pend_cb, NULL);
  if (pend_ev) event_active(pend_ev, 0, 0);
}

/* ---- the transport's fields ---------------------------------------------
**
** A transport is a userdata whose metatable is its own table of fields
** (one per connection), with __index pointing at itself; that table's
** metatable is the class, CONN_META, whose __index is the methods table.
** So `transport:write` and `transport.connected` are found by table
** lookups alone (an __index function would cost a C call per method call:
** about 200 instructions of a 64 B echo's 2,800), and every assignment
** still goes through __newindex (conn_newindex), which checks it.
**
** The fields C keeps true: connected (always present), sessionno (always
** present, set when the connection starts), paused (absent until a
** pauseProducing), disconnecting (absent until set), disconnected (absent
** until braid.tcp's lost handler sets it, as connectionLost is delivered:
** a field made at the close, not per connection), producer,
** and producerPaused (absent until a producer registers:
** braid.tcp sets them), connector (a client connection's, set by
** braid.tcp as it starts), protocol and bufferSize (absent until assigned);
** the methods table holds the defaults of the absent ones (paused,
** disconnecting, disconnected and producerPaused false,
** bufferSize 65536). Everything else assigned is stored there as is.
** conn_sync writes connected and paused without allocating when they
** become false, so a close needs no protected call. */

/* Set field k of the fields table at index t to the value on top (popped):
** rawset, with a string key that already exists (no allocation) or inside
** a call that may raise. */
static void set_fieldv(lua_State *L, int t, const char *k) {
  lua_pushstring(L, k);
  lua_insert(L, -2);
  lua_rawset(L, t);
}

static void set_fieldb(lua_State *L, int t, const char *k, int v) {
  lua_pushboolean(L, v);
  set_fieldv(L, t, k);
}

/* Push c's fields table (its transport's metatable); its index. */
static int push_fields(lua_State *L, struct conn *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
  lua_getmetatable(L, -1);
  lua_remove(L, -2);
  return lua_gettop(L);
}

/* Mirror connected and paused from the C state into the fields. When they
** become false nothing is allocated (connected always exists; paused is
** written false only when present), so this cannot raise then; making
** paused true happens only in pauseProducing, or at a connect that
** completes paused, both inside protected calls. */
static void conn_sync(lua_State *L, struct conn *c) {
  if (!L || c->self_ref == LUA_NOREF) return;
  int t = push_fields(L, c);
  set_fieldb(L, t, "connected", c->state == S_OPEN);
  int paused = c->state == S_OPEN && !c->reading;
  lua_pushliteral(L, "paused");
  if (paused || lua_rawget(L, t) != LUA_TNIL) set_fieldb(L, t, "paused", paused);
  lua_settop(L, t - 1);
}

/* disconnecting = true: the field first (a first one allocates and may
** raise: then nothing has changed) */
static void set_disconnecting(lua_State *L, struct conn *c) {
  set_fieldb(L, push_fields(L, c), "disconnecting", 1);
  lua_pop(L, 1);
  c->disconnecting = 1;
}

/* Give back the event, the descriptor and the output buffer (close, and
** __gc with L NULL: nothing to mirror then). */
static void conn_teardown(lua_State *L, struct conn *c) {
  if (c->evflags) event_del(&c->ev);
  c->evflags = 0;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (c->out) { evbuffer_free(c->out); c->out = NULL; }
  c->state = S_CLOSED;
  conn_sync(L, c);
}

/* Close the descriptor now; connectionLost follows from the pending list. */
static void conn_close(lua_State *L, struct conn *c, int reason, int err) {
  if (c->state == S_CLOSED) return;
  if (c->coal_pending) {
    /* writes of a dataReceived held to go out at its end (coalesce_end)
    ** go out now, as they would have when written */
    c->coal_pending = 0;
    if (c->fd >= 0 && reason != R_LOST && reason != R_CONNFAIL && c->out)
      (void)evbuffer_write(c->out, c->fd);
  }
  if (reason == R_ABORTED && c->fd >= 0 && !c->is_unix) {
    /* as Twisted's abort: a reset, so the kernel drops what is still
    ** unsent and the peer learns the close was not orderly */
    struct linger lg = { 1, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  conn_teardown(L, c);
  c->reason = (unsigned char)reason;
  c->err = err;
  pend_push(c, P_LOST);
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno;
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return 0;
}

static const char conn_tag = 0; /* its address marks a transport (conn_check) */
static int conn_newindex(lua_State *L);
static int conn_gc(lua_State *L);
static int conn_tostring(lua_State *L);

/* Push a connection that owns nothing yet (closed, anchored, not counted
** as work): everything that can raise happens here, before a socket. */
static struct conn *conn_new(lua_State *L) {
  /* page-aligned: where malloc put it moved with unrelated changes, and the
  ** echo stream's rate with it (1.3k to 1.8k MB/s for one and the same
  ** tcp.c, measured with the copies recv and lua_pushlstring make) */
  if (!rbuf && !(rbuf = aligned_alloc(4096, READ_SIZE))) luaL_error(L, "out of memory");
  struct conn *c = lua_newuserdatauv(L, sizeof *c, 2); /* protocol, log system */
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->self_ref = LUA_NOREF;
  c->state = S_CLOSED;
  c->reading = 1;
  c->bufsize = DEFAULT_BUFSIZE;
  int u = lua_gettop(L);
  lua_createtable(L, 0, 8); /* its fields: room for protocol and disconnecting too */
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, conn_newindex);
  lua_setfield(L, -2, "__newindex");
  luaL_getmetatable(L, CONN_META);
  lua_setmetatable(L, -2);                          /* fields -> the class */
  lua_pushcfunction(L, conn_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, conn_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "connected");
  lua_pushinteger(L, 0);
  lua_setfield(L, -2, "sessionno");
  c->tag = &conn_tag;
  lua_setmetatable(L, u);
  lua_pushvalue(L, u);
  c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return c;
}

/* Give a conn_new connection its descriptor; it is live from here on. */
static void conn_start(lua_State *L, struct conn *c, int fd, int state, int is_unix) {
  c->fd = fd;
  c->state = (unsigned char)state;
  c->is_unix = (unsigned)is_unix;
  c->sessionno = next_session++;
  braid_work(1);
  conn_setflags(c); /* connecting: EV_WRITE, also when connect finished at once */
  int t = push_fields(L, c);
  lua_pushinteger(L, c->sessionno);
  set_fieldv(L, t, "sessionno");                    /* exists: no allocation */
  lua_pop(L, 1);
  conn_sync(L, c);
}

/* Drop a conn_new connection that never got a descriptor. */
static void conn_discard(lua_State *L, struct conn *c) {
  luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
  c->self_ref = LUA_NOREF;
}

/* Push handler h, the connection (by its self ref), its protocol and its
** log system: every handler takes (transport, protocol, system, ...). */
static void push_handler(lua_State *L, int h, struct conn *c) {
  if (c->self_ref == LUA_NOREF) luaL_error(L, "braid: a handler for a released connection");
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[h]);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
  lua_getiuservalue(L, -1, 1);
  lua_getiuservalue(L, -2, 2);
}

/* Set the log system to the string at index i with the setsystem handler
** at index f (both absolute); with want_prev, push the previous one.
** braid.log's setSystem(s) is `prev = current_system; current_system = s`
** (s == nil meaning "-"): when its upvalue current_system was found, do
** that on the upvalue, as a Lua call from C costs several times more and
** this runs twice per read; otherwise (or for nil) call the function. */
static void swap_system(lua_State *L, int f, int i, int want_prev) {
  if (sys_upv && !lua_isnil(L, i)) {
    if (want_prev) lua_getupvalue(L, f, sys_upv);
    lua_pushvalue(L, i);
    lua_setupvalue(L, f, sys_upv);
  } else {
    lua_pushvalue(L, f);
    lua_pushvalue(L, i);
    lua_call(L, 1, want_prev ? 1 : 0);
  }
}

/* The fast read path runs on a thread of its own, rt, whose stack always
** holds, below what a delivery pushes: */
enum { RT_SETSYS = 1, RT_MSGH, RT_DATA, RT_BASE = RT_DATA };
static lua_State *rt;             /* NULL: no fast path (braid.log's setSystem not found) */
static int rt_ref = LUA_NOREF;    /* anchors rt */
static int rt_busy;               /* a delivery is under way on rt */
static size_t rt_len;             /* its length (bytes of rbuf) */
static struct conn *rt_conn;      /* the connection it is for: its log system is
                                  ** braid.log's ambient one (tcp_current_system) */

/* RT_DATA, deliver_fast's protected part: stack 1 = protocol, upvalue 1 =
** "dataReceived"; the data is rt_len bytes of rbuf. Whatever raises here
** (the method lookup, the string's memory, dataReceived) is a failure of
** the protocol. */
static int data_p(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_gettable(L, 1);
  lua_pushvalue(L, 1);
  lua_pushlstring(L, rbuf, rt_len);
  lua_call(L, 2, 0);
  return 0;
}

static void coalesce_begin(struct conn *c);
static void coalesce_end(lua_State *L, struct conn *c);

/* Deliver n bytes of rbuf: protocol:dataReceived(data) under the
** connection's log system, set as on_eof and the others do in braid.tcp.
** Runs inside conn_cb's protected call: an error in dataReceived, or in
** looking it up, is caught here (with a traceback) and handed to the
** failed handler, which logs it and aborts this connection; any other
** error unwinds to conn_cb. The slow path: deliver_fast below is the
** usual one. */
static void deliver_data(lua_State *L, struct conn *c, size_t n) {
  int b = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);   /* b+1 transport */
  lua_getiuservalue(L, b + 1, 1);                   /* b+2 protocol */
  lua_getiuservalue(L, b + 1, 2);                   /* b+3 log system */
  lua_rawgeti(L, LUA_REGISTRYINDEX, data_ref);      /* b+4 data_p, as the fast path's */
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_SETSYS]); /* b+5 */
  swap_system(L, b + 5, b + 3, 1);                  /* b+6 the previous system */
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_MSGH]); /* b+7 */
  lua_pushvalue(L, b + 4);
  lua_pushvalue(L, b + 2);
  rt_len = n;  /* a fast delivery under way has made its string already */
  coalesce_begin(c);
  int st = lua_pcall(L, 1, 0, b + 7);
  coalesce_end(L, c);
  swap_system(L, b + 5, b + 6, 0);
  if (st != LUA_OK) {                               /* b+8 the Failure */
    lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_FAILED]);
    lua_pushvalue(L, b + 1);
    lua_pushvalue(L, b + 8);
    lua_pushvalue(L, b + 3);
    lua_call(L, 3, 0);
  }
  lua_settop(L, b);
}

/* The read path of conn_cb, outside any protected call, so nothing here
** may raise: one lua_pcall of data_p under the Lua message handler. The
** log system is not swapped: braid.log asks tcp_current_system for it
** when something logs (its ambient system, in force while setSystem's
** upvalue current_system is false), which gives this connection's while
** rt_conn is set. 0, or -1 when the slow path (deliver_data) must do it:
** rt is in use, or a system was set and left set outside any delivery
** (the slow path puts the connection's in its place for the call). */
static int deliver_fast(struct conn *c, size_t n) {
  lua_State *L = rt;
  if (rt_busy) return -1;
  lua_getupvalue(L, RT_SETSYS, sys_upv);            /* current_system */
  int set = lua_toboolean(L, -1);
  lua_settop(L, RT_BASE);
  if (set) return -1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);   /* 4 transport */
  lua_pushvalue(L, RT_DATA);                        /* 5 data_p */
  lua_getiuservalue(L, 4, 1);                       /* protocol */
  rt_busy = 1;
  rt_len = n;
  rt_conn = c;
  coalesce_begin(c);
  int st = lua_pcall(L, 1, 0, RT_MSGH);
  rt_busy = 0;
  rt_conn = NULL;
  coalesce_end(L, c);
  if (st != LUA_OK) {                               /* 5 the Failure */
    lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_FAILED]);
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 5);
    lua_getiuservalue(L, 4, 2);                     /* the log system */
    braid_pcall(L, 3, 0);
  }
  lua_settop(L, RT_BASE);
  return 0;
}

/* tcp_current_system() -> the log system of the connection whose
** dataReceived the fast path is running, or nil (braid.log's ambient
** system) */
static int l_tcp_current_system(lua_State *L) {
  struct conn *c = rt_conn;
  if (!c || c->self_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
  if (lua_getiuservalue(L, -1, 2) != LUA_TSTRING) return 0;
  return 1;
}

/* (Re)build rt from the installed handlers (tcp_handlers), or drop it. */
static void rt_setup(lua_State *L) {
  if (rt_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, rt_ref);
  rt_ref = LUA_NOREF;
  rt = NULL;
  if (!sys_upv || handlers[H_MSGH] == LUA_NOREF || handlers[H_FAILED] == LUA_NOREF) return;
  lua_State *T = lua_newthread(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_SETSYS]);
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_MSGH]);
  lua_rawgeti(L, LUA_REGISTRYINDEX, data_ref);
  if (!lua_checkstack(T, RT_BASE + 16)) luaL_error(L, "stack overflow");
  lua_xmove(L, T, RT_BASE);
  rt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rt = T;
}

/* Tell a producer to pause (1), resume (0) from inside Lua. */
static void producer_note(lua_State *L, struct conn *c, int pause, int protected) {
  if (handlers[H_PRODUCER] == LUA_NOREF) return;
  push_handler(L, H_PRODUCER, c);
  lua_pushboolean(L, pause);
  if (protected) braid_pcall(L, 4, 0);
  else lua_call(L, 4, 0);
}

/* Flush queued output, one writev per writable event: a short write means
** the socket buffer is full, and trying again would only cost an EAGAIN.
** 0 or an errno. */
static int conn_flush(struct conn *c) {
  if (!c->out || evbuffer_get_length(c->out) == 0) return 0;
  if (evbuffer_write(c->out, c->fd) < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    return errno;
  return 0;
}

/* A registered producer that is asked for more when the output drains (a
** pull one, or a paused streaming one): while there is one, a
** loseConnection or loseWriteConnection waits for it (Twisted's doWrite
** asks it before it looks at disconnecting or _writeDisconnecting), until
** it unregisters. */
static int producer_holds(const struct conn *c) {
  return c->has_producer && (!c->streaming || c->prod_paused);
}

/* What follows output sent whole (a write, or the writes a dataReceived
** held, sent at its end): a pull producer is asked for more on the next
** writable event, and a loseConnection (loseWriteConnection) waiting for
** the queue goes ahead, as Twisted's doWrite once it drains, unless a
** producer still holds it (a resumed streaming producer's write ends its
** hold). Returns whether ev's flags must be brought up to date. */
static int sent_whole(struct conn *c) {
  int kick = c->has_producer && !c->streaming && !c->pull_kick;
  c->sent_direct = 1;
  c->sent_turn = braid_loop()->turns;
  if (kick) c->pull_kick = 1;
  if (c->disconnecting && !producer_holds(c)) pend_push(c, P_CLOSE);
  if (c->shut_pending && !producer_holds(c)) pend_push(c, P_SHUT);
  return kick;
}

/* Writes during a dataReceived: the first one sent whole goes out at once
** (a request's answer leaves as soon as it is written); the ones after it
** wait in `out` and go out together when dataReceived returns, in one
** send, where each would have been a system call of its own (a client
** pipelining many requests in one read: as Twisted's write, which buffers
** until the reactor's turn ends). An abort or a close in between sends
** them first (conn_close), so what reaches the peer is what it was. */
static void coalesce_begin(struct conn *c) {
  c->delivering = 1;
  c->wrote_direct = 0;
}

static void coalesce_end(lua_State *L, struct conn *c) {
  c->delivering = 0;
  c->wrote_direct = 0;
  if (!c->coal_pending) return;
  c->coal_pending = 0;
  if (c->state != S_OPEN) return;
  int err = conn_flush(c);
  if (err) { conn_close(L, c, R_LOST, err); return; }
  if (!c->out || evbuffer_get_length(c->out) == 0) sent_whole(c);
  conn_setflags(c);
}


/* After output drained: finish a loseConnection / loseWriteConnection. */
static void conn_drained(lua_State *L, struct conn *c) {
  if (c->disconnecting) {
    if (!producer_holds(c)) conn_close(L, c, R_DONE, 0);
    return;
  }
  if (c->shut_pending && !c->write_shut && !producer_holds(c)) {
    c->write_shut = 1;
    c->shut_pending = 0;
    shutdown(c->fd, SHUT_WR);
    pend_push(c, P_WLOST);  /* both halves shut: closed once it is told */
  }
}

/* ---- event callbacks ----------------------------------------------------- */

/* trampoline: stack 1 = conn light userdata, 2 = what, 3 = what conn_cb's
** own recv returned (>= 0), or -1 when it did not read */
static int conn_event_p(lua_State *L) {
  struct conn *c = lua_touserdata(L, 1);
  short what = (short)lua_tointeger(L, 2);
  lua_Integer got = lua_tointeger(L, 3);
  if (c->state == S_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY) return 0;
    if (err) { conn_close(L, c, R_CONNFAIL, err); return 0; }
    c->state = S_OPEN;
    conn_setflags(c); /* writes from here on re-arm it themselves */
    conn_sync(L, c);
    if (c->state != S_OPEN) return 0;  /* closed by a finalizer conn_sync's writes ran */
    push_handler(L, H_CONNECTED, c);
    if (braid_pcall(L, 3, 0) != LUA_OK) conn_close(L, c, R_NONE, 0); /* no protocol to read for */
    return 0;
  }
  if (what & EV_WRITE) {
    int err = conn_flush(c);
    if (err) { conn_close(L, c, R_LOST, err); return 0; }
    if (!c->out || evbuffer_get_length(c->out) == 0) {
      c->pull_kick = 0;
      conn_setflags(c);
      conn_drained(L, c);
      if (c->state != S_OPEN) return 0;
      /* Twisted's doWrite: a pull producer is asked for more each time
      ** the buffer empties, a paused streaming one is resumed. A
      ** loseConnection that waited for a streaming one waits on once it
      ** is resumed: the close comes when it unregisters, or once a write
      ** it makes later has been sent (conn_write), as in Twisted. */
      if (c->has_producer && (!c->streaming || c->prod_paused)) {
        c->prod_paused = 0;
        producer_note(L, c, 0, 1);
        if (c->state != S_OPEN) return 0;
      }
    }
  }
  if ((what & EV_READ) && c->reading && !c->read_closed && !c->disconnecting) {
    ssize_t n = got >= 0 ? (ssize_t)got : recv(c->fd, rbuf, READ_SIZE, 0);
    if (n > 0) {
      deliver_data(L, c, (size_t)n);
    } else if (n == 0) {
      c->read_closed = 1;
      conn_setflags(c);
      push_handler(L, H_EOF, c);
      int half = 0;
      if (braid_pcall(L, 3, 1) == LUA_OK) {
        half = lua_toboolean(L, -1);
        lua_pop(L, 1);
      }
      if (c->state != S_OPEN) return 0;
      /* half-closed both ways: closed now, or once writeConnectionLost is told */
      if (!half || (c->write_shut && !(c->pend & P_WLOST))) {
        if (c->out && evbuffer_get_length(c->out) > 0 && !half) {
          set_disconnecting(L, c); /* flush what the protocol wrote, then close */
          conn_setflags(c);
        } else {
          conn_close(L, c, R_DONE, 0);
        }
      }
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_close(L, c, R_LOST, errno);
    }
  }
  return 0;
}

/* A read-only wakeup of an open connection takes the fast path: recv
** here, then deliver_fast's single protected call (a read error closes
** the connection from here, no Lua needed). Anything else goes through
** the trampoline: protocol code runs under its own message handler
** there (braid_pcall, deliver_data), so this outer call only catches the
** trampoline's own errors (memory) and takes none, as the other
** callbacks' do. */
static void conn_cb(evutil_socket_t fd, short what, void *arg) {
  lua_State *L = braid_loop()->L;
  struct conn *c = arg;
  ssize_t got = -1;
  (void)fd;
  if ((what & (EV_READ | EV_WRITE)) == EV_READ && c->state == S_OPEN && c->reading
      && !c->read_closed && !c->disconnecting && rt) {
    got = recv(c->fd, rbuf, READ_SIZE, 0); /* a socket: skips read(2)'s file layer */
    if (got > 0) {
      if (deliver_fast(c, (size_t)got) == 0) return;
    } else if (got < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) conn_close(L, c, R_LOST, errno);
      return;
    }
  }
  lua_pushcfunction(L, conn_event_p);
  lua_pushlightuserdata(L, arg);
  lua_pushinteger(L, what);
  lua_pushinteger(L, (lua_Integer)got);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) braid_report_error(L);
}

/* deliver one pending connection: stack 1 = conn light userdata */
static int pend_deliver_p(lua_State *L) {
  struct conn *c = lua_touserdata(L, 1);
  int what = c->pend;
  c->pend = 0;
  if ((what & P_CLOSE) && c->state == S_OPEN && c->disconnecting && !producer_holds(c)
      && (!c->out || evbuffer_get_length(c->out) == 0))
    conn_close(L, c, R_DONE, 0); /* requeues this connection for P_LOST */
  if ((what & P_SHUT) && c->state == S_OPEN && c->shut_pending
      && (!c->out || evbuffer_get_length(c->out) == 0))
    conn_drained(L, c); /* shuts the write side; queues P_WLOST */
  if ((what & P_WLOST) && c->state == S_OPEN) {
    push_handler(L, H_WLOST, c);
    braid_pcall(L, 3, 0);
    /* the read side closed first: writeConnectionLost, then connectionLost */
    if (c->state == S_OPEN && c->read_closed) conn_close(L, c, R_DONE, 0);
  }
  if (c->state == S_CLOSED && !c->lost) {
    c->lost = 1;
    if (c->reason != R_NONE) {
      push_handler(L, H_LOST, c);
      lua_pushinteger(L, c->reason);
      lua_pushinteger(L, c->err);
      if (c->err) lua_pushstring(L, strerror(c->err)); else lua_pushnil(L);
      braid_pcall(L, 6, 0);
    }
  }
  /* a close during this pass queued c again (P_CLOSE, or a close in
  ** writeConnectionLost): it stays anchored until that pass, as pend_cb
  ** will still read it */
  if (c->lost && !c->queued && c->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
    braid_work(-1);
  }
  return 0;
}

static void pend_run(lua_State *L) {
  while (pend_head) {
    struct conn *c = pend_head;
    pend_head = c->pend_next;
    if (!pend_head) pend_tail = NULL;
    c->queued = 0;
    lua_pushcfunction(L, pend_deliver_p);
    lua_pushlightuserdata(L, c);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
  }
}

static void pend_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg;
  pend_run(braid_loop()->L);
}

/* tcp_deliver_closes(): deliver the closes queued now, at once (the
** reactor's shutdown: connectionLost before the "after" triggers) */
static int l_tcp_deliver_closes(lua_State *L) {
  pend_run(L);
  return 0;
}

/* ---- transport methods ---------------------------------------------------- */

/* A transport's metatable is its own (its fields table), so
** luaL_checkudata's test cannot apply: a transport is a full userdata
** (lua_rawlen is 0 for a light one) of the conn's size whose tag is
** &conn_tag, which only conn_new writes (Lua code cannot write a
** userdata's bytes). Also cheaper than a metatable check, and write()
** runs once per message. */
static struct conn *conn_test(lua_State *L, int i) {
  struct conn *c = lua_touserdata(L, i);
  return c && lua_rawlen(L, i) == sizeof *c && c->tag == &conn_tag ? c : NULL;
}

static struct conn *conn_check(lua_State *L, int i) {
  struct conn *c = conn_test(L, i);
  if (!c) luaL_typeerror(L, i, CONN_META); /* the standard error */
  return c;
}

/* tcp_is_transport(v) -> whether v is a TCP or UNIX transport (the
** console and testing.async find live ones among the registry's anchors) */
static int l_tcp_is_transport(lua_State *L) {
  lua_pushboolean(L, conn_test(L, 1) != NULL);
  return 1;
}

static int conn_write(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  size_t len;
  /* a string only: luaL_checklstring would turn a number into one */
  if (lua_type(L, 2) != LUA_TSTRING) { /* a TypeError, as writeSequence's */
    lua_pushfstring(L, "bad argument #1 to 'write' (string expected, got %s)",
                    luaL_typename(L, 2));
    return braid_raise(L, "TypeError", lua_tostring(L, -1));
  }
  const char *s = lua_tolstring(L, 2, &len);
  /* after loseWriteConnection, writes still go out until the write side
  ** is shut (once what is queued is sent), as Twisted's */
  if (c->state == S_CLOSED || c->write_shut || len == 0) return 0;
  c->write_held = 0; /* as Twisted's write: startWriting */
  if (c->delivering && c->wrote_direct && c->state == S_OPEN) {
    /* a later write of this dataReceived: out with the rest at its end */
    c->coal_pending = 1;
  } else if (c->state == S_OPEN && (!c->out || evbuffer_get_length(c->out) == 0)) {
    ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL); /* EPIPE, never SIGPIPE */
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_close(L, c, R_LOST, errno); /* delivered later, never re-entrantly */
        return 0;
      }
      n = 0;
    }
    if ((size_t)n == len) {
      if (c->delivering) c->wrote_direct = 1;
      if (sent_whole(c)) conn_setflags(c);
      return 0;
    }
    s += n;
    len -= (size_t)n;
  }
  if (!c->out && !(c->out = evbuffer_new())) return luaL_error(L, "out of memory");
  if (evbuffer_add(c->out, s, len) != 0) return luaL_error(L, "out of memory");
  if (c->state == S_OPEN && !c->coal_pending) conn_setflags(c);
  if (c->has_producer && c->streaming && !c->prod_paused
      && evbuffer_get_length(c->out) > c->bufsize) {
    c->prod_paused = 1;
    producer_note(L, c, 1, 0);
  }
  return 0;
}

static int conn_lose(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  if (c->state != S_OPEN || c->disconnecting) return 0;
  set_disconnecting(L, c);
  if (c->state != S_OPEN) return 0;  /* closed by a finalizer the field's write ran */
  c->write_held = 0; /* as Twisted's loseConnection: startWriting */
  if (producer_holds(c)) {
    /* ask the producer for the rest first: on the next writable event */
    c->pull_kick = 1;
  } else if (!c->out || evbuffer_get_length(c->out) == 0) {
    /* close on the delivery pass, so writes made after loseConnection in
    ** the same callback are still sent first */
    pend_push(c, P_CLOSE);
  }
  conn_setflags(c);
  return 0;
}

static int conn_abort(lua_State *L) { conn_close(L, conn_check(L, 1), R_ABORTED, 0); return 0; }
/* _fail(): a protocol method raised; braid.tcp stored the Failure. */
static int conn_fail(lua_State *L) { conn_close(L, conn_check(L, 1), R_ERROR, 0); return 0; }
/* _drop(): close without any delivery (refused or cancelled). */
static int conn_drop(lua_State *L) { conn_close(L, conn_check(L, 1), R_NONE, 0); return 0; }

static int conn_lose_write(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  if (c->state != S_OPEN || c->write_shut || c->shut_pending) return 0;
  c->shut_pending = 1;
  if (producer_holds(c)) {
    /* ask the producer for the rest first: on the next writable event */
    c->pull_kick = 1;
    conn_setflags(c);
  } else if (!c->out || evbuffer_get_length(c->out) == 0) {
    /* nothing queued: shut on the delivery pass, so writes made after it
    ** in the same callback are still sent first (as loseConnection's) */
    pend_push(c, P_SHUT);
  }
  return 0;
}

static int set_reading(lua_State *L, int on) {
  struct conn *c = conn_check(L, 1);
  c->reading = (unsigned)on;
  if (c->state == S_OPEN) conn_setflags(c);
  conn_sync(L, c);
  return 0;
}
/* pauseProducing / resumeProducing, and Twisted's stopReading /
** startReading (the same on a TCP or UNIX transport): while not reading,
** neither data nor the peer's FIN is seen */
static int conn_pause(lua_State *L) { return set_reading(L, 0); }
static int conn_resume(lua_State *L) { return set_reading(L, 1); }

/* _watching() -> reading, writing: whether the loop watches the open
** connection for reading and for writing now (reactor.getReaders and
** getWriters, computed on demand from the flags ev is added with) */
static int conn_watching(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  int open = c->state == S_OPEN;
  lua_pushboolean(L, open && (c->evflags & EV_READ));
  lua_pushboolean(L, open && (c->evflags & EV_WRITE));
  return 2;
}

/* _holdWrites(hold): removeWriter (true) / addWriter (false) */
static int conn_hold_writes(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  c->write_held = (unsigned)lua_toboolean(L, 2);
  if (c->state == S_OPEN) conn_setflags(c);
  return 0;
}

/* _producer(registered, streaming) */
static int conn_set_producer(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  c->has_producer = (unsigned)lua_toboolean(L, 2);
  c->streaming = (unsigned)lua_toboolean(L, 3);
  c->prod_paused = 0;
  /* A pull producer is asked for more each time the queue empties. Twisted
  ** queues every write, so one made this turn, just before the producer
  ** came, empties on the next writable event and asks it again; braid sent
  ** it at once, so that event is asked for here (else a producer whose
  ** first resumeProducing had nothing to write waits for ever). */
  c->pull_kick = c->has_producer && !c->streaming && c->sent_direct
                 && c->sent_turn == braid_loop()->turns;
  if (c->state == S_OPEN) conn_setflags(c);
  /* unregistered while a loseConnection (loseWriteConnection) waited for
  ** it: close (shut) once sent. Twisted's unregisterProducer looks only at
  ** disconnecting, so there a half-close waits for a later write. */
  if (!c->has_producer && c->state == S_OPEN && (!c->out || evbuffer_get_length(c->out) == 0)) {
    if (c->disconnecting) pend_push(c, P_CLOSE);
    else if (c->shut_pending) pend_push(c, P_SHUT);
  }
  return 0;
}

static int conn_bufsize(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  lua_pushinteger(L, c->out ? (lua_Integer)evbuffer_get_length(c->out) : 0);
  return 1;
}

/* bufferSize = value at index i (the _setBufferSize method, __newindex;
** the transport is at index 1) */
static int set_bufsize(lua_State *L, struct conn *c, int i) {
  int isint;
  lua_Integer n = lua_tointegerx(L, i, &isint);
  if (!isint || n <= 0)  /* an assignment has no argument number to name */
    return luaL_error(L, "bad value for transport.bufferSize (an integer > 0 expected, got %s)",
                      lua_type(L, i) == LUA_TNUMBER ? lua_tostring(L, i) : luaL_typename(L, i));
  lua_getmetatable(L, 1);
  lua_pushinteger(L, n);
  set_fieldv(L, lua_gettop(L) - 1, "bufferSize");
  lua_pop(L, 1);
  c->bufsize = (size_t)n;
  return 0;
}

static int conn_set_bufsize(lua_State *L) { return set_bufsize(L, conn_check(L, 1), 2); }

static int sockopt(lua_State *L, int level, int opt, int set) {
  struct conn *c = conn_check(L, 1);
  if (c->fd < 0 || c->is_unix) { if (set) return 0; lua_pushboolean(L, 0); return 1; }
  int v;
  socklen_t len = sizeof v;
  if (set) {
    v = lua_toboolean(L, 2);
    setsockopt(c->fd, level, opt, &v, sizeof v);
    return 0;
  }
  if (getsockopt(c->fd, level, opt, &v, &len) < 0) v = 0;
  lua_pushboolean(L, v != 0);
  return 1;
}
static int conn_set_nodelay(lua_State *L) { return sockopt(L, IPPROTO_TCP, TCP_NODELAY, 1); }
static int conn_get_nodelay(lua_State *L) { return sockopt(L, IPPROTO_TCP, TCP_NODELAY, 0); }
static int conn_set_keepalive(lua_State *L) { return sockopt(L, SOL_SOCKET, SO_KEEPALIVE, 1); }
static int conn_get_keepalive(lua_State *L) { return sockopt(L, SOL_SOCKET, SO_KEEPALIVE, 0); }

/* Push family, host, port, flowinfo, scope for a sockaddr. An IPv6 host
** with a scope (a link-local address) reads as getnameinfo gives it, its
** interface after a "%" ("fe80::1%eth0"), as Twisted's _getrealname. */
static int push_sockaddr(lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char host[NI_MAXHOST];
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)sa;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    lua_pushliteral(L, "INET");
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(a->sin_port));
    return 3;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)sa;
    if (a->sin6_scope_id == 0
        || getnameinfo(sa, sizeof *a, host, sizeof host, NULL, 0, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    lua_pushliteral(L, "INET6");
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(a->sin6_port));
    lua_pushinteger(L, ntohl(a->sin6_flowinfo));
    lua_pushinteger(L, a->sin6_scope_id);
    return 5;
  }
  if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *a = (const void *)sa;
    lua_pushliteral(L, "UNIX");
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if ((size_t)len > off && a->sun_path[0]) lua_pushstring(L, a->sun_path);
    else if ((size_t)len > off + 1) lua_pushlstring(L, a->sun_path, (size_t)len - off); /* abstract */
    else lua_pushnil(L);
    return 2;
  }
  lua_pushnil(L);
  return 1;
}

static int addr_of(lua_State *L, int fd, int peer) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (fd < 0) return 0;
  if ((peer ? getpeername(fd, (void *)&ss, &len) : getsockname(fd, (void *)&ss, &len)) < 0)
    return braid_pusherror(L, errno);
  return push_sockaddr(L, (void *)&ss, len);
}

/* Keep the peer's address if it is an IP one (a UNIX peer is asked of the
** socket: its path may not fit, and is most often unnamed). */
static void conn_keep_peer(struct conn *c, const struct sockaddr *sa, socklen_t len) {
  if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) && len <= sizeof c->peer)
    memcpy(&c->peer, sa, len);
}

static int conn_peer(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  if (c->peer.sa.sa_family != 0) return push_sockaddr(L, &c->peer.sa, sizeof c->peer);
  return addr_of(L, c->fd, 1);
}
static int conn_host(lua_State *L) { return addr_of(L, conn_check(L, 1)->fd, 0); }

static int conn_fileno(lua_State *L) {
  lua_pushinteger(L, conn_check(L, 1)->fd);
  return 1;
}

/* _state(): "connecting" | "open" | "closed", disconnecting, lost, sessionno */
static int conn_state(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  static const char *const names[] = { "connecting", "open", "closed" };
  lua_pushstring(L, names[c->state]);
  lua_pushboolean(L, c->disconnecting);
  lua_pushboolean(L, c->lost);
  lua_pushinteger(L, c->sessionno);
  return 4;
}

static int conn_getuv(lua_State *L) {
  conn_check(L, 1);
  lua_getiuservalue(L, 1, (int)luaL_checkinteger(L, 2));
  return 1;
}

static int conn_setuv(lua_State *L) {
  conn_check(L, 1);
  int i = (int)luaL_checkinteger(L, 2);
  lua_settop(L, 3);
  lua_setiuservalue(L, 1, i);
  return 0;
}

/* __newindex(transport, k, v); one C function for every transport (the
** methods table is the class's __index, the fields table's metatable's,
** so no closure per connection holds it). protocol and
** bufferSize are C's too (bufferSize is checked); the fields braid keeps
** (connected, disconnecting, disconnected, sessionno, paused, producer,
** producerPaused, connector) and the methods' names are not
** assignable and are left as they are, as before fields were tables;
** names starting with "__" are refused, as the fields table is also the
** transport's metatable. Anything else is stored as is. */
static int conn_newindex(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  lua_settop(L, 3);
  if (!lua_getmetatable(L, 1))                      /* 4 the fields */
    return luaL_error(L, "transport has no fields table (debug.setmetatable)");
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k) {
    if (strcmp(k, "protocol") == 0) {
      int t = lua_type(L, 3);
      if (t != LUA_TTABLE && t != LUA_TUSERDATA) { /* every event would fail, unseen */
        lua_pushfstring(L, "transport.protocol must be a protocol (a table), got %s",
                        luaL_typename(L, 3));
        return braid_raise(L, "TypeError", lua_tostring(L, -1));
      }
      lua_pushvalue(L, 3);
      lua_setiuservalue(L, 1, 1);
    } else if (strcmp(k, "bufferSize") == 0) {
      return set_bufsize(L, c, 3);
    } else if (strcmp(k, "connected") == 0 || strcmp(k, "disconnecting") == 0
               || strcmp(k, "disconnected") == 0 || strcmp(k, "sessionno") == 0
               || strcmp(k, "paused") == 0 || strcmp(k, "producer") == 0
               || strcmp(k, "producerPaused") == 0
               || strcmp(k, "connector") == 0) {
      return 0;
    } else if (k[0] == '_' && k[1] == '_') {
      return luaL_error(L, "transport field '%s' is reserved (names starting with __ are)", k);
    }
    /* 5 the class: its methods' names are not assignable (unless Lua code
    ** gave the fields table another metatable: then there is no class) */
    if (lua_getmetatable(L, 4) && lua_type(L, 5) == LUA_TTABLE) {
      lua_pushliteral(L, "__index");
      if (lua_rawget(L, 5) == LUA_TTABLE) {         /* 6 the methods */
        lua_pushvalue(L, 2);
        if (lua_rawget(L, 6) != LUA_TNIL) return 0; /* a method's name */
      }
    }
    lua_settop(L, 4);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, 4);
  return 0;
}

static int conn_tostring(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  lua_pushfstring(L, "<%s transport #%d fd=%d>", c->is_unix ? "UNIX" : "TCP",
                  (int)c->sessionno, c->fd);
  return 1;
}

/* __gc: only reached once self_ref is gone, i.e. closed and delivered,
** or at state close. */
static int conn_gc(lua_State *L) {
  struct conn *c = conn_check(L, 1);
  braid_check_finalizer(L);
  conn_teardown(NULL, c);
  return 0;
}

/* ---- sockets -------------------------------------------------------------- */

/* Fill ss from (family, host, port); 0 or an errno (EINVAL for a bad host). */
/* The scope of an IPv6 literal's "%scope": an interface's number or name. */
static uint32_t scope_id(const char *s) {
  char *end;
  unsigned long n = strtoul(s, &end, 10);
  if (*s && *end == 0) return (uint32_t)n;
  return (uint32_t)if_nametoindex(s);
}

/* Fill ss (port included) from host when it is an IP literal: IPv4, or
** IPv6 with an optional %scope (an interface's number or name). Returns
** the family, or 0 for anything else (a name, or a malformed address like
** 999.1.1.1). */
static int parse_literal(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  struct sockaddr_in *a4 = (void *)ss;
  struct sockaddr_in6 *a6 = (void *)ss;
  char buf[INET6_ADDRSTRLEN + 16];
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (strlen(host) >= sizeof buf) return 0;
  strcpy(buf, host);
  char *pct = strchr(buf, '%');
  if (pct) *pct = 0;
  if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1) return 0;
  a6->sin6_family = AF_INET6;
  a6->sin6_port = htons((uint16_t)port);
  if (pct) a6->sin6_scope_id = scope_id(pct + 1);
  *len = sizeof *a6;
  return AF_INET6;
}

/* service_port(name) -> the TCP port number of a service name (from
** /etc/services: "http" is 80), or nil */
static int l_service_port(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct servent se, *res = NULL;
  char buf[1024];
  if (getservbyname_r(name, "tcp", &se, buf, sizeof buf, &res) != 0 || !res) return 0;
  lua_pushinteger(L, ntohs((uint16_t)res->s_port));
  return 1;
}

/* samefile(a, b) -> whether the two paths name one file (links
** followed): UNIXAddress equality, as Twisted's os.path.samefile */
static int l_samefile(lua_State *L) {
  struct stat sa, sb;
  const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
  lua_pushboolean(L, stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev
                     && sa.st_ino == sb.st_ino);
  return 1;
}

/* ip_family(host) -> "IPv4" | "IPv6" | nil: whether host is an IP literal
** (braid.tcp connects to those at once and resolves the rest) */
static int l_ip_family(lua_State *L) {
  struct sockaddr_storage ss;
  socklen_t len;
  int f = parse_literal(luaL_checkstring(L, 1), 0, &ss, &len);
  if (f == AF_INET) lua_pushliteral(L, "IPv4");
  else if (f == AF_INET6) lua_pushliteral(L, "IPv6");
  else lua_pushnil(L);
  return 1;
}

/* What a name that does not resolve failed with: getaddrinfo's reason
** ("Name or service not known") and code (Python's gaierror number,
** EAI_NONAME's -2 say; the errno for EAI_SYSTEM). */
struct lookup_error {
  const char *why;
  int code;
};

/* EINVAL when host is a name that does not resolve; *le (if not NULL) then
** says why */
static int make_sockaddr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len,
                         struct lookup_error *le) {
  struct sockaddr_in *a4 = (void *)ss;
  struct sockaddr_in6 *a6 = (void *)ss;
  if (host == NULL || host[0] == 0) host = "0.0.0.0"; /* Twisted's "": IPv4's any */
  if (parse_literal(host, port, ss, len)) return 0;
  /* a name (an interface to listen on, "localhost"): resolved here, as
  ** Twisted's bind does; connections resolve theirs first, off the loop
  ** (IPv4 first: Twisted binds a name on an IPv4 socket) */
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) {
    hints.ai_family = AF_UNSPEC;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
      int sys = rc == EAI_SYSTEM ? errno : 0;
      if (le) {
        le->why = sys ? strerror(sys) : gai_strerror(rc);
        le->code = sys ? sys : rc;
      }
      return EINVAL;
    }
  }
  if (res->ai_addrlen <= sizeof *ss) {
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    if (ss->ss_family == AF_INET) a4->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6) a6->sin6_port = htons((uint16_t)port);
  }
  int ok = res->ai_addrlen <= sizeof *ss && (ss->ss_family == AF_INET || ss->ss_family == AF_INET6);
  freeaddrinfo(res);
  return ok ? 0 : EINVAL;
}

/* n bytes of path: a file name (no NUL), or with a leading NUL, a name in
** Linux's abstract namespace (all n bytes count, no NUL after them) */
static int make_unaddr(const char *path, size_t n, struct sockaddr_un *un, socklen_t *len) {
  int abstract = n > 0 && path[0] == 0;
  memset(un, 0, sizeof *un);
  /* a file name needs its NUL after it; an abstract name may fill sun_path */
  if (n == 0 || n > sizeof un->sun_path || (!abstract && n == sizeof un->sun_path))
    return ENAMETOOLONG;
  if (!abstract && memchr(path, 0, n)) return EINVAL;
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + !abstract);
  return 0;
}

/* Whether a server may be using the socket file at path: some UNIX socket
** of this network namespace, of any type (a datagram server is bound but
** never listens), is bound to a path of the same file name (bound paths may
** be relative to another process's directory, so only the last part is
** compared). Without /proc: yes. */
static int unix_maybe_live(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  FILE *f = fopen("/proc/net/unix", "re");
  if (!f) return 1;
  char *line = NULL;
  size_t cap = 0;
  int live = 0;
  if (getline(&line, &cap, f) < 0) live = 1; /* not even its header */
  while (!live && getline(&line, &cap, f) > 0) {
    unsigned long flags;
    int n = 0;
    /* Num RefCount Protocol Flags Type St Inode [Path] */
    if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %n", &flags, &n) < 1 || n == 0) continue;
    char *p = line + n;
    p[strcspn(p, "\n")] = 0;
    const char *pb = strrchr(p, '/');
    pb = pb ? pb + 1 : p;
    live = strcmp(pb, base) == 0;
  }
  free(line);
  fclose(f);
  return live;
}

/* Whether the socket file at un is left over: nothing of this namespace is
** bound to its name (unix_maybe_live), and a connection to it is refused,
** which also tells a server of another namespace (a container sharing the
** directory) that is alive. A live stream server whose name /proc did not
** show sees the probe as a connection closed at once. */
static int unix_stale(const char *path, const struct sockaddr_un *un, socklen_t len) {
  if (unix_maybe_live(path)) return 0;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int stale = connect(fd, (const void *)un, len) < 0 && errno == ECONNREFUSED;
  close(fd);
  return stale;
}

/* ---- listening ports -------------------------------------------------------- */

static void port_cb(evutil_socket_t fd, short what, void *arg);

/* (Re)arm ev as the listening socket's. */
static void port_watch(struct port *p) {
  event_assign(&p->ev, braid_loop()->base, p->fd, EV_READ | EV_PERSIST, port_cb, p);
  p->added = event_add(&p->ev, NULL) == 0;
}

/* The EMFILE back-off is over: watch the socket again. */
static void port_backoff_cb(evutil_socket_t fd, short what, void *arg) {
  struct port *p = arg;
  (void)fd; (void)what;
  if (reserve_fd < 0) reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  p->added = 0;
  if (!p->held) port_watch(p);
}

/* Out of descriptors with no reserve to shed the connection: the socket
** stays readable, so stop watching it for a while rather than spin. */
static void port_backoff(struct port *p) {
  struct timeval tv = { 0, PORT_BACKOFF_MS * 1000 };
  event_del(&p->ev);
  evtimer_assign(&p->ev, braid_loop()->base, port_backoff_cb, p);
  p->added = evtimer_add(&p->ev, &tv) == 0;
}

/* Shed one pending connection with the reserve descriptor; 0 when there
** was none to take (no reserve, or the queue emptied). */
static int port_shed(struct port *p) {
  if (reserve_fd < 0) return 0;
  close(reserve_fd);
  int x = accept(p->fd, NULL, NULL);
  if (x >= 0) close(x);
  reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return x >= 0;
}

/* accept(2) failed with e: the accepterror handler logs it as Twisted's
** port does ("Could not accept new connection (EMFILE)"). The port is at
** index 2 of port_accept_p's stack. */
static void port_accept_error(lua_State *L, int e) {
  if (handlers[H_ACCEPTERR] == LUA_NOREF) return;
  const char *name = strerrorname_np(e);
  lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_ACCEPTERR]);
  lua_pushvalue(L, 2);
  if (name) lua_pushstring(L, name);
  else lua_pushfstring(L, "errno %d", e);
  braid_pcall(L, 2, 0);
}

static int port_accept_p(lua_State *L) {
  struct port *p = lua_touserdata(L, 1);
  struct conn *c = NULL;
  int told = 0; /* an error was logged on this pass (the shedding below repeats it) */
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->self_ref); /* 2: anchored for the loop */
  for (int i = 0; i < 64 && p->fd >= 0 && !p->held; i++) {
    if (!c) {                                     /* 3: made before the descriptor */
      if (spare) {
        c = spare;
        spare = NULL;
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
      } else {
        c = conn_new(L);
      }
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(p->fd, (void *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == EPERM) break;
      if (!told) {
        told = 1;
        if (c) lua_settop(L, 3); /* the spare conn (index 3) stays anchored */
        port_accept_error(L, e);
        if (p->fd < 0 || p->held) break; /* the handler closed or removed the port */
      }
      if (e != EMFILE && e != ENFILE) break; /* ECONNABORTED, ENOBUFS...: next wakeup */
      if (port_shed(p)) continue;
      if (reserve_fd < 0) port_backoff(p);
      break;
    }
    if (!p->is_unix) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    conn_keep_peer(c, (void *)&ss, sl);
    conn_start(L, c, fd, S_OPEN, p->is_unix);
    if (p->fd < 0 || c->state != S_OPEN) {
      /* a finalizer conn_start's writes ran closed the port or shut down */
      conn_close(L, c, R_NONE, 0);
      c = NULL;
      break;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_ACCEPT]);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    if (braid_pcall(L, 2, 0) != LUA_OK) conn_close(L, c, R_NONE, 0); /* no protocol to read for */
    lua_settop(L, 2);
    c = NULL;
  }
  spare = c; /* the pass that ends on EAGAIN leaves one: kept (anchored) for the next */
  return 0;
}

static void port_cb(evutil_socket_t fd, short what, void *arg) {
  lua_State *L = braid_loop()->L;
  (void)fd; (void)what;
  lua_pushcfunction(L, port_accept_p);
  lua_pushlightuserdata(L, arg);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) braid_report_error(L);
}

/* Stop watching and close the socket (close, __gc). */
static void port_teardown(struct port *p) {
  if (p->added) { event_del(&p->ev); p->added = 0; }
  if (p->fd >= 0) { close(p->fd); p->fd = -1; }
}

static void port_release(lua_State *L, struct port *p) {
  port_teardown(p);
  if (p->self_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    p->self_ref = LUA_NOREF;
    braid_work(-1);
  }
}

/* Push a port that owns nothing yet (see conn_new). */
static struct port *port_new(lua_State *L) {
  braid_base(L);
  struct port *p = lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  p->fd = -1;
  p->self_ref = LUA_NOREF;
  luaL_setmetatable(L, PORT_META);
  lua_pushvalue(L, -1);
  p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return p;
}

/* Give a port_new port its listening socket; 1 (the port, on top). */
static int port_start(struct port *p, int fd, int is_unix) {
  p->fd = fd;
  p->is_unix = is_unix;
  if (reserve_fd < 0) reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  port_watch(p);
  braid_work(1);
  return 1;
}

/* A port_new port that got no socket: nil, msg, code for errno err. */
static int port_fail(lua_State *L, struct port *p, int fd, int err) {
  if (fd >= 0) close(fd);
  luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
  p->self_ref = LUA_NOREF;
  return braid_pusherror(L, err);
}

/* tcp_listen(host, port, backlog, reuseport) -> port | nil, msg, code */
static int l_tcp_listen(lua_State *L) {
  const char *host = luaL_optstring(L, 1, "");
  int portno = (int)luaL_checkinteger(L, 2);
  int backlog = (int)luaL_optinteger(L, 3, 50);
  int reuseport = lua_toboolean(L, 4);
  struct sockaddr_storage ss;
  socklen_t len;
  struct lookup_error le = { NULL, 0 };
  int err = make_sockaddr(host, portno, &ss, &len, &le);
  if (err) {  /* nil, msg, code, number: a name that does not resolve says why */
    braid_pusherror(L, err);
    if (le.why) {  /* its getaddrinfo code as the number, as Python's gaierror */
      lua_pushstring(L, le.why);
      lua_replace(L, -4);
      lua_pushinteger(L, le.code);
      lua_replace(L, -2);
    }
    return 4;
  }
  struct port *p = port_new(L);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return port_fail(L, p, fd, errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, (void *)&ss, len) < 0 || listen(fd, backlog) < 0) return port_fail(L, p, fd, errno);
  return port_start(p, fd, 0);
}

/* unix_listen(path, backlog, mode) -> port | nil, msg, code */
static int l_unix_listen(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  int backlog = (int)luaL_optinteger(L, 2, 50);
  int mode = (int)luaL_optinteger(L, 3, -1);
  struct sockaddr_un un;
  socklen_t len;
  int err = make_unaddr(path, n, &un, &len);
  if (err == ENAMETOOLONG) {  /* Python's own OSError, which has no errno */
    braid_pusherror(L, err);
    lua_pushliteral(L, "AF_UNIX path too long");
    lua_replace(L, -4);
    lua_pushnil(L);
    lua_replace(L, -2);
    return 4;
  }
  if (err) return braid_pusherror(L, err);
  int abstract = path[0] == 0;
  struct port *p = port_new(L);
  struct stat st;
  /* a socket file left over by a server that died goes; one a server may
  ** be using stays, and bind fails (EADDRINUSE) as in Twisted. lstat: a
  ** symbolic link is never removed. */
  if (!abstract && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unix_stale(path, &un, len))
    unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return port_fail(L, p, fd, errno);
  /* Linux makes the socket file with the mode of the socket's own inode
  ** (less the umask): set before bind, no moment passes in which the file
  ** has a looser mode (the console's 0600); the chmod after sets the bits
  ** the umask took away */
  if (!abstract && mode >= 0) (void)fchmod(fd, (mode_t)mode);
  if (bind(fd, (void *)&un, len) < 0 || (!abstract && mode >= 0 && chmod(path, (mode_t)mode) < 0)
      || listen(fd, backlog) < 0)
    return port_fail(L, p, fd, errno);
  return port_start(p, fd, 1);
}

/* Make an inherited descriptor ours (non-blocking, close-on-exec) and
** tell whether it is a UNIX socket; 0 or an errno. */
static int adopt_fd(int fd, int *is_unix) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int type = 0;
  socklen_t tlen = sizeof type;
  /* only a stream socket: anything else (a file, a pipe, stdout) is
  ** refused before it is changed */
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0) return errno;
  if (type != SOCK_STREAM) return ENOTSOCK;
  int err = set_nonblock(fd);
  *is_unix = getsockname(fd, (void *)&ss, &len) == 0 && ss.ss_family == AF_UNIX;
  return err;
}

/* adopt_port(fd) -> port | nil, msg, code */
static int l_adopt_port(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "descriptor out of range");
  int fd = (int)n;
  /* the descriptor is looked at before anything is opened: the event base
  ** made on first use would take a closed fd's number (its epoll fd), and
  ** the answer would be ENOTSOCK instead of EBADF */
  int is_unix, err = adopt_fd(fd, &is_unix);
  if (err) return braid_pusherror(L, err); /* the caller keeps fd */
  struct port *p = port_new(L);
  return port_start(p, fd, is_unix);
}

static struct port *port_check(lua_State *L) {
  return luaL_checkudata(L, 1, PORT_META);
}

static int port_close(lua_State *L) {
  port_release(L, port_check(L));
  return 0;
}

static int port_host(lua_State *L) { return addr_of(L, port_check(L)->fd, 0); }

static int port_listening(lua_State *L) {
  lua_pushboolean(L, port_check(L)->fd >= 0);
  return 1;
}

/* _accepting() -> whether the port is open and not held by removeReader
** (an EMFILE back-off counts as accepting: it resumes by itself) */
static int port_accepting(lua_State *L) {
  struct port *p = port_check(L);
  lua_pushboolean(L, p->fd >= 0 && !p->held);
  return 1;
}

/* _setAccepting(on): addReader (true) / removeReader (false) */
static int port_set_accepting(lua_State *L) {
  struct port *p = port_check(L);
  int on = lua_toboolean(L, 2);
  if (p->fd < 0) return 0;
  if (!on && !p->held) {
    if (p->added) { event_del(&p->ev); p->added = 0; }
    p->held = 1;
  } else if (on && p->held) {
    p->held = 0;
    if (p->added) event_del(&p->ev); /* an EMFILE back-off timer set while held */
    port_watch(p);
  }
  return 0;
}

static int port_fileno(lua_State *L) {
  lua_pushinteger(L, port_check(L)->fd);
  return 1;
}

static int port_getuv(lua_State *L) {
  port_check(L);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int port_setuv(lua_State *L) {
  port_check(L);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int port_gc(lua_State *L) {
  struct port *p = port_check(L);
  braid_check_finalizer(L);
  port_teardown(p);
  return 0;
}

/* ---- connecting -------------------------------------------------------- */

/* Connect c (from conn_new, on top) to sa over a new socket, bound to bs
** first when given; 1 (the transport) or nil, msg, code. */
static int conn_connect(lua_State *L, struct conn *c, const struct sockaddr *sa, socklen_t len,
                        const struct sockaddr *bs, socklen_t blen) {
  int is_unix = sa->sa_family == AF_UNIX;
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    int one = 1;
    if (!is_unix) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bs && bind(fd, bs, blen) < 0) {
      err = errno;
      close(fd);
      conn_discard(L, c);
      braid_pusherror(L, err);
      lua_pushliteral(L, "bind");  /* Twisted's ConnectBindError */
      return 5;
    }
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
      err = errno;
      close(fd);
    }
  }
  if (err) {
    conn_discard(L, c);
    return braid_pusherror(L, err);
  }
  conn_keep_peer(c, sa, len);
  conn_start(L, c, fd, S_CONNECTING, is_unix);
  return 1;
}

/* tcp_connect(host, port, bindhost?, bindport?) -> transport | nil, msg, code */
static int l_tcp_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int portno = (int)luaL_checkinteger(L, 2);
  const char *bhost = luaL_optstring(L, 3, NULL);
  int bport = (int)luaL_optinteger(L, 4, 0);
  struct sockaddr_storage ss, bs;
  socklen_t len, blen = 0;
  if (bhost && !*bhost) bhost = NULL; /* "": any address of the destination's family */
  int err = make_sockaddr(host, portno, &ss, &len, NULL);
  if (err) return braid_pusherror(L, err);
  if (bhost || bport) {
    err = make_sockaddr(bhost ? bhost : (ss.ss_family == AF_INET ? "0.0.0.0" : "::"), bport, &bs, &blen,
                        NULL);
    if (err) {                                      /* nil, msg, code, number */
      braid_pusherror(L, err);
      if (err == EINVAL && bhost) {                 /* a name that does not resolve */
        lua_pushfstring(L, "cannot resolve the bind address %s", bhost);
        lua_replace(L, -4);
      }
      lua_pushliteral(L, "bind");                   /* Twisted's ConnectBindError */
      return 5;
    }
  }
  braid_base(L);
  struct conn *c = conn_new(L);
  return conn_connect(L, c, (void *)&ss, len, blen ? (void *)&bs : NULL, blen);
}

static int l_unix_connect(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct sockaddr_un un;
  socklen_t len;
  int err = make_unaddr(path, n, &un, &len);
  if (err) return braid_pusherror(L, err);
  braid_base(L);
  struct conn *c = conn_new(L);
  return conn_connect(L, c, (void *)&un, len, NULL, 0);
}

/* adopt_conn(fd) -> transport (open) | nil, msg, code */
static int l_adopt_conn(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "descriptor out of range");
  int fd = (int)n;
  /* looked at first, as in adopt_port */
  int is_unix, err = adopt_fd(fd, &is_unix);
  if (err) return braid_pusherror(L, err); /* the caller keeps fd */
  braid_base(L);
  struct conn *c = conn_new(L);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getpeername(fd, (void *)&ss, &sl) == 0) conn_keep_peer(c, (void *)&ss, sl);
  conn_start(L, c, fd, S_OPEN, is_unix);
  return 1;
}

/* tcp_handlers{eof=, lost=, accept=, connected=, producer=, wlost=, failed=,
** setsystem=, msgh=} */
static int l_tcp_handlers(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (data_ref == LUA_NOREF) {
    lua_pushliteral(L, "dataReceived");
    lua_pushcclosure(L, data_p, 1);
    data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  for (int i = 0; i < H_COUNT; i++) {
    lua_getfield(L, 1, handler_names[i]);
    if (lua_isfunction(L, -1)) {
      if (handlers[i] != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, handlers[i]);
      handlers[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
      lua_pop(L, 1);
    }
  }
  sys_upv = 0;
  if (lua_rawgeti(L, LUA_REGISTRYINDEX, handlers[H_SETSYS]) == LUA_TFUNCTION) {
    const char *name;
    for (int i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
      lua_pop(L, 1);
      if (strcmp(name, "current_system") == 0) { sys_upv = i; break; }
    }
  }
  lua_pop(L, 1);
  rt_setup(L);
  return 0;
}

/* spare_fd(): hold the spare descriptor (the EMFILE trick's) from now on;
** whether it is held. The reactor takes it as it loads, so that a module
** first needed once the process is out of descriptors can still be read. */
static int l_spare_fd(lua_State *L) {
  if (reserve_fd < 0) reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  lua_pushboolean(L, reserve_fd >= 0);
  return 1;
}

/* with_spare_fd(f, ...) -> f(...): f runs with the spare descriptor given
** back to the system (require opens a module's file, reads it and closes
** it before it runs the chunk, so one descriptor serves a whole chain of
** nested requires), taken again after, however f ends. */
static int l_with_spare_fd(lua_State *L) {
  luaL_checkany(L, 1);
  int freed = reserve_fd >= 0;
  if (freed) { close(reserve_fd); reserve_fd = -1; }
  int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  if (freed && reserve_fd < 0) reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

/* require_spare(name) -> require(name), package.loaded's when there, else
** with the spare descriptor given back for the read (with_spare_fd) */
static int l_require_spare(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_settop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, 2) != LUA_TNIL) return 1;
  lua_settop(L, 1);
  lua_pushcfunction(L, l_with_spare_fd);
  lua_getglobal(L, "require");
  lua_pushvalue(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* Connections with a close or a connectionLost still queued for delivery
** (specs wait for 0 before checking for leaks). */
static int l_tcp_undelivered(lua_State *L) {
  int n = 0;
  for (struct conn *c = pend_head; c; c = c->pend_next) n++;
  lua_pushinteger(L, n);
  return 1;
}

static const luaL_Reg conn_methods[] = {
  { "write", conn_write },
  { "loseConnection", conn_lose },
  { "abortConnection", conn_abort },
  { "loseWriteConnection", conn_lose_write },
  { "pauseProducing", conn_pause },
  { "resumeProducing", conn_resume },
  { "stopReading", conn_pause },
  { "startReading", conn_resume },
  { "getWriteBufferSize", conn_bufsize },
  { "setTcpNoDelay", conn_set_nodelay },
  { "getTcpNoDelay", conn_get_nodelay },
  { "setTcpKeepAlive", conn_set_keepalive },
  { "getTcpKeepAlive", conn_get_keepalive },
  { "fileno", conn_fileno },
  { "getHandle", conn_fileno }, /* Twisted's is the socket; the descriptor stands for it */
  { "_peer", conn_peer },
  { "_host", conn_host },
  { "_fail", conn_fail },
  { "_drop", conn_drop },
  { "_setProducer", conn_set_producer },
  { "_setBufferSize", conn_set_bufsize },
  { "_state", conn_state },
  { "_watching", conn_watching },
  { "_holdWrites", conn_hold_writes },
  { "_getuv", conn_getuv },
  { "_setuv", conn_setuv },
  { NULL, NULL }
};

static const luaL_Reg port_methods[] = {
  { "close", port_close },
  { "_host", port_host },
  { "listening", port_listening },
  { "_accepting", port_accepting },
  { "_setAccepting", port_set_accepting },
  { "fileno", port_fileno },
  { "_getuv", port_getuv },
  { "_setuv", port_setuv },
  { NULL, NULL }
};

static const luaL_Reg tcp_funcs[] = {
  { "tcp_listen", l_tcp_listen },
  { "ip_family", l_ip_family },
  { "samefile", l_samefile },
  { "service_port", l_service_port },
  { "tcp_deliver_closes", l_tcp_deliver_closes },
  { "unix_listen", l_unix_listen },
  { "tcp_connect", l_tcp_connect },
  { "unix_connect", l_unix_connect },
  { "adopt_port", l_adopt_port },
  { "adopt_conn", l_adopt_conn },
  { "tcp_handlers", l_tcp_handlers },
  { "tcp_undelivered", l_tcp_undelivered },
  { "tcp_current_system", l_tcp_current_system },
  { "tcp_is_transport", l_tcp_is_transport },
  { "spare_fd", l_spare_fd },
  { "with_spare_fd", l_with_spare_fd },
  { "require_spare", l_require_spare },
  { NULL, NULL }
};

/* The methods table stays reachable from the metatable's __index upvalue;
** extra Lua-side methods are added to it by braid.tcp (tcp_methods). */
static int l_tcp_methods(lua_State *L) {
  luaL_getmetatable(L, CONN_META);
  lua_getfield(L, -1, "__methods");
  return 1;
}

/* The Lua state is closing: every connection's and port's __gc has run
** (they are younger), the loop's has not (it is older), so pend_ev can
** still be freed. Forget the state's refs so a later state starts clean. */
static int tcp_state_gc(lua_State *L) {
  braid_check_finalizer(L);
  if (pend_ev) { event_free(pend_ev); pend_ev = NULL; }
  pend_head = pend_tail = NULL;
  for (int i = 0; i < H_COUNT; i++) handlers[i] = LUA_NOREF;
  data_ref = LUA_NOREF;
  sys_upv = 0;
  rt = NULL; /* freed with the state */
  rt_ref = LUA_NOREF;
  rt_busy = 0;
  rt_conn = NULL;
  spare = NULL; /* freed with the state */
  free(rbuf);
  rbuf = NULL;
  if (reserve_fd >= 0) { close(reserve_fd); reserve_fd = -1; }
  return 0;
}

void braid_open_resolve(lua_State *L); /* resolve.c */

void braid_open_tcp(lua_State *L) {
  braid_open_resolve(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "braid.tcp.sentinel") == LUA_TNIL) {
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, tcp_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "braid.tcp.sentinel");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CONN_META)) {            /* the class: every fields table's metatable */
    luaL_newlibtable(L, conn_methods);
    luaL_setfuncs(L, conn_methods, 0);
    lua_pushboolean(L, 0);                          /* the defaults of absent fields */
    lua_setfield(L, -2, "paused");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "disconnecting");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "disconnected");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "producerPaused");
    lua_pushinteger(L, DEFAULT_BUFSIZE);
    lua_setfield(L, -2, "bufferSize");
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, PORT_META)) {
    luaL_newlib(L, port_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, port_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, tcp_funcs, 0);
  lua_pushcfunction(L, l_tcp_methods);
  lua_setfield(L, -2, "tcp_methods");
}
