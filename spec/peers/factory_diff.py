#!/usr/bin/python3
"""spec/peers/factory_diff.py: Twisted's side of spec/factory_diff_spec.lua.

Reads programs in the text format of spec/helpers/factory_diff.lua (which
documents it) from the file named by argv[1]: "fac" programs drive
twisted.internet.protocol's Factory, ClientFactory and
ReconnectingClientFactory with fake connectors on a Clock; "ep" programs
parse endpoint strings with twisted.internet.endpoints' serverFromString
and clientFromString. Prints "== <id>" then one line per event, as the Lua
interpreter in that helper does for braid. The spec compares the two
outputs program by program.
"""

import re
import sys

from twisted.internet import endpoints, error, protocol, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from diff_programs import emit, programs

REASONS = {"refused": error.ConnectionRefusedError, "done": error.ConnectionDone,
           "lost": error.ConnectionLost, "timeout": error.TimeoutError}
BASES = {"factory": protocol.Factory, "client": protocol.ClientFactory,
         "rcf": protocol.ReconnectingClientFactory}
DEFAULTS = ["maxDelay", "initialDelay", "factor", "jitter", "delay", "retries",
            "maxRetries", "noisy", "numPorts"]
ATTRS = {
    "TCP4ServerEndpoint": ["_port", "_backlog", "_interface"],
    "TCP6ServerEndpoint": ["_port", "_backlog", "_interface"],
    "UNIXServerEndpoint": ["_address", "_backlog", "_mode"],
    "TCP4ClientEndpoint": ["_host", "_port", "_timeout", "_bindAddress"],
    "UNIXClientEndpoint": ["_path", "_timeout"],
}


def num(x):
    """Integers plainly, floats with %.17g (".0" added when that reads as
    an integer), as the Lua side prints them."""
    if isinstance(x, int):
        return "%d" % x
    s = "%.17g" % x
    if not re.search(r"[.eEn]", s):
        s += ".0"
    return s


def boolean(v):
    return "true" if v else "false"


def rep(v):
    if v is None:
        return "None"
    if isinstance(v, bool):
        return boolean(v)
    if isinstance(v, (int, float)):
        return num(v)
    if isinstance(v, str):
        return "'%s'" % "".join(
            c if " " <= c <= "~" and c not in "'\\" else "\\x%02x" % ord(c) for c in v)
    if isinstance(v, tuple) and len(v) == 2:
        return "(%s,%s)" % (rep(v[0]), rep(v[1]))
    return "?" + type(v).__name__


def error_name(e):
    if isinstance(e, ValueError) and re.match(r"^E\d+$", str(e)):
        return str(e)
    return type(e).__name__


def number(s):
    return int(s) if re.match(r"^-?\d+$", s) else float(s)


def reason(r):
    cls = REASONS.get(r)
    return Failure(cls()) if cls is not None else None


# ---- family 1: factories

class Current:
    """The program running now, for the log observer."""
    prog = None


def observe(event):
    if Current.prog is not None:
        text = formatEvent(event)
        # braid's log prints a nil connector as Lua does
        text = text.replace("Abandoning None on", "Abandoning nil on")
        Current.prog.log("log " + text)


def factory_class(prog, kind, build, fail):
    base = BASES[kind]
    raised = set()

    def hook(name, code):
        def method(self):
            prog.log(name)
            if fail == name[:-7] and name not in raised:
                raised.add(name)
                raise ValueError(code)
        return method

    class F(base):
        protocol = protocol.Protocol
        startFactory = hook("startFactory", "E1")
        stopFactory = hook("stopFactory", "E2")

        def __repr__(self):
            return "F"

        if build == "reset":
            def buildProtocol(self, addr):
                self.resetDelay()
                return base.buildProtocol(self, addr)
    return F


class Connector:
    def __init__(self, prog, i, how, stop):
        self.prog, self.i, self.stop = prog, i, stop
        self.mode, _, k = how.partition(":")
        self.left = int(k) if k else 0

    def __str__(self):
        return "c%d" % self.i

    def connect(self):
        prog = self.prog
        prog.log("c%d connect @%s" % (self.i, num(prog.clock.seconds())))
        if self.left == 0:
            return
        self.left -= 1
        prog.f.startedConnecting(self)
        if self.mode == "refuse":
            prog.f.clientConnectionFailed(self, reason("refused"))
        else:
            prog.f.buildProtocol(None)
            prog.log("c%d built" % self.i)

    def stopConnecting(self):
        self.prog.log("c%d stopConnecting" % self.i)
        if self.stop == "notc":
            raise error.NotConnectingError()
        if self.stop == "boom":
            raise ValueError("E3")
        if self.stop == "aware":
            self.prog.f.clientConnectionFailed(self, None)


class FactoryProgram:
    def __init__(self, header):
        self.pid, self.kind = header[1], header[3]
        self.out = []
        self.clock = task.Clock()
        self.conns = {}
        self.f = factory_class(self, self.kind, header[5], header[6])()
        self.f.noisy = header[4] == "noisy"
        if self.kind == "rcf":
            self.f.clock = self.clock

    def log(self, line):
        self.out.append(line)

    def conn(self, n):
        return self.conns[int(n)]

    def op(self, words, line):
        try:
            getattr(self, "do_" + words[0])(*words[1:])
        except Exception as e:  # noqa: BLE001 (any error is an outcome)
            self.log("%s -> %s" % (line, error_name(e)))
        if words[0] not in ("set", "conn"):
            self.log(self.state_line())

    def do_set(self, field, value):
        setattr(self.f, field, number(value))

    def do_conn(self, n, how, stop):
        self.conns[int(n)] = Connector(self, int(n), how, stop)

    def do_start(self):
        self.f.doStart()

    def do_stop(self):
        self.f.doStop()

    def do_build(self):
        p = self.f.buildProtocol(None)
        self.log("built " + boolean(p.factory is self.f))

    def do_connecting(self, n):
        self.f.startedConnecting(self.conn(n))

    def do_failed(self, n, r):
        self.f.clientConnectionFailed(self.conn(n), reason(r))

    def do_lost(self, n, r):
        self.f.clientConnectionLost(self.conn(n), reason(r))

    def do_retry(self, n=None):
        self.f.retry(None if n is None else self.conn(n))

    def do_stoptrying(self):
        self.f.stopTrying()

    def do_resetdelay(self):
        self.f.resetDelay()

    def do_advance(self, s):
        self.clock.advance(number(s))

    def do_defaults(self):
        rcf = protocol.ReconnectingClientFactory
        parts = ["%s=%s" % (k, rep(getattr(rcf, k))) for k in DEFAULTS]
        self.log("defaults " + " ".join(parts)
                 + " continueTrying=" + boolean(rcf.continueTrying))

    def state_line(self):
        f = self.f
        s = "= n=" + num(f.numPorts)
        if self.kind != "rcf":
            return s
        c = "-"
        for i, x in self.conns.items():
            if f.connector is x:
                c = "c%d" % i
        call = num(f._callID.getTime()) if f._callID else "-"
        return "%s d=%s r=%s ct=%s c=%s call=%s" % (
            s, num(f.delay), num(f.retries), boolean(f.continueTrying), c, call)

    def finish(self):
        times = [num(dc.getTime()) for dc in self.clock.getDelayedCalls()]
        self.log("pending" + "".join(" " + t for t in times))


# ---- family 2: endpoint strings

_PLUGINS = {}


def cached_plugins(interface):
    """endpoints.getPlugins, once per interface: Twisted rescans the plugin
    directory on every lookup (2 ms), and the plugins do not change."""
    if interface not in _PLUGINS:
        _PLUGINS[interface] = list(_get_plugins(interface))
    return iter(_PLUGINS[interface])


_get_plugins = endpoints.getPlugins
endpoints.getPlugins = cached_plugins

def braid_rules(ep):
    """braid's deliberate checks on a string Twisted parsed (docs/endpoints.md,
    "Where braid differs"): ports from 0 to 65535, no empty host or path, no
    negative timeout. Raises ValueError as braid's parser does."""
    port = getattr(ep, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError("port out of range")
    for attr in ("_host", "_path", "_address"):
        if getattr(ep, attr, None) == "":
            raise ValueError("missing " + attr)
    timeout = getattr(ep, "_timeout", None)
    if isinstance(timeout, int) and timeout < 0:
        raise ValueError("negative timeout")


class EndpointProgram:
    def __init__(self, header):
        self.pid = header[1]
        self.out = []
        self.reactor = object()

    def op(self, words, line):
        parse = endpoints.serverFromString if words[0] == "server" \
            else endpoints.clientFromString
        try:
            ep = parse(self.reactor, line[len(words[0]) + 1:])
            braid_rules(ep)
        except TypeError:  # API.md: braid raises ValueError for any malformed string
            result = "ValueError"
        except Exception as e:  # noqa: BLE001
            result = error_name(e)
        else:
            name = type(ep).__name__
            result = " ".join([name] + ["%s=%s" % (a, rep(getattr(ep, a)))
                                        for a in ATTRS.get(name, [])])
        self.out.append("#%d -> %s" % (len(self.out) + 1, result))

    def finish(self):
        pass


def main():
    globalLogPublisher.addObserver(observe)
    for header, body in programs(sys.argv[1]):
        prog = FactoryProgram(header) if header[2] == "fac" else EndpointProgram(header)
        Current.prog = prog
        for words, line in body:
            prog.op(words, line)
        prog.finish()
        Current.prog = None
        emit(prog.pid, prog.out)


if __name__ == "__main__":
    main()
