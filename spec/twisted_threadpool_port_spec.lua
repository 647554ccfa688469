-- Twins of Twisted 22.4's twisted/test/test_threadpool.py, through the
-- reactor's pool (braid has no ThreadPool objects: reactor.callInThread,
-- threads.deferToThread, suggestThreadPoolSize, and threads._stats() for
-- what Twisted reads off the pool's attributes). One describe per Twisted
-- TestCase class, each `it` named after the Twisted method; the mapping
-- (and why the others are skipped) is in docs/twisted-tests.md.
local threads = require "braid.threads"
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local testing = require "braid.testing"
local log = require "braid.log"

local async, await = testing.async, defer.await
local Deferred = defer.Deferred

-- the module the workers reach in the main state by name
local MOD = "braid_threadpool_port_spec"

-- A gate in the main state: a job calls
-- blockingCallFromThread("braid_threadpool_port_spec.enter") and waits
-- there until open(); once open, enter returns at once. `arrived` fires
-- when `want` jobs are waiting.
local function make_gate(want)
  local g = { waiting = {}, arrived = Deferred(), want = want, isOpen = false }
  function g.enter()
    if g.isOpen then return "open" end
    local d = Deferred()
    g.waiting[#g.waiting + 1] = d
    if #g.waiting == g.want then g.arrived:callback(#g.waiting) end
    return d
  end
  function g.open()
    g.isOpen = true
    local list = g.waiting
    g.waiting = {}
    for _, d in ipairs(list) do d:callback("open") end
  end
  package.loaded[MOD] = g
  return g
end

local function GATED(v)  -- a job: wait at the gate, then return v
  require("braid.threads").blockingCallFromThread("braid_threadpool_port_spec.enter")
  return v
end

-- Stop the reactor's pool as a shutdown does (in an async spec, which
-- iterates the reactor without run()): once no job is left, its threads
-- leave, and the next job starts it again, from no thread.
local function stop_pool()
  await(threads._whenIdle())
  assert.equal(0, threads._stats().outstanding)
  reactor.fireSystemEvent("shutdown")
  assert.equal(0, threads._stats().threads)
end

-- A Deferred that fires once pred() holds, checked once per reactor turn
-- (for pool states that nothing announces: a worker going idle); fails
-- after 2 s.
local function when(pred)
  local d = Deferred()
  local deadline = reactor.seconds() + 2
  local function check()
    if pred() then return d:callback(true) end
    if reactor.seconds() > deadline then return d:callback(false) end
    reactor.callLater(0, check)
  end
  check()
  return d
end

-- a Deferred fired on the reactor's next turn
local function next_turn()
  local d = Deferred()
  reactor.callLater(0, d.callback, d, nil)
  return d
end

-- run the reactor until stop(), failing (not hanging) after 5 s
local function run_for()
  local timed_out = false
  local guard = reactor.callLater(5, function()
    timed_out = true
    reactor.crash()
  end)
  reactor.run({ installSignalHandlers = false })
  if guard:active() then guard:cancel() end
  assert.is_false(timed_out, "the reactor ran too long")
end

describe("ThreadPoolTests (test/test_threadpool.py)", function()
  local size
  before_each(function() size = threads._stats().max end)
  after_each(function()
    threads.suggestThreadPoolSize(size)
    package.loaded[MOD] = nil
  end)

  -- min has no braid counterpart (the pool starts no thread until a job
  -- needs one); max is suggestThreadPoolSize's
  it("test_attributes", function()
    reactor.suggestThreadPoolSize(22)
    assert.equal(22, threads._stats().max)
  end)

  -- Twisted's ThreadPool(0, 5).start() has no thread: the reactor's pool
  -- (min 0) starts one for the first job, and only one
  it("test_start", async(function()
    stop_pool()
    assert.equal(0, threads._stats().threads)
    assert.equal("one", await(threads.deferToThread(function() return "one" end)))
    assert.equal(1, threads._stats().threads)
  end))

  it("test_adjustingWhenPoolStopped", async(function()
    stop_pool()
    reactor.suggestThreadPoolSize(2)
    local s = threads._stats()
    assert.equal(0, s.threads)
    assert.equal(2, s.max)
  end))

  -- the pool keeps no reference to a job's function or arguments once the
  -- job is done
  it("test_threadCreationArguments", async(function()
    local refs = setmetatable({}, { __mode = "v" })
    local function submit()
      local worker = function(arg) return arg.x end
      local unique = { x = 1 }
      refs.worker, refs.unique = worker, unique
      reactor.callInThread(worker, unique)
    end
    submit()
    await(threads._whenIdle())
    await(next_turn())
    collectgarbage()
    collectgarbage()
    assert.is_nil(refs.worker)
    assert.is_nil(refs.unique)
  end))

  -- as above for deferToThread (Twisted's is callInThreadWithCallback): the
  -- function, the argument, the Deferred and the result all go
  it("test_threadCreationArgumentsCallInThreadWithCallback", async(function()
    local refs = setmetatable({}, { __mode = "v" })
    local got
    local function submit()
      local worker = function(arg, test) return { arg.x + test.x } end
      local unique = { x = 1 }
      local d = threads.deferToThread(worker, unique, unique)
      refs.worker, refs.unique, refs.d = worker, unique, d
      d:addCallback(function(result)
        got = result[1]
        refs.result = result
      end)
    end
    submit()
    await(threads._whenIdle())
    assert.equal(2, got)
    await(next_turn())  -- out of the delivery that resumed this coroutine
    collectgarbage()
    collectgarbage()
    assert.same({}, { refs.worker, refs.unique, refs.d, refs.result })
  end))

  -- Twisted's synchronize() half is Python's; the pool half: every one of
  -- N calls runs
  it("test_callInThread", async(function()
    local ran, done = {}, Deferred()
    package.loaded[MOD] = {
      ran = function(i)
        ran[#ran + 1] = i
        if #ran == 10 then done:callback(nil) end
      end,
    }
    for i = 1, 10 do
      reactor.callInThread(function(v)
        require("braid.threads").callFromThread("braid_threadpool_port_spec.ran", v)
      end, i)
    end
    await(done)
    table.sort(ran)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, ran)
  end))

  -- Twisted queues the failing call before start() and stops the pool at
  -- once: the call still runs and its error is logged. braid: the job is
  -- queued behind another on a one-thread pool, and the reactor stops
  -- right away; the shutdown waits for both, and the error is logged
  -- before the after phase.
  it("test_callInThreadException", function()
    testing.flushLoggedErrors()
    reactor.suggestThreadPoolSize(1)
    local g = make_gate(1)
    g.isOpen = true  -- the first job waits for the loop, not for open()
    local order = {}
    g.ran = function(v) order[#order + 1] = v end
    reactor.callInThread(function()
      local t = require("braid.threads")
      t.blockingCallFromThread("braid_threadpool_port_spec.enter")
      t.callFromThread("braid_threadpool_port_spec.ran", "first")
    end)
    reactor.callInThread(function()
      error(require("braid.error").class("NewError")("raised in a thread"))
    end)
    -- the second waits for the first, which waits for the loop
    assert.equal(2, threads._stats().outstanding)
    local errs
    local t = reactor.addSystemEventTrigger("after", "shutdown", function()
      errs = testing.flushLoggedErrors(errors.LuaError)
    end)
    -- the error is expected: not on stderr
    local quiet = log.setErrorStream({ write = function() end, flush = function() end })
    reactor.callWhenRunning(reactor.stop)
    local ok, e = pcall(run_for)
    log.setErrorStream(quiet)
    reactor.removeSystemEventTrigger(t)
    assert(ok, e)
    assert.same({ "first" }, order)
    assert.equal(1, #errs)
    assert.equal("NewError: raised in a thread", errs[1].value)
  end)

  it("test_callInThreadWithCallback", async(function()
    assert.equal("test", await(threads.deferToThread(function() return "test" end)))
  end))

  -- (False, failure): the Deferred errbacks, the error's class name in the
  -- LuaError's text (only its text crosses: threads.md)
  it("test_callInThreadWithCallbackExceptionInCallback", async(function()
    local d = threads.deferToThread(function()
      error(require("braid.error").class("NewError")())
    end)
    local f
    d:addErrback(function(e) f = e end)
    await(d)
    assert.is_true(failure.isFailure(f))
    assert.equal(errors.LuaError, f.type)
    assert.equal("NewError", f.value)
  end))

  -- Twisted's onResult is deferToThread's firing of the Deferred: an error
  -- raised by a callback goes down that Deferred's chain, and the pool
  -- runs on
  it("test_callInThreadWithCallbackExceptionInOnResult", async(function()
    local results = {}
    local d = threads.deferToThread(function() return nil end)
    d:addCallback(function(r)
      results[#results + 1] = r == nil
      error(errors.ValueError("raised by onResult"))
    end)
    local f
    d:addErrback(function(e) f = e end)
    await(d)
    assert.same({ true }, results)
    assert.equal(errors.ValueError, f.type)
    assert.equal(7, await(threads.deferToThread(function() return 7 end)))
  end))

  -- work submitted before the reactor runs is done once it runs (braid
  -- starts it at once: threads.md)
  it("test_existingWork", function()
    local got
    threads.deferToThread(function() return "done" end):addCallback(function(r)
      got = r
      reactor.stop()
    end)
    run_for()
    assert.equal("done", got)
  end)

  -- Twisted's pool.workers / waiters / working: threads, idle and running
  it("test_workerStateTransition", async(function()
    stop_pool()
    local s = threads._stats()
    assert.same({ 0, 0, 0 }, { s.threads, s.idle, s.running })
    local g = make_gate(1)
    local d = threads.deferToThread(GATED, "worked")
    await(g.arrived)
    s = threads._stats()
    assert.same({ 1, 0, 1 }, { s.threads, s.idle, s.running })
    g.open()
    assert.equal("worked", await(d))
    assert.equal(0, threads._stats().running)
    -- a worker polls briefly for the next job before it waits: idle then
    assert.is_true(await(when(function() return threads._stats().idle == 1 end)))
    s = threads._stats()
    assert.same({ 1, 1, 0 }, { s.threads, s.idle, s.running })
  end))
end)

describe("RaceConditionTests (test/test_threadpool.py)", function()
  after_each(function() package.loaded[MOD] = nil end)

  -- jobs blocked in the pool, spare capacity: a job that unblocks them runs
  -- at once (on a new thread) and they all finish
  it("test_synchronization", async(function()
    local g = make_gate(3)
    local ds = {}
    for i = 1, 3 do ds[i] = threads.deferToThread(GATED, i) end
    await(g.arrived)
    ds[4] = threads.deferToThread(function()
      require("braid.threads").blockingCallFromThread("braid_threadpool_port_spec.open")
      return 4
    end)
    assert.same({ 1, 2, 3, 4, n = 4 }, await(defer.gatherResults(ds)))
  end))
end)

-- Twisted fakes the threads to count the workers a stopped pool starts for
-- the work queued before start(); braid's pool starts threads as the jobs
-- are queued: count them while the jobs wait at a gate
describe("MemoryBackedTests (test/test_threadpool.py)", function()
  after_each(function() package.loaded[MOD] = nil end)

  local function queue(n)
    stop_pool()
    local g = make_gate(math.min(n, threads._stats().max))
    local ds = {}
    for i = 1, n do ds[i] = threads.deferToThread(GATED, i) end
    await(g.arrived)
    local s = threads._stats()
    g.open()
    local r = await(defer.gatherResults(ds))
    assert.equal(n, r.n)
    return s
  end

  it("test_workBeforeStarting", async(function()
    local s = queue(5)
    assert.same({ 5, 5, 0 }, { s.threads, s.running, s.queued })
  end))

  it("test_tooMuchWorkBeforeStarting", async(function()
    local s = queue(50)
    assert.equal(10, s.max)
    assert.same({ 10, 10, 40 }, { s.threads, s.running, s.queued })
  end))
end)
