/*
** http_c.c: the hand-written libevent peer of scripts/bench/http: the same
** keep-alive HTTP/1.1 hello server as examples/http_hello.lua (answer each
** complete request head, pipelining allowed; close after answering an
** HTTP/1.0 request or one with "Connection: close"), written two ways:
**
**   http_c bev [PORT]     bufferevents: evbuffer_search for the end of each
**                         head in the input, the responses appended to the
**                         output, written when libevent sees writability.
**   http_c direct [PORT]  write first: one persistent EV_READ event per
**                         connection, read(2) up to 64 KiB, parse in place
**                         (a partial head is kept in a per-connection
**                         buffer), write(2) the responses at once; only what
**                         the kernel does not take waits for EV_WRITE.
**
** Listens on 127.0.0.1:PORT (0, the default, picks one), TCP_NODELAY on
** every connection, prints "port=N" and serves until killed.
**
** Build: cc -O2 -o http_c http_c.c $(pkg-config --cflags --libs libevent)
*/
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define READ_SIZE 65536
#define MAX_PENDING 65536
#define BODY "Hello, world!\n"
#define LEN "14"

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
  "Content-Length: " LEN "\r\n\r\n" BODY;
static const char CLOSE_RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
  "Connection: close\r\nContent-Length: " LEN "\r\n\r\n" BODY;

static struct event_base *base;
static int direct;
static char rbuf[READ_SIZE];

/* Does this request head ask to close: HTTP/1.0, or "Connection: close"? */
static int wants_close(const char *h, size_t n) {
  const char *sp = memchr(h, ' ', n);
  if (sp) sp = memchr(sp + 1, ' ', n - (size_t)(sp + 1 - h));
  if (sp && (size_t)(h + n - sp) >= 9 && memcmp(sp + 1, "HTTP/1.0", 8) == 0) return 1;
  for (const char *p = h; (p = memchr(p, '\n', n - (size_t)(p - h))) != NULL; p++) {
    if ((size_t)(h + n - p) < 12 || strncasecmp(p + 1, "connection:", 11) != 0) continue;
    const char *v = p + 12, *e = h + n;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    if (e - v >= 5 && strncasecmp(v, "close", 5) == 0) return 1;
  }
  return 0;
}

/* ---- bufferevent flavour ---------------------------------------------- */

static void bev_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void bev_written(struct bufferevent *bev, void *arg) {
  (void)arg;
  bufferevent_free(bev);  /* the close response is out */
}

static void bev_read(struct bufferevent *bev, void *arg) {
  struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
  (void)arg;
  for (;;) {
    struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (e.pos < 0) break;
    const char *head = (const char *)evbuffer_pullup(in, e.pos);
    int close_it = wants_close(head, (size_t)e.pos);
    evbuffer_drain(in, (size_t)e.pos + 4);
    if (close_it) {
      evbuffer_add(out, CLOSE_RESPONSE, sizeof CLOSE_RESPONSE - 1);
      bufferevent_disable(bev, EV_READ);
      bufferevent_setcb(bev, NULL, bev_written, bev_event, NULL);
      return;
    }
    evbuffer_add(out, RESPONSE, sizeof RESPONSE - 1);
  }
  if (evbuffer_get_length(in) > MAX_PENDING) bufferevent_free(bev);  /* no body support */
}

/* ---- write-first flavour ---------------------------------------------- */

struct conn {
  int fd;
  int closing;           /* close once the output is out */
  struct event rev, wev;
  struct evbuffer *out;  /* made on first need */
  char *pend;            /* a partial request head, made on first need */
  size_t npend;
};

static void conn_free(struct conn *c) {
  event_del(&c->rev);
  event_del(&c->wev);
  if (c->out) evbuffer_free(c->out);
  free(c->pend);
  close(c->fd);
  free(c);
}

static void conn_write(evutil_socket_t fd, short what, void *arg) {
  struct conn *c = arg;
  (void)what;
  while (evbuffer_get_length(c->out) > 0) {
    int n = evbuffer_write(c->out, fd);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      conn_free(c);
      return;
    }
  }
  event_del(&c->wev);
  if (c->closing) conn_free(c);
}

/* Send at once what the kernel takes; queue the rest. 0, or -1 when freed. */
static int conn_send(struct conn *c, const char *p, size_t n) {
  if (!c->out || evbuffer_get_length(c->out) == 0) {
    ssize_t w = write(c->fd, p, n);
    if (w < 0) {
      if (errno != EAGAIN && errno != EINTR) { conn_free(c); return -1; }
      w = 0;
    }
    p += w;
    n -= (size_t)w;
    if (n == 0) return 0;
    if (!c->out && !(c->out = evbuffer_new())) { conn_free(c); return -1; }
    event_add(&c->wev, NULL);
  }
  evbuffer_add(c->out, p, n);
  return 0;
}

static void conn_read(evutil_socket_t fd, short what, void *arg) {
  struct conn *c = arg;
  (void)what;
  ssize_t n = read(fd, rbuf, sizeof rbuf);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    conn_free(c);
    return;
  }
  char *buf = rbuf;
  size_t len = (size_t)n;
  if (c->npend) {  /* a head began in an earlier read */
    char *p = realloc(c->pend, c->npend + len);
    if (!p) { conn_free(c); return; }
    memcpy(p + c->npend, rbuf, len);
    c->pend = p;
    buf = p;
    len += c->npend;
    c->npend = 0;
  }
  size_t pos = 0;
  char out[16384];
  size_t nout = 0;
  for (;;) {
    char *e = memmem(buf + pos, len - pos, "\r\n\r\n", 4);
    if (!e) break;
    size_t hlen = (size_t)(e - (buf + pos));
    int close_it = wants_close(buf + pos, hlen);
    pos += hlen + 4;
    const char *r = close_it ? CLOSE_RESPONSE : RESPONSE;
    size_t rlen = close_it ? sizeof CLOSE_RESPONSE - 1 : sizeof RESPONSE - 1;
    if (nout + rlen > sizeof out) {
      if (conn_send(c, out, nout) < 0) return;
      nout = 0;
    }
    memcpy(out + nout, r, rlen);
    nout += rlen;
    if (close_it) {
      if (conn_send(c, out, nout) < 0) return;
      if (!c->out || evbuffer_get_length(c->out) == 0) { conn_free(c); return; }
      c->closing = 1;
      event_del(&c->rev);
      return;
    }
  }
  if (nout && conn_send(c, out, nout) < 0) return;
  if (len - pos > MAX_PENDING) { conn_free(c); return; }  /* no body support */
  if (pos < len) {
    if (buf == rbuf) {
      char *p = malloc(len - pos);
      if (!p) { conn_free(c); return; }
      memcpy(p, buf + pos, len - pos);
      free(c->pend);
      c->pend = p;
    } else {
      memmove(c->pend, buf + pos, len - pos);
    }
    c->npend = len - pos;
  }
}

/* ---- accepting -------------------------------------------------------- */

static void on_accept(evutil_socket_t lfd, short what, void *arg) {
  (void)what; (void)arg;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (direct) {
      struct conn *c = calloc(1, sizeof *c);
      if (!c) { close(fd); return; }
      c->fd = fd;
      event_assign(&c->rev, base, fd, EV_READ | EV_PERSIST, conn_read, c);
      event_assign(&c->wev, base, fd, EV_WRITE | EV_PERSIST, conn_write, c);
      event_add(&c->rev, NULL);
    } else {
      struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
      if (!bev) { close(fd); return; }
      bufferevent_setcb(bev, bev_read, NULL, bev_event, NULL);
      bufferevent_enable(bev, EV_READ);
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "bev") != 0 && strcmp(argv[1], "direct") != 0)) {
    fprintf(stderr, "usage: http_c bev|direct [PORT]\n");
    return 2;
  }
  direct = strcmp(argv[1], "direct") == 0;
  signal(SIGPIPE, SIG_IGN);  /* a write to a reset connection returns EPIPE */
  base = event_base_new();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)(argc > 2 ? atoi(argv[2]) : 0));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (!base || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0
      || listen(lfd, 1024) < 0 || getsockname(lfd, (struct sockaddr *)&a, &len) < 0) {
    fprintf(stderr, "error: cannot listen: %s\n", strerror(errno));
    return 1;
  }
  struct event *lev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
  event_add(lev, NULL);
  printf("port=%d\n", ntohs(a.sin_port));
  fflush(stdout);
  event_base_dispatch(base);
  return 0;
}
