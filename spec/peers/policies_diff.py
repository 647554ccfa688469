#!/usr/bin/python3
"""spec/peers/policies_diff.py: Twisted's side of spec/policies_diff_spec.lua.

Reads programs in the text format of spec/helpers/policies_diff.lua (which
documents it) from the file named by argv[1], runs each one against
Twisted's own twisted.protocols.policies (WrappingFactory, TimeoutFactory,
ThrottlingFactory, LimitConnectionsByPeer, LimitTotalConnectionsFactory,
TrafficLoggingFactory, TimeoutMixin) on a task.Clock and traced
StringTransports, and prints "== <id>" then one line per event, as the Lua
interpreter in that helper does for braid.policies. The spec compares the
two outputs program by program.
"""

import ast
import re
import sys

from twisted.internet import error, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols import policies
from twisted.python.failure import Failure

from diff_programs import run_programs

EPS = 2.0 ** -20
THROTTLE_IDS = ("checkReadBandwidthID", "unthrottleReadsID",
                "checkWriteBandwidthID", "unthrottleWritesID")


def num(x):
    return "%.17g" % x


def optnum(x):
    return "nil" if x is None else num(x)


def boolean(v):
    return "true" if v else "false"


def period(s):
    return None if s == "none" else float(s)


def opt_int(s):
    return None if s == "-" else int(s)


def canon_log(line):
    """A log factory's line, its data unquoted (see the Lua helper)."""
    m = re.match(r"^([CS]) (\d+): (b'.*')$", line)
    if m:
        return "%s %s: %s" % (m.group(1), m.group(2),
                              ast.literal_eval(m.group(3)).decode())
    m = re.match(r"^SV (\d+): (\[.*\])$", line)
    if m:
        items = [b.decode() for b in ast.literal_eval(m.group(2))]
        return "SV %s: [%s]" % (m.group(1), ",".join(items))
    m = re.match(r"^C (\d+): .*?(Connection[A-Za-z]+)", line)
    if m:
        return "C %s: F(%s)" % (m.group(1), m.group(2))
    return line


class Inner(policies.TimeoutMixin, Protocol):
    """The innermost protocol; cid and prog are set after buildProtocol."""

    over = False

    def connectionMade(self):
        spec = self.factory.spec
        self.prog.log("%d made%s" % (self.cid, " over" if self.over else ""))
        if spec["prod"]:
            self.prog.register(self, True)
        if spec["mixin"] is not None:
            self.setTimeout(spec["mixin"])

    def dataReceived(self, data):
        spec = self.factory.spec
        self.prog.log("%d data %s" % (self.cid, data.decode()))
        if spec["mixin"] is not None:
            self.resetTimeout()
        if spec["echo"]:
            self.transport.write(data)

    def connectionLost(self, reason):
        spec = self.factory.spec
        name = ("Done" if reason.check(error.ConnectionDone)
                else "Lost" if reason.check(error.ConnectionLost) else "?")
        self.prog.log("%d lost %s" % (self.cid, name))
        if spec["cancel"]:
            self.setTimeout(None)
        if spec["bye"]:
            self.transport.write(b"bye")

    def timeoutConnection(self):
        self.prog.log("%d timeout" % self.cid)
        policies.TimeoutMixin.timeoutConnection(self)


class Over(Inner):
    over = True


class Producer:
    def __init__(self, prog, k):
        self.prog, self.k = prog, k

    def pauseProducing(self):
        self.prog.log("%d prod pause" % self.k)

    def resumeProducing(self):
        self.prog.log("%d prod resume" % self.k)

    def stopProducing(self):
        self.prog.log("%d prod stop" % self.k)


class Traced(StringTransport):
    """A StringTransport tracing its calls; auto: loseConnection tells the
    protocol at once; pause/resume never refuse (see the Lua helper)."""

    def __init__(self, prog, k, auto, peer):
        StringTransport.__init__(self, peerAddress=peer)
        self.prog, self.k, self.auto = prog, k, auto
        self.protocol = None

    def tr(self, what):
        self.prog.log("%d %s" % (self.k, what))

    def write(self, data):
        self.tr("tw " + data.decode())
        StringTransport.write(self, data)

    def writeSequence(self, data):
        self.tr("tws " + (",".join(d.decode() for d in data) if data else "-"))
        StringTransport.write(self, b"".join(data))

    def loseConnection(self):
        self.tr("tlose")
        self.disconnecting = True
        if self.auto and self.connected:
            self.connected = False
            self.protocol.connectionLost(Failure(error.ConnectionDone("Bye.")))

    def abortConnection(self):
        self.tr("tabort")
        self.disconnected = True
        self.loseConnection()

    def pauseProducing(self):
        self.tr("tpause")
        self.producerState = "paused"

    def resumeProducing(self):
        self.tr("tresume")
        self.producerState = "producing"

    def stopProducing(self):
        self.tr("tstop")
        self.producerState = "stopped"

    def registerProducer(self, producer, streaming):
        self.tr("treg " + ("s" if streaming else "p"))
        StringTransport.registerProducer(self, producer, streaming)

    def unregisterProducer(self):
        self.tr("tunreg")
        StringTransport.unregisterProducer(self)


class LogFile:
    def __init__(self, prog, name):
        self.prog, self.name = prog, name

    def write(self, s):
        self.prog.log("%s| %s" % (self.name, canon_log(s.rstrip("\n"))))

    def flush(self):
        pass


class Layer:
    def __init__(self, kind, f):
        self.kind, self.f = kind, f

    def state(self):
        f = self.f
        if self.kind == "plain":
            return "plain"
        if self.kind == "total":
            return "total count=%d" % f.connectionCount
        if self.kind == "peer":
            hosts = sorted("%s=%d" % (h, n) for h, n in f.peerConnections.items())
            return "peers=" + ",".join(hosts)
        s = "%s open=%d" % (self.kind, len(f.protocols))
        if self.kind == "throttle":
            s += " count=%d read=%d written=%d" % (f.connectionCount, f.readThisSecond,
                                                   f.writtenThisSecond)
        elif self.kind == "log":
            s += " counter=%d" % f._counter
        return s


class Conn:
    def __init__(self, p, t, layers, inner):
        self.p, self.t, self.layers, self.inner = p, t, layers, inner

    def first_timeout(self):
        for p in self.layers:
            if isinstance(p, policies.TimeoutProtocol):
                return p
        raise AssertionError("no TimeoutProtocol")

    def state(self):
        parts = []
        for p in self.layers:
            s = "disc=" + boolean(p.disconnecting)
            if isinstance(p, policies.TimeoutProtocol):
                call = p.timeoutCall
                s += " tmo=%s armed=%s" % (optnum(p.timeoutPeriod),
                                           boolean(call is not None and call.active()))
            parts.append(s)
        inner = self.inner
        if inner.factory.spec["mixin"] is not None:
            call = inner._TimeoutMixin__timeoutCall
            parts.append("mix=%s armed=%s" % (optnum(inner.timeOut),
                                              boolean(call is not None and call.active())))
        host = inner.transport.getHost()
        parts.append("tr=%s disc=%s host=%s:%d" % (self.t.producerState,
                                                   boolean(self.t.disconnecting),
                                                   host.host, host.port))
        return " ".join(parts)


def parse_flags(flags, mixin):
    return {"echo": "e" in flags, "prod": "p" in flags, "bye": "b" in flags,
            "cancel": "c" in flags, "mixin": None if mixin == "-" else float(mixin)}


class Program:
    def __init__(self, pid):
        self.pid = pid
        self.out = []
        self.clock = task.Clock()
        self.factories = {}
        self.conns = {}

    def log(self, line):
        self.out.append("%s %s" % (num(self.clock.seconds()), line))

    def register(self, inner, streaming):
        inner.transport.registerProducer(Producer(self, inner.cid), streaming)

    # ---- factories

    def make_base(self, words):
        kind = words[3].split(":")
        if kind[0] == "plain":
            f = Factory()
            f.protocol = Inner
        else:
            f = policies.LimitTotalConnectionsFactory()
            f.protocol = Inner
            f.connectionLimit = opt_int(kind[1])
            if kind[2] == "over":
                f.overflowProtocol = Over
        f.spec = parse_flags(words[4], words[5])
        f.noisy = False
        return Layer(kind[0], f)

    def make_layer(self, fid, i, spec, inner):
        a = spec.split(":")
        kind = a[0]
        if kind == "wrap":
            f = policies.WrappingFactory(inner)
        elif kind == "timeout":
            f = policies.TimeoutFactory(inner, float(a[1]))
        elif kind == "throttle":
            mx = opt_int(a[1])
            f = policies.ThrottlingFactory(inner, sys.maxsize if mx is None else mx,
                                           opt_int(a[2]), opt_int(a[3]))
        elif kind == "peer":
            f = policies.LimitConnectionsByPeer(inner)
            f.maxConnectionsPerPeer = int(a[1])
        else:
            f = policies.TrafficLoggingFactory(inner, "L%d.%d" % (fid, i))
            f.open = self.opener
        f.callLater = self.clock.callLater
        f.noisy = False
        return Layer(kind, f)

    def opener(self, name):
        self.log("open " + name)
        return LogFile(self, name)

    def make_factory(self, words):
        fid = int(words[1])
        base = self.make_base(words)
        specs = [] if words[2] == "-" else words[2].split(",")
        layers = [None] * len(specs)
        cur = base.f
        for i in range(len(specs), 0, -1):
            layers[i - 1] = self.make_layer(fid, i, specs[i - 1], cur)
            cur = layers[i - 1].f
        layers.append(base)
        cur.doStart()
        self.factories[fid] = (cur, layers)

    # ---- operations

    def connect(self, words):
        k = int(words[1])
        outer, _ = self.factories[int(words[2])]
        host = words[3]
        # LimitConnectionsByPeer reads addr[0] and getPeer()[1]
        p = outer.buildProtocol((host, 5000 + k))
        if p is None:
            self.log("%d refused" % k)
            return
        layers, x = [], p
        while isinstance(x, policies.ProtocolWrapper):
            layers.append(x)
            x = x.wrappedProtocol
        x.cid, x.prog, x.callLater = k, self, self.clock.callLater
        t = Traced(self, k, words[4] == "auto", ("TCP", host, 5000 + k))
        t.protocol = p
        self.conns[k] = Conn(p, t, layers, x)
        p.makeConnection(t)
        self.log("%d prefix %s" % (k, p.logPrefix()))

    def on_conn(self, c, words):
        what = words[0]
        it = c.inner.transport
        if what == "data":
            if c.t.connected and not c.t.disconnecting:
                c.p.dataReceived(words[2].encode())
        elif what == "lost":
            if not c.t.connected:
                return
            c.t.connected = False
            e = error.ConnectionDone() if words[2] == "done" else error.ConnectionLost()
            c.p.connectionLost(Failure(e))
        elif what == "write":
            it.write(words[2].encode())
        elif what == "wseq":
            it.writeSequence([] if words[2] == "-" else [s.encode() for s in words[2].split(",")])
        elif what == "lose":
            it.loseConnection()
        elif what == "abort":
            it.abortConnection()
        elif what == "reg":
            it.registerProducer(Producer(self, c.inner.cid), words[2] == "s")
        elif what == "unreg":
            it.unregisterProducer()
        elif what == "ipause":
            it.pauseProducing()
        elif what == "iresume":
            it.resumeProducing()
        elif what == "istop":
            it.stopProducing()
        elif what == "tset":
            c.first_timeout().setTimeout(period(words[2]))
        elif what == "tcancel":
            c.first_timeout().cancelTimeout()
        elif what == "treset":
            c.first_timeout().resetTimeout()
        elif what == "mset":
            prev = c.inner.setTimeout(period(words[2]))
            self.log("%d mset -> %s" % (c.inner.cid, optnum(prev)))
        elif what == "mreset":
            c.inner.resetTimeout()
        else:
            raise AssertionError("unknown operation " + what)

    def state(self):
        for fid in sorted(self.factories):
            _, layers = self.factories[fid]
            self.out.append("f%d %s" % (fid, " | ".join(L.state() for L in layers)))

    def resetc(self, words):
        for L in self.factories[int(words[1])][1]:
            if L.kind == "log":
                L.f.resetCounter()
                return

    def run_op(self, words):
        what = words[0]
        if what == "connect":
            self.connect(words)
        elif what == "state":
            self.state()
        elif what == "resetc":
            self.resetc(words)
        else:
            c = self.conns.get(int(words[1]))
            if c is not None:
                self.on_conn(c, words)

    def step(self, text, f, arg):
        """f(arg), traced after "> text" unless nothing happened."""
        n = len(self.out)
        self.out.append("> " + text)
        try:
            f(arg)
        except Exception as e:  # noqa: BLE001 (any error is an outcome)
            self.log("%s -> %s" % (text, type(e).__name__))
        if len(self.out) == n + 1:
            self.out.pop()

    def line(self, words, text):
        if words[0] == "factory":
            self.make_factory(words)
        elif words[0] == "advance":
            self.step(text, self.clock.advance, float(words[1]))
        else:
            self.step(words[0], self.clock.advance, float(words[0][:-1]) + EPS)
            if len(words) > 1:
                self.step(text.split(" ", 1)[1], self.run_op, words[1:])

    # ---- the end

    def name_of(self, dc):
        for fid in sorted(self.factories):
            for i, L in enumerate(self.factories[fid][1]):
                if L.kind != "throttle":
                    continue
                for n in THROTTLE_IDS:
                    if getattr(L.f, n) is dc:
                        return "f%d.%d.%s" % (fid, i + 1, n)
        for k, c in self.conns.items():
            for i, p in enumerate(c.layers):
                if isinstance(p, policies.TimeoutProtocol) and p.timeoutCall is dc:
                    return "c%d.%d.timeout" % (k, i + 1)
            if c.inner._TimeoutMixin__timeoutCall is dc:
                return "c%d.mixin" % k
        return "?"

    def finish(self):
        self.state()
        for fid in sorted(self.factories):
            self.out.append("f%d prefix %s" % (fid, self.factories[fid][0].logPrefix()))
        for k in sorted(self.conns):
            self.out.append("c%d %s" % (k, self.conns[k].state()))
        pending = sorted((dc.getTime(), self.name_of(dc)) for dc in self.clock.getDelayedCalls())
        self.out.append("pending" + "".join(" %s@%s" % (n, num(t)) for t, n in pending))


def main():
    run_programs(sys.argv[1], lambda header: Program(header[1]))


if __name__ == "__main__":
    main()
