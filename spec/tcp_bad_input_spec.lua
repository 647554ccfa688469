-- spec for runtime/tcp.c and lua/braid/tcp.lua over real sockets: issue 5's
-- bad input (over-long and malformed frames, non-string writes, resets
-- mid-write, errors inside write, peers that never read), connect timeouts,
-- every resolved address tried, IPv6, reusePort, adopted sockets and
-- ReconnectingClientFactory's backoff against a real port.
local reactor = require "braid.reactor"
local core = require "braid.core"
local defer = require "braid.defer"
local errors = require "braid.error"
local log = require "braid.log"
local protocol = require "braid.protocol"
local basic = require "braid.basic"
local resolver = require "braid.resolver"
local testing = require "braid.testing"
local socket = require "socket" -- LuaSocket (Debian lua-socket)

local Protocol, Factory, ClientFactory = protocol.Protocol, protocol.Factory, protocol.ClientFactory

-- run the reactor until cond() holds; fail (never hang) after `limit` s
local loop = require "helpers.loop"
local spin = loop.spin

-- the result of Deferred d, or raise its error
local wait = loop.wait

-- A protocol recording everything, with Deferreds for its ends.
local Rec = Protocol:extend("Rec")
function Rec:init()
  self.data, self.lostCount = {}, 0
  self.made, self.lost = defer.Deferred(), defer.Deferred()
end
function Rec:connectionMade() self.made:callback(self) end
function Rec:dataReceived(d)
  self.data[#self.data + 1] = d
  if self.onData then self:onData(d) end
end
function Rec:connectionLost(reason)
  self.lostCount = self.lostCount + 1
  self.reason = reason
  self.lost:callback(self)
end
function Rec:received() return table.concat(self.data) end

-- a server factory for P that keeps the protocols it builds in `built`
local function server_factory(P)
  local f = Factory.forProtocol(P or Rec)
  f.noisy = false
  f.built = {}
  function f:buildProtocol(addr)
    local p = Factory.buildProtocol(self, addr)
    self.built[#self.built + 1] = p
    return p
  end
  return f
end

-- connect protocol instance p; the Deferred fires with p once connected
local function connect(host, portno, p, timeout)
  local d = defer.Deferred()
  local f = ClientFactory()
  f.noisy = false
  function f.buildProtocol(fac) p.factory = fac return p end
  function f.clientConnectionFailed(_, _, reason) d:errback(reason) end
  p.made:addCallback(function() d:callback(p) end)
  f.connector = reactor.connectTCP(host, portno, f, timeout)
  return d
end

-- silence the error log for the length of a spec; returns the logged events
local function capture_errors()
  local logged = {}
  local obs = function(ev) if ev.isError then logged[#logged + 1] = ev end end
  log.addObserver(obs)
  local prev = log.setErrorStream({ write = function() end, flush = function() end })
  return logged, function() log.removeObserver(obs) log.setErrorStream(prev) end
end

describe("braid.tcp under bad input", function()
  local ports, work0
  before_each(function()
    ports = {}
    work0 = core.work()
  end)
  after_each(function()
    for _, p in ipairs(ports) do wait(p:stopListening()) end
    resolver.installResolver(nil)
    -- every connection closed and delivered: nothing keeps the loop busy
    spin(function() return core.work() <= work0 and core.tcp_undelivered() == 0 end)
  end)
  local function listen(f, interface, opts)
    local port = reactor.listenTCP(0, f, 50, interface or "127.0.0.1", opts)
    ports[#ports + 1] = port
    return port, port:getHost().port
  end

  describe("a factory, protocol or producer that is not what it should be", function()
    it("closes a connection whose buildProtocol returns a non-protocol, logs why, and serves on", function()
      local logged, restore = capture_errors()
      finally(restore)
      local good = server_factory(Rec)
      local bad = { noisy = false, buildProtocol = function() return 5 end }
      local _, nbad = listen(bad)
      local _, ngood = listen(good)
      local c = Rec()
      wait(connect("127.0.0.1", nbad, c))
      wait(c.lost)
      assert.matches("buildProtocol returned a number", tostring(logged[1].failure.value), 1, true)
      local c2 = Rec()
      wait(connect("127.0.0.1", ngood, c2))
      c2.transport:loseConnection()
      wait(c2.lost)
    end)

    it("tells a client factory whose buildProtocol returns a non-protocol that the connection failed, and stops it", function()
      local logged, restore = capture_errors()
      finally(restore)
      local _, n = listen(server_factory(Rec))
      local d, events = defer.Deferred(), {}
      local f = ClientFactory()
      f.noisy = false
      function f.buildProtocol() return true end
      function f.stopFactory() events[#events + 1] = "stopFactory" end
      function f.clientConnectionFailed(_, _, reason)
        events[#events + 1] = "failed"
        d:callback({ reason })
      end
      local c = reactor.connectTCP("127.0.0.1", n, f)
      local reason = wait(d)[1]
      assert.is_truthy(reason:check(errors.ConnectError))
      assert.same({ "failed", "stopFactory" }, events)
      assert.equal("disconnected", c.state)
      assert.matches("buildProtocol returned a boolean", tostring(logged[1].failure.value), 1, true)
    end)

    it("takes a plain table returned by buildProtocol as a protocol", function()
      local got = defer.Deferred()
      local f = { noisy = false, buildProtocol = function()
        return { dataReceived = function(self, data) self.transport:write(data:upper()) end }
      end }
      local _, n = listen(f)
      local c = Rec()
      c.onData = function(self) if self:received() == "PING" then got:callback(true) end end
      wait(connect("127.0.0.1", n, c))
      c.transport:write("ping")
      assert.is_true(wait(got))
      c.transport:loseConnection()
      wait(c.lost)
    end)

    it("refuses a transport.protocol that is not a protocol and keeps the one it has", function()
      local _, n = listen(server_factory(Rec))
      local c = Rec()
      wait(connect("127.0.0.1", n, c))
      for _, bad in ipairs({ false, 5, "p" }) do
        local ok, e = pcall(function() c.transport.protocol = bad end)
        assert.is_false(ok)
        assert.is_true(errors.TypeError:isinstance(e))
      end
      assert.equal(c, c.transport.protocol)
      c.transport:loseConnection()
      wait(c.lost)
      assert.equal(1, c.lostCount)
    end)

    it("refuses a producer without the methods its kind needs and registers nothing", function()
      local _, n = listen(server_factory(Rec))
      local c = Rec()
      wait(connect("127.0.0.1", n, c))
      local t = c.transport
      assert.matches("has no resumeProducing",
        select(2, pcall(t.registerProducer, t, {}, false)).message, 1, true)
      assert.matches("has no pauseProducing",
        select(2, pcall(t.registerProducer, t, { resumeProducing = print, stopProducing = print }, true)).message, 1, true)
      local stopped = false
      t:registerProducer({ resumeProducing = function() end, stopProducing = function() stopped = true end }, false)
      t:unregisterProducer()
      t:loseConnection()
      wait(c.lost)
      assert.is_false(stopped)
    end)

    it("leaves nothing behind when startedConnecting raises: connectTCP raises, the factory stops", function()
      local _, n = listen(server_factory(Rec))
      local events = {}
      local f = ClientFactory.forProtocol(Rec)
      f.noisy = false
      function f.startedConnecting() error("boom") end
      function f.stopFactory() events[#events + 1] = "stopFactory" end
      function f.clientConnectionFailed() events[#events + 1] = "failed" end
      local calls = #reactor.getDelayedCalls()
      local ok, e = pcall(reactor.connectTCP, "127.0.0.1", n, f, 5)
      assert.is_false(ok)
      assert.matches("boom", tostring(e))
      assert.equal(calls, #reactor.getDelayedCalls())  -- no timeout left to fire
      assert.same({ "stopFactory" }, events)
      assert.is_false(f.numPorts > 0)
    end)
  end)

  it("delivers every connectionLost when forty connections close at once, with a collection in each", function()
    local N, lost, clost = 40, 0, 0
    local Server = Protocol:extend("Closer")
    function Server:dataReceived() self.transport:loseConnection() end
    function Server:connectionLost()
      lost = lost + 1
      collectgarbage("collect")
    end
    local _, portno = listen(Factory.forProtocol(Server))
    local Client = Protocol:extend("Pinger")
    function Client:connectionMade() self.transport:write("x") end
    function Client:connectionLost() clost = clost + 1 end
    local cf = ClientFactory.forProtocol(Client)
    cf.noisy = false
    for _ = 1, N do reactor.connectTCP("127.0.0.1", portno, cf) end
    -- forty full collections of the whole suite's heap: slow on a loaded machine
    spin(function() return lost == N and clost == N end, 30)
    assert.equal(0, core.tcp_undelivered())
  end)

  it("stops listening again when the factory's doStart raises", function()
    local probe = reactor.listenTCP(0, Factory.forProtocol(Protocol), 50, "127.0.0.1")
    local portno = probe:getHost().port
    wait(probe:stopListening())
    local Bad = Factory:extend("BadStart")
    function Bad:doStart() error("boom") end
    local w0 = core.work()
    local ok, e = pcall(reactor.listenTCP, portno, Bad(), 50, "127.0.0.1")
    assert.is_false(ok)
    assert.matches("boom", tostring(e))
    assert.equal(w0, core.work())
    local again = reactor.listenTCP(portno, Factory.forProtocol(Protocol), 50, "127.0.0.1")
    ports[#ports + 1] = again
    assert.equal(portno, again:getHost().port)
  end)

  describe("a framing server", function()
    -- two clients: `good` talks properly before and after `bad` misbehaves
    local function misbehave(Base, fields, hello, evil, again)
      local Echo = Base:extend("Echo", fields)
      function Echo:lineReceived(line) self:sendLine(line) end
      function Echo:stringReceived(s) self:sendString(s) end
      function Echo:connectionLost() self.gone = true end
      local sf = server_factory(Echo)
      local _, n = listen(sf)
      local good, bad = wait(connect("127.0.0.1", n, Rec())), wait(connect("127.0.0.1", n, Rec()))
      good.transport:write(hello)
      spin(function() return good:received() == hello end)
      bad.transport:write(evil)
      wait(bad.lost)
      good.transport:write(again)
      spin(function() return good:received() == hello .. again end)
      assert.equal(1, bad.lostCount)
      assert.is_truthy(bad.reason:check(errors.ConnectionDone))
      assert.is_nil(good.reason)
      good.transport:loseConnection()
      wait(good.lost)
      spin(function() return sf.built[1].gone and sf.built[2].gone end)
    end

    it("closes only the connection that sends an over-long line, and serves the others", function()
      misbehave(basic.LineReceiver, { MAX_LENGTH = 16 }, "short\r\n",
        string.rep("x", 100), "still here\r\n")
    end)

    it("closes only the connection whose line exceeds MAX_LENGTH before its delimiter", function()
      misbehave(basic.LineOnlyReceiver, { MAX_LENGTH = 16 }, "short\r\n",
        string.rep("y", 40) .. "\r\n", "more\r\n")
    end)

    it("closes only the connection that sends a malformed netstring", function()
      misbehave(basic.NetstringReceiver, {}, "5:hello,", "3:abcX", "2:ok,")
    end)

    it("closes only the connection whose netstring announces more than MAX_LENGTH", function()
      misbehave(basic.NetstringReceiver, { MAX_LENGTH = 100 }, "5:hello,", "1000:", "2:ok,")
    end)

    it("closes only the connection whose Int32 prefix exceeds MAX_LENGTH", function()
      misbehave(basic.Int32StringReceiver, { MAX_LENGTH = 1000 }, string.pack(">s4", "hello"),
        string.pack(">I4", 1000000) .. "zz", string.pack(">s4", "ok"))
    end)

    it("closes only the connection whose Int16 prefix exceeds MAX_LENGTH", function()
      misbehave(basic.Int16StringReceiver, { MAX_LENGTH = 10 }, string.pack(">s2", "hi"),
        string.pack(">I2", 11), string.pack(">s2", "ok"))
    end)
  end)

  it("drops the output queued by a dataReceived that raises, and gives connectionLost its error", function()
    local logged, restore = capture_errors()
    finally(restore)
    local Bad = Rec:extend("Bad")
    function Bad:onData()
      self.transport:write(string.rep("d", 8 * 1024 * 1024))
      error("bad data")
    end
    local sf = server_factory(Bad)
    local _, n = listen(sf)
    local c = wait(connect("127.0.0.1", n, Rec()))
    c.transport:write("go")
    wait(c.lost)
    wait(sf.built[1].lost)
    assert.is_true(#c:received() < 8 * 1024 * 1024)
    assert.equal(1, sf.built[1].lostCount)
    assert.matches("bad data", sf.built[1].reason:getErrorMessage())
    assert.equal(1, #logged)
  end)

  describe("write", function()
    it("raises for a number, a boolean or a table, open or closed, and writeSequence checks each item", function()
      local sf = server_factory()
      local _, n = listen(sf)
      local c = wait(connect("127.0.0.1", n, Rec()))
      local t = c.transport
      for _, bad in ipairs({ 42, 1.5, true, {}, print }) do
        local ok, e = pcall(function() t:write(bad) end)
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'write' %(string expected, got " .. type(bad) .. "%)", tostring(e))
      end
      assert.has_error(function() t:writeSequence({ "a", 7 }) end,
        "TypeError: bad argument #1 to 'writeSequence' (string expected at index 2, got number)")
      assert.has_error(function() t:writeSequence("ab") end,
        "TypeError: bad argument #1 to 'writeSequence' (table expected, got string)")
      t:loseConnection()
      assert.has_error(function() t:write(42) end,
        "TypeError: bad argument #1 to 'write' (string expected, got number)")
      wait(c.lost)
      assert.has_error(function() t:write(42) end,
        "TypeError: bad argument #1 to 'write' (string expected, got number)")
      t:write("after connectionLost: discarded")
      assert.equal(0, t:getWriteBufferSize())
      wait(sf.built[1].lost)
      assert.equal("", sf.built[1]:received())
    end)

    it("queues writes made after loseConnection and flushes them before closing", function()
      local S = Rec:extend("Closer")
      function S:connectionMade()
        Rec.connectionMade(self)
        self.transport:write("a")
        self.transport:loseConnection()
        self.transport:writeSequence({ "b", "c" })
      end
      local sf = server_factory(S)
      local _, n = listen(sf)
      local c = wait(connect("127.0.0.1", n, Rec()))
      wait(c.lost)
      assert.equal("abc", c:received())
      assert.is_truthy(c.reason:check(errors.ConnectionDone))
    end)

    it("never delivers connectionLost inside write when the peer reset the connection (EPIPE)", function()
      local sf = server_factory()
      local _, n = listen(sf)
      local s = socket.tcp()
      assert(s:connect("127.0.0.1", n))
      spin(function() return sf.built[1] and sf.built[1].transport end)
      local p = sf.built[1]
      wait(p.made)
      -- reset: SO_LINGER 0 makes close() send RST
      assert(s:setoption("linger", { on = true, timeout = 0 }))
      s:close()
      local chunk = string.rep("w", 64 * 1024)
      for _ = 1, 64 do
        p.transport:write(chunk) -- fails with EPIPE/ECONNRESET at some point
        assert.equal(0, p.lostCount)
      end
      assert.is_true(p.connected)
      assert.is_false(p.transport.connected)
      wait(p.lost)
      assert.equal(1, p.lostCount)
      assert.is_truthy(p.reason:check(errors.ConnectionLost))
      assert.is_false(p.connected)
    end)

    it("never delivers connectionLost inside write when a producer's pauseProducing raises", function()
      local logged, restore = capture_errors()
      finally(restore)
      local sf = server_factory()
      local _, n = listen(sf)
      local c = wait(connect("127.0.0.1", n, Rec()))
      wait(sf.built[1].made)
      sf.built[1].transport:pauseProducing() -- the server reads nothing
      local t = c.transport
      local raised = false
      t:registerProducer({
        pauseProducing = function() raised = true error("pause exploded") end,
        resumeProducing = function() end,
        stopProducing = function() end,
      }, true)
      local chunk = string.rep("q", 64 * 1024)
      local i = 0
      while not raised and i < 4096 do -- until the buffer passes bufferSize
        t:write(chunk)
        i = i + 1
      end
      assert.is_true(raised)
      t:write(chunk) -- discarded: the connection is closing
      assert.equal(0, c.lostCount)
      assert.is_true(c.connected)
      wait(c.lost)
      assert.equal(1, c.lostCount)
      assert.matches("pause exploded", c.reason:getErrorMessage())
      assert.equal(1, #logged)
      sf.built[1].transport:resumeProducing()
      wait(sf.built[1].lost)
    end)
  end)

  it("keeps a streaming producer paused, and the buffer bounded, while the peer never reads", function()
    local CHUNK = string.rep("m", 16 * 1024)
    local Pusher = Rec:extend("Pusher")
    function Pusher:connectionMade()
      Rec.connectionMade(self)
      self.pauses, self.resumes, self.sent = 0, 0, 0
      self.paused = defer.Deferred()
      self.transport:registerProducer(self, true)
      self:push()
    end
    function Pusher:push()
      -- write until told to pause, a chunk per loop turn
      if self.isPaused or not self.transport.connected then return end
      self.transport:write(CHUNK)
      self.sent = self.sent + #CHUNK
      self.maxBuffered = math.max(self.maxBuffered or 0, self.transport:getWriteBufferSize())
      self.timer = reactor.callLater(0, self.push, self)
    end
    function Pusher:pauseProducing()
      self.isPaused, self.pauses = true, self.pauses + 1
      if self.timer and self.timer:active() then self.timer:cancel() end
      if not self.paused.called then self.paused:callback(self) end
    end
    function Pusher:resumeProducing()
      self.isPaused, self.resumes = false, self.resumes + 1
      self:push()
    end
    function Pusher:stopProducing() self.isPaused = true end
    local sf = server_factory(Pusher)
    local _, n = listen(sf)
    local Sloth = Rec:extend("Sloth")
    function Sloth:connectionMade() self.transport:pauseProducing() Rec.connectionMade(self) end
    local c = wait(connect("127.0.0.1", n, Sloth()))
    local p = sf.built[1]
    wait(p.paused)
    local sent = p.sent
    for _ = 1, 30 do reactor.iterate(0.001) end
    -- still paused: nothing more was queued, nothing resumed the producer
    assert.equal(sent, p.sent)
    assert.equal(0, p.resumes)
    assert.is_true(p.maxBuffered <= p.transport.bufferSize + #CHUNK,
      "buffered " .. p.maxBuffered)
    -- the peer reads again: the producer resumes and data flows
    c.transport:resumeProducing()
    spin(function() return p.resumes >= 1 and #c:received() > sent end)
    p.transport:unregisterProducer()
    p.isPaused = true
    if p.timer and p.timer:active() then p.timer:cancel() end
    c.transport:loseConnection()
    wait(c.lost)
    wait(p.lost)
  end)

  it("delivers connectionLost exactly once to a thousand connections reset mid-write (SO_LINGER 0)", function()
    local Spew = Protocol:extend("Spew")
    local made, lost, twice, reasons = 0, 0, 0, {}
    local big = string.rep("s", 128 * 1024)
    function Spew:connectionMade()
      made = made + 1
      self.transport:write(big) -- more than the socket takes at once: the rest is queued
      self.transport:write(big)
    end
    function Spew:connectionLost(reason)
      if self.gone then twice = twice + 1 end
      self.gone = true
      lost = lost + 1
      local name = reason.value.class and reason.value.class.__name or tostring(reason.value)
      reasons[name] = (reasons[name] or 0) + 1
    end
    local sf = Factory.forProtocol(Spew)
    sf.noisy = false
    local _, n = listen(sf)
    local total, batch = 1000, 25
    for b = 1, total // batch do
      local socks = {}
      for i = 1, batch do
        socks[i] = assert(socket.tcp())
        assert(socks[i]:connect("127.0.0.1", n))
      end
      spin(function() return made == b * batch end)
      for i, s in ipairs(socks) do
        if i % 2 == 0 then assert(s:setoption("linger", { on = true, timeout = 0 })) end
        s:close() -- unread data or linger 0: the peer gets a reset
      end
      reactor.iterate(0)
    end
    spin(function() return lost == total end, 20)
    assert.equal(0, twice)
    assert.equal(total, reasons.ConnectionLost)
  end)

  it("stopProducing closes the connection cleanly and registerProducer on a closed one stops the producer", function()
    local sf = server_factory()
    local _, n = listen(sf)
    local c = wait(connect("127.0.0.1", n, Rec()))
    c.transport:write("bye")
    c.transport:stopProducing()
    assert.is_true(c.transport.disconnecting)
    wait(c.lost)
    assert.is_truthy(c.reason:check(errors.ConnectionDone))
    wait(sf.built[1].lost)
    assert.equal("bye", sf.built[1]:received())
    local stopped = 0
    c.transport:registerProducer({ stopProducing = function() stopped = stopped + 1 end,
      pauseProducing = function() end, resumeProducing = function() end }, true)
    assert.equal(1, stopped)
  end)

  describe("connecting", function()
    it("fails with TimeoutError when the server's accept queue is full", function()
      local l = assert(socket.tcp())
      assert(l:bind("127.0.0.1", 0))
      assert(l:listen(0)) -- room for one unaccepted connection; later SYNs are dropped
      finally(function() l:close() end)
      local _, ps = l:getsockname()
      local n = tonumber(ps)
      local first = wait(connect("127.0.0.1", n, Rec()))
      local f = ClientFactory.forProtocol(Rec)
      f.noisy = false
      local failed = defer.Deferred()
      local calls = 0
      function f:clientConnectionFailed(connector, reason)
        calls = calls + 1
        failed:callback({ connector, reason })
      end
      local started = core.monotonic()
      local connector = reactor.connectTCP("127.0.0.1", n, f, 0.2)
      local r = wait(failed)
      assert.is_truthy(r[2]:check(errors.TimeoutError))
      assert.is_nil(r[2]:check(errors.TCPTimedOutError))
      assert.equal(connector, r[1])
      assert.equal("disconnected", connector.state)
      assert.is_true(core.monotonic() - started >= 0.19)
      for _ = 1, 3 do reactor.iterate(0) end
      assert.equal(1, calls)
      first.transport:abortConnection()
      wait(first.lost)
    end)

    it("tries every resolved address in turn and connects to the first that answers", function()
      local sf = server_factory()
      local _, n = listen(sf, "127.0.0.1")
      resolver.installResolver({ getHostByName = function()
        return defer.succeed({ { family = "INET", host = "127.0.0.2" }, -- refused: nobody listens there
                               { family = "INET6", host = "::1" },      -- refused too
                               { family = "INET", host = "127.0.0.1" } })
      end })
      local c = wait(connect("several.example", n, Rec()))
      assert.equal("127.0.0.1", c.transport:getPeer().host)
      assert.equal(n, c.transport:getPeer().port)
      assert.equal("connected", c.factory.connector.state)
      c.transport:loseConnection()
      wait(c.lost)
      wait(sf.built[1].lost)
    end)

    it("resolves a name with the real resolver and connects to it", function()
      local sf = server_factory()
      local _, n = listen(sf, "127.0.0.1")
      local c = wait(connect("localhost", n, Rec()))
      assert.equal("127.0.0.1", c.transport:getPeer().host)
      assert.equal("localhost", c.factory.connector:getDestination().host)
      c.transport:loseConnection()
      wait(c.lost)
      wait(sf.built[1].lost)
    end)

    it("reports the last address's error once when every address fails", function()
      local tmp = reactor.listenTCP(0, server_factory(), 50, "127.0.0.1")
      local n = tmp:getHost().port
      wait(tmp:stopListening())
      resolver.installResolver({ getHostByName = function()
        return defer.succeed({ { family = "INET6", host = "::1" }, { family = "INET", host = "127.0.0.1" } })
      end })
      local f = ClientFactory.forProtocol(Rec)
      f.noisy = false
      local reasons = {}
      function f:clientConnectionFailed(_, reason) reasons[#reasons + 1] = reason end
      reactor.connectTCP("nobody.example", n, f)
      spin(function() return #reasons > 0 end)
      for _ = 1, 3 do reactor.iterate(0) end
      assert.equal(1, #reasons)
      assert.is_truthy(reasons[1]:check(errors.ConnectionRefusedError))
    end)

    it("listens and connects over IPv6 on ::1", function()
      local sf = server_factory()
      local port, n = listen(sf, "::1")
      assert.matches("^IPv6Address%(type='TCP', host='::1', port=" .. n, tostring(port:getHost()))
      local c = wait(connect("::1", n, Rec()))
      assert.equal("::1", c.transport:getPeer().host)
      assert.equal("::1", sf.built[1].transport:getPeer().host)
      c.transport:write("over six")
      spin(function() return sf.built[1]:received() == "over six" end)
      c.transport:loseConnection()
      wait(c.lost)
      wait(sf.built[1].lost)
    end)

    it("takes IPv4 and IPv6 clients on \"::\", and IPv4 ones only on the default interface", function()
      local sf = server_factory()
      local _, n = listen(sf, "::")
      local c4 = wait(connect("127.0.0.1", n, Rec()))
      spin(function() return #sf.built == 1 end)
      local c6 = wait(connect("::1", n, Rec()))
      spin(function() return #sf.built == 2 end)
      -- as Twisted on "::": an IPv4 peer reads as v4-mapped IPv6
      assert.equal("::ffff:127.0.0.1", sf.built[1].transport:getPeer().host)
      assert.equal("::1", sf.built[2].transport:getPeer().host)
      c4.transport:loseConnection()
      c6.transport:loseConnection()
      wait(c4.lost)
      wait(c6.lost)
      spin(function() return sf.built[1].lostCount == 1 and sf.built[2].lostCount == 1 end)

      -- "" is Twisted's default: 0.0.0.0, IPv4 alone
      local sf4 = server_factory()
      local port4, m = listen(sf4, "")
      assert.equal("0.0.0.0", port4:getHost().host)
      local c = wait(connect("127.0.0.1", m, Rec()))
      spin(function() return #sf4.built == 1 end)
      assert.equal("IPv4Address", getmetatable(sf4.built[1].transport:getPeer()).__name)
      assert.equal("127.0.0.1", sf4.built[1].transport:getPeer().host)
      local ok, e = pcall(wait, connect("::1", m, Rec()))
      assert.is_false(ok)
      assert.is_true(errors.ConnectionRefusedError:isinstance(e))
      c.transport:loseConnection()
      wait(c.lost)
      spin(function() return sf4.built[1].lostCount == 1 end)
    end)
  end)

  it("shares a port between listeners with reusePort and refuses it without", function()
    local f1, f2 = server_factory(), server_factory()
    local _, n = listen(f1, "127.0.0.1", { reusePort = true })
    local p2 = reactor.listenTCP(n, f2, 50, "127.0.0.1", { reusePort = true })
    ports[#ports + 1] = p2
    assert.equal(n, p2:getHost().port)
    local ok, e = pcall(reactor.listenTCP, n, server_factory(), 50, "127.0.0.1", { reusePort = false })
    assert.is_false(ok)
    assert.is_true(errors.CannotListenError:isinstance(e))
    -- connections reach one listener or the other
    local cs = {}
    for i = 1, 8 do cs[i] = wait(connect("127.0.0.1", n, Rec())) end
    spin(function() return #f1.built + #f2.built == 8 end)
    for _, c in ipairs(cs) do c.transport:loseConnection() wait(c.lost) end
  end)

  describe("adopted sockets", function()
    it("adoptStreamPort serves connections on a listening socket opened elsewhere", function()
      local l = assert(socket.tcp())
      assert(l:bind("127.0.0.1", 0))
      assert(l:listen(8))
      local _, ps = l:getsockname()
      local n = tonumber(ps)
      local fd = l:getfd()
      l:setfd(-1) -- braid owns the descriptor now
      local Echo = Rec:extend("AdoptedEcho")
      function Echo:onData(d) self.transport:write(d) end
      local sf = server_factory(Echo)
      local port = reactor.adoptStreamPort(fd, sf)
      ports[#ports + 1] = port
      assert.equal(n, port:getHost().port)
      local c = wait(connect("127.0.0.1", n, Rec()))
      c.transport:write("adopted")
      spin(function() return c:received() == "adopted" end)
      c.transport:loseConnection()
      wait(c.lost)
      wait(sf.built[1].lost)
    end)

    it("adopting a closed descriptor raises with its errno, EBADF", function()
      local probe = assert(socket.tcp())
      assert(probe:bind("127.0.0.1", 0))
      local fd = math.tointeger(probe:getfd())
      probe:close()
      local f = server_factory(Rec)
      local ok, e = pcall(reactor.adoptStreamConnection, fd, f)
      assert.is_false(ok)
      assert.equal(errors.ConnectError, e.class)
      assert.equal(9, e.osError)
      assert.equal("Bad file descriptor", e.message)
      assert.equal("ConnectError: An error occurred while connecting: 9: Bad file descriptor.", tostring(e))
      ok, e = pcall(reactor.adoptStreamPort, fd, f)
      assert.is_false(ok)
      assert.equal(errors.CannotListenError, e.class)
      assert.equal("[Errno 9] Bad file descriptor", e.socketError)
      assert.equal(0, #f.built)
    end)

    it("adoptStreamConnection runs a protocol on a connected socket opened elsewhere", function()
      local Echo = Rec:extend("Echo")
      function Echo:onData(d) self.transport:write(d) end
      local sf = server_factory(Echo)
      local _, n = listen(sf)
      local s = assert(socket.tcp())
      assert(s:connect("127.0.0.1", n))
      local fd = s:getfd()
      s:setfd(-1)
      local p = Rec()
      local f = Factory.forProtocol(Rec)
      f.noisy = false
      function f.buildProtocol(fac, addr) p.factory, p.addr = fac, addr return p end
      local t = reactor.adoptStreamConnection(fd, f)
      wait(p.made)
      assert.equal(t, p.transport)
      assert.equal(n, p.addr.port)
      assert.equal(n, t:getPeer().port)
      t:write("adopted connection")
      spin(function() return p:received() == "adopted connection" end)
      t:loseConnection()
      wait(p.lost)
      assert.is_truthy(p.reason:check(errors.ConnectionDone))
      wait(sf.built[1].lost)
    end)
  end)

  it("ReconnectingClientFactory backs off as Twisted does against a real port until it connects", function()
    local tmp = reactor.listenTCP(0, server_factory(), 50, "127.0.0.1")
    local n = tmp:getHost().port
    wait(tmp:stopListening())
    local clock = testing.Clock()
    local RCF = protocol.ReconnectingClientFactory
    local Client = Rec:extend("RClient")
    function Client:connectionMade()
      self.factory:resetDelay()
      Rec.connectionMade(self)
    end
    local f = RCF()
    f.protocol, f.clock, f.jitter, f.noisy = Client, clock, 0, false
    local failures, losses, built = 0, 0, {}
    function f:clientConnectionFailed(c, r) failures = failures + 1 RCF.clientConnectionFailed(self, c, r) end
    function f:clientConnectionLost(c, r) losses = losses + 1 RCF.clientConnectionLost(self, c, r) end
    function f:buildProtocol(addr)
      local p = RCF.buildProtocol(self, addr)
      built[#built + 1] = p
      return p
    end
    local connector = reactor.connectTCP("127.0.0.1", n, f)
    spin(function() return failures == 1 end)
    assert.near(math.exp(1), f.delay, 1e-9)
    assert.equal(1, f.retries)
    assert.equal(1, #clock:getDelayedCalls())
    clock:advance(f.delay - 0.01)
    assert.equal("disconnected", connector.state)
    clock:advance(0.01) -- the retry runs: connector:connect()
    assert.equal("connecting", connector.state)
    spin(function() return failures == 2 end)
    assert.near(math.exp(2), f.delay, 1e-9)
    assert.equal(2, f.retries)
    -- the server appears; the next retry connects and resets the delay
    local sf = server_factory()
    local again = reactor.listenTCP(n, sf, 50, "127.0.0.1")
    ports[#ports + 1] = again
    clock:advance(f.delay)
    spin(function() return built[1] ~= nil end)
    wait(built[1].made)
    assert.equal(1.0, f.delay)
    assert.equal(0, f.retries)
    assert.equal(0, #clock:getDelayedCalls())
    -- a lost connection is retried after initialDelay * factor
    spin(function() return sf.built[1] ~= nil end)
    sf.built[1].transport:loseConnection()
    wait(built[1].lost)
    assert.equal(1, losses)
    assert.near(math.exp(1), f.delay, 1e-9)
    assert.equal(1, #clock:getDelayedCalls())
    f:stopTrying()
    assert.equal(0, #clock:getDelayedCalls())
    assert.is_false(f.continueTrying)
    assert.equal("disconnected", connector.state)
    wait(sf.built[1].lost)
  end)
end)
