-- spec/twisted_await_port_spec.lua: the cases of Twisted's
-- src/twisted/internet/test/test_defer_await.py (AwaitTests) and
-- test_defer_yieldfrom.py (YieldFromTests), 22.4, one `describe` per
-- Twisted TestCase class and each `it` named after its test method: the
-- same scenario and the same asserted values, in braid's names. braid has
-- no coroutine objects to hand to Deferred.fromCoroutine or ensureDeferred:
-- an `async def` (or a generator using `yield from`) is an inlineCallbacks
-- function, `await d` (or `yield from d`) is defer.await(d), and
-- `Deferred.fromCoroutine(run())` / `ensureDeferred(run())` is
-- `inlineCallbacks(run)()`. The yield-from tests are the await tests with
-- Python's older syntax, so both describes run the same scenarios. The
-- mapping of every test method to its spec is in docs/twisted-tests.md.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local task = require "braid.task"
local testing = require "braid.testing"

local Deferred, inlineCallbacks, await = defer.Deferred, defer.inlineCallbacks, defer.await
local succeed, fail = defer.succeed, defer.fail
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

local SampleException = errors.class("SampleException")

-- "in function <file:line>": how Lua's traceback names a function it cannot
-- name otherwise (the body of a coroutine, a function called by xpcall),
-- as Python's ", in doomed\n"
local function frameOf(f)
  local info = debug.getinfo(f, "S")
  return ("in function <%s:%d>"):format(info.short_src, info.linedefined)
end

-- test_deferredFromCoroutine (test_DeferredfromCoroutine,
-- test_ensureDeferred): a function awaiting a fired Deferred and then
-- another inlineCallbacks function
local function fromCoroutine()
  local run2 = inlineCallbacks(function()
    local d = succeed("foo")
    local res = await(d)
    return res
  end)
  local run = inlineCallbacks(function()
    local d = succeed("bar")
    await(d)
    local res = await(run2())
    return res
  end)
  -- Now it's a Deferred.
  local d = run()
  assert.is_true(defer.isDeferred(d))
  assert.is_true(Deferred:isinstance(d))
  -- The Deferred has the result we want.
  assert.equal("foo", successResultOf(d))
end

-- test_basic (and test_basicEnsureDeferred)
local function basic()
  local run = function()
    local d = succeed("foo")
    local res = await(d)
    return res
  end
  local d = inlineCallbacks(run)()
  assert.equal("foo", successResultOf(d))
end

-- test_exception
local function exception()
  local run = function()
    local d = succeed("foo")
    await(d)
    error(errors.ValueError("Oh no!"))
  end
  local d = inlineCallbacks(run)()
  local res = failureResultOf(d)
  assert.equal(errors.ValueError, res.type)
  assert.equal("Oh no!", res.value.message)
end

-- test_twoDeep: first and second are the values the two Clock calls fire
-- their Deferreds with (2 and 1 in the await test, None in the yield-from
-- one)
local function twoDeep(first, second)
  local reactor = task.Clock()
  local sections = {}
  local function append(n) sections[#sections + 1] = n end

  local runone = inlineCallbacks(function()
    append(2)
    local d = Deferred()
    reactor:callLater(1, d.callback, d, first)
    await(d)
    append(3)
    return "Yay!"
  end)

  local run = inlineCallbacks(function()
    append(1)
    local result = await(runone())
    append(4)
    local d = Deferred()
    reactor:callLater(1, d.callback, d, second)
    await(d)
    append(5)
    return result
  end)

  local d = run()

  reactor:advance(0.9)
  assert.same({ 1, 2 }, sections)

  reactor:advance(0.1)
  assert.same({ 1, 2, 3, 4 }, sections)

  reactor:advance(0.9)
  assert.same({ 1, 2, 3, 4 }, sections)

  reactor:advance(0.1)
  assert.same({ 1, 2, 3, 4, 5 }, sections)

  assert.equal("Yay!", successResultOf(d))
end

-- test_reraise
local function reraise()
  local test = function()
    local ok, e = pcall(await, fail(errors.ValueError("Boom")))
    if not ok and errors.ValueError:isinstance(e) then
      assert.equal("Boom", e.message)
      return 1
    end
    return 0
  end
  assert.equal(1, successResultOf(inlineCallbacks(test)()))
end

-- test_chained
local function chained()
  local reactor = task.Clock()
  local test = function()
    local d = Deferred()
    local d2 = Deferred()
    d:addCallback(function() return d2 end)

    d:callback(nil)
    reactor:callLater(0, d2.callback, d2, "bye")
    return await(d)
  end
  local d = inlineCallbacks(test)()
  reactor:advance(0.1)
  assert.equal("bye", successResultOf(d))
end

describe("AwaitTests (test_defer_await)", function()
  it("test_deferredFromCoroutine", fromCoroutine)

  it("test_basic", basic)

  it("test_basicEnsureDeferred", basic)

  it("test_exception", exception)

  it("test_synchronousDeferredFailureTraceback", function()
    local function raises()
      error(SampleException())
    end
    local awaited = defer.maybeDeferred(raises)
    -- not `return await(awaited)`: under the Lua chain runner that is a tail
    -- call, which drops doomed's frame (docs/defer.md)
    local function doomed()
      local v = await(awaited)
      return v
    end
    local f = failureResultOf(inlineCallbacks(doomed)(), SampleException)
    local tb = f:getTraceback()
    assert.truthy(tb:find(frameOf(doomed), 1, true), tb)
    assert.truthy(tb:find(frameOf(raises), 1, true), tb)
  end)

  it("test_asyncDeferredFailureTraceback", function()
    -- Python's `except: return Failure()`: Lua keeps no traceback once an
    -- error is caught, so the Failure is made in xpcall's handler
    -- (docs/failure.md)
    local function raising()
      error(SampleException())
    end
    local function returnsFailure()
      local _, f = xpcall(raising, failure.msgh)
      return f
    end
    local awaited = Deferred()
    local function doomed()
      local v = await(awaited)
      return v
    end
    local started = inlineCallbacks(doomed)()
    assertNoResult(started)
    awaited:errback(returnsFailure())
    local f = failureResultOf(started, SampleException)
    local tb = f:getTraceback()
    assert.truthy(tb:find(frameOf(doomed), 1, true), tb)
    assert.truthy(tb:find(frameOf(raising), 1, true), tb)
    assert.truthy(tb:find("in upvalue 'returnsFailure'", 1, true)
      or tb:find("in local 'returnsFailure'", 1, true), tb)
  end)

  it("test_twoDeep", function() twoDeep(2, 1) end)

  it("test_reraise", reraise)

  it("test_chained", chained)
end)

describe("YieldFromTests (test_defer_yieldfrom)", function()
  it("test_ensureDeferred", fromCoroutine)

  it("test_DeferredfromCoroutine", fromCoroutine)

  it("test_basic", basic)

  it("test_exception", exception)

  it("test_twoDeep", function() twoDeep(nil, nil) end)

  it("test_reraise", reraise)

  it("test_chained", chained)
end)
