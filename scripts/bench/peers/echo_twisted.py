"""echo_twisted.py: the Twisted peer of scripts/bench/echo (Debian's
/usr/bin/python3 with python3-twisted, default reactor: epoll).

Twisted's echoserv.py: dataReceived writes the data back; TCP_NODELAY on
every connection. Listens on 127.0.0.1:PORT (0, the default, picks one),
prints "port=N" and serves until killed.
"""
import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)


factory = protocol.Factory.forProtocol(Echo)
factory.noisy = False
port = reactor.listenTCP(int(sys.argv[1]) if len(sys.argv) > 1 else 0, factory,
                         backlog=1024, interface="127.0.0.1")
print("port=%d" % port.getHost().port, flush=True)
reactor.run()
