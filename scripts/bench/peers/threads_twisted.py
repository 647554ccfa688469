"""threads_twisted.py: the Twisted peer of scripts/bench/threads.

twisted.internet.threads.deferToThread round trips of a trivial function on
the reactor's default pool (10 threads, started lazily), two cases:
  batch   N calls issued at once; time until the last result arrived
  serial  N calls one after another, each issued by the previous one's
          callback (round-trip latency)
An untimed warm-up of 1000 calls starts the pool's threads first. Run with
/usr/bin/python3 (Debian's python3-twisted). Prints key=value lines; exits 1
when the work did not happen.
"""

import gc
import sys
import time

from twisted.internet import reactor, threads

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
WARM = 1000
now = time.perf_counter  # monotonic
cpu = time.process_time
results = []


def fail(msg):
    sys.stderr.write("error: %s\n" % msg)
    sys.stderr.flush()
    reactor.crash()
    sys.exit(1)


def trivial(x):
    return x


def run_batch():
    gc.collect()
    state = {"got": 0, "sum": 0}
    t0, c0 = now(), cpu()

    def on_result(v):
        state["got"] += 1
        state["sum"] += v
        if state["got"] == N:
            results.append(("batch_s", now() - t0))
            results.append(("batch_cpu_s", cpu() - c0))
            if state["sum"] != N * (N + 1) // 2:
                fail("batch: sum %d, expected %d" % (state["sum"], N * (N + 1) // 2))
            reactor.callLater(0, run_serial)

    for i in range(1, N + 1):
        threads.deferToThread(trivial, i).addCallback(on_result)


def run_serial():
    gc.collect()
    state = {"got": 0}
    t0, c0 = now(), cpu()

    def step(v):
        if v != state["got"]:
            fail("serial: got %r, expected %d" % (v, state["got"]))
        state["got"] += 1
        if state["got"] == N + 1:
            results.append(("serial_s", now() - t0))
            results.append(("serial_cpu_s", cpu() - c0))
            reactor.stop()
            return
        threads.deferToThread(trivial, state["got"]).addCallback(step)

    threads.deferToThread(trivial, 0).addCallback(step)


def warm_up():
    state = {"left": WARM}

    def done(_):
        state["left"] -= 1
        if state["left"] == 0:
            reactor.callLater(0, run_batch)

    for i in range(WARM):
        threads.deferToThread(trivial, i).addCallback(done)


reactor.callWhenRunning(warm_up)
reactor.run()
if len(results) != 4:
    fail("the cases did not finish")
print("n=%d" % N)
print("threads=%d" % reactor.getThreadPool().max)
for k, v in results:
    print("%s=%.6f" % (k, v))
