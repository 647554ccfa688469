# spec/peers/twisted_receiver_peer.py: Twisted 22.4's framing receivers as
# real peers for spec/twisted_peers_spec.lua (run with /usr/bin/python3).
#
#   server KIND MAX       a KIND receiver (line, lineonly, netstring, int16,
#                         int32) with MAX_LENGTH MAX listens on 127.0.0.1,
#                         prints "PORT n", serves one connection, then prints
#                         its trace and "END"
#   client PORT HEX       connects, writes the bytes HEX in one write, prints
#                         "GOT <hex of all it read>" and "LOST <reason>"
#
# The trace, one event a line: "frame <hex>" for each line or string (then
# echoed with sendLine / sendString; a frame "PAUSE" pauses the receiver and
# resumes it on the next reactor turn: "pause" and "resume" are traced; a
# frame "QUIT" loses the connection after its echo), "exceeded <n>" for
# lineLengthExceeded with n bytes, "limit <n>" for lengthLimitExceeded(n),
# "parseerror", and last "lost <reason>".
import binascii
import sys

from twisted.internet import protocol, reactor
from twisted.protocols import basic

BASES = {
    "line": basic.LineReceiver,
    "lineonly": basic.LineOnlyReceiver,
    "netstring": basic.NetstringReceiver,
    "int16": basic.Int16StringReceiver,
    "int32": basic.Int32StringReceiver,
}
trace = []


def stop():
    if reactor.running:
        reactor.stop()


def receiver(kind, maxlen):
    base = BASES[kind]

    class Receiver(base):
        MAX_LENGTH = maxlen

        def frame(self, s):
            trace.append("frame " + binascii.hexlify(s).decode())
            if kind in ("line", "lineonly"):
                self.sendLine(s)
            else:
                self.sendString(s)
            if s == b"PAUSE":
                trace.append("pause")
                self.pauseProducing()
                reactor.callLater(0, self.resume)
            elif s == b"QUIT":
                self.transport.loseConnection()

        def resume(self):
            trace.append("resume")
            self.resumeProducing()

        def lineReceived(self, line):
            self.frame(line)

        def stringReceived(self, s):
            self.frame(s)

        def lineLengthExceeded(self, data):
            trace.append("exceeded %d" % len(data))
            return base.lineLengthExceeded(self, data)

        def lengthLimitExceeded(self, n):
            trace.append("limit %d" % n)
            return base.lengthLimitExceeded(self, n)

        def _handleParseError(self):
            trace.append("parseerror")
            return base._handleParseError(self)

        def connectionLost(self, reason):
            trace.append("lost " + reason.type.__name__)
            for t in trace:
                print(t)
            print("END")
            sys.stdout.flush()
            stop()

    return Receiver


class Sender(protocol.Protocol):
    def connectionMade(self):
        self.got = []
        self.transport.write(self.factory.data)

    def dataReceived(self, data):
        self.got.append(data)

    def connectionLost(self, reason):
        print("GOT " + binascii.hexlify(b"".join(self.got)).decode())
        print("LOST " + reason.type.__name__)
        sys.stdout.flush()
        stop()


def main():
    if sys.argv[1] == "server":
        factory = protocol.Factory.forProtocol(receiver(sys.argv[2], int(sys.argv[3])))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        print("PORT %d" % port.getHost().port)
        sys.stdout.flush()
    else:
        factory = protocol.ClientFactory.forProtocol(Sender)
        factory.data = binascii.unhexlify(sys.argv[3])
        reactor.connectTCP("127.0.0.1", int(sys.argv[2]), factory)
    reactor.callLater(15, stop)
    reactor.run()


main()
