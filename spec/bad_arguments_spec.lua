-- spec for the argument checks of every module (runtime/args.c and the Lua
-- checks): misuse raises a braid.error object at once, naming the function
-- and the argument, before anything changes; no call reachable from Lua
-- (metamethods read as fields, finalizers called by hand, private fields
-- overwritten) crashes the process or breaks a live object. The cases come
-- from a hostile-input run over every public function and method.
local reactor = require "braid.reactor"
local core = require "braid.core"
local defer = require "braid.defer"
local errors = require "braid.error"
local protocol = require "braid.protocol"
local basic = require "braid.basic"
local policies = require "braid.policies"
local resolver = require "braid.resolver"
local failure = require "braid.failure"
local endpoints = require "braid.endpoints"
local log = require "braid.log"
local console = require "braid.console"
local testing = require "braid.testing"
local threads = require "braid.threads"

local loop = require "helpers.loop"
local tmp = require "helpers.tmp"

-- pcall f and return its error, which must be an error object of class cls
local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(errors.isinstance(e, cls),
    ("expected %s, got %s"):format(cls.__name, tostring(e)))
  return tostring(e)
end

local function tmp_path(name)
  return tmp.path("-" .. name)
end

local Factory = protocol.Factory
local function factory() return Factory.forProtocol(protocol.Protocol) end

-- A connection over 127.0.0.1: its listening port and both transports.
local function connected_pair()
  local server_t
  local S = protocol.Protocol:extend("S")
  function S:connectionMade() server_t = self.transport end
  local port = reactor.listenTCP(0, Factory.forProtocol(S), 50, "127.0.0.1")
  local got = defer.Deferred()
  local C = protocol.Protocol:extend("C")
  function C:connectionMade() got:callback(self.transport) end
  reactor.connectTCP("127.0.0.1", port:getHost().port, protocol.ClientFactory.forProtocol(C))
  local client_t = loop.wait(got)
  loop.spin(function() return server_t ~= nil end)
  return port, server_t, client_t
end

describe("C functions' argument errors", function()
  it("are TypeError and ValueError objects with lauxlib's message", function()
    assert.equal("TypeError: bad argument #1 to 'callLater' (number expected, got string)",
      raises(errors.TypeError, function() reactor.callLater("x", print) end))
    assert.matches("^ValueError: bad argument #1 to 'callLater' %(delay must be a finite number >= 0",
      raises(errors.ValueError, function() reactor.callLater(-1, print) end))
    assert.equal("TypeError: bad argument #2 to 'callLater' (function expected, got number)",
      raises(errors.TypeError, function() reactor.callLater(1, 5) end))
    assert.matches("^ValueError: bad argument #1 to 'iterate'",
      raises(errors.ValueError, function() reactor.iterate(-1) end))
    local dc = reactor.callLater(10, print)
    assert.equal("TypeError: bad argument #1 to 'cancel' (braid.DelayedCall expected, got nil)",
      raises(errors.TypeError, function() dc.cancel(nil) end))
    assert.equal("TypeError: bad argument #1 to 'reset' (number expected, got string)",
      raises(errors.TypeError, function() dc:reset("x") end))
    assert.equal("TypeError: calling 'reset' on bad self (braid.DelayedCall expected, got table)",
      raises(errors.TypeError, function() local t = { reset = dc.reset }; t:reset(1) end))
    dc:cancel()
  end)

  it("name the function when it is called without a name (through pcall)", function()
    local ok, e = pcall(reactor.callLater, "x", print)
    assert.is_false(ok)
    assert.matches("bad argument #1 to '[%w.]*callLater' %(number expected, got string%)", tostring(e))
  end)

  it("callLater refuses more extra arguments than a DelayedCall holds, delays no NaN deadline", function()
    local t = {}
    for i = 1, 70000 do t[i] = i end
    assert.matches("too many arguments", raises(errors.ValueError,
      function() reactor.callLater(0, print, table.unpack(t, 1, 70000)) end))
    local dc = reactor.callLater(10, print)
    raises(errors.ValueError, function() dc:delay(math.huge) end)
    raises(errors.ValueError, function() dc:delay(0 / 0) end)
    local before = dc:getTime()
    dc:delay(1)
    assert.near(before + 1, dc:getTime(), 0.01)  -- moved by 1 s, not NaN
    dc:cancel()
  end)
end)

describe("finalizers and metamethods reached from Lua", function()
  it("check their argument and run only for the collector", function()
    local port = reactor.listenTCP(0, factory(), 50, "127.0.0.1")
    local gc = getmetatable(port._c).__gc
    assert.matches("braid.tcp.port expected, got nil", raises(errors.TypeError, gc, nil))
    assert.error_matches(function() gc(port._c) end, "__gc is called by the garbage collector only")
    assert.is_true(port:fileno() >= 0)  -- still listening
    loop.wait(port:stopListening())
    local objs = {
      core.fd_watch(0, function() end),
      core.threads_blob(string.dump(function() end), "f"),
      core.inotify(),
    }
    for _, o in ipairs(objs) do
      raises(errors.TypeError, getmetatable(o).__gc, nil)
      assert.error_matches(function() getmetatable(o).__gc(o) end, "garbage collector only")
    end
    raises(errors.TypeError, getmetatable(objs[3]).__tostring, nil)
  end)

  it("a transport survives its fields table getting another metatable", function()
    local port, server_t, t = connected_pair()
    setmetatable(getmetatable(t), {})
    t.myField = 1
    assert.equal(1, rawget(getmetatable(t), "myField"))
    setmetatable(getmetatable(t), nil)
    t.other = 2
    assert.equal(2, rawget(getmetatable(t), "other"))
    server_t:loseConnection()
    loop.wait(port:stopListening())
  end)
end)

describe("Lua methods called with '.'", function()
  it("name themselves and their class (DeferredLock, DeferredSemaphore, DeferredQueue)", function()
    local function check(what, name, f, ...)
      local s = raises(errors.TypeError, f, ...)
      assert.matches(("bad argument #1 to '%s' %%(%s expected, got"):format(name, what), s)
    end
    local lock, sem, q = defer.DeferredLock(), defer.DeferredSemaphore(1), defer.DeferredQueue()
    check("DeferredLock", "acquire", lock.acquire)
    check("DeferredLock", "release", lock.release)
    check("DeferredSemaphore", "acquire", sem.acquire)
    check("DeferredSemaphore", "release", sem.release, 1)
    check("DeferredQueue", "put", q.put, 1)
    check("DeferredQueue", "get", q.get)
    check("DeferredLock or DeferredSemaphore", "run", lock.run, print)
    assert.is_false(lock.locked)
    assert.equal(1, sem.tokens)
  end)

  it("coiterate checks its Deferred before it adds the task", function()
    local task = require "braid.task"
    local coop = task.Cooperator({ scheduler = function() return { cancel = function() end } end })
    assert.matches("bad argument #2 to 'coiterate'",
      raises(errors.TypeError, coop.coiterate, coop, function() end, 5))
    assert.equal(0, #coop._tasks)
  end)

  it("name themselves and their class (transport, Port, Connector, Clock, LoopingCall, Failure)", function()
    local task = require "braid.task"
    local port, server_t = connected_pair()
    local function check(what, name, f, ...)
      local s = raises(errors.TypeError, f, ...)
      assert.matches(("bad argument #1 to '%s' %%(%s expected, got"):format(name, what), s)
      assert.matches("call it as obj:" .. name, s)
    end
    check("transport", "getPeer", server_t.getPeer)
    check("transport", "writeSequence", server_t.writeSequence, nil, { "x" })
    check("transport", "registerProducer", server_t.registerProducer, {}, {}, true)
    check("Port", "getHost", port.getHost)
    check("Port", "stopListening", port.stopListening, {})
    local c = reactor.connectTCP("127.0.0.1", port:getHost().port, protocol.ClientFactory.forProtocol(protocol.Protocol))
    check("Connector", "getDestination", c.getDestination)
    c:disconnect()
    local clock = task.Clock()
    check("Clock", "advance", clock.advance, nil, 1)
    check("Clock", "callLater", clock.callLater, 1, print)
    local lc = task.LoopingCall(function() end)
    check("LoopingCall", "start", lc.start, 1)
    local f = failure.Failure(errors.ValueError("x"))
    check("Failure", "trap", f.trap, errors.ValueError)
    server_t:loseConnection()
    loop.wait(port:stopListening())
  end)

  it("name themselves and their class (receivers, StringTransport, Cooperator, CooperativeTask)", function()
    local basic = require "braid.basic"
    local task = require "braid.task"
    local testing = require "braid.testing"
    local function check(what, name, f, ...)
      local s = raises(errors.TypeError, f, ...)
      assert.equal(("TypeError: bad argument #1 to '%s' (%s expected, got %s; call it as obj:%s(...))")
        :format(name, what, type((...)), name), s)
    end
    local lr = basic.LineReceiver()
    check("LineReceiver", "sendLine", lr.sendLine, "x")
    check("LineReceiver", "dataReceived", lr.dataReceived, "x\r\n")
    check("LineReceiver", "setLineMode", lr.setLineMode, "rest")
    check("LineReceiver", "setRawMode", lr.setRawMode, nil)
    check("LineReceiver", "clearLineBuffer", lr.clearLineBuffer, nil)
    local lo = basic.LineOnlyReceiver()
    check("LineOnlyReceiver", "sendLine", lo.sendLine, "x")
    check("LineOnlyReceiver", "dataReceived", lo.dataReceived, "x\r\n")
    local ns = basic.NetstringReceiver()
    check("NetstringReceiver", "sendString", ns.sendString, "x")
    check("NetstringReceiver", "dataReceived", ns.dataReceived, "1:x,")
    local i32 = basic.Int32StringReceiver()
    check("IntNStringReceiver", "sendString", i32.sendString, "x")
    check("IntNStringReceiver", "dataReceived", i32.dataReceived, "\0\0\0\1x")
    local st = testing.StringTransport()
    check("StringTransport", "write", st.write, "x")
    check("StringTransport", "value", st.value, nil)
    check("StringTransport", "writeSequence", st.writeSequence, { "x" })  -- a table, not one
    check("StringTransport", "registerProducer", st.registerProducer, nil, true)
    local coop = task.Cooperator({ scheduler = function() end })
    check("Cooperator", "cooperate", coop.cooperate, function() end)
    check("Cooperator", "coiterate", coop.coiterate, nil, function() end)
    check("Cooperator", "start", coop.start, nil)
    check("Cooperator", "stop", coop.stop, nil)
    local t = coop:cooperate(function() return nil end)
    check("CooperativeTask", "pause", t.pause, nil)
    check("CooperativeTask", "resume", t.resume, nil)
    check("CooperativeTask", "stop", t.stop, nil)
    check("CooperativeTask", "whenDone", t.whenDone, nil)
    assert.equal(1, #coop._tasks)  -- the refused coiterate added none
    assert.is_true(coop.running)   -- the refused stop stopped nothing
    t:stop()
    local clock = task.Clock()
    check("Clock", "seconds", clock.seconds, nil)
    check("Clock", "getDelayedCalls", clock.getDelayedCalls, nil)
    check("Clock", "pump", clock.pump, nil, { 1 })
    assert.equal(0, clock:seconds())
    local lc = task.LoopingCall(function() end)
    lc.clock = clock
    lc:start(1)
    check("LoopingCall", "stop", lc.stop, nil)
    check("LoopingCall", "reset", lc.reset, nil)
    assert.is_true(lc.running)
    lc:stop()
    -- nothing was written or changed by the refused calls
    assert.equal("", st:value())
    assert.is_true(lr.line_mode)
  end)
end)

describe("Deferred methods", function()
  it("refuse a self that is not a Deferred", function()
    for _, name in ipairs { "callback", "errback", "addCallback", "addErrback", "addBoth",
                            "addCallbacks", "cancel", "pause", "unpause" } do
      local s = raises(errors.TypeError, defer.Deferred[name], {}, print)
      assert.matches("bad argument #1 to '" .. name .. "' %(Deferred expected, got table", s)
    end
    local t = {}
    pcall(defer.Deferred.callback, t, 1)
    assert.is_nil(next(t))  -- left as it was
  end)

  it("refuse an overwritten _n rather than index that far", function()
    local d = defer.Deferred()
    d._n = math.maxinteger
    assert.error_matches(function() d:addCallback(print) end, "corrupt Deferred")
    local d2 = defer.Deferred()
    d2._n = math.maxinteger - 3
    assert.error_matches(function() d2:callback(1) end, "corrupt Deferred")
  end)

  -- the Lua runner retried a segment that raised before it used up an
  -- entry for ever; the count hook turns such a loop into a failure
  it("give up on an overwritten _h instead of retrying it for ever", function()
    local d = defer.Deferred()
    d:addCallback(function(x) return x + 1 end)
    d._h = "a"
    local ok, e = require("helpers.bounded")(d.callback, d, 1)
    if ok then  -- the C runner reads it as 0
      assert.equal(2, d.result)
    else
      assert.matches("attempt to add", tostring(e))
    end
  end)

  it("refuse an extra-arguments list whose n is not a count", function()
    local d = defer.Deferred()
    assert.matches("args.n must be an integer from 0 to 250",
      raises(errors.ValueError, function() d:addCallbacks(print, nil, { n = math.maxinteger }) end))
    raises(errors.ValueError, function() d:addCallbacks(print, nil, { n = -1 }) end)
    raises(errors.ValueError, function() d:addCallbacks(print, nil, { n = 1.5 }) end)
    local got
    d:addCallbacks(function(r, a, b) got = { r, a, b } end, nil, { n = 2, "a", "b" })
    d:callback(1)
    assert.same({ 1, "a", "b" }, got)
  end)

  it("addTimeout refuses an infinite timeout naming itself", function()
    assert.matches("bad argument #1 to 'addTimeout'",
      raises(errors.ValueError, function() defer.Deferred():addTimeout(math.huge) end))
  end)

  it("DeferredSemaphore refuses NaN, fractional and infinite tokens", function()
    raises(errors.ValueError, function() defer.DeferredSemaphore(0 / 0) end)
    raises(errors.ValueError, function() defer.DeferredSemaphore(1.5) end)
    raises(errors.ValueError, function() defer.DeferredSemaphore(math.huge) end)
    local s = defer.DeferredSemaphore(2.0)
    assert.equal(math.type(2), math.type(s.tokens))
    assert.equal(2, s.limit)
  end)

  it("core.defer_bind checks its configuration's types", function()
    local ok, e = pcall(core.defer_bind, { Deferred = {}, Failure = {}, KIND = 5 })
    assert.is_false(ok)
    assert.matches("defer_bind: cfg%.", tostring(e))
  end)
end)

describe("braid.tcp arguments", function()
  it("are checked by the function called, before anything changes", function()
    assert.matches("bad argument #3 to 'listenTCP' %(backlog must be an integer",
      raises(errors.TypeError, function() reactor.listenTCP(0, factory(), 0.5) end))
    assert.matches("bad argument #4 to 'listenTCP' %(interface contains a NUL byte%)",
      raises(errors.ValueError, function() reactor.listenTCP(0, factory(), 50, "127.0.0.1\0x") end))
    local path = tmp_path("nul")
    assert.matches("path contains a NUL byte",
      raises(errors.ValueError, function() reactor.listenUNIX(path .. "\0x", factory()) end))
    assert.matches("bad argument #3 to 'listenUNIX'",
      raises(errors.TypeError, function() reactor.listenUNIX(path, factory(), "x") end))
    assert.matches("bad argument #4 to 'listenUNIX' %(mode must be an integer such as tonumber",
      raises(errors.TypeError, function() reactor.listenUNIX(path, factory(), 50, "0600") end))
    assert.matches("host contains a NUL byte",
      raises(errors.ValueError, function() reactor.connectTCP("127.0.0.1\0.example.com", 9, factory()) end))
    assert.matches("bad argument #5 to 'connectTCP' %(bindAddress port",
      raises(errors.TypeError, function() reactor.connectTCP("127.0.0.1", 9, factory(), 5, { "127.0.0.1", "x" }) end))
    assert.matches("bad argument #5 to 'connectTCP' %(bindAddress host",
      raises(errors.TypeError, function() reactor.connectTCP("127.0.0.1", 9, factory(), 5, { host = true }) end))
  end)

  it("a bad connect timeout raises before the factory starts", function()
    for _, bad in ipairs { math.huge, -5, 0 / 0 } do
      local f = protocol.ClientFactory.forProtocol(protocol.Protocol)
      local started = 0
      function f:startFactory() started = started + 1 end
      assert.matches("bad argument #4 to 'connectTCP' %(timeout must be a finite number >= 0",
        raises(errors.ValueError, function() reactor.connectTCP("127.0.0.1", 9, f, bad) end))
      assert.matches("bad argument #3 to 'connectUNIX'",
        raises(errors.ValueError, function() reactor.connectUNIX("/nonexistent", f, bad) end))
      assert.equal(0, started)
      assert.equal(0, f.numPorts)
    end
  end)

  it("adopting refuses descriptors out of range and ones that are not stream sockets", function()
    raises(errors.TypeError, function() reactor.adoptStreamPort(2 ^ 32 + 1, factory()) end)
    raises(errors.TypeError, function() reactor.adoptStreamConnection(-1, factory()) end)
    local ok, e = pcall(reactor.adoptStreamPort, 1, factory())  -- stdout
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.CannotListenError), tostring(e))
    ok, e = pcall(reactor.adoptStreamConnection, 1, factory())
    assert.is_false(ok)
    assert.is_true(errors.isinstance(e, errors.ConnectError), tostring(e))
    assert.matches("non%-socket", tostring(e))
  end)

  it("registerProducer refuses a non-producer and then takes a real one", function()
    local port, server_t = connected_pair()
    assert.matches("bad argument #1 to 'registerProducer' %(producer expected",
      raises(errors.TypeError, function() server_t:registerProducer(42, false) end))
    raises(errors.TypeError, function() server_t:registerProducer() end)
    local p = { pauseProducing = function() end, resumeProducing = function() end,
                stopProducing = function() end }
    server_t:registerProducer(p, true)
    server_t:unregisterProducer()
    server_t:loseConnection()
    loop.wait(port:stopListening())
  end)
end)

describe("descriptors", function()
  it("addReader refuses a fileno out of range and one the OS cannot watch, and lists neither", function()
    local function desc(fd)
      return { fileno = function() return fd end, doRead = function() end,
               connectionLost = function() end }
    end
    local before = #reactor.getReaders()
    assert.matches("bad argument #1 to 'addReader' %(descriptor's fileno%(%) must return an integer",
      raises(errors.TypeError, function() reactor.addReader(desc(2 ^ 32)) end))
    assert.matches("bad argument #1 to 'addReader' %(cannot watch descriptor 100000",
      raises(errors.ValueError, function() reactor.addReader(desc(100000)) end))
    assert.equal(before, #reactor.getReaders())
  end)
end)

describe("the Lua modules' arguments", function()
  it("resolve checks its timeout and name before looking anything up", function()
    for _, bad in ipairs { -1, 0 / 0, math.huge } do
      assert.matches("bad argument #2 to 'resolve'",
        raises(errors.ValueError, function() reactor.resolve("localhost", bad) end))
    end
    raises(errors.ValueError, function() resolver.resolve("local\0host") end)
  end)

  it("the policies' factories check their arguments when made", function()
    local inner = protocol.Factory.forProtocol(protocol.Protocol)
    assert.matches("bad argument #1 to 'WrappingFactory'",
      raises(errors.TypeError, function() policies.WrappingFactory(nil) end))
    assert.matches("bad argument #1 to 'ThrottlingFactory'",
      raises(errors.TypeError, function() policies.ThrottlingFactory(5) end))
    raises(errors.TypeError, function() policies.ThrottlingFactory(inner, "x") end)
    raises(errors.ValueError, function() policies.ThrottlingFactory(inner, 0 / 0) end)
    for _, bad in ipairs { 0, -1, 0 / 0, math.huge } do
      assert.matches("bad argument #3 to 'ThrottlingFactory'",
        raises(errors.ValueError, function() policies.ThrottlingFactory(inner, nil, bad) end))
      assert.matches("bad argument #4 to 'ThrottlingFactory'",
        raises(errors.ValueError, function() policies.ThrottlingFactory(inner, nil, nil, bad) end))
    end
    raises(errors.ValueError, function() policies.TimeoutFactory(inner, -1) end)
    raises(errors.TypeError, function() policies.TimeoutFactory(inner, "x") end)
    raises(errors.TypeError, function() policies.TrafficLoggingFactory(inner, nil) end)
    raises(errors.ValueError, function() policies.TrafficLoggingFactory(inner, "/tmp/x", -5) end)
    assert.matches("lengthLimit must be an integer >= 0, got 1.5",
      raises(errors.ValueError, function() policies.TrafficLoggingFactory(inner, "/tmp/x", 1.5) end), 1, true)
    local byPeer = policies.LimitConnectionsByPeer(inner)
    byPeer.maxConnectionsPerPeer = "2"
    assert.matches("maxConnectionsPerPeer must be a number",
      raises(errors.TypeError, function() byPeer:buildProtocol({ host = "1.2.3.4" }) end))
  end)

  it("setTimeout checks the period before storing it", function()
    local P = policies.TimeoutMixin:mixInto(protocol.Protocol:extend("P"))
    local p = P()
    p.clock = testing.Clock()
    raises(errors.TypeError, function() p:setTimeout({}) end)
    raises(errors.ValueError, function() p:setTimeout(-1) end)
    raises(errors.ValueError, function() p:setTimeout(math.huge) end)
    assert.is_nil(p.timeOut)
  end)

  it("removeSystemEventTrigger refuses an id whose phase is wrong", function()
    local id = reactor.addSystemEventTrigger("before", "shutdown", function() end)
    raises(errors.ValueError, function()
      reactor.removeSystemEventTrigger({ event = "shutdown", phase = "Before" })
    end)
    raises(errors.ValueError, function() reactor.removeSystemEventTrigger({ event = "shutdown" }) end)
    reactor.removeSystemEventTrigger(id)
  end)

  it("the receivers' send methods take strings only", function()
    local function check(cls, method)
      local p = cls()
      p:makeConnection(testing.StringTransport())
      for _, bad in ipairs { nil, 42, {}, true } do
        assert.matches("bad argument #1 to '" .. method .. "' %(string expected",
          raises(errors.TypeError, function() p[method](p, bad) end))
      end
      assert.equal("", p.transport:value())
    end
    check(basic.LineReceiver, "sendLine")
    check(basic.LineOnlyReceiver, "sendLine")
    check(basic.NetstringReceiver, "sendString")
    check(basic.Int32StringReceiver, "sendString")
  end)

  it("the smaller ones name themselves", function()
    raises(errors.TypeError, function() endpoints.connectProtocol(nil, protocol.Protocol()) end)
    raises(errors.TypeError, function() log.callWithContext("sys", nil) end)
    raises(errors.TypeError, function() errors.isinstance(1, "ValueError") end)
    raises(errors.TypeError, function() console.eval(nil) end)
    raises(errors.TypeError, function() testing.connectedServerAndClient(factory(), factory(), 5) end)
    raises(errors.TypeError, function() failure.Failure("boom", {}) end)
    raises(errors.ValueError, function() threads.setShutdownGracePeriod(math.huge) end)
  end)
end)
