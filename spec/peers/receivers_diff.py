#!/usr/bin/python3
"""spec/peers/receivers_diff.py: Twisted's side of spec/receivers_diff_spec.lua.

Reads programs in the text format of spec/helpers/receivers_diff.lua (which
documents it and the trace) from the file named by argv[1], runs each one
against Twisted's own receivers (twisted.protocols.basic) on a
twisted.internet.testing.StringTransport, and prints "== <id>" then one
line per event, as the Lua interpreter in that helper does for braid.basic.
The spec compares the two outputs program by program.
"""

import re
import sys

from twisted.internet.testing import StringTransport
from twisted.protocols import basic

from diff_programs import emit, programs

BASES = {
    "line": basic.LineReceiver,
    "lineonly": basic.LineOnlyReceiver,
    "net": basic.NetstringReceiver,
    "int8": basic.Int8StringReceiver,
    "int16": basic.Int16StringReceiver,
    "int32": basic.Int32StringReceiver,
}

ESCAPED = re.compile(rb"\\x([0-9a-f]{2})")


def esc(data):
    """Bytes as text: every byte outside "!".."~", and "\\", as \\xHH."""
    return "".join(chr(c) if 0x21 <= c <= 0x7E and c != 0x5C else "\\x%02x" % c
                   for c in data)


def unesc(text):
    return ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("ascii"))


class TracingTransport(StringTransport):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def loseConnection(self):
        self.log("lose")
        super().loseConnection()


class Traced:
    """The behaviours of spec/helpers/receivers_diff.lua, mixed into a receiver."""

    kind = None
    exceed = "close"
    need = 0
    got = None

    def act(self, what, data):
        self.log("%s %s" % (what, esc(data)))
        head = data[:1]
        if head == b"q":
            self.transport.loseConnection()
        elif head == b"s":
            if what == "line":
                self.sendLine(data)
            else:
                self.sendString(data)
        elif head == b"p" and self.kind not in ("lineonly", "net"):
            self.log("pause")
            self.pauseProducing()
        elif head == b"c" and self.kind == "line":
            self.log("cleared " + esc(self.clearLineBuffer()))
        elif head == b"r" and self.kind == "line":
            m = re.match(rb"r(\d+)", data)
            if m:
                self.need, self.got = int(m.group(1)), b""
                self.setRawMode()

    def lineReceived(self, line):
        self.act("line", line)

    def stringReceived(self, string):
        self.act("string", string)

    def rawDataReceived(self, data):
        take = data[:self.need - len(self.got)]
        self.got += take
        if len(self.got) == self.need:
            self.log("raw " + esc(self.got))
            self.got = None
            self.setLineMode(data[len(take):])

    def lineLengthExceeded(self, line):
        self.log("exceeded %d" % len(line))
        if self.exceed == "close":
            return super().lineLengthExceeded(line)
        return None

    def lengthLimitExceeded(self, length):
        self.log("limit %d" % length)
        if self.exceed == "close":
            super().lengthLimitExceeded(length)

    def _handleParseError(self):
        self.log("parseerror")
        super()._handleParseError()


def make_class(kind, max_length, delim, exceed):
    attrs = {"kind": kind, "exceed": exceed}
    if max_length != "default":
        attrs["MAX_LENGTH"] = int(max_length)
    if delim != "-":
        attrs["delimiter"] = unesc(delim)
    return type("Program", (Traced, BASES[kind]), attrs)


def resume_all(proto, transport, log):
    """While the receiver is paused (and the transport open), resume it."""
    n = 0
    while getattr(proto, "paused", False) and not transport.disconnecting and n < 1000:
        n += 1
        log("resume")
        try:
            proto.resumeProducing()
        except Exception as e:  # noqa: BLE001 (any error is an outcome)
            log("resume raised " + type(e).__name__)
        else:
            log("resumed paused=%s producer=%s"
                % ("true" if proto.paused else "false", transport.producerState))


def run_program(words, chunks):
    out = []
    log = out.append
    proto = make_class(words[2], words[3], words[4], words[5])()
    proto.log = log
    transport = TracingTransport(log)
    proto.makeConnection(transport)
    for chunk in chunks:
        if transport.disconnecting:
            break
        try:
            proto.dataReceived(chunk)
        except Exception as e:  # noqa: BLE001
            log("raised " + type(e).__name__)
            break
        resume_all(proto, transport, log)
    if proto.got is not None:
        log("rawpart " + esc(proto.got))
    log("wrote " + esc(transport.value()))
    log("disconnecting " + ("true" if transport.disconnecting else "false"))
    return out


def main():
    for header, body in programs(sys.argv[1]):
        chunks = [unesc(w[1]) if len(w) > 1 else b"" for w, _ in body if w[0] == "chunk"]
        emit(header[1], run_program(header, chunks))


if __name__ == "__main__":
    main()
