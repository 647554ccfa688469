# spec/peers/twisted_echo_server.py: a Twisted server for spec/twisted_peers_spec.lua.
# Usage: /usr/bin/python3 twisted_echo_server.py line|netstring|int32
# Listens on 127.0.0.1 (a free port), prints "PORT <n>", echoes every frame
# back with the same framing, and exits when its one client disconnects
# (or after 10 s).
import sys

from twisted.internet import protocol, reactor
from twisted.protocols import basic

mode = sys.argv[1]
BASE = {
    "line": basic.LineReceiver,
    "netstring": basic.NetstringReceiver,
    "int32": basic.Int32StringReceiver,
}[mode]


class Echo(BASE):
    def lineReceived(self, line):
        self.sendLine(line)

    def stringReceived(self, s):
        self.sendString(s)

    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


class Factory(protocol.ServerFactory):
    protocol = Echo
    noisy = False


port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
print("PORT %d" % port.getHost().port)
sys.stdout.flush()
reactor.callLater(10, reactor.stop)
reactor.run()
