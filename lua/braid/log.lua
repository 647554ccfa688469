--- braid.log: Twisted's logging (twisted.python.log, twisted.logger,
-- twisted.python.logfile) for braid.
-- test-case-name: spec/log_spec.lua
--
-- Invariants:
-- * Every log call builds at most one event table and hands it to
--   `publish`, which never raises: the main observer (the file of
--   startLogging) and each added observer run under xpcall; one that raises
--   is removed and reported on the error stream.
-- * The main observer sees only events at or above the level of setLevel;
--   added observers see every event.
-- * Before startLogging (and after stopLogging) events of level error and
--   critical are written to the error stream (stderr) as full log lines,
--   whether or not observers were added; other events go nowhere.
-- * A call with nobody to hear it returns before formatting anything.
local class = require "braid.class"
local errors = require "braid.error"
local failure = require "braid.failure"

local M = {}

local type, select, tostring, pcall, xpcall, next = type, select, tostring, pcall, xpcall, next
local getmetatable, setmetatable, rawget = getmetatable, setmetatable, rawget
local concat, sort = table.concat, table.sort
local find, sub, gsub, format, byte, lower = string.find, string.sub, string.gsub, string.format, string.byte, string.lower
local floor, abs = math.floor, math.abs
local os_date, os_time = os.date, os.time
local loaded = package.loaded
local Failure, isFailure, msgh = failure.Failure, failure.isFailure, failure.msgh

---------------------------------------------------------------------------
-- levels

local DEBUG, INFO, WARN, ERROR, CRITICAL = 1, 2, 3, 4, 5
local LEVELS = { debug = DEBUG, info = INFO, warn = WARN, error = ERROR, critical = CRITICAL }
local LEVEL_NAMES = { "debug", "info", "warn", "error", "critical" }
local LEVEL_ALIASES = { warning = "warn", err = "error", fatal = "critical" }

---------------------------------------------------------------------------
-- module state

local main = nil          -- observer of startLogging(WithObserver), filtered by level
local main_out = nil      -- the file/LogFile written by the file observer
local main_path = nil     -- set when startLogging opened main_out from a path
local observers = {}      -- added observers; replaced (never mutated) on change
local nobs = 0
local min_level = INFO
local current_system = false  -- false: the ambient system (system_now)
local ambient = nil       -- setAmbientSystem's function, or nil
local depth = 0           -- publish nesting (an observer that logs)
local MAX_DEPTH = 8
local err_stream = io.stderr
local clock = nil         -- setClock override
local saved_print = nil   -- the print that startLogging replaced
local log_print           -- our print (defined below)

---------------------------------------------------------------------------
-- helpers

--- tostring that never raises: a failing __tostring gives a marker.
local safe_tostring = errors.safeString
M.safeString = safe_tostring

local function now()
  if clock then return clock() end
  local r = loaded["braid.reactor"]
  local s = type(r) == "table" and r.seconds
  if s then return s() end
  local core = loaded["braid.core"]
  s = type(core) == "table" and core.seconds
  if s then return s() end
  return os_time()
end

--- Test hook: use f() (float seconds) as the event clock; nil restores the
-- default (reactor.seconds(), or os.time() before the reactor is loaded).
-- @return the previous override or nil
function M.setClock(f)
  errors.checkcallable("setClock", 1, f, true)
  local prev = clock
  clock = f
  return prev
end

local cached_sec, cached_stamp = nil, nil

--- The line prefix time: `2015-02-17 11:46:16-0500` (local time and its
-- numeric UTC offset, as Twisted's FileLogObserver.formatTime).
-- @param t seconds since the epoch (default now)
-- @return the formatted time
function M.formatTime(t)
  if t == nil then t = now() end
  if type(t) ~= "number" or t ~= t or t == math.huge or t == -math.huge then
    return safe_tostring(t)
  end
  local s = floor(t)
  if s == cached_sec then return cached_stamp end
  local ok, l, u = pcall(os_date, "*t", s)
  if ok then ok, u = pcall(os_date, "!*t", s) end
  if not ok then return safe_tostring(t) end
  -- offset from the broken-down fields: exact, and independent of how
  -- os.time treats isdst
  local days = l.yday - u.yday
  if l.year ~= u.year then days = l.year > u.year and 1 or -1 end
  local off = days * 86400 + (l.hour - u.hour) * 3600 + (l.min - u.min) * 60 + (l.sec - u.sec)
  local sign = off < 0 and "-" or "+"
  off = abs(off)
  cached_stamp = format("%04d-%02d-%02d %02d:%02d:%02d%s%02d%02d", l.year, l.month, l.day,
    l.hour, l.min, l.sec, sign, off // 3600, off % 3600 // 60)
  cached_sec = s
  return cached_stamp
end
local formatTime = M.formatTime

local event_text -- defined with the Logger formatter below

--- The full text line of an event: `time [system] text\n`, continuation
-- lines indented by a tab (Twisted's FileLogObserver).
local function event_line(ev)
  local text = ev.text
  if type(text) ~= "string" then text = event_text(ev) end
  if find(text, "\n", 1, true) then text = gsub(text, "\n", "\n\t") end
  local system = ev.system
  return formatTime(ev.time) .. " [" .. (system == nil and "-" or safe_tostring(system)) .. "] "
    .. text .. "\n"
end

local function write_err(s)
  local e = err_stream
  if e then pcall(e.write, e, s) end
end

local function strip_nl(s)
  if sub(s, -1) == "\n" then return sub(s, 1, -2) end
  return s
end

local function traceback_text(f)
  local ok, s = pcall(f.getTraceback, f)
  if ok and type(s) == "string" then return strip_nl(s) end
  return "<traceback unavailable: " .. safe_tostring(s) .. ">"
end

local function report_broken(o, f)
  write_err(event_line({
    time = now(), system = "-",
    text = "Log observer " .. safe_tostring(o) .. " raised an error and was removed\n"
      .. (isFailure(f) and traceback_text(f) or safe_tostring(f)),
  }))
end

local stop_main

---------------------------------------------------------------------------
-- publishing

-- closes publish's nesting level however publish is left
local LEAVE = setmetatable({}, { __close = function() depth = depth - 1 end })

-- xpcall(f, msgh, ev), called where f cannot yield (from string.gsub's
-- replacement function, a C call with no continuation): an observer that
-- yields (awaits) raises there and is removed as broken, so no coroutine
-- left waiting inside publish can keep its nesting count raised (eight of
-- them silenced every later event)
local gsub = string.gsub
local function call_observer(f, ev)
  local ok, e
  gsub("x", "x", function() ok, e = xpcall(f, msgh, ev) end)
  return ok, e
end

local function publish(ev, ln)
  if depth >= MAX_DEPTH then return end
  depth = depth + 1
  local _ <close> = LEAVE
  if ln >= min_level then
    local m = main
    if m then
      local ok, e = call_observer(m, ev)
      if not ok then
        if main == m then stop_main() end
        report_broken(m, e)
      end
    elseif ln >= ERROR then  -- by level, as the early return of a log call
      write_err(event_line(ev))
    end
  end
  local obs = observers
  for i = 1, #obs do
    local o = obs[i]
    local ok, e = call_observer(o, ev)
    if not ok then
      M.removeObserver(o)
      report_broken(o, e)
    end
  end
end

--- Add an observer: f(event) is called with every event (whatever the
-- level). Adding one twice has no effect.
-- @param f a function (or callable) taking the event table
function M.addObserver(f)
  errors.checkcallable("addObserver", 1, f)
  local new = {}
  for i = 1, nobs do
    if observers[i] == f then return end
    new[i] = observers[i]
  end
  new[nobs + 1] = f
  observers, nobs = new, nobs + 1
end

--- Remove an observer (nothing happens if it is not there).
function M.removeObserver(f)
  local new, n = {}, 0
  for i = 1, nobs do
    local o = observers[i]
    if o ~= f then n = n + 1; new[n] = o end
  end
  observers, nobs = new, n
end

--- A copy of the list of added observers.
function M.getObservers()
  local t = {}
  for i = 1, nobs do t[i] = observers[i] end
  return t
end

---------------------------------------------------------------------------
-- the system prefix (log context)

-- The system of a log event: the one set by setSystem or callWithContext,
-- else the ambient one. braid.tcp makes a connection's system ambient while
-- its dataReceived runs (it swaps nothing on that hot path: it only asks
-- when something is logged).
local function system_now()
  local s = current_system
  if s then return s end
  if ambient then s = ambient() end
  return s or "-"
end

--- Set the system shown between brackets; returns the previous setting,
-- to be given back to restore it. A plain variable swap:
-- `local prev = log.setSystem(s) ... log.setSystem(prev)`. The previous
-- setting is false when none was in force (the ambient system: "-", or in
-- a connection's dataReceived that connection's).
function M.setSystem(s)
  local prev = current_system
  current_system = s == nil and "-" or s
  return prev
end

--- The current system ("-" by default).
function M.getSystem()
  return system_now()
end

--- braid.tcp's hook: f() gives the ambient system (a string, or nil for
-- "-"), used while no setSystem or callWithContext is in force.
function M._setAmbientSystem(f)
  ambient = f
end

-- Where f cannot yield (no coroutine, or a C call in between), the
-- previous system is restored through a to-be-closed value, so an error
-- propagates untouched (its traceback is the raise point's) and the system
-- is restored on the way out, at the cost of a variable swap.
local ctx_stack, ctx_n = {}, 0
local ctx_closer = setmetatable({}, {
  __close = function()
    current_system = ctx_stack[ctx_n]
    ctx_stack[ctx_n] = nil
    ctx_n = ctx_n - 1
  end,
})

-- Where f can yield (callWithContext called in a coroutine that may
-- yield: an inlineCallbacks function that awaits inside f), f runs in a
-- coroutine of its own, a relay: each yield of f is yielded on by the
-- caller's coroutine, and what its resumer sends back is passed in to f.
-- While f is suspended the caller's system is in force; when f goes on,
-- f's again (the one in force when it last yielded, so a setSystem inside
-- f stays with f). relays[co] is the coroutine that relay co runs in
-- (braid.defer's await looks through it for the inlineCallbacks one).
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_close, co_running = coroutine.status, coroutine.close, coroutine.running
local co_isyieldable = coroutine.isyieldable
local co_traceback, resume_raising = debug.traceback, failure._resumeRaising
local pack, unpack = table.pack, table.unpack
local carry = failure._carry
local relays = setmetatable({}, { __mode = "k" })
M._relays = relays

-- f raised in relay co: the same value is raised here, carrying the
-- traceback of co up to its raise point (for the handler that makes it a
-- Failure: failure.msgh, an inlineCallbacks function's end) until this
-- frame is left.
local function raise_again(co, e)
  local tb = failure._withCarried(e, co_traceback(co), co)
  co_close(co)  -- what f left open is closed (an inner relay's carry too)
  if isFailure(e) then error(e, 0) end
  local _ <close> = carry(e, tb)
  error(e, 0)
end

-- A waiting relay's state {co, inner, saved}, closed however
-- callWithContext is left (f returned or raised, or the caller's coroutine
-- was closed while f waited): f's coroutine is closed, so what f left
-- open is closed too.
local RELAY = {
  __close = function(st)
    local co = st.co
    relays[co] = nil
    if co_status(co) == "suspended" then co_close(co) end
  end,
}

-- f yielded: yield its values on (under pcall: an error raised where the
-- caller's coroutine goes on, as braid.defer raises at a plain
-- coroutine.yield in an inlineCallbacks function, is f's to catch)
local function yield_out(...)
  local r = pack(co_yield(...))
  return unpack(r, 1, r.n)
end

-- f goes on with what the caller's coroutine was resumed with (ok, ...),
-- or with the error raised there, raised in f where it yielded (by a
-- one-shot count hook: braid.failure's _resumeRaising)
local function relay_resume(st, ok, ...)
  local co = st.co
  st.saved = current_system
  current_system = st.inner
  if ok then return co_resume(co, ...) end
  return resume_raising(co, (...), 0)
end

-- f's coroutine stopped again (yielded, returned or raised) with ok, ...
local function relay_step(st, ok, ...)
  local co = st.co
  st.inner = current_system
  current_system = st.saved
  if co_status(co) == "suspended" then
    return relay_step(st, relay_resume(st, pcall(yield_out, ...)))
  end
  if ok then return ... end
  return raise_again(co, (...))
end

-- f yielded for the first time: pass that yield on, and the rest
local function relay_wait(co, inner, ...)
  local st <close> = setmetatable({ co = co, inner = inner, saved = false }, RELAY)
  return relay_step(st, relay_resume(st, pcall(yield_out, ...)))
end

-- f's coroutine stopped for the first time with ok, ...: most often it
-- returned, without a yield
local function relay_first(co, saved, ok, ...)
  local inner = current_system
  current_system = saved
  if co_status(co) == "suspended" then return relay_wait(co, inner, ...) end
  relays[co] = nil
  if ok then return ... end
  return raise_again(co, (...))
end

--- Call f(...) with `system` as the log system, restoring the previous one
-- afterwards, also when f raises. `system` may be a string (nil: "-") or
-- Twisted's context table `{system = ...}` (without a system: the one in
-- force stays). Inside a coroutine the system follows f:
-- while f waits (yields), the caller's system is back in force.
-- @return what f returns
function M.callWithContext(system, f, ...)
  errors.checkcallable("callWithContext", 2, f)
  if type(system) == "table" then
    -- Twisted's context table is merged into the context in force: one
    -- without a system keeps the system in force
    system = system.system
    if system == nil then system = current_system end
  elseif system == nil then
    system = "-"
  end
  if co_isyieldable() then
    local co
    if type(f) == "function" then
      co = co_create(f)
    else  -- a callable table: a coroutine needs a function
      co = co_create(function(...) return f(...) end)
    end
    relays[co] = co_running()
    local saved = current_system
    current_system = system
    return relay_first(co, saved, co_resume(co, ...))
  end
  ctx_n = ctx_n + 1
  ctx_stack[ctx_n] = current_system
  current_system = system
  local _ <close> = ctx_closer
  return f(...)
end

---------------------------------------------------------------------------
-- levels

--- Set the least level written by the main observer (the log file) or to
-- stderr: "debug", "info" (default), "warn", "error" or "critical".
function M.setLevel(level)
  errors.checktype("setLevel", 1, level, "string")
  local name = lower(level)
  name = LEVEL_ALIASES[name] or name
  local n = LEVELS[name]
  if not n then
    error(errors.ValueError(("bad argument #1 to 'setLevel' (unknown level '%s'; "
      .. "expected debug, info, warn, error or critical)"):format(level)), 2)
  end
  min_level = n
end

--- The current least level's name.
function M.getLevel()
  return LEVEL_NAMES[min_level]
end

---------------------------------------------------------------------------
-- legacy API: msg / err

-- format "{log_text}" and log_text: as Twisted's legacy bridge
-- (publishToNewObserver) gives a log.msg/log.err event, so an observer
-- formatting events itself gets the text
local function publish_text(text)
  publish({
    text = text, isError = false, system = system_now(), time = now(),
    level = "info", namespace = "log_legacy", format = "{log_text}", log_text = text,
  }, INFO)
end

-- a line of print: as Twisted's LoggingFile for sys.stdout logs it
local function publish_printed(line)
  publish({
    text = line, isError = false, system = system_now(), time = now(),
    level = "info", namespace = "stdout", format = "{log_io}", log_io = line,
    printed = true,
  }, INFO)
end

--- Log a message: the arguments, tostring'ed and joined by single spaces.
function M.msg(...)
  if nobs == 0 and (main == nil or INFO < min_level) then return end
  local n = select("#", ...)
  local text
  if n == 1 then
    text = safe_tostring((...))
  elseif n == 0 then
    text = ""
  else
    local parts = { ... }
    for i = 1, n do parts[i] = safe_tostring(parts[i]) end
    text = concat(parts, " ", 1, n)
  end
  publish_text(text)
end

local function do_err(v, why, tblevel)
  local f = v
  if not isFailure(f) then
    f = Failure(v, (gsub(debug.traceback("", tblevel), "^\n", "")))
  end
  if why ~= nil then why = safe_tostring(why) end
  local text = (why or "Unhandled Error") .. "\n" .. traceback_text(f)
  publish({
    text = text, isError = true, system = system_now(), time = now(),
    level = "critical", namespace = "log_legacy", failure = f, why = why,
    format = "{log_text}", log_text = text,
  }, CRITICAL)
end

--- Log an error: `why` (default "Unhandled Error") and the traceback.
-- @param v a Failure, or any value (wrapped in a Failure; nil gives
--   NoCurrentExceptionError)
-- @param why optional description
function M.err(v, why)
  do_err(v, why, 3)
end

--- Hook for the runtime: log an error raised by a callback (a Failure from
-- failure.msgh, or any raised value).
function M.reportError(e, why)
  do_err(e, why, 3)
end

---------------------------------------------------------------------------
-- Logger (twisted.logger)

local format_fields = require("braid.log.format").fields

--- Format a twisted.logger-style format string (PEP 3101 fields with
-- conversions and format specs) with the fields of `ev`.
-- @return the text; a format that fails gives
--   `Unable to format event <fmt>: <error>`
function M.formatEvent(fmt, ev)
  if type(fmt) ~= "string" then fmt = fmt == nil and "" or safe_tostring(fmt) end
  if not find(fmt, "[{}]") then return fmt end
  local ok, s = pcall(format_fields, fmt, ev or {})
  if ok then return s end
  return "Unable to format event " .. format("%q", fmt) .. ": " .. safe_tostring(s)
end
local formatEvent = M.formatEvent

-- The text of an event that carries none (one made by hand and given to an
-- observer, as Twisted's tests do): its format filled from its fields, then
-- the traceback of its failure (Twisted's eventAsText).
event_text = function(ev)
  local text = ev.text
  if text ~= nil then return safe_tostring(text) end
  text = formatEvent(ev.format, ev)
  local f = ev.failure
  if f ~= nil and f ~= false then
    local tb
    if isFailure(f) then
      tb = traceback_text(f)
    else
      tb = "(unable to obtain traceback: " .. class.nameof(f) .. " is no Failure)"
    end
    text = text .. "\n" .. tb
  end
  return text
end

local Logger = class.Object:extend("Logger")

-- The name of the file that made the Logger: the first caller of init
-- (from `level` up) that is not braid.class's constructor. As Twisted's
-- frame lookup, a subclass whose init calls Logger.init gets its own file.
local function default_namespace(level)
  local info = debug.getinfo(level, "S")
  while info and (info.what == "C" or info.source:find("braid[/\\]class%.lua$")) do
    level = level + 1
    info = debug.getinfo(level, "S")
  end
  local src = info and info.source or "?"
  local kind = sub(src, 1, 1)
  if kind == "=" then return sub(src, 2) end  -- a chunk named by its loader
  -- a chunk loaded from a string has its code as source: no name to take
  -- (Twisted's "<unknown>" when the module can't be determined)
  if kind ~= "@" then return "<unknown>" end
  src = sub(src, 2)
  src = src:match("([^/\\]+)$") or src
  return (gsub(src, "%.lua$", ""))
end

--- Logger(namespace?): namespace defaults to the calling file's name.
function Logger:init(namespace, source)
  if namespace == nil then namespace = default_namespace(3) end
  self.namespace = safe_tostring(namespace)
  self.source = source
end

function Logger:__tostring()
  return "<Logger " .. format("%q", self.namespace) .. ">"
end

local function emit(self, lname, ln, fmt, fields, f)
  if type(self) ~= "table" then
    error(errors.TypeError("Logger methods are called with ':' (logger:" .. lname .. "(...))"), 3)
  end
  if nobs == 0 and (ln < min_level or (main == nil and ln < ERROR)) then return end
  local ev = {}
  if type(fields) == "table" then
    for k, v in next, fields do ev[k] = v end
  end
  if type(fmt) ~= "string" then fmt = fmt == nil and "" or safe_tostring(fmt) end
  ev.level, ev.namespace, ev.format, ev.time = lname, self.namespace, fmt, now()
  if self.source ~= nil then ev.source = self.source end
  if ev.system == nil then ev.system = system_now() end
  -- isError and why given as fields are kept, as Twisted's observers see
  -- them (its Logger sets neither; its legacy bridge adds them when absent)
  local isError = ev.isError
  if isError == nil then ev.isError = ln >= ERROR end
  local text = formatEvent(fmt, ev)
  if f == nil and ev.failure ~= false then f = ev.failure end -- failure = false: none
  if f ~= nil then
    if not isFailure(f) then f = Failure(f) end
    ev.failure = f
    if ev.why == nil then ev.why = text end
    if isError == nil then ev.isError = true end
    text = text .. "\n" .. traceback_text(f)
  end
  ev.text = text
  publish(ev, ln)
end

function Logger:debug(fmt, fields) return emit(self, "debug", DEBUG, fmt, fields) end
function Logger:info(fmt, fields) return emit(self, "info", INFO, fmt, fields) end
function Logger:warn(fmt, fields) return emit(self, "warn", WARN, fmt, fields) end
function Logger:error(fmt, fields) return emit(self, "error", ERROR, fmt, fields) end
function Logger:critical(fmt, fields) return emit(self, "critical", CRITICAL, fmt, fields) end

--- Emit at a level given by name.
function Logger:emit(level, fmt, fields)
  local ln = LEVELS[level]
  if not ln then
    error(errors.ValueError(("bad argument #1 to 'emit' (unknown level '%s')"):format(safe_tostring(level))), 2)
  end
  return emit(self, level, ln, fmt, fields)
end

--- Log a failure with its traceback (twisted.logger's Logger.failure).
-- @param fmt the format
-- @param f a Failure or a raised value (nil: NoCurrentExceptionError)
-- @param level default "critical"
-- @param fields optional fields
function Logger:failure(fmt, f, level, fields)
  level = level or "critical"
  local ln = LEVELS[level]
  if not ln then
    error(errors.ValueError(("bad argument #3 to 'failure' (unknown level '%s')"):format(safe_tostring(level))), 2)
  end
  if f == nil then f = Failure() end
  return emit(self, level, ln, fmt, fields, f)
end

M.Logger = Logger

---------------------------------------------------------------------------
-- output files

-- out: "-" (stdout), a path (opened for append), an io file, or an object
-- with write (and optionally flush), such as a LogFile.
-- @return the writer, and the path when it was opened here
local function resolve_out(fname, out)
  if out == "-" then return io.stdout end
  if type(out) == "string" then
    local f, e = io.open(out, "a")
    if not f then error(errors.Error(fname .. ": can't open log file: " .. tostring(e)), 3) end
    return f, out
  end
  local it = io.type(out)
  if it == "file" then return out end
  if it == "closed file" then errors.argerror(fname, 1, "log file is closed", 4) end
  local t = type(out)
  if t == "table" or t == "userdata" then
    local ok, w = pcall(function() return out.write end)
    if ok and w ~= nil then return out end
  end
  errors.argerror(fname, 1, "file, path or LogFile expected, got " .. class.nameof(out), 4)
end

-- The outputs whose last write failed (reported once, until one succeeds).
local failing = setmetatable({}, { __mode = "k" })

-- Write s to out and flush. A write or flush that fails (`nil, message`, as
-- io files and LogFiles return) is reported on the error stream once, and
-- again only after a write has succeeded: a full disk loses lines, but says
-- so, and the observer stays, to write again once there is room.
local function write_flush(out, s)
  local ok, e = out:write(s)
  if ok ~= nil or e == nil then
    local fl = out.flush
    if fl then ok, e = fl(out) end
  end
  if ok == nil and e ~= nil then
    if not failing[out] then
      failing[out] = true
      write_err(event_line({ time = now(), system = "-",
        text = "log: cannot write to " .. safe_tostring(out) .. ": " .. safe_tostring(e)
          .. " (lines are lost until a write succeeds)" }))
    end
  elseif failing[out] then
    failing[out] = nil
  end
end

local function file_main(ev)
  write_flush(main_out, event_line(ev))
end

--- An observer writing each event as a Twisted log line to `out` (a path,
-- "-", an io file or a LogFile). Unlike the main observer it is not
-- filtered by setLevel: wrap it with filteringObserver.
function M.textFileObserver(out)
  local w = resolve_out("textFileObserver", out)
  return function(ev) write_flush(w, event_line(ev)) end
end

--- Wrap an observer so it only sees events at or above `level`. As
-- Twisted's LogLevelFilterPredicate, an event without a level (or with
-- one that is no level's name) or without a namespace is dropped.
function M.filteringObserver(observer, level)
  errors.checkcallable("filteringObserver", 1, observer)
  local ln = type(level) == "string" and LEVELS[LEVEL_ALIASES[lower(level)] or lower(level)]
  if not ln then errors.argerror("filteringObserver", 2, "unknown level '" .. safe_tostring(level) .. "'") end
  return function(ev)
    local el, ns = LEVELS[ev.level], ev.namespace
    if el and el >= ln and ns ~= nil and ns ~= "" then return observer(ev) end
  end
end

local function install_print()
  if _G.print ~= log_print then
    saved_print = _G.print
    _G.print = log_print
  end
end

local function restore_print()
  if _G.print == log_print then _G.print = saved_print end
end

local reopen_on_usr1 = false  -- startLogging made SIGUSR1 reopen its file

stop_main = function()
  local out, path = main_out, main_path
  main, main_out, main_path = nil, nil, nil
  if reopen_on_usr1 then  -- SIGUSR1 gets its default action back
    reopen_on_usr1 = false
    local reactor = package.loaded["braid.reactor"]
    if reactor then pcall(reactor._setSignalAction, "SIGUSR1", nil) end
  end
  if out then
    if path then pcall(out.close, out)
    else pcall(function() local fl = out.flush; if fl then fl(out) end end) end
  end
end

-- The print installed by startLogging: each line of what print would have
-- written is logged as a message (twisted's StdioOnnaStick). Inside an
-- observer, or with nothing to log to, it prints as before.
log_print = function(...)
  local orig = saved_print or print
  if depth > 0 or (main == nil and nobs == 0) then return orig(...) end
  local n = select("#", ...)
  local s
  if n == 1 then
    s = safe_tostring((...))
  else
    local parts = { ... }
    for i = 1, n do parts[i] = safe_tostring(parts[i]) end
    s = concat(parts, "\t", 1, n)
  end
  if nobs == 0 and INFO < min_level then return end
  if not find(s, "\n", 1, true) then return publish_printed(s) end
  for line in (s .. "\n"):gmatch("(.-)\n") do publish_printed(line) end
end

--- Begin logging to `observer` (which becomes the main observer, filtered
-- by setLevel, replacing any previous one) and log `Log opened.`.
-- @param setStdout default true: replace the global print by one that logs
function M.startLoggingWithObserver(observer, setStdout)
  errors.checkcallable("startLoggingWithObserver", 1, observer)
  stop_main()
  main = observer
  if setStdout == nil or (setStdout and setStdout ~= 0) then install_print() end
  M.msg("Log opened.")
end

--- Begin logging to a file: `out` is an io file, a path (opened for
-- append), "-" for standard output, or a LogFile. Replaces the previous
-- file; logs `Log opened.`.
-- @param setStdout default true: replace the global print by one that logs
function M.startLogging(out, setStdout)
  local w, path = resolve_out("startLogging", out)
  stop_main()
  main, main_out, main_path = file_main, w, path
  if setStdout == nil or (setStdout and setStdout ~= 0) then install_print() end
  if path or (type(w) == "table" and type(w.reopen) == "function") then
    -- a log file: SIGUSR1 reopens it (for logrotate), before user handlers
    require("braid.reactor")._setSignalAction("SIGUSR1", M.reopen)
    reopen_on_usr1 = true
  end
  M.msg("Log opened.")
end

--- Undo startLogging: restore print, flush and drop the main observer
-- (closing the file if startLogging opened it from a path). Errors go to
-- stderr again.
function M.stopLogging()
  restore_print()
  stop_main()
end

--- Reopen the log file (after logrotate moved it; braid calls this on
-- SIGUSR1). Failures are reported on stderr, never raised.
function M.reopen()
  local out = main_out
  if not out then return end
  local ok, e = pcall(function()
    if main_path then
      -- the new file first: one that cannot be opened (yet) leaves logging
      -- in the old one, and a later reopen tries again
      local f, msg = io.open(main_path, "a")
      if not f then error("can't reopen " .. main_path .. ": " .. tostring(msg), 0) end
      main_out = f
      pcall(out.close, out)
    elseif type(out) == "table" and type(out.reopen) == "function" then
      out:reopen()
    elseif out.flush then
      out:flush()
    end
  end)
  if not ok then
    write_err(event_line({ time = now(), system = "-", text = "log.reopen failed: " .. safe_tostring(e) }))
  end
end

--- Where errors go before startLogging, and reports of broken observers
-- (default io.stderr). Returns the previous stream. Mainly for tests.
function M.setErrorStream(f)
  if f ~= nil and not (type(f) == "userdata" or type(f) == "table") then
    errors.argerror("setErrorStream", 1, "a file (with a write method) or nil expected, got "
      .. type(f))
  end
  local prev = err_stream
  err_stream = f
  return prev
end

---------------------------------------------------------------------------
-- JSON

local JSON_ESC = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function json_esc(c)
  return JSON_ESC[c] or format("\\u%04x", byte(c))
end

local function json_string(s)
  if utf8.len(s) then
    return '"' .. gsub(s, '[%c"\\]', json_esc) .. '"'
  end
  -- not UTF-8: bytes >= 0x80 become \u00XX (read as Latin-1)
  return '"' .. gsub(s, '[%c"\\\128-\255]', json_esc) .. '"'
end

local function json_number(x)
  if math.type(x) == "integer" then return format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then return json_string(tostring(x)) end
  local s = format("%.14g", x)
  if tonumber(s) ~= x then s = format("%.17g", x) end
  return s
end

local json_value

-- Tables nested deeper than this are written as "<too deep>" (a deeper
-- table would overflow the C stack, and the observer would be removed).
local JSON_MAX_DEPTH = 100

local function json_table(t, seen, out, n)
  local count, maxn, array = 0, 0, true
  for k in next, t do
    count = count + 1
    if array and math.type(k) == "integer" and k > 0 then
      if k > maxn then maxn = k end
    else
      array = false
    end
  end
  if array and count > 0 and maxn == count then
    n = n + 1; out[n] = "["
    for i = 1, count do
      if i > 1 then n = n + 1; out[n] = "," end
      n = json_value(t[i], seen, out, n)
    end
    n = n + 1; out[n] = "]"
    return n
  end
  -- keys by their text; keys of one text (1 and "1") each keep their
  -- value, one after the other as Python's json.dumps writes them
  local keys = {}
  for k in next, t do
    keys[#keys + 1] = { type(k) == "string" and k or safe_tostring(k), type(k), k }
  end
  sort(keys, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  n = n + 1; out[n] = "{"
  for i = 1, #keys do
    if i > 1 then n = n + 1; out[n] = "," end
    n = n + 1; out[n] = json_string(keys[i][1]) .. ":"
    n = json_value(t[keys[i][3]], seen, out, n)
  end
  n = n + 1; out[n] = "}"
  return n
end

json_value = function(v, seen, out, n)
  local t = type(v)
  local s
  if t == "string" then s = json_string(v)
  elseif t == "number" then s = json_number(v)
  elseif t == "boolean" then s = v and "true" or "false"
  elseif t == "nil" then s = "null"
  elseif t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__tostring") then
      s = json_string(safe_tostring(v))
    elseif seen[v] then
      s = json_string("<cycle>")
    elseif (seen.depth or 0) >= JSON_MAX_DEPTH then
      s = json_string("<too deep>")
    else
      seen[v] = true
      seen.depth = (seen.depth or 0) + 1
      n = json_table(v, seen, out, n)
      seen.depth = seen.depth - 1
      seen[v] = nil
      return n
    end
  else
    s = json_string(safe_tostring(v))
  end
  n = n + 1
  out[n] = s
  return n
end

--- Encode a value as JSON: tables with keys 1..n as arrays, other tables
-- as objects (keys sorted), values with __tostring (error objects,
-- Failures) and functions as their tostring, NaN/inf as strings.
function M.toJSON(v)
  local out = {}
  local n = json_value(v, {}, out, 0)
  return concat(out, "", 1, n)
end

--- An observer writing each event as one JSON object a line (text, time,
-- system, level, namespace, isError, format, failure, the fields...).
-- @param out a path, "-", an io file or a LogFile
function M.jsonObserver(out)
  local w = resolve_out("jsonObserver", out)
  local toJSON = M.toJSON
  return function(ev) write_flush(w, toJSON(ev) .. "\n") end
end

---------------------------------------------------------------------------
-- log files (twisted.python.logfile)

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close(); return true end
  return false
end

local BaseLogFile = class.Object:extend("BaseLogFile")

function BaseLogFile:init(path)
  self.path = path
  self:_openFile()
end

function BaseLogFile:_openFile()
  local f, e = io.open(self.path, "a")
  if not f then error(errors.Error(self.__name .. ": can't open log file: " .. tostring(e)), 0) end
  self._file = f
  self.closed = false
end

function BaseLogFile:_check()
  if self.closed then error(errors.ValueError("I/O operation on closed log file " .. self.path), 3) end
end

--- Flush the file; returns the file's flush results (nil and a message
-- when it failed).
function BaseLogFile:flush()
  self:_check()
  return self._file:flush()
end

--- Close the file; it cannot be written any more (reopen() opens it again).
function BaseLogFile:close()
  if self.closed then return end
  self.closed = true
  self._file:close()
  self._file = nil
end

--- Close and open the file again (after an external tool moved it). The
-- file is opened first: when that fails the error is raised and the old
-- file stays open, so writing goes on there.
function BaseLogFile:reopen()
  local old, was_closed = self._file, self.closed
  self:_openFile()
  if old and not was_closed then pcall(old.close, old) end
end

--- LogFile(path, {rotateLength = 1000000, maxRotatedFiles = nil}): rotates
-- to path.1, path.2, ... once the file has reached rotateLength bytes
-- (false or 0: never); keeps at most maxRotatedFiles old files.
local LogFile = BaseLogFile:extend("LogFile")

function LogFile:init(path, opts)
  errors.checktype("LogFile", 1, path, "string")
  errors.checktype("LogFile", 2, opts, "table", true)
  opts = opts or {}
  local rl = opts.rotateLength
  if rl == nil then rl = 1000000 end
  if rl ~= false and (type(rl) ~= "number" or rl ~= rl or rl < 0) then
    errors.argerror("LogFile", 2, "rotateLength must be a number >= 0 or false")
  end
  local max = opts.maxRotatedFiles
  if max ~= nil and max ~= false and (math.type(max) ~= "integer" or max < 1) then
    errors.argerror("LogFile", 2, "maxRotatedFiles must be an integer >= 1 or nil, got "
      .. safe_tostring(max))
  end
  self.rotateLength = rl
  self.maxRotatedFiles = max or nil
  BaseLogFile.init(self, path)
end

function BaseLogFile.shouldRotate() return false end
function BaseLogFile._wrote() end

--- Write a string, rotating first when shouldRotate() says so.
function BaseLogFile:write(data)
  self:_check()
  if type(data) ~= "string" then data = safe_tostring(data) end
  if self:shouldRotate() then
    self:flush()
    self:rotate()
  end
  local ok, e = self._file:write(data)
  if not ok then return nil, e end
  self:_wrote(data)
  return self
end

function LogFile:_openFile()
  BaseLogFile._openFile(self)
  self.size = self._file:seek("end")
end

--- True when the file has reached rotateLength.
function LogFile:shouldRotate()
  local rl = self.rotateLength
  return rl and rl > 0 and self.size >= rl or false
end

function LogFile:_wrote(data)
  self.size = self.size + #data
end

--- The numbers of the rotated files that exist (1, 2, ...), ascending.
function LogFile:listLogs()
  local t, i = {}, 1
  while exists(self.path .. "." .. i) do
    t[i] = i
    i = i + 1
  end
  return t
end

--- Move path.N to path.N+1 (dropping those beyond maxRotatedFiles), the
-- file to path.1, and start a new file. If the file can't be renamed,
-- logging goes on in the old one.
function LogFile:rotate()
  self:_check()
  local path, max = self.path, self.maxRotatedFiles
  local logs = self:listLogs()
  for i = #logs, 1, -1 do
    local k = logs[i]
    if max and k >= max then
      os.remove(path .. "." .. k)
    else
      os.rename(path .. "." .. k, path .. "." .. (k + 1))
    end
  end
  self._file:flush()
  if not os.rename(path, path .. ".1") then return end
  self._file:close()
  self:_openFile()
end

--- DailyLogFile(path): rotates at the first write of a new (local) day to
-- path.YYYY_M_D (Twisted's suffix: no zero padding).
local DailyLogFile = BaseLogFile:extend("DailyLogFile")

function DailyLogFile:init(path)
  errors.checktype("DailyLogFile", 1, path, "string")
  BaseLogFile.init(self, path)
end

function DailyLogFile:_openFile()
  BaseLogFile._openFile(self)
  self.lastDate = self:toDate()
end

--- {year, month, day} of unix time t (default now), local time.
function DailyLogFile:toDate(t)
  local d = os_date("*t", t and floor(t) or nil)
  return { d.year, d.month, d.day }
end

local function date_key(d)
  return d[1] * 10000 + d[2] * 100 + d[3]
end

--- The rotated file suffix of a {y, m, d} date or a unix time: `2015_2_17`.
function DailyLogFile:suffix(date)
  if type(date) == "number" then date = self:toDate(date) end
  return date[1] .. "_" .. date[2] .. "_" .. date[3]
end

--- True when the date has changed since the last write.
function DailyLogFile:shouldRotate()
  return date_key(self:toDate()) > date_key(self.lastDate)
end

function DailyLogFile:_wrote()
  local today = self:toDate()
  if date_key(today) > date_key(self.lastDate) then self.lastDate = today end
end

--- Move the file to path.<suffix of lastDate> and start a new one. Nothing
-- happens if that file exists already or the rename fails.
function DailyLogFile:rotate()
  self:_check()
  local newpath = self.path .. "." .. self:suffix(self.lastDate)
  if exists(newpath) then return end
  self._file:flush()
  if not os.rename(self.path, newpath) then return end
  self._file:close()
  self:_openFile()
end

M.BaseLogFile = BaseLogFile
M.LogFile = LogFile
M.DailyLogFile = DailyLogFile

return M
