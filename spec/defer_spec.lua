-- spec/defer_spec.lua: covers lua/braid/defer.lua (Deferred, chains, cancel,
-- addTimeout, succeed/fail/maybeDeferred, debugging); ported from Twisted's
-- src/twisted/test/test_defer.py.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"

local Deferred, Failure = defer.Deferred, failure.Failure
local isFailure = failure.isFailure

local GenericError = errors.class("GenericError")

-- a peek at a Deferred's result that leaves it in place (trial's helpers,
-- from braid.testing, consume it)
local function resultOf(d)
  local got, n = nil, 0
  d:addBoth(function(r) got, n = r, n + 1; return r end)
  return n == 1, got
end

local testing = require "braid.testing"
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

local Clock = require("braid.task").Clock

local function overrideFunc() return "OVERRIDDEN" end

local function fakeCallbackCanceller(d) d:callback("Callback Result") end

describe("Deferred", function()
  describe("callbacks", function()
    it("calls a callback with the result and no extra arguments", function()
      local got
      local d = Deferred()
      d:addCallback(function(...) got = table.pack(...) end)
      d:callback("hello")
      assert.same({ n = 1, "hello" }, got)
    end)

    it("passes extra arguments after the result", function()
      local got
      local d = Deferred()
      d:addCallback(function(...) got = table.pack(...) end, "world")
      d:callback("hello")
      assert.same({ n = 2, "hello", "world" }, got)
    end)

    it("keeps the count of extra arguments, nils included", function()
      local counts = {}
      local d = Deferred()
      d:addCallback(function(...) counts[1] = select("#", ...) end, nil)
      d:addCallback(function(...) counts[2] = select("#", ...) end, nil, nil)
      d:addErrback(function(...) end, nil, 3, nil)
      d:addBoth(function(...) counts[3] = select("#", ...); return (select(4, ...)) end, 1, nil, 7, nil)
      d:callback(nil)
      assert.same({ 2, 3, 5 }, counts)
      assert.equal(7, d.result)
    end)

    it("passes each callback's return value to the next", function()
      local seen = {}
      local d = Deferred()
      d:addCallback(function(r) seen[#seen + 1] = r; return r .. "!" end)
      d:addCallback(function(r) seen[#seen + 1] = r end)
      d:callback("hello")
      assert.same({ "hello", "hello!" }, seen)
      assert.is_nil(d.result)
    end)

    it("returns the Deferred from every add method", function()
      local d = Deferred()
      local f = function(r) return r end
      assert.equal(d, d:addCallback(f))
      assert.equal(d, d:addErrback(f))
      assert.equal(d, d:addBoth(f))
      assert.equal(d, d:addCallbacks(f, f))
      assert.equal(d, d:addTimeout(1, Clock()))
      assert.equal(d, d:chainDeferred(Deferred()))
    end)

    it("passes failures through addCallbacks(cb, nil)", function()
      local err = GenericError("oopsie")
      local cbCalled, got = false, nil
      local d = Deferred()
      d:addCallbacks(function() cbCalled = true end, nil)
      d:errback(err)
      d:addErrback(function(f) got = f end)
      assert.is_false(cbCalled)
      assert.equal(err, got.value)
    end)

    it("gives addCallbacks' argument lists to the callback and the errback", function()
      local got = {}
      local d1, d2 = Deferred(), Deferred()
      local cb = function(...) got.cb = table.pack(...) end
      local eb = function(...) got.eb = table.pack(...) end
      d1:addCallbacks(cb, eb, { "a", n = 2 }, { "b" })
      d2:addCallbacks(cb, eb, { "a" }, { "b", nil, n = 2 })
      d1:callback(1)
      d2:errback("x")
      assert.same({ n = 3, 1, "a", nil }, got.cb)
      assert.equal(3, got.eb.n)
      assert.equal("b", got.eb[2])
    end)

    it("runs a callback added after firing at once", function()
      local d = defer.succeed("now")
      local got
      d:addCallback(function(r) got = r end)
      assert.equal("now", got)
    end)

    it("runs a callback added by a callback at the end of the chain", function()
      local called = {}
      local d = Deferred()
      d:addCallback(function() called[#called + 1] = 1; d:addCallback(function() called[#called + 1] = 3 end) end)
      d:addCallback(function() called[#called + 1] = 2 end)
      d:callback(nil)
      assert.same({ 1, 2, 3 }, called)
    end)

    it("does not run a callback added by a callback before the running one returns", function()
      local called = {}
      local d = Deferred()
      d:addCallback(function()
        called[#called + 1] = 1
        d:addCallback(function() called[#called + 1] = 2 end)
        assert.same({ 1 }, called)
      end)
      d:callback(nil)
      assert.same({ 1, 2 }, called)
    end)

    it("errbacks with the error of a callback added by a callback", function()
      local d = Deferred()
      d:addCallback(function() d:addCallback(function() error(GenericError("callback raised")) end) end)
      d:callback(nil)
      local f = failureResultOf(d, GenericError)
      assert.equal("callback raised", f.value.message)
    end)
  end)

  describe("errbacks", function()
    it("switches to the errback chain when a callback raises", function()
      local got
      local d = Deferred():addCallback(function() error(GenericError("boom")) end)
        :addCallback(function() got = "callback" end)
        :addErrback(function(f) got = f end)
      d:callback(1)
      assert.is_true(isFailure(got))
      assert.equal(GenericError, got.type)
      assert.equal("boom", got.value.message)
      assert.matches("defer_spec.lua", got.traceback)
    end)

    it("keeps Lua's file:line prefix of a raw error as raised", function()
      local got
      local d = Deferred():addCallback(function() error("raw boom") end)
        :addErrback(function(f) got = f end)
      d:callback(1)
      assert.equal(errors.LuaError, got.type)
      assert.matches("^.*defer_spec.lua:%d+: raw boom$", got.value)
      assert.equal(got.value, got:getErrorMessage())
    end)

    it("switches to the errback chain when a callback returns a Failure", function()
      local got
      local f0 = Failure(GenericError("returned"))
      local d = Deferred():addCallback(function() return f0 end)
        :addErrback(function(f) got = f end)
      d:callback(1)
      assert.equal(f0, got)
    end)

    it("switches back to the callback chain when an errback returns a value", function()
      local got
      local d = Deferred():addErrback(function() return "recovered" end)
        :addCallback(function(r) got = r end)
      d:errback(GenericError("x"))
      assert.equal("recovered", got)
    end)

    it("stays on the errback chain with a new failure when an errback raises", function()
      local seen = {}
      local d = Deferred()
        :addErrback(function(f) seen[#seen + 1] = f.value.message; error(GenericError("second")) end)
        :addCallback(function() seen[#seen + 1] = "callback" end)
        :addErrback(function(f) seen[#seen + 1] = f.value.message end)
      d:errback(GenericError("first"))
      assert.same({ "first", "second" }, seen)
    end)

    it("passes the same Failure on when an errback's trap does not match", function()
      local f0 = Failure(GenericError("keep me"))
      local got
      local d = Deferred()
        :addErrback(function(f) f:trap(defer.CancelledError) end)
        :addErrback(function(f) got = f end)
      d:errback(f0)
      assert.equal(f0, got)
    end)

    it("wraps a non-Failure given to errback", function()
      local d = Deferred()
      d:errback(GenericError("wrapped"))
      local f = failureResultOf(d, GenericError)
      assert.equal("wrapped", f.value.message)
    end)

    it("fails with NoCurrentExceptionError when errback has no argument", function()
      local d = Deferred()
      d:errback()
      local f = failureResultOf(d, defer.NoCurrentExceptionError)
      assert.equal(errors.NoCurrentExceptionError, f.type)
    end)

    it("runs the errbacks when callback is given a Failure", function()
      local d = Deferred()
      d:callback(Failure(GenericError("as errback")))
      failureResultOf(d, GenericError)
    end)
  end)

  describe("misuse", function()
    local function fired() local d = Deferred(); d:callback("first"); return d end

    -- the Lua runner read getmetatable(), which a __metatable field fools:
    -- it took such a value for a Failure (or a Deferred, and then raised
    -- inside its runner) where the C runner passes it on as it is
    it("passes on a value whose __metatable names Failure or Deferred as a plain result", function()
      for _, cls in ipairs({ Failure, Deferred }) do
        local v = setmetatable({ value = "v" }, { __metatable = cls })
        local d, seen = Deferred(), {}
        d:addCallback(function() return v end)
        d:addCallbacks(function(r) seen[#seen + 1] = r; return r end,
          function(f) seen[#seen + 1] = "errback"; return f end)
        d:callback(nil)
        assert.same({ v }, seen)
        assert.equal(v, d.result)
      end
    end)

    it("raises AlreadyCalledError on callback after callback", function()
      local d = fired()
      assert.has_error(function() d:callback("twice") end, defer.AlreadyCalledError())
    end)

    it("raises AlreadyCalledError on errback after callback", function()
      local d = fired()
      local ok, e = pcall(d.errback, d, GenericError())
      assert.is_false(ok)
      assert.is_true(defer.AlreadyCalledError:isinstance(e))
    end)

    it("raises AlreadyCalledError on callback and errback after errback", function()
      local d = Deferred()
      d:addErrback(function() end)
      d:errback(GenericError())
      local ok1, e1 = pcall(d.callback, d, 1)
      local ok2, e2 = pcall(d.errback, d, GenericError())
      assert.is_false(ok1)
      assert.is_false(ok2)
      assert.equal(defer.AlreadyCalledError, e1.class)
      assert.equal(defer.AlreadyCalledError, e2.class)
    end)

    it("keeps the first result after a second callback is refused", function()
      local d = fired()
      local ok, e = pcall(d.callback, d, "second")
      assert.is_false(ok)
      assert.equal(defer.AlreadyCalledError, e.class)
      assert.equal("first", successResultOf(d))
    end)

    it("refuses a Deferred as a result and leaves the Deferred unfired and usable", function()
      local d = Deferred()
      local ok, e = pcall(d.callback, d, Deferred())
      assert.is_false(ok)
      assert.equal(errors.TypeError, e.class)
      assert.matches("callback", e.message)
      assert.is_false(d.called)
      d:callback("fine")
      assert.equal("fine", successResultOf(d))
    end)

    it("raises TypeError naming the method and argument for a non-function callback", function()
      local d = Deferred()
      local cases = {
        { function() d:addCallback(5) end, "bad argument #1 to 'addCallback' (function expected, got number)" },
        { function() d:addErrback("x") end, "bad argument #1 to 'addErrback' (function expected, got string)" },
        { function() d:addBoth(nil) end, "bad argument #1 to 'addBoth' (function expected, got nil)" },
        { function() d:addCallbacks(nil, nil) end, "bad argument #1 to 'addCallbacks' (function expected, got nil)" },
        { function() d:addCallbacks(print, false) end, "bad argument #2 to 'addCallbacks' (function expected, got boolean)" },
        { function() Deferred(42) end, "bad argument #1 to 'Deferred' (function expected, got number)" },
      }
      for _, case in ipairs(cases) do
        local ok, e = pcall(case[1])
        assert.is_false(ok)
        assert.equal(errors.TypeError, e.class)
        assert.equal(case[2], e.message)
      end
      -- the chain is intact
      local got
      d:addCallback(function(r) got = r end)
      d:callback("still works")
      assert.equal("still works", got)
    end)

    it("accepts a callable table as a callback", function()
      local got
      local callable = setmetatable({}, { __call = function(_, r) got = r end })
      Deferred():addCallback(callable):callback("called")
      assert.equal("called", got)
    end)

    it("raises ValueError when unpausing a Deferred that is not paused", function()
      local ok, e = pcall(Deferred().unpause, Deferred())
      assert.is_false(ok)
      assert.equal(errors.ValueError, e.class)
    end)
  end)

  describe("fields", function()
    it("starts unfired, unpaused and without a result", function()
      local d = Deferred()
      assert.is_false(d.called)
      assert.equal(0, d.paused)
      assert.is_nil(d.result)
    end)

    it("is called with its current result after firing", function()
      local d = Deferred():addCallback(function(r) return r * 2 end)
      d:callback(21)
      assert.is_true(d.called)
      assert.equal(42, d.result)
    end)

    it("is an instance of the Deferred class", function()
      assert.is_true(Deferred:isinstance(Deferred()))
      assert.is_true(defer.isDeferred(defer.succeed(1)))
      assert.is_false(defer.isDeferred({}))
    end)
  end)

  describe("pause and unpause", function()
    it("holds a failure until unpaused", function()
      local l = {}
      local d = defer.fail(GenericError("fail"))
      d:pause()
      d:addErrback(function(f) l[#l + 1] = f.value.message end)
      assert.same({}, l)
      d:unpause()
      assert.same({ "fail" }, l)
    end)

    it("counts nested pauses", function()
      local got
      local d = Deferred()
      d:pause()
      d:pause()
      assert.equal(2, d.paused)
      d:addCallback(function(r) got = r end)
      d:callback("x")
      d:unpause()
      assert.equal(1, d.paused)
      assert.is_nil(got)
      d:unpause()
      assert.equal(0, d.paused)
      assert.equal("x", got)
    end)

    it("runs nothing when unpaused before being fired", function()
      local got = "untouched"
      local d = Deferred()
      d:pause()
      d:addCallback(function(r) got = r end)
      d:unpause()
      assert.equal("untouched", got)
      d:callback("later")
      assert.equal("later", got)
    end)
  end)

  describe("chaining", function()
    it("waits for a Deferred returned by a callback, even when it is paused", function()
      local seen
      local d1, d2 = Deferred(), Deferred()
      d2:pause()
      d1:addCallback(function() return d2 end)
      d1:addCallback(function(r) seen = r end)
      d1:callback(1)
      assert.is_nil(seen)
      d2:callback(2)
      assert.is_nil(seen)
      d2:unpause()
      assert.equal(2, seen)
    end)

    it("chains to a paused Deferred that has a result and waits for its unpause", function()
      local expected = {}
      local paused = Deferred()
      paused:callback(expected)
      paused:pause()
      local chained = Deferred()
      chained:addCallback(function() return paused end)
      chained:callback(nil)
      local result = {}
      chained:addCallback(function(r) result[#result + 1] = r end)
      assert.same({}, result)
      paused:unpause()
      assert.equal(expected, result[1])
    end)

    it("lets earlier Deferreds go on when a later one of the chain is paused", function()
      local first, second = Deferred(), Deferred()
      first:addCallback(function() return second end)
      first:callback(nil)
      first:pause()
      second:callback(nil)
      local result = {}
      second:addCallback(function(r) result[#result + 1] = tostring(r) end)
      assert.same({ "nil" }, result)
    end)

    it("runs the middle Deferred's callbacks after the inner one fires and before the outer goes on", function()
      local results, failures = {}, {}
      local inner = Deferred()
      local function cb(result)
        results[#results + 1] = "start-of-cb " .. result
        local d = defer.succeed("inner")
        d:addCallback(function()
          results[#results + 1] = "firstCallback inner"
          return inner
        end):addCallback(function(r)
          results[#results + 1] = "secondCallback " .. r
          return r .. r
        end)
        d:addErrback(function(f) failures[#failures + 1] = f end)
        return d
      end
      local outer = defer.succeed("outer")
      outer:addCallback(cb)
      inner:callback("orange")
      outer:addCallback(function(r) results[#results + 1] = r end)
      inner:addErrback(function(f) failures[#failures + 1] = f end)
      outer:addErrback(function(f) failures[#failures + 1] = f end)
      assert.same({}, failures)
      assert.same({ "start-of-cb outer", "firstCallback inner", "secondCallback orange", "orangeorange" },
        results)
    end)

    it("finds the continuation entry when it is not the first callback", function()
      local results, failures = {}, {}
      local a = Deferred()
      local function cb(result)
        results[#results + 1] = "cb " .. result
        local d = Deferred()
        d:addCallback(function(r)
          results[#results + 1] = "firstCallback " .. tostring(r)
          return defer.gatherResults({ a })
        end)
        d:addCallback(function(r) results[#results + 1] = "secondCallback " .. r[1] end)
        d:addErrback(function(f) failures[#failures + 1] = f end)
        d:callback(nil)
        return d
      end
      local outer = defer.succeed("outer")
      outer:addCallback(cb)
      outer:addErrback(function(f) failures[#failures + 1] = f end)
      assert.same({ "cb outer", "firstCallback nil" }, results)
      a:callback("withers")
      assert.same({}, failures)
      assert.same({ "cb outer", "firstCallback nil", "secondCallback withers" }, results)
    end)

    it("runs callbacks added after the chaining callback after the inner Deferred's", function()
      local results = {}
      local a = Deferred()
      local function cb(result)
        results[#results + 1] = "cb " .. result
        local d = Deferred()
        d:addCallback(function() results[#results + 1] = "first"; return defer.gatherResults({ a }) end)
        d:addCallback(function(r) results[#results + 1] = "second " .. r[1] end)
        d:callback(nil)
        return d
      end
      local outer = Deferred()
      outer:addCallback(cb)
      outer:addCallback(function() results[#results + 1] = "final" end)
      outer:callback("outer")
      assert.same({ "cb outer", "first" }, results)
      a:callback("withers")
      assert.same({ "cb outer", "first", "second withers", "final" }, results)
    end)

    it("takes the result of a fired Deferred returned by a callback, leaving it nil", function()
      local result = {}
      local first = defer.succeed(result)
      local second = Deferred()
      second:addCallback(function() return first end)
      second:callback(nil)
      local results = {}
      first:addCallback(function(r) results[1] = r == nil end)
      assert.is_true(results[1])
      assert.equal(result, successResultOf(second))
    end)

    it("goes on with the errbacks when a callback returns a Deferred that has already failed", function()
      local calls = {}
      local function record(tag)
        return function(r)
          calls[#calls + 1] = tag .. ":" .. (isFailure(r) and r.value.message or tostring(r))
          return "recovered"
        end
      end
      local failedFirst = defer.fail(GenericError("by fail"))
      local errored = Deferred()
      errored:errback(GenericError("by errback"))
      for _, inner in ipairs({ failedFirst, errored }) do
        local outer = Deferred()
        outer:addCallback(function() return inner end)
        outer:addCallbacks(record("cb"), record("eb"))
        outer:addCallbacks(record("cb"), record("eb"))
        outer:callback(1)
        assert.is_nil(inner.result)
      end
      assert.same({ "eb:by fail", "cb:recovered", "eb:by errback", "cb:recovered" }, calls)
    end)

    it("gives a Deferred's later result to the one waiting on it, leaving it nil", function()
      local first, second = Deferred(), Deferred()
      second:addCallback(function() return first end)
      second:callback(nil)
      local firstResult, secondResult = {}, {}
      first:addCallback(function(r) firstResult[#firstResult + 1] = tostring(r) end)
      second:addCallback(function(r) secondResult[#secondResult + 1] = r end)
      assert.same({}, firstResult)
      assert.same({}, secondResult)
      first:callback("result")
      assert.same({ "nil" }, firstResult)
      assert.same({ "result" }, secondResult)
    end)

    it("moves a fired failure to the waiting Deferred so it is handled once", function()
      local first = defer.fail(GenericError("First Deferred's Failure"))
      local second = Deferred()
      second:addCallback(function() return first end)
      second:callback(nil)
      local firstResult
      first:addCallback(function(r) firstResult = tostring(r) end)
      assert.equal("nil", firstResult)
      failureResultOf(second, GenericError)
    end)

    it("moves a later failure to the waiting Deferred", function()
      local first, second = Deferred(), Deferred()
      second:addCallback(function() return first end)
      second:callback(nil)
      local secondError
      second:addErrback(function(f) secondError = f end)
      local firstResult, secondResult = {}, {}
      first:addCallback(function(r) firstResult[#firstResult + 1] = tostring(r) end)
      second:addCallback(function(r) secondResult[#secondResult + 1] = tostring(r) end)
      first:errback(GenericError("First Deferred's Failure"))
      assert.equal(GenericError, secondError:check(GenericError))
      assert.same({ "nil" }, firstResult)
      assert.same({ "nil" }, secondResult)
    end)

    it("chains transitively", function()
      local first, second, third = Deferred(), Deferred(), Deferred()
      second:addCallback(function() return first end)
      third:addCallback(function() return second end)
      local thirdResult = {}
      third:addCallback(function(r) thirdResult[#thirdResult + 1] = r end)
      second:callback(nil)
      third:callback(nil)
      assert.same({}, thirdResult)
      first:callback("result")
      assert.same({ "result" }, thirdResult)
    end)

    it("goes on when inner Deferreds with extra callbacks fire out of order", function()
      local results = {}
      local inner = Deferred()
      local function cb(result)
        results[#results + 1] = "start " .. result
        local d = defer.succeed("inner")
        d:addCallback(function(r)
          results[#results + 1] = "first " .. r
          return inner:addCallback(function(x) return { x } end)
        end)
        d:addCallback(function(r)
          results[#results + 1] = "second " .. r[1]
          return { r[1], r[1] }
        end)
        return d
      end
      local outer = defer.succeed("outer")
      outer:addCallback(cb)
      outer:addCallback(function(r) results[#results + 1] = r end)
      assert.same({ "start outer", "first inner" }, results)
      inner:callback("withers")
      assert.same({ "start outer", "first inner", "second withers", { "withers", "withers" } }, results)
    end)

    it("calls back callbacks added to the middle Deferred after the last one fires", function()
      local first, second, third = Deferred(), Deferred(), Deferred()
      first:addCallback(function() return second end)
      second:addCallback(function() return third end)
      second:callback(nil)
      first:callback(nil)
      third:callback(nil)
      local results = {}
      second:addCallback(function(r) results[#results + 1] = tostring(r) end)
      assert.same({ "nil" }, results)
    end)

    it("fails with TypeError when a callback returns its own Deferred", function()
      local d = Deferred()
      d:addCallback(function() return d end)
      d:callback("foo")
      local f = failureResultOf(d, errors.TypeError)
      assert.matches("Callback returned the Deferred it was attached to", f.value.message)
    end)

    it("shows a chain in tostring while waiting, and clears it once resolved", function()
      local a, b = Deferred(), Deferred()
      b:chainDeferred(a)
      assert.equal(("<Deferred at %p waiting on Deferred at %p>"):format(a, b), tostring(a))
      b:callback(nil)
      assert.equal(("<Deferred at %p current result: nil>"):format(a), tostring(a))
      local c, e = Deferred(), Deferred()
      c:addCallback(function() return e end)
      c:callback(nil)
      assert.equal(("<Deferred at %p waiting on Deferred at %p>"):format(c, e), tostring(c))
    end)

    it("drops the chain from tostring once fired directly, unless paused (Twisted's _chainedTo)", function()
      local a, b = Deferred(), Deferred()
      a:chainDeferred(b)
      b:callback(1)  -- nothing to run
      assert.equal(("<Deferred at %p current result: 1>"):format(b), tostring(b))
      local c, e = Deferred(), Deferred()
      c:chainDeferred(e)
      e:addCallback(function(x) return x + 1 end)
      e:callback(1)
      assert.equal(("<Deferred at %p current result: 2>"):format(e), tostring(e))
      local g, h = Deferred(), Deferred()
      g:chainDeferred(h)
      h:pause()
      h:callback(1)
      assert.equal(("<Deferred at %p waiting on Deferred at %p>"):format(h, g), tostring(h))
      h:unpause()
      assert.equal(("<Deferred at %p current result: 1>"):format(h), tostring(h))
    end)

    it("prints its address and result", function()
      local d = Deferred()
      assert.equal(("<Deferred at %p>"):format(d), tostring(d))
      d:callback("orange")
      assert.equal(("<Deferred at %p current result: 'orange'>"):format(d), tostring(d))
    end)

    it("fires the chained Deferred with chainDeferred and gives nil onwards", function()
      local a, b = Deferred(), Deferred()
      a:chainDeferred(b)
      a:callback("x")
      assert.equal("x", successResultOf(b))
      assert.is_nil(a.result)
      local c, e = Deferred(), Deferred()
      c:chainDeferred(e)
      c:errback(GenericError("y"))
      failureResultOf(e, GenericError)
      assert.is_nil(c.result)
    end)

    it("runs the chaining Deferred's later callbacks, not errbacks, after it passed on a failure", function()
      local seen = {}
      local function record(tag)
        return function(r)
          seen[#seen + 1] = tag .. ":" .. (isFailure(r) and r.value.message or tostring(r))
          return r
        end
      end
      for _, pausedChained in ipairs({ false, true }) do
        local c, e = Deferred(), Deferred()
        if pausedChained then e:pause() end
        c:chainDeferred(e)
        c:addCallbacks(record("cb"), record("eb"))
        c:errback(GenericError(pausedChained and "to paused" or "to unpaused"))
        if pausedChained then e:unpause() end
        assert.equal(pausedChained and "to paused" or "to unpaused",
          failureResultOf(e, GenericError).value.message)
      end
      assert.same({ "cb:nil", "cb:nil" }, seen)
    end)

    it("fails the chaining Deferred when its chained Deferred was already fired", function()
      local a, b = Deferred(), defer.succeed("taken")
      a:chainDeferred(b)
      a:callback("x")
      failureResultOf(a, defer.AlreadyCalledError)
    end)

    -- Twisted runs the chained Deferred's callbacks inside the chainDeferred
    -- callback (b.callback): meanwhile a keeps its result and is running, so
    -- a callback added to a waits for a's own loop (checked against Twisted
    -- 22.4; spec/defer_diff_spec.lua found the difference)
    it("keeps the chaining Deferred's result and running state while the chained one runs", function()
      local a, b = Deferred(), Deferred()
      local seen = {}
      a:chainDeferred(b)
      b:addCallback(function(x)
        seen[#seen + 1] = ("b %s a.result=%s"):format(x, tostring(a.result))
        a:addCallback(function(y) seen[#seen + 1] = "late " .. tostring(y) end)
        seen[#seen + 1] = "added"
        return x
      end)
      a:addCallback(function(y) seen[#seen + 1] = "after " .. tostring(y) end)
      a:callback(5)
      assert.same({ "b 5 a.result=5", "added", "after nil", "late nil" }, seen)
      assert.equal(5, successResultOf(b))
    end)

    it("goes on with the chaining Deferred's callbacks when the chained one pauses it", function()
      local a, b = Deferred(), Deferred()
      local seen = {}
      a:chainDeferred(b)
      b:addCallback(function(x)
        a:pause()
        seen[#seen + 1] = "paused"
        return x
      end)
      a:addCallback(function(y) seen[#seen + 1] = "after " .. tostring(y) end)
      a:callback(5)
      assert.same({ "paused", "after nil" }, seen)
      assert.equal(1, a.paused)
      assert.equal(5, b.result)
      a:unpause()
      assert.equal(0, a.paused)
    end)

    it("lets the chained Deferred take the chaining one's result while it runs", function()
      -- b's callback returns a, which has a result (5) and is not paused:
      -- b takes it, as Twisted's _runCallbacks does
      local a, b = Deferred(), Deferred()
      a:chainDeferred(b)
      b:addCallback(function() return a end)
      a:callback(5)
      assert.equal(5, successResultOf(b))
      assert.is_nil(a.result)
    end)

    it("calls callbacks at the same stack depth however many Deferreds are chained", function()
      local function chainDeferreds(howMany)
        local depth
        local top = Deferred()
        local inners = {}
        for i = 1, howMany do inners[i] = Deferred() end
        local last = Deferred()
        local inner = table.remove(inners)
        local originals = { inner }
        top:addCallback(function() return inner end)
        top:addCallback(function()
          local n = 1
          while debug.getinfo(n, "l") do n = n + 1 end
          depth = n
        end)
        while #inners > 0 do
          local newInner = table.remove(inners)
          originals[#originals + 1] = newInner
          inner:addCallback(function() return newInner end)
          inner = newInner
        end
        inner:addCallback(function() return last end)
        top:callback(nil)
        for _, d in ipairs(originals) do d:callback(nil) end
        assert.is_nil(depth)
        last:callback(nil)
        return depth
      end
      assert.equal(chainDeferreds(1), chainDeferreds(2))
      assert.equal(chainDeferreds(1), chainDeferreds(100))
    end)

    it("runs a chain of 100000 waiting Deferreds without growing the stack", function()
      local N = 100000
      local ds = {}
      for i = 1, N do ds[i] = Deferred() end
      for i = 1, N - 1 do
        local nxt = ds[i + 1]
        ds[i]:addCallback(function() return nxt end)
      end
      ds[N]:addCallback(function(r) return r + 1 end)
      for i = 1, N - 1 do ds[i]:callback(nil) end
      assertNoResult(ds[1])
      ds[N]:callback(41)
      assert.equal(42, successResultOf(ds[1]))
    end)

    it("runs 100000 callbacks returning fired Deferreds without growing the stack", function()
      local d = Deferred()
      for i = 1, 100000 do d:addCallback(function(r) return defer.succeed(r + 1) end) end
      d:callback(0)
      assert.equal(100000, successResultOf(d))
    end)

    -- Callbacks that fire other Deferreds nest runs, as Twisted's do; past
    -- a depth Lua's C stack cannot take, a run is put off until the
    -- outermost one ends (it used to fail with a C stack overflow, and a
    -- retry after the overflow once overflowed again, forever)
    it("runs every callback when callbacks firing Deferreds nest past the C stack", function()
      local ds, order = {}, {}
      for i = 1, 400 do ds[i] = Deferred() end
      for i = 1, 399 do
        ds[i]:addCallback(function(x)
          order[#order + 1] = i
          ds[i + 1]:callback(x + 1)
          order[#order + 1] = -i
          return x
        end)
      end
      ds[1]:callback(1)
      assert.equal(798, #order)
      assert.equal(400, ds[400].result)
      for i = 1, 399 do assert.equal(i, ds[i].result) end
      -- nested at first (1, 2, ... before -1), put off further in
      assert.same({ 1, 2, 3 }, { order[1], order[2], order[3] })
      local first_return
      for k, v in ipairs(order) do
        if v < 0 then first_return = k break end
      end
      assert.truthy(first_return > 30 and first_return < 399, "first return at " .. first_return)
    end)

    it("hands a DeferredLock over to 300 queued synchronous run()s", function()
      local lock = defer.DeferredLock()
      lock:acquire()
      local done = {}
      for i = 1, 300 do
        lock:run(function() return i end):addCallback(function(v) done[#done + 1] = v end)
      end
      lock:release()
      -- each hand-off runs inside the run() before it (as in Twisted), so
      -- the results come innermost first, in batches of the nesting depth
      assert.equal(300, #done)
      assert.is_true(done[1] > 1)
      table.sort(done)
      for i = 1, 300 do assert.equal(i, done[i]) end
      assert.is_false(lock.locked)
    end)

    it("fires DeferredLists nested 500 deep", function()
      local leaf = Deferred()
      local cur = leaf
      for _ = 1, 500 do cur = defer.DeferredList({ cur }) end
      leaf:callback("x")
      assert.is_true(cur.called)
      local r = cur.result
      for _ = 1, 499 do r = r[1][2] end
      assert.same({ { true, "x" } }, r)
    end)

    it("cancels the head of a chain of 1000000 waiting Deferreds in a bounded stack", function()
      local head = Deferred()
      for _ = 2, 1000000 do  -- each waits on the one made before it
        local prev = head
        head = Deferred()
        head:addCallback(function() return prev end)
        head:callback(nil)
      end
      head:addErrback(function(f) return f:check(defer.CancelledError) and "cancelled" end)
      head:cancel()
      assert.equal("cancelled", head.result)
    end)

    it("cancels through 300 nested inlineCallbacks functions", function()
      local cancelled = false
      local innermost = Deferred(function() cancelled = true end)
      local f
      f = defer.inlineCallbacks(function(n)
        if n == 0 then return defer.await(innermost) end
        return defer.await(f(n - 1))
      end)
      local outer = f(300)
      outer:cancel()
      assert.is_true(cancelled)
      assert.is_truthy(failureResultOf(outer, defer.CancelledError))
    end)

    it("fires 100000 Deferreds joined by chainDeferred without growing the stack", function()
      local N = 100000
      local ds = { Deferred() }
      for i = 2, N do
        ds[i] = Deferred()
        ds[i - 1]:chainDeferred(ds[i])
      end
      ds[1]:callback("end")
      assert.equal("end", successResultOf(ds[N]))
      assert.is_nil(ds[N // 2].result)
    end)
  end)

  describe("cancel", function()
    local function tracked(canceller)
      local t = { cancellerCalls = 0 }
      t.d = Deferred(canceller and function(d) t.cancellerCalls = t.cancellerCalls + 1; return canceller(d) end)
      t.d:addCallbacks(function(r) t.callbackResult = r; return r end, function(f) t.errbackResult = f end)
      return t
    end

    -- cancel walked the chain of results with a tail call, so Deferreds
    -- waiting on each other made it loop for ever (Twisted recurses until
    -- RecursionError), and a timeout added to break the wait froze its clock
    it("raises ValueError for Deferreds that wait on each other in a cycle", function()
      local pcall = require "helpers.bounded"
      local function cycle(n)
        local ds = {}
        for i = 1, n do ds[i] = Deferred() end
        for i = 1, n do ds[i]:addCallback(function() return ds[i % n + 1] end) end
        for i = 1, n do ds[i]:callback(i) end
        return ds
      end
      for _, n in ipairs({ 2, 3, 7 }) do
        local ds = cycle(n)
        assert.equal(ds[2], ds[1].result)
        local ok, e = pcall(ds[1].cancel, ds[1])
        assert.is_false(ok)
        assert.is_true(errors.ValueError:isinstance(e))
        assert.matches("wait on each other in a cycle", tostring(e))
      end
      -- a chain into a cycle: the same
      local ds = cycle(3)
      local head = Deferred()
      head:addCallback(function() return ds[1] end)
      head:callback(nil)
      assert.is_false(pcall(head.cancel, head))
      -- a timeout: its call raises, and the clock goes on
      local clock = Clock()
      ds = cycle(2)
      ds[1]:addTimeout(1, clock)
      assert.is_false(pcall(clock.advance, clock, 2))
      assert.equal(0, #clock:getDelayedCalls())
    end)

    it("errbacks with CancelledError and not callback without a canceller", function()
      local t = tracked()
      t.d:cancel()
      assert.equal(defer.CancelledError, t.errbackResult.type)
      assert.is_nil(t.callbackResult)
    end)

    it("swallows exactly one callback after a cancel without canceller", function()
      local t = tracked()
      t.d:cancel()
      t.d:callback(nil)
      assert.has_error(function() t.d:callback(nil) end, defer.AlreadyCalledError())
      assert.has_error(function() t.d:errback(GenericError()) end, defer.AlreadyCalledError())
    end)

    it("swallows exactly one errback after a cancel without canceller", function()
      local t = tracked()
      t.d:cancel()
      t.d:errback(GenericError())
      assert.equal(defer.CancelledError, t.errbackResult.type)
      assert.has_error(function() t.d:callback(nil) end, defer.AlreadyCalledError())
      assert.has_error(function() t.d:errback(GenericError()) end, defer.AlreadyCalledError())
    end)

    it("ignores later cancels after a cancel and a swallowed callback", function()
      local t = tracked()
      t.d:cancel()
      local current = t.errbackResult
      t.d:callback(nil)
      t.d:cancel()
      assert.equal(current, t.errbackResult)
    end)

    it("ignores a second cancel without canceller", function()
      local t = tracked()
      t.d:cancel()
      local current = t.errbackResult
      t.d:cancel()
      assert.equal(current, t.errbackResult)
    end)

    it("calls a canceller that does not fire once and errbacks with CancelledError", function()
      local t = tracked(function() end)
      t.d:cancel()
      local current = t.errbackResult
      t.d:cancel()
      assert.equal(defer.CancelledError, current.type)
      assert.equal(current, t.errbackResult)
      assert.equal(1, t.cancellerCalls)
      -- with a canceller nothing is swallowed
      assert.has_error(function() t.d:callback(nil) end, defer.AlreadyCalledError())
    end)

    it("gives the canceller the Deferred being cancelled", function()
      local seen
      local d = Deferred(function(x) seen = x end)
      d:addErrback(function() end)
      d:cancel()
      assert.equal(d, seen)
    end)

    it("does nothing when cancelled after firing", function()
      local t = tracked(function(d) d:errback(GenericError()) end)
      t.d:callback("biff!")
      t.d:cancel()
      assert.equal(0, t.cancellerCalls)
      assert.is_nil(t.errbackResult)
      assert.equal("biff!", t.callbackResult)
      local u = tracked(function(d) d:errback(GenericError()) end)
      u.d:errback(GenericError())
      u.d:cancel()
      assert.equal(0, u.cancellerCalls)
      assert.equal(GenericError, u.errbackResult.type)
    end)

    it("uses the result of a canceller that errbacks or callbacks", function()
      local t = tracked(function(d) d:errback(GenericError()) end)
      t.d:cancel()
      assert.equal(1, t.cancellerCalls)
      assert.equal(GenericError, t.errbackResult.type)
      local u = tracked(function(d) d:callback("hello!") end)
      u.d:cancel()
      assert.equal("hello!", u.callbackResult)
      assert.is_nil(u.errbackResult)
    end)

    it("cancels the Deferred a fired Deferred is waiting on", function()
      local innerCancels = 0
      local b = Deferred(function() innerCancels = innerCancels + 1 end)
      local a = Deferred(function() error("the outer canceller must not run") end)
      a:callback(nil)
      a:addCallback(function() return b end)
      a:cancel()
      local got
      a:addErrback(function(f) got = f end)
      assert.equal(1, innerCancels)
      assert.equal(defer.CancelledError, got.type)
    end)

    it("propagates an error raised by the canceller", function()
      local d = Deferred(function() error(GenericError("canceller broke")) end)
      local ok, e = pcall(d.cancel, d)
      assert.is_false(ok)
      assert.equal(GenericError, e.class)
    end)
  end)

  describe("addTimeout", function()
    it("returns the Deferred so it can be chained", function()
      local d = Deferred()
      d:addTimeout(5, Clock())
      d:addCallback(function() return "done" end)
      d:callback(nil)
      assert.equal("done", successResultOf(d))
    end)

    for _, custom in ipairs({ false, true }) do
      local suffix = custom and " (custom onTimeoutCancel)" or ""
      it("callbacks before the timeout and never cancels afterwards" .. suffix, function()
        local clock = Clock()
        local d = Deferred()
        d:addTimeout(10, clock, custom and overrideFunc or nil)
        local inner, seen = Deferred(), nil
        d:addCallback(function(r) seen = r; return inner end)
        d:callback("results")
        assert.equal("results", seen)
        clock:advance(15)
        assertNoResult(inner)
      end)

      it("errbacks before the timeout and never cancels afterwards" .. suffix, function()
        local clock = Clock()
        local d = Deferred()
        d:addTimeout(10, clock, custom and overrideFunc or nil)
        local inner, seen = Deferred(), nil
        local err = GenericError("fail")
        d:addErrback(function(f) seen = f; return inner end)
        d:errback(err)
        assert.equal(err, seen.value)
        clock:advance(15)
        assertNoResult(inner)
      end)

      it("does not re-cancel after a manual cancel" .. suffix, function()
        local clock = Clock()
        local d = Deferred()
        d:addTimeout(10, clock, custom and overrideFunc or nil)
        local inner, seen = Deferred(), nil
        d:addErrback(function(f) seen = f; return inner end)
        d:cancel()
        assert.equal(defer.CancelledError, seen.type)
        clock:advance(15)
        assertNoResult(inner)
      end)
    end

    it("errbacks with defer.TimeoutError at the deadline", function()
      local clock = Clock()
      local d = Deferred()
      d:addTimeout(10, clock)
      assertNoResult(d)
      clock:advance(9.5)
      assertNoResult(d)
      clock:advance(0.5)
      local f = failureResultOf(d, defer.TimeoutError)
      assert.is_true(errors.TimeoutError:isinstance(f.value))
      assert.equal(10, f.value.timeout)
      assert.equal("TimeoutError: Deferred timed out: after 10 seconds", tostring(f.value))
    end)

    it("fires with onTimeoutCancel's return value at the deadline", function()
      local clock = Clock()
      local d = Deferred()
      local args
      d:addTimeout(10, clock, function(value, timeout) args = { value, timeout }; return "OVERRIDDEN" end)
      clock:advance(15)
      assert.equal("OVERRIDDEN", successResultOf(d))
      assert.is_true(isFailure(args[1]))
      assert.equal(defer.CancelledError, args[1].type)
      assert.equal(10, args[2])
    end)

    it("keeps a canceller's success result at the deadline", function()
      local clock = Clock()
      local d = Deferred(function(c) c:callback("I was cancelled!") end)
      d:addTimeout(10, clock)
      clock:advance(15)
      assert.equal("I was cancelled!", successResultOf(d))
    end)

    it("keeps a canceller's non-CancelledError failure at the deadline", function()
      local clock = Clock()
      local err = errors.ValueError("what!")
      local d = Deferred(function(c) c:errback(err) end)
      d:addTimeout(10, clock)
      clock:advance(15)
      assert.equal(err, failureResultOf(d, errors.ValueError).value)
    end)

    it("lets onTimeoutCancel handle a canceller's failure", function()
      local clock = Clock()
      local d = Deferred(function(c) c:errback(errors.ValueError("what!")) end)
      d:addTimeout(10, clock, overrideFunc)
      clock:advance(15)
      assert.equal("OVERRIDDEN", successResultOf(d))
    end)

    it("translates a CancelledError passed on by an errback added before the timeout", function()
      local clock = Clock()
      local d, seen = Deferred(), nil
      d:addErrback(function(f) seen = f; return f end)
      d:addTimeout(10, clock)
      clock:advance(15)
      assert.equal(defer.CancelledError, seen.type)
      failureResultOf(d, defer.TimeoutError)
    end)

    it("succeeds when an errback added before the timeout traps the CancelledError", function()
      local clock = Clock()
      local d, seen = Deferred(), nil
      d:addErrback(function(f) seen = f; f:trap(defer.CancelledError) end)
      d:addTimeout(10, clock)
      clock:advance(15)
      assert.equal(defer.CancelledError, seen.type)
      assert.is_true(resultOf(d))
      assert.is_nil(successResultOf(d))
    end)

    it("calls onTimeoutCancel even when an earlier errback handled the CancelledError", function()
      local clock = Clock()
      local d = Deferred()
      d:addErrback(function() end)
      d:addTimeout(10, clock, overrideFunc)
      clock:advance(15)
      assert.equal("OVERRIDDEN", successResultOf(d))
    end)

    it("runs a callback added before the timeout when the canceller callbacks", function()
      local clock = Clock()
      local d, seen = Deferred(function(c) c:callback("success") end), nil
      d:addCallback(function(v) seen = v; return v end)
      d:addTimeout(10, clock)
      clock:advance(15)
      assert.equal("success", seen)
      assert.equal("success", successResultOf(d))
    end)

    it("cancels its timer once the Deferred fires", function()
      local clock = Clock()
      local d = Deferred()
      d:addTimeout(10, clock)
      local timer = clock:getDelayedCalls()[1]
      assert.is_true(timer:active())
      d:callback("x")
      assert.is_false(timer:active())
      assert.is_true(timer.cancelled)
    end)

    it("uses braid.reactor by default, calling its functions with a dot", function()
      local saved = package.loaded["braid.reactor"]
      local calls = {}
      local reactor = {}
      reactor.callLater = function(delay, f, ...)
        calls[#calls + 1] = { delay = delay, f = f, nargs = select("#", ...) }
        return { active = function() return true end, cancel = function(dc) dc.cancelled = true end }
      end
      package.loaded["braid.reactor"] = reactor
      finally(function() package.loaded["braid.reactor"] = saved end)
      local d = Deferred()
      d:addTimeout(3)
      assert.equal(1, #calls)
      assert.equal(3, calls[1].delay)
      assert.equal("function", type(calls[1].f))
      calls[1].f()
      failureResultOf(d, defer.TimeoutError)
      local d2 = Deferred()
      d2:addTimeout(4, reactor)
      assert.equal(4, calls[2].delay)
      d2:callback(nil)
    end)

    it("refuses a bad timeout or clock at once", function()
      local d = Deferred()
      local ok, e = pcall(d.addTimeout, d, "10", Clock())
      assert.is_false(ok)
      assert.equal(errors.TypeError, e.class)
      ok, e = pcall(d.addTimeout, d, -1, Clock())
      assert.is_false(ok)
      assert.equal(errors.ValueError, e.class)
      ok, e = pcall(d.addTimeout, d, 1, {})
      assert.is_false(ok)
      assert.equal(errors.TypeError, e.class)
      assert.equal(0, d._n)
    end)
  end)

  describe("succeed, fail, maybeDeferred", function()
    it("succeed makes a fired Deferred", function()
      local l = {}
      defer.succeed("success"):addCallback(function(r) l[#l + 1] = r end)
      assert.same({ "success" }, l)
    end)

    it("fail makes a failed Deferred", function()
      local got
      defer.fail(GenericError("fail")):addErrback(function(f) got = f.value.message end)
      assert.equal("fail", got)
    end)

    it("maybeDeferred gives a synchronous result", function()
      local result = {}
      local d = defer.maybeDeferred(function() return result end)
      assert.equal(result, successResultOf(d))
    end)

    it("maybeDeferred passes the arguments, nils included", function()
      local d = defer.maybeDeferred(function(...) return select("#", ...) + (select(1, ...) or 0) end, 10, nil)
      assert.equal(12, successResultOf(d))
    end)

    it("maybeDeferred errbacks with a raised error", function()
      local d = defer.maybeDeferred(function(x) return x + 5 end, "ten")
      local f = failureResultOf(d, errors.LuaError)
      assert.matches("defer_spec.lua:%d+: attempt to", f:getErrorMessage())
    end)

    it("maybeDeferred succeeds with a returned object that has a metatable, an error object too", function()
      local e = GenericError("returned, not raised")  -- Twisted's succeed(exception instance)
      assert.equal(e, successResultOf(defer.maybeDeferred(function() return e end)))
      local obj = setmetatable({}, { __index = {} })
      assert.equal(obj, successResultOf(defer.maybeDeferred(function() return obj end)))
    end)

    it("maybeDeferred errbacks with a returned Failure", function()
      local expected = Failure(GenericError("returned"))
      local d = defer.maybeDeferred(function() return expected end)
      assert.equal(expected, failureResultOf(d))
    end)

    it("maybeDeferred returns a returned Deferred as is", function()
      local d1 = Deferred()
      local d2 = defer.maybeDeferred(function() return d1 end)
      assert.equal(d1, d2)
      d1:callback("Success")
      assert.equal("Success", successResultOf(d2))
    end)

    it("maybeDeferred raises at once for a non-function", function()
      local ok, e = pcall(defer.maybeDeferred, 3)
      assert.is_false(ok)
      assert.equal("bad argument #1 to 'maybeDeferred' (function expected, got number)", e.message)
    end)
  end)

  describe("debugging", function()
    before_each(function() defer.setDebugging(true) end)
    after_each(function() defer.setDebugging(false) end)

    local function call1(d) d:callback("hello") end
    local function call2(d) d:callback("twice") end
    local function err1(d) d:errback(GenericError()) end
    local function err2(d) d:errback(GenericError()) end

    local function at(f) return "defer_spec.lua:" .. debug.getinfo(f, "S").linedefined .. ":" end

    local function check(e, invoker1, invoker2)
      local msg = e.message
      local creator = msg:match(" C: Deferred was created:(.-) I:")
      local invoker = msg:match(" I: First Invoker was:(.*)$")
      assert.truthy(creator, msg)
      assert.truthy(invoker, msg)
      assert.truthy(creator:find("in upvalue 'make'", 1, true), creator)
      assert.is_nil(creator:find(at(invoker1), 1, true))
      assert.truthy(invoker:find(at(invoker1), 1, true), invoker)
      assert.is_nil(invoker:find(at(invoker2), 1, true))
      for line in msg:gmatch("[^\n]+") do
        assert.truthy(line:match("^ [CI]:"), line)
      end
    end

    local function make()
      local d = Deferred()
      d:addCallbacks(function() end, function() end)
      return d
    end

    local cases = { { call1, call2, "call1", "call2" }, { call1, err2, "call1", "err2" },
      { err1, call2, "err1", "call2" }, { err1, err2, "err1", "err2" } }
    for _, c in ipairs(cases) do
      it("lists creator and first invoker in AlreadyCalledError (" .. c[3] .. ", " .. c[4] .. ")", function()
        local d = make()
        c[1](d)
        local ok, e = pcall(c[2], d)
        assert.is_false(ok)
        assert.equal(defer.AlreadyCalledError, e.class)
        check(e, c[1], c[2])
      end)
    end

    -- Twisted's Deferred looks at the debugging flag at the second fire
    it("gives the debugging text by the flag at the second fire, not at the first", function()
      local d = Deferred()  -- debugging on: records kept
      d:callback(1)
      defer.setDebugging(false)
      local _, e = pcall(d.callback, d, 2)
      assert.equal(defer.AlreadyCalledError, e.class)
      assert.is_nil(e.message)
      local d2 = Deferred()  -- debugging off: no records
      d2:callback(1)
      defer.setDebugging(true)
      _, e = pcall(d2.callback, d2, 2)
      assert.equal(defer.AlreadyCalledError, e.class)
      assert.equal("\n", e.message)
    end)

    it("gives no debugging text when debugging is off", function()
      defer.setDebugging(false)
      assert.is_false(defer.getDebugging())
      local d = Deferred()
      d:callback(1)
      local ok, e = pcall(d.callback, d, 2)
      assert.is_false(ok)
      assert.is_nil(e.message)
      assert.equal("AlreadyCalledError", tostring(e))
    end)

    it("copes with debugging switched on and off around a Deferred's life", function()
      defer.setDebugging(false)
      local d = Deferred()
      d:addBoth(function() end)
      defer.setDebugging(true)
      d:callback(nil)
      defer.setDebugging(false)
      d = Deferred()
      d:callback(nil)
      defer.setDebugging(true)
      d:addBoth(function() end)
      assert.is_true(d.called)
    end)
  end)
end)
