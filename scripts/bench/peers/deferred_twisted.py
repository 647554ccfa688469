"""deferred_twisted.py: the Twisted peer of scripts/bench/deferred.

  chain: N times, make a Deferred, add three callbacks, fire it.
  await: N `yield succeed(i)` of already-fired Deferreds inside one
         @inlineCallbacks function.
Run with /usr/bin/python3 (Debian's python3-twisted). Prints key=value
lines; exits 1 when the work did not happen.
"""

import gc
import sys
import time

from twisted.internet.defer import Deferred, inlineCallbacks, succeed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
now = time.perf_counter  # monotonic


def fail(msg):
    sys.stderr.write("error: %s\n" % msg)
    sys.exit(1)


# chain
acc = 0


def cb1(x):
    return x + 1


def cb2(x):
    return x + 1


def cb3(x):
    global acc
    acc += x
    return x


gc.collect()
t0 = now()
for i in range(1, N + 1):
    d = Deferred()
    d.addCallback(cb1)
    d.addCallback(cb2)
    d.addCallback(cb3)
    d.callback(i)
t1 = now()
want = N * (N + 1) // 2 + 2 * N
if acc != want:
    fail("chain: callbacks summed %d, expected %d" % (acc, want))


# await
@inlineCallbacks
def body(m):
    s = 0
    for i in range(1, m + 1):
        s += yield succeed(i)
    return s


results = []
gc.collect()
t2 = now()
body(N).addBoth(results.append)
t3 = now()
want = N * (N + 1) // 2
if results != [want]:
    fail("await: the function returned %r, expected %d" % (results, want))

print("n=%d" % N)
print("impl=twisted")
print("chain_s=%.6f" % (t1 - t0))
print("await_s=%.6f" % (t3 - t2))
