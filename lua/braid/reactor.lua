--- braid.reactor: the singleton event loop (twisted.internet.reactor).
-- test-case-name: spec/reactor_spec.lua
--
-- The loop, timers and signal watchers are C (braid.core); this module holds
-- the policy: run/stop states, system event triggers, signal handlers.
local core = require "braid.core"
local errors = require "braid.error"
local failure = require "braid.failure"

local M = {}

local select, type, pairs, ipairs, table_remove = select, type, pairs, ipairs, table.remove
local pack, unpack = table.pack, table.unpack

-- A module the reactor loads when first used: package.loaded's, or
-- required with the spare descriptor braid keeps (core.spare_fd, taken
-- here) given back for the read, so that it loads once the process is out
-- of descriptors too (require must open the module's file; without this,
-- reactor.addReader and the rest raised "module 'braid.fdesc' not found").
core.spare_fd()
local load = core.require_spare

M.callLater = core.callLater
M.seconds = core.seconds
M.getDelayedCalls = core.getDelayedCalls
M.running = false
M.workerId = tonumber(os.getenv("BRAID_WORKER_ID") or "")

-- where callbacks' errors go: a Failure with the traceback at the raise
-- point, logged by braid.log (loaded on the first error)
core.set_msgh(failure.msgh)
core.set_error_handler(function(e)
  local ok, log = pcall(load, "braid.log")
  if ok and log.reportError then
    log.reportError(e)
  else
    io.stderr:write("Unhandled Error\n", failure.isFailure(e) and e:getTraceback() or tostring(e), "\n")
  end
end)

local function log_msg(...)
  local ok, log = pcall(load, "braid.log")
  if ok then log.msg(...) end
end

local function log_err(e, why)
  local ok, log = pcall(load, "braid.log")
  if ok then log.err(e, why) else io.stderr:write(tostring(why), "\n", tostring(e), "\n") end
end

local function is_deferred(v)
  return type(v) == "table" and type(v.addBoth) == "function"
    and type(v.addCallback) == "function"
end

---------------------------------------------------------------------------
-- per-turn work: shutdown after stop(), unhandled Deferred reports, hooks

local turn_hooks = {}
local shutdown_pending = false
local fire_shutdown
local thread_calls = {}  -- callFromThread on the loop: { f, args } in order

-- Run the callFromThread calls queued so far (Twisted's threadCallQueue,
-- run first in runUntilCurrent): those they queue wait for the next turn.
local function run_thread_calls()
  local list = thread_calls
  if #list == 0 then return end
  thread_calls = {}
  for i = 1, #list do
    local c = list[i]
    core.pcall_report(c.f, unpack(c.args, 1, c.args.n))
  end
end

local function flush_unhandled()
  local defer = package.loaded["braid.defer"]
  if type(defer) == "table" and defer.flushUnhandled then defer.flushUnhandled() end
end

-- after_timers: this turn's due timed calls have run. A stop()'s shutdown
-- fires only then, as Twisted's at the end of runUntilCurrent: calls due
-- when the turn began run first, not after the reactor has shut down.
-- callFromThread calls queued during that turn wait, as in Twisted (they
-- run on a later turn, if the loop goes on, or in the next run()).
-- Calls queued by the timed calls wait for the next turn, after its I/O
-- (Twisted's next runUntilCurrent comes after doIteration): the wake makes
-- that poll not block.
core.set_turn_hook(function(after_timers)
  if after_timers then
    if #thread_calls > 0 then core.wake() end
    if shutdown_pending then
      shutdown_pending = false
      fire_shutdown()
    end
  else
    run_thread_calls()
    if shutdown_pending then
      core.wake()  -- run this hook again once the timers have
    end
  end
  for i = 1, #turn_hooks do turn_hooks[i]() end
  flush_unhandled()
end)

--- Internal: run f on every loop turn that someone asked for with _wake().
function M._onTurn(f)
  turn_hooks[#turn_hooks + 1] = f
end

--- Internal: ask for a loop turn now (runs the turn hooks; safe in __gc).
M._wake = core.wake

---------------------------------------------------------------------------
-- system event triggers

local PHASES = { before = true, during = true, after = true }
local events = {}   -- name -> { before = {...}, during = {...}, after = {...} }
local next_id = 0

local check_callable = errors.checkcallable

--- Add a trigger; returns an id for removeSystemEventTrigger.
-- @param phase "before", "during" or "after"
-- @param event "startup", "shutdown" or any name
function M.addSystemEventTrigger(phase, event, f, ...)
  if not PHASES[phase] then
    error(errors.ValueError(("bad argument #1 to 'addSystemEventTrigger' (phase must be "
      .. "'before', 'during' or 'after', got %s)"):format(
      type(phase) == "string" and ("'" .. phase .. "'") or type(phase))), 2)
  end
  errors.checktype("addSystemEventTrigger", 2, event, "string")
  check_callable("addSystemEventTrigger", 3, f)
  local ev = events[event]
  if not ev then
    ev = { before = {}, during = {}, after = {} }
    events[event] = ev
  end
  next_id = next_id + 1
  local t = { id = next_id, event = event, phase = phase, f = f, args = pack(...) }
  local list = ev[phase]
  list[#list + 1] = t
  return t
end

--- Remove a trigger by the id addSystemEventTrigger returned.
function M.removeSystemEventTrigger(id)
  -- as Twisted's: an id of the wrong type is a TypeError, a table that is
  -- no (live) trigger id a ValueError
  if type(id) ~= "table" then
    errors.argerror("removeSystemEventTrigger", 1, "trigger id expected, got " .. type(id))
  end
  local ev = events[id.event]
  local list = ev and ev[id.phase]
  if type(list) ~= "table" then
    error(errors.ValueError("bad argument #1 to 'removeSystemEventTrigger' (not a trigger id)"), 2)
  end
  for i = 1, #list do
    if list[i] == id then
      table_remove(list, i)
      return
    end
  end
  error(errors.ValueError("bad argument #1 to 'removeSystemEventTrigger' (trigger already removed)"), 2)
end

local function call_trigger(t)
  local ok, r = core.pcall_report(t.f, unpack(t.args, 1, t.args.n))
  if ok then return r end
  return nil
end

-- Call the triggers of a phase from its live list, as Twisted's do: one
-- removed before its turn does not run, and one added to the phase while it
-- runs does, in this same firing (the list itself is kept: braid's triggers
-- persist). each(result) gets every trigger's result, if given.
local function run_phase(list, each)
  local ran = {}
  local i = 1
  while true do
    local t = list[i]
    if t == nil then return end
    if ran[t] then
      i = i + 1
    else
      ran[t] = true
      local r = call_trigger(t)
      if each then each(r) end
      i = 1  -- the list may have changed anywhere: look again for the next one not run
    end
  end
end

-- event -> how many of its phases run now: a trigger firing its own event
-- again runs nothing (in Twisted the firing has taken that event's
-- triggers; here, as they persist, each would fire it again without end)
local in_phase = {}

local function run_phases(event, a, b, each)
  in_phase[event] = (in_phase[event] or 0) + 1
  local ok, err = pcall(function()
    run_phase(a, each)
    if b then run_phase(b) end
  end)
  local n = in_phase[event] - 1
  in_phase[event] = n > 0 and n or nil
  if not ok then error(err, 0) end
end

--- Run the triggers of `event`, phase by phase. A Deferred returned by a
-- `before` trigger holds back `during` and `after` until it fires. Called
-- by one of the event's own triggers while its phase runs, it does nothing.
-- @param done optional function called once the after phase has run
function M.fireSystemEvent(event, done)
  errors.checktype("fireSystemEvent", 1, event, "string")
  if in_phase[event] then return end
  local ev = events[event]
  local function finish()
    if ev then run_phases(event, ev.during, ev.after) end
    if done then done() end
  end
  if not ev then return finish() end
  local waiting = 0
  local before_done = false
  run_phases(event, ev.before, nil, function(r)
    if is_deferred(r) then
      waiting = waiting + 1
      r:addBoth(function(res)
        if failure.isFailure(res) then
          log_err(res, "Error in a 'before " .. event .. "' trigger:")
          res = nil
        end
        waiting = waiting - 1
        if waiting == 0 and before_done then finish() end
        return res
      end)
    end
  end)
  before_done = true
  if waiting == 0 then finish() end
end

---------------------------------------------------------------------------
-- signals

local sig_handlers = {}  -- signum -> list of user handlers
local sig_defaults = {}  -- signum -> braid's own action (run first)
local sig_watchers = {}  -- signum -> core watcher

local function dispatch_signal(signum, name)
  local default = sig_defaults[signum]
  local list = sig_handlers[signum]
  if default and not (default.replaceable and list and #list > 0) then
    core.pcall_report(default.f, signum, name)
  end
  if list then
    local snapshot = { table.unpack(list) }
    for i = 1, #snapshot do core.pcall_report(snapshot[i].f, signum, name) end
  end
end

local function sync_watcher(signum)
  local need = sig_defaults[signum] ~= nil
    or (sig_handlers[signum] ~= nil and #sig_handlers[signum] > 0)
  local w = sig_watchers[signum]
  if need and not w then
    sig_watchers[signum] = core.signal(signum, dispatch_signal)
  elseif not need and w then
    w:cancel()
    sig_watchers[signum] = nil
  end
end

local Handle = {}
Handle.__index = Handle
function Handle:cancel()
  local list = sig_handlers[self.signum]
  if not list then return end
  for i = 1, #list do
    if list[i] == self then
      table_remove(list, i)
      break
    end
  end
  sync_watcher(self.signum)
end

--- Run f(signum, name) in the loop when the signal arrives.
-- @param sig "SIGHUP", "HUP" or a number
-- @return a handle with :cancel()
function M.onSignal(sig, f)
  if type(sig) ~= "string" and type(sig) ~= "number" then
    errors.argerror("onSignal", 1, "signal name or number expected, got " .. type(sig))
  end
  check_callable("onSignal", 2, f)
  local ok, signum = pcall(core.signum, sig)
  if not ok then
    error(errors.ValueError(("bad argument #1 to 'onSignal' (unknown signal %s)"):format(
      type(sig) == "string" and ("'" .. sig .. "'") or tostring(sig))), 2)
  end
  if signum == 9 or signum == 19 then
    error(errors.ValueError("bad argument #1 to 'onSignal' (SIGKILL and SIGSTOP cannot be caught)"), 2)
  end
  local list = sig_handlers[signum]
  if not list then
    list = {}
    sig_handlers[signum] = list
  end
  local h = setmetatable({ signum = signum, f = f }, Handle)
  list[#list + 1] = h
  sync_watcher(signum)
  return h
end

--- Internal: braid's own action for a signal (log reopen, reload), run
-- before the user's handlers. `replaceable` actions (SIGINT/SIGTERM's stop)
-- are skipped when the user has handlers.
function M._setSignalAction(sig, f, replaceable)
  local signum = core.signum(sig)
  sig_defaults[signum] = f and { f = f, replaceable = replaceable } or nil
  sync_watcher(signum)
end

local started = false  -- run() began (`running` waits for the "during startup" phase)

local function stop_on_signal(signum, name)
  log_msg(("Received %s, shutting down."):format(name))
  if started and not M._stopping then M.stop() end
end

---------------------------------------------------------------------------
-- run / stop

local when_running = {}  -- callWhenRunning's pending triggers (id -> true)
M._stopping = false
local crashed_early = false  -- crash() before run()'s loop began
local run_called = false     -- run() was called (its loop may not have begun)

--- Call f(...) once the reactor runs; now if it already runs. Before, it
-- is a one-shot "after startup" trigger, as in Twisted: it runs in turn
-- with the triggers of that phase, in the order they were added.
function M.callWhenRunning(f, ...)
  check_callable("callWhenRunning", 1, f)
  if M.running then
    return f(...)
  end
  local id
  id = M.addSystemEventTrigger("after", "startup", function(...)
    M.removeSystemEventTrigger(id)
    when_running[id] = nil
    return f(...)
  end, ...)
  when_running[id] = true
end

--- Call f(...) on the loop's next turn, before that turn's timed calls (as
-- Twisted's threadCallQueue): a callLater(0) made by f runs in that same
-- turn, a callFromThread made by f on the turn after. Before run(), the
-- calls wait for the loop. (From a worker: braid.threads.)
function M.callFromThread(f, ...)
  check_callable("callFromThread", 1, f)
  thread_calls[#thread_calls + 1] = { f = f, args = pack(...) }
  core.wake()
end

--- Internal (testing): take the queued callFromThread calls, unrun.
function M._takeThreadCalls()
  local list = thread_calls
  thread_calls = {}
  return list
end

local function reactor_already_running()
  error(errors.ReactorAlreadyRunning(), 3)
end

fire_shutdown = function()
  M.fireSystemEvent("shutdown", function()
    core.crash()
  end)
end

--- Run the loop until stop() (or crash()).
-- @param opts optional table: installSignalHandlers (default true)
function M.run(opts)
  if opts ~= nil and type(opts) ~= "table" then
    errors.argerror("run", 1, "table expected, got " .. type(opts))
  end
  -- started without the loop: a startup trigger or callWhenRunning
  -- function calling run() before the loop has begun
  if core.in_loop() or started then reactor_already_running() end
  local install = not (opts and opts.installSignalHandlers == false)
  if install then
    M._setSignalAction("SIGINT", stop_on_signal, true)
    M._setSignalAction("SIGTERM", stop_on_signal, true)
  end
  started = true  -- `running` is set by the "during startup" trigger below, as Twisted's
  M._stopping = false
  shutdown_pending = false
  crashed_early = false
  run_called = true
  M.fireSystemEvent("startup")
  local ok, err = true, nil
  if not crashed_early then ok, err = pcall(core.run) end
  started = false
  M.running = false
  M._stopping = false
  if install then
    M._setSignalAction("SIGINT", nil)
    M._setSignalAction("SIGTERM", nil)
  end
  -- shutdown: a Failure left in a Deferred nothing references is
  -- reported now, not whenever the collector gets to it
  collectgarbage()
  flush_unhandled()
  if not ok then
    log_msg("Unexpected error in main loop.")
    log_err(err)
    error(err, 0)
  end
  log_msg("Main loop terminated.")
end

--- Fire the shutdown event (on the next iteration) and leave run().
function M.stop()
  if not started or M._stopping then
    error(errors.ReactorNotRunning("Can't stop reactor that isn't running."), 2)
  end
  M._stopping = true
  shutdown_pending = true
  core.wake()
end

--- Leave run() at once, without shutdown triggers. Called from a startup
-- trigger or a callWhenRunning function (run() has begun, the loop not
-- yet), the loop does not start at all (as Twisted's).
function M.crash()
  if started and not core.in_loop() then crashed_early = true end
  core.crash()
end

--- Run one loop iteration, waiting at most `delay` seconds (default 0).
function M.iterate(delay)
  if delay ~= nil and (type(delay) ~= "number" or not (delay >= 0)) then
    error(errors.ValueError("bad argument #1 to 'iterate' (delay must be a number >= 0, got "
      .. tostring(delay) .. ")"), 2)
  end
  if core.in_loop() or started then reactor_already_running() end
  core.iterate(delay or 0)
end

--- The event backend in use ("epoll", "poll" or "select").
function M.backend()
  return core.backend()
end

---------------------------------------------------------------------------
-- the rest of the reactor's interface lives in its own modules, loaded on
-- first use

-- Twisted's _reallyStartRunning, the first "during startup" trigger: the
-- reactor is `running` from here on (a "before startup" trigger, or a timer
-- that fires while one's Deferred is pending, sees it false, and a
-- callWhenRunning made then waits for this phase).
M.addSystemEventTrigger("during", "startup", function()
  if started then M.running = true end
end)

--- Internal: run() began (true also before `running` is, while the
-- "before startup" triggers run or wait).
function M._isStarted() return started end

-- Twisted's disconnectAll, a "during shutdown" trigger added before any of
-- the script's: listening ports close (stopFactory runs, UNIX socket files
-- go), connectors stop and connections and descriptors get connectionLost
-- with ConnectionLost, all before the "after" triggers. Only modules in use
-- have anything to close. As Twisted's crash trigger, which comes first,
-- it leaves run() (once this firing is done: a shutdown fired by hand stops
-- the reactor too) and makes `running` false: what those connectionLosts
-- (and the script's own "during" and "after" triggers) see is a reactor
-- that is no longer running (the "before" triggers still see it running).
M.addSystemEventTrigger("during", "shutdown", function()
  if started then M.crash() end
  M.running = false
  local tcp = package.loaded["braid.tcp"]
  if tcp then tcp._disconnectAll() end
  local fdesc = package.loaded["braid.fdesc"]
  if fdesc then fdesc._disconnectAll() end
end)

local function forward(modname, names)
  for _, name in ipairs(names) do
    M[name] = function(...)
      return load(modname)[name](...)
    end
  end
end
forward("braid.tcp", { "listenTCP", "connectTCP", "listenUNIX", "connectUNIX",
  "adoptStreamPort", "adoptStreamConnection" })
forward("braid.fdesc", { "addReader", "addWriter", "removeReader", "removeWriter",
  "removeAll", "getReaders", "getWriters" })
forward("braid.resolver", { "resolve", "installResolver", "getHostByName" })
forward("braid.threads", { "callInThread", "suggestThreadPoolSize" })
-- API.md's UDP, TLS and process functions have no module in braid, so the
-- reactor has no field for them (docs/reactor.md, "The rest").
M.CONNECTION_DONE = "CONNECTION_DONE"
M.CONNECTION_LOST = "CONNECTION_LOST"

--- Internal (the braid command): run the reactor if the script left work
-- pending without running it itself (with run() or by driving it with
-- iterate(), as busted under the braid binary does).
function M._runIfPending()
  if core.in_loop() then return end
  if not core.has_run() and not run_called then
    local user_signals = false
    for _, list in pairs(sig_handlers) do
      if #list > 0 then user_signals = true end
    end
    if core.work() > 0 or next(when_running) ~= nil or #thread_calls > 0 or user_signals then
      M.run()
    end
  end
  M._scriptDone()
end

--- Internal: the script is done (the braid command, after the script and
-- its reactor run; task.react, before it exits). What it left unreachable
-- is collected now, so an unhandled Failure is reported before the
-- process exits, and what is still referenced is reported as the state
-- closes.
function M._scriptDone()
  collectgarbage()  -- runs the finalizers of what it frees, in this cycle
  flush_unhandled()
  local defer = package.loaded["braid.defer"]
  if type(defer) == "table" and defer._atExit then defer._atExit() end
end

return M
