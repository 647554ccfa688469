-- spec for lua/braid/threads.lua and runtime/threads.c: deferToThread,
-- callInThread, callFromThread, blockingCallFromThread, the pool, shutdown
local threads = require "braid.threads"
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local testing = require "braid.testing"
local log = require "braid.log"
local proc = require "helpers.proc"
local tmp = require "helpers.tmp"

local async, await = testing.async, defer.await

local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(cls:isinstance(e), "expected " .. cls.__name .. ", got " .. tostring(e))
  return e
end

local function message(cls, f, ...)
  return raises(cls, f, ...).message
end

-- the Failure a Deferred fails with (awaited)
local function failure_of(d)
  local f
  d:addErrback(function(e) f = e end)
  await(d)
  assert.is_true(failure.isFailure(f), "expected the Deferred to fail")
  return f
end

local function contains(haystack, needle)
  assert.is_string(haystack)
  assert.is_truthy(haystack:find(needle, 1, true), ("expected %q in:\n%s"):format(needle, haystack))
end

local function noop() end

local tmpdir, mkfifo = tmp.dir, tmp.fifo

-- A gate in the main state that jobs can wait at: a worker calls
-- blockingCallFromThread(GATE_ENTER) and stays there until open().
local GATE = "braid_threads_spec_gate"
-- Run src as a braid script whose jobs block on a fifo nobody writes;
-- returns its output lines, exit code and the output joined.
local function run_blocked(src)
  local fifo = mkfifo()
  local script = tmp.path()
  local f = assert(io.open(script, "w"))
  f:write(src:format(fifo))
  f:close()
  local lines, code = proc.run({ script })
  os.remove(script)
  os.remove(fifo)
  return lines, code, table.concat(lines, "\n")
end

local function make_gate()
  local g = { waiting = {}, entered = 0 }
  g.arrived = defer.Deferred()
  g.want = math.huge
  function g.enter()
    local d = defer.Deferred()
    g.waiting[#g.waiting + 1] = d
    g.entered = g.entered + 1
    if g.entered == g.want then g.arrived:callback(g.entered) end
    return d
  end
  function g.open(v)
    for _, d in ipairs(g.waiting) do d:callback(v) end
    g.waiting = {}
  end
  package.loaded[GATE] = g
  return g
end
local function GATE_ENTER()  -- runs in the main state: only _ENV as upvalue
  return package.loaded["braid_threads_spec_gate"].enter()
end

describe("threads.deferToThread (checks made at once)", function()
  it("refuses a function with upvalues other than _ENV, naming them", function()
    local a, b = 1, 2
    local msg = message(errors.TypeError, threads.deferToThread, function() return a + b end)
    assert.equal("deferToThread: argument #1 (a function with upvalues 'a', 'b') cannot be "
      .. "copied to a thread; only _ENV may be an upvalue: pass the values as arguments, or "
      .. "name a module function as 'module.function'", msg)
  end)

  it("refuses a C function and suggests its 'module.function' name", function()
    local msg = message(errors.TypeError, threads.deferToThread, os.time)
    contains(msg, "deferToThread: argument #1 (a C function) cannot be copied to a thread")
    contains(msg, "'module.function'")
  end)

  it("refuses an f that is neither a function nor a string", function()
    assert.equal("bad argument #1 to 'deferToThread' (function or 'module.function' string "
      .. "expected, got number)", message(errors.TypeError, threads.deferToThread, 42))
  end)

  it("refuses a string that is not 'module.function'", function()
    for _, s in ipairs({ "print", ".x", "os.", "" }) do
      assert.equal(("bad argument #1 to 'deferToThread' ('module.function' string expected, "
        .. "got '%s')"):format(s), message(errors.ValueError, threads.deferToThread, s))
    end
  end)

  it("refuses a 'module.function' string with a \\0 (the worker saw it cut there)", function()
    -- "string.rep\0x" ran string.rep; "ab\0.c" computed a name length from a NULL "."
    for s, shown in pairs({ ["string.rep\0x"] = "string.rep\\0x", ["ab\0.c"] = "ab\\0.c" }) do
      assert.equal(("bad argument #1 to 'deferToThread' ('module.function' string expected, "
        .. "got '%s')"):format(shown), message(errors.ValueError, threads.deferToThread, s, "x", 2))
      assert.equal(("bad argument #1 to 'callInThread' ('module.function' string expected, "
        .. "got '%s')"):format(shown), message(errors.ValueError, threads.callInThread, s))
    end
    assert.equal(0, threads._stats().outstanding)
  end)

  it("refuses a userdata argument, naming the argument", function()
    assert.equal("deferToThread: argument #2 (a userdata) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, io.stdout))
  end)

  it("refuses coroutine and function arguments", function()
    assert.equal("deferToThread: argument #3 (a coroutine) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, 1, coroutine.create(noop)))
    assert.equal("deferToThread: argument #2 (a function) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, noop))
  end)

  it("names where in a nested table the uncopyable value is", function()
    assert.equal("deferToThread: argument #2 (a userdata at .conn[2]) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, { conn = { 1, io.stderr } }))
    assert.equal('deferToThread: argument #2 (a function at ["a key"]) cannot be copied to a thread',
      message(errors.TypeError, threads.deferToThread, noop, { ["a key"] = noop }))
  end)

  it("refuses cycles", function()
    local t = { inner = {} }
    t.inner.back = t
    assert.equal("deferToThread: argument #2 (a table that contains itself at .inner.back) "
      .. "cannot be copied to a thread", message(errors.TypeError, threads.deferToThread, noop, t))
  end)

  it("copies a table reached twice without a cycle", async(function()
    local shared = { 1 }
    local r = await(threads.deferToThread(function(t) return t.a[1] + t.b[1] end, { a = shared, b = shared }))
    assert.equal(2, r)
  end))

  it("copies a shared table once, as one table, however many paths reach it", async(function()
    -- each level refers twice to the one below: 2^40 paths, 40 tables (the
    -- copy used to follow every path)
    local t = { leaf = true }
    for _ = 1, 40 do t = { a = t, b = t } end
    local r = await(threads.deferToThread(function(x)
      local same, depth = true, 0
      while x.a do
        same = same and rawequal(x.a, x.b)
        x, depth = x.a, depth + 1
      end
      return { same = same, depth = depth, back = { p = x, q = x } }
    end, t))
    assert.same({ true, 40 }, { r.same, r.depth })
    assert.is_true(rawequal(r.back.p, r.back.q))  -- and so is the result
  end))

  it("refuses tables with metatables and table keys", function()
    assert.equal("deferToThread: argument #2 (a table with a metatable) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, setmetatable({}, {})))
    assert.equal("deferToThread: argument #2 (a table key at .k) cannot be copied to a thread",
      message(errors.TypeError, threads.deferToThread, noop, { k = { [{}] = 1 } }))
  end)

  it("refuses tables nested too deeply", function()
    local t = {}
    local cur = t
    for _ = 1, 100 do cur.n = {}; cur = cur.n end
    contains(message(errors.TypeError, threads.deferToThread, noop, t),
      "argument #2 (tables nested too deeply at .n.n.n")
  end)

  it("raises the same errors from callInThread under its own name", function()
    assert.equal("callInThread: argument #2 (a userdata) cannot be copied to a thread",
      message(errors.TypeError, threads.callInThread, noop, io.stdout))
    local up = 1
    contains(message(errors.TypeError, threads.callInThread, function() return up end),
      "callInThread: argument #1 (a function with upvalues 'up')")
  end)

  it("leaves no job behind when it refuses", function()
    pcall(threads.deferToThread, noop, io.stdout)
    assert.equal(0, threads._stats().outstanding)
  end)
end)

describe("threads.deferToThread (in a thread)", function()
  it("fires with f's result, computed in a worker", async(function()
    local r = await(threads.deferToThread(function(a, b) return a * b end, 6, 7))
    assert.equal(42, r)
  end))

  it("lets a worker use braid.defer, on its Lua chain runner", async(function()
    local r = await(threads.deferToThread(function(x)
      local defer = require "braid.defer"
      local out = {}
      local d = defer.Deferred()
      d:addCallback(function(v) return v + 1 end)
      d:addCallback(function() error("in the worker") end)
      d:addErrback(function(f) out.err = tostring(f.value):match("in the worker") return 5 end)
      d:addCallback(function(v) out.v = v end)
      d:callback(x)
      out.impl = defer.implementation()
      return out
    end, 1))
    assert.same({ impl = "Lua", err = "in the worker", v = 5 }, r)
  end))

  it("copies arguments and results: types, nested tables, nils and odd strings", async(function()
    local r = await(threads.deferToThread(function(...)
      local t = table.pack(...)
      return {
        n = t.n, int = math.type(t[1]), float = math.type(t[2]), s = t[3], b = t[4],
        nested = t[6], second = t[6].list[2], big = t[7],
      }
    end, 3, 3.0, "a\0b\255", false, nil, { list = { "x", "y" }, [true] = 1.5, [2.5] = "f" }, math.maxinteger, nil))
    assert.equal(8, r.n)
    assert.equal("integer", r.int)
    assert.equal("float", r.float)
    assert.equal("a\0b\255", r.s)
    assert.is_false(r.b)
    assert.same({ list = { "x", "y" }, [true] = 1.5, [2.5] = "f" }, r.nested)
    assert.equal("y", r.second)
    assert.equal(math.maxinteger, r.big)
  end))

  it("copies a large string and a long list", async(function()
    local big = ("x"):rep(1 << 20)
    local list = {}
    for i = 1, 10000 do list[i] = i end
    local r = await(threads.deferToThread(function(s, l) return { #s, #l, l[10000] } end, big, list))
    assert.same({ 1 << 20, 10000, 10000 }, r)
  end))

  it("copies a few keys whose #t is huge (a border far past the array) at the cost of the keys", function()
    -- #t is 2^40 here (Lua's border search doubles through 8, 16, ...): the
    -- copy took t[1] .. t[#t] as its array and encoded 2^40 nils, hanging
    -- the loop; run in a child so that a hang is killed and fails the spec
    local script = proc.script([[
      local parts = { "return {1, 2, 3, 4, [5] = 5" }
      for k = 3, 40 do parts[#parts + 1] = ("[%d] = %d"):format(1 << k, k) end
      local t = load(table.concat(parts, ", ") .. "}")()
      print("len " .. #t)
      local threads = require "braid.threads"
      local reactor = require "braid.reactor"
      threads.deferToThread(function(x)
        local n = 0
        for _ in pairs(x) do n = n + 1 end
        return { n, x[1], x[5], x[8], x[1 << 40] }
      end, t):addBoth(function(r)
        print(type(r) == "table" and table.concat(r, " ") or tostring(r))
        reactor.stop()
      end)
      reactor.run()
    ]])
    local out, code = proc.run({ script }, { limit = 10 })
    os.remove(script)
    assert.same({ "len " .. (1 << 40), "43 1 5 3 40" }, out)
    assert.equal(0, code)
  end)

  it("copies lists with holes: the values after a nil arrive at their keys", async(function()
    local r = await(threads.deferToThread(function(t) return t end, { 1, nil, 3, nil, nil, 6, x = { nil, "b" } }))
    assert.same({ [1] = 1, [3] = 3, [6] = 6, x = { [2] = "b" } }, r)
  end))

  it("runs a 'module.function' string", async(function()
    assert.equal("ababab", await(threads.deferToThread("string.rep", "ab", 3)))
  end))

  it("gives workers the standard libraries", async(function()
    local r = await(threads.deferToThread(function()
      return { type(io.open), type(os.time), type(string.format), type(table.concat),
        type(math.floor), type(utf8.char), type(coroutine.wrap), type(debug.traceback),
        type(require), type(load) }
    end))
    for i = 1, 10 do assert.equal("function", r[i]) end
  end))

  it("gives workers the caller's package.path, also after it changes", async(function()
    local dir = tmpdir()
    local f = assert(io.open(dir .. "/braid_threads_spec_mod.lua", "w"))
    f:write("return { hello = function(who) return 'hello ' .. who end }\n")
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. package.path
    local ok, r = pcall(function()
      return await(threads.deferToThread("braid_threads_spec_mod.hello", "worker"))
    end)
    package.path = saved
    os.remove(dir .. "/braid_threads_spec_mod.lua")
    os.remove(dir)
    assert.is_true(ok, tostring(r))
    assert.equal("hello worker", r)
  end))

  -- the check of an internal function (threads_paths) spoke for them
  it("refuses a package.path or package.cpath that is no string, naming the function", function()
    local saved = package.cpath
    package.cpath = nil
    local ok1, e1 = pcall(threads.deferToThread, function() end)
    local ok2, e2 = pcall(threads.callInThread, function() end)
    package.cpath = saved
    assert.is_false(ok1)
    assert.is_false(ok2)
    assert.is_true(errors.TypeError:isinstance(e1))
    assert.equal("TypeError: deferToThread: 'package.cpath' must be a string (it is a nil)", tostring(e1))
    assert.equal("TypeError: callInThread: 'package.cpath' must be a string (it is a nil)", tostring(e2))
  end)

  it("errbacks a worker's error as a LuaError with its message and the worker's traceback", async(function()
    local f = failure_of(threads.deferToThread(function(x)
      if x then error("boom " .. x) end
    end, "now"))
    assert.equal(errors.LuaError, f.type)
    assert.matches("^spec/threads_spec%.lua:%d+: boom now$", f.value)
    assert.equal(f.value, f:getErrorMessage())
    contains(f.traceback, "stack traceback (worker thread):")
    contains(f.traceback, "[C]: in function 'error'")
    contains(f.traceback, "spec/threads_spec.lua:")
    contains(f:getTraceback(), "LuaError: " .. f.value)
  end))

  it("turns an error object raised in the worker into its tostring", async(function()
    local f = failure_of(threads.deferToThread(function()
      error(setmetatable({}, { __tostring = function() return "CustomError: it broke" end }))
    end))
    assert.equal("CustomError: it broke", f.value)
  end))

  -- the raising __tostring ran unprotected in the worker's message
  -- handler: its own error replaced the job's, and the traceback came twice
  it("errbacks with a placeholder when the error's __tostring raises, keeping its traceback", async(function()
    local f = failure_of(threads.deferToThread(function()
      local function broken() error(setmetatable({}, { __tostring = function() error("tostring failed") end })) end
      broken()
    end))
    assert.equal("(an error value of type table that cannot be shown)", f.value)
    local tb = f:getTraceback()
    local _, count = tb:gsub("in local 'broken'", "")
    assert.equal(1, count, tb)
    assert.is_nil(tb:find("tostring failed", 1, true))
  end))

  it("errbacks a 'module.function' that does not exist", async(function()
    local f = failure_of(threads.deferToThread("braid_no_such_module.f"))
    contains(f.value, "module 'braid_no_such_module' not found")
    f = failure_of(threads.deferToThread("string.nope"))
    assert.equal("deferToThread: 'string.nope' is not a function (it is nil)", f.value)
  end))

  it("errbacks naming a module that is not a table", async(function()
    local dir = tmp.dir()
    local f = assert(io.open(dir .. "/braid_nottable.lua", "w"))
    f:write("return 42\n")
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. saved
    local ok, fail = pcall(failure_of, threads.deferToThread("braid_nottable.f"))
    package.path = saved
    os.execute("rm -rf " .. dir)
    assert(ok, fail)
    assert.equal("deferToThread: module 'braid_nottable' is not a table", fail.value)
  end))

  it("errbacks with a TypeError when the result cannot be copied", async(function()
    local f = failure_of(threads.deferToThread(function() return { file = io.stdout } end))
    assert.equal(errors.TypeError, f.type)
    assert.equal("deferToThread: the result (a userdata at .file) cannot be copied from the thread",
      f.value.message)
    f = failure_of(threads.deferToThread(function() return coroutine.create(print) end))
    assert.equal("deferToThread: the result (a coroutine) cannot be copied from the thread",
      f.value.message)
  end))

  it("keeps running after errors: the worker's state stays usable", async(function()
    for i = 1, 3 do
      failure_of(threads.deferToThread(function() error("again") end))
      assert.equal(i, await(threads.deferToThread(function(v) return v end, i)))
    end
  end))

  it("makes every reactor function raise inside a worker", async(function()
    local f = failure_of(threads.deferToThread(function()
      return require("braid.reactor").callLater(0, print)
    end))
    contains(f.value, "reactor.callLater cannot be called in a worker thread")
    f = failure_of(threads.deferToThread(function()
      return require("braid.threads").deferToThread("os.time")
    end))
    contains(f.value, "threads.deferToThread cannot be called in a worker thread")
    -- it was absent there ("attempt to call a nil value")
    f = failure_of(threads.deferToThread(function()
      return require("braid.threads").setShutdownGracePeriod(1)
    end))
    contains(f.value, "threads.setShutdownGracePeriod cannot be called in a worker thread")
  end))

  -- workers used to block every signal, and programs a job started
  -- inherited that: a shell waiting for its background child never saw
  -- SIGCHLD and hung for ever, and SIGTERM could not stop it
  it("runs workers, and the programs they start, with the loop thread's signal mask", async(function()
    local function sigblk(s) return s:match("SigBlk:%s*(%x+)") end
    local f = io.open("/proc/thread-self/status")
    local loop_mask = sigblk(f:read("a"))
    f:close()
    local got = await(threads.deferToThread(function()
      local t = io.open("/proc/thread-self/status")
      local own = t:read("a")
      t:close()
      local p = io.popen("grep SigBlk /proc/self/status; sleep 0.05 & wait; echo waited")
      local child = p:read("a")
      p:close()
      return { own = own, child = child }
    end))
    assert.equal(loop_mask, sigblk(got.own))
    assert.equal(loop_mask, sigblk(got.child))
    assert.matches("waited\n$", got.child)
  end))

  it("reports isInIOThread false in a worker and true on the loop", async(function()
    assert.is_true(threads.isInIOThread())
    assert.is_false(await(threads.deferToThread(function()
      return require("braid.threads").isInIOThread()
    end)))
  end))

  it("swallows the result of a cancelled call", async(function()
    local g = make_gate()
    g.want = 1
    local d = threads.deferToThread(function()
      return require("braid.threads").blockingCallFromThread("braid_threads_spec_gate.enter")
    end)
    await(g.arrived)
    d:cancel()
    assert.equal(defer.CancelledError, failure_of(d).type)
    g.open("too late")
    await(threads._whenIdle())
  end))
end)

describe("the pool", function()
  after_each(function() threads.suggestThreadPoolSize(10) end)

  -- Two threads, four jobs that each wait at the gate: returns the gate
  -- (once both running jobs arrived) and the jobs' Deferreds (results 1..4).
  local function two_running_two_queued()
    threads.suggestThreadPoolSize(2)
    local g = make_gate()
    g.want = 2
    local ds = {}
    for i = 1, 4 do
      ds[i] = threads.deferToThread(function(v)
        require("braid.threads").blockingCallFromThread("braid_threads_spec_gate.enter")
        return v
      end, i)
    end
    await(g.arrived)
    return g, ds
  end

  it("delivers results in submission order with one thread", async(function()
    threads.suggestThreadPoolSize(1)
    local order, ds = {}, {}
    for i = 1, 50 do
      ds[i] = threads.deferToThread(function(v) return v end, i)
      ds[i]:addCallback(function(v) order[#order + 1] = v end)
    end
    await(defer.gatherResults(ds))
    local want = {}
    for i = 1, 50 do want[i] = i end
    assert.same(want, order)
  end))

  it("grows by one thread per queued job when the size is raised, not to the size", async(function()
    local g, ds = two_running_two_queued()
    assert.equal(2, threads._stats().queued)
    g.want = 4
    g.arrived = defer.Deferred()
    threads.suggestThreadPoolSize(64)
    assert.equal(4, threads._stats().threads)
    await(g.arrived)
    g.open()
    g.open()
    assert.same({ 1, 2, 3, 4, n = 4 }, await(defer.gatherResults(ds)))
    assert.equal(4, threads._stats().threads)
  end))

  it("runs at most suggestThreadPoolSize jobs at once and queues the rest", async(function()
    local g, ds = two_running_two_queued()
    local s = threads._stats()
    assert.equal(2, s.threads)
    assert.equal(2, s.running)
    assert.equal(2, s.queued)
    assert.equal(4, s.outstanding)
    g.want = 4
    g.arrived = defer.Deferred()
    g.open()
    await(g.arrived)
    g.open()
    assert.same({ 1, 2, 3, 4, n = 4 }, await(defer.gatherResults(ds)))
    assert.equal(0, threads._stats().outstanding)
  end))

  it("starts threads lazily and no more than the jobs need", async(function()
    threads.suggestThreadPoolSize(3)
    local s0 = threads._stats()
    assert.is_true(s0.threads <= 3)
    for _ = 1, 5 do await(threads.deferToThread(function() return 1 end)) end
    local s = threads._stats()
    assert.is_true(s.threads >= 1 and s.threads <= 3)
    assert.equal(3, s.max)
  end))

  it("shrinks to a smaller suggested size", async(function()
    threads.suggestThreadPoolSize(4)
    local g = make_gate()
    g.want = 4
    local ds = {}
    for i = 1, 4 do
      ds[i] = threads.deferToThread(function()
        return require("braid.threads").blockingCallFromThread("braid_threads_spec_gate.enter")
      end, i)
    end
    await(g.arrived)
    assert.equal(4, threads._stats().threads)
    threads.suggestThreadPoolSize(1)
    assert.equal(1, threads._stats().threads)
    g.open("done")
    assert.same({ "done", "done", "done", "done", n = 4 }, await(defer.gatherResults(ds)))
    assert.equal("x", await(threads.deferToThread(function() return "x" end)))
  end))

  it("runs a job queued as the pool shrinks, whichever worker leaves", async(function()
    -- A worker that finished a job polls for the next one for ~100 us;
    -- shrinking the pool then could pick it to leave, and a job submitted
    -- before it noticed was counted as its (no idle worker woken, no thread
    -- started): it sat in the queue beside an idle worker. The window is
    -- narrow, so this goes round many times, with several delays between
    -- the shrink and the submit; a job still queued after 2 s fails it.
    local busy = function(s) local t = os.clock() + s while os.clock() < t do end return s end
    local delays = { 0, 20e-6, 40e-6, 60e-6, 80e-6 }
    local done, stuck = defer.Deferred(), nil
    local i = 0
    local function round()
      i = i + 1
      if i > 400 then return done:callback(i - 1) end
      threads.suggestThreadPoolSize(2)
      threads.deferToThread(busy, 0.001)
      threads.deferToThread(busy, 0.002):addCallback(function()
        -- the worker that ran this job is polling for the next one now
        threads.suggestThreadPoolSize(1)
        busy(delays[i % #delays + 1])
        local timer = reactor.callLater(2, function()
          local st = threads._stats()
          stuck = ("round %d: queued %d, idle %d"):format(i, st.queued, st.idle)
          done:callback(i)
        end)
        threads.deferToThread(function() return 3 end):addCallback(function()
          if stuck then return end
          timer:cancel()
          reactor.callLater(0, round)
        end)
      end)
    end
    round()
    local rounds = await(done)
    assert.is_nil(stuck)
    assert.equal(400, rounds)
    threads.suggestThreadPoolSize(10)
  end))

  it("handles many jobs in flight at once", async(function()
    local ds = {}
    for i = 1, 2000 do ds[i] = threads.deferToThread(function(v) return v * 2 end, i) end
    local r = await(defer.gatherResults(ds))
    local sum = 0
    for i = 1, 2000 do sum = sum + r[i] end
    assert.equal(2000 * 2001, sum)
  end))

  it("validates suggestThreadPoolSize's argument", function()
    raises(errors.TypeError, threads.suggestThreadPoolSize, "3")
    raises(errors.ValueError, threads.suggestThreadPoolSize, 0)
    raises(errors.ValueError, threads.suggestThreadPoolSize, 1.5)
    raises(errors.ValueError, threads.suggestThreadPoolSize, 2000)
    threads.suggestThreadPoolSize(4.0)
    assert.equal(4, threads._stats().max)
  end)

  it("is what reactor.suggestThreadPoolSize and reactor.callInThread use", async(function()
    reactor.suggestThreadPoolSize(5)
    assert.equal(5, threads._stats().max)
    local g = make_gate()
    g.want = 1
    reactor.callInThread(function(v)
      require("braid.threads").callFromThread("braid_threads_spec_gate.enter", v)
    end, "via reactor")
    assert.equal(1, await(g.arrived))
  end))
end)

describe("threads.callInThread", function()
  it("runs f in a worker and returns nothing", async(function()
    local g = make_gate()
    g.want = 1
    local got
    g.enter = function(v) got = v; g.arrived:callback(1) end
    assert.equal(0, select("#", threads.callInThread(function(v)
      require("braid.threads").callFromThread("braid_threads_spec_gate.enter", v * 2)
    end, 21)))
    await(g.arrived)
    assert.equal(42, got)
  end))

  it("logs a worker's error with its traceback and keeps running", async(function()
    local why
    local function observe(ev) if ev.isError then why = ev.why end end
    log.addObserver(observe)
    threads.callInThread(function() error("lost in a thread") end)
    await(threads._whenIdle())
    log.removeObserver(observe)
    assert.matches("^Unhandled error in callInThread%(function <spec/threads_spec%.lua:%d+>%):$", why)
    local errs = testing.flushLoggedErrors()
    assert.equal(1, #errs)
    assert.equal(errors.LuaError, errs[1].type)
    assert.matches("lost in a thread$", errs[1].value)
    contains(errs[1].traceback, "stack traceback (worker thread):")
    assert.equal(7, await(threads.deferToThread(function() return 7 end)))
  end))

  it("does not copy its function's result", async(function()
    threads.callInThread(function() return io.stdout end)
    await(threads._whenIdle())
    assert.same({}, testing.flushLoggedErrors())
  end))
end)

describe("threads.callFromThread", function()
  it("runs f on a later loop turn when called on the loop", async(function()
    local d = defer.Deferred()
    local ran = false
    threads.callFromThread(function(a, b) ran = true; d:callback(a + b) end, 1, 2)
    assert.is_false(ran)
    assert.equal(3, await(d))
  end))

  it("raises TypeError for a non-callable", function()
    raises(errors.TypeError, threads.callFromThread, 42)
  end)

  it("runs f in the main state from a worker, before the job's Deferred fires", async(function()
    local order = {}
    local g = make_gate()
    g.enter = function(a, t) order[#order + 1] = a .. ":" .. t.k end
    local d = threads.deferToThread(function()
      local t = require("braid.threads")
      t.callFromThread(function(x, tbl)
        package.loaded["braid_threads_spec_gate"].enter(x, tbl)
      end, "first", { k = "v" })
      t.callFromThread("braid_threads_spec_gate.enter", "second", { k = "w" })
      return "job"
    end)
    d:addCallback(function(r) order[#order + 1] = r end)
    await(d)
    assert.same({ "first:v", "second:w", "job" }, order)
  end))

  it("applies the copy rules in the worker", async(function()
    local f = failure_of(threads.deferToThread(function()
      require("braid.threads").callFromThread(print, io.stdout)
    end))
    -- raised in the worker as Lua errors: "file:line: message"
    local pos = "^spec/threads_spec%.lua:%d+: "
    assert.matches(pos .. "callFromThread: argument #1 %(a C function%) cannot be copied to "
      .. "the main thread; pass its name as a 'module%.function' string$", f.value)
    f = failure_of(threads.deferToThread(function()
      require("braid.threads").callFromThread("os.time", io.stdout)
    end))
    assert.matches(pos .. "callFromThread: argument #2 %(a userdata%) cannot be copied to the "
      .. "main thread$", f.value)
    f = failure_of(threads.deferToThread(function()
      local up = 1
      require("braid.threads").callFromThread(function() return up end)
    end))
    assert.matches(pos .. "callFromThread: argument #1 %(a function with upvalue 'up'%) cannot "
      .. "be copied to the main thread; only _ENV may be an upvalue$", f.value)
    f = failure_of(threads.deferToThread(function()
      require("braid.threads").callFromThread("ab\0.c")
    end))
    assert.matches(pos .. "callFromThread: argument #1 must be a function or a 'module%.function' "
      .. "string, got a string with a \\0$", f.value)
  end))

  it("logs an error raised by f in the main state", async(function()
    await(threads.deferToThread(function()
      require("braid.threads").callFromThread(function() error("main side") end)
    end))
    local errs = testing.flushLoggedErrors()
    assert.equal(1, #errs)
    assert.matches("main side$", errs[1].value)
  end))
end)

describe("a worker's os.exit", function()
  it("raises in the worker and fails that job only", async(function()
    local f = failure_of(threads.deferToThread(function() os.exit(7) end))
    contains(tostring(f.value), "os.exit cannot be called in a worker thread")
    assert.equal(2, await(threads.deferToThread(function() return 1 + 1 end)))
  end))
end)

describe("threads.blockingCallFromThread", function()
  it("answers with an error that cannot be shown (its __tostring raises)", async(function()
    package.loaded[GATE] = {
      bad = function()
        return defer.fail(setmetatable({}, { __tostring = function() error("no text") end }))
      end,
    }
    local r = await(threads.deferToThread(function()
      return { pcall(require("braid.threads").blockingCallFromThread, "braid_threads_spec_gate.bad") }
    end))
    assert.is_false(r[1])
    contains(r[2], "an error value of type table that cannot be shown")
  end))

  it("names a 'module.function' that is not a function in the main state", async(function()
    package.loaded[GATE] = { notfn = 5 }
    local r = await(threads.deferToThread(function()
      return { pcall(require("braid.threads").blockingCallFromThread, "braid_threads_spec_gate.notfn") }
    end))
    assert.is_false(r[1])
    contains(r[2], "'braid_threads_spec_gate.notfn' is not a function (it is number)")
  end))

  it("returns f's result, computed in the main state", async(function()
    package.loaded[GATE] = { base = 100 }
    local r = await(threads.deferToThread(function(x)
      return require("braid.threads").blockingCallFromThread(function(v)
        return { sum = package.loaded["braid_threads_spec_gate"].base + v, main = true }
      end, x)
    end, 5))
    assert.same({ sum = 105, main = true }, r)
  end))

  it("waits for the result of a Deferred that f returns", async(function()
    local g = make_gate()
    g.want = 1
    local d = threads.deferToThread(function()
      return "got " .. require("braid.threads").blockingCallFromThread("braid_threads_spec_gate.enter")
    end)
    await(g.arrived)
    assert.is_false(d.called)
    g.open("late")
    assert.equal("got late", await(d))
  end))

  it("raises in the worker the Failure that f returns, as Twisted's maybeDeferred has it", async(function()
    package.loaded[GATE] = {
      failed = function() return failure.Failure(errors.ValueError("returned")) end,
    }
    local r = await(threads.deferToThread(function()
      return { pcall(require("braid.threads").blockingCallFromThread, "braid_threads_spec_gate.failed") }
    end))
    assert.same({ false, "ValueError: returned" }, r)
  end))

  it("raises f's error in the worker", async(function()
    local f = failure_of(threads.deferToThread(function()
      return require("braid.threads").blockingCallFromThread(function()
        error(require("braid.error").ValueError("bad in main"))
      end)
    end))
    contains(f.value, "ValueError: bad in main")
    local g = make_gate()
    g.want = 1
    local d = threads.deferToThread(function()
      local ok, e = pcall(require("braid.threads").blockingCallFromThread, "braid_threads_spec_gate.enter")
      return { ok = ok, e = e }
    end)
    await(g.arrived)
    g.waiting[1]:errback(errors.ValueError("failed later"))
    g.waiting = {}
    assert.same({ ok = false, e = "ValueError: failed later" }, await(d))
  end))

  it("raises in the worker when f's result cannot be copied", async(function()
    local f = failure_of(threads.deferToThread(function()
      return require("braid.threads").blockingCallFromThread(function() return io.stdout end)
    end))
    assert.equal("blockingCallFromThread: the result (a userdata) cannot be copied to the thread",
      f.value)
  end))

  it("raises ValueError on the loop's own thread", function()
    raises(errors.ValueError, threads.blockingCallFromThread, print)
  end)
end)

describe("shutdown", function()
  local function run_with_guard()
    local guard = reactor.callLater(10, function()
      reactor.crash()
      error("reactor ran too long")
    end)
    reactor.run({ installSignalHandlers = false })
    if guard:active() then guard:cancel() end
  end

  it("stop() with no job outstanding does not wait for the grace period", function()
    local core = require "braid.core"
    local t0 = core.monotonic()
    reactor.callWhenRunning(reactor.stop)
    run_with_guard()
    assert.is_true(core.monotonic() - t0 < 2, "waited for the 5 s grace period")
    assert.same({}, reactor.getDelayedCalls())
  end)

  it("stop() waits for every outstanding job, then leaves no grace timer behind", function()
    local got = {}
    local function job(x) return x end
    reactor.callWhenRunning(function()
      for i = 1, 3 do
        threads.deferToThread(job, i):addCallback(function(r) got[#got + 1] = r end)
      end
      reactor.stop()
    end)
    run_with_guard()
    table.sort(got)
    assert.same({ 1, 2, 3 }, got)
    assert.same({}, reactor.getDelayedCalls())
  end)

  it("stop() lets a running job finish and fire before the after phase", function()
    local fifo = mkfifo()
    local got
    threads.deferToThread(function(path)
      local f = assert(io.open(path, "r"))
      local line = f:read("l")
      f:close()
      return line
    end, fifo):addCallback(function(r) got = r end)
    local order = {}
    local t1 = reactor.addSystemEventTrigger("before", "shutdown", function()
      order[#order + 1] = "stopping:" .. tostring(got)
      local f = assert(io.open(fifo, "w"))  -- the job is reading: release it
      f:write("finished\n")
      f:close()
    end)
    local t2 = reactor.addSystemEventTrigger("after", "shutdown", function()
      order[#order + 1] = "after:" .. tostring(got)
    end)
    reactor.callWhenRunning(reactor.stop)
    run_with_guard()
    reactor.removeSystemEventTrigger(t1)
    reactor.removeSystemEventTrigger(t2)
    os.remove(fifo)
    assert.same({ "stopping:nil", "after:finished" }, order)
    local s = threads._stats()
    assert.equal(0, s.threads)
    assert.equal(0, s.outstanding)
  end)

  it("makes a blockingCallFromThread still waiting after the grace period raise", function()
    local g = make_gate()
    g.want = 1
    local got
    threads.deferToThread(function()
      local ok, e = pcall(require("braid.threads").blockingCallFromThread, "braid_threads_spec_gate.enter")
      return { ok = ok, e = e }
    end):addCallback(function(r) got = r end)
    g.arrived:addCallback(function() reactor.stop() end)
    threads.setShutdownGracePeriod(0.1)
    local ok, err = pcall(run_with_guard)
    threads.setShutdownGracePeriod(5)
    assert.is_true(ok, tostring(err))
    assert.is_false(got.ok)
    assert.matches("blockingCallFromThread: the reactor stopped before the call returned$", got.e)
    assert.equal(0, threads._stats().outstanding)
    assert.equal(1, #g.waiting)  -- the gate's Deferred was never fired
    g.waiting = {}
  end)

  it("starts the pool again after a shutdown", async(function()
    assert.equal("again", await(threads.deferToThread(function() return "again" end)))
  end))

  it("logs a job that never returns after the grace period and the process exits", function()
    local lines, code, out = run_blocked([[
local threads = require "braid.threads"
local reactor = require "braid.reactor"
threads.setShutdownGracePeriod(0.2)
threads.callInThread(function(path)
  require("braid.threads").callFromThread("braid.reactor.stop")
  io.open(path, "r")  -- nobody ever opens the fifo for writing
end, %q)
reactor.run()
print("exited run")
]])
    assert.equal(0, code, out)
    assert.matches("Thread pool shutdown: abandoned callInThread%(function <[^>]+:4>%), still "
      .. "running after 0%.%d s", out)
    assert.equal("exited run", lines[#lines])
  end)

  -- the Deferreds of dropped (and abandoned) jobs stayed in the table of
  -- jobs waiting for a result for good: a leak at each shutdown, and
  -- testing's cleanup counted callInThread jobs wrong
  it("drops queued jobs at shutdown when the grace period runs out, and forgets them", function()
    local lines, code, out = run_blocked([[
local threads = require "braid.threads"
local reactor = require "braid.reactor"
threads.setShutdownGracePeriod(0.1)
threads.suggestThreadPoolSize(1)
threads.callInThread(function(path)
  require("braid.threads").callFromThread("braid.reactor.stop")
  io.open(path, "r")
end, %q)
threads.callInThread(function() print("never runs") end)
threads.deferToThread("string.len", "never runs either")
reactor.run()
print("exited run")
local ds, calls = threads._testingJobs()
print("jobs left " .. #ds .. ", calls " .. calls)
]])
    assert.equal(0, code, out)
    contains(out, "Thread pool shutdown: dropped 2 queued job(s) that never started")
    assert.is_nil(out:find("never runs", 1, true))
    assert.same({ "exited run", "jobs left 0, calls 0" }, { lines[#lines - 1], lines[#lines] })
  end)
end)
