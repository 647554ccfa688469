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
local RuntimeError = errors.RuntimeError
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
StringTransport.disconnected = false  -- Twisted's name: true after abortConnection

--- StringTransport(hostAddress?, peerAddress?, lenient?): records writes in
-- memory. Default addresses are Twisted's: host IPv4Address("TCP",
-- "10.0.0.1", 12345), peer IPv4Address("TCP", "192.168.1.1", 54321).
-- lenient: pausing and resuming after loseConnection do not raise.
-- Twisted's default addresses, new each time
local function default_host() return address.IPv4Address("TCP", "10.0.0.1", 12345) end
local function default_peer() return address.IPv4Address("TCP", "192.168.1.1", 54321) end

function StringTransport:init(hostAddress, peerAddress, lenient)
  self._io = {}
  self._lenient = lenient and true or false
  self.hostAddr = hostAddress or default_host()
  self.peerAddr = peerAddress or default_peer()
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
  self.disconnected = true
  self:loseConnection()
end

function StringTransport:loseWriteConnection()
  checkself("loseWriteConnection", StringTransport:isinstance(self), self, "StringTransport")
  self.writeDisconnected = true
end

function StringTransport:getPeer()
  checkself("getPeer", StringTransport:isinstance(self), self, "StringTransport")
  local a = self.peerAddr
  if a == nil then return default_peer() end  -- as Twisted's, for peerAddr = nil
  return a
end
function StringTransport:getHost()
  checkself("getHost", StringTransport:isinstance(self), self, "StringTransport")
  local a = self.hostAddr
  if a == nil then return default_host() end  -- as Twisted's, for hostAddr = nil
  return a
end
function StringTransport:getWriteBufferSize()
  checkself("getWriteBufferSize", StringTransport:isinstance(self), self, "StringTransport")
  return 0
end
function StringTransport:setTcpNoDelay(b)
  checkself("setTcpNoDelay", StringTransport:isinstance(self), self, "StringTransport")
  self.tcpNoDelay = b and true or false
end
function StringTransport:getTcpNoDelay()
  checkself("getTcpNoDelay", StringTransport:isinstance(self), self, "StringTransport")
  return self.tcpNoDelay or false
end
function StringTransport:setTcpKeepAlive(b)
  checkself("setTcpKeepAlive", StringTransport:isinstance(self), self, "StringTransport")
  self.tcpKeepAlive = b and true or false
end
function StringTransport:getTcpKeepAlive()
  checkself("getTcpKeepAlive", StringTransport:isinstance(self), self, "StringTransport")
  return self.tcpKeepAlive or false
end

function StringTransport:registerProducer(producer, streaming)
  checkself("registerProducer", StringTransport:isinstance(self), self, "StringTransport")
  if self.producer ~= nil then
    error(runtime_error("Cannot register two producers"), 2)
  end
  -- both recorded as given, as Twisted's (streaming is not made a boolean)
  self.producer = producer
  self.streaming = streaming
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
  if self.disconnecting and not self._lenient then
    error(runtime_error("Cannot resume producing after loseConnection"), 3)
  end
  if self.producerState == "stopped" then
    error(runtime_error("Cannot resume a stopped producer"), 3)
  end
end

function StringTransport:pauseProducing()
  checkself("pauseProducing", StringTransport:isinstance(self), self, "StringTransport")
  check_state(self)
  self.producerState = "paused"
end

function StringTransport:resumeProducing()
  checkself("resumeProducing", StringTransport:isinstance(self), self, "StringTransport")
  check_state(self)
  self.producerState = "producing"
end

function StringTransport:stopProducing()
  checkself("stopProducing", StringTransport:isinstance(self), self, "StringTransport")
  self.producerState = "stopped"
end

---------------------------------------------------------------------------
-- StringTransportWithDisconnection

local STWD = StringTransport:extend("StringTransportWithDisconnection")
M.StringTransportWithDisconnection = STWD

--- Also tells `self.protocol` of the close, once:
-- connectionLost(Failure(ConnectionDone)).
function STWD:loseConnection()
  checkself("loseConnection", STWD:isinstance(self), self, "StringTransportWithDisconnection")
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
function FakePort:getHost()
  checkself("getHost", FakePort:isinstance(self), self, "FakePort")
  return self._addr
end
function FakePort:stopListening()
  checkself("stopListening", FakePort:isinstance(self), self, "FakePort")
  self.disconnected = true
  return require("braid.defer").succeed(nil)
end
--- As Twisted's _FakePort's (and a real Port's, after stopListening): the
-- port listens again (disconnected is false); nothing is opened.
function FakePort:startListening()
  checkself("startListening", FakePort:isinstance(self), self, "FakePort")
  self.disconnected = false
end
M.FakePort = FakePort

local FakeConnector = class.Object:extend("FakeConnector")
FakeConnector.stoppedConnecting = false  -- as Twisted's: false until stopConnecting
FakeConnector.disconnected = false       -- true once disconnect was called
function FakeConnector:init(addr) self._addr = addr; self.state = "connecting" end
function FakeConnector:getDestination()
  checkself("getDestination", FakeConnector:isinstance(self), self, "FakeConnector")
  return self._addr
end
function FakeConnector:stopConnecting()
  checkself("stopConnecting", FakeConnector:isinstance(self), self, "FakeConnector")
  self.stoppedConnecting = true; self.state = "disconnected"
end
function FakeConnector:disconnect()
  checkself("disconnect", FakeConnector:isinstance(self), self, "FakeConnector")
  self.disconnected = true; self.state = "disconnected"
end
function FakeConnector:connect()
  checkself("connect", FakeConnector:isinstance(self), self, "FakeConnector")
  self.state = "connecting"
end
M.FakeConnector = FakeConnector

function MemoryReactor:init()
  self.clock = clock_class()()
  self.tcpServers, self.tcpClients = {}, {}
  self.unixServers, self.unixClients = {}, {}
  self.udpPorts, self.sslServers, self.sslClients = {}, {}, {}
  self.adoptedPorts, self.adoptedStreamConnections = {}, {}
  self.connectors = {}
  self.running = false
  self.hasRun, self.hasStopped, self.hasCrashed = false, false, false
  self.whenRunningHooks = {}  -- {f, args} each, args packed (n = count)
  self.triggers = {}          -- triggers[phase][event] = { {f, args}, ... }
  self.readers, self.writers = {}, {}  -- sets: descriptor -> true
end

-- as Twisted's isIPv6Address (braid.core's inet_pton when it is there)
local ok_core, core = pcall(require, "braid.core")
local function is_ipv6(host)
  if type(host) ~= "string" then return false end
  if ok_core and core.ip_family then return address.isIPv6Address(host) end
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

function MemoryReactor:seconds()
  checkself("seconds", MemoryReactor:isinstance(self), self, "MemoryReactor")
  return self.clock:seconds()
end
function MemoryReactor:callLater(...)
  checkself("callLater", MemoryReactor:isinstance(self), self, "MemoryReactor")
  return self.clock:callLater(...)
end
function MemoryReactor:getDelayedCalls()
  checkself("getDelayedCalls", MemoryReactor:isinstance(self), self, "MemoryReactor")
  return self.clock:getDelayedCalls()
end
function MemoryReactor:advance(n)
  checkself("advance", MemoryReactor:isinstance(self), self, "MemoryReactor")
  return self.clock:advance(n)
end
--- Advance by each amount of the list in turn (Clock's pump: Twisted's
-- MemoryReactorClock is a Clock).
function MemoryReactor:pump(timings)
  checkself("pump", MemoryReactor:isinstance(self), self, "MemoryReactor")
  return self.clock:pump(timings)
end

--- Records {port, factory, backlog, interface}; returns a FakePort.
function MemoryReactor:listenTCP(port, factory, backlog, interface)
  checkself("listenTCP", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.tcpServers
  list[#list + 1] = { port, factory, backlog or 50, interface or "" }
  return FakePort(listen_address("TCP", interface, port))
end

--- Records {host, port, factory, timeout, bindAddress}; calls the factory's
-- startedConnecting, appends to connectors and returns a FakeConnector.
function MemoryReactor:connectTCP(host, port, factory, timeout, bindAddress)
  checkself("connectTCP", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.tcpClients
  list[#list + 1] = { host, port, factory, timeout or 30, bindAddress }
  return connecting(self, factory, tcp_address(host, port))
end

function MemoryReactor:listenSSL(port, factory, contextFactory, backlog, interface)
  checkself("listenSSL", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.sslServers
  list[#list + 1] = { port, factory, contextFactory, backlog or 50, interface or "" }
  return FakePort(listen_address("TCP", interface, port))
end

function MemoryReactor:connectSSL(host, port, factory, contextFactory, timeout, bindAddress)
  checkself("connectSSL", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.sslClients
  list[#list + 1] = { host, port, factory, contextFactory, timeout or 30, bindAddress }
  return connecting(self, factory, tcp_address(host, port))
end

function MemoryReactor:listenUNIX(path, factory, backlog, mode, wantPID)
  checkself("listenUNIX", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.unixServers
  list[#list + 1] = { path, factory, backlog or 50, mode or 438, wantPID or false }
  return FakePort(address.UNIXAddress(path))
end

function MemoryReactor:connectUNIX(path, factory, timeout, checkPID)
  checkself("connectUNIX", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.unixClients
  list[#list + 1] = { path, factory, timeout or 30, checkPID or false }
  return connecting(self, factory, address.UNIXAddress(path))
end

function MemoryReactor:listenUDP(port, proto, interface, maxPacketSize)
  checkself("listenUDP", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.udpPorts
  list[#list + 1] = { port, proto, interface or "", maxPacketSize or 8192 }
  return FakePort(listen_address("UDP", interface, port))
end

--- Records {fd, factory} in adoptedPorts (braid's adoptStreamPort takes
-- no address family); returns a FakePort on Twisted's address for it,
-- IPv4Address("TCP", "0.0.0.0", 1234).
function MemoryReactor:adoptStreamPort(fd, factory)
  checkself("adoptStreamPort", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.adoptedPorts
  list[#list + 1] = { fd, factory }
  return FakePort(address.IPv4Address("TCP", "0.0.0.0", 1234))
end

--- Records {fd, factory} in adoptedStreamConnections; returns nothing.
function MemoryReactor:adoptStreamConnection(fd, factory)
  checkself("adoptStreamConnection", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local list = self.adoptedStreamConnections
  list[#list + 1] = { fd, factory }
end

-- IReactorCore, as Twisted's MemoryReactor fakes it: run() runs the
-- callWhenRunning functions and stops; triggers are only recorded.

--- Set running (and hasRun), call the callWhenRunning functions in order,
-- then stop(). Raises RuntimeError unless running is false: when already
-- running, and after crash() (as Twisted's, which asserts running is False).
function MemoryReactor:run()
  checkself("run", MemoryReactor:isinstance(self), self, "MemoryReactor")
  if self.running then error(runtime_error("MemoryReactor:run: already running"), 2) end
  if self.running == nil then
    error(runtime_error("MemoryReactor:run: it crashed (running is nil)"), 2)
  end
  self.running, self.hasRun = true, true
  for _, hook in ipairs(self.whenRunningHooks) do
    hook[1](table.unpack(hook[2], 1, hook[2].n))
  end
  self:stop()
end

function MemoryReactor:stop()
  checkself("stop", MemoryReactor:isinstance(self), self, "MemoryReactor")
  self.running, self.hasStopped = false, true
end

--- As Twisted's: running becomes nil ("crashy"), hasCrashed true.
function MemoryReactor:crash()
  checkself("crash", MemoryReactor:isinstance(self), self, "MemoryReactor")
  self.running, self.hasCrashed = nil, true
end

--- Record f(...) in whenRunningHooks, for run().
function MemoryReactor:callWhenRunning(f, ...)
  checkself("callWhenRunning", MemoryReactor:isinstance(self), self, "MemoryReactor")
  errors.checkcallable("callWhenRunning", 1, f)
  local hooks = self.whenRunningHooks
  hooks[#hooks + 1] = { f, table.pack(...) }
end

--- Record f(...) in triggers[phase][eventType]; nothing ever fires it.
function MemoryReactor:addSystemEventTrigger(phase, eventType, f, ...)
  checkself("addSystemEventTrigger", MemoryReactor:isinstance(self), self, "MemoryReactor")
  errors.checktype("addSystemEventTrigger", 1, phase, "string")
  errors.checktype("addSystemEventTrigger", 2, eventType, "string")
  errors.checkcallable("addSystemEventTrigger", 3, f)
  local byPhase = self.triggers[phase]
  if byPhase == nil then byPhase = {}; self.triggers[phase] = byPhase end
  local list = byPhase[eventType]
  if list == nil then list = {}; byPhase[eventType] = list end
  list[#list + 1] = { f, table.pack(...) }
end

-- What a MemoryReactor cannot do raises NotImplementedError, as Twisted's
-- does, saying why.
local function refused(name, why)
  return function(self)
    checkself(name, MemoryReactor:isinstance(self), self, "MemoryReactor")
    error(errors.NotImplementedError("MemoryReactor:" .. name .. ": " .. why), 2)
  end
end
MemoryReactor.iterate = refused("iterate", "it has no loop to run (advance its clock)")
MemoryReactor.fireSystemEvent = refused("fireSystemEvent",
  "its triggers are only recorded, in triggers[phase][event]")
MemoryReactor.removeSystemEventTrigger = refused("removeSystemEventTrigger",
  "its triggers are recorded without ids (edit triggers[phase][event])")
MemoryReactor.resolve = refused("resolve", "it resolves no names")

-- IReactorFDSet: readers and writers kept in sets, nothing watched.
local function fdset(name, field, add)
  return function(self, d)
    checkself(name, MemoryReactor:isinstance(self), self, "MemoryReactor")
    if d == nil then errors.argerror(name, 1, "descriptor expected, got nil") end
    self[field][d] = add or nil
  end
end
MemoryReactor.addReader = fdset("addReader", "readers", true)
MemoryReactor.removeReader = fdset("removeReader", "readers", false)
MemoryReactor.addWriter = fdset("addWriter", "writers", true)
MemoryReactor.removeWriter = fdset("removeWriter", "writers", false)

local function fdlist(name, field)
  return function(self)
    checkself(name, MemoryReactor:isinstance(self), self, "MemoryReactor")
    local out = {}
    for d in pairs(self[field]) do out[#out + 1] = d end
    return out
  end
end
MemoryReactor.getReaders = fdlist("getReaders", "readers")
MemoryReactor.getWriters = fdlist("getWriters", "writers")

--- Forget every reader and writer; returns them (as Twisted's real
-- reactors do; its MemoryReactor returns nothing).
function MemoryReactor:removeAll()
  checkself("removeAll", MemoryReactor:isinstance(self), self, "MemoryReactor")
  local out, seen = {}, {}
  for _, field in ipairs({ "readers", "writers" }) do
    for d in pairs(self[field]) do
      if not seen[d] then seen[d] = true; out[#out + 1] = d end
    end
  end
  self.readers, self.writers = {}, {}
  return out
end

--- MemoryReactor has its own Clock, so it is Twisted's MemoryReactorClock
-- too.
M.MemoryReactorClock = MemoryReactor

---------------------------------------------------------------------------
-- RaisingMemoryReactor

local RaisingMemoryReactor = class.Object:extend("RaisingMemoryReactor")
M.RaisingMemoryReactor = RaisingMemoryReactor

--- RaisingMemoryReactor(listenException?, connectException?): every listen
-- method and adoptStreamPort raise the first, every connect method and
-- adoptStreamConnection the second (as Twisted's).
function RaisingMemoryReactor:init(listenException, connectException)
  self._listenException = listenException
  self._connectException = connectException
end

-- raise e; with none given, a TypeError (Twisted's `raise None` is one),
-- not an error whose value is nil
local function raise(name, e, which)
  if e == nil then
    e = errors.TypeError(("RaisingMemoryReactor:%s: no %s was given"):format(name, which))
  end
  error(e, 3)
end

for _, name in ipairs({ "listenTCP", "listenSSL", "listenUNIX", "listenUDP", "adoptStreamPort" }) do
  RaisingMemoryReactor[name] = function(self)
    checkself(name, RaisingMemoryReactor:isinstance(self), self, "RaisingMemoryReactor")
    raise(name, self._listenException, "listenException")
  end
end
for _, name in ipairs({ "connectTCP", "connectSSL", "connectUNIX", "adoptStreamConnection" }) do
  RaisingMemoryReactor[name] = function(self)
    checkself(name, RaisingMemoryReactor:isinstance(self), self, "RaisingMemoryReactor")
    raise(name, self._connectException, "connectException")
  end
end

---------------------------------------------------------------------------
-- checking the helpers' arguments and options

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- true when v has a callable field `name` (an __index that raises: false)
local function has_method(v, name)
  if type(v) ~= "table" and type(v) ~= "userdata" then return false end
  local ok, f = pcall(function() return v[name] end)
  return ok and callable(f)
end

-- a value as the messages show it: a number as written, else its type
local function shown(v)
  if type(v) == "number" then return tostring(v) end
  return class.nameof(v)
end

-- Each check below takes `level`: error()'s level, from the check itself,
-- of the code that called the helper being checked.
local function opt_error(cls, fname, key, msg, level)
  error(cls(("bad option '%s' to '%s' (%s)"):format(tostring(key), fname, msg)), level)
end

-- v as an integer (a whole float such as 4.0 too) of at least `min`
local function check_int_opt(fname, key, v, min, level)
  local n = math.type(v) == "integer" and v or (type(v) == "number" and math.tointeger(v))
  if n and (min == nil or n >= min) then return n end
  local what = min and ("integer >= %d"):format(min) or "integer"
  opt_error(type(v) == "number" and errors.ValueError or errors.TypeError, fname, key,
    ("%s expected, got %s"):format(what, shown(v)), level + 1)
end

local function is_reactor(v)
  return v ~= nil and v == package.loaded["braid.reactor"]
end

-- opts.clock: the pump advances it (a Clock, a MemoryReactor);
-- loopbackAsync schedules on it: a time source, the reactor or an object
-- with callLater
local function check_clock(fname, clock, needs, level)
  if needs == "advance" then
    if has_method(clock, "advance") then return clock end
    opt_error(errors.TypeError, fname, "clock",
      "an object with advance expected, got " .. class.nameof(clock), level + 1)
  end
  if is_reactor(clock) or has_method(clock, "callLater") then return clock end
  opt_error(errors.TypeError, fname, "clock",
    "the reactor or an object with callLater expected, got " .. class.nameof(clock), level + 1)
end

local PUMP_OPTS = { seed = true, maxChunk = true, clock = "advance", greet = true }
local IOPUMP_OPTS = { seed = true, maxChunk = true, clock = "advance" }
local LOOPBACK_OPTS = { seed = true, maxChunk = true, clock = "callLater" }

local function option_names(known)
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  return concat(names, ", ")
end

-- The options `opts` (argument #argn of fname), checked against `known`,
-- as a new table with the numbers as integers.
local function check_opts(fname, argn, opts, known, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(errors.TypeError(("bad argument #%d to '%s' (table expected, got %s)")
      :format(argn, fname, class.nameof(opts))), level)
  end
  for k in pairs(opts) do
    if not known[k] then
      opt_error(errors.ValueError, fname, k, "unknown option; the options are "
        .. option_names(known), level + 1)
    end
  end
  local out = { greet = opts.greet }
  if opts.maxChunk ~= nil then
    out.maxChunk = check_int_opt(fname, "maxChunk", opts.maxChunk, 1, level + 1)
  end
  if opts.seed ~= nil then out.seed = check_int_opt(fname, "seed", opts.seed, nil, level + 1) end
  if opts.clock ~= nil then out.clock = check_clock(fname, opts.clock, known.clock, level + 1) end
  if out.greet ~= nil and type(out.greet) ~= "boolean" then
    opt_error(errors.TypeError, fname, "greet", "boolean expected, got " .. shown(out.greet), level + 1)
  end
  return out
end

-- a built protocol: a table that is not a class, with makeConnection
local function check_protocol(fname, argn, p)
  local bad
  if class.isclass(p) then
    bad = "class " .. tostring(class.nameof(p))
  elseif type(p) ~= "table" then
    bad = class.nameof(p)
  elseif not has_method(p, "makeConnection") then
    bad = "a table without makeConnection"
  end
  if bad then
    error(errors.TypeError(("bad argument #%d to '%s' (protocol instance expected, got %s)")
      :format(argn, fname, bad)), 3)
  end
end

-- what connectedServerAndClient builds a protocol from
local function check_factory(fname, argn, f)
  if type(f) == "table" or type(f) == "function" then return end
  error(errors.TypeError(("bad argument #%d to '%s' (factory, protocol class or table "
    .. "expected, got %s)"):format(argn, fname, class.nameof(f))), 3)
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

-- The PRNG's first state for an integer seed: its low 32 bits mixed with
-- its high ones (seeds that differ only above bit 31 differ too), never 0.
local function seed_state(seed)
  local s = (seed ~ ((seed >> 32) * 0x9e3779b9)) & 0xffffffff
  return s ~= 0 and s or 0x9e3779b9
end

local FakeTransport = class.Object:extend("FakeTransport")
M.FakeTransport = FakeTransport
FakeTransport.disconnecting = false
FakeTransport.disconnected = false
FakeTransport.connected = true
FakeTransport.readPaused = false
FakeTransport.aborted = false
FakeTransport.writeDisconnecting = false  -- loseWriteConnection was called
FakeTransport.writeDisconnected = false   -- ... and took effect
FakeTransport.readDisconnected = false    -- the peer half-closed
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
  self.serial = serial     -- Twisted's name: unique per FakeTransport
  self.sessionno = serial  -- braid's TCP transports' name for it
end

local function wake(t)
  if t._wake then t._wake() end
end

function FakeTransport:write(data)
  checkself("write", FakeTransport:isinstance(self), self, "FakeTransport")
  if type(data) ~= "string" then errors.checktype("write", 1, data, "string") end
  if self.disconnected or self.writeDisconnected or self.aborted or data == "" then return end
  local out = self._out
  out[#out + 1] = data
  wake(self)
end

function FakeTransport:writeSequence(list)
  checkself("writeSequence", FakeTransport:isinstance(self), self, "FakeTransport")
  check_sequence(list)
  for i = 1, #list do self:write(list[i]) end
end

function FakeTransport:loseConnection()
  checkself("loseConnection", FakeTransport:isinstance(self), self, "FakeTransport")
  self.disconnecting = true
  wake(self)
end

function FakeTransport:abortConnection()
  checkself("abortConnection", FakeTransport:isinstance(self), self, "FakeTransport")
  self.aborted = true
  self._out = {}
  self:loseConnection()
end

--- Half-close, as braid's TCP transport: once what is queued has been
-- delivered, this side's protocol hears writeConnectionLost() (when it has
-- it) and the peer reads the end: readConnectionLost() when its protocol
-- has it, else the peer closes. Writes made before that still go out
-- first (as Twisted's); later ones are discarded.
function FakeTransport:loseWriteConnection()
  checkself("loseWriteConnection", FakeTransport:isinstance(self), self, "FakeTransport")
  if self.disconnected or self.writeDisconnecting then return end
  self.writeDisconnecting = true
  wake(self)
end

--- "iosim", as Twisted's.
function FakeTransport:logPrefix()
  checkself("logPrefix", FakeTransport:isinstance(self), self, "FakeTransport")
  return "iosim"
end

--- -1: there is no descriptor (as a closed TCP transport's).
function FakeTransport:fileno()
  checkself("fileno", FakeTransport:isinstance(self), self, "FakeTransport")
  return -1
end

function FakeTransport:getPeer()
  checkself("getPeer", FakeTransport:isinstance(self), self, "FakeTransport")
  return self.peerAddr
end

function FakeTransport:getHost()
  checkself("getHost", FakeTransport:isinstance(self), self, "FakeTransport")
  return self.hostAddr
end

function FakeTransport:getWriteBufferSize()
  checkself("getWriteBufferSize", FakeTransport:isinstance(self), self, "FakeTransport")
  local n = 0
  for _, s in ipairs(self._out) do n = n + #s end
  return n
end

function FakeTransport:setTcpNoDelay()
  checkself("setTcpNoDelay", FakeTransport:isinstance(self), self, "FakeTransport")
end

function FakeTransport:getTcpNoDelay()
  checkself("getTcpNoDelay", FakeTransport:isinstance(self), self, "FakeTransport")
  return true
end

function FakeTransport:setTcpKeepAlive()
  checkself("setTcpKeepAlive", FakeTransport:isinstance(self), self, "FakeTransport")
end

function FakeTransport:getTcpKeepAlive()
  checkself("getTcpKeepAlive", FakeTransport:isinstance(self), self, "FakeTransport")
  return false
end

function FakeTransport:pauseProducing()
  checkself("pauseProducing", FakeTransport:isinstance(self), self, "FakeTransport")
  self.readPaused = true
end

function FakeTransport:resumeProducing()
  checkself("resumeProducing", FakeTransport:isinstance(self), self, "FakeTransport")
  self.readPaused = false
  wake(self)
end

function FakeTransport:stopProducing()
  checkself("stopProducing", FakeTransport:isinstance(self), self, "FakeTransport")
  self:loseConnection()
end

function FakeTransport:registerProducer(producer, streaming)
  checkself("registerProducer", FakeTransport:isinstance(self), self, "FakeTransport")
  if self.producer ~= nil then
    error(runtime_error("Cannot register two producers"), 2)
  end
  self.producer, self.streaming = producer, streaming and true or false
  if not streaming then producer:resumeProducing() end
end

function FakeTransport:unregisterProducer()
  checkself("unregisterProducer", FakeTransport:isinstance(self), self, "FakeTransport")
  self.producer, self.streaming = nil, nil
end

--- unregisterProducer, then loseConnection (Twisted's iosim has it, as
-- its FileDescriptor does).
function FakeTransport:stopConsuming()
  checkself("stopConsuming", FakeTransport:isinstance(self), self, "FakeTransport")
  self:unregisterProducer()
  self:loseConnection()
end

local IOPump = class.Object:extend("IOPump")
M.IOPump = IOPump

local function check_transport(argn, t)
  if not FakeTransport:isinstance(t) then
    error(errors.TypeError(("bad argument #%d to 'IOPump' (FakeTransport expected, got %s)")
      :format(argn, class.nameof(t))), 4)
  end
end

--- IOPump(client, server, clientTransport, serverTransport, opts?):
-- opts.seed, opts.maxChunk, opts.clock as connectedServerAndClient's.
function IOPump:init(client, server, clientTransport, serverTransport, opts)
  check_transport(3, clientTransport)
  check_transport(4, serverTransport)
  opts = check_opts("IOPump", 5, opts, IOPUMP_OPTS, 4)
  self.client, self.server = client, server
  self.clientIO, self.serverIO = clientTransport, serverTransport
  self.clock = opts.clock
  self.maxChunk = opts.maxChunk
  self._seed = opts.seed
  if opts.seed then self._rng = seed_state(opts.seed) end
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

local function call_method(obj, name, ...)
  return obj[name](obj, ...)
end

local function close_pair(a, b)
  a.disconnected, b.disconnected = true, true
  a.connected, b.connected = false, false
  local ra, rb
  if a.aborted then
    ra = Failure(errors.ConnectionAborted())
    rb = Failure(errors.ConnectionLost())
  elseif b.aborted then  -- b aborted while a's close was under way
    ra = Failure(errors.ConnectionLost())
    rb = Failure(errors.ConnectionAborted())
  else
    ra = Failure(errors.ConnectionDone())
    rb = Failure(errors.ConnectionDone())
  end
  -- every call is made; then the first error raised (if any) is raised
  local first
  local function try(obj, name, ...)
    local ok, e = pcall(call_method, obj, name, ...)
    if not ok and first == nil then first = { e } end
  end
  if a.producer then try(a.producer, "stopProducing") end
  if b.producer then try(b.producer, "stopProducing") end
  -- as a TCP transport does: connected is false in connectionLost
  if type(a.protocol) == "table" then a.protocol.connected = false end
  if type(b.protocol) == "table" then b.protocol.connected = false end
  try(a.protocol, "connectionLost", ra)
  try(b.protocol, "connectionLost", rb)
  if first then error(first[1], 0) end
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

local function has_fn(p, name)
  return type(p) == "table" and type(p[name]) == "function"
end

-- a's loseWriteConnection takes effect once a's output is delivered, as
-- braid's TCP transport: a side whose read side was already closed hears
-- writeConnectionLost, then closes; a loseConnection made meanwhile wins
-- (check_close)
local function check_halfclose(a, b)
  if not a.writeDisconnecting or a.writeDisconnected or a.disconnected or a.disconnecting
      or #a._out > 0 then
    return false
  end
  a.writeDisconnected = true
  if has_fn(a.protocol, "writeConnectionLost") then a.protocol:writeConnectionLost() end
  if a.readDisconnected then  -- both halves shut: closed, once told
    if not (a.disconnected or b.disconnected) then close_pair(a, b) end
    return true
  end
  if a.disconnected or b.disconnected or b.disconnecting then return true end
  b.readDisconnected = true  -- b reads the end
  if not has_fn(b.protocol, "readConnectionLost") then
    b.disconnecting = true   -- b closes, once its own output is delivered
  else
    b.protocol:readConnectionLost()
    if b.writeDisconnected and not b.disconnected then close_pair(b, a) end
  end
  return true
end

--- One round: deliver client->server and server->client; then
-- half-closes and closes.
-- @return true if anything happened
function IOPump:pump()
  checkself("pump", IOPump:isinstance(self), self, "IOPump")
  if self.clock then self.clock:advance(0) end
  local c, s = self.clientIO, self.serverIO
  local moved = deliver(self, c, s)
  moved = deliver(self, s, c) or moved
  if not c.disconnected then moved = check_halfclose(c, s) or moved end
  if not c.disconnected then moved = check_halfclose(s, c) or moved end
  if not c.disconnected then
    moved = check_close(c, s) or check_close(s, c) or moved
  end
  return moved
end

--- Pump until nothing moves. Raises after `limit` (1e6) rounds.
-- @param limit optional integer >= 1
function IOPump:flush(limit)
  checkself("flush", IOPump:isinstance(self), self, "IOPump")
  if limit ~= nil then
    local n = math.type(limit) == "integer" and limit
      or (type(limit) == "number" and math.tointeger(limit))
    if not n or n < 1 then
      error((type(limit) == "number" and errors.ValueError or errors.TypeError)(
        ("bad argument #1 to 'flush' (integer >= 1 expected, got %s)"):format(shown(limit))), 2)
    end
    limit = n
  end
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

-- Join two checked protocols with FakeTransports and a pump (opts checked).
local function join(server, client, opts)
  local st = FakeTransport(server, true, SERVER_ADDR(), CLIENT_ADDR())
  local ct = FakeTransport(client, false, CLIENT_ADDR(), SERVER_ADDR())
  local pump = IOPump(client, server, ct, st,
    { seed = opts.seed, maxChunk = opts.maxChunk, clock = opts.clock })
  server:makeConnection(st)
  client:makeConnection(ct)
  if opts.greet ~= false then pump:flush() end
  return pump
end

--- Join two protocols (already built) with FakeTransports and a pump.
-- makeConnection is called on the server first; unless opts.greet == false
-- the pump is flushed once.
function M.connect(server, client, opts)
  check_protocol("connect", 1, server)
  check_protocol("connect", 2, client)
  opts = check_opts("connect", 3, opts, PUMP_OPTS, 3)
  return join(server, client, opts)
end

--- connectedServerAndClient(serverFactory, clientFactory, opts?) ->
-- server, client, pump. Factories, protocol classes or plain protocol
-- tables. opts: seed, maxChunk (split every delivery), clock, greet.
function M.connectedServerAndClient(serverFactory, clientFactory, opts)
  local fname = "connectedServerAndClient"
  check_factory(fname, 1, serverFactory)
  check_factory(fname, 2, clientFactory)
  opts = check_opts(fname, 3, opts, PUMP_OPTS, 3)
  local server = build(serverFactory, CLIENT_ADDR())
  local client = build(clientFactory, SERVER_ADDR())
  if server == nil or client == nil then
    error(errors.ValueError("connectedServerAndClient: a factory refused the connection"), 2)
  end
  return server, client, join(server, client, opts)
end

-- f(0 s later) on the time source `clock`: nil (the reactor), the reactor
-- (its functions are called with '.'), or an object (with ':')
local function scheduler(clock)
  if clock == nil then
    return function(f) return require("braid.reactor").callLater(0, f) end
  end
  if is_reactor(clock) then
    return function(f) return clock.callLater(0, f) end
  end
  return function(f) return clock:callLater(0, f) end
end

--- loopbackAsync(server, client, opts?) -> Deferred firing (with nil) once
-- both sides have lost the connection. As Twisted's, it pumps at once (an
-- error then is raised to the caller), and the Deferred has already fired
-- if both sides are done by then; once nothing moves, the next write (or
-- loseConnection, or resumeProducing) schedules the next pumping for a
-- later turn of opts.clock (or the reactor). An error raised in a later
-- round fails the Deferred, and the pair is pumped no more.
function M.loopbackAsync(server, client, opts)
  check_protocol("loopbackAsync", 1, server)
  check_protocol("loopbackAsync", 2, client)
  opts = check_opts("loopbackAsync", 3, opts, LOOPBACK_OPTS, 3)
  local defer = require "braid.defer"
  local d = defer.Deferred()
  local later = scheduler(opts.clock)
  local waiting, stopped = false, false -- waiting: the next write schedules a run
  local pump
  local function run()
    pump:flush()
    if pump.clientIO.disconnected then
      if not d.called then d:callback(nil) end
    else
      waiting = true -- Twisted's notification Deferred
    end
  end
  local function run_later()
    if stopped then return end
    local ok, f = xpcall(run, failure.msgh)
    if not ok then
      stopped = true
      if not d.called then d:errback(f) end
    end
  end
  local function on_write()
    if waiting and not stopped then
      waiting = false
      later(run_later)
    end
  end
  pump = join(server, client, { seed = opts.seed, maxChunk = opts.maxChunk, greet = false })
  pump.clientIO._wake, pump.serverIO._wake = on_write, on_write
  run()
  return d
end

return M
