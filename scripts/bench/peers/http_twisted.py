"""http_twisted.py: the Twisted peer of scripts/bench/http (Debian's
/usr/bin/python3 with python3-twisted, default reactor: epoll).

The same keep-alive HTTP/1.1 hello server as examples/http_hello.lua, as a
plain Protocol (not twisted.web): buffer what arrives, answer each complete
request head (pipelining allowed), close after answering an HTTP/1.0
request or one with "Connection: close". Listens on 127.0.0.1:PORT (0, the
default, picks one), prints "port=N" and serves until killed.
"""
import re
import sys

from twisted.internet import protocol, reactor

BODY = b"Hello, world!\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
            % len(BODY)) + BODY
CLOSE_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
VERSION = re.compile(rb"^[A-Z]+ \S+ HTTP/(\d\.\d)")
CLOSE = re.compile(rb"\nconnection:\s*close")


class Hello(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.buf = b""

    def dataReceived(self, data):
        buf = self.buf + data if self.buf else data
        pos = 0
        while True:
            e = buf.find(b"\r\n\r\n", pos)
            if e < 0:
                break
            head = buf[pos:e]
            pos = e + 4
            m = VERSION.match(head)
            if CLOSE.search(head.lower()) or (m and m.group(1) == b"1.0"):
                self.transport.write(CLOSE_RESPONSE)
                self.transport.loseConnection()
                self.buf = b""
                return
            self.transport.write(RESPONSE)
        self.buf = buf[pos:]
        if len(self.buf) > 65536:
            self.transport.loseConnection()  # no body support


factory = protocol.Factory.forProtocol(Hello)
factory.noisy = False
port = reactor.listenTCP(int(sys.argv[1]) if len(sys.argv) > 1 else 0, factory,
                         backlog=1024, interface="127.0.0.1")
print("port=%d" % port.getHost().port, flush=True)
reactor.run()
