"""timers_twisted.py: the Twisted peer of scripts/bench/timers.

reactor.callLater / DelayedCall.cancel on Twisted's default reactor (epoll on
Linux). Same workload as every peer: N calls with delays of (x mod 1e6)
microseconds, x from the minimal-standard generator (x = x * 48271 mod
2^31-1, x0 = 1). Run with /usr/bin/python3 (Debian's python3-twisted).
Prints key=value lines; exits 1 when the work did not happen.
"""

import gc
import sys
import time

from twisted.internet import reactor

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
now = time.perf_counter  # monotonic
cpu = time.process_time


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def fail(msg):
    sys.stderr.write("error: %s\n" % msg)
    sys.exit(1)


# setup, untimed
delays = []
x, total = 1, 0
for i in range(N):
    x = x * 48271 % 2147483647
    us = x % 1000000
    total += us
    delays.append(us / 1e6)

fired = fired2 = 0
t_done = cpu_done = 0.0


def on_fire():
    global fired, t_done, cpu_done
    fired += 1
    if fired == N:
        t_done = now()
        cpu_done = cpu()
        reactor.stop()


def on_fire2():
    global fired2
    fired2 += 1  # must never run: every phase-2 call is cancelled


call_later = reactor.callLater

# phase 1: schedule N, then run until all have fired
gc.collect()
rss0 = status_kb("VmRSS")
t0 = now()
for i in range(N):
    call_later(delays[i], on_fire)
t1 = now()
hwm = status_kb("VmHWM")
c1 = cpu()
reactor.run()
if fired != N:
    fail("phase 1: %d of %d calls fired" % (fired, N))

# phase 2: schedule N again (timed apart) with the same spread 1000 s out, so
# none falls due; one loop iteration takes them in (untimed: Twisted moves new
# calls into its heap there); then cancel each and run one iteration, which
# absorbs what cancelling left (Twisted rebuilds its heap there)
gc.collect()
handles = [None] * N
t2 = now()
for i in range(N):
    handles[i] = call_later(1000.0 + delays[i], on_fire2)
t3 = now()
reactor.iterate(0)
t4 = now()
for i in range(N):
    handles[i].cancel()
t5 = now()
reactor.iterate(0)
t6 = now()
left = len(reactor.getDelayedCalls())
if left != 0:
    fail("phase 2: %d calls still pending after cancel" % left)
if fired2 != 0:
    fail("phase 2: a cancelled call ran")

out = [("n", N), ("delay_sum_us", total),
       ("schedule_s", t1 - t0), ("fire_cpu_s", cpu_done - c1), ("total_s", t_done - t0),
       ("schedule2_s", t3 - t2), ("cancel_s", t6 - t4), ("cancel_calls_s", t5 - t4),
       ("rss_before_kb", rss0), ("hwm_pending_kb", hwm),
       ("bytes_per_call", (hwm - rss0) * 1024.0 / N), ("fired", fired)]
for k, v in out:
    print("%s=%s" % (k, ("%.6f" % v) if isinstance(v, float) else v))
