-- spec for runtime/tcp.c and lua/braid/tcp.lua: UNIX stream sockets
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local errors = require "braid.error"

local loop = require "helpers.loop"
local spin = loop.spin
local tmp = require "helpers.tmp"

local function tmppath()
  return tmp.path(".sock")
end

-- whether a file of any kind (a socket too: io.open cannot open one) is at path
local function exists(path)
  return os.rename(path, path) == true
end

describe("braid.tcp UNIX sockets", function()
  it("echoes over a UNIX socket and reports UNIXAddress hosts", function()
    local path = tmppath()
    local Echo = protocol.Protocol:extend("Echo")
    local server
    function Echo:connectionMade() server = self end
    function Echo:dataReceived(d) self.transport:write(d) end
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local port = reactor.listenUNIX(path, f)
    assert.equal("UNIX", port:getHost().type)
    assert.equal(path, port:getHost().name)
    local got, lost = "", nil
    local C = {}
    function C:connectionMade() self.transport:write("over unix") end
    function C:dataReceived(d) got = got .. d if got == "over unix" then self.transport:loseConnection() end end
    function C:connectionLost(r) lost = r end
    local c = reactor.connectUNIX(path, { protocol = C, noisy = false })
    spin(function() return lost ~= nil end)
    assert.equal("over unix", got)
    assert.is_truthy(lost:check(errors.ConnectionDone))
    assert.equal("UNIXAddress('" .. path .. "')", tostring(server.transport:getHost()))
    assert.equal(path, c:getDestination().name)
    assert.is_true(exists(path))
    local done = false
    port:stopListening():addCallback(function() done = true end)
    spin(function() return done end)
    assert.is_false(exists(path))
  end)

  -- A UNIX server and client on a fresh path, connected: the server's
  -- protocol an instance of SP, the client's of CP (SP too when nil);
  -- returns server, client, the port, the connector
  local function unix_pair(SP, CP)
    local path = tmppath()
    local server, client
    local sf = protocol.Factory.forProtocol(SP)
    sf.noisy = false
    function sf:buildProtocol() server = SP() return server end
    local port = reactor.listenUNIX(path, sf)
    local cf = protocol.ClientFactory.forProtocol(CP or SP)
    cf.noisy = false
    function cf:buildProtocol() client = (CP or SP)() return client end
    local c = reactor.connectUNIX(path, cf)
    spin(function() return server and server.transport and client and client.transport end)
    return server, client, port, c
  end

  -- stop the port and wait for it
  local function stop(port)
    local done = false
    port:stopListening():addCallback(function() done = true end)
    spin(function() return done end)
  end

  it("stopReading / startReading hold back data and the peer's close, stopConsuming closes", function()
    local path = tmppath()
    local S = protocol.Protocol:extend("S")
    local server, got, slost = nil, "", nil
    function S:connectionMade() server = self self.transport:stopReading() end
    function S:dataReceived(d) got = got .. d end
    function S:connectionLost(r) slost = r end
    local f = protocol.Factory.forProtocol(S)
    f.noisy = false
    local port = reactor.listenUNIX(path, f)
    local C = protocol.Protocol:extend("C")
    local client, clost = nil, nil
    function C:connectionMade() client = self end
    function C:connectionLost(r) clost = r end
    reactor.connectUNIX(path, { protocol = C, noisy = false })
    spin(function() return server ~= nil and client ~= nil end)
    local stopped = 0
    client.transport:registerProducer({ resumeProducing = function() end,
      stopProducing = function() stopped = stopped + 1 end }, false)
    client.transport:write("unix data")
    client.transport:stopConsuming()  -- unregistered, then loseConnection
    spin(function() return clost ~= nil end)
    assert.equal(0, stopped)
    assert.is_truthy(clost:check(errors.ConnectionDone))
    for _ = 1, 5 do reactor.iterate(0) end
    assert.equal("", got)
    assert.is_nil(slost)
    assert.is_true(server.transport.paused)
    server.transport:startReading()
    spin(function() return slost ~= nil end)
    assert.equal("unix data", got)
    assert.is_truthy(slost:check(errors.ConnectionDone))
    stop(port)
  end)

  -- Twisted's FileDescriptor.disconnected (unix.Server and unix.Client
  -- alike): 0 until connectionLost, 1 from then on; braid's was always nil
  it("sets transport.disconnected false while open and disconnecting, true from connectionLost on (both ends)", function()
    local seen = {}
    local P = protocol.Protocol:extend("P")
    function P:connectionLost()
      local t = self.transport
      seen[t.connector and "client" or "server"] = { connected = t.connected,
        disconnecting = t.disconnecting, disconnected = t.disconnected }
    end
    local server, client, port = unix_pair(P)
    local st, ct = server.transport, client.transport
    assert.is_false(st.disconnected)
    assert.is_false(ct.disconnected)
    ct:loseConnection()
    assert.is_true(ct.disconnecting)
    assert.is_false(ct.disconnected)
    spin(function() return seen.server and seen.client end)
    assert.same({ connected = false, disconnecting = true, disconnected = true }, seen.client)
    assert.same({ connected = false, disconnecting = false, disconnected = true }, seen.server)
    reactor.iterate(0)
    assert.is_true(st.disconnected)
    assert.is_true(ct.disconnected)
    stop(port)
  end)

  -- Twisted's FileDescriptor fields of the registered producer (unix.Server
  -- and unix.Client alike); braid's were nil
  it("shows the registered producer as producer and producerPaused, as Twisted's", function()
    local server, client, port = unix_pair(protocol.Protocol:extend("P"))
    local st, ct = server.transport, client.transport
    assert.is_nil(ct.producer)
    assert.is_false(ct.producerPaused)
    local calls = {}
    local prod = { pauseProducing = function() calls[#calls + 1] = "pause" end,
                   resumeProducing = function() calls[#calls + 1] = "resume" end,
                   stopProducing = function() calls[#calls + 1] = "stop" end }
    ct:registerProducer(prod, true)
    assert.equal(prod, ct.producer)
    assert.is_false(ct.producerPaused)
    st:stopReading()
    ct.bufferSize = 1024
    local chunk, n = ("x"):rep(65536), 0
    while not ct.producerPaused and n < 1000 do ct:write(chunk) n = n + 1 end
    assert.is_true(ct.producerPaused)
    assert.same({ "pause" }, calls)
    st:startReading()
    spin(function() return calls[2] ~= nil end)
    assert.same({ "pause", "resume" }, calls)
    assert.is_false(ct.producerPaused)
    local in_lost
    function client.connectionLost() in_lost = { ct.producer, ct.disconnected } end
    ct:abortConnection()
    spin(function() return in_lost ~= nil end)
    assert.same({ "pause", "resume", "stop" }, calls)
    assert.same({ nil, true }, in_lost)
    assert.is_nil(ct.producer)
    stop(port)
  end)

  -- Twisted's unix.Server and unix.Client have getHandle() (the socket);
  -- braid had none: it gives the descriptor, as fileno()
  it("getHandle() gives the connection's descriptor, as fileno(), and -1 once closed (both ends)", function()
    local lost = 0
    local P = protocol.Protocol:extend("P")
    function P:connectionLost() lost = lost + 1 end
    local server, client, port = unix_pair(P)
    local st, ct = server.transport, client.transport
    assert.is_true(st:getHandle() >= 0)
    assert.equal(st:fileno(), st:getHandle())
    assert.equal(ct:fileno(), ct:getHandle())
    st:loseConnection()
    spin(function() return lost == 2 end)
    assert.equal(-1, st:getHandle())
    assert.equal(-1, ct:getHandle())
    stop(port)
  end)

  -- Twisted's unix.Client transport keeps its connector as
  -- transport.connector (a server's has none); braid's was nil
  it("gives a client transport its connector as transport.connector, from connectionMade to after connectionLost", function()
    local seen = {}
    local P = protocol.Protocol:extend("P")
    function P:connectionMade() seen.made = self.transport.connector end
    function P:connectionLost() seen.lost = self.transport.connector end
    local server, client, port, c = unix_pair(protocol.Protocol, P)
    assert.equal(c, seen.made)
    assert.equal(c, client.transport.connector)
    assert.is_nil(server.transport.connector)
    client.transport:loseConnection()
    spin(function() return seen.lost ~= nil end)
    assert.equal(c, seen.lost)
    assert.equal(c, client.transport.connector)
    stop(port)
  end)

  it("defaults to backlog 50, mode 0666 and a 30 s connect timeout", function()
    local path = tmppath()
    local f = protocol.Factory.forProtocol(protocol.Protocol)
    f.noisy = false
    local port = reactor.listenUNIX(path, f)
    assert.equal(50, port.backlog)
    assert.equal("666", io.popen("stat -c %a " .. path):read("l"))
    local cf = protocol.ClientFactory.forProtocol(protocol.Protocol)
    cf.noisy = false
    local c = reactor.connectUNIX(path, cf)
    assert.equal(30, c.timeout)
    spin(function() return c.state == "connected" end)
    c:disconnect()
    local done = false
    port:stopListening():addCallback(function() done = true end)
    spin(function() return done and c.state == "disconnected" end)
  end)

  it("applies the mode to the socket file", function()
    local path = tmppath()
    local f = protocol.Factory.forProtocol(protocol.Protocol)
    f.noisy = false
    local port = reactor.listenUNIX(path, f, 5, tonumber("600", 8))
    local mode = io.popen("stat -c %a " .. path):read("l")
    assert.equal("600", mode)
    local done = false
    port:stopListening():addCallback(function() done = true end)
    spin(function() return done end)
  end)

  it("fails connectUNIX to a missing path with a ConnectError", function()
    local f = protocol.ClientFactory.forProtocol(protocol.Protocol)
    f.noisy = false
    function f:clientConnectionFailed(_, r) self.reason = r end
    reactor.connectUNIX(tmppath(), f)
    spin(function() return f.reason ~= nil end)
    assert.is_truthy(f.reason:check(errors.ConnectError))
  end)

  -- connect() on a UNIX socket fails with EAGAIN (not EINPROGRESS) while
  -- the listener's queue is full; that failed the connection at once
  it("connects 300 clients at once to a listener with a backlog of 5", function()
    local path = tmppath()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade() self.transport:write("hi") self.transport:loseConnection() end
    local sf = protocol.Factory.forProtocol(S)
    sf.noisy = false
    local port = reactor.listenUNIX(path, sf, 5)
    local got, failed, lost = 0, {}, 0
    local C = protocol.Protocol:extend("C")
    function C:dataReceived(d) if d == "hi" then got = got + 1 end end
    function C:connectionLost() lost = lost + 1 end
    for _ = 1, 300 do
      local f = protocol.ClientFactory.forProtocol(C)
      f.noisy = false
      function f:clientConnectionFailed(_, r) failed[#failed + 1] = tostring(r.value) end
      reactor.connectUNIX(path, f)
    end
    spin(function() return lost + #failed == 300 end)
    assert.same({}, failed)
    assert.equal(300, got)
    local done = false
    port:stopListening():addCallback(function() done = true end)
    spin(function() return done end)
  end)

  -- Twisted's reprs show the path as Python's repr: the port's was without
  -- its quotes, and an abstract name's NUL (and any control byte) came out
  -- raw, in tostring and in the log line
  it("shows paths as Python's repr in addresses, the port and its log line", function()
    local address = require "braid.address"
    assert.equal([[UNIXAddress('\x00abs')]], tostring(address.UNIXAddress("\0abs")))
    assert.equal([[UNIXAddress('a\tb\n\x7f')]], tostring(address.UNIXAddress("a\tb\n\127")))
    assert.equal([[UNIXAddress("it's")]], tostring(address.UNIXAddress("it's")))
    assert.equal([[UNIXAddress('q"\'x\\y')]], tostring(address.UNIXAddress("q\"'x\\y")))
    local log = require "braid.log"
    local lines = {}
    local function obs(ev) lines[#lines + 1] = ev.text end
    log.addObserver(obs)
    local name = "\0braid-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    local f = protocol.Factory.forProtocol(protocol.Protocol)
    f.noisy = false
    local port = reactor.listenUNIX(name, f)
    local path = tmppath()
    local port2 = reactor.listenUNIX(path, f)
    log.removeObserver(obs)
    local shown = name:gsub("^%z", "\\x00")
    assert.equal("<Factory on '" .. shown .. "'>", tostring(port))
    assert.equal("<Factory on '" .. path .. "'>", tostring(port2))
    assert.equal("UNIXAddress('" .. shown .. "')", tostring(port:getHost()))
    assert.equal("Factory starting on '" .. shown .. "'", lines[1])
    assert.equal("Factory starting on '" .. path .. "'", lines[2])
    local done = 0
    port:stopListening():addCallback(function() done = done + 1 end)
    port2:stopListening():addCallback(function() done = done + 1 end)
    spin(function() return done == 2 end)
  end)

  it("raises CannotListenError for a path in a missing directory", function()
    local ok, e = pcall(reactor.listenUNIX, "/nonexistent-dir/x.sock", { protocol = {} })
    assert.is_false(ok)
    assert.is_true(errors.CannotListenError:isinstance(e))
    -- as Twisted's unix.Port: no interface, the path in the port's place
    assert.is_nil(e.interface)
    assert.equal("/nonexistent-dir/x.sock", e.port)
    assert.equal("CannotListenError: Couldn't listen on any:/nonexistent-dir/x.sock: "
      .. "[Errno 2] No such file or directory.", tostring(e))
    assert.equal("[Errno 2] No such file or directory", e.socketError)
  end)
end)
