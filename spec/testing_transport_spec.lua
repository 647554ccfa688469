-- spec/testing_transport_spec.lua: lua/braid/testing/transport.lua
local testing = require "braid.testing.transport"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local Clock = require("braid.task").Clock

describe("StringTransport", function()
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

  it("records the producer and producerState", function()
    local t = testing.StringTransport()
    local prod = {}
    t:registerProducer(prod, true)
    assert.are.equal(prod, t.producer)
    assert.is_true(t.streaming)
    assert.has_error(function() t:registerProducer({}, false) end)
    t:unregisterProducer()
    assert.is_nil(t.producer)
    assert.are.equal("producing", t.producerState)
    t:pauseProducing()
    assert.are.equal("paused", t.producerState)
    t:resumeProducing()
    assert.are.equal("producing", t.producerState)
    t:stopProducing()
    assert.are.equal("stopped", t.producerState)
    assert.has_error(function() t:resumeProducing() end)
  end)
end)

describe("StringTransportWithDisconnection", function()
  it("calls protocol:connectionLost(ConnectionDone) once", function()
    local t = testing.StringTransportWithDisconnection()
    local reasons = {}
    local seen
    t.protocol = { connected = true,
                   connectionLost = function(self, r) reasons[#reasons + 1] = r; seen = self.connected end }
    t:loseConnection()
    t:loseConnection()
    assert.are.equal(1, #reasons)
    assert.is_false(seen)  -- the protocol's connected, as over TCP
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

  it("records UNIX, UDP and SSL calls", function()
    local r = testing.MemoryReactor()
    r:listenUNIX("/tmp/s", {})
    r:connectUNIX("/tmp/s", {})
    r:listenUDP(53, {})
    r:listenSSL(443, {}, {})
    r:connectSSL("h", 443, {}, {})
    assert.are.same({ 1, 1, 1, 1, 1 }, { #r.unixServers, #r.unixClients, #r.udpPorts,
      #r.sslServers, #r.sslClients })
  end)

  it("schedules callLater on its own clock", function()
    local r = testing.MemoryReactor()
    local fired = false
    r:callLater(2, function() fired = true end)
    r:advance(2)
    assert.is_true(fired)
    assert.are.equal(2, r:seconds())
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
