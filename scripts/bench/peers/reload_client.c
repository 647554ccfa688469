/*
** reload_client.c: the load and the editor of scripts/bench/reload.
**
** NCONN connections to 127.0.0.1:PORT each send "I SEQ\n" every INTERVAL
** ms (spread over the interval in 1 ms groups); the server answers each
** line with "vVERSION I SEQ". After WARMUP s (the baseline), the module
** file is saved SAVES times, one save every EVERY ms, alternating the two
** ways editors save: truncate-and-write in two writes 5 ms apart (so a
** half-written file really exists for a while), and write-a-temp-file-
** then-rename. TAIL s later sending stops and replies are drained.
**
** Checks: every reply parses, comes in order (no sequence gap), carries a
** version that was saved, and never an older version than the previous
** reply on its connection. The saves run on a thread of their own, so a
** busy load loop does not bunch them up. Prints key=value lines (scripts/bench/lib.py's
** peer convention); times are CLOCK_REALTIME, as the server's
** reactor.seconds(), so the harness can line saves up with its log.
**
** usage: reload_client PORT NCONN INTERVAL_MS WARMUP_S SAVES EVERY_MS TAIL_S TEMPLATE MODFILE
** TEMPLATE holds the module's source with @V@ where the version goes.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXV 100000
#define BUCKET 0.1    /* seconds per throughput bucket */
#define HALF_GAP 0.005 /* seconds a truncate-and-write save stays half-written */
#define DRAIN_MAX 30.0 /* seconds to wait for the replies still due when sending stops */

struct conn {
  int fd;
  int alive;
  long next_send;   /* seq of the next line to send */
  long next_reply;  /* seq expected in the next reply */
  int last_ver;
  size_t inlen;
  char in[256];
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what) {
  fprintf(stderr, "reload_client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  static char buf[1 << 16];
  *len = fread(buf, 1, sizeof buf - 1, f);
  buf[*len] = 0;
  fclose(f);
  return buf;
}

/* the module's source for version v */
static size_t render(const char *tmpl, int v, char *out, size_t cap) {
  size_t n = 0;
  char num[16];
  int nl = snprintf(num, sizeof num, "%d", v);
  for (const char *p = tmpl; *p && n + 16 < cap; ) {
    if (strncmp(p, "@V@", 3) == 0) { memcpy(out + n, num, (size_t)nl); n += (size_t)nl; p += 3; }
    else out[n++] = *p++;
  }
  return n;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; die("write module"); }
    p += w; n -= (size_t)w;
  }
}

/* The version saved last (replies may carry it from the moment its save
** starts). */
static atomic_int cur_ver;

struct editor {
  const char *tmpl, *modfile, *tmpfile;
  double start, every;
  int saves;
  double *save_at;
};

static void sleep_until(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

/* The editor thread: saves on its own clock, whatever the load loop does.
** Odd versions: truncate and write in two halves HALF_GAP apart; even
** ones: write a temp file and rename it over the module. */
static void *editor(void *arg) {
  struct editor *e = arg;
  static char src[1 << 17];
  for (int v = 1; v <= e->saves; v++) {
    sleep_until(e->start + (v - 1) * e->every);
    size_t n = render(e->tmpl, v, src, sizeof src);
    atomic_store(&cur_ver, v);
    e->save_at[v] = now();
    if (v % 2 == 1) {
      int fd = open(e->modfile, O_WRONLY | O_TRUNC | O_CLOEXEC);
      if (fd < 0) die("open module");
      write_all(fd, src, n / 2);
      sleep_until(now() + HALF_GAP);
      write_all(fd, src + n / 2, n - n / 2);
      close(fd);
    } else {
      int fd = open(e->tmpfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) die("open temp");
      write_all(fd, src, n);
      close(fd);
      if (rename(e->tmpfile, e->modfile) != 0) die("rename");
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: reload_client PORT NCONN INTERVAL_MS WARMUP_S SAVES EVERY_MS TAIL_S TEMPLATE MODFILE\n");
    return 2;
  }
  int port = atoi(argv[1]), nconn = atoi(argv[2]), interval = atoi(argv[3]);
  double warmup = atof(argv[4]);
  int saves = atoi(argv[5]);
  double every = atof(argv[6]) / 1000.0, tail = atof(argv[7]);
  const char *modfile = argv[9];
  size_t tlen;
  char *tmpl = strdup(slurp(argv[8], &tlen));
  char tmpfile[4096];
  snprintf(tmpfile, sizeof tmpfile, "%s.tmp", modfile);
  if (saves >= MAXV || interval < 1 || nconn < 1) { fprintf(stderr, "bad arguments\n"); return 2; }

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconn + 64) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct conn *cs = calloc((size_t)nconn, sizeof *cs);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < nconn; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
    cs[i].fd = fd;
    cs[i].alive = 1;
  }

  double *save_at = calloc((size_t)saves + 2, sizeof *save_at);
  double *first_ver = calloc((size_t)saves + 2, sizeof *first_ver); /* first reply with this version */
  long nbuckets = (long)((warmup + saves * every + tail + 30) / BUCKET) + 2;
  long *bucket = calloc((size_t)nbuckets, sizeof *bucket);
  long sent = 0, answered = 0, gaps = 0, wrong = 0, regressed = 0, dropped = 0, slipped = 0, blocked = 0;

  double t0 = now(), cpu0 = cpu();
  double save_start = t0 + warmup, send_end = save_start + saves * every + tail;
  double *group_next = calloc((size_t)interval, sizeof *group_next);
  for (int g = 0; g < interval; g++) group_next[g] = t0 + g * 0.001;
  struct editor ed = { tmpl, modfile, tmpfile, save_start, every, saves, save_at };
  pthread_t edt;
  if (pthread_create(&edt, NULL, editor, &ed) != 0) { fprintf(stderr, "pthread_create failed\n"); return 2; }
  int sending = 1;
  double drain_until = 0;
  struct epoll_event evs[512];

  for (;;) {
    double t = now();
    if (sending && t >= send_end) { sending = 0; drain_until = t + DRAIN_MAX; }
    if (sending) {
      for (int g = 0; g < interval; g++) {
        if (t < group_next[g]) continue;
        group_next[g] += interval * 0.001;
        if (group_next[g] < t) { group_next[g] = t + interval * 0.001; slipped++; }
        for (int i = g; i < nconn; i += interval) {
          struct conn *c = &cs[i];
          if (!c->alive) continue;
          char line[48];
          int len = snprintf(line, sizeof line, "%d %ld\n", i, c->next_send);
          ssize_t w = send(c->fd, line, (size_t)len, MSG_NOSIGNAL);
          if (w == len) { c->next_send++; sent++; }
          else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) blocked++;
          else { c->alive = 0; dropped++; close(c->fd); }
        }
      }
    } else {
      long outstanding = 0;
      for (int i = 0; i < nconn; i++) if (cs[i].alive) outstanding += cs[i].next_send - cs[i].next_reply;
      if (outstanding == 0 || t >= drain_until) break;
    }
    /* wait for replies until the next send group is due (1 ms at most) */
    int timeout = 1;
    int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    double tr = now();
    for (int k = 0; k < n; k++) {
      struct conn *c = &cs[evs[k].data.u32];
      int i = (int)evs[k].data.u32;
      if (!c->alive) continue;
      for (;;) {
        ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen - 1, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { c->alive = 0; dropped++; epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); break; }
        c->inlen += (size_t)r;
        c->in[c->inlen] = 0;
        char *p = c->in, *nl;
        while ((nl = memchr(p, '\n', c->inlen - (size_t)(p - c->in))) != NULL) {
          *nl = 0;
          int ver, who;
          long seq;
          if (sscanf(p, "v%d %d %ld", &ver, &who, &seq) != 3 || who != i || ver < 0 || ver > atomic_load(&cur_ver)) {
            wrong++;
          } else {
            answered++;
            if (seq != c->next_reply) gaps++;
            c->next_reply = seq + 1;
            if (ver < c->last_ver) regressed++;
            c->last_ver = ver;
            if (first_ver[ver] == 0) first_ver[ver] = tr;
            long b = (long)((tr - t0) / BUCKET);
            if (b >= 0 && b < nbuckets) bucket[b]++;
          }
          p = nl + 1;
        }
        size_t rest = c->inlen - (size_t)(p - c->in);
        memmove(c->in, p, rest);
        c->inlen = rest;
        if (rest >= sizeof c->in - 1) { wrong++; c->inlen = 0; } /* a line too long to be ours */
      }
    }
  }
  double cpu_s = cpu() - cpu0;
  pthread_join(edt, NULL);
  long lost = 0;
  for (int i = 0; i < nconn; i++) lost += cs[i].next_send - cs[i].next_reply;

  /* latency: first reply carrying version v or a later one, minus v's save */
  double *lat = calloc((size_t)saves + 1, sizeof *lat);
  int nlat = 0, seen = 0;
  double suffix = 0;
  for (int v = saves; v >= 1; v--) {
    if (first_ver[v] > 0) { seen++; if (suffix == 0 || first_ver[v] < suffix) suffix = first_ver[v]; }
    if (suffix > 0) lat[nlat++] = (suffix - save_at[v]) * 1000;
  }
  for (int a = 1; a < nlat; a++) { /* insertion sort: 100 values */
    double x = lat[a]; int b = a - 1;
    while (b >= 0 && lat[b] > x) { lat[b + 1] = lat[b]; b--; }
    lat[b + 1] = x;
  }
  /* throughput: baseline = median bucket of the warm-up (its first 0.3 s
  ** left out: connections still settling); the dip = lowest bucket while saving */
  long b0 = (long)(0.3 / BUCKET), b1 = (long)(warmup / BUCKET);
  long bs = (long)((save_start - t0) / BUCKET) + 1, be = (long)((save_start + saves * every - t0) / BUCKET);
  long tmp[4096];
  int nt = 0;
  for (long b = b0; b < b1 && nt < 4096; b++) tmp[nt++] = bucket[b];
  for (int a = 1; a < nt; a++) { long x = tmp[a]; int b = a - 1; while (b >= 0 && tmp[b] > x) { tmp[b + 1] = tmp[b]; b--; } tmp[b + 1] = x; }
  double base = nt ? (double)tmp[nt / 2] / BUCKET : 0;
  long minb = -1; double sum = 0; int nb = 0;
  for (long b = bs; b < be && b < nbuckets; b++) {
    if (minb < 0 || bucket[b] < minb) minb = bucket[b];
    sum += (double)bucket[b]; nb++;
  }
  double minrate = minb < 0 ? 0 : (double)minb / BUCKET;
  double meanrate = nb ? sum / nb / BUCKET : 0;

  printf("sent=%ld\nanswered=%ld\nlost=%ld\ngaps=%ld\nwrong=%ld\nregressed=%ld\ndropped=%ld\n",
         sent, answered, lost, gaps, wrong, regressed, dropped);
  printf("slipped_ticks=%ld\nsend_blocked=%ld\nclient_cpu_s=%.3f\n", slipped, blocked, cpu_s);
  printf("versions_seen=%d\nversions_measured=%d\n", seen, nlat);
  printf("latency_median_ms=%.1f\nlatency_p90_ms=%.1f\nlatency_max_ms=%.1f\n",
         nlat ? lat[(nlat - 1) / 2] : -1.0, nlat ? lat[(nlat * 9) / 10 < nlat ? (nlat * 9) / 10 : nlat - 1] : -1.0,
         nlat ? lat[nlat - 1] : -1.0);
  printf("base_rate=%.0f\nmin_rate=%.0f\nmean_rate=%.0f\ndip_pct=%.1f\n", base, minrate, meanrate,
         base > 0 ? (1 - minrate / base) * 100 : 100.0);
  for (int v = 1; v <= saves; v++) printf("save_%d=%.6f\n", v, save_at[v]);
  for (int i = 0; i < nconn; i++) if (cs[i].alive) close(cs[i].fd);
  return 0;
}
