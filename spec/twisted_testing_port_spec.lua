-- spec/twisted_testing_port_spec.lua: braid twins of the Twisted 22.4 tests
-- of its test doubles that no other spec asserts the same way
-- (docs/twisted-tests.md maps each Twisted test to its spec). One
-- describe per Twisted TestCase class, each `it` named after the Twisted
-- test method.
-- Sources: twisted/internet/test/test_testing.py, twisted/test/test_loopback.py,
-- twisted/test/test_iosim.py.
local testing = require "braid.testing"
local address = require "braid.address"
local basic = require "braid.basic"
local defer = require "braid.defer"
local errors = require "braid.error"
local protocol = require "braid.protocol"
local Clock = require("braid.task").Clock

local StringTransport = testing.StringTransport

-- Twisted's assertIsInstance(a, IPv4Address) etc.: braid's addresses are
-- plain tables whose class is their metatable
local SAMPLE = {
  IPv4Address = address.IPv4Address("TCP", "127.0.0.1", 1),
  UNIXAddress = address.UNIXAddress("/x"),
}
local function isinstance(a, kind)
  return address.isAddress(a) and getmetatable(a) == getmetatable(SAMPLE[kind])
end

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected " .. tostring(cls) .. ", nothing raised")
  assert.is_true(cls:isinstance(e), "expected another error class, got " .. tostring(e))
  return e
end

---------------------------------------------------------------------------
-- twisted/internet/test/test_testing.py

describe("StringTransportTests", function()
  local transport
  before_each(function() transport = StringTransport() end)

  it("test_registerProducer", function()
    local producer, streaming = {}, {}
    transport:registerProducer(producer, streaming)
    assert.are.equal(producer, transport.producer)
    assert.are.equal(streaming, transport.streaming)
  end)

  it("test_disallowedRegisterProducer", function()
    local producer = {}
    transport:registerProducer(producer, true)
    local e = raises(errors.RuntimeError, transport.registerProducer, transport, {}, false)
    assert.are.equal("Cannot register two producers", e.message)
    assert.are.equal(producer, transport.producer)
    assert.is_true(transport.streaming)
  end)

  it("test_unregisterProducer", function()
    local oldProducer, newProducer = {}, {}
    transport:registerProducer(oldProducer, false)
    transport:unregisterProducer()
    assert.is_nil(transport.producer)
    transport:registerProducer(newProducer, true)
    assert.are.equal(newProducer, transport.producer)
    assert.is_true(transport.streaming)
  end)

  it("test_invalidUnregisterProducer", function()
    local e = raises(errors.RuntimeError, transport.unregisterProducer, transport)
    assert.are.equal("Cannot unregister a producer unless one is registered", e.message)
  end)

  it("test_stoppedTransportCannotPause", function()
    transport:stopProducing()
    local e = raises(errors.RuntimeError, transport.pauseProducing, transport)
    assert.are.equal("Cannot resume a stopped producer", e.message)
    assert.are.equal("stopped", transport.producerState)
  end)

  it("test_disconnectingTransportCannotPause", function()
    transport:loseConnection()
    local e = raises(errors.RuntimeError, transport.pauseProducing, transport)
    assert.are.equal("Cannot resume producing after loseConnection", e.message)
    assert.are.equal("producing", transport.producerState)
  end)

  it("test_specifiedHostAddress", function()
    local addr = {}
    assert.are.equal(addr, StringTransport(addr):getHost())
  end)

  it("test_specifiedPeerAddress", function()
    local addr = {}
    assert.are.equal(addr, StringTransport(nil, addr):getPeer())
  end)

  it("test_defaultHostAddress", function()
    assert.is_true(isinstance(StringTransport():getHost(), "IPv4Address"))
  end)

  it("test_defaultPeerAddress", function()
    assert.is_true(isinstance(StringTransport():getPeer(), "IPv4Address"))
  end)
end)

describe("ReactorTests", function()
  it("test_connectDestination", function()
    local memoryReactor = testing.MemoryReactor()
    for _, connector in ipairs({
      memoryReactor:connectTCP("test.example.com", 8321, protocol.ClientFactory()),
      memoryReactor:connectSSL("test.example.com", 8321, protocol.ClientFactory(), nil),
    }) do
      local addr = connector:getDestination()
      assert.is_true(address.isAddress(addr))
      assert.are.equal("test.example.com", addr.host)
      assert.are.equal(8321, addr.port)
    end
    local addr = memoryReactor:connectUNIX("/fake/path", protocol.ClientFactory()):getDestination()
    assert.is_true(isinstance(addr, "UNIXAddress"))
    assert.are.equal("/fake/path", addr.name)
  end)

  it("test_listenDefaultHost", function()
    local memoryReactor = testing.MemoryReactor()
    for _, port in ipairs({
      memoryReactor:listenTCP(8242, protocol.Factory()),
      memoryReactor:listenSSL(8242, protocol.Factory(), nil),
    }) do
      local addr = port:getHost()
      assert.is_true(address.isAddress(addr))
      assert.are.equal("0.0.0.0", addr.host)
      assert.are.equal(8242, addr.port)
    end
    local addr = memoryReactor:listenUNIX("/path/to/socket", protocol.Factory()):getHost()
    assert.is_true(isinstance(addr, "UNIXAddress"))
    assert.are.equal("/path/to/socket", addr.name)
  end)

  it("test_readers", function()
    local reader, reactor = {}, testing.MemoryReactor()
    reactor:addReader(reader)
    reactor:addReader(reader)
    assert.are.same({ reader }, reactor:getReaders())
    reactor:removeReader(reader)
    assert.are.same({}, reactor:getReaders())
  end)

  it("test_writers", function()
    local writer, reactor = {}, testing.MemoryReactor()
    reactor:addWriter(writer)
    reactor:addWriter(writer)
    assert.are.same({ writer }, reactor:getWriters())
    reactor:removeWriter(writer)
    assert.are.same({}, reactor:getWriters())
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_loopback.py

-- Twisted's SimpleProtocol and DoomProtocol
local SimpleProtocol = basic.LineReceiver:extend("SimpleProtocol")
function SimpleProtocol:init()
  self.conn = defer.Deferred()
  self.lines = {}
  self.connLost = {}
end
function SimpleProtocol:connectionMade() self.conn:callback(nil) end
function SimpleProtocol:lineReceived(line) self.lines[#self.lines + 1] = line end
function SimpleProtocol:connectionLost(reason) self.connLost[#self.connLost + 1] = reason end

local DoomProtocol = SimpleProtocol:extend("DoomProtocol")
DoomProtocol.i = 0
function DoomProtocol:lineReceived(line)
  self.i = self.i + 1
  if self.i < 4 then self:sendLine("Hello " .. self.i) end
  SimpleProtocol.lineReceived(self, line)
  if self.lines[#self.lines] == "Hello 3" then self.transport:loseConnection() end
end

describe("LoopbackAsyncTests", function()
  it("testRegularFunction", function()
    local s, c = SimpleProtocol(), SimpleProtocol()
    s.conn:addCallback(function()
      s:sendLine("THIS IS LINE ONE!")
      s.transport:loseConnection()
    end)
    local d = testing.loopbackAsync(s, c, { clock = Clock() })
    assert.is_nil(testing.successResultOf(d))
    assert.are.same({ "THIS IS LINE ONE!" }, c.lines)
    assert.are.equal(1, #s.connLost)
    assert.are.equal(1, #c.connLost)
  end)

  it("testSneakyHiddenDoom", function()
    local s, c = DoomProtocol(), DoomProtocol()
    s.conn:addCallback(function() s:sendLine("DOOM LINE") end)
    local d = testing.loopbackAsync(s, c, { clock = Clock() })
    assert.is_nil(testing.successResultOf(d))
    assert.are.same({ "Hello 1", "Hello 2", "Hello 3" }, s.lines)
    assert.are.same({ "DOOM LINE", "Hello 1", "Hello 2", "Hello 3" }, c.lines)
    assert.are.equal(1, #s.connLost)
    assert.are.equal(1, #c.connLost)
  end)

  it("test_makeConnection", function()
    local TestProtocol = protocol.Protocol:extend("TestProtocol")
    function TestProtocol:makeConnection(transport) self.transport = transport end
    local server, client = TestProtocol(), TestProtocol()
    testing.loopbackAsync(server, client, { clock = Clock() })
    assert.is_not_nil(client.transport)
    assert.is_not_nil(server.transport)
  end)

  -- Twisted's _hostpeertest
  local function hostpeertest(get, testServer)
    local TestProtocol = protocol.Protocol:extend("TestProtocol")
    function TestProtocol:makeConnection(transport)
      protocol.Protocol.makeConnection(self, transport)
      self.onConnection:callback(transport)
    end
    local server, client, d
    if testServer then
      server = TestProtocol()
      d = defer.Deferred()
      server.onConnection = d
      client = protocol.Protocol()
    else
      server = protocol.Protocol()
      client = TestProtocol()
      d = defer.Deferred()
      client.onConnection = d
    end
    testing.loopbackAsync(server, client, { clock = Clock() })
    local transport = testing.successResultOf(d)
    assert.is_true(address.isAddress(transport[get](transport)))
  end

  it("test_serverHost", function() hostpeertest("getHost", true) end)
  it("test_serverPeer", function() hostpeertest("getPeer", true) end)
  it("test_clientHost", function() hostpeertest("getHost", false) end)
  it("test_clientPeer", function() hostpeertest("getPeer", false) end)

  -- Twisted's _greetingtest
  local function greetingtest(write, testServer)
    local GreeteeProtocol = protocol.Protocol:extend("GreeteeProtocol")
    GreeteeProtocol.bytes = ""
    function GreeteeProtocol:dataReceived(bytes)
      self.bytes = self.bytes .. bytes
      if self.bytes == "bytes" then self.received:callback(nil) end
    end
    local GreeterProtocol = protocol.Protocol:extend("GreeterProtocol")
    function GreeterProtocol:connectionMade()
      if write == "write" then
        self.transport:write("bytes")
      else
        self.transport:writeSequence({ "byt", "es" })
      end
    end
    local server, client, d
    if testServer then
      server, client = GreeterProtocol(), GreeteeProtocol()
      d = defer.Deferred()
      client.received = d
    else
      server, client = GreeteeProtocol(), GreeterProtocol()
      d = defer.Deferred()
      server.received = d
    end
    testing.loopbackAsync(server, client, { clock = Clock() })
    assert.is_nil(testing.successResultOf(d))
  end

  it("test_clientGreeting", function() greetingtest("write", false) end)
  it("test_clientGreetingSequence", function() greetingtest("writeSequence", false) end)
  it("test_serverGreeting", function() greetingtest("write", true) end)
  it("test_serverGreetingSequence", function() greetingtest("writeSequence", true) end)

  -- Twisted's _producertest: the server produces "0".."9" through producerClass
  local function producertest(producerClass, clock)
    local toProduce = {}
    for i = 0, 9 do toProduce[#toProduce + 1] = tostring(i) end
    local ProducingProtocol = protocol.Protocol:extend("ProducingProtocol")
    function ProducingProtocol:connectionMade()
      self.producer = producerClass({ table.unpack(toProduce) })
      self.producer:start(self.transport)
    end
    local server, client
    local ReceivingProtocol = protocol.Protocol:extend("ReceivingProtocol")
    ReceivingProtocol.bytes = ""
    function ReceivingProtocol:dataReceived(data)
      self.bytes = self.bytes .. data
      if self.bytes == table.concat(toProduce) then self.received:callback({ client, server }) end
    end
    server, client = ProducingProtocol(), ReceivingProtocol()
    client.received = defer.Deferred()
    testing.loopbackAsync(server, client, { clock = clock })
    clock:advance(0)
    return testing.successResultOf(client.received)
  end

  it("test_pushProducer", function()
    local clock = Clock()
    local PushProducer = protocol.Protocol:extend("PushProducer") -- any class will do
    PushProducer.resumed = false
    function PushProducer:init(toProduce) self.toProduce = toProduce end
    function PushProducer:resumeProducing() self.resumed = true end
    function PushProducer:start(consumer)
      self.consumer = consumer
      consumer:registerProducer(self, true)
      self:_produceAndSchedule()
    end
    function PushProducer:_produceAndSchedule()
      if #self.toProduce > 0 then
        self.consumer:write(table.remove(self.toProduce, 1))
        clock:callLater(0, function() self:_produceAndSchedule() end)
      else
        self.consumer:unregisterProducer()
      end
    end
    local results = producertest(PushProducer, clock)
    local server = results[2]
    assert.is_false(server.producer.resumed, "Streaming producer should not have been resumed.")
  end)

  it("test_pullProducer", function()
    local PullProducer = protocol.Protocol:extend("PullProducer")
    function PullProducer:init(toProduce) self.toProduce = toProduce end
    function PullProducer:start(consumer)
      self.consumer = consumer
      consumer:registerProducer(self, false)
    end
    function PullProducer:resumeProducing()
      self.consumer:write(table.remove(self.toProduce, 1))
      if #self.toProduce == 0 then self.consumer:unregisterProducer() end
    end
    local results = producertest(PullProducer, Clock())
    assert.are.equal("0123456789", results[1].bytes)
  end)

  it("test_writeNotReentrant", function()
    local clock = Clock()
    local Server = protocol.Protocol:extend("Server")
    function Server:dataReceived() self.transport:write("bytes") end
    local Client = protocol.Protocol:extend("Client")
    Client.ready = false
    function Client:connectionMade() clock:callLater(0, function() self:go() end) end
    function Client:go()
      self.transport:write("foo")
      self.ready = true
    end
    function Client:dataReceived()
      self.wasReady = self.ready
      self.transport:loseConnection()
    end
    local server, client = Server(), Client()
    local d = testing.loopbackAsync(client, server, { clock = clock })
    testing.assertNoResult(d)
    clock:advance(0)
    assert.is_nil(testing.successResultOf(d))
    assert.is_true(client.wasReady)
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_iosim.py

describe("FakeTransportTests", function()
  it("test_connectionSerial", function()
    local a = testing.FakeTransport({}, true)
    local b = testing.FakeTransport({}, false)
    assert.are.equal("integer", math.type(a.serial))
    assert.are.equal("integer", math.type(b.serial))
    assert.are_not.equal(a.serial, b.serial)
    assert.are.equal(a.serial, a.sessionno)
  end)

  -- test_writeAfterClose: a documented departure (docs/testing-transports.md,
  -- "Differences from Twisted"): what is written after loseConnection goes
  -- out before the close, as over braid's TCP transport and as Twisted's
  -- loopbackAsync does (iosim's FakeTransport discards "after")
  it("test_writeAfterClose (braid delivers it, as its TCP transport and loopbackAsync)", function()
    local Writer = protocol.Protocol:extend("Writer")
    function Writer:connectionMade()
      self.transport:write("before")
      self.transport:loseConnection()
      self.transport:write("after")
    end
    local Reader = protocol.Protocol:extend("Reader")
    function Reader:connectionMade() self.got = "" end
    function Reader:dataReceived(d) self.got = self.got .. d end
    local server = testing.connectedServerAndClient(Reader, Writer)
    assert.are.equal("beforeafter", server.got)
    assert.is_true(server.transport.disconnected)
    local reader = Reader()
    local d = testing.loopbackAsync(reader, Writer(), { clock = Clock() })
    assert.is_nil(testing.successResultOf(d))
    assert.are.equal("beforeafter", reader.got) -- as Twisted 22.4's loopbackAsync
    -- aborted: what was queued and what follows are dropped
    local Aborter = Writer:extend("Aborter")
    function Aborter:connectionMade()
      self.transport:write("before")
      self.transport:abortConnection()
      self.transport:write("after")
    end
    assert.are.equal("", (testing.connectedServerAndClient(Reader, Aborter)).got)
  end)

  it("test_writeSequence", function()
    local got = {}
    local Receiver = protocol.Protocol:extend("Receiver")
    function Receiver:dataReceived(d) got[#got + 1] = d end
    local a = testing.FakeTransport(protocol.Protocol(), false)
    local b = testing.FakeTransport(Receiver(), true)
    local pump = testing.IOPump(a.protocol, b.protocol, a, b)
    a:write("a")
    a:writeSequence({ "b", "c", "d" })
    assert.are.equal(4, a:getWriteBufferSize())
    pump:pump()
    assert.are.equal("abcd", table.concat(got))
  end)
end)

-- Twisted's StrictPushProducer: produces nothing, enforces its transitions
local StrictPushProducer = protocol.Protocol:extend("StrictPushProducer")
StrictPushProducer._state = "running"
function StrictPushProducer:stopProducing()
  if self._state == "stopped" then error(errors.ValueError("Cannot stop already-stopped IPushProducer")) end
  self._state = "stopped"
end
function StrictPushProducer:pauseProducing()
  if self._state ~= "running" then
    error(errors.ValueError(("Cannot pause %s IPushProducer"):format(self._state)))
  end
  self._state = "paused"
end
function StrictPushProducer:resumeProducing()
  if self._state ~= "paused" then
    error(errors.ValueError(("Cannot resume %s IPushProducer"):format(self._state)))
  end
  self._state = "running"
end

describe("IOPumpTests", function()
  -- Twisted's _testStreamingProducer
  local function testStreamingProducer(mode)
    local serverProto, clientProto = protocol.Protocol(), protocol.Protocol()
    local pump = testing.connect(serverProto, clientProto, { greet = false })
    local producer = StrictPushProducer()
    local victim = ({ server = serverProto.transport, client = clientProto.transport })[mode]
    victim:registerProducer(producer, true)
    pump:pump()
    assert.are.equal("running", producer._state)
  end

  it("test_serverStreamingProducer", function() testStreamingProducer("server") end)
  it("test_clientStreamingProducer", function() testStreamingProducer("client") end)
end)
