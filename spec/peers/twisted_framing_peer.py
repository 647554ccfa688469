# spec/peers/twisted_framing_peer.py: a Twisted client for spec/twisted_peers_spec.lua.
# Usage: /usr/bin/python3 twisted_framing_peer.py line|netstring|int32 PORT
# Sends MSGS with the given framing, expects them echoed back, prints OK
# (or MISMATCH/FAILED/TIMEOUT) and exits.
import sys

from twisted.internet import protocol, reactor
from twisted.protocols import basic

mode, port = sys.argv[1], int(sys.argv[2])
MSGS = [b"hello", b"", b"x" * 5000, b"with:colon,comma\x00\xff", b"last"]
BASE = {
    "line": basic.LineReceiver,
    "netstring": basic.NetstringReceiver,
    "int32": basic.Int32StringReceiver,
}[mode]


class Peer(BASE):
    def connectionMade(self):
        self.got = []
        for m in MSGS:
            if mode == "line":
                self.sendLine(m)
            else:
                self.sendString(m)

    def lineReceived(self, line):
        self.received(line)

    def stringReceived(self, s):
        self.received(s)

    def received(self, s):
        self.got.append(s)
        if len(self.got) == len(MSGS):
            print("OK" if self.got == MSGS else "MISMATCH %r" % (self.got,))
            sys.stdout.flush()
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


class Factory(protocol.ClientFactory):
    protocol = Peer

    def clientConnectionFailed(self, connector, reason):
        print("FAILED %s" % (reason.getErrorMessage(),))
        reactor.stop()


def timeout():
    print("TIMEOUT")
    reactor.stop()


reactor.connectTCP("127.0.0.1", port, Factory())
reactor.callLater(10, timeout)
reactor.run()
