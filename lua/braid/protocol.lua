--- braid.protocol: Protocol and Factory classes (twisted.internet.protocol).
-- test-case-name: spec/protocol_spec.lua
--
-- A plain table works wherever a protocol or factory is expected. A plain
-- protocol table P gets a fresh instance per connection whose methods are
-- looked up in P, then in Protocol, at every access (P is never modified,
-- and edits to P take effect at once).
local class = require "braid.class"
local errors = require "braid.error"

local M = {}

local type, rawget, setmetatable = type, rawget, setmetatable

local function log_msg(...)
  local ok, log = pcall(require, "braid.log")
  if ok then log.msg(...) end
end

---------------------------------------------------------------------------
-- Protocol

local Protocol = class.Object:extend("Protocol")
Protocol.connected = false
Protocol.transport = nil

--- Called by the transport: set transport and connected, then connectionMade.
function Protocol:makeConnection(transport)
  self.connected = true
  self.transport = transport
  self:connectionMade()
end

function Protocol:connectionMade() end
function Protocol:dataReceived(data) end -- luacheck: ignore
function Protocol:connectionLost(reason) end -- luacheck: ignore

--- The log prefix: the class name (or a plain table's `__name`).
function Protocol:logPrefix()
  local cls = class.classof(self)
  if cls then return cls.__name or "Protocol" end
  local mt = getmetatable(self)
  return mt and mt._name or "Protocol"
end

M.Protocol = Protocol

-- plain protocol tables: one metatable per P, kept while P lives
local plain_meta = setmetatable({}, { __mode = "k" })

local function meta_for(P, base)
  local mt = plain_meta[P]
  if not mt then
    local name = rawget(P, "__name")
    mt = {
      _name = type(name) == "string" and name or "Protocol",
      __index = function(_, k)
        local v = P[k]
        if v == nil then v = base[k] end
        return v
      end,
    }
    plain_meta[P] = mt
  end
  return mt
end

--- A fresh protocol instance of P: a class, or a plain table.
function M.instantiate(P, ...)
  if class.isclass(P) then return P(...) end
  if type(P) == "function" then return P(...) end
  if type(P) ~= "table" then
    error(errors.TypeError("protocol must be a class or a table, got " .. type(P)), 3)
  end
  return setmetatable({}, meta_for(P, Protocol))
end

---------------------------------------------------------------------------
-- Factory

local Factory = class.Object:extend("Factory")
Factory.protocol = nil
Factory.numPorts = 0
Factory.noisy = true

--- Make an instance of self.protocol with .factory set; nil refuses.
function Factory:buildProtocol(addr) -- luacheck: ignore addr
  local P = self.protocol
  if P == nil then
    error(errors.ValueError("factory has no protocol"), 2)
  end
  local p = M.instantiate(P)
  p.factory = self
  return p
end

function Factory:startFactory() end
function Factory:stopFactory() end

-- "Starting factory ..." and "Stopping factory ...": as Twisted's
-- (_loggerFor(factory).info("Starting factory {factory!r}", factory=...)),
-- Logger events with the format "Starting factory {factory!r}", the
-- factory in the `factory` field and as the event's `source`, and the
-- factory's class name as the namespace. A twisted.logger Logger's events
-- never take the legacy log context, so they are "[-]" lines even when a
-- factory starts or stops inside a connection's callbacks (a proxy's
-- connectTCP in dataReceived) or while the reactor's shutdown closes a
-- port under its prefix.
local function log_factory(what, f)
  local ok, log = pcall(require, "braid.log")
  if ok then
    log.Logger(class.nameof(f), f):info(what .. " factory {factory!r}", { factory = f, system = "-" })
  end
end

-- The count of users: the instance's own, else (an instance of a class
-- that sets numPorts, as Twisted reads a class attribute) its class's. A
-- class used itself as a factory keeps its count raw, so that its
-- instances do not inherit it.
local function num_ports(self)
  local n = rawget(self, "numPorts")
  if n == nil and not class.isclass(self) then n = self.numPorts end
  return n or 0
end

--- Count a user (port or connector); the first one starts the factory.
function Factory:doStart()
  local n = num_ports(self)
  if n == 0 then
    if self.noisy then log_factory("Starting", self) end
    M.call(self, Factory, "startFactory")
  end
  self.numPorts = n + 1
end

--- Uncount a user; the last one stops the factory.
function Factory:doStop()
  local n = num_ports(self)
  if n == 0 then return end
  n = n - 1
  self.numPorts = n
  if n == 0 then
    if self.noisy then log_factory("Stopping", self) end
    M.call(self, Factory, "stopFactory")
  end
end

local function for_protocol(cls, P, ...)
  local f = cls(...)
  f.protocol = P
  return f
end

--- Factory.forProtocol(P, ...): a factory for P, made as Factory(...).
-- A class method: Sub.forProtocol(P, ...) and Sub:forProtocol(P, ...) make
-- Sub(...) for any subclass Sub (Twisted's cls(*args); .protocol = P).
Factory.forProtocol = class.classmethod(function(cls, ...)
  if class.isclass(cls) and cls:issubclass(Factory) then
    return for_protocol(cls, ...)
  end
  return for_protocol(Factory, cls, ...) -- Factory.forProtocol(P, ...)
end)

function Factory:logPrefix()
  return class.nameof(self)
end

M.Factory = Factory
M.ServerFactory = Factory:extend("ServerFactory")

---------------------------------------------------------------------------
-- ClientFactory

local ClientFactory = Factory:extend("ClientFactory")
function ClientFactory:startedConnecting(connector) end -- luacheck: ignore
function ClientFactory:clientConnectionFailed(connector, reason) end -- luacheck: ignore
function ClientFactory:clientConnectionLost(connector, reason) end -- luacheck: ignore
M.ClientFactory = ClientFactory

--- Call method `name` of obj, falling back to base's (plain tables).
function M.call(obj, base, name, ...)
  local f = obj[name]
  if f == nil then f = base[name] end
  if f == nil then return nil end
  return f(obj, ...)
end

-- A plain table (no metatable) returned by buildProtocol is a protocol
-- too, as API.md's plain tables: Protocol's methods for what it lacks.
local PLAIN = { __index = Protocol, __name = "Protocol" }

--- factory:buildProtocol(addr), checked, for the transports and the
-- wrapping factories: a protocol, a plain table (given Protocol's methods
-- for what it lacks), a userdata, or nil (refused); anything else raises
-- TypeError.
function M._build(factory, addr)
  local p = M.call(factory, Factory, "buildProtocol", addr)
  local tp = type(p)
  if tp == "table" then
    if getmetatable(p) == nil then setmetatable(p, PLAIN) end
  elseif p ~= nil and tp ~= "userdata" then
    error(errors.TypeError(("buildProtocol returned a %s, not a protocol (nil refuses)"):format(tp)), 0)
  end
  return p
end

--- True when v can serve as a factory.
function M.isFactory(v)
  return type(v) == "table" and (v.buildProtocol ~= nil or v.protocol ~= nil)
end

---------------------------------------------------------------------------
-- ReconnectingClientFactory (Twisted's backoff)

local RCF = ClientFactory:extend("ReconnectingClientFactory")
RCF.maxDelay = 3600
RCF.initialDelay = 1.0
RCF.factor = 2.7182818284590451
RCF.jitter = 0.119626565582
RCF.delay = 1.0
RCF.retries = 0
RCF.maxRetries = nil
RCF.continueTrying = true
RCF.connector = nil
RCF.clock = nil
RCF._callID = nil

-- random.normalvariate(mu, sigma), Box-Muller
local function normalvariate(mu, sigma)
  local u1 = 1 - math.random()
  local u2 = math.random()
  return mu + sigma * math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
end
M._normalvariate = normalvariate

function RCF:clientConnectionFailed(connector, reason) -- luacheck: ignore reason
  if self.continueTrying then
    self.connector = connector
    self:retry()
  end
end

function RCF:clientConnectionLost(connector, reason) -- luacheck: ignore reason
  if self.continueTrying then
    self.connector = connector
    self:retry()
  end
end

--- Schedule a new connection attempt with exponential backoff.
function RCF:retry(connector)
  if not self.continueTrying then
    if self.noisy then log_msg("Abandoning " .. tostring(connector) .. " on explicit request") end
    return
  end
  if connector == nil then
    if self.connector == nil then
      error(errors.ValueError("no connector to retry"), 2)
    end
    connector = self.connector
  end
  self.retries = self.retries + 1
  if self.maxRetries ~= nil and self.retries > self.maxRetries then
    if self.noisy then
      log_msg(("Abandoning %s after %d retries."):format(tostring(connector), self.retries))
    end
    return
  end
  self.delay = math.min(self.delay * self.factor, self.maxDelay)
  if self.jitter and self.jitter ~= 0 then
    self.delay = normalvariate(self.delay, self.delay * self.jitter)
  end
  if self.noisy then
    -- Python's "%d" of the float: its integer part, however large
    log_msg(("%s will retry in %.0f seconds"):format(tostring(connector), math.floor(self.delay)))
  end
  local function reconnector()
    self._callID = nil
    connector:connect()
  end
  local clock = self.clock
  if clock == nil then
    self._callID = require("braid.reactor").callLater(self.delay, reconnector)
  else
    self._callID = clock:callLater(self.delay, reconnector)
  end
end

--- Stop reconnecting (and any attempt in progress).
function RCF:stopTrying()
  if self._callID then
    self._callID:cancel()
    self._callID = nil
  end
  self.continueTrying = false
  if self.connector then
    local ok, e = pcall(self.connector.stopConnecting, self.connector)
    if not ok and not errors.isinstance(e, errors.NotConnectingError) then error(e, 0) end
  end
end

--- Back to the initial delay (call on a successful connection).
function RCF:resetDelay()
  self.delay = self.initialDelay
  self.retries = 0
  self._callID = nil
  self.continueTrying = true
end

M.ReconnectingClientFactory = RCF

return M
