#!/usr/bin/python3
"""spec/peers/defer_diff.py: Twisted's side of spec/defer_diff_spec.lua.

Reads programs in the text format of spec/helpers/defer_diff.lua (which
documents it) from the file named by argv[1], runs each one against
Twisted's own Deferred, and prints "== <id>" then one line per event, as
the Lua interpreter in that helper does for braid.defer. The spec compares
the two outputs program by program.
"""

import re
import sys

from twisted.internet import defer
from twisted.python.failure import Failure

from diff_programs import Trace, consume_failures, emit, plain_rep, programs


class Program(Trace):
    def __init__(self, pid, k, m=0, nl=0):
        self.pid = pid
        self.ds = [defer.Deferred() for _ in range(k)]
        self.user_pauses = [0] * k
        self.out = []
        self.cos = [None] * m
        self.rs = [None] * m
        self.ls = [None] * nl
        self.lkind = [None] * nl

    def rep(self, v):
        plain = plain_rep(v)
        if plain is not None:
            return plain
        if isinstance(v, Failure):
            if v.check(defer.CancelledError):
                return "F(Cancelled)"
            if v.check(defer.AlreadyCalledError):
                return "F(AlreadyCalled)"
            m = re.search(r"E\d+", v.getErrorMessage())
            return "F(%s)" % (m.group(0) if m else v.type.__name__)
        if isinstance(v, defer.Deferred):
            for i, d in enumerate(self.ds):
                if d is v:
                    return "D%d" % (i + 1)
            for i, d in enumerate(self.rs):
                if d is v:
                    return "R%d" % (i + 1)
            for i, d in enumerate(self.ls):
                if d is v:
                    return "L%d" % (i + 1)
            return "D?"
        return "?" + type(v).__name__

    def raised(self, e):
        if isinstance(e, defer.AlreadyCalledError):
            return "AlreadyCalled"
        return "raised " + self.error_name(e)

    def error_name(self, e):
        if isinstance(e, RecursionError):
            return "overflow"
        return type(e).__name__

    def fire(self, j, ok, value):
        d = self.ds[j]
        try:
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(ValueError("E%d" % value)))
            return "ok"
        except Exception as e:  # noqa: BLE001 (any error is an outcome)
            return self.raised(e)

    def canceller(self, kind, i):
        if kind == "none":
            return None

        def cancel(d):
            self.log("canceller d%d" % (i + 1))
            if kind == "fire":
                d.callback("C")
            elif kind == "errfire":
                d.errback(Failure(ValueError("E99")))
        return cancel

    def make_fn(self, spec, owner):
        parts = spec.split(":")
        k = int(parts[0])
        what = parts[1]
        arg = int(parts[2]) - 1 if len(parts) > 2 else None

        def fn(x):
            self.log("k%d(%s)" % (k, self.rep(x)))
            if what == "ret":
                return k
            if what == "pass":
                return x
            if what == "raise":
                raise ValueError("E%d" % k)
            if what == "failret":
                return Failure(ValueError("E%d" % k))
            if what == "d":
                return self.ds[arg]
            if what == "succ":
                return defer.succeed(k)
            if what == "fail":
                return defer.fail(ValueError("E%d" % k))
            if what == "fire":
                self.log("k%d fire d%d -> %s" % (k, arg + 1, self.fire(arg, True, k)))
                return x
            if what == "cancel":
                self.ds[arg].cancel()
                self.log("k%d cancelled d%d" % (k, arg + 1))
                return x
            if what == "pause":
                self.ds[arg].pause()
                self.user_pauses[arg] += 1
                return x
            if what == "add":
                self.ds[arg].addCallback(self.make_fn("%d:pass" % (k + 500), arg))
                return x
            raise AssertionError("unknown behaviour " + what)
        return fn

    def lrep(self, i, v):
        if isinstance(v, Failure) and v.check(defer.FirstError):
            return "F(FirstError@%d:%s)" % (v.value.index + 1, self.rep(v.value.subFailure))
        if isinstance(v, tuple):
            return "(%s,%d)" % (self.rep(v[0]), v[1] + 1)
        if not isinstance(v, list):
            return self.rep(v)
        if self.lkind[i] == "gather":
            return "[" + ",".join(self.rep(x) for x in v) + "]"
        return "[" + ",".join("(%s,%s)" % (self.rep(ok), self.rep(x)) for ok, x in v) + "]"

    def caught(self, e):
        if isinstance(e, defer.CancelledError):
            return "Cancelled"
        m = re.search(r"E\d+", str(e))
        return m.group(0) if m else self.error_name(e)

    def make_co(self, i, steps):
        @defer.inlineCallbacks
        def body():
            for st in steps:
                m = re.match(r"^([a-z:]+)(\d*)$", st)
                what, j = m.group(1), int(m.group(2)) - 1 if m.group(2) else None
                if what == "raise":
                    raise ValueError("E%d" % (100 + i + 1))
                if what == "ret":
                    return 10 * (i + 1)
                if what == "fire:":
                    self.log("c%d fire d%d -> %s" % (i + 1, j + 1, self.fire(j, True, 300 + i + 1)))
                    continue
                if what == "await:d":
                    target = self.ds[j]
                elif what == "await:r":
                    target = self.rs[j]
                elif what == "await:succ":
                    target = defer.succeed(i + 1)
                else:
                    target = defer.fail(ValueError("E%d" % (100 + i + 1)))
                try:
                    v = yield target
                    self.log("c%d got %s" % (i + 1, self.rep(v)))
                except Exception as e:  # noqa: BLE001
                    self.log("c%d caught %s" % (i + 1, self.caught(e)))
            return "done"
        return body

    def op(self, words):
        name = words[0]
        i = int(words[1]) - 1 if len(words) > 1 else None
        if name == "canceller":
            self.ds[i] = defer.Deferred(self.canceller(words[2], i))
        elif name == "add":
            d = self.ds[i]
            kind = words[2]
            if kind == "cb":
                d.addCallback(self.make_fn(words[3], i))
            elif kind == "eb":
                d.addErrback(self.make_fn(words[3], i))
            elif kind == "both":
                d.addBoth(self.make_fn(words[3], i))
            else:
                d.addCallbacks(self.make_fn(words[3], i), self.make_fn(words[4], i))
        elif name == "fire":
            self.log("fire d%d %s -> %s" % (i + 1, words[2],
                                            self.fire(i, words[2] == "ok", int(words[3]))))
        elif name == "pause":
            self.ds[i].pause()
            self.user_pauses[i] += 1
        elif name == "unpause":
            if self.user_pauses[i] > 0:
                self.user_pauses[i] -= 1
                self.ds[i].unpause()
            else:
                self.log("unpause d%d skipped" % (i + 1))
        elif name == "chain":
            j = int(words[2]) - 1
            self.ds[i].chainDeferred(self.ds[j])
        elif name == "cancel":
            self.ds[i].cancel()
            self.log("cancelled d%d" % (i + 1))
        elif name == "list":
            members = [self.ds[int(j) - 1] for j in words[4:]]
            flags = words[3]
            self.lkind[i] = words[2]
            if words[2] == "gather":
                self.ls[i] = defer.gatherResults(members, consumeErrors="x" in flags)
            else:
                self.ls[i] = defer.DeferredList(members, fireOnOneCallback="c" in flags,
                                                fireOnOneErrback="e" in flags,
                                                consumeErrors="x" in flags)
        elif name == "watchl":
            def watch(v, i=i):
                self.log("l%d -> %s" % (i + 1, self.lrep(i, v)))
                return v
            self.ls[i].addBoth(watch)
        elif name == "cancell":
            self.ls[i].cancel()
            self.log("cancelled l%d" % (i + 1))
        elif name == "co":
            self.cos[i] = self.make_co(i, words[2:])
        elif name == "start":
            self.rs[i] = self.cos[i]()
        elif name == "watch":
            self.rs[i].addBoth(lambda v, i=i: self.log("r%d -> %s" % (i + 1, self.rep(v))))
        elif name == "cancelr":
            self.rs[i].cancel()
            self.log("cancelled r%d" % (i + 1))
        else:
            raise AssertionError("unknown op " + name)

    def finish(self):
        every = [("d%d" % (i + 1), d) for i, d in enumerate(self.ds)]
        every += [("r%d" % (i + 1), d) for i, d in enumerate(self.rs)]
        lists = [("l%d" % (i + 1), d) for i, d in enumerate(self.ls)]
        for name, d in every + lists:
            if not d.called:
                result = "-"
            elif name[0] == "l":
                result = self.lrep(int(name[1:]) - 1, d.result)
            else:
                result = self.rep(d.result)
            # what Twisted's __del__ would report as unhandled
            unh = d._debugInfo is not None and d._debugInfo.failResult is not None
            self.log("state %s called=%s paused=%d result=%s unh=%s"
                     % (name, "true" if d.called else "false", d.paused, result,
                        "true" if unh else "false"))
        consume_failures(d for _, d in every + lists)


def main():
    for header, body in programs(sys.argv[1]):
        prog = Program(header[1], *[int(w) for w in header[2:]])
        for words, _ in body:
            try:
                prog.op(words)
            except Exception as e:  # noqa: BLE001
                prog.log("op %s raised %s" % (words[0], prog.error_name(e)))
        prog.finish()
        emit(prog.pid, prog.out)


if __name__ == "__main__":
    main()
