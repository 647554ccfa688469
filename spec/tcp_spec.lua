-- spec for runtime/tcp.c and lua/braid/tcp.lua: TCP ports, connections, transports
local reactor = require "braid.reactor"
local core = require "braid.core"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local log = require "braid.log"
local resolver = require "braid.resolver"
local defer = require "braid.defer"

local Protocol, Factory = protocol.Protocol, protocol.Factory

-- run the reactor until cond() holds; fail (never hang) after `limit` s
local loop = require "helpers.loop"
local spin = loop.spin

-- a recording protocol class
local Rec = Protocol:extend("Rec")
function Rec:init() self.data, self.events = {}, {} end
function Rec:connectionMade()
  self.events[#self.events + 1] = "made"
  if self.onMade then self:onMade() end
end
function Rec:dataReceived(d)
  self.data[#self.data + 1] = d
  if self.onData then self:onData(d) end
end
function Rec:connectionLost(r)
  self.events[#self.events + 1] = "lost"
  self.reason = r
  self.lost = (self.lost or 0) + 1
end
function Rec:received() return table.concat(self.data) end

local Echo = Protocol:extend("Echo")
function Echo:dataReceived(d) self.transport:write(d) end

-- listen with a factory that records every server protocol built
local function server(P, setup)
  local f = Factory.forProtocol(P or Rec)
  f.built = {}
  f.noisy = false
  local build = f.buildProtocol
  function f:buildProtocol(addr)
    local p = build(self, addr)
    self.built[#self.built + 1] = p
    if setup then setup(p) end
    return p
  end
  local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
  return port, f, port:getHost().port
end

local function client(portno, setup, P)
  local f = protocol.ClientFactory.forProtocol(P or Rec)
  f.noisy = false
  f.built = {}
  local build = f.buildProtocol
  function f:buildProtocol(addr)
    local p = build(self, addr)
    self.built[#self.built + 1] = p
    if setup then setup(p) end
    return p
  end
  function f:clientConnectionFailed(c, reason) self.failed = reason end
  function f:clientConnectionLost(c, reason) self.lostReason = reason end
  local c = reactor.connectTCP("127.0.0.1", portno, f)
  return c, f
end

local function stop(port)
  local done = false
  port:stopListening():addCallback(function() done = true end)
  spin(function() return done end)
end

-- a streaming producer recording the calls it gets in `calls`
local function recording_producer()
  local calls = {}
  local function record(name) return function() calls[#calls + 1] = name end end
  return { pauseProducing = record("pause"), resumeProducing = record("resume"),
           stopProducing = record("stop") }, calls
end

-- the resolver answers every name with these IPv4 hosts, in order
local function resolve_to(...)
  local hosts = { ... }
  resolver.installResolver({ getHostByName = function()
    local list = {}
    for i, host in ipairs(hosts) do list[i] = { family = "INET", host = host } end
    return defer.succeed(list)
  end })
end

-- a client factory that logs nothing and keeps each clientConnectionFailed
-- reason: the last as f.reason, all in the list returned
local function quiet_client()
  local f = protocol.ClientFactory.forProtocol(Rec)
  f.noisy = false
  local reasons = {}
  function f:clientConnectionFailed(_, reason)
    self.reason = reason
    reasons[#reasons + 1] = reason
  end
  return f, reasons
end

-- make 127.0.0.2:port drop SYNs (a listener whose accept queue is full)
-- until the test ends
local function syn_hole(port)
  local socket = require "socket"
  local hole = assert(socket.tcp())
  assert(hole:bind("127.0.0.2", port))
  assert(hole:listen(0))
  local fillers = {}
  for i = 1, 3 do
    fillers[i] = socket.tcp()
    fillers[i]:settimeout(0)
    fillers[i]:connect("127.0.0.2", port)
  end
  finally(function()
    for _, s in ipairs(fillers) do s:close() end
    hole:close()
  end)
end

describe("braid.tcp", function()
  local ports
  before_each(function() ports = {} end)
  after_each(function()
    for _, p in ipairs(ports) do stop(p) end
    resolver.installResolver(nil)
  end)
  local function listen(...)
    local port, f, n = server(...)
    ports[#ports + 1] = port
    return port, f, n
  end

  -- a server and a client connected to it, once both have their transports
  local function pair()
    local _, sf, n = listen()
    local _, cf = client(n)
    spin(function() return sf.built[1] and cf.built[1] and cf.built[1].transport end)
    return sf, cf, n
  end

  it("echoes bytes between a client and a server on 127.0.0.1 port 0", function()
    local _, _, n = listen(Echo)
    assert.is_true(n > 0)
    local _, cf = client(n, function(p) function p:onMade() self.transport:write("hello") end end)
    spin(function() return cf.built[1] and cf.built[1]:received() == "hello" end)
    cf.built[1].transport:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
  end)

  it("defaults to backlog 50 and a 30 s connect timeout", function()
    local f = Factory.forProtocol(Rec)
    f.noisy = false
    local port = reactor.listenTCP(0, f, nil, "127.0.0.1")
    ports[#ports + 1] = port
    assert.equal(50, port.backlog)
    local c, cf = client(port:getHost().port)
    assert.equal(30, c.timeout)
    spin(function() return cf.built[1] ~= nil end)
    c:disconnect()
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("gives transports IPv4Address hosts and peers and per-process session numbers", function()
    local sf, cf, n = pair()
    local st, ct = sf.built[1].transport, cf.built[1].transport
    assert.equal("TCP", st:getHost().type)
    assert.equal("127.0.0.1", st:getPeer().host)
    assert.equal(n, st:getHost().port)
    assert.equal(n, ct:getPeer().port)
    assert.equal(ct:getHost().port, st:getPeer().port)
    assert.equal(("IPv4Address(type='TCP', host='127.0.0.1', port=%d)"):format(n), tostring(st:getHost()))
    assert.is_true(st.connected)
    assert.is_false(st.disconnecting)
    assert.equal("number", math.type(st.sessionno) and "number")
    assert.are_not.equal(st.sessionno, ct.sessionno)
    ct:abortConnection()
  end)

  it("transport:logPrefix() is the connection's log system, as Twisted's (EchoProtocol,0,127.0.0.1)", function()
    local Named = Rec:extend("EchoProtocol")
    local ClientNamed = Rec:extend("ClientP")
    local seen = {}
    function Named:connectionMade()
      seen.server = { self.transport:logPrefix(), log.getSystem() }
      Rec.connectionMade(self)
    end
    function ClientNamed:connectionMade()
      seen.client = { self.transport:logPrefix(), log.getSystem() }
      Rec.connectionMade(self)
    end
    local _, sf, n = listen(Named)
    local c, cf = client(n, nil, ClientNamed)
    spin(function() return seen.server and seen.client end)
    local st, ct = sf.built[1].transport, cf.built[1].transport
    local want = "EchoProtocol," .. st.sessionno .. ",127.0.0.1"
    -- connectionMade itself runs under the port's system (the factory's
    -- class) and, on a client, under Uninitialized, as Twisted's
    assert.same({ want, "Factory" }, seen.server)
    assert.same({ "ClientP,client", "Uninitialized" }, seen.client)
    assert.equal(want, st:logPrefix())
    assert.equal("ClientP,client", ct:logPrefix())
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal(want, st:logPrefix())
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_false(st.connected)
  end)

  it("flushes everything written before loseConnection, then ends with ConnectionDone", function()
    local big = string.rep("abcdefgh", 256 * 1024) -- 2 MiB
    local _, sf, n = listen(Rec, function(p)
      function p:onMade()
        self.transport:write(big)
        self.transport:loseConnection()
        self.transport:write("tail") -- queued after loseConnection: still sent
        assert.is_true(self.transport.disconnecting)
      end
    end)
    local _, cf = client(n)
    spin(function() return cf.built[1] and cf.built[1].lost == 1 end)
    assert.equal(#big + 4, #cf.built[1]:received())
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
  end)

  it("abortConnection drops queued output and gives ConnectionAborted", function()
    local _, sf, n = listen(Rec, function(p)
      function p:onData()  -- the client is connected by then
        self.transport:write(string.rep("x", 8 * 1024 * 1024))
        self.transport:abortConnection()
        self.transport:write("ignored") -- silently discarded
      end
    end)
    local _, cf = client(n, function(p) function p:onMade() self.transport:write("go") end end)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 and cf.built[1] and cf.built[1].lost == 1 end)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionAborted))
    -- a reset, as Twisted's abort: not an orderly close
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionLost))
    assert.is_true(#cf.built[1]:received() < 8 * 1024 * 1024)
  end)

  it("never calls connectionLost from inside loseConnection or a protocol method", function()
    local seen
    local _, sf, n = listen(Rec, function(p)
      function p:onData()
        self.transport:loseConnection()
        seen = self.lost
      end
    end)
    local _, cf = client(n, function(p) function p:onMade() self.transport:write("x") end end)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 end)
    assert.is_nil(seen)
    assert.same({ "made", "lost" }, sf.built[1].events)
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("keeps a transport's fields: C's are read-only, bufferSize is checked, methods and __ names cannot be replaced", function()
    local sf, cf = pair()
    local t, ct = sf.built[1].transport, cf.built[1].transport
    -- anything else assigned is stored as is, per transport
    t.note = "mine"
    t[1] = 42
    assert.equal("mine", t.note)
    assert.equal(42, t[1])
    assert.is_nil(ct.note)
    t.note = nil
    assert.is_nil(t.note)
    -- C's fields ignore assignments
    local no = t.sessionno
    t.connected, t.disconnecting, t.sessionno, t.paused = false, true, -1, true
    assert.is_true(t.connected)
    assert.is_false(t.disconnecting)
    assert.equal(no, t.sessionno)
    assert.is_false(t.paused)
    -- so do the methods' names
    local write = t.write
    t.write = function() error("not this one") end
    assert.equal(write, t.write)
    -- protocol is the one C delivers to
    assert.equal(sf.built[1], t.protocol)
    -- bufferSize: a positive integer, 65536 until set
    assert.equal(65536, t.bufferSize)
    t.bufferSize = 1024.0
    assert.equal(1024, t.bufferSize)
    assert.equal("integer", math.type(t.bufferSize))
    assert.equal(65536, ct.bufferSize)
    assert.has_error(function() t.bufferSize = 0 end,
      "bad value for transport.bufferSize (an integer > 0 expected, got 0)")
    assert.has_error(function() t.bufferSize = 1.5 end,
      "bad value for transport.bufferSize (an integer > 0 expected, got 1.5)")
    assert.has_error(function() t.bufferSize = "big" end,
      "bad value for transport.bufferSize (an integer > 0 expected, got string)")
    assert.equal(1024, t.bufferSize)
    t:_setBufferSize(2048)
    assert.equal(2048, t.bufferSize)
    -- the fields table is also the metatable: its __ names are refused
    assert.has_error(function() t.__index = {} end,
      "transport field '__index' is reserved (names starting with __ are)")
    assert.has_error(function() t.__gc = false end,
      "transport field '__gc' is reserved (names starting with __ are)")
    -- what is a transport (the console and testing.async ask)
    local is_transport = require("braid.core").tcp_is_transport
    assert.is_true(is_transport(t))
    assert.is_false(is_transport({}))
    assert.is_false(is_transport(io.stdout))
    assert.is_false(is_transport(nil))
    assert.is_false(is_transport(sf))
    -- methods check their transport
    assert.has_error(function() t.write({}, "x") end,
      "TypeError: bad argument #1 to 'write' (braid.tcp expected, got table)")
    -- its metamethods are fields too: they check their argument, and the
    -- finalizer is the collector's alone (a live socket stays braid's)
    assert.has_error(function() t.__tostring(nil) end,
      "TypeError: bad argument #1 to '__tostring' (braid.tcp expected, got nil)")
    assert.has_error(function() t.__gc(io.stdout) end,
      "TypeError: bad argument #1 to '__gc' (braid.tcp expected, got FILE*)")
    assert.error_matches(function() t.__gc(t) end, "__gc is called by the garbage collector only")
    assert.is_true(t.connected)
    assert.is_true(t:fileno() >= 0)
    assert.has_error(function() t.write(io.stdout, "x") end,
      "TypeError: bad argument #1 to 'write' (braid.tcp expected, got FILE*)")
    assert.has_error(function() t.write(sf, "x") end,
      "TypeError: bad argument #1 to 'write' (braid.tcp expected, got Factory)")
    t:pauseProducing()
    assert.is_true(t.paused)
    t:loseConnection()
    assert.is_true(t.disconnecting)
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_false(t.connected)
    assert.is_false(t.paused)
    assert.matches("^<TCP transport #%d+ fd=%-1>$", tostring(t))
    spin(function() return cf.built[1].lost == 1 end)
  end)

  -- Twisted's FileDescriptor.disconnected: 0 until connectionLost, 1 from
  -- then on (what Twisted code reads to know the transport is gone);
  -- braid's was always nil
  it("sets transport.disconnected false while open and disconnecting, true from connectionLost on (both ends)", function()
    local sf, cf = pair()
    local sp, cp = sf.built[1], cf.built[1]
    local st, ct = sp.transport, cp.transport
    assert.is_false(st.disconnected)
    assert.is_false(ct.disconnected)
    st.disconnected = true  -- braid keeps it, as connected
    assert.is_false(st.disconnected)
    local seen = {}
    local function watch(p, side)
      function p.connectionLost(self, r)
        local t = self.transport
        seen[side] = { connected = t.connected, disconnecting = t.disconnecting,
                       disconnected = t.disconnected }
        Rec.connectionLost(self, r)
      end
    end
    watch(sp, "server")
    watch(cp, "client")
    ct:loseConnection()
    assert.is_true(ct.disconnecting)
    assert.is_false(ct.disconnected)
    spin(function() return sp.lost == 1 and cp.lost == 1 end)
    -- as Twisted's (22.4, over 127.0.0.1): the side that closed is still
    -- disconnecting, the peer never was
    assert.same({ connected = false, disconnecting = true, disconnected = true }, seen.client)
    assert.same({ connected = false, disconnecting = false, disconnected = true }, seen.server)
    reactor.iterate(0)
    assert.is_true(st.disconnected)
    assert.is_true(ct.disconnected)
    st.disconnected = false
    assert.is_true(st.disconnected)
  end)

  -- Twisted's FileDescriptor keeps the registered producer in
  -- transport.producer (nil otherwise) and whether the transport paused it
  -- in producerPaused; Twisted code reads them (is a producer registered?
  -- was it paused?). braid's were nil. (No streamingProducer: a field
  -- more per connection with a producer; docs/tcp.md)
  it("shows the registered producer as producer and producerPaused, as Twisted's", function()
    local sf, cf = pair()
    local sp, cp = sf.built[1], cf.built[1]
    local st, ct = sp.transport, cp.transport
    assert.is_nil(st.producer)
    assert.is_false(st.producerPaused)
    local prod, calls = recording_producer()
    st:registerProducer(prod, true)
    assert.equal(prod, st.producer)
    assert.is_nil(st.streamingProducer)
    assert.is_false(st.producerPaused)
    assert.is_nil(ct.producer)
    -- braid keeps them: assigning does nothing
    st.producer, st.producerPaused = false, true
    assert.equal(prod, st.producer)
    assert.is_false(st.producerPaused)
    -- the peer reads nothing: the queue passes bufferSize, the producer is paused
    ct:stopReading()
    st.bufferSize = 1024
    local chunk, n = ("x"):rep(65536), 0
    while not st.producerPaused and n < 1000 do st:write(chunk) n = n + 1 end
    assert.is_true(st.producerPaused)
    assert.same({ "pause" }, calls)
    -- drained: resumed, no longer paused
    ct:startReading()
    spin(function() return calls[2] ~= nil end)
    assert.same({ "pause", "resume" }, calls)
    assert.is_false(st.producerPaused)
    -- unregistered: no producer
    st:unregisterProducer()
    assert.is_nil(st.producer)
    -- a pull producer on the client; stopProducing at the close, then
    -- producer is nil (in connectionLost too), as Twisted's connectionLost
    local pulls, inside = 0, nil
    local pull = { resumeProducing = function() pulls = pulls + 1 end,
                   stopProducing = function() inside = { ct.producer, ct.disconnected } end }
    ct:registerProducer(pull, false)
    assert.equal(pull, ct.producer)
    assert.is_false(ct.producerPaused)
    local in_lost
    function cp.connectionLost(self, r)
      in_lost = { producer = ct.producer }
      Rec.connectionLost(self, r)
    end
    ct:abortConnection()
    spin(function() return cp.lost == 1 and sp.lost == 1 end)
    assert.same({ pull, true }, inside)
    assert.same({}, in_lost)
    assert.is_nil(ct.producer)
    assert.is_true(pulls >= 1)
  end)

  -- mutants of braid.tcp survived the spec above: producerPaused set
  -- only after the producer was told, producerPaused left
  -- true after unregisterProducer, and a producer registered on a closed
  -- transport kept as transport.producer
  it("sets producerPaused before telling the producer, and the producer fields across kinds and a close", function()
    local sf, cf = pair()
    local st, ct = sf.built[1].transport, cf.built[1].transport
    local told = {}
    local prod = {
      pauseProducing = function() told[#told + 1] = { "pause", st.producerPaused } end,
      resumeProducing = function() told[#told + 1] = { "resume", st.producerPaused } end,
      stopProducing = function() told[#told + 1] = { "stop" } end,
    }
    st.bufferSize = 1024
    local chunk = ("x"):rep(65536)
    local function fill()
      ct:stopReading()
      local n = 0
      while not st.producerPaused and n < 1000 do st:write(chunk) n = n + 1 end
    end
    st:registerProducer(prod, true)
    fill()
    assert.same({ { "pause", true } }, told)  -- as Twisted's _maybePauseProducer
    ct:startReading()
    spin(function() return told[2] ~= nil end)
    assert.same({ "resume", false }, told[2])   -- as Twisted's doWrite
    fill()
    assert.is_true(st.producerPaused)
    st:unregisterProducer()
    -- braid's: no producer, none paused (Twisted's flag stays True)
    assert.is_false(st.producerPaused)
    ct:startReading()
    local pulls = 0
    local pull = { resumeProducing = function() pulls = pulls + 1 end, stopProducing = function() end }
    st:registerProducer(pull, false)
    assert.equal(pull, st.producer)
    st:unregisterProducer()
    ct:abortConnection()
    spin(function() return sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    -- closed: the producer is stopped and not kept, as Twisted's
    local stopped = 0
    local late = { pauseProducing = function() end, resumeProducing = function() end,
                   stopProducing = function() stopped = stopped + 1 end }
    st:registerProducer(late, true)
    assert.equal(1, stopped)
    assert.is_nil(st.producer)
    assert.is_true(pulls >= 1)
  end)

  -- Twisted's tcp.Connection.getHandle() returns the socket; braid had no
  -- getHandle, so Twisted code calling it raised. braid's gives the
  -- descriptor, as fileno() does.
  it("getHandle() gives the connection's descriptor, as fileno(), and -1 once closed (both ends)", function()
    local sf, cf = pair()
    local sp, cp = sf.built[1], cf.built[1]
    local st, ct = sp.transport, cp.transport
    assert.equal("integer", math.type(st:getHandle()))
    assert.is_true(st:getHandle() >= 0)
    assert.equal(st:fileno(), st:getHandle())
    assert.equal(ct:fileno(), ct:getHandle())
    assert.are_not.equal(st:getHandle(), ct:getHandle())
    assert.has_error(function() st.getHandle({}) end,
      "TypeError: bad argument #1 to 'getHandle' (braid.tcp expected, got table)")
    local in_lost
    function cp.connectionLost(self, r) in_lost = self.transport:getHandle() Rec.connectionLost(self, r) end
    ct:loseConnection()
    assert.is_true(ct:getHandle() >= 0)  -- open until the queue is sent
    spin(function() return cp.lost == 1 and sp.lost == 1 end)
    assert.equal(-1, in_lost)
    assert.equal(-1, ct:getHandle())
    assert.equal(-1, st:getHandle())
  end)

  -- Twisted's tcp.Client transport keeps its connector as
  -- transport.connector (a server's has none); braid's was nil
  it("gives a client transport its connector as transport.connector, from connectionMade to after connectionLost", function()
    local _, sf, n = listen()
    local seen = {}
    local c, cf = client(n, function(p)
      function p.onMade(self) seen.made = self.transport.connector end
      function p.connectionLost(self, r)
        seen.lost = self.transport.connector
        Rec.connectionLost(self, r)
      end
    end)
    spin(function() return sf.built[1] ~= nil and cf.built[1] ~= nil and cf.built[1].events[1] == "made" end)
    local ct, st = cf.built[1].transport, sf.built[1].transport
    assert.equal(c, seen.made)
    assert.equal(c, ct.connector)
    assert.is_nil(st.connector)
    ct.connector = false  -- braid keeps it
    assert.equal(c, ct.connector)
    ct:loseConnection()
    assert.equal(c, ct.connector)
    spin(function() return cf.built[1].lost == 1 end)
    assert.equal(c, seen.lost)
    assert.equal(c, ct.connector)
    assert.equal("disconnected", c.state)
  end)

  it("raises when writing a non-string", function()
    local _, sf, n = listen()
    client(n)
    spin(function() return sf.built[1] and sf.built[1].transport end)
    local t = sf.built[1].transport
    local function write_error(v)
      local ok, e = pcall(t.write, t, v)
      assert.is_false(ok)
      assert.is_true(errors.TypeError:isinstance(e))  -- an error object, as writeSequence's
      return e.message
    end
    assert.equal("bad argument #1 to 'write' (string expected, got nil)", write_error(nil))
    assert.equal("bad argument #1 to 'write' (string expected, got table)", write_error({}))
    assert.equal("bad argument #1 to 'write' (string expected, got number)", write_error(5))
    t:abortConnection()
    assert.equal("bad argument #1 to 'write' (string expected, got nil)", write_error(nil))
    t:write("after abort is discarded")
    spin(function() return sf.built[1].lost == 1 end)
    t:write("after connectionLost is discarded")
  end)

  it("logs an error raised in dataReceived, aborts that connection with it, and serves on", function()
    local logged = {}
    local obs = function(ev) if ev.isError then logged[#logged + 1] = ev end end
    log.addObserver(obs)
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    finally(function() log.removeObserver(obs) log.setErrorStream(prev) end)
    local Bad = Rec:extend("Bad")
    function Bad:dataReceived(d)
      if d:find("boom") then error("boom in dataReceived") end
      self.transport:write(d)
    end
    local _, sf, n = listen(Bad)
    local _, cf = client(n, function(p) function p:onMade() self.transport:write("boom") end end)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    assert.equal(1, #logged)
    assert.matches("boom in dataReceived", sf.built[1].reason:getErrorMessage())
    assert.matches("boom in dataReceived", tostring(logged[1].failure and logged[1].failure:getErrorMessage() or logged[1].text))
    -- logged with the traceback of where it was raised
    assert.matches("stack traceback:.*spec/tcp_spec%.lua:%d+: in", logged[1].failure:getTraceback())
    -- another connection is served normally
    local _, cf2 = client(n, function(p) function p:onMade() self.transport:write("fine") end end)
    spin(function() return cf2.built[1] and cf2.built[1]:received() == "fine" end)
    cf2.built[1].transport:loseConnection()
    spin(function() return cf2.built[1].lost == 1 end)
  end)

  it("only logs an error raised in connectionLost", function()
    local logged = 0
    local obs = function(ev) if ev.isError then logged = logged + 1 end end
    log.addObserver(obs)
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    finally(function() log.removeObserver(obs) log.setErrorStream(prev) end)
    local Bad = Rec:extend("BadLost")
    function Bad:connectionLost() self.lost = 1 error("boom in connectionLost") end
    local _, sf, n = listen(Bad)
    local c = client(n)
    spin(function() return sf.built[1] ~= nil end)
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal(1, logged)
  end)

  it("sets the log system to Prefix,sessionno,peerhost while protocol methods run", function()
    local sys
    local _, sf, n = listen(Rec, function(p) function p:onData() sys = log.getSystem() end end)
    local _, cf = client(n, function(p) function p:onMade() self.transport:write("x") end end)
    spin(function() return sys ~= nil end)
    assert.equal("Rec," .. sf.built[1].transport.sessionno .. ",127.0.0.1", sys)
    assert.equal("-", log.getSystem())
    cf.built[1].transport:loseConnection()
    spin(function() return sf.built[1].lost == 1 end)
  end)

  -- A server that answers "bye" to the client's half-close and then closes
  -- with `close` ("loseConnection" or "loseWriteConnection"), and its
  -- client, which sends "req", half-closes and writes " too" (still sent,
  -- as Twisted's: it used to be dropped), then "late" once its write side
  -- is shut (dropped); both record their events.
  local function half_closing(close)
    local function note(what) return function(self) self.events[#self.events + 1] = what end end
    local Half = Rec:extend("Half")
    function Half:readConnectionLost()
      self.events[#self.events + 1] = "readLost"
      self.transport:write("bye")
      self.transport[close](self.transport)
    end
    Half.writeConnectionLost = note("writeLost")
    local _, sf, n = listen(Half)
    local _, cf = client(n, function(p)
      function p:onMade()
        self.transport:write("req")
        self.transport:loseWriteConnection()
        self.transport:write(" too")
      end
      p.readConnectionLost = note("readLost")
      function p:writeConnectionLost()
        self.events[#self.events + 1] = "writeLost"
        self.transport:write("late")
      end
    end)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 end)
    spin(function() return cf.built[1].lost == 1 end)
    assert.equal("req too", sf.built[1]:received())
    assert.equal("bye", cf.built[1]:received())
    return sf.built[1], cf.built[1]
  end

  it("tells a half-closeable protocol of read and write half-closes", function()
    local s, c = half_closing("loseConnection")
    assert.same({ "made", "writeLost", "readLost", "lost" }, c.events)
    assert.same({ "made", "readLost", "lost" }, s.events)
  end)

  it("tells writeConnectionLost, then connectionLost, to a side that half-closes after the peer's", function()
    local s, c = half_closing("loseWriteConnection")
    assert.same({ "made", "readLost", "writeLost", "lost" }, s.events)
    assert.equal("ConnectionDone", s.reason.type.__name)
    assert.same({ "made", "writeLost", "readLost", "lost" }, c.events)
  end)

  it("shuts the write side only once a registered pull producer is done (Twisted's doWrite)", function()
    local Half = Rec:extend("Half")
    function Half:readConnectionLost()
      self.events[#self.events + 1] = "readLost:" .. self:received()
      self.transport:loseConnection()
    end
    local _, sf, n = listen(Half)
    local resumes = {}
    local _, cf = client(n, function(p)
      function p:onMade()
        local t = self.transport
        t:registerProducer({
          resumeProducing = function()
            resumes[#resumes + 1] = #resumes + 1
            local k = #resumes
            if k <= 3 then t:write("chunk" .. k .. ";") end
            if k == 3 then t:unregisterProducer() end
          end,
          stopProducing = function() resumes[#resumes + 1] = "stop" end,
        }, false)
        t:loseWriteConnection()
      end
    end)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    -- the half-close waited for chunk2 and chunk3 (braid shut the write
    -- side after chunk1, and the later chunks were discarded)
    assert.same({ 1, 2, 3 }, resumes)
    assert.same({ "made", "readLost:chunk1;chunk2;chunk3;", "lost" }, sf.built[1].events)
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
  end)

  it("shuts the write side held by a pull producer once it unregisters without writing", function()
    local Half = Rec:extend("Half")
    function Half:readConnectionLost()
      self.events[#self.events + 1] = "readLost:" .. self:received()
      self.transport:loseConnection()
    end
    local _, sf, n = listen(Half)
    local resumes, ct = 0, nil
    local _, cf = client(n, function(p)
      function p:onMade()
        ct = self.transport
        ct:write("head;")
        ct:registerProducer({ resumeProducing = function() resumes = resumes + 1 end,
          stopProducing = function() end }, false)
        ct:loseWriteConnection()
      end
    end)
    spin(function() return resumes >= 2 and sf.built[1] and sf.built[1]:received() == "head;" end)
    for _ = 1, 5 do reactor.iterate(0) end
    assert.same({ "made" }, sf.built[1].events)  -- not shut while the producer is registered
    ct:unregisterProducer()
    spin(function() return sf.built[1] and sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    assert.same({ "made", "readLost:head;", "lost" }, sf.built[1].events)
  end)

  -- a pull producer registered on an idle connection (no write this turn)
  -- whose resumeProducing writes nothing: asked once, at registration,
  -- then close(transport) asks it again, as Twisted's loseConnection and
  -- loseWriteConnection startWriting and doWrite finds the buffer empty;
  -- it unregisters then. Returns the resume count and the server protocol.
  local function idle_pull_producer_closing(close)
    local _, sf, n = listen()
    local _, cf = client(n)
    spin(function() return sf.built[1] and cf.built[1] and cf.built[1].transport end)
    for _ = 1, 3 do reactor.iterate(0) end  -- a later turn than any write
    local ct, resumes = cf.built[1].transport, 0
    ct:registerProducer({
      resumeProducing = function()
        resumes = resumes + 1
        if resumes == 2 then ct:unregisterProducer() end
      end,
      stopProducing = function() end,
    }, false)
    for _ = 1, 5 do reactor.iterate(0) end
    assert.equal(1, resumes)  -- registration only: nothing drained since
    ct[close](ct)
    spin(function() return resumes == 2 end)
    spin(function() return sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    return resumes, sf.built[1]
  end

  it("asks an idle pull producer for more on loseWriteConnection, then shuts once it unregisters", function()
    local resumes, s = idle_pull_producer_closing("loseWriteConnection")
    assert.equal(2, resumes)
    assert.is_truthy(s.reason:check(errors.ConnectionDone))
  end)

  it("asks an idle pull producer for more on loseConnection, then closes once it unregisters", function()
    local resumes, s = idle_pull_producer_closing("loseConnection")
    assert.equal(2, resumes)
    assert.is_truthy(s.reason:check(errors.ConnectionDone))
  end)

  it("pauses a streaming producer past bufferSize and resumes it once drained", function()
    local prod, calls = recording_producer()
    local sf, cf = pair()
    local ct = cf.built[1].transport
    assert.is_false(sf.built[1].transport.paused)
    sf.built[1].transport:pauseProducing() -- the server stops reading
    assert.is_true(sf.built[1].transport.paused)
    ct:registerProducer(prod, true)
    local chunk = string.rep("z", 64 * 1024)
    local i = 0
    while #calls == 0 and i < 1000 do ct:write(chunk) i = i + 1 end
    assert.same({ "pause" }, calls)
    assert.is_true(ct:getWriteBufferSize() > 64 * 1024)
    sf.built[1].transport:resumeProducing()
    assert.is_false(sf.built[1].transport.paused)
    spin(function() return calls[2] ~= nil end)
    assert.same({ "pause", "resume" }, calls)
    assert.equal(0, ct:getWriteBufferSize())
    spin(function() return #sf.built[1]:received() == i * #chunk end)
    ct:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
    assert.same({ "pause", "resume", "stop" }, calls)
  end)

  it("pauses a streaming producer once the queue passes bufferSize (not at it), and once only", function()
    local prod, calls = recording_producer()
    local sf, cf = pair()
    local ct = cf.built[1].transport
    sf.built[1].transport:pauseProducing()
    -- fill the kernel until braid queues: from then on, nothing leaves the
    -- queue before the loop runs again
    local chunk = string.rep("q", 64 * 1024)
    local total, i = 0, 0
    while ct:getWriteBufferSize() == 0 and i < 1000 do ct:write(chunk) total = total + #chunk i = i + 1 end
    local queued = ct:getWriteBufferSize()
    assert.is_true(queued > 0)
    ct.bufferSize = queued + 5
    ct:registerProducer(prod, true)
    ct:write("12345")                      -- exactly bufferSize queued: no pause (Twisted's >)
    assert.equal(queued + 5, ct:getWriteBufferSize())
    assert.same({}, calls)
    ct:write("6")                          -- one byte past it
    assert.same({ "pause" }, calls)
    ct:write("789")                        -- already paused: not told again
    assert.same({ "pause" }, calls)
    total = total + 9
    sf.built[1].transport:resumeProducing()
    spin(function() return calls[2] ~= nil end)
    assert.same({ "pause", "resume" }, calls)
    spin(function() return #sf.built[1]:received() == total end)
    assert.equal("123456789", sf.built[1]:received():sub(-9))
    ct:unregisterProducer()
    ct:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
    assert.same({ "pause", "resume" }, calls)  -- unregistered: no stopProducing
  end)

  -- a client whose streaming producer was paused past bufferSize (the
  -- server does not read), then loseConnection; the server reads again.
  -- Returns the client transport, the factories, the calls and the bytes sent.
  -- close: the transport method called ("loseConnection" unless given)
  local function paused_producer_closing(close)
    local prod, calls = recording_producer()
    local _, sf, n = listen(nil, function(p) function p:onMade() self.transport:pauseProducing() end end)
    local _, cf = client(n)
    spin(function() return sf.built[1] and cf.built[1] and cf.built[1].transport end)
    local ct = cf.built[1].transport
    ct:registerProducer(prod, true)
    local chunk = string.rep("p", 64 * 1024)
    local i = 0
    while #calls == 0 and i < 1000 do ct:write(chunk) i = i + 1 end
    assert.same({ "pause" }, calls)
    ct[close or "loseConnection"](ct)
    if not close then assert.is_true(ct.disconnecting) end
    sf.built[1].transport:resumeProducing()
    -- asked for more once the queue drained (as Twisted's doWrite)
    spin(function() return calls[2] ~= nil end)
    assert.same({ "pause", "resume" }, calls)
    spin(function() return #sf.built[1]:received() == i * #chunk end)
    for _ = 1, 5 do reactor.iterate(0) end
    return ct, sf, cf, calls, i * #chunk
  end

  it("holds a loseConnection for a paused streaming producer: resumed once drained, closed when it unregisters", function()
    local ct, sf, cf, calls, sent = paused_producer_closing()
    -- resumed, it still holds the close (Twisted 22.4's doWrite stops
    -- writing and waits for unregisterProducer)
    assert.is_nil(cf.built[1].lost)
    assert.is_true(ct.connected)
    assert.is_nil(sf.built[1].lost)
    ct:unregisterProducer()
    spin(function() return cf.built[1].lost == 1 end)
    assert.same({ "pause", "resume" }, calls)  -- unregistered first: no stopProducing
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal(sent, #sf.built[1]:received())
  end)

  it("closes a loseConnection held by a resumed streaming producer once a write it makes is sent", function()
    local ct, sf, cf, calls, sent = paused_producer_closing()
    assert.is_nil(cf.built[1].lost)
    ct:write("tail")  -- the producer, resumed, writes: sent, then the close
    spin(function() return cf.built[1].lost == 1 end)
    assert.same({ "pause", "resume", "stop" }, calls)
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal(sent + 4, #sf.built[1]:received())
    assert.equal("tail", sf.built[1]:received():sub(-4))
  end)

  it("shuts a write side held by a resumed streaming producer once a write it makes is sent", function()
    local ct, sf, cf, calls, sent = paused_producer_closing("loseWriteConnection")
    -- resumed, it still holds the half-close: the server has seen no EOF
    assert.is_nil(sf.built[1].lost)
    assert.equal(sent, #sf.built[1]:received())
    ct:write("tail")  -- sent at once (the queue is empty), then the shut
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
    assert.equal(sent + 4, #sf.built[1]:received())
    assert.equal("tail", sf.built[1]:received():sub(-4))
    spin(function() return cf.built[1].lost == 1 end)
    assert.same({ "pause", "resume", "stop" }, calls)
  end)

  it("ends with ConnectionLost when the peer resets while output is queued and reading is paused", function()
    local sf, cf = pair()
    local ct = cf.built[1].transport
    ct:pauseProducing()                  -- only the write side hears of the reset
    sf.built[1].transport:pauseProducing()
    local chunk = string.rep("r", 64 * 1024)
    local i = 0
    while ct:getWriteBufferSize() == 0 and i < 1000 do ct:write(chunk) i = i + 1 end
    assert.is_true(ct:getWriteBufferSize() > 0)
    sf.built[1].transport:abortConnection()
    spin(function() return cf.built[1].lost == 1 end)
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionLost))
    assert.is_falsy(cf.built[1].reason:check(errors.ConnectionDone))
    assert.is_truthy(cf.lostReason:check(errors.ConnectionLost))
  end)

  it("calls a pull producer's resumeProducing each time the buffer empties", function()
    local n_resumes, t = 0, nil
    local prod = {
      resumeProducing = function()
        n_resumes = n_resumes + 1
        if n_resumes <= 3 then t:write("chunk" .. n_resumes) end
      end,
      stopProducing = function() end,
    }
    local sf, cf = pair()
    t = cf.built[1].transport
    t:registerProducer(prod, false)
    spin(function() return n_resumes >= 4 end)
    spin(function() return sf.built[1]:received() == "chunk1chunk2chunk3" end)
    t:unregisterProducer()
    t:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("refuses a second producer with RuntimeError, as Twisted", function()
    local _, sf, n = listen()
    local _, cf = client(n)
    spin(function() return cf.built[1] and cf.built[1].transport and sf.built[1] end)
    local t = cf.built[1].transport
    local p = { pauseProducing = function() end, resumeProducing = function() end, stopProducing = function() end }
    t:registerProducer(p, true)
    local ok, e = pcall(t.registerProducer, t, p, true)
    assert.is_false(ok)
    assert.is_true(errors.RuntimeError:isinstance(e), tostring(e))
    assert.matches("^RuntimeError: Cannot register producer .*, because producer .* was never unregistered%.$",
      tostring(e))
    t:abortConnection()
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("stops reading while paused and delivers again after resumeProducing", function()
    local sf, cf = pair()
    sf.built[1].transport:pauseProducing()
    cf.built[1].transport:write("data")
    for _ = 1, 5 do reactor.iterate(0.01) end
    assert.equal("", sf.built[1]:received())
    sf.built[1].transport:resumeProducing()
    spin(function() return sf.built[1]:received() == "data" end)
    cf.built[1].transport:loseConnection()
    spin(function() return sf.built[1].lost == 1 end)
  end)

  it("stopReading holds back data and the peer's close until startReading (Twisted's FileDescriptor)", function()
    local sf, cf = pair()
    local st = sf.built[1].transport
    st:stopReading()
    assert.is_true(st.paused)
    cf.built[1].transport:write("data")
    cf.built[1].transport:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)  -- "data" and the FIN wait in the server's kernel
    for _ = 1, 5 do reactor.iterate(0) end
    assert.equal("", sf.built[1]:received())
    assert.is_nil(sf.built[1].lost)                  -- the FIN is not read either
    assert.is_true(st.connected)
    st:startReading()
    assert.is_false(st.paused)
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal("data", sf.built[1]:received())
    assert.same({ "made", "lost" }, sf.built[1].events)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
  end)

  it("stopConsuming unregisters the producer, then loses the connection once the queue is sent", function()
    local prod, calls = recording_producer()
    local _, sf, n = listen(nil, function(p) function p:onMade() self.transport:stopReading() end end)
    local _, cf = client(n)
    spin(function() return sf.built[1] and cf.built[1] and cf.built[1].transport end)
    local ct = cf.built[1].transport
    ct:registerProducer(prod, true)
    local chunk = string.rep("c", 64 * 1024)
    local i = 0
    while #calls == 0 and i < 1000 do ct:write(chunk) i = i + 1 end
    assert.same({ "pause" }, calls)
    ct:stopConsuming()
    assert.is_true(ct.disconnecting)
    sf.built[1].transport:startReading()
    spin(function() return cf.built[1].lost == 1 end)
    -- unregistered first: not resumed once drained, not stopped at the close
    assert.same({ "pause" }, calls)
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
    spin(function() return sf.built[1].lost == 1 end)
    assert.equal(i * #chunk, #sf.built[1]:received())
    -- none left registered: a new one is told to stop (the transport is
    -- closed), with no "never unregistered" RuntimeError
    local p2, calls2 = recording_producer()
    ct:registerProducer(p2, true)
    assert.same({ "stop" }, calls2)
  end)

  it("sets and reads TCP_NODELAY (on by default, both ends) and SO_KEEPALIVE", function()
    local _, sf, n = listen()
    local _, cf = client(n)
    spin(function() return sf.built[1] and sf.built[1].transport and cf.built[1] and cf.built[1].transport end)
    local t = sf.built[1].transport
    assert.is_true(t:getTcpNoDelay())
    assert.is_true(cf.built[1].transport:getTcpNoDelay())
    t:setTcpNoDelay(false)
    assert.is_false(t:getTcpNoDelay())
    t:setTcpNoDelay(true)
    assert.is_true(t:getTcpNoDelay())
    assert.is_false(t:getTcpKeepAlive())
    t:setTcpKeepAlive(true)
    assert.is_true(t:getTcpKeepAlive())
    t:abortConnection()
    spin(function() return sf.built[1].lost == 1 end)
  end)

  it("fails with ConnectionRefusedError after startedConnecting", function()
    local port, _, n = server()
    stop(port)
    local f = protocol.ClientFactory.forProtocol(Rec)
    f.noisy = false
    local events = {}
    function f:startedConnecting(c) events[#events + 1] = "started:" .. c.state end
    function f:clientConnectionFailed(c, reason) events[#events + 1] = "failed:" .. c.state; self.reason = reason end
    local c = reactor.connectTCP("127.0.0.1", n, f)
    assert.equal("connecting", c.state)
    spin(function() return f.reason ~= nil end)
    assert.same({ "started:connecting", "failed:disconnected" }, events)
    assert.is_truthy(f.reason:check(errors.ConnectionRefusedError))
    assert.equal("disconnected", c.state)
  end)

  it("fails with TimeoutError when connecting takes longer than the timeout", function()
    resolver.installResolver({ getHostByName = function() return defer.Deferred() end })
    local f, reasons = quiet_client()
    reactor.connectTCP("slow.example", 80, f, 0.05)
    spin(function() return #reasons > 0 end)
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, #reasons)  -- cancelling the lookup reports nothing more
    assert.is_truthy(reasons[1]:check(errors.TimeoutError))
  end)

  it("fails with DNSLookupError when the name does not resolve", function()
    resolver.installResolver({ getHostByName = function() return defer.fail(errors.DNSLookupError("nope")) end })
    local f = quiet_client()
    reactor.connectTCP("nothing.invalid", 80, f)
    spin(function() return f.reason ~= nil end)
    assert.is_truthy(f.reason:check(errors.DNSLookupError))
  end)

  it("tries every address of a name in turn until one connects", function()
    local _, sf, n = listen()
    local dead, _, dn = server()
    stop(dead)
    local seen
    resolver.installResolver({ getHostByName = function(_, name)
      seen = name
      return defer.succeed({ { family = "INET", host = "127.0.0.2" }, -- refused: n listens on 127.0.0.1 only
                             { family = "INET", host = "127.0.0.1" } })
    end })
    local f = protocol.ClientFactory.forProtocol(Rec)
    f.noisy = false
    local c = reactor.connectTCP("twice.example", n, f)
    spin(function() return sf.built[1] ~= nil end)
    assert.equal("twice.example", seen)
    assert.equal("connected", c.state)
    assert.equal("127.0.0.1", sf.built[1].transport:getHost().host)
    assert.equal("twice.example", c:getDestination().host)
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_true(dn > 0)
  end)

  it("starts the next address 0.3 s later when one neither connects nor fails (HostnameEndpoint)", function()
    local _, sf, n = listen()
    syn_hole(n)  -- 127.0.0.2:n drops SYNs
    resolve_to("127.0.0.2", "127.0.0.1")
    local f = quiet_client()
    local t0 = reactor.seconds()
    local c = reactor.connectTCP("slow-first.example", n, f, 5)
    spin(function() return sf.built[1] ~= nil or f.reason ~= nil end)
    local elapsed = reactor.seconds() - t0
    assert.is_nil(f.reason)
    assert.equal("connected", c.state)
    assert.equal("127.0.0.1", sf.built[1].transport:getHost().host)
    assert.is_true(elapsed >= 0.29 and elapsed < 2, "connected after " .. elapsed .. " s")
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
  end)

  it("reports one failure, once every address has failed", function()
    local dead, _, n = server()
    stop(dead)  -- n now refuses on 127.0.0.1
    resolve_to("127.0.0.1", "127.0.0.3")
    local f, reasons = quiet_client()
    local c = reactor.connectTCP("refusing.example", n, f)
    spin(function() return #reasons > 0 end)
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, #reasons)
    assert.is_truthy(reasons[1]:check(errors.ConnectionRefusedError))
    assert.equal("disconnected", c.state)
  end)

  it("moves on to the next address at once when one fails inside connect(2) (ENETUNREACH)", function()
    local _, sf, n = listen()
    -- a TCP connect to a multicast address fails in the call itself
    resolve_to("224.0.0.1", "127.0.0.1")
    local f = quiet_client()
    local t0 = reactor.seconds()
    local c = reactor.connectTCP("multicast-first.example", n, f)
    spin(function() return sf.built[1] ~= nil or f.reason ~= nil end)
    assert.is_nil(f.reason)
    assert.is_true(reactor.seconds() - t0 < 0.25)  -- not after ATTEMPT_DELAY
    assert.equal("connected", c.state)
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
    -- alone, that address fails with Twisted's class for ENETUNREACH
    resolve_to("224.0.0.1")
    local f2 = protocol.ClientFactory.forProtocol(Rec)
    f2.noisy = false
    local reasons = {}
    function f2:clientConnectionFailed(_, reason) reasons[#reasons + 1] = reason end
    reactor.connectTCP("multicast.example", n, f2)
    spin(function() return #reasons > 0 end)
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, #reasons)
    assert.is_truthy(reasons[1]:check(errors.NoRouteError))
    assert.equal(101, reasons[1].value.osError)
  end)

  it("waits for an address still in flight when a later one fails: the timeout ends it", function()
    local dead, _, refused = server()
    stop(dead)
    syn_hole(refused)  -- 127.0.0.2:refused drops SYNs; 127.0.0.1:refused refuses
    resolve_to("127.0.0.2", "127.0.0.1")
    local f, reasons = quiet_client()
    local t0 = reactor.seconds()
    local c = reactor.connectTCP("hole-then-refused.example", refused, f, 1)
    spin(function() return #reasons > 0 end)
    local elapsed = reactor.seconds() - t0
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, #reasons)
    assert.is_truthy(reasons[1]:check(errors.TimeoutError))
    assert.is_true(elapsed >= 0.95 and elapsed < 3, "failed after " .. elapsed .. " s")
    assert.equal("disconnected", c.state)
  end)

  it("fails with DNSLookupError naming the host when the resolver gives no address or fails otherwise", function()
    local function attempt(name, answer)
      resolver.installResolver({ getHostByName = function() return answer end })
      local f, reasons = quiet_client()
      local c = reactor.connectTCP(name, 80, f)
      spin(function() return #reasons > 0 end)
      for _ = 1, 3 do reactor.iterate(0) end
      assert.equal(1, #reasons)
      assert.equal("disconnected", c.state)
      return reasons[1]
    end
    local r = attempt("empty.example", defer.succeed({}))
    assert.is_truthy(r:check(errors.DNSLookupError))
    assert.equal("DNS lookup failed: empty.example.", r:getErrorMessage())
    -- any other failure of the lookup becomes a DNSLookupError for the host
    r = attempt("broken.example", defer.fail(errors.ValueError("resolver bug")))
    assert.is_truthy(r:check(errors.DNSLookupError))
    assert.equal("DNS lookup failed: broken.example.", r:getErrorMessage())
    -- the resolver's own DNSLookupError is passed on as it is
    r = attempt("own.example", defer.fail(errors.DNSLookupError("its own words")))
    assert.equal("DNS lookup failed: its own words.", r:getErrorMessage())
  end)

  it("connector:disconnect() closes cleanly: queued output is sent in order, then ConnectionDone", function()
    -- every 8 bytes differ, so a byte sent twice or skipped shows
    local parts = {}
    for i = 1, 512 * 1024 do parts[i] = ("%07d\n"):format(i) end
    local payload = table.concat(parts)
    local size = #payload
    -- the server reads nothing until the client has disconnected
    local _, sf, n = listen(nil, function(p) function p:onMade() self.transport:pauseProducing() end end)
    local c, cf = client(n, function(p)
      function p:onMade() self.transport:write(payload) end
    end)
    spin(function() return cf.built[1] ~= nil and sf.built[1] ~= nil end)
    local t = cf.built[1].transport
    assert.equal(t, c.transport)
    assert.is_true(t:getWriteBufferSize() > 0)  -- more than the kernel takes at once
    c:disconnect()
    sf.built[1].transport:resumeProducing()
    spin(function() return sf.built[1].lost == 1 and cf.built[1].lost == 1 end)
    assert.equal(size, #sf.built[1]:received())
    assert.is_true(sf.built[1]:received() == payload, "the bytes arrived changed")
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionDone))
    assert.is_truthy(cf.lostReason:check(errors.ConnectionDone))
    assert.equal("disconnected", c.state)
    assert.is_nil(c.transport)
  end)

  it("strips the brackets of an IPv6 literal given to connectTCP", function()
    local f = Factory.forProtocol(Rec)
    f.noisy = false
    f.built = {}
    function f:buildProtocol() local p = Rec() self.built[#self.built + 1] = p return p end
    local port = reactor.listenTCP(0, f, 50, "::1")
    ports[#ports + 1] = port
    local cf = protocol.ClientFactory.forProtocol(Rec)
    cf.noisy = false
    function cf:clientConnectionFailed(_, reason) self.reason = reason end
    local c = reactor.connectTCP("[::1]", port:getHost().port, cf)
    assert.equal("::1", c.host)
    assert.equal("IPv6Address", getmetatable(c:getDestination()).__name)
    assert.equal("::1", c:getDestination().host)
    spin(function() return f.built[1] ~= nil or cf.reason ~= nil end)
    assert.is_nil(cf.reason)
    assert.equal("::1", f.built[1].transport:getPeer().host)
    c:disconnect()
    spin(function() return f.built[1].lost == 1 end)
  end)

  it("stopConnecting raises NotConnectingError unless connecting, and fails the attempt with UserError", function()
    resolver.installResolver({ getHostByName = function() return defer.Deferred() end })
    local f, reasons = quiet_client()
    local c = reactor.connectTCP("slow.example", 80, f)
    c:stopConnecting()
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, #reasons)  -- not a DNSLookupError first, from the cancelled lookup
    assert.is_truthy(reasons[1]:check(errors.UserError))
    assert.equal("disconnected", c.state)
    assert.has_error(function() c:stopConnecting() end, errors.NotConnectingError())
  end)

  it("raises CannotListenError when the port is in use", function()
    local _, _, n = listen()
    local ok, e = pcall(reactor.listenTCP, n, Factory.forProtocol(Rec), 50, "127.0.0.1")
    assert.is_false(ok)
    assert.is_true(errors.CannotListenError:isinstance(e))
    assert.matches("Couldn't listen on 127.0.0.1:" .. n, tostring(e))
  end)

  it("gives CannotListenError Twisted's fields and text: socketError as Python prints the OSError", function()
    local _, _, n = listen()
    local ok, e = pcall(reactor.listenTCP, n, Factory.forProtocol(Rec), 50, "127.0.0.1")
    assert.is_false(ok)
    assert.equal("127.0.0.1", e.interface)
    assert.equal(n, e.port)
    assert.equal("[Errno 98] Address already in use", e.socketError)
    assert.equal(("CannotListenError: Couldn't listen on 127.0.0.1:%d: [Errno 98] Address already in use.")
      :format(n), tostring(e))
    ok, e = pcall(reactor.listenTCP, n, Factory.forProtocol(Rec))
    assert.is_false(ok)
    assert.equal("", e.interface)
    assert.equal(("CannotListenError: Couldn't listen on any:%d: [Errno 98] Address already in use.")
      :format(n), tostring(e))
  end)

  -- an interface name is resolved as Twisted's bind does; one that does not
  -- resolve says why, as Twisted's gaierror does (braid said "Invalid argument")
  it("raises CannotListenError with the resolver's reason for an interface name that does not resolve", function()
    local ok, e = pcall(reactor.listenTCP, 0, Factory.forProtocol(Rec), 50, "no-such-host.invalid")
    assert.is_false(ok)
    assert.is_true(errors.CannotListenError:isinstance(e))
    local why = tostring(e):match("^CannotListenError: Couldn't listen on no%-such%-host%.invalid:0: (.*)%.$")
    -- as Twisted's: the getaddrinfo code as Python's gaierror prints it
    assert.is_truthy(why == "[Errno -2] Name or service not known"
      or why == "[Errno -3] Temporary failure in name resolution", tostring(e))
    assert.equal(why, e.socketError)
  end)

  it("listens on an IPv6 literal", function()
    local f = Factory.forProtocol(Echo)
    f.noisy = false
    local ok, port = pcall(reactor.listenTCP, 0, f, 50, "::1")
    if not ok then return end -- no IPv6 here
    ports[#ports + 1] = port
    assert.equal("::1", port:getHost().host)
    local cf = protocol.ClientFactory.forProtocol(Rec)
    cf.noisy = false
    cf.built = {}
    function cf:buildProtocol() local p = Rec() p.factory = self self.built[1] = p return p end
    reactor.connectTCP("::1", port:getHost().port, cf)
    spin(function() return cf.built[1] and cf.built[1].transport end)
    local t = cf.built[1].transport
    assert.matches("^IPv6Address%(type='TCP', host='::1', port=%d+, flowInfo=0, scopeID=0%)$", tostring(t:getPeer()))
    t:write("six")
    spin(function() return cf.built[1]:received() == "six" end)
    t:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("keeps the peer's address for getPeer once the connection is lost, on both ends", function()
    local seen = {}
    local function keep(p)
      function p:connectionLost()
        local peer = self.transport:getPeer()
        seen[#seen + 1] = peer and tostring(peer) or "nil"
        self.lost = (self.lost or 0) + 1
      end
    end
    local _, sf, n = listen(Rec, keep)
    local _, cf = client(n, keep)
    spin(function() return sf.built[1] and cf.built[1] and cf.built[1].transport end)
    local cport = cf.built[1].transport:getHost().port
    cf.built[1].transport:loseConnection()
    spin(function() return #seen == 2 end)
    local want = {
      ("IPv4Address(type='TCP', host='127.0.0.1', port=%d)"):format(cport),
      ("IPv4Address(type='TCP', host='127.0.0.1', port=%d)"):format(n),
    }
    table.sort(seen)
    table.sort(want)
    assert.same(want, seen)
    assert.is_nil(cf.built[1].transport:getHost())  -- asks the socket, which is gone
  end)

  it("knows the peer of a connection reset before it was accepted", function()
    local addrs = {}
    local f = Factory.forProtocol(Rec)
    f.noisy = false
    function f:buildProtocol(addr)
      addrs[#addrs + 1] = addr and addr.host or "nil"
      return Rec()
    end
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    ports[#ports + 1] = port
    -- the handshake completes in the kernel; the RST (SO_LINGER 0) arrives
    -- before braid's loop has accepted: getpeername would fail by then
    local py = ("import socket,struct; s=socket.create_connection(('127.0.0.1',%d)); "
      .. "s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0)); s.close()")
      :format(port:getHost().port)
    assert.is_true(os.execute("/usr/bin/python3 -c \"" .. py .. "\""))
    spin(function() return #addrs == 1 end)
    assert.same({ "127.0.0.1" }, addrs)
  end)

  it("lets LimitConnectionsByPeer count a peer's closed connections out again", function()
    local policies = require "braid.policies"
    local made = 0
    local Counted = Rec:extend("Counted")
    function Counted:connectionMade() made = made + 1 end
    local inner = Factory.forProtocol(Counted)
    inner.noisy = false
    local f = policies.LimitConnectionsByPeer(inner)
    f.noisy = false
    f.maxConnectionsPerPeer = 1
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    ports[#ports + 1] = port
    for i = 1, 3 do  -- one at a time: each is served, its close counted out
      local _, cf = client(port:getHost().port)
      spin(function() return made == i end)
      assert.equal(1, f.peerConnections["127.0.0.1"])
      cf.built[1].transport:loseConnection()
      spin(function() return f.peerConnections["127.0.0.1"] == nil end)
    end
  end)

  it("listens on IPv4's any address by default, as Twisted", function()
    local f = Factory.forProtocol(Rec)
    f.noisy = false
    local port = reactor.listenTCP(0, f)
    ports[#ports + 1] = port
    local n = port:getHost().port
    assert.equal(("IPv4Address(type='TCP', host='0.0.0.0', port=%d)"):format(n), tostring(port:getHost()))
  end)

  it("stopListening fires its Deferred once closed and stops the factory", function()
    local f = Factory.forProtocol(Rec)
    f.noisy = false
    local calls = {}
    function f:startFactory() calls[#calls + 1] = "start" end
    function f:stopFactory() calls[#calls + 1] = "stop" end
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local n = port:getHost().port
    assert.same({ "start" }, calls)
    local lines = {}
    local function obs(ev) lines[#lines + 1] = ev.text end
    log.addObserver(obs)
    finally(function() log.removeObserver(obs) end)
    local fired = false
    port:stopListening():addCallback(function() fired = true end)
    spin(function() return fired end)
    assert.same({ "start", "stop" }, calls)
    assert.equal(n, port:getHost().port)
    -- a second stopListening closes nothing and stops the factory no more
    local again, result = false, "unset"
    port:stopListening():addCallback(function(v) again, result = true, v end)
    spin(function() return again end)
    log.removeObserver(obs)
    assert.is_nil(result)
    assert.same({ "start", "stop" }, calls)
    assert.same({ "(TCP Port " .. n .. " Closed)" }, lines)
    assert.is_false(port.connected)
    assert.is_true(port.disconnected)
    local cf = protocol.ClientFactory.forProtocol(Rec)
    cf.noisy = false
    function cf:clientConnectionFailed(_, r) self.reason = r end
    reactor.connectTCP("127.0.0.1", n, cf)
    spin(function() return cf.reason ~= nil end)
    assert.is_truthy(cf.reason:check(errors.ConnectionRefusedError))
  end)

  it("looks a plain-table protocol's methods up on every event", function()
    local P = {}
    local got = {}
    function P:dataReceived(d) got[#got + 1] = "v1:" .. d end
    local f = { protocol = P, noisy = false }
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    ports[#ports + 1] = port
    local _, cf = client(port:getHost().port)
    spin(function() return cf.built[1] and cf.built[1].transport end)
    local t = cf.built[1].transport
    t:write("a")
    spin(function() return #got == 1 end)
    function P:dataReceived(d) got[#got + 1] = "v2:" .. d end
    t:write("b")
    spin(function() return #got == 2 end)
    assert.same({ "v1:a", "v2:b" }, got)
    assert.is_nil(rawget(P, "transport"))
    t:loseConnection()
    spin(function() return cf.built[1].lost == 1 end)
  end)

  it("aborts a connection whose connectionMade raises, with that error", function()
    local log = require "braid.log"
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    finally(function() log.setErrorStream(prev) end)
    local Bad = Rec:extend("BadMade")
    function Bad:connectionMade() error("no thanks") end
    local _, sf, n = listen(Bad)
    local _, cf = client(n)
    spin(function() return sf.built[1] and sf.built[1].lost == 1 and cf.built[1] and cf.built[1].lost == 1 end)
    assert.matches("no thanks", sf.built[1].reason:getErrorMessage())
    assert.is_truthy(cf.built[1].reason:check(errors.ConnectionClosed))
  end)

  it("binds the client side to bindAddress", function()
    local _, sf, n = listen()
    local f = protocol.ClientFactory.forProtocol(Rec)
    f.noisy = false
    local c = reactor.connectTCP("127.0.0.1", n, f, 5, { "127.0.0.1", 0 })
    spin(function() return sf.built[1] and sf.built[1].transport end)
    assert.equal("127.0.0.1", sf.built[1].transport:getPeer().host)
    c:disconnect()
    spin(function() return sf.built[1].lost == 1 end)
  end)

  -- "" was read as 0.0.0.0 whatever the destination, so an IPv6 attempt
  -- failed to bind (Twisted binds "" as the family's any address)
  it("binds bindAddress {\"\", 0} to the any address of the destination's family", function()
    local f = Factory.forProtocol(Rec)
    f.noisy, f.built = false, {}
    function f:buildProtocol(addr)
      local p = Rec()
      p.factory = self
      self.built[#self.built + 1] = p
      return p
    end
    local port = reactor.listenTCP(0, f, 50, "::1")
    ports[#ports + 1] = port
    local cf = protocol.ClientFactory.forProtocol(Rec)
    cf.noisy = false
    function cf:clientConnectionFailed(_, r) self.failed = r end
    local c = reactor.connectTCP("::1", port:getHost().port, cf, 5, { "", 0 })
    spin(function() return cf.failed or (f.built[1] and f.built[1].transport) end)
    assert.is_nil(cf.failed)
    assert.equal("::1", f.built[1].transport:getPeer().host)
    c:disconnect()
    spin(function() return f.built[1].lost == 1 end)
  end)

  -- setting p.connected = false raised outside any protection: the
  -- connector stayed "connected" for good, and its factory never stopped
  it("tells the connector of the loss when the protocol's fields cannot be written", function()
    local _, _, n = listen()
    local Strict = Protocol:extend("Strict")
    function Strict:connectionMade() self.transport:loseConnection() end
    local f = protocol.ClientFactory()
    f.noisy = false
    function f:buildProtocol()
      local p = Strict()
      p.factory = self
      return setmetatable({}, { __index = p, __newindex = function(_, k) error("frozen: " .. k) end })
    end
    local lost = 0
    function f:clientConnectionLost() lost = lost + 1 end
    local c = reactor.connectTCP("127.0.0.1", n, f)
    spin(function() return lost > 0 end)
    assert.equal(1, lost)
    assert.equal("disconnected", c.state)
    assert.equal(0, f.numPorts)
  end)

  it("keeps connections alive with no Lua reference to them", function()
    local _, _, n = listen(Echo)
    local got = {}
    local C = {}
    function C:connectionMade() self.transport:write("ping") end
    function C:dataReceived(d) got[#got + 1] = d self.transport:loseConnection() end
    reactor.connectTCP("127.0.0.1", n, { protocol = C, noisy = false })
    collectgarbage()
    collectgarbage()
    spin(function() return got[1] == "ping" end)
  end)

  it("survives two thousand connections opened and closed, some reset mid-write", function()
    local Spew = Protocol:extend("Spew")
    local spew = string.rep("s", 256 * 1024)
    function Spew:connectionMade() self.transport:write(spew) end
    local _, _, n = listen(Spew)
    local done, total = 0, 2000
    local C = Protocol:extend("C")
    function C:dataReceived()
      if self.transport.sessionno % 2 == 0 then self.transport:abortConnection()
      else self.transport:loseConnection() end
    end
    local f = protocol.ClientFactory.forProtocol(C)
    f.noisy = false
    local started = 0
    local function more() -- keep 100 connections going
      while started < total and started - done < 100 do
        started = started + 1
        reactor.connectTCP("127.0.0.1", n, f)
      end
    end
    function C:connectionLost() done = done + 1 more() end
    more()
    spin(function() return done == total end, 30)
    spin(function() return core.tcp_undelivered() == 0 end)
  end)
end)
