-- spec/twisted_defer_task_spec.lua: the cases of Twisted's
-- src/twisted/test/test_defer.py and test_task.py (22.4) that the other
-- specs did not port, one `describe` per Twisted TestCase class and each
-- `it` named after its test method: the same scenario and the same asserted
-- values, in braid's names. The other cases those files have, where API.md
-- covers their subject, are ported in the defer, inlinecallbacks, task,
-- cooperate and twisted_cases specs; these are the ones that were missing.
-- docs/twisted-tests.md maps every test method to its spec.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local task = require "braid.task"
local testing = require "braid.testing"

local Deferred, Failure = defer.Deferred, failure.Failure
local Clock = task.Clock
local successResultOf = testing.successResultOf

local GenericError = errors.class("GenericError")

local function overrideFunc() return "OVERRIDDEN" end

describe("DeferredTests (test_defer)", function()
  -- the TestCase's _callback/_errback record their arguments
  local callbackResults, errbackResults
  local function _callback(...) callbackResults = table.pack(...) return "noop" end
  local function _errback(...) errbackResults = table.pack(...) end

  before_each(function()
    callbackResults, errbackResults = nil, nil
  end)

  it("test_addCallbacksNoneCallbackArgs", function()
    local d = Deferred()
    d:addCallbacks(_callback, _errback, nil, {})
    d:callback("hello")
    assert.is_nil(errbackResults)
    assert.same({ n = 1, "hello" }, callbackResults)
  end)

  it("test_addCallbacksNoneErrbackArgs", function()
    local err = GenericError("oopsie")
    local d = Deferred()
    d:addCallbacks(_callback, _errback, {}, nil)
    d:errback(err)
    d:addErrback(_errback)
    assert.is_nil(callbackResults)
    assert.equal(1, errbackResults.n)
    assert.equal(err, errbackResults[1].value)
  end)

  it("test_nestedAsynchronousChainedDeferreds", function()
    local results, failures = {}, {}
    local function collect(f) failures[#failures + 1] = f end
    local inner = Deferred()
    local function cb(result)
      results[#results + 1] = { "start-of-cb", result }
      local d = defer.succeed("inner")
      d:addCallback(function()
        results[#results + 1] = { "firstCallback", "inner" }
        return inner
      end):addCallback(function(r)
        results[#results + 1] = { "secondCallback", r }
        return r .. r
      end)
      d:addErrback(collect)
      return d
    end
    local outer = defer.succeed("outer")
    outer:addCallback(cb)
    outer:addCallback(function(r) results[#results + 1] = r end)
    assert.same({ { "start-of-cb", "outer" }, { "firstCallback", "inner" } }, results)
    inner:callback("orange")
    inner:addErrback(collect)
    outer:addErrback(collect)
    assert.same({}, failures)
    assert.same({
      { "start-of-cb", "outer" },
      { "firstCallback", "inner" },
      { "secondCallback", "orange" },
      "orangeorange",
    }, results)
  end)
end)

describe("DeferredCancellerTests (test_defer)", function()
  it("test_noCancellerMultipleCancelsAfterCancelAndErrback", function()
    local errbackResults, callbackResults
    local d = Deferred()
    d:addCallbacks(function(r) callbackResults = r; return r end,
      function(f) errbackResults = f end)
    d:cancel()
    assert.equal(defer.CancelledError, errbackResults.type)
    local currentFailure = errbackResults
    d:errback(GenericError())
    assert.equal(defer.CancelledError, errbackResults.type)
    d:cancel()
    assert.equal(currentFailure, errbackResults)
    assert.is_nil(callbackResults)
  end)
end)

describe("DeferredAddTimeoutTests (test_defer)", function()
  it("test_errbackAddedBeforeTimeoutCustom", function()
    local clock = Clock()
    local d = Deferred()
    local dErrbacked
    d:addErrback(function(f) dErrbacked = f; return f end)
    d:addTimeout(10, clock, overrideFunc)
    clock:advance(15)
    assert.is_true(failure.isFailure(dErrbacked))
    assert.is_true(defer.CancelledError:isinstance(dErrbacked.value))
    assert.equal("OVERRIDDEN", successResultOf(d))
  end)

  it("test_callbackAddedToCancelerBeforeTimeoutCustom", function()
    local clock = Clock()
    local success = "success"
    local d = Deferred(function(c) c:callback(success) end)
    local dCallbacked
    d:addCallback(function(v) dCallbacked = v; return v end)
    d:addTimeout(10, clock, overrideFunc)
    clock:advance(15)
    assert.equal(success, dCallbacked)
    assert.equal("OVERRIDDEN", successResultOf(d))
  end)
end)
