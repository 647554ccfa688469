-- Twisted's reactor-core tests, case by case, as braid specs: one describe
-- per Twisted TestCase class (internet/test/test_core.py, test_base.py,
-- test_time.py, test_fdset.py, test_threads.py; test/test_internet.py,
-- test/test_threads.py), each `it` named after the Twisted test method.
-- The mapping of every Twisted test (ported here, covered elsewhere, or
-- skipped with its reason) is in docs/twisted-tests.md.
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local testing = require "braid.testing"
local threads = require "braid.threads"
local socket = require "socket"

local async, await = testing.async, defer.await
local Deferred = defer.Deferred

-- run the reactor until stop() or crash(), failing (not hanging) after
-- `limit` seconds
local function run_for(limit)
  local timed_out = false
  local guard = reactor.callLater(limit or 5, function()
    timed_out = true
    reactor.crash()
  end)
  reactor.run({ installSignalHandlers = false })
  if guard:active() then guard:cancel() end
  assert.is_false(timed_out, "the reactor ran too long")
end

-- triggers added by a spec, removed after it (braid's persist across runs)
local added = {}
local function trigger(phase, event, f, ...)
  local id = reactor.addSystemEventTrigger(phase, event, f, ...)
  added[#added + 1] = id
  return id
end
local function remove_triggers()
  for i = #added, 1, -1 do
    pcall(reactor.removeSystemEventTrigger, added[i])
    added[i] = nil
  end
end

local function appender(list)
  return function(v) list[#list + 1] = v end
end

-- a connected pair of LuaSocket TCP sockets (Twisted's socketpair())
local function socketpair()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  local client = assert(socket.connect("127.0.0.1", port))
  local accepted = assert(server:accept())
  server:close()
  client:settimeout(0)
  accepted:settimeout(0)
  return client, accepted
end

local function clean_calls()
  for _, dc in ipairs(reactor.getDelayedCalls()) do dc:cancel() end
end

---------------------------------------------------------------------------
-- twisted/internet/test/test_core.py

describe("SystemEventTestsBuilder (internet/test/test_core.py)", function()
  after_each(function() remove_triggers(); clean_calls() end)

  it("test_stopWhenAlreadyStopped", function()
    reactor.callWhenRunning(reactor.stop)
    run_for()
    local ok, e = pcall(reactor.stop)
    assert.is_false(ok)
    assert.is_true(errors.ReactorNotRunning:isinstance(e))
    assert.equal("ReactorNotRunning: Can't stop reactor that isn't running.", tostring(e))
  end)

  it("test_callWhenRunningOrder", function()
    local events = {}
    reactor.callWhenRunning(appender(events), "first")
    reactor.callWhenRunning(appender(events), "second")
    reactor.callWhenRunning(reactor.stop)
    run_for()
    assert.same({ "first", "second" }, events)
  end)

  it("test_stopShutDownEvents", function()
    local events = {}
    trigger("before", "shutdown", appender(events), "before shutdown")
    trigger("during", "shutdown", appender(events), "during shutdown")
    trigger("after", "shutdown", appender(events), "after shutdown")
    reactor.callWhenRunning(reactor.stop)
    run_for()
    assert.same({ "before shutdown", "during shutdown", "after shutdown" }, events)
  end)

  it("test_shutdownFiresTriggersAsynchronously", function()
    local events = {}
    trigger("before", "shutdown", appender(events), "before shutdown")
    reactor.callWhenRunning(function()
      reactor.stop()
      events[#events + 1] = "stopped"
    end)
    assert.same({}, events)
    run_for()
    assert.same({ "stopped", "before shutdown" }, events)
  end)

  it("test_shutdownDisconnectsCleanly", function()
    local c1, s1 = socketpair()
    local c2, s2 = socketpair()
    local log = require "braid.log"
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    -- one finally for both (busted keeps only the last one given)
    finally(function() log.setErrorStream(prev); c1:close(); s1:close(); c2:close(); s2:close() end)
    local lostOK = false
    local problematic = {
      fileno = function() return c1:getfd() end,
      doRead = function() end,
      connectionLost = function() error(errors.RuntimeError("simulated connectionLost error")) end,
    }
    local ok = {
      fileno = function() return c2:getfd() end,
      doRead = function() end,
      connectionLost = function() lostOK = true end,
    }
    reactor.addReader(problematic)  -- first: removeAll returns it first
    reactor.addReader(ok)
    reactor.callWhenRunning(reactor.stop)
    run_for()
    assert.equal(1, #testing.flushLoggedErrors(errors.RuntimeError))
    assert.is_true(lostOK)
    assert.same({}, reactor.getReaders())
  end)

  it("test_runWithAsynchronousBeforeStartupTrigger", function()
    local events = {}
    trigger("before", "startup", function()
      events[#events + 1] = "trigger"
      local d = Deferred()
      d:addCallback(function()
        events[#events + 1] = "callback"
        reactor.stop()
      end)
      reactor.callLater(0, d.callback, d, nil)
      return d
    end)
    run_for()
    assert.same({ "trigger", "callback" }, events)
  end)

  it("test_iterate", function()
    local t = reactor.callLater(5, reactor.crash)
    local start = socket.gettime()
    reactor.iterate(0)
    assert.is_true(socket.gettime() - start < 2)
    t:cancel()
  end)

  it("test_crash", function()
    local events = {}
    trigger("before", "shutdown", appender(events), "before shutdown")
    reactor.callWhenRunning(reactor.callLater, 0, reactor.crash)
    run_for()
    assert.is_false(reactor.running)
    assert.same({}, events)
  end)

  it("test_runAfterCrash", function()
    local events = {}
    reactor.callWhenRunning(function()
      events[#events + 1] = "crash"
      reactor.crash()
    end)
    run_for()
    reactor.callWhenRunning(function()
      events[#events + 1] = { "stop", reactor.running }
      reactor.stop()
    end)
    run_for()
    assert.same({ "crash", { "stop", true } }, events)
  end)
end)

---------------------------------------------------------------------------
-- twisted/internet/test/test_base.py

-- DelayedCalls at times 0 and 1: the reactor's, and a task.Clock's (whose
-- times are absolute, as the DelayedCalls Twisted's test makes)
local clock
local delayed_call_makers = {
  { "the reactor's", function(t) return reactor.callLater(t, function() end) end },
  { "a Clock's", function(t)
    if t == 0 then clock = require("braid.task").Clock() end
    return clock:callLater(t, function() end)
  end },
}

for _, maker in ipairs(delayed_call_makers) do
  local kind, at = maker[1], maker[2]
  describe("DelayedCallMixin (internet/test/test_base.py), " .. kind .. " DelayedCall", function()
    local zero, one
    before_each(function()
      zero = at(0)
      one = at(1)
    end)
    after_each(function()
      zero:cancel()
      one:cancel()
    end)

    it("test_lt", function()
      assert.is_true(zero < one)
      assert.is_false(one < zero)
      assert.is_false(zero < zero)
      assert.is_false(one < one)
    end)

    it("test_le", function()
      assert.is_true(zero <= one)
      assert.is_false(one <= zero)
      assert.is_true(zero <= zero)
      assert.is_true(one <= one)
    end)

    it("test_gt", function()
      assert.is_true(one > zero)
      assert.is_false(zero > one)
      assert.is_false(zero > zero)
      assert.is_false(one > one)
    end)

    it("test_ge", function()
      assert.is_true(one >= zero)
      assert.is_false(zero >= one)
      assert.is_true(zero >= zero)
      assert.is_true(one >= one)
    end)

    it("test_eq", function()
      assert.is_false(zero == one)
      assert.is_true(zero == zero)
      assert.is_true(one == one)
    end)

    it("test_ne", function()
      assert.is_true(zero ~= one)
      assert.is_false(zero ~= zero)
      assert.is_false(one ~= one)
    end)

    it("compares only with DelayedCalls", function()
      assert.error_matches(function() return zero < 1 end, "attempt to compare DelayedCall with number")
      assert.error_matches(function() return 1 <= zero end, "attempt to compare number with DelayedCall")
    end)
  end)
end

---------------------------------------------------------------------------
-- twisted/internet/test/test_time.py

describe("TimeTestsBuilder (internet/test/test_time.py)", function()
  after_each(clean_calls)

  it("test_delayedCallStopsReactor", function()
    reactor.callLater(0, reactor.stop)
    run_for()
  end)

  it("test_distantDelayedCall", function()
    local delayedCall = reactor.callLater(2 ^ 128 + 1, function() end)
    reactor.callFromThread(function() reactor.callFromThread(reactor.stop) end)
    run_for()
    assert.is_true(delayedCall:active())
    local listed = false
    for _, dc in ipairs(reactor.getDelayedCalls()) do
      if dc == delayedCall then listed = true end
    end
    assert.is_true(listed)
    delayedCall:cancel()
  end)
end)

---------------------------------------------------------------------------
-- twisted/internet/test/test_fdset.py

describe("ReactorFDSetTestsBuilder (internet/test/test_fdset.py)", function()
  local client, server
  before_each(function() client, server = socketpair() end)
  after_each(function()
    reactor.removeAll()
    client:close()
    server:close()
    clean_calls()
  end)

  local function descriptor()
    return { fileno = function() return client:getfd() end }
  end

  it("test_addReader", function()
    local fd = descriptor()
    function fd.doRead()
      reactor.removeReader(fd)
      reactor.stop()
    end
    reactor.addReader(fd)
    server:send("x")
    run_for()
  end)

  it("test_removeReader", function()
    local fd = descriptor()
    local calls = 0
    function fd.doRead() calls = calls + 1 end
    reactor.addReader(fd)
    reactor.removeReader(fd)
    server:send("x")
    reactor.callLater(0, reactor.callLater, 0, reactor.stop)
    run_for()
    assert.equal(0, calls)
  end)

  it("test_addWriter", function()
    local fd = descriptor()
    function fd.doWrite()
      reactor.removeWriter(fd)
      reactor.stop()
    end
    reactor.addWriter(fd)
    run_for()
  end)

  local function getFDTest(kind)
    local get, add, remove = reactor["get" .. kind .. "s"], reactor["add" .. kind],
      reactor["remove" .. kind]
    local c = { fileno = function() return client:getfd() end }
    local s = { fileno = function() return server:getfd() end }
    local function has(d)
      for _, v in ipairs(get()) do if v == d then return true end end
      return false
    end
    assert.is_false(has(c))
    assert.is_false(has(s))
    add(c)
    assert.is_true(has(c))
    assert.is_false(has(s))
    remove(c)
    assert.is_false(has(c))
    assert.is_false(has(s))
  end

  it("test_getReaders", function() getFDTest("Reader") end)

  it("test_removeWriter", function()
    local fd = descriptor()
    local calls = 0
    function fd.doWrite() calls = calls + 1 end
    reactor.addWriter(fd)
    reactor.removeWriter(fd)
    reactor.callLater(0, reactor.callLater, 0, reactor.stop)
    run_for()
    assert.equal(0, calls)
  end)

  it("test_getWriters", function() getFDTest("Writer") end)

  it("test_removeAll", function()
    local fd = descriptor()
    local calls = 0
    function fd.doRead() calls = calls + 1 end
    function fd.doWrite() calls = calls + 1 end
    server:send("x")
    reactor.addReader(fd)
    reactor.addWriter(fd)
    local removed = reactor.removeAll()
    reactor.callLater(0, reactor.callLater, 0, reactor.stop)
    run_for()
    assert.equal(0, calls)
    assert.equal(1, #removed)
    assert.equal(fd, removed[1])
  end)

  it("test_removedFromReactor", function()
    local d = { insideReactor = false, calls = 0 }
    function d.fileno()
      if not d.insideReactor then d.calls = d.calls + 1 end
      return client:getfd()
    end
    function d.logPrefix() return "foo" end
    function d.doRead()
      reactor.removeReader(d)
      d.insideReactor = false
      reactor.stop()
    end
    function d.connectionLost() end
    reactor.callWhenRunning(function()
      d.insideReactor = true
      reactor.addReader(d)
      server:send("a")
    end)
    run_for()
    assert.equal(0, d.calls)
  end)

  it("test_connectionLostOnShutdown", function()
    local function DoNothing(sock)
      local d = { disconnected = false }
      function d.fileno() return sock:getfd() end
      function d.doRead() end
      function d.doWrite() end
      function d.connectionLost() d.disconnected = true end
      return d
    end
    local fd1, fd2 = DoNothing(client), DoNothing(server)
    reactor.addReader(fd1)
    reactor.addWriter(fd2)
    reactor.callWhenRunning(reactor.stop)
    run_for()
    assert.is_true(fd1.disconnected)
    assert.is_true(fd2.disconnected)
  end)
end)

---------------------------------------------------------------------------
-- twisted/internet/test/test_threads.py

describe("ThreadTestsBuilder (internet/test/test_threads.py)", function()
  after_each(clean_calls)

  it("test_delayedCallFromThread", function()
    reactor.callLater(0, reactor.callFromThread, reactor.stop)
    local before = reactor.seconds()
    run_for(60)
    assert.is_true(reactor.seconds() - before < 30)
  end)

  it("test_callFromThread", function()
    local result = {}
    package.loaded["braid_reactor_port_spec"] = {
      threadCall = function()
        result[#result + 1] = threads.isInIOThread()
        reactor.stop()
      end,
    }
    finally(function() package.loaded["braid_reactor_port_spec"] = nil end)
    reactor.callLater(0, reactor.callInThread, function()
      require("braid.threads").callFromThread("braid_reactor_port_spec.threadCall")
    end)
    run_for()
    assert.same({ true }, result)
  end)

  it("test_cleanUpThreadPoolEvenBeforeReactorIsRun", function()
    local d = threads.deferToThread(function() return 1 end)
    local r
    d:addCallback(function(v) r = v end)
    while r == nil do reactor.iterate(0.01) end
    assert.is_true(threads._stats().threads > 0)
    reactor.fireSystemEvent("shutdown")
    assert.equal(0, threads._stats().threads)
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_internet.py

describe("ThreePhaseEventTests (test/test_internet.py)", function()
  -- Twisted's private _ThreePhaseEvent, through the reactor's triggers of
  -- an event of this spec's own
  local EV = "three-phase"
  after_each(remove_triggers)

  it("test_fireEvent", function()
    local events = {}
    trigger("after", EV, appender(events), "first after")
    trigger("during", EV, appender(events), "first during")
    trigger("before", EV, appender(events), "first before")
    trigger("before", EV, appender(events), "second before")
    trigger("during", EV, appender(events), "second during")
    trigger("after", EV, appender(events), "second after")
    assert.same({}, events)
    reactor.fireSystemEvent(EV)
    assert.same({ "first before", "second before", "first during", "second during",
                  "first after", "second after" }, events)
  end)

  it("test_asynchronousBefore", function()
    local events = {}
    local beforeResult = Deferred()
    trigger("before", EV, function() return beforeResult end)
    trigger("during", EV, appender(events), "during")
    trigger("after", EV, appender(events), "after")
    assert.same({}, events)
    reactor.fireSystemEvent(EV)
    assert.same({}, events)
    beforeResult:callback(nil)
    assert.same({ "during", "after" }, events)
  end)

  it("test_beforeTriggerException", async(function()
    local DummyException = errors.class("DummyException")
    local events = {}
    trigger("before", EV, function() error(DummyException()) end)
    trigger("before", EV, appender(events), "before")
    trigger("during", EV, appender(events), "during")
    reactor.fireSystemEvent(EV)
    assert.same({ "before", "during" }, events)
    assert.equal(1, #testing.flushLoggedErrors(DummyException))
  end))

  it("test_duringTriggerException", async(function()
    local DummyException = errors.class("DummyException")
    local events = {}
    trigger("during", EV, function() error(DummyException()) end)
    trigger("during", EV, appender(events), "during")
    trigger("after", EV, appender(events), "after")
    reactor.fireSystemEvent(EV)
    assert.same({ "during", "after" }, events)
    assert.equal(1, #testing.flushLoggedErrors(DummyException))
  end))

  -- Twisted warns (DeprecationWarning) and goes on; braid's triggers
  -- persist, so removing one that ran is an ordinary removal
  it("test_synchronousRemoveAlreadyExecutedBefore", function()
    local events = {}
    local beforeHandle = trigger("before", EV, appender(events), "first before")
    trigger("before", EV, function() reactor.removeSystemEventTrigger(beforeHandle) end)
    trigger("before", EV, appender(events), "second before")
    reactor.fireSystemEvent(EV)
    assert.same({ "first before", "second before" }, events)
  end)

  it("test_synchronousRemovePendingBefore", function()
    local events = {}
    local beforeHandle
    trigger("before", EV, function() reactor.removeSystemEventTrigger(beforeHandle) end)
    beforeHandle = trigger("before", EV, appender(events), "first before")
    trigger("before", EV, appender(events), "second before")
    reactor.fireSystemEvent(EV)
    assert.same({ "second before" }, events)
  end)

  it("test_synchronousBeforeRemovesDuring", function()
    local events = {}
    local duringHandle
    trigger("before", EV, function() reactor.removeSystemEventTrigger(duringHandle) end)
    duringHandle = trigger("during", EV, appender(events), "during")
    trigger("after", EV, appender(events), "after")
    reactor.fireSystemEvent(EV)
    assert.same({ "after" }, events)
  end)

  it("test_asynchronousBeforeRemovesDuring", function()
    local events = {}
    local beforeResult = Deferred()
    trigger("before", EV, function() return beforeResult end)
    local duringHandle = trigger("during", EV, appender(events), "during")
    trigger("after", EV, appender(events), "after")
    reactor.fireSystemEvent(EV)
    reactor.removeSystemEventTrigger(duringHandle)
    beforeResult:callback(nil)
    assert.same({ "after" }, events)
  end)

  it("test_synchronousBeforeRemovesConspicuouslySimilarDuring", function()
    local events = {}
    local function f() events[#events + 1] = "trigger" end
    local duringTrigger
    trigger("before", EV, f)
    trigger("before", EV, function() reactor.removeSystemEventTrigger(duringTrigger) end)
    duringTrigger = trigger("during", EV, f)
    reactor.fireSystemEvent(EV)
    assert.same({ "trigger" }, events)
  end)

  it("test_synchronousRemovePendingDuring", function()
    local events = {}
    local duringHandle
    trigger("during", EV, function() reactor.removeSystemEventTrigger(duringHandle) end)
    duringHandle = trigger("during", EV, appender(events), "first during")
    trigger("during", EV, appender(events), "second during")
    reactor.fireSystemEvent(EV)
    assert.same({ "second during" }, events)
  end)
end)

describe("SystemEventTests (test/test_internet.py)", function()
  after_each(remove_triggers)

  local function addSystemEventTriggerTest(phase)
    local events = {}
    trigger(phase, "test", function() events[#events + 1] = true end)
    assert.same({}, events)
    reactor.fireSystemEvent("test")
    assert.same({ true }, events)
  end

  it("test_beforePhase", function() addSystemEventTriggerTest("before") end)
  it("test_duringPhase", function() addSystemEventTriggerTest("during") end)
  it("test_afterPhase", function() addSystemEventTriggerTest("after") end)

  -- Twisted raises KeyError; braid has no KeyError and raises ValueError
  it("test_unknownPhase", function()
    local ok, e = pcall(trigger, "xxx", "test", function() end)
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
  end)

  it("test_beforePreceedsDuring", function()
    local events = {}
    trigger("before", "test", appender(events), "before")
    trigger("during", "test", appender(events), "during")
    assert.same({}, events)
    reactor.fireSystemEvent("test")
    assert.same({ "before", "during" }, events)
  end)

  it("test_duringPreceedsAfter", function()
    local events = {}
    trigger("during", "test", appender(events), "during")
    trigger("after", "test", appender(events), "after")
    assert.same({}, events)
    reactor.fireSystemEvent("test")
    assert.same({ "during", "after" }, events)
  end)

  it("test_beforeReturnsDeferred", function()
    local triggerDeferred = Deferred()
    local events = {}
    trigger("before", "test", function() return triggerDeferred end)
    trigger("during", "test", appender(events), "during")
    reactor.fireSystemEvent("test")
    assert.same({}, events)
    triggerDeferred:callback(nil)
    assert.same({ "during" }, events)
  end)

  it("test_multipleBeforeReturnDeferred", function()
    local firstDeferred, secondDeferred = Deferred(), Deferred()
    local events = {}
    trigger("before", "test", function() return firstDeferred end)
    trigger("before", "test", function() return secondDeferred end)
    trigger("during", "test", appender(events), "during")
    reactor.fireSystemEvent("test")
    assert.same({}, events)
    firstDeferred:callback(nil)
    assert.same({}, events)
    secondDeferred:callback(nil)
    assert.same({ "during" }, events)
  end)

  it("test_subsequentBeforeTriggerFiresPriorBeforeDeferred", function()
    local events = {}
    local firstDeferred, secondDeferred = Deferred(), Deferred()
    trigger("before", "test", function() return firstDeferred end)
    trigger("before", "test", function() firstDeferred:callback(nil) end)
    trigger("before", "test", function()
      events[#events + 1] = "before"
      return secondDeferred
    end)
    trigger("during", "test", appender(events), "during")
    reactor.fireSystemEvent("test")
    assert.same({ "before" }, events)
    secondDeferred:callback(nil)
    assert.same({ "before", "during" }, events)
  end)

  it("test_removeSystemEventTrigger", function()
    local events = {}
    trigger("before", "test", appender(events), "first")
    reactor.removeSystemEventTrigger(trigger("before", "test", appender(events), "second"))
    reactor.fireSystemEvent("test")
    assert.same({ "first" }, events)
  end)

  it("test_removeNonExistentSystemEventTrigger", function()
    local b = trigger("during", "test", function() end)
    reactor.removeSystemEventTrigger(b)
    local ok, e = pcall(reactor.removeSystemEventTrigger, nil)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e), tostring(e))
    assert.equal("TypeError: bad argument #1 to 'removeSystemEventTrigger' "
      .. "(trigger id expected, got nil)", tostring(e))
    ok, e = pcall(reactor.removeSystemEventTrigger, b)
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
  end)

  it("test_interactionBetweenDifferentEvents", function()
    local events = {}
    local firstDeferred, secondDeferred = Deferred(), Deferred()
    trigger("before", "first-event", function()
      events[#events + 1] = "before first"
      return firstDeferred
    end)
    trigger("after", "first-event", appender(events), "after first")
    trigger("before", "second-event", function()
      events[#events + 1] = "before second"
      return secondDeferred
    end)
    trigger("after", "second-event", appender(events), "after second")
    reactor.fireSystemEvent("first-event")
    assert.same({ "before first" }, events)
    reactor.fireSystemEvent("second-event")
    assert.same({ "before first", "before second" }, events)
    firstDeferred:callback(nil)
    assert.same({ "before first", "before second", "after first" }, events)
    secondDeferred:callback(nil)
    assert.same({ "before first", "before second", "after first", "after second" }, events)
  end)
end)

describe("TimeTests (test/test_internet.py)", function()
  after_each(clean_calls)

  it("test_seconds", function()
    local now = reactor.seconds()
    assert.equal(now, now - now + now)
  end)

  it("test_callLater", async(function()
    local d = Deferred()
    reactor.callLater(0, d.callback, d, nil)
    assert.is_nil(await(d))
  end))

  it("test_callLaterReset", function()
    local call = reactor.callLater(2, function() end)
    local origTime = call:getTime()
    call:reset(1)
    assert.are_not.equal(origTime, call:getTime())
    call:cancel()
  end)

  it("test_cancelDelayedCall", async(function()
    local called = {}
    local call = reactor.callLater(0, function() called[#called + 1] = true end)
    call:cancel()
    local d = Deferred()
    reactor.callLater(0, reactor.callLater, 0, function() d:callback(#called) end)
    assert.equal(0, await(d))
  end))

  it("test_cancelCancelledDelayedCall", function()
    local call = reactor.callLater(0, function() end)
    call:cancel()
    local ok, e = pcall(call.cancel, call)
    assert.is_false(ok)
    assert.is_true(errors.AlreadyCancelled:isinstance(e))
  end)

  it("test_cancelCalledDelayedCallSynchronous", async(function()
    local d = Deferred()
    local call
    call = reactor.callLater(0, function()
      local ok, e = pcall(call.cancel, call)
      d:callback({ ok, errors.AlreadyCalled:isinstance(e) })
    end)
    assert.same({ false, true }, await(d))
  end))

  it("test_cancelCalledDelayedCallAsynchronous", async(function()
    local d = Deferred()
    local call
    call = reactor.callLater(0, function()
      reactor.callLater(0, function()
        local ok, e = pcall(call.cancel, call)
        d:callback({ ok, errors.AlreadyCalled:isinstance(e) })
      end)
    end)
    assert.same({ false, true }, await(d))
  end))

  it("testCallLaterTime", function()
    local d = reactor.callLater(10, function() end)
    assert.is_true(d:getTime() - (socket.gettime() + 10) < 1)
    d:cancel()
  end)

  it("testDelayedCallStringification", async(function()
    local dc = reactor.callLater(0, function(_, _) end, "x", 10)
    assert.is_string(tostring(dc))
    dc:reset(5)
    assert.is_string(tostring(dc))
    dc:cancel()
    assert.is_string(tostring(dc))
    dc = reactor.callLater(0, function() end, { { hello = "world" }, 10 }, reactor, 0, 1, 2)
    assert.is_string(tostring(dc))
    dc:cancel()
    assert.is_string(tostring(dc))
    local d = Deferred()
    local seen
    d:addCallback(function() seen = tostring(dc) end)
    dc = reactor.callLater(0, d.callback, d, nil)
    assert.is_string(tostring(dc))
    await(d)
    assert.is_string(seen)
  end))
end)

describe("CallFromThreadStopsAndWakeUpTests (test/test_internet.py)", function()
  after_each(function() package.loaded["braid_reactor_port_spec"] = nil end)

  it("testWakeUp", async(function()
    local d = Deferred()
    package.loaded["braid_reactor_port_spec"] = { fire = function() d:callback(nil) end }
    reactor.callInThread(function()
      require("socket").sleep(0.05)
      require("braid.threads").callFromThread("braid_reactor_port_spec.fire")
    end)
    await(d)
  end))

  it("testCallFromThreadStops", async(function()
    local stopped = false
    local d = Deferred()
    reactor.callFromThread(function()
      reactor.callFromThread(function() d:callback(stopped) end)
      reactor.callLater(0, function() stopped = true end)
    end)
    assert.is_true(await(d))
  end))
end)

describe("DelayedTests (test/test_internet.py)", function()
  local timers, counter, deferred
  before_each(function() timers, counter, deferred = {}, 0, Deferred() end)
  after_each(function()
    for _, t in pairs(timers) do if t:active() then t:cancel() end end
  end)

  local function checkTimers()
    local pending = {}
    for _, dc in ipairs(reactor.getDelayedCalls()) do pending[dc] = true end
    local missing = {}
    for tag, dc in pairs(timers) do
      if not pending[dc] then missing[#missing + 1] = tag end
    end
    assert.same({}, missing)
  end

  local addTimer
  local function callback(tag)
    timers[tag] = nil
    checkTimers()
  end
  local function addCallback(tag)
    callback(tag)
    addTimer(15, callback)
  end
  local function done(tag)
    callback(tag)
    deferred:callback(nil)
  end
  addTimer = function(when, cb)
    timers[counter] = reactor.callLater(when * 0.01, cb, counter)
    counter = counter + 1
    checkTimers()
  end

  it("testGetDelayedCalls", async(function()
    checkTimers()
    addTimer(35, done)
    addTimer(20, callback)
    addTimer(30, callback)
    local which = counter
    addTimer(29, callback)
    addTimer(25, addCallback)
    addTimer(26, callback)
    timers[which]:cancel()
    timers[which] = nil
    checkTimers()
    await(deferred)
    checkTimers()
    for _, t in pairs(timers) do t:cancel() end  -- Twisted's tearDown
    timers = {}
  end))

  it("test_active", async(function()
    local dcall = reactor.callLater(0.01, deferred.callback, deferred, true)
    assert.is_true(dcall:active())
    assert.is_true(await(deferred))
    assert.is_false(dcall:active())
  end))
end)

describe("CallFromThreadTests (test/test_internet.py)", function()
  it("test_lotsOfThreadsAreScheduledCorrectly", async(function()
    local counter = 0
    local d = Deferred()
    for _ = 1, 100 do
      reactor.callFromThread(function()
        counter = counter + 1
        if counter == 100 then d:callback(true) end
      end)
    end
    assert.is_true(await(d))
  end))

  it("test_threadsAreRunInScheduledOrder", async(function()
    local order = {}
    local d = Deferred()
    reactor.callFromThread(appender(order), 1)
    reactor.callFromThread(appender(order), 2)
    reactor.callFromThread(appender(order), 3)
    reactor.callFromThread(reactor.callFromThread, d.callback, d, nil)
    await(d)
    assert.same({ 1, 2, 3 }, order)
  end))

  it("test_scheduledThreadsNotRunUntilReactorRuns", function()
    local counter = 0
    reactor.callFromThread(function()
      counter = 1
      reactor.stop()
    end)
    assert.equal(0, counter)
    run_for()
    assert.equal(1, counter)
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_threads.py

describe("ReactorThreadsTests (test/test_threads.py)", function()
  after_each(function() package.loaded["braid_reactor_port_spec"] = nil end)

  it("test_suggestThreadPoolSize", function()
    local before = threads._stats().max
    finally(function() reactor.suggestThreadPoolSize(before) end)
    reactor.suggestThreadPoolSize(34)
    assert.equal(34, threads._stats().max)
    reactor.suggestThreadPoolSize(4)
    assert.equal(4, threads._stats().max)
  end)

  it("test_callInThread", async(function()
    local d = Deferred()
    package.loaded["braid_reactor_port_spec"] = { result = function(v) d:callback(v) end }
    reactor.callInThread(function()
      local t = require("braid.threads")
      t.callFromThread("braid_reactor_port_spec.result", t.isInIOThread())
    end)
    assert.is_false(await(d))
  end))

  it("test_callFromThread", async(function()
    local firedByReactorThread, firedByOtherThread = Deferred(), Deferred()
    package.loaded["braid_reactor_port_spec"] = {
      fire = function() firedByOtherThread:callback(nil) end,
    }
    reactor.callInThread(function()
      require("braid.threads").callFromThread("braid_reactor_port_spec.fire")
    end)
    reactor.callFromThread(firedByReactorThread.callback, firedByReactorThread, nil)
    local r = await(defer.DeferredList({ firedByReactorThread, firedByOtherThread },
      { fireOnOneErrback = true }))
    assert.same({ { true }, { true } }, r)
  end))

  it("test_wakerOverflow", async(function()
    local n = 0
    package.loaded["braid_reactor_port_spec"] = { tick = function() n = n + 1 end }
    local r = await(threads.deferToThread(function()
      local t = require("braid.threads")
      for _ = 1, 100000 do
        local ok, e = pcall(t.callFromThread, "braid_reactor_port_spec.tick")
        if not ok then return tostring(e) end
      end
      return "ok"
    end))
    assert.equal("ok", r)
    assert.equal(100000, n)  -- a worker's calls run before its job's Deferred fires
  end))

  local function blocking(reactorFunc)
    return await(threads.deferToThread(function(name)
      local ok, r = pcall(require("braid.threads").blockingCallFromThread, name)
      return { ok = ok, r = r }
    end, "braid_reactor_port_spec." .. reactorFunc))
  end

  it("test_blockingCallFromThread", async(function()
    package.loaded["braid_reactor_port_spec"] = { f = function() return defer.succeed("foo") end }
    assert.same({ ok = true, r = "foo" }, blocking("f"))
  end))

  it("test_asyncBlockingCallFromThread", async(function()
    package.loaded["braid_reactor_port_spec"] = {
      f = function()
        local d = Deferred()
        reactor.callLater(0.1, d.callback, d, "egg")
        return d
      end,
    }
    assert.same({ ok = true, r = "egg" }, blocking("f"))
  end))

  it("test_errorBlockingCallFromThread", async(function()
    package.loaded["braid_reactor_port_spec"] = {
      f = function() return defer.fail(errors.RuntimeError("bar")) end,
    }
    assert.same({ ok = false, r = "RuntimeError: bar" }, blocking("f"))
  end))

  it("test_asyncErrorBlockingCallFromThread", async(function()
    package.loaded["braid_reactor_port_spec"] = {
      f = function()
        local d = Deferred()
        reactor.callLater(0.1, d.errback, d, errors.RuntimeError("spam"))
        return d
      end,
    }
    assert.same({ ok = false, r = "RuntimeError: spam" }, blocking("f"))
  end))
end)

describe("DeferredResultTests (test/test_threads.py)", function()
  it("test_deferredResult", async(function()
    assert.equal(7, await(threads.deferToThread(function(x, y) return x + (y or 5) end, 3, 4)))
  end))

  -- the error crosses as a LuaError carrying its text (threads.md)
  it("test_deferredFailure", async(function()
    local d = threads.deferToThread(function()
      error(require("braid.error").class("NewError")("new"))
    end)
    local f
    d:addErrback(function(e) f = e end)
    await(d)
    assert.is_true(f:check(errors.LuaError) ~= nil)
    assert.equal("NewError: new", f.value)
  end))

  it("test_deferredFailureAfterSuccess", async(function()
    local d = threads.deferToThread(function() return nil end)
    d:addCallback(function()
      return threads.deferToThread(function() return 1 // 0 end)
    end)
    local f
    d:addErrback(function(e) f = e end)
    await(d)
    assert.is_true(f:check(errors.LuaError) ~= nil)
    assert.matches("attempt to divide by zero", f.value, 1, true)
  end))
end)
