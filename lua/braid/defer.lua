--- braid.defer: Deferreds and inlineCallbacks, as twisted.internet.defer.
-- test-case-name: spec/defer_spec.lua, spec/defer_list_spec.lua,
--   spec/defer_unhandled_spec.lua, spec/inlinecallbacks_spec.lua
--
-- Invariants:
-- * A Deferred keeps its callback chain inline in its own array part, as
--   triples (callback, errback, args) at indices _h+1 .. _n. A false
--   callback, or a false or nil errback, passes the result through without
--   a call; args is false or nil (no extra arguments), a packed list
--   {n = ...}, or, for the internal markers CONTINUE, FIRE and RESUME, the
--   Deferred or coroutine state the marker refers to. Consumed slots are
--   set to nil so callbacks can be collected (runtime/deferred.c leaves a
--   false or nil args slot as it is), and _n goes back to 0 when the chain
--   is empty: the slots past _n hold nil or false only, so the C adds
--   write the errback and args slots only when they hold something. The
--   callback slot is always written (false if none): nil there marks a
--   consumed entry. _h is only written when a run stops early (chaining);
--   a restart after an error skips the consumed entries.
-- * Fields an instance lacks read their defaults from the Deferred class
--   table, so no lookup reaches the class chain's __index function.
-- * run() is Twisted's iterative _runCallbacks: a Deferred returned by a
--   callback is chained with a CONTINUE entry instead of a recursive call, so
--   arbitrarily long chains use a Lua table, not the C stack. Each Deferred of
--   the chain runs its callbacks inside one xpcall (not one per callback);
--   an error restarts the loop after the callback that raised.
-- * A Deferred has no __gc. While its result is an unhandled Failure it
--   holds a small sentinel table (field _dbg) whose __gc queues the report;
--   reports are logged by flushUnhandled(), never from __gc itself.
-- * Coroutines of inlineCallbacks are resumed by start() (the first,
--   synchronous run) and by enqueue() when a Deferred they wait on fires:
--   at once, as in Twisted, unless nested too deep for the C stack; then
--   from the module run queue, drained by the outermost resume.
local class = require "braid.class"
local errors = require "braid.error"
local failure = require "braid.failure"

local M = {}

local Failure = failure.Failure
local msgh = failure.msgh
-- metatables are read raw (a __metatable field does not make a value a
-- Failure or a Deferred), as the C runner reads them
local getmetatable = debug.getmetatable
local setmetatable, rawget, rawequal = setmetatable, rawget, rawequal
local type, select, error, xpcall, pcall, tostring = type, select, error, xpcall, pcall, tostring
local pack, unpack, concat = table.pack, table.unpack, table.concat
local traceback, getinfo = debug.traceback, debug.getinfo
local resume_raising = failure._resumeRaising
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_running, co_status, co_close = coroutine.running, coroutine.status, coroutine.close
local co_isyieldable = coroutine.isyieldable
local checkcallable = errors.checkcallable

-------------------------------------------------------------------------------
-- Errors

M.AlreadyCalledError = errors.class("AlreadyCalledError")
M.CancelledError = errors.class("CancelledError")
M.TimeoutError = errors.class("TimeoutError", errors.TimeoutError, "Deferred timed out",
  { period = false, text = errors.Error.text })  -- not ConnectError's text
M.QueueOverflow = errors.class("QueueOverflow")
M.QueueUnderflow = errors.class("QueueUnderflow")
M.NotACoroutineError = errors.class("NotACoroutineError", errors.TypeError)
M.NoCurrentExceptionError = errors.NoCurrentExceptionError

local AlreadyCalledError, CancelledError = M.AlreadyCalledError, M.CancelledError
local NotACoroutineError = M.NotACoroutineError

--- FirstError(failure, index): the first failure of a DeferredList with
-- fireOnOneErrback (or of gatherResults); index counts from 1.
local FirstError = errors.class("FirstError")
M.FirstError = FirstError
function FirstError:init(subFailure, index)
  self.subFailure, self.index = subFailure, index
end
function FirstError:text()
  local sub = self.subFailure
  local what = sub ~= nil and (Failure:isinstance(sub) and sub:brief() or tostring(sub)) or "?"
  return ("[#%s, %s]"):format(tostring(self.index), what)
end
function FirstError.__eq(a, b)
  return FirstError:isinstance(a) and FirstError:isinstance(b)
    and a.index == b.index and a.subFailure == b.subFailure
end

--- FailureGroup(failures): every Deferred given to race() failed.
local FailureGroup = errors.class("FailureGroup")
M.FailureGroup = FailureGroup
function FailureGroup:init(failures)
  self.failures = failures or {}
end
function FailureGroup:text()
  local parts = {}
  for i, f in ipairs(self.failures) do parts[i] = f:brief() end
  return "all failed: " .. concat(parts, "; ")
end

M.SUCCESS, M.FAILURE = true, false

-------------------------------------------------------------------------------
-- State shared by the module

local debugging = false

-- Markers stored in the callback slot of internal chain entries.
local CONTINUE = setmetatable({}, { __name = "CONTINUE" })  -- arg: waiting Deferred
local RESUME = setmetatable({}, { __name = "RESUME" })      -- arg: coroutine state
local FIRE = setmetatable({}, { __name = "FIRE" })          -- arg: chained Deferred
local AWAIT = setmetatable({}, { __name = "AWAIT" })        -- what await yields

-- Nesting of protected calls and resumes made by this module, so that the
-- first run or a resume of an inlineCallbacks function can be queued instead of
-- overflowing Lua's C stack (LUAI_MAXCCALLS is 200).
-- (The C chain runner of runtime/deferred.c keeps its own count: c_depth.)
local cdepth = 0
local c_depth = function() return 0 end
local MAX_CDEPTH = 150
-- What a nested resume adds to cdepth: the C calls between a Deferred's
-- callback run and the coroutine it resumes (xpcall, the resume, the
-- callback run inside it), so that nested resumes stop well before Lua's
-- limit of 200 nested C calls.
local NEST_COST = 8
-- A run() nested this deep (runs under way: run_nest) is put off: its Deferred
-- goes to the run queue below, drained by the outermost run when it ends,
-- so that callbacks firing other Deferreds (a DeferredLock handing over,
-- nested DeferredLists, cancel cascades) cannot overflow Lua's C stack.
-- Below it, runs nest as Twisted's do.
local MAX_RUN_NEST = 60
local RUNQ, runq_head, runq_tail = {}, 1, 0
local run_nest = 0  -- runs under way (the outermost drains RUNQ)
local draining = false
-- run_state([nest, drain]) -> nest, drain: run_nest and draining, set first
-- when given (the C runner's own pair when it is in use; see run_co).
local run_state = function(nest, drain)
  if nest then run_nest, draining = nest, drain end
  return run_nest, draining
end
local runs_in_cdepth = true  -- the Lua runner counts its runs in cdepth too

local Deferred = class.Object:extend("Deferred")
M.Deferred = Deferred
-- Defaults of every field an instance may lack, so that reading one stops at
-- this table (instances hold only what differs; lookups never reach the
-- class chain's __index function).
Deferred.called = false
Deferred.paused = 0
Deferred._h = 0
Deferred._n = 0
Deferred._running = false
Deferred._chainedTo = false
Deferred._canceller = false
Deferred._suppress = false
Deferred._dbg = false
Deferred._ic = false
Deferred._awaitedBy = false

-- KIND[metatable]: 1 for Failure classes, 2 for Deferred classes, 0 else.
local KIND = setmetatable({}, { __mode = "k" })
local function kind_of(mt)
  local k = KIND[mt]
  if k ~= nil then return k end
  k = 0
  local c = mt
  while type(c) == "table" do
    if c == Failure then k = 1 break end
    if c == Deferred then k = 2 break end
    c = rawget(c, "super")
  end
  KIND[mt] = k
  return k
end
KIND[Failure], KIND[Deferred] = 1, 2

local function is_failure(v)
  local mt = getmetatable(v)
  if mt == nil then return false end
  return mt == Failure or (KIND[mt] or kind_of(mt)) == 1
end

local function is_deferred(v)
  local mt = getmetatable(v)
  if mt == nil then return false end
  return mt == Deferred or (KIND[mt] or kind_of(mt)) == 2
end
M.isDeferred = is_deferred

-- A method's self must be a Deferred (methods called with '.', or on
-- another object, raise here rather than inside the chain).
local function check_self(self, fname)
  if not is_deferred(self) then
    error(errors.TypeError(("bad argument #1 to '%s' (Deferred expected, got %s; "
      .. "call it as d:%s(...))"):format(fname, class.nameof(self), fname)), 3)
  end
end

-- The end of self's chain, _n; an _n no chain can reach was overwritten by
-- Lua code: say so rather than index or walk that far (deferred.c's
-- check_n). Raises at the caller of the method calling it.
local MAX_N = 1 << 31
local function chain_end(self)
  local n = self._n
  if type(n) ~= "number" or not (n >= 0 and n <= MAX_N) then
    error(("corrupt Deferred: its _n field is %s"):format(tostring(n)), 3)
  end
  return n
end

local function traceback_at(level)
  return (traceback("", level + 1):gsub("^\n", ""))
end

-------------------------------------------------------------------------------
-- Unhandled failures

local UQ, UQINFO = {}, {}                               -- queued reports
local QUEUED = setmetatable({}, { __mode = "k" })       -- failure -> true
local wake_asked = false

local function ask_wake()
  if wake_asked then return end
  local reactor = package.loaded["braid.reactor"]
  local wake = type(reactor) == "table" and rawget(reactor, "_wake")
  if wake then
    wake_asked = true
    pcall(wake)
  end
end

local function debug_text(s)
  local out = {}
  if s.creator then
    out[#out + 1] = " C: Deferred was created:\n C:" .. (s.creator:gsub("\n", "\n C:"))
  end
  if s.invoker then
    out[#out + 1] = " I: First Invoker was:\n I:" .. (s.invoker:gsub("\n", "\n I:"))
  end
  return concat(out, "\n")
end

local function log_failure(f, why)
  local ok, log = pcall(require, "braid.log")
  if ok and type(log) == "table" and log.err then
    log.err(f, why)
  else
    io.stderr:write(why, "\n", f:getTraceback())
  end
end

-- Log f's unhandled-error report; info is its sentinel when that holds
-- debug records. Two events, as Twisted's (test_defer.LogTests): a
-- critical "Unhandled error in Deferred:" without a failure, then the
-- failure, its text "Unhandled Error" or the debug records, namespace
-- "braid.defer" (Twisted's is its module's).
local logger
local function report(f, info)
  local ok, log = pcall(require, "braid.log")
  if ok and type(log) == "table" and log.Logger then
    if logger == nil or getmetatable(logger) ~= log.Logger then logger = log.Logger("braid.defer") end
    logger:critical("Unhandled error in Deferred:")
    if info then
      logger:failure("(debug: {debugInfo})", f, "critical", { debugInfo = debug_text(info) })
    else
      logger:failure("Unhandled Error", f)
    end
    return
  end
  local why = "Unhandled error in Deferred:"
  if info then why = why .. "\n(debug: " .. debug_text(info) .. ")" end
  log_failure(f, why)
end

-- The sentinel's finalizer: queue only (no I/O, no allocation beyond the
-- queue slots); flushUnhandled() does the logging. Once the state is
-- closing (M._atExit), nothing will flush a queue: it reports at once.
local SENTINEL = {}
local at_exit = false
SENTINEL.__gc = function(s)
  local f = s.failure
  if f == nil or QUEUED[f] then return end
  local info = (s.creator or s.invoker) and s or false
  QUEUED[f] = true  -- at most once, however many Deferreds hold it
  if at_exit then
    -- braid.log's file may be closed by now: stderr then
    if not pcall(report, f, info) then pcall(io.stderr.write, io.stderr, tostring(f), "\n") end
    return
  end
  local n = #UQ + 1
  UQ[n] = f
  UQINFO[n] = info
  ask_wake()
end

local function mark_failed(d, f)
  local s = d._dbg
  if s then s.failure = f return end
  s = setmetatable({ failure = f }, SENTINEL)
  -- making it may run a finalizer that handles f (an errback added now
  -- runs at once) or marks d itself: then this sentinel has nothing to say
  if rawget(d, "result") ~= f or d._dbg then
    s.failure = nil
    if rawget(d, "result") == f then d._dbg.failure = f end
    return
  end
  d._dbg = s
end

local function clear_failed(d)  -- requires d._dbg
  local s = d._dbg
  s.failure = nil
  if not (s.creator or s.invoker) then d._dbg = nil end
end

--- Log every queued unhandled-error report (`Unhandled error in Deferred:`).
-- The reactor calls this each loop turn (when asked) and when run ends.
-- @return the number of reports logged
function M.flushUnhandled()
  wake_asked = false
  local list, infos = UQ, UQINFO
  local n = #list
  if n == 0 then return 0 end
  UQ, UQINFO = {}, {}
  for i = 1, n do report(list[i], infos[i]) end
  return n
end

--- The script is done and the Lua state is about to close (the braid
-- command calls this): a Failure still left in a Deferred that is only
-- collected when the state closes is logged then, at once, as Twisted
-- logs what the interpreter collects at exit.
function M._atExit()
  at_exit = true
end

--- The Failures queued for an unhandled-error report and not yet logged.
-- A spec helper runs collectgarbage() first so that every unreachable
-- Deferred has been finalized. With `clear`, the reports are taken: they
-- will not be logged (the caller reports them, e.g. by failing the spec).
-- @param clear optional boolean
-- @return a list of Failures, oldest first
function M.pendingUnhandled(clear)
  local out = {}
  for i = 1, #UQ do out[i] = UQ[i] end
  if clear then UQ, UQINFO = {}, {} end
  return out
end

local install_methods  -- set below: the C or the Lua hot methods

--- Record where each Deferred is made and fired (costly; for debugging).
function M.setDebugging(on)
  debugging = not not on
  install_methods()
end

function M.getDebugging()
  return debugging
end

local function debug_slot(d)
  local s = d._dbg
  if not s then
    s = setmetatable({}, SENTINEL)
    d._dbg = s
  end
  return s
end

-------------------------------------------------------------------------------
-- The callback loop

local run, enqueue

-- The result of a callback that returned its own Deferred.
local function returned_itself()
  return Failure(errors.TypeError("Callback returned the Deferred it was attached to"),
    traceback_at(2))
end

-- An error that escaped the message handler (e.g. "error in error handling").
local function wrap_failure(e)
  if is_failure(e) then return e end
  return Failure(e, "")
end

-- Whether e (a Failure or a raw error) is Lua's stack overflow, or an error
-- raised while handling one: no room is left to run callbacks at this depth.
local function overflowed(e)
  local v = is_failure(e) and e.value or e
  return type(v) == "string" and (v:find("stack overflow", 1, true) ~= nil
    or v == "error in error handling")
end

-- Mark d as fired with v (used by callback, errback and chainDeferred).
-- Returns false when the call is swallowed after a cancel without canceller.
local function already_called(d, level)
  if d._suppress then
    d._suppress = false
    return false
  end
  -- the records, while debugging is on (Twisted looks at the flag now,
  -- not at whether it was on when the Deferred was made or fired)
  local extra
  if debugging then
    local s = d._dbg
    extra = "\n" .. ((s and (s.creator or s.invoker)) and debug_text(s) or "")
  end
  error(AlreadyCalledError(extra), level + 1)
end

local function prefire(d, v, level)
  if d.called then return already_called(d, level + 1) end
  if debugging then debug_slot(d).invoker = traceback_at(level + 1) end
  d.called = true
  d.result = v
  return true
end

-- Run the callbacks of one Deferred. Returns a Deferred to continue with
-- (a chained Deferred that just got a result) or nil when done with cur.
-- `plain` tells that cur.result is known not to be a Failure; `resumed`
-- that cur is back from a chainDeferred handoff (see FIRE below).
local function segment(cur, plain, resumed)
  local result = cur.result
  local failed = false
  if resumed then
    -- the chained Deferred is done: its callback() returned nil
    result = nil
    cur.result = nil
  elseif result ~= nil and not plain then
    local mt = getmetatable(result)
    if mt ~= nil then failed = mt == Failure or (KIND[mt] or kind_of(mt)) == 1 end
  end
  cur._running = true
  local h = cur._h
  -- after an error the entries up to the one that raised are already nil
  while cur[h + 1] == nil and h < cur._n do h = h + 3 end
  while h < cur._n do
    local fn
    if failed then fn = cur[h + 2] else fn = cur[h + 1] end
    local a = cur[h + 3]
    cur[h + 1] = nil; cur[h + 2] = nil; cur[h + 3] = nil
    h = h + 3
    if fn then
      local r
      if not a then  -- nil or false: no extra arguments (the C adds write no false)
        r = fn(result)
      elseif fn == CONTINUE then
        -- give our result to the Deferred waiting on us, then run it
        a.result = result
        cur.result = nil
        if cur._dbg then clear_failed(cur) end
        a.paused = a.paused - 1
        cur._running = false
        cur._h = h
        return a
      elseif fn == RESUME then
        -- an await: the coroutine gets the result, we keep nil
        a.waiting = nil
        cur.result = nil
        local v = result
        result, failed = nil, false
        enqueue(a, v)
        goto continue
      elseif fn == FIRE then
        -- chainDeferred: fire a, and run it from here (no recursion). In
        -- Twisted a's callbacks run inside this callback (a.callback), so
        -- cur keeps its result and stays running until a is done; run()
        -- then resumes cur with the result nil (what a.callback returned).
        if prefire(a, result, 1) and a.paused == 0 then
          cur._h = h
          return a
        end
        cur.result = nil
        result, failed = nil, false
        goto continue
      else
        r = fn(result, unpack(a, 1, a.n))
      end
      if r == nil then
        failed = false
      else
        local mt = getmetatable(r)
        if mt == nil then
          failed = false
        elseif mt == Failure then
          failed = true
        else
          local k = KIND[mt] or kind_of(mt)
          if k == 2 then
            if r == cur then
              r = returned_itself()
              failed = true
            elseif not r.called or r.paused > 0 or is_deferred(r.result) then
              -- wait for r: pause and chain
              cur.paused = cur.paused + 1
              cur._chainedTo = r
              cur.result = r
              local n = r._n
              r[n + 1] = CONTINUE; r[n + 2] = CONTINUE; r[n + 3] = cur
              r._n = n + 3
              cur._running = false
              cur._h = h
              if cur._dbg then clear_failed(cur) end
              return nil
            else
              -- r already has a result: take it
              local rr = r.result
              r.result = nil
              if r._dbg then clear_failed(r) end
              r = rr
              failed = is_failure(rr)
            end
          else
            failed = k == 1
          end
        end
      end
      result = r
      cur.result = r
    end
    ::continue::
  end
  cur._running = false
  if h ~= 0 then
    cur._n = 0
    if cur._h ~= 0 then cur._h = nil end
  end
  if failed then mark_failed(cur, result)
  elseif cur._dbg then clear_failed(cur) end
  return nil
end

-- Twisted's _runCallbacks, iterative over the chain of waiting Deferreds.
-- A Deferred on the stack is either waiting to go on after a CONTINUE (not
-- running) or one whose chainDeferred callback is firing the one above it
-- (still running: Twisted's outer _runCallbacks, which goes on whatever
-- happens to the inner chain).
local drain_runs

run = function(self, plain)
  if self._running then return end
  if run_nest >= MAX_RUN_NEST then
    runq_tail = runq_tail + 1
    RUNQ[runq_tail] = self
    return
  end
  local cur, stack, sp = self, nil, 0
  local resumed = false
  cdepth = cdepth + 1
  run_nest = run_nest + 1
  while true do
    if not resumed and cur.paused > 0 then
      -- cur waits, and the chain below it with it, up to a running one
      repeat
        cur = nil
        if sp == 0 then break end
        cur = stack[sp]
        stack[sp] = nil
        sp = sp - 1
      until cur._running
      if cur == nil then break end
      resumed = true
    end
    if not resumed and cur._chainedTo then cur._chainedTo = nil end
    local ok, nxt = xpcall(segment, msgh, cur, plain, resumed)
    plain, resumed = nil, false
    local retried = 0
    while not ok do
      nxt = wrap_failure(nxt)
      -- each error a callback raises uses its entry up, so there are never
      -- more than entries (plus one): past that, segment itself raises (a
      -- corrupt field) and would do so for ever
      if retried > 0 and (overflowed(nxt)
          or retried > (math.tointeger(rawget(cur, "_n")) or 0) // 3 + 1) then
        -- retrying cannot get further at this depth: fail the caller (a
        -- callback one level up, which has room) instead of looping
        cur._running = false
        for i = sp, 1, -1 do stack[i]._running = false end  -- the stacked ones too
        cdepth = cdepth - 1
        run_nest = run_nest - 1
        error(nxt, 0)
      end
      retried = retried + 1
      cur.result = nxt
      ok, nxt = xpcall(segment, msgh, cur)
    end
    if nxt ~= nil then
      sp = sp + 1
      if stack == nil then stack = {} end
      stack[sp] = cur
      cur = nxt
    elseif sp > 0 then
      cur = stack[sp]
      stack[sp] = nil
      sp = sp - 1
      resumed = cur._running
    else
      break
    end
  end
  cdepth = cdepth - 1
  run_nest = run_nest - 1
  if run_nest == 0 and not draining and runq_head <= runq_tail then drain_runs() end
end

-- Run the Deferreds put off by run(), oldest first, each as an outermost
-- run (which may put off more, run by this same loop).
drain_runs = function()
  draining = true
  while runq_head <= runq_tail do
    local d = RUNQ[runq_head]
    RUNQ[runq_head] = nil
    runq_head = runq_head + 1
    local ok, err = pcall(run, d)
    if not ok then  -- the rest waits for the next outermost run
      draining = false
      error(err, 0)
    end
  end
  runq_head, runq_tail = 1, 0
  draining = false
end

-------------------------------------------------------------------------------
-- Deferred

-- The array part holds three callback entries and the hash part the four
-- fields a Deferred always writes, so the usual life of a Deferred never
-- resizes its table.
local function new_deferred(mt, canceller)
  local d
  if canceller then
    d = setmetatable({ nil, nil, nil, nil, nil, nil, nil, nil, nil,
      called = false, result = nil, _n = 0, _running = false, _canceller = canceller }, mt)
  else
    d = setmetatable({ nil, nil, nil, nil, nil, nil, nil, nil, nil,
      called = false, result = nil, _n = 0, _running = false }, mt)
  end
  if debugging then
    d._dbg = setmetatable({ made = os.time(), creator = traceback_at(3) }, SENTINEL)
  end
  return d
end

--- Deferred(canceller?): a result that is not there yet.
-- `canceller(d)` is called by `d:cancel()` before the Deferred fires.
function Deferred.__new(cls, canceller, ...)
  if cls ~= Deferred then
    local d = new_deferred(cls, nil)
    cls.init(d, canceller, ...)
    return d
  end
  local d
  if canceller == nil then
    d = setmetatable({ nil, nil, nil, nil, nil, nil, nil, nil, nil,
      called = false, result = nil, _n = 0, _running = false }, Deferred)
  else
    if type(canceller) ~= "function" then checkcallable("Deferred", 1, canceller) end
    d = setmetatable({ nil, nil, nil, nil, nil, nil, nil, nil, nil,
      called = false, result = nil, _n = 0, _running = false, _canceller = canceller }, Deferred)
  end
  if debugging then  -- class.lua's new tail-calls __new: level 2 is the caller
    d._dbg = setmetatable({ made = os.time(), creator = traceback_at(2) }, SENTINEL)
  end
  return d
end

--- A subclass's init(canceller, ...) calls this to keep its canceller,
-- as Twisted's subclasses call Deferred.__init__(self, canceller); a
-- subclass without an init of its own gets this one. (Deferred() itself
-- does not call init.)
function Deferred:init(canceller)
  if canceller ~= nil then
    if type(canceller) ~= "function" then checkcallable("Deferred", 1, canceller) end
    self._canceller = canceller
  end
end

local function add(self, cb, eb, a)
  local n = chain_end(self)
  self[n + 1] = cb; self[n + 2] = eb; self[n + 3] = a
  self._n = n + 3
  if self.called then run(self) end
  return self
end

local function with_args(f, args, fname, argn)
  if args == nil then return f end
  if type(args) ~= "table" then
    error(errors.TypeError(("bad argument #%d to '%s' (table expected, got %s)")
      :format(argn, fname, type(args))), 3)
  end
  local n = args.n
  if n == nil then
    n = #args
  elseif math.type(n) ~= "integer" or n < 0 or n > 250 then
    error(errors.ValueError(("bad argument #%d to '%s' (args.n must be an integer from 0 "
      .. "to 250, got %s)"):format(argn, fname, tostring(n))), 3)
  end
  if n > 250 then
    error(errors.ValueError(("bad argument #%d to '%s' (at most 250 extra arguments, got %d)")
      :format(argn, fname, n)), 3)
  end
  if n == 0 then return f end
  local copy = { n = n }
  for i = 1, n do copy[i] = args[i] end
  return function(r) return f(r, unpack(copy, 1, n)) end
end

--- Add a callback and an errback; `eb` nil passes failures through.
-- @param cb function(result, ...)
-- @param eb function(failure, ...) or nil
-- @param cbArgs optional list of extra arguments for cb
-- @param ebArgs optional list of extra arguments for eb
-- @return self
function Deferred:addCallbacks(cb, eb, cbArgs, ebArgs)
  check_self(self, "addCallbacks")
  if type(cb) ~= "function" then checkcallable("addCallbacks", 1, cb) end
  if eb == nil then eb = false
  elseif type(eb) ~= "function" then checkcallable("addCallbacks", 2, eb) end
  if cbArgs ~= nil then cb = with_args(cb, cbArgs, "addCallbacks", 3) end
  if ebArgs ~= nil and eb then eb = with_args(eb, ebArgs, "addCallbacks", 4) end
  return add(self, cb, eb, false)
end

--- Add a callback: `f(result, ...)`; its return value is the next result.
-- @return self
function Deferred:addCallback(f, ...)
  check_self(self, "addCallback")
  if type(f) ~= "function" then checkcallable("addCallback", 1, f) end
  local a = false
  if select("#", ...) > 0 then a = pack(...) end
  local n = chain_end(self)
  self[n + 1] = f; self[n + 2] = false; self[n + 3] = a
  self._n = n + 3
  if self.called then run(self) end
  return self
end

--- Add an errback: `f(failure, ...)`; a non-Failure return value switches
-- back to the callback chain.
-- @return self
function Deferred:addErrback(f, ...)
  check_self(self, "addErrback")
  if type(f) ~= "function" then checkcallable("addErrback", 1, f) end
  local a = false
  if select("#", ...) > 0 then a = pack(...) end
  local n = chain_end(self)
  self[n + 1] = false; self[n + 2] = f; self[n + 3] = a
  self._n = n + 3
  if self.called then run(self) end
  return self
end

--- Add `f` as both callback and errback.
-- @return self
function Deferred:addBoth(f, ...)
  check_self(self, "addBoth")
  if type(f) ~= "function" then checkcallable("addBoth", 1, f) end
  local a = false
  if select("#", ...) > 0 then a = pack(...) end
  local n = chain_end(self)
  self[n + 1] = f; self[n + 2] = f; self[n + 3] = a
  self._n = n + 3
  if self.called then run(self) end
  return self
end

--- Fire the callback chain with `result` (a Failure runs the errbacks).
-- Raises AlreadyCalledError when fired twice; a Deferred result raises and
-- leaves this Deferred unfired.
function Deferred:callback(result)
  check_self(self, "callback")
  if self.called then return already_called(self, 2) end
  local plain = true
  if result ~= nil then
    local mt = getmetatable(result)
    if mt ~= nil then
      local k = mt == Failure and 1 or (KIND[mt] or kind_of(mt))
      if k == 2 then
        error(errors.TypeError("bad argument #1 to 'callback' (a Deferred cannot be a "
          .. "result: return it from a callback to chain it)"), 2)
      end
      plain = k == 0
    end
  end
  if debugging then debug_slot(self).invoker = traceback_at(2) end
  self.called = true
  self.result = result
  if chain_end(self) == 0 then
    -- a paused one has not run its (empty) chain: as in Twisted, its
    -- Failure counts as unhandled once unpause() runs it
    if not plain and self.paused == 0 then mark_failed(self, result) end
    return
  end
  run(self, plain)
end

--- Fire the errback chain. `err` is a Failure, or a value wrapped in one;
-- without an argument, a Failure of NoCurrentExceptionError.
function Deferred:errback(err)
  check_self(self, "errback")
  if self.called then return already_called(self, 2) end
  local mt = getmetatable(err)
  if mt ~= Failure and not (mt ~= nil and (KIND[mt] or kind_of(mt)) == 1) then
    err = Failure(err, traceback_at(2))
  end
  if debugging then debug_slot(self).invoker = traceback_at(2) end
  self.called = true
  self.result = err
  if chain_end(self) == 0 then
    if self.paused == 0 then mark_failed(self, err) end  -- as in callback
    return
  end
  run(self)
end

--- Stop running callbacks until unpause(); pauses nest.
function Deferred:pause()
  check_self(self, "pause")
  self.paused = self.paused + 1
end

--- Undo one pause(); at zero, run the callbacks added meanwhile.
function Deferred:unpause()
  check_self(self, "unpause")
  local p = self.paused
  if p <= 0 then
    error(errors.ValueError("unpause of a Deferred that is not paused"), 2)
  end
  p = p - 1
  self.paused = p
  if p == 0 and self.called then
    -- a Failure that came while paused with no callbacks is unhandled from
    -- now on, even if run() is put off (await's fast path reads the mark)
    if chain_end(self) == 0 and not self._running and is_failure(self.result) then
      mark_failed(self, self.result)
    end
    run(self)
  end
end

--- Cancel: call the canceller; if still unfired, errback with
-- CancelledError. A fired Deferred waiting on another cancels that one.
function Deferred:cancel()
  check_self(self, "cancel")
  if not self.called then
    local canceller = self._canceller
    if canceller then
      canceller(self)
    else
      self._suppress = true  -- swallow the one callback that may still come
    end
    if not self.called then
      self:errback(Failure(CancelledError(), traceback_at(2)))
    end
  else
    -- cancel what this one waits on: the first Deferred down the chain of
    -- results that has not fired (a loop: a chain of a million cancels in
    -- a bounded stack), or one whose class has its own cancel. Deferreds
    -- that wait on each other in a cycle have none: that raises (Twisted
    -- recursed until RecursionError; this looped for ever). The cycle is
    -- found by a second walker going at half speed.
    local r, slow, hops = self.result, self, 0
    while r ~= nil and is_deferred(r) do
      if not r.called or r.cancel ~= Deferred.cancel then return r:cancel() end
      if rawequal(r, slow) then
        error(errors.ValueError("cancel: the Deferreds it waits on wait on each other "
          .. "in a cycle; none of them can fire"), 2)
      end
      hops = hops + 1
      if hops % 2 == 0 then slow = slow.result end
      r = r.result
    end
  end
end

--- Fire `d` with this Deferred's result; this one's result becomes nil.
-- @return self
function Deferred:chainDeferred(d)
  check_self(self, "chainDeferred")
  if not is_deferred(d) then
    error(errors.TypeError(("bad argument #1 to 'chainDeferred' (Deferred expected, got %s)")
      :format(class.nameof(d))), 2)
  end
  d._chainedTo = self
  return add(self, FIRE, FIRE, d)
end

local function cancelled_to_timeout(value, timeout)
  if is_failure(value) then
    value:trap(CancelledError)
    local e = M.TimeoutError(("after %s seconds"):format(tostring(timeout)))
    e.timeout = timeout
    error(e)
  end
  return value
end

--- Cancel this Deferred after `seconds` unless it fires first; the
-- CancelledError becomes a defer.TimeoutError (or `onTimeoutCancel(result,
-- seconds)`'s return value). `clock` defaults to braid.reactor.
-- @return self
function Deferred:addTimeout(seconds, clock, onTimeoutCancel)
  check_self(self, "addTimeout")
  errors.checkseconds("addTimeout", 1, seconds)
  if onTimeoutCancel ~= nil then checkcallable("addTimeout", 3, onTimeoutCancel) end
  if clock == nil then clock = require "braid.reactor" end
  local timedOut = false
  local function timeItOut()
    timedOut = true
    self:cancel()
  end
  local call
  if clock == package.loaded["braid.reactor"] then
    call = clock.callLater(seconds, timeItOut)
  else
    local cl = type(clock) == "table" and clock.callLater
    if not cl then
      error(errors.TypeError("bad argument #2 to 'addTimeout' (a time source with "
        .. "callLater expected, got " .. class.nameof(clock) .. ")"), 2)
    end
    call = cl(clock, seconds, timeItOut)
  end
  local translate = onTimeoutCancel or cancelled_to_timeout
  local function convert(value)
    if timedOut then return translate(value, seconds) end
    return value
  end
  local function cancelTimeout(result)
    if call:active() then call:cancel() end
    return result
  end
  add(self, convert, convert, false)
  add(self, cancelTimeout, cancelTimeout, false)
  return self
end

local function repr(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  return tostring(v)
end

function Deferred:__tostring()
  local name = rawget(getmetatable(self), "__name") or "Deferred"
  local s = ("<%s at %p"):format(name, self)
  -- _chainedTo is cleared when a chain runs past it, as Twisted's
  -- _runCallbacks does; a Deferred fired directly after chainDeferred with
  -- nothing to run keeps it, so a fired, unpaused one's is stale (Twisted's
  -- would be None): the fast paths need not look at it
  local chained = self._chainedTo
  if chained and not (self.called and self.paused == 0) then
    s = s .. (" waiting on Deferred at %p"):format(chained)
  elseif self.called then
    s = s .. " current result: " .. repr(self.result)
  end
  return s .. ">"
end

-------------------------------------------------------------------------------
-- Module functions

--- A Deferred that has already fired with `result`.
function M.succeed(result)
  local d = setmetatable({ called = true, result = result, _n = 0, _running = false },
    Deferred)
  if debugging then d._dbg = setmetatable({ made = os.time(), creator = traceback_at(2) }, SENTINEL) end
  if result ~= nil then
    local mt = getmetatable(result)
    if mt ~= nil and mt ~= Failure then
      local k = KIND[mt] or kind_of(mt)
      if k == 2 then
        error(errors.TypeError("bad argument #1 to 'succeed' (a Deferred cannot be a result)"), 2)
      elseif k == 1 then
        mark_failed(d, result)
      end
    elseif mt == Failure then
      mark_failed(d, result)
    end
  end
  return d
end

--- A Deferred that has already failed with `err` (wrapped in a Failure).
function M.fail(err)
  if not is_failure(err) then err = Failure(err, traceback_at(2)) end
  local d = new_deferred(Deferred, nil)
  d.called = true
  d.result = err
  mark_failed(d, err)
  return d
end

--- Call `f(...)` and return a Deferred of its result: a Deferred returned
-- by f is returned as is; an error or a returned Failure fails it.
function M.maybeDeferred(f, ...)
  checkcallable("maybeDeferred", 1, f)
  local ok, r = xpcall(f, msgh, ...)
  if not ok then return M.fail(r) end
  if r ~= nil then
    local mt = getmetatable(r)
    if mt ~= nil then
      local k = mt == Failure and 1 or (KIND[mt] or kind_of(mt))
      if k == 2 then return r end
      if k == 1 then return M.fail(r) end
    end
  end
  return M.succeed(r)
end

-------------------------------------------------------------------------------
-- DeferredList, gatherResults, race

local DeferredList = Deferred:extend("DeferredList")
M.DeferredList = DeferredList

local function dl_callback(result, self, index)
  local ok = not is_failure(result)
  self.resultList[index] = { ok, result }
  self.finishedCount = self.finishedCount + 1
  if not self.called then
    if ok and self.fireOnOneCallback then
      self:callback({ result, index })
    elseif not ok and self.fireOnOneErrback then
      self:errback(Failure(FirstError(result, index), result.traceback))
    elseif self.finishedCount == self._count then
      self:callback(self.resultList)
    end
  end
  if not ok and self.consumeErrors then return nil end
  return result
end

--- DeferredList(list, opts?): fires when every Deferred of `list` has,
-- with a list of {success, value} pairs in input order. opts:
-- fireOnOneCallback (fire with {value, index} on the first success),
-- fireOnOneErrback (errback with FirstError on the first failure),
-- consumeErrors (failures become nil in the original Deferreds).
function DeferredList:init(list, opts)
  if type(list) ~= "table" then
    error(errors.TypeError(("bad argument #1 to 'DeferredList' (table expected, got %s)")
      :format(type(list))), 4)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(errors.TypeError(("bad argument #2 to 'DeferredList' (table expected, got %s)")
      :format(type(opts))), 4)
  end
  opts = opts or {}
  local n = list.n or #list
  local ds = {}
  for i = 1, n do
    local d = list[i]
    if not is_deferred(d) then
      error(errors.TypeError(("bad argument #1 to 'DeferredList' (item %d: Deferred "
        .. "expected, got %s)"):format(i, class.nameof(d))), 4)
    end
    ds[i] = d
  end
  self._deferredList = ds
  self._count = n
  self.resultList = {}
  self.finishedCount = 0
  self.fireOnOneCallback = not not opts.fireOnOneCallback
  self.fireOnOneErrback = not not opts.fireOnOneErrback
  self.consumeErrors = not not opts.consumeErrors
  if n == 0 and not self.fireOnOneCallback then self:callback({}) end
  for i = 1, n do ds[i]:addBoth(dl_callback, self, i) end
end

--- Cancel every Deferred of the list, unless the DeferredList has fired.
-- Errors raised by their cancellers are logged.
function DeferredList:cancel()
  if self.called then return end
  for _, d in ipairs(self._deferredList) do
    local ok, err = xpcall(d.cancel, msgh, d)
    if not ok then log_failure(err, "Exception raised from user supplied canceller") end
  end
end

local function gather(results)
  local out = { n = #results }
  for i = 1, out.n do out[i] = results[i][2] end
  return out
end

--- gatherResults(list, consumeErrors?): a Deferred of the list of results
-- (field n: the number of inputs), or a FirstError failure.
function M.gatherResults(list, consumeErrors)
  return DeferredList(list, { fireOnOneErrback = true, consumeErrors = consumeErrors })
    :addCallback(gather)
end

--- race(list): a Deferred of {index, value} for the first Deferred to
-- succeed; the others are cancelled. If all fail: a FailureGroup failure.
-- Cancelling it cancels them all.
function M.race(list)
  if type(list) ~= "table" then
    error(errors.TypeError(("bad argument #1 to 'race' (table expected, got %s)")
      :format(type(list))), 2)
  end
  local n = list.n or #list
  local ds = {}
  for i = 1, n do
    if not is_deferred(list[i]) then
      error(errors.TypeError(("bad argument #1 to 'race' (item %d: Deferred expected, got %s)")
        :format(i, class.nameof(list[i]))), 2)
    end
    ds[i] = list[i]
  end
  local final = Deferred(function()
    for i = 1, n do ds[i]:cancel() end
  end)
  local winner = nil
  local failures, nfailed = {}, 0
  local function succeeded(value, index)
    if winner ~= nil then return end
    winner = index
    for i = 1, n do
      if i ~= index then ds[i]:cancel() end
    end
    final:callback({ index, value })
  end
  local function failed(f, index)
    failures[index] = f
    nfailed = nfailed + 1
    if nfailed == n then final:errback(Failure(FailureGroup(failures), f.traceback)) end
  end
  for i = 1, n do ds[i]:addCallbacks(succeeded, failed, { i }, { i }) end
  return final
end

-------------------------------------------------------------------------------
-- DeferredLock, DeferredSemaphore, DeferredQueue

-- The waiters of a lock, semaphore or queue: a FIFO of Deferreds that
-- takes the oldest and drops a cancelled one in constant time
-- (table.remove(list, 1) made 40,000 waiters take seconds). It reads as
-- the list Twisted's `waiting` is: #w counts the waiters, and w[i] and
-- ipairs(w) give them oldest first. _q[_h .. _t] holds them, false marking
-- a cancelled one, _pos[d] is d's index and _c counts them; w[_ci] was
-- found at _q[_cj] (0: nothing cached), so that ipairs walks past the
-- cancelled ones once.
local WAITERS = {
  __len = function(w) return w._c end,
  __index = function(w, i)
    if math.type(i) ~= "integer" or i < 1 or i > w._c then return nil end
    local q, h = w._q, w._h
    if w._c == w._t - h + 1 then return q[h + i - 1] end  -- none cancelled
    local k, j = 0, h
    if w._ci > 0 and w._ci < i then k, j = w._ci, w._cj + 1 end
    while true do
      if q[j] then
        k = k + 1
        if k == i then
          w._ci, w._cj = i, j
          return q[j]
        end
      end
      j = j + 1
    end
  end,
  __newindex = function()
    error(errors.TypeError("the waiting list is read-only (acquire, get and cancel change it)"), 2)
  end,
}

local function waiters()
  return setmetatable({ _q = {}, _pos = {}, _h = 1, _t = 0, _c = 0, _ci = 0, _cj = 0 }, WAITERS)
end

local function wait_push(w, d)
  local t = w._t + 1
  w._q[t] = d
  w._pos[d] = t
  w._t, w._c = t, w._c + 1
end

-- Take the oldest waiter (nil if none).
local function wait_shift(w)
  if w._c == 0 then return nil end
  local q, h = w._q, w._h
  while not q[h] do q[h] = nil; h = h + 1 end  -- cancelled ones
  local d = q[h]
  q[h] = nil
  w._pos[d] = nil
  w._c, w._ci = w._c - 1, 0
  if w._c > 0 then
    w._h = h + 1
  else
    if h < w._t then w._q = {} end  -- only cancelled ones were left past it
    w._h, w._t = 1, 0
  end
  return d
end

-- d was cancelled: forget it (Twisted's waiting.remove(d)), unless it was
-- taken already. Once the cancelled ones outnumber the rest, the rest move
-- to a new list, so that cancels with no release in between take no more
-- than twice the memory of the waiters.
local function wait_remove(w, d)
  local pos = w._pos
  local i = pos[d]
  if not i then return end
  pos[d] = nil
  local q = w._q
  w._c, w._ci = w._c - 1, 0
  if w._c == 0 then
    w._q, w._h, w._t = {}, 1, 0
    return
  end
  q[i] = false
  if i == w._t then
    repeat q[i] = nil; i = i - 1 until q[i]  -- drop the cancelled tail
    w._t = i
  elseif w._t - w._h + 1 > 2 * w._c + 16 then
    local nq, n = {}, 0
    for j = w._h, w._t do
      local x = q[j]
      if x then
        n = n + 1
        nq[n] = x
        pos[x] = n
      end
    end
    w._q, w._h, w._t = nq, 1, n
  end
end

local function run_primitive(self, f, ...)
  errors.checkself("run", type(self) == "table" and type(self.acquire) == "function", self,
    "DeferredLock or DeferredSemaphore")
  checkcallable("run", 1, f)
  local args = pack(...)
  return self:acquire():addCallback(function()
    return M.maybeDeferred(f, unpack(args, 1, args.n)):addBoth(function(r)
      self:release()
      return r
    end)
  end)
end

--- DeferredLock(): fields `locked`, `waiting`.
local DeferredLock = class.Object:extend("DeferredLock")
M.DeferredLock = DeferredLock

function DeferredLock:init()
  self.locked = false
  self.waiting = waiters()
end

--- A Deferred that fires with the lock once it is acquired.
function DeferredLock:acquire()
  errors.checkself("acquire", DeferredLock:isinstance(self), self, "DeferredLock")
  local waiting = self.waiting
  local d = Deferred(function(d) wait_remove(waiting, d) end)
  if self.locked then
    wait_push(waiting, d)
  else
    self.locked = true
    d:callback(self)
  end
  return d
end

--- Release the lock; the first waiter gets it.
function DeferredLock:release()
  errors.checkself("release", DeferredLock:isinstance(self), self, "DeferredLock")
  if not self.locked then
    error(errors.ValueError("Tried to release an unlocked lock"), 2)
  end
  self.locked = false
  local d = wait_shift(self.waiting)
  if d then
    self.locked = true
    d:callback(self)
  end
end

--- Acquire, call `f(...)` (waiting for a Deferred it returns), release.
-- @return a Deferred of f's result
DeferredLock.run = run_primitive

--- DeferredSemaphore(tokens): fields `tokens`, `limit`, `waiting`.
local DeferredSemaphore = class.Object:extend("DeferredSemaphore")
M.DeferredSemaphore = DeferredSemaphore

function DeferredSemaphore:init(tokens)
  if type(tokens) ~= "number" then
    error(errors.TypeError(("bad argument #1 to 'DeferredSemaphore' (number expected, got %s)")
      :format(type(tokens))), 4)
  end
  tokens = math.tointeger(tokens)  -- nil for a fraction, which would never count down to 0
  if not (tokens and tokens >= 1) then  -- NaN and inf too
    error(errors.ValueError("DeferredSemaphore requires an integer number of tokens >= 1"), 4)
  end
  self.tokens = tokens
  self.limit = tokens
  self.waiting = waiters()
end

function DeferredSemaphore:acquire()
  errors.checkself("acquire", DeferredSemaphore:isinstance(self), self, "DeferredSemaphore")
  local waiting = self.waiting
  local d = Deferred(function(d) wait_remove(waiting, d) end)
  if self.tokens == 0 then
    wait_push(waiting, d)
  else
    self.tokens = self.tokens - 1
    d:callback(self)
  end
  return d
end

function DeferredSemaphore:release()
  errors.checkself("release", DeferredSemaphore:isinstance(self), self, "DeferredSemaphore")
  if self.tokens >= self.limit then
    error(errors.ValueError("Someone released me too many times: too many tokens!"), 2)
  end
  local d = wait_shift(self.waiting)
  if d then
    d:callback(self)
  else
    self.tokens = self.tokens + 1
  end
end

DeferredSemaphore.run = run_primitive

--- DeferredQueue(size?, backlog?): put(v) / get() -> Deferred.
local DeferredQueue = class.Object:extend("DeferredQueue")
M.DeferredQueue = DeferredQueue

function DeferredQueue:init(size, backlog)
  if size ~= nil and type(size) ~= "number" then
    error(errors.TypeError(("bad argument #1 to 'DeferredQueue' (number expected, got %s)")
      :format(type(size))), 4)
  end
  if backlog ~= nil and type(backlog) ~= "number" then
    error(errors.TypeError(("bad argument #2 to 'DeferredQueue' (number expected, got %s)")
      :format(type(backlog))), 4)
  end
  self.size, self.backlog = size, backlog
  self.waiting = waiters()
  self._pending, self._ph, self._pt = {}, 1, 0  -- values may be nil
end

--- The number of values waiting to be taken.
function DeferredQueue:pendingCount()
  errors.checkself("pendingCount", DeferredQueue:isinstance(self), self, "DeferredQueue")
  return self._pt - self._ph + 1
end

--- Add `v`; raises QueueOverflow when `size` values are already queued.
function DeferredQueue:put(v)
  errors.checkself("put", DeferredQueue:isinstance(self), self, "DeferredQueue")
  local d = wait_shift(self.waiting)
  if d then
    d:callback(v)
  elseif self.size == nil or self:pendingCount() < self.size then
    local t = self._pt + 1
    self._pending[t] = v
    self._pt = t
  else
    error(M.QueueOverflow(), 2)
  end
end

--- A Deferred of the next value; raises QueueUnderflow when `backlog`
-- gets are already waiting. Cancelling it removes it from the waiters.
function DeferredQueue:get()
  errors.checkself("get", DeferredQueue:isinstance(self), self, "DeferredQueue")
  if self._pt >= self._ph then
    local h = self._ph
    local v = self._pending[h]
    self._pending[h] = nil
    if h == self._pt then self._ph, self._pt = 1, 0 else self._ph = h + 1 end
    return M.succeed(v)
  elseif self.backlog == nil or self.waiting._c < self.backlog then
    local waiting = self.waiting
    local d = Deferred(function(d) wait_remove(waiting, d) end)
    wait_push(waiting, d)
    return d
  end
  error(M.QueueUnderflow(), 2)
end

-------------------------------------------------------------------------------
-- inlineCallbacks and await

-- STATES[coroutine] = state {co, deferred, fn, waiting, thrown, args, dead}
local STATES = setmetatable({}, { __mode = "k" })

-- The run queue: flat pairs (state, value), drained by the outermost resume.
local RQ, rq_head, rq_tail = {}, 1, 0
local in_resume = false
-- IC[1]: the state of the inlineCallbacks coroutine running now, or nil. (A
-- plain coroutine resumed inside it does not change it: await's fast path
-- only uses it to refuse calls from outside any inlineCallbacks function.)
-- A table slot, so that the C await of runtime/deferred.c reads it too (an
-- array slot: the cheapest read there).
local IC = { nil }

local finish

local function escape_failure(st, e)
  if is_failure(e) then return e end
  local tb = failure._withCarried(e, traceback(st.co), st.co)
  local thrown = st.thrown
  if thrown ~= nil and rawequal(e, thrown.value) then
    tb = (thrown.traceback or "") .. "\n" .. tb:gsub("^stack traceback:", "awaited at:", 1)
  end
  if debugging then
    local lines, d, guard = {}, st.deferred, 0
    while d ~= nil and guard < 1000 do
      local by = d._awaitedBy
      if not by then break end
      lines[#lines + 1] = "\nawaited by: " .. by.fn .. " at " .. by.where
      d = by.st.deferred
      guard = guard + 1
    end
    tb = tb .. concat(lines)
  end
  return Failure(e, tb)
end

-- After a resume that did not end in await: the function returned or
-- raised.
finish = function(st, ok, a)
  local co = st.co
  STATES[co] = nil
  if ok and is_deferred(a) and (rawequal(a, st.deferred) or type(a) ~= "table") then
    -- its own Deferred would wait on itself for ever (Twisted raises); a
    -- userdata given the class cannot be waited on
    ok = false
    a = rawequal(a, st.deferred)
      and Failure(errors.TypeError("inlineCallbacks function returned its own Deferred"), traceback_at(2))
      or Failure(errors.TypeError("inlineCallbacks function returned a "
        .. class.nameof(a) .. " that is not a table"), traceback_at(2))
  elseif not ok then
    a = escape_failure(st, a)
    co_close(co)
  end
  if ok then
    if is_deferred(a) then
      -- a returned Deferred is waited for, as if awaited
      st.dead = true
      st.waiting = a
      st.co, st.thrown = nil, nil
      local n = a._n
      a[n + 1] = RESUME; a[n + 2] = RESUME; a[n + 3] = st
      a._n = n + 3
      if a.called then run(a) end
      return
    end
  end
  st.co, st.thrown = nil, nil  -- the Deferred keeps st (for cancel) alive
  st.deferred:callback(a)
end

-- A coroutine.yield that did not come from await raises where it was
-- called (API.md): the coroutine goes on at once under a one-shot count
-- hook that raises NotACoroutineError at its next instruction, the
-- caller's. So a callback that yields fails as any raising callback does
-- (its Deferred's chain goes on to its errbacks, rather than staying
-- running for ever), and the body can catch the error. A hook the
-- coroutine had (a coverage tool's) is put back first.
local function resume(co, ...)
  local ok, a = co_resume(co, ...)
  while ok and a ~= AWAIT and co_status(co) == "suspended" do
    ok, a = resume_raising(co, NotACoroutineError("coroutine.yield called in an "
      .. "inlineCallbacks function (use defer.await)"), 2)
  end
  return ok, a
end

-- A coroutine can yield inside a callback: the function fired a Deferred
-- whose callback awaits. The runs under way inside it then stay open while
-- it waits, and for ever if it is never resumed (its Deferred never fires),
-- so the nesting counts would stay raised and, after a few dozen such
-- functions, every later run would be put off for good. So a resume takes
-- back what the coroutine left open (st.held: runs under way, and whether
-- one of them was draining) and gives it back when the coroutine goes on,
-- where the runs it holds will end.
local function run_co(st, ...)
  local saved, saved_st = cdepth, IC[1]
  local nest, drain = run_state()
  local held = st.held
  if held then
    st.held = nil
    run_state(nest + held, drain or st.held_drain)
    cdepth = saved + 1 + (runs_in_cdepth and held or 0)
  else
    cdepth = saved + 1
  end
  IC[1] = st
  local ok, a = resume(st.co, ...)
  cdepth, IC[1] = saved, saved_st
  local nest2, drain2 = run_state()
  if nest2 ~= nest or drain2 ~= drain then
    run_state(nest, drain)
    if ok and a == AWAIT and nest2 > nest then
      st.held, st.held_drain = nest2 - nest, drain2 and not drain
    end
  end
  return ok, a
end

local function step(st, v)
  if st.dead then
    st.dead = false
    return st.deferred:callback(v)
  end
  local ok, a
  local args = st.args
  if args then
    st.args = nil
    ok, a = run_co(st, unpack(args, 1, args.n))
  else
    ok, a = run_co(st, v)
  end
  if ok and a == AWAIT then return end
  finish(st, ok, a)
end

local function drain_loop()
  while rq_head <= rq_tail do
    local i = rq_head
    local st, v = RQ[i], RQ[i + 1]
    RQ[i] = nil; RQ[i + 1] = nil
    if i + 2 > rq_tail then rq_head, rq_tail = 1, 0 else rq_head = i + 2 end
    step(st, v)
  end
end

local function drain()
  in_resume = true
  while rq_head <= rq_tail do
    local ok, err = xpcall(drain_loop, msgh)
    if not ok then log_failure(err, "Unhandled error resuming an inlineCallbacks function:") end
  end
  in_resume = false
end

-- A Deferred an inlineCallbacks function waits for has fired: resume it. As
-- in Twisted, at once, inside the callback run that fired it, even from
-- inside another function's resume (resumes nest), unless nested so deep
-- that Lua's C stack would overflow, or its coroutine cannot be resumed now
-- (it is running: an await that found its Deferred fired): then it goes to
-- the run queue, drained by the outermost resume.
enqueue = function(st, v)
  if in_resume and cdepth + c_depth() + NEST_COST < MAX_CDEPTH
     and (st.dead or co_status(st.co) == "suspended") then
    cdepth = cdepth + NEST_COST
    local ok, err = xpcall(step, msgh, st, v)
    cdepth = cdepth - NEST_COST
    if not ok then log_failure(err, "Unhandled error resuming an inlineCallbacks function:") end
    return
  end
  local t = rq_tail + 2
  RQ[t - 1] = st
  RQ[t] = v
  rq_tail = t
  if not in_resume then drain() end
end

-- The first run of an inlineCallbacks function: synchronous, as in Twisted,
-- unless nested so deep that Lua's C stack would overflow.
local function start(st, ...)
  if in_resume and cdepth + c_depth() >= MAX_CDEPTH then
    st.args = pack(...)
    return enqueue(st, nil)
  end
  local was = in_resume
  in_resume = true
  local ok, a = run_co(st, ...)
  in_resume = was
  if not ok or a ~= AWAIT then finish(st, ok, a) end
  if not was and rq_head <= rq_tail then drain() end
end

-- Cancelling the Deferred of an inlineCallbacks call: as Twisted, it fires
-- at once into a fresh Deferred that the function will fire, and the
-- Deferred being awaited is cancelled (its CancelledError is raised at the
-- await).
local function ic_cancel(d)
  local st = d._ic
  local d2 = new_deferred(Deferred, ic_cancel)
  d2._ic = st
  st.deferred = d2
  local h = d._h
  -- Twisted's handleCancel, run first: cancel the awaited Deferred (which
  -- may resume the function at once), then wait for the function
  local function handle()
    local w = st.waiting
    if w ~= nil then w:cancel() end
    return d2
  end
  if h >= 3 then
    d[h - 2], d[h - 1], d[h] = handle, handle, false
    d._h = h - 3
  else
    local n = d._n
    for i = n, h + 1, -1 do d[i + 3] = d[i] end
    d[h + 1], d[h + 2], d[h + 3] = handle, handle, false
    d._n = n + 3
  end
  d:callback(nil)
end

--- inlineCallbacks(f): a function that runs `f(...)` in a new coroutine
-- and returns a Deferred of its return value (or of its error). Inside,
-- `defer.await(d)` waits for a Deferred.
function M.inlineCallbacks(f)
  checkcallable("inlineCallbacks", 1, f)
  if type(f) ~= "function" then  -- a callable table: a coroutine needs a function
    local callable = f
    f = function(...) return callable(...) end
  end
  return function(...)
    local co = co_create(f)
    local d = new_deferred(Deferred, ic_cancel)
    local st = { co = co, deferred = d, fn = f, waiting = nil, thrown = nil }
    d._ic = st
    STATES[co] = st
    start(st, ...)
    return d
  end
end

local function await_where(level)
  local info = getinfo(level + 1, "Sl")
  -- the C await of runtime/deferred.c may stand between await and its caller
  if info and info.what == "C" then info = getinfo(level + 2, "Sl") end
  if not info then return "? (a tail call)" end
  return info.short_src .. ":" .. tostring(info.currentline)
end

local function fn_name(f)
  local info = getinfo(f, "S")
  return ("function <%s:%d>"):format(info.short_src, info.linedefined)
end

local function await_slow(st, d)
  if not co_isyieldable() then
    error(NotACoroutineError("await cannot suspend here: Lua forbids a yield in this "
      .. "context (a metamethod called from C, a table.sort comparator, a string.gsub "
      .. "function, __gc or require)"), 3)
  end
  st.waiting = d
  local n = d._n
  d[n + 1] = RESUME; d[n + 2] = RESUME; d[n + 3] = st
  d._n = n + 3
  if debugging then
    -- level 2: await tail-calls await_slow, so the caller of await
    d._awaitedBy = { st = st, fn = fn_name(st.fn), where = await_where(2) }
  end
  if d.called and d.paused == 0 and not d._running then run(d) end
  local r = co_yield(AWAIT)
  if r ~= nil and is_failure(r) then
    st.thrown = r
    error(r.value, 0)
  end
  return r
end

--- await(d): inside an inlineCallbacks function, wait for `d` and return
-- its result, or raise its failure's value. A non-Deferred is returned as
-- is; an already fired Deferred returns at once, without yielding.
function M.await(d)
  local st = IC[1]
  if st == nil then
    error(NotACoroutineError("await called outside an inlineCallbacks function"), 2)
  end
  local mt = getmetatable(d)
  if mt ~= Deferred then
    if mt == nil or (KIND[mt] or kind_of(mt)) ~= 2 then return d end
  end
  if d.called and d._n == 0 and d.paused == 0 and not d._running then
    -- a settled Deferred: its result is a Failure exactly when the
    -- unhandled-error sentinel holds it
    local r = d.result
    d.result = nil
    local s = d._dbg
    if s then
      local f = s.failure
      clear_failed(d)
      if f ~= nil then
        st.thrown = r
        error(r.value, 0)
      end
    end
    return r
  end
  local co = co_running()
  st = STATES[co]
  if st == nil then
    -- a relay of braid.log's callWithContext passes yields through to the
    -- coroutine it runs in, and what is sent back to it in
    local log = package.loaded["braid.log"]
    local relays = type(log) == "table" and log._relays
    if relays then
      repeat co = relays[co]; st = co and STATES[co] until st ~= nil or co == nil
    end
  end
  if st == nil then
    error(NotACoroutineError("await called outside an inlineCallbacks function"), 2)
  end
  return await_slow(st, d)
end

-------------------------------------------------------------------------------
-- The chain runner in C
--
-- runtime/deferred.c implements run() and the common case of Deferred(),
-- callback, addCallback, addErrback, addBoth, addCallbacks, succeed and await
-- on this very table layout (docs/benchmarks.md has what it gains). It calls
-- back into the Lua versions for everything else, and the Lua versions
-- serve alone where braid.core cannot be loaded (a worker thread) or when
-- the environment sets BRAID_DEFER_LUA=1. While debugging is on, the Lua
-- methods are installed (they record where Deferreds are made and fired);
-- the C ones check the flag too, for references taken earlier.

local LUA = {
  callback = Deferred.callback,
  addCallback = Deferred.addCallback,
  addErrback = Deferred.addErrback,
  addBoth = Deferred.addBoth,
  addCallbacks = Deferred.addCallbacks,
  succeed = M.succeed,
  await = M.await,
}
local FAST = nil
local METHODS = { "callback", "addCallback", "addErrback", "addBoth", "addCallbacks" }

install_methods = function()
  local impl = (FAST and not debugging) and FAST or LUA
  for i = 1, #METHODS do
    local name = METHODS[i]
    Deferred[name] = impl[name]
  end
  M.succeed = impl.succeed
  M.await = impl.await
  class.setconstructor(Deferred, impl.__new)  -- Deferred() calls the C one directly
  if FAST then FAST.setDebugging(debugging) end
end

do
  local wanted = os.getenv("BRAID_DEFER_LUA")
  local ok, core = false, nil
  if wanted == nil or wanted == "" or wanted == "0" then ok, core = pcall(require, "braid.core") end
  if ok and type(core) == "table" and core.defer_bind then
    FAST = core.defer_bind({
      Deferred = Deferred, Failure = Failure, KIND = KIND, kind_of = kind_of,
      CONTINUE = CONTINUE, RESUME = RESUME, FIRE = FIRE, msgh = msgh,
      mark_failed = mark_failed, clear_failed = clear_failed,
      enqueue = enqueue, prefire = prefire,
      self_failure = returned_itself, wrap_failure = wrap_failure,
      callback = LUA.callback, addCallback = LUA.addCallback, addErrback = LUA.addErrback,
      addBoth = LUA.addBoth, addCallbacks = LUA.addCallbacks, succeed = LUA.succeed,
      await = LUA.await, __new = Deferred.__new, ic = IC, runq = {},
    })
    run = FAST.run
    c_depth = FAST.cdepth
    run_state = FAST.cdepth
    runs_in_cdepth = false
    install_methods()
  end
end

--- "C" when the chain runner of runtime/deferred.c is in use, else "Lua".
function M.implementation()
  return FAST and "C" or "Lua"
end

return M
