-- spec/inlinecallbacks_spec.lua: covers lua/braid/defer.lua (inlineCallbacks,
-- await, trampolined resumes, cancellation); ported from Twisted's
-- src/twisted/internet/test/test_inlinecb.py and test_defer.py.
local defer = require "braid.defer"
local deferred_userdata = require "helpers.deferred_userdata"
local errors = require "braid.error"
local failure = require "braid.failure"

local Deferred, inlineCallbacks, await = defer.Deferred, defer.inlineCallbacks, defer.await
local isFailure = failure.isFailure

local GenericError = errors.class("GenericError")
local UntranslatedError = errors.class("UntranslatedError")
local TranslatedError = errors.class("TranslatedError")
local DontFail = errors.class("DontFail")
function DontFail:init(actual) self.actualValue = actual end

local function resultOf(d)
  local got, n = nil, 0
  d:addBoth(function(r) got, n = r, n + 1; return r end)
  return n == 1, got
end

local testing = require "braid.testing"
local successResultOf, failureResultOf = testing.successResultOf, testing.failureResultOf
local assertNoResult = testing.assertNoResult

describe("inlineCallbacks", function()
  describe("results", function()
    it("returns a Deferred of the function's return value", function()
      local f = inlineCallbacks(function(a, b) return a + b end)
      local d = f(2, 3)
      assert.is_true(Deferred:isinstance(d))
      assert.equal(5, successResultOf(d))
    end)

    it("passes the arguments with their count, nils included", function()
      local d = inlineCallbacks(function(...) return select("#", ...) end)(nil, 2, nil)
      assert.equal(3, successResultOf(d))
    end)

    it("runs the function at once, up to its first wait", function()
      local steps = {}
      local gate = Deferred()
      local d = inlineCallbacks(function()
        steps[#steps + 1] = "before"
        await(gate)
        steps[#steps + 1] = "after"
        return "done"
      end)()
      assert.same({ "before" }, steps)
      assertNoResult(d)
      gate:callback(nil)
      assert.same({ "before", "after" }, steps)
      assert.equal("done", successResultOf(d))
    end)

    it("returns a non-Deferred given to await at once", function()
      local d = inlineCallbacks(function()
        local t = {}
        return { await(1), await("s"), await(nil), await(t) == t }
      end)()
      local r = successResultOf(d)
      assert.equal(1, r[1])
      assert.equal("s", r[2])
      assert.is_nil(r[3])
      assert.is_true(r[4])
    end)

    it("returns the result of a fired Deferred without yielding, leaving it nil", function()
      local fired = defer.succeed("ready")
      local yielded = false
      local d = inlineCallbacks(function()
        local v = await(fired)
        yielded = coroutine.status(coroutine.running()) ~= "running"
        return v
      end)()
      assert.equal("ready", successResultOf(d))
      assert.is_false(yielded)
      assert.is_nil(fired.result)
    end)

    it("suspends until an unfired Deferred fires and returns its result", function()
      local gate = Deferred()
      local d = inlineCallbacks(function() return await(gate) * 2 end)()
      assertNoResult(d)
      gate:callback(21)
      assert.equal(42, successResultOf(d))
      assert.is_nil(gate.result)
    end)

    it("lets a function waiting on a Deferred that never fires be collected, running none of it again", function()
      local weak = setmetatable({}, { __mode = "v" })
      local log = {}
      -- made and dropped in a function of its own, so that no register of
      -- this one keeps them
      local function run()
        local never = Deferred()
        local d = inlineCallbacks(function(arg)
          local guard <close> = setmetatable({}, { __close = function() log[#log + 1] = "closed" end })
          weak.co, weak.arg = coroutine.running(), arg
          log[#log + 1] = "start"
          local ok = pcall(await, never)
          log[#log + 1] = ok and "resumed" or "raised"
          return guard
        end)({})
        d:addBoth(function() log[#log + 1] = "fired" end)
        weak.never, weak.d = never, d
      end
      run()
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak.co)
      assert.is_nil(weak.arg)
      assert.is_nil(weak.never)
      assert.is_nil(weak.d)
      -- Python closes a collected coroutine (finally blocks run); a Lua
      -- coroutine is collected as it is (docs/defer.md)
      assert.same({ "start" }, log)
      assert.same({}, defer.pendingUnhandled(true))
    end)

    it("waits for a Deferred the function returns", function()
      local gate = Deferred()
      local d = inlineCallbacks(function() return gate end)()
      assertNoResult(d)
      gate:callback("through")
      assert.equal("through", successResultOf(d))
    end)

    it("fails with TypeError, rather than wait for ever, when the function returns its own Deferred", function()
      local gate, mine = Deferred(), nil
      mine = inlineCallbacks(function()
        await(gate)
        return mine
      end)()
      gate:callback(1)
      local f = failureResultOf(mine, errors.TypeError)
      assert.matches("returned its own Deferred", tostring(f.value), 1, true)
    end)

    it("fails with TypeError when the function returns a userdata given the Deferred class", function()
      local ud = deferred_userdata(Deferred, finally)
      local ok, d = pcall(inlineCallbacks(function() return ud end))
      assert.is_true(ok)  -- the call itself does not raise
      failureResultOf(d, errors.TypeError)
    end)

    it("awaits Deferreds that wait on other Deferreds", function()
      local inner = Deferred()
      local outer = defer.succeed(nil):addCallback(function() return inner end)
      local d = inlineCallbacks(function() return await(outer) end)()
      assertNoResult(d)
      inner:callback("deep")
      assert.equal("deep", successResultOf(d))
    end)

    it("awaits a paused Deferred until it is unpaused", function()
      local p = defer.succeed("held")
      p:pause()
      local d = inlineCallbacks(function() return await(p) end)()
      assertNoResult(d)
      p:unpause()
      assert.equal("held", successResultOf(d))
    end)

    it("gets what the awaited Deferred's earlier callbacks return", function()
      local d1 = Deferred()
      d1:addCallback(function(r) return r .. "+cb" end)
      local after = {}
      local d = inlineCallbacks(function() return await(d1) end)()
      d1:addCallback(function(r) after[#after + 1] = tostring(r) end)
      d1:callback("v")
      assert.equal("v+cb", successResultOf(d))
      assert.same({ "nil" }, after)
    end)

    it("awaits across pcall", function()
      local gate = Deferred()
      local d = inlineCallbacks(function()
        local ok, v = pcall(await, gate)
        return { ok, v }
      end)()
      gate:callback("x")
      assert.same({ true, "x" }, successResultOf(d))
    end)

    it("awaits inside a callback running on the function's own stack", function()
      local gate = Deferred()
      local d = inlineCallbacks(function()
        local local_d = Deferred()
        local_d:addCallback(function(v) return v + await(gate) end)
        local_d:callback(1)
        return await(local_d)
      end)()
      gate:callback(41)
      assert.equal(42, successResultOf(d))
    end)
  end)

  describe("errors", function()
    it("raises the failure's error object at the await", function()
      local e0 = GenericError("bad")
      local d = inlineCallbacks(function()
        local ok, e = pcall(await, defer.fail(e0))
        return { ok, e }
      end)()
      local r = successResultOf(d)
      assert.is_false(r[1])
      assert.equal(e0, r[2])
    end)

    -- Twisted's gotResult returns None: the awaited Deferred's failure is
    -- handled and what comes after it gets nil through its callbacks
    it("leaves nil, on the callback side, in an awaited Deferred that failed", function()
      local gate = Deferred()
      local caught
      inlineCallbacks(function()
        local ok, e = pcall(await, gate)
        caught = { ok, e.message }
      end)()
      local seen = {}
      gate:addCallbacks(function(r) seen[#seen + 1] = { "cb", r } end,
        function(f) seen[#seen + 1] = { "eb", f.value.message } end)
      gate:errback(GenericError("awaited"))
      assert.same({ false, "awaited" }, caught)
      assert.same({ { "cb", nil } }, seen)
      assert.is_nil(gate.result)
    end)

    it("raises a raw error value as it was raised", function()
      local gate = Deferred()
      gate:addCallback(function() error("raw") end)
      local d = inlineCallbacks(function()
        local ok, e = pcall(await, gate)
        return e
      end)()
      gate:callback(nil)
      assert.matches("^.*inlinecallbacks_spec.lua:%d+: raw$", successResultOf(d))
    end)

    it("errbacks with an error raised by the function", function()
      local d = inlineCallbacks(function() error(GenericError("inside")) end)()
      local f = failureResultOf(d, GenericError)
      assert.equal("inside", f.value.message)
      assert.matches("inlinecallbacks_spec.lua", f.traceback)
    end)

    it("keeps the original traceback and adds the await site when an awaited error escapes", function()
      local gate = Deferred()
      local function origin() error(GenericError("Error Marker")) end
      gate:addCallback(origin)
      local function body()
        local v = await(gate)
        return v
      end
      local d = inlineCallbacks(body)()
      gate:callback(nil)
      local f = failureResultOf(d, GenericError)
      local tb = f:getTraceback()
      local line = debug.getinfo(origin, "S").linedefined
      local before, at = tb:match("^(.*)\nawaited at:\n(.*)$")
      assert.truthy(before, tb)
      assert.matches("inlinecallbacks_spec.lua:" .. line .. ":", before, 1, true)
      local awaitLine = debug.getinfo(body, "S").linedefined + 1
      assert.matches("inlinecallbacks_spec.lua:" .. awaitLine .. ": in function", at, 1, true)
      assert.matches("Error Marker", tb, 1, true)
    end)

    it("forwards tracebacks through chained inlineCallbacks functions", function()
      local gate = Deferred()
      local erroring, calling3, calling2
      local function erroringBody()
        await(gate)
        error(GenericError("Error Marker"))
      end
      local function calling3Body() await(erroring()) end
      local function calling2Body() await(calling3()) end
      local function callingBody() await(calling2()) end
      erroring = inlineCallbacks(erroringBody)
      calling3 = inlineCallbacks(calling3Body)
      calling2 = inlineCallbacks(calling2Body)
      local d = inlineCallbacks(callingBody)()
      gate:callback(nil)
      local tb = failureResultOf(d, GenericError):getTraceback()
      local sections = {}
      for part in (tb .. "\nawaited at:"):gmatch("(.-)\nawaited at:") do sections[#sections + 1] = part end
      assert.equal(4, #sections)
      local order = { erroringBody, calling3Body, calling2Body, callingBody }
      for i, body in ipairs(order) do
        local where = ("in function <%s:%d>"):format(debug.getinfo(body, "S").short_src,
          debug.getinfo(body, "S").linedefined)
        assert.matches(where, sections[i], 1, true)
      end
      assert.matches("Error Marker", tb, 1, true)
    end)

    it("keeps a Failure raised in the function as is", function()
      local f0 = failure.Failure(GenericError("as is"))
      local d = inlineCallbacks(function() error(f0) end)()
      assert.equal(f0, failureResultOf(d))
    end)

    it("names the awaiting functions in the traceback when debugging", function()
      defer.setDebugging(true)
      finally(function() defer.setDebugging(false) end)
      local gate = Deferred()
      local function inner_fn()
        await(gate)
        error(GenericError("deep"))
      end
      local function outer_fn(d)
        local v = await(d)
        return v
      end
      local inner = inlineCallbacks(inner_fn)
      local outer = inlineCallbacks(outer_fn)
      local d = outer(inner())
      gate:callback(nil)
      local f = failureResultOf(d, GenericError)
      local src = debug.getinfo(outer_fn, "S")
      local want = ("awaited by: function <%s:%d> at %s:%d"):format(src.short_src, src.linedefined,
        src.short_src, src.linedefined + 1)
      assert.matches(want, f.traceback, 1, true)
    end)
  end)

  describe("misuse", function()
    it("raises NotACoroutineError when await is called outside an inlineCallbacks function", function()
      local ok, e = pcall(await, defer.succeed(1))
      assert.is_false(ok)
      assert.equal(defer.NotACoroutineError, e.class)
      assert.equal("await called outside an inlineCallbacks function", e.message)
      ok, e = pcall(await, 5)
      assert.is_false(ok)
      assert.equal(defer.NotACoroutineError, e.class)
    end)

    it("raises when await is called in a plain coroutine", function()
      local co = coroutine.create(function() return pcall(await, Deferred()) end)
      local _, ok, e = coroutine.resume(co)
      assert.is_false(ok)
      assert.equal("await called outside an inlineCallbacks function", e.message)
    end)

    it("raises a clear error where Lua forbids a yield", function()
      local gate = Deferred()
      local d = inlineCallbacks(function()
        local errs = {}
        table.sort({ 2, 1 }, function(a, b)
          local ok, e = pcall(await, gate)
          if not ok then errs.sort = e end
          return a < b
        end)
        local ok, e = pcall(tostring, setmetatable({}, { __tostring = function() return await(gate) end }))
        errs.tostring = not ok and e or nil
        local s = ("x"):gsub("x", function() local ok2, e2 = pcall(await, gate); errs.gsub = e2; return "y" end)
        return errs
      end)()
      local errs = successResultOf(d)
      assert.equal(defer.NotACoroutineError, errs.sort.class)
      assert.matches("Lua forbids a yield", errs.sort.message, 1, true)
      assert.equal(defer.NotACoroutineError, errs.tostring.class)
      assert.equal(defer.NotACoroutineError, errs.gsub.class)
      gate:callback(nil)
    end)

    it("still returns a fired Deferred's result where Lua forbids a yield", function()
      local d = inlineCallbacks(function()
        local got
        table.sort({ 2, 1 }, function(a, b) got = await(defer.succeed("fine")); return a < b end)
        return got
      end)()
      assert.equal("fine", successResultOf(d))
    end)

    it("errbacks when the function calls coroutine.yield itself", function()
      local d = inlineCallbacks(function() coroutine.yield("stray") return "never" end)()
      local f = failureResultOf(d, defer.NotACoroutineError)
      assert.matches("coroutine.yield called in an inlineCallbacks function", f.value.message, 1, true)
    end)

    it("raises at the stray coroutine.yield, so the function can catch it", function()
      local after = false
      local d = inlineCallbacks(function()
        local ok, e = pcall(function()
          coroutine.yield("stray")
          after = true
        end)
        return { ok, errors.isinstance(e, defer.NotACoroutineError) }
      end)()
      assert.same({ false, true }, successResultOf(d))
      assert.is_false(after)
    end)

    it("fails a callback that calls coroutine.yield, and its Deferred goes on", function()
      local inner, seen = Deferred(), {}
      inner:addCallback(function(v)
        seen[#seen + 1] = "cb1 " .. v
        coroutine.yield("stray")
        seen[#seen + 1] = "after the yield"
        return v
      end)
      inner:addCallback(function(v) seen[#seen + 1] = "cb2 " .. tostring(v) end)
      local d = inlineCallbacks(function()
        inner:callback(1)
        seen[#seen + 1] = "body goes on"
        return "done"
      end)()
      assert.equal("done", successResultOf(d))
      assert.same({ "cb1 1", "body goes on" }, seen)
      assert.is_false(inner._running)
      -- the chain is not stuck: the next errback runs at once
      local caught
      inner:addErrback(function(f) caught = f end)
      assert.is_true(errors.isinstance(caught.value, defer.NotACoroutineError))
    end)

    it("puts back a hook the coroutine had (a coverage tool's) after a stray yield", function()
      local function hook() end
      local d = inlineCallbacks(function()
        local co = coroutine.running()
        debug.sethook(co, hook, "", 1000000)
        pcall(function() coroutine.yield() end)
        local h, mask, count = debug.gethook(co)
        debug.sethook(co)
        return { h == hook, mask, count }
      end)()
      assert.same({ true, "", 1000000 }, successResultOf(d))
    end)

    it("raises TypeError at once for a non-function", function()
      local ok, e = pcall(inlineCallbacks, "nope")
      assert.is_false(ok)
      assert.equal("bad argument #1 to 'inlineCallbacks' (function expected, got string)", e.message)
    end)
  end)

  describe("cancellation", function()
    local outstanding

    before_each(function() outstanding = {} end)

    local function getDeferred()
      local d = Deferred()
      outstanding[#outstanding + 1] = d
      return d
    end

    local function sample(getChild)
      getChild = getChild or getDeferred
      return inlineCallbacks(function()
        local ok, x = pcall(await, getChild())
        if not ok then
          if UntranslatedError:isinstance(x) then error(TranslatedError()) end
          if DontFail:isinstance(x) then
            x = x.actualValue - 2
          else
            error(x, 0)
          end
        end
        return x + 1
      end)()
    end

    it("cancels the awaited Deferred when the returned one is cancelled", function()
      local childResult = "FAILURE"
      local d = sample(function()
        local c = Deferred()
        c:addErrback(function(f) childResult = f:check(defer.CancelledError); return f end)
        return c
      end)
      d:addErrback(function() end)
      d:cancel()
      assert.equal(defer.CancelledError, childResult)
    end)

    it("errbacks with the CancelledError raised at the await", function()
      local d = sample()
      d:cancel()
      failureResultOf(d, defer.CancelledError)
    end)

    it("lets the function translate the cancellation error", function()
      local a = Deferred(function(it) it:errback(UntranslatedError()) end)
      local d = sample(function() return a end)
      d:cancel()
      failureResultOf(d, TranslatedError)
    end)

    it("lets the function turn the cancellation into a result", function()
      local a = Deferred(function(it) it:errback(DontFail(4321)) end)
      local d = sample(function() return a end)
      local results = {}
      d:addCallback(function(r) results[#results + 1] = r end)
      d:cancel()
      assert.same({ 4320 }, results)
    end)

    it("fires only when the function finishes after an asynchronous cancellation", function()
      local more = Deferred()
      local d = sample(function()
        local c = Deferred()
        c:addErrback(function(f) f:trap(defer.CancelledError); return more end)
        return c
      end)
      d:cancel()
      assertNoResult(d)
      more:callback(6543)
      assert.equal(6544, successResultOf(d))
    end)

    it("lets the function catch CancelledError and go on to await more", function()
      local second = Deferred()
      local d = inlineCallbacks(function()
        local ok, e = pcall(await, Deferred())
        assert(not ok and defer.CancelledError:isinstance(e))
        return "after: " .. await(second)
      end)()
      d:cancel()
      assertNoResult(d)
      second:callback("more")
      assert.equal("after: more", successResultOf(d))
    end)

    it("cancels the Deferred the function returned and waits on", function()
      local cancelled = false
      local inner = Deferred(function() cancelled = true end)
      local d = inlineCallbacks(function() return inner end)()
      d:cancel()
      assert.is_true(cancelled)
      failureResultOf(d, defer.CancelledError)
    end)

    it("cancels again what the function awaits after a first cancel", function()
      local second = Deferred()
      local d = inlineCallbacks(function()
        pcall(await, Deferred())
        return await(second)
      end)()
      d:cancel()
      d:cancel()
      failureResultOf(d, defer.CancelledError)
    end)
  end)

  describe("trampolined resumes", function()
    it("resumes a waiting function at once when fired from outside any function", function()
      local order = {}
      local gate = Deferred()
      inlineCallbacks(function() await(gate); order[#order + 1] = "resumed" end)()
      gate:callback(nil)
      order[#order + 1] = "after callback"
      assert.same({ "resumed", "after callback" }, order)
    end)

    it("resumes a function fired from inside another at once, inside the callback call", function()
      -- Twisted 22.4 gives this very order
      local order = {}
      local gate, hold = Deferred(), Deferred()
      inlineCallbacks(function() await(gate); order[#order + 1] = "B resumed" end)()
      local a = inlineCallbacks(function()
        order[#order + 1] = "A fires"
        gate:callback(nil)
        order[#order + 1] = "A goes on"
        await(hold)
        order[#order + 1] = "A resumed"
      end)()
      assert.same({ "A fires", "B resumed", "A goes on" }, order)
      hold:callback(nil)
      assert.same({ "A fires", "B resumed", "A goes on", "A resumed" }, order)
      assert.is_true(a.called)
    end)

    it("queues a resume nested too deep, and runs it when the outer function waits", function()
      -- 40 functions each waiting for the one before: firing the first from
      -- inside another function resumes them nested, up to the C-stack
      -- budget; the rest run, in order, once that function waits
      local order = {}
      local first = Deferred()
      local prev = first
      for i = 1, 40 do
        local wait = prev
        prev = inlineCallbacks(function()
          await(wait)
          order[#order + 1] = i
        end)()
      end
      local hold = Deferred()
      inlineCallbacks(function()
        first:callback(nil)
        order[#order + 1] = "outer goes on"
        await(hold)
      end)()
      local at = nil
      for i, v in ipairs(order) do if v == "outer goes on" then at = i end end
      assert.truthy(at and at > 2 and at < 41, "outer went on at " .. tostring(at))
      for i = 1, at - 1 do assert.equal(i, order[i]) end
      for i = at, 40 do assert.equal(i, order[i + 1]) end
      assert.equal(41, #order)
      assert.is_true(prev.called)
    end)

    it("runs a cascade of 100000 finishing functions with a bounded stack", function()
      local maxDepth = 0
      local function depth()
        local n = 1
        while debug.getinfo(n, "l") do n = n + 1 end
        return n
      end
      local step = inlineCallbacks(function(d)
        local v = await(d)
        local n = depth()
        if n > maxDepth then maxDepth = n end
        return v + 1
      end)
      local root = Deferred()
      local prev = root
      for _ = 1, 100000 do prev = step(prev) end
      root:callback(0)
      assert.equal(100000, successResultOf(prev))
      assert.truthy(maxDepth < 10, "stack depth " .. maxDepth)
    end)

    it("awaits 1,000,000 fired Deferreds in one function without growing memory", function()
      collectgarbage()
      local before = collectgarbage("count")
      local peak = 0
      local d = inlineCallbacks(function()
        local s = 0
        for i = 1, 1000000 do
          s = s + await(defer.succeed(i))
          if i % 50000 == 0 then
            collectgarbage() -- live memory, not garbage awaiting the collector
            local m = collectgarbage("count")
            if m > peak then peak = m end
          end
        end
        return s
      end)()
      assert.equal(500000500000, successResultOf(d))
      assert.truthy(peak - before < 1024, ("grew by %d KB"):format(math.floor(peak - before)))
    end)

    it("awaits 100000 Deferreds fired one by one from outside", function()
      local q = defer.DeferredQueue()
      local d = inlineCallbacks(function()
        local s = 0
        for _ = 1, 100000 do s = s + await(q:get()) end
        return s
      end)()
      for i = 1, 100000 do q:put(i) end
      assert.equal(5000050000, successResultOf(d))
    end)

    it("recurses through 10000 nested inlineCallbacks calls without overflowing the C stack", function()
      local rec
      rec = inlineCallbacks(function(n)
        if n == 0 then return 0 end
        return await(rec(n - 1)) + 1
      end)
      assert.equal(10000, successResultOf(rec(10000)))
    end)

    -- How deep runs nest (a callback firing the next Deferred) before one
    -- is put off until the outermost ends: the same number whenever nothing
    -- else is under way.
    local function run_nesting()
      local ds, depth, deepest = {}, 0, 0
      for i = 1, 200 do ds[i] = Deferred() end
      for i = 1, 199 do
        ds[i]:addCallback(function(x)
          depth = depth + 1
          deepest = math.max(deepest, depth)
          ds[i + 1]:callback(x + 1)
          depth = depth - 1
          return x
        end)
      end
      ds[1]:callback(1)
      assert.equal(200, ds[200].result)
      return deepest
    end

    -- a function that fires a Deferred whose callback awaits leaves that
    -- run under way while it waits; the runs it held used to stay counted,
    -- so after 40 abandoned ones every later run was put off for ever
    it("does not hold later runs up after functions that awaited inside a callback are abandoned", function()
      local fresh = run_nesting()
      assert.is_true(fresh > 10, "nests " .. fresh)
      for _ = 1, 100 do
        inlineCallbacks(function()
          local d = Deferred()
          d:addCallback(function() return await(Deferred()) end)
          d:callback(1)
        end)()
      end
      collectgarbage()
      assert.equal(fresh, run_nesting())
      local order = {}
      local outer, inner = Deferred(), Deferred()
      inner:addCallback(function() order[#order + 1] = "inner" end)
      outer:addCallback(function()
        inner:callback(nil)
        order[#order + 1] = "outer goes on"
      end)
      outer:callback(nil)
      assert.same({ "inner", "outer goes on" }, order)
    end)

    it("gives a function that awaited inside a callback its runs back when it goes on", function()
      local fresh = run_nesting()
      local gates, ds, order = {}, {}, {}
      for i = 1, 60 do
        gates[i] = Deferred()
        ds[i] = inlineCallbacks(function()
          local d = Deferred()
          d:addCallback(function()
            local v = await(gates[i])
            order[#order + 1] = v
            return v * 2
          end)
          d:callback(nil)
          return await(d)
        end)()
      end
      assert.equal(fresh, run_nesting())
      for i = 60, 1, -1 do gates[i]:callback(i) end
      for i = 1, 60 do
        assert.equal(61 - i, order[i])
        assert.equal(i * 2, successResultOf(ds[i]))
      end
      assert.equal(fresh, run_nesting())
    end)
  end)
end)
