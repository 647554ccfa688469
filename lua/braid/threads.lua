--- braid.threads: blocking work on a pool of threads (twisted.internet.threads).
-- test-case-name: spec/threads_spec.lua
--
-- Lua states are not shared between threads: a job runs in a worker state
-- of the pool (runtime/threads.c), which has the standard libraries and the
-- caller's package.path/cpath. The function crosses as its bytecode (so its
-- only upvalue may be _ENV) or as a "module.function" name; arguments and
-- results are copied (nil, booleans, numbers, strings, tables of those).
-- Results come back through the loop. This module holds the policy: the
-- checks, firing Deferreds, logging, and the shutdown triggers.
--
-- Inside a worker, require("braid.threads") gives the worker's own module
-- (callFromThread, blockingCallFromThread, isInIOThread), made in C.
local core = require "braid.core"
local class = require "braid.class"
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local reactor = require "braid.reactor"

local M = {}

local Deferred, isDeferred = defer.Deferred, defer.isDeferred
local Failure, isFailure, msgh = failure.Failure, failure.isFailure, failure.msgh
local submit, reply, outstanding = core.threads_submit, core.threads_reply, core.threads_outstanding
local type, error, tostring, ipairs, xpcall, load, require = type, error, tostring, ipairs,
  xpcall, load, require
local getinfo, getupvalue, dump = debug.getinfo, debug.getupvalue, string.dump
local package, math_type = package, math.type

local DEFAULT_GRACE = 5

-------------------------------------------------------------------------------
-- what crosses to a worker: the function

local blobs = setmetatable({}, { __mode = "k" })    -- function -> blob
local by_code = setmetatable({}, { __mode = "v" })  -- bytecode -> blob (same code, one blob)

local function describe(f)
  local info = getinfo(f, "S")
  return ("function <%s:%d>"):format(info.short_src, info.linedefined)
end

-- The blob of f, or the checked "module.function" string. Raises at the
-- caller of `fname` (level 3).
local function prepare(fname, f)
  local tf = type(f)
  if tf == "string" then
    -- no "\0": the name crosses as a C string (it would be cut there)
    if not f:find("^[^.].*%.[^.]+$") or f:find("\0", 1, true) then
      error(errors.ValueError(("bad argument #1 to '%s' ('module.function' string expected, "
        .. "got '%s')"):format(fname, (f:gsub("%z", "\\0")))), 3)
    end
    return f
  end
  if tf ~= "function" then
    error(errors.TypeError(("bad argument #1 to '%s' (function or 'module.function' string "
      .. "expected, got %s)"):format(fname, class.nameof(f))), 3)
  end
  local info = getinfo(f, "Su")
  if info.what == "C" then
    error(errors.TypeError(("%s: argument #1 (a C function) cannot be copied to a thread; "
      .. "pass its name as a 'module.function' string, such as \"os.time\""):format(fname)), 3)
  end
  local bad
  for i = 1, info.nups do
    local name = getupvalue(f, i)
    if name ~= "_ENV" then bad = (bad and bad .. ", '" or "'") .. tostring(name) .. "'" end
  end
  if bad then
    error(errors.TypeError(("%s: argument #1 (a function with upvalues %s) cannot be copied "
      .. "to a thread; only _ENV may be an upvalue: pass the values as arguments, or "
      .. "name a module function as 'module.function'"):format(fname, bad)), 3)
  end
  local code = dump(f)
  local b = by_code[code]
  if not b then
    b = core.threads_blob(code, describe(f))
    by_code[code] = b
  end
  blobs[f] = b
  return b
end

-- Workers take package.path/cpath from their next job on when they change.
local last_path, last_cpath
-- package[name] must be a string, as require says of them
local function check_path(fname, name)
  local v = package[name]
  if type(v) ~= "string" then
    error(errors.TypeError(("%s: 'package.%s' must be a string (it is a %s)")
      :format(fname, name, type(v))), 4)
  end
  return v
end
local function sync_paths(fname)
  local p, c = check_path(fname, "path"), check_path(fname, "cpath")
  core.threads_paths(p, c)
  last_path, last_cpath = p, c
end

-------------------------------------------------------------------------------
-- results, on the loop

local logger
local function log_error(fmt, fields)
  -- braid.log: loaded when first needed, out of descriptors too
  if not logger then logger = core.require_spare("braid.log").Logger("braid.threads") end
  logger:error(fmt, fields)
end

local idle_waiters = {}  -- functions called once no job is outstanding

local function worker_failure(ok, msg, tb)
  if ok == false then
    tb = tb and tb:gsub("^stack traceback:", "stack traceback (worker thread):", 1) or ""
    return Failure(msg or "unknown error in a worker thread", tb)
  end
  return Failure(errors.TypeError(msg), "")
end

local jobs = {}  -- deferToThread's Deferreds whose results are not delivered yet

-- C calls this for every job: target is the Deferred (nil for callInThread);
-- ok is true (a = the result), false (a = message, b = traceback) or "copy"
-- (a = message: the result could not be copied); desc names the function.
local function on_result(d, ok, a, b, desc)
  if d ~= nil then
    jobs[d] = nil
    if ok == true then
      d:callback(a)
    else
      d:errback(worker_failure(ok, a, b))
    end
  elseif ok ~= true then
    core.require_spare("braid.log").err(worker_failure(ok, a, b),
      "Unhandled error in callInThread(" .. tostring(desc) .. "):")
  end
  if idle_waiters[1] and outstanding() == 0 then
    local list = idle_waiters
    idle_waiters = {}
    for i = 1, #list do list[i]() end
  end
end

-- functions sent by workers (callFromThread / blockingCallFromThread)
local loaded, nloaded = {}, 0  -- bytecode -> function, emptied past 128

local function main_fn(spec, isname)
  if isname then
    local mod, name = spec:match("^(.*)%.([^.]+)$")
    local ok, m = pcall(require, mod)
    if not ok then error(("'%s': %s"):format(spec, tostring(m)), 0) end
    local f = type(m) == "table" and m[name] or nil
    local ft = type(f)
    if ft ~= "function" and not (ft == "table" and getmetatable(f) and getmetatable(f).__call) then
      error(("'%s' is not a function (it is %s)"):format(spec, class.nameof(f)), 0)
    end
    return f
  end
  local f = loaded[spec]
  if not f then
    local err
    f, err = load(spec, "=(thread)", "b")
    if not f then error(err, 0) end
    if nloaded >= 128 then loaded, nloaded = {}, 0 end
    loaded[spec] = f
    nloaded = nloaded + 1
  end
  return f
end

local function call_spec(spec, isname, ...)
  return main_fn(spec, isname)(...)
end

-- the text of an error value for the waiting worker: tostring may raise
-- (a __tostring that fails), and the worker must get an answer all the same
local function error_text(v)
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return ("(an error value of type %s that cannot be shown)"):format(type(v))
end

local function answer(token)
  return function(res)
    if isFailure(res) then
      reply(token, false, error_text(res.value))
    else
      reply(token, true, res)
    end
    return nil  -- the failure went to the thread
  end
end

-- token: false for callFromThread (errors are logged by the loop), else
-- the waiting worker's, which gets the result or the error's text.
local function on_call(token, spec, isname, ...)
  if not token then return call_spec(spec, isname, ...) end
  local ok, r = xpcall(call_spec, msgh, spec, isname, ...)
  if not ok or isFailure(r) then  -- a Failure returned is a failure, as maybeDeferred has it
    reply(token, false, error_text(r.value))
  elseif isDeferred(r) then
    r:addBoth(answer(token))
  else
    reply(token, true, r)
  end
end

core.threads_handlers(on_result, on_call)

-------------------------------------------------------------------------------
-- the API

--- Run f(...) in a thread of the pool; returns a Deferred of its result.
-- `f` is a function whose only upvalue is _ENV, or a "module.function"
-- string. Arguments and the result are copied; anything else raises now.
-- An error in the thread errbacks with a LuaError Failure whose value is
-- the error's text and whose traceback is the worker's.
-- @param f function or "module.function"
-- @return Deferred
function M.deferToThread(f, ...)
  local fn = blobs[f] or prepare("deferToThread", f)
  if package.path ~= last_path or package.cpath ~= last_cpath then sync_paths("deferToThread") end
  local d = Deferred()
  local err = submit(d, fn, ...)
  if err then error(errors.TypeError(err), 2) end
  jobs[d] = true
  return d
end

--- Run f(...) in a thread of the pool; the result is discarded and an
-- error is logged (with the worker's traceback).
-- @param f function or "module.function"
function M.callInThread(f, ...)
  local fn = blobs[f] or prepare("callInThread", f)
  if package.path ~= last_path or package.cpath ~= last_cpath then sync_paths("callInThread") end
  local err = submit(nil, fn, ...)
  if err then error(errors.TypeError(err), 2) end
end

--- Call f(...) on the loop, from any thread. In the main state this is
-- reactor.callFromThread (the loop's next turn, before its timed calls);
-- in a worker, see the worker's module.
M.callFromThread = reactor.callFromThread

--- In a worker: run f(...) in the main state and wait for its result (a
-- Deferred's result when it returns one). On the loop's own thread it
-- would wait for itself, so it raises.
function M.blockingCallFromThread()
  error(errors.ValueError("blockingCallFromThread cannot be called in the reactor's thread "
    .. "(it would wait for itself); use it in a function run by deferToThread or "
    .. "callInThread"), 2)
end

--- True in the reactor's thread (false in a worker's).
function M.isInIOThread()
  return true
end

--- Set the most threads the pool runs (default 10; they start as needed).
-- @param n an integer >= 1
function M.suggestThreadPoolSize(n)
  if type(n) ~= "number" then
    errors.argerror("suggestThreadPoolSize", 1, "number expected, got " .. class.nameof(n))
  end
  if math_type(n) ~= "integer" then
    if n ~= n or n % 1 ~= 0 then
      error(errors.ValueError(("bad argument #1 to 'suggestThreadPoolSize' (whole number "
        .. "expected, got %s)"):format(tostring(n))), 2)
    end
    n = math.tointeger(n) or n
  end
  if math_type(n) ~= "integer" or n < 1 or n > 1024 then
    error(errors.ValueError(("bad argument #1 to 'suggestThreadPoolSize' (size must be from "
      .. "1 to 1024, got %s)"):format(tostring(n))), 2)
  end
  core.threads_size(n)
end

local grace = DEFAULT_GRACE

--- How long shutdown waits for running jobs before abandoning them
-- (braid's own; default 5 seconds).
-- @param seconds a number >= 0
function M.setShutdownGracePeriod(seconds)
  errors.checkseconds("setShutdownGracePeriod", 1, seconds)
  grace = seconds
  core.threads_grace(seconds)
end

--- Internal: the pool's state (threads, idle, queued, running, max,
-- outstanding), for specs and the console.
function M._stats()
  return core.threads_stats()
end

--- Internal: a Deferred that fires once no job is outstanding.
function M._whenIdle()
  local d = Deferred()
  if outstanding() == 0 then
    d:callback(nil)
  else
    idle_waiters[#idle_waiters + 1] = function() d:callback(nil) end
  end
  return d
end

-------------------------------------------------------------------------------
-- shutdown (Twisted stops its pool 'during shutdown'; braid first lets the
-- loop run while jobs finish, so their results and blockingCallFromThread
-- calls are still served)

local deadline  -- when running jobs get abandoned, set by the before phase

local function before_shutdown()
  deadline = core.monotonic() + grace
  if outstanding() == 0 then return nil end
  local d = Deferred()
  local timer
  local function done()
    if d.called then return end
    if timer and timer:active() then timer:cancel() end
    d:callback(nil)
  end
  timer = reactor.callLater(grace, done)
  idle_waiters[#idle_waiters + 1] = done
  return d
end

local function during_shutdown()
  local left = deadline and deadline - core.monotonic() or grace
  deadline = nil
  -- at least a moment: stopping wakes jobs blocked in blockingCallFromThread
  -- (their call raises), and they may well finish then
  local abandoned, dropped = core.threads_stop(left > 0.1 and left or 0.1)
  core.threads_poll()  -- deliver what finished meanwhile
  -- the rest were abandoned or dropped: their Deferreds never fire (as a
  -- stopped Twisted pool's), and nothing waits for them any more
  for d in pairs(jobs) do jobs[d] = nil end
  for _, a in ipairs(abandoned) do
    log_error("Thread pool shutdown: abandoned {desc}, still running after {seconds} s",
      { desc = a.desc, seconds = ("%.1f"):format(a.seconds) })
  end
  if dropped > 0 then
    log_error("Thread pool shutdown: dropped {n} queued job(s) that never started",
      { n = dropped })
  end
end

reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
reactor.addSystemEventTrigger("during", "shutdown", during_shutdown)

--- Internal (braid.testing's cleanup): the Deferreds of the deferToThread
-- jobs whose results have not been delivered yet, and how many
-- callInThread jobs have not been delivered yet.
function M._testingJobs()
  local ds = {}
  for d in pairs(jobs) do ds[#ds + 1] = d end
  local calls = outstanding() - #ds
  return ds, calls > 0 and calls or 0
end

return M
