--- braid.testing.async: run busted specs on the real reactor.
-- test-case-name: spec/testing_spec.lua
--
-- wait(d) runs the reactor until a Deferred fires; async(f) makes a busted
-- `it` body that runs f as an inlineCallbacks coroutine (so defer.await
-- works) and, as trial does, fails the spec when it leaves the reactor
-- unclean (DelayedCalls, ports, connections and connection attempts,
-- readers and writers, cooperative tasks, thread jobs, whatever cleanup
-- hooks report), logs errors it does not flush, or drops failed Deferreds
-- unhandled.
--
-- Re-exported by braid.testing. The reactor (and braid.core) is loaded
-- lazily, so requiring braid.testing does not need the C core.
local class = require "braid.class"
local errors = require "braid.error"
local failure = require "braid.failure"
local defer = require "braid.defer"
local log = require "braid.log"

local M = {}

local isFailure, isDeferred, msgh = failure.isFailure, defer.isDeferred, failure.msgh
local type, select, tostring, ipairs, pairs, pcall, xpcall, error = type, select, tostring,
  ipairs, pairs, pcall, xpcall, error
local concat = table.concat

local DEFAULT_TIMEOUT = 5
-- how long the cleanup waits for a hook's Deferred, and for the thread jobs
-- a spec started
local GRACE = 2

-------------------------------------------------------------------------------
-- logged errors

-- Events with isError and a failure, logged since the current async spec
-- began (or, outside async specs, since the last flushLoggedErrors).
-- An error event without a failure is kept as the notice of the failure
-- event that follows it from the same namespace (an unhandled Deferred's
-- "Unhandled error in Deferred:" comes so, as in Twisted), for the message.
-- While the cleanup of an async spec stops what the spec left behind,
-- nothing is recorded: what that causes is not an error of the spec.
local logged = {}
local WEAK_KEYS = { __mode = "k" }
local notice, noticed = nil, setmetatable({}, WEAK_KEYS)
local ignoring = false

local function observer(ev)
  if not ev.isError or ignoring then return end
  if ev.failure == nil then
    notice = ev
    return
  end
  if notice ~= nil and notice.namespace == ev.namespace then noticed[ev] = notice.text end
  notice = nil
  logged[#logged + 1] = ev
end
log.addObserver(observer)
M._logObserver = observer

local check_classes = require("braid.testing.results")._check_classes

-- log the reports of unreachable Deferreds holding a failure
local function collect_unhandled()
  collectgarbage()
  collectgarbage()
  defer.flushUnhandled()
end

--- Return and forget the errors logged since the current async spec began
-- (outside an async spec: since the last call). With classes, only the
-- Failures of those classes (or subclasses) are returned and forgotten.
-- Unreachable Deferreds holding a failure are collected first, so their
-- "Unhandled error in Deferred" reports are among the errors.
-- @param ... optional error classes
-- @return a list of Failures, oldest first
function M.flushLoggedErrors(...)
  check_classes("flushLoggedErrors", 1, ...)
  collect_unhandled()
  local n = select("#", ...)
  local out, keep = {}, {}
  for i = 1, #logged do
    local ev = logged[i]
    if n == 0 or ev.failure:check(...) then
      out[#out + 1] = ev.failure
    else
      keep[#keep + 1] = ev
    end
  end
  logged = keep
  return out
end

-------------------------------------------------------------------------------
-- driving the real reactor

local function load_reactor()
  local reactor = require "braid.reactor"
  local core = require "braid.core"
  return reactor, core
end

local function check_not_running(reactor, core)
  if reactor.running or reactor._isStarted() or core.in_loop() then
    error(errors.ReactorAlreadyRunning("testing.wait and testing.async cannot run "
      .. "while the reactor runs (use defer.await inside an async spec)"), 3)
  end
end

-- Iterate the reactor until done() or `timeout` seconds have passed.
local function drive(reactor, core, done, timeout)
  local deadline = core.monotonic() + timeout
  while not done() do
    local left = deadline - core.monotonic()
    if left <= 0 then return false end
    -- a turn that waits for nothing first: what fell due (a callLater(0))
    -- may be all it takes, and iterate(t) waits t after running it
    reactor.iterate(0)
    if done() then break end
    reactor.iterate(left < 0.1 and left or 0.1)
  end
  return true
end

-- Take d's result (leaving nil), running the reactor until it comes or
-- `timeout` passes; then d is cancelled. Returns fired in time, result.
local function settle(reactor, core, d, timeout)
  local done, res = false, nil
  d:addBoth(function(r)
    done, res = true, r
    return nil
  end)
  if not done and not drive(reactor, core, function() return done end, timeout) then
    pcall(d.cancel, d)
    return false, nil
  end
  return true, res
end

-- A timeout: nil (the default) or a number > 0. `what` is how the message
-- names it ("bad argument #2 to 'wait'").
local function check_timeout(what, timeout)
  if timeout == nil then return DEFAULT_TIMEOUT end
  if type(timeout) ~= "number" then
    error(errors.TypeError(("%s (number expected, got %s)")
      :format(what, class.nameof(timeout))), 3)
  end
  if not (timeout > 0) then
    error(errors.ValueError(("%s (timeout must be > 0, got %s)")
      :format(what, tostring(timeout))), 3)
  end
  return timeout
end

--- Run the real reactor until `d` fires; return its result, or raise its
-- failure's value. After `timeout` seconds (default 5) `d` is cancelled
-- and a defer.TimeoutError is raised. Raises ReactorAlreadyRunning when
-- called while the loop runs. Afterwards `d`'s result is nil.
-- @param d a Deferred
-- @param timeout optional seconds
function M.wait(d, timeout)
  if not isDeferred(d) then
    error(errors.TypeError(("bad argument #1 to 'wait' (Deferred expected, got %s)")
      :format(class.nameof(d))), 2)
  end
  timeout = check_timeout("bad argument #2 to 'wait'", timeout)
  local reactor, core = load_reactor()
  check_not_running(reactor, core)
  local done, res = settle(reactor, core, d, timeout)
  if not done then
    local e = defer.TimeoutError(("testing.wait gave up after %s seconds"):format(tostring(timeout)))
    e.timeout = timeout
    error(e, 2)
  end
  if isFailure(res) then error(res.value, 0) end
  return res
end

-------------------------------------------------------------------------------
-- cleanup hooks

--- Leftover checkers run after every async spec. Each is a function
-- `hook()` returning nil when nothing was left behind, or a list of
-- strings describing what was left (which the hook has cleaned up), and
-- optionally a Deferred that the cleanup waits for (at most 2 s), such as
-- a port's stopListening(). Each string fails the spec as
-- "reactor unclean: <string>".
-- A loaded module named braid.* may instead define the same function as
-- its field `_testingLeftovers`, without requiring braid.testing.
M._cleanupHooks = {}

--- Register a leftover checker (see _cleanupHooks); returns a function
-- that removes it.
-- @param hook a function
function M.addCleanupHook(hook)
  errors.checkcallable("addCleanupHook", 1, hook)
  local hooks = M._cleanupHooks
  hooks[#hooks + 1] = hook
  return function()
    for i = #hooks, 1, -1 do
      if hooks[i] == hook then table.remove(hooks, i) end
    end
  end
end

local function describe_fn(f)
  if type(f) == "function" then
    local info = debug.getinfo(f, "S")
    if info.what ~= "C" then
      return ("function <%s:%d>"):format(info.short_src, info.linedefined)
    end
  end
  return tostring(f)
end

local function describe_call(dc)
  local s = tostring(dc)
  local ok, f = pcall(function() return dc.func end)
  if ok and f ~= nil then s = s .. " calling " .. describe_fn(f) end
  return s
end

-- The hooks, then the `_testingLeftovers` functions of loaded braid.*
-- modules (by module name). braid.threads' jobs are checked below,
-- against the spec's snapshot, through its _testingJobs.
local function leftover_checkers()
  local list = {}
  for i, h in ipairs(M._cleanupHooks) do list[i] = h end
  local names = {}
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and name:sub(1, 6) == "braid." and type(mod) == "table"
        and type(rawget(mod, "_testingLeftovers")) == "function" then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    list[#list + 1] = rawget(package.loaded[name], "_testingLeftovers")
  end
  return list
end

-- a loaded module's internal function `name`, or nil
local function module_fn(modname, name)
  local mod = package.loaded[modname]
  local f = type(mod) == "table" and rawget(mod, name)
  return type(f) == "function" and f or nil
end

-- Open connections and listening ports: braid.tcp anchors each in the
-- registry while it is open (transports, which core.tcp_is_transport
-- tells, and userdata with the "braid.tcp.port" metatable), so no hook in
-- the transport is needed.
local function live_sockets()
  local reg = debug.getregistry()
  local cmeta, pmeta = reg["braid.tcp"], reg["braid.tcp.port"]
  local found = {}
  if cmeta == nil and pmeta == nil then return found end
  local is_transport = require("braid.core").tcp_is_transport
  for _, v in next, reg do
    if type(v) == "userdata" then
      local mt = getmetatable(v)
      if (mt ~= nil and mt == pmeta) or is_transport(v) then found[#found + 1] = v end
    end
  end
  return found
end

-- braid.tcp's connectors still connecting
local function connecting()
  local f = module_fn("braid.tcp", "_testingConnecting")
  return f and f() or {}
end

-- braid.threads' jobs not delivered yet: deferToThread's Deferreds and
-- the number of callInThread jobs
local function thread_jobs()
  local f = module_fn("braid.threads", "_testingJobs")
  if not f then return {}, 0 end
  return f()
end

-- braid.task's global Cooperator, when braid.task is loaded
local function cooperator()
  local task = package.loaded["braid.task"]
  return type(task) == "table" and task._theCooperator or nil
end

-- What exists when a spec starts is not its fault: the reactor's
-- DelayedCalls, sockets, connection attempts and thread jobs (in
-- `objects`), readers and writers, and the number of callInThread jobs.
local function take_snapshot(reactor)
  local snap = { objects = {}, readers = {}, writers = {} }
  local objects = snap.objects
  for _, dc in ipairs(reactor.getDelayedCalls()) do objects[dc] = true end
  for _, sock in ipairs(live_sockets()) do objects[sock] = true end
  for _, c in ipairs(connecting()) do objects[c] = true end
  local ds, calls = thread_jobs()
  for _, d in ipairs(ds) do objects[d] = true end
  snap.thread_calls = calls
  local coop = cooperator()
  if coop then
    for _, t in ipairs(coop._tasks) do objects[t] = true end
  end
  local fdesc = package.loaded["braid.fdesc"]
  if type(fdesc) == "table" then
    local rs, ws = fdesc._descriptors()  -- not braid.tcp's: live_sockets has those
    for _, d in ipairs(rs) do snap.readers[d] = true end
    for _, d in ipairs(ws) do snap.writers[d] = true end
  end
  return snap
end

-------------------------------------------------------------------------------
-- what a spec left behind

-- the thread jobs the spec started that are not delivered yet
local function new_thread_jobs(snap)
  local ds, calls = thread_jobs()
  local mine = {}
  for _, d in ipairs(ds) do
    if not snap.objects[d] then mine[#mine + 1] = d end
  end
  calls = calls - snap.thread_calls
  return mine, calls > 0 and calls or 0
end

local function drop_result() return nil end

-- Wait (at most GRACE s) for the thread jobs the spec started, so their
-- results land in this spec; report those still running. The result of a
-- deferToThread job left running is dropped when it comes.
local function wait_threads(reactor, core, snap, problems)
  local mine, calls = new_thread_jobs(snap)
  if #mine + calls == 0 then return end
  drive(reactor, core, function()
    mine, calls = new_thread_jobs(snap)
    return #mine + calls == 0
  end, GRACE)
  if #mine > 0 then
    for _, d in ipairs(mine) do d:addBoth(drop_result) end
    problems[#problems + 1] = ("reactor unclean: %d deferToThread job(s) still running after "
      .. "%s s (their results will be dropped)"):format(#mine, tostring(GRACE))
  end
  if calls > 0 then
    problems[#problems + 1] = ("reactor unclean: %d callInThread job(s) still running after "
      .. "%s s (an error they raise will be logged later)"):format(calls, tostring(GRACE))
  end
end

-- Cooperative tasks the spec started (those of the snapshot are left alone).
local function stop_tasks(snap, problems)
  local coop = cooperator()
  if not coop or #coop._tasks == 0 then return end
  local tasks = {}
  for _, t in ipairs(coop._tasks) do
    if not snap.objects[t] then tasks[#tasks + 1] = t end
  end
  if #tasks == 0 then return end
  for _, t in ipairs(tasks) do pcall(t.stop, t) end
  problems[#problems + 1] = ("reactor unclean: %d cooperative task(s) left running "
    .. "(stopped)"):format(#tasks)
end

local function run_hooks(reactor, core, problems)
  for _, hook in ipairs(leftover_checkers()) do
    local ok, list, d = xpcall(hook, msgh)
    if not ok then
      problems[#problems + 1] = "cleanup hook failed: " .. list:getTraceback()
    else
      if type(list) == "table" then
        for _, s in ipairs(list) do
          problems[#problems + 1] = "reactor unclean: " .. tostring(s)
        end
      end
      if isDeferred(d) then
        local fired = false
        d:addBoth(function() fired = true return nil end)
        drive(reactor, core, function() return fired end, GRACE)
      end
    end
  end
end

-- Connection attempts the spec started: stopped with stopConnecting (so
-- the factory hears clientConnectionFailed, and is stopped), which also
-- closes their sockets and cancels their timers.
local function stop_connectors(snap, problems)
  local list = {}
  for _, c in ipairs(connecting()) do
    if not snap.objects[c] then list[#list + 1] = c end
  end
  table.sort(list, function(a, b) return tostring(a) < tostring(b) end)
  for _, c in ipairs(list) do
    local dest = tostring(c)
    problems[#problems + 1] = ("reactor unclean: connection attempt to %s (stopped)")
      :format(dest:match("^<Connector to (.*)>$") or dest)
    pcall(c.stopConnecting, c)
  end
end

local function describe_socket(v, is_port)
  if is_port then
    local ok, uv = pcall(v._getuv, v)
    local port = ok and type(uv) == "table" and uv.port
    return "listening port " .. (port and tostring(port) or tostring(v)) .. " (stopped)", port
  end
  local ok, p = pcall(function() return v.protocol end)
  local name = ok and p ~= nil and class.nameof(p) or "?"
  return ("connection %s of %s (aborted)"):format(tostring(v), name)
end

-- Whether a live socket (a port, with the port metatable pmeta, or a
-- transport) is still open, and whether it is a port.
local function socket_open(v, pmeta)
  if getmetatable(v) == pmeta then return v:listening(), true end
  local ok, st = pcall(v._state, v)
  return ok and st ~= "closed", false
end

local function clean_sockets(reactor, core, snap, problems)
  local pmeta = debug.getregistry()["braid.tcp.port"]
  local waits = {}
  for _, v in ipairs(live_sockets()) do
    if not snap.objects[v] then
      local open, is_port = socket_open(v, pmeta)
      if open then
        local text, port = describe_socket(v, is_port)
        problems[#problems + 1] = "reactor unclean: " .. text
        if port then
          local ok, d = pcall(port.stopListening, port)
          if ok and isDeferred(d) then waits[#waits + 1] = d end
        elseif is_port then
          pcall(v.close, v)
        else
          pcall(v.abortConnection, v)
        end
      end
    end
  end
  local pending = #waits
  for _, d in ipairs(waits) do
    d:addBoth(function() pending = pending - 1 return nil end)
  end
  -- let the aborts deliver connectionLost, and stopListening fire
  reactor.iterate(0)
  if pending > 0 then drive(reactor, core, function() return pending == 0 end, GRACE) end
end

local function describe_descriptor(d)
  local s = class.classof(d) and tostring(d) or "descriptor"
  local ok, fd = pcall(function() return d:fileno() end)
  if ok and fd ~= nil then s = s .. " fd " .. tostring(math.tointeger(fd) or fd) end
  return s
end

-- Readers and writers added during the spec (reactor.addReader/addWriter)
-- and still there: removed, as trial's janitor does with removeAll.
local function remove_descriptors(snap, problems)
  local fdesc = package.loaded["braid.fdesc"]
  if type(fdesc) ~= "table" then return end
  local found, kinds = {}, {}
  local function note(d, kind)
    if not kinds[d] then found[#found + 1] = d; kinds[d] = {} end
    kinds[d][#kinds[d] + 1] = kind
  end
  local rs, ws = fdesc._descriptors()  -- braid.tcp's are clean_sockets'
  for _, d in ipairs(rs) do
    if not snap.readers[d] then note(d, "reader") end
  end
  for _, d in ipairs(ws) do
    if not snap.writers[d] then note(d, "writer") end
  end
  for _, d in ipairs(found) do
    problems[#problems + 1] = ("reactor unclean: %s %s (removed)")
      :format(concat(kinds[d], " and "), describe_descriptor(d))
    for _, kind in ipairs(kinds[d]) do
      pcall(kind == "reader" and fdesc.removeReader or fdesc.removeWriter, d)
    end
  end
end

-- Cancel the DelayedCalls made since the snapshot, adding their
-- descriptions to `left`. The cooperator's next slice is left while tasks
-- older than the spec still run (stop_tasks stopped the spec's own).
local function cancel_calls(reactor, snap, left)
  local coop = cooperator()
  local keep = coop and #coop._tasks > 0 and coop._delayedCall or nil
  for _, dc in ipairs(reactor.getDelayedCalls()) do
    if not snap.objects[dc] and dc ~= keep and dc:active() then
      left[#left + 1] = describe_call(dc)
      dc:cancel()
    end
  end
  -- callFromThread calls the loop has not run yet: dropped, as cancelled
  for _, c in ipairs(reactor._takeThreadCalls()) do
    left[#left + 1] = "callFromThread calling " .. describe_fn(c.f)
  end
end

-- Whether the spec (or the cleanup, on its behalf) has connections,
-- ports or connection attempts open that the snapshot does not hold.
local function sockets_left(snap)
  for _, c in ipairs(connecting()) do
    if not snap.objects[c] then return true end
  end
  local pmeta = debug.getregistry()["braid.tcp.port"]
  for _, v in ipairs(live_sockets()) do
    if not snap.objects[v] and socket_open(v, pmeta) then return true end
  end
  return false
end

-- How many times the cleanup stops connections and connection attempts:
-- stopping one can start another (a client factory that reconnects at
-- once in clientConnectionLost), which is stopped in the next round.
local SOCKET_ROUNDS = 5

-- Stop and report what the spec left behind. What can be stopped without
-- running the reactor goes first, its DelayedCalls before anything
-- iterates: a call of the spec that fell due while the cleanup runs the
-- loop would run where its error is not counted, and be gone from the
-- report.
local function clean_reactor(reactor, core, snap, problems)
  local left = {}
  stop_tasks(snap, problems)
  stop_connectors(snap, problems)  -- cancels their timeout calls
  cancel_calls(reactor, snap, left)
  run_hooks(reactor, core, problems)
  for _ = 1, SOCKET_ROUNDS do
    clean_sockets(reactor, core, snap, problems)
    if not sockets_left(snap) then break end
    stop_connectors(snap, problems)
  end
  remove_descriptors(snap, problems)
  cancel_calls(reactor, snap, left)  -- those the cleanup made the spec's code start
  if #left > 0 then
    problems[#problems + 1] = "reactor unclean: DelayedCalls left behind (cancelled):\n  "
      .. concat(left, "\n  ")
  end
end

local function report_logged(problems)
  if #logged == 0 then return end
  local parts = {}
  for i, ev in ipairs(logged) do
    local why = ev.why or "Unhandled Error"
    if noticed[ev] then why = noticed[ev] .. "\n" .. why end
    parts[i] = why .. "\n" .. ev.failure:getTraceback()
  end
  noticed = setmetatable({}, WEAK_KEYS)
  problems[#problems + 1] = ("%d error(s) logged during the spec and not flushed "
    .. "(use testing.flushLoggedErrors):\n%s"):format(#logged, concat(parts, "\n"))
  logged = {}
end

local function cleanup(reactor, core, snap, problems)
  -- the spec's own: zero-delay calls and closes that were already due run,
  -- as trial's janitor lets them; thread jobs get their grace; failed
  -- Deferreds dropped unhandled are logged now, and so counted
  reactor.iterate(0)
  reactor.iterate(0)
  wait_threads(reactor, core, snap, problems)
  collect_unhandled()
  -- the cleanup's own: what stopping the leftovers logs (a TaskStopped
  -- nobody waits for, an error in connectionLost) is not the spec's
  ignoring, notice = true, nil
  local ok, err = xpcall(clean_reactor, msgh, reactor, core, snap, problems)
  collect_unhandled()
  ignoring = false
  if not ok then
    problems[#problems + 1] = "testing.async cleanup failed: " .. err:getTraceback()
  end
  report_logged(problems)
end

-------------------------------------------------------------------------------
-- async

local function busted_kind(v)
  if type(v) ~= "table" then return nil end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__type") or nil
end

-- Fail the spec: as a busted failure when busted is there and `as_failure`,
-- else as an error.
local function raise(msg, as_failure)
  local busted = package.loaded["busted"]
  if as_failure and type(busted) == "table" and type(busted.fail) == "function" then
    busted.fail(msg, 0)
  end
  error(msg, 0)
end

-- The Lua function behind a spec body (a callable table's __call), or nil.
local function body_function(f)
  if type(f) == "function" then return f end
  local mt = getmetatable(f)
  local call = type(mt) == "table" and rawget(mt, "__call")
  return type(call) == "function" and call or nil
end

-- Where the spec is: the debug info of the body (nil for a C body) and the
-- line where the body is defined.
local function spec_position(f)
  local fn = body_function(f)
  if fn == nil then return nil end
  local info = debug.getinfo(fn, "S")
  if info.what == "C" then return nil end
  return info, info.linedefined
end

-- Raise busted's pending object v again from the line that defines the
-- spec: busted reports a pending where the first frame outside itself is,
-- which would be this file.
local function reraise_at_spec(f, v)
  local where, at = spec_position(f)
  if where and where.source:sub(1, 1) == "@" then
    local chunk = load(("\n"):rep(at - 1) .. "error(..., 0)", where.source)
    if chunk then chunk(v) end
  end
  error(v, 0)
end

-- Run the body; returns the spec's own failure message (nil: none), the
-- value it raised, and whether that is a busted failure.
local function run_body(reactor, core, f, timeout, ...)
  local done, res = settle(reactor, core, defer.inlineCallbacks(f)(...), timeout)
  if not done then
    return ("async spec timed out after %s seconds"):format(tostring(timeout)), nil, true
  end
  if not isFailure(res) then return nil, nil, true end
  local v = res.value
  local kind = busted_kind(v)
  if kind == "failure" then return tostring(v.message), v, true end
  if kind == "pending" then return nil, v, true end
  local head = type(v) == "string" and v or tostring(v)
  return head .. "\n" .. res:getTraceback(), v, false
end

local active = false -- an async spec runs

local function run_async(f, timeout, ...)
  if active then
    error(errors.ReactorAlreadyRunning("testing.async cannot run inside an async spec "
      .. "(call the function, or await the Deferreds it returns)"), 2)
  end
  local reactor, core = load_reactor()
  check_not_running(reactor, core)
  -- what earlier code dropped or left is not this spec's fault
  collect_unhandled()
  local snap = take_snapshot(reactor)
  logged, notice = {}, nil
  -- errors are reported by the spec's result, not printed meanwhile
  local saved_stream = log.setErrorStream(nil)
  active = true

  local problems = {}
  local ok, primary, primary_value, as_failure = xpcall(run_body, msgh, reactor, core, f,
    timeout, ...)
  if not ok then
    primary, primary_value, as_failure = "testing.async: " .. primary:getTraceback(), nil, false
  end
  local ok2, err2 = xpcall(cleanup, msgh, reactor, core, snap, problems)
  ignoring, active = false, false
  log.setErrorStream(saved_stream)
  if not ok2 then
    problems[#problems + 1] = "testing.async cleanup failed: " .. err2:getTraceback()
  end

  if primary == nil and #problems == 0 then
    if busted_kind(primary_value) == "pending" then reraise_at_spec(f, primary_value) end
    return
  end
  local msg = primary and { primary } or {}
  for _, p in ipairs(problems) do msg[#msg + 1] = p end
  msg = concat(msg, "\n")
  if not msg:match("^[^\n]-:%d+: ") then
    -- name the spec (busted would name this file instead)
    local where, at = spec_position(f)
    if where then msg = ("%s:%d: %s"):format(where.short_src, at, msg) end
  end
  raise(msg, as_failure)
end

local ASYNC_OPTIONS = { timeout = true }

--- A function for busted's `it` that runs `f` as an inlineCallbacks
-- coroutine on the real reactor (defer.await works inside). The spec
-- fails when f raises (message and traceback), after `opts.timeout`
-- seconds (default 5), when it leaves anything behind (DelayedCalls,
-- ports, connections and connection attempts, readers and writers,
-- cooperative tasks, thread jobs, anything a cleanup hook reports; all
-- cleaned up: "reactor unclean: ..."), when errors were logged and not
-- flushed, and when failed Deferreds were dropped unhandled. It refuses
-- to run inside another async spec.
-- @param f the spec body
-- @param opts optional table: timeout (seconds)
function M.async(f, opts)
  errors.checkcallable("async", 1, f)
  if opts ~= nil and type(opts) ~= "table" then
    error(errors.TypeError(("bad argument #2 to 'async' (table expected, got %s)")
      :format(class.nameof(opts))), 2)
  end
  for k in pairs(opts or {}) do
    if not ASYNC_OPTIONS[k] then
      error(errors.ValueError(("bad option '%s' to 'async' (unknown option; the option is "
        .. "timeout)"):format(tostring(k))), 2)
    end
  end
  local timeout = check_timeout("bad option 'timeout' to 'async'", opts and opts.timeout)
  return function(...)
    return run_async(f, timeout, ...)
  end
end

return M
