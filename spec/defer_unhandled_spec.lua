-- spec/defer_unhandled_spec.lua: covers lua/braid/defer.lua (unhandled
-- errors: GC sentinel, flushUnhandled, pendingUnhandled, debug info);
-- ported from LogTests in Twisted's src/twisted/test/test_defer.py.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"

local Deferred = defer.Deferred

local function fullgc()
  collectgarbage()
  collectgarbage()
end

describe("unhandled errors", function()
  local log = require "braid.log"
  local logged, events, savedLog, savedStream, observer

  before_each(function()
    fullgc()
    defer.pendingUnhandled(true)  -- drop what other specs left behind
    logged, events = {}, {}  -- the failure events; every error event
    savedLog = package.loaded["braid.log"]
    savedStream = log.setErrorStream({ write = function() end })
    observer = function(ev)
      if not ev.isError then return end
      events[#events + 1] = ev
      if ev.failure then logged[#logged + 1] = { failure = ev.failure, why = ev.why } end
    end
    log.addObserver(observer)
  end)

  after_each(function()
    log.removeObserver(observer)
    log.setErrorStream(savedStream)
    package.loaded["braid.log"] = savedLog
    defer.setDebugging(false)
  end)

  local function dropFailed(msg)
    local d = Deferred()
    d:addCallback(function() error(errors.ValueError(msg)) end)
    d:callback(1)
  end

  it("queues a report when a failed Deferred is collected and logs it on flush", function()
    dropFailed("zero division")
    fullgc()
    assert.same({}, logged)  -- __gc only queues
    local pending = defer.pendingUnhandled()
    assert.equal(1, #pending)
    assert.equal(errors.ValueError, pending[1].type)
    assert.equal(1, defer.flushUnhandled())
    assert.equal(1, #logged)
    assert.equal("Unhandled Error", logged[1].why)
    assert.equal("zero division", logged[1].failure.value.message)
    assert.matches("defer_unhandled_spec.lua", logged[1].failure:getTraceback())
    assert.equal(0, defer.flushUnhandled())
    assert.same({}, defer.pendingUnhandled())
  end)

  -- Twisted's LogTests._check: two error events, a critical one without a
  -- failure, then the failure
  it("logs two error events, as Twisted's: the notice, then the failure", function()
    dropFailed("two events")
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    assert.equal(2, #events)
    assert.same({ "critical", "braid.defer", "Unhandled error in Deferred:", true },
      { events[1].level, events[1].namespace, events[1].text, events[1].isError })
    assert.is_nil(events[1].failure)
    assert.equal("critical", events[2].level)
    assert.equal("braid.defer", events[2].namespace)
    assert.equal(errors.ValueError, events[2].failure.type)
    assert.matches("^Unhandled Error\nTraceback", events[2].text)
    assert.matches("ValueError: two events", events[2].text, 1, true)
  end)

  it("logs the debug records in the failure event when debugging is on", function()
    defer.setDebugging(true)
    dropFailed("debugged two")
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    assert.equal(2, #events)
    assert.equal("Unhandled error in Deferred:", events[1].text)
    assert.matches("^%(debug:  C: Deferred was created:\n", events[2].text)
    assert.matches("\nTraceback", events[2].text)
  end)

  it("reports a failed Deferred that refers to itself", function()
    (function()
      local d = Deferred()
      d.self = d
      d:addCallback(function() error(errors.ValueError("cycle")) end)
      d:callback(1)
    end)()
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    assert.equal("cycle", logged[1].failure.value.message)
  end)

  it("reports a Deferred made by fail and never handled", function()
    (function() defer.fail(errors.ValueError("never handled")) end)()
    fullgc()
    assert.equal(1, defer.flushUnhandled())
  end)

  it("reports nothing once an errback handled the failure", function()
    (function()
      local d = Deferred()
      d:addCallback(function() error("boom") end)
      d:callback(1)
      d:addErrback(function() end)
    end)()
    fullgc()
    assert.equal(0, defer.flushUnhandled())
    assert.same({}, logged)
  end)

  it("reports nothing for a failure returned by a callback to another Deferred", function()
    (function()
      local d = Deferred()
      d:addCallback(function() return defer.fail(errors.ValueError("zoop")) end)
      d:callback(nil)
      local errs = {}
      d:addErrback(function(f) errs[#errs + 1] = f end)
      assert.equal(1, #errs)
    end)()
    fullgc()
    assert.equal(0, defer.flushUnhandled())
  end)

  it("reports nothing when an errback chains the failed Deferred to another", function()
    (function()
      local bad = defer.fail(errors.ValueError("oh no"))
      local good = Deferred()
      bad:addErrback(function() return good end)
    end)()
    fullgc()
    assert.equal(0, defer.flushUnhandled())
  end)

  it("reports nothing for a failure taken by await", function()
    local ok, e
    (function()
      defer.inlineCallbacks(function()
        ok, e = pcall(defer.await, defer.fail(errors.ValueError("caught")))
      end)()
    end)()
    fullgc()
    assert.is_false(ok)  -- await raised the failure's error, which the pcall took
    assert.is_true(errors.ValueError:isinstance(e), tostring(e))
    assert.equal("caught", e.message)
    assert.equal(0, defer.flushUnhandled())
  end)

  it("reports a failure that escapes an inlineCallbacks function", function()
    (function()
      defer.inlineCallbacks(function() error(errors.ValueError("escaped")) end)()
    end)()
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    assert.equal("escaped", logged[1].failure.value.message)
  end)


  -- Twisted's _runCallbacks stops at a paused Deferred before it records
  -- the Failure for the report, and records it once unpause() runs the chain
  it("reports the failure of a paused Deferred only once it is unpaused", function()
    (function()
      local d = Deferred()
      d:pause()
      d:errback(errors.ValueError("paused, dropped"))
      local d2 = Deferred()
      d2:pause()
      d2:callback(failure.Failure(errors.ValueError("paused, errback added")))
      d2:addErrback(function() end)  -- not run: d2 stays paused
    end)()
    fullgc()
    assert.equal(0, defer.flushUnhandled())
    local kept = Deferred()
    kept:pause()
    kept:errback(errors.ValueError("unpaused"))
    kept:unpause()
    kept = nil
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    assert.equal("unpaused", logged[1].failure.value.message)
  end)

  it("does not report the failure of a Deferred paused twice and unpaused once", function()
    (function()
      local d = Deferred()
      d:pause()
      d:pause()
      d:errback(errors.ValueError("still paused"))
      d:unpause()
      assert.equal(1, d.paused)
    end)()
    fullgc()
    assert.equal(0, defer.flushUnhandled())
  end)

  -- unpaused inside callbacks nested past the depth where runs are put
  -- off (MAX_RUN_NEST), so its chain has not run when await looks at it
  it("gives await the failure of a Deferred unpaused where its run is put off", function()
    local d = Deferred()
    d:pause()
    d:errback(errors.ValueError("put off"))
    local caught
    local ds = {}
    for i = 1, 80 do ds[i] = Deferred() end
    for i = 1, 79 do ds[i]:addCallback(function() ds[i + 1]:callback(i) end) end
    ds[80]:addCallback(function()
      defer.inlineCallbacks(function()
        d:unpause()
        local ok, e = pcall(defer.await, d)
        caught = { ok, errors.ValueError:isinstance(e), e and e.message }
      end)()
    end)
    ds[1]:callback(0)
    assert.same({ false, true, "put off" }, caught)
    d = nil
    fullgc()
    assert.equal(0, defer.flushUnhandled())
  end)

  it("gives await the failure of a Deferred unpaused after it failed", function()
    local d = Deferred()
    d:pause()
    d:errback(errors.ValueError("after unpause"))
    d:unpause()
    local caught
    defer.inlineCallbacks(function()
      local ok, e = pcall(defer.await, d)
      caught = { ok, e.message }
    end)()
    assert.same({ false, "after unpause" }, caught)
    d = nil
    fullgc()
    assert.equal(0, defer.flushUnhandled())
  end)
  it("reports a Failure left in two Deferreds once", function()
    (function()
      local f = failure.Failure(errors.ValueError("shared"))
      defer.fail(f)
      defer.fail(f)
    end)()
    fullgc()
    assert.equal(1, defer.flushUnhandled())
  end)

  it("lets a spec helper take the pending reports so they are not logged", function()
    dropFailed("taken")
    fullgc()
    local taken = defer.pendingUnhandled(true)
    assert.equal(1, #taken)
    assert.equal("taken", taken[1].value.message)
    assert.same({}, defer.pendingUnhandled())
    assert.equal(0, defer.flushUnhandled())
    assert.same({}, logged)
  end)

  it("asks the reactor to wake once when a report is queued", function()
    local saved = package.loaded["braid.reactor"]
    local wakes = 0
    package.loaded["braid.reactor"] = { _wake = function() wakes = wakes + 1 end }
    finally(function() package.loaded["braid.reactor"] = saved end)
    dropFailed("a")
    dropFailed("b")
    fullgc()
    assert.equal(1, wakes)
    assert.equal(2, defer.flushUnhandled())
    dropFailed("c")
    fullgc()
    assert.equal(2, wakes)
    defer.flushUnhandled()
  end)

  it("reports a failed Deferred dropped while the reactor ran when run() ends", function()
    local reactor = require "braid.reactor"
    collectgarbage("stop")  -- only run()'s own collection can find it
    finally(function() collectgarbage("restart") end)
    local turns = {}
    reactor.callLater(0, function() dropFailed("dropped in a callback") end)
    reactor.callLater(0.01, function() turns[#turns + 1] = #logged end)
    reactor.callLater(0.02, reactor.stop)
    reactor.run()
    assert.same({ 0 }, turns)  -- nothing collected it while the reactor ran
    assert.equal(1, #logged)
    assert.equal("dropped in a callback", logged[1].failure.value.message)
  end)

  it("includes where the Deferred was made and fired when debugging", function()
    defer.setDebugging(true)
    local function makeIt()
      local d = Deferred()
      d:addCallback(function() error(errors.ValueError("debugged")) end)
      return d
    end
    local function fireIt(d) d:callback(1) end
    fireIt(makeIt())
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    local why = logged[1].why
    assert.matches("^%(debug:  C: Deferred was created:\n C:", why)
    assert.matches("in local 'makeIt'", why, 1, true)
    assert.matches(" I: First Invoker was:", why, 1, true)
    assert.matches("in local 'fireIt'", why, 1, true)
  end)

  it("writes to stderr when braid.log cannot be loaded", function()
    package.loaded["braid.log"] = nil
    local savedPreload = package.preload["braid.log"]
    package.preload["braid.log"] = function() error("no braid.log here") end
    local savedStderr = io.stderr
    local written = {}
    io.stderr = { write = function(_, ...) for _, s in ipairs({ ... }) do written[#written + 1] = s end end }
    finally(function()
      io.stderr = savedStderr
      package.preload["braid.log"] = savedPreload
    end)
    dropFailed("to stderr")
    fullgc()
    assert.equal(1, defer.flushUnhandled())
    local text = table.concat(written)
    assert.matches("^Unhandled error in Deferred:\nTraceback", text)
    assert.matches("ValueError: to stderr", text, 1, true)
  end)
end)
