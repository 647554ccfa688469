-- spec/testing_transport_spec.lua: lua/braid/testing/transport.lua
local testing = require "braid.testing.transport"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local Clock = require("braid.task").Clock

describe("StringTransport", function()
  it("has Twisted's disconnected flag, set by abortConnection only", function()
    local t = testing.StringTransport()
    assert.is_false(t.disconnected)
    t:loseConnection()
    assert.is_false(t.disconnected)
    t:abortConnection()
    assert.is_true(t.disconnected)
  end)

  it("lets a lenient transport's producer be resumed after loseConnection", function()
    local strict, lenient = testing.StringTransport(), testing.StringTransport(nil, nil, true)
    strict:loseConnection(); lenient:loseConnection()
    assert.has_error(function() strict:resumeProducing() end,
      "RuntimeError: Cannot resume producing after loseConnection")
    lenient:pauseProducing()
    assert.are.equal("paused", lenient.producerState)
    lenient:resumeProducing()
    assert.are.equal("producing", lenient.producerState)
  end)

  it("records writes and writeSequence in value(); clear() forgets them", function()
    local t = testing.StringTransport()
    t:write("ab")
    t:writeSequence({ "c", "d" })
    assert.are.equal("abcd", t:value())
    t:clear()
    assert.are.equal("", t:value())
  end)

  it("raises TypeError when written anything but a string", function()
    local ok, e = pcall(testing.StringTransport().write, testing.StringTransport(), 5)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
  end)

  it("writes nothing from a writeSequence holding a non-string, and blames the caller", function()
    local t = testing.StringTransport()
    local ok, e = pcall(function() t:writeSequence({ "a", 5 }) end)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.matches("bad argument #1 to 'writeSequence' %(string expected at index 2, got number%)", e.message)
    assert.are.equal("", t:value())
  end)

  it("starts not disconnecting; loseConnection and abortConnection set disconnecting", function()
    local t = testing.StringTransport()
    assert.is_false(t.disconnecting)
    t:loseConnection()
    assert.is_true(t.disconnecting)
    local u = testing.StringTransport()
    u:abortConnection()
    assert.is_true(u.disconnecting and u.aborted)
  end)

  it("has Twisted's default addresses", function()
    local t = testing.StringTransport()
    assert.are.same({ "TCP", "10.0.0.1", 12345 }, { t:getHost().type, t:getHost().host, t:getHost().port })
    assert.are.same({ "TCP", "192.168.1.1", 54321 }, { t:getPeer().type, t:getPeer().host, t:getPeer().port })
  end)

  it("gives the default addresses again once hostAddr or peerAddr is set to nil, as Twisted's", function()
    local t = testing.StringTransport({}, {})
    t.hostAddr, t.peerAddr = nil, nil
    assert.are.same({ "TCP", "10.0.0.1", 12345 }, { t:getHost().type, t:getHost().host, t:getHost().port })
    assert.are.same({ "TCP", "192.168.1.1", 54321 }, { t:getPeer().type, t:getPeer().host, t:getPeer().port })
  end)

  it("gives each transport default addresses of its own", function()
    local a, b = testing.StringTransport(), testing.StringTransport()
    assert.is_false(rawequal(a:getPeer(), b:getPeer()))
    assert.is_false(rawequal(a:getHost(), b:getHost()))
    a:getPeer().port = 1
    a:getHost().port = 2
    assert.are.same({ 54321, 12345 }, { b:getPeer().port, b:getHost().port })
  end)

  it("records the producer and producerState", function()
    local t = testing.StringTransport()
    local prod = {}
    t:registerProducer(prod, true)
    assert.are.equal(prod, t.producer)
    assert.is_true(t.streaming)
    assert.has_error(function() t:registerProducer({}, false) end, "RuntimeError: Cannot register two producers")
    t:unregisterProducer()
    assert.is_nil(t.producer)
    assert.are.equal("producing", t.producerState)
    t:pauseProducing()
    assert.are.equal("paused", t.producerState)
    t:resumeProducing()
    assert.are.equal("producing", t.producerState)
    t:stopProducing()
    assert.are.equal("stopped", t.producerState)
    assert.has_error(function() t:resumeProducing() end, "RuntimeError: Cannot resume a stopped producer")
  end)
end)

describe("StringTransportWithDisconnection", function()
  it("calls protocol:connectionLost(ConnectionDone) once", function()
    local t = testing.StringTransportWithDisconnection()
    local reasons = {}
    local seen
    local disconnecting
    t.protocol = { connected = true,
                   connectionLost = function(self, r)
                     reasons[#reasons + 1] = r
                     seen, disconnecting = self.connected, t.disconnecting
                   end }
    t:loseConnection()
    t:loseConnection()
    assert.are.equal(1, #reasons)
    assert.is_false(seen)  -- the protocol's connected, as over TCP
    assert.is_true(disconnecting)  -- set first, as a real transport's loseConnection
    assert.is_not_nil(reasons[1]:check(errors.ConnectionDone))
    assert.is_false(t.connected)
  end)
end)

describe("MemoryReactor", function()
  it("records listenTCP and connectTCP and returns fake ports and connectors", function()
    local r = testing.MemoryReactor()
    local f = {}
    local port = r:listenTCP(1234, f, 5, "127.0.0.1")
    assert.are.same({ 1234, f, 5, "127.0.0.1" }, r.tcpServers[1])
    assert.are.equal(1234, port:getHost().port)
    local c = r:connectTCP("example.com", 80, f)
    assert.are.same({ "example.com", 80, f, 30 }, r.tcpClients[1])
    assert.are.equal("example.com", c:getDestination().host)
  end)

  it("connects as Twisted's: startedConnecting, connectors, IPv6 addresses (test_testing)", function()
    local r = testing.MemoryReactor()
    local seen = {}
    local f = { startedConnecting = function(_, c) seen[#seen + 1] = c end }
    local c1 = r:connectTCP("::1", 80, f)
    local c2 = r:connectUNIX("/tmp/s", f)
    assert.are.same({ c1, c2 }, seen)
    assert.are.same({ c1, c2 }, r.connectors)
    assert.matches("^IPv6Address%(", tostring(c1:getDestination()))
    assert.are.equal("0.0.0.0", r:listenTCP(0, f, 50, "127.0.0.1"):getHost().host)
    assert.matches("^IPv6Address%(", tostring(r:listenTCP(0, f, 50, "::1"):getHost()))
  end)

  it("gives connectors whose stoppedConnecting and disconnected are false until called, as Twisted's", function()
    local r = testing.MemoryReactor()
    local c = r:connectTCP("h", 1, protocol.ClientFactory())
    assert.are.same({ false, false, "connecting" }, { c.stoppedConnecting, c.disconnected, c.state })
    c:stopConnecting()
    assert.are.same({ true, false, "disconnected" }, { c.stoppedConnecting, c.disconnected, c.state })
    local u = r:connectUNIX("/x", protocol.ClientFactory())
    u:disconnect()
    assert.are.same({ false, true, "disconnected" }, { u.stoppedConnecting, u.disconnected, u.state })
  end)

  it("gives ports that stopListening and startListening again, as a real Port", function()
    local r = testing.MemoryReactor()
    local port = r:listenTCP(8242, protocol.Factory())
    assert.is_false(port.disconnected)
    local d = port:stopListening()
    assert.is_true(d.called)
    assert.is_true(port.disconnected)
    assert.is_nil(port:startListening())
    assert.is_false(port.disconnected)
    assert.are.equal(8242, port:getHost().port)
  end)

  it("records UNIX, UDP and SSL calls", function()
    local r = testing.MemoryReactor()
    r:listenUNIX("/tmp/s", {})
    r:connectUNIX("/tmp/s", {})
    r:listenUDP(53, {})
    r:listenSSL(443, {}, {})
    r:connectSSL("h", 443, {}, {})
    assert.are.same({ 1, 1, 1, 1, 1 }, { #r.unixServers, #r.unixClients, #r.udpPorts,
      #r.sslServers, #r.sslClients })
    -- an IPv6 interface or host as listenTCP/connectTCP's (Twisted's SSL ones
    -- always give IPv4Address: docs/testing-transports.md)
    assert.matches("^IPv6Address%(", tostring(r:listenSSL(443, {}, {}, 50, "::1"):getHost()))
    assert.matches("^IPv6Address%(", tostring(r:connectSSL("::1", 443, {}, {}):getDestination()))
  end)

  it("schedules callLater on its own clock", function()
    local r = testing.MemoryReactor()
    local fired = false
    r:callLater(2, function() fired = true end)
    r:advance(2)
    assert.is_true(fired)
    assert.are.equal(2, r:seconds())
  end)

  it("pumps its clock through a list of timings, as Twisted's MemoryReactorClock", function()
    local r = testing.MemoryReactorClock()
    local fired = {}
    r:callLater(1, function() fired[#fired + 1] = { 1, r:seconds() } end)
    r:callLater(3, function() fired[#fired + 1] = { 3, r:seconds() } end)
    r:pump({ 1, 1, 1 })
    assert.are.same({ { 1, 1 }, { 3, 3 } }, fired)
    assert.are.equal(3, r:seconds())
    assert.are.same({}, r:getDelayedCalls())
  end)

  it("records adoptStreamPort and adoptStreamConnection, as Twisted's; RaisingMemoryReactor raises", function()
    local r = testing.MemoryReactor()
    local f = protocol.Factory()
    local port = r:adoptStreamPort(5, f)
    assert.are.same({ { 5, f } }, r.adoptedPorts)
    assert.are.same({ "TCP", "0.0.0.0", 1234 },
      { port:getHost().type, port:getHost().host, port:getHost().port })
    assert.is_true(testing.FakePort:isinstance(port))
    assert.is_nil(r:adoptStreamConnection(6, f))
    assert.are.same({ { 6, f } }, r.adoptedStreamConnections)
    assert.are.same({}, r.tcpServers)
    local listenE, connectE = errors.ValueError("L"), errors.RuntimeError("C")
    local raising = testing.RaisingMemoryReactor(listenE, connectE)
    assert.are.equal(listenE, select(2, pcall(raising.adoptStreamPort, raising, 5, f)))
    assert.are.equal(connectE, select(2, pcall(raising.adoptStreamConnection, raising, 6, f)))
  end)

  it("RaisingMemoryReactor raises TypeError from a method whose exception was not given", function()
    local r = testing.RaisingMemoryReactor(nil, errors.ValueError("C"))
    local ok, e = pcall(r.listenTCP, r, 0, {})
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.are.equal("RaisingMemoryReactor:listenTCP: no listenException was given", e.message)
    ok, e = pcall(testing.RaisingMemoryReactor().adoptStreamConnection, testing.RaisingMemoryReactor(), 3, {})
    assert.is_false(ok)
    assert.are.equal("RaisingMemoryReactor:adoptStreamConnection: no connectException was given", e.message)
  end)

  it("RaisingMemoryReactor raises a string exception at its caller's line", function()
    local r = testing.RaisingMemoryReactor("no listen", "no connect")
    local ok, e = pcall(function() r:listenTCP(0, {}) end)
    assert.is_false(ok)
    assert.matches("^[^\n]*testing_transport_spec%.lua:%d+: no listen$", e)
    ok, e = pcall(function() r:connectTCP("h", 1, {}) end)
    assert.is_false(ok)
    assert.matches("^[^\n]*testing_transport_spec%.lua:%d+: no connect$", e)
  end)

  it("fakes run, stop and crash: run calls the callWhenRunning functions, then stops", function()
    local r = testing.MemoryReactor()
    assert.are.same({ false, false, false, false },
      { r.running, r.hasRun, r.hasStopped, r.hasCrashed })
    local calls = {}
    r:callWhenRunning(function(a, b, c)
      calls[#calls + 1] = { a, b, c, r.running }
    end, 1, nil, 3)
    r:callWhenRunning(function() calls[#calls + 1] = "second" end)
    assert.are.same({}, calls)
    r:run()
    assert.are.same({ { 1, nil, 3, true }, "second" }, calls)
    assert.are.same({ false, true, true, false },
      { r.running, r.hasRun, r.hasStopped, r.hasCrashed })
    r:crash()
    assert.is_nil(r.running)
    assert.is_true(r.hasCrashed)
    assert.are.equal(2, #r.whenRunningHooks)
  end)

  it("refuses to run after crash, as Twisted's (its run asserts running is False)", function()
    local r = testing.MemoryReactor()
    local calls = 0
    r:callWhenRunning(function() calls = calls + 1 end)
    r:crash()
    local ok, e = pcall(r.run, r)
    assert.is_false(ok)
    assert.is_true(errors.RuntimeError:isinstance(e))
    assert.are.equal("MemoryReactor:run: it crashed (running is nil)", e.message)
    assert.are.same({ 0, nil, false, false, true }, { calls, r.running, r.hasRun, r.hasStopped, r.hasCrashed })
  end)

  it("records system event triggers by phase and event, and fires none", function()
    local r = testing.MemoryReactor()
    local fired = false
    local function f() fired = true end
    r:addSystemEventTrigger("before", "shutdown", f, "a")
    r:addSystemEventTrigger("before", "shutdown", f)
    r:addSystemEventTrigger("after", "startup", f)
    r:run()
    assert.is_false(fired)
    assert.are.equal(2, #r.triggers.before.shutdown)
    assert.are.equal(f, r.triggers.before.shutdown[1][1])
    assert.are.equal("a", r.triggers.before.shutdown[1][2][1])
    assert.are.equal(1, #r.triggers.after.startup)
    local e = assert.has_error(function() r:addSystemEventTrigger("before", "shutdown", 42) end)
    assert.is_truthy(tostring(e):find("bad argument #3 to 'addSystemEventTrigger'", 1, true))
    e = select(2, pcall(r.iterate, r))
    assert.is_true(errors.NotImplementedError:isinstance(e))
    assert.are.equal("MemoryReactor:iterate: it has no loop to run (advance its clock)", e.message)
  end)

  it("keeps readers and writers in sets", function()
    local r = testing.MemoryReactor()
    local a, b = {}, {}
    r:addReader(a); r:addReader(a); r:addWriter(a); r:addWriter(b)
    r:removeWriter(b); r:removeReader(b)
    assert.are.same({ a }, r:getReaders())
    assert.are.same({ a }, r:getWriters())
    assert.are.same({ a }, r:removeAll())
    assert.are.same({}, r:getReaders())
    assert.are.same({}, r:getWriters())
  end)

  it("is Twisted's MemoryReactorClock too; RaisingMemoryReactor raises what it is given", function()
    assert.are.equal(testing.MemoryReactor, testing.MemoryReactorClock)
    local listenE, connectE = errors.ValueError("no listen"), errors.ValueError("no connect")
    local r = testing.RaisingMemoryReactor(listenE, connectE)
    for _, name in ipairs({ "listenTCP", "listenSSL", "listenUNIX", "listenUDP" }) do
      assert.are.equal(listenE, select(2, pcall(r[name], r, 0, {})))
    end
    for _, name in ipairs({ "connectTCP", "connectSSL", "connectUNIX" }) do
      assert.are.equal(connectE, select(2, pcall(r[name], r, "h", 1, {})))
    end
  end)

  -- an IPv6 interface with a scope longer than inet_pton's buffer read as
  -- IPv4's 0.0.0.0; Twisted's isIPv6Address does not look at the scope
  it("gives an IPv6 listening address for an interface with a long scope, as Twisted's isIPv6Address", function()
    local r = testing.MemoryReactor()
    local iface = "fe80::1%" .. ("x"):rep(60)
    local host = r:listenTCP(80, protocol.Factory(), 50, iface):getHost()
    assert.equal("IPv6Address", getmetatable(host).__name)
    assert.equal(iface, host.host)
    assert.equal(80, host.port)
  end)
end)

local Echo = protocol.Protocol:extend("Echo")
function Echo:dataReceived(d) self.transport:write(d) end

local Client = protocol.Protocol:extend("Client")
function Client:connectionMade() self.got = {}; self.transport:write("hello world") end
function Client:dataReceived(d) self.got[#self.got + 1] = d end
function Client:connectionLost(r) self.lost = r end

describe("connectedServerAndClient", function()
  it("delivers everything both ways on flush", function()
    local server, client, pump = testing.connectedServerAndClient(Echo, Client)
    assert.are.equal("hello world", table.concat(client.got))
    assert.is_true(Echo:isinstance(server))
    client.transport:write("again")
    assert.is_true(pump:flush())
    assert.are.equal("hello worldagain", table.concat(client.got))
    assert.is_false(pump:flush())
  end)

  it("splits deliveries the same way for the same seed", function()
    local function sizes(seed)
      local _, client = testing.connectedServerAndClient(Echo, Client, { seed = seed, maxChunk = 4 })
      local s = {}
      for i, d in ipairs(client.got) do s[i] = #d end
      return table.concat(s, ",")
    end
    assert.are.equal(sizes(7), sizes(7))
    assert.are_not.equal(sizes(7), sizes(8))
  end)

  it("delivers one byte at a time with maxChunk 1", function()
    local _, client = testing.connectedServerAndClient(Echo, Client, { maxChunk = 1 })
    assert.are.equal(11, #client.got)
  end)

  it("closes both sides with ConnectionDone after loseConnection", function()
    local Server = protocol.Protocol:extend("S")
    function Server:connectionLost(r) self.lost, self.connectedThen = r, self.connected end
    local server, client, pump = testing.connectedServerAndClient(Server, Client)
    assert.is_true(server.connected)
    client.transport:write("last")
    client.transport:loseConnection()
    assert.is_nil(server.lost)
    pump:flush()
    assert.is_false(server.connectedThen)  -- as over TCP: false before connectionLost
    assert.is_false(client.connected)
    assert.is_not_nil(server.lost:check(errors.ConnectionDone))
    assert.is_not_nil(client.lost:check(errors.ConnectionDone))
  end)

  it("delivers nothing more to a side once it called loseConnection, as a real transport stops reading", function()
    local Quitter = protocol.Protocol:extend("Quitter")
    function Quitter:connectionMade() self.got = {} end
    function Quitter:dataReceived(d)
      self.got[#self.got + 1] = d
      self.transport:loseConnection()
    end
    local Talker = protocol.Protocol:extend("Talker")
    function Talker:connectionMade() self.transport:write("abcdef") end
    local server = testing.connectedServerAndClient(Quitter, Talker, { seed = 3, maxChunk = 2 })
    assert.are.equal(1, #server.got)
    assert.is_true(#server.got[1] <= 2)
    assert.is_true(server.transport.disconnected)
  end)

  it("runs calls due on opts.clock on each pump turn", function()
    local clock = Clock()
    local Ticker = protocol.Protocol:extend("Ticker")
    function Ticker:connectionMade()
      clock:callLater(0, function() self.transport:write("tick") end)
      clock:callLater(5, function() self.transport:write("later") end)
    end
    local Got = protocol.Protocol:extend("Got")
    function Got:connectionMade() self.got = "" end
    function Got:dataReceived(d) self.got = self.got .. d end
    local _, client, pump = testing.connectedServerAndClient(Ticker, Got, { clock = clock })
    assert.are.equal("tick", client.got)
    clock:advance(5)
    pump:flush()
    assert.are.equal("ticklater", client.got)
  end)

  it("accepts factories", function()
    local server = testing.connectedServerAndClient(protocol.Factory.forProtocol(Echo),
      { protocol = Client })
    assert.is_true(Echo:isinstance(server))
  end)
end)

describe("loopbackAsync", function()
  it("runs on the real reactor when no clock is given", function()
    local S = protocol.Protocol:extend("S")
    function S:dataReceived(d) self.got = d; self.transport:loseConnection() end
    local server, client = S(), Client()
    local d = testing.loopbackAsync(server, client)
    assert.is_nil(require("braid.testing").wait(d, 2))
    assert.are.equal("hello world", server.got)
    assert.is_not_nil(client.lost:check(errors.ConnectionDone))
  end)

  -- As Twisted 22.4's loopbackAsync: it pumps at once, and its Deferred has
  -- fired on return when both sides are done by then.
  it("fires before returning when both sides disconnect at once, as Twisted's does", function()
    local clock = Clock()
    local S = protocol.Protocol:extend("S")
    function S:dataReceived(d)
      self.got = d
      self.transport:write(d)
      self.transport:loseConnection()
    end
    local C = Client:extend("C")
    function C:connectionMade()
      Client.connectionMade(self)
      self.transport:loseConnection()
    end
    local server, client = S(), C()
    local d = testing.loopbackAsync(server, client, { clock = clock })
    assert.are.equal("hello world", server.got)
    assert.is_true(d.called)
    assert.is_nil(d.result)
    assert.is_not_nil(client.lost:check(errors.ConnectionDone))
    assert.are.same({}, clock:getDelayedCalls())
  end)

  -- a protocol that writes greeting and closes on connecting, and records
  -- what it gets and how it lost the connection
  local function closing(greeting)
    local P = protocol.Protocol:extend("Closing")
    function P:connectionMade()
      self.transport:write(greeting)
      self.transport:loseConnection()
    end
    function P:dataReceived(d) self.got = d end
    function P:connectionLost(r) self.lost = r end
    return P()
  end

  it("fires before returning when the server writes and closes on connecting", function()
    local C = protocol.Protocol:extend("C")
    function C:dataReceived(d) self.got = d end
    local client = C()
    local d = testing.loopbackAsync(closing("hi"), client, { clock = Clock() })
    assert.is_true(d.called)
    assert.are.equal("hi", client.got)
  end)

  it("fires before returning when both sides write and close on connecting", function()
    local server, client = closing("x"), closing("y")
    local d = testing.loopbackAsync(server, client, { clock = Clock() })
    assert.is_true(d.called)
    assert.is_not_nil(server.lost:check(errors.ConnectionDone))
    assert.is_not_nil(client.lost:check(errors.ConnectionDone))
  end)

  it("waits for a later write, then delivers it on a later clock turn", function()
    local clock = Clock()
    local S = protocol.Protocol:extend("S")
    function S:dataReceived(d) self.got = d; self.transport:loseConnection() end
    local server, client = S(), protocol.Protocol()
    local d = testing.loopbackAsync(server, client, { clock = clock })
    assert.is_false(d.called)
    assert.are.same({}, clock:getDelayedCalls())
    client.transport:write("late")
    assert.is_nil(server.got)
    assert.is_false(d.called)
    clock:advance(0)
    assert.are.equal("late", server.got)
    assert.is_true(d.called)
  end)
end)

-- the error `f(...)` raises, which must be an instance of cls
local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(cls:isinstance(e), "expected " .. cls.__name .. ", got " .. tostring(e))
  return tostring(e)
end

describe("the pump's options", function()
  local P = protocol.Protocol

  it("refuse a maxChunk that is not an integer >= 1, naming the function and the option", function()
    local csac = testing.connectedServerAndClient
    assert.are.equal("ValueError: bad option 'maxChunk' to 'connectedServerAndClient' "
      .. "(integer >= 1 expected, got 0)", raises(errors.ValueError, csac, P, P,
        { maxChunk = 0, greet = false }))
    assert.are.equal("ValueError: bad option 'maxChunk' to 'connectedServerAndClient' "
      .. "(integer >= 1 expected, got -1)", raises(errors.ValueError, csac, P, P,
        { maxChunk = -1, seed = 7 }))
    assert.are.equal("ValueError: bad option 'maxChunk' to 'connectedServerAndClient' "
      .. "(integer >= 1 expected, got 0.5)", raises(errors.ValueError, csac, P, P, { maxChunk = 0.5 }))
    assert.are.equal("TypeError: bad option 'maxChunk' to 'connectedServerAndClient' "
      .. "(integer >= 1 expected, got string)", raises(errors.TypeError, csac, P, P, { maxChunk = "2" }))
    assert.are.equal("ValueError: bad option 'maxChunk' to 'loopbackAsync' "
      .. "(integer >= 1 expected, got -1)", raises(errors.ValueError, testing.loopbackAsync,
        P(), P(), { maxChunk = -1 }))
    assert.are.equal("ValueError: bad option 'maxChunk' to 'connect' "
      .. "(integer >= 1 expected, got 0)", raises(errors.ValueError, testing.connect,
        P(), P(), { maxChunk = 0, greet = false }))
  end)

  it("take a whole float as maxChunk", function()
    local _, client = testing.connectedServerAndClient(Echo, Client, { maxChunk = 4.0 })
    assert.are.same({ "hell", "o wo", "rld" }, client.got)
  end)

  it("refuse a seed that is not an integer, so that seeds never alias", function()
    local csac = testing.connectedServerAndClient
    assert.are.equal("ValueError: bad option 'seed' to 'connectedServerAndClient' "
      .. "(integer expected, got 1.5)", raises(errors.ValueError, csac, P, P,
        { seed = 1.5, maxChunk = 3, greet = false }))
    assert.are.equal("TypeError: bad option 'seed' to 'connectedServerAndClient' "
      .. "(integer expected, got boolean)", raises(errors.TypeError, csac, P, P,
        { seed = true, greet = false }))
    -- seeds that differ only above bit 31 split differently
    local function sizes(seed)
      local _, client = testing.connectedServerAndClient(Echo, Client, { seed = seed, maxChunk = 4 })
      local s = {}
      for i, d in ipairs(client.got) do s[i] = #d end
      return table.concat(s, ",")
    end
    assert.are_not.equal(sizes(5), sizes(5 + (1 << 32)))
  end)

  it("refuse unknown options, a bad clock and a bad greet", function()
    local csac = testing.connectedServerAndClient
    assert.are.equal("ValueError: bad option 'maxchunk' to 'connectedServerAndClient' "
      .. "(unknown option; the options are clock, greet, maxChunk, seed)",
      raises(errors.ValueError, csac, P, P, { maxchunk = 2 }))
    assert.are.equal("TypeError: bad option 'clock' to 'connectedServerAndClient' "
      .. "(an object with advance expected, got number)",
      raises(errors.TypeError, csac, P, P, { clock = 5 }))
    assert.are.equal("TypeError: bad option 'clock' to 'loopbackAsync' "
      .. "(the reactor or an object with callLater expected, got table)",
      raises(errors.TypeError, testing.loopbackAsync, P(), P(), { clock = {} }))
    assert.are.equal("TypeError: bad option 'greet' to 'connectedServerAndClient' "
      .. "(boolean expected, got string)", raises(errors.TypeError, csac, P, P, { greet = "no" }))
  end)

  it("are checked by IOPump too", function()
    local a, b = testing.FakeTransport(P(), false), testing.FakeTransport(P(), true)
    assert.are.equal("ValueError: bad option 'maxChunk' to 'IOPump' "
      .. "(integer >= 1 expected, got 0)",
      raises(errors.ValueError, testing.IOPump, P(), P(), a, b, { maxChunk = 0 }))
    assert.are.equal("TypeError: bad argument #4 to 'IOPump' (FakeTransport expected, got nil)",
      raises(errors.TypeError, testing.IOPump, P(), P(), a, nil))
  end)
end)

describe("bad arguments to the in-memory helpers", function()
  local P = protocol.Protocol

  it("name connectedServerAndClient and the argument", function()
    local csac = testing.connectedServerAndClient
    assert.are.equal("TypeError: bad argument #3 to 'connectedServerAndClient' "
      .. "(table expected, got number)", raises(errors.TypeError, csac, P, P, 5))
    assert.are.equal("TypeError: bad argument #1 to 'connectedServerAndClient' "
      .. "(factory, protocol class or table expected, got nil)", raises(errors.TypeError, csac, nil, P))
    assert.are.equal("TypeError: bad argument #2 to 'connectedServerAndClient' "
      .. "(factory, protocol class or table expected, got string)", raises(errors.TypeError, csac, P, "x"))
  end)

  it("say how to call a method called with '.'", function()
    local _, _, pump = testing.connectedServerAndClient(P, P)
    assert.are.equal("TypeError: bad argument #1 to 'pump' (IOPump expected, got nil; "
      .. "call it as obj:pump(...))", raises(errors.TypeError, pump.pump))
    assert.are.equal("TypeError: bad argument #1 to 'flush' (IOPump expected, got number; "
      .. "call it as obj:flush(...))", raises(errors.TypeError, pump.flush, 5))
    assert.are.equal("ValueError: bad argument #1 to 'flush' (integer >= 1 expected, got 0)",
      raises(errors.ValueError, pump.flush, pump, 0))
    local r = testing.MemoryReactor()
    assert.are.equal("TypeError: bad argument #1 to 'listenTCP' (MemoryReactor expected, got "
      .. "number; call it as obj:listenTCP(...))", raises(errors.TypeError, r.listenTCP, 80, {}))
    local st = testing.StringTransport()
    for _, name in ipairs({ "pauseProducing", "stopProducing", "getPeer", "getHost",
        "loseWriteConnection" }) do
      assert.are.equal(("TypeError: bad argument #1 to '%s' (StringTransport expected, got nil; "
        .. "call it as obj:%s(...))"):format(name, name), raises(errors.TypeError, st[name]))
    end
    local w = testing.StringTransportWithDisconnection()
    assert.are.equal("TypeError: bad argument #1 to 'loseConnection' "
      .. "(StringTransportWithDisconnection expected, got nil; call it as obj:loseConnection(...))",
      raises(errors.TypeError, w.loseConnection))
    local ft = testing.FakeTransport(P(), true)
    assert.are.equal("TypeError: bad argument #1 to 'write' (FakeTransport expected, got string; "
      .. "call it as obj:write(...))", raises(errors.TypeError, ft.write, "x"))
  end)
end)

describe("loopbackAsync and connect", function()
  it("refuse a protocol class, and leave the class as it was", function()
    local Proto = protocol.Protocol:extend("Proto")
    assert.are.equal("TypeError: bad argument #1 to 'loopbackAsync' "
      .. "(protocol instance expected, got class Proto)",
      raises(errors.TypeError, testing.loopbackAsync, Proto, Proto()))
    assert.are.equal("TypeError: bad argument #2 to 'loopbackAsync' "
      .. "(protocol instance expected, got class Proto)",
      raises(errors.TypeError, testing.loopbackAsync, Proto(), Proto, { clock = Clock() }))
    assert.are.equal("TypeError: bad argument #2 to 'connect' "
      .. "(protocol instance expected, got class Proto)",
      raises(errors.TypeError, testing.connect, Proto(), Proto))
    assert.is_nil(rawget(Proto, "transport"))
    assert.is_nil(rawget(Proto, "connected"))
    assert.is_nil(Proto().transport)
  end)

  it("refuse nil, a number and a table without makeConnection", function()
    local p = protocol.Protocol()
    assert.are.equal("TypeError: bad argument #1 to 'loopbackAsync' "
      .. "(protocol instance expected, got nil)", raises(errors.TypeError, testing.loopbackAsync, nil, p))
    assert.are.equal("TypeError: bad argument #2 to 'loopbackAsync' "
      .. "(protocol instance expected, got number)", raises(errors.TypeError, testing.loopbackAsync, p, 5))
    assert.are.equal("TypeError: bad argument #1 to 'connect' "
      .. "(protocol instance expected, got a table without makeConnection)",
      raises(errors.TypeError, testing.connect, {}, p))
  end)
end)

describe("loopbackAsync's later rounds", function()
  local Choking = protocol.Protocol:extend("Choking")
  function Choking:dataReceived() error("server choked", 0) end

  it("fail its Deferred with an error raised in a later round, and then stop, as Twisted's", function()
    local clock = Clock()
    local client = protocol.Protocol()
    local d = testing.loopbackAsync(Choking(), client, { clock = clock })
    client.transport:write("x")
    clock:advance(0)
    local f = require("braid.testing").failureResultOf(d, errors.LuaError)
    assert.are.equal("server choked", f.value)
    client.transport:write("y")
    client.transport:loseConnection()
    assert.are.same({}, clock:getDelayedCalls())
  end)

  it("raise an error of the first round to the caller, as Twisted's", function()
    local Greeter = protocol.Protocol:extend("Greeter")
    function Greeter:connectionMade() self.transport:write("hi") end
    local ok, e = pcall(testing.loopbackAsync, Choking(), Greeter(), { clock = Clock() })
    assert.is_false(ok)
    assert.are.equal("server choked", e)
  end)

  it("run on the reactor given as opts.clock (its functions called with '.')", function()
    local reactor = require "braid.reactor"
    local S = protocol.Protocol:extend("S")
    function S:dataReceived(d) self.got = d; self.transport:loseConnection() end
    local server, client = S(), protocol.Protocol()
    local d = testing.loopbackAsync(server, client, { clock = reactor })
    client.transport:write("late")
    assert.is_nil(require("braid.testing").wait(d, 2))
    assert.are.equal("late", server.got)
  end)
end)

describe("the pump's closes", function()
  it("give the peer its connectionLost when one side's connectionLost raises, then raise", function()
    local events = {}
    local S = protocol.Protocol:extend("S")
    function S:connectionLost(r) events[#events + 1] = "server " .. r.type.__name end
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() self.transport:loseConnection() end
    function C:connectionLost() error("client connectionLost raised", 0) end
    local server, _, pump = testing.connectedServerAndClient(S, C, { greet = false })
    local ok, e = pcall(pump.flush, pump)
    assert.is_false(ok)
    assert.are.equal("client connectionLost raised", e)
    assert.are.same({ "server ConnectionDone" }, events)
    assert.is_false(server.connected)
    assert.is_false(pump:flush())
    assert.are.same({ "server ConnectionDone" }, events)
  end)
end)

describe("FakeTransport", function()
  it("has logPrefix 'iosim' (as Twisted's) and fileno -1", function()
    local server = testing.connectedServerAndClient(protocol.Protocol, protocol.Protocol)
    assert.are.equal("iosim", server.transport:logPrefix())
    assert.are.equal(-1, server.transport:fileno())
  end)

  it("stopConsuming unregisters the producer, then loses the connection (Twisted's iosim)", function()
    local stopped = 0
    local C = protocol.Protocol:extend("C")
    function C:connectionMade()
      self.transport:registerProducer({ pauseProducing = function() end, resumeProducing = function() end,
        stopProducing = function() stopped = stopped + 1 end }, true)
      self.transport:write("last")
      self.transport:stopConsuming()
    end
    local S = protocol.Protocol:extend("S")
    function S:dataReceived(d) self.got = (self.got or "") .. d end
    function S:connectionLost(r) self.reason = r end
    local server, client = testing.connectedServerAndClient(S, C)
    assert.is_nil(client.transport.producer)
    assert.is_true(client.transport.disconnecting)
    assert.are.equal("last", server.got)
    assert.are.equal("ConnectionDone", server.reason.type.__name)
    assert.are.equal(0, stopped)
  end)

  -- a protocol that records its events in `log`
  local function recorder(name, log, halfclose)
    local P = protocol.Protocol:extend(name)
    function P:dataReceived(d) log[#log + 1] = name .. " got " .. d end
    function P:connectionLost(r) log[#log + 1] = name .. " lost " .. r.type.__name end
    if halfclose then
      function P:readConnectionLost() log[#log + 1] = name .. " readConnectionLost" end
      function P:writeConnectionLost() log[#log + 1] = name .. " writeConnectionLost" end
    end
    return P
  end

  it("half-closes as braid's TCP transport: the peer reads the end, then may still write", function()
    local log = {}
    local S = recorder("server", log, true)
    function S:readConnectionLost()
      log[#log + 1] = "server readConnectionLost"
      self.transport:write("answer")
      self.transport:loseConnection()
    end
    local C = recorder("client", log, true)
    function C:connectionMade()
      self.transport:write("request")
      self.transport:loseWriteConnection()
      self.transport:write(" too")  -- before the shut: still sent, as Twisted's
    end
    function C:writeConnectionLost()
      log[#log + 1] = "client writeConnectionLost"
      self.transport:write("discarded")
    end
    local _, client = testing.connectedServerAndClient(S, C)
    assert.are.same({ "server got request too", "client writeConnectionLost",
      "server readConnectionLost", "client got answer",
      "server lost ConnectionDone", "client lost ConnectionDone" }, log)
    assert.is_true(client.transport.writeDisconnected)
  end)

  -- writes after an abort were delivered (the queue was dropped, the late
  -- ones were not), and a side that aborted while its peer's close was
  -- under way heard ConnectionDone
  it("discards writes after abortConnection and tells the aborting side ConnectionAborted", function()
    local log = {}
    local S = recorder("server", log)
    function S:connectionMade()
      self.transport:write("before")
      self.transport:abortConnection()
      self.transport:write("after")
    end
    testing.connectedServerAndClient(S, recorder("client", log))
    assert.are.same({ "server lost ConnectionAborted", "client lost ConnectionLost" }, log)
    log = {}
    local server, client, pump = testing.connectedServerAndClient(recorder("server", log),
      recorder("client", log))
    client.transport:loseConnection()
    server.transport:abortConnection()
    pump:flush()
    table.sort(log)
    assert.are.same({ "client lost ConnectionLost", "server lost ConnectionAborted" }, log)
  end)

  it("closes a peer whose protocol cannot half-close", function()
    local log = {}
    local S = recorder("server", log, false)
    local C = recorder("client", log, true)
    function C:connectionMade()
      self.transport:write("bye")
      self.transport:loseWriteConnection()
    end
    testing.connectedServerAndClient(S, C)
    assert.are.same({ "server got bye", "client writeConnectionLost",
      "server lost ConnectionDone", "client lost ConnectionDone" }, log)
  end)

  it("closes without writeConnectionLost after loseConnection follows loseWriteConnection", function()
    local log = {}
    local S = recorder("server", log, true)
    local C = recorder("client", log, true)
    function C:connectionMade()
      self.transport:write("last")
      self.transport:loseWriteConnection()
      self.transport:loseConnection()
    end
    testing.connectedServerAndClient(S, C)
    assert.are.same({ "server got last", "client lost ConnectionDone",
      "server lost ConnectionDone" }, log)
  end)

  it("closes once both sides have half-closed", function()
    local log = {}
    local S = recorder("server", log, true)
    function S:readConnectionLost()
      log[#log + 1] = "server readConnectionLost"
      self.transport:loseWriteConnection()
    end
    local C = recorder("client", log, true)
    function C:connectionMade() self.transport:loseWriteConnection() end
    testing.connectedServerAndClient(S, C)
    -- the server's shutdown closes (its read side was closed), once told
    assert.are.same({ "client writeConnectionLost", "server readConnectionLost",
      "server writeConnectionLost", "server lost ConnectionDone", "client lost ConnectionDone" }, log)
  end)
end)
