-- spec/policies_spec.lua: lua/braid/policies.lua, after Twisted's
-- src/twisted/test/test_policies.py, driven by a task.Clock.
local policies = require "braid.policies"
local protocol = require "braid.protocol"
local testing = require "braid.testing.transport"
local address = require "braid.address"
local Clock = require("braid.task").Clock
local errors = require "braid.error"
local tmp = require "helpers.tmp"

local Recorder = protocol.Protocol:extend("Recorder")
function Recorder:connectionMade() self.data, self.lost = {}, nil end
function Recorder:dataReceived(d) self.data[#self.data + 1] = d end
function Recorder:connectionLost(reason) self.lost = reason end

local function connect(factory, host)
  local addr = address.IPv4Address("TCP", host or "1.2.3.4", 5678)
  local p = factory:buildProtocol(addr)
  if p == nil then return nil end
  local t = testing.StringTransport(nil, addr)
  p:makeConnection(t)
  return p, t
end

local function lose(p)
  p:connectionLost(require("braid.failure").Failure(errors.ConnectionDone()))
end

describe("TimeoutMixin", function()
  local function make(period)
    local P = policies.TimeoutMixin:mixInto(protocol.Protocol:extend("TimeoutTester"))
    function P:connectionMade() self:setTimeout(period) end
    function P:dataReceived() self:resetTimeout() end
    function P:timeoutConnection()
      self.timedOut = true
      policies.TimeoutMixin.timeoutConnection(self)
    end
    local p = P()
    p.clock = Clock()
    local t = testing.StringTransport()
    p:makeConnection(t)
    return p, t
  end

  it("times the connection out after the period and closes it", function()
    local p, t = make(3)
    p.clock:advance(2.9)
    assert.is_nil(p.timedOut)
    p.clock:advance(0.1)
    assert.is_true(p.timedOut)
    assert.is_true(t.disconnecting)
  end)

  it("resetTimeout restarts the period", function()
    local p = make(3)
    p.clock:advance(2)
    p:dataReceived("x")
    p.clock:advance(2)
    assert.is_nil(p.timedOut)
    p.clock:advance(1)
    assert.is_true(p.timedOut)
  end)

  it("setTimeout(nil) cancels and returns the previous timeout", function()
    local p = make(3)
    assert.are.equal(3, p:setTimeout(nil))
    p.clock:advance(10)
    assert.is_nil(p.timedOut)
    assert.are.equal(0, #p.clock:getDelayedCalls())
  end)

  it("setTimeout(false) cancels as nil does and returns the previous timeout", function()
    local p = make(3)
    assert.are.equal(3, p:setTimeout(false))
    assert.are.equal(0, #p.clock:getDelayedCalls())
    p.clock:advance(10)
    assert.is_nil(p.timedOut)
    assert.is_nil(p:setTimeout(false))  -- none now, and still none scheduled
    assert.are.equal(0, #p.clock:getDelayedCalls())
    assert.is_nil(p:setTimeout(2))
    p.clock:advance(2)
    assert.is_true(p.timedOut)
  end)

  it("setTimeout with a new period reschedules the pending call", function()
    local p = make(3)
    p:setTimeout(10)
    p.clock:advance(9)
    assert.is_nil(p.timedOut)
    p.clock:advance(1)
    assert.is_true(p.timedOut)
  end)

  it("keeps methods the class defines itself", function()
    local P = protocol.Protocol:extend("Own")
    function P:timeoutConnection() return "mine" end
    policies.TimeoutMixin:mixInto(P)
    assert.are.equal("mine", P():timeoutConnection())
    assert.is_function(P.setTimeout)
  end)
end)

describe("WrappingFactory", function()
  it("wraps protocols, passes data through and tracks open connections", function()
    local f = policies.WrappingFactory(protocol.Factory.forProtocol(Recorder))
    local p, t = connect(f)
    assert.is_true(policies.ProtocolWrapper:isinstance(p))
    assert.is_true(f.protocols[p])
    p:dataReceived("hi")
    assert.are.same({ "hi" }, p.wrappedProtocol.data)
    p.wrappedProtocol.transport:write("out")
    assert.are.equal("out", t:value())
    assert.are.equal(t:getPeer(), p.wrappedProtocol.transport:getPeer())
    local inner = p.wrappedProtocol
    lose(p)
    assert.is_nil(f.protocols[p])
    assert.is_true(inner.lost:check(errors.ConnectionDone) ~= nil)
    assert.is_nil(p.wrappedProtocol)  -- let go, as Twisted's (test_breakReferenceCycle)
  end)

  -- spec/policies_diff_spec.lua found these against Twisted 22.4
  it("names the wrapped factory in its log prefix, and aborts without disconnecting", function()
    local f = policies.WrappingFactory(protocol.Factory.forProtocol(Recorder))
    assert.are.equal("Factory (WrappingFactory)", f:logPrefix())
    local p, t = connect(f)
    p:abortConnection()
    assert.is_false(p.disconnecting)
    assert.is_true(t.disconnecting)
  end)

  it("wraps a plain table its factory builds, as braid.tcp takes one", function()
    local plainf = { buildProtocol = function()
      return { dataReceived = function(self, d) self.transport:write("echo:" .. d) end }
    end }
    for _, make in ipairs({ policies.WrappingFactory, policies.ThrottlingFactory,
                            policies.TimeoutFactory }) do
      local f = make(plainf)
      f.clock = Clock()
      local p, t = connect(f)
      p:dataReceived("hi")
      assert.are.equal("echo:hi", t:value())
      lose(p)  -- Protocol's connectionLost for what the table lacks
      assert.are.equal(0, #f.clock:getDelayedCalls())
    end
  end)

  it("starts and stops the wrapped factory and passes it the client events, as Twisted's", function()
    local calls = {}
    local inner = protocol.ClientFactory.forProtocol(Recorder)
    function inner:startFactory() calls[#calls + 1] = "start" end
    function inner:stopFactory() calls[#calls + 1] = "stop" end
    function inner:startedConnecting(c) calls[#calls + 1] = "connecting " .. c end
    function inner:clientConnectionFailed(c, r) calls[#calls + 1] = "failed " .. c .. " " .. r end
    function inner:clientConnectionLost(c, r) calls[#calls + 1] = "lost " .. c .. " " .. r end
    local f = policies.WrappingFactory(inner)
    f:doStart()
    assert.are.equal(1, inner.numPorts)
    assert.are.equal(1, f.numPorts)
    f:startedConnecting("c1")
    f:clientConnectionFailed("c1", "refused")
    f:clientConnectionLost("c2", "done")
    f:doStop()
    assert.are.equal(0, inner.numPorts)
    assert.are.equal(0, f.numPorts)
    assert.are.same({ "start", "connecting c1", "failed c1 refused", "lost c2 done", "stop" }, calls)
  end)

  -- as Twisted's ProtocolWrapper.makeConnection: registerProtocol, then
  -- the wrapped protocol's makeConnection
  it("registers the wrapper before the wrapped protocol's connectionMade runs", function()
    local Seer = protocol.Protocol:extend("Seer")
    function Seer:connectionMade()
      self.registered = self.transport.factory.protocols[self.transport]
    end
    local p = connect(policies.WrappingFactory(protocol.Factory.forProtocol(Seer)))
    assert.is_true(p.wrappedProtocol.registered)
  end)

  it("reports the real transport's write buffer size, 0 for one without it", function()
    local f = policies.WrappingFactory(protocol.Factory.forProtocol(Recorder))
    local p, t = connect(f)
    function t:getWriteBufferSize() return 4242 end
    assert.are.equal(4242, p.wrappedProtocol.transport:getWriteBufferSize())
    local q = f:buildProtocol(nil)
    q:makeConnection({ write = function() end })
    assert.are.equal(0, q:getWriteBufferSize())
  end)

  it("visits its protocols in the order they registered", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), nil, 1)
    f.clock = Clock()
    local order = {}
    for i = 1, 8 do
      local p = connect(f)
      p.throttleReads = function() order[#order + 1] = i end
    end
    f:throttleReads()
    assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8 }, order)
  end)
end)

describe("LimitTotalConnectionsFactory", function()
  it("refuses connections past connectionLimit and accepts again after one closes", function()
    local f = policies.LimitTotalConnectionsFactory()
    f.protocol = Recorder
    f.connectionLimit = 2
    local a = connect(f)
    connect(f)
    assert.is_nil(connect(f))
    assert.are.equal(2, f.connectionCount)
    lose(a)
    assert.are.equal(1, f.connectionCount)
    assert.is_not_nil(connect(f))
  end)

  it("uses overflowProtocol past the limit when one is set", function()
    local Overflow = Recorder:extend("Overflow")
    local f = policies.LimitTotalConnectionsFactory()
    f.protocol, f.overflowProtocol, f.connectionLimit = Recorder, Overflow, 1
    connect(f)
    local p = connect(f)
    assert.is_true(Overflow:isinstance(p.wrappedProtocol))
    assert.are.equal(2, f.connectionCount)
  end)
end)

describe("LimitConnectionsByPeer", function()
  it("limits connections per peer host, counting each host apart", function()
    local f = policies.LimitConnectionsByPeer(protocol.Factory.forProtocol(Recorder))
    f.maxConnectionsPerPeer = 2
    f:startFactory()
    local a = connect(f, "1.1.1.1")
    connect(f, "1.1.1.1")
    assert.is_nil(connect(f, "1.1.1.1"))
    assert.is_not_nil(connect(f, "2.2.2.2"))
    assert.is_true(f.protocols[a])
    lose(a)
    assert.is_nil(f.protocols[a])  -- unregistered as WrappingFactory's, besides uncounted
    assert.are.same({ ["1.1.1.1"] = 1, ["2.2.2.2"] = 1 }, f.peerConnections)
    assert.is_not_nil(connect(f, "1.1.1.1"))
  end)

  it("counts UNIX peers without a name together (Twisted's addr.host fails there)", function()
    local f = policies.LimitConnectionsByPeer(protocol.Factory.forProtocol(Recorder))
    f.maxConnectionsPerPeer = 1
    f:startFactory()
    local peer = address.UNIXAddress(nil)
    local p = f:buildProtocol(peer)
    assert.is_not_nil(p)
    p:makeConnection(testing.StringTransport(nil, peer))
    assert.is_nil(f:buildProtocol(peer))
    lose(p)
    assert.is_not_nil(f:buildProtocol(peer))
  end)

  it("counts UNIX peers with a socket name by that name, each apart", function()
    local f = policies.LimitConnectionsByPeer(protocol.Factory.forProtocol(Recorder))
    f.maxConnectionsPerPeer = 1
    f:startFactory()
    local a, b = address.UNIXAddress("/tmp/peer-a"), address.UNIXAddress("/tmp/peer-b")
    assert.is_not_nil(f:buildProtocol(a))
    assert.is_not_nil(f:buildProtocol(b))
    assert.is_nil(f:buildProtocol(a))
    assert.are.same({ ["/tmp/peer-a"] = 1, ["/tmp/peer-b"] = 1 }, f.peerConnections)
  end)
end)

describe("ThrottlingFactory", function()
  it("refuses connections beyond maxConnectionCount", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), 1)
    local a = connect(f)
    local log = require "braid.log"
    local texts = {}
    local function observer(ev) texts[#texts + 1] = ev.text end
    log.addObserver(observer)
    finally(function() log.removeObserver(observer) end)
    local refused = connect(f)
    assert.is_nil(refused)
    assert.are.same({ "Max connection count reached!" }, texts)  -- Twisted's line
    lose(a)
    assert.is_not_nil(connect(f))
  end)

  it("pauses reading for the excess fraction of a second over readLimit", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), nil, 10)
    f.clock = Clock()
    local p, t = connect(f)
    p:dataReceived(("x"):rep(15))
    assert.are.equal("producing", t.producerState)
    f.clock:advance(1)
    assert.are.equal("paused", t.producerState)
    f.clock:advance(0.5)
    assert.are.equal("producing", t.producerState)
  end)

  -- a ThrottlingFactory with writeLimit 10 on a Clock, a connection of it,
  -- and a streaming producer (its state in `state`) registered through it
  local function write_throttled()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), nil, nil, 10)
    f.clock = Clock()
    local p = connect(f)
    local producer = { state = "producing" }
    function producer:pauseProducing() self.state = "paused" end
    function producer:resumeProducing() self.state = "producing" end
    p:registerProducer(producer, true)
    return f, p, producer
  end

  it("pauses the registered producer over writeLimit and resumes it", function()
    local f, p, producer = write_throttled()
    p:write(("x"):rep(20))
    f.clock:advance(1)
    assert.are.equal("paused", producer.state)
    f.clock:advance(1)
    assert.are.equal("producing", producer.state)
  end)

  it("leaves a producer unregistered through it alone over writeLimit", function()
    local f, p, producer = write_throttled()
    p:unregisterProducer()
    p:write(("x"):rep(20))
    f.clock:advance(1)
    assert.are.equal("producing", producer.state)
    assert.is_nil(p.producer)
  end)

  it("starts no bandwidth checks for connections it refuses", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), 0, 10, 10)
    f.clock = Clock()
    for _ = 1, 5 do assert.is_nil(connect(f)) end
    assert.are.equal(0, #f.clock:getDelayedCalls())
    local refusing = protocol.Factory()
    function refusing.buildProtocol() return nil end
    local g = policies.ThrottlingFactory(refusing, nil, 10, 10)
    g.clock = Clock()
    for _ = 1, 5 do assert.is_nil(connect(g)) end
    assert.are.equal(0, #g.clock:getDelayedCalls())
  end)

  it("stops its bandwidth checks when the only build raises", function()
    local raising = protocol.Factory()
    function raising.buildProtocol() error("no protocol today") end
    local f = policies.ThrottlingFactory(raising, nil, 10, 10)
    f.clock = Clock()
    for _ = 1, 3 do
      local ok, e = pcall(f.buildProtocol, f, nil)
      assert.is_false(ok)
      assert.matches("no protocol today", tostring(e))
    end
    assert.are.equal(0, f.connectionCount)
    assert.are.equal(0, #f.clock:getDelayedCalls())
  end)

  it("cancels its bandwidth checks when the last connection closes", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), nil, 10, 10)
    f.clock = Clock()
    local p = connect(f)
    assert.are.equal(2, #f.clock:getDelayedCalls())
    lose(p)
    assert.are.equal(0, #f.clock:getDelayedCalls())
  end)
end)

describe("TimeoutFactory", function()
  it("closes a connection idle for timeoutPeriod; traffic resets the timer", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 3)
    f.clock = Clock()
    local p, t = connect(f)
    f.clock:advance(2)
    p:dataReceived("x")
    f.clock:advance(2)
    p.wrappedProtocol.transport:write("y")
    f.clock:advance(2.9)
    assert.is_false(t.disconnecting)
    f.clock:advance(0.1)
    assert.is_true(t.disconnecting)
  end)

  it("times out after 30 minutes by default, as Twisted's", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder))
    f.clock = Clock()
    assert.are.equal(1800, f.timeoutPeriod)
    local _, t = connect(f)
    f.clock:advance(1799.9)
    assert.is_false(t.disconnecting)
    f.clock:advance(0.1)
    assert.is_true(t.disconnecting)
  end)

  -- docs/policies.md: Twisted's resetTimeout raises AlreadyCalled here
  it("takes data and writes after it timed out, before the connection is lost", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 2)
    f.clock = Clock()
    local p, t = connect(f)
    f.clock:advance(2)
    assert.is_true(t.disconnecting)
    assert.is_nil(p.timeoutCall)
    p:dataReceived("late")
    p.wrappedProtocol.transport:write("later")
    p.wrappedProtocol.transport:writeSequence({ "a", "b" })
    assert.are.same({ "late" }, p.wrappedProtocol.data)
    assert.are.equal("laterab", t:value())
    assert.are.equal(0, #f.clock:getDelayedCalls())
  end)

  it("forgets its period when its timeout is cancelled", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 2)
    f.clock = Clock()
    local p = connect(f)
    p:cancelTimeout()
    assert.is_nil(p.timeoutPeriod)
    assert.are.equal(0, #f.clock:getDelayedCalls())
  end)

  it("takes false for no timeout, as nil", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 2)
    f.clock = Clock()
    local p = connect(f)
    p:setTimeout(false)
    assert.is_nil(p.timeoutPeriod)
    assert.are.equal(0, #f.clock:getDelayedCalls())
    p:setTimeout(1)
    assert.are.equal(1, #f.clock:getDelayedCalls())
  end)

  it("cancels its timer when the connection is lost", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 3)
    f.clock = Clock()
    local p = connect(f)
    lose(p)
    assert.are.equal(0, #f.clock:getDelayedCalls())
  end)
end)

describe("TrafficLoggingFactory", function()
  -- a factory over inner whose log files record their closing in `closed`
  local function closing_logs(inner)
    local f = policies.TrafficLoggingFactory(inner, "t")
    local closed = {}
    function f:open(name)
      return { write = function() end, flush = function() end,
               close = function() closed[#closed + 1] = name end }
    end
    return f, closed
  end

  it("logs traffic of connection n to prefix-n, as Twisted does", function()
    local files = {}
    local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), "test")
    function f:open(name)
      local lines = {}
      files[name] = lines
      return { write = function(_, s) lines[#lines + 1] = s end, flush = function() end }
    end
    local p = connect(f)
    p:dataReceived("here are some bytes")
    p.wrappedProtocol.transport:write("here are some bytes")
    p.wrappedProtocol.transport:writeSequence({ "a", "b" })
    p.wrappedProtocol.transport:loseConnection()
    local log = table.concat(files["test-1"])
    assert.truthy(log:find("*\n", 1, true) == 1)
    assert.truthy(log:find('C 1: "here are some bytes"\n', 1, true))
    assert.truthy(log:find('S 1: "here are some bytes"\n', 1, true))
    assert.truthy(log:find('SV 1: ["a", "b"]\n', 1, true))
    assert.truthy(log:find("S 1: *\n", 1, true))
    p:dataReceived("two\nlines\n")
    -- one log line per event: a newline in the data is written as \n
    assert.truthy(table.concat(files["test-1"]):find('C 1: "two\\nlines\\n"\n', 1, true))
    connect(f)
    assert.is_table(files["test-2"])
    f:resetCounter()
    connect(f)
    assert.are.equal(1, f._counter)
  end)

  it("closes a connection's log file when the connection ends, and logs nothing after", function()
    local dir = tmp.file()
    local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), dir)
    local p = connect(f)
    local file = p.logfile
    assert.equal("file", io.type(file))
    lose(p)
    assert.equal("closed file", io.type(file))  -- not left to the collector
    p:write("late")  -- no error writing to the closed file
    local h = io.open(dir .. "-1")
    local text = h:read("a")
    h:close()
    os.remove(dir .. "-1")
    os.remove(dir)
    assert.matches("^%*\nC 1: ConnectionDone", text)
  end)

  it("flushes each line to the log file as it logs it, as Twisted's", function()
    local dir = tmp.file()
    local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), dir)
    local p = connect(f)
    p:dataReceived("hi")
    local h = io.open(dir .. "-1")
    local text = h:read("a")
    h:close()
    lose(p)
    os.remove(dir .. "-1")
    os.remove(dir)
    assert.equal('*\nC 1: "hi"\n', text)  -- there while the file is open
  end)

  it("closes the log file it opened when the wrapped factory refuses the connection", function()
    local inner = protocol.Factory.forProtocol(Recorder)
    function inner:buildProtocol() return nil end
    local f, closed = closing_logs(inner)
    assert.is_nil(f:buildProtocol(nil))
    assert.are.same({ "t-1" }, closed)
  end)

  it("closes the log file it opened when the wrapped factory raises", function()
    local inner = protocol.Factory()
    function inner.buildProtocol() error("no protocol today") end
    local f, closed = closing_logs(inner)
    -- the wrapped factory's own error comes through, unchanged
    assert.has_error(function() f:buildProtocol(nil) end, "no protocol today")
    assert.has_error(function() f:buildProtocol(nil) end, "no protocol today")
    assert.are.same({ "t-1", "t-2" }, closed)
  end)

  it("elides as Twisted's data[:lengthLimit - 12]; lengthLimit 0 logs everything", function()
    local data = "abcdefghijklmnopqrst"  -- 20 bytes
    local function logged(limit)
      local lines = {}
      local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), "t", limit)
      function f:open() return { write = function(_, s) lines[#lines + 1] = s end, flush = function() end } end
      local p = connect(f)
      p:dataReceived(data)
      return table.concat(lines):match('C 1: "(.-)"\n')
    end
    assert.are.equal(data, logged(0))
    assert.are.equal(data, logged(20))
    assert.are.equal("abcdefghijklm<... elided>", logged(5))       -- data[:-7]
    assert.are.equal("abcdefghijklmnopqrs<... elided>", logged(11)) -- data[:-1]
    assert.are.equal("<... elided>", logged(12))                    -- data[:0]
    assert.are.equal("abcdefg<... elided>", logged(19))
  end)

  it("elides data longer than lengthLimit", function()
    local lines = {}
    local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), "t", 20)
    function f:open() return { write = function(_, s) lines[#lines + 1] = s end, flush = function() end } end
    local p = connect(f)
    p:dataReceived(("x"):rep(50))
    assert.truthy(table.concat(lines):find('"' .. ("x"):rep(8) .. '<... elided>"', 1, true))
  end)
end)

describe("policies' counting wrappers given a bad write", function()
  local function bad_writes(w)
    local msgs = {}
    for _, c in ipairs({ { "write", 12 }, { "write", nil }, { "writeSequence", { "a", 1 } },
                         { "writeSequence", nil } }) do
      local ok, e = pcall(w[c[1]], w, c[2])
      assert.is_false(ok)
      assert.is_true(errors.TypeError:isinstance(e))
      msgs[#msgs + 1] = e.message
    end
    assert.are.same({
      "bad argument #1 to 'write' (string expected, got number)",
      "bad argument #1 to 'write' (string expected, got nil)",
      "bad argument #1 to 'writeSequence' (string expected at index 2, got number)",
      "bad argument #1 to 'writeSequence' (table expected, got nil)",
    }, msgs)
  end

  it("ThrottlingProtocol raises the transport's TypeError and counts nothing", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder), nil, nil, 10)
    f.clock = Clock()
    local p, t = connect(f)
    bad_writes(p.wrappedProtocol.transport)
    assert.are.equal(0, f.writtenThisSecond)
    assert.are.equal("", t:value())
  end)

  it("TrafficLoggingProtocol raises the transport's TypeError and logs no write", function()
    local lines = {}
    local f = policies.TrafficLoggingFactory(protocol.Factory.forProtocol(Recorder), "t")
    function f:open()
      return { write = function(_, s) lines[#lines + 1] = s end, flush = function() end }
    end
    local p = connect(f)
    bad_writes(p.wrappedProtocol.transport)
    assert.are.same({ "*\n" }, lines)
  end)

  it("TimeoutProtocol raises the transport's TypeError and keeps its timer", function()
    local f = policies.TimeoutFactory(protocol.Factory.forProtocol(Recorder), 1)
    f.clock = Clock()
    local p, t = connect(f)
    f.clock:advance(0.6)
    bad_writes(p.wrappedProtocol.transport)
    f.clock:advance(0.4)
    assert.is_true(t.disconnecting)
  end)
end)

describe("ProtocolWrapper as a transport", function()
  -- a transport that records the self of each call
  local function spy_transport()
    local t = testing.StringTransport()
    t.sessionno = 7
    t.calls = {}
    function t:setTcpNoDelay(b) self.calls[#self.calls + 1] = { self, "setTcpNoDelay", b } end
    function t:stopConsuming() self.calls[#self.calls + 1] = { self, "stopConsuming" } end
    return t
  end

  local function wrap(factory, inner)
    local p = factory:buildProtocol(address.IPv4Address("TCP", "1.2.3.4", 5678))
    local t = spy_transport()
    p:makeConnection(t)
    return p, t, inner or p.wrappedProtocol
  end

  it("calls what it does not define itself on the real transport", function()
    local p, t, inner = wrap(policies.WrappingFactory(protocol.Factory.forProtocol(Recorder)))
    assert.are.equal(p, inner.transport)
    inner.transport:setTcpNoDelay(true)
    inner.transport:stopConsuming()
    assert.are.equal(2, #t.calls)
    assert.are.equal(t, t.calls[1][1])
    assert.are.same({ "setTcpNoDelay", true }, { t.calls[1][2], t.calls[1][3] })
    assert.are.equal(t, t.calls[2][1])
    assert.are.equal("stopConsuming", t.calls[2][2])
    inner.transport:setTcpKeepAlive(true)
    assert.is_true(t.tcpKeepAlive)
    assert.is_true(inner.transport:getTcpKeepAlive())
    assert.is_false(inner.transport:getTcpNoDelay())
    inner.transport:loseWriteConnection()
    assert.is_true(t.writeDisconnected)
    assert.are.equal(7, inner.transport.sessionno)
    assert.are.equal("producing", inner.transport.producerState)
    assert.is_nil(inner.transport.noSuchField)
  end)

  it("keeps the methods of the policies that override them", function()
    local f = policies.ThrottlingFactory(protocol.Factory.forProtocol(Recorder))
    local p, t, inner = wrap(f)
    inner.transport:write("abc")
    inner.transport:writeSequence({ "de", "f" })
    assert.are.equal(6, f.writtenThisSecond)
    assert.are.equal("abcdef", t:value())
    inner.transport:setTcpNoDelay(false)
    assert.are.equal(t, t.calls[1][1])
    assert.is_nil(p.producer)
  end)

  it("has readConnectionLost and writeConnectionLost only when the wrapped protocol has them", function()
    local Half = Recorder:extend("Half")
    function Half:readConnectionLost() self.half = (self.half or "") .. "r" end
    function Half:writeConnectionLost() self.half = (self.half or "") .. "w" end
    local plain = wrap(policies.WrappingFactory(protocol.Factory.forProtocol(Recorder)))
    plain.transport.readConnectionLost = function() end -- never reached through the wrapper
    assert.is_nil(plain.readConnectionLost)
    assert.is_nil(plain.writeConnectionLost)
    for _, F in ipairs({ policies.WrappingFactory, policies.TimeoutFactory,
        policies.ThrottlingFactory, policies.LimitConnectionsByPeer }) do
      local f = F(protocol.Factory.forProtocol(Half))
      f.clock = Clock()
      local p, _, inner = wrap(f)
      assert.is_function(p.readConnectionLost)
      p:readConnectionLost()
      p:writeConnectionLost()
      assert.are.equal("rw", inner.half)
      assert.is_nil(inner.lost)
    end
  end)
end)

describe("WrappingFactory as a client factory", function()
  local CF = protocol.ClientFactory:extend("CF")
  function CF:init() self.events = {} end
  function CF:startedConnecting(c) self.events[#self.events + 1] = { "started", c } end
  function CF:clientConnectionFailed(c, r) self.events[#self.events + 1] = { "failed", c, r } end
  function CF:clientConnectionLost(c, r) self.events[#self.events + 1] = { "lost", c, r } end

  it("forwards startedConnecting, clientConnectionFailed and clientConnectionLost", function()
    local inner = CF()
    local f = policies.TimeoutFactory(inner)
    assert.is_true(protocol.ClientFactory:isinstance(f))
    local c, r1, r2 = {}, {}, {}
    f:startedConnecting(c)
    f:clientConnectionFailed(c, r1)
    f:clientConnectionLost(c, r2)
    assert.are.same({ { "started", c }, { "failed", c, r1 }, { "lost", c, r2 } }, inner.events)
  end)

  it("does nothing for a wrapped factory without them", function()
    local f = policies.WrappingFactory({ protocol = Recorder })
    assert.has_no.errors(function()
      f:startedConnecting({})
      f:clientConnectionFailed({}, {})
      f:clientConnectionLost({}, {})
    end)
  end)
end)

describe("policies over real TCP", function()
  local reactor = require "braid.reactor"
  local loop = require "helpers.loop"
  local spin = loop.spin

  local Rec = protocol.Protocol:extend("Rec")
  function Rec:init() self.data, self.events = {}, {} end
  function Rec:connectionMade() self.events[#self.events + 1] = "made" end
  function Rec:dataReceived(d) self.data[#self.data + 1] = d end
  function Rec:connectionLost(r) self.events[#self.events + 1] = "lost"; self.reason = r end

  -- answers once the peer has sent all, then closes
  local Half = Rec:extend("Half")
  function Half:readConnectionLost()
    table.insert(self.events, "readLost")
    self.transport:writeSequence({ "got ", table.concat(self.data) })
    self.transport:loseConnection()
  end

  local Client = Rec:extend("Client")
  function Client:connectionMade()
    Rec.connectionMade(self)
    self.transport:setTcpNoDelay(true)
    local real = policies.ProtocolWrapper:isinstance(self.transport) and self.transport.transport
      or self.transport
    self.noDelay = { self.transport:getTcpNoDelay(), real:getTcpNoDelay() }
    self.transport:write("req")
    self.transport:loseWriteConnection()
  end
  function Client:writeConnectionLost() self.events[#self.events + 1] = "writeLost" end

  local CF = protocol.ClientFactory:extend("CF")
  function CF:init() self.events, self.built, self.noisy = {}, {}, false end
  function CF:buildProtocol(addr)
    local p = protocol.ClientFactory.buildProtocol(self, addr)
    self.built[#self.built + 1] = p
    return p
  end
  function CF:startedConnecting() self.events[#self.events + 1] = "started" end
  function CF:clientConnectionFailed(_, r) self.events[#self.events + 1] = "failed"; self.reason = r end
  function CF:clientConnectionLost(_, r) self.events[#self.events + 1] = "lost"; self.reason = r end

  -- a recording CF serves as the server's factory too
  local function factory(P)
    local f = CF()
    f.protocol = P
    return f
  end

  local function stop(port) loop.wait(port:stopListening()) end

  it("tells the wrapped client factory a refused connection", function()
    local port = reactor.listenTCP(0, factory(Rec), 50, "127.0.0.1")
    local n = port:getHost().port
    stop(port)
    local inner = factory(Rec)
    reactor.connectTCP("127.0.0.1", n, policies.WrappingFactory(inner))
    spin(function() return inner.reason ~= nil end)
    assert.are.same({ "started", "failed" }, inner.events)
    assert.is_truthy(inner.reason:check(errors.ConnectionRefusedError))
  end)

  for _, name in ipairs({ "WrappingFactory", "TimeoutFactory", "ThrottlingFactory" }) do
    it(name .. " passes half-closes both ways, socket options and sessionno", function()
      local sf = factory(Half)
      local port = reactor.listenTCP(0, policies[name](sf), 50, "127.0.0.1")
      finally(function() stop(port) end)
      local cf = factory(Client)
      reactor.connectTCP("127.0.0.1", port:getHost().port, policies[name](cf))
      spin(function() return cf.reason ~= nil and sf.built[1] and #sf.built[1].events == 3 end)
      local c, s = cf.built[1], sf.built[1]
      assert.are.same({ "made", "writeLost", "lost" }, c.events)
      assert.are.equal("got req", table.concat(c.data))
      assert.are.same({ "made", "readLost", "lost" }, s.events)
      assert.are.equal("req", table.concat(s.data))
      assert.is_truthy(s.reason:check(errors.ConnectionDone))
      assert.are.same({ "started", "lost" }, cf.events)
      assert.is_truthy(cf.reason:check(errors.ConnectionDone))
      assert.are.same({ true, true }, c.noDelay)
      assert.is_number(s.transport.sessionno)
      assert.are.equal(s.transport.transport.sessionno, s.transport.sessionno)
    end)
  end

  it("LimitConnectionsByPeer uncounts a closed UNIX connection (its getPeer() is nil by then)", function()
    local path = tmp.path()
    local sf = factory(Rec)
    local lf = policies.LimitConnectionsByPeer(sf)
    lf.maxConnectionsPerPeer = 1
    local port = reactor.listenUNIX(path, lf)
    finally(function() stop(port) end)
    local outcomes = {}
    for i = 1, 3 do
      local cf = factory(Rec)
      reactor.connectUNIX(path, cf)
      spin(function() return cf.reason ~= nil or (sf.built[i] and sf.built[i].events[1] == "made") end)
      outcomes[i] = sf.built[i] ~= nil and "served" or "refused"
      if sf.built[i] then
        sf.built[i].transport:loseConnection()
        spin(function() return #sf.built[i].events == 2 and cf.reason ~= nil end)
      end
    end
    assert.are.same({ "served", "served", "served" }, outcomes)
    assert.are.same({}, lf.peerConnections)
  end)

  it("closes a wrapped protocol that is not half-closeable when the peer half-closes", function()
    local sf = factory(Rec)
    local port = reactor.listenTCP(0, policies.WrappingFactory(sf), 50, "127.0.0.1")
    finally(function() stop(port) end)
    local cf = factory(Client)
    reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
    spin(function() return cf.reason ~= nil and sf.built[1] and #sf.built[1].events == 2 end)
    assert.are.same({ "made", "lost" }, sf.built[1].events)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
    assert.are.equal("req", table.concat(sf.built[1].data))
  end)
end)
