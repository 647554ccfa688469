-- spec for cases of Twisted's own test suite that braid got wrong, each
-- named after the Twisted test it ports (test_unix, test_tcp, test_policies,
-- test_endpoints, test_basic): the behaviour a Twisted user expects.
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local protocol = require "braid.protocol"
local basic = require "braid.basic"
local policies = require "braid.policies"
local endpoints = require "braid.endpoints"
local failure = require "braid.failure"
local testing = require "braid.testing"

local loop = require "helpers.loop"
local tmp = require "helpers.tmp"

local Factory, ClientFactory = protocol.Factory, protocol.ClientFactory

local function sock_path()
  return tmp.path(".sock")
end

-- A factory counting the connections it builds.
local function counting()
  local f = Factory.forProtocol(protocol.Protocol)
  f.noisy = false
  f.built = 0
  function f:buildProtocol(addr)
    self.built = self.built + 1
    return Factory.buildProtocol(self, addr)
  end
  return f
end

-- Connect to a UNIX path; the Deferred fires with the client protocol.
local function connect_unix(path)
  local d = defer.Deferred()
  local C = protocol.Protocol:extend("C")
  function C:connectionMade() d:callback(self) end
  local cf = ClientFactory.forProtocol(C)
  function cf:clientConnectionFailed(_, reason) d:errback(reason) end
  reactor.connectUNIX(path, cf)
  return d
end

-- stat(1)'s field `fmt` of path itself (a link is not followed): %a the
-- mode ("666"), %F the type ("socket", "symbolic link", ...)
local function stat(fmt, path)
  local h = io.popen("stat -c " .. fmt .. " '" .. path .. "' 2>/dev/null")
  local v = h:read("l")
  h:close()
  return v
end

describe("UNIX ports (test_unix)", function()
  it("refuse a path another server listens on, and leave that server reachable", function()
    local path = sock_path()
    local f1, f2 = counting(), counting()
    local p1 = reactor.listenUNIX(path, f1)
    local ok, e = pcall(reactor.listenUNIX, path, f2)
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.CannotListenError), tostring(e))
    assert.matches("Address already in use", tostring(e))
    local c = loop.wait(connect_unix(path))
    assert.equal(1, f1.built)
    assert.equal(0, f2.built)
    c.transport:loseConnection()
    loop.wait(p1:stopListening())
  end)

  it("take over a socket file nobody listens on (a server that died)", function()
    local path = sock_path()
    local p1 = reactor.listenUNIX(path, counting())
    p1._c:close()  -- the socket goes, its file stays: as after a crash
    assert.equal("666", stat("%a", path))
    local f2 = counting()
    local p2 = reactor.listenUNIX(path, f2)
    local c = loop.wait(connect_unix(path))
    assert.equal(1, f2.built)
    c.transport:loseConnection()
    loop.wait(p2:stopListening())
  end)

  it("leave the socket file of a live datagram server, and a symbolic link to a live socket", function()
    -- neither listens, so neither was told from a file left by a dead server
    local unix = require "socket.unix"
    local dpath = sock_path()
    local dg = assert(unix.dgram())
    assert(dg:bind(dpath))
    local link
    -- busted keeps only the last finally(): one for both
    finally(function() dg:close(); os.remove(dpath); if link then os.remove(link) end end)
    local ok, e = pcall(reactor.listenUNIX, dpath, counting())
    assert.is_false(ok)
    assert.matches("Address already in use", tostring(e))
    assert.equal("socket", stat("%F", dpath))

    local real = sock_path()
    link = sock_path()
    local p1 = reactor.listenUNIX(real, counting())
    assert.equal(0, os.execute(("ln -s '%s' '%s'"):format(real, link)) and 0)
    ok, e = pcall(reactor.listenUNIX, link, counting())
    assert.is_false(ok)
    assert.matches("Address already in use", tostring(e))
    assert.equal("symbolic link", stat("%F", link))
    loop.wait(p1:stopListening())
  end)

  it("make the socket file mode 0666 by default (test_mode), or the mode given", function()
    local path = sock_path()
    local p = reactor.listenUNIX(path, counting())
    assert.equal("666", stat("%a", path))
    loop.wait(p:stopListening())
    p = reactor.listenUNIX(path, counting(), 50, tonumber("600", 8))
    assert.equal("600", stat("%a", path))
    loop.wait(p:stopListening())
  end)

  it("listen and connect in Linux's abstract namespace (test_listenOnLinuxAbstractNamespace)", function()
    local name = "\0braid-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    local f = counting()
    local p = reactor.listenUNIX(name, f)
    assert.equal(name, p:getHost().name)
    local c = loop.wait(connect_unix(name))
    assert.equal(1, f.built)
    c.transport:loseConnection()
    loop.wait(p:stopListening())
    -- an abstract name may fill all 108 bytes of sun_path (it has no NUL
    -- after it); one more is too long, as a file name of 108
    local long = name .. ("x"):rep(108 - #name)
    p = reactor.listenUNIX(long, counting())
    c = loop.wait(connect_unix(long))
    assert.equal(long, p:getHost().name)
    c.transport:loseConnection()
    loop.wait(p:stopListening())
    local too_long = long .. "x"
    assert.has_error(function() reactor.listenUNIX(too_long, counting()) end,
      errors.CannotListenError(nil, too_long, "AF_UNIX path too long"))
    assert.has_error(function() reactor.listenUNIX("/tmp/" .. ("y"):rep(103), counting()) end,
      errors.CannotListenError(nil, "/tmp/" .. ("y"):rep(103), "AF_UNIX path too long"))
  end)
end)

describe("the reactor's shutdown (Twisted's disconnectAll)", function()
  it("closes ports, connections and descriptors before the after triggers", function()
    local proc = require "helpers.proc"
    local path = sock_path()
    local script = table.concat({
      'local reactor = require "braid.reactor"',
      'local protocol = require "braid.protocol"',
      'local F = protocol.Factory:extend("F")',
      'F.noisy = false',
      'function F:stopFactory() print("stopFactory " .. self.name) end',
      'local f1, f2 = F(), F()',
      'f1.name, f2.name = "tcp", "unix"',
      'local S = protocol.Protocol:extend("S")',
      'function S:connectionLost(r) print("server lost " .. r.type.__name, reactor.running) end',
      'f1.protocol = S',
      'local p = reactor.listenTCP(0, f1, 50, "127.0.0.1")',
      ('reactor.listenUNIX(%q, f2)'):format(path),
      'local C = protocol.Protocol:extend("C")',
      'function C:connectionMade() reactor.stop() end',
      'function C:connectionLost(r) print("client lost " .. r.type.__name, reactor.running) end',
      'local cf = protocol.ClientFactory.forProtocol(C)',
      'cf.noisy = false',
      'reactor.connectTCP("127.0.0.1", p:getHost().port, cf)',
      'local ls = assert(require("socket").bind("127.0.0.1", 0))',
      'reactor.addReader({ fileno = function() return ls:getfd() end, doRead = function() end,',
      '  connectionLost = function(_, r) print("reader lost " .. r.type.__name) end })',
      'reactor.addSystemEventTrigger("after", "shutdown", function()',
      ('  print("after: port " .. p:fileno() .. ", file " .. tostring(io.open(%q) ~= nil))'):format(path),
      'end)',
      'reactor.addSystemEventTrigger("before", "shutdown", function()',
      '  print("before", reactor.running)',
      'end)',
      'reactor.run()',
    }, "\n")
    local lines, code = proc.run({ "-e", script })
    assert.equal(0, code, table.concat(lines, "\n"))
    -- the before trigger's line comes first and the after trigger's last;
    -- the rest by name. As in Twisted, the connections are lost in a
    -- reactor that no longer runs (its crash trigger comes first).
    assert.equal("before\ttrue", table.remove(lines, 1))
    table.sort(lines, function(a, b)
      if a:find("^after") then return false elseif b:find("^after") then return true end
      return a < b
    end)
    assert.same({ "client lost ConnectionLost\tfalse", "reader lost ConnectionLost",
                  "server lost ConnectionLost\tfalse", "stopFactory tcp", "stopFactory unix",
                  "after: port -1, file false" }, lines)
  end)
end)

describe("listening ports (test_tcp ListeningTests)", function()
  it("stopListening's Deferred fails with stopFactory's error (test_exceptInStop)", function()
    local f = counting()
    function f:stopFactory() error(errors.ValueError("in stopFactory")) end
    local p = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local r = loop.result(p:stopListening())
    assert.is_true(failure.isFailure(r))
    assert.equal("in stopFactory", r.value.message)
  end)

  it("log when they open and close (test_startedListeningLogMessage, test_connectionLostLogMsg)", function()
    local log = require "braid.log"
    local lines = {}
    local function obs(ev) lines[#lines + 1] = ev.text end
    log.addObserver(obs)
    local F = Factory:extend("EchoFactory")
    local f = F()
    f.noisy = false
    local p = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local n = p:getHost().port
    loop.wait(p:stopListening())
    local path = sock_path()
    p = reactor.listenUNIX(path, f)
    loop.wait(p:stopListening())
    log.removeObserver(obs)
    assert.same({ "EchoFactory starting on " .. n, "(TCP Port " .. n .. " Closed)",
                  "EchoFactory starting on '" .. path .. "'", "(UNIX Port " .. path .. " Closed)" }, lines)
  end)

  it("listen on an interface given by name, as Twisted's bind does", function()
    local p = reactor.listenTCP(0, counting(), 50, "localhost")
    assert.equal("127.0.0.1", p:getHost().host)
    loop.wait(p:stopListening())
    p = endpoints.serverFromString(reactor, "tcp:0:interface=localhost")
    local lp = loop.wait(p:listen(counting()))
    assert.equal("127.0.0.1", lp:getHost().host)
    loop.wait(lp:stopListening())
  end)

  it("listen again after stopListening (test_restartListening)", function()
    local f = counting()
    local starts = 0
    function f:startFactory() starts = starts + 1 end
    local p = reactor.listenTCP(0, f, 50, "127.0.0.1")
    assert.is_true(p.connected)
    assert.is_false(p.disconnected)
    assert.has_error(function() p:startListening() end,  -- listening already
      errors.CannotListenError("127.0.0.1", 0, "already listening"))  -- the port asked for
    local d = p:stopListening()
    assert.is_false(p.connected)
    assert.is_true(p.disconnecting)
    loop.wait(d)
    assert.is_false(p.disconnecting)
    assert.is_true(p.disconnected)  -- test_closePortInProtocolFactory's check
    assert.matches("%(not listening%)", tostring(p))
    p:startListening()
    assert.equal(2, starts)
    assert.is_true(p:fileno() >= 0)
    local d = defer.Deferred()
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() d:callback(self) end
    reactor.connectTCP("127.0.0.1", p:getHost().port, ClientFactory.forProtocol(C))
    loop.wait(d).transport:loseConnection()
    assert.equal(1, f.built)
    loop.wait(p:stopListening())
  end)
end)

describe("errors in protocol methods (test_tcp AbortConnectionMixin)", function()
  it("an error raised after abortConnection() is connectionLost's reason (test_dataReceivedThrows)", function()
    local reason = defer.Deferred()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade() self.transport:write("go") end
    local port = reactor.listenTCP(0, Factory.forProtocol(S), 50, "127.0.0.1")
    local C = protocol.Protocol:extend("C")
    function C:dataReceived()
      self.transport:abortConnection()
      error(errors.ValueError("raised after abort"))
    end
    function C:connectionLost(r) reason:callback({ r }) end
    reactor.connectTCP("127.0.0.1", port:getHost().port, ClientFactory.forProtocol(C))
    local r = loop.wait(reason)[1]
    assert.is_true(errors.isinstance(r.value, errors.ValueError), tostring(r.value))
    assert.equal("raised after abort", r.value.message)
    loop.wait(port:stopListening())
    testing.flushLoggedErrors(errors.ValueError)
  end)
end)

describe("connection errors (test_tcp)", function()
  -- connect with cf; the Deferred fires with clientConnectionFailed's reason
  local function failing(host, port, bindAddress)
    local d = defer.Deferred()
    local cf = ClientFactory.forProtocol(protocol.Protocol)
    function cf:clientConnectionFailed(_, reason) d:callback({ reason }) end
    reactor.connectTCP(host, port, cf, 5, bindAddress)
    return loop.wait(d)[1].value
  end

  it("a refused connection carries errno 111 as osError (test_connectionRefusedErrorNumber)", function()
    local port = reactor.listenTCP(0, counting(), 50, "127.0.0.1")
    local n = port:getHost().port
    loop.wait(port:stopListening())
    local e = failing("127.0.0.1", n)
    assert.is_true(errors.isinstance(e, errors.ConnectionRefusedError), tostring(e))
    assert.equal(111, e.osError)
    assert.equal("ConnectionRefusedError: Connection was refused by other side: 111: Connection refused.",
      tostring(e))
  end)

  it("connect errnos map as Twisted's errnoMapping: EHOSTUNREACH is a plain ConnectError (getConnectError)", function()
    local core = require "braid.core"
    local real = core.tcp_connect
    local cases = {
      { "ENETUNREACH", 101, "Network is unreachable", errors.NoRouteError,
        "NoRouteError: No route to host: 101: Network is unreachable." },
      { "EHOSTUNREACH", 113, "No route to host", errors.ConnectError,
        "ConnectError: An error occurred while connecting: 113: No route to host." },
      { "ECONNREFUSED", 111, "Connection refused", errors.ConnectionRefusedError,
        "ConnectionRefusedError: Connection was refused by other side: 111: Connection refused." },
      { "ETIMEDOUT", 110, "Connection timed out", errors.TCPTimedOutError,
        "TCPTimedOutError: TCP connection timed out: 110: Connection timed out." },
    }
    local ok, err = pcall(function()
      for _, c in ipairs(cases) do
        core.tcp_connect = function() return nil, c[3], c[1], c[2] end
        local e = failing("127.0.0.1", 9)
        assert.equal(c[4], e.class)
        assert.equal(c[2], e.osError)
        assert.equal(c[5], tostring(e))
      end
    end)
    core.tcp_connect = real
    assert(ok, err)
  end)

  it("a malformed address is a name to resolve (test_abstract isIPAddress)", function()
    local resolver = require "braid.resolver"
    local asked = {}
    local prev = resolver.installResolver({
      getHostByName = function(_, name)
        asked[#asked + 1] = name
        return defer.fail(errors.DNSLookupError(name))
      end,
    })
    local ok, err = pcall(function()
      for _, host in ipairs { "999.1.1.1", "not:an-address", "127.0.0.1" } do
        local e = failing(host, 9)
        if host ~= "127.0.0.1" then
          assert.is_true(errors.isinstance(e, errors.DNSLookupError), host .. ": " .. tostring(e))
        end
      end
    end)
    resolver.installResolver(prev)
    assert(ok, err)
    assert.same({ "999.1.1.1", "not:an-address" }, asked)  -- the literal was not asked
  end)

  it("a client factory refusing the protocol hears clientConnectionLost (test_buildProtocolReturnsNone)", function()
    local port = reactor.listenTCP(0, counting(), 50, "127.0.0.1")
    local d = defer.Deferred()
    local cf = ClientFactory.forProtocol(protocol.Protocol)
    function cf:buildProtocol() return nil end
    function cf:clientConnectionFailed(_, r) d:callback({ "failed", r }) end
    function cf:clientConnectionLost(_, r) d:callback({ "lost", r }) end
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    local got = loop.wait(d)
    assert.equal("lost", got[1])
    assert.is_true(errors.isinstance(got[2].value, errors.ConnectionDone), tostring(got[2].value))
    local ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port:getHost().port)
    local r = loop.result(ep:connect(cf))
    assert.is_true(errors.isinstance(r.value, errors.NoProtocol), tostring(r.value))
    loop.wait(port:stopListening())
  end)

  it("a port may be a service name (test_connectByService), an unknown one raises", function()
    local c = reactor.connectTCP("127.0.0.1", "http", ClientFactory.forProtocol(protocol.Protocol), 1)
    assert.equal(80, c:getDestination().port)
    c:disconnect()
    local ok, e = pcall(reactor.connectTCP, "127.0.0.1", "no-such-service", ClientFactory.forProtocol(protocol.Protocol))
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.ServiceNameUnknownError), tostring(e))
  end)

  it("a bind address in use is ConnectBindError (test_clientBind)", function()
    local port = reactor.listenTCP(0, counting(), 50, "127.0.0.1")
    local n = port:getHost().port
    local e = failing("127.0.0.1", n, { "127.0.0.1", n })
    assert.is_true(errors.isinstance(e, errors.ConnectBindError), tostring(e))
    assert.equal(98, e.osError)
    loop.wait(port:stopListening())
  end)
end)

describe("producers (connectionmixins)", function()
  it("loseConnection waits for a pull producer to unregister (test_disconnectWhileProducing)", function()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade()
      local t, n = self.transport, 0
      t:registerProducer({
        resumeProducing = function()
          n = n + 1
          t:write(("chunk %02d;"):format(n))
          if n == 10 then t:unregisterProducer() end
        end,
        stopProducing = function() end,
      }, false)
      t:loseConnection()
    end
    local port = reactor.listenTCP(0, Factory.forProtocol(S), 50, "127.0.0.1")
    local done = defer.Deferred()
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() self.got = {} end
    function C:dataReceived(d) self.got[#self.got + 1] = d end
    function C:connectionLost(r) done:callback({ table.concat(self.got), r }) end
    reactor.connectTCP("127.0.0.1", port:getHost().port, ClientFactory.forProtocol(C))
    local got = loop.wait(done)
    assert.equal(10, select(2, got[1]:gsub("chunk %d%d;", "")))
    assert.is_true(errors.isinstance(got[2].value, errors.ConnectionDone), tostring(got[2].value))
    loop.wait(port:stopListening())
  end)
end)

describe("TimeoutMixin (test_policies TimeoutMixinTests)", function()
  local function tester(default)
    local P = policies.TimeoutMixin:mixInto(protocol.Protocol:extend("P"))
    P.timeOut = default
    local p = P()
    p.clock = testing.Clock()
    p.timedOut = false
    function p:timeoutConnection() self.timedOut = true end
    return p
  end

  it("setTimeout(nil) hides a class default (test_setTimeoutReturn, test_cancelTimeout)", function()
    local p = tester(3)
    assert.equal(3, p:setTimeout(10))
    assert.equal(10, p:setTimeout(nil))
    assert.is_falsy(p.timeOut)
    assert.is_nil(p:setTimeout(1))
    p.clock:advance(1)
    assert.is_true(p.timedOut)
  end)

  it("schedules through callLater(period, f), the hook subclasses override (test_overriddenCallLater)", function()
    local p = tester(nil)
    local clock = testing.Clock()
    local calls = 0
    function p:callLater(period, f)  -- Twisted's signature: no extra arguments
      calls = calls + 1
      return clock:callLater(period, f)
    end
    p:setTimeout(5)
    clock:advance(5)
    assert.equal(1, calls)
    assert.is_true(p.timedOut)
  end)
end)

describe("endpoints (test_endpoints)", function()
  local port, ep
  before_each(function()
    port = reactor.listenTCP(0, counting(), 50, "127.0.0.1")
    ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port:getHost().port)
  end)
  after_each(function() loop.wait(port:stopListening()) end)

  it("connectProtocol runs a connectionMade set on the instance", function()
    local proto = protocol.Protocol()
    local called = 0
    proto.connectionMade = function() called = called + 1 end
    local p = loop.wait(endpoints.connectProtocol(ep, proto))
    assert.equal(proto, p)
    assert.equal(1, called)
    assert.is_nil(rawget(p, "makeConnection"))
    p.transport:loseConnection()
  end)

  it("connect fires for a protocol whose makeConnection does not call connectionMade", function()
    local MP = protocol.Protocol:extend("MP")
    function MP:makeConnection(t) self.transport = t end
    local p = loop.wait(ep:connect(ClientFactory.forProtocol(MP)))
    assert.is_true(MP:isinstance(p))
    p.transport:loseConnection()
  end)

  it("connect fails when makeConnection raises", function()
    local BP = protocol.Protocol:extend("BP")
    function BP:connectionMade() error(errors.ValueError("refused here")) end
    local r = loop.result(ep:connect(ClientFactory.forProtocol(BP)))
    assert.is_true(failure.isFailure(r))
    testing.flushLoggedErrors(errors.ValueError)
  end)
end)

describe("addresses (test_address)", function()
  it("UNIX addresses naming one file through a link are equal (test_comparisonOfLinkedFiles)", function()
    local address = require "braid.address"
    local a = tmp.file()
    local b = a .. "-link"
    os.remove(b)
    assert(os.execute(("ln -s '%s' '%s'"):format(a, b)))
    local eq = address.UNIXAddress(a) == address.UNIXAddress(b)
    local other = address.UNIXAddress(a) == address.UNIXAddress(a .. "-none")
    os.remove(b)
    os.remove(a)
    assert.is_true(eq)
    assert.is_false(other)
    assert.is_true(address.UNIXAddress(nil) == address.UNIXAddress(nil))
  end)

  -- UNIXAddress(nil) == IPv4Address(...) was true (names both nil), and an
  -- IPv4Address equal to a plain table of its fields
  it("an address equals only an address of its own class (test_differentNamesComparison)", function()
    local address = require "braid.address"
    local v4 = address.IPv4Address("TCP", "127.0.0.1", 80)
    assert.is_false(address.UNIXAddress(nil) == v4)
    assert.is_false(v4 == address.UNIXAddress(nil))
    assert.is_false(v4 == { type = "TCP", host = "127.0.0.1", port = 80 })
    assert.is_false(v4 == address.IPv6Address("TCP", "127.0.0.1", 80))
    assert.is_true(v4 == address.IPv4Address("TCP", "127.0.0.1", 80))
  end)

  it("an address made without a port shows port=None, as Twisted's repr", function()
    local address = require "braid.address"
    assert.equal("IPv4Address(type='TCP', host='1.2.3.4', port=None)",
      tostring(address.IPv4Address("TCP", "1.2.3.4")))
    assert.equal("IPv6Address(type='TCP', host='::1', port=None, flowInfo=0, scopeID=0)",
      tostring(address.IPv6Address("TCP", "::1")))
    assert.equal("IPv4Address(type='TCP', host='1.2.3.4', port=80)",
      tostring(address.IPv4Address("TCP", "1.2.3.4", 80)))
  end)

  -- any type was taken (IPv4Address("SCTP", ...)); Twisted's attrs validator refuses it
  it("an IPv4 or IPv6 address is of type TCP or UDP; any other raises ValueError", function()
    local address = require "braid.address"
    local errors = require "braid.error"
    local ok, e = pcall(address.IPv4Address, "SCTP", "1.2.3.4", 1)
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal([[bad argument #1 to 'IPv4Address' (type must be "TCP" or "UDP", got "SCTP")]],
      e.message)
    ok, e = pcall(address.IPv6Address, nil, "::1", 1)
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal("UDP", address.IPv6Address("UDP", "::1", 1).type)
  end)

  -- a string scopeID (Twisted's type is int or str) showed unquoted: scopeID=eth0
  it("an IPv6 address shows a scopeID name quoted and a number bare, as Python's repr", function()
    local address = require "braid.address"
    assert.equal("IPv6Address(type='TCP', host='fe80::1', port=80, flowInfo=0, scopeID='eth0')",
      tostring(address.IPv6Address("TCP", "fe80::1", 80, 0, "eth0")))
    assert.equal("IPv6Address(type='UDP', host='fe80::1', port=80, flowInfo=5, scopeID=3)",
      tostring(address.IPv6Address("UDP", "fe80::1", 80, 5, 3)))
  end)
end)

describe("IntNStringReceiver (test_basic)", function()
  it("a string too long says the prefix's limit as Twisted does (test_tooLongSend)", function()
    local p = basic.Int8StringReceiver()
    p:makeConnection(testing.StringTransport())
    local ok, e = pcall(p.sendString, p, ("x"):rep(256))
    assert.is_false(ok)
    assert.equal("Try to send 256 bytes whereas maximum is 256", e.message)
  end)
end)

describe("TCP addresses (test_tcp TCPPortTestsMixin)", function()
  -- A link-local IPv6 address of this host, as "fe80:0:...:1", its
  -- interface's name and index (Twisted's getLinkLocalIPv6Address), or nil.
  local function link_local()
    local f = io.open("/proc/net/if_inet6")
    if not f then return nil end
    for line in f:lines() do
      local hex, index, _, scope, _, name = line:match("^(%x+)%s+(%x+)%s+(%x+)%s+(%x+)%s+(%x+)%s+(%S+)")
      if hex and tonumber(scope, 16) == 0x20 then
        f:close()
        local groups = {}
        for g in hex:gmatch("%x%x%x%x") do groups[#groups + 1] = ("%x"):format(tonumber(g, 16)) end
        return table.concat(groups, ":"), name, tonumber(index, 16)
      end
    end
    f:close()
    return nil
  end

  -- Listen on iface, connect to what the port says, and gather every
  -- address the four ends see.
  local function addresses(iface)
    local seen = {}
    local made = defer.Deferred()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade()
      seen.serverHost, seen.serverPeer = self.transport:getHost(), self.transport:getPeer()
    end
    local sf = Factory.forProtocol(S)
    sf.noisy = false
    function sf:buildProtocol(addr)
      seen.serverBuild = addr
      return Factory.buildProtocol(self, addr)
    end
    local port = reactor.listenTCP(0, sf, 50, iface)
    seen.port = port:getHost()
    local C = protocol.Protocol:extend("C")
    function C:connectionMade()
      seen.clientHost, seen.clientPeer = self.transport:getHost(), self.transport:getPeer()
      made:callback(self)
    end
    local cf = ClientFactory.forProtocol(C)
    cf.noisy = false
    function cf:buildProtocol(addr)
      seen.clientBuild = addr
      return ClientFactory.buildProtocol(self, addr)
    end
    function cf:clientConnectionFailed(_, r) made:errback(r) end
    reactor.connectTCP(seen.port.host, seen.port.port, cf)
    loop.wait(made).transport:loseConnection()
    loop.wait(port:stopListening())
    return seen
  end

  -- the host read inet_ntop's "fe80::1", without the "%eth0" Twisted's
  -- _getrealname adds (getnameinfo's form): the scopeID alone told it
  it("show a link-local host with its interface, as Twisted (test_portGetHostOnIPv6ScopeID)", function()
    local seen = addresses("::1")
    for _, k in ipairs { "port", "serverHost", "serverPeer", "serverBuild", "clientHost", "clientPeer", "clientBuild" } do
      assert.equal("::1", seen[k].host, k)
      assert.equal(0, seen[k].scopeID, k)
    end
    local ll, name, index = link_local()
    if not ll then return end  -- no link-local address here: ::1 above is all there is to check
    for _, iface in ipairs { ll .. "%" .. name, ll .. "%" .. index } do
      seen = addresses(iface)
      local host = seen.port.host
      assert.matches("^fe80:[%x:]+%%" .. name:gsub("%p", "%%%0") .. "$", host)
      for _, k in ipairs { "port", "serverHost", "serverPeer", "serverBuild", "clientHost", "clientPeer", "clientBuild" } do
        assert.equal(host, seen[k].host, k)
        assert.equal(index, seen[k].scopeID, k)
      end
      assert.equal(seen.port.port, seen.serverHost.port)
      assert.equal(seen.serverPeer.port, seen.clientHost.port)
    end
  end)
end)

describe("accept errors (test_tcp_internals SelectReactorTests)", function()
  -- braid shed the connection (its reserve descriptor) and said nothing
  it("log 'Could not accept new connection (EMFILE)' once, and the port serves on (test_tooManyFilesFromAccept)", function()
    local proc = require "helpers.proc"
    local path = proc.script([[
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local log = require "braid.log"
local socket = require "socket"
log.addObserver(function(ev)
  if ev.text and ev.text:find("accept") then print("log: " .. ev.text) end
end)
local f = protocol.Factory.forProtocol(protocol.Protocol)
f.noisy = false
local built = 0
function f:buildProtocol(addr) built = built + 1 return protocol.Factory.buildProtocol(self, addr) end
local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
reactor.iterate(0)
local held = {}
while true do  -- use up the descriptors but one, for the client
  local h = io.open("/dev/null")
  if not h then break end
  held[#held + 1] = h
end
table.remove(held):close()
local c = assert(socket.connect("127.0.0.1", port:getHost().port))
c:settimeout(0)
local got
for _ = 1, 500 do  -- at most 5 s
  reactor.iterate(0.01)
  local _, err = c:receive(1)
  if err == "closed" then got = "closed" break end
end
print("client " .. tostring(got) .. ", built " .. built)
c:close()
for _, h in ipairs(held) do h:close() end
local c2 = assert(socket.connect("127.0.0.1", port:getHost().port))
for _ = 1, 500 do if built == 1 then break end reactor.iterate(0.01) end
print("then built " .. built)
c2:close()
]])
    finally(function() os.remove(path) end)
    local p = assert(io.popen(("sh -c 'ulimit -n 64; exec %s %s' 2>&1"):format(proc.BIN, path)))
    local out = p:read("a")
    p:close()
    assert.equal("log: Could not accept new connection (EMFILE)\nclient closed, built 0\nthen built 1\n", out)
  end)
end)
