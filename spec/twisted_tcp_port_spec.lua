-- spec: twins of Twisted's own TCP and UNIX tests (twisted/test/test_tcp.py,
-- twisted/internet/test/test_tcp.py, twisted/test/test_unix.py,
-- twisted/internet/test/test_unix.py, connectionmixins.py) that no other
-- spec covered: one describe per Twisted TestCase, each it named after the
-- Twisted test method, the same scenario and the same asserted values.
-- docs/twisted-tests.md maps every test method to its spec (or the reason
-- it has none).
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local protocol = require "braid.protocol"
local failure = require "braid.failure"
local address = require "braid.address"
local log = require "braid.log"
local testing = require "braid.testing"

local loop = require "helpers.loop"
local tmp = require "helpers.tmp"

local Protocol, Factory, ClientFactory = protocol.Protocol, protocol.Factory, protocol.ClientFactory

-- Twisted's AccumulatingProtocol (twisted.internet.testing): records its
-- data, fires its factory's protocolConnectionMade / protocolConnectionLost
-- Deferreds (each once) and its own closedDeferred.
local Accumulating = Protocol:extend("AccumulatingProtocol")
function Accumulating:init()
  self.data, self.made, self.closed = "", 0, 0
end
function Accumulating:connectionMade()
  self.made = 1
  local f = self.factory
  if f and f.protocolConnectionMade then
    local d = f.protocolConnectionMade
    f.protocolConnectionMade = nil
    d:callback(self)
  end
end
function Accumulating:dataReceived(data) self.data = self.data .. data end
function Accumulating:connectionLost(reason)
  self.closed, self.closedReason = 1, reason
  local f = self.factory
  if f and f.protocolConnectionLost then
    local d = f.protocolConnectionLost
    f.protocolConnectionLost = nil
    d:callback(self)
  end
  if self.closedDeferred then
    local d = self.closedDeferred
    self.closedDeferred = nil
    d:callback(nil)
  end
end

-- Twisted's MyServerFactory: builds Accumulating protocols, keeps the last
-- as `protocol_`, the addresses it was given as peerAddresses.
local function server_factory(P)
  local f = protocol.ServerFactory()
  f.noisy = false
  f.peerAddresses = {}
  function f:buildProtocol(addr)
    self.peerAddresses[#self.peerAddresses + 1] = addr
    local p = (self.protocolFactory or P or Accumulating)()
    p.factory = self
    self.proto = p
    return p
  end
  return f
end

-- Twisted's MyClientFactory: as above, plus failed/reason, lostReason and
-- `deferred` (fired by clientConnectionLost), failDeferred (by
-- clientConnectionFailed), stopped.
local function client_factory(P)
  local f = ClientFactory()
  f.noisy = false
  f.peerAddresses = {}
  f.failed, f.stopped = 0, 0
  f.deferred, f.failDeferred = defer.Deferred(), defer.Deferred()
  function f:buildProtocol(addr)
    self.peerAddresses[#self.peerAddresses + 1] = addr
    local p = (self.protocolFactory or P or Accumulating)()
    p.factory = self
    self.proto = p
    return p
  end
  function f:clientConnectionFailed(_, reason)
    self.failed, self.reason = 1, reason
    self.failDeferred:callback(nil)
  end
  function f:clientConnectionLost(_, reason)
    self.lostReason = reason
    self.deferred:callback(nil)
  end
  function f:stopFactory() self.stopped = 1 end
  return f
end

local function listen(f, iface)
  return reactor.listenTCP(0, f, 50, iface or "127.0.0.1")
end

local function stop(port)
  if port.connected then loop.wait(port:stopListening()) end
end

-- both Deferreds' results, once both have one
local function both(a, b)
  return loop.wait(defer.gatherResults({ a, b }))
end

describe("ListeningTests (twisted/test/test_tcp.py)", function()
  it("testStopListening", function()
    local f = server_factory()
    local port = listen(f)
    local n = port:getHost().port
    loop.wait(port:stopListening())
    -- the port number can be bound again right away
    port = reactor.listenTCP(n, f, 50, "127.0.0.1")
    assert.equal(n, port:getHost().port)
    loop.wait(port:stopListening())
  end)

  it("testPortRepr", function()
    local p = reactor.listenTCP(0, server_factory())
    local portNo = tostring(p:getHost().port)
    assert.truthy(tostring(p):find(portNo, 1, true))
    loop.wait(p:stopListening())
    assert.falsy(tostring(p):find(portNo, 1, true))
  end)

  it("test_restartAfterExcept", function()
    local f = server_factory()
    function f:stopFactory() error(errors.RuntimeError("An error")) end
    local port = listen(f)
    local r = loop.result(port:stopListening())
    assert.is_true(failure.isFailure(r))
    assert.is_truthy(r:check(errors.RuntimeError))
    f.stopFactory = nil
    port:startListening()
    f.protocolConnectionMade = defer.Deferred()
    local client = client_factory()
    client.protocolConnectionMade = defer.Deferred()
    local connector = reactor.connectTCP("127.0.0.1", port:getHost().port, client)
    local r2 = both(f.protocolConnectionMade, client.protocolConnectionMade)
    local serverProto, clientProto = r2[1], r2[2]
    assert.equal(1, serverProto.made)
    assert.equal(1, clientProto.made)
    clientProto.transport:loseConnection()
    serverProto.transport:loseConnection()
    loop.wait(client.deferred)
    connector:disconnect()
    stop(port)
  end)
end)

describe("FactoryTests (twisted/test/test_tcp.py)", function()
  -- Twisted's StartStopFactory: starting or stopping twice raises
  local function start_stop(f)
    f.started, f.stopped = 0, 0
    function f:startFactory()
      if self.started ~= 0 or self.stopped ~= 0 then error(errors.RuntimeError()) end
      self.started = 1
    end
    function f:stopFactory()
      if self.started == 0 or self.stopped ~= 0 then error(errors.RuntimeError()) end
      self.stopped = 1
      if self.whenStopped then self.whenStopped:callback(true) end
    end
    return f
  end

  it("test_serverStartStop", function()
    local f = start_stop(Factory.forProtocol(Protocol))
    f.noisy = false
    local p1 = listen(f)
    assert.same({ 1, 0 }, { f.started, f.stopped })
    local p2, p3 = listen(f), listen(f)
    assert.same({ 1, 0 }, { f.started, f.stopped })
    both(p1:stopListening(), p2:stopListening())
    assert.same({ 1, 0 }, { f.started, f.stopped })
    loop.wait(p3:stopListening())
    assert.same({ 1, 1 }, { f.started, f.stopped })
  end)

  it("test_clientStartStop", function()
    -- Twisted's ClosingFactory: its protocol closes at once
    local Closing = Protocol:extend("ClosingProtocol")
    function Closing:connectionMade() self.transport:loseConnection() end
    local sf = Factory.forProtocol(Closing)
    sf.noisy = false
    local p = listen(sf)
    local factory = start_stop(client_factory())
    factory.whenStopped = defer.Deferred()
    reactor.connectTCP("127.0.0.1", p:getHost().port, factory)
    assert.equal(1, factory.started)
    loop.wait(factory.whenStopped)
    assert.equal(1, factory.stopped)
    stop(p)
  end)
end)

describe("CannotBindTests (twisted/test/test_tcp.py)", function()
  it("test_cannotBind", function()
    local f = server_factory()
    local p1 = listen(f)
    local n = p1:getHost().port
    local dest = p1:getHost()
    assert.equal("TCP", dest.type)
    assert.equal("127.0.0.1", dest.host)
    assert.equal(n, dest.port)
    local ok, e = pcall(reactor.listenTCP, n, f, 50, "127.0.0.1")
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.CannotListenError), tostring(e))
    stop(p1)
  end)
end)

describe("LocalRemoteAddressTests (twisted/test/test_tcp.py)", function()
  it("test_hostAddress", function()
    local sf = server_factory()
    sf.protocolConnectionLost = defer.Deferred()
    local serverConnectionLost = sf.protocolConnectionLost
    local port = listen(sf)
    local cf = client_factory()
    cf.protocolConnectionMade = defer.Deferred()
    local connector = reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    loop.wait(cf.protocolConnectionMade)
    assert.same({ port:getHost() }, cf.peerAddresses)
    assert.equal(tostring(port:getHost()), tostring(cf.peerAddresses[1]))
    assert.equal(port:getHost(), cf.proto.transport:getPeer())
    connector:disconnect()
    loop.wait(serverConnectionLost)
    stop(port)
  end)
end)

describe("WriteDataTests (twisted/test/test_tcp.py)", function()
  it("test_writer", function()
    local problems, done = {}, false
    local Writer = Protocol:extend("WriterProtocol")
    function Writer:connectionMade()
      self.transport:write("Hello Cleveland!\n")
      self.transport:writeSequence({ "Goodbye", " cruel", " world", "\n" })
      if self.transport:getPeer().type ~= "TCP" then problems[#problems + 1] = "peer" end
      if self.transport:getHost().type ~= "TCP" then problems[#problems + 1] = "host" end
      done = true
      self.transport:loseConnection()
    end
    local sf = server_factory(Writer)
    sf.protocolConnectionLost = defer.Deferred()
    local port = listen(sf)
    local cf = client_factory()
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    loop.wait(cf.deferred)
    assert.is_true(done)
    assert.same({}, problems)
    assert.equal(1, cf.proto.closed)
    assert.equal("Hello Cleveland!\nGoodbye cruel world\n", cf.proto.data)
    stop(port)
  end)

  it("test_writeAfterShutdownWithoutReading", function()
    local clientPaused, serverLost = defer.Deferred(), defer.Deferred()
    local Disconnecter = Protocol:extend("Disconnecter")
    function Disconnecter:connectionMade()
      clientPaused:addCallback(function() self.transport:loseConnection() end)
    end
    function Disconnecter:connectionLost() serverLost:callback(nil) end
    local sf = Factory.forProtocol(Disconnecter)
    sf.noisy = false
    local port = listen(sf)
    local UnreadingWriter = Protocol:extend("UnreadingWriter")
    function UnreadingWriter:connectionMade()
      self.transport:pauseProducing()
      clientPaused:callback(nil)
      serverLost:addCallback(function()
        local t = self.transport
        -- Twisted's Infinite pull producer: one byte per resumeProducing
        t:registerProducer({
          resumeProducing = function() t:write("x") end,
          stopProducing = function() end,
        }, false)
      end)
    end
    local cf = client_factory(UnreadingWriter)
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    loop.wait(cf.deferred)
    assert.is_truthy(cf.lostReason:check(errors.ConnectionLost), tostring(cf.lostReason))
    stop(port)
  end)
end)

describe("ProperlyCloseFilesTests (twisted/test/test_tcp.py)", function()
  it("test_properlyCloseFiles", function()
    local onServerLost, onClientLost = defer.Deferred(), defer.Deferred()
    local Notifying = Protocol:extend("ConnectionLostNotifyingProtocol")
    function Notifying:connectionLost(reason)
      self.lostConnectionReason = reason
      self.onConnectionLost:callback(self)
    end
    local sf = Factory()
    sf.noisy = false
    function sf:buildProtocol()
      local p = Notifying()
      p.onConnectionLost = onServerLost
      return p
    end
    local port = listen(sf)
    local made = defer.Deferred()
    local cf = ClientFactory()
    cf.noisy = false
    function cf:buildProtocol()
      local p = Notifying()
      p.onConnectionLost = onClientLost
      function p.connectionMade(proto)
        proto.handle = proto.transport:fileno()
        made:callback(proto)
      end
      return p
    end
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    local client = loop.wait(made)
    assert.is_true(client.handle >= 0)
    client.transport:write("some bytes to make sure the connection is set up")
    client.transport:loseConnection()
    local r = both(onClientLost, onServerLost)
    assert.is_truthy(r[1].lostConnectionReason:check(errors.ConnectionClosed))
    assert.is_truthy(r[2].lostConnectionReason:check(errors.ConnectionClosed))
    -- the socket is closed: the transport has no descriptor any more
    assert.equal(-1, client.transport:fileno())
    stop(port)
  end)
end)

describe("AddressTests (twisted/test/test_tcp.py)", function()
  it("test_buildProtocolClient", function()
    local function remembering(factory)
      local w = ClientFactory()
      w.noisy = false
      w.addresses = {}
      function w:buildProtocol(addr)
        self.addresses[#self.addresses + 1] = addr
        return factory:buildProtocol(addr)
      end
      function w:clientConnectionLost(...) return factory:clientConnectionLost(...) end
      return w
    end
    local server = server_factory()
    local serverConnMade, serverConnLost = defer.Deferred(), defer.Deferred()
    server.protocolConnectionMade, server.protocolConnectionLost = serverConnMade, serverConnLost
    local client = client_factory()
    local clientConnMade, clientConnLost = defer.Deferred(), defer.Deferred()
    client.protocolConnectionMade, client.protocolConnectionLost = clientConnMade, clientConnLost
    local serverWrapper, clientWrapper = remembering(server), remembering(client)
    local port = listen(serverWrapper)
    local connector = reactor.connectTCP(port:getHost().host, port:getHost().port, clientWrapper)
    both(serverConnMade, clientConnMade)
    local serverHost = server.proto.transport:getHost()
    local clientPeer = client.proto.transport:getPeer()
    assert.same({ address.IPv4Address("TCP", serverHost.host, serverHost.port) }, clientWrapper.addresses)
    assert.same({ address.IPv4Address("TCP", clientPeer.host, clientPeer.port) }, clientWrapper.addresses)
    connector:disconnect()
    both(serverConnLost, clientConnLost)
    stop(port)
  end)
end)

describe("LargeBufferTests (twisted/test/test_tcp.py)", function()
  it("testWriter", function()
    local datalen = 60 * 1024 * 1024
    local done = false
    local Writer = Protocol:extend("LargeBufferWriterProtocol")
    function Writer:connectionMade()
      self.transport:write(string.rep("X", datalen - 1))
      reactor.callLater(0.001, function()
        self.transport:write("X")
        done = true
        self.transport:loseConnection()
      end)
    end
    local sf = Factory.forProtocol(Writer)
    sf.noisy = false
    local port = listen(sf)
    local n, clientDone = 0, defer.Deferred()
    local Reader = Protocol:extend("LargeBufferReaderProtocol")
    function Reader:dataReceived(data) n = n + #data end
    function Reader:connectionLost() clientDone:callback(nil) end
    local cf = ClientFactory.forProtocol(Reader)
    cf.noisy = false
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    loop.wait(clientDone, 20)
    assert.is_true(done)
    assert.equal(datalen, n)
    stop(port)
  end)
end)

-- Twisted's MyHCProtocol: an AccumulatingProtocol told of half-closes
local HC = Accumulating:extend("MyHCProtocol")
function HC:init()
  Accumulating.init(self)
  self.readHalfClosed, self.writeHalfClosed = false, false
end
function HC:readConnectionLost()
  self.readHalfClosed = true
  if self.writeHalfClosed then self:connectionLost(nil) end
end
function HC:writeConnectionLost()
  self.writeHalfClosed = true
  if self.readHalfClosed then self:connectionLost(nil) end
end

-- a server of P and a connected client of C: port, server factory, client
local function pair(P, C)
  local f = server_factory(P)
  f.protocolConnectionMade = defer.Deferred()
  local port = listen(f)
  local made = defer.Deferred()
  local cf = ClientFactory()
  cf.noisy = false
  function cf:buildProtocol()
    local p = C()
    local cm = p.connectionMade
    p.connectionMade = function(proto)
      cm(proto)
      made:callback(proto)
    end
    return p
  end
  reactor.connectTCP(port:getHost().host, port:getHost().port, cf)
  local r = both(f.protocolConnectionMade, made)
  return port, f, r[2]
end

describe("HalfCloseTests (twisted/test/test_tcp.py)", function()
  local port, f, client
  before_each(function()
    port, f, client = pair(HC, HC)
    client.closedDeferred = defer.Deferred()
    assert.is_true(client.transport.connected)
  end)
  after_each(function()
    assert.equal(0, client.closed)
    local clientLost = client.closedDeferred
    client.transport:loseConnection()
    loop.wait(port:stopListening())
    loop.wait(clientLost)
    assert.equal(1, client.closed)
    assert.equal(0, f.proto.closed)
    local d = defer.Deferred()
    f.proto.connectionLost = function(p)
      p.closed = 1
      d:callback(nil)
    end
    f.proto.transport:loseConnection()
    loop.wait(d)
    assert.equal(1, f.proto.closed)
  end)

  it("testCloseWriteCloser", function()
    local t = client.transport
    t:write("hello")
    loop.spin(function() return t:getWriteBufferSize() == 0 end)
    t:loseWriteConnection()
    loop.spin(function() return client.writeHalfClosed end)
    assert.equal(0, client.closed)
    assert.is_true(client.writeHalfClosed)
    assert.is_false(client.readHalfClosed)
    loop.spin(function() return f.proto.readHalfClosed end)
    t:write(" world")
    t:write("lalala fooled you")
    assert.equal(0, t:getWriteBufferSize())
    assert.equal("hello", f.proto.data)
    assert.equal(0, f.proto.closed)
    assert.is_true(f.proto.readHalfClosed)
  end)

  it("testWriteCloseNotification", function()
    f.proto.transport:loseWriteConnection()
    loop.spin(function() return f.proto.writeHalfClosed and client.readHalfClosed end)
    assert.is_false(f.proto.readHalfClosed)
  end)
end)

describe("HalfCloseNoNotificationAndShutdownExceptionTests (twisted/test/test_tcp.py)", function()
  local port, f, client
  before_each(function() port, f, client = pair(Accumulating, Accumulating) end)
  after_each(function()
    client.transport:loseConnection()
    loop.wait(port:stopListening())
  end)

  it("testNoNotification", function()
    client.transport:write("hello")
    client.transport:loseWriteConnection()
    local d, d2 = defer.Deferred(), defer.Deferred()
    f.proto.closedDeferred, client.closedDeferred = d, d2
    both(d, d2)
    assert.equal("hello", f.proto.data)
    assert.equal(1, f.proto.closed)
  end)

  it("testShutdownException", function()
    f.proto.transport:loseConnection()
    client.transport:write("X")
    client.transport:loseWriteConnection()
    local d, d2 = defer.Deferred(), defer.Deferred()
    f.proto.closedDeferred, client.closedDeferred = d, d2
    both(d, d2)
    assert.equal(1, f.proto.closed)
  end)
end)

describe("HalfCloseBuggyApplicationTests (twisted/test/test_tcp.py)", function()
  local port, f, client
  before_each(function() port, f, client = pair(HC, HC) end)
  after_each(function() stop(port) end)
  local function aBug() error(errors.RuntimeError("ONO I AM BUGGY CODE")) end
  local function notificationRaises()
    local closed = defer.Deferred()
    client.closedDeferred = closed
    client.transport:loseWriteConnection()
    loop.wait(closed)
    assert.equal(1, #testing.flushLoggedErrors(errors.RuntimeError))
  end

  it("test_readNotificationRaises", function()
    f.proto.readConnectionLost = aBug
    notificationRaises()
  end)

  it("test_writeNotificationRaises", function()
    client.writeConnectionLost = aBug
    notificationRaises()
  end)
end)

describe("LogTests (twisted/test/test_tcp.py)", function()
  it("test_logstrClientSetup", function()
    local server = server_factory()
    local client = client_factory()
    client.protocolConnectionMade = defer.Deferred()
    local port = listen(server)
    local connector = reactor.connectTCP(port:getHost().host, port:getHost().port, client)
    -- braid's connector has its transport once connected (docs/tcp.md); the
    -- client transport's system before then, Twisted's logstr, is what
    -- buildProtocol runs under
    assert.is_nil(connector.transport)
    local build, system = client.buildProtocol, nil
    function client:buildProtocol(addr)
      system = log.getSystem()
      return build(self, addr)
    end
    local proto = loop.wait(client.protocolConnectionMade)
    assert.equal("Uninitialized", system)
    assert.equal("AccumulatingProtocol,client", connector.transport:logPrefix())
    assert.equal("AccumulatingProtocol,client", proto.transport:logPrefix())
    connector:disconnect()
    loop.wait(client.deferred)
    stop(port)
  end)
end)

describe("PauseProducingTests (twisted/test/test_tcp.py)", function()
  it("test_pauseProducingInConnectionMade", function()
    local Talker = Protocol:extend("Talker")
    function Talker:connectionMade() self.transport:write("hello") end
    local server = server_factory(Talker)
    local client = client_factory()
    client.protocolConnectionMade = defer.Deferred()
    local port = listen(server)
    local connector = reactor.connectTCP(port:getHost().host, port:getHost().port, client)
    local proto = loop.wait(client.protocolConnectionMade)
    local tr = proto.transport
    local function watched(list)
      for _, v in ipairs(list) do if v == tr then return true end end
      return false
    end
    assert.is_false(tr.paused)
    -- the transport is already monitored
    assert.is_true(watched(reactor.getReaders()) or watched(reactor.getWriters()))
    tr:pauseProducing()
    assert.is_true(tr.paused)
    assert.is_false(watched(reactor.getReaders()))
    local later = defer.Deferred()
    reactor.callLater(0, later.callback, later, proto)
    loop.wait(later)
    for _ = 1, 5 do reactor.iterate(0) end
    assert.is_true(tr.paused)
    assert.is_false(watched(reactor.getReaders()))  -- still not monitored
    assert.equal("", proto.data)  -- the server's bytes are not read while paused
    tr:resumeProducing()
    loop.spin(function() return proto.data == "hello" end)
    connector:disconnect()
    loop.wait(client.deferred)
    stop(port)
  end)
end)

describe("CallBackOrderTests (twisted/test/test_tcp.py)", function()
  it("test_loseOrder", function()
    local server = server_factory()
    local client = client_factory()
    local order = {}
    client.protocolConnectionLost = defer.Deferred():addCallback(function() order[#order + 1] = "CL" end)
    client.deferred:addCallback(function() order[#order + 1] = "CCL" end)
    client.protocolConnectionMade = defer.Deferred():addCallback(function(p)
      reactor.callLater(0, function() p.transport:loseConnection() end)
    end)
    local port = listen(server)
    reactor.connectTCP(port:getHost().host, port:getHost().port, client)
    loop.wait(client.deferred)
    assert.same({ "CL", "CCL" }, order)
    stop(port)
  end)
end)

-- Twisted's getConnectedClientAndServer: a connected MyClientFactory /
-- MyServerFactory pair on `interface`; returns client, server, port and a
-- Deferred firing once both have lost the connection.
local function connected_pair(interface)
  interface = interface or "127.0.0.1"
  local server, client = server_factory(), client_factory()
  server.protocolConnectionMade, server.protocolConnectionLost = defer.Deferred(), defer.Deferred()
  client.protocolConnectionMade, client.protocolConnectionLost = defer.Deferred(), defer.Deferred()
  local port = reactor.listenTCP(0, server, 50, interface)
  local lost = defer.gatherResults({ client.protocolConnectionLost, server.protocolConnectionLost })
  local made = defer.gatherResults({ client.protocolConnectionMade, server.protocolConnectionMade })
  reactor.connectTCP(interface, port:getHost().port, client)
  local r = loop.wait(made)
  return r[1], r[2], port, lost
end

describe("TCPConnectorTestsBuilder (twisted/internet/test/test_tcp.py)", function()
  local Closing = Protocol:extend("ClosingProtocol")
  function Closing:connectionMade() self.transport:loseConnection() end

  it("test_connectorIdentity", function()
    local sf = Factory.forProtocol(Closing)
    sf.noisy = false
    local tcpPort = listen(sf)
    local portNumber = tcpPort:getHost().port
    local seenConnectors, seenFailures = {}, {}
    local cf = client_factory()
    local whenStopped = defer.Deferred()
    function cf:stopFactory() whenStopped:callback(nil) end
    function cf:clientConnectionLost(connector, reason)
      seenConnectors[#seenConnectors + 1] = connector
      seenFailures[#seenFailures + 1] = reason
    end
    function cf:startedConnecting(connector) seenConnectors[#seenConnectors + 1] = connector end
    local connector = reactor.connectTCP("127.0.0.1", portNumber, cf)
    local dest = connector:getDestination()
    assert.equal("TCP", dest.type)
    assert.equal("127.0.0.1", dest.host)
    assert.equal(portNumber, dest.port)
    loop.wait(whenStopped)
    assert.is_truthy(seenFailures[1]:check(errors.ConnectionDone))
    assert.equal(2, #seenConnectors)
    assert.equal(connector, seenConnectors[1])
    assert.equal(connector, seenConnectors[2])
    stop(tcpPort)
  end)

  it("test_userFail", function()
    local tcpPort = listen(server_factory())
    local fatal
    local cf = client_factory()
    local whenStopped = defer.Deferred()
    function cf:stopFactory() whenStopped:callback(nil) end
    function cf:startedConnecting(connector)
      local ok, e = pcall(connector.stopConnecting, connector)
      if not ok then fatal = e end
    end
    reactor.connectTCP("127.0.0.1", tcpPort:getHost().port, cf)
    loop.wait(whenStopped)
    assert.is_nil(fatal)
    assert.is_truthy(cf.reason:check(errors.UserError))
    assert.equal(1, cf.failed)
    stop(tcpPort)
  end)

  it("test_reconnect", function()
    local sf = Factory.forProtocol(Closing)
    sf.noisy = false
    local tcpPort = listen(sf)
    local portNumber = tcpPort:getHost().port
    local cf = client_factory()
    function cf:clientConnectionLost(connector)
      -- the port is gone by now: the new attempt is refused
      tcpPort:stopListening():addCallback(function() connector:connect() end)
    end
    reactor.connectTCP("127.0.0.1", portNumber, cf)
    loop.wait(cf.failDeferred)
    assert.is_truthy(cf.reason:check(errors.ConnectionRefusedError))
    assert.same({ 1, 1 }, { cf.proto.made, cf.proto.closed })
  end)
end)

describe("TCPConnectionTestsBuilder (twisted/internet/test/test_tcp.py)", function()
  it("test_stopStartReading", function()
    local ready, stopped = defer.Deferred(), defer.Deferred()
    local SSR = Protocol:extend("StopStartReadingProtocol")
    function SSR:connectionMade()
      self.data = ""
      self:pauseResumeProducing(3)
    end
    function SSR:pauseResumeProducing(counter)
      self.transport:pauseProducing()
      self.transport:resumeProducing()
      if counter > 0 then
        reactor.callLater(0, self.pauseResumeProducing, self, counter - 1)
      else
        reactor.callLater(0, ready.callback, ready, self)
      end
    end
    function SSR:dataReceived(data)
      self.data = self.data .. data
      if #self.data == 4 * 4096 then stopped:callback(self.data) end
    end
    local sf = Factory.forProtocol(SSR)
    sf.noisy = false
    local p = listen(sf)
    local made = defer.Deferred()
    local C = Protocol:extend("C")
    function C:connectionMade() made:callback(self) end
    local cf = ClientFactory.forProtocol(C)
    cf.noisy = false
    reactor.connectTCP("127.0.0.1", p:getHost().port, cf)
    local r = both(made, ready)
    r[1].transport:write(string.rep("x", 2 * 4096) .. string.rep("y", 2 * 4096))
    assert.equal(string.rep("x", 2 * 4096) .. string.rep("y", 2 * 4096), loop.wait(stopped))
    r[1].transport:loseConnection()
    r[2].transport:loseConnection()
    stop(p)
  end)

  -- oneTransportTest: run test(server transport) in the server's
  -- connectionMade, then drop both ends
  local function one_transport(test)
    local done = defer.Deferred()
    local S = Protocol:extend("ServerProtocol")
    function S:connectionMade()
      local ok, e = pcall(test, self.transport)
      self.transport:loseConnection()
      done:callback({ ok, e })
    end
    local sf = Factory.forProtocol(S)
    sf.noisy = false
    local port = listen(sf)
    local cf = client_factory(Protocol)
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    local r = loop.wait(done)
    loop.wait(cf.deferred)
    stop(port)
    if not r[1] then error(r[2], 0) end
  end

  it("test_resumeProducing", function()
    one_transport(function(server)
      server:pauseProducing()
      assert.is_true(server.paused)
      server:resumeProducing()
      assert.is_false(server.paused)
    end)
  end)

  it("test_resumeProducingWhileDisconnecting", function()
    one_transport(function(server)
      server:loseConnection()
      server:resumeProducing()
      assert.is_true(server.disconnecting)
    end)
  end)

  it("test_connectionLostAfterPausedTransport", function()
    local events, lost = {}, defer.Deferred()
    local Pauser = Protocol:extend("Pauser")
    function Pauser:dataReceived()
      events[#events + 1] = "paused"
      self.transport:pauseProducing()
      reactor.callLater(0, function()
        events[#events + 1] = "resumed"
        self.transport:resumeProducing()
      end)
    end
    function Pauser:connectionLost()
      events[#events + 1] = "lost"
      lost:callback(nil)
    end
    local sf = Factory.forProtocol(Pauser)
    sf.noisy = false
    local port = listen(sf)
    local Client = Protocol:extend("Client")
    function Client:connectionMade()
      self.transport:write("some bytes for you")
      self.transport:loseConnection()
    end
    local cf = ClientFactory.forProtocol(Client)
    cf.noisy = false
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    loop.wait(lost)
    assert.same({ "paused", "resumed", "lost" }, events)
    stop(port)
  end)

  it("test_doubleHalfClose", function()
    local lost = defer.Deferred()
    local Listener = Protocol:extend("ListenerProtocol")
    function Listener:readConnectionLost() self.transport:loseWriteConnection() end
    function Listener:writeConnectionLost() self.transport:loseConnection() end
    function Listener:connectionLost(reason) lost:callback({ reason }) end
    local sf = Factory.forProtocol(Listener)
    sf.noisy = false
    local port = listen(sf)
    local Client = Protocol:extend("Client")
    function Client:connectionMade() self.transport:loseConnection() end
    local cf = client_factory(Client)
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    local reason = loop.wait(lost)[1]
    assert.is_truthy(reason:check(errors.ConnectionDone))
    loop.wait(cf.deferred)
    stop(port)
  end)
end)

describe("TCPTransportTestsBuilder (twisted/internet/test/test_tcp.py)", function()
  it("test_writeSequeceWithoutWrite", function()
    local client, server, port, lost = connected_pair()
    local got
    function server.dataReceived(_, data)
      got = data
      client.transport:loseConnection()
    end
    client.transport:writeSequence({ "Some ", "sequence ", "splitted" })
    loop.wait(lost)
    assert.equal("Some sequence splitted", got)
    stop(port)
  end)

  it("test_nonStreamingProducer", function()
    local client, _, port, lost = connected_pair()
    local actions, count = {}, 0
    local producer = {
      resumeProducing = function()
        actions[#actions + 1] = "resume"
        count = count + 1
        if count == 2 then
          client.transport:stopConsuming()
        else
          client.transport.bufferSize = 500
          local seq = {}
          for i = 1, 20 do seq[i] = string.rep("x", 50) end
          client.transport:writeSequence(seq)
        end
      end,
      stopProducing = function() actions[#actions + 1] = "stop" end,
    }
    client.transport:registerProducer(producer, false)
    assert.same({ "resume" }, actions)
    loop.wait(lost)
    assert.same({ "resume", "resume" }, actions)
    stop(port)
  end)

  it("test_serverAddressTCP4", function()
    local _, server, port, lost = connected_pair("127.0.0.1")
    assert.equal("AccumulatingProtocol," .. server.transport.sessionno .. ",127.0.0.1",
      server.transport:logPrefix())
    local peers = server.factory.peerAddresses
    assert.equal(1, #peers)
    assert.equal(getmetatable(address.IPv4Address("TCP", "h", 1)), getmetatable(peers[1]))
    assert.equal("TCP", peers[1].type)
    assert.equal("127.0.0.1", peers[1].host)
    server.transport:loseConnection()
    loop.wait(lost)
    stop(port)
  end)
end)

-- Twisted's ConnectableProtocol and runProtocolsWithReactor: one server and
-- one client protocol instance connected over TCP (or UNIX, given a path);
-- returns once both connections are lost.
local Connectable = Protocol:extend("ConnectableProtocol")
function Connectable:connectionLost(reason)
  self.disconnectReason = reason
  local d = self._done
  self._done = nil
  d:callback(nil)
end

local function run_protocols(server, client, path)
  server._done, client._done = defer.Deferred(), defer.Deferred()
  local function single(p)
    local f = ClientFactory()
    f.noisy = false
    function f.buildProtocol() return p end
    return f
  end
  local port
  if path then
    port = reactor.listenUNIX(path, single(server))
    reactor.connectUNIX(path, single(client))
  else
    port = listen(single(server))
    reactor.connectTCP("127.0.0.1", port:getHost().port, single(client))
  end
  loop.wait(defer.gatherResults({ server._done, client._done }), 10)
  loop.wait(port:stopListening())
end

describe("AbortConnectionTests (twisted/internet/test/test_tcp.py)", function()
  local ZeroDivisionError = errors.class("ZeroDivisionError")
  local function sub(name, fields)
    local C = Connectable:extend(name)
    for k, v in pairs(fields or {}) do C[k] = v end
    return C
  end
  local ServerAbortsTwice = sub("ServerAbortsTwice", {
    dataReceived = function(self)
      self.transport:abortConnection()
      self.transport:abortConnection()
    end })
  local ServerAbortsThenLoses = sub("ServerAbortsThenLoses", {
    dataReceived = function(self)
      self.transport:abortConnection()
      self.transport:loseConnection()
    end })
  local AbortServerWriting = sub("AbortServerWritingProtocol", {
    connectionMade = function(self) self.transport:write("ready") end })
  local ReadAbortServer = AbortServerWriting:extend("ReadAbortServerProtocol")
  function ReadAbortServer:dataReceived(data)
    if data:gsub("X", "") ~= "" then error(errors.Error("Unexpectedly received data.")) end
  end
  local NoReadServer = sub("NoReadServer", {
    connectionMade = function(self) self.transport:stopReading() end })
  local EventualNoReadServer = sub("EventualNoReadServer", {
    dataReceived = function(self)
      if not self.gotData then
        self.gotData = true
        self.transport:registerProducer(self, false)
        self.transport:write("hello")
      end
    end,
    resumeProducing = function(self)
      if self.stoppedReading then return end
      self.stoppedReading = true
      self.transport:stopReading()
    end,
    pauseProducing = function() end,
    stopProducing = function() end,
  })
  local BaseAborting = sub("BaseAbortingClient", {
    connectionLost = function(self, reason)
      if self.inReactorMethod then error(errors.RuntimeError("BUG: connectionLost was called re-entrantly!")) end
      Connectable.connectionLost(self, reason)
    end })
  local WritingButNotAborting = BaseAborting:extend("WritingButNotAbortingClient")
  function WritingButNotAborting:connectionMade() self.transport:write("hello") end
  local Aborting = BaseAborting:extend("AbortingClient")
  function Aborting:dataReceived()
    self.inReactorMethod = true
    self:writeAndAbort()
    self.inReactorMethod = false
  end
  function Aborting:writeAndAbort()
    self.transport:write(string.rep("X", 10000))
    self.transport:abortConnection()
    self.transport:write(string.rep("Y", 10000))
  end
  local AbortingTwice = Aborting:extend("AbortingTwiceClient")
  function AbortingTwice:writeAndAbort()
    Aborting.writeAndAbort(self)
    self.transport:abortConnection()
  end
  local AbortingThenLosing = Aborting:extend("AbortingThenLosingClient")
  function AbortingThenLosing:writeAndAbort()
    Aborting.writeAndAbort(self)
    self.transport:loseConnection()
  end
  local ProducerAborting = sub("ProducerAbortingClient", {
    inReactorMethod = true,
    producerStopped = false,
    write = function(self)
      self.transport:write(string.rep("lalala", 127000))
      self.inRegisterProducer = true
      self.transport:registerProducer(self, false)
      self.inRegisterProducer = false
    end,
    connectionMade = function(self) self:write() end,
    resumeProducing = function(self)
      self.inReactorMethod = true
      if not self.inRegisterProducer then self.transport:abortConnection() end
      self.inReactorMethod = false
    end,
    stopProducing = function(self) self.producerStopped = true end,
    connectionLost = function(self, reason)
      if not self.producerStopped then error(errors.RuntimeError("BUG: stopProducing() was never called.")) end
      if self.inReactorMethod then error(errors.RuntimeError("BUG: connectionLost called re-entrantly!")) end
      Connectable.connectionLost(self, reason)
    end,
  })
  local ProducerAbortingLater = ProducerAborting:extend("ProducerAbortingClientLater")
  function ProducerAbortingLater:connectionMade() end
  function ProducerAbortingLater:dataReceived() self:write() end
  local StreamingProducer = sub("StreamingProducerClient", {
    paused = false,
    connectionMade = function(self) self:write() end,
    write = function(self)
      self.transport:registerProducer(self, true)
      local chunk = string.rep("1234567890", 32000)
      for _ = 1, 100 do self.transport:write(chunk) end
    end,
    resumeProducing = function(self) self.paused = false end,
    stopProducing = function() end,
    pauseProducing = function(self)
      if self.paused then return end
      self.paused = true
      reactor.callLater(0.01, function()
        if not self.paused then log.err(errors.RuntimeError("BUG: We should be paused a this point.")) end
        self.inReactorMethod = true
        self.transport:abortConnection()
        self.inReactorMethod = false
      end)
    end,
    connectionLost = function(self, reason)
      self.otherProtocol.transport:resumeProducing()
      Connectable.connectionLost(self, reason)
    end,
  })
  local StreamingProducerLater = StreamingProducer:extend("StreamingProducerClientLater")
  function StreamingProducerLater:connectionMade()
    self.transport:write("hello")
    self.gotData = false
  end
  function StreamingProducerLater:dataReceived()
    if not self.gotData then
      self.gotData = true
      self:write()
    end
  end
  local DataReceivedRaising = Aborting:extend("DataReceivedRaisingClient")
  function DataReceivedRaising:dataReceived()
    self.transport:abortConnection()
    error(ZeroDivisionError("ONO"))
  end
  local ResumeThrows = ProducerAborting:extend("ResumeThrowsClient")
  function ResumeThrows:resumeProducing()
    if not self.inRegisterProducer then
      self.transport:abortConnection()
      error(ZeroDivisionError("ono!"))
    end
  end
  function ResumeThrows:connectionLost(reason) Connectable.connectionLost(self, reason) end

  local function isany(v, classes)
    for _, c in ipairs(classes) do
      if errors.isinstance(v, c) then return true end
    end
    return false
  end

  local function runAbortTest(clientClass, serverClass, clientReason)
    local client, server = clientClass(), serverClass()
    client.otherProtocol, server.otherProtocol = server, client
    run_protocols(server, client)
    assert.same({}, reactor.removeAll())
    local expected = { errors.ConnectionAborted, errors.ConnectionLost }
    if clientReason then table.insert(expected, 1, clientReason) end
    assert.is_true(isany(client.disconnectReason.value, expected), tostring(client.disconnectReason.value))
    assert.is_true(isany(server.disconnectReason.value, { errors.ConnectionLost, errors.ConnectionDone }),
      tostring(server.disconnectReason.value))
  end

  it("test_dataReceivedAbort", function() runAbortTest(Aborting, ReadAbortServer) end)
  it("test_clientAbortsConnectionTwice", function() runAbortTest(AbortingTwice, ReadAbortServer) end)
  it("test_clientAbortsConnectionThenLosesConnection", function()
    runAbortTest(AbortingThenLosing, ReadAbortServer)
  end)
  it("test_serverAbortsConnectionTwice", function()
    runAbortTest(WritingButNotAborting, ServerAbortsTwice, errors.ConnectionLost)
  end)
  it("test_serverAbortsConnectionThenLosesConnection", function()
    runAbortTest(WritingButNotAborting, ServerAbortsThenLoses, errors.ConnectionLost)
  end)
  it("test_resumeProducingAbort", function() runAbortTest(ProducerAborting, Connectable) end)
  it("test_resumeProducingAbortLater", function() runAbortTest(ProducerAbortingLater, AbortServerWriting) end)
  it("test_fullWriteBuffer", function() runAbortTest(StreamingProducer, NoReadServer) end)
  it("test_fullWriteBufferAfterByteExchange", function()
    runAbortTest(StreamingProducerLater, EventualNoReadServer)
  end)
  it("test_dataReceivedThrows", function()
    runAbortTest(DataReceivedRaising, AbortServerWriting, ZeroDivisionError)
    assert.equal(1, #testing.flushLoggedErrors(ZeroDivisionError))
  end)
  it("test_resumeProducingThrows", function()
    runAbortTest(ResumeThrows, Connectable, ZeroDivisionError)
    assert.equal(1, #testing.flushLoggedErrors(ZeroDivisionError))
  end)
end)

-- ConnectionTestsMixin (connectionmixins.py) runs for TCP
-- (TCPClientTestsBuilder) and for UNIX (UNIXTestsBuilder): so do these.
local function sock_path() return tmp.path(".sock") end

-- Twisted's ClosingLaterProtocol: closes when data comes
local ClosingLater = Protocol:extend("ClosingLaterProtocol")
function ClosingLater:init(onConnectionLost) self.onConnectionLost = onConnectionLost end
function ClosingLater:dataReceived() self.transport:loseConnection() end
function ClosingLater:connectionLost(reason)
  self.lostConnectionReason = reason
  self.onConnectionLost:callback(self)
end

for _, family in ipairs({ "TCP", "UNIX" }) do
  -- listen(factory) -> port, address; connect(port, factory) -> connector
  local function do_listen(f)
    if family == "TCP" then return listen(f) end
    return reactor.listenUNIX(sock_path(), f)
  end
  local function do_connect(port, f)
    if family == "TCP" then return reactor.connectTCP("127.0.0.1", port:getHost().port, f) end
    return reactor.connectUNIX(port:getHost().name, f)
  end
  local function factory_of(make)
    local f = ClientFactory()
    f.noisy = false
    function f.buildProtocol() return make() end
    return f
  end

  describe(("ConnectionTestsMixin (connectionmixins.py, %s)"):format(family), function()
    it("test_logPrefix", function()
      local Custom = Connectable:extend("CustomLogPrefixProtocol")
      function Custom:init(prefix) self._prefix = prefix end
      function Custom:connectionMade() self.transport:write("a") end
      function Custom:logPrefix() return self._prefix end
      function Custom:dataReceived(bytes)
        self.system = log.getSystem()
        self.transport:write("b")
        if bytes:find("b", 1, true) then self.transport:loseConnection() end
      end
      local client, server = Custom("Custom Client"), Custom("Custom Server")
      run_protocols(server, client, family == "UNIX" and sock_path() or nil)
      assert.truthy(client.system:find("Custom Client", 1, true), client.system)
      assert.truthy(server.system:find("Custom Server", 1, true), server.system)
    end)

    it("test_writeAfterDisconnect", function()
      local finished = {}
      local serverLost, clientLost = defer.Deferred(), defer.Deferred()
      local port = do_listen(factory_of(function() return ClosingLater(serverLost) end))
      local connected = defer.Deferred()
      local cf = factory_of(function()
        local p = ClosingLater(clientLost)
        function p.connectionMade(proto) connected:callback(proto) end
        return p
      end)
      do_connect(port, cf)
      loop.wait(connected).transport:write("x")
      local function disconnected(proto)
        proto.transport:write("some bytes to get lost")
        proto.transport:writeSequence({ "some", "more" })
        finished[#finished + 1] = true
      end
      clientLost:addCallback(disconnected)
      serverLost:addCallback(disconnected)
      loop.wait(defer.gatherResults({ clientLost, serverLost }))
      assert.same({ true, true }, finished)
      stop(port)
    end)

    it("test_protocolGarbageAfterLostConnection", function()
      local lost = defer.Deferred()
      local refs = setmetatable({}, { __mode = "v" })
      local sf = Factory.forProtocol(Protocol)
      sf.noisy = false
      local port = do_listen(sf)
      do
        local clientProtocol = ClosingLater(lost)
        refs[1] = clientProtocol
        function clientProtocol.connectionMade(proto) proto.transport:loseConnection() end
        do_connect(port, factory_of(function() return clientProtocol end))
      end
      lost:addCallback(function() return nil end)
      loop.wait(lost)
      stop(port)
      -- a turn for the transport's close to be delivered all the way
      for _ = 1, 3 do reactor.iterate(0) end
      collectgarbage()
      collectgarbage()
      assert.is_nil(refs[1])
    end)
  end)

  describe(("StreamClientTestsMixin (connectionmixins.py, %s)"):format(family), function()
    it("test_clientConnectionFailedStopsReactor", function()
      local failed = defer.Deferred()
      local f = ClientFactory()
      f.noisy = false
      function f:clientConnectionFailed(_, reason) failed:callback({ reason }) end
      if family == "TCP" then
        local port = listen(Factory.forProtocol(Protocol))
        local n = port:getHost().port
        stop(port)
        reactor.connectTCP("127.0.0.1", n, f)
      else
        reactor.connectUNIX(sock_path(), f)
      end
      local reason = loop.wait(failed)[1]
      assert.is_truthy(reason:check(errors.ConnectError))
    end)

    it("test_connectEvent", function()
      local sf = Factory.forProtocol(Protocol)
      sf.noisy = false
      local port = do_listen(sf)
      local connected = defer.Deferred()
      local Check = Protocol:extend("CheckConnection")
      function Check:connectionMade() connected:callback(self) end
      local cf = client_factory(Check)
      do_connect(port, cf)
      local p = loop.wait(connected)
      assert.truthy(p)
      p.transport:loseConnection()
      loop.wait(cf.deferred)
      stop(port)
    end)

    it("test_unregisterProducerAfterDisconnect", function()
      local Closing = Protocol:extend("ClosingProtocol")
      function Closing:connectionMade() self.transport:loseConnection() end
      local sf = Factory.forProtocol(Closing)
      sf.noisy = false
      local port = do_listen(sf)
      local finished = defer.Deferred()
      local C = Protocol:extend("ClientProtocol")
      function C:connectionMade()
        local t = self.transport
        t:registerProducer({
          resumeProducing = function() t:write("x") end,
          stopProducing = function() end,
        }, false)
        t:loseConnection()
      end
      function C:connectionLost()
        local ok, e = pcall(self.transport.unregisterProducer, self.transport)
        finished:callback({ ok, e, self.transport:getWriteBufferSize() })
      end
      do_connect(port, factory_of(C))
      local r = loop.wait(finished)
      assert.is_true(r[1], tostring(r[2]))
      assert.equal(0, r[3])
      stop(port)
    end)
  end)
end

describe("UNIXTestsBuilder (twisted/internet/test/test_unix.py)", function()
  it("test_connectToLinuxAbstractNamespace", function()
    local path = "\0braid-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    local f = ClientFactory()
    f.noisy = false
    local failed = defer.Deferred()
    function f:clientConnectionFailed() failed:callback(nil) end
    local connector = reactor.connectUNIX(path, f)
    assert.equal(address.UNIXAddress(path), connector:getDestination())
    loop.wait(failed)
  end)

  it("test_addresses", function()
    local Save = Connectable:extend("SaveAddress")
    function Save:makeConnection(transport)
      self.addresses = { host = transport:getHost(), peer = transport:getPeer() }
      transport:loseConnection()
      Protocol.makeConnection(self, transport)
    end
    local server, client = Save(), Save()
    run_protocols(server, client, sock_path())
    assert.equal(server.addresses.host, client.addresses.peer)
    assert.equal(server.addresses.peer, client.addresses.host)
    assert.equal("UNIX", client.addresses.peer.type)
  end)
end)

describe("UnixSocketTests (twisted/test/test_unix.py)", function()
  it("test_peerBind", function()
    local unix = require "socket.unix"
    local filename, peername = sock_path(), sock_path()
    local sf = server_factory()
    local connMade = defer.Deferred()
    sf.protocolConnectionMade = connMade
    local unixPort = reactor.listenUNIX(filename, sf)
    local sock = assert(unix())
    assert(sock:bind(peername))
    assert(sock:connect(filename))
    local ok, proto = pcall(loop.wait, connMade)
    sock:close()
    assert(ok, proto)
    local expected = address.UNIXAddress(peername)
    assert.same({ expected }, sf.peerAddresses)
    assert.equal(expected, proto.transport:getPeer())
    -- Twisted's server logstr: Prefix,sessionno,peer's path
    assert.equal("AccumulatingProtocol," .. proto.transport.sessionno .. "," .. peername,
      proto.transport:logPrefix())
    stop(unixPort)
  end)

  it("test_dumber", function()
    local filename = sock_path()
    local sf = server_factory()
    local serverConnMade = defer.Deferred()
    sf.protocolConnectionMade = serverConnMade
    local unixPort = reactor.listenUNIX(filename, sf)
    local cf = client_factory()
    local clientConnMade = defer.Deferred()
    cf.protocolConnectionMade = clientConnMade
    reactor.connectUNIX(filename, cf)
    local r = both(serverConnMade, clientConnMade)
    assert.same({ address.UNIXAddress(filename) }, cf.peerAddresses)
    -- an unbound client: Twisted's logstr ends with an empty host ("S,0,")
    assert.equal("AccumulatingProtocol," .. r[1].transport.sessionno .. ",", r[1].transport:logPrefix())
    assert.equal("AccumulatingProtocol,client", r[2].transport:logPrefix())
    r[2].transport:loseConnection()
    r[1].transport:loseConnection()
    loop.wait(cf.deferred)
    stop(unixPort)
  end)

  it("test_socketLocking", function()
    local filename = sock_path()
    local sf = server_factory()
    local unixPort = reactor.listenUNIX(filename, sf)
    local ok, e = pcall(reactor.listenUNIX, filename, sf)
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.CannotListenError), tostring(e))
    loop.wait(unixPort:stopListening())
    unixPort = reactor.listenUNIX(filename, sf)
    loop.wait(unixPort:stopListening())
  end)

  it("test_reprWithNewStyleFactory", function()
    local filename = sock_path()
    local NewStyle = Factory:extend("NewStyleFactory")
    local f = NewStyle()
    f.noisy = false
    local unixPort = reactor.listenUNIX(filename, f)
    assert.equal("<NewStyleFactory on '" .. filename .. "'>", tostring(unixPort))
    loop.wait(unixPort:stopListening())
    assert.equal("<NewStyleFactory (not listening)>", tostring(unixPort))
  end)
end)

for _, v in ipairs({ { "TCP4ClientTestsBuilder", "127.0.0.1", "INET", address.IPv4Address },
                     { "TCP6ClientTestsBuilder", "::1", "INET6", address.IPv6Address } }) do
  local name, interface, family, addressClass = v[1], v[2], v[3], v[4]
  describe(name .. " (twisted/internet/test/test_tcp.py)", function()
    after_each(function() reactor.installResolver(nil) end)

    it("test_addresses", function()
      local fakeDomain = "some-fake.domain.example.com"
      reactor.installResolver({
        getHostByName = function(_, n)
          if n == fakeDomain then return defer.succeed({ { family = family, host = interface } }) end
          return defer.fail(errors.DNSLookupError(n))
        end,
      })
      local sf = Factory.forProtocol(Protocol)
      sf.noisy = false
      local server = reactor.listenTCP(0, sf, 50, interface)
      local serverAddress = server:getHost()
      -- findFreePort: a port nobody uses now
      local probe = reactor.listenTCP(0, sf, 50, interface)
      local boundPort = probe:getHost().port
      loop.wait(probe:stopListening())
      local data, got = {}, defer.Deferred()
      local Check = Protocol:extend("CheckAddress")
      function Check:makeConnection(transport)
        data.host, data.peer = transport:getHost(), transport:getPeer()
        transport:loseConnection()
        got:callback(nil)
      end
      local cf = ClientFactory.forProtocol(Check)
      cf.noisy = false
      function cf:clientConnectionFailed(_, reason) got:errback(reason) end
      reactor.connectTCP(fakeDomain, serverAddress.port, cf, 30, { interface, boundPort })
      loop.wait(got)
      assert.equal(addressClass("TCP", interface, boundPort), data.host)
      assert.equal(addressClass("TCP", interface, serverAddress.port), data.peer)
      assert.equal(tostring(addressClass("TCP", interface, serverAddress.port)), tostring(data.peer))
      stop(server)
    end)
  end)
end

describe("UNIXAdoptStreamConnectionTestsBuilder (twisted/internet/test/test_unix.py)", function()
  it("test_buildProtocolReturnsNone", function()
    local unix = require "socket.unix"
    local path = sock_path()
    local l = assert(unix())
    assert(l:bind(path))
    assert(l:listen(1))
    local s1 = assert(unix())
    assert(s1:connect(path))
    local s2 = assert(l:accept())
    l:close()
    local fd = s1:getfd()
    s1:setfd(-1) -- braid owns the descriptor now
    local NoneFactory = protocol.ServerFactory:extend("NoneFactory")
    function NoneFactory.buildProtocol() return nil end
    local f = NoneFactory()
    f.noisy = false
    local result = reactor.adoptStreamConnection(fd, f)
    assert.is_nil(result)
    -- the refused connection is closed: its peer reads the end
    s2:settimeout(5)
    local _, err = s2:receive(1)
    s2:close()
    assert.equal("closed", err)
  end)
end)
