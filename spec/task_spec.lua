-- spec for lua/braid/task.lua: Clock, LoopingCall, deferLater, react
-- (ported from Twisted's twisted/test/test_task.py)
local task = require "braid.task"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local testing = require "braid.testing"
local log = require "braid.log"

local Clock, LoopingCall = task.Clock, task.LoopingCall
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

local TestException = errors.Error:extend("TestException")

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(cls:isinstance(e), "expected " .. cls.__name .. ", got " .. tostring(e))
  return e
end

local function loopingCall(clock, f, ...)
  local lc = LoopingCall(f, ...)
  lc.clock = clock
  return lc
end

describe("task.Clock", function()
  it("starts at time 0", function()
    assert.are.equal(0, Clock():seconds())
  end)

  it("hands back a DelayedCall with its time and active state from callLater", function()
    local c = Clock()
    local call = c:callLater(1, function() end, 1, 2)
    assert.are.equal(1, call:getTime())
    assert.is_true(call:active())
    assert.is_false(call.called)
    assert.is_false(call.cancelled)
  end)

  it("returns a new DelayedCall from each callLater", function()
    local c = Clock()
    local call1 = c:callLater(10, function() end)
    local call2 = c:callLater(1, function() end)
    assert.are_not.equal(call1, call2)
  end)

  it("passes the extra arguments of callLater, nils included", function()
    local c = Clock()
    local got
    c:callLater(1, function(...) got = table.pack(...) end, "a", nil, 3, nil)
    c:advance(1)
    assert.are.same({ n = 4, "a", nil, 3, nil }, got)
  end)

  it("does not run a cancelled call", function()
    local c = Clock()
    local ran = false
    local call = c:callLater(1, function() ran = true end)
    call:cancel()
    assert.is_false(call:active())
    assert.is_true(call.cancelled)
    c:advance(2)
    assert.is_false(ran)
    assert.are.same({}, c:getDelayedCalls())
  end)

  it("runs calls once advance reaches their time", function()
    local events = {}
    local c = Clock()
    local call = c:callLater(2, function() events[#events + 1] = "x" end)
    c:advance(1)
    assert.are.same({}, events)
    c:advance(1)
    assert.are.same({ "x" }, events)
    assert.is_false(call:active())
    assert.is_true(call.called)
  end)

  it("marks a call as called before running it (cancel inside raises AlreadyCalled)", function()
    local c = Clock()
    local e
    local call
    call = c:callLater(1, function() e = select(2, pcall(call.cancel, call)) end)
    c:advance(1)
    assert.is_true(errors.AlreadyCalled:isinstance(e))
  end)

  it("raises AlreadyCancelled and AlreadyCalled from cancel, reset and delay", function()
    local c = Clock()
    local cancelled = c:callLater(1, function() end)
    cancelled:cancel()
    raises(errors.AlreadyCancelled, cancelled.cancel, cancelled)
    raises(errors.AlreadyCancelled, cancelled.reset, cancelled, 1)
    raises(errors.AlreadyCancelled, cancelled.delay, cancelled, 1)
    local called = c:callLater(1, function() end)
    c:advance(1)
    raises(errors.AlreadyCalled, called.cancel, called)
    raises(errors.AlreadyCalled, called.reset, called, 1)
    raises(errors.AlreadyCalled, called.delay, called, 1)
  end)

  it("checks called/cancelled before the argument of reset and delay, as Twisted's", function()
    local c = Clock()
    local cancelled = c:callLater(1, function() end)
    cancelled:cancel()
    local called = c:callLater(1, function() end)
    c:advance(1)
    for _, bad in ipairs({ -1, "x", 0 / 0, math.huge }) do
      raises(errors.AlreadyCancelled, cancelled.reset, cancelled, bad)
      raises(errors.AlreadyCancelled, cancelled.delay, cancelled, bad)
      raises(errors.AlreadyCalled, called.reset, called, bad)
      raises(errors.AlreadyCalled, called.delay, called, bad)
    end
    local live = c:callLater(1, function() end)
    raises(errors.ValueError, live.reset, live, -1)
    raises(errors.TypeError, live.delay, live, "x")
    assert.equal(2, live:getTime())
  end)

  it("rejects a negative or NaN delay with a ValueError naming callLater", function()
    local c = Clock()
    local e = raises(errors.ValueError, c.callLater, c, -1, function() end)
    assert.matches("'callLater'", tostring(e), 1, true)
    assert.matches("delay", tostring(e), 1, true)
    raises(errors.ValueError, c.callLater, c, 0 / 0, function() end)
    raises(errors.TypeError, c.callLater, c, 1, "not a function")
    assert.are.same({}, c:getDelayedCalls())
  end)

  -- Clock's delay(NaN) raised TypeError and took math.huge (getTime() inf),
  -- where the reactor's DelayedCall raises ValueError for both
  it("rejects a delay that is no finite number with the reactor's error classes", function()
    local reactor = require "braid.reactor"
    local c = Clock()
    local calls = { c:callLater(5, function() end), reactor.callLater(5, function() end) }
    finally(function() calls[2]:cancel() end)
    for _, dc in ipairs(calls) do
      for _, bad in ipairs({ 0 / 0, math.huge, -math.huge }) do
        local ok, e = pcall(dc.delay, dc, bad)
        assert.is_false(ok)
        assert.is_true(errors.ValueError:isinstance(e), tostring(e))
        assert.matches("finite", tostring(e))
      end
      raises(errors.TypeError, dc.delay, dc, "x")
    end
    assert.equal(5, calls[1]:getTime())
  end)

  it("rejects a finite delay that takes the call's time out of range, as the reactor's", function()
    local reactor = require "braid.reactor"
    local calls = { Clock():callLater(1e308, function() end), reactor.callLater(1e308, function() end) }
    finally(function() calls[2]:cancel() end)
    for _, dc in ipairs(calls) do
      local before = dc:getTime()
      assert.has_error(function() dc:delay(1e308) end,
        "ValueError: bad argument #1 to 'delay' (the new time is out of range)")
      assert.equal(before, dc:getTime())  -- left where it was
    end
    assert.equal(1e308, calls[1]:getTime())
  end)

  it("delays a call by the given amount", function()
    local events = {}
    local c = Clock()
    local call = c:callLater(1, function(a, b) events[#events + 1] = { a, b } end, 1, 2)
    call:delay(1)
    assert.are.equal(2, call:getTime())
    c:advance(1.5)
    assert.are.same({}, events)
    c:advance(1.0)
    assert.are.same({ { 1, 2 } }, events)
  end)

  it("resets a call to a later time", function()
    local events = {}
    local c = Clock()
    local call = c:callLater(2, function(a, b) events[#events + 1] = { a, b } end, 1, 2)
    c:advance(1)
    call:reset(3)
    assert.are.equal(4, call:getTime())
    c:advance(2)
    assert.are.same({}, events)
    c:advance(1)
    assert.are.same({ { 1, 2 } }, events)
  end)

  it("resets a call to a sooner time", function()
    local events = {}
    local c = Clock()
    local call = c:callLater(4, function(a, b) events[#events + 1] = { a, b } end, 1, 2)
    call:reset(3)
    assert.are.equal(3, call:getTime())
    c:advance(3)
    assert.are.same({ { 1, 2 } }, events)
  end)

  it("lists its pending calls in the order they will run", function()
    local c = Clock()
    local call2 = c:callLater(2, function() end)
    local call = c:callLater(1, function() end)
    assert.are.same({ call, call2 }, c:getDelayedCalls())
    assert.are.same({}, Clock():getDelayedCalls())
  end)

  it("runs a call scheduled after a reset call in deadline order", function()
    local result = {}
    local clock = Clock()
    local function logtime(n) result[#result + 1] = { n, clock:seconds() } end
    local call_a = clock:callLater(1.0, logtime, "a")
    call_a:reset(3.0)
    clock:callLater(2.0, logtime, "b")
    clock:pump({ 1, 1, 1 })
    assert.are.same({ { "b", 2.0 }, { "a", 3.0 } }, result)
  end)

  it("keeps calls ordered when a call is reset past another", function()
    local result = {}
    local clock = Clock()
    local function logtime(n) result[#result + 1] = { n, clock:seconds() } end
    local call_a = clock:callLater(1.0, logtime, "a")
    clock:callLater(2.0, logtime, "b")
    call_a:reset(3.0)
    clock:pump({ 1, 1, 1 })
    assert.are.same({ { "b", 2.0 }, { "a", 3.0 } }, result)
  end)

  it("keeps calls ordered when a call is reset from inside another call", function()
    local result = {}
    local clock = Clock()
    local function logtime(n) result[#result + 1] = { n, clock:seconds() } end
    local call_b = clock:callLater(2.0, logtime, "b")
    clock:callLater(1.0, function() call_b:reset(3.0) end)
    clock:callLater(3.0, logtime, "c")
    clock:pump({ 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 })
    assert.are.same({ { "c", 3.0 }, { "b", 4.0 } }, result)
  end)

  -- Twisted's Clock sorts its list of calls (a stable sort by getTime)
  -- when a call is scheduled and around each call advance runs; reset and
  -- delay only change the time, so a moved call keeps its list position
  -- among calls due at the same time. (Expected values from Twisted 22.4.)
  it("runs a reset or delayed call in its list position among calls due at the same time",
    function()
      local order = {}
      local c = Clock()
      local function rec(n) order[#order + 1] = n end
      local a = c:callLater(1, rec, "a")
      c:callLater(1, rec, "b")
      local d = c:callLater(0.5, rec, "d")
      c:callLater(1, rec, "c")
      a:reset(1)     -- the same time: a stays first of those due at 1
      d:delay(0.5)   -- due at 1 too, still ahead of a
      c:advance(1)
      assert.are.same({ "d", "a", "b", "c" }, order)
    end)

  it("runs a call reset to the time of a later one before it", function()
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = { n, c:seconds() } end
    local a = c:callLater(1, rec, "a")
    c:callLater(2, rec, "b")
    a:reset(2)
    c:advance(2)
    assert.are.same({ { "a", 2 }, { "b", 2 } }, order)
  end)

  it("runs a call delayed to the time of a later one before it", function()
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = { n, c:seconds() } end
    local a = c:callLater(1, rec, "a")
    c:callLater(1.5, rec, "b")
    a:delay(0.5)
    c:advance(2)
    assert.are.same({ { "a", 2 }, { "b", 2 } }, order)
  end)

  it("keeps the position of a call reset from inside another call", function()
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = { n, c:seconds() } end
    local b = c:callLater(2, rec, "b")
    c:callLater(1, function() rec("a"); b:reset(1) end)
    c:callLater(2, rec, "c")
    c:advance(1)
    c:advance(1)
    assert.are.same({ { "a", 1 }, { "b", 2 }, { "c", 2 } }, order)
  end)

  it("sorts the calls moved by reset and delay when a call is scheduled", function()
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = n end
    local a = c:callLater(1, rec, "a")
    local b = c:callLater(2, rec, "b")
    c:callLater(3, rec, "c")
    a:reset(3)
    b:delay(1)
    local listed = {}
    for i, dc in ipairs(c:getDelayedCalls()) do listed[i] = ("%s@%g"):format(dc.args[1], dc:getTime()) end
    assert.are.same({ "a@3", "b@3", "c@3" }, listed)
    c:callLater(3, rec, "d")
    c:advance(3)
    assert.are.same({ "a", "b", "c", "d" }, order)
  end)

  it("sorts many moved calls by time, keeping their list order on ties", function()
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = n end
    local dcs = {}
    for i = 1, 20 do dcs[i] = c:callLater(i, rec, i) end
    -- the even ones to time 30, in reverse; the odd ones to time 25
    for i = 20, 1, -1 do
      if i % 2 == 0 then dcs[i]:reset(30) else dcs[i]:delay(25 - i) end
    end
    c:advance(30)
    assert.are.same({ 1, 3, 5, 7, 9, 11, 13, 15, 17, 19,
                      2, 4, 6, 8, 10, 12, 14, 16, 18, 20 }, order)
  end)

  it("keeps a reset deadline as base time plus delay, the float Twisted gets", function()
    -- Twisted: reset to a later time stores newTime - time and getTime()
    -- adds it back: 0.3 + (0.9 - 0.3) is 0.9000000000000001
    local order = {}
    local c = Clock()
    local function rec(n) order[#order + 1] = n end
    local a = c:callLater(0.3, rec, "a")
    a:reset(0.9)
    assert.are.equal(0.3 + (0.9 - 0.3), a:getTime())
    assert.are_not.equal(0.9, a:getTime())
    c:callLater(0.9, rec, "b")
    c:advance(0.9)
    assert.are.same({ "b" }, order)
    c:advance(1e-9)
    assert.are.same({ "b", "a" }, order)
  end)

  it("runs calls scheduled during advance when they fall due within it", function()
    local order = {}
    local c = Clock()
    c:callLater(1, function()
      order[#order + 1] = "first"
      c:callLater(0, function() order[#order + 1] = "zero" end)
      c:callLater(5, function() order[#order + 1] = "later" end)
    end)
    c:callLater(2, function() order[#order + 1] = "second" end)
    c:advance(2)
    assert.are.same({ "first", "second", "zero" }, order)
    assert.are.equal(1, #c:getDelayedCalls())
    assert.are.equal(7, c:getDelayedCalls()[1]:getTime())
  end)

  it("lets an error from a call propagate out of advance and keeps the rest pending", function()
    local c = Clock()
    local ran = false
    c:callLater(1, function() error(TestException("boom")) end)
    c:callLater(1, function() ran = true end)
    raises(TestException, c.advance, c, 1)
    assert.is_false(ran)
    c:advance(0)
    assert.is_true(ran)
  end)

  it("pumps a list of timings one advance at a time", function()
    local times = {}
    local c = Clock()
    for _, t in ipairs({ 1, 2, 4 }) do
      c:callLater(t, function() times[#times + 1] = c:seconds() end)
    end
    c:pump({ 1.5, 1, 2 })
    assert.are.same({ 1.5, 2.5, 4.5 }, times)
  end)

  it("rejects a negative advance", function()
    raises(errors.ValueError, Clock().advance, Clock(), -1)
  end)

  it("works as the clock of Deferred:addTimeout", function()
    local c = Clock()
    local d = defer.Deferred():addTimeout(10, c)
    c:advance(9)
    assertNoResult(d)
    c:advance(1)
    failureResultOf(d, defer.TimeoutError)
  end)
end)

describe("task.LoopingCall", function()
  it("uses the reactor as its default clock", function()
    local call = LoopingCall(function() end)
    assert.are.equal(require("braid.reactor"), call.clock)
  end)

  -- spec/task_diff_spec.lua found this against Twisted 22.4, which gives the
  -- same calls and reports its assertion as an unhandled error in a Deferred
  it("keeps the clock going when a restarted loop finishes a second time", function()
    local clock, d = Clock(), defer.Deferred()
    local seen = {}
    local lc = loopingCall(clock, function()
      seen[#seen + 1] = ("f%d@%g"):format(#seen + 1, clock:seconds())
      if #seen == 1 then return d end
    end)
    lc:start(1, true)  -- f1 returns d: nothing scheduled until it fires
    lc:stop()
    local started = lc:start(1, true)  -- f2; f3 due at 1
    d:callback(nil)  -- the first chain goes on too: two chains
    lc:stop()
    assert.equal(lc, successResultOf(started))
    clock:callLater(1, function() seen[#seen + 1] = ("other@%g"):format(clock:seconds()) end)
    local saved = package.loaded["braid.log"]
    package.loaded["braid.log"] = { err = function() end }
    finally(function() package.loaded["braid.log"] = saved end)
    clock:advance(1)  -- f3 finds its loop finished: reported, not raised here
    assert.same({ "f1@0", "f2@0", "f3@1", "other@1" }, seen)
    collectgarbage()
    collectgarbage()
    local pending = defer.pendingUnhandled(true)
    assert.equal(1, #pending)
    assert.truthy(tostring(pending[1]):find("LoopingCall finished twice", 1, true))
  end)

  it("skips to the next future interval when a call takes longer than the interval", function()
    local times = {}
    local clock = Clock()
    local callDuration
    local call = loopingCall(clock, function()
      times[#times + 1] = clock:seconds()
      clock:advance(callDuration)
    end)
    callDuration = 2
    call:start(0.5)
    assert.are.same({ 0 }, times)
    assert.are.equal(2, clock:seconds())
    -- an iteration was due at 2, but 2 is the present, not the future: skipped
    clock:advance(0)
    assert.are.same({ 0 }, times)
    callDuration = 1
    clock:advance(0.5)
    assert.are.same({ 0, 2.5 }, times)
    assert.are.equal(3.5, clock:seconds())
    clock:advance(0)
    assert.are.same({ 0, 2.5 }, times)
    callDuration = 0
    clock:advance(0.5)
    assert.are.same({ 0, 2.5, 4 }, times)
    assert.are.equal(4, clock:seconds())
  end)

  it("skips to the next future interval when the clock jumps past several", function()
    local times = {}
    local clock = Clock()
    local call = loopingCall(clock, function() times[#times + 1] = clock:seconds() end)
    call:start(0.5)
    assert.are.same({ 0 }, times)
    clock:advance(2)
    assert.are.same({ 0, 2 }, times)
    clock:advance(1)
    assert.are.same({ 0, 2, 3 }, times)
    clock:advance(0)
    assert.are.same({ 0, 2, 3 }, times)
  end)

  it("lands calls on start + n * interval without drift", function()
    local times = {}
    local clock = Clock()
    local call = loopingCall(clock, function() times[#times + 1] = clock:seconds() end)
    call:start(1)
    clock:pump({ 1.25, 1, 1, 0.5 })  -- late wake-ups: 1.25, 2.25, 3.25, 3.75
    assert.are.same({ 0, 1.25, 2.25, 3.25 }, times)
    assert.are.equal(4, call.call:getTime())
  end)

  it("tells withCount callables how many intervals were skipped", function()
    local times = {}
    local clock = Clock()
    local call = LoopingCall.withCount(function(n) times[#times + 1] = { clock:seconds(), n } end)
    call.clock = clock
    local INTERVAL, DELAY = 0.5, 0.01
    call:start(INTERVAL)
    assert.are.same({ { 0, 1 } }, times)
    clock:advance(INTERVAL + DELAY)
    assert.are.same({ { 0, 1 }, { INTERVAL + DELAY, 1 } }, times)
    clock:advance(3 * INTERVAL + DELAY)
    assert.are.same({ { 0, 1 }, { INTERVAL + DELAY, 1 }, { 4 * INTERVAL + 2 * DELAY, 3 } }, times)
    clock:advance(0)
    assert.are.equal(3, #times)
  end)

  it("counts only whole intervals with withCount after a lengthy interval", function()
    local times = {}
    local clock = Clock()
    local call = LoopingCall.withCount(function(n) times[#times + 1] = { clock:seconds(), n } end)
    call.clock = clock
    local INTERVAL, DELAY = 0.5, 0.01
    call:start(INTERVAL)
    assert.are.same({ 0, 1 }, table.remove(times))
    clock:advance(INTERVAL + DELAY)
    assert.are.same({ INTERVAL + DELAY, 1 }, table.remove(times))
    clock:advance(INTERVAL * 1.75)
    assert.are.same({ 2.75 * INTERVAL + DELAY, 1 }, table.remove(times))
    clock:advance(INTERVAL * 0.25)
    assert.are.same({ 3.0 * INTERVAL + DELAY, 1 }, table.remove(times))
  end)

  it("never passes a zero count to withCount at a floating-point boundary", function()
    local clock = Clock()
    local acc = {}
    local call = LoopingCall.withCount(function(n) acc[#acc + 1] = n end)
    call.clock = clock
    local count, timespan = 10, 1.0
    local interval = timespan / count
    call:start(interval, false)
    for _ = 1, count do clock:advance(interval) end
    local sum = 0
    for _ = 1, count do sum = sum + interval end
    local epsilon = timespan - sum
    clock:advance(epsilon)
    assert.is_true(math.abs(epsilon) > 0)
    assert.is_true(clock:seconds() >= timespan)
    local total = 0
    for _, n in ipairs(acc) do
      total = total + n
      assert.are_not.equal(0, n)
    end
    assert.are.equal(count, total)
  end)

  it("passes a count of 1 to withCount with interval 0", function()
    local clock = Clock()
    local acc = {}
    local loop
    loop = LoopingCall.withCount(function(n)
      acc[#acc + 1] = n
      if #acc > 4 then loop:stop() end
    end)
    loop.clock = clock
    local d = loop:start(0, false)
    clock:advance(0)
    assert.are.equal(loop, successResultOf(d))
    assert.are.same({ 1, 1, 1, 1, 1 }, acc)
  end)

  it("passes a count of 1 with interval 0 even after waiting on a Deferred", function()
    local clock = Clock()
    local waiting = defer.Deferred()
    local acc = {}
    local loop
    loop = LoopingCall.withCount(function(n)
      acc[#acc + 1] = n
      if #acc == 2 then return waiting end
      if #acc > 4 then loop:stop() end
    end)
    loop.clock = clock
    loop:start(0, false)
    clock:advance(0)
    assert.are.same({ 1, 1 }, acc)
    clock:advance(2)
    assert.are.same({ 1, 1 }, acc)
    waiting:callback(nil)
    clock:advance(0)
    assert.are.same({ 1, 1, 1, 1, 1 }, acc)
  end)

  it("counts skipped intervals from the last call when interval changes from 0", function()
    local clock = Clock()
    local waiting = defer.Deferred()
    local acc = {}
    local loop = LoopingCall.withCount(function(n)
      acc[#acc + 1] = n
      if #acc == 2 then return waiting end
    end)
    loop.clock = clock
    loop:start(0, false)
    clock:advance(10)
    assert.are.same({ 1, 1 }, acc)
    loop.interval = 2
    waiting:callback(nil)
    clock:advance(7)
    assert.are.same({ 1, 1, 3 }, acc)
    clock:advance(2)
    assert.are.same({ 1, 1, 3, 1 }, acc)
    clock:advance(4)
    assert.are.same({ 1, 1, 3, 1, 2 }, acc)
    loop:stop()
  end)

  -- Twisted's start() keeps _realLastTime: after a restart the count runs
  -- from the last call before the stop, each time taken in intervals from
  -- the new start (truncated toward 0), so a call can get 0 and be skipped.
  -- (Expected values from Twisted 22.4.)
  it("counts from the last call before a stop after withCount restarts", function()
    local clock = Clock()
    local got = {}
    local lc = LoopingCall.withCount(function(n) got[#got + 1] = { n, clock:seconds() } end)
    lc.clock = clock
    lc:start(1)
    clock:advance(1)
    clock:advance(0.5)
    lc:stop()
    lc:start(1)                 -- last call at 1, 0.5 before the start: count 0, skipped
    assert.are.same({ { 1, 0 }, { 1, 1 } }, got)
    clock:advance(1)
    lc:stop()
    assert.are.same({ { 1, 0 }, { 1, 1 }, { 1, 2.5 } }, got)
    clock:advance(7.25)
    lc:start(1)                 -- 7 whole intervals since the call at 2.5
    lc:stop()
    assert.are.same({ 7, 9.75 }, got[4])
    clock:advance(0.5)
    lc:start(2, false)
    clock:advance(2)
    assert.are.same({ { 1, 0 }, { 1, 1 }, { 1, 2.5 }, { 7, 9.75 }, { 1, 12.25 } }, got)
    lc:stop()
  end)

  it("calls f with its arguments, and stop() fires start's Deferred with the LoopingCall", function()
    local clock = Clock()
    local L = {}
    local lc = loopingCall(clock, function(...) L[#L + 1] = table.pack(...) end, "a", "b", nil, "d")
    local D = lc:start(0.1)
    assert.are.equal(D, lc.deferred)
    local theResult = {}
    D:addCallback(function(r) theResult[#theResult + 1] = r end)
    clock:pump({ 0.05, 0.1, 0.1 })
    assert.are.equal(3, #L)
    for _, args in ipairs(L) do
      assert.are.same({ n = 4, "a", "b", nil, "d" }, args)
    end
    assert.is_true(lc.running)
    lc:stop()
    assert.is_false(lc.running)
    assert.are.equal(lc, theResult[1])
    assert.are.same({}, clock.calls)
  end)

  it("waits one interval before the first call when now is false", function()
    local clock = Clock()
    local L = {}
    local lc = loopingCall(clock, function(x) L[#L + 1] = x end, "tick")
    local d = lc:start(0.1, false)
    local theResult
    d:addCallback(function(r) theResult = r end)
    clock:pump({ 0.05, 0.1, 0.1 })
    assert.are.same({ "tick", "tick" }, L)
    lc:stop()
    assert.are.equal(lc, theResult)
    assert.are.same({}, clock.calls)
  end)

  it("rejects a negative interval with a ValueError", function()
    local lc = LoopingCall(function() end)
    lc.clock = Clock()
    local e = raises(errors.ValueError, lc.start, lc, -1)
    assert.matches("'start'", tostring(e), 1, true)
    assert.is_false(lc.running)
  end)

  it("raises when started while running or stopped while stopped", function()
    local lc = loopingCall(Clock(), function() end)
    local e = raises(errors.Error, lc.stop, lc)
    assert.matches("not running", tostring(e), 1, true)
    raises(errors.Error, lc.reset, lc)
    lc:start(1)
    e = raises(errors.Error, lc.start, lc, 1)
    assert.matches("already running", tostring(e), 1, true)
    lc:stop()
  end)

  it("refuses a clock it cannot read and stays stopped", function()
    local lc = loopingCall(Clock(), function() end)
    lc.clock = { callLater = function() end, seconds = 5 }
    assert.matches("LoopingCall.clock is not a time source",
      tostring(raises(errors.TypeError, lc.start, lc, 1)), 1, true)
    assert.is_false(lc.running)
    lc.clock = { callLater = function() end, seconds = function() error("clock broke") end }
    local ok, e = pcall(lc.start, lc, 1)
    assert.is_false(ok)
    assert.matches("clock broke", tostring(e), 1, true)
    assert.is_false(lc.running)
    assert.is_nil(lc.deferred)
    lc.clock = { callLater = function() end, seconds = function() return "noon" end }
    assert.matches("LoopingCall.clock:seconds() returned string, not a number",
      tostring(raises(errors.TypeError, lc.start, lc, 1)), 1, true)
    assert.is_false(lc.running)
    -- a callable table is a callable
    local c = Clock()
    lc.clock = { callLater = setmetatable({}, { __call = function(_, _, ...) return c:callLater(...) end }),
      seconds = function() return c:seconds() end }
    local n = 0
    lc.f = function() n = n + 1 end
    lc:start(1)
    c:advance(1)
    assert.equal(2, n)
    lc:stop()
  end)

  for _, delay in ipairs({ 0, 10 }) do
    it(("prevents every later call when stopped before a delayed start (interval %d)"):format(delay),
      function()
        local ran = false
        local clock = Clock()
        local lc = loopingCall(clock, function() ran = true end)
        lc:start(delay, false)
        lc:stop()
        assert.is_false(ran)
        assert.are.same({}, clock.calls)
      end)
  end

  it("restarts the interval from now on reset()", function()
    local ran = 0
    local c = Clock()
    local lc = loopingCall(c, function() ran = ran + 1 end)
    lc:start(2, false)
    c:advance(1)
    lc:reset()
    c:advance(1)
    assert.are.equal(0, ran)
    c:advance(1)
    assert.are.equal(1, ran)
    -- the later calls keep the new start: t = 5, 7 (not 4, 6)
    c:advance(1)
    assert.are.equal(1, ran)
    c:advance(1)
    assert.are.equal(2, ran)
    c:advance(2)
    assert.are.equal(3, ran)
    lc:stop()
  end)

  it("errbacks start's Deferred and stops when f raises", function()
    local clock = Clock()
    local lc = loopingCall(clock, function(x) error(TestException(x)) end, "bar")
    local d = lc:start(0.1)
    local f = failureResultOf(d, TestException)
    assert.are.equal("bar", f.value.message)
    assert.is_false(lc.running)
    assert.are.same({}, clock.calls)
  end)

  it("errbacks once when f stops the loop and then raises", function()
    local clock = Clock()
    local lc
    lc = loopingCall(clock, function(x)
      lc:stop()
      error(TestException(x))
    end, "bar")
    failureResultOf(lc:start(0.1), TestException)
    assert.are.same({}, clock.calls)
  end)

  it("errbacks when f returns a Failure", function()
    local lc = loopingCall(Clock(), function() return failure.Failure(TestException("f")) end)
    failureResultOf(lc:start(1), TestException)
    assert.is_false(lc.running)
  end)

  it("fires start's Deferred after six calls at interval 0 when f stops it", function()
    local clock = Clock()
    local ran = 0
    local lc
    lc = loopingCall(clock, function()
      ran = ran + 1
      if ran > 5 then lc:stop() end
    end)
    local d = lc:start(0)
    clock:advance(0)
    assert.are.equal(lc, successResultOf(d))
    assert.are.equal(6, ran)
  end)

  it("does not call f again until the Deferred it returned fires", function()
    local clock = Clock()
    local calls = 0
    local lc
    lc = loopingCall(clock, function()
      calls = calls + 1
      local d = defer.Deferred()
      d:addCallback(function() lc:stop() end)
      clock:callLater(1, d.callback, d, nil)
      return d
    end)
    local done = lc:start(0.2)
    clock:pump({ 0.2, 0.8 })
    assert.are.equal(1, calls)
    assert.are.same({}, clock.calls)
    assert.are.equal(lc, successResultOf(done))
  end)

  it("errbacks with the failure of the Deferred f returned", function()
    local clock = Clock()
    local lc = loopingCall(clock, function()
      local d = defer.Deferred()
      clock:callLater(0.3, d.errback, d, TestException("late"))
      return d
    end)
    local d = lc:start(1)
    clock:pump({ 0.3 })
    assert.are.same({}, clock.calls)
    failureResultOf(d, TestException)
    assert.is_false(lc.running)
  end)

  it("passes withCount the intervals missed while its Deferred was pending", function()
    local clock = Clock()
    local d = defer.Deferred()
    local counts = {}
    local lc = LoopingCall.withCount(function(n)
      counts[#counts + 1] = n
      if #counts == 1 then return d end
    end)
    lc.clock = clock
    lc:start(0.2, false)
    assert.are.same({}, counts)
    clock:pump({ 0.2, 0.4 })
    assert.are.same({ 1 }, counts)
    d:callback(nil)
    clock:pump({ 0.2 })
    assert.are.same({ 1, 3 }, counts)
    lc:stop()
  end)

  it("can be started again after it stopped", function()
    local clock = Clock()
    local n = 0
    local lc = loopingCall(clock, function() n = n + 1 end)
    lc:start(1)
    lc:stop()
    local d = lc:start(1)
    assert.are.equal(2, n)
    clock:advance(1)
    assert.are.equal(3, n)
    lc:stop()
    assert.are.equal(lc, successResultOf(d))
  end)

  it("runs on the reactor: interval 0 calls once per loop turn until stopped",
    testing.async(function()
      local ran = 0
      local lc
      lc = LoopingCall(function()
        ran = ran + 1
        if ran > 5 then lc:stop() end
      end)
      assert.are.equal(lc, defer.await(lc:start(0)))
      assert.are.equal(6, ran)
    end))

  it("errbacks start's Deferred on the reactor when f raises", testing.async(function()
    local lc = LoopingCall(function(x) error(TestException(x)) end, "bar")
    local ok, e = pcall(defer.await, lc:start(0.1))
    assert.is_false(ok)
    assert.is_true(TestException:isinstance(e))
    assert.are.equal("bar", e.message)
  end))

  it("makes no later call when stopped from a reactor callback", testing.async(function()
    local reactor = require "braid.reactor"
    local ran = false
    local lc = LoopingCall(function() ran = true end)
    local d = lc:start(0.05, false)
    defer.await(task.deferLater(reactor, 0, function() lc:stop() end))
    assert.are.equal(lc, defer.await(d))
    defer.await(task.deferLater(reactor, 0.08))
    assert.is_false(ran)
  end))

  it("names its interval and function in tostring", function()
    local function tick() end
    local lc = LoopingCall(tick)
    assert.are.equal("LoopingCall<nil>(" .. tostring(tick) .. ")", tostring(lc))
    lc.clock = Clock()
    lc:start(2.5)
    assert.are.equal("LoopingCall<2.5>(" .. tostring(tick) .. ")", tostring(lc))
    lc:stop()
  end)
end)

describe("task.deferLater", function()
  it("fires with the function's result after the delay", function()
    local results = {}
    local flag = {}
    local clock = Clock()
    local d = task.deferLater(clock, 3, function(foo, bar)
      results[#results + 1] = { foo, bar }
      return flag
    end, "foo", "bar")
    clock:advance(2)
    assert.are.same({}, results)
    assertNoResult(d)
    clock:advance(1)
    assert.are.same({ { "foo", "bar" } }, results)
    assert.are.equal(flag, successResultOf(d))
  end)

  it("errbacks when the function raises", function()
    local clock = Clock()
    local d = task.deferLater(clock, 1, function() error(TestException()) end)
    clock:advance(1)
    failureResultOf(d, TestException)
  end)

  it("cancels the call when cancelled", function()
    local called = false
    local clock = Clock()
    local d = task.deferLater(clock, 1, function() called = true end)
    d:cancel()
    failureResultOf(d, defer.CancelledError)
    assert.are.same({}, clock:getDelayedCalls())
    clock:advance(2)
    assert.is_false(called)
  end)

  it("fires with nil when no function is given", function()
    local clock = Clock()
    local d = task.deferLater(clock, 2.0)
    assertNoResult(d)
    clock:advance(2.0)
    assert.is_nil(successResultOf(d))
  end)

  it("rejects a bad clock or delay", function()
    raises(errors.TypeError, task.deferLater, {}, 1)
    raises(errors.ValueError, task.deferLater, Clock(), -1)
    raises(errors.TypeError, task.deferLater, Clock(), 1, 42)
  end)

  it("uses the reactor's callLater when given the reactor", testing.async(function()
    local reactor = require "braid.reactor"
    local start = reactor.seconds()
    local r = defer.await(task.deferLater(reactor, 0.01, function(a) return a * 2 end, 21))
    assert.are.equal(42, r)
    assert.is_true(reactor.seconds() - start >= 0.009)
  end))
end)

-- A fake reactor driven by a Clock (Twisted's _FakeReactor); its functions
-- are called with `.`, as the reactor module's are.
local function FakeReactor()
  local clock = Clock()
  local r = { _running = false, _clock = clock }
  local whenRunning = {}
  local triggers = { before = {}, during = {} }
  r.callLater = function(...) return clock:callLater(...) end
  r.seconds = function() return clock:seconds() end
  r.getDelayedCalls = function() return clock:getDelayedCalls() end
  r.callWhenRunning = function(f, ...)
    if whenRunning == nil then return f(...) end
    whenRunning[#whenRunning + 1] = { f, table.pack(...) }
  end
  r.addSystemEventTrigger = function(phase, event, f, ...)
    assert(event == "shutdown")
    local list = triggers[phase]
    list[#list + 1] = { f, table.pack(...) }
    return list[#list]
  end
  r.run = function()
    r._running = true
    local wr = whenRunning
    whenRunning = nil
    for _, c in ipairs(wr) do c[1](table.unpack(c[2], 1, c[2].n)) end
    while r._running do
      local calls = clock:getDelayedCalls()
      if #calls == 0 then error("No DelayedCalls left") end
      clock:advance(calls[1]:getTime() - clock:seconds())
    end
    local t = triggers
    triggers = nil
    for _, phase in ipairs({ "before", "during" }) do
      for _, c in ipairs(t[phase]) do c[1](table.unpack(c[2], 1, c[2].n)) end
    end
  end
  r.stop = function()
    if not r._running then error(errors.ReactorNotRunning()) end
    r._running = false
  end
  return r
end

describe("task.react", function()
  local errs, obs, stream
  before_each(function()
    errs = {}
    obs = function(ev) if ev.isError then errs[#errs + 1] = ev end end
    log.addObserver(obs)
    stream = log.setErrorStream(nil)  -- the expected errors are not printed
  end)
  after_each(function()
    log.removeObserver(obs)
    log.setErrorStream(stream)
  end)

  local function react(main, args, r)
    local code
    task._react(main, args, r, function(c) code = c end)
    return code
  end

  it("runs the reactor until main's Deferred fires, then exits with 0", function()
    local timePassed = {}
    local r = FakeReactor()
    local code = react(function(reactor)
      local finished = defer.Deferred()
      reactor.callLater(1, function() timePassed[#timePassed + 1] = true end)
      reactor.callLater(2, finished.callback, finished, nil)
      return finished
    end, nil, r)
    assert.are.equal(0, code)
    assert.are.same({ true }, timePassed)
    assert.are.equal(2, r.seconds())
  end)

  it("returns quickly when main's Deferred has already fired", function()
    local r = FakeReactor()
    assert.are.equal(0, react(function() return defer.succeed(nil) end, nil, r))
    assert.are.equal(0, r.seconds())
  end)

  it("accepts a plain value from main", function()
    assert.are.equal(0, react(function() return 7 end, nil, FakeReactor()))
  end)

  it("exits with 1 and logs the error when main's Deferred fails later", function()
    local r = FakeReactor()
    local code = react(function(reactor)
      local finished = defer.Deferred()
      reactor.callLater(1, finished.errback, finished, TestException("bad"))
      return finished
    end, nil, r)
    assert.are.equal(1, code)
    assert.are.equal(1, #errs)
    assert.is_true(errs[1].failure:check(TestException) ~= nil)
    assert.are.equal("main function encountered error", errs[1].why)
  end)

  it("exits with 1 and logs the error when main has already failed", function()
    local r = FakeReactor()
    local code = react(function() return defer.fail(TestException()) end, nil, r)
    assert.are.equal(1, code)
    assert.are.equal(0, r.seconds())
    assert.are.equal(1, #errs)
  end)

  it("exits with 1 when main raises", function()
    assert.are.equal(1, react(function() error(TestException("x")) end, nil, FakeReactor()))
    assert.are.equal(1, #errs)
  end)

  it("does not stop the reactor again when main's Deferred fires during shutdown", function()
    local r = FakeReactor()
    local code = react(function(reactor)
      reactor.callLater(1, reactor.stop)
      local finished = defer.Deferred()
      reactor.addSystemEventTrigger("during", "shutdown", finished.callback, finished, nil)
      return finished
    end, nil, r)
    assert.are.equal(1, r.seconds())
    assert.are.equal(0, code)
  end)

  it("exits with 1 when main's Deferred fails during shutdown", function()
    local r = FakeReactor()
    local code = react(function(reactor)
      reactor.callLater(1, reactor.stop)
      local finished = defer.Deferred()
      reactor.addSystemEventTrigger("during", "shutdown", finished.errback, finished,
        TestException())
      return finished
    end, nil, r)
    assert.are.equal(1, code)
    assert.are.equal(1, r.seconds())
    assert.are.equal(1, #errs)
  end)

  it("passes its extra arguments to main", function()
    local got
    local code = react(function(reactor, x, y, z)
      got = { x, y, z }
      return defer.succeed(nil)
    end, table.pack(1, 2, 3), FakeReactor())
    assert.are.equal(0, code)
    assert.are.same({ 1, 2, 3 }, got)
  end)

  it("handles a reactor stopped just before main's Deferred fires", function()
    local code = react(function(reactor)
      local d = defer.Deferred()
      reactor.callWhenRunning(function()
        reactor.stop()
        d:callback(nil)
      end)
      return d
    end, nil, FakeReactor())
    assert.are.equal(0, code)
  end)

  it("exits with 0 when the reactor is stopped and main's Deferred never fires", function()
    local code = react(function(reactor)
      reactor.callLater(1, reactor.stop)
      return defer.Deferred()
    end, nil, FakeReactor())
    assert.are.equal(0, code)
  end)

  it("works with an inlineCallbacks main", function()
    local r = FakeReactor()
    local code = react(defer.inlineCallbacks(function(reactor)
      defer.await(task.deferLater({ callLater = function(_, ...) return reactor.callLater(...) end,
        seconds = function() return reactor.seconds() end }, 2))
      return "ok"
    end), nil, r)
    assert.are.equal(0, code)
    assert.are.equal(2, r.seconds())
  end)

  it("runs the real reactor and calls task._exit with the code", function()
    local reactor = require "braid.reactor"
    local saved = task._exit
    local codes = {}
    task._exit = function(c) codes[#codes + 1] = c end
    local ok, e = pcall(task.react, function(r, a)
      assert.are.equal(reactor, r)
      return task.deferLater(r, 0.01, function() return a end)
    end, "arg")
    task._exit = saved
    assert.is_true(ok, tostring(e))
    assert.are.same({ 0 }, codes)
    assert.is_false(reactor.running)
    assert.are.same({}, reactor.getDelayedCalls())
  end)

  it("removes its 'before shutdown' trigger from the real reactor once it has run", function()
    local reactor = require "braid.reactor"
    local saved, add = task._exit, reactor.addSystemEventTrigger
    local ids = {}
    reactor.addSystemEventTrigger = function(phase, event, ...)
      local id = add(phase, event, ...)
      if phase == "before" and event == "shutdown" then ids[#ids + 1] = id end
      return id
    end
    task._exit = function() end
    local ok, e = pcall(task.react, function(r) return task.deferLater(r, 0) end)
    task._exit, reactor.addSystemEventTrigger = saved, add
    assert.is_true(ok, tostring(e))
    assert.are.equal(1, #ids)
    assert.has_error(function() reactor.removeSystemEventTrigger(ids[1]) end,
      "ValueError: bad argument #1 to 'removeSystemEventTrigger' (trigger already removed)")
  end)
end)
