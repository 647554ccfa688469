--- braid.endpoints: Twisted's endpoints and endpoint strings (tcp:, unix:).
-- test-case-name: spec/endpoints_spec.lua
--
-- serverFromString(reactor, "tcp:8080:interface=127.0.0.1") and
-- clientFromString(reactor, "tcp:host=example.org:port=80"). A server
-- endpoint's listen(factory) gives a Deferred of the port; a client
-- endpoint's connect(factory) a Deferred of the protocol once connected
-- (after its connectionMade), or the connection error.
local errors = require "braid.error"
local failure = require "braid.failure"
local protocol = require "braid.protocol"
local class = require "braid.class"
local address = require "braid.address"

local M = {}

local function defer() return require "braid.defer" end

-- API.md: a malformed string raises ValueError naming the part that is
-- wrong (where Twisted's parsers raise TypeError for a missing, repeated or
-- unknown argument, braid raises ValueError too).
local function bad(desc, what)
  error(errors.ValueError(("invalid endpoint description %q: %s"):format(desc, what)), 0)
end

-- Twisted's _tokenize and _parse: split on ':' and, before a part's first
-- '=', on '='; a backslash takes the next character literally. Returns the
-- positional arguments (the type first) and the keywords.
local function parse(desc)
  local args, kw, sofar, cur, ops, i, n = {}, {}, {}, {}, ":=", 1, #desc
  local function add()
    if #sofar == 1 then args[#args + 1] = sofar[1] else kw[sofar[1]] = sofar[2] end
    sofar = {}
  end
  while i <= n do
    local ch = desc:sub(i, i)
    if ops:find(ch, 1, true) then
      sofar[#sofar + 1] = table.concat(cur)
      cur = {}
      if ch == ":" then add() end
      ops = ch == ":" and ":=" or ":"
    elseif ch == "\\" then
      -- Twisted's tokenizer fails on a backslash with nothing after it
      if i == n then bad(desc, "a backslash at the end escapes nothing") end
      i = i + 1
      cur[#cur + 1] = desc:sub(i, i)
    else
      cur[#cur + 1] = ch
    end
    i = i + 1
  end
  sofar[#sofar + 1] = table.concat(cur)
  add()
  return args, kw
end

-- Python's int(v) / int(v, 8) of a string (an integer is itself):
-- surrounding spaces, a sign, single "_"s between digits, "0o" in base 8.
local function to_int(desc, name, v, base)
  if math.type(v) == "integer" then return v end
  local d = base == 8 and "[0-7]" or "%d"
  local sign, digits = v:match("^%s*([+-]?)(.-)%s*$")
  if base == 8 and digits:match("^0[oO]_?[0-7]") then digits = digits:gsub("^0[oO]_?", "") end
  local clean = digits:gsub("_(" .. d .. ")", "%1")
  if not (digits:match("^" .. d) and clean:match("^" .. d .. "+$")) then
    bad(desc, ("%s must be %s, got %q"):format(name, base == 8 and "octal" or "an integer", v))
  end
  clean = clean:gsub("^0+(%d)", "%1")  -- Python's int("000080") is 80: no digits to count
  if #clean > 18 then bad(desc, ("%s too large: %s"):format(name, v)) end
  local n = tonumber(clean, base or 10)
  return sign == "-" and -n or n
end

-- Python's binding of args and kw to params (the first nfixed given, the
-- first nreq required): an unknown keyword, a parameter given twice, too
-- many arguments or a missing one is malformed.
local function bind(desc, params, nfixed, nreq, args, kw)
  local out, index = {}, {}
  -- an address written with its colons as they are ([::1]) was cut at them
  local hint = desc:find("[", 1, true)
    and " (write each ':' inside a value as '\\:', as in interface=\\:\\:1)" or ""
  for i, p in ipairs(params) do index[p] = i end
  if #args > #params - nfixed then bad(desc, "too many arguments" .. hint) end
  for i, v in ipairs(args) do out[params[nfixed + i]] = v end
  local keys = {}
  for k in pairs(kw) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local i = index[k]
    if not i then bad(desc, ("unknown parameter %q"):format(k)) end
    if i <= nfixed or out[k] ~= nil then
      bad(desc, ("%s given twice%s"):format(k, hint))
    end
    out[k] = kw[k]
  end
  for i = nfixed + 1, nreq do
    if out[params[i]] == nil then bad(desc, "missing " .. params[i]) end
  end
  return out
end

---------------------------------------------------------------------------
-- server endpoints

-- reactor.name(...): the braid.reactor module (a plain table) is called
-- with a dot, an object (one with a metatable: a MemoryReactor, Twisted's
-- kind of reactor) as a method.
local function rcall(reactor, name, ...)
  if getmetatable(reactor) ~= nil then return reactor[name](reactor, ...) end
  return reactor[name](...)
end

local function listen_with(ep, f)
  local D = defer()
  local ok, port = pcall(f)
  if ok then return D.succeed(port) end
  return D.fail(failure.Failure(port))
end

local TCPServerEndpoint = class.Object:extend("TCP4ServerEndpoint")
function TCPServerEndpoint:init(reactor, port, backlog, interface)
  self._reactor, self._port, self._backlog = reactor, port, backlog or 50
  self._interface = interface or ""
end
--- Listen; Deferred of the port (errback CannotListenError).
function TCPServerEndpoint:listen(factory)
  return listen_with(self, function()
    return rcall(self._reactor, "listenTCP", self._port, factory, self._backlog, self._interface)
  end)
end
M.TCP4ServerEndpoint = TCPServerEndpoint
M.TCP6ServerEndpoint = TCPServerEndpoint:extend("TCP6ServerEndpoint")
function M.TCP6ServerEndpoint:init(reactor, port, backlog, interface)
  TCPServerEndpoint.init(self, reactor, port, backlog, interface or "::")
end

local UNIXServerEndpoint = class.Object:extend("UNIXServerEndpoint")
function UNIXServerEndpoint:init(reactor, address, backlog, mode)
  self._reactor, self._address, self._backlog, self._mode = reactor, address, backlog or 50, mode or 438
end
function UNIXServerEndpoint:listen(factory)
  return listen_with(self, function()
    return rcall(self._reactor, "listenUNIX", self._address, factory, self._backlog, self._mode)
  end)
end
M.UNIXServerEndpoint = UNIXServerEndpoint

---------------------------------------------------------------------------
-- client endpoints

-- wrap the user's factory so the Deferred fires after connectionMade
-- the Deferred's ConnectingCancelledError names cancel_address(connector),
-- or else the connector's destination
local function connect_with(factory, start, cancel_address)
  if not protocol.isFactory(factory) then -- raised here: the wrapper would hide it
    errors.argerror("connect", 1, "factory expected (a table with protocol or buildProtocol), got "
      .. class.nameof(factory), 3)
  end
  local D = defer()
  local connector
  local function cancelled()
    local addr = cancel_address and cancel_address() or connector:getDestination()
    return errors.ConnectingCancelledError(addr)
  end
  local d = D.Deferred(function(d)
    if not connector then return end
    if connector.state == "connecting" then
      -- as Twisted's endpoints: the Deferred fails with
      -- ConnectingCancelledError (its `address` the destination), and the
      -- attempt's own failure (UserError) then finds it fired
      d:errback(cancelled())
      pcall(connector.stopConnecting, connector)
    elseif connector.state == "connected" then
      -- cancelled from the factory's buildProtocol or the protocol's
      -- connectionMade, before d fired: the same ConnectingCancelledError,
      -- as Twisted's canceller errbacks before its stopConnecting raises
      -- NotConnectingError; the connection is aborted (from buildProtocol:
      -- the wrapper then builds nothing, so it is closed)
      d:errback(cancelled())
      if connector.transport then connector.transport:abortConnection() end
    end
  end)
  local wrapper = {
    noisy = false,
    buildProtocol = function(_, addr)
      local ok, p = pcall(protocol.call, factory, protocol.Factory, "buildProtocol", addr)
      if not ok then
        if not d.called then d:errback(failure.Failure(p)) end
        return nil
      end
      if p == nil then
        if not d.called then d:errback(errors.NoProtocol()) end
        return nil
      end
      -- d cancelled from inside buildProtocol: no connection for it
      if d.called then return nil end
      -- fire d once the protocol's makeConnection (and so its
      -- connectionMade) ran, as Twisted's _WrappingProtocol; the instance's
      -- own makeConnection field, if any, is put back first
      local own = rawget(p, "makeConnection")
      p.makeConnection = function(self, transport)
        self.makeConnection = own
        self:makeConnection(transport)
        if not d.called then d:callback(self) end
      end
      return p
    end,
    doStart = function() protocol.call(factory, protocol.Factory, "doStart") end,
    doStop = function() protocol.call(factory, protocol.Factory, "doStop") end,
    startedConnecting = function() end,
    clientConnectionFailed = function(_, _, reason)
      if not d.called then d:errback(reason) end
    end,
    clientConnectionLost = function(_, _, reason)
      -- lost before d fired: makeConnection raised
      if not d.called then d:errback(reason) end
    end,
  }
  local ok, c = pcall(start, wrapper)
  if not ok then
    d:errback(failure.Failure(c))
  else
    connector = c
  end
  return d
end

local TCPClientEndpoint = class.Object:extend("TCP4ClientEndpoint")
function TCPClientEndpoint:init(reactor, host, port, timeout, bindAddress)
  self._reactor, self._host, self._port = reactor, host, port
  self._timeout, self._bindAddress = timeout or 30, bindAddress
end
--- Connect; Deferred of the protocol (errback with the connection error).
function TCPClientEndpoint:connect(factory)
  return connect_with(factory, function(w)
    return rcall(self._reactor, "connectTCP", self._host, self._port, w, self._timeout, self._bindAddress)
  end)
end
M.TCP4ClientEndpoint = TCPClientEndpoint
M.TCP6ClientEndpoint = TCPClientEndpoint:extend("TCP6ClientEndpoint")
M.HostnameEndpoint = TCPClientEndpoint:extend("HostnameEndpoint")
--- Connect by name; a cancel fails with ConnectingCancelledError whose
-- `address` is HostnameAddress(host, port), as Twisted's.
function M.HostnameEndpoint:connect(factory)
  return connect_with(factory, function(w)
    return rcall(self._reactor, "connectTCP", self._host, self._port, w, self._timeout, self._bindAddress)
  end, function() return address.HostnameAddress(self._host, self._port) end)
end

local UNIXClientEndpoint = class.Object:extend("UNIXClientEndpoint")
function UNIXClientEndpoint:init(reactor, path, timeout)
  self._reactor, self._path, self._timeout = reactor, path, timeout or 30
end
function UNIXClientEndpoint:connect(factory)
  return connect_with(factory, function(w)
    return rcall(self._reactor, "connectUNIX", self._path, w, self._timeout)
  end)
end
M.UNIXClientEndpoint = UNIXClientEndpoint

--- Connect ep with a protocol instance: Deferred of that protocol.
function M.connectProtocol(ep, proto)
  if type(ep) ~= "table" or type(ep.connect) ~= "function" then
    errors.argerror("connectProtocol", 1, "endpoint expected (an object with connect), got "
      .. class.nameof(ep))
  end
  return ep:connect({ buildProtocol = function() return proto end })
end

---------------------------------------------------------------------------
-- strings

-- A port: an integer from 0 to 65535 (Twisted checks the range only when
-- it listens or connects).
local function to_port(desc, v)
  local n = to_int(desc, "port", v)
  if n < 0 or n > 65535 then bad(desc, ("port out of range: %d"):format(n)) end
  return n
end

-- A host or path: not empty (Twisted takes "" and fails later).
local function nonempty(desc, name, v)
  if v == "" then bad(desc, "missing " .. name) end
  return v
end

-- Twisted's parsers (endpoints.py: _parseTCP, _TCP6ServerParser,
-- _parseUNIX); lockfile must be an integer, and is ignored.
local SERVERS = {
  tcp = function(reactor, desc, args, kw)
    local a = bind(desc, { "factory", "port", "interface", "backlog" }, 1, 2, args, kw)
    return M.TCP4ServerEndpoint(reactor, to_port(desc, a.port),
      to_int(desc, "backlog", a.backlog or 50), a.interface or "")
  end,
  tcp6 = function(reactor, desc, args, kw)
    local a = bind(desc, { "reactor", "port", "backlog", "interface" }, 1, 2, args, kw)
    return M.TCP6ServerEndpoint(reactor, to_port(desc, a.port),
      to_int(desc, "backlog", a.backlog or 50), a.interface or "::")
  end,
  unix = function(reactor, desc, args, kw)
    local a = bind(desc, { "factory", "address", "mode", "backlog", "lockfile" }, 1, 2, args, kw)
    nonempty(desc, "path", a.address)
    local mode = to_int(desc, "mode", a.mode or "666", 8)
    if mode < 0 or mode > 4095 then  -- Twisted's int(mode, 8) fails later, at chmod
      bad(desc, ("mode must be from 0 to 7777 (octal), got %q"):format(a.mode))
    end
    local backlog = to_int(desc, "backlog", a.backlog or 50)
    to_int(desc, "lockfile", a.lockfile or 1)
    return UNIXServerEndpoint(reactor, a.address, backlog, mode)
  end,
}

--- Parse a server endpoint string.
function M.serverFromString(reactor, desc)
  errors.checktype("serverFromString", 1, reactor, "table")
  errors.checktype("serverFromString", 2, desc, "string")
  local args, kw = parse(desc)
  local kind = table.remove(args, 1)
  if kind == nil then bad(desc, "missing endpoint type") end
  local parser = SERVERS[kind] or (kind:lower() == "tcp6" and SERVERS.tcp6)
  if not parser then bad(desc, ("unknown endpoint type %q"):format(kind)) end
  return parser(reactor, desc, args, kw)
end

-- A timeout in seconds: any finite decimal number >= 0 (Twisted: an integer).
local function to_timeout(desc, v)
  local t = not v:find("[xX]") and tonumber(v) or nil
  if t == nil or not (t >= 0 and t < math.huge) then
    bad(desc, ("timeout must be a finite number of seconds >= 0, got %q"):format(v))
  end
  return t
end

-- bindAddress=H (port 0, as Twisted) or, braid's addition, H,P.
local function to_bind(desc, v)
  local h, p = v:match("^(.*),([^,]*)$")
  if h == nil then return { v, 0 } end
  return { h, to_port(desc, p) }
end

-- Twisted's _parseClientTCP and _parseClientUNIX (lockfile sets checkPID,
-- which braid ignores). tcp6 is braid's: the same as tcp.
local CLIENTS = {
  TCP = function(reactor, desc, args, kw)
    if #args == 2 then
      kw.port, kw.host = to_port(desc, args[2]), args[1]
    elseif #args == 1 then
      if kw.host ~= nil then kw.port = to_port(desc, args[1]) else kw.host = args[1] end
    end
    if kw.port ~= nil then kw.port = to_port(desc, kw.port) end
    if kw.timeout ~= nil then kw.timeout = to_timeout(desc, kw.timeout) end
    if kw.bindAddress ~= nil then kw.bindAddress = to_bind(desc, kw.bindAddress) end
    local a = bind(desc, { "reactor", "host", "port", "timeout", "bindAddress" }, 1, 3, {}, kw)
    nonempty(desc, "host", a.host)
    return M.HostnameEndpoint(reactor, a.host, a.port, a.timeout, a.bindAddress)
  end,
  UNIX = function(reactor, desc, args, kw)
    if #args == 1 then kw.path = args[1] end
    if kw.lockfile ~= nil then
      kw.checkPID = to_int(desc, "lockfile", kw.lockfile) ~= 0
      kw.lockfile = nil
    end
    if kw.timeout ~= nil then kw.timeout = to_timeout(desc, kw.timeout) end
    local a = bind(desc, { "reactor", "path", "timeout", "checkPID" }, 1, 2, {}, kw)
    nonempty(desc, "path", a.path)
    return UNIXClientEndpoint(reactor, a.path, a.timeout)
  end,
}
CLIENTS.TCP6 = CLIENTS.TCP

--- Parse a client endpoint string.
function M.clientFromString(reactor, desc)
  errors.checktype("clientFromString", 1, reactor, "table")
  errors.checktype("clientFromString", 2, desc, "string")
  local args, kw = parse(desc)
  local kind = table.remove(args, 1)
  if kind == nil then bad(desc, "missing endpoint type") end
  local parser = CLIENTS[kind:upper()]
  if not parser then bad(desc, ("unknown endpoint type %q"):format(kind)) end
  return parser(reactor, desc, args, kw)
end

return M
