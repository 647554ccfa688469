/*
** timers.c: the hand-written libevent baseline of scripts/bench/timers.
**
** One evtimer per call (event_new + evtimer_add), freed in its callback;
** cancel = event_del + event_free. Same workload as every peer: N calls with
** delays of (x mod 1e6) microseconds, x from the minimal-standard generator
** (x = x * 48271 mod 2^31-1, x0 = 1). Prints key=value lines; exits 1 when
** the work did not happen.
**
** Build: cc -O2 -o timers timers.c $(pkg-config --cflags --libs libevent)
*/
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

static long n_calls, fired, fired2;
static double t_done, cpu_done;  /* when the last call of phase 1 ran */

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A field of /proc/self/status in kB (VmRSS, VmHWM), or -1. */
static long status_kb(const char *field) {
  char line[256];
  size_t len = strlen(field);
  long v = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, len) == 0 && line[len] == ':') {
      v = strtol(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

static void on_fire(evutil_socket_t fd, short what, void *self) {
  (void)fd; (void)what;
  event_free(self);  /* a one-shot timer is done after its callback */
  if (++fired == n_calls) {
    t_done = clock_s(CLOCK_MONOTONIC);
    cpu_done = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  }
}

static void on_fire2(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg;
  fired2++;  /* must never run: every phase-2 call is cancelled */
}

static int fail(const char *msg, long got, long want) {
  fprintf(stderr, "error: %s (got %ld, expected %ld)\n", msg, got, want);
  return 1;
}

int main(int argc, char **argv) {
  n_calls = argc > 1 ? atol(argv[1]) : 1000000;
  if (n_calls < 1) return fail("bad N", n_calls, 1);
  long n = n_calls;

  /* setup, untimed: the delays, the handle array (touched), the base */
  struct timeval *tv = malloc((size_t)n * sizeof *tv);
  struct event **evs = calloc((size_t)n, sizeof *evs);
  if (!tv || !evs) return fail("out of memory", 0, 0);
  uint64_t x = 1, sum = 0;
  for (long i = 0; i < n; i++) {
    x = x * 48271 % 2147483647;
    long us = (long)(x % 1000000);
    sum += (uint64_t)us;
    tv[i].tv_sec = 0;
    tv[i].tv_usec = us;
  }
  memset(evs, 0, (size_t)n * sizeof *evs);
  struct event_base *base = event_base_new();
  if (!base) return fail("event_base_new failed", 0, 0);

  /* phase 1: schedule N, then run until all have fired */
  long rss0 = status_kb("VmRSS");
  double t0 = clock_s(CLOCK_MONOTONIC);
  for (long i = 0; i < n; i++) {
    struct event *ev = event_new(base, -1, 0, on_fire, event_self_cbarg());
    if (!ev || evtimer_add(ev, &tv[i]) != 0) return fail("event_new/evtimer_add failed", i, n);
  }
  double t1 = clock_s(CLOCK_MONOTONIC);
  long hwm = status_kb("VmHWM");
  double c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
  event_base_dispatch(base);
  if (fired != n) return fail("phase 1: not every call fired", fired, n);

  /* phase 2: schedule N again (timed apart) with the same spread 1000 s
  ** out, so none falls due; let the loop take them in (untimed); then cancel
  ** each and run one loop turn, which absorbs whatever cancelling left */
  for (long i = 0; i < n; i++) tv[i].tv_sec = 1000;
  double t2 = clock_s(CLOCK_MONOTONIC);
  for (long i = 0; i < n; i++) {
    evs[i] = evtimer_new(base, on_fire2, NULL);
    if (!evs[i] || evtimer_add(evs[i], &tv[i]) != 0) return fail("evtimer_add failed", i, n);
  }
  double t3 = clock_s(CLOCK_MONOTONIC);
  event_base_loop(base, EVLOOP_NONBLOCK);
  double t4 = clock_s(CLOCK_MONOTONIC);
  for (long i = 0; i < n; i++) {
    event_del(evs[i]);
    event_free(evs[i]);
  }
  double t5 = clock_s(CLOCK_MONOTONIC);
  event_base_loop(base, EVLOOP_NONBLOCK);
  double t6 = clock_s(CLOCK_MONOTONIC);
  int left = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
  if (left != 0) return fail("phase 2: calls still pending after cancel", left, 0);
  if (fired2 != 0) return fail("phase 2: a cancelled call ran", fired2, 0);

  printf("n=%ld\ndelay_sum_us=%llu\n", n, (unsigned long long)sum);
  printf("schedule_s=%.6f\nfire_cpu_s=%.6f\ntotal_s=%.6f\n", t1 - t0, cpu_done - c1, t_done - t0);
  printf("schedule2_s=%.6f\ncancel_s=%.6f\ncancel_calls_s=%.6f\n", t3 - t2, t6 - t4, t5 - t4);
  printf("rss_before_kb=%ld\nhwm_pending_kb=%ld\nbytes_per_call=%.1f\n", rss0, hwm,
         (double)(hwm - rss0) * 1024.0 / (double)n);
  printf("fired=%ld\n", fired);
  event_base_free(base);
  free(tv);
  free(evs);
  return 0;
}
