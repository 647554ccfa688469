-- spec: twins of Twisted's own tests of endpoints, addresses and error
-- classes (twisted/internet/test/test_endpoints.py,
-- twisted/internet/test/test_address.py, twisted/test/test_error.py) that
-- no other spec covered: one describe per Twisted TestCase, each it named
-- after the Twisted test method, the same scenario and the same asserted
-- values. docs/twisted-tests.md maps every test method to its spec (or the
-- reason it has none).
local errors = require "braid.error"
local endpoints = require "braid.endpoints"
local address = require "braid.address"
local protocol = require "braid.protocol"
local failure = require "braid.failure"
local defer = require "braid.defer"
local testing = require "braid.testing"

local loop = require "helpers.loop"
local tmp = require "helpers.tmp"

local Protocol, Factory, ClientFactory = protocol.Protocol, protocol.Factory, protocol.ClientFactory

-- test_endpoints' TestProtocol / TestFactory
local TestProtocol = Protocol:extend("TestProtocol")
function TestProtocol:init() self.data, self.connectionsLost = {}, {} end
function TestProtocol:dataReceived(d) self.data[#self.data + 1] = d end
function TestProtocol:connectionLost(reason) self.connectionsLost[#self.connectionsLost + 1] = reason end
local function TestFactory() return ClientFactory.forProtocol(TestProtocol) end

-- Twisted's RaisingMemoryReactor: listen and connect raise what it was given
local RaisingMemoryReactor = testing.MemoryReactor:extend("RaisingMemoryReactor")
function RaisingMemoryReactor:init(listenException, connectException)
  testing.MemoryReactor.init(self)
  self._listenException, self._connectException = listenException, connectException
end
function RaisingMemoryReactor:listenTCP() error(self._listenException, 0) end
function RaisingMemoryReactor:listenUNIX() error(self._listenException, 0) end
function RaisingMemoryReactor:connectTCP() error(self._connectException, 0) end
function RaisingMemoryReactor:connectUNIX() error(self._connectException, 0) end

-- the factory the endpoint handed to connectTCP (the wrapper)
local function wrapper_of(r, d)
  if d then d:addErrback(function() end) end
  return r.tcpClients[1][3]
end

describe("WrappingFactoryTests (test_endpoints)", function()
  local r
  before_each(function() r = testing.MemoryReactor() end)

  it("test_doStart", function()
    local factory = ClientFactory()
    endpoints.TCP4ClientEndpoint(r, "h", 1):connect(factory)
    wrapper_of(r):doStart()
    assert.equal(1, factory.numPorts)
  end)

  it("test_doStop", function()
    local factory = ClientFactory()
    factory.numPorts = 3
    endpoints.TCP4ClientEndpoint(r, "h", 1):connect(factory)
    wrapper_of(r):doStop()
    assert.equal(2, factory.numPorts)
  end)

  it("test_failedBuildProtocol", function()
    local BogusFactory = ClientFactory:extend("BogusFactory")
    function BogusFactory:buildProtocol() error(errors.ValueError("My protocol is poorly defined.")) end
    local d = endpoints.TCP4ClientEndpoint(r, "h", 1):connect(BogusFactory())
    wrapper_of(r):buildProtocol(nil)
    local reason = loop.result(d)
    assert.equal(errors.ValueError, reason.type)
    assert.equal("My protocol is poorly defined.", reason.value.message)
  end)

  it("test_buildNoneProtocol", function()
    local NoneFactory = ClientFactory:extend("NoneFactory")
    function NoneFactory:buildProtocol() return nil end
    local d = endpoints.TCP4ClientEndpoint(r, "h", 1):connect(NoneFactory())
    wrapper_of(r):buildProtocol(nil)
    assert.equal(errors.NoProtocol, loop.result(d).type)
  end)

  it("test_buildProtocolReturnsNone", function()
    local NoneFactory = ClientFactory:extend("NoneFactory")
    function NoneFactory:buildProtocol() return nil end
    local d = endpoints.TCP4ClientEndpoint(r, "h", 1):connect(NoneFactory())
    assert.is_nil(wrapper_of(r, d):buildProtocol(nil))
  end)

  -- braid hands the transport the factory's own protocol (no
  -- _WrappingProtocol), so what Twisted's wrapper passes on arrives as is
  it("test_wrappedProtocolDataReceived", function()
    endpoints.TCP4ClientEndpoint(r, "h", 1):connect(TestFactory())
    local p = wrapper_of(r):buildProtocol(nil)
    p:makeConnection(testing.StringTransport())
    p:dataReceived("foo")
    assert.same({ "foo" }, p.data)
    p:dataReceived("bar")
    assert.same({ "foo", "bar" }, p.data)
  end)

  it("test_wrappedProtocolTransport", function()
    endpoints.TCP4ClientEndpoint(r, "h", 1):connect(TestFactory())
    local p = wrapper_of(r):buildProtocol(nil)
    local dummyTransport = testing.StringTransport()
    p:makeConnection(dummyTransport)
    assert.equal(dummyTransport, p.transport)
  end)

  it("test_wrappedProtocolConnectionLost", function()
    endpoints.TCP4ClientEndpoint(r, "h", 1):connect(TestFactory())
    local p = wrapper_of(r):buildProtocol(nil)
    p:connectionLost("fail")
    assert.same({ "fail" }, p.connectionsLost)
  end)

  it("test_clientConnectionFailed", function()
    local d = endpoints.TCP4ClientEndpoint(r, "h", 1):connect(TestFactory())
    local expectedFailure = failure.Failure(errors.ConnectError(nil, "fail"))
    wrapper_of(r):clientConnectionFailed(nil, expectedFailure)
    local got = {}
    d:addErrback(function(f) got[#got + 1] = f end)
    assert.equal(1, #got)
    assert.equal(expectedFailure, got[1])
  end)
end)

-- EndpointTestCaseMixin over TCP4EndpointsTests, TCP6EndpointsTests and
-- UNIXEndpointsTests: each kind says how to make its endpoints and where
-- the MemoryReactor records the calls
local KINDS = {
  {
    name = "TCP4EndpointsTests",
    servers = "tcpServers", clients = "tcpClients", factoryAt = 3,
    listenArgs = { 100, "127.0.0.1" },
    server = function(r, a) return endpoints.TCP4ServerEndpoint(r, 0, a and a[1], a and a[2]),
      { 0, nil, a and a[1] or 50, a and a[2] or "" }, address.IPv4Address("TCP", "0.0.0.0", 0) end,
    connectArgs = { 10, { "localhost", 49595 } },
    client = function(r, a) return endpoints.TCP4ClientEndpoint(r, "localhost", 80, a and a[1], a and a[2]),
      { "localhost", 80, nil, a and a[1] or 30, a and a[2] }, address.IPv4Address("TCP", "localhost", 80) end,
  },
  {
    name = "TCP6EndpointsTests",
    servers = "tcpServers", clients = "tcpClients", factoryAt = 3,
    listenArgs = { 100, "::1" },
    server = function(r, a)
      local interface = a and a[2] or "::"
      return endpoints.TCP6ServerEndpoint(r, 0, a and a[1], a and a[2]),
        { 0, nil, a and a[1] or 50, interface }, address.IPv6Address("TCP", interface, 0)
    end,
    connectArgs = { 10, { "localhost", 49595 } },
    client = function(r, a) return endpoints.TCP6ClientEndpoint(r, "::1", 80, a and a[1], a and a[2]),
      { "::1", 80, nil, a and a[1] or 30, a and a[2] }, address.IPv6Address("TCP", "::1", 80) end,
  },
  {
    -- Twisted's wantPID and checkPID are left out: braid ignores them
    -- (docs/endpoints.md, Where braid differs)
    name = "UNIXEndpointsTests",
    servers = "unixServers", clients = "unixClients", factoryAt = 2,
    listenArgs = { 100, tonumber("600", 8) },
    server = function(r, a)
      local path = tmp.path(".sock")
      return endpoints.UNIXServerEndpoint(r, path, a and a[1], a and a[2]),
        { path, nil, a and a[1] or 50, a and a[2] or tonumber("666", 8), false }, address.UNIXAddress(path)
    end,
    connectArgs = { 10 },
    client = function(r, a)
      local path = tmp.path(".sock")
      return endpoints.UNIXClientEndpoint(r, path, a and a[1]),
        { path, nil, a and a[1] or 30, false }, address.UNIXAddress(path)
    end,
  },
}

-- a recorded call with the factory left out, as Twisted's assertConnectArgs
local function without_factory(call, at)
  local t = {}
  for i = 1, #call + 1 do if i ~= at then t[#t + 1] = call[i] end end
  return t
end
local function expected(args, at)
  local t = {}
  for i = 1, 5 do if i ~= at then t[#t + 1] = args[i] end end
  return t
end

for _, K in ipairs(KINDS) do
  describe(K.name .. " (test_endpoints)", function()
    it("test_endpointListenSuccess", function()
      local r = testing.MemoryReactor()
      local factory = Factory()
      local ep, expectedArgs, expectedHost = K.server(r)
      expectedArgs[2] = factory
      local receivedHosts = {}
      ep:listen(factory):addCallback(function(port) receivedHosts[#receivedHosts + 1] = port:getHost() end)
      assert.equal(1, #receivedHosts)
      assert.equal(expectedHost, receivedHosts[1])
      assert.same({ expectedArgs }, r[K.servers])
    end)

    it("test_endpointListenFailure", function()
      local factory = Factory()
      local exception = errors.CannotListenError("", 80, factory)
      local r = RaisingMemoryReactor(exception, nil)
      local ep = K.server(r)
      local receivedExceptions = {}
      ep:listen(Factory()):addErrback(function(f) receivedExceptions[#receivedExceptions + 1] = f.value end)
      assert.equal(1, #receivedExceptions)
      assert.equal(exception, receivedExceptions[1])
    end)

    it("test_endpointListenNonDefaultArgs", function()
      local r = testing.MemoryReactor()
      local factory = Factory()
      local ep, expectedArgs = K.server(r, K.listenArgs)
      expectedArgs[2] = factory
      ep:listen(factory)
      assert.same({ expectedArgs }, r[K.servers])
    end)

    it("test_endpointConnectSuccess", function()
      local r = testing.MemoryReactor()
      local clientFactory = ClientFactory.forProtocol(Protocol)
      local ep, expectedArgs = K.client(r)
      local receivedProtos = {}
      ep:connect(clientFactory):addCallback(function(p) receivedProtos[#receivedProtos + 1] = p end)
      local proto = r[K.clients][1][K.factoryAt]:buildProtocol(nil)
      proto:makeConnection(testing.StringTransport())
      assert.equal(1, #receivedProtos)
      assert.equal(proto, receivedProtos[1])
      assert.equal(1, #r[K.clients])
      assert.same(expected(expectedArgs, K.factoryAt), without_factory(r[K.clients][1], K.factoryAt))
    end)

    it("test_endpointConnectFailure", function()
      local expectedError = errors.ConnectError(nil, "Connection Failed")
      local r = RaisingMemoryReactor(nil, expectedError)
      local ep = K.client(r)
      local receivedExceptions = {}
      ep:connect(ClientFactory()):addErrback(function(f)
        receivedExceptions[#receivedExceptions + 1] = f.value
      end)
      assert.equal(1, #receivedExceptions)
      assert.equal(expectedError, receivedExceptions[1])
    end)

    it("test_endpointConnectingCancelled", function()
      local r = testing.MemoryReactor()
      local ep, _, addr = K.client(r)
      local receivedFailures = {}
      local d = ep:connect(ClientFactory())
      d:addErrback(function(f) receivedFailures[#receivedFailures + 1] = f end)
      d:cancel()
      -- as Twisted's connector, the attempt then fails with UserError
      r[K.clients][1][K.factoryAt]:clientConnectionFailed(nil, failure.Failure(errors.UserError()))
      assert.equal(1, #receivedFailures)
      assert.is_true(errors.ConnectingCancelledError:isinstance(receivedFailures[1].value))
      assert.equal(addr, receivedFailures[1].value.address)
    end)

    it("test_endpointConnectNonDefaultArgs", function()
      local r = testing.MemoryReactor()
      local ep, expectedArgs = K.client(r, K.connectArgs)
      ep:connect(ClientFactory())
      assert.equal(1, #r[K.clients])
      assert.same(expected(expectedArgs, K.factoryAt), without_factory(r[K.clients][1], K.factoryAt))
    end)
  end)
end

describe("ConnectProtocolTests (test_endpoints)", function()
  it("test_connectProtocolCreatesFactory", function()
    local r = testing.MemoryReactor()
    local endpoint = endpoints.TCP4ClientEndpoint(r, "127.0.0.1", 0)
    local theProtocol = Protocol()
    endpoints.connectProtocol(endpoint, theProtocol)
    assert.equal(1, #r.tcpClients)
    -- the endpoint's wrapper builds what the factory builds
    assert.equal(theProtocol, r.tcpClients[1][3]:buildProtocol(nil))
  end)

  it("test_connectProtocolReturnsConnectResult", function()
    local result = defer.Deferred()
    local endpoint = { connect = function() return result end }
    assert.equal(result, endpoints.connectProtocol(endpoint, Protocol()))
  end)
end)

-- Twisted's _parseServer gives (type, args, kw); braid's serverFromString
-- the endpoint, whose fields hold the same values
describe("ParserTests (test_endpoints)", function()
  local r = testing.MemoryReactor()
  local function tcp(desc)
    local ep = endpoints.serverFromString(r, desc)
    assert.is_true(endpoints.TCP4ServerEndpoint:isinstance(ep))
    return { ep._port, ep._interface, ep._backlog }
  end
  local function unix(desc)
    local ep = endpoints.serverFromString(r, desc)
    assert.is_true(endpoints.UNIXServerEndpoint:isinstance(ep))
    return { ep._address, ep._mode, ep._backlog }
  end

  it("test_simpleTCP", function()
    assert.same({ 80, "", 50 }, tcp("tcp:80"))
  end)

  it("test_interfaceTCP", function()
    assert.same({ 80, "127.0.0.1", 50 }, tcp("tcp:80:interface=127.0.0.1"))
  end)

  it("test_backlogTCP", function()
    assert.same({ 80, "", 6 }, tcp("tcp:80:backlog=6"))
  end)

  it("test_simpleUNIX", function()
    assert.same({ "/var/run/finger", tonumber("666", 8), 50 }, unix("unix:/var/run/finger"))
  end)

  it("test_modeUNIX", function()
    assert.same({ "/var/run/finger", tonumber("660", 8), 50 }, unix("unix:/var/run/finger:mode=0660"))
  end)

  it("test_escape", function()
    assert.same({ "foo:bar=baz:qux\\", tonumber("666", 8), 50 }, unix("unix:foo\\:bar\\=baz\\:qux\\\\"))
  end)

  it("test_impliedEscape", function()
    assert.same({ "foo=bar", tonumber("666", 8), 50 }, unix("unix:address=foo=bar"))
  end)

  it("test_unknownType", function()
    local ok, e = pcall(endpoints.serverFromString, r, "bogus-type:nothing")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)
end)

describe("ServerStringTests (test_endpoints)", function()
  it("test_tcp", function()
    local reactor = testing.MemoryReactor()
    local server = endpoints.serverFromString(reactor, "tcp:1234:backlog=12:interface=10.0.0.1")
    assert.is_true(endpoints.TCP4ServerEndpoint:isinstance(server))
    assert.equal(reactor, server._reactor)
    assert.same({ 1234, 12, "10.0.0.1" }, { server._port, server._backlog, server._interface })
  end)

  it("test_unix", function()
    local reactor = testing.MemoryReactor()
    local ep = endpoints.serverFromString(reactor, "unix:/var/foo/bar:backlog=7:mode=0123:lockfile=1")
    assert.is_true(endpoints.UNIXServerEndpoint:isinstance(ep))
    assert.equal(reactor, ep._reactor)
    assert.same({ "/var/foo/bar", 7, tonumber("123", 8) }, { ep._address, ep._backlog, ep._mode })
  end)

  -- braid's message names the description too (docs/endpoints.md)
  it("test_unknownType", function()
    local ok, e = pcall(endpoints.serverFromString, testing.MemoryReactor(), "ftl:andromeda/carcosa/hali/2387")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal('invalid endpoint description "ftl:andromeda/carcosa/hali/2387": unknown endpoint type "ftl"',
      e.message)
  end)
end)

describe("ClientStringTests (test_endpoints)", function()
  local function client(desc)
    local reactor = testing.MemoryReactor()
    local c = endpoints.clientFromString(reactor, desc)
    assert.equal(reactor, c._reactor)
    return c
  end

  it("test_tcp", function()
    local c = client("tcp:host=example.com:port=1234:timeout=7:bindAddress=10.0.0.2")
    assert.is_true(endpoints.TCP4ClientEndpoint:isinstance(c))
    assert.same({ "example.com", 1234, 7, { "10.0.0.2", 0 } }, { c._host, c._port, c._timeout, c._bindAddress })
  end)

  it("test_tcpPositionalArgs", function()
    local c = client("tcp:example.com:1234:timeout=7:bindAddress=10.0.0.2")
    assert.is_true(endpoints.TCP4ClientEndpoint:isinstance(c))
    assert.same({ "example.com", 1234, 7, { "10.0.0.2", 0 } }, { c._host, c._port, c._timeout, c._bindAddress })
  end)

  it("test_tcpHostPositionalArg", function()
    local c = client("tcp:example.com:port=1234:timeout=7:bindAddress=10.0.0.2")
    assert.same({ "example.com", 1234 }, { c._host, c._port })
  end)

  it("test_tcpPortPositionalArg", function()
    local c = client("tcp:host=example.com:1234:timeout=7:bindAddress=10.0.0.2")
    assert.same({ "example.com", 1234 }, { c._host, c._port })
  end)

  it("test_tcpDefaults", function()
    local c = client("tcp:host=example.com:port=1234")
    assert.equal(30, c._timeout)
    assert.is_nil(c._bindAddress)
  end)

  it("test_unix", function()
    local c = client("unix:path=/var/foo/bar:lockfile=1:timeout=9")
    assert.is_true(endpoints.UNIXClientEndpoint:isinstance(c))
    assert.same({ "/var/foo/bar", 9 }, { c._path, c._timeout })
  end)

  it("test_unixDefaults", function()
    assert.equal(30, client("unix:path=/var/foo/bar")._timeout)
  end)

  it("test_unixPathPositionalArg", function()
    local c = client("unix:/var/foo/bar:lockfile=1:timeout=9")
    assert.is_true(endpoints.UNIXClientEndpoint:isinstance(c))
    assert.same({ "/var/foo/bar", 9 }, { c._path, c._timeout })
  end)

  it("test_unknownType", function()
    local ok, e = pcall(endpoints.clientFromString, testing.MemoryReactor(), "ftl:andromeda/carcosa/hali/2387")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal('invalid endpoint description "ftl:andromeda/carcosa/hali/2387": unknown endpoint type "ftl"',
      e.message)
  end)
end)

describe("HostnameEndpointsGAIFailureTests (test_endpoints)", function()
  -- the real reactor, with a resolver that answers no address
  it("test_failure", function()
    local reactor = require "braid.reactor"
    local resolver = require "braid.resolver"
    local prev = resolver.installResolver({ getHostByName = function() return defer.succeed({}) end })
    local ok, reason = pcall(loop.result, endpoints.HostnameEndpoint(reactor, "example.com", 80)
      :connect(ClientFactory.forProtocol(Protocol)))
    resolver.installResolver(prev)
    assert(ok, reason)
    assert.is_true(failure.isFailure(reason))
    assert.equal(errors.DNSLookupError, reason.type)
    assert.matches("example.com", tostring(reason.value), 1, true)
  end)
end)

-- AddressTestCaseMixin over IPv4AddressTCPTests, IPv4AddressUDPTests,
-- IPv6AddressTests, HostnameAddressTests and EmptyUNIXAddressTests (test_hash: addresses as
-- table keys are by identity, docs/address.md)
local ADDRESSES = {
  { "IPv4AddressTCPTests", function() return address.IPv4Address("TCP", "127.0.0.1", 0) end,
    function() return address.IPv4Address("TCP", "127.0.0.2", 0) end },
  { "IPv4AddressUDPTests", function() return address.IPv4Address("UDP", "127.0.0.1", 0) end,
    function() return address.IPv4Address("UDP", "127.0.0.2", 0) end },
  { "IPv6AddressTests", function() return address.IPv6Address("TCP", "::1", 0) end,
    function() return address.IPv6Address("TCP", "::2", 0) end },
  { "HostnameAddressTests", function() return address.HostnameAddress("example.com", 0) end,
    function() return address.HostnameAddress("example.net", 0) end },
  { "EmptyUNIXAddressTests", function() return address.UNIXAddress(nil) end,
    function() return address.UNIXAddress(tmp.path()) end },
}
for _, A in ipairs(ADDRESSES) do
  local name, buildAddress, buildDifferentAddress = A[1], A[2], A[3]
  describe(name .. " (test_address)", function()
    it("test_addressComparison", function()
      assert.is_true(buildAddress() == buildAddress())
      assert.is_false(buildAddress() ~= buildAddress())
    end)

    it("test_differentNamesComparison", function()
      assert.is_false(buildAddress() == buildDifferentAddress())
      assert.is_false(buildDifferentAddress() == buildAddress())
      assert.is_true(buildAddress() ~= buildDifferentAddress())
      assert.is_true(buildDifferentAddress() ~= buildAddress())
    end)

    if name == "EmptyUNIXAddressTests" then
      it("test_comparisonOfLinkedFiles", function()
        local socketAddress = tmp.file()
        local linkName = tmp.path()
        assert(os.execute(("ln -s '%s' '%s'"):format(socketAddress, linkName)))
        assert.is_false(address.UNIXAddress(socketAddress) == address.UNIXAddress(nil))
        assert.is_false(address.UNIXAddress(nil) == address.UNIXAddress(socketAddress))
        assert.is_true(address.UNIXAddress(linkName) == address.UNIXAddress(socketAddress))
      end)
    end
  end)
end

describe("UNIXAddressTests (test_address)", function()
  it("test_repr", function()
    local path = tmp.path()
    assert.equal(("UNIXAddress('%s')"):format(path), tostring(address.UNIXAddress(path)))
  end)
end)

-- Twisted's listOfTests, the rows made with at most one message argument
-- (braid takes only the first as the message: docs/error.md); keyword
-- arguments are positional here (ConnectError(osError, string),
-- ProcessTerminated(exitCode, signal))
describe("StringificationTests (test_error)", function()
  it("testThemAll", function()
    local rows = {
      { "Couldn't listen on eth0:4242: Foo.", errors.CannotListenError, { "eth0", 4242, "Foo" } },
      { "DNS lookup failed.", errors.DNSLookupError },
      { "An error occurred while connecting.", errors.ConnectError },
      { "An error occurred while connecting: someOsError.", errors.ConnectError, { "someOsError" } },
      { "An error occurred while connecting: foo.", errors.ConnectError, { nil, "foo", n = 2 } },
      { "An error occurred while connecting: someOsError: foo.", errors.ConnectError, { "someOsError", "foo" } },
      { "Couldn't bind.", errors.ConnectBindError },
      { "Couldn't bind: someOsError.", errors.ConnectBindError, { "someOsError" } },
      { "Couldn't bind: someOsError: foo.", errors.ConnectBindError, { "someOsError", "foo" } },
      { "Hostname couldn't be looked up.", errors.UnknownHostError },
      { "No route to host.", errors.NoRouteError },
      { "Connection was refused by other side.", errors.ConnectionRefusedError },
      { "TCP connection timed out.", errors.TCPTimedOutError },
      { "File used for UNIX socket is no good.", errors.BadFileError },
      { "Service name given as port is unknown.", errors.ServiceNameUnknownError },
      { "User aborted connection.", errors.UserError },
      { "User timeout caused connection failure.", errors.TimeoutError },
      { "An SSL error occurred.", errors.SSLError },
      { "Connection to the other side was lost in a non-clean fashion.", errors.ConnectionLost },
      { "Connection was closed cleanly.", errors.ConnectionDone },
      { "Uh.", errors.ConnectionFdescWentAway },
      { "Tried to cancel an already-called event.", errors.AlreadyCalled },
      { "Tried to cancel an already-cancelled event.", errors.AlreadyCancelled },
      { "A process has ended without apparent errors: process finished with exit code 0.",
        errors.ProcessDone, { nil, n = 1 } },
      { "A process has ended with a probable error condition: process ended.", errors.ProcessTerminated },
      { "A process has ended with a probable error condition: process ended with exit code 42.",
        errors.ProcessTerminated, { 42 } },
      { "A process has ended with a probable error condition: process ended by signal SIGBUS.",
        errors.ProcessTerminated, { nil, "SIGBUS", n = 2 } },
      { "The Connector was not connecting when it was asked to stop connecting.", errors.NotConnectingError },
      { "The Port was not listening when it was asked to stop listening.", errors.NotListeningError },
    }
    for _, row in ipairs(rows) do
      local args = row[3] or {}
      local e = row[2](table.unpack(args, 1, args.n or #args))
      assert.equal(row[2].__name .. ": " .. row[1], tostring(e))
    end
  end)

  -- the address was not kept: e.address was nil
  it("test_connectingCancelledError", function()
    local addr = {}
    local e = errors.ConnectingCancelledError(addr)
    assert.equal(addr, e.address)
  end)
end)

describe("SubclassingTests (test_error)", function()
  it("test_connectionLostSubclassOfConnectionClosed", function()
    assert.is_true(errors.ConnectionLost:issubclass(errors.ConnectionClosed))
  end)

  it("test_connectionDoneSubclassOfConnectionClosed", function()
    assert.is_true(errors.ConnectionDone:issubclass(errors.ConnectionClosed))
  end)
end)
