-- spec for lua/braid/testing.lua (testing/results.lua, testing/async.lua):
-- successResultOf, failureResultOf, assertNoResult, wait, async,
-- flushLoggedErrors, cleanup hooks
local testing = require "braid.testing"
local task = require "braid.task"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local log = require "braid.log"
local reactor = require "braid.reactor"

local Deferred, await = defer.Deferred, defer.await

local TestException = errors.Error:extend("TestException")
local OtherException = errors.Error:extend("OtherException")
local SubException = TestException:extend("SubException")

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(cls:isinstance(e), "expected " .. cls.__name .. ", got " .. tostring(e))
  return e
end

-- the message of a raised string or busted failure
local function message_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  if type(e) == "table" and e.message ~= nil then return tostring(e.message) end
  return tostring(e)
end

-- run an async spec body here and return its failure message (nil: passed)
local function runAsync(f, opts)
  local ok, e = pcall(testing.async(f, opts))
  if ok then return nil end
  if type(e) == "table" and e.message ~= nil then return tostring(e.message) end
  return tostring(e)
end

-- core.monotonic advancing one second a look, for the default timeouts
-- (testing.wait and testing.async measure them with it), undone by finally
-- or by the function returned
local function fast_monotonic()
  local core = require "braid.core"
  local real = core.monotonic
  local t0, looks = real(), 0
  core.monotonic = function()
    looks = looks + 1
    return t0 + looks
  end
  local function restore() core.monotonic = real end
  finally(restore)
  return restore
end

local function contains(haystack, needle)
  assert.is_string(haystack)
  assert.is_truthy(haystack:find(needle, 1, true),
    ("expected %q in:\n%s"):format(needle, haystack))
end

describe("testing.Clock", function()
  it("is task.Clock", function()
    assert.are.equal(task.Clock, testing.Clock)
  end)
end)

describe("testing.successResultOf", function()
  it("returns the result of a fired Deferred and takes it", function()
    local d = defer.succeed("x")
    assert.are.equal("x", testing.successResultOf(d))
    assert.is_nil(d.result)
  end)

  it("raises 'found no result' for an unfired Deferred", function()
    contains(message_of(testing.successResultOf, Deferred()), "found no result instead")
  end)

  it("raises 'found failure result' with the traceback for a failed Deferred", function()
    local d = defer.fail(TestException("bad"))
    local msg = message_of(testing.successResultOf, d)
    contains(msg, "Success result expected on <Deferred")
    contains(msg, "found failure result instead")
    contains(msg, "TestException: bad")
    assert.is_nil(d.result)  -- the failure is handled
  end)

  it("raises a TypeError for a non-Deferred", function()
    raises(errors.TypeError, testing.successResultOf, 42)
  end)
end)

describe("testing.failureResultOf", function()
  it("returns the Failure of a failed Deferred and handles it", function()
    local d = defer.fail(TestException("bad"))
    local f = testing.failureResultOf(d)
    assert.is_true(failure.isFailure(f))
    assert.are.equal("bad", f.value.message)
    assert.is_nil(d.result)
  end)

  it("accepts a failure of any listed class or subclass", function()
    testing.failureResultOf(defer.fail(SubException()), OtherException, TestException)
  end)

  it("raises naming the expected classes for a failure of another class", function()
    local msg = message_of(testing.failureResultOf, defer.fail(OtherException("o")),
      TestException, SubException)
    contains(msg, "Failure of type (TestException or SubException) expected on")
    contains(msg, "found type OtherException instead")
  end)

  it("raises 'found no result' for an unfired Deferred", function()
    contains(message_of(testing.failureResultOf, Deferred()), "Failure result expected on")
    contains(message_of(testing.failureResultOf, Deferred()), "found no result instead")
  end)

  it("raises 'found success result' for a successful Deferred", function()
    contains(message_of(testing.failureResultOf, defer.succeed("ok")),
      "found success result ('ok') instead")
  end)
end)

describe("testing.assertNoResult", function()
  it("passes for an unfired Deferred and one waiting on another", function()
    testing.assertNoResult(Deferred())
    local inner = Deferred()
    local outer = defer.succeed(1):addCallback(function() return inner end)
    testing.assertNoResult(outer)
    inner:callback(2)
    assert.are.equal(2, testing.successResultOf(outer))
  end)

  it("raises for a fired Deferred and leaves a success result unchanged", function()
    local d = defer.succeed("here")
    contains(message_of(testing.assertNoResult, d), "No result expected on")
    assert.are.equal("here", d.result)
  end)

  it("swallows a failure result it reports", function()
    local d = defer.fail(TestException())
    contains(message_of(testing.assertNoResult, d), "No result expected on")
    assert.is_nil(d.result)
  end)
end)

describe("testing.wait", function()
  it("runs the reactor until the Deferred fires and returns its result", function()
    local d = Deferred()
    reactor.callLater(0.01, d.callback, d, "late")
    assert.are.equal("late", testing.wait(d))
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("returns the result of a Deferred that has already fired", function()
    assert.are.equal(5, testing.wait(defer.succeed(5)))
  end)

  it("raises the failure's value", function()
    local d = Deferred()
    reactor.callLater(0, d.errback, d, TestException("nope"))
    local e = raises(TestException, testing.wait, d)
    assert.are.equal("nope", e.message)
  end)

  it("raises defer.TimeoutError after the timeout and cancels the Deferred", function()
    local cancelled = false
    local d = Deferred(function() cancelled = true end)
    local e = raises(defer.TimeoutError, testing.wait, d, 0.02)
    assert.is_true(errors.TimeoutError:isinstance(e))
    contains(tostring(e), "0.02 seconds")
    assert.is_true(cancelled)
  end)

  it("gives up after 5 seconds when given no timeout", function()
    fast_monotonic()
    local e = raises(defer.TimeoutError, testing.wait, Deferred())
    assert.equal(5, e.timeout)
    contains(tostring(e), "testing.wait gave up after 5 seconds")
  end)

  it("raises ReactorAlreadyRunning when called while the loop runs", function()
    local got
    local d = Deferred()
    reactor.callLater(0, function()
      got = select(2, pcall(testing.wait, Deferred()))
      d:callback(nil)
    end)
    testing.wait(d)
    assert.is_true(errors.ReactorAlreadyRunning:isinstance(got), tostring(got))
  end)

  it("rejects a non-Deferred and a bad timeout", function()
    raises(errors.TypeError, testing.wait, 1)
    raises(errors.ValueError, testing.wait, Deferred(), -1)
    raises(errors.TypeError, testing.wait, Deferred(), "soon")
  end)
end)

describe("testing.async", function()
  it("runs the body as a coroutine where await works on real timers", testing.async(function()
    local start = reactor.seconds()
    local r = await(task.deferLater(reactor, 0.01, function() return "later" end))
    assert.are.equal("later", r)
    assert.is_true(reactor.seconds() - start >= 0.009)
    local d = Deferred()
    reactor.callLater(0, d.callback, d, 7)
    assert.are.equal(7, await(d))
  end))

  it("passes when the body returns and leaves nothing behind", function()
    assert.is_nil(runAsync(function()
      await(task.deferLater(reactor, 0))
    end))
  end)

  it("fails with the error's message and traceback when the body raises", function()
    local msg = runAsync(function()
      await(task.deferLater(reactor, 0))
      error(TestException("boom"))
    end)
    contains(msg, "TestException: boom")
    contains(msg, "Traceback")
    contains(msg, "testing_spec.lua")
  end)

  it("fails with an assertion's message when an assertion fails", function()
    local msg = runAsync(function()
      await(task.deferLater(reactor, 0))
      assert.are.equal(1, 2)
    end)
    contains(msg, "Expected objects to be equal.")
    -- a busted failure is reported as such: its message, without the
    -- traceback an error gets
    assert.is_nil(msg:find("Traceback", 1, true), msg)
    local ok, e = pcall(testing.async(function() assert.are.equal(1, 2) end))
    assert.is_false(ok)
    assert.are.equal("failure", type(e) == "table" and getmetatable(e).__type, tostring(e))
  end)

  it("does not count errors logged or failed Deferreds dropped before it began", function()
    local saved = log.setErrorStream({ write = function() end })
    log.err(TestException("logged before"), "before the spec")
    ;(function()
      local d = Deferred()
      d:errback(TestException("dropped before"))
    end)()
    local msg = runAsync(function() end)
    log.setErrorStream(saved)
    assert.is_nil(msg)
  end)

  it("fails after opts.timeout and cancels what the body awaits", function()
    local cancelled = false
    local msg = runAsync(function()
      await(Deferred(function() cancelled = true end))
    end, { timeout = 0.03 })
    contains(msg, "async spec timed out after 0.03 seconds")
    assert.is_true(cancelled)
  end)

  it("fails after 5 seconds when opts gives no timeout", function()
    fast_monotonic()
    local msg = runAsync(function() await(Deferred()) end)
    contains(msg, "async spec timed out after 5 seconds")
  end)

  it("fails with 'reactor unclean' for DelayedCalls left behind and cancels them", function()
    local call
    local msg = runAsync(function()
      call = reactor.callLater(10, function() end)
    end)
    contains(msg, "reactor unclean: DelayedCalls left behind (cancelled)")
    contains(msg, "testing_spec.lua")
    assert.is_false(call:active())
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("fails with 'reactor unclean' for callFromThread calls left behind and drops them", function()
    local runs = 0
    local function again()
      runs = runs + 1
      reactor.callFromThread(again)
    end
    local msg = runAsync(function() reactor.callFromThread(again) end)
    contains(msg, "reactor unclean: DelayedCalls left behind (cancelled)")
    contains(msg, "callFromThread calling function <spec/testing_spec.lua:")
    local before = runs
    reactor.iterate(0)
    assert.equal(before, runs)
  end)

  it("runs calls that are already due before checking for leftovers", function()
    local ran = false
    assert.is_nil(runAsync(function()
      reactor.callLater(0, function() ran = true end)
    end))
    assert.is_true(ran)
  end)

  it("does not blame a spec for DelayedCalls that existed before it", function()
    local before = reactor.callLater(10, function() end)
    local msg = runAsync(function() end)
    before:cancel()
    assert.is_nil(msg)
  end)

  it("fails when an error was logged and not flushed", function()
    local msg = runAsync(function()
      log.err(TestException("logged"), "something broke")
    end)
    contains(msg, "1 error(s) logged during the spec and not flushed")
    contains(msg, "something broke")
    contains(msg, "TestException: logged")
  end)

  it("passes when the logged errors are flushed with flushLoggedErrors", function()
    local flushed
    assert.is_nil(runAsync(function()
      log.err(TestException("one"))
      await(task.deferLater(reactor, 0))
      log.err(SubException("two"))
      flushed = testing.flushLoggedErrors(TestException)
    end))
    assert.are.equal(2, #flushed)
    assert.are.equal("one", flushed[1].value.message)
    assert.are.equal("two", flushed[2].value.message)
  end)

  it("keeps logged errors of other classes than those flushed", function()
    local msg = runAsync(function()
      log.err(TestException("mine"))
      log.err(OtherException("other"))
      assert.are.equal(1, #testing.flushLoggedErrors(TestException))
    end)
    contains(msg, "1 error(s) logged")
    contains(msg, "OtherException: other")
  end)

  it("fails when a failed Deferred is dropped unhandled", function()
    local msg = runAsync(function()
      defer.fail(TestException("dropped"))
    end)
    contains(msg, "Unhandled error in Deferred:")
    contains(msg, "TestException: dropped")
  end)

  it("lets flushLoggedErrors take a dropped failed Deferred's report", function()
    local flushed
    assert.is_nil(runAsync(function()
      defer.fail(TestException("dropped"))
      flushed = testing.flushLoggedErrors(TestException)
    end))
    assert.are.equal(1, #flushed)
  end)

  it("does not print the errors of the spec to stderr", function()
    local lines = {}
    local sink = { write = function(_, s) lines[#lines + 1] = s end }
    local saved = log.setErrorStream(sink)
    runAsync(function() log.err(TestException("quiet")) end)
    assert.are.equal(sink, log.setErrorStream(saved))
    assert.are.same({}, lines)
  end)

  it("reports the body's error together with what it left behind", function()
    local msg = runAsync(function()
      reactor.callLater(10, function() end)
      error(TestException("first"))
    end)
    contains(msg, "TestException: first")
    contains(msg, "reactor unclean: DelayedCalls")
    assert.is_true(msg:find("first", 1, true) < msg:find("reactor unclean", 1, true))
  end)

  it("stops and reports cooperative tasks left running", function()
    local d
    local msg = runAsync(function()
      d = task.coiterate(function() return true end)
    end)
    contains(msg, "reactor unclean: 1 cooperative task(s) left running (stopped)")
    testing.failureResultOf(d, task.TaskStopped)
    assert.are.same({}, task._theCooperator._tasks)
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("leaves the cooperative tasks started before the spec running", function()
    local coop = task._theCooperator
    local steps = 0
    local older = task.cooperate(function() steps = steps + 1 return true end)
    finally(function() pcall(older.stop, older) end)
    assert.is_nil(runAsync(function() end))
    assert.are.same({ older }, coop._tasks)
    assert.is_true(coop._delayedCall:active())
    local before = steps
    testing.wait(task.deferLater(reactor, 0.02, function() end))
    assert.is_true(steps > before)
    older:stop()
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("reports a call of the spec that falls due while the cleanup runs the loop", function()
    local core = require "braid.core"
    local remove = testing.addCleanupHook(function()
      local t = core.monotonic() + 0.1  -- a hook that takes its time
      while core.monotonic() < t do end
    end)
    finally(remove)
    local ran = false
    local msg = runAsync(function()
      reactor.callLater(0.05, function() ran = true error(TestException("late")) end)
    end)
    contains(msg, "reactor unclean: DelayedCalls left behind (cancelled):")
    contains(msg, "spec/testing_spec.lua:")
    assert.is_false(ran)
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("stops the connections that stopping the spec's ones starts", function()
    local protocol = require "braid.protocol"
    local tcp = require "braid.tcp"
    local port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50,
      "127.0.0.1")
    finally(function() testing.wait(port:stopListening()) end)
    local CF = protocol.ClientFactory:extend("Reconnecting")
    CF.protocol = protocol.Protocol
    local attempts = 0
    function CF:clientConnectionLost(connector)
      attempts = attempts + 1
      connector:connect()  -- at once, as naive reconnecting code does
    end
    local msg = runAsync(function()
      local d = Deferred()
      local f = CF()
      function f:buildProtocol(addr)
        if not d.called then reactor.callLater(0, d.callback, d) end
        return CF.buildProtocol(self, addr)
      end
      reactor.connectTCP("127.0.0.1", port:getHost().port, f)
      await(d)
    end)
    contains(msg, "reactor unclean: connection <TCP transport")
    assert.is_true(attempts >= 1)
    assert.are.same({}, tcp._testingConnecting())
    -- nothing of it is left open for the next spec
    assert.is_nil(runAsync(function() end))
  end)

  it("fails with what a cleanup hook reports and waits for its Deferred", function()
    local closed = false
    local remove = testing.addCleanupHook(function()
      local d = task.deferLater(reactor, 0.01, function() closed = true end)
      return { "port 1234 still listening" }, d
    end)
    local msg = runAsync(function() end)
    remove()
    contains(msg, "reactor unclean: port 1234 still listening")
    assert.is_true(closed)
    assert.is_nil(runAsync(function() end))
  end)

  it("passes when every cleanup hook returns nil", function()
    local calls = 0
    local remove = testing.addCleanupHook(function() calls = calls + 1 end)
    assert.is_nil(runAsync(function() end))
    remove()
    assert.are.equal(1, calls)
    assert.are.same({}, testing._cleanupHooks)
  end)

  it("asks loaded braid modules for leftovers through _testingLeftovers", function()
    local asked = 0
    package.loaded["braid.zz_fake_resource"] = {
      _testingLeftovers = function()
        asked = asked + 1
        return { "fake connection to 10.0.0.1" }
      end,
    }
    local msg = runAsync(function() end)
    package.loaded["braid.zz_fake_resource"] = nil
    assert.are.equal(1, asked)
    contains(msg, "reactor unclean: fake connection to 10.0.0.1")
  end)

  it("stops a listening port and aborts a connection the spec left open, and says so", function()
    local protocol = require "braid.protocol"
    local lost, port = {}, nil
    local Server = protocol.Protocol:extend("LeftServer")
    function Server:connectionLost(reason) lost[#lost + 1] = "server " .. reason.type.__name end
    local Client = protocol.Protocol:extend("LeftClient")
    function Client:connectionLost(reason) lost[#lost + 1] = "client " .. reason.type.__name end
    local msg = runAsync(function()
      port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), 50, "127.0.0.1")
      local connected = Deferred()
      local cf = protocol.ClientFactory.forProtocol(Client)
      function cf:buildProtocol(addr)
        local p = protocol.ClientFactory.buildProtocol(self, addr)
        local made = p.connectionMade
        p.connectionMade = function(pp) if made then made(pp) end connected:callback(nil) end
        return p
      end
      reactor.connectTCP("127.0.0.1", port:getHost().port, cf)
      await(connected)
    end)
    contains(msg, "reactor unclean: listening port <")
    contains(msg, "(stopped)")
    contains(msg, "reactor unclean: connection")
    contains(msg, "of LeftClient (aborted)")
    assert.is_true(port.fileno and port:fileno() == -1)
    assert.is_true(#lost >= 1)
    assert.is_nil(runAsync(function() end))
  end)

  it("does not blame a spec for a port opened before it started", function()
    local protocol = require "braid.protocol"
    local port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
    assert.is_nil(runAsync(function() end))
    assert.is_true(port:fileno() >= 0)
    testing.wait(port:stopListening())
  end)

  it("does not blame a spec for a port opened before it that the spec added back as a reader", function()
    local protocol = require "braid.protocol"
    local port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
    finally(function() testing.wait(port:stopListening()) end)
    reactor.removeReader(port)
    assert.same({}, reactor.getReaders())
    assert.is_nil(runAsync(function() reactor.addReader(port) end))
    assert.same({ port }, reactor.getReaders())
  end)

  it("raises ReactorAlreadyRunning when run inside the loop", function()
    local got
    local d = Deferred()
    reactor.callLater(0, function()
      got = select(2, pcall(testing.async(function() end)))
      d:callback(nil)
    end)
    testing.wait(d)
    assert.is_true(errors.ReactorAlreadyRunning:isinstance(got), tostring(got))
  end)

  it("rejects a non-function body and bad options", function()
    raises(errors.TypeError, testing.async, 1)
    raises(errors.TypeError, testing.async, function() end, 5)
    raises(errors.ValueError, testing.async, function() end, { timeout = 0 })
  end)
end)

describe("testing.flushLoggedErrors outside async specs", function()
  it("returns the errors logged since the last flush", function()
    local saved = log.setErrorStream(nil)
    testing.flushLoggedErrors()
    log.err(TestException("a"))
    log.msg("not an error")
    local got = testing.flushLoggedErrors()
    log.setErrorStream(saved)
    assert.are.equal(1, #got)
    assert.are.equal("a", got[1].value.message)
    assert.are.same({}, testing.flushLoggedErrors())
  end)
end)

describe("testing.async's cleanup", function()
  -- how many times `needle` occurs in `s`
  local function count(s, needle)
    local n, at = 0, 1
    while true do
      local i = s:find(needle, at, true)
      if not i then return n end
      n, at = n + 1, i + #needle
    end
  end

  describe("with thread jobs", function()
    local threads = require "braid.threads"
    local GATE = "braid_testing_spec_gate"
    -- runs in a worker (only _ENV as upvalue): waits at the gate, then fails
    local function gated_failure()
      require("braid.threads").blockingCallFromThread("braid_testing_spec_gate.enter")
      error("worker failed late", 0)
    end

    it("fails a spec that leaves jobs running past the grace, drops their results and "
        .. "does not wait for them again", function()
      local waiting, opened = {}, false
      local function open()
        opened = true
        for _, d in ipairs(waiting) do d:callback(nil) end
        waiting = {}
      end
      package.loaded[GATE] = { enter = function()
        if opened then return defer.succeed(nil) end
        local d = Deferred()
        waiting[#waiting + 1] = d
        return d
      end }
      finally(function() open() package.loaded[GATE] = nil end)
      local restore = fast_monotonic()
      local msg = runAsync(function()
        threads.deferToThread(gated_failure)
        threads.callInThread(gated_failure)
      end)
      restore()
      contains(msg, "reactor unclean: 1 deferToThread job(s) still running after 2 s "
        .. "(their results will be dropped)")
      contains(msg, "reactor unclean: 1 callInThread job(s) still running after 2 s "
        .. "(an error they raise will be logged later)")
      -- a later spec neither waits for them nor is blamed for them
      local core = require "braid.core"
      local t0 = core.monotonic()
      assert.is_nil(runAsync(function() end))
      assert.is_true(core.monotonic() - t0 < 1)
      local saved = log.setErrorStream(nil)
      testing.flushLoggedErrors()
      open()
      testing.wait(threads._whenIdle())
      -- logged meanwhile: the callInThread job's error, and nothing of the
      -- deferToThread job's
      local errs = testing.flushLoggedErrors()
      log.setErrorStream(saved)
      assert.are.equal(1, #errs)
      assert.are.equal("worker failed late", errs[1].value)
      assert.is_nil(runAsync(function() end))
    end)
  end)

  it("removes and reports readers and writers added during the spec, and keeps older ones", function()
    local protocol = require "braid.protocol"
    local function listening()
      return reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
    end
    local port, port2 = listening(), listening()  -- one fd per descriptor
    local fd = port2:fileno()
    local function descriptor(p)
      return { fileno = function() return p:fileno() end, doRead = function() end,
               doWrite = function() end, connectionLost = function() end }
    end
    local old, new = descriptor(port), descriptor(port2)
    reactor.addReader(old)
    finally(function()
      reactor.removeReader(old)
      reactor.removeReader(new)
      reactor.removeWriter(new)
      testing.wait(port:stopListening())
      testing.wait(port2:stopListening())
    end)
    local msg = runAsync(function()
      reactor.addReader(new)
      reactor.addWriter(new)
    end)
    contains(msg, ("reactor unclean: reader and writer descriptor fd %d (removed)"):format(fd))
    assert.are.equal(1, count(msg, "reactor unclean"))
    -- the ports listen still: readers too, after the descriptors
    assert.are.same({ old, port, port2 }, reactor.getReaders())
    assert.are.same({}, reactor.getWriters())
  end)

  it("stops a connection attempt the spec left in progress, and says so once", function()
    local protocol = require "braid.protocol"
    local resolver = require "braid.resolver"
    local real = resolver.getHostByName
    resolver.getHostByName = function() return Deferred() end  -- a lookup that never ends
    finally(function() resolver.getHostByName = real end)
    local events = {}
    local CF = protocol.ClientFactory:extend("CF")
    function CF:clientConnectionFailed(_, r) events[#events + 1] = "failed " .. r.type.__name end
    function CF:stopFactory() events[#events + 1] = "stopFactory" end
    local connector
    local msg = runAsync(function()
      connector = reactor.connectTCP("stuck.invalid", 80, CF())
    end)
    contains(msg, "reactor unclean: connection attempt to stuck.invalid:80 (stopped)")
    assert.are.equal(1, count(msg, "reactor unclean"))
    assert.are.same({ "failed UserError", "stopFactory" }, events)
    assert.are.equal("disconnected", connector.state)
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("does not count what stopping the leftovers logs as errors of the spec", function()
    local msg = runAsync(function()
      task.coiterate(function() return true end)
    end)
    contains(msg, "reactor unclean: 1 cooperative task(s) left running (stopped)")
    assert.are.equal(0, count(msg, "error(s) logged"))
    local remove = testing.addCleanupHook(function()
      log.err(TestException("raised by the cleanup"))
      return { "a fake leftover" }
    end)
    msg = runAsync(function() end)
    remove()
    contains(msg, "reactor unclean: a fake leftover")
    assert.are.equal(0, count(msg, "raised by the cleanup"))
  end)

  it("does not carry an error line without a failure into a later spec's message", function()
    local logger = log.Logger("testing_spec_notice")
    assert.is_nil(runAsync(function() logger:error("spec A: disk almost full") end))
    local msg = runAsync(function()
      logger:failure("spec B: request failed", failure.Failure(TestException("bad")))
    end)
    contains(msg, "spec B: request failed")
    contains(msg, "TestException: bad")
    assert.are.equal(0, count(msg, "spec A"))
  end)
end)

describe("testing.async's body and options", function()
  it("keeps the failure message when the body is a callable table, naming the spec", function()
    local body = setmetatable({}, { __call = function() reactor.callLater(10, function() end) end })
    local msg = runAsync(body)
    assert.is_truthy(msg:match("^[^\n]*testing_spec%.lua:%d+: reactor unclean: DelayedCalls"), msg)
  end)

  it("refuses to run inside another async spec and keeps the outer spec's logged errors", function()
    local ok, e
    local msg = runAsync(function()
      log.err(TestException("logged by the outer spec"))
      ok, e = pcall(testing.async(function() end))
    end)
    assert.is_false(ok)
    assert.is_true(errors.ReactorAlreadyRunning:isinstance(e), tostring(e))
    contains(tostring(e), "testing.async cannot run inside an async spec")
    contains(msg, "1 error(s) logged during the spec")
    contains(msg, "TestException: logged by the outer spec")
  end)

  it("names opts.timeout and refuses unknown options", function()
    local function f() end
    assert.are.equal("TypeError: bad option 'timeout' to 'async' (number expected, got string)",
      tostring(raises(errors.TypeError, testing.async, f, { timeout = "5" })))
    assert.are.equal("ValueError: bad option 'timeout' to 'async' (timeout must be > 0, got 0)",
      tostring(raises(errors.ValueError, testing.async, f, { timeout = 0 })))
    assert.are.equal("ValueError: bad option 'timout' to 'async' (unknown option; the option "
      .. "is timeout)", tostring(raises(errors.ValueError, testing.async, f, { timout = 1 })))
  end)
end)

describe("the class arguments of flushLoggedErrors and failureResultOf", function()
  it("must be classes (a misspelt one is nil)", function()
    assert.are.equal("TypeError: bad argument #1 to 'flushLoggedErrors' (error class expected, "
      .. "got nil)", tostring(raises(errors.TypeError, testing.flushLoggedErrors, nil)))
    assert.are.equal("TypeError: bad argument #2 to 'flushLoggedErrors' (error class expected, "
      .. "got string)", tostring(raises(errors.TypeError, testing.flushLoggedErrors, TestException,
        "ValueError")))
    local d = defer.fail(TestException("t"))
    assert.are.equal("TypeError: bad argument #3 to 'failureResultOf' (error class expected, "
      .. "got nil)", tostring(raises(errors.TypeError, testing.failureResultOf, d, TestException, nil)))
    assert.are.equal("TypeError: bad argument #2 to 'failureResultOf' (error class expected, "
      .. "got string)", tostring(raises(errors.TypeError, testing.failureResultOf, d, "TestException")))
    testing.failureResultOf(d, TestException)  -- still there, and taken now
  end)
end)

describe("the messages of trial's helpers", function()
  it("show the Deferred once its result is taken, and a Failure briefly, as trial's", function()
    local msg = message_of(testing.assertNoResult, defer.fail(TestException("vv")))
    contains(msg, "current result: nil>, found <Failure TestException: vv> instead")
    assert.is_nil(msg:find("stack traceback", 1, true))
    msg = message_of(testing.failureResultOf, defer.fail(TestException("w")), OtherException)
    contains(msg, "current result: nil>, found type TestException instead: ")
    local _, n = msg:gsub("stack traceback", "")
    assert.are.equal(1, n)
    msg = message_of(testing.successResultOf, defer.fail(TestException("s")))
    local _, m = msg:gsub("stack traceback", "")
    assert.are.equal(1, m)
  end)
end)

describe("testing.async under busted", function()
  -- busted names the first frame outside itself: the re-raise in braid's
  -- async.lua, until it was made from the spec's own line
  it("reports busted's pending mark inside an async spec at the spec's line", function()
    local proc = require "helpers.proc"
    local path = require("helpers.tmp").path("_spec.lua")
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    f:write('local testing = require "braid.testing"\n',
      'it("waits", testing.async(function() pending "later" end))\n')
    f:close()
    local p = assert(io.popen(("cd %s && %s /usr/bin/busted -o utfTerminal %s 2>&1"):format(
      proc.quote(proc.root), proc.quote(proc.BIN), proc.quote(path))))
    local out = p:read("a")
    p:close()
    assert.matches("0 successes / 0 failures / 0 errors / 1 pending", out, 1, true)
    assert.truthy(out:find(path .. " @ 2", 1, true), out)
  end)
end)
