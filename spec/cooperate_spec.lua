-- spec for lua/braid/task.lua: Cooperator, cooperate, coiterate
-- (ported from Twisted's twisted/test/test_cooperator.py)
local task = require "braid.task"
local defer = require "braid.defer"
local errors = require "braid.error"
local testing = require "braid.testing"

local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf

local UnhandledException = errors.Error:extend("UnhandledException")

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(cls:isinstance(e), "expected " .. cls.__name .. ", got " .. tostring(e))
  return e
end

-- an iterator over the values of a list (a function called until nil)
local function iter(list)
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

-- A scheduler whose work runs only when pump() is called.
local function FakeScheduler()
  local s = { work = {} }
  function s.schedule(thunk)
    local unit = { func = thunk, cancelled = false }
    function unit.cancel() unit.cancelled = true end
    s.work[#s.work + 1] = unit
    return unit
  end
  function s.pump()
    local work = s.work
    s.work = {}
    for _, unit in ipairs(work) do
      if not unit.cancelled then unit.func() end
    end
  end
  return s
end

-- a scheduler on a Clock: each slice one callLater(0) away
local function clockScheduler(clock)
  return function(f) return clock:callLater(0, f) end
end

-- Coiterate one task per list on a Clock-driven Cooperator, each step
-- recording its item; run them all to the end and return the items in
-- the order they were taken.
local function round_robin(lists)
  local L = {}
  local function myiter(things)
    local i = 0
    return function()
      i = i + 1
      if things[i] == nil then return nil end
      L[#L + 1] = things[i]
      return true
    end
  end
  local clock = task.Clock()
  local c = task.Cooperator({ scheduler = clockScheduler(clock) })
  local ds = {}
  for _, stuff in ipairs(lists) do
    ds[#ds + 1] = c:coiterate(myiter(stuff))
  end
  clock:advance(0)
  for _, d in ipairs(ds) do successResultOf(d) end
  return L
end

local function oneStep() return function() return true end end

describe("task.Cooperator", function()
  it("refuses new tasks once stopped", function()
    local c = task.Cooperator()
    c:stop()
    failureResultOf(c:coiterate(iter({})), task.SchedulerStopped)
    local mine = defer.Deferred()
    assert.are.equal(mine, c:coiterate(iter({}), mine))
    failureResultOf(mine, task.SchedulerStopped)
  end)

  it("does not run a task to completion when stopped", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local value = -1
    local d = c:coiterate(function()
      value = value + 1
      if value < 3 then return value end
    end)
    c:stop()
    failureResultOf(d, task.SchedulerStopped)
    clock:advance(1)
    assert.are.equal(-1, value)
    assert.are.same({}, clock:getDelayedCalls())
  end)

  it("fails a task paused on an outstanding Deferred when stopped", function()
    local clock = task.Clock()
    local outstanding = defer.Deferred()
    local steps = 0
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local d = c:coiterate(function()
      steps = steps + 1
      if steps == 1 then return outstanding end
      error("must not run again")
    end)
    clock:advance(0)
    assert.are.equal(1, steps)
    c:stop()
    outstanding:callback("arglebargle")
    failureResultOf(d, task.SchedulerStopped)
    clock:advance(1)
    assert.are.equal(1, steps)
  end)

  it("fails the task with the iterator's error", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local d = c:coiterate(function() error(UnhandledException("x")) end)
    clock:advance(0)
    local f = failureResultOf(d, UnhandledException)
    assert.are.equal("x", f.value.message)
  end)

  it("fails the task when a Deferred it produced fails later", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local d = c:coiterate(function()
      local D = defer.Deferred()
      clock:callLater(1, D.errback, D, UnhandledException())
      return D
    end)
    clock:advance(0)
    testing.assertNoResult(d)
    clock:advance(1)
    failureResultOf(d, UnhandledException)
  end)

  it("fails the task when a Deferred it produced has already failed", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local d = c:coiterate(function() return defer.fail(UnhandledException()) end)
    clock:advance(0)
    failureResultOf(d, UnhandledException)
  end)

  it("gives the turn to the task after one that a work unit paused (as Twisted's list iterator)", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local L = {}
    local tb
    local function steps(name, n, first)
      local i = 0
      return function()
        i = i + 1
        if i > n then return nil end
        L[#L + 1] = name .. i
        if i == 1 and first then first() end
        return true
      end
    end
    local da = c:coiterate(steps("a", 2, function() tb:pause() end))
    tb = c:cooperate(steps("b", 2))
    local dc = c:coiterate(steps("c", 2))
    clock:advance(0)
    assert.are.same({ "a1", "c1", "a2", "c2" }, L)
    successResultOf(da)
    successResultOf(dc)
    tb:resume()
    clock:advance(0)
    assert.are.same({ "a1", "c1", "a2", "c2", "b1", "b2" }, L)
    successResultOf(tb:whenDone())
  end)

  it("takes and runs new tasks again after stop() and start()", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    c:stop()
    failureResultOf(c:coiterate(iter({ 1 })), task.SchedulerStopped)
    c:start()
    assert.is_true(c.running)
    local it = iter({ 1, 2 })
    local d = c:coiterate(it)
    clock:advance(0)
    assert.are.equal(it, successResultOf(d))
  end)

  it("interleaves tasks round-robin", function()
    local L = round_robin({ { "a", "b", "c" }, { 1, 2, 3 }, { "d", "e", "f" }, { 4, 5, 6 } })
    assert.are.same({ "a", 1, "d", 4, "b", 2, "e", 5, "c", 3, "f", 6 }, L)
  end)

  it("keeps the round-robin turn when a task ends (Twisted's iterator skips the next task)", function()
    local L = round_robin({ { "a1" }, { "b1", "b2" }, { "c1", "c2" } })
    -- a ends in its second turn: b, next after it, still goes before c
    assert.are.same({ "a1", "b1", "c1", "b2", "c2" }, L)
  end)

  it("names a task's state in tostring: running, paused, then how it finished", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local t = c:cooperate(iter({ 1 }))
    assert.are.equal("<CooperativeTask running>", tostring(t))
    t:pause()
    assert.are.equal("<CooperativeTask paused>", tostring(t))
    t:resume()
    assert.are.equal("<CooperativeTask running>", tostring(t))
    clock:advance(0)
    clock:advance(0)
    assert.are.equal("<CooperativeTask TaskDone>", tostring(t))
    local s = c:cooperate(iter({ 1 }))
    s:stop()
    assert.are.equal("<CooperativeTask TaskStopped>", tostring(s))
  end)

  it("ends a slice when the termination predicate says so", function()
    local output = {}
    local stopped = false
    local sched = FakeScheduler()
    local c = task.Cooperator({
      scheduler = sched.schedule,
      terminationPredicateFactory = function() return function() return stopped end end,
    })
    local i = -1
    local d = c:coiterate(function()
      i = i + 1
      if i >= 100 then return nil end
      output[#output + 1] = i
      if i == 9 then stopped = true end
      return i
    end)
    sched.pump()
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, output)
    assert.are.equal(1, #sched.work)
    c:stop()
    assert.is_true(sched.work[1].cancelled)
    failureResultOf(d, task.SchedulerStopped)
  end)

  it("schedules once when a whenDone callback adds a task", function()
    local calls = {}
    local function sched(f)
      assert.are.same({}, calls)
      calls[#calls + 1] = { func = f, cancel = function() end }
      return calls[#calls]
    end
    local c = task.Cooperator({ scheduler = sched, terminationPredicateFactory = oneStep })
    local d = c:coiterate(iter({}))
    local done = {}
    d:addCallback(function()
      c:coiterate(iter({})):addBoth(function(r) done[#done + 1] = r end)
    end)
    local work = 0
    while #done == 0 do
      work = work + 1
      while #calls > 0 do
        table.remove(calls, 1).func()
        work = work + 1
      end
      assert.is_true(work <= 50, "Cooperator took too long")
    end
  end)

  it("cancels its scheduled call when the last task is removed", function()
    local last
    local function sched(f)
      last = { func = f, cancelled = false }
      function last.cancel() last.cancelled = true end
      return last
    end
    local coop = task.Cooperator({ scheduler = sched })
    local task1 = coop:cooperate(iter({ 1, 2 }))
    local task2 = coop:cooperate(iter({ 1, 2 }))
    local first = last
    assert.is_not_nil(first)
    task1:stop()
    assert.is_false(first.cancelled)
    assert.are.equal(first, coop._delayedCall)
    task2:stop()
    assert.is_true(first.cancelled)
    assert.is_nil(coop._delayedCall)
    coop:cooperate(iter({ 1, 2 }))
    assert.are_not.equal(first, last)
    assert.is_false(last.cancelled)
    assert.are.equal(last, coop._delayedCall)
    coop:stop()
  end)

  it("leaves no call scheduled on its Clock once every task is done", function()
    local clock = task.Clock()
    local c = task.Cooperator({ scheduler = clockScheduler(clock) })
    local d = c:coiterate(iter({ 1, 2, 3 }))
    clock:advance(0)
    successResultOf(d)
    assert.are.same({}, clock:getDelayedCalls())
  end)

  it("reports running as started and not stopped", function()
    assert.is_true(task.Cooperator().running)
    local c = task.Cooperator({ started = false })
    assert.is_false(c.running)
    c:start()
    assert.is_true(c.running)
    c:stop()
    assert.is_false(c.running)
  end)

  it("queues work until start() when made with started = false", function()
    local sched = FakeScheduler()
    local c = task.Cooperator({ scheduler = sched.schedule, started = false })
    local d = c:coiterate(iter({ 1 }))
    assert.are.equal(0, #sched.work)
    c:start()
    assert.are.equal(1, #sched.work)
    sched.pump()
    successResultOf(d)
  end)

  it("runs iterations for about 10 ms per slice by default", function()
    local sched = FakeScheduler()
    local c = task.Cooperator({ scheduler = sched.schedule })
    local core = require "braid.core"
    local n = 0
    c:cooperate(function()
      n = n + 1
      return true
    end)
    -- The slice's deadline is read inside pump(), so the whole pump lasts at
    -- least 10 ms; timing the iterations themselves would leave out the
    -- time before the first and after the last (a preempted run fell short).
    local before = core.monotonic()
    sched.pump()
    local elapsed = core.monotonic() - before
    assert.is_true(n > 1)
    assert.is_true(elapsed >= 0.01, "slice too short: " .. elapsed)
    assert.is_true(elapsed < 0.5)
    assert.are.equal(1, #sched.work) -- one next slice scheduled, not run
    c:stop()
  end)

  it("rejects a non-callable iterator and bad options", function()
    local c = task.Cooperator()
    raises(errors.TypeError, c.cooperate, c, 42)
    raises(errors.TypeError, task.cooperate, {})
    raises(errors.TypeError, task.Cooperator, 5)
    raises(errors.TypeError, task.Cooperator, { scheduler = 5 })
  end)
end)

describe("task.cooperate on the global Cooperator", function()
  it("runs an iterator to its end and fires whenDone() with it", testing.async(function()
    local seen = {}
    local n = 0
    local it = function()
      n = n + 1
      if n > 3 then return nil end
      seen[#seen + 1] = n
      return true
    end
    local t = task.cooperate(it)
    assert.are.same({ t }, task._theCooperator._tasks)
    assert.are.same({}, seen)  -- nothing runs before the first slice
    assert.are.equal(it, defer.await(t:whenDone()))
    assert.are.same({ 1, 2, 3 }, seen)
    assert.are.same({}, task._theCooperator._tasks)
    assert.is_nil(task._theCooperator._delayedCall)
  end))

  it("lets timers run between slices of a long task", testing.async(function()
    local reactor = require "braid.reactor"
    local core = require "braid.core"
    local timerFired = false
    local slicesAfterTimer = 0
    local t0 = core.monotonic()
    local d = task.coiterate(function()
      if timerFired then
        slicesAfterTimer = slicesAfterTimer + 1
        return nil
      end
      if core.monotonic() - t0 > 2 then return nil end  -- never spin forever
      return true
    end)
    reactor.callLater(0.02, function() timerFired = true end)
    defer.await(d)
    assert.is_true(timerFired)
    assert.are.equal(1, slicesAfterTimer)
  end))

  it("returns whenDone()'s Deferred from coiterate", testing.async(function()
    local it = iter({ 1, 2, 3 })
    local r = defer.await(task.coiterate(it))
    assert.are.equal(it, r)
  end))
end)

describe("task.CooperativeTask", function()
  local sched, coop, work, theTask, flags

  local function worker()
    local i = 0
    return function()
      i = i + 1
      if flags.defer then
        flags.defer = false
        local d = defer.Deferred()
        work[#work + 1] = d
        return d
      elseif flags.stop then
        return nil
      elseif flags.die then
        error(UnhandledException())
      end
      work[#work + 1] = i
      return i
    end
  end

  before_each(function()
    flags = {}
    work = {}
    sched = FakeScheduler()
    coop = task.Cooperator({ scheduler = sched.schedule, terminationPredicateFactory = oneStep })
    theTask = coop:cooperate(worker())
    coop:start()
  end)

  it("stops running when paused and runs again after resume", function()
    sched.pump()
    assert.are.same({ 1 }, work)
    sched.pump()
    assert.are.same({ 1, 2 }, work)
    theTask:pause()
    sched.pump()
    assert.are.same({ 1, 2 }, work)
    theTask:resume()
    assert.are.same({ 1, 2 }, work)  -- resuming does no work by itself
    sched.pump()
    assert.are.same({ 1, 2, 3 }, work)
  end)

  it("raises NotPaused from resume when not paused", function()
    raises(task.NotPaused, theTask.resume, theTask)
    theTask:pause()
    theTask:resume()
    raises(task.NotPaused, theTask.resume, theTask)
  end)

  it("nests pauses: two pauses need two resumes", function()
    theTask:pause()
    sched.pump()
    assert.are.same({}, work)
    theTask:pause()
    sched.pump()
    assert.are.same({}, work)
    theTask:resume()
    sched.pump()
    assert.are.same({}, work)
    theTask:resume()
    sched.pump()
    assert.are.same({ 1 }, work)
  end)

  it("needs both the Deferred to fire and a resume when paused while waiting", function()
    flags.defer = true
    sched.pump()
    assert.are.equal(1, #work)
    assert.is_true(defer.isDeferred(work[1]))
    sched.pump()
    assert.are.equal(1, #work)
    theTask:pause()
    sched.pump()
    assert.are.equal(1, #work)
    theTask:resume()
    sched.pump()
    assert.are.equal(1, #work)
    work[1]:callback("STUFF!")
    sched.pump()
    assert.are.equal(2, #work)
    assert.are.equal(2, work[2])
  end)

  it("fires every whenDone() Deferred with the iterator, each separately", function()
    local d1, d2 = theTask:whenDone(), theTask:whenDone()
    local r1, r2, f1, f2 = {}, {}, {}, {}
    d1:addCallback(function(r) r1[#r1 + 1] = r return 1 end)
    d2:addCallback(function(r) r2[#r2 + 1] = r return 2 end)
    d1:addCallback(function(r) f1[#f1 + 1] = r end)
    d2:addCallback(function(r) f2[#f2 + 1] = r end)
    flags.stop = true
    sched.pump()
    assert.are.equal(1, #r1)
    assert.are.equal(1, #r2)
    assert.are.equal(theTask._iterator, r1[1])
    assert.are.equal(theTask._iterator, r2[1])
    assert.are.same({ 1 }, f1)
    assert.are.same({ 2 }, f2)
  end)

  it("fails whenDone() with the iterator's error", function()
    local d = theTask:whenDone()
    flags.die = true
    sched.pump()
    failureResultOf(d, UnhandledException)
  end)

  it("fails whenDone() with TaskStopped on stop()", function()
    local d = theTask:whenDone()
    theTask:stop()
    failureResultOf(d, task.TaskStopped)
  end)

  it("fires whenDone() at once when the iterator is already exhausted", function()
    flags.stop = true
    sched.pump()
    assert.are.equal(theTask._iterator, successResultOf(theTask:whenDone()))
  end)

  it("does no more work once stopped, and stop or pause then raise TaskStopped", function()
    theTask:stop()
    sched.pump()
    assert.are.same({}, work)
    raises(task.TaskStopped, theTask.stop, theTask)
    raises(task.TaskStopped, theTask.pause, theTask)
    sched.pump()
    assert.are.same({}, work)
  end)

  it("does nothing when a paused, stopped task is resumed", function()
    theTask:pause()
    theTask:stop()
    theTask:resume()
    sched.pump()
    assert.are.same({}, work)
  end)

  it("is not resumed by its Deferred after being stopped while waiting", function()
    flags.defer = true
    sched.pump()
    local d = table.remove(work)
    assert.are.equal(1, theTask._pauseCount)
    local results = {}
    d:addBoth(function(r) results[#results + 1] = r == nil and "nil" or r end)
    sched.pump()
    theTask:stop()
    sched.pump()
    d:callback(7)
    sched.pump()
    assert.are.same({ "nil" }, results)
    assert.are.same({}, work)
  end)

  it("raises TaskDone from stop() once the iterator is exhausted", function()
    flags.stop = true
    sched.pump()
    raises(task.TaskDone, theTask.stop, theTask)
  end)

  it("raises TaskFailed from stop() once the iterator has failed", function()
    flags.die = true
    local d = theTask:whenDone()
    sched.pump()
    raises(task.TaskFailed, theTask.stop, theTask)
    failureResultOf(d, UnhandledException)
  end)

  it("raises TaskFailed from stop() once a Deferred it produced failed", function()
    flags.defer = true
    local done = theTask:whenDone()
    sched.pump()
    work[1]:errback(UnhandledException())
    raises(task.TaskFailed, theTask.stop, theTask)
    failureResultOf(done, UnhandledException)
  end)

  -- docs/task.md (where braid differs): the failure is consumed, and the
  -- task stays stopped rather than becoming a failed one
  it("stays TaskStopped when a Deferred it produced fails after the stop", function()
    flags.defer = true
    sched.pump()
    theTask:stop()
    local produced = work[1]
    produced:errback(UnhandledException("after the stop"))
    local calls, got = 0, "unset"
    produced:addBoth(function(r) calls, got = calls + 1, r end)
    assert.are.equal(1, calls)
    assert.is_nil(got)
    failureResultOf(theTask:whenDone(), task.TaskStopped)
    raises(task.TaskStopped, theTask.pause, theTask)
  end)

  it("is already removed when a whenDone callback stops the Cooperator", function()
    local phases = {}
    theTask:whenDone():addCallback(function(r)
      phases[#phases + 1] = r
      coop:stop()
      phases[#phases + 1] = "done"
    end)
    flags.stop = true
    sched.pump()
    assert.are.same({ theTask._iterator, "done" }, phases)
  end)

  it("fails every task's whenDone() with SchedulerStopped when the Cooperator stops", function()
    local other = coop:cooperate(iter({ 1, 2, 3 }))
    local d1, d2 = theTask:whenDone(), other:whenDone()
    coop:stop()
    failureResultOf(d1, task.SchedulerStopped)
    failureResultOf(d2, task.SchedulerStopped)
    raises(task.SchedulerStopped, other.pause, other)
  end)

  it("has Twisted's error hierarchy", function()
    assert.is_true(task.TaskStopped:issubclass(task.TaskFinished))
    assert.is_true(task.TaskDone:issubclass(task.TaskFinished))
    assert.is_true(task.TaskFailed:issubclass(task.TaskFinished))
    assert.is_true(task.TaskFinished:issubclass(task.SchedulerError))
    assert.is_true(task.SchedulerStopped:issubclass(task.SchedulerError))
    assert.is_true(task.NotPaused:issubclass(task.SchedulerError))
    assert.is_true(task.SchedulerError:issubclass(errors.Error))
  end)
end)

describe("a CooperativeTask that stops itself in its own work unit", function()
  -- Twisted's _oneWorkUnit would complete the task again (TaskDone, or
  -- TaskFailed) after its stop(), or raise TaskStopped out of the tick
  local sched, coop, other, work

  before_each(function()
    sched = FakeScheduler()
    coop = task.Cooperator({ scheduler = sched.schedule, terminationPredicateFactory = oneStep })
    work = {}
    other = coop:cooperate(function()
      work[#work + 1] = "other"
      if #work < 3 then return true end
    end)
    coop:start()
  end)

  -- the task, made to stop itself and then give `after()`; run until it has
  -- (one unit per tick: the other task's first, then its own)
  local function self_stopping(after)
    local t
    t = coop:cooperate(function()
      t:stop()
      return after()
    end)
    local d = t:whenDone()
    sched.pump()
    sched.pump()
    return t, d
  end

  local function check_stopped(t, d)
    failureResultOf(d, task.TaskStopped)
    assert.are.equal("<CooperativeTask TaskStopped>", tostring(t))
    raises(task.TaskStopped, t.pause, t)
    for _ = 1, 4 do sched.pump() end
    assert.are.same({ "other", "other", "other" }, work)  -- the others go on
    assert.are.equal("<CooperativeTask TaskDone>", tostring(other))
  end

  it("stays stopped when the unit then returns nil (not TaskDone)", function()
    check_stopped(self_stopping(function() return nil end))
  end)

  it("raises TaskStopped out of the tick when the unit then returns a Deferred, as Twisted's", function()
    local pending = defer.Deferred()
    local t
    t = coop:cooperate(function()
      t:stop()
      return pending
    end)
    local d = t:whenDone()
    sched.pump()
    raises(task.TaskStopped, sched.pump)
    failureResultOf(d, task.TaskStopped)
    assert.are.equal("<CooperativeTask TaskStopped>", tostring(t))
    -- as Twisted's, the tick that raised scheduled no other: the others wait
    sched.pump()
    assert.are.same({ "other" }, work)
    pending:callback("late")  -- no resume of a stopped task
    assert.are.equal("<CooperativeTask TaskStopped>", tostring(t))
  end)

  it("stays stopped when the unit then raises, and logs the error", function()
    local log = require "braid.log"
    local events = {}
    local function obs(ev) events[#events + 1] = ev end
    log.addObserver(obs)
    local quiet = log.setErrorStream({ write = function() end, flush = function() end })
    local ok, t, d = pcall(self_stopping, function() error(UnhandledException("after stop")) end)
    log.setErrorStream(quiet)
    log.removeObserver(obs)
    assert(ok, t)
    assert.are.equal(1, #events)
    assert.is_true(events[1].isError)
    assert.matches("Error in a stopped cooperative task", events[1].text, 1, true)
    assert.matches("after stop", events[1].text, 1, true)
    check_stopped(t, d)
  end)
end)
