#!/usr/bin/python3
"""spec/peers/task_diff.py: Twisted's side of spec/task_diff_spec.lua.

Reads programs in the text format of spec/helpers/task_diff.lua (which
documents it) from the file named by argv[1], runs each one against
Twisted's own twisted.internet.task (Clock, DelayedCall, LoopingCall,
deferLater, Cooperator), and prints "== <id>" then one line per event, as
the Lua interpreter in that helper does for braid.task. The spec compares
the two outputs program by program.
"""

import re
import sys

from twisted.internet import defer, error, task
from twisted.python.failure import Failure

from diff_programs import Trace, consume_failures, parse_body as parse_items, plain_rep, run_programs

ASSERTIONS = [
    ("already running", "AlreadyRunning"),
    ("stop a LoopingCall", "NotRunning"),
    ("reset a LoopingCall", "NotRunningReset"),
]
TERMINALS = {"ret", "raise", "fail", "d", "done"}


class Missing(Exception):
    """A program refers to something not made yet ("unscheduled", ...)."""


def num(x):
    return "%.17g" % x


def error_name(e):
    if isinstance(e, defer.AlreadyCalledError):
        return "AlreadyFired"
    if isinstance(e, error.AlreadyCalled):
        return "AlreadyCalled"
    if isinstance(e, error.AlreadyCancelled):
        return "AlreadyCancelled"
    if isinstance(e, Missing):
        return str(e)
    if isinstance(e, AssertionError):
        for text, name in ASSERTIONS:
            if text in str(e):
                return name
        return "Assert"
    m = re.search(r"E\d+", str(e))
    return m.group(0) if m else type(e).__name__


def parse_body(text):
    """"a:1,ret:3" -> (actions, terminal), each a list of words."""
    return parse_items(text, TERMINALS)


class Done(Exception):
    """A task body's "done" terminal."""


class Program(Trace):
    def __init__(self, pid, nd):
        self.pid = pid
        self.out = []
        self.clock = task.Clock()
        self.ds = [defer.Deferred() for _ in range(nd)]
        self.calls = {}
        self.dcs = {}
        self.loops = {}
        self.lcs = {}
        self.laters = {}
        self.dls = {}
        self.coops = {}
        self.tasks = {}
        self.tks = {}
        self.its = {}

    error_name = staticmethod(error_name)

    def now(self):
        return num(self.clock.seconds())

    def rep(self, v):
        plain = plain_rep(v, (int, float, str))
        if plain is not None:
            return plain
        if isinstance(v, Failure):
            if v.check(defer.CancelledError):
                return "F(Cancelled)"
            return "F(%s)" % error_name(v.value)
        for k, d in enumerate(self.ds):
            if d is v:
                return "D%d" % (k + 1)
        for l, lc in self.lcs.items():
            if lc is v:
                return "lc%d" % l
        for it in self.its.values():
            if it is v:
                return "it"
        return "?" + type(v).__name__

    def watch(self, what):
        def cb(v):
            self.log("%s -> %s" % (what, self.rep(v)))
        return cb

    def terminal(self, what, args):
        if what == "done":
            raise Done()
        return Trace.terminal(self, what, args)

    def run_call(self, i):
        self.log("c%d @%s" % (i, self.now()))
        self.run_body(self.calls[i][1])

    # ---- definitions

    def make_loop(self, l, words):
        loop = {"interval": float(words[2]), "now": words[3] == "now",
                "count": words[4] == "count", "default": words[5],
                "bodies": [parse_body(w) for w in words[6:]], "calls": 0, "starts": 0}

        def f(count=None):
            loop["calls"] += 1
            n = loop["calls"]
            extra = " count=%d" % count if loop["count"] else ""
            self.log("l%d#%d @%s%s" % (l, n, self.now(), extra))
            if n <= len(loop["bodies"]):
                return self.run_body(loop["bodies"][n - 1])
            if loop["default"] == "stop":
                self.act(["stop", str(l)], "stop:%d" % l)
            return None

        lc = task.LoopingCall.withCount(f) if loop["count"] else task.LoopingCall(f)
        lc.clock = self.clock
        self.loops[l] = loop
        self.lcs[l] = lc

    def make_coop(self, words):
        delay, units = float(words[2]), int(words[3])

        def factory():
            n = [0]

            def pred():
                n[0] += 1
                return n[0] >= units
            return pred
        return task.Cooperator(terminationPredicateFactory=factory,
                               scheduler=lambda f: self.clock.callLater(delay, f),
                               started=words[4] == "started")

    def make_iterator(self, t):
        prog, steps = self, self.tasks[t]["steps"]

        class Iterator:
            n = 0

            def __iter__(self):
                return self

            def __next__(self):
                self.n += 1
                if self.n > len(steps):
                    raise StopIteration()
                prog.log("t%d#%d @%s" % (t, self.n, prog.now()))
                try:
                    v = prog.run_body(steps[self.n - 1])
                except Done:
                    raise StopIteration()
                return True if v is None else v
        return Iterator()

    def line(self, words, text):
        kind = words[0]
        if kind == "call":
            self.calls[int(words[1])] = (float(words[2]), parse_body(words[3]))
        elif kind == "loop":
            self.make_loop(int(words[1]), words)
        elif kind == "later":
            body = None if words[3] == "nofn" else parse_body(words[3])
            self.laters[int(words[1])] = (float(words[2]), body)
        elif kind == "coop":
            self.coops[int(words[1])] = self.make_coop(words)
        elif kind == "task":
            self.tasks[int(words[1])] = {"coop": int(words[2]), "co": words[3] == "coiterate",
                                         "steps": [parse_body(w) for w in words[4:]]}
        elif kind == "do":
            self.act(words[1].split(":"), words[1])
        elif kind == "advance":
            self.advance([float(words[1])], text)
        elif kind == "pump":
            self.advance([float(s) for s in words[1].split(",")], text)
        else:
            raise AssertionError("unknown line " + text)

    def advance(self, steps, text):
        try:
            if len(steps) == 1:
                self.clock.advance(steps[0])
            else:
                self.clock.pump(steps)
        except Exception as e:  # noqa: BLE001
            self.log("%s -> %s" % (text, error_name(e)))

    # ---- actions

    def dc_of(self, i):
        dc = self.dcs.get(int(i))
        if dc is None:
            raise Missing("unscheduled")
        return dc

    def task_of(self, t):
        tk = self.tks.get(int(t))
        if tk is None:
            raise Missing("uncreated")
        return tk

    def do_sched(self, i):
        i = int(i)
        self.dcs[i] = self.clock.callLater(self.calls[i][0], self.run_call, i)

    def do_cancel(self, i):
        self.dc_of(i).cancel()

    def do_reset(self, i, s):
        self.dc_of(i).reset(float(s))

    def do_delay(self, i, s):
        self.dc_of(i).delay(float(s))

    def do_adv(self, s):
        self.clock.advance(float(s))

    def do_fire(self, k, kind):
        k = int(k)
        if kind == "ok":
            self.ds[k - 1].callback(1000 + k)
        else:
            self.ds[k - 1].errback(Failure(ValueError("E%d" % (1000 + k))))

    def do_start(self, l):
        l = int(l)
        loop = self.loops[l]
        d = self.lcs[l].start(loop["interval"], loop["now"])
        loop["starts"] += 1
        d.addBoth(self.watch("l%d start#%d" % (l, loop["starts"])))

    def do_stop(self, l):
        self.lcs[int(l)].stop()

    def do_resetl(self, l):
        self.lcs[int(l)].reset()

    def do_defer(self, k):
        k = int(k)
        delay, body = self.laters[k]

        def f():
            self.log("dl%d @%s" % (k, self.now()))
            return self.run_body(body)
        if body is None:
            self.dls[k] = task.deferLater(self.clock, delay)
        else:
            self.dls[k] = task.deferLater(self.clock, delay, f)
        self.dls[k].addBoth(self.watch("dl%d" % k))

    def do_canceld(self, k):
        d = self.dls.get(int(k))
        if d is None:
            raise Missing("uncreated")
        d.cancel()

    def do_cooperate(self, t):
        t = int(t)
        spec = self.tasks[t]
        it = self.its[t] = self.make_iterator(t)
        coop = self.coops[spec["coop"]]
        if spec["co"]:
            coop.coiterate(it).addBoth(self.watch("t%d done" % t))
        else:
            self.tks[t] = coop.cooperate(it)
            self.tks[t].whenDone().addBoth(self.watch("t%d done" % t))

    def do_pause(self, t):
        self.task_of(t).pause()

    def do_resume(self, t):
        self.task_of(t).resume()

    def do_stopt(self, t):
        self.task_of(t).stop()

    def do_when(self, t):
        self.task_of(t).whenDone().addBoth(self.watch("t%s when" % t))

    def do_cstop(self, k):
        self.coops[int(k)].stop()

    def do_cstart(self, k):
        self.coops[int(k)].start()

    # ---- the end

    def opt_time(self, dc):
        return num(dc.getTime()) if dc is not None else "-"

    def state_lines(self):
        b = self.rep
        for i in sorted(self.calls):
            dc = self.dcs.get(i)
            if dc is None:
                self.log("state c%d -" % i)
                continue
            self.log("state c%d called=%s cancelled=%s active=%s time=%s"
                     % (i, b(bool(dc.called)), b(bool(dc.cancelled)), b(dc.active()),
                        num(dc.getTime())))
        for l in sorted(self.lcs):
            lc = self.lcs[l]
            self.log("state l%d running=%s call=%s" % (l, b(lc.running), self.opt_time(lc.call)))
        every = [("d%d" % (k + 1), d) for k, d in enumerate(self.ds)]
        every += [("dl%d" % k, self.dls[k]) for k in sorted(self.dls)]
        for name, d in every:
            unh = d._debugInfo is not None and d._debugInfo.failResult is not None
            self.log("state %s called=%s result=%s unh=%s"
                     % (name, b(d.called), self.rep(d.result) if d.called else "-", b(unh)))
        for t in sorted(self.tks):
            tk = self.tks[t]
            st = tk._completionState
            self.log("state t%d paused=%d done=%s"
                     % (t, tk._pauseCount, type(st).__name__ if st is not None else "-"))
        for k in sorted(self.coops):
            coop = self.coops[k]
            self.log("state k%d running=%s tasks=%d call=%s"
                     % (k, b(coop.running), len(coop._tasks), self.opt_time(coop._delayedCall)))

    def name_of(self, dc):
        for i, c in self.dcs.items():
            if c is dc:
                return "c%d" % i
        for l, lc in self.lcs.items():
            if lc.call is dc:
                return "l%d" % l
        for k, coop in self.coops.items():
            if coop._delayedCall is dc:
                return "k%d" % k
        return "?"

    def finish(self):
        self.state_lines()
        pending = sorted(self.clock.getDelayedCalls(), key=lambda dc: dc.getTime())
        names = ["%s@%s" % (self.name_of(dc), num(dc.getTime())) for dc in pending]
        self.log("pending" + "".join(" " + n for n in names))
        consume_failures(self.ds + list(self.dls.values()))


def main():
    run_programs(sys.argv[1], lambda header: Program(header[1], int(header[2])))


if __name__ == "__main__":
    main()
