--- braid.tcp: TCP and UNIX stream sockets (twisted.internet.tcp / unix).
-- test-case-name: spec/tcp_spec.lua
--
-- The C core (runtime/tcp.c) owns sockets, buffers and events; this module
-- holds the policy: building protocols, the log system prefix, Failures for
-- connectionLost, connectors and listening ports. C calls the handlers
-- below as handler(transport, protocol, system, ...), always protected.
local core = require "braid.core"
local errors = require "braid.error"
local checkself = errors.checkself
local failure = require "braid.failure"
local protocol = require "braid.protocol"
local address = require "braid.address"
local class = require "braid.class"
-- loaded with this module, not when first needed: stopListening and a
-- connect to a name must work once the process is out of descriptors, when
-- require can no longer open a module's file
local defer = require "braid.defer"
local resolver = require "braid.resolver"

local M = {}

local type, tostring, xpcall, pcall = type, tostring, xpcall, pcall
local Failure, msgh = failure.Failure, failure.msgh
local report = core.report_error
local Protocol, Factory, ClientFactory = protocol.Protocol, protocol.Factory, protocol.ClientFactory
local call = protocol.call

-- braid.log's system swap, or a no-op until it loads; while the fast read
-- path of tcp.c runs a dataReceived, the connection's system is braid.log's
-- ambient one (tcp_current_system)
local set_system = function(s) return s end
-- f(...) under system `s`, restored however f ends (braid.log's
-- callWithContext)
local call_with_system = function(_, f, ...) return f(...) end
do
  local ok, log = pcall(require, "braid.log")
  if ok and log.setSystem then set_system = log.setSystem end
  if ok and log.callWithContext then call_with_system = log.callWithContext end
  if ok and log._setAmbientSystem then log._setAmbientSystem(core.tcp_current_system) end
end

local function reactor() return require "braid.reactor" end

-- Set field k of transport t, one of those braid keeps (disconnected,
-- producer, producerPaused, connector: __newindex
-- ignores what others assign them), in its fields table, which is t's
-- metatable.
local function keep_field(t, k, v) rawset(getmetatable(t), k, v) end
-- the same for a false value: written only over a field already there,
-- as the class's default reads false (nothing allocated)
local function clear_field(t, k)
  local fields = getmetatable(t)
  if rawget(fields, k) ~= nil then rawset(fields, k, false) end
end

-- reason codes from tcp.c
local R_DONE, R_LOST, R_ABORTED, R_ERROR, R_CONNFAIL = 1, 2, 3, 4, 5

---------------------------------------------------------------------------
-- protocol calls

-- A protocol method raised: log it and abort the connection; its
-- connectionLost gets this Failure.
local function proto_failed(t, f, sys)
  local prev = set_system(sys)
  report(f)
  set_system(prev)
  if t._reason == nil then t._reason = f end
  t:_fail()
end

-- call p[name](p, ...) under the connection's log system; errors abort
local function pcall_proto(t, p, sys, name, ...)
  local prev = set_system(sys)
  local f = p[name]
  local ok, e = xpcall(f, msgh, p, ...)
  set_system(prev)
  if not ok then proto_failed(t, e, sys) return false end
  return true, e
end

local function on_eof(t, p, sys)
  if p == nil or type(p.readConnectionLost) ~= "function" then return false end
  pcall_proto(t, p, sys, "readConnectionLost")
  return true
end

local function on_wlost(t, p, sys)
  if p ~= nil and type(p.writeConnectionLost) == "function" then
    pcall_proto(t, p, sys, "writeConnectionLost")
  end
end

-- The reason's traceback: like Twisted's Failure(CONNECTION_DONE), it has
-- no frames (a stack walk here would only show this module, and costs more
-- than the rest of the close: luaL_traceback searches package.loaded).
local NO_FRAMES = "\t(no frames: the reactor reports the connection's end)"

local function make_reason(t, code, msg)
  if code == R_DONE then return Failure(errors.ConnectionDone(), NO_FRAMES) end
  -- an error raised after abortConnection() is the reason, as Twisted's
  if code == R_ABORTED then return t._reason or Failure(errors.ConnectionAborted(), NO_FRAMES) end
  if code == R_ERROR then return t._reason or Failure(errors.ConnectionLost(), NO_FRAMES) end
  return Failure(errors.ConnectionLost(msg), NO_FRAMES)
end

-- p.connected = false, then p:connectionLost(reason)
local function lost_call(p, reason)
  p.connected = false
  return p:connectionLost(reason)
end

-- The system of a client connection until it is connected (Twisted's
-- BaseClient.logstr): what its factory logs when the socket reports the
-- connection refused, or while the protocol is built and connectionMade runs
local UNINITIALIZED = "Uninitialized"

local function on_lost(t, p, sys, code, err, msg)
  if code == R_CONNFAIL then
    local cb = t._onfail
    if cb then call_with_system(UNINITIALIZED, cb, t, err, msg) end
    return
  end
  -- disconnected = true first, as Twisted's FileDescriptor.connectionLost
  -- sets it before the producer and the protocol hear; raw, as __newindex
  -- ignores the fields braid keeps (the fields table is t's metatable);
  -- protected, as the new key allocates: the protocol hears of the loss
  -- even when memory ran out
  pcall(keep_field, t, "disconnected", true)
  if p == nil then return end
  local reason = make_reason(t, code, msg)
  local prod = t.producer
  if prod ~= nil then
    -- as Twisted's FileDescriptor.connectionLost: stopProducing, then
    -- producer = nil (so nil in connectionLost)
    local prev = set_system(sys)
    local ok, e = xpcall(prod.stopProducing, msgh, prod)
    if not ok then report(e) end
    set_system(prev)
    keep_field(t, "producer", nil)
  end
  local prev = set_system(sys)
  -- protected as a whole: a protocol whose fields raise (a strict object,
  -- a userdata) must not keep the connector from hearing of the loss
  local ok, e = xpcall(lost_call, msgh, p, reason)
  if not ok then report(e) end
  -- the connector's clientConnectionLost too, as Twisted's Client calls
  -- it from its connectionLost: "[Echo,client] ..." lines
  local after = t._onlost
  if after then after(t, reason) end
  set_system(prev)
end

local function on_producer(t, p, sys, pause) -- luacheck: ignore p
  local prod = t.producer
  if prod == nil then return end
  -- Twisted's producerPaused, set before the producer is told
  if pause then keep_field(t, "producerPaused", true) else clear_field(t, "producerPaused") end
  local prev = set_system(sys)
  local ok, e
  if pause then
    ok, e = xpcall(prod.pauseProducing, msgh, prod)
  else
    ok, e = xpcall(prod.resumeProducing, msgh, prod)
  end
  set_system(prev)
  if not ok then proto_failed(t, e, sys) end
end

-- address of a transport or port from C
local function core_addr(kind, ...)
  return address.fromCore(kind, ...)
end

local function peer_of(t)
  return core_addr("TCP", t:_peer())
end

local function log_prefix(p) return p:logPrefix() end

-- give transport t its protocol and log system, then makeConnection,
-- under the system run_sys when given (the one Twisted makes it under: the
-- listening port's prefix for an accepted connection), else t's own
local function attach(t, p, prefix_suffix, peer, run_sys)
  t.protocol = p
  local ok, prefix = pcall(log_prefix, p)
  if not ok or type(prefix) ~= "string" then prefix = class.nameof(p) end
  local sys
  if prefix_suffix then
    sys = prefix .. prefix_suffix
  else
    peer = peer or peer_of(t)
    local host = peer and (peer.host or peer.name) or ""
    sys = prefix .. "," .. t.sessionno .. "," .. tostring(host)
  end
  t:_setuv(2, sys)
  pcall_proto(t, p, run_sys or sys, "makeConnection", t)
end

-- factory:buildProtocol(addr), checked: a protocol, a plain table, or nil
local build = protocol._build

-- A connection accepted: buildProtocol and makeConnection (connectionMade)
-- run under the port's log system, as Twisted's Port.doRead does them
-- inside the reactor's callWithLogger(port): "[EchoFactory] ..." lines;
-- the connection's own system ("Echo,0,127.0.0.1") serves from then on.
local function on_accept(port, t)
  local info = port:_getuv()
  local factory = info.factory
  local addr = peer_of(t)
  local psys = info.port and info.port:logPrefix() or class.nameof(factory)
  local prev = set_system(psys)
  local ok, p = xpcall(build, msgh, factory, addr)
  if not ok then report(p) end
  set_system(prev)
  if not ok or p == nil then t:_drop() return end
  attach(t, p, nil, addr, psys)
end

local function on_connected(t, p, sys) -- luacheck: ignore p sys
  local cb = t._onconnect
  if cb then cb(t) end
end

-- accept(2) on a listening port failed with errno `name` ("EMFILE"): logged
-- as Twisted's port logs it (once per wakeup); the port serves on
local function on_accept_error(port, name) -- luacheck: ignore port
  local log = require "braid.log"
  log.msg("Could not accept new connection (" .. name .. ")")
end

-- dataReceived, the hot path, is called by tcp.c itself: xpcall(
-- p.dataReceived, msgh, p, data) with the connection's system ambient (or,
-- on its slow path, set_system(sys) ... set_system(prev)), and on an error
-- proto_failed(t, failure, sys)
core.tcp_handlers({
  eof = on_eof, lost = on_lost, accept = on_accept, connected = on_connected,
  producer = on_producer, wlost = on_wlost,
  failed = proto_failed, setsystem = set_system, msgh = msgh, accepterror = on_accept_error,
})

---------------------------------------------------------------------------
-- transport methods written in Lua

local methods = core.tcp_methods()

--- Write each string of a list (nothing is written if one is not a string).
function methods.writeSequence(t, list)
  checkself("writeSequence", core.tcp_is_transport(t), t, "transport")
  errors.checktype("writeSequence", 1, list, "table")
  local n = #list
  for i = 1, n do
    if type(list[i]) ~= "string" then
      errors.argerror("writeSequence", 1, ("string expected at index %d, got %s"):format(i, type(list[i])))
    end
  end
  for i = 1, n do t:write(list[i]) end
end

function methods.getPeer(t)
  checkself("getPeer", core.tcp_is_transport(t), t, "transport")
  return core_addr(t._unix and "UNIX" or "TCP", t:_peer())
end

function methods.getHost(t)
  checkself("getHost", core.tcp_is_transport(t), t, "transport")
  return core_addr("TCP", t:_host())
end

--- stopProducing closes the connection (IPushProducer).
function methods.stopProducing(t)
  checkself("stopProducing", core.tcp_is_transport(t), t, "transport")
  t:loseConnection()
end

--- stopConsuming: unregisterProducer, then loseConnection (Twisted's
-- FileDescriptor.stopConsuming, what a producer that lost its own
-- connection calls on its consumer).
function methods.stopConsuming(t)
  checkself("stopConsuming", core.tcp_is_transport(t), t, "transport")
  t:unregisterProducer()
  t:loseConnection()
end

-- o[name] is something to call (read without raising)
local function has_method(o, name)
  local ok, f = pcall(function() return o[name] end)
  if not ok then return false end
  if type(f) == "function" then return true end
  local mt = (type(f) == "table" or type(f) == "userdata") and getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

--- Register a producer (streaming true: push; false: pull).
function methods.registerProducer(t, producer, streaming)
  checkself("registerProducer", core.tcp_is_transport(t), t, "transport")
  local pt = type(producer)
  if pt ~= "table" and pt ~= "userdata" then
    errors.argerror("registerProducer", 1, "producer expected (an object with resumeProducing, "
      .. "pauseProducing and stopProducing), got " .. class.nameof(producer))
  end
  -- a push producer is paused and resumed; a pull producer is resumed
  for _, name in ipairs(streaming and { "pauseProducing", "resumeProducing", "stopProducing" }
                        or { "resumeProducing", "stopProducing" }) do
    if not has_method(producer, name) then
      errors.argerror("registerProducer", 1, ("%s producer has no %s method")
        :format(streaming and "a streaming" or "a pull", name))
    end
  end
  if t.producer ~= nil then
    error(errors.RuntimeError(("Cannot register producer %s, because producer %s was never unregistered.")
      :format(tostring(producer), tostring(t.producer))), 2)
  end
  local state = t:_state()
  if state == "closed" then
    producer:stopProducing()
    return
  end
  -- Twisted's field producer (not streamingProducer: a second field would
  -- grow every such connection's field table, docs/tcp.md); not paused
  -- yet, as C's state says
  keep_field(t, "producer", producer)
  clear_field(t, "producerPaused")
  t:_setProducer(true, streaming)
  if not streaming then producer:resumeProducing() end
end

function methods.unregisterProducer(t)
  checkself("unregisterProducer", core.tcp_is_transport(t), t, "transport")
  keep_field(t, "producer", nil)
  clear_field(t, "producerPaused")
  t:_setProducer(false, false)
end

--- The connection's log system, as Twisted's transport.logPrefix() (its
-- logstr): "Prefix,sessionno,peerhost" on a server connection,
-- "Prefix,client" on a client one, "Uninitialized" before a protocol.
function methods.logPrefix(t)
  checkself("logPrefix", core.tcp_is_transport(t), t, "transport")
  local sys = t:_getuv(2)
  if type(sys) == "string" then return sys end
  return "Uninitialized"
end

---------------------------------------------------------------------------
-- listening ports

local Port = {}
Port.__index = Port
-- what the reactor's shutdown closes (Twisted's disconnectAll): listening
-- ports and connectors, weakly (connections are found in the registry)
local live_ports = setmetatable({}, { __mode = "k" })
local live_connectors = setmetatable({}, { __mode = "k" })

-- the socket error of a failed open as Python prints its OSError:
-- "[Errno 98] Address already in use" (CannotListenError's socketError)
local function socket_error(msg, number)
  if math.type(number) == "integer" then return ("[Errno %d] %s"):format(number, msg) end
  return msg
end

-- (re)open a port's socket, TCP or UNIX, from what it was asked for; nil
-- and the socket error if it failed
local function open_socket(port)
  if port._fd then return nil, "an adopted socket cannot be opened again" end
  local c, msg, _, number
  if port._unix then
    c, msg, _, number = core.unix_listen(port._path, port.backlog, port._mode)
  else
    c, msg, _, number = core.tcp_listen(port.interface, port.port, port.backlog, port._reuse)
  end
  if not c then return nil, socket_error(msg, number) end
  return c
end

-- Twisted's log lines of a port: "EchoFactory starting on 9000" as it
-- opens (before the factory starts), "(TCP Port 9000 Closed)" as it closes
local function port_log(port, opening)
  local log = require "braid.log"
  local ok, prefix = pcall(call, port.factory, Factory, "logPrefix")
  if not ok or type(prefix) ~= "string" then prefix = class.nameof(port.factory) end
  if port._unix then
    if opening then log.msg(("%s starting on %s"):format(prefix, address.repr(port._path)))
    else log.msg(("(UNIX Port %s Closed)"):format(port._path)) end
  else
    local n = port._fd or (port._hostAddr and port._hostAddr.port) or port.port
    if opening then log.msg(("%s starting on %s"):format(prefix, tostring(n)))
    else log.msg(("(TCP Port %s Closed)"):format(tostring(n))) end
  end
end

-- Close port's socket now: getHost keeps answering, a UNIX file goes.
local function port_close(port)
  port:getHost()
  port._c:close()
  live_ports[port] = nil
  port.connected = false
  if port._unix and not port._abstract then os.remove(port._path) end
end

-- Give port the socket c and start its factory, as Twisted's startListening:
-- the log line, then doStart. An error of doStart closes the socket again
-- (nobody would get the port to stop it) and is raised.
local function port_open(port, c)
  port._c, port._hostAddr = c, nil
  c:_setuv({ factory = port.factory, port = port })
  port:getHost()
  port_log(port, true)
  local ok, e = pcall(call, port.factory, Factory, "doStart")
  if not ok then
    port_close(port)
    error(e, 0)
  end
  live_ports[port] = true
  port.connected, port.disconnecting, port.disconnected = true, false, false
end

-- The end of a close: the log line, then the factory's doStop; xpcall's
-- ok, error.
local function port_closed(port)
  port.disconnecting, port.disconnected = false, true
  port_log(port, false)
  return xpcall(call, msgh, port.factory, Factory, "doStop")
end

local function port_tostring(self)
  if not self._c:listening() then
    return ("<%s (not listening)>"):format(class.nameof(self.factory))
  end
  local h = self:getHost()
  if self._unix then
    -- Twisted's repr: the path as Python's repr ('/run/x.sock', '\x00name')
    return ("<%s on %s>"):format(class.nameof(self.factory), address.repr(h and h.name or self._path))
  end
  return ("<%s on %s>"):format(class.nameof(self.factory), tostring(h and h.port or self.port))
end
Port.__tostring = port_tostring

--- The log prefix: the factory's class name (Twisted's Port.logPrefix,
-- the qualified name of the factory's class).
function Port:logPrefix()
  checkself("logPrefix", getmetatable(self) == Port, self, "Port")
  return class.nameof(self.factory)
end

--- The address the port is bound to (the real port when 0 was asked).
function Port:getHost()
  checkself("getHost", getmetatable(self) == Port, self, "Port")
  if self._unix then return address.UNIXAddress(self._path) end
  if not self._c:listening() then return self._hostAddr end
  local a = core_addr("TCP", self._c:_host())
  self._hostAddr = a
  return a
end

--- Stop accepting; the Deferred fires once the socket is closed.
function Port:stopListening()
  checkself("stopListening", getmetatable(self) == Port, self, "Port")
  local d = defer.Deferred()
  if not self._c:listening() then
    reactor().callLater(0, d.callback, d, nil)
    return d
  end
  port_close(self)
  self.disconnecting = true
  reactor().callLater(0, function()
    -- as Twisted's: an error of stopFactory fails the Deferred
    local ok, e = port_closed(self)
    if ok then d:callback(nil) else d:errback(e) end
  end)
  return d
end
Port.loseConnection = Port.stopListening

--- Listen again after stopListening (on the port asked for at first: a
-- port 0 gets a new one), starting the factory again.
function Port:startListening()
  checkself("startListening", getmetatable(self) == Port, self, "Port")
  if self._c:listening() then
    error(errors.CannotListenError(self.interface, self.port, "already listening"), 2)
  end
  local c, msg = open_socket(self)
  if not c then error(errors.CannotListenError(self.interface, self.port, msg), 2) end
  port_open(self, c)
end

--- The listening socket's descriptor (-1 once closed).
function Port:fileno()
  checkself("fileno", getmetatable(self) == Port, self, "Port")
  return self._c:fileno()
end

local function check_factory(fname, argn, factory)
  if not protocol.isFactory(factory) then
    errors.argerror(fname, argn, "factory expected (a table with protocol or buildProtocol), got "
      .. class.nameof(factory), 4)
  end
end

-- The argument checks below raise before anything changes, naming the
-- function the caller called (not the C function behind it).

-- an integer from lo to hi (a float with an integral value too, such as
-- LuaSocket's getfd() gives; nil allowed when optional): the integer
local function check_int(fname, argn, v, lo, hi, what, optional)
  if v == nil and optional then return nil end
  local i = math.type(v) == "float" and math.tointeger(v) or v
  if math.type(i) ~= "integer" or i < lo or i > hi then
    errors.argerror(fname, argn, ("%s must be an integer from %d to %d, got %s")
      :format(what, lo, hi, type(v) == "number" and tostring(v) or class.nameof(v)), 4)
  end
  return i
end

-- a string without NUL bytes (the OS would read only up to the first)
local function check_name(fname, argn, v, what, optional)
  if v == nil and optional then return end
  errors.checktype(fname, argn, v, "string")
  if v:find("\0", 1, true) then
    error(errors.ValueError(("bad argument #%d to '%s' (%s contains a NUL byte)")
      :format(argn, fname, what)), 3)
  end
end

-- a UNIX socket's path: a file name (no NUL), or a leading NUL and a name
-- in Linux's abstract namespace
local function check_path(fname, argn, v)
  errors.checktype(fname, argn, v, "string")
  if v == "" then
    error(errors.ValueError(("bad argument #%d to '%s' (empty path)"):format(argn, fname)), 3)
  end
  if v:find("\0", 2, true) or (v:byte(1) ~= 0 and v:find("\0", 1, true)) then
    error(errors.ValueError(("bad argument #%d to '%s' (path contains a NUL byte after its "
      .. "first: only an abstract name, \"\\0name\", starts with one)"):format(argn, fname)), 3)
  end
end

local MAX_BACKLOG = 0x7fffffff

local function new_port(c, factory, fields)
  local port = setmetatable(fields, Port)
  port.factory = factory
  port_open(port, c)
  return port
end

--- Listen on a TCP port.
-- @param port number (0 picks a free port)
-- @param factory a factory (or a table with protocol/buildProtocol)
-- @param backlog default 50
-- @param interface default "" (IPv4's any address, as Twisted; "::" for IPv6 too)
-- @param opts optional {reusePort = bool}
-- @return a listening port
function M.listenTCP(port, factory, backlog, interface, opts)
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    errors.argerror("listenTCP", 1, "port number expected, got " .. tostring(port))
  end
  check_factory("listenTCP", 2, factory)
  backlog = check_int("listenTCP", 3, backlog, 0, MAX_BACKLOG, "backlog", true)
  check_name("listenTCP", 4, interface, "interface", true)
  errors.checktype("listenTCP", 5, opts, "table", true)
  interface = interface or ""
  local reuse = opts and opts.reusePort
  if reuse == nil then reuse = reactor().workerId ~= nil end
  local fields = { port = port, interface = interface, backlog = backlog or 50, _reuse = reuse }
  local c, msg = open_socket(fields)
  if not c then error(errors.CannotListenError(interface, port, msg), 2) end
  return new_port(c, factory, fields)
end

--- Listen on a UNIX socket path.
function M.listenUNIX(path, factory, backlog, mode)
  check_path("listenUNIX", 1, path)
  check_factory("listenUNIX", 2, factory)
  backlog = check_int("listenUNIX", 3, backlog, 0, MAX_BACKLOG, "backlog", true)
  if type(mode) == "string" then
    errors.argerror("listenUNIX", 4, "mode must be an integer such as tonumber(\"600\", 8), got "
      .. "the string \"" .. mode .. "\"")
  end
  mode = check_int("listenUNIX", 4, mode, 0, 4095, "mode", true)
  local fields = { _unix = true, _path = path, port = path, backlog = backlog or 50,
                   _mode = mode or 438,  -- Twisted's default mode, 0o666
                   _abstract = path:byte(1) == 0 }
  local c, msg = open_socket(fields)
  if not c then error(errors.CannotListenError(nil, path, msg), 2) end
  return new_port(c, factory, fields)
end

--- Listen on a socket opened elsewhere (inherited, systemd).
function M.adoptStreamPort(fd, factory)
  fd = check_int("adoptStreamPort", 1, fd, 0, 0x7fffffff, "fd")
  check_factory("adoptStreamPort", 2, factory)
  local c, msg, _, number = core.adopt_port(fd)
  if not c then error(errors.CannotListenError("fd", fd, socket_error(msg, number)), 2) end
  return new_port(c, factory, { port = fd, _fd = fd })
end

--- Take over a connected socket.
function M.adoptStreamConnection(fd, factory)
  fd = check_int("adoptStreamConnection", 1, fd, 0, 0x7fffffff, "fd")
  check_factory("adoptStreamConnection", 2, factory)
  local t, msg, _, number = core.adopt_conn(fd)
  -- osError is the errno number, as connect_error's (Twisted raises the
  -- socket's OSError, whose args[0] it is)
  if not t then error(errors.ConnectError(number, msg), 2) end
  local ok, p = xpcall(build, msgh, factory, peer_of(t))
  if not ok or p == nil then
    if not ok then report(p) end
    t:_drop()
    return nil
  end
  attach(t, p)
  return t
end

---------------------------------------------------------------------------
-- connectors

-- Twisted's errnoMapping: only these three; EHOSTUNREACH (and any other
-- errno) is a plain ConnectError there, "No route to host" or not
local ERRNO_ERRORS = {
  ECONNREFUSED = "ConnectionRefusedError",
  ETIMEDOUT = "TCPTimedOutError",
  ENETUNREACH = "NoRouteError",
}
-- errno numbers (Linux) for the async path
local ERRNO_NAMES = { [111] = "ECONNREFUSED", [110] = "ETIMEDOUT", [101] = "ENETUNREACH",
  [113] = "EHOSTUNREACH", [2] = "ENOENT" }

-- Twisted's getConnectError: the class for the errno (code, its name),
-- made with (errno number, strerror) so osError is the number; a bind that
-- failed is ConnectBindError
local function connect_error(code, msg, number, stage)
  local cls
  if stage == "bind" then cls = errors.ConnectBindError
  else cls = errors[ERRNO_ERRORS[code] or "ConnectError"] end
  return cls(number, msg)
end

-- IP literals are what inet_pton reads (core.ip_family): 999.1.1.1 and a:b
-- are names, to be resolved and fail as DNSLookupError, as Twisted's
-- isIPAddress says
local function is_ipv6(h) return core.ip_family(h) == "IPv6" end

local Connector = class.Object:extend("Connector")

function Connector:init(kind, host, port, factory, timeout, bindAddress)
  live_connectors[self] = true
  self._kind = kind
  self.host, self.port, self.factory = host, port, factory
  self.timeout = timeout or 30
  self.bindAddress = bindAddress
  self.state = "disconnected"
  self.factoryStarted = false
  self.transport = nil
end

function Connector:__tostring()
  if self._kind == "UNIX" then return "<Connector to " .. tostring(self.host) .. ">" end
  return ("<Connector to %s:%s>"):format(tostring(self.host), tostring(self.port))
end

--- Where this connector connects to.
function Connector:getDestination()
  checkself("getDestination", Connector:isinstance(self), self, "Connector")
  if self._kind == "UNIX" then return address.UNIXAddress(self.host) end
  if is_ipv6(self.host) then return address.IPv6Address("TCP", self.host, self.port) end
  return address.IPv4Address("TCP", self.host, self.port)
end

-- The attempts in flight (Twisted's HostnameEndpoint): a transport per
-- address being connected, in self._attempts; the start of the next address
-- waits in self._next_call.
local ATTEMPT_DELAY = 0.3  -- Twisted's _DEFAULT_ATTEMPT_DELAY
-- A UNIX socket's connect fails with EAGAIN while the listener's queue is
-- full (nothing tells when it has room): tried again after this delay,
-- doubled each time up to UNIX_RETRY_MAX, until the connector's timeout.
local UNIX_RETRY, UNIX_RETRY_MAX = 0.001, 0.02

-- Stop the lookup, the timers and every attempt but `keep` (the one that
-- connected, if any).
-- cancel the DelayedCall in self[field], if any
local function cancel_call(self, field)
  local dc = self[field]
  self[field] = nil
  if dc and dc:active() then dc:cancel() end
end

local function finish_attempt(self, keep)
  cancel_call(self, "_timer")
  cancel_call(self, "_next_call")
  -- cleared before the cancel: the lookup's errback, run by the cancel,
  -- must see that it is no longer the current attempt
  local lookup = self._resolving
  self._resolving = nil
  if lookup then lookup:cancel() end
  local attempts = self._attempts
  self._attempts = nil
  if attempts then
    for t in pairs(attempts) do
      if t ~= keep then t:_drop() end
    end
  end
end

local function stop_factory(self)
  if not self.factoryStarted then return end
  self.factoryStarted = false
  local ok, e = xpcall(call, msgh, self.factory, Factory, "doStop")
  if not ok then report(e) end
end

-- Tell the factory (clientConnectionFailed / clientConnectionLost), then
-- stop it unless it called connect() again.
local function disconnected(self, method, reason)
  self.state = "disconnected"
  self.transport = nil
  local ok, e = xpcall(call, msgh, self.factory, ClientFactory, method, self, reason)
  if not ok then report(e) end
  if self.state == "disconnected" then stop_factory(self) end
end

function Connector:_failed(reason)
  finish_attempt(self)
  disconnected(self, "clientConnectionFailed", Failure(reason))
end

function Connector:_lost(reason)
  disconnected(self, "clientConnectionLost", reason)
end

local function on_connector_lost(t, reason)
  local self = t.connector
  if self then self:_lost(reason) end
end

-- A connector's connection is made (buildProtocol, connectionMade) under
-- `sys`; see on_connector_connected
local function connector_connected(t, sys)
  local self = t.connector
  if self == nil or not (self._attempts and self._attempts[t]) then t:_drop() return end
  finish_attempt(self, t)
  local addr
  if self._kind == "UNIX" then addr = address.UNIXAddress(self.host)
  else addr = core_addr("TCP", t:_peer()) end
  -- connected from buildProtocol on, as Twisted's BaseConnector: a
  -- stopConnecting there raises NotConnectingError (a ReconnectingClient-
  -- Factory's stopTrying ignores it) and disconnect does nothing
  self.state = "connected"
  local ok, p = xpcall(build, msgh, self.factory, addr)
  if not ok then
    report(p)
    t:_drop()
    self:_failed(errors.ConnectError("buildProtocol raised"))
    return
  end
  self.transport = t
  t._onlost = on_connector_lost
  if p == nil then
    -- as Twisted's: a plain Protocol stands in and the connection is
    -- closed at once, so the factory hears clientConnectionLost
    p = Protocol()
    attach(t, p, ",client", nil, sys)
    t:loseConnection()
    return
  end
  attach(t, p, ",client", nil, sys)
end

-- A TCP client's connection is made under its Uninitialized system, as
-- Twisted's completes in the transport's doConnect (its buildProtocol and
-- connectionMade log "[Uninitialized] ..."); a UNIX client's under "-", as
-- Twisted's UNIX connect completes at once, from the timed call that
-- starts it.
local function on_connector_connected(t)
  local self = t.connector
  local sys = (self ~= nil and self._kind == "UNIX") and "-" or UNINITIALIZED
  return call_with_system(sys, connector_connected, t, sys)
end

-- Start connecting to self._addrs[i]. The next address starts when this
-- attempt fails, or after ATTEMPT_DELAY seconds if it has neither failed
-- nor connected by then, as Twisted's HostnameEndpoint does: an address
-- that drops packets does not hold up the others. The first attempt to
-- connect wins and the rest are dropped; when every one has failed, the
-- connection fails with the last failure.
local function try_address(self, i)
  if self.state ~= "connecting" then return end
  cancel_call(self, "_next_call")
  local addrs, attempts = self._addrs, self._attempts
  if i > #addrs then
    if next(attempts) == nil then
      self:_failed(self._lasterr or errors.ConnectError("no address to connect to"))
    end
    return
  end
  self._next = i + 1
  local t, msg, code, number, stage
  if self._kind == "UNIX" then
    t, msg, code, number = core.unix_connect(self.host)
  else
    local b = self.bindAddress
    local bhost, bport
    if type(b) == "table" then bhost, bport = b[1] or b.host, b[2] or b.port end
    t, msg, code, number, stage = core.tcp_connect(addrs[i], self.port, bhost, bport)
  end
  if not t then
    self._lasterr = connect_error(code, msg, number, stage)
    if self._kind == "UNIX" and code == "EAGAIN" then
      local delay = self._unix_retry or UNIX_RETRY
      self._unix_retry = math.min(delay * 2, UNIX_RETRY_MAX)
      self._next_call = reactor().callLater(delay, try_address, self, i)
      return
    end
    self._next_call = reactor().callLater(0, try_address, self, i + 1)
    return
  end
  self._unix_retry = nil
  if self._kind == "UNIX" then t._unix = true end
  keep_field(t, "connector", self)  -- Twisted's Client transport's connector
  attempts[t] = true
  t._onconnect = on_connector_connected
  t._onfail = function(_, errno, emsg)
    if not (self._attempts and self._attempts[t]) then return end
    self._attempts[t] = nil
    self._lasterr = connect_error(ERRNO_NAMES[errno], emsg, errno)
    try_address(self, self._next)  -- the next one now, or fail if none is left
  end
  if i < #addrs then
    self._next_call = reactor().callLater(ATTEMPT_DELAY, try_address, self, i + 1)
  end
end

--- Start (or restart) connecting.
function Connector:connect()
  checkself("connect", Connector:isinstance(self), self, "Connector")
  if self.state ~= "disconnected" then
    -- Twisted's BaseConnector.connect raises RuntimeError with this text
    error(errors.RuntimeError("can't connect in this state"), 2)
  end
  self.state = "connecting"
  local attempts = {}  -- this attempt's: a connect() nested in the callbacks below makes its own
  self._attempts, self._lasterr, self._unix_retry = attempts, nil, nil
  if not self.factoryStarted then
    call(self.factory, Factory, "doStart")
    self.factoryStarted = true
  end
  local ok, e = pcall(call, self.factory, ClientFactory, "startedConnecting", self)
  if not ok then
    -- the error goes to connect()'s caller, as in Twisted; nothing was
    -- started for this attempt yet, and the factory is stopped
    self.state, self._attempts = "disconnected", nil
    stop_factory(self)
    error(e, 0)
  end
  -- stopped, or stopped and connected again, from startedConnecting
  if self.state ~= "connecting" or self._attempts ~= attempts then return end
  -- the timeout starts after startedConnecting, as Twisted's (_makeTransport)
  if self.timeout and self.timeout > 0 then
    self._timer = reactor().callLater(self.timeout, function()
      self._timer = nil
      if self.state ~= "connecting" then return end
      self:_failed(errors.TimeoutError())
    end)
  end
  if self._kind == "UNIX" or core.ip_family(self.host) then
    self._addrs = { self.host }
    try_address(self, 1)
    return
  end
  local started, d = pcall(resolver.getHostByName, self.host)
  if not started then
    -- the lookup could not start (out of descriptors): the attempt fails
    -- on a later turn, once, as one whose socket cannot be made
    local why = tostring(d):gsub("^[^:]*:%d+: ", "")  -- the message, not where it was raised
    self._addrs, self._lasterr = {}, errors.ConnectError(nil, why)
    self._next_call = reactor().callLater(0, try_address, self, 1)
    return
  end
  self._resolving = d
  d:addCallbacks(function(list)
    if self._resolving ~= d then return end
    self._resolving = nil
    local addrs = {}
    for _, a in ipairs(list) do addrs[#addrs + 1] = a.host end
    self._addrs = addrs
    if #addrs == 0 then
      self:_failed(errors.DNSLookupError(self.host))
    else
      try_address(self, 1)
    end
  end, function(f)
    if self._resolving ~= d then return end
    self._resolving = nil
    if self.state == "connecting" then
      local v = f.value
      if not errors.DNSLookupError:isinstance(v) then
        -- as Twisted's SimpleResolverComplexifier: a resolver's error that
        -- is not DNSLookupError is logged, and the name does not resolve
        require("braid.log").Logger("braid.resolver"):failure(
          "while looking up {name}", f, nil, { name = self.host })
        v = errors.DNSLookupError(self.host)
      end
      self:_failed(v)
    end
  end)
end

--- Stop a connection attempt in progress (NotConnectingError otherwise).
function Connector:stopConnecting()
  checkself("stopConnecting", Connector:isinstance(self), self, "Connector")
  if self.state ~= "connecting" then
    error(errors.NotConnectingError(), 2)
  end
  self:_failed(errors.UserError())
end

--- Stop connecting, or close the connection.
function Connector:disconnect()
  checkself("disconnect", Connector:isinstance(self), self, "Connector")
  if self.state == "connecting" then
    self:stopConnecting()
  elseif self.state == "connected" and self.transport then
    self.transport:loseConnection()
  end
end

M.Connector = Connector

-- The transports anchored in the registry while open (braid keeps no list
-- of them) for which keep(t) is true, in sessionno order.
local function anchored_transports(keep)
  local list = {}
  for _, v in pairs(debug.getregistry()) do
    if core.tcp_is_transport(v) and keep(v) then list[#list + 1] = v end
  end
  table.sort(list, function(a, b) return a.sessionno < b.sessionno end)
  return list
end

--- Internal (the reactor's "during shutdown" trigger): Twisted's
-- disconnectAll. Every listening port closes (its file removed, its
-- factory stopped), every connector still connecting stops, and every open
-- connection is closed with ConnectionLost; their connectionLost and
-- clientConnection* calls are made before this returns.
function M._disconnectAll()
  local ports = {}
  for port in pairs(live_ports) do ports[#ports + 1] = port end
  table.sort(ports, function(a, b) return a._c:fileno() < b._c:fileno() end)
  for _, port in ipairs(ports) do
    if port._c:listening() then
      port_close(port)
      -- under the port's log system, as Twisted's disconnectAll calls each
      -- port's connectionLost with callWithLogger: "[EchoFactory] (TCP Port
      -- 9000 Closed)" (stopListening's close is a callLater: "[-]")
      local prev = set_system(port:logPrefix())
      local ok, e = port_closed(port)
      if not ok then report(e) end
      set_system(prev)
    end
    live_ports[port] = nil
  end
  for c in pairs(live_connectors) do
    if c.state == "connecting" then pcall(c.stopConnecting, c) end
  end
  for _, t in ipairs(anchored_transports(function(v) return v.connected end)) do
    if t.connected then
      t._reason = Failure(errors.ConnectionLost(), NO_FRAMES)
      t:_fail()
    end
  end
  core.tcp_deliver_closes()
end

--- Connect over TCP.
-- @param host a name or an address
-- @param port number
-- @param factory a client factory
-- @param timeout seconds (default 30)
-- @param bindAddress optional {host, port}
-- @return a connector
function M.connectTCP(host, port, factory, timeout, bindAddress)
  check_name("connectTCP", 1, host, "host")
  if type(port) == "string" then  -- a service name, as Twisted's Connector takes
    local n = core.service_port(port)
    if n == nil then
      error(errors.ServiceNameUnknownError(nil, ("unknown service (%q)"):format(port)), 2)
    end
    port = n
  end
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    errors.argerror("connectTCP", 2, "port number expected, got " .. tostring(port))
  end
  check_factory("connectTCP", 3, factory)
  errors.checkseconds("connectTCP", 4, timeout, "timeout", true)  -- 0: none
  if bindAddress ~= nil then
    errors.checktype("connectTCP", 5, bindAddress, "table")
    local bhost = bindAddress[1] or bindAddress.host
    local bport = bindAddress[2] or bindAddress.port
    if bhost ~= nil and type(bhost) ~= "string" then
      errors.argerror("connectTCP", 5, "bindAddress host must be a string, got " .. class.nameof(bhost))
    end
    check_name("connectTCP", 5, bhost, "bindAddress host", true)
    check_int("connectTCP", 5, bport, 0, 65535, "bindAddress port", true)
  end
  if host:sub(1, 1) == "[" and host:sub(-1) == "]" then host = host:sub(2, -2) end
  local c = Connector("TCP", host, port, factory, timeout, bindAddress)
  c:connect()
  return c
end

--- Connect to a UNIX socket.
function M.connectUNIX(path, factory, timeout)
  check_path("connectUNIX", 1, path)
  check_factory("connectUNIX", 2, factory)
  errors.checkseconds("connectUNIX", 3, timeout, "timeout", true)
  local c = Connector("UNIX", path, nil, factory, timeout)
  c:connect()
  return c
end

M.Protocol = Protocol

---------------------------------------------------------------------------
-- the reactor's reader and writer sets (braid.fdesc asks, on demand)

-- whether d is one of braid's listening ports or connections
function M._isSelectable(d)
  return getmetatable(d) == Port or core.tcp_is_transport(d)
end

-- The listening ports accepting and the open connections (sessionno order)
-- the loop watches, as two lists: readers (ports, then connections
-- reading) and writers (connections with output queued). Nothing is
-- tracked per read or write: C's event flags say, and connections are
-- found among the registry's anchors (anchored_transports).
function M._watched()
  local readers, writers = {}, {}
  local ports = {}
  for port in pairs(live_ports) do
    if port._c:_accepting() then ports[#ports + 1] = port end
  end
  table.sort(ports, function(a, b) return a._c:fileno() < b._c:fileno() end)
  for i = 1, #ports do readers[i] = ports[i] end
  local conns = anchored_transports(function(v)
    local r, w = v:_watching()
    return r or w
  end)
  for _, t in ipairs(conns) do
    local r, w = t:_watching()
    if r then readers[#readers + 1] = t end
    if w then writers[#writers + 1] = t end
  end
  return readers, writers
end

-- addReader/addWriter (on true) or removeReader/removeWriter on a port or
-- connection: Twisted's startReading/stopReading, startWriting/
-- stopWriting. A port's reading is accepting; a connection's is
-- resumeProducing/pauseProducing; its writing is held until this, a
-- write() or loseConnection(). fname names the caller for errors.
function M._setWatch(fname, d, which, on)
  if getmetatable(d) == Port then
    if which == "w" then
      if on then
        error(errors.ValueError(("bad argument #1 to '%s' (a listening port is never a writer)")
          :format(fname)), 3)
      end
      return
    end
    d._c:_setAccepting(on)
  elseif which == "r" then
    if on then d:resumeProducing() else d:pauseProducing() end
  else
    d:_holdWrites(not on)
  end
end

--- Internal (braid.testing's cleanup): the connectors still connecting.
function M._testingConnecting()
  local list = {}
  for c in pairs(live_connectors) do
    if c.state == "connecting" then list[#list + 1] = c end
  end
  return list
end

return M
