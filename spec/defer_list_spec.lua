-- spec/defer_list_spec.lua: covers lua/braid/defer.lua (DeferredList,
-- gatherResults, race, FirstError, DeferredLock, DeferredSemaphore,
-- DeferredQueue); ported from Twisted's src/twisted/test/test_defer.py.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"

local Deferred, Failure = defer.Deferred, failure.Failure
local DeferredList = defer.DeferredList
local isFailure = failure.isFailure

local GenericError = errors.class("GenericError")

local function resultOf(d)
  local got, n = nil, 0
  d:addBoth(function(r) got, n = r, n + 1; return r end)
  return n == 1, got
end

local testing = require "braid.testing"
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

local function catch() return nil end

local function fakeCallbackCanceller(d) d:callback("Callback Result") end

describe("DeferredList", function()
  it("fires with {success, value} pairs in input order", function()
    local d1, d2, d3 = Deferred(), Deferred(), Deferred()
    local dl = DeferredList({ d1, d2, d3 })
    local result
    dl:addCallbacks(function(r) result = r end, function(r) result = r end)
    d1:callback("1")
    d2:addErrback(catch)
    d2:errback(GenericError("2"))
    assert.is_nil(result)
    d3:callback("3")
    assert.equal(3, #result)
    assert.same({ true, "1" }, result[1])
    assert.is_false(result[2][1])
    assert.equal("2", result[2][2].value.message)
    assert.same({ true, "3" }, result[3])
  end)

  it("leaves no hole for a nil result", function()
    local dl = DeferredList({ defer.succeed(nil), defer.succeed(2) })
    local r = successResultOf(dl)
    assert.equal(2, #r)
    assert.is_true(r[1][1])
    assert.is_nil(r[1][2])
  end)

  it("fires at once with an empty list, and never with fireOnOneCallback", function()
    assert.same({}, successResultOf(DeferredList({})))
    assertNoResult(DeferredList({}, { fireOnOneCallback = true }))
  end)

  it("fires with {value, index} on the first success with fireOnOneCallback", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneCallback = true })
    d2:callback("second")
    local fired, first = resultOf(dl)
    assert.is_true(fired)
    assert.same({ "second", 2 }, first)
    d1:callback("first")
    assert.same({ "second", 2 }, successResultOf(dl))
  end)

  it("errbacks with FirstError on the first failure with fireOnOneErrback", function()
    local d1, d2, d3 = Deferred(), Deferred(), Deferred()
    local dl = DeferredList({ d1, d2, d3 }, { fireOnOneErrback = true })
    local result = {}
    dl:addErrback(function(f) result[#result + 1] = f end)
    d2:addErrback(catch)
    d1:callback("1")
    assert.same({}, result)
    d2:errback(GenericError("from def2"))
    assert.equal(1, #result)
    local f = result[1]
    assert.equal(defer.FirstError, f.type)
    local firstError = f.value
    assert.equal(GenericError, firstError.subFailure.type)
    assert.equal("from def2", firstError.subFailure.value.message)
    assert.equal(2, firstError.index)
  end)

  it("leaves errors in the original Deferreds without consumeErrors", function()
    local d1 = Deferred()
    local dl = DeferredList({ d1 })
    local trapped = {}
    d1:addErrback(function(f) trapped[#trapped + 1] = f end)
    local lists = {}
    dl:addCallback(function(r) lists[#lists + 1] = r end)
    d1:errback(GenericError("Bang"))
    assert.equal("Bang", trapped[1].value.message)
    assert.equal(1, #lists)
    assert.equal("Bang", lists[1][1][2].value.message)
  end)

  it("turns errors into nil in the original Deferreds with consumeErrors", function()
    local d1 = Deferred()
    local dl = DeferredList({ d1 }, { consumeErrors = true })
    local trapped = {}
    d1:addErrback(function(f) trapped[#trapped + 1] = f end)
    local lists = {}
    dl:addCallback(function(r) lists[#lists + 1] = r end)
    d1:errback(GenericError("Bang"))
    assert.same({}, trapped)
    assert.is_true(resultOf(d1))
    assert.equal("Bang", lists[1][1][2].value.message)
  end)

  it("leaves successes in the original Deferreds with consumeErrors", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { consumeErrors = true })
    d1:callback("kept")
    d2:errback(GenericError("consumed"))
    assert.same({ true, "kept" }, { resultOf(d1) })
    assert.same({ true, nil }, { resultOf(d2) })
    local r = successResultOf(dl)
    assert.same({ true, "kept" }, r[1])
    assert.equal("consumed", r[2][2].value.message)
  end)

  it("fires at once with fireOnOneErrback when a Deferred has already failed", function()
    local d1, d2 = Deferred(), Deferred()
    d1:errback(GenericError("Bang"))
    local dl = DeferredList({ d1, d2 }, { fireOnOneErrback = true })
    local result = {}
    dl:addErrback(function(f) result[#result + 1] = f end)
    assert.equal(1, #result)
    d1:addErrback(catch)
  end)

  it("fires at once when every Deferred has already fired", function()
    local d1, d2 = Deferred(), Deferred()
    d1:errback(GenericError("Bang"))
    d2:callback(2)
    local dl = DeferredList({ d1, d2 })
    local r = successResultOf(dl)
    assert.is_false(r[1][1])
    assert.same({ true, 2 }, r[2])
    d1:addErrback(catch)
  end)

  it("cancels every Deferred when cancelled before firing", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 })
    dl:cancel()
    failureResultOf(d1, defer.CancelledError)
    failureResultOf(d2, defer.CancelledError)
  end)

  it("fires with the pairs when cancelled, a canceller having called back", function()
    local d1, d2 = Deferred(fakeCallbackCanceller), Deferred()
    local dl = DeferredList({ d1, d2 })
    dl:cancel()
    failureResultOf(d2, defer.CancelledError)
    local r = successResultOf(dl)
    assert.same({ true, "Callback Result" }, r[1])
    assert.is_false(r[2][1])
    assert.equal(defer.CancelledError, r[2][2]:check(defer.CancelledError))
  end)

  it("cancels every Deferred with fireOnOneCallback", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneCallback = true })
    dl:cancel()
    failureResultOf(d1, defer.CancelledError)
    failureResultOf(d2, defer.CancelledError)
  end)

  it("fires with {value, index} when a canceller calls back with fireOnOneCallback", function()
    local d1, d2 = Deferred(fakeCallbackCanceller), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneCallback = true })
    dl:cancel()
    failureResultOf(d2, defer.CancelledError)
    assert.same({ "Callback Result", 1 }, successResultOf(dl))
  end)

  it("errbacks with a FirstError of CancelledError with fireOnOneErrback", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneErrback = true })
    dl:cancel()
    failureResultOf(d1, defer.CancelledError)
    failureResultOf(d2, defer.CancelledError)
    local f = failureResultOf(dl, defer.FirstError)
    assert.equal(defer.CancelledError, f.value.subFailure:check(defer.CancelledError))
    assert.equal(1, f.value.index)
  end)

  it("fires with the pairs when every canceller calls back with fireOnOneErrback", function()
    local d1, d2 = Deferred(fakeCallbackCanceller), Deferred(fakeCallbackCanceller)
    local dl = DeferredList({ d1, d2 }, { fireOnOneErrback = true })
    dl:cancel()
    assert.same({ { true, "Callback Result" }, { true, "Callback Result" } }, successResultOf(dl))
  end)

  it("cancels only the Deferreds it was given", function()
    local d1, d2 = Deferred(), Deferred()
    local list = { d1, d2 }
    local dl = DeferredList(list)
    local d3 = Deferred()
    list[3] = d3
    dl:cancel()
    failureResultOf(d1, defer.CancelledError)
    failureResultOf(d2, defer.CancelledError)
    assertNoResult(d3)
  end)

  it("cancels every Deferred even when a canceller raises, logging the error", function()
    local logged = {}
    local saved = package.loaded["braid.log"]
    package.loaded["braid.log"] = { err = function(f, why) logged[#logged + 1] = { f, why } end }
    finally(function() package.loaded["braid.log"] = saved end)
    local d1 = Deferred(function() error(GenericError("test")) end)
    local d2 = Deferred()
    local dl = DeferredList({ d1, d2 })
    dl:cancel()
    failureResultOf(d2, defer.CancelledError)
    assert.equal(1, #logged)
    assert.equal(GenericError, logged[1][1].type)
    assert.equal("Exception raised from user supplied canceller", logged[1][2])
    d1:callback(nil)
  end)

  it("does nothing when cancelled after firing on one callback", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneCallback = true })
    d1:callback(nil)
    dl:cancel()
    assertNoResult(d2)
  end)

  it("does nothing when cancelled after firing on one errback", function()
    local d1, d2 = Deferred(), Deferred()
    local dl = DeferredList({ d1, d2 }, { fireOnOneErrback = true })
    d1:errback(GenericError("test"))
    dl:cancel()
    assertNoResult(d2)
    failureResultOf(d1, GenericError)
    failureResultOf(dl, defer.FirstError)
  end)

  it("is a Deferred", function()
    local dl = DeferredList({})
    assert.is_true(Deferred:isinstance(dl))
    assert.is_true(defer.isDeferred(dl))
    assert.matches("^<DeferredList at 0x%x+ current result: table: ", tostring(dl))
  end)

  it("raises TypeError at once for a non-table or a non-Deferred item", function()
    local ok, e = pcall(DeferredList, 5)
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'DeferredList' (table expected, got number)", e.message)
    ok, e = pcall(DeferredList, { Deferred(), 3 })
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'DeferredList' (item 2: Deferred expected, got number)", e.message)
  end)
end)

describe("gatherResults", function()
  it("fires with the list of results and its count", function()
    local r = successResultOf(defer.gatherResults({ defer.succeed(1), defer.succeed(nil), defer.succeed(3) }))
    assert.equal(3, r.n)
    assert.equal(1, r[1])
    assert.is_nil(r[2])
    assert.equal(3, r[3])
  end)

  it("errbacks with FirstError on a failure", function()
    local dl = { defer.succeed(1), defer.fail(errors.ValueError("bad")) }
    local f = failureResultOf(defer.gatherResults(dl), defer.FirstError)
    assert.equal(2, f.value.index)
    assert.equal(errors.ValueError, f.value.subFailure.type)
    dl[2]:addErrback(catch)
  end)

  it("turns failures into nil in the original Deferreds with consumeErrors", function()
    local dgood = defer.succeed(1)
    local dbad = defer.fail(GenericError("oh noes"))
    local d = defer.gatherResults({ dgood, dbad }, true)
    local unconsumed, gathered = {}, {}
    dbad:addErrback(function(f) unconsumed[#unconsumed + 1] = f end)
    d:addErrback(function(f) gathered[#gathered + 1] = f end)
    assert.equal(0, #unconsumed)
    assert.equal(1, #gathered)
    assert.equal(GenericError, gathered[1].value.subFailure.type)
  end)

  it("cancels every Deferred and errbacks with FirstError when cancelled", function()
    local d1, d2 = Deferred(), Deferred()
    local result = defer.gatherResults({ d1, d2 })
    result:cancel()
    failureResultOf(d1, defer.CancelledError)
    failureResultOf(d2, defer.CancelledError)
    local f = failureResultOf(result, defer.FirstError)
    assert.equal(defer.CancelledError, f.value.subFailure:check(defer.CancelledError))
  end)

  it("fires with the results when every canceller calls back", function()
    local d1, d2 = Deferred(fakeCallbackCanceller), Deferred(fakeCallbackCanceller)
    local result = defer.gatherResults({ d1, d2 })
    result:cancel()
    local r = successResultOf(result)
    assert.equal("Callback Result", r[1])
    assert.equal("Callback Result", r[2])
  end)
end)

describe("race", function()
  it("fires with {index, value} of the first success and cancels the others", function()
    local cancelled = {}
    local ds = {}
    for i = 1, 3 do ds[i] = Deferred(function() cancelled[#cancelled + 1] = i end) end
    local r = defer.race(ds)
    ds[2]:callback("two")
    assert.same({ 2, "two" }, successResultOf(r))
    assert.same({ 1, 3 }, cancelled)
    -- race consumes the results it saw: the inputs are left with nil
    for i = 1, 3 do
      local ok, v = resultOf(ds[i])
      assert.is_true(ok)
      assert.is_nil(v)
    end
  end)

  it("fires once with the first success when a cancelled one calls back from its canceller", function()
    local ds = {
      Deferred(),
      Deferred(function(d) d:callback("from canceller") end),
    }
    local r = defer.race(ds)
    ds[1]:callback("first")
    assert.same({ 1, "first" }, successResultOf(r))
    assert.same({ true, nil }, { resultOf(ds[2]) })
  end)

  it("waits for a success after failures", function()
    local d1, d2 = Deferred(), Deferred()
    local r = defer.race({ d1, d2 })
    d1:errback(GenericError("first fails"))
    assertNoResult(r)
    d2:callback("ok")
    assert.same({ 2, "ok" }, successResultOf(r))
  end)

  it("errbacks with a FailureGroup of the failures in input order when all fail", function()
    local d1, d2 = Deferred(), Deferred()
    local r = defer.race({ d1, d2 })
    d2:errback(GenericError("b"))
    d1:errback(GenericError("a"))
    local f = failureResultOf(r, defer.FailureGroup)
    assert.equal(2, #f.value.failures)
    assert.equal("a", f.value.failures[1].value.message)
    assert.equal("b", f.value.failures[2].value.message)
  end)

  it("cancels every Deferred when cancelled", function()
    local cancelled = {}
    local d1 = Deferred(function() cancelled[#cancelled + 1] = 1 end)
    local d2 = Deferred(function() cancelled[#cancelled + 1] = 2 end)
    local r = defer.race({ d1, d2 })
    r:cancel()
    assert.same({ 1, 2 }, cancelled)
    local f = failureResultOf(r, defer.FailureGroup)
    assert.equal(defer.CancelledError, f.value.failures[1].type)
    assert.equal(defer.CancelledError, f.value.failures[2].type)
  end)

  it("raises TypeError at once for a non-Deferred item", function()
    local ok, e = pcall(defer.race, { 1 })
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'race' (item 1: Deferred expected, got number)", e.message)
  end)
end)

describe("FirstError", function()
  it("prints the index and the sub-failure's error", function()
    local f = Failure(errors.ValueError("some text"))
    local e = defer.FirstError(f, 3)
    assert.equal("FirstError: [#3, ValueError: some text]", tostring(e))
  end)

  it("compares equal when index and sub-failure are equal", function()
    local f1 = Failure(GenericError("x"))
    local f2 = Failure(errors.ValueError("bar"))
    local one, anotherOne = defer.FirstError(f1, 13), defer.FirstError(f1, 13)
    local another = defer.FirstError(f2, 9)
    assert.is_true(one == anotherOne)
    assert.is_false(one == another)
    assert.is_true(one ~= another)
    assert.is_false(one == 10)
  end)

  it("descends from braid.error.Error", function()
    assert.is_true(errors.Error:isinstance(defer.FirstError(Failure("x"), 1)))
    assert.equal(defer.FirstError, errors.FirstError)
  end)
end)

describe("DeferredLock", function()
  it("serializes acquirers, fires in order and runs functions under the lock", function()
    local counter = 0
    local function incr() counter = counter + 1 end
    local lock = defer.DeferredLock()
    lock:acquire():addCallback(incr)
    assert.is_true(lock.locked)
    assert.equal(1, counter)
    lock:acquire():addCallback(incr)
    assert.is_true(lock.locked)
    assert.equal(1, counter)
    lock:release()
    assert.is_true(lock.locked)
    assert.equal(2, counter)
    lock:release()
    assert.is_false(lock.locked)
    assert.equal(2, counter)

    local ok, e = pcall(lock.run, lock)
    assert.is_false(ok)
    assert.equal(errors.TypeError, e.class)

    local firstUnique, secondUnique = {}, {}
    local control = Deferred()
    local result
    local function helper(resultValue, returnValue)
      result = resultValue
      return returnValue
    end
    local resultDeferred = lock:run(helper, firstUnique, control)
    assert.is_true(lock.locked)
    assert.equal(firstUnique, result)
    resultDeferred:addCallback(helper)
    lock:acquire():addCallback(incr)
    assert.is_true(lock.locked)
    assert.equal(2, counter)
    control:callback(secondUnique)
    assert.equal(secondUnique, result)
    assert.is_true(lock.locked)
    assert.equal(3, counter)

    local d = lock:acquire():addBoth(helper)
    d:cancel()
    assert.is_true(isFailure(result))
    assert.equal(defer.CancelledError, result.type)
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("passes run's arguments with their count, nils included", function()
    local lock = defer.DeferredLock()
    local d = lock:run(function(...) return select("#", ...) end, nil, 2, nil)
    assert.equal(3, successResultOf(d))
    assert.is_false(lock.locked)
  end)

  it("releases the lock when the function raises", function()
    local lock = defer.DeferredLock()
    local d = lock:run(function() error(GenericError("in run")) end)
    failureResultOf(d, GenericError)
    assert.is_false(lock.locked)
  end)

  it("ignores a cancel after the lock was acquired", function()
    local lock = defer.DeferredLock()
    local d = lock:acquire()
    d:addErrback(function() error("unexpected errback") end)
    d:cancel()
    assert.equal(lock, successResultOf(d))
  end)

  it("fails a waiting acquire with CancelledError and drops it from the waiters", function()
    local lock = defer.DeferredLock()
    lock:acquire()
    local d = lock:acquire()
    d:cancel()
    failureResultOf(d, defer.CancelledError)
    assert.equal(0, #lock.waiting)
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("raises ValueError when releasing an unlocked lock", function()
    local lock = defer.DeferredLock()
    local ok, e = pcall(lock.release, lock)
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)
end)

describe("DeferredSemaphore", function()
  it("hands out tokens up to its limit", function()
    local N = 13
    local sem = defer.DeferredSemaphore(N)
    assert.equal(N, sem.limit)
    local counter = 0
    local function incr() counter = counter + 1 end
    local control = Deferred()
    local helperArg
    local results = {}
    local unique = {}
    local resultDeferred = sem:run(function(arg) helperArg = arg; return control end, unique)
    resultDeferred:addCallback(function(r) results[#results + 1] = tostring(r) end)
    resultDeferred:addCallback(incr)
    assert.same({}, results)
    assert.equal(unique, helperArg)
    control:callback(nil)
    assert.same({ "nil" }, results)
    assert.equal(1, counter)

    counter = 0
    for i = 1, N do
      sem:acquire():addCallback(incr)
      assert.equal(i, counter)
    end
    assert.equal(0, sem.tokens)
    local success = {}
    local d = sem:acquire():addCallbacks(function() success[#success + 1] = false end,
      function() success[#success + 1] = true end)
    d:cancel()
    assert.same({ true }, success)
    sem:acquire():addCallback(incr)
    assert.equal(N, counter)
    sem:release()
    assert.equal(N + 1, counter)
    for _ = 1, N do
      sem:release()
      assert.equal(N + 1, counter)
    end
    assert.equal(N, sem.tokens)
  end)

  it("raises ValueError for fewer than one token", function()
    for _, n in ipairs({ 0, -1 }) do
      local ok, e = pcall(defer.DeferredSemaphore, n)
      assert.is_false(ok)
      assert.equal(errors.ValueError, e.class)
    end
  end)

  it("raises ValueError when released more often than acquired", function()
    local sem = defer.DeferredSemaphore(1)
    local ok, e = pcall(sem.release, sem)
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)

  it("ignores a cancel after a token was acquired", function()
    local sem = defer.DeferredSemaphore(1)
    local d = sem:acquire()
    d:addErrback(function() error("unexpected errback") end)
    d:cancel()
    assert.equal(sem, successResultOf(d))
  end)

  it("fails a waiting acquire with CancelledError", function()
    local sem = defer.DeferredSemaphore(1)
    sem:acquire()
    local d = sem:acquire()
    d:cancel()
    failureResultOf(d, defer.CancelledError)
    assert.equal(0, #sem.waiting)
  end)
end)

describe("DeferredQueue", function()
  it("delivers in order and enforces size and backlog", function()
    local N, M = 2, 2
    local queue = defer.DeferredQueue(N, M)
    local gotten = {}
    local function got(v) gotten[#gotten + 1] = v end
    for _ = 1, M do queue:get():addCallback(got) end
    local ok, e = pcall(queue.get, queue)
    assert.is_false(ok)
    assert.equal(defer.QueueUnderflow, e.class)
    for i = 1, M do
      queue:put(i)
      assert.equal(i, #gotten)
    end
    for i = 1, N do queue:put(N + i) end
    assert.same({ 1, 2 }, gotten)
    ok, e = pcall(queue.put, queue, nil)
    assert.is_false(ok)
    assert.equal(defer.QueueOverflow, e.class)
    gotten = {}
    for i = 1, N do
      queue:get():addCallback(got)
      assert.equal(N + i, gotten[i])
    end

    queue = defer.DeferredQueue()
    gotten = {}
    for _ = 1, N do queue:get():addCallback(got) end
    for i = 1, N do queue:put(i) end
    assert.same({ 1, 2 }, gotten)

    ok, e = pcall(defer.DeferredQueue(0).put, defer.DeferredQueue(0), 1)
    assert.is_false(ok)
    assert.equal(defer.QueueOverflow, e.class)
    local q0 = defer.DeferredQueue(nil, 0)
    ok, e = pcall(q0.get, q0)
    assert.is_false(ok)
    assert.equal(defer.QueueUnderflow, e.class)
  end)

  it("keeps nil values in order", function()
    local queue = defer.DeferredQueue()
    queue:put(nil)
    queue:put(2)
    assert.equal(2, queue:pendingCount())
    local ok1, v1 = resultOf(queue:get())
    local ok2, v2 = resultOf(queue:get())
    assert.is_true(ok1 and ok2)
    assert.is_nil(v1)
    assert.equal(2, v2)
    assert.equal(0, queue:pendingCount())
  end)

  it("ignores a cancel of a get that already has a value", function()
    local queue = defer.DeferredQueue()
    local d = queue:get()
    d:addErrback(function() error("unexpected errback") end)
    queue:put("x")
    d:cancel()
    assert.equal("x", successResultOf(d))
  end)

  it("fails a cancelled get and never fires it from a later put", function()
    local queue = defer.DeferredQueue()
    local d = queue:get()
    d:cancel()
    failureResultOf(d, defer.CancelledError)
    local done = {}
    d:addCallback(function()
      queue:put("later")
      return queue:get():addCallback(function(v) assert.equal("later", v) end)
    end)
    d:addCallback(function() done[#done + 1] = true end)
    assert.equal(1, #done)
  end)
end)

describe("the waiting list of DeferredLock, DeferredSemaphore and DeferredQueue", function()
  local N = 3000  -- (cancels make Failures with tracebacks: busted's stack is deep)

  -- Make N waiters with make(i), cancel every third, then hand over with
  -- give() until none waits: the order they were served in.
  local function serve(prim, make, give)
    local order, ds = {}, {}
    for i = 1, N do
      ds[i] = make(i)
      ds[i]:addCallbacks(function(r) order[#order + 1] = i; return r end, function() end)
    end
    assert.equal(N, #prim.waiting)
    for i = 3, N, 3 do ds[i]:cancel() end
    local live = N - N // 3
    assert.equal(live, #prim.waiting)
    -- read as a list, oldest first, the cancelled ones gone
    assert.equal(ds[1], prim.waiting[1])
    assert.equal(ds[4], prim.waiting[3])
    assert.is_nil(prim.waiting[live + 1])
    local seen = 0
    for k, d in ipairs(prim.waiting) do
      seen = k
      if k == 3 then assert.equal(ds[4], d) end
    end
    assert.equal(live, seen)
    while #prim.waiting > 0 do give() end
    return order
  end

  local function expected()
    local want = {}
    for i = 1, N do if i % 3 ~= 0 then want[#want + 1] = i end end
    return want
  end

  it("hands a lock to 3,000 waiters oldest first, skipping cancelled ones", function()
    local lock = defer.DeferredLock()
    lock:acquire()
    local order = serve(lock, function() return lock:acquire() end, function() lock:release() end)
    assert.same(expected(), order)
    assert.is_true(lock.locked)
    lock:release()
    assert.is_false(lock.locked)
  end)

  it("hands semaphore tokens to 3,000 waiters oldest first, skipping cancelled ones", function()
    local sem = defer.DeferredSemaphore(2)
    sem:acquire()
    sem:acquire()
    local order = serve(sem, function() return sem:acquire() end, function() sem:release() end)
    assert.same(expected(), order)
    assert.equal(0, sem.tokens)
    sem:release()
    sem:release()
    assert.equal(2, sem.tokens)
  end)

  it("gives queued values to 3,000 waiting gets oldest first, skipping cancelled ones", function()
    local q = defer.DeferredQueue()
    local v = 0
    local order = serve(q, function() return q:get() end, function() v = v + 1; q:put(v) end)
    assert.same(expected(), order)
    assert.equal(0, q:pendingCount())
    q:put("next")
    assert.equal("next", successResultOf(q:get()))
  end)

  it("counts only live waiters against a queue's backlog", function()
    local q = defer.DeferredQueue(nil, 2)
    local a = q:get()
    q:get()
    a:cancel()
    q:get()  -- room again
    local ok, e = pcall(q.get, q)
    assert.is_false(ok)
    assert.equal(defer.QueueUnderflow, e.class)
  end)

  it("keeps no more than about twice its waiters when cancels come without releases", function()
    local lock = defer.DeferredLock()
    lock:acquire()
    local ds, got = {}, {}
    for i = 1, 1000 do
      ds[i] = lock:acquire()
      ds[i]:addCallbacks(function(r) got[#got + 1] = i; return r end, function() end)
    end
    for i = 2, 999 do
      if i % 100 ~= 0 then ds[i]:cancel() end
      assert.is_true(rawlen(lock.waiting._q) <= 2 * #lock.waiting + 16)
    end
    assert.equal(11, #lock.waiting)
    ds[500]:cancel()  -- found where the move put it
    for _ = 1, 10 do lock:release() end
    assert.same({ 1, 100, 200, 300, 400, 600, 700, 800, 900, 1000 }, got)
    assert.equal(0, #lock.waiting)
  end)

  it("is read-only", function()
    local lock = defer.DeferredLock()
    local ok, e = pcall(function() lock.waiting[1] = Deferred() end)
    assert.is_false(ok)
    assert.equal(errors.TypeError, e.class)
    assert.matches("the waiting list is read-only", tostring(e), 1, true)
  end)
end)
