--- braid.testing.async: run busted specs on the real reactor.
-- test-case-name: spec/testing_spec.lua
--
-- wait(d) runs the reactor until a Deferred fires; async(f) makes a busted
-- `it` body that runs f as an inlineCallbacks coroutine (so defer.await
-- works) and, as trial does, fails the spec when it leaves the reactor
-- unclean (DelayedCalls, cooperative tasks, whatever cleanup hooks report),
-- logs errors it does not flush, or drops failed Deferreds unhandled.
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
local type, select, tostring, ipairs, pcall, xpcall, error = type, select, tostring, ipairs,
  pcall, xpcall, error
local concat = table.concat

local DEFAULT_TIMEOUT = 5

-------------------------------------------------------------------------------
-- logged errors

-- Events with isError and a failure, logged since the current async spec
-- began (or, outside async specs, since the last flushLoggedErrors).
-- An error event without a failure is kept as the notice of the failure
-- event that follows it from the same namespace (an unhandled Deferred's
-- "Unhandled error in Deferred:" comes so, as in Twisted), for the message.
local logged = {}
local WEAK_KEYS = { __mode = "k" }
local notice, noticed = nil, setmetatable({}, WEAK_KEYS)

local function observer(ev)
  if not ev.isError then return end
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

--- Return and forget the errors logged since the current async spec began
-- (outside an async spec: since the last call). With classes, only the
-- Failures of those classes (or subclasses) are returned and forgotten.
-- Unreachable Deferreds holding a failure are collected first, so their
-- "Unhandled error in Deferred" reports are among the errors.
-- @param ... optional error classes
-- @return a list of Failures, oldest first
function M.flushLoggedErrors(...)
  collectgarbage()
  collectgarbage()
  defer.flushUnhandled()
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
  if reactor.running or core.in_loop() then
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

local function check_timeout(fname, argn, timeout)
  if timeout == nil then return DEFAULT_TIMEOUT end
  if type(timeout) ~= "number" then
    error(errors.TypeError(("bad argument #%d to '%s' (number expected, got %s)")
      :format(argn, fname, type(timeout))), 3)
  end
  if not (timeout > 0) then
    error(errors.ValueError(("bad argument #%d to '%s' (timeout must be > 0, got %s)")
      :format(argn, fname, tostring(timeout))), 3)
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
  timeout = check_timeout("wait", 2, timeout)
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

local function describe_call(dc)
  local s = tostring(dc)
  local ok, f = pcall(function() return dc.func end)
  if ok and type(f) == "function" then
    local info = debug.getinfo(f, "S")
    if info.what == "C" then
      s = s .. " calling " .. tostring(f)
    else
      s = s .. (" calling function <%s:%d>"):format(info.short_src, info.linedefined)
    end
  elseif ok and f ~= nil then
    s = s .. " calling " .. tostring(f)
  end
  return s
end

-- The hooks, then the `_testingLeftovers` functions of loaded braid.*
-- modules (by module name).
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

local function clean_sockets(reactor, core, before, problems)
  local reg = debug.getregistry()
  local pmeta = reg["braid.tcp.port"]
  local waits = {}
  for _, v in ipairs(live_sockets()) do
    if not before[v] then
      local is_port = getmetatable(v) == pmeta
      local open
      if is_port then open = v:listening() else
        local ok, st = pcall(v._state, v)
        open = ok and st ~= "closed"
      end
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
  if pending > 0 then drive(reactor, core, function() return pending == 0 end, 2) end
end

local function cleanup(reactor, core, before, problems)
  -- let zero-delay calls and closes that were already due run, as trial's
  -- janitor does
  reactor.iterate(0)
  reactor.iterate(0)

  local task = package.loaded["braid.task"]
  local coop = type(task) == "table" and task._theCooperator
  if coop and #coop._tasks > 0 then
    local tasks = {}
    for i, t in ipairs(coop._tasks) do tasks[i] = t end
    for _, t in ipairs(tasks) do pcall(t.stop, t) end
    problems[#problems + 1] = ("reactor unclean: %d cooperative task(s) left running "
      .. "(stopped)"):format(#tasks)
  end

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
        drive(reactor, core, function() return fired end, 2)
      end
    end
  end

  clean_sockets(reactor, core, before, problems)

  local left = {}
  for _, dc in ipairs(reactor.getDelayedCalls()) do
    if not before[dc] and dc:active() then
      left[#left + 1] = describe_call(dc)
      dc:cancel()
    end
  end
  if #left > 0 then
    problems[#problems + 1] = "reactor unclean: DelayedCalls left behind (cancelled):\n  "
      .. concat(left, "\n  ")
  end

  -- failed Deferreds dropped unhandled are logged now, and so counted below
  collectgarbage()
  collectgarbage()
  defer.flushUnhandled()
  if #logged > 0 then
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

local function run_async(f, timeout, ...)
  local reactor, core = load_reactor()
  check_not_running(reactor, core)
  -- what earlier code dropped or left is not this spec's fault
  collectgarbage()
  collectgarbage()
  defer.flushUnhandled()
  local before = {}
  for _, dc in ipairs(reactor.getDelayedCalls()) do before[dc] = true end
  for _, sock in ipairs(live_sockets()) do before[sock] = true end
  logged = {}
  -- errors are reported by the spec's result, not printed meanwhile
  local saved_stream = log.setErrorStream(nil)

  local problems = {}
  local primary, primary_value, as_failure = nil, nil, true
  local ok, err = xpcall(function(...)
    local done, res = settle(reactor, core, defer.inlineCallbacks(f)(...), timeout)
    if not done then
      primary = ("async spec timed out after %s seconds"):format(tostring(timeout))
      return
    end
    if isFailure(res) then
      local v = res.value
      primary_value = v
      local kind = busted_kind(v)
      if kind == "failure" then
        primary = tostring(v.message)
      elseif kind == "pending" then
        primary = nil
      else
        as_failure = false
        local head = type(v) == "string" and v or tostring(v)
        primary = head .. "\n" .. res:getTraceback()
      end
    end
  end, msgh, ...)
  if not ok then
    as_failure = false
    primary = "testing.async: " .. err:getTraceback()
  end

  local ok2, err2 = xpcall(cleanup, msgh, reactor, core, before, problems)
  log.setErrorStream(saved_stream)
  if not ok2 then
    problems[#problems + 1] = "testing.async cleanup failed: " .. err2:getTraceback()
  end

  if primary == nil and #problems == 0 then
    if busted_kind(primary_value) == "pending" then error(primary_value, 0) end
    return
  end
  local msg = primary and { primary } or {}
  for _, p in ipairs(problems) do msg[#msg + 1] = p end
  msg = concat(msg, "\n")
  if not msg:match("^[^\n]-:%d+: ") then
    -- name the spec (busted would name this file instead)
    local info = debug.getinfo(f, "S")
    if info.what ~= "C" then
      msg = ("%s:%d: %s"):format(info.short_src, info.linedefined, msg)
    end
  end
  raise(msg, as_failure)
end

--- A function for busted's `it` that runs `f` as an inlineCallbacks
-- coroutine on the real reactor (defer.await works inside). The spec
-- fails when f raises (message and traceback), after `opts.timeout`
-- seconds (default 5), when it leaves DelayedCalls, cooperative tasks or
-- anything a cleanup hook reports (all cleaned up: "reactor unclean:
-- ..."), when errors were logged and not flushed, and when failed
-- Deferreds were dropped unhandled.
-- @param f the spec body
-- @param opts optional table: timeout (seconds)
function M.async(f, opts)
  errors.checkcallable("async", 1, f)
  if opts ~= nil and type(opts) ~= "table" then
    error(errors.TypeError(("bad argument #2 to 'async' (table expected, got %s)")
      :format(type(opts))), 2)
  end
  local timeout = check_timeout("async", 2, opts and opts.timeout)
  return function(...)
    return run_async(f, timeout, ...)
  end
end

return M
