--- braid.task: scheduling utilities, as twisted.internet.task.
-- test-case-name: spec/task_spec.lua, spec/cooperate_spec.lua
--
-- Clock (a fake time source for tests), LoopingCall, deferLater,
-- Cooperator/cooperate/coiterate and react.
--
-- The reactor is loaded lazily (inside functions): Clock, and everything
-- driven by a Clock or a custom scheduler, works without braid.core.
--
-- A time source is the reactor module (whose functions are called with `.`)
-- or an object with the methods seconds() and callLater(delay, f, ...)
-- (called with `:`), such as Clock.
local class = require "braid.class"
local errors = require "braid.error"
local failure = require "braid.failure"
local defer = require "braid.defer"

local M = {}

local Failure, isFailure, msgh = failure.Failure, failure.isFailure, failure.msgh
local Deferred, isDeferred = defer.Deferred, defer.isDeferred
local checkcallable = errors.checkcallable
local checkself = errors.checkself
local type, tostring, xpcall, error = type, tostring, xpcall, error
local pack, unpack, table_remove, table_insert = table.pack, table.unpack, table.remove, table.insert
local table_sort = table.sort
local floor, ceil, huge = math.floor, math.ceil, math.huge

-------------------------------------------------------------------------------
-- Errors (twisted.internet.task)

M.SchedulerError = errors.class("SchedulerError")
M.SchedulerStopped = errors.class("SchedulerStopped", M.SchedulerError)
M.TaskFinished = errors.class("TaskFinished", M.SchedulerError)
M.TaskDone = errors.class("TaskDone", M.TaskFinished)
M.TaskStopped = errors.class("TaskStopped", M.TaskFinished)
M.TaskFailed = errors.class("TaskFailed", M.TaskFinished)
M.NotPaused = errors.class("NotPaused", M.SchedulerError)

local TaskDone, TaskStopped, TaskFailed = M.TaskDone, M.TaskStopped, M.TaskFailed
local SchedulerStopped, NotPaused = M.SchedulerStopped, M.NotPaused

-------------------------------------------------------------------------------
-- Time sources

local function the_reactor()
  return package.loaded["braid.reactor"]
end

-- seconds() of a time source: the reactor's as a function, others' as a method
local function seconds_of(clock)
  if clock == the_reactor() then return clock.seconds() end
  return clock:seconds()
end

local function call_later(clock, delay, f, ...)
  if clock == the_reactor() then return clock.callLater(delay, f, ...) end
  return clock:callLater(delay, f, ...)
end

local function callable(f)
  if type(f) == "function" then return true end
  local mt = getmetatable(f)
  return type(mt) == "table" and mt.__call ~= nil
end

-- The reactor, or a table with callable callLater and seconds (a Clock).
local function is_time_source(clock)
  if type(clock) ~= "table" then return false end
  if clock == the_reactor() then return true end
  return callable(clock.callLater) and callable(clock.seconds)
end

local function check_delay(fname, argn, what, v)
  if type(v) ~= "number" then
    error(errors.TypeError(("bad argument #%d to '%s' (number expected, got %s)")
      :format(argn, fname, type(v))), 3)
  end
  if not (v >= 0) or v == huge then  -- also refuses NaN
    error(errors.ValueError(("bad argument #%d to '%s' (%s must be a finite number >= 0, got %s)")
      :format(argn, fname, what, tostring(v))), 3)
  end
  return v
end

-------------------------------------------------------------------------------
-- Clock

--- A DelayedCall of a Clock: the same interface as the reactor's.
-- Fields: `time` (the deadline), `func`, `args` (a packed list), `called`,
-- `cancelled`.
--
-- As Twisted's DelayedCall, the deadline is kept as a base time plus a
-- delay (`_base`, `_delayed`; `time` is their sum): reset to a later time
-- and delay() add to the delay, reset to a sooner time (or a delay going
-- below 0) moves the base, so the deadline is the same float as Twisted's.
local DelayedCall = class.Object:extend("DelayedCall")
M.DelayedCall = DelayedCall
DelayedCall.called = false
DelayedCall.cancelled = false

--- Clock(): a fake time source for tests. Time starts at 0 and only moves
-- when advance() is called.
--
-- As Twisted's Clock, `calls` is a list kept in order by a stable sort on
-- the deadline, made when a call is scheduled and before and after each
-- call advance() runs; reset() and delay() change a deadline without moving
-- the call in the list, so among calls with the same deadline the order is
-- the list's. `_moved` counts the deadlines changed since the last sort (0:
-- the list is in order, and callLater inserts by bisection).
local Clock = class.Object:extend("Clock")
M.Clock = Clock
Clock.rightNow = 0.0

function Clock:init()
  self.rightNow = 0.0
  self.calls = {}  -- pending DelayedCalls
  self._moved = 0
end

-- Stable sort of a list of calls by deadline (Python's
-- list.sort(key=getTime)). `moved` calls out of place: an insertion sort
-- (linear on a list that is almost in order) for a few, else table.sort
-- with the list position breaking ties.
local function sort_calls(calls, moved)
  local n = #calls
  if moved <= 8 then
    for i = 2, n do
      local dc = calls[i]
      local t = dc.time
      local j = i - 1
      while j >= 1 and calls[j].time > t do
        calls[j + 1] = calls[j]
        j = j - 1
      end
      calls[j + 1] = dc
    end
    return
  end
  local pos = {}
  for i = 1, n do pos[calls[i]] = i end
  table_sort(calls, function(x, y)
    local tx, ty = x.time, y.time
    if tx ~= ty then return tx < ty end
    return pos[x] < pos[y]
  end)
end

local function clock_sort(clock)
  local moved = clock._moved
  if moved == 0 then return end
  sort_calls(clock.calls, moved)
  clock._moved = 0
end

-- Append dc and sort: dc goes after every call due at or before its
-- deadline.
local function clock_insert(clock, dc)
  local calls = clock.calls
  if clock._moved > 0 then
    calls[#calls + 1] = dc
    return clock_sort(clock)
  end
  local t = dc.time
  local lo, hi = 1, #calls + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    if calls[mid].time <= t then lo = mid + 1 else hi = mid end
  end
  table_insert(calls, lo, dc)
end

local function clock_remove(clock, dc)
  local calls = clock.calls
  for i = 1, #calls do
    if calls[i] == dc then
      table_remove(calls, i)
      return
    end
  end
end

--- The current (fake) time, in seconds.
function Clock:seconds()
  checkself("seconds", Clock:isinstance(self), self, "Clock")
  return self.rightNow
end

--- Schedule f(...) `delay` seconds from now.
-- @param delay a finite number >= 0
-- @param f a function
-- @return a DelayedCall
function Clock:callLater(delay, f, ...)
  checkself("callLater", Clock:isinstance(self), self, "Clock")
  check_delay("callLater", 1, "delay", delay)
  checkcallable("callLater", 2, f)
  local t = self.rightNow + delay
  local dc = setmetatable({ time = t, func = f, args = pack(...),
    _clock = self, _base = t, _delayed = 0.0 }, DelayedCall)
  clock_insert(self, dc)
  return dc
end

--- The pending DelayedCalls, in the order they will run (a new list; the
-- live list `calls` is left as it is).
function Clock:getDelayedCalls()
  checkself("getDelayedCalls", Clock:isinstance(self), self, "Clock")
  local out, calls = {}, self.calls
  for i = 1, #calls do out[i] = calls[i] end
  if self._moved > 0 then sort_calls(out, self._moved) end
  return out
end

--- Move time forward by `amount` seconds and run every call that falls due,
-- in deadline order, including calls scheduled while advancing that are
-- due. An error raised by a call propagates (the calls after it stay
-- pending).
-- @param amount a number >= 0
function Clock:advance(amount)
  checkself("advance", Clock:isinstance(self), self, "Clock")
  if type(amount) ~= "number" then
    error(errors.TypeError(("bad argument #1 to 'advance' (number expected, got %s)")
      :format(type(amount))), 2)
  end
  if not (amount >= 0) then
    error(errors.ValueError(("bad argument #1 to 'advance' (amount must be >= 0, got %s)")
      :format(tostring(amount))), 2)
  end
  self.rightNow = self.rightNow + amount
  clock_sort(self)
  local calls = self.calls
  while true do
    local dc = calls[1]
    if dc == nil or dc.time > self.rightNow then break end
    table_remove(calls, 1)
    dc.called = true
    local args = dc.args
    dc.func(unpack(args, 1, args.n))
    clock_sort(self)
  end
end

--- Advance by each amount of the list in turn.
-- @param timings a list of numbers
function Clock:pump(timings)
  checkself("pump", Clock:isinstance(self), self, "Clock")
  errors.checktype("pump", 1, timings, "table")
  for i = 1, #timings do self:advance(timings[i]) end
end

function Clock:__tostring()
  return ("<Clock at %s: %d pending>"):format(tostring(self.rightNow), #self.calls)
end

local function dc_check_state(dc)
  if dc.cancelled then error(errors.AlreadyCancelled(), 3) end
  if dc.called then error(errors.AlreadyCalled(), 3) end
end

--- The time at which the call will run (the Clock's time base).
function DelayedCall:getTime()
  return self.time
end

--- Unschedule the call. Raises AlreadyCalled / AlreadyCancelled.
function DelayedCall:cancel()
  dc_check_state(self)
  clock_remove(self._clock, self)
  self.cancelled = true
  self.func, self.args = nil, nil
end

--- Run the call `seconds` from now. As in Twisted, the call keeps its place
-- in the Clock's list: among calls due at the same time it runs in its old
-- turn.
function DelayedCall:reset(seconds)
  dc_check_state(self)  -- first, whatever the argument, as Twisted's
  check_delay("reset", 1, "seconds", seconds)
  local clock = self._clock
  local t = clock.rightNow + seconds
  if t < self._base then
    self._base, self._delayed = t, 0.0
  else
    self._delayed = t - self._base
  end
  self.time = self._base + self._delayed
  clock._moved = clock._moved + 1
end

--- Postpone the call by `seconds` (may be negative). The call keeps its
-- place in the Clock's list, as with reset.
function DelayedCall:delay(seconds)
  dc_check_state(self)  -- first, whatever the argument, as Twisted's
  if type(seconds) ~= "number" then
    error(errors.TypeError(("bad argument #1 to 'delay' (number expected, got %s)")
      :format(type(seconds))), 2)
  end
  -- as the reactor's DelayedCall: the new time must be a finite number
  if seconds ~= seconds or seconds == huge or seconds == -huge then
    error(errors.ValueError(("bad argument #1 to 'delay' (seconds must be a finite number, got %s)")
      :format(tostring(seconds))), 2)
  end
  local base, delayed = self._base, self._delayed + seconds
  if delayed < 0.0 then base, delayed = base + delayed, 0.0 end
  local t = base + delayed
  if t == huge or t == -huge then
    error(errors.ValueError("bad argument #1 to 'delay' (the new time is out of range)"), 2)
  end
  self._base, self._delayed, self.time = base, delayed, t
  local clock = self._clock
  clock._moved = clock._moved + 1
end

--- True while the call has neither run nor been cancelled.
function DelayedCall:active()
  return not (self.called or self.cancelled)
end

-- DelayedCalls order by when they are due, as Twisted's (__lt__, __le__);
-- compared with anything else, they raise as Lua does
local function dc_operands(a, b)
  if not (DelayedCall:isinstance(a) and DelayedCall:isinstance(b)) then
    local function name(v) return DelayedCall:isinstance(v) and "DelayedCall" or type(v) end
    error(("attempt to compare %s with %s"):format(name(a), name(b)), 3)
  end
end
function DelayedCall.__lt(a, b)
  dc_operands(a, b)
  return a.time < b.time
end
function DelayedCall.__le(a, b)
  dc_operands(a, b)
  return a.time <= b.time
end

function DelayedCall:__tostring()
  local state
  if self.called then state = " called"
  elseif self.cancelled then state = " cancelled"
  else state = (" [%ss]"):format(tostring(self.time - self._clock.rightNow)) end
  return ("<DelayedCall %p%s>"):format(self, state)
end

-------------------------------------------------------------------------------
-- LoopingCall

--- LoopingCall(f, ...): call f(...) repeatedly, every `interval` seconds.
-- Fields: `f`, `a` (the packed arguments), `running`, `interval`, `clock`
-- (default: braid.reactor; assign a Clock in tests), `call` (the pending
-- DelayedCall, or nil), `deferred` (the Deferred of the last start()),
-- `starttime`.
local LoopingCall = class.Object:extend("LoopingCall")
M.LoopingCall = LoopingCall
LoopingCall.running = false
LoopingCall._runAtStart = false

function LoopingCall:init(f, ...)
  checkcallable("LoopingCall", 1, f)
  self.f = f
  self.a = pack(...)
  local ok, reactor = pcall(require, "braid.reactor")
  if ok then self.clock = reactor end
end

local loop_run, schedule_from

-- The start Deferred, taken once. A loop restarted while a Deferred of its
-- function was pending runs two chains of calls (as in Twisted) and finishes
-- twice; the second finish raises, as Twisted's assertion does.
local function take_deferred(self)
  local d = self._deferred
  if d == nil then error(errors.Error("LoopingCall finished twice"), 0) end
  self._deferred = nil
  return d
end

local function loop_done(result, self)
  if self.running then
    schedule_from(self, seconds_of(self.clock))
  else
    take_deferred(self):callback(self)
  end
  return nil
end

local function loop_failed(f, self)
  self.running = false
  take_deferred(self):errback(f)
  return nil
end

-- One call of f; the next is scheduled once it (or its Deferred) is done.
-- As Twisted's maybeDeferred(f):addCallback(done):addErrback(failed): an
-- error in loop_done goes to loop_failed, and one there ends in a Deferred
-- (reported as unhandled), never in the caller (the clock).
loop_run = function(self)
  self.call = nil
  local a = self.a
  local ok, r = xpcall(self.f, msgh, unpack(a, 1, a.n))
  if ok and isDeferred(r) then
    r:addCallback(loop_done, self)
    r:addErrback(loop_failed, self)
    return
  end
  if ok and isFailure(r) then ok = false end
  if ok then ok, r = xpcall(loop_done, msgh, r, self) end
  if not ok then ok, r = xpcall(loop_failed, msgh, r, self) end
  if not ok then defer.fail(r) end
end

-- Schedule the next call on the next interval boundary after `when`
-- (start + n * interval: no drift; intervals already past are skipped).
schedule_from = function(self, when)
  local interval = self.interval
  local delay
  if interval == 0 then
    delay = 0
  else
    local runningFor = when - self.starttime
    local untilNext = interval - (runningFor % interval)
    -- a remainder so small that adding it changes nothing is a boundary:
    -- wait for the next interval instead
    if when == when + untilNext then
      delay = interval
    else
      delay = untilNext
    end
  end
  self.call = call_later(self.clock, delay, loop_run, self)
end

--- Start calling f every `interval` seconds.
-- @param interval a number >= 0 (0: as often as possible, one call per
--   loop turn)
-- @param now call f at once (default true), else after one interval
-- @return a Deferred firing with the LoopingCall when stop() is called, or
--   failing (and stopping the loop) when f raises or its Deferred fails
function LoopingCall:start(interval, now)
  checkself("start", LoopingCall:isinstance(self), self, "LoopingCall")
  if self.running then
    error(errors.Error("Tried to start an already running LoopingCall."), 2)
  end
  if type(interval) ~= "number" then
    error(errors.TypeError(("bad argument #1 to 'start' (number expected, got %s)")
      :format(type(interval))), 2)
  end
  if not (interval >= 0) or interval == huge then
    error(errors.ValueError(("bad argument #1 to 'start' (interval must be >= 0, got %s)")
      :format(tostring(interval))), 2)
  end
  if not is_time_source(self.clock) then
    error(errors.TypeError("LoopingCall.clock is not a time source (braid.reactor "
      .. "is unavailable: assign a Clock to .clock)"), 2)
  end
  -- the clock is read before anything changes: one that raises leaves the
  -- LoopingCall stopped (Twisted's is left running)
  local start = seconds_of(self.clock)
  if type(start) ~= "number" then
    error(errors.TypeError(("LoopingCall.clock:seconds() returned %s, not a number")
      :format(class.nameof(start))), 2)
  end
  self.running = true
  local d = Deferred()
  self._deferred = d
  self.deferred = d
  self.starttime = start
  self.interval = interval
  -- _realLastTime is kept, as in Twisted: withCount counts from the last
  -- call, also across a restart
  self._runAtStart = now ~= false
  if self._runAtStart then
    loop_run(self)
  else
    schedule_from(self, self.starttime)
  end
  return d
end

--- Stop the loop; the Deferred of start() fires with the LoopingCall (at
-- once, or when the pending call of f finishes).
function LoopingCall:stop()
  checkself("stop", LoopingCall:isinstance(self), self, "LoopingCall")
  if not self.running then
    error(errors.Error("Tried to stop a LoopingCall that was not running."), 2)
  end
  self.running = false
  local call = self.call
  if call ~= nil then
    call:cancel()
    self.call = nil
    local d = self._deferred
    self._deferred = nil
    d:callback(self)
  end
end

--- Skip the next call and restart the interval from now.
function LoopingCall:reset()
  checkself("reset", LoopingCall:isinstance(self), self, "LoopingCall")
  if not self.running then
    error(errors.Error("Tried to reset a LoopingCall that was not running."), 2)
  end
  local call = self.call
  if call ~= nil then
    call:cancel()
    self.call = nil
    self.starttime = seconds_of(self.clock)
    schedule_from(self, self.starttime)
  end
end

-- Python's int(): truncate toward zero.
local function trunc(x)
  if x >= 0 then return floor(x) end
  return ceil(x)
end

local function interval_of(self, t)
  return trunc((t - self.starttime) / self.interval)
end

--- LoopingCall.withCount(f): a LoopingCall calling f(count), where count
-- is the number of intervals elapsed since the last call (1 normally;
-- more when calls were skipped; always 1 with interval 0). As in Twisted,
-- a restart counts from the last call before the stop; a count of 0 there
-- skips the call.
-- @param f a function
-- @return a LoopingCall (not started)
function LoopingCall.withCount(cls, f)
  if f == nil and not class.isclass(cls) then cls, f = LoopingCall, cls end
  checkcallable("withCount", 1, f)
  local self
  local function counter()
    local now = seconds_of(self.clock)
    if self.interval == 0 then
      self._realLastTime = now
      return f(1)
    end
    local lastTime = self._realLastTime
    if lastTime == nil then
      lastTime = self.starttime
      if self._runAtStart then lastTime = lastTime - self.interval end
    end
    local count = interval_of(self, now) - interval_of(self, lastTime)
    if count > 0 then
      self._realLastTime = now
      return f(count)
    end
    return nil
  end
  self = cls(counter)
  return self
end

function LoopingCall:__tostring()
  return ("LoopingCall<%s>(%s)"):format(tostring(self.interval), tostring(self.f))
end

-------------------------------------------------------------------------------
-- deferLater

local function deferLater_cb(_, f, ...)
  if f == nil then return nil end
  return f(...)
end

--- A Deferred of f(...)'s result, `delay` seconds from now.
-- Cancelling it cancels the call (the Deferred fails with CancelledError).
-- @param clock braid.reactor or a time source such as Clock
-- @param delay seconds, a number >= 0
-- @param f optional function (without it the Deferred fires with nil)
function M.deferLater(clock, delay, f, ...)
  if not is_time_source(clock) then
    error(errors.TypeError(("bad argument #1 to 'deferLater' (reactor or Clock expected, got %s)")
      :format(class.nameof(clock))), 2)
  end
  check_delay("deferLater", 2, "delay", delay)
  if f ~= nil then checkcallable("deferLater", 3, f) end
  local call
  local d = Deferred(function() call:cancel() end)
  d:addCallback(deferLater_cb, f, ...)
  call = call_later(clock, delay, d.callback, d, nil)
  return d
end

-------------------------------------------------------------------------------
-- Cooperator

-- The monotonic clock of braid.core when available (wall-clock speed);
-- os.clock otherwise.
local slice_now
local function get_slice_now()
  if slice_now == nil then
    local ok, core = pcall(require, "braid.core")
    if ok and type(core) == "table" and core.monotonic then
      slice_now = core.monotonic
    else
      slice_now = os.clock
    end
  end
  return slice_now
end

M.MAX_SLICE = 0.01
M._EPSILON = 0.00000001

--- The default terminationPredicateFactory: a predicate that is true once
-- MAX_SLICE (10 ms) has passed since it was made.
function M._Timer()
  local now = get_slice_now()
  local deadline = now() + M.MAX_SLICE
  return function() return now() >= deadline end
end

--- The default scheduler: the reactor's callLater(_EPSILON, f), so I/O and
-- timers run between slices.
function M._defaultScheduler(f)
  return require("braid.reactor").callLater(M._EPSILON, f)
end

--- A task inside a Cooperator (made by cooperate).
local CooperativeTask = class.Object:extend("CooperativeTask")
M.CooperativeTask = CooperativeTask

function CooperativeTask:init(iterator, cooperator)
  self._iterator = iterator
  self._cooperator = cooperator
  self._deferreds = {}
  self._pauseCount = 0
  self._completionState = nil   -- an error class once finished
  self._completionResult = nil
  cooperator:_addTask(self)
end

--- A Deferred firing with the iterator once it is exhausted, or failing
-- with its error, TaskStopped or SchedulerStopped. A new one each call.
function CooperativeTask:whenDone()
  checkself("whenDone", CooperativeTask:isinstance(self), self, "CooperativeTask")
  local d = Deferred()
  if self._completionState == nil then
    local ds = self._deferreds
    ds[#ds + 1] = d
  else
    d:callback(self._completionResult)
  end
  return d
end

local function check_finish(self)
  local state = self._completionState
  if state ~= nil then error(state(), 3) end
end

--- Stop doing work until resume(); pauses nest. Raises a TaskFinished
-- error (TaskDone, TaskStopped, TaskFailed) when the task has finished.
function CooperativeTask:pause()
  checkself("pause", CooperativeTask:isinstance(self), self, "CooperativeTask")
  check_finish(self)
  local n = self._pauseCount + 1
  self._pauseCount = n
  if n == 1 then self._cooperator:_removeTask(self) end
end

--- Undo one pause(). Raises NotPaused when the task is not paused.
function CooperativeTask:resume()
  checkself("resume", CooperativeTask:isinstance(self), self, "CooperativeTask")
  local n = self._pauseCount
  if n == 0 then error(NotPaused(), 2) end
  n = n - 1
  self._pauseCount = n
  if n == 0 and self._completionState == nil then
    self._cooperator:_addTask(self)
  end
end

function CooperativeTask:_completeWith(state, result)
  self._completionState = state
  self._completionResult = result
  if self._pauseCount == 0 then self._cooperator:_removeTask(self) end
  -- fire after the bookkeeping: a callback may stop the cooperator
  local ds = self._deferreds
  self._deferreds = {}
  for i = 1, #ds do ds[i]:callback(result) end
end

--- Stop the task for good; whenDone() Deferreds fail with TaskStopped.
-- Raises a TaskFinished error when the task has already finished.
function CooperativeTask:stop()
  checkself("stop", CooperativeTask:isinstance(self), self, "CooperativeTask")
  check_finish(self)
  self:_completeWith(TaskStopped, Failure(TaskStopped()))
end

local function task_resume(_, self)
  self:resume()
  return nil
end

local function task_fail_later(f, self)
  if self._completionState ~= nil then return nil end  -- stopped meanwhile
  self:_completeWith(TaskFailed, f)
  return nil
end

function CooperativeTask:_oneWorkUnit()
  local it = self._iterator
  local ok, r = xpcall(it, msgh)
  if self._completionState ~= nil and not (ok and isDeferred(r)) then
    -- the unit stopped its own task (or its Cooperator): it stays stopped
    -- (its whenDone() Deferreds have failed), where Twisted's would complete
    -- it again and fail in its _removeTask; an error it raised after the
    -- stop is logged, not lost. A Deferred it returns raises the stop's
    -- error out of the tick below (pause), as Twisted's does.
    if not ok then require("braid.log").err(r, "Error in a stopped cooperative task") end
    return
  end
  if not ok then
    return self:_completeWith(TaskFailed, r)
  end
  if r == nil then
    return self:_completeWith(TaskDone, it)
  end
  if isDeferred(r) then
    self:pause()
    r:addCallbacks(task_resume, task_fail_later, { self }, { self })
  end
end

function CooperativeTask:__tostring()
  local state = self._completionState
  return ("<CooperativeTask %s>"):format(state and state.__name
    or (self._pauseCount > 0 and "paused" or "running"))
end

--- Cooperator(opts?): a cooperative task scheduler.
-- opts.scheduler(f) must arrange for f() to be called later and return an
-- object with cancel() (default: reactor.callLater(_EPSILON, f));
-- opts.terminationPredicateFactory() returns a predicate telling a slice
-- to end (default: after 10 ms); opts.started (default true).
local Cooperator = class.Object:extend("Cooperator")
M.Cooperator = Cooperator

function Cooperator:init(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(errors.TypeError(("bad argument #1 to 'Cooperator' (table expected, got %s)")
      :format(type(opts))), 3)
  end
  opts = opts or {}
  if opts.scheduler ~= nil then checkcallable("Cooperator", 1, opts.scheduler) end
  if opts.terminationPredicateFactory ~= nil then
    checkcallable("Cooperator", 1, opts.terminationPredicateFactory)
  end
  self._tasks = {}
  self._metaList = self._tasks  -- round-robin cursor: a list and an index
  self._metaIndex = 1
  self._terminationPredicateFactory = opts.terminationPredicateFactory or M._Timer
  self._scheduler = opts.scheduler or M._defaultScheduler
  self._delayedCall = nil
  self._stopped = false
  self._started = opts.started ~= false
  self._mustScheduleOnStart = false
  self.running = self._started
  self._tickFn = function() return self:_tick() end
end

--- Run `iterator` (a function called until it returns nil) as a task.
-- A Deferred returned by the iterator pauses the task until it fires.
-- @return a CooperativeTask
function Cooperator:cooperate(iterator)
  checkself("cooperate", Cooperator:isinstance(self), self, "Cooperator")
  checkcallable("cooperate", 1, iterator)
  return CooperativeTask(iterator, self)
end

--- As cooperate, but return the task's whenDone() Deferred.
-- @param doneDeferred optional Deferred to fire instead of a new one
function Cooperator:coiterate(iterator, doneDeferred)
  checkself("coiterate", Cooperator:isinstance(self), self, "Cooperator")
  checkcallable("coiterate", 1, iterator)
  if doneDeferred == nil then
    doneDeferred = Deferred()
  elseif not isDeferred(doneDeferred) then
    errors.argerror("coiterate", 2, "Deferred expected, got " .. class.nameof(doneDeferred))
  end
  CooperativeTask(iterator, self):whenDone():chainDeferred(doneDeferred)
  return doneDeferred
end

function Cooperator:_addTask(task)
  local tasks = self._tasks
  tasks[#tasks + 1] = task
  if self._stopped then
    task:_completeWith(SchedulerStopped, Failure(SchedulerStopped()))
  else
    self:_reschedule()
  end
end

function Cooperator:_removeTask(task)
  local tasks = self._tasks
  for i = 1, #tasks do
    if tasks[i] == task then
      table_remove(tasks, i)
      -- keep the round-robin cursor on the task it pointed at
      if self._metaList == tasks and i < self._metaIndex then
        self._metaIndex = self._metaIndex - 1
      end
      break
    end
  end
  -- no work left: no call stays scheduled
  if #tasks == 0 and self._delayedCall ~= nil then
    local dc = self._delayedCall
    self._delayedCall = nil
    dc:cancel()
  end
end

--- Run one slice: tasks round-robin until the termination predicate says
-- stop or no task is left.
function Cooperator:_tick()
  self._delayedCall = nil
  local terminator = self._terminationPredicateFactory()
  while #self._tasks > 0 do
    while true do
      local list, i = self._metaList, self._metaIndex
      local t = list[i]
      if t == nil then break end
      self._metaIndex = i + 1
      t:_oneWorkUnit()
      if terminator() then return self:_reschedule() end
    end
    self._metaList, self._metaIndex = self._tasks, 1
  end
  return self:_reschedule()
end

function Cooperator:_reschedule()
  if not self._started then
    self._mustScheduleOnStart = true
    return
  end
  if self._delayedCall == nil and #self._tasks > 0 then
    self._delayedCall = self._scheduler(self._tickFn)
  end
end

--- Begin scheduling slices (for a Cooperator made with started = false).
function Cooperator:start()
  checkself("start", Cooperator:isinstance(self), self, "Cooperator")
  self._stopped = false
  self._started = true
  self.running = true
  if self._mustScheduleOnStart then
    self._mustScheduleOnStart = false
    self:_reschedule()
  end
end

--- Stop scheduling: every task's whenDone() fails with SchedulerStopped,
-- and tasks added later fail at once.
function Cooperator:stop()
  checkself("stop", Cooperator:isinstance(self), self, "Cooperator")
  self._stopped = true
  self.running = false
  local tasks = self._tasks
  local snapshot = {}
  for i = 1, #tasks do snapshot[i] = tasks[i] end
  for i = 1, #snapshot do
    snapshot[i]:_completeWith(SchedulerStopped, Failure(SchedulerStopped()))
  end
  self._tasks = {}
  self._metaList, self._metaIndex = self._tasks, 1
  local dc = self._delayedCall
  if dc ~= nil then
    self._delayedCall = nil
    dc:cancel()
  end
end

function Cooperator:__tostring()
  return ("<Cooperator %d tasks%s>"):format(#self._tasks, self.running and "" or " stopped")
end

M._theCooperator = Cooperator()

--- Run `iterator` on the global Cooperator; returns a CooperativeTask.
function M.cooperate(iterator)
  checkcallable("cooperate", 1, iterator)
  return M._theCooperator:cooperate(iterator)
end

--- Run `iterator` on the global Cooperator; returns its whenDone() Deferred.
function M.coiterate(iterator)
  checkcallable("coiterate", 1, iterator)
  return M._theCooperator:coiterate(iterator)
end

-------------------------------------------------------------------------------
-- react

--- Internal form of react: `args` a packed list, `reactor` a reactor (or a
-- fake one with run, stop, callWhenRunning, addSystemEventTrigger called
-- with `.`), `exit` the exit function. Returns the exit code when `exit`
-- returns.
function M._react(main, args, reactor, exit)
  checkcallable("react", 1, main)
  reactor = reactor or require "braid.reactor"
  exit = exit or M._exit or M._processExit
  args = args or { n = 0 }
  local finished = defer.maybeDeferred(main, reactor, unpack(args, 1, args.n or #args))
  local code = 0
  local stopping = false
  local trigger = reactor.addSystemEventTrigger("before", "shutdown", function()
    stopping = true
  end)
  local function stop(result, stopReactor)
    if stopReactor then
      local ok, e = pcall(reactor.stop)
      if not ok and not errors.isinstance(e, errors.ReactorNotRunning) then error(e, 0) end
    end
    if isFailure(result) then
      require("braid.log").err(result, "main function encountered error")
      code = 1
    end
  end
  finished:addBoth(function(result)
    if stopping then
      stop(result, false)
    else
      reactor.callWhenRunning(stop, result, true)
    end
    return nil
  end)
  reactor.run()
  if trigger ~= nil and reactor.removeSystemEventTrigger then
    pcall(reactor.removeSystemEventTrigger, trigger)
  end
  exit(code)
  return code
end

--- Run the reactor, call main(reactor, ...) (which returns a Deferred or a
-- value), stop the reactor once that fires and exit the process: 0 on
-- success, 1 (with the error logged) on failure. Tests may replace
-- `task._exit` (default os.exit).
function M.react(main, ...)
  checkcallable("react", 1, main)
  return M._react(main, pack(...), nil, nil)
end

M._exit = nil

--- react's exit: the end of the script as the braid command makes it
-- (unhandled Failures reported), then os.exit closing the Lua state, as
-- Python's sys.exit tears the interpreter down: what is still referenced
-- is finalized and reported too.
function M._processExit(code)
  local reactor = package.loaded["braid.reactor"]
  if type(reactor) == "table" and reactor._scriptDone then reactor._scriptDone() end
  os.exit(code, true)
end

return M
