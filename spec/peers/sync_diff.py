#!/usr/bin/python3
"""spec/peers/sync_diff.py: Twisted's side of spec/sync_diff_spec.lua.

Reads programs in the text format of spec/helpers/sync_diff.lua (which
documents it) from the file named by argv[1], runs each one against
Twisted's own DeferredLock, DeferredSemaphore and DeferredQueue
(twisted.internet.defer), and prints "== <id>" then one line per event, as
the Lua interpreter in that helper does for braid.defer. The spec compares
the two outputs program by program.
"""

import re
import sys

from twisted.internet import defer
from twisted.python.failure import Failure

from diff_programs import Trace, consume_failures, parse_body as parse_items, plain_rep, run_programs

TERMINALS = {"ret", "raise", "fail", "d"}


class Missing(Exception):
    """An action on something not made ("unmade") or not held ("unheld")."""


def error_name(e):
    if isinstance(e, defer.AlreadyCalledError):
        return "AlreadyFired"
    if isinstance(e, Missing):
        return str(e)
    m = re.search(r"E\d+", str(e))
    return m.group(0) if m else type(e).__name__


def parse_body(text):
    """"a:1,ret:3" -> (actions, terminal), each a list of words."""
    return parse_items(text, TERMINALS)


def opt(n):
    return "-" if n is None else str(n)


class Program(Trace):
    def __init__(self, pid, nd):
        self.pid = pid
        self.out = []
        self.ds = [defer.Deferred() for _ in range(nd)]
        self.objs = {}
        self.order = []
        self.defs = {"a": {}, "r": {}, "g": {}}
        self.made = {"a": {}, "r": {}, "g": {}}
        self.held = {}

    error_name = staticmethod(error_name)

    def rep(self, v):
        plain = plain_rep(v)
        if plain is not None:
            return plain
        if isinstance(v, Failure):
            if v.check(defer.CancelledError):
                return "F(Cancelled)"
            return "F(%s)" % error_name(v.value)
        for name, o in self.objs.items():
            if o is v:
                return name
        for j, d in enumerate(self.ds):
            if d is v:
                return "D%d" % (j + 1)
        return "?" + type(v).__name__

    def state(self, name):
        o = self.objs[name]
        if name[0] == "L":
            return "%s locked=%s waiting=%d" % (name, self.rep(o.locked), len(o.waiting))
        if name[0] == "S":
            return "%s tokens=%d limit=%d waiting=%d" % (name, o.tokens, o.limit,
                                                         len(o.waiting))
        return "%s size=%s backlog=%s pending=[%s] count=%d waiting=%d" % (
            name, opt(o.size), opt(o.backlog), ",".join(self.rep(v) for v in o.pending),
            len(o.pending), len(o.waiting))

    def made_of(self, kind, k):
        d = self.made[kind].get(int(k))
        if d is None:
            raise Missing("unmade")
        return d

    # ---- lines

    def line(self, words, text):
        kind = words[0]
        if kind == "lock":
            self.add_obj("L" + words[1], defer.DeferredLock())
        elif kind == "sem":
            self.add_obj("S" + words[1], defer.DeferredSemaphore(int(words[2])))
        elif kind == "queue":
            size, backlog = (None if w == "-" else int(w) for w in words[2:4])
            self.add_obj("Q" + words[1], defer.DeferredQueue(size, backlog))
        elif kind in ("acq", "run", "get"):
            self.defs[kind[0]][int(words[1])] = (words[2], parse_body(words[3]))
        elif kind == "do":
            self.act(words[1].split(":"), words[1])
        else:
            raise AssertionError("unknown line " + text)

    def add_obj(self, name, obj):
        self.objs[name] = obj
        self.order.append(name)

    # ---- actions

    def do_acq(self, k):
        k = int(k)
        obj, body = self.defs["a"][k]
        d = self.objs[obj].acquire()
        self.made["a"][k] = d

        def got(v):
            self.log("a%d -> %s" % (k, self.rep(v)))
            if isinstance(v, Failure):
                return v
            self.held[k] = True
            return self.run_body(body)
        d.addBoth(got)

    def do_rel(self, k):
        k = int(k)
        if not self.held.get(k):
            raise Missing("unheld")
        self.held[k] = False
        self.objs[self.defs["a"][k][0]].release()

    def do_run(self, k):
        k = int(k)
        obj, body = self.defs["r"][k]

        def f(arg):
            self.log("r%d f(%s)" % (k, self.rep(arg)))
            return self.run_body(body)

        def ran(v):
            self.log("r%d -> %s" % (k, self.rep(v)))
            return v
        d = self.objs[obj].run(f, 100 + k)
        self.made["r"][k] = d
        d.addBoth(ran)

    def do_get(self, k):
        k = int(k)
        q, body = self.defs["g"][k]
        d = self.objs[q].get()
        self.made["g"][k] = d

        def got(v):
            self.log("g%d -> %s" % (k, self.rep(v)))
            if isinstance(v, Failure):
                return v
            return self.run_body(body)
        d.addBoth(got)

    def do_cancel(self, k):
        self.made_of("a", k).cancel()

    def do_cancelr(self, k):
        self.made_of("r", k).cancel()

    def do_cancelg(self, k):
        self.made_of("g", k).cancel()

    def do_canceld(self, j):
        self.ds[int(j) - 1].cancel()

    def do_fira(self, k):
        self.made_of("a", k).errback(Failure(ValueError("E%d" % (500 + int(k)))))

    def do_firr(self, k):
        self.made_of("r", k).errback(Failure(ValueError("E%d" % (600 + int(k)))))

    def do_firg(self, k, kind):
        d, k = self.made_of("g", k), int(k)
        if kind == "ok":
            d.callback(700 + k)
        else:
            d.errback(Failure(ValueError("E%d" % (700 + k))))

    def do_fire(self, j, kind):
        j = int(j)
        if kind == "ok":
            self.ds[j - 1].callback(1000 + j)
        else:
            self.ds[j - 1].errback(Failure(ValueError("E%d" % (1000 + j))))

    def do_put(self, q, v):
        if v == "nil":
            v = None
        elif v in self.objs:
            v = self.objs[v]
        else:
            v = int(v)
        self.objs[q].put(v)

    def do_st(self, name):
        self.log(self.state(name))

    # ---- the end

    def finish(self):
        for name in self.order:
            self.log("state " + self.state(name))
        every = []
        for kind in ("a", "r", "g"):
            for k in sorted(self.defs[kind]):
                d = self.made[kind].get(k)
                if d is not None:
                    every.append(("%s%d" % (kind, k), d))
        every += [("d%d" % (j + 1), d) for j, d in enumerate(self.ds)]
        for name, d in every:
            unh = d._debugInfo is not None and d._debugInfo.failResult is not None
            self.log("state %s called=%s result=%s unh=%s"
                     % (name, self.rep(d.called), self.rep(d.result) if d.called else "-",
                        self.rep(unh)))
        consume_failures(d for _, d in every)


def main():
    run_programs(sys.argv[1], lambda header: Program(header[1], int(header[2])))


if __name__ == "__main__":
    main()
