--- braid.policies: wrapping factories and timeouts (twisted.protocols.policies).
-- test-case-name: spec/policies_spec.lua
--
-- Timed pieces schedule through `self:callLater(delay, f)`, which uses the
-- object's `clock` field when set (a task.Clock in specs), else the reactor.
local class = require "braid.class"
local protocol = require "braid.protocol"
local errors = require "braid.error"

local M = {}

local Protocol, ClientFactory = protocol.Protocol, protocol.ClientFactory
local getmetatable, rawget, pairs, tostring, type = getmetatable, rawget, pairs, tostring, type

local function call_later(self, delay, f, ...)
  local c = self.clock
  if c then return c:callLater(delay, f, ...) end
  return require("braid.reactor").callLater(delay, f, ...)
end

-- period: nil or false (no timeout) or a finite number of seconds >= 0
local function check_period(fname, period)
  if period ~= nil and period ~= false then
    errors.checkseconds(fname, 1, period, "period")
  end
end

-- v: nil, or a number that passes ok(v) (NaN never does); else the error
-- names fname's argument argn
local function check_limit(fname, argn, v, what, ok)
  if v == nil then return end
  if type(v) ~= "number" then
    errors.argerror(fname, argn, "number expected, got " .. type(v), 4)
  end
  if not ok(v) then
    error(errors.ValueError(("bad argument #%d to '%s' (%s, got %s)")
      :format(argn, fname, what, tostring(v))), 4)
  end
end

local function positive(v) return v > 0 and v < math.huge end
local function count(v) return v >= 0 end
local function length(v) return v >= 0 and math.tointeger(v) ~= nil end

local function cancel_quietly(dc)
  if dc and (dc.active == nil or dc:active()) then pcall(dc.cancel, dc) end
end

local build = protocol._build

-- The policies' wrappers that count, log or time a write check it first,
-- with the TypeError the transport gives, so a bad write changes nothing
-- (no bytes counted, no log line for data never sent, no timer reset).
local function check_write(data)
  if type(data) ~= "string" then
    errors.argerror("write", 1, "string expected, got " .. type(data), 4)
  end
end
local function check_sequence(list)
  if type(list) ~= "table" then
    errors.argerror("writeSequence", 1, "table expected, got " .. type(list), 4)
  end
  for i = 1, #list do
    if type(list[i]) ~= "string" then
      errors.argerror("writeSequence", 1,
        ("string expected at index %d, got %s"):format(i, type(list[i])), 4)
    end
  end
end

-- A to-be-closed guard calling f(x) when its block is left by an error
-- (the error goes on with its traceback intact: the handler of the
-- protected call that catches it has run by then).
local ON_ERROR = { __close = function(g, err) if err ~= nil then g[1](g[2]) end end }
local function on_error(f, x) return setmetatable({ f, x }, ON_ERROR) end

---------------------------------------------------------------------------
-- ProtocolWrapper / WrappingFactory

local ProtocolWrapper = Protocol:extend("ProtocolWrapper")
M.ProtocolWrapper = ProtocolWrapper
ProtocolWrapper.disconnecting = false

-- The half-close callbacks exist on a wrapper exactly when its wrapped
-- protocol has them: braid.tcp takes a protocol with a readConnectionLost
-- function to be half-closeable.
local HALF_CLOSE = { readConnectionLost = true, writeConnectionLost = true }

-- Instances of ProtocolWrapper and its subclasses look a key up in their
-- class, then (Twisted's __getattr__) in the real transport: its methods
-- come back bound to it, so wrapper:setTcpNoDelay(true) calls
-- real:setTcpNoDelay(true); other fields read through.
local function wrapper_index(self, k)
  local v = getmetatable(self)[k]
  if v ~= nil then return v end
  if HALF_CLOSE[k] then
    local w = rawget(self, "wrappedProtocol")
    local f = w and w[k]
    if type(f) ~= "function" then return nil end
    return function(_, ...) return f(w, ...) end
  end
  local t = rawget(self, "transport")
  if t == nil then return nil end
  v = t[k]
  if type(v) == "function" then
    return function(_, ...) return v(t, ...) end
  end
  return v
end
ProtocolWrapper.__index = wrapper_index

--- Subclasses of ProtocolWrapper forward to the transport likewise.
function ProtocolWrapper:extend(name, fields)
  local cls = Protocol.extend(self, name, fields)
  cls.__index = wrapper_index
  return cls
end

--- ProtocolWrapper(factory, wrappedProtocol): stands between a transport
-- and wrappedProtocol, acting as the transport of the latter.
function ProtocolWrapper:init(factory, wrappedProtocol)
  self.factory = factory
  self.wrappedProtocol = wrappedProtocol
end

-- The wrapped object's logPrefix(); without one, its class name, as
-- Twisted's __class__.__name__ (a plain table without one: `fallback`).
local function inner_prefix(w, fallback)
  if w == nil then return fallback end
  if w.logPrefix then return w:logPrefix() end
  if class.classof(w) then return class.nameof(w) end
  return fallback
end

function ProtocolWrapper:logPrefix()
  return inner_prefix(self.wrappedProtocol, "Protocol") .. " (" .. class.nameof(self) .. ")"
end

function ProtocolWrapper:makeConnection(transport)
  Protocol.makeConnection(self, transport)
  self.factory:registerProtocol(self)
  self.wrappedProtocol:makeConnection(self)
end

-- transport side
function ProtocolWrapper:write(data) return self.transport:write(data) end
function ProtocolWrapper:writeSequence(list) return self.transport:writeSequence(list) end
function ProtocolWrapper:loseConnection()
  self.disconnecting = true
  return self.transport:loseConnection()
end
function ProtocolWrapper:abortConnection()
  return self.transport:abortConnection()
end
function ProtocolWrapper:getPeer() return self.transport:getPeer() end
function ProtocolWrapper:getHost() return self.transport:getHost() end
function ProtocolWrapper:registerProducer(p, s) return self.transport:registerProducer(p, s) end
function ProtocolWrapper:unregisterProducer() return self.transport:unregisterProducer() end
function ProtocolWrapper:pauseProducing() return self.transport:pauseProducing() end
function ProtocolWrapper:resumeProducing() return self.transport:resumeProducing() end
function ProtocolWrapper:stopProducing() return self.transport:stopProducing() end
function ProtocolWrapper:getWriteBufferSize()
  local t = self.transport
  return t.getWriteBufferSize and t:getWriteBufferSize() or 0
end

-- protocol side
function ProtocolWrapper:dataReceived(data) return self.wrappedProtocol:dataReceived(data) end
function ProtocolWrapper:connectionLost(reason)
  self.factory:unregisterProtocol(self)
  self.connected = false
  local w = self.wrappedProtocol
  local r = w:connectionLost(reason)
  -- as Twisted's (test_breakReferenceCycle): the wrapper lets go of it
  self.wrappedProtocol = nil
  return r
end

local WrappingFactory = ClientFactory:extend("WrappingFactory")
M.WrappingFactory = WrappingFactory
WrappingFactory.protocol = ProtocolWrapper

function WrappingFactory:init(wrappedFactory)
  local t = type(wrappedFactory)
  if t ~= "table" and t ~= "userdata" then
    errors.argerror(class.nameof(self), 1, "factory expected, got " .. t, 4)
  end
  self.wrappedFactory = wrappedFactory
  self.protocols = {}
end

function WrappingFactory:logPrefix()
  return inner_prefix(self.wrappedFactory, "Factory") .. " (" .. class.nameof(self) .. ")"
end

function WrappingFactory:doStart()
  protocol.call(self.wrappedFactory, protocol.Factory, "doStart")
  return ClientFactory.doStart(self)
end

function WrappingFactory:doStop()
  protocol.call(self.wrappedFactory, protocol.Factory, "doStop")
  return ClientFactory.doStop(self)
end

-- the client side goes to the wrapped factory (when it has the method)
for _, name in ipairs({ "startedConnecting", "clientConnectionFailed", "clientConnectionLost" }) do
  WrappingFactory[name] = function(self, connector, reason)
    return protocol.call(self.wrappedFactory, ClientFactory, name, connector, reason)
  end
end

function WrappingFactory:buildProtocol(addr)
  local inner = build(self.wrappedFactory, addr)
  if inner == nil then return nil end
  return self.protocol(self, inner)
end

-- _order numbers the members of the set protocols by registration, so
-- that they are visited in that order (Twisted's dict)
function WrappingFactory:registerProtocol(p)
  self.protocols[p] = true
  self._registered = (self._registered or 0) + 1
  self._order = self._order or {}
  self._order[p] = self._registered
end
function WrappingFactory:unregisterProtocol(p)
  self.protocols[p] = nil
  if self._order then self._order[p] = nil end
end
WrappingFactory.callLater = call_later

---------------------------------------------------------------------------
-- ThrottlingFactory

local ThrottlingProtocol = ProtocolWrapper:extend("ThrottlingProtocol")
M.ThrottlingProtocol = ThrottlingProtocol

function ThrottlingProtocol:write(data)
  check_write(data)
  self.factory:registerWritten(#data)
  return ProtocolWrapper.write(self, data)
end

function ThrottlingProtocol:writeSequence(list)
  check_sequence(list)
  local n = 0
  for _, s in ipairs(list) do n = n + #s end
  self.factory:registerWritten(n)
  return ProtocolWrapper.writeSequence(self, list)
end

function ThrottlingProtocol:dataReceived(data)
  self.factory:registerRead(#data)
  return ProtocolWrapper.dataReceived(self, data)
end

function ThrottlingProtocol:registerProducer(producer, streaming)
  self.producer = producer
  return ProtocolWrapper.registerProducer(self, producer, streaming)
end

function ThrottlingProtocol:unregisterProducer()
  self.producer = nil
  return ProtocolWrapper.unregisterProducer(self)
end

function ThrottlingProtocol:throttleReads() self.transport:pauseProducing() end
function ThrottlingProtocol:unthrottleReads() self.transport:resumeProducing() end
-- rawget: a producer registered through this wrapper, not the transport's
function ThrottlingProtocol:throttleWrites()
  local p = rawget(self, "producer")
  if p then p:pauseProducing() end
end
function ThrottlingProtocol:unthrottleWrites()
  local p = rawget(self, "producer")
  if p then p:resumeProducing() end
end

local ThrottlingFactory = WrappingFactory:extend("ThrottlingFactory")
M.ThrottlingFactory = ThrottlingFactory
ThrottlingFactory.protocol = ThrottlingProtocol

--- ThrottlingFactory(wrappedFactory, maxConnectionCount?, readLimit?, writeLimit?):
-- limits are bytes per second; over a limit, reads (the transports) or
-- writes (registered producers) pause for the excess fraction of a second.
function ThrottlingFactory:init(wrappedFactory, maxConnectionCount, readLimit, writeLimit)
  WrappingFactory.init(self, wrappedFactory)
  check_limit("ThrottlingFactory", 2, maxConnectionCount, "maxConnectionCount must be >= 0", count)
  check_limit("ThrottlingFactory", 3, readLimit, "readLimit must be a finite number > 0", positive)
  check_limit("ThrottlingFactory", 4, writeLimit, "writeLimit must be a finite number > 0", positive)
  self.connectionCount = 0
  self.maxConnectionCount = maxConnectionCount or math.huge
  self.readLimit = readLimit
  self.writeLimit = writeLimit
  self.readThisSecond = 0
  self.writtenThisSecond = 0
end

function ThrottlingFactory:registerWritten(n) self.writtenThisSecond = self.writtenThisSecond + n end
function ThrottlingFactory:registerRead(n) self.readThisSecond = self.readThisSecond + n end

function ThrottlingFactory:checkReadBandwidth()
  if self.readThisSecond > self.readLimit then
    self:throttleReads()
    local t = self.readThisSecond / self.readLimit - 1.0
    self.unthrottleReadsID = self:callLater(t, function() self:unthrottleReads() end)
  end
  self.readThisSecond = 0
  self.checkReadBandwidthID = self:callLater(1, function() self:checkReadBandwidth() end)
end

function ThrottlingFactory:checkWriteBandwidth()
  if self.writtenThisSecond > self.writeLimit then
    self:throttleWrites()
    local t = self.writtenThisSecond / self.writeLimit - 1.0
    self.unthrottleWritesID = self:callLater(t, function() self:unthrottleWrites() end)
  end
  self.writtenThisSecond = 0
  self.checkWriteBandwidthID = self:callLater(1, function() self:checkWriteBandwidth() end)
end

local function each(self, name)
  local list, order = {}, self._order or {}
  for p in pairs(self.protocols) do list[#list + 1] = p end
  table.sort(list, function(a, b) return (order[a] or 0) < (order[b] or 0) end)
  for _, p in ipairs(list) do p[name](p) end
end

function ThrottlingFactory:throttleReads() self.unthrottleReadsID = nil; each(self, "throttleReads") end
function ThrottlingFactory:unthrottleReads() self.unthrottleReadsID = nil; each(self, "unthrottleReads") end
function ThrottlingFactory:throttleWrites() self.unthrottleWritesID = nil; each(self, "throttleWrites") end
function ThrottlingFactory:unthrottleWrites() self.unthrottleWritesID = nil; each(self, "unthrottleWrites") end

local CHECK_IDS = { "unthrottleReadsID", "checkReadBandwidthID",
  "unthrottleWritesID", "checkWriteBandwidthID" }

local function stop_checks(self)
  for _, k in ipairs(CHECK_IDS) do
    cancel_quietly(self[k])
    self[k] = nil
  end
end

local function stop_checks_if_idle(self)
  if self.connectionCount == 0 then stop_checks(self) end
end

-- The bandwidth checks run while connections are open: they start on the
-- first buildProtocol while none is (as Twisted's, before building) and
-- stop with the last connection (unregisterProtocol), or at once when that
-- build is refused or raises (Twisted leaves them running, a pair more per
-- refused connection).
function ThrottlingFactory:buildProtocol(addr)
  local _ <close> = on_error(stop_checks_if_idle, self)
  if self.connectionCount == 0 then
    if self.readLimit ~= nil and self.checkReadBandwidthID == nil then self:checkReadBandwidth() end
    if self.writeLimit ~= nil and self.checkWriteBandwidthID == nil then self:checkWriteBandwidth() end
  end
  local p
  if self.connectionCount < self.maxConnectionCount then
    p = WrappingFactory.buildProtocol(self, addr)
    if p ~= nil then self.connectionCount = self.connectionCount + 1 end
  else
    require("braid.log").msg("Max connection count reached!")  -- Twisted's line
  end
  stop_checks_if_idle(self)
  return p
end

function ThrottlingFactory:unregisterProtocol(p)
  WrappingFactory.unregisterProtocol(self, p)
  self.connectionCount = self.connectionCount - 1
  if self.connectionCount == 0 then stop_checks(self) end
end

---------------------------------------------------------------------------
-- LimitConnectionsByPeer, LimitTotalConnectionsFactory

local LimitConnectionsByPeer = WrappingFactory:extend("LimitConnectionsByPeer")
M.LimitConnectionsByPeer = LimitConnectionsByPeer
LimitConnectionsByPeer.maxConnectionsPerPeer = 5

function LimitConnectionsByPeer:startFactory() self.peerConnections = {} end

-- the key a peer is counted under: its host; a UNIX peer's socket name,
-- or "" for the unnamed ones clients connect from (Twisted's addr.host
-- fails there), all counted together
local function peer_host(addr)
  if type(addr) == "table" then return addr.host or addr.name or addr[1] or "" end
  return tostring(addr)
end

function LimitConnectionsByPeer:buildProtocol(addr)
  self.peerConnections = self.peerConnections or {}
  local host = peer_host(addr)
  local n = self.peerConnections[host] or 0
  local max = self.maxConnectionsPerPeer
  if type(max) ~= "number" then
    error(errors.TypeError(
      "LimitConnectionsByPeer.maxConnectionsPerPeer must be a number, got " .. type(max)))
  end
  if n >= max then return nil end
  local p = WrappingFactory.buildProtocol(self, addr)
  if p ~= nil then
    self.peerConnections[host] = n + 1
    self._peerHosts = self._peerHosts or setmetatable({}, { __mode = "k" })
    self._peerHosts[p] = host
  end
  return p
end

-- The connection is uncounted under the key it was counted under: a UNIX
-- transport's getPeer() is nil once closed, which would uncount "nil"
-- and leave the peer's count up for good.
function LimitConnectionsByPeer:unregisterProtocol(p)
  WrappingFactory.unregisterProtocol(self, p)
  local hosts = self._peerHosts
  local host = hosts and hosts[p]
  if host ~= nil then
    hosts[p] = nil
  else
    host = peer_host(p:getPeer())
  end
  local n = (self.peerConnections[host] or 1) - 1
  self.peerConnections[host] = n > 0 and n or nil
end

local LimitTotal = protocol.ServerFactory:extend("LimitTotalConnectionsFactory")
M.LimitTotalConnectionsFactory = LimitTotal
LimitTotal.connectionCount = 0
LimitTotal.connectionLimit = nil
LimitTotal.overflowProtocol = nil

--- Builds self.protocol until connectionLimit connections are open; then
-- overflowProtocol if set, else refuses (nil).
function LimitTotal:buildProtocol(addr) -- luacheck: ignore addr
  local inner
  local limit = self.connectionLimit
  if limit ~= nil and type(limit) ~= "number" then
    error(errors.TypeError(
      "LimitTotalConnectionsFactory.connectionLimit must be a number or nil, got " .. type(limit)))
  end
  if limit == nil or self.connectionCount < limit then
    inner = protocol.instantiate(self.protocol)
  elseif self.overflowProtocol == nil then
    return nil
  else
    inner = protocol.instantiate(self.overflowProtocol)
  end
  inner.factory = self
  self.connectionCount = self.connectionCount + 1
  return ProtocolWrapper(self, inner)
end

function LimitTotal:registerProtocol(p) end -- luacheck: ignore
function LimitTotal:unregisterProtocol(p) -- luacheck: ignore p
  self.connectionCount = self.connectionCount - 1
end

---------------------------------------------------------------------------
-- TimeoutFactory

local TimeoutProtocol = ProtocolWrapper:extend("TimeoutProtocol")
M.TimeoutProtocol = TimeoutProtocol

function TimeoutProtocol:init(factory, wrappedProtocol, timeoutPeriod)
  ProtocolWrapper.init(self, factory, wrappedProtocol)
  self.timeoutCall = nil
  self:setTimeout(timeoutPeriod)
end

--- (Re)start the timer: period seconds from now; nil or false cancels it.
function TimeoutProtocol:setTimeout(period)
  check_period("setTimeout", period)
  if period == false then period = nil end
  self:cancelTimeout()
  self.timeoutPeriod = period
  if period ~= nil then
    self.timeoutCall = self.factory:callLater(period, function() self:timeoutFunc() end)
  end
end

-- rawget: when unset, these are not read from the transport
function TimeoutProtocol:cancelTimeout()
  self.timeoutPeriod = nil
  cancel_quietly(rawget(self, "timeoutCall"))
  self.timeoutCall = nil
end

function TimeoutProtocol:resetTimeout()
  local c = rawget(self, "timeoutCall")
  if c then c:reset(rawget(self, "timeoutPeriod")) end
end

function TimeoutProtocol:write(data)
  check_write(data)
  self:resetTimeout()
  return ProtocolWrapper.write(self, data)
end
function TimeoutProtocol:writeSequence(list)
  check_sequence(list)
  self:resetTimeout()
  return ProtocolWrapper.writeSequence(self, list)
end
function TimeoutProtocol:dataReceived(data)
  self:resetTimeout()
  return ProtocolWrapper.dataReceived(self, data)
end
function TimeoutProtocol:connectionLost(reason)
  self:cancelTimeout()
  return ProtocolWrapper.connectionLost(self, reason)
end
function TimeoutProtocol:timeoutFunc()
  self.timeoutCall = nil
  self:loseConnection()
end

local TimeoutFactory = WrappingFactory:extend("TimeoutFactory")
M.TimeoutFactory = TimeoutFactory
TimeoutFactory.protocol = TimeoutProtocol

--- TimeoutFactory(wrappedFactory, timeoutPeriod?) (default 30 minutes;
-- false: no timeout until a connection's setTimeout, Twisted's None).
function TimeoutFactory:init(wrappedFactory, timeoutPeriod)
  WrappingFactory.init(self, wrappedFactory)
  if timeoutPeriod == nil then
    timeoutPeriod = 30 * 60
  elseif timeoutPeriod ~= false then
    errors.checkseconds("TimeoutFactory", 2, timeoutPeriod, "timeoutPeriod")
  end
  self.timeoutPeriod = timeoutPeriod
end

function TimeoutFactory:buildProtocol(addr)
  local inner = build(self.wrappedFactory, addr)
  if inner == nil then return nil end
  return self.protocol(self, inner, self.timeoutPeriod)
end

---------------------------------------------------------------------------
-- TrafficLoggingFactory

local function repr(s) return ("%q"):format(s):gsub("\\\n", "\\n") end

local TrafficLoggingProtocol = ProtocolWrapper:extend("TrafficLoggingProtocol")
M.TrafficLoggingProtocol = TrafficLoggingProtocol

function TrafficLoggingProtocol:init(factory, wrappedProtocol, logfile, lengthLimit, number)
  ProtocolWrapper.init(self, factory, wrappedProtocol)
  self.logfile = logfile
  self.lengthLimit = lengthLimit
  self._number = number or 0
end

function TrafficLoggingProtocol:_log(line)
  local f = self.logfile
  if io.type(f) == "closed file" then return end  -- after connectionLost
  f:write(line .. "\n")
  f:flush()
end

-- Twisted's data[:lengthLimit - 12] + "<... elided>" past lengthLimit (0:
-- no limit); a negative end counts from the end, exclusive, as Python's.
function TrafficLoggingProtocol:_mungeData(data)
  local limit = rawget(self, "lengthLimit")
  if limit and limit > 0 and #data > limit then
    local stop = limit - 12
    if stop < 0 then stop = #data + stop end
    data = data:sub(1, stop) .. "<... elided>"
  end
  return data
end

function TrafficLoggingProtocol:connectionMade()
  self:_log("*")
end

function TrafficLoggingProtocol:dataReceived(data)
  self:_log(("C %d: %s"):format(self._number, repr(self:_mungeData(data))))
  return ProtocolWrapper.dataReceived(self, data)
end

function TrafficLoggingProtocol:connectionLost(reason)
  self:_log(("C %d: %s"):format(self._number, tostring(reason and reason.value or reason)))
  -- the connection's log file is closed now: left to the collector (as
  -- CPython's refcounting does at once for Twisted), descriptors pile up
  -- between collections under connection churn. Other log objects (a
  -- factory's open() may return any) are left as they are.
  local f = self.logfile
  if io.type(f) == "file" then f:close() end
  return ProtocolWrapper.connectionLost(self, reason)
end

function TrafficLoggingProtocol:write(data)
  check_write(data)
  self:_log(("S %d: %s"):format(self._number, repr(self:_mungeData(data))))
  return ProtocolWrapper.write(self, data)
end

function TrafficLoggingProtocol:writeSequence(list)
  check_sequence(list)
  local parts = {}
  for i, s in ipairs(list) do parts[i] = repr(self:_mungeData(s)) end
  self:_log(("SV %d: [%s]"):format(self._number, table.concat(parts, ", ")))
  return ProtocolWrapper.writeSequence(self, list)
end

function TrafficLoggingProtocol:loseConnection()
  self:_log(("S %d: *"):format(self._number))
  return ProtocolWrapper.loseConnection(self)
end

local TrafficLoggingFactory = WrappingFactory:extend("TrafficLoggingFactory")
M.TrafficLoggingFactory = TrafficLoggingFactory
TrafficLoggingFactory.protocol = TrafficLoggingProtocol
TrafficLoggingFactory._counter = 0

--- TrafficLoggingFactory(wrappedFactory, logfilePrefix, lengthLimit?):
-- connection n logs to the file logfilePrefix .. "-" .. n.
function TrafficLoggingFactory:init(wrappedFactory, logfilePrefix, lengthLimit)
  WrappingFactory.init(self, wrappedFactory)
  errors.checktype("TrafficLoggingFactory", 2, logfilePrefix, "string")
  check_limit("TrafficLoggingFactory", 3, lengthLimit, "lengthLimit must be an integer >= 0", length)
  self.logfilePrefix = logfilePrefix
  self.lengthLimit = lengthLimit
end

--- Open a log file (override in specs).
function TrafficLoggingFactory:open(name)
  return assert(io.open(name, "w"))
end

local function close_log(f)
  if f.close then f:close() end
end

function TrafficLoggingFactory:buildProtocol(addr)
  self._counter = self._counter + 1
  local logfile = self:open(self.logfilePrefix .. "-" .. self._counter)
  local _ <close> = on_error(close_log, logfile)
  local inner = build(self.wrappedFactory, addr)
  if inner == nil then  -- refused: nothing will log to it
    close_log(logfile)
    return nil
  end
  return self.protocol(self, inner, logfile, self.lengthLimit, self._counter)
end

function TrafficLoggingFactory:resetCounter() self._counter = 0 end

---------------------------------------------------------------------------
-- TimeoutMixin

local TimeoutMixin = {}
M.TimeoutMixin = TimeoutMixin
TimeoutMixin.timeOut = nil

TimeoutMixin.callLater = call_later

local function timed_out(self)
  self._timeoutCall = nil
  self:timeoutConnection()
end

--- Restart the timer (if one is set) from now.
function TimeoutMixin:resetTimeout()
  local c, t = self._timeoutCall, self.timeOut
  if c ~= nil and t then c:reset(t) end
end

--- Set the timeout to period seconds (nil cancels it); returns the previous
-- one (nil if none). Cancelling leaves timeOut false when a class default
-- would otherwise show through (Twisted's None on the instance).
function TimeoutMixin:setTimeout(period)
  check_period("setTimeout", period)
  if period == false then period = nil end
  local prev = self.timeOut or nil
  self.timeOut = period
  if period == nil and self.timeOut ~= nil then self.timeOut = false end
  local c = self._timeoutCall
  if c ~= nil then
    if period == nil then
      cancel_quietly(c)
      self._timeoutCall = nil
    else
      c:reset(period)
    end
  elseif period ~= nil then
    -- callLater(period, f), the hook Twisted's subclasses override
    self._timeoutCall = self:callLater(period, function() timed_out(self) end)
  end
  return prev
end

--- Called when the timeout expires; closes the connection by default.
function TimeoutMixin:timeoutConnection()
  return self.transport:loseConnection()
end

--- Copy the mixin's methods into cls (those cls does not define itself).
-- @return cls
function TimeoutMixin:mixInto(cls)
  for k, v in pairs(TimeoutMixin) do
    if k ~= "mixInto" and rawget(cls, k) == nil then cls[k] = v end
  end
  return cls
end

return M
