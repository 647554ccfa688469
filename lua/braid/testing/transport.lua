--- braid.testing.transport: in-memory transports for specs
-- (twisted.internet.testing's StringTransport and MemoryReactor,
-- twisted.test.iosim's connectedServerAndClient, loopbackAsync).
-- test-case-name: spec/testing_transport_spec.lua
local class = require "braid.class"
local errors = require "braid.error"
local checkself = errors.checkself
local address = require "braid.address"
local failure = require "braid.failure"
local protocol = require "braid.protocol"

local M = {}

local type, error, ipairs, concat = type, error, ipairs, table.concat
local Failure = failure.Failure

local function clock_class() return require("braid.task").Clock end

--- Raised by misuse of a transport's producer methods (Twisted's RuntimeError).
local RuntimeError = errors.RuntimeError or errors.class("RuntimeError")
M.RuntimeError = RuntimeError
local function runtime_error(msg) return RuntimeError(msg) end

---------------------------------------------------------------------------
-- StringTransport

local StringTransport = class.Object:extend("StringTransport")
M.StringTransport = StringTransport
StringTransport.disconnecting = false
StringTransport.connected = true
StringTransport.producer = nil
StringTransport.streaming = nil
StringTransport.producerState = "producing"
StringTransport.aborted = false

--- StringTransport(hostAddress?, peerAddress?): records writes in memory.
-- Default addresses are Twisted's: host IPv4Address("TCP", "10.0.0.1",
-- 12345), peer IPv4Address("TCP", "192.168.1.1", 54321).
function StringTransport:init(hostAddress, peerAddress)
  self._io = {}
  self.hostAddr = hostAddress or address.IPv4Address("TCP", "10.0.0.1", 12345)
  self.peerAddr = peerAddress or address.IPv4Address("TCP", "192.168.1.1", 54321)
end

--- Everything written so far, as one string.
function StringTransport:value()
  checkself("value", StringTransport:isinstance(self), self, "StringTransport")
  local io = self._io
  if #io > 1 then
    local s = concat(io)
    self._io = { s }
    return s
  end
  return io[1] or ""
end

--- Forget everything written so far.
function StringTransport:clear()
  checkself("clear", StringTransport:isinstance(self), self, "StringTransport")
  self._io = {}
end

function StringTransport:write(data)
  checkself("write", StringTransport:isinstance(self), self, "StringTransport")
  if type(data) ~= "string" then errors.checktype("write", 1, data, "string") end
  local io = self._io
  io[#io + 1] = data
end

-- writeSequence's check, as braid.tcp's: nothing is written when an item
-- is not a string
local function check_sequence(list)
  if type(list) ~= "table" then errors.checktype("writeSequence", 1, list, "table") end
  for i = 1, #list do
    if type(list[i]) ~= "string" then
      errors.argerror("writeSequence", 1, ("string expected at index %d, got %s")
        :format(i, type(list[i])), 4)
    end
  end
end

function StringTransport:writeSequence(list)
  checkself("writeSequence", StringTransport:isinstance(self), self, "StringTransport")
  check_sequence(list)
  for i = 1, #list do self:write(list[i]) end
end

function StringTransport:loseConnection()
  checkself("loseConnection", StringTransport:isinstance(self), self, "StringTransport")
  self.disconnecting = true
end

function StringTransport:abortConnection()
  checkself("abortConnection", StringTransport:isinstance(self), self, "StringTransport")
  self.aborted = true
  self:loseConnection()
end

function StringTransport:loseWriteConnection()
  self.writeDisconnected = true
end

function StringTransport:getPeer() return self.peerAddr end
function StringTransport:getHost() return self.hostAddr end
function StringTransport:getWriteBufferSize() return 0 end
function StringTransport:setTcpNoDelay(b) self.tcpNoDelay = b and true or false end
function StringTransport:getTcpNoDelay() return self.tcpNoDelay or false end
function StringTransport:setTcpKeepAlive(b) self.tcpKeepAlive = b and true or false end
function StringTransport:getTcpKeepAlive() return self.tcpKeepAlive or false end

function StringTransport:registerProducer(producer, streaming)
  checkself("registerProducer", StringTransport:isinstance(self), self, "StringTransport")
  if self.producer ~= nil then
    error(runtime_error("Cannot register two producers"), 2)
  end
  self.producer = producer
  self.streaming = streaming and true or false
end

function StringTransport:unregisterProducer()
  checkself("unregisterProducer", StringTransport:isinstance(self), self, "StringTransport")
  if self.producer == nil then
    error(runtime_error("Cannot unregister a producer unless one is registered"), 2)
  end
  self.producer = nil
  self.streaming = nil
end

local function check_state(self)
  if self.disconnecting then
    error(runtime_error("Cannot resume producing after loseConnection"), 3)
  end
  if self.producerState == "stopped" then
    error(runtime_error("Cannot resume a stopped producer"), 3)
  end
end

function StringTransport:pauseProducing()
  check_state(self)
  self.producerState = "paused"
end

function StringTransport:resumeProducing()
  check_state(self)
  self.producerState = "producing"
end

function StringTransport:stopProducing()
  self.producerState = "stopped"
end

---------------------------------------------------------------------------
-- StringTransportWithDisconnection

local STWD = StringTransport:extend("StringTransportWithDisconnection")
M.StringTransportWithDisconnection = STWD

--- Also tells `self.protocol` of the close, once:
-- connectionLost(Failure(ConnectionDone)).
function STWD:loseConnection()
  self.disconnecting = true
  if self.connected then
    self.connected = false
    local p = self.protocol
    if p then
      if type(p) == "table" then p.connected = false end  -- as a TCP transport does
      p:connectionLost(Failure(errors.ConnectionDone("Bye.")))
    end
  end
end

---------------------------------------------------------------------------
-- MemoryReactor

local MemoryReactor = class.Object:extend("MemoryReactor")
M.MemoryReactor = MemoryReactor

local FakePort = class.Object:extend("FakePort")
function FakePort:init(addr) self._addr = addr; self.disconnected = false end
function FakePort:getHost() return self._addr end
function FakePort:stopListening()
  self.disconnected = true
  return require("braid.defer").succeed(nil)
end
M.FakePort = FakePort

local FakeConnector = class.Object:extend("FakeConnector")
function FakeConnector:init(addr) self._addr = addr; self.state = "connecting" end
function FakeConnector:getDestination() return self._addr end
function FakeConnector:stopConnecting() self.stoppedConnecting = true; self.state = "disconnected" end
function FakeConnector:disconnect() self.disconnected = true; self.state = "disconnected" end
function FakeConnector:connect() self.state = "connecting" end
M.FakeConnector = FakeConnector

function MemoryReactor:init()
  self.clock = clock_class()()
  self.tcpServers, self.tcpClients = {}, {}
  self.unixServers, self.unixClients = {}, {}
  self.udpPorts, self.sslServers, self.sslClients = {}, {}, {}
  self.connectors = {}
  self.running = false
end

-- as Twisted's isIPv6Address (braid.core's inet_pton when it is there)
local ok_core, core = pcall(require, "braid.core")
local function is_ipv6(host)
  if type(host) ~= "string" then return false end
  if ok_core and core.ip_family then return core.ip_family(host) == "IPv6" end
  return host:find(":", 1, true) ~= nil
end

local function tcp_address(host, port)
  if is_ipv6(host) then return address.IPv6Address("TCP", host, port) end
  return address.IPv4Address("TCP", host, port)
end

-- a listening address as Twisted's MemoryReactor gives it: the IPv6
-- interface, or IPv4's 0.0.0.0 for any other
local function listen_address(kind, interface, port)
  if is_ipv6(interface) then return address.IPv6Address(kind, interface, port) end
  return address.IPv4Address(kind, "0.0.0.0", port)
end

-- as Twisted's: the factory hears startedConnecting, the connector is kept
local function connecting(self, factory, dest)
  local c = FakeConnector(dest)
  if type(factory) == "table" and type(factory.startedConnecting) == "function" then
    factory:startedConnecting(c)
  end
  self.connectors[#self.connectors + 1] = c
  return c
end

function MemoryReactor:seconds() return self.clock:seconds() end
function MemoryReactor:callLater(...) return self.clock:callLater(...) end
function MemoryReactor:getDelayedCalls() return self.clock:getDelayedCalls() end
function MemoryReactor:advance(n) return self.clock:advance(n) end

--- Records {port, factory, backlog, interface}; returns a FakePort.
function MemoryReactor:listenTCP(port, factory, backlog, interface)
  local list = self.tcpServers
  list[#list + 1] = { port, factory, backlog or 50, interface or "" }
  return FakePort(listen_address("TCP", interface, port))
end

--- Records {host, port, factory, timeout, bindAddress}; calls the factory's
-- startedConnecting, appends to connectors and returns a FakeConnector.
function MemoryReactor:connectTCP(host, port, factory, timeout, bindAddress)
  local list = self.tcpClients
  list[#list + 1] = { host, port, factory, timeout or 30, bindAddress }
  return connecting(self, factory, tcp_address(host, port))
end

function MemoryReactor:listenSSL(port, factory, contextFactory, backlog, interface)
  local list = self.sslServers
  list[#list + 1] = { port, factory, contextFactory, backlog or 50, interface or "" }
  return FakePort(listen_address("TCP", interface, port))
end

function MemoryReactor:connectSSL(host, port, factory, contextFactory, timeout, bindAddress)
  local list = self.sslClients
  list[#list + 1] = { host, port, factory, contextFactory, timeout or 30, bindAddress }
  return connecting(self, factory, tcp_address(host, port))
end

function MemoryReactor:listenUNIX(path, factory, backlog, mode, wantPID)
  local list = self.unixServers
  list[#list + 1] = { path, factory, backlog or 50, mode or 438, wantPID or false }
  return FakePort(address.UNIXAddress(path))
end

function MemoryReactor:connectUNIX(path, factory, timeout, checkPID)
  local list = self.unixClients
  list[#list + 1] = { path, factory, timeout or 30, checkPID or false }
  return connecting(self, factory, address.UNIXAddress(path))
end

function MemoryReactor:listenUDP(port, proto, interface, maxPacketSize)
  local list = self.udpPorts
  list[#list + 1] = { port, proto, interface or "", maxPacketSize or 8192 }
  return FakePort(listen_address("UDP", interface, port))
end

---------------------------------------------------------------------------
-- FakeTransport and the pump (twisted.test.iosim)

-- A small deterministic PRNG (32-bit xorshift), so a seed replays the
-- same chunk sizes on every platform and whatever math.random does.
local function xorshift(state)
  state = state ~ ((state << 13) & 0xffffffff)
  state = state ~ (state >> 17)
  state = state ~ ((state << 5) & 0xffffffff)
  return state & 0xffffffff
end

local FakeTransport = class.Object:extend("FakeTransport")
M.FakeTransport = FakeTransport
FakeTransport.disconnecting = false
FakeTransport.disconnected = false
FakeTransport.connected = true
FakeTransport.readPaused = false
FakeTransport.aborted = false
FakeTransport.producer = nil
FakeTransport.streaming = nil

local serial = 0

function FakeTransport:init(proto, isServer, hostAddress, peerAddress)
  self.protocol = proto
  self.isServer = isServer
  self._out = {}
  self.hostAddr = hostAddress
  self.peerAddr = peerAddress
  serial = serial + 1
  self.sessionno = serial
end

function FakeTransport:write(data)
  if type(data) ~= "string" then errors.checktype("write", 1, data, "string") end
  if self.disconnected or data == "" then return end
  local out = self._out
  out[#out + 1] = data
  if self._wake then self._wake() end
end

function FakeTransport:writeSequence(list)
  check_sequence(list)
  for i = 1, #list do self:write(list[i]) end
end

function FakeTransport:loseConnection()
  self.disconnecting = true
  if self._wake then self._wake() end
end

function FakeTransport:abortConnection()
  self.aborted = true
  self._out = {}
  self:loseConnection()
end

function FakeTransport:getPeer() return self.peerAddr end
function FakeTransport:getHost() return self.hostAddr end
function FakeTransport:getWriteBufferSize()
  local n = 0
  for _, s in ipairs(self._out) do n = n + #s end
  return n
end
function FakeTransport:setTcpNoDelay() end
function FakeTransport:getTcpNoDelay() return true end
function FakeTransport:setTcpKeepAlive() end
function FakeTransport:getTcpKeepAlive() return false end

function FakeTransport:pauseProducing() self.readPaused = true end
function FakeTransport:resumeProducing()
  self.readPaused = false
  if self._wake then self._wake() end
end
function FakeTransport:stopProducing() self:loseConnection() end

function FakeTransport:registerProducer(producer, streaming)
  if self.producer ~= nil then
    error(runtime_error("Cannot register two producers"), 2)
  end
  self.producer, self.streaming = producer, streaming and true or false
  if not streaming then producer:resumeProducing() end
end

function FakeTransport:unregisterProducer()
  self.producer, self.streaming = nil, nil
end

local IOPump = class.Object:extend("IOPump")
M.IOPump = IOPump

function IOPump:init(client, server, clientTransport, serverTransport, opts)
  errors.checktype("IOPump", 5, opts, "table", true)
  opts = opts or {}
  self.client, self.server = client, server
  self.clientIO, self.serverIO = clientTransport, serverTransport
  self.clock = opts.clock
  self.maxChunk = opts.maxChunk
  self._seed = opts.seed
  if self._seed then
    local s = math.tointeger(opts.seed) or 1
    s = s & 0xffffffff
    self._rng = s ~= 0 and s or 0x9e3779b9
  end
end

function IOPump:_chunkSize(remaining)
  local limit = self.maxChunk or remaining
  if limit > remaining then limit = remaining end
  if not self._rng then return limit end
  local r = xorshift(self._rng)
  self._rng = r
  return 1 + r % limit
end

-- deliver what src queued to dst's protocol; true if bytes moved. As a
-- real transport stops reading once loseConnection was called, nothing is
-- delivered to a side that is disconnecting.
local function deliver(pump, src, dst)
  local out = src._out
  if #out == 0 or dst.disconnected or dst.disconnecting or dst.readPaused then return false end
  local data = concat(out)
  src._out = {}
  local pos, n = 1, #data
  while pos <= n do
    if dst.disconnected then break end
    if dst.readPaused or dst.disconnecting then -- keep the rest for when reading resumes
      table.insert(src._out, 1, data:sub(pos))
      break
    end
    local size = pump:_chunkSize(n - pos + 1)
    dst.protocol:dataReceived(data:sub(pos, pos + size - 1))
    pos = pos + size
  end
  if #src._out == 0 and src.producer and not src.streaming then
    src.producer:resumeProducing()
  end
  return true
end

local function close_pair(a, b)
  a.disconnected, b.disconnected = true, true
  a.connected, b.connected = false, false
  local ra, rb
  if a.aborted then
    ra = Failure(errors.ConnectionAborted())
    rb = Failure(errors.ConnectionLost())
  else
    ra = Failure(errors.ConnectionDone())
    rb = Failure(errors.ConnectionDone())
  end
  if a.producer then a.producer:stopProducing() end
  if b.producer then b.producer:stopProducing() end
  -- as a TCP transport does: connected is false in connectionLost
  if type(a.protocol) == "table" then a.protocol.connected = false end
  if type(b.protocol) == "table" then b.protocol.connected = false end
  a.protocol:connectionLost(ra)
  b.protocol:connectionLost(rb)
end

-- a side that asked to close goes once its output is delivered, or can
-- never be: the peer asked to close too, and reads no more
local function check_close(a, b)
  if a.disconnecting and not a.disconnected and (#a._out == 0 or a.aborted or b.disconnecting) then
    close_pair(a, b)
    return true
  end
  return false
end

--- One round: deliver client->server and server->client; then closes.
-- @return true if anything happened
function IOPump:pump()
  if self.clock then self.clock:advance(0) end
  local c, s = self.clientIO, self.serverIO
  local moved = deliver(self, c, s)
  moved = deliver(self, s, c) or moved
  if not c.disconnected then
    moved = check_close(c, s) or check_close(s, c) or moved
  end
  return moved
end

--- Pump until nothing moves. Raises after `limit` (1e6) rounds.
function IOPump:flush(limit)
  limit = limit or 1000000
  local rounds = 0
  while self:pump() do
    rounds = rounds + 1
    if rounds >= limit then
      error(runtime_error("IOPump:flush: still busy after " .. rounds .. " rounds"), 2)
    end
  end
  return rounds > 0
end

local function build(f, addr)
  if type(f) == "table" and (f.buildProtocol ~= nil or f.protocol ~= nil) then
    return protocol.call(f, protocol.Factory, "buildProtocol", addr)
  end
  return protocol.instantiate(f)
end

local SERVER_ADDR = function() return address.IPv4Address("TCP", "127.0.0.1", 80) end
local CLIENT_ADDR = function() return address.IPv4Address("TCP", "127.0.0.1", 32768) end

--- Join two protocols (already built) with FakeTransports and a pump.
-- makeConnection is called on the server first; unless opts.greet == false
-- the pump is flushed once.
function M.connect(server, client, opts)
  errors.checktype("connect", 3, opts, "table", true)
  opts = opts or {}
  local st = FakeTransport(server, true, SERVER_ADDR(), CLIENT_ADDR())
  local ct = FakeTransport(client, false, CLIENT_ADDR(), SERVER_ADDR())
  local pump = IOPump(client, server, ct, st, opts)
  server:makeConnection(st)
  client:makeConnection(ct)
  if opts.greet ~= false then pump:flush() end
  return pump
end

--- connectedServerAndClient(serverFactory, clientFactory, opts?) ->
-- server, client, pump. Factories, protocol classes or plain protocol
-- tables. opts: seed, maxChunk (split every delivery), clock, greet.
function M.connectedServerAndClient(serverFactory, clientFactory, opts)
  local server = build(serverFactory, CLIENT_ADDR())
  local client = build(clientFactory, SERVER_ADDR())
  if server == nil or client == nil then
    error(errors.ValueError("connectedServerAndClient: a factory refused the connection"), 2)
  end
  local pump = M.connect(server, client, opts)
  return server, client, pump
end

--- loopbackAsync(server, client, opts?) -> Deferred firing (with nil) once
-- both sides have lost the connection. As Twisted's, it pumps at once, and
-- the Deferred has already fired if both sides are done by then; once
-- nothing moves, the next write (or loseConnection, or resumeProducing)
-- schedules the next pumping for a later turn of opts.clock (or the reactor).
function M.loopbackAsync(server, client, opts)
  errors.checktype("loopbackAsync", 3, opts, "table", true)
  opts = opts or {}
  local defer = require "braid.defer"
  local d = defer.Deferred()
  -- a Clock is called with ':', the reactor's functions with '.'
  local clock = opts.clock
  local callLater = clock and function(f) return clock:callLater(0, f) end
    or function(f) return require("braid.reactor").callLater(0, f) end
  local waiting = false -- idle: the next write schedules a run
  local pump
  local function run()
    pump:flush()
    if pump.clientIO.disconnected then
      if not d.called then d:callback(nil) end
    else
      waiting = true -- Twisted's notification Deferred
    end
  end
  local function wake()
    if waiting then
      waiting = false
      callLater(run)
    end
  end
  local popts = { seed = opts.seed, maxChunk = opts.maxChunk, greet = false }
  pump = M.connect(server, client, popts)
  pump.clientIO._wake, pump.serverIO._wake = wake, wake
  run()
  return d
end

return M
