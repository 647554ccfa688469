-- spec for lua/braid/reactor.lua and runtime/loop.c, timers.c, signals.c
local reactor = require "braid.reactor"
local errors = require "braid.error"
local core = require "braid.core"

-- run the reactor until stop(), failing (not hanging) after `limit` seconds
local function run_for(limit)
  local guard = reactor.callLater(limit or 2, function()
    reactor.crash()
    error("reactor ran too long")
  end)
  reactor.run({ installSignalHandlers = false })
  if guard:active() then guard:cancel() end
end

local function clean()
  for _, dc in ipairs(reactor.getDelayedCalls()) do dc:cancel() end
end

describe("reactor.callLater", function()
  after_each(clean)

  it("returns a pending DelayedCall with called and cancelled false", function()
    local dc = reactor.callLater(10, print)
    assert.is_true(dc:active())
    assert.is_false(dc.called)
    assert.is_false(dc.cancelled)
    dc:cancel()
  end)

  it("passes extra arguments through, nils included", function()
    local got
    reactor.callLater(0, function(...) got = table.pack(...); reactor.stop() end, "a", nil, 3, nil)
    run_for()
    assert.equal(4, got.n)
    assert.same({ "a", nil, 3, nil, n = 4 }, got)
  end)

  it("runs calls due at the same time in the order they were scheduled", function()
    local order = {}
    for i = 1, 50 do reactor.callLater(0.01, function() order[#order + 1] = i end) end
    reactor.callLater(0.02, reactor.stop)
    run_for()
    local want = {}
    for i = 1, 50 do want[i] = i end
    assert.same(want, order)
  end)

  it("runs calls in deadline order", function()
    local order = {}
    reactor.callLater(0.03, function() order[#order + 1] = "c" end)
    reactor.callLater(0.01, function() order[#order + 1] = "a" end)
    reactor.callLater(0.02, function() order[#order + 1] = "b" end)
    reactor.callLater(0.04, reactor.stop)
    run_for()
    assert.same({ "a", "b", "c" }, order)
  end)

  it("never runs callLater(0) re-entrantly, but on a later iteration", function()
    local log = {}
    reactor.callLater(0, function()
      log[#log + 1] = "outer start"
      reactor.callLater(0, function() log[#log + 1] = "inner" end)
      log[#log + 1] = "outer end"
    end)
    reactor.iterate()
    assert.same({ "outer start", "outer end" }, log)
    reactor.iterate()
    assert.same({ "outer start", "outer end", "inner" }, log)
  end)

  it("waits at least the delay", function()
    local t0 = core.monotonic()
    local t1
    reactor.callLater(0.05, function() t1 = core.monotonic(); reactor.stop() end)
    run_for()
    assert.is_true(t1 - t0 >= 0.05 - 1e-3, "fired after " .. (t1 - t0))
  end)

  it("keeps pcall_report's results when the error reporter itself raises", function()
    core.set_error_handler(function() error("reporter broke") end)
    local r = table.pack(core.pcall_report(function() error("boom") end))
    local r2 = table.pack(core.pcall_report(error, "x"))
    core.set_error_handler(nil)
    package.loaded["braid.reactor"] = nil -- reinstall the default handler on next require
    assert.equal(1, r.n)
    assert.is_false(r[1])
    assert.equal(1, r2.n)
    assert.is_false(r2[1])
  end)

  it("logs an error raised in a timed call and goes on", function()
    local reported = {}
    core.set_error_handler(function(e) reported[#reported + 1] = e end)
    local after = false
    reactor.callLater(0, function() error("boom") end)
    reactor.callLater(0.01, function() after = true; reactor.stop() end)
    run_for()
    core.set_error_handler(nil)
    package.loaded["braid.reactor"] = nil -- reinstall the default handler on next require
    assert.is_true(after)
    assert.equal(1, #reported)
    assert.matches("boom", reported[1]:getErrorMessage())
    assert.matches("reactor_spec.lua", reported[1].traceback)
    reactor = require "braid.reactor"
  end)

  it("refuses a negative, NaN or infinite delay naming the argument", function()
    assert.error_matches(function() reactor.callLater(-1, print) end, "bad argument #1 to '.*callLater' %(delay must be")
    assert.error_matches(function() reactor.callLater(0 / 0, print) end, "bad argument #1 to '.*callLater'")
    assert.error_matches(function() reactor.callLater(math.huge, print) end, "bad argument #1 to '.*callLater'")
    assert.error_matches(function() reactor.callLater("x", print) end, "bad argument #1 to '.*callLater' %(number expected")
  end)

  it("refuses a non-callable naming the argument", function()
    assert.error_matches(function() reactor.callLater(1, 42) end,
      "bad argument #2 to '.*callLater' %(function expected, got number%)")
    assert.error_matches(function() reactor.callLater(1) end, "bad argument #2")
  end)

  it("accepts a callable table", function()
    local hit = 0
    local obj = setmetatable({}, { __call = function(_, x) hit = x; reactor.stop() end })
    reactor.callLater(0, obj, 7)
    run_for()
    assert.equal(7, hit)
  end)

  it("keeps a call pending after its last Lua reference is gone", function()
    local fired = false
    reactor.callLater(0.01, function() fired = true; reactor.stop() end)
    collectgarbage(); collectgarbage()
    run_for()
    assert.is_true(fired)
  end)
end)

describe("DelayedCall", function()
  after_each(clean)

  it("getTime is in the time base of seconds()", function()
    local now = reactor.seconds()
    local dc = reactor.callLater(10, print)
    assert.near(now + 10, dc:getTime(), 0.05)
    dc:cancel()
  end)

  it("cancel stops the call and marks it cancelled", function()
    local fired = false
    local dc = reactor.callLater(0, function() fired = true end)
    dc:cancel()
    reactor.iterate()
    assert.is_false(fired)
    assert.is_true(dc.cancelled)
    assert.is_false(dc:active())
  end)

  it("raises AlreadyCancelled on cancel, delay or reset after cancel", function()
    local dc = reactor.callLater(1, print)
    dc:cancel()
    for _, m in ipairs({ "cancel", "delay", "reset" }) do
      local ok, e = pcall(dc[m], dc, 1)
      assert.is_false(ok)
      assert.is_true(errors.AlreadyCancelled:isinstance(e), m)
    end
  end)

  it("raises AlreadyCalled on cancel, delay or reset after it ran", function()
    local dc = reactor.callLater(0, function() end)
    reactor.iterate()
    assert.is_true(dc.called)
    for _, m in ipairs({ "cancel", "delay", "reset" }) do
      local ok, e = pcall(dc[m], dc, 1)
      assert.is_false(ok)
      assert.is_true(errors.AlreadyCalled:isinstance(e), m)
      assert.equal("AlreadyCalled: Tried to cancel an already-called event.", tostring(e))
    end
  end)

  it("checks called/cancelled before the argument of delay and reset, as Twisted's", function()
    local ran = reactor.callLater(0, function() end)
    reactor.iterate()
    local cancelled = reactor.callLater(5, function() end)
    cancelled:cancel()
    for _, bad in ipairs({ -1, "x", 0 / 0, math.huge }) do
      for _, m in ipairs({ "delay", "reset" }) do
        local ok, e = pcall(ran[m], ran, bad)
        assert.is_false(ok)
        assert.equal("AlreadyCalled: Tried to cancel an already-called event.", tostring(e))
        ok, e = pcall(cancelled[m], cancelled, bad)
        assert.is_false(ok)
        assert.equal("AlreadyCancelled: Tried to cancel an already-cancelled event.", tostring(e))
      end
    end
    local live = reactor.callLater(5, function() end)
    local ok, e = pcall(function() live:reset(-1) end)
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
    live:cancel()
  end)

  it("is called (not active) while its function runs", function()
    local dc
    local seen
    dc = reactor.callLater(0, function() seen = { dc.called, dc:active() } end)
    reactor.iterate()
    assert.same({ true, false }, seen)
  end)

  it("delay postpones by that much", function()
    local dc = reactor.callLater(1, print)
    local t = dc:getTime()
    dc:delay(2)
    assert.near(t + 2, dc:getTime(), 0.01)
    dc:cancel()
  end)

  it("reset makes it due that many seconds from now", function()
    local dc = reactor.callLater(100, print)
    dc:reset(1)
    assert.near(reactor.seconds() + 1, dc:getTime(), 0.05)
    dc:cancel()
  end)

  it("reset counts as rescheduling for the order of equal deadlines", function()
    local order = {}
    local a = reactor.callLater(0.01, function() order[#order + 1] = "a" end)
    reactor.callLater(0.01, function() order[#order + 1] = "b" end)
    a:reset(0)
    a:delay(0.01) -- now due with b, but rescheduled after it
    reactor.callLater(0.05, reactor.stop)
    run_for()
    assert.same({ "b", "a" }, order)
  end)

  it("runs a call moved into the past by a timed call in the same pass, a reset(0) one next turn", function()
    -- as Twisted's runUntilCurrent: [a, c] on the first turn, b on a later one
    local log = {}
    local b = reactor.callLater(10, function() log[#log + 1] = "b" end)
    local c = reactor.callLater(10, function() log[#log + 1] = "c" end)
    reactor.callLater(0, function()
      log[#log + 1] = "a"
      b:reset(0)
      c:delay(-20)
    end)
    while #log == 0 do reactor.iterate(0.01) end
    assert.same({ "a", "c" }, log)
    while #log < 3 do reactor.iterate(0.01) end
    assert.same({ "a", "c", "b" }, log)
  end)

  it("exposes func and args", function()
    local dc = reactor.callLater(1, print, "x", nil)
    assert.equal(print, dc.func)
    assert.same({ "x", nil, n = 2 }, dc.args)
    dc:cancel()
  end)
end)

describe("reactor.getDelayedCalls", function()
  after_each(clean)

  it("lists the pending calls and drops cancelled ones", function()
    local a = reactor.callLater(1, print)
    local b = reactor.callLater(2, print)
    local calls = reactor.getDelayedCalls()
    assert.equal(2, #calls)
    local set = { [calls[1]] = true, [calls[2]] = true }
    assert.is_true(set[a] and set[b])
    a:cancel()
    assert.same({ b }, reactor.getDelayedCalls())
  end)
end)

describe("cancelled calls in the timer heap", function()
  after_each(clean)

  -- cancel only marks a call: its entry stays until it reaches the top or
  -- the heap is compacted, and when no call is left pending the heap is
  -- emptied at once (a large anchor table is replaced)
  local function weak_handles(n, delay)
    local weak = setmetatable({}, { __mode = "v" })
    local strong = {}
    for i = 1, n do
      strong[i] = reactor.callLater(delay + i / 1e6, print)
      weak[i] = strong[i]
    end
    return strong, weak
  end

  local function count(t)
    local k = 0
    for _ in pairs(t) do k = k + 1 end
    return k
  end

  it("lets cancelled calls be collected once the heap drops them, keeping the pending ones", function()
    local strong, weak = weak_handles(300, 100)
    for i = 1, 200 do strong[i]:cancel() end  -- dead outnumber the living
    assert.equal(100, core.timer_count())
    assert.equal(100, #reactor.getDelayedCalls())
    for i = 1, 300 do strong[i] = nil end
    reactor.iterate(0)  -- the loop turn compacts
    collectgarbage(); collectgarbage()
    assert.equal(100, count(weak))
    for i = 1, 200 do assert.is_nil(weak[i]) end
    for i = 201, 300 do assert.is_true(weak[i]:active()) end
  end)

  it("empties the heap when the last pending call of many is cancelled, and goes on in order", function()
    local strong, weak = weak_handles(500, 100)
    for i = 1, 500 do strong[i]:cancel() end
    assert.equal(0, core.timer_count())
    assert.same({}, reactor.getDelayedCalls())
    strong = nil
    collectgarbage(); collectgarbage()
    assert.equal(0, count(weak))
    local order = {}
    for i = 1, 100 do reactor.callLater(i / 1e4, function() order[#order + 1] = i end) end
    reactor.callLater(0.05, reactor.stop)
    run_for()
    assert.equal(100, #order)
    for i = 1, 100 do assert.equal(i, order[i]) end
  end)

  it("survives a call that cancels the last pending call of many while calls run", function()
    local later = {}
    local fired = {}
    for i = 1, 200 do
      later[i] = reactor.callLater(100, function() fired[#fired + 1] = "late" .. i end)
    end
    for i = 1, 199 do later[i]:cancel() end
    for i = 1, 3 do
      reactor.callLater(0, function()
        fired[#fired + 1] = i
        if i == 1 then later[200]:cancel() end
        -- anchored after the anchor table was replaced
        if i == 2 then reactor.callLater(0, function() fired[#fired + 1] = "new" end) end
      end)
    end
    reactor.iterate(0)
    assert.same({ 1, 2, 3 }, fired)
    reactor.iterate(0)
    assert.same({ 1, 2, 3, "new" }, fired)
    assert.equal(0, core.timer_count())
    collectgarbage(); collectgarbage()
    local dc = reactor.callLater(0, function() fired[#fired + 1] = "after" end)
    reactor.iterate(0)
    assert.is_true(dc.called)
    assert.equal("after", fired[5])
  end)

  it("keeps a call a finalizer schedules while the last pending call is cancelled", function()
    -- cancelling the last of many makes a new anchor table, which can run
    -- the collector and its finalizers: "restart" leaves no allocation
    -- debt, so that table's allocation runs a (young) collection
    local mode = collectgarbage("generational")
    finally(function() collectgarbage("restart"); collectgarbage(mode) end)
    local made, ran = nil, false
    local fin = { __gc = function() made = reactor.callLater(0, function() ran = true end) end }
    local calls = {}
    for i = 1, 70 do calls[i] = reactor.callLater(1000, print) end  -- more than 64 anchors
    for i = 1, 69 do calls[i]:cancel() end
    collectgarbage("stop")
    setmetatable({}, fin)  -- garbage with a finalizer
    collectgarbage("restart")
    calls[70]:cancel()
    collectgarbage("stop")
    assert.is_not_nil(made, "the finalizer did not run inside cancel")
    assert.is_true(made:active())
    assert.same({ made }, reactor.getDelayedCalls())
    assert.equal(1, core.timer_count())
    made:reset(0)  -- read the heap out of bounds when the call was lost
    reactor.iterate(0)
    assert.is_true(ran)
    assert.equal(0, core.timer_count())
  end)

  it("drops cancelled calls that reach the top without running them", function()
    local order = {}
    local calls = {}
    for i = 1, 10 do
      calls[i] = reactor.callLater(i / 1e3, function() order[#order + 1] = i end)
    end
    for i = 1, 9, 2 do calls[i]:cancel() end
    reactor.callLater(0.03, reactor.stop)
    run_for()
    assert.same({ 2, 4, 6, 8, 10 }, order)
    assert.equal(0, core.timer_count())
  end)
end)

describe("reactor.run and stop", function()
  after_each(clean)

  it("is running while run is active, and not after", function()
    local seen
    reactor.callLater(0, function() seen = reactor.running; reactor.stop() end)
    assert.is_false(reactor.running)
    run_for()
    assert.is_true(seen)
    assert.is_false(reactor.running)
  end)

  it("can be run again after stop", function()
    local runs = 0
    for _ = 1, 3 do
      reactor.callLater(0, function() runs = runs + 1; reactor.stop() end)
      run_for()
    end
    assert.equal(3, runs)
  end)

  it("leaves run() when the shutdown event is fired by hand, as Twisted's crash trigger", function()
    local log = {}
    local id = reactor.addSystemEventTrigger("after", "shutdown", function()
      log[#log + 1] = "after shutdown"
    end)
    finally(function() reactor.removeSystemEventTrigger(id) end)
    reactor.callLater(0, function() reactor.fireSystemEvent("shutdown") end)
    reactor.callLater(0.5, function() log[#log + 1] = "still running" end)
    run_for()
    assert.same({ "after shutdown" }, log)
    assert.is_false(reactor.running)
  end)

  it("does not start the loop after a crash() from a startup trigger or callWhenRunning", function()
    local ran = false
    local id = reactor.addSystemEventTrigger("before", "startup", reactor.crash)
    reactor.callLater(0, function() ran = true end)
    run_for()
    reactor.removeSystemEventTrigger(id)
    assert.is_false(ran)
    assert.is_false(reactor.running)
    reactor.callWhenRunning(reactor.crash)
    run_for()
    assert.is_false(ran)
    reactor.callWhenRunning(reactor.stop)  -- the next run goes on as usual
    run_for()
    assert.is_true(ran)
  end)

  it("raises ReactorNotRunning when stopped while not running", function()
    local ok, e = pcall(reactor.stop)
    assert.is_false(ok)
    assert.is_true(errors.ReactorNotRunning:isinstance(e))
    assert.equal("ReactorNotRunning: Can't stop reactor that isn't running.", tostring(e))
  end)

  it("raises ReactorNotRunning on a second stop", function()
    local second
    reactor.callLater(0, function()
      reactor.stop()
      local ok, e = pcall(reactor.stop)
      second = { ok, errors.ReactorNotRunning:isinstance(e) }
    end)
    run_for()
    assert.same({ false, true }, second)
  end)

  it("raises ReactorAlreadyRunning for run, iterate while running", function()
    local got = {}
    reactor.callLater(0, function()
      for _, f in ipairs({ reactor.run, reactor.iterate }) do
        local ok, e = pcall(f)
        got[#got + 1] = (not ok) and errors.ReactorAlreadyRunning:isinstance(e)
      end
      reactor.stop()
    end)
    run_for()
    assert.same({ true, true }, got)
  end)

  it("raises ReactorAlreadyRunning for run, iterate from callWhenRunning and startup triggers", function()
    local got = {}
    local function try()
      for _, f in ipairs({ reactor.run, reactor.iterate }) do
        local ok, e = pcall(f)
        got[#got + 1] = (not ok) and errors.ReactorAlreadyRunning:isinstance(e)
      end
    end
    local id = reactor.addSystemEventTrigger("during", "startup", try)
    reactor.callWhenRunning(try)
    reactor.callLater(0, reactor.stop)
    run_for()
    reactor.removeSystemEventTrigger(id)
    assert.same({ true, true, true, true }, got)
  end)

  it("has no fields for the UDP, TLS and process functions, which braid lacks", function()
    for _, name in ipairs({ "listenUDP", "listenUNIXDatagram", "connectUNIXDatagram",
                            "adoptDatagramPort", "listenSSL", "connectSSL", "spawnProcess" }) do
      assert.is_nil(reactor[name], name)
    end
    assert.is_function(reactor.listenTCP)
  end)

  it("runs shutdown triggers on the iteration after stop, then leaves run", function()
    local log = {}
    local t = reactor.addSystemEventTrigger("before", "shutdown", function() log[#log + 1] = "before" end)
    local u = reactor.addSystemEventTrigger("during", "shutdown", function() log[#log + 1] = "during" end)
    local v = reactor.addSystemEventTrigger("after", "shutdown", function() log[#log + 1] = "after" end)
    reactor.callLater(0, function()
      reactor.stop()
      log[#log + 1] = "stop returned"
    end)
    run_for()
    reactor.removeSystemEventTrigger(t)
    reactor.removeSystemEventTrigger(u)
    reactor.removeSystemEventTrigger(v)
    assert.same({ "stop returned", "before", "during", "after" }, log)
  end)

  -- a call queued by a timed call ran right after the timed calls, before
  -- the I/O that was waiting; Twisted runs it in the next runUntilCurrent,
  -- after doIteration has handled that I/O
  it("runs a call queued by a timed call after the I/O waiting then", function()
    local log = {}
    local client
    local Server = { dataReceived = function(_, data)
      log[#log + 1] = "read " .. data
      if data == "a" then
        client.transport:write("b")  -- waiting for the server by the next poll
        reactor.callLater(0, function()
          log[#log + 1] = "timer"
          reactor.callFromThread(function() log[#log + 1] = "queued"; reactor.stop() end)
        end)
      end
    end }
    local Client = { connectionMade = function(self)
      client = self
      self.transport:write("a")
    end }
    local port = reactor.listenTCP(0, { protocol = Server, noisy = false }, 50, "127.0.0.1")
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = Client, noisy = false })
    run_for()
    assert.same({ "read a", "timer", "read b", "queued" }, log)
  end)

  -- Twisted fires a stop()'s shutdown at the end of runUntilCurrent: calls
  -- due when that turn began run first, none after the reactor shut down
  it("runs the calls due on the turn after stop() before the shutdown triggers", function()
    local log = {}
    local t = reactor.addSystemEventTrigger("before", "shutdown", function() log[#log + 1] = "before" end)
    local v = reactor.addSystemEventTrigger("after", "shutdown", function() log[#log + 1] = "after" end)
    reactor.callWhenRunning(function()
      reactor.stop()
      reactor.callLater(0, function() log[#log + 1] = "due" end)
    end)
    run_for()
    reactor.removeSystemEventTrigger(t)
    reactor.removeSystemEventTrigger(v)
    assert.same({ "due", "before", "after" }, log)
  end)

  it("crash leaves run without shutdown triggers", function()
    local fired = false
    local t = reactor.addSystemEventTrigger("before", "shutdown", function() fired = true end)
    reactor.callLater(0, reactor.crash)
    reactor.run({ installSignalHandlers = false })
    reactor.removeSystemEventTrigger(t)
    assert.is_false(fired)
    assert.is_false(reactor.running)
  end)

  it("fires startup triggers at each run, callWhenRunning once", function()
    local log = {}
    local t = reactor.addSystemEventTrigger("after", "startup", function() log[#log + 1] = "startup" end)
    reactor.callWhenRunning(function(x) log[#log + 1] = x end, "cwr")
    reactor.callLater(0, reactor.stop)
    run_for()
    reactor.callLater(0, reactor.stop)
    run_for()
    reactor.removeSystemEventTrigger(t)
    assert.same({ "startup", "cwr", "startup" }, log)
  end)

  -- callWhenRunning's calls all ran after every "after startup" trigger;
  -- Twisted adds each as an "after startup" trigger, in turn with the others
  it("runs callWhenRunning calls in turn with the after-startup triggers, as Twisted", function()
    local log = {}
    local function note(s) return function(x) log[#log + 1] = s .. (x or "") end end
    local a = reactor.addSystemEventTrigger("after", "startup", note("A"))
    reactor.callWhenRunning(note("B"), 1)
    local c = reactor.addSystemEventTrigger("after", "startup", note("C"))
    reactor.callWhenRunning(note("D"), 2)
    finally(function() reactor.removeSystemEventTrigger(a); reactor.removeSystemEventTrigger(c) end)
    reactor.callLater(0, reactor.stop)
    run_for()
    assert.same({ "A", "B1", "C", "D2" }, log)
    reactor.callLater(0, reactor.stop)
    run_for()
    assert.same({ "A", "B1", "C", "D2", "A", "C" }, log)
  end)

  -- running was set before the "before startup" triggers: a timer firing
  -- while one's Deferred was pending saw it true, and its callWhenRunning
  -- ran at once, before the "during" phase and the earlier one
  it("is running only from the startup event's during phase on, as Twisted", function()
    local defer = require "braid.defer"
    local log = {}
    local function note(s) log[#log + 1] = s .. (reactor.running and "+" or "-") end
    local d = defer.Deferred()
    local ids = {
      reactor.addSystemEventTrigger("before", "startup", function()
        note("before")
        reactor.callLater(0.05, function() note("fire") d:callback(nil) end)
        return d
      end),
      reactor.addSystemEventTrigger("during", "startup", function() note("during") end),
      reactor.addSystemEventTrigger("after", "startup", function() note("after") end),
    }
    finally(function() for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end end)
    reactor.callWhenRunning(function() note("cwr1") end)
    reactor.callLater(0.01, function()
      note("timer")
      reactor.callWhenRunning(function() note("cwr2") reactor.stop() end)
    end)
    run_for()
    assert.same({ "before-", "timer-", "fire-", "during+", "after+", "cwr1+", "cwr2+" }, log)
  end)

  it("callWhenRunning calls at once while running", function()
    local log = {}
    reactor.callLater(0, function()
      reactor.callWhenRunning(function() log[#log + 1] = "now" end)
      log[#log + 1] = "after"
      reactor.stop()
    end)
    run_for()
    assert.same({ "now", "after" }, log)
  end)

  it("iterate waits at most delay seconds", function()
    local t0 = core.monotonic()
    reactor.iterate(0.05)
    local dt = core.monotonic() - t0
    assert.is_true(dt >= 0.04 and dt < 1, "waited " .. dt)
  end)

  it("iterate returns as soon as a timer is due", function()
    local fired = false
    reactor.callLater(0.01, function() fired = true end)
    local t0 = core.monotonic()
    while not fired do reactor.iterate(5) end
    assert.is_true(core.monotonic() - t0 < 1)
  end)

  it("seconds is wall-clock time", function()
    assert.near(os.time(), reactor.seconds(), 2)
  end)
end)

describe("reactor.callFromThread on the loop", function()
  -- Twisted's CallFromThreadStopsAndWakeUpTests.testCallFromThreadStops: a
  -- callFromThread made by a callFromThread call waits for the next turn,
  -- and a callLater(0) made there runs first (in the same turn)
  it("runs a callFromThread made in one on a later turn, after its callLater(0)", function()
    local log = {}
    reactor.callFromThread(function()
      reactor.callFromThread(function() log[#log + 1] = "second"; reactor.stop() end)
      reactor.callLater(0, function() log[#log + 1] = "later0" end)
    end)
    run_for()
    assert.same({ "later0", "second" }, log)
  end)

  it("runs queued calls before the turn's timed calls, in the order queued, with their arguments", function()
    local log = {}
    local function add(a, b, n) log[#log + 1] = tostring(a) .. tostring(b) .. n end
    reactor.callLater(0, function()
      reactor.callLater(0, function() log[#log + 1] = "timer"; reactor.stop() end)
      reactor.callFromThread(add, "x", nil, select("#", "x", nil))
      reactor.callFromThread(add, 1, 2, 3)
    end)
    run_for()
    assert.same({ "xnil2", "123", "timer" }, log)
  end)

  it("waits for the reactor to run, is no DelayedCall, and logs an error and goes on", function()
    local reported = {}
    local ran = {}
    reactor.callFromThread(function() error("thread call boom") end)
    reactor.callFromThread(function() ran[#ran + 1] = "next" end)
    assert.same({}, ran)
    assert.same({}, reactor.getDelayedCalls())
    core.set_error_handler(function(e) reported[#reported + 1] = e end)
    reactor.callWhenRunning(reactor.stop)
    run_for()
    core.set_error_handler(nil)
    package.loaded["braid.reactor"] = nil -- reinstall the default handler on next require
    reactor = require "braid.reactor"
    assert.same({ "next" }, ran)
    assert.equal(1, #reported)
    assert.matches("thread call boom", reported[1]:getErrorMessage())
  end)

  -- Twisted's mainLoop: doIteration (the I/O callbacks), then runUntilCurrent,
  -- whose threadCallQueue runs before the timed calls; braid ran the calls
  -- that fell due during the wait right after it, before the queued ones
  it("runs a call queued by an I/O callback before a timed call that fell due meanwhile", function()
    local log = {}
    local function note(s)
      log[#log + 1] = s
      if #log == 2 then reactor.stop() end
    end
    local Server = { dataReceived = function()
      local t0 = core.monotonic()
      while core.monotonic() - t0 < 0.05 do end  -- the timer falls due meanwhile
      reactor.callFromThread(note, "queued by dataReceived")
    end }
    local Client = { connectionMade = function(self)
      self.transport:write("x")
      reactor.callLater(0.01, note, "timer")
    end }
    local port = reactor.listenTCP(0, { protocol = Server, noisy = false }, 50, "127.0.0.1")
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = Client, noisy = false })
    run_for()  -- the shutdown closes the port and both connections
    assert.same({ "queued by dataReceived", "timer" }, log)
  end)

  -- Twisted fires a stop()'s shutdown at the end of runUntilCurrent: calls
  -- queued during that turn (by a queued call or a timed call) stay queued
  -- for the next run; braid ran them before the shutdown triggers
  it("keeps the calls queued on the turn of a stop() for after the shutdown", function()
    local log = {}
    local function note(s) return function() log[#log + 1] = s end end
    local t = reactor.addSystemEventTrigger("before", "shutdown", note("before"))
    local v = reactor.addSystemEventTrigger("after", "shutdown", note("after"))
    reactor.callWhenRunning(function()
      reactor.stop()
      reactor.callFromThread(function()
        log[#log + 1] = "queued"
        reactor.callLater(0, note("queued->later0"))
        reactor.callFromThread(note("queued->queued"))
      end)
      reactor.callLater(0, function()
        log[#log + 1] = "later0"
        reactor.callFromThread(note("later0->queued"))
      end)
    end)
    run_for()
    assert.same({ "queued", "later0", "queued->later0", "before", "after" }, log)
    log = {}
    reactor.callWhenRunning(reactor.stop)
    run_for()
    reactor.removeSystemEventTrigger(t)
    reactor.removeSystemEventTrigger(v)
    assert.same({ "queued->queued", "later0->queued", "before", "after" }, log)
  end)

  it("is braid.threads.callFromThread, and refuses a non-callable naming it", function()
    assert.equal(reactor.callFromThread, require("braid.threads").callFromThread)
    local ok, e = pcall(reactor.callFromThread, 42)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'callFromThread'", tostring(e))
  end)
end)

describe("system event triggers", function()
  it("runs before, during and after in phase order", function()
    local log = {}
    local ids = {
      reactor.addSystemEventTrigger("after", "custom", function() log[#log + 1] = "after" end),
      reactor.addSystemEventTrigger("during", "custom", function(a, b) log[#log + 1] = a .. b end, "du", "ring"),
      reactor.addSystemEventTrigger("before", "custom", function() log[#log + 1] = "before" end),
    }
    reactor.fireSystemEvent("custom")
    assert.same({ "before", "during", "after" }, log)
    for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end
    reactor.fireSystemEvent("custom")
    assert.equal(3, #log)
  end)

  it("runs from the live lists: a trigger removed before its turn does not run, one added runs", function()
    local log = {}
    local ids = {}
    local function add(phase, name, f)
      ids[#ids + 1] = reactor.addSystemEventTrigger(phase, "live", function()
        log[#log + 1] = name
        if f then f() end
      end)
      return ids[#ids]
    end
    local b2, d2
    add("before", "b1", function() reactor.removeSystemEventTrigger(b2) end)
    b2 = add("before", "b2")
    add("during", "d1", function()
      reactor.removeSystemEventTrigger(d2)
      add("during", "d3")
      add("after", "a2")
    end)
    d2 = add("during", "d2")
    add("after", "a1")
    reactor.fireSystemEvent("live")
    assert.same({ "b1", "d1", "d3", "a1", "a2" }, log)
    for _, id in ipairs(ids) do
      if id ~= b2 and id ~= d2 then reactor.removeSystemEventTrigger(id) end
    end
  end)

  it("waits for a Deferred returned by a before trigger", function()
    local log = {}
    local pending = {}
    local fake = { callbacks = {} }
    function fake.addBoth(self, f) self.callbacks[#self.callbacks + 1] = f; return self end
    function fake.addCallback(self, f) return self:addBoth(f) end
    local id1 = reactor.addSystemEventTrigger("before", "ev", function() return fake end)
    local id2 = reactor.addSystemEventTrigger("during", "ev", function() log[#log + 1] = "during" end)
    reactor.fireSystemEvent("ev")
    assert.same({}, log)
    pending = fake.callbacks
    pending[1]("done")
    assert.same({ "during" }, log)
    reactor.removeSystemEventTrigger(id1)
    reactor.removeSystemEventTrigger(id2)
  end)

  it("logs an error in a trigger and runs the others", function()
    local reported = 0
    core.set_error_handler(function() reported = reported + 1 end)
    local log = {}
    local a = reactor.addSystemEventTrigger("during", "e2", function() error("bad") end)
    local b = reactor.addSystemEventTrigger("during", "e2", function() log[#log + 1] = "ok" end)
    reactor.fireSystemEvent("e2")
    core.set_error_handler(nil)
    package.loaded["braid.reactor"] = nil
    reactor.removeSystemEventTrigger(a)
    reactor.removeSystemEventTrigger(b)
    reactor = require "braid.reactor"
    assert.equal(1, reported)
    assert.same({ "ok" }, log)
  end)

  it("refuses an unknown phase naming it", function()
    local ok, e = pcall(reactor.addSystemEventTrigger, "sometime", "startup", print)
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
    assert.matches("phase must be 'before', 'during' or 'after', got 'sometime'", tostring(e))
  end)

  it("refuses a non-callable trigger", function()
    assert.error_matches(function() reactor.addSystemEventTrigger("before", "x", "nope") end,
      "bad argument #3 to 'addSystemEventTrigger' %(function expected, got string%)")
  end)

  -- as Twisted's (whose firing has taken the event's triggers): a trigger
  -- that fires its own event again runs once, not until the stack runs out
  it("does nothing when a trigger fires its own event again while it runs", function()
    local reported = {}
    core.set_error_handler(function(e) reported[#reported + 1] = e end)
    local log = {}
    local ids = {
      reactor.addSystemEventTrigger("before", "refire", function()
        log[#log + 1] = "before"
        reactor.fireSystemEvent("refire")
      end),
      reactor.addSystemEventTrigger("during", "refire", function()
        log[#log + 1] = "during"
        reactor.fireSystemEvent("refire-other")
      end),
      reactor.addSystemEventTrigger("after", "refire", function() log[#log + 1] = "after" end),
      reactor.addSystemEventTrigger("during", "refire-other", function()
        log[#log + 1] = "other"
        reactor.fireSystemEvent("refire-other")
      end),
    }
    reactor.fireSystemEvent("refire")
    reactor.fireSystemEvent("refire")  -- fired again once done: runs again (triggers persist)
    core.set_error_handler(nil)
    package.loaded["braid.reactor"] = nil -- reinstall the default handler on next require
    for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end
    reactor = require "braid.reactor"
    assert.same({ "before", "during", "other", "after", "before", "during", "other", "after" }, log)
    assert.same({}, reported)
  end)

  it("refuses to remove an unknown id", function()
    assert.has_error(function() reactor.removeSystemEventTrigger({}) end,
      "ValueError: bad argument #1 to 'removeSystemEventTrigger' (not a trigger id)")
    local id = reactor.addSystemEventTrigger("before", "x", print)
    reactor.removeSystemEventTrigger(id)
    assert.error_matches(function() reactor.removeSystemEventTrigger(id) end, "already removed")
  end)
end)

describe("reactor.onSignal", function()
  after_each(clean)

  it("runs every handler in order, in the loop, with number and name", function()
    local got = {}
    local h1 = reactor.onSignal("SIGUSR2", function(n, name) got[#got + 1] = { 1, n, name } end)
    local h2 = reactor.onSignal("USR2", function(n, name)
      got[#got + 1] = { 2, n, name }
      reactor.stop()
    end)
    reactor.callLater(0, core.raise, "SIGUSR2")
    run_for()
    h1:cancel()
    h2:cancel()
    local n = core.signum("USR2")
    assert.same({ { 1, n, "SIGUSR2" }, { 2, n, "SIGUSR2" } }, got)
  end)

  it("stops calling a cancelled handler", function()
    local hits = 0
    local h = reactor.onSignal("SIGUSR1", function() hits = hits + 1 end)
    local keep = reactor.onSignal("SIGUSR1", function() reactor.stop() end)
    h:cancel()
    reactor.callLater(0, core.raise, "SIGUSR1")
    run_for()
    keep:cancel()
    assert.equal(0, hits)
  end)

  it("a SIGINT handler replaces the default stop", function()
    local got = 0
    local h = reactor.onSignal("SIGINT", function() got = got + 1 end)
    reactor.callLater(0, core.raise, "SIGINT")
    reactor.callLater(0.05, function() reactor.stop() end)
    reactor.run()
    h:cancel()
    assert.equal(1, got)
  end)

  it("the default SIGTERM action stops the reactor", function()
    local after = false
    local t = reactor.addSystemEventTrigger("after", "shutdown", function() after = true end)
    reactor.callLater(0, core.raise, "SIGTERM")
    local guard = reactor.callLater(2, reactor.crash)
    reactor.run()
    reactor.removeSystemEventTrigger(t)
    assert.is_true(guard:active())
    guard:cancel()
    assert.is_true(after)
  end)

  it("refuses unknown signals and non-functions naming the argument", function()
    local ok, e = pcall(reactor.onSignal, "SIGNOPE", print)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'onSignal' %(unknown signal 'SIGNOPE'%)", tostring(e))
    ok, e = pcall(reactor.onSignal, 999, print)
    assert.matches("unknown signal 999", tostring(e))
    assert.error_matches(function() reactor.onSignal("HUP", 3) end,
      "bad argument #2 to 'onSignal' %(function expected, got number%)")
    assert.error_matches(function() reactor.onSignal("KILL", print) end, "cannot be caught")
  end)
end)

describe("reactor.iterate", function()
  it("refuses a negative delay", function()
    assert.error_matches(function() reactor.iterate(-1) end, "bad argument #1 to 'iterate'")
  end)
end)

describe("shutdown with a Deferred from a before trigger", function()
  it("holds back during/after shutdown until the Deferred fires", function()
    local defer = require "braid.defer"
    local log = {}
    local d = defer.Deferred()
    local a = reactor.addSystemEventTrigger("before", "shutdown", function()
      log[#log + 1] = "before"
      reactor.callLater(0.02, function() log[#log + 1] = "drained"; d:callback(nil) end)
      return d
    end)
    local b = reactor.addSystemEventTrigger("during", "shutdown", function() log[#log + 1] = "during" end)
    reactor.callLater(0, reactor.stop)
    run_for()
    reactor.removeSystemEventTrigger(a)
    reactor.removeSystemEventTrigger(b)
    assert.same({ "before", "drained", "during" }, log)
  end)
end)

-- the details below were each left unchecked by the specs above (a
-- mutation of the code that broke them passed every spec)

-- errors logged while f runs (braid.log's observers), the stream silenced
local function logged_errors(f)
  local log = require "braid.log"
  local got = {}
  local function observer(ev) if ev.isError then got[#got + 1] = ev end end
  log.addObserver(observer)
  local prev = log.setErrorStream({ write = function() end, flush = function() end })
  local ok, e = pcall(f)
  log.removeObserver(observer)
  log.setErrorStream(prev)
  if not ok then error(e, 0) end
  return got
end

-- whether this process catches signal `name` (/proc's SigCgt mask)
local function catches(name)
  local n = core.signum(name)
  local f = assert(io.open("/proc/self/status"))
  local mask = f:read("a"):match("\nSigCgt:%s*(%x+)")
  f:close()
  local digit = tonumber(mask:sub(-1 - (n - 1) // 4, -1 - (n - 1) // 4), 16)
  return digit & (1 << ((n - 1) % 4)) ~= 0
end

describe("system event triggers (details)", function()
  after_each(clean)

  it("refuses an event that is not a string, naming the argument", function()
    local ok, e = pcall(reactor.addSystemEventTrigger, "before", 42, print)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'addSystemEventTrigger' %(string expected, got number%)",
      tostring(e))
  end)

  it("calls fireSystemEvent's done for an event with no triggers, and after the after phase", function()
    local log = {}
    reactor.fireSystemEvent("nobody-listens", function() log[#log + 1] = "done" end)
    assert.same({ "done" }, log)
    local id = reactor.addSystemEventTrigger("after", "listened", function() log[#log + 1] = "after" end)
    reactor.fireSystemEvent("listened", function() log[#log + 1] = "done2" end)
    reactor.removeSystemEventTrigger(id)
    assert.same({ "done", "after", "done2" }, log)
  end)

  it("runs every before trigger once, then during and after once, when one returns a fired Deferred", function()
    local defer = require "braid.defer"
    local log = {}
    local ids = {
      reactor.addSystemEventTrigger("before", "sync", function()
        log[#log + 1] = "b1"
        return defer.succeed("early")
      end),
      reactor.addSystemEventTrigger("before", "sync", function() log[#log + 1] = "b2" end),
      reactor.addSystemEventTrigger("during", "sync", function() log[#log + 1] = "d" end),
      reactor.addSystemEventTrigger("after", "sync", function() log[#log + 1] = "a" end),
    }
    reactor.fireSystemEvent("sync")
    for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end
    assert.same({ "b1", "b2", "d", "a" }, log)
  end)

  it("logs a before trigger's failed Deferred, goes on, and leaves a success's value in it", function()
    local defer = require "braid.defer"
    local log = {}
    local bad, good = defer.Deferred(), defer.Deferred()
    local ids = {
      reactor.addSystemEventTrigger("before", "mixed", function() return bad end),
      reactor.addSystemEventTrigger("before", "mixed", function() return good end),
      reactor.addSystemEventTrigger("during", "mixed", function() log[#log + 1] = "during" end),
    }
    local errs = logged_errors(function()
      reactor.fireSystemEvent("mixed")
      bad:errback(errors.ValueError("drain failed"))
      assert.same({}, log)
      good:callback("drained")
    end)
    for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end
    assert.same({ "during" }, log)
    assert.equal(1, #errs)
    assert.equal("Error in a 'before mixed' trigger:", errs[1].why)
    assert.is_true(errors.ValueError:isinstance(errs[1].failure.value))
    local seen = {}
    good:addCallback(function(v) seen[#seen + 1] = v end)
    bad:addBoth(function(v) seen[#seen + 1] = v end)  -- handled: nil, nothing left to report
    assert.same({ "drained" }, seen)
  end)

  it("fires a stop()'s shutdown once while a before trigger's Deferred holds it over woken turns", function()
    local defer = require "braid.defer"
    local log = {}
    local d = defer.Deferred()
    local ids = {
      reactor.addSystemEventTrigger("before", "shutdown", function()
        log[#log + 1] = "before"
        -- turns that run the per-turn work (a callFromThread wakes the loop)
        reactor.callFromThread(function()
          log[#log + 1] = "woken"
          reactor.callFromThread(function()
            log[#log + 1] = "woken again"
            d:callback(nil)
          end)
        end)
        return d
      end),
      reactor.addSystemEventTrigger("after", "shutdown", function() log[#log + 1] = "after" end),
    }
    reactor.callLater(0, reactor.stop)
    run_for()
    for _, id in ipairs(ids) do reactor.removeSystemEventTrigger(id) end
    assert.same({ "before", "woken", "woken again", "after" }, log)
  end)

  it("does not make the reactor running when startup is fired by hand outside run()", function()
    reactor.fireSystemEvent("startup")
    assert.is_false(reactor.running)
  end)
end)

describe("reactor.run and stop (details)", function()
  after_each(clean)

  it("refuses options that are not a table, naming the argument", function()
    local ok, e = pcall(reactor.run, "fast")
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'run' %(table expected, got string%)", tostring(e))
    assert.is_false(reactor.running)
  end)

  it("does not carry a stop() that a crash() cut short into the next run", function()
    local log = {}
    local id = reactor.addSystemEventTrigger("before", "shutdown", function() log[#log + 1] = "shutdown" end)
    finally(function() reactor.removeSystemEventTrigger(id) end)
    reactor.callWhenRunning(function() reactor.stop(); reactor.crash() end)
    run_for()
    assert.same({}, log)
    reactor.callLater(0.02, function() log[#log + 1] = "timer"; reactor.stop() end)
    run_for()
    assert.same({ "timer", "shutdown" }, log)
  end)

  it("catches SIGINT/SIGTERM only while run() runs, and not at all without installSignalHandlers", function()
    assert.is_false(catches("SIGTERM"))
    local seen = {}
    reactor.callLater(0, function() seen[#seen + 1] = catches("SIGTERM"); reactor.stop() end)
    reactor.run()
    assert.is_false(catches("SIGTERM"))
    reactor.callLater(0, function() seen[#seen + 1] = catches("SIGTERM"); reactor.stop() end)
    run_for()  -- installSignalHandlers = false
    assert.same({ true, false }, seen)
  end)

  it("runs a callFromThread a timed call makes without waiting for the next timer", function()
    local t0, t1
    reactor.callLater(0, function()
      t0 = core.monotonic()
      reactor.callFromThread(function() t1 = core.monotonic(); reactor.stop() end)
    end)
    local far = reactor.callLater(3, function() end)
    run_for(5)
    far:cancel()
    assert.is_true(t1 - t0 < 1, ("waited %.3f s"):format(t1 - t0))
  end)

  it("lets a crash() made while not running leave the next iterate() alone", function()
    reactor.crash()
    local ran = false
    reactor.callLater(0.01, function() ran = true end)
    reactor.iterate(0.5)
    assert.is_true(ran)
  end)
end)

describe("reactor.onSignal (details)", function()
  after_each(clean)

  it("runs every handler of a signal when one cancels itself while they run", function()
    local got = {}
    local h1
    h1 = reactor.onSignal("SIGUSR2", function() got[#got + 1] = 1; h1:cancel() end)
    local h2 = reactor.onSignal("SIGUSR2", function() got[#got + 1] = 2; reactor.stop() end)
    reactor.callLater(0, core.raise, "SIGUSR2")
    run_for()
    h2:cancel()
    assert.same({ 1, 2 }, got)
  end)

  it("stops catching a signal once its last handler is cancelled", function()
    -- SIGWINCH: no other spec catches it (braid.log catches SIGUSR1 for its
    -- reopen once a spec logs to a file)
    assert.is_false(catches("SIGWINCH"))
    local h1 = reactor.onSignal("SIGWINCH", function() end)
    local h2 = reactor.onSignal(core.signum("SIGWINCH"), function() end)
    assert.is_true(catches("SIGWINCH"))
    h1:cancel()
    assert.is_true(catches("SIGWINCH"))
    h2:cancel()
    assert.is_false(catches("SIGWINCH"))
  end)

  it("gives SIGTERM its default stop back once the user's handler is cancelled", function()
    local h = reactor.onSignal("SIGTERM", function() end)
    h:cancel()
    local after = false
    local t = reactor.addSystemEventTrigger("after", "shutdown", function() after = true end)
    reactor.callLater(0, core.raise, "SIGTERM")
    local guard = reactor.callLater(2, reactor.crash)
    logged_errors(function() reactor.run() end)  -- "Received SIGTERM" goes to the log
    reactor.removeSystemEventTrigger(t)
    assert.is_true(guard:active())
    guard:cancel()
    assert.is_true(after)
  end)

  it("stops once when SIGTERM comes again while the reactor stops", function()
    local defer = require "braid.defer"
    local d = defer.Deferred()
    local t = reactor.addSystemEventTrigger("before", "shutdown", function()
      core.raise("SIGTERM")  -- delivered while this Deferred holds the shutdown
      reactor.callLater(0.05, function() d:callback(nil) end)
      return d
    end)
    local guard = reactor.callLater(2, reactor.crash)
    reactor.callLater(0, reactor.stop)
    local errs = logged_errors(function() reactor.run() end)
    reactor.removeSystemEventTrigger(t)
    assert.is_true(guard:active())
    guard:cancel()
    assert.same({}, errs)
  end)

  it("refuses a signal that is neither a name nor a number, and SIGSTOP", function()
    local ok, e = pcall(reactor.onSignal, {}, print)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'onSignal' %(signal name or number expected, got table%)", tostring(e))
    ok, e = pcall(reactor.onSignal, "SIGSTOP", print)
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
    assert.matches("bad argument #1 to 'onSignal' %(SIGKILL and SIGSTOP cannot be caught%)", tostring(e))
  end)
end)

describe("DelayedCall and the timer heap (details)", function()
  after_each(clean)

  local function count(t)
    local k = 0
    for _ in pairs(t) do k = k + 1 end
    return k
  end

  it("compacts cancelled calls buried under pending ones on the next turn", function()
    local weak = setmetatable({}, { __mode = "v" })
    local strong = {}
    for i = 1, 300 do
      strong[i] = reactor.callLater(100 + i / 1e6, print)
      weak[i] = strong[i]
    end
    for i = 101, 300 do strong[i]:cancel() end  -- behind the pending ones: never at the top
    for i = 101, 300 do strong[i] = nil end
    reactor.iterate(0)
    collectgarbage(); collectgarbage()
    assert.equal(100, count(weak))
    for i = 101, 300 do assert.is_nil(weak[i]) end
  end)

  it("reschedules a call correctly after the heap was compacted", function()
    local order = {}
    local calls = {}
    for i = 1, 300 do
      calls[i] = reactor.callLater(0.01 + i / 1e5, function() order[#order + 1] = i end)
    end
    for i = 1, 300 do
      if i % 3 ~= 0 then calls[i]:cancel() end  -- 200 dead among 100 pending
    end
    reactor.iterate(0)  -- compacts: every pending call moves in the heap
    calls[3]:delay(0.05)  -- the earliest, now due after all the others
    calls[300]:reset(0)   -- the latest, now due first
    reactor.callLater(0.1, reactor.stop)
    run_for()
    local want = { 300 }
    for i = 6, 297, 3 do want[#want + 1] = i end
    want[#want + 1] = 3
    assert.same(want, order)
  end)

  it("releases the calls when the last of a few pending ones is cancelled", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local a, b = reactor.callLater(50, print), reactor.callLater(60, print)
      weak[1], weak[2] = a, b
      b:cancel()
      a:cancel()
    end
    collectgarbage(); collectgarbage()
    assert.equal(0, count(weak))
  end)

  it("lets a cancelled call's function and arguments go while the call is kept", function()
    local weak = setmetatable({}, { __mode = "v" })
    local dc
    do
      local arg, f = {}, function() end
      weak.arg, weak.f = arg, f
      dc = reactor.callLater(50, f, arg)
    end
    collectgarbage(); collectgarbage()
    assert.is_not_nil(weak.arg)
    dc:cancel()
    collectgarbage(); collectgarbage()
    assert.is_nil(weak.arg)
    assert.is_nil(weak.f)
    assert.is_true(dc.cancelled)
  end)

  it("refuses a non-finite delay() and a new time out of range, naming the argument", function()
    local dc = reactor.callLater(50, print)
    for _, bad in ipairs({ math.huge, -math.huge, 0 / 0 }) do
      local ok, e = pcall(function() dc:delay(bad) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'delay' %(seconds must be a finite number", tostring(e))
    end
    dc:delay(1.7e308)
    local ok, e = pcall(function() dc:delay(1.7e308) end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'delay' %(the new time is out of range%)", tostring(e))
    assert.is_true(dc:active())
    dc:cancel()
  end)

  it("is cancelled and not called after cancel, called and not cancelled after it ran", function()
    local a = reactor.callLater(0, print)
    local b = reactor.callLater(0, function() end)
    a:cancel()
    reactor.iterate(0)
    assert.same({ false, true }, { a.called, a.cancelled })
    assert.same({ true, false }, { b.called, b.cancelled })
  end)
end)

describe("the reactor's functions of lazily loaded modules", function()
  it("getHostByName first of all, and a callback's error, load braid.defer and braid.log out of descriptors", function()
    -- braid.resolver's own defer() and the reactor's error handler load
    -- braid.defer and braid.log with the spare descriptor too (the spec
    -- above has braid.threads load braid.defer first)
    local proc = require "helpers.proc"
    local out = proc.run_out_of_descriptors([[
local reactor = require "braid.reactor"
reactor.iterate(0)
print("loaded", package.loaded["braid.defer"] ~= nil, package.loaded["braid.log"] ~= nil)
local held = {}
while true do  -- use up the descriptors
  local h = io.open("/dev/null")
  if not h then break end
  held[#held + 1] = h
end
local ok, e = pcall(reactor.getHostByName, "localhost")
print("getHostByName", ok, (tostring(e):gsub("\n.*", ""):gsub("^[^:]*:%d+: ", "")))
reactor.callLater(0, function() error("late", 0) end)
reactor.iterate(0)
print("loaded", package.loaded["braid.defer"] ~= nil, package.loaded["braid.log"] ~= nil)
for _, h in ipairs(held) do h:close() end
]])
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal("loaded\tfalse\tfalse", lines[1])
    assert.equal("getHostByName\tfalse\teventfd: Too many open files", lines[2])
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d %[%-%] Unhandled Error$", lines[3])
    assert.equal("\tLuaError: late", lines[#lines - 1])
    assert.equal("loaded\ttrue\ttrue", lines[#lines])
  end)

  -- the loaders behind them: core.with_spare_fd(f, ...) runs f with the
  -- spare descriptor given back, core.require_spare(name) requires with it
  it("load through core.require_spare and core.with_spare_fd, which return f's results and raise its error", function()
    assert.equal(package.loaded["braid.defer"] or require("braid.defer"), core.require_spare("braid.defer"))
    local a, b, c = core.with_spare_fd(function(x, y) return x + y, "two", nil end, 1, 2)
    assert.same({ 3, "two" }, { a, b, c })
    local ok, e = pcall(core.with_spare_fd, error, "boom", 0)
    assert.is_false(ok)
    assert.equal("boom", e)
    ok, e = pcall(core.require_spare, "braid.no_such_module")
    assert.is_false(ok)
    assert.matches("^module 'braid.no_such_module' not found", e)
    assert.is_nil(package.loaded["braid.no_such_module"])
    assert.is_true(core.spare_fd())  -- held again after f's error
  end)

  it("work when first called once the process is out of descriptors", function()
    -- the reactor loaded braid.fdesc, braid.threads and braid.resolver
    -- (and braid.resolver braid.defer) on first use with require, which
    -- must open the module's file: out of descriptors each raised "module
    -- 'braid.fdesc' not found" instead of doing its work or failing as it
    -- documents
    local proc = require "helpers.proc"
    local out = proc.run_out_of_descriptors([[
local reactor = require "braid.reactor"
reactor.iterate(0)  -- the loop is made before the descriptors run out
local loaded = {}
for _, m in ipairs({ "braid.fdesc", "braid.threads", "braid.resolver", "braid.defer" }) do
  if package.loaded[m] then loaded[#loaded + 1] = m end
end
print("loaded", #loaded)
local held = {}
while true do  -- use up the descriptors
  local h = io.open("/dev/null")
  if not h then break end
  held[#held + 1] = h
end
local d = { doRead = function() end }  -- no fileno: addReader refuses it
local function try(name, ...)
  local ok, e = pcall(reactor[name], ...)
  -- an error's message without where it was raised
  local why = (tostring(e):gsub("\n.*", ""):gsub("^[^:]*:%d+: ", ""))
  print(name, ok, ok and (type(e) == "table" and #e or tostring(e)) or why)
end
try("getReaders")
try("removeReader", d)
try("getWriters")
try("removeAll")
try("suggestThreadPoolSize", 2)
try("getHostByName", "localhost")
try("addReader", d)
for _, h in ipairs(held) do h:close() end
]])
    assert.equal(table.concat({
      "loaded\t0",
      "getReaders\ttrue\t0",
      "removeReader\ttrue\tnil",
      "getWriters\ttrue\t0",
      "removeAll\ttrue\t0",
      "suggestThreadPoolSize\ttrue\tnil",
      -- the lookup's own reason: the thread pool cannot make its eventfd
      "getHostByName\tfalse\teventfd: Too many open files",
      "addReader\tfalse\tTypeError: bad argument #1 to 'addReader' (descriptor's fileno() must "
        .. "return an integer from 0 to 2147483647, got an error)",
    }, "\n") .. "\n", out)
  end)
end)
