/*
** echo_c.c: the hand-written libevent echo server of scripts/bench/echo,
** written two ways:
**
**   echo_c bev [PORT]     bufferevents: the read callback moves the input
**                         buffer to the output buffer; libevent then waits
**                         for writability and writes (two epoll_ctl calls
**                         per message: enable EV_WRITE, disable it again).
**   echo_c direct [PORT]  write first, as libuv does: one persistent EV_READ
**                         event per connection; read(2) up to 64 KiB and
**                         write(2) it at once when nothing is queued; only
**                         what the kernel does not take waits in an
**                         evbuffer with an EV_WRITE event (and reading
**                         stops until it has drained).
**
** Listens on 127.0.0.1:PORT (0, the default, picks one), TCP_NODELAY on
** every connection, prints "port=N" and serves until killed.
**
** Build: cc -O2 -o echo_c echo_c.c $(pkg-config --cflags --libs libevent)
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

static struct event_base *base;
static int direct;
static char rbuf[READ_SIZE];

/* ---- bufferevent flavour ---------------------------------------------- */

static void bev_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void bev_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

/* ---- write-first flavour ---------------------------------------------- */

struct conn {
  int fd;
  struct event rev, wev;
  struct evbuffer *out;  /* made on first need */
};

static void conn_free(struct conn *c) {
  event_del(&c->rev);
  event_del(&c->wev);
  if (c->out) evbuffer_free(c->out);
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
  event_add(&c->rev, NULL);  /* drained: read again */
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
  ssize_t w = write(fd, rbuf, (size_t)n);  /* nothing is queued while reading */
  if (w < 0) {
    if (errno != EAGAIN && errno != EINTR) { conn_free(c); return; }
    w = 0;
  }
  if (w == n) return;
  if (!c->out && !(c->out = evbuffer_new())) { conn_free(c); return; }
  evbuffer_add(c->out, rbuf + w, (size_t)(n - w));
  event_del(&c->rev);  /* bound memory: no reading until the rest is out */
  event_add(&c->wev, NULL);
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
    fprintf(stderr, "usage: echo_c bev|direct [PORT]\n");
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
