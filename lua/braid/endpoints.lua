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

local M = {}

local function defer() return require "braid.defer" end

local function bad(desc, what)
  error(errors.ValueError(("invalid endpoint description %q: %s"):format(desc, what)), 3)
end

-- Split on unescaped ':' (backslash escapes any character), then
-- positional args and key=value pairs.
local function parse(desc)
  local parts, cur, i, n = {}, {}, 1, #desc
  while i <= n do
    local ch = desc:sub(i, i)
    if ch == "\\" and i < n then
      cur[#cur + 1] = desc:sub(i + 1, i + 1)
      i = i + 2
    elseif ch == ":" then
      parts[#parts + 1] = table.concat(cur)
      cur = {}
      i = i + 1
    else
      cur[#cur + 1] = ch
      i = i + 1
    end
  end
  parts[#parts + 1] = table.concat(cur)
  local kind = table.remove(parts, 1)
  local args, kw = {}, {}
  for _, p in ipairs(parts) do
    local k, v = p:match("^([%w_]+)=(.*)$")
    if k then kw[k] = v else args[#args + 1] = p end
  end
  return kind, args, kw
end

local function to_int(desc, name, v, lo, hi)
  local n = tonumber(v)
  if n == nil or math.type(n) ~= "integer" and n ~= math.floor(n) then
    bad(desc, ("%s must be an integer, got %q"):format(name, tostring(v)))
  end
  n = math.tointeger(n)
  if (lo and n < lo) or (hi and n > hi) then
    bad(desc, ("%s out of range: %d"):format(name, n))
  end
  return n
end

local function check_keys(desc, kw, allowed)
  for k in pairs(kw) do
    if not allowed[k] then bad(desc, ("unknown parameter %q"):format(k)) end
  end
end

---------------------------------------------------------------------------
-- server endpoints

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
    return self._reactor.listenTCP(self._port, factory, self._backlog, self._interface)
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
    return self._reactor.listenUNIX(self._address, factory, self._backlog, self._mode)
  end)
end
M.UNIXServerEndpoint = UNIXServerEndpoint

---------------------------------------------------------------------------
-- client endpoints

-- wrap the user's factory so the Deferred fires after connectionMade
local function connect_with(factory, start)
  local D = defer()
  local connector
  local d = D.Deferred(function()
    if connector and connector.state == "connecting" then
      pcall(connector.stopConnecting, connector)
    elseif connector and connector.state == "connected" and connector.transport then
      connector.transport:abortConnection()
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
        if not d.called then d:errback(errors.ConnectError("factory refused the connection")) end
        return nil
      end
      -- fire d once the protocol's own connectionMade ran
      p.connectionMade = function(self)
        self.connectionMade = nil
        local cm = self.connectionMade
        if cm then cm(self) end
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
    clientConnectionLost = function() end,
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
    return self._reactor.connectTCP(self._host, self._port, w, self._timeout, self._bindAddress)
  end)
end
M.TCP4ClientEndpoint = TCPClientEndpoint
M.TCP6ClientEndpoint = TCPClientEndpoint:extend("TCP6ClientEndpoint")
M.HostnameEndpoint = TCPClientEndpoint:extend("HostnameEndpoint")

local UNIXClientEndpoint = class.Object:extend("UNIXClientEndpoint")
function UNIXClientEndpoint:init(reactor, path, timeout)
  self._reactor, self._path, self._timeout = reactor, path, timeout or 30
end
function UNIXClientEndpoint:connect(factory)
  return connect_with(factory, function(w)
    return self._reactor.connectUNIX(self._path, w, self._timeout)
  end)
end
M.UNIXClientEndpoint = UNIXClientEndpoint

--- Connect ep with a protocol instance: Deferred of that protocol.
function M.connectProtocol(ep, proto)
  return ep:connect({ buildProtocol = function() return proto end })
end

---------------------------------------------------------------------------
-- strings

--- Parse a server endpoint string.
function M.serverFromString(reactor, desc)
  errors.checktype("serverFromString", 2, desc, "string")
  local kind, args, kw = parse(desc)
  if kind == "tcp" or kind == "tcp6" then
    check_keys(desc, kw, { port = true, backlog = true, interface = true })
    local port = kw.port or args[1]
    if port == nil or port == "" then bad(desc, "missing port") end
    port = to_int(desc, "port", port, 0, 65535)
    local backlog = (kw.backlog or args[2]) and to_int(desc, "backlog", kw.backlog or args[2], 0) or 50
    local interface = kw.interface or args[3] or (kind == "tcp6" and "::" or "")
    if #args > 3 then bad(desc, ("unexpected argument %q"):format(args[4])) end
    local cls = kind == "tcp6" and M.TCP6ServerEndpoint or M.TCP4ServerEndpoint
    return cls(reactor, port, backlog, interface)
  elseif kind == "unix" then
    check_keys(desc, kw, { address = true, backlog = true, mode = true, lockfile = true })
    local path = kw.address or args[1]
    if path == nil or path == "" then bad(desc, "missing path") end
    local mode = 438
    if kw.mode then
      if not kw.mode:match("^[0-7]+$") then bad(desc, ("mode must be octal, got %q"):format(kw.mode)) end
      mode = tonumber(kw.mode, 8)
    end
    local backlog = kw.backlog and to_int(desc, "backlog", kw.backlog, 0) or 50
    return UNIXServerEndpoint(reactor, path, backlog, mode)
  end
  if kind == "" then bad(desc, "missing endpoint type") end
  bad(desc, ("unknown endpoint type %q"):format(kind))
end

--- Parse a client endpoint string.
function M.clientFromString(reactor, desc)
  errors.checktype("clientFromString", 2, desc, "string")
  local kind, args, kw = parse(desc)
  if kind == "tcp" or kind == "tcp6" then
    check_keys(desc, kw, { host = true, port = true, timeout = true, bindAddress = true })
    local host = kw.host or args[1]
    local port = kw.port or (kw.host and args[1] or args[2])
    if host == nil or host == "" then bad(desc, "missing host") end
    if port == nil or port == "" then bad(desc, "missing port") end
    port = to_int(desc, "port", port, 0, 65535)
    local timeout = kw.timeout and tonumber(kw.timeout)
    if kw.timeout and not timeout then bad(desc, ("timeout must be a number, got %q"):format(kw.timeout)) end
    local bind
    if kw.bindAddress then
      local bh, bp = kw.bindAddress:match("^(.-),?(%d*)$")
      bind = { bh, tonumber(bp) or 0 }
    end
    return M.HostnameEndpoint(reactor, host, port, timeout, bind)
  elseif kind == "unix" then
    check_keys(desc, kw, { path = true, timeout = true, checkPID = true })
    local path = kw.path or args[1]
    if path == nil or path == "" then bad(desc, "missing path") end
    local timeout = kw.timeout and tonumber(kw.timeout)
    if kw.timeout and not timeout then bad(desc, ("timeout must be a number, got %q"):format(kw.timeout)) end
    return UNIXClientEndpoint(reactor, path, timeout)
  end
  if kind == "" then bad(desc, "missing endpoint type") end
  bad(desc, ("unknown endpoint type %q"):format(kind))
end

return M
