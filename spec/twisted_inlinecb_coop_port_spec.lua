-- spec/twisted_inlinecb_coop_port_spec.lua: the cases of Twisted's
-- src/twisted/internet/test/test_inlinecb.py (trunk, which took in
-- test_defgen.py's InlineCallbacksTests) and twisted/test/test_cooperator.py
-- that spec/inlinecallbacks_spec.lua and spec/cooperate_spec.lua did not
-- port, one `describe` per Twisted TestCase class and each `it` named after
-- its test method: the same scenario and the same asserted values, in
-- braid's names (a generator yielding a Deferred is an inlineCallbacks
-- function calling await; returnValue(x) is return x). The mapping of every
-- test method to its spec is in docs/twisted-tests.md.
local defer = require "braid.defer"
local errors = require "braid.error"
local task = require "braid.task"
local testing = require "braid.testing"

local Deferred, inlineCallbacks, await = defer.Deferred, defer.inlineCallbacks, defer.await
local CancelledError = defer.CancelledError
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

local TerminalException = errors.class("TerminalException")
local MyException = errors.class("MyException")
local UntranslatedError = errors.class("UntranslatedError")
local TranslatedError = errors.class("TranslatedError")
local DontFail = errors.class("DontFail")
function DontFail:init(actual) self.actualValue = actual end

-- Twisted's getDivisionFailure: braid has no ZeroDivisionError, so a
-- ValueError stands in for it
local function getDivisionFailure(msg)
  return defer.fail(errors.ValueError(msg))
end

-- the TestCase's runCallbacksOnDeferreds
local function runCallbacksOnDeferreds(list)
  for _, pair in ipairs(list) do
    local d, x = pair[1], pair[2]
    if errors.Error:isinstance(x) then d:errback(x) else d:callback(x) end
  end
end

local function push(t, ...) t[#t + 1] = { ... } end

describe("BasicTests (test_inlinecb)", function()
  it("testBasics", function()
    -- getThing(): reactor.callLater(0, d.callback, "hi"), on a Clock here
    local clock = task.Clock()
    local function getThing()
      local d = Deferred()
      clock:callLater(0, d.callback, d, "hi")
      return d
    end
    local seen = {}
    local d = inlineCallbacks(function()
      local x = await(getThing())
      seen[#seen + 1] = x
      local ok, e = pcall(await, getDivisionFailure("OMG"))
      seen[#seen + 1] = ok
      seen[#seen + 1] = errors.ValueError:isinstance(e) and e.message
      return "WOOSH"
    end)()
    assertNoResult(d)
    clock:advance(0)
    assert.same({ "hi", false, "OMG" }, seen)
    assert.equal("WOOSH", successResultOf(d))
  end)

  it("testProducesException", function()
    local clock = task.Clock()
    local d = inlineCallbacks(function()
      await(task.deferLater(clock, 0))
      error(errors.ValueError("division by zero"))
    end)()
    clock:advance(0)
    assert.equal("division by zero", failureResultOf(d, errors.ValueError).value.message)
  end)

  it("testNothing", function()
    local d = inlineCallbacks(function() end)()
    local r = {}
    d:addCallback(function(v) r[#r + 1] = { v } end)
    assert.same({ { nil } }, r)
  end)

  it("testStackUsage2", function()
    local d = inlineCallbacks(function()
      for _ = 1, 5000 do assert(await(1) == 1) end
      return 0
    end)()
    assert.equal(0, successResultOf(d))
  end)

  it("testReturnNoValue", function()
    local d = inlineCallbacks(function()
      await(5)
      return
    end)()
    assert.is_nil(successResultOf(d))
  end)

  it("testReturnValue", function()
    local d = inlineCallbacks(function()
      await(5)
      return 6
    end)()
    assert.equal(6, successResultOf(d))
  end)

  it("test_inlineCallbacksNoCircularReference", function()
    local func = inlineCallbacks(function(a)
      await(a)
      return a
    end)
    -- made and dropped in a function of its own, so that no register of
    -- this one keeps them
    local function run()
      local obj = {}
      local funcD = func(obj)
      assert.equal(obj, successResultOf(funcD))
      return setmetatable({ obj = obj, funcD = funcD }, { __mode = "v" })
    end
    local weak = run()
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.obj)
    assert.is_nil(weak.funcD)
  end)
end)

describe("StackedInlineCallbacksTests (test_inlinecb)", function()
  local expectations, deferredList

  before_each(function()
    expectations, deferredList = {}, {}
  end)

  -- f1: waits on a new Deferred fired later with x, returns x + 1
  local f1 = inlineCallbacks(function(x)
    push(expectations, "f1 enter", x)
    local d = Deferred()
    deferredList[#deferredList + 1] = { d, x }
    x = await(d)
    x = x + 1
    push(expectations, "f1 exit", x)
    return x
  end)

  -- f2 of the intermediateAddCallbacks tests: a plain callback
  local function plainF2(x)
    push(expectations, "f2 enter", x)
    x = x + 2
    push(expectations, "f2 exit", x)
    return x
  end

  it("test_nonCalledDeferredSingleYield", function()
    local f2 = inlineCallbacks(function(x)
      push(expectations, "f2 enter", x)
      x = await(f1(x))
      x = x + 2
      push(expectations, "f2 exit", x)
      return x
    end)
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      x = await(f2(x))
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    runCallbacksOnDeferreds(deferredList)
    assert.equal(8, successResultOf(res))
    assert.same({
      { "f3 enter", 1 }, { "f2 enter", 1 }, { "f1 enter", 1 },
      { "f1 exit", 2 }, { "f2 exit", 4 }, { "f3 exit", 8 },
    }, expectations)
  end)

  it("test_nonCalledDeferredMultipleYields", function()
    local f2 = inlineCallbacks(function(x)
      push(expectations, "f2 enter", x)
      x = await(f1(x))
      x = await(f1(x))
      x = await(f1(x))
      x = x + 2
      push(expectations, "f2 exit", x)
      return x
    end)
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      x = await(f2(x))
      x = await(f2(x))
      x = await(f2(x))
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    -- Twisted's loop over the list sees the Deferreds appended while it runs
    local i = 1
    while deferredList[i] do
      deferredList[i][1]:callback(deferredList[i][2])
      i = i + 1
    end
    assert.equal(20, successResultOf(res))
    assert.same({
      { "f3 enter", 1 }, { "f2 enter", 1 }, { "f1 enter", 1 }, { "f1 exit", 2 },
      { "f1 enter", 2 }, { "f1 exit", 3 }, { "f1 enter", 3 }, { "f1 exit", 4 },
      { "f2 exit", 6 }, { "f2 enter", 6 }, { "f1 enter", 6 }, { "f1 exit", 7 },
      { "f1 enter", 7 }, { "f1 exit", 8 }, { "f1 enter", 8 }, { "f1 exit", 9 },
      { "f2 exit", 11 }, { "f2 enter", 11 }, { "f1 enter", 11 }, { "f1 exit", 12 },
      { "f1 enter", 12 }, { "f1 exit", 13 }, { "f1 enter", 13 }, { "f1 exit", 14 },
      { "f2 exit", 16 }, { "f3 exit", 20 },
    }, expectations)
  end)

  it("test_intermediateAddCallbacksAndNoWaiting", function()
    local g1 = inlineCallbacks(function(x)
      push(expectations, "f1 enter", x)
      x = await(x)
      x = x + 1
      push(expectations, "f1 exit", x)
      return x
    end)
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      local d = g1(x)
      d:addCallback(plainF2)
      x = await(d)
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    assert.equal(8, successResultOf(f3(1)))
    assert.same({
      { "f3 enter", 1 }, { "f1 enter", 1 }, { "f1 exit", 2 },
      { "f2 enter", 2 }, { "f2 exit", 4 }, { "f3 exit", 8 },
    }, expectations)
  end)

  it("test_intermediateAddCallbacksAndWithWaitingFirstYield", function()
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      local d = f1(x)
      d:addCallback(plainF2)
      x = await(d)
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    runCallbacksOnDeferreds(deferredList)
    assert.equal(8, successResultOf(res))
    assert.same({
      { "f3 enter", 1 }, { "f1 enter", 1 }, { "f1 exit", 2 },
      { "f2 enter", 2 }, { "f2 exit", 4 }, { "f3 exit", 8 },
    }, expectations)
  end)

  it("test_intermediateAddCallbacksAndWithWaitingSecondYield", function()
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      x = await(f1(x))
      local d = f1(x)
      d:addCallback(plainF2)
      x = await(d)
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    local i = 1
    while deferredList[i] do
      deferredList[i][1]:callback(deferredList[i][2])
      i = i + 1
    end
    assert.equal(9, successResultOf(res))
    assert.same({
      { "f3 enter", 1 }, { "f1 enter", 1 }, { "f1 exit", 2 }, { "f1 enter", 2 },
      { "f1 exit", 3 }, { "f2 enter", 3 }, { "f2 exit", 5 }, { "f3 exit", 9 },
    }, expectations)
  end)

  local failingF2 = inlineCallbacks(function(x)
    push(expectations, "f2 enter", x)
    local d = Deferred()
    deferredList[#deferredList + 1] = { d, MyException() }
    x = await(d)
    push(expectations, "f2 exit", x)
    return x
  end)

  it("test_raisesExceptionFromDeferredWithWaitingFirstCallback", function()
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      local ok, e = pcall(await, failingF2(x))
      assert(not ok and MyException:isinstance(e), tostring(e))
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    runCallbacksOnDeferreds(deferredList)
    assert.equal(5, successResultOf(res))
    assert.same({ { "f3 enter", 1 }, { "f2 enter", 1 }, { "f3 exit", 5 } }, expectations)
  end)

  it("test_raisesExceptionFromDeferredWithWaitingSecondCallback", function()
    local f3 = inlineCallbacks(function(x)
      push(expectations, "f3 enter", x)
      x = await(f1(x))
      local ok, e = pcall(await, failingF2(x))
      assert(not ok and MyException:isinstance(e), tostring(e))
      x = x + 4
      push(expectations, "f3 exit", x)
      return x
    end)
    local res = f3(1)
    local i = 1
    while deferredList[i] do
      local d, x = deferredList[i][1], deferredList[i][2]
      if errors.Error:isinstance(x) then d:errback(x) else d:callback(x) end
      i = i + 1
    end
    assert.equal(6, successResultOf(res))
    assert.same({
      { "f3 enter", 1 }, { "f1 enter", 1 }, { "f1 exit", 2 },
      { "f2 enter", 2 }, { "f3 exit", 6 },
    }, expectations)
  end)
end)

describe("ForwardTraceBackTests (test_inlinecb)", function()
  -- erroring "yields" a non-Deferred first, so the whole chain runs at once
  local function erroringBody()
    await("forcing generator")
    error(errors.Error("Error Marker"))
  end
  local function where(body)
    local info = debug.getinfo(body, "S")
    return ("in function <%s:%d>"):format(info.short_src, info.linedefined)
  end

  it("test_forwardTracebacks", function()
    local erroring = inlineCallbacks(erroringBody)
    local function callingBody() await(erroring()) end
    local d = inlineCallbacks(callingBody)()
    local tb = failureResultOf(d, errors.Error):getTraceback()
    assert.matches(where(erroringBody), tb, 1, true)
    assert.matches(where(callingBody), tb, 1, true)
    assert.matches("Error Marker", tb, 1, true)
  end)

  it("test_forwardLotsOfTracebacks", function()
    local erroring = inlineCallbacks(erroringBody)
    local calling3, calling2
    local function calling3Body() await(erroring()) end
    local function calling2Body() await(calling3()) end
    local function callingBody() await(calling2()) end
    calling3 = inlineCallbacks(calling3Body)
    calling2 = inlineCallbacks(calling2Body)
    local f = failureResultOf(inlineCallbacks(callingBody)(), errors.Error)
    local tb = f:getTraceback()
    for _, body in ipairs({ erroringBody, callingBody, calling2Body, calling3Body }) do
      assert.matches(where(body), tb, 1, true)
    end
    assert.matches("Error Marker", tb, 1, true)
    assert.matches(where(erroringBody), f:getTraceback(), 1, true)
  end)
end)

describe("CancellationTests (test_inlinecb)", function()
  local outstanding

  before_each(function() outstanding = {} end)

  local function getDeferred()
    local d = Deferred()
    outstanding[#outstanding + 1] = d
    return d
  end

  local stackedInlineCB = inlineCallbacks(function(getChildDeferred)
    return await(getChildDeferred())
  end)

  -- sampleInlineCB(getChildDeferred, stacked, firstDeferred)
  local sampleInlineCB = inlineCallbacks(function(getChildDeferred, stacked, firstDeferred)
    getChildDeferred = getChildDeferred or getDeferred
    local ok, x = pcall(function()
      if stacked then
        if firstDeferred then await(firstDeferred) end
        return await(stackedInlineCB(getChildDeferred))
      end
      return await(getChildDeferred())
    end)
    if not ok then
      if UntranslatedError:isinstance(x) then error(TranslatedError()) end
      if not DontFail:isinstance(x) then error(x, 0) end
      x = x.actualValue - 2
    end
    return x + 1
  end)

  local function variants(name, run)
    it("test_" .. name, function() run(false, false) end)
    it("test_" .. name .. "Stacked", function() run(true, false) end)
    it("test_" .. name .. "StackedOnSecondDeferred", function() run(true, true) end)
  end

  variants("CascadeCancellingOnCancel", function(stacked, second)
    local childResult = "FAILURE"
    local function getChildDeferred()
      local d = Deferred()
      d:addErrback(function(f)
        childResult = f:check(CancelledError)
        return f
      end)
      return d
    end
    local first = second and Deferred() or nil
    local d = sampleInlineCB(getChildDeferred, stacked, first)
    d:addErrback(function() end)
    if first then first:callback(1) end
    d:cancel()
    assert.equal(CancelledError, childResult, "no cascade cancelling occurs")
  end)

  variants("ErrbackCancelledErrorOnCancel", function(stacked, second)
    local first = second and Deferred() or nil
    local d = sampleInlineCB(nil, stacked, first)
    if first then first:callback(1) end
    d:cancel()
    failureResultOf(d, CancelledError)
  end)

  variants("ErrorToErrorTranslation", function(stacked, second)
    local first = second and Deferred() or nil
    local a = Deferred(function(it) it:errback(UntranslatedError()) end)
    local d = sampleInlineCB(function() return a end, stacked, first)
    if first then first:callback(1) end
    d:cancel()
    failureResultOf(d, TranslatedError)
  end)

  variants("ErrorToSuccessTranslation", function(stacked, second)
    local first = second and Deferred() or nil
    local a = Deferred(function(it) it:errback(DontFail(4321)) end)
    local d = sampleInlineCB(function() return a end, stacked, first)
    local results = {}
    d:addCallback(function(r) results[#results + 1] = r end)
    if first then first:callback(1) end
    d:cancel()
    assert.same({ 4320 }, results)
  end)

  variants("AsynchronousCancellation", function(stacked, second)
    local moreDeferred = Deferred()
    local function deferMe()
      local d = Deferred()
      d:addErrback(function(f)
        f:trap(CancelledError)
        return moreDeferred
      end)
      return d
    end
    local first = second and Deferred() or nil
    local d = sampleInlineCB(deferMe, stacked, first)
    if first then first:callback(1) end
    d:cancel()
    assertNoResult(d)
    moreDeferred:callback(6543)
    assert.equal(6544, successResultOf(d))
  end)

  it("test_inlineCallbacksCancelCaptured", function()
    local canceller1Calls, canceller2Calls = {}, {}
    local d1 = Deferred(function(d) canceller1Calls[#canceller1Calls + 1] = d end)
    local d2 = Deferred(function(d) canceller2Calls[#canceller2Calls + 1] = d end)
    local funcD = inlineCallbacks(function()
      pcall(await, d1)
      await(d2)
    end)()
    assertNoResult(d1)
    assertNoResult(d2)
    assertNoResult(funcD)
    assert.same({}, canceller1Calls)
    assert.same({}, canceller2Calls)
    funcD:cancel()
    assert.equal(1, #canceller1Calls)
    assert.equal(d1, canceller1Calls[1])
    assert.same({}, canceller2Calls)
    assertNoResult(funcD)
    funcD:cancel()
    failureResultOf(funcD, CancelledError)
    assert.equal(1, #canceller2Calls)
    assert.equal(d2, canceller2Calls[1])
  end)
end)
