/*
** echo_client.c: the load client of scripts/bench/echo and scripts/bench/http
** (plain epoll, no libevent, so it costs the same whatever server it drives).
**
**   echo_client load PORT SECONDS WARMUP [SERVER_PID]
**     Against an echo server on 127.0.0.1:PORT, in this order:
**     - ping-pong with 1, 10 and 100 connections at 64 B and 4 KiB: each
**       connection sends one message, waits until all of it has come back,
**       then sends the next. Prints rt_cN_sS = round trips per second over
**       SECONDS, after WARMUP seconds that are not counted.
**     - one streaming connection: the client writes 64 KiB chunks and reads
**       the echo at the same time, at most 4 MiB in flight. Prints
**       stream_mbs = MB (1e6 bytes) echoed back per second.
**     Connections are opened one at a time, each doing one round trip
**     before the next is opened, so no server's listen backlog overflows.
**     Every byte echoed is checked against what was sent. With SERVER_PID,
**     also prints cpu_<case> = the server's CPU seconds (all its threads,
**     /proc/PID/stat) per second of the measurement: 1.0 = one core busy.
**
**   echo_client rounds PORT CONNS SIZE N
**     For profiling (perf, callgrind): ping-pong with CONNS connections of
**     SIZE-byte messages until N round trips (at least) are done.
**
**   echo_client idle PORT N [http]
**     For the memory reading: opens one connection, does a round trip and
**     closes it, prints "warm" and waits for a line on stdin; then opens N
**     connections, one round trip each (one byte echoed, or with "http" a
**     GET answered), prints "ready" and waits for a line on stdin; then
**     resets them all (SO_LINGER 0: no TIME_WAIT left behind) and exits.
**
** Exits 1 with "error: ..." on stderr when a server misbehaves.
**
** Build: cc -O2 -o echo_client echo_client.c
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 100
#define CHUNK 65536
#define INFLIGHT (4 << 20)

static int port;
static long server_pid;  /* for the server's CPU use (0: not measured) */
static double cpu_busy;  /* of the last measurement: server CPU s / wall s */

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The server's CPU time in seconds (all its threads), or 0. */
static double server_cpu(void) {
  char path[64], buf[1024];
  if (server_pid <= 0) return 0;
  snprintf(path, sizeof path, "/proc/%ld/stat", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');  /* the command name may hold spaces */
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A blocking, connected TCP socket with TCP_NODELAY. */
static int dial(void) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write: %s", strerror(errno));
    }
    p += w;
    n -= (size_t)w;
  }
}

/* Read exactly n bytes (blocking) and check them against want. */
static void read_check(int fd, const char *want, size_t n) {
  char buf[CHUNK];
  size_t got = 0;
  while (got < n) {
    size_t ask = n - got < sizeof buf ? n - got : sizeof buf;
    ssize_t r = read(fd, buf, ask);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("read: %s", r == 0 ? "connection closed by the server" : strerror(errno));
    if (memcmp(buf, want + got, (size_t)r) != 0) die("echo differs from what was sent");
    got += (size_t)r;
  }
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl: %s", strerror(errno));
}

static void reset_close(int fd) {
  struct linger lg = { 1, 0 };
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

/* ---- ping-pong -------------------------------------------------------- */

struct pp {
  int fd;
  size_t sent, got;  /* of the current message */
};

static long max_rounds;  /* rounds mode: stop after this many round trips */

static double pingpong(int nconn, size_t size, double seconds, double warmup) {
  static char msg[CHUNK], buf[CHUNK];
  struct pp conns[MAXCONN];
  if (nconn < 1 || nconn > MAXCONN || size < 1 || size > CHUNK) die("bad case");
  for (size_t i = 0; i < size; i++) msg[i] = (char)('a' + (i * 7 + size) % 26);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));
  for (int i = 0; i < nconn; i++) {
    struct pp *c = &conns[i];
    c->fd = dial();
    write_all(c->fd, msg, size);  /* one round trip before the next connect */
    read_check(c->fd, msg, size);
    set_nonblock(c->fd);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
  }
  /* start every connection */
  for (int i = 0; i < nconn; i++) {
    struct pp *c = &conns[i];
    ssize_t w = write(c->fd, msg, size);
    if (w != (ssize_t)size) die("short first write");
    c->sent = size;
    c->got = 0;
  }
  long count = 0, counted = -1;
  double t0 = now(), tstart = t0 + warmup, tend = tstart + seconds, tcount = 0, cpu0 = 0;
  struct epoll_event evs[MAXCONN];
  for (;;) {
    int n = epoll_wait(ep, evs, MAXCONN, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    if (n == 0) die("no echo for 1 s (%d connections, %zu B)", nconn, size);
    for (int k = 0; k < n; k++) {
      struct pp *c = evs[k].data.ptr;
      if (evs[k].events & EPOLLOUT) {  /* rest of a partial write */
        ssize_t w = write(c->fd, msg + c->sent, size - c->sent);
        if (w < 0 && errno != EAGAIN) die("write: %s", strerror(errno));
        if (w > 0) c->sent += (size_t)w;
        if (c->sent == size) {
          struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
      }
      if (!(evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
      ssize_t r = read(c->fd, buf, size - c->got);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) die("read: %s", r == 0 ? "connection closed by the server" : strerror(errno));
      if (memcmp(buf, msg + c->got, (size_t)r) != 0) die("echo differs from what was sent");
      c->got += (size_t)r;
      if (c->got < size) continue;
      count++;
      c->got = 0;
      ssize_t w = write(c->fd, msg, size);
      if (w < 0 && errno != EAGAIN) die("write: %s", strerror(errno));
      c->sent = w > 0 ? (size_t)w : 0;
      if (c->sent < size) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      }
    }
    double t = now();
    if (max_rounds) {
      if (count < max_rounds) continue;
      for (int i = 0; i < nconn; i++) close(conns[i].fd);
      close(ep);
      return (double)count / (t - t0);
    }
    if (counted < 0 && t >= tstart) { counted = count; tcount = t; cpu0 = server_cpu(); }
    if (t >= tend) {
      if (counted < 0) { counted = 0; tcount = t0; }
      cpu_busy = (server_cpu() - cpu0) / (t - tcount);
      double rate = (double)(count - counted) / (t - tcount);
      for (int i = 0; i < nconn; i++) close(conns[i].fd);
      close(ep);
      return rate;
    }
  }
}

/* ---- streaming -------------------------------------------------------- */

static double stream(double seconds, double warmup) {
  static char out[CHUNK], in[CHUNK];
  for (size_t i = 0; i < sizeof out; i++) out[i] = (char)('A' + i % 26);
  int fd = dial();
  write_all(fd, out, 64);
  read_check(fd, out, 64);
  set_nonblock(fd);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT };
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  int want_out = 1;
  /* the stream is out[] repeated; offsets count from the stream's start */
  unsigned long long sent = 0, got = 0, counted = 0;
  int started = 0;
  double t0 = now(), tstart = t0 + warmup, tend = tstart + seconds, tcount = t0, cpu0 = 0;
  for (;;) {
    struct epoll_event e;
    int n = epoll_wait(ep, &e, 1, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    if (n == 0) die("streaming: no progress for 1 s");
    if (e.events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
      for (int i = 0; i < 4; i++) {
        ssize_t r = read(fd, in, sizeof in);
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) die("read: %s", r == 0 ? "connection closed by the server" : strerror(errno));
        /* check the echo: byte k of the stream is out[k % CHUNK] */
        size_t off = (size_t)(got % CHUNK), left = (size_t)r;
        const char *p = in;
        while (left > 0) {
          size_t m = CHUNK - off < left ? CHUNK - off : left;
          if (memcmp(p, out + off, m) != 0) die("streaming: echo differs from what was sent");
          p += m; left -= m; off = 0;
        }
        got += (unsigned long long)r;
        if ((size_t)r < sizeof in) break;
      }
    }
    if (e.events & EPOLLOUT) {
      size_t off = (size_t)(sent % CHUNK);
      ssize_t w = write(fd, out + off, CHUNK - off);
      if (w < 0 && errno != EAGAIN) die("write: %s", strerror(errno));
      if (w > 0) sent += (unsigned long long)w;
    }
    int want = sent - got < INFLIGHT;
    if (want != want_out) {
      want_out = want;
      ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
      epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    }
    double t = now();
    if (!started && t >= tstart) { started = 1; counted = got; tcount = t; cpu0 = server_cpu(); }
    if (t >= tend) {
      cpu_busy = (server_cpu() - cpu0) / (t - tcount);
      double rate = (double)(got - counted) / (t - tcount) / 1e6;
      close(fd);
      close(ep);
      return rate;
    }
  }
}

/* ---- idle connections ------------------------------------------------- */

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* One HTTP request and its whole response (Content-Length framed). */
static void http_roundtrip(int fd) {
  char buf[4096];
  size_t have = 0;
  write_all(fd, REQUEST, sizeof REQUEST - 1);
  for (;;) {
    ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("http read: %s", r == 0 ? "connection closed by the server" : strerror(errno));
    have += (size_t)r;
    buf[have] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) {
      if (have == sizeof buf - 1) die("http: response head too long");
      continue;
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) die("http: not a 200 response");
    char *cl = strcasestr(buf, "\ncontent-length:");
    if (!cl || cl > end) die("http: no Content-Length");
    size_t len = strtoul(cl + 16, NULL, 10);
    size_t total = (size_t)(end + 4 - buf) + len;
    if (have > total) die("http: more bytes than the response");
    if (have == total) return;
  }
}

static void wait_line(const char *say) {
  char line[64];
  printf("%s\n", say);
  fflush(stdout);
  if (!fgets(line, sizeof line, stdin)) die("stdin closed");
}

static void idle(long n, int http) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 16)
    die("ulimit -n is %ld, need %ld", (long)rl.rlim_cur, n + 16);
  int fd = dial();
  if (http) http_roundtrip(fd); else { write_all(fd, "x", 1); read_check(fd, "x", 1); }
  close(fd);
  wait_line("warm");
  int *fds = malloc((size_t)n * sizeof *fds);
  if (!fds) die("out of memory");
  for (long i = 0; i < n; i++) {
    fds[i] = dial();
    if (http) http_roundtrip(fds[i]);
    else { write_all(fds[i], "x", 1); read_check(fds[i], "x", 1); }
  }
  wait_line("ready");
  for (long i = 0; i < n; i++) reset_close(fds[i]);
  free(fds);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 5 && strcmp(argv[1], "load") == 0) {
    port = atoi(argv[2]);
    double seconds = atof(argv[3]), warmup = atof(argv[4]);
    static const int conns[] = { 1, 10, 100 };
    static const size_t sizes[] = { 64, 4096 };
    server_pid = argc >= 6 ? atol(argv[5]) : 0;
    for (int s = 0; s < 2; s++)
      for (int k = 0; k < 3; k++) {
        double r = pingpong(conns[k], sizes[s], seconds, warmup);
        printf("rt_c%d_s%zu=%.1f\n", conns[k], sizes[s], r);
        if (server_pid) printf("cpu_c%d_s%zu=%.3f\n", conns[k], sizes[s], cpu_busy);
      }
    double r = stream(seconds, warmup);
    printf("stream_mbs=%.1f\n", r);
    if (server_pid) printf("cpu_stream=%.3f\n", cpu_busy);
    return 0;
  }
  if (argc >= 6 && strcmp(argv[1], "rounds") == 0) {
    port = atoi(argv[2]);
    max_rounds = atol(argv[5]);
    double r = pingpong(atoi(argv[3]), (size_t)atol(argv[4]), 0, 0);
    printf("rounds=%ld rt_s=%.1f\n", max_rounds, r);
    return 0;
  }
  if (argc >= 4 && strcmp(argv[1], "idle") == 0) {
    port = atoi(argv[2]);
    idle(atol(argv[3]), argc >= 5 && strcmp(argv[4], "http") == 0);
    return 0;
  }
  fprintf(stderr, "usage: echo_client load PORT SECONDS WARMUP [SERVER_PID] | rounds PORT CONNS SIZE N"
                  " | idle PORT N [http]\n");
  return 2;
}
