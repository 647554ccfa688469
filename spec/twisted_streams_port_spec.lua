-- spec/twisted_streams_port_spec.lua: braid twins of the Twisted 22.4 test
-- cases for the stream protocols that no other spec asserts the same way
-- (docs/twisted-tests.md maps each Twisted test to its spec). One
-- describe per Twisted TestCase class, each `it` named after the Twisted
-- test method.
-- Sources: twisted/protocols/test/test_basic.py, twisted/test/test_policies.py,
-- twisted/test/test_factories.py, twisted/internet/test/test_protocol.py.
local basic = require "braid.basic"
local errors = require "braid.error"
local policies = require "braid.policies"
local protocol = require "braid.protocol"
local address = require "braid.address"
local class = require "braid.class"
local testing = require "braid.testing"
local Clock = require("braid.task").Clock

local StringTransport = testing.StringTransport

local function connect(p, t)
  t = t or StringTransport()
  p:makeConnection(t)
  return p, t
end

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected " .. tostring(cls) .. ", nothing raised")
  assert.is_true(cls:isinstance(e), "expected another error class, got " .. tostring(e))
  return e
end

---------------------------------------------------------------------------
-- twisted/protocols/test/test_basic.py

-- Twisted's FlippingLineTester: flips between line and raw mode after one byte
local FlippingLineTester = basic.LineReceiver:extend("FlippingLineTester", { delimiter = "\n" })
function FlippingLineTester:init() self.lines = {} end
function FlippingLineTester:lineReceived(line)
  self.lines[#self.lines + 1] = line
  self:setRawMode()
end
function FlippingLineTester:rawDataReceived(data) self:setLineMode(data:sub(2)) end

-- the parts of Twisted's LineTester these tests use
local LineTester = basic.LineReceiver:extend("LineTester", { delimiter = "\n", MAX_LENGTH = 64 })
function LineTester:connectionMade() self.received = {} end
function LineTester:lineReceived(line) self.received[#self.received + 1] = line end

describe("LineReceiverTests", function()
  it("test_stackRecursion", function()
    local proto = connect(FlippingLineTester())
    local limit = 1000 -- Python's default sys.getrecursionlimit()
    proto:dataReceived(("x\nx"):rep(limit))
    assert.are.equal(("x"):rep(limit), table.concat(proto.lines))
    -- far past any C stack: no recursion per mode switch
    local many = connect(FlippingLineTester())
    many:dataReceived(("x\nx"):rep(20000))
    assert.are.equal(20000, #many.lines)
  end)

  it("test_maximumLineLengthPartialDelimiter", function()
    local proto = LineTester()
    proto.MAX_LENGTH = 4
    local _, t = connect(proto)
    local line = ("x"):rep(proto.MAX_LENGTH - 1)
    proto:dataReceived(line)
    proto:dataReceived(proto.delimiter:sub(1, -2))
    proto:dataReceived(proto.delimiter:sub(-1) .. line)
    assert.is_false(t.disconnecting)
    assert.are.equal(1, #proto.received)
    assert.are.equal(line, proto.received[1])
  end)

  it("test_maximumLineLengthPartialDelimiter (a two-byte delimiter)", function()
    local proto = LineTester()
    proto.MAX_LENGTH = 4
    proto.delimiter = "\r\n"
    local _, t = connect(proto)
    local line = ("x"):rep(proto.MAX_LENGTH - 1)
    proto:dataReceived(line)
    proto:dataReceived("\r")
    proto:dataReceived("\n" .. line)
    assert.is_false(t.disconnecting)
    assert.are.same({ line }, proto.received)
  end)

  it("test_notQuiteMaximumLineLengthUnfinished", function()
    local proto = basic.LineReceiver()
    proto.delimiter = "\r\n"
    local _, t = connect(proto)
    proto:dataReceived(("x"):rep(proto.MAX_LENGTH) .. proto.delimiter:sub(1, #proto.delimiter - 1))
    assert.is_false(t.disconnecting)
  end)

  it("test_rawDataError", function()
    local proto = basic.LineReceiver()
    local oops = errors.RuntimeError("oops")
    proto.rawDataReceived = function() return oops end
    connect(proto)
    proto:setRawMode()
    local why = proto:dataReceived("data")
    assert.are.equal(oops, why)
    assert.is_true(errors.RuntimeError:isinstance(why))
  end)

  it("test_rawDataReceivedNotImplemented", function()
    local proto = basic.LineReceiver()
    raises(errors.NotImplementedError, proto.rawDataReceived, proto, "foo")
  end)

  it("test_lineReceivedNotImplemented", function()
    local proto = basic.LineReceiver()
    raises(errors.NotImplementedError, proto.lineReceived, proto, "foo")
  end)
end)

-- Twisted's ExcessivelyLargeLineCatcher
local Catcher = basic.LineReceiver:extend("ExcessivelyLargeLineCatcher")
function Catcher:connectionMade() self.longLines = {} end
function Catcher:lineReceived() end
function Catcher:lineLengthExceeded(data) self.longLines[#self.longLines + 1] = data end

describe("LineReceiverLineLengthExceededTests", function()
  local proto, transport
  before_each(function()
    proto = Catcher()
    proto.MAX_LENGTH = 6
    transport = StringTransport()
    proto:makeConnection(transport)
  end)

  it("test_longUnendedLine", function()
    local excessive = ("x"):rep(proto.MAX_LENGTH * 2 + 2)
    proto:dataReceived(excessive)
    assert.are.same({ excessive }, proto.longLines)
  end)

  it("test_longLineAfterShortLine", function()
    local excessive = ("x"):rep(proto.MAX_LENGTH * 2 + 2)
    proto:dataReceived("x" .. proto.delimiter .. excessive)
    assert.are.same({ excessive }, proto.longLines)
  end)

  it("test_longLineWithDelimiter", function()
    local long = ("x"):rep(proto.MAX_LENGTH * 2 + 2)
    local excessive = long .. proto.delimiter .. long
    proto:dataReceived(excessive)
    assert.are.same({ excessive }, proto.longLines)
  end)

  it("test_multipleLongLines", function()
    local excessive = (("x"):rep(proto.MAX_LENGTH * 2 + 2) .. proto.delimiter):rep(2)
    proto:dataReceived(excessive)
    assert.are.same({ excessive }, proto.longLines)
  end)

  it("test_maximumLineLength", function()
    local p, t = connect(basic.LineReceiver())
    p:dataReceived(("x"):rep(p.MAX_LENGTH + 1) .. "\r\nr")
    assert.is_true(t.disconnecting)
  end)

  it("test_maximumLineLengthRemaining", function()
    local p, t = connect(basic.LineReceiver())
    p:dataReceived(("x"):rep(p.MAX_LENGTH + #p.delimiter))
    assert.is_true(t.disconnecting)
  end)
end)

describe("LineOnlyReceiverTests", function()
  local LineOnlyTester = basic.LineOnlyReceiver:extend("LineOnlyTester",
    { delimiter = "\n", MAX_LENGTH = 64 })
  function LineOnlyTester:connectionMade() self.received = {} end
  function LineOnlyTester:lineReceived(line) self.received[#self.received + 1] = line end

  it("test_buffer", function()
    local buffer = "foo\n    bleakness\n    desolation\n    plastic forks\n    "
    local a = connect(LineOnlyTester())
    for i = 1, #buffer do a:dataReceived(buffer:sub(i, i)) end
    assert.are.same({ "foo", "    bleakness", "    desolation", "    plastic forks" }, a.received)
  end)

  it("test_greaterThanMaximumLineLength", function()
    local proto, t = connect(LineOnlyTester())
    proto:dataReceived(("x"):rep(proto.MAX_LENGTH + #proto.delimiter + 1) .. "\r\nr")
    assert.is_true(t.disconnecting)
    assert.are.same({}, proto.received)
  end)

  it("test_lineReceivedNotImplemented", function()
    local proto = basic.LineOnlyReceiver()
    raises(errors.NotImplementedError, proto.lineReceived, proto, "foo")
  end)
end)

-- Twisted's TestMixin: keeps the strings, MAX_LENGTH 50, notes connectionLost
local function test_mixin(base, name)
  local T = base:extend(name, { MAX_LENGTH = 50, closed = 0 })
  function T:connectionMade() self.received = {} end
  function T:stringReceived(s) self.received[#self.received + 1] = s end
  function T:connectionLost() self.closed = 1 end
  return T
end

local TestNetstring = test_mixin(basic.NetstringReceiver, "TestNetstring")
function TestNetstring:stringReceived(s)
  self.received[#self.received + 1] = s
  self.transport:write(s)
end

describe("NetstringReceiverTests", function()
  local receiver, transport
  before_each(function()
    receiver, transport = connect(TestNetstring())
  end)

  it("test_illegal", function()
    for _, s in ipairs({ "9999999999999999999999", "abc", "4:abcde",
        "51:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab," }) do
      local r, t = connect(TestNetstring())
      for i = 1, #s do r:dataReceived(s:sub(i, i)) end
      assert.is_true(t.disconnecting, s)
    end
  end)

  it("test_moreDataThanSpecified", function()
    receiver:dataReceived("2:aaa,")
    assert.is_true(transport.disconnecting)
  end)

  it("test_moreDataThanSpecifiedBorderCase", function()
    receiver:dataReceived("0:a,")
    assert.is_true(transport.disconnecting)
    assert.are.same({}, receiver.received)
  end)

  it("test_missingNumber", function()
    receiver:dataReceived(":aaa,")
    assert.is_true(transport.disconnecting)
  end)

  it("test_missingColon", function()
    receiver:dataReceived("3aaa,")
    assert.is_true(transport.disconnecting)
  end)

  it("test_missingNumberAndColon", function()
    receiver:dataReceived("aaa,")
    assert.is_true(transport.disconnecting)
  end)

  it("test_onlyData", function()
    receiver:dataReceived("aaa")
    assert.is_true(transport.disconnecting)
  end)

  it("test_receiveNetstringPortions_1", function()
    receiver:dataReceived("4:aa")
    receiver:dataReceived("aa,")
    assert.are.same({ "aaaa" }, receiver.received)
    -- Twisted's _payloadComplete(): nothing of a netstring is left buffered
    assert.are.equal(0, receiver._fbuf:len())
  end)

  it("test_receiveTwoNetstrings", function()
    receiver:dataReceived("1:a,1")
    assert.are.same({ "a" }, receiver.received)
    receiver:dataReceived(":b,")
    assert.are.same({ "a", "b" }, receiver.received)
    assert.is_false(transport.disconnecting)
  end)

  it("test_maxReceiveLimit", function()
    local tooLong = receiver.MAX_LENGTH + 1
    receiver:dataReceived(tooLong .. ":" .. ("a"):rep(tooLong))
    assert.is_true(transport.disconnecting)
    assert.are.same({}, receiver.received)
  end)

  -- Twisted's _consumeLength tests reach a private method; braid's twin is
  -- what the length does to the connection
  it("test_consumeLength", function()
    receiver:dataReceived("12:")
    assert.is_false(transport.disconnecting)
    receiver:dataReceived(("a"):rep(12) .. ",")
    assert.are.same({ ("a"):rep(12) }, receiver.received)
  end)

  it("test_consumeLengthBorderCase1", function()
    receiver.MAX_LENGTH = 12
    receiver:dataReceived("12:")
    assert.is_false(transport.disconnecting)
    receiver:dataReceived(("a"):rep(12) .. ",")
    assert.are.same({ ("a"):rep(12) }, receiver.received)
  end)

  it("test_consumeLengthBorderCase2", function()
    receiver.MAX_LENGTH = 11
    receiver:dataReceived("12:")
    assert.is_true(transport.disconnecting)
    assert.is_true(receiver.brokenPeer)
    assert.is_true(basic.NetstringParseError:isinstance(receiver._parseError))
  end)

  it("test_consumeLengthBorderCase3", function()
    receiver.MAX_LENGTH = 11
    receiver:dataReceived("1000:")
    assert.is_true(transport.disconnecting)
    assert.is_true(basic.NetstringParseError:isinstance(receiver._parseError))
  end)

  it("test_stringReceivedNotImplemented", function()
    local proto = basic.NetstringReceiver()
    raises(errors.NotImplementedError, proto.stringReceived, proto, "foo")
  end)
end)

for _, case in ipairs({
  { "Int32Tests", basic.Int32StringReceiver, ">I4", "\16\0\0\0aaaaaa", "\0\0\0\3foo", "\0\0\0\4ubar" },
  { "Int16Tests", basic.Int16StringReceiver, ">I2", "\16\0aaaaaa", "\0\3foo", "\0\4ubar" },
  { "Int8Tests", basic.Int8StringReceiver, ">I1", "\0\0aaaaaa", "\3foo", "\4ubar" },
}) do
  local name, base, fmt, illegal, sent, got = table.unpack(case)
  describe(name, function()
    local T = test_mixin(base, "Test" .. name)

    it("test_illegal", function()
      local r, t = connect(T())
      for i = 1, #illegal do r:dataReceived(illegal:sub(i, i)) end
      assert.is_true(t.disconnecting)
    end)

    it("test_lengthLimitExceeded", function()
      local length = {}
      local r = connect(T())
      r.lengthLimitExceeded = function(_, n) length[#length + 1] = n end
      r.MAX_LENGTH = 10
      r:dataReceived(string.pack(fmt, 11))
      assert.are.same({ 11 }, length)
    end)

    it("test_longStringNotDelivered", function()
      local r = connect(T())
      r.MAX_LENGTH = 10
      r:dataReceived(string.pack(fmt, 11) .. ("x"):rep(11))
      assert.are.same({}, r.received)
    end)

    it("test_stringReceivedNotImplemented", function()
      local proto = basic.IntNStringReceiver()
      raises(errors.NotImplementedError, proto.stringReceived, proto, "foo")
    end)

    it("test_data", function()
      local r, t = connect(T())
      r:sendString("foo")
      assert.are.equal(sent, t:value())
      r:dataReceived(got)
      assert.are.same({ "ubar" }, r.received)
    end)

    if base.prefixLength < 4 then
      it("test_tooLongSend", function()
        local r, t = connect(T())
        local tooSend = ("b"):rep(2 ^ (r.prefixLength * 8) + 1)
        raises(basic.StringTooLongError, r.sendString, r, tooSend)
        assert.are.equal("", t:value())
      end)
    end
  end)
end

-- Twisted's OnlyProducerTransport and ConsumingProtocol
local function only_producer_transport()
  return {
    paused = false, disconnecting = false, data = {},
    pauseProducing = function(self) self.paused = true end,
    resumeProducing = function(self) self.paused = false end,
    write = function(self, bytes) self.data[#self.data + 1] = bytes end,
  }
end
local ConsumingProtocol = basic.LineReceiver:extend("ConsumingProtocol")
function ConsumingProtocol:lineReceived(line)
  self.transport:write(line)
  self:pauseProducing()
end

describe("ProducerTests", function()
  it("test_pauseResume", function()
    local p, t = ConsumingProtocol(), only_producer_transport()
    p:makeConnection(t)

    p:dataReceived("hello, ")
    assert.are.same({}, t.data)
    assert.is_false(t.paused)
    assert.is_false(p.paused)

    p:dataReceived("world\r\n")
    assert.are.same({ "hello, world" }, t.data)
    assert.is_true(t.paused)
    assert.is_true(p.paused)

    p:resumeProducing()
    assert.are.same({ "hello, world" }, t.data)
    assert.is_false(t.paused)
    assert.is_false(p.paused)

    p:dataReceived("hello\r\nworld\r\n")
    assert.are.same({ "hello, world", "hello" }, t.data)
    assert.is_true(t.paused)
    assert.is_true(p.paused)

    p:resumeProducing()
    assert.are.same({ "hello, world", "hello", "world" }, t.data)
    assert.is_true(t.paused)
    assert.is_true(p.paused)

    p:dataReceived("goodbye\r\n")
    assert.are.same({ "hello, world", "hello", "world" }, t.data)
    assert.is_true(t.paused)
    assert.is_true(p.paused)

    p:resumeProducing()
    assert.are.same({ "hello, world", "hello", "world", "goodbye" }, t.data)
    assert.is_true(t.paused)
    assert.is_true(p.paused)

    p:resumeProducing()
    assert.are.same({ "hello, world", "hello", "world", "goodbye" }, t.data)
    assert.is_false(t.paused)
    assert.is_false(p.paused)
  end)
end)


---------------------------------------------------------------------------
-- twisted/test/test_policies.py

-- Twisted's SimpleProtocol, EchoProtocol and Server
local SimpleProtocol = protocol.Protocol:extend("SimpleProtocol",
  { connected = 0, disconnected = 0, buffer = "" })
function SimpleProtocol:connectionMade() self.connected = 1 end
function SimpleProtocol:connectionLost() self.disconnected = 1 end
function SimpleProtocol:dataReceived(data) self.buffer = self.buffer .. data end

local EchoProtocol = protocol.Protocol:extend("EchoProtocol", { paused = false })
function EchoProtocol:pauseProducing() self.paused = true end
function EchoProtocol:resumeProducing() self.paused = false end
function EchoProtocol:stopProducing() end
function EchoProtocol:dataReceived(data) self.transport:write(data) end

local Server = protocol.ServerFactory:extend("Server", { protocol = EchoProtocol })

local function ipv4(port) return address.IPv4Address("TCP", "127.0.0.1", port) end

-- a StringTransportWithDisconnection joined to p, p connected
local function with_disconnection(p)
  local t = testing.StringTransportWithDisconnection()
  t.protocol = p
  p:makeConnection(t)
  return t
end

describe("WrapperTests", function()
  local function getWrapper()
    local wrapper = policies.ProtocolWrapper(policies.WrappingFactory(Server()), protocol.Protocol())
    wrapper:makeConnection(StringTransport())
    return wrapper
  end

  it("test_protocolFactoryAttribute", function()
    local f = Server()
    local wf = policies.WrappingFactory(f)
    local p = wf:buildProtocol(ipv4(35))
    assert.are.equal(f, p.wrappedProtocol.factory)
  end)

  it("test_factoryLogPrefix", function()
    local factory = policies.WrappingFactory(Server())
    assert.are.equal("Server (WrappingFactory)", factory:logPrefix())
  end)

  it("test_factoryLogPrefixFallback", function()
    local NoFactory = class.Object:extend("NoFactory")
    local factory = policies.WrappingFactory(NoFactory())
    assert.are.equal("NoFactory (WrappingFactory)", factory:logPrefix())
  end)

  it("test_protocolLogPrefix", function()
    local factory = policies.WrappingFactory(Server())
    local p = factory:buildProtocol(ipv4(35))
    assert.are.equal("EchoProtocol (ProtocolWrapper)", p:logPrefix())
  end)

  it("test_protocolLogPrefixFallback", function()
    local NoProtocol = class.Object:extend("NoProtocol")
    local server = Server()
    server.protocol = NoProtocol
    local factory = policies.WrappingFactory(server)
    local p = factory:buildProtocol(ipv4(35))
    assert.are.equal("NoProtocol (ProtocolWrapper)", p:logPrefix())
  end)

  it("test_getHost", function()
    local wrapper = getWrapper()
    assert.are.equal(wrapper.transport:getHost(), wrapper:getHost())
  end)

  it("test_getPeer", function()
    local wrapper = getWrapper()
    assert.are.equal(wrapper.transport:getPeer(), wrapper:getPeer())
  end)

  it("test_registerProducer", function()
    local wrapper = getWrapper()
    local producer = {}
    wrapper:registerProducer(producer, true)
    assert.are.equal(producer, wrapper.transport.producer)
    assert.is_true(wrapper.transport.streaming)
  end)

  it("test_unregisterProducer", function()
    local wrapper = getWrapper()
    wrapper:registerProducer({}, true)
    wrapper:unregisterProducer()
    assert.is_nil(wrapper.transport.producer)
    assert.is_nil(wrapper.transport.streaming)
  end)

  it("test_stopConsuming", function()
    local wrapper = getWrapper()
    local result = {}
    wrapper.transport.stopConsuming = function() result[#result + 1] = true end
    wrapper:stopConsuming()
    assert.are.same({ true }, result)
  end)

  for _, name in ipairs({ "startedConnecting", "clientConnectionLost", "clientConnectionFailed" }) do
    it("test_" .. name, function()
      local result = {}
      local Factory = class.Object:extend("Factory")
      Factory[name] = function(_, connector, reason) result[#result + 1] = { connector, reason } end
      local wrapper = policies.WrappingFactory(Factory())
      local connector, reason = {}, {}
      wrapper[name](wrapper, connector, name ~= "startedConnecting" and reason or nil)
      assert.are.equal(1, #result)
      assert.are.equal(connector, result[1][1])
      if name ~= "startedConnecting" then assert.are.equal(reason, result[1][2]) end
    end)
  end

  it("test_breakReferenceCycle", function()
    local wrapper = policies.ProtocolWrapper(policies.WrappingFactory(Server()), protocol.Protocol())
    local transport = with_disconnection(wrapper)
    assert.is_not_nil(wrapper.wrappedProtocol)
    transport:loseConnection()
    assert.is_nil(wrapper.wrappedProtocol)
  end)
end)

-- Twisted's TestableThrottlingFactory / TestableTimeoutFactory: the clock
-- is a field in braid (docs/policies.md)
local function testable(cls, clock, ...)
  local f = cls(...)
  f.clock = clock
  return f
end

describe("ThrottlingTests", function()
  it("test_writeSequence", function()
    local tServer = testable(policies.ThrottlingFactory, Clock(), Server())
    local p = tServer:buildProtocol(ipv4(0))
    local transport = with_disconnection(p)
    p:writeSequence({ "bytes", "bytes", "bytes", "bytes" })
    assert.are.equal("bytesbytesbytesbytes", transport:value())
    assert.are.equal(20, tServer.writtenThisSecond)
  end)

  it("test_writeLimit", function()
    local tServer = testable(policies.ThrottlingFactory, Clock(), Server(), nil, nil, 10)
    local port = tServer:buildProtocol(ipv4(0))
    local tr = with_disconnection(port)
    port.producer = port.wrappedProtocol

    port:dataReceived("0123456789")
    port:dataReceived("abcdefghij")
    assert.are.equal("0123456789abcdefghij", tr:value())
    assert.are.equal(20, tServer.writtenThisSecond)
    assert.is_false(port.wrappedProtocol.paused)

    tServer.clock:advance(1.05)
    assert.are.equal(0, tServer.writtenThisSecond)
    assert.is_true(port.wrappedProtocol.paused)

    tServer.clock:advance(1.05)
    assert.are.equal(0, tServer.writtenThisSecond)
    assert.is_false(port.wrappedProtocol.paused)
  end)

  it("test_readLimit", function()
    local tServer = testable(policies.ThrottlingFactory, Clock(), Server(), nil, 10)
    local port = tServer:buildProtocol(ipv4(0))
    local tr = with_disconnection(port)
    for _ = 1, 2 do
      tr:clear()
      port:dataReceived("0123456789")
      port:dataReceived("abcdefghij")
      assert.are.equal("0123456789abcdefghij", tr:value())
      assert.are.equal(20, tServer.readThisSecond)

      tServer.clock:advance(1.05)
      assert.are.equal(0, tServer.readThisSecond)
      assert.are.equal("paused", tr.producerState)

      tServer.clock:advance(1.05)
      assert.are.equal(0, tServer.readThisSecond)
      assert.are.equal("producing", tr.producerState)
    end
  end)
end)

describe("ThrottlingTests over TCP", function()
  local defer = require "braid.defer"
  local reactor = require "braid.reactor"

  -- Twisted's SimpleProtocol with its two Deferreds, and SillyFactory
  local Simple = SimpleProtocol:extend("Simple")
  function Simple:init() self.dConnected, self.dDisconnected = defer.Deferred(), defer.Deferred() end
  -- made: SimpleProtocol's connected flag, which braid's Protocol resets
  -- before connectionLost (docs/protocol.md, where braid differs)
  function Simple:connectionMade()
    SimpleProtocol.connectionMade(self)
    self.made = 1
    self.dConnected:callback("")
  end
  function Simple:connectionLost()
    SimpleProtocol.connectionLost(self)
    self.dDisconnected:callback("")
  end
  local function silly(p)
    local f = protocol.ClientFactory()
    f.noisy = false
    function f.buildProtocol() return p end
    return f
  end

  it("test_limit", testing.async(function()
    local server = Server()
    server.noisy = false
    local c1, c2, c3, c4 = Simple(), Simple(), Simple(), Simple()
    local tServer
    -- fires when the server sides are all gone
    local allServersLost = defer.Deferred()
    server.protocol = EchoProtocol:extend("CountingEcho")
    function server.protocol.connectionLost()
      if tServer.connectionCount == 0 then allServersLost:callback(nil) end
    end
    tServer = policies.ThrottlingFactory(server, 2)
    tServer.noisy = false
    local p = reactor.listenTCP(0, tServer, 50, "127.0.0.1")
    local n = p:getHost().port

    reactor.connectTCP("127.0.0.1", n, silly(c1))
    defer.await(c1.dConnected)
    reactor.connectTCP("127.0.0.1", n, silly(c2))
    defer.await(c2.dConnected)
    reactor.connectTCP("127.0.0.1", n, silly(c3))
    defer.await(c3.dDisconnected)
    assert.are.same({ 1, 1, 1 }, { c1.made, c2.made, c3.made })
    assert.is_false(c3.connected)
    assert.are.same({ 0, 0, 1 }, { c1.disconnected, c2.disconnected, c3.disconnected })
    local open = 0
    for _ in pairs(tServer.protocols) do open = open + 1 end
    assert.are.equal(2, open)

    c1.transport:loseConnection()
    defer.await(c1.dDisconnected)
    reactor.connectTCP("127.0.0.1", n, silly(c4))
    defer.await(c4.dConnected)
    assert.are.equal(1, c4.connected)
    assert.are.equal(0, c4.disconnected)

    c2.transport:loseConnection()
    c4.transport:loseConnection()
    defer.await(defer.DeferredList({ p:stopListening(), c2.dDisconnected, c4.dDisconnected }))
    defer.await(allServersLost)
    assert.are.equal(0, tServer.connectionCount)
  end))
end)

describe("TimeoutProtocolTests", function()
  -- Twisted builds its factory with timeoutPeriod None: no timeout until
  -- setTimeout; braid's no-timeout value for the factory is false
  local function getProtocolAndClock()
    local clock = Clock()
    local wrappedFactory = protocol.ServerFactory()
    wrappedFactory.protocol = SimpleProtocol
    local factory = testable(policies.TimeoutFactory, clock, wrappedFactory, false)
    local proto = factory:buildProtocol(ipv4(12345))
    with_disconnection(proto)
    return proto, clock
  end

  it("test_cancelTimeout", function()
    local sut, clock = getProtocolAndClock()
    sut:setTimeout(3)
    assert.is_not_nil(sut.timeoutCall)
    assert.are.equal(0, sut.wrappedProtocol.disconnected)
    clock:advance(1)
    sut:cancelTimeout()
    assert.is_nil(sut.timeoutCall)
    clock:advance(3)
    assert.are.equal(0, sut.wrappedProtocol.disconnected)
  end)

  it("test_cancelTimeoutNoTimeout", function()
    local sut, clock = getProtocolAndClock()
    assert.is_nil(sut.timeoutCall)
    assert.are.same({}, clock:getDelayedCalls())
    sut:cancelTimeout()
    assert.are.equal(0, sut.wrappedProtocol.disconnected)
  end)

  it("test_cancelTimeoutAlreadyCalled", function()
    local sut, clock = getProtocolAndClock()
    local wrappedProto = sut.wrappedProtocol
    sut:setTimeout(3)
    clock:advance(3)
    assert.are.equal(1, wrappedProto.disconnected)
    sut:cancelTimeout()
  end)

  it("test_cancelTimeoutAlreadyCancelled", function()
    local sut = getProtocolAndClock()
    sut:setTimeout(3)
    sut.timeoutCall:cancel()
    sut:cancelTimeout()
    assert.are.equal(0, sut.wrappedProtocol.disconnected)
  end)
end)

describe("TimeoutFactoryTests", function()
  local clock, proto, wrappedProto
  before_each(function()
    clock = Clock()
    local wrappedFactory = protocol.ServerFactory()
    wrappedFactory.protocol = SimpleProtocol
    local factory = testable(policies.TimeoutFactory, clock, wrappedFactory, 3)
    proto = factory:buildProtocol(ipv4(12345))
    with_disconnection(proto)
    wrappedProto = proto.wrappedProtocol
  end)

  it("test_timeout", function()
    clock:pump({ 0.0, 0.5, 1.0, 1.0, 0.4 })
    assert.are.equal(0, wrappedProto.disconnected)
    clock:pump({ 0.0, 0.2 })
    assert.are.equal(1, wrappedProto.disconnected)
  end)

  it("test_sendAvoidsTimeout", function()
    clock:pump({ 0.0, 0.5, 1.0 })
    assert.are.equal(0, wrappedProto.disconnected)
    proto:write("bytes bytes bytes")
    clock:pump({ 0.0, 1.0, 1.0 })
    assert.are.equal(0, wrappedProto.disconnected)
    proto:writeSequence({ "bytes", "bytes", "bytes" })
    clock:pump({ 0.0, 1.0, 1.0 })
    assert.are.equal(0, wrappedProto.disconnected)
    clock:pump({ 0.0, 2.0 })
    assert.are.equal(1, wrappedProto.disconnected)
  end)

  it("test_receiveAvoidsTimeout", function()
    clock:pump({ 0.0, 1.0, 0.5 })
    assert.are.equal(0, wrappedProto.disconnected)
    proto:dataReceived("bytes bytes bytes")
    clock:pump({ 0.0, 1.0, 1.0 })
    assert.are.equal(0, wrappedProto.disconnected)
    clock:pump({ 0.0, 1.0, 1.0 })
    assert.are.equal(1, wrappedProto.disconnected)
  end)
end)

-- Twisted's TimeoutTester
local TimeoutTester = policies.TimeoutMixin:mixInto(protocol.Protocol:extend("TimeoutTester",
  { timeOut = 3, timedOut = false }))
function TimeoutTester:init(clock) self.clock = clock end
function TimeoutTester:connectionMade() self:setTimeout(self.timeOut) end
function TimeoutTester:dataReceived(data)
  self:resetTimeout()
  protocol.Protocol.dataReceived(self, data)
end
function TimeoutTester:connectionLost() self:setTimeout(nil) end
function TimeoutTester:timeoutConnection() self.timedOut = true end

describe("TimeoutMixinTests", function()
  local clock, proto
  before_each(function()
    clock = Clock()
    proto = TimeoutTester(clock)
  end)

  it("test_overriddenCallLater", function()
    proto:setTimeout(10)
    assert.are.equal(1, #clock:getDelayedCalls())
  end)

  it("test_timeout", function()
    proto:makeConnection(StringTransport())
    clock:pump({ 0, 0.5, 1.0, 1.0 })
    assert.is_false(proto.timedOut)
    clock:pump({ 0, 1.0 })
    assert.is_true(proto.timedOut)
  end)

  it("test_noTimeout", function()
    proto:makeConnection(StringTransport())
    clock:pump({ 0, 0.5, 1.0, 1.0 })
    assert.is_false(proto.timedOut)
    proto:dataReceived("hello there")
    clock:pump({ 0, 1.0, 1.0, 0.5 })
    assert.is_false(proto.timedOut)
    clock:pump({ 0, 1.0 })
    assert.is_true(proto.timedOut)
  end)

  it("test_resetTimeout", function()
    proto.timeOut = false -- Twisted's None on the instance, hiding the class's 3
    proto:makeConnection(StringTransport())
    assert.are.same({}, clock:getDelayedCalls())
    proto:setTimeout(1)
    assert.are.equal(1, proto.timeOut)
    clock:pump({ 0, 0.9 })
    assert.is_false(proto.timedOut)
    clock:pump({ 0, 0.2 })
    assert.is_true(proto.timedOut)
  end)

  it("test_cancelTimeout", function()
    proto.timeOut = 5
    proto:makeConnection(StringTransport())
    proto:setTimeout(nil)
    assert.is_falsy(proto.timeOut)
    clock:pump({ 0, 5, 5, 5 })
    assert.is_false(proto.timedOut)
  end)

  it("test_setTimeoutReturn", function()
    proto.timeOut = 5
    assert.are.equal(5, proto:setTimeout(10))
    assert.are.equal(10, proto:setTimeout(nil))
    assert.is_nil(proto:setTimeout(1))
    assert.are.equal(1, proto.timeOut)
    proto:setTimeout(nil)
    assert.are.same({}, clock:getDelayedCalls())
  end)

  it("test_setTimeoutCancleAlreadyCancelled", function()
    proto:setTimeout(3)
    clock:getDelayedCalls()[1]:cancel()
    assert.is_truthy(proto.timeOut)
    proto:setTimeout(nil)
    assert.is_falsy(proto.timeOut)
  end)
end)

describe("LimitTotalConnectionsFactoryTests", function()
  it("testConnectionCounting", function()
    local factory = policies.LimitTotalConnectionsFactory()
    factory.protocol = protocol.Protocol
    assert.are.equal(0, factory.connectionCount)
    local p1 = factory:buildProtocol(nil)
    assert.are.equal(1, factory.connectionCount)
    local p2 = factory:buildProtocol(nil)
    assert.are.equal(2, factory.connectionCount)
    p1:connectionLost(nil)
    assert.are.equal(1, factory.connectionCount)
    p2:connectionLost(nil)
    assert.are.equal(0, factory.connectionCount)
  end)

  it("testConnectionLimiting", function()
    local factory = policies.LimitTotalConnectionsFactory()
    factory.protocol = protocol.Protocol
    factory.connectionLimit = 1
    local p = factory:buildProtocol(nil)
    assert.is_not_nil(p)
    assert.are.equal(1, factory.connectionCount)
    assert.is_nil(factory:buildProtocol(nil))
    assert.are.equal(1, factory.connectionCount)

    local OverflowProtocol = protocol.Protocol:extend("OverflowProtocol")
    function OverflowProtocol:connectionMade() factory.overflowed = true end
    factory.overflowProtocol = OverflowProtocol
    factory.overflowed = false
    local op = factory:buildProtocol(nil)
    op:makeConnection(nil)
    assert.is_true(factory.overflowed)
    assert.are.equal(2, factory.connectionCount)

    p:connectionLost(nil)
    assert.are.equal(1, factory.connectionCount)
    op:connectionLost(nil)
    assert.are.equal(0, factory.connectionCount)
  end)
end)

-- Twisted's WriteSequenceEchoProtocol and TestLoggingFactory
local WriteSequenceEchoProtocol = EchoProtocol:extend("WriteSequenceEchoProtocol")
function WriteSequenceEchoProtocol:dataReceived(bytes)
  if bytes:find("vector!", 1, true) then
    self.transport:writeSequence({ bytes })
  else
    EchoProtocol.dataReceived(self, bytes)
  end
end

-- an in-memory log file, as Twisted's StringIO
local function string_file()
  local f = { parts = {} }
  function f:write(s) self.parts[#self.parts + 1] = s end
  function f:flush() end
  function f:getvalue() return table.concat(self.parts) end
  return f
end

local TestLoggingFactory = policies.TrafficLoggingFactory:extend("TestLoggingFactory")
function TestLoggingFactory:open()
  assert(self.openFile == nil, "open() called too many times")
  self.openFile = string_file()
  return self.openFile
end

describe("LoggingFactoryTests", function()
  local function has(haystack, needle)
    assert.is_truthy(haystack:find(needle, 1, true), ("%q not in %q"):format(needle, haystack))
  end

  it("test_thingsGetLogged", function()
    local wrappedFactory = Server()
    wrappedFactory.protocol = WriteSequenceEchoProtocol
    local f = TestLoggingFactory(wrappedFactory, "test")
    local p = f:buildProtocol(ipv4(5678))
    local t = with_disconnection(p)

    has(f.openFile:getvalue(), "*")
    assert.are.equal("", t:value())

    p:dataReceived("here are some bytes")
    local v = f.openFile:getvalue()
    has(v, 'C 1: "here are some bytes"')
    has(v, 'S 1: "here are some bytes"')
    assert.are.equal("here are some bytes", t:value())

    t:clear()
    p:dataReceived("prepare for vector! to the extreme")
    has(f.openFile:getvalue(), 'SV 1: ["prepare for vector! to the extreme"]')
    assert.are.equal("prepare for vector! to the extreme", t:value())

    p:loseConnection()
    has(f.openFile:getvalue(), "ConnectionDone")
  end)

  it("test_counter", function()
    local f = TestLoggingFactory(Server(), "test")
    assert.are.equal(0, f._counter)
    f:buildProtocol(ipv4(5678))
    assert.are.equal(1, f._counter)
    f.openFile = nil
    f:buildProtocol(ipv4(5679))
    assert.are.equal(2, f._counter)
    f:resetCounter()
    assert.are.equal(0, f._counter)
  end)

  it("test_loggingFactoryOpensLogfileAutomatically", function()
    local open_calls, open_rvalues = {}, {}
    local real_open = io.open
    io.open = function(...) -- luacheck: ignore
      open_calls[#open_calls + 1] = { ... }
      local f = string_file()
      open_rvalues[#open_rvalues + 1] = f
      return f
    end
    local ok, err = pcall(function()
      local wrappedFactory = protocol.ServerFactory()
      wrappedFactory.protocol = SimpleProtocol
      local factory = policies.TrafficLoggingFactory(wrappedFactory, "test")
      local first = factory:buildProtocol(ipv4(12345))
      local second = factory:buildProtocol(ipv4(12346))
      assert.are.same({ { "test-1", "w" }, { "test-2", "w" } }, open_calls)
      assert.are.equal(open_rvalues[1], first.logfile)
      assert.are.equal(open_rvalues[2], second.logfile)
    end)
    io.open = real_open -- luacheck: ignore
    assert(ok, err)
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_factories.py

local function fake_connector()
  return { stopConnecting = function() end, connect = function() end }
end

describe("ReconnectingFactoryTests", function()
  it("test_stopTryingWhenConnected", function()
    local NoConnectConnector = {
      stopConnecting = function() error(errors.RuntimeError("Shouldn't be called, we're connected.")) end,
      connect = function() error(errors.RuntimeError("Shouldn't be reconnecting.")) end,
    }
    local c = protocol.ReconnectingClientFactory()
    c.clock = Clock()
    c.protocol = protocol.Protocol
    c:buildProtocol(nil)
    c:stopTrying()
    c:clientConnectionLost(NoConnectConnector, nil)
    assert.is_false(c.continueTrying)
    assert.are.same({}, c.clock:getDelayedCalls())
  end)

  it("test_stopTryingDoesNotReconnect", function()
    local f = protocol.ReconnectingClientFactory()
    f.clock = Clock()
    local connector = { attemptedRetry = false }
    function connector:stopConnecting() f:clientConnectionFailed(self, nil) end
    function connector:connect() self.attemptedRetry = true end
    f.connector = connector
    f:stopTrying()
    assert.is_false(f.connector.attemptedRetry)
    assert.are.same({}, f.clock:getDelayedCalls())
  end)

  it("test_parametrizedClock", function()
    local clock = Clock()
    local factory = protocol.ReconnectingClientFactory()
    factory.clock = clock
    factory:clientConnectionLost(fake_connector(), nil)
    assert.are.equal(1, #clock:getDelayedCalls())
    factory:stopTrying()
  end)
end)

---------------------------------------------------------------------------
-- twisted/internet/test/test_protocol.py

describe("ProtocolTests", function()
  it("test_logPrefix", function()
    local SomeThing = protocol.Protocol:extend("SomeThing")
    assert.are.equal("SomeThing", SomeThing():logPrefix())
  end)

  it("test_makeConnection", function()
    local result = {}
    local SomeProtocol = protocol.Protocol:extend("SomeProtocol")
    function SomeProtocol:connectionMade() result[#result + 1] = self.transport end
    local transport = {}
    SomeProtocol():makeConnection(transport)
    assert.are.equal(1, #result)
    assert.are.equal(transport, result[1])
  end)
end)

describe("FactoryTests", function()
  local log = require "braid.log"
  local function logged(f)
    local events = {}
    local function obs(e) events[#events + 1] = e end
    log.addObserver(obs)
    local ok, err = pcall(f)
    log.removeObserver(obs)
    assert(ok, err)
    return events
  end

  it("test_logPrefix", function()
    local SomeKindOfFactory = protocol.Factory:extend("SomeKindOfFactory")
    assert.are.equal("SomeKindOfFactory", SomeKindOfFactory():logPrefix())
  end)

  it("test_defaultBuildProtocol", function()
    local SomeProtocol = protocol.Protocol:extend("SomeProtocol")
    local f = protocol.Factory()
    f.protocol = SomeProtocol
    local p = f:buildProtocol(nil)
    assert.is_true(SomeProtocol:isinstance(p))
    assert.are.equal(f, p.factory)
  end)

  it("test_forProtocol", function()
    local ArgTakingFactory = protocol.Factory:extend("ArgTakingFactory")
    function ArgTakingFactory:init(...) self.args = table.pack(...) end
    local factory = ArgTakingFactory.forProtocol(protocol.Protocol, 1, 2, { foo = 12 })
    assert.are.equal(protocol.Protocol, factory.protocol)
    assert.are.same({ n = 3, 1, 2, { foo = 12 } }, factory.args)
  end)

  it("test_doStartLoggingStatement", function()
    local f = protocol.Factory()
    local events = logged(function() f:doStart() end)
    assert.are.equal(f, events[1].factory)
    assert.are.equal("info", events[1].level)
    assert.are.equal("Starting factory {factory!r}", events[1].format)
    assert.are.equal("Starting factory " .. tostring(f), events[1].text)
  end)

  it("test_doStopLoggingStatement", function()
    local MyFactory = protocol.Factory:extend("MyFactory", { numPorts = 1 })
    local f = MyFactory()
    local stopped = 0
    function f:stopFactory() stopped = stopped + 1 end
    local events = logged(function() f:doStop() end)
    assert.are.equal(1, #events)
    assert.are.equal(f, events[1].factory)
    assert.are.equal("info", events[1].level)
    assert.are.equal("Stopping factory {factory!r}", events[1].format)
    assert.are.equal("Stopping factory " .. tostring(f), events[1].text)
    assert.are.equal(1, stopped)
    assert.are.equal(0, f.numPorts)
  end)
end)
