-- spec for lua/braid/log.lua
local log = require "braid.log"
local errors = require "braid.error"
local failure = require "braid.failure"
local tmp = require "helpers.tmp"
local logsink = require "helpers.logsink"
local Sink, collect, slurp = logsink.Sink, logsink.collect, logsink.slurp

local T = 1424191576.25 -- 2015-02-17 16:46:16.25 UTC

-- the expected line prefix, computed independently of log.formatTime:
-- os.time reads UTC fields as local time, which is off by the UTC offset
local function expected_stamp(t)
  local s = math.floor(t)
  local lt, ut = os.date("*t", s), os.date("!*t", s)
  ut.isdst = lt.isdst
  local off = os.time(lt) - os.time(ut)
  local sign = off < 0 and "-" or "+"
  off = math.abs(off)
  return os.date("%Y-%m-%d %H:%M:%S", s) .. ("%s%02d%02d"):format(sign, off // 3600, off % 3600 // 60)
end
local STAMP = expected_stamp(T)

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- run Lua code in a child with the given TZ; returns its output
local function lua_in_tz(tz, code)
  local prelude = ("package.path = %q "):format(package.path)
  local cmd = ("TZ=%s lua5.4 -e %s 2>&1"):format(shell_quote(tz), shell_quote(prelude .. code))
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local function tmppath()
  return tmp.path(".log")
end

local function cleanup(path, extra)
  os.remove(path)
  for i = 1, 6 do os.remove(path .. "." .. i) end
  for _, s in ipairs(extra or {}) do os.remove(path .. "." .. s) end
end

-- a fixed clock, the error stream in iso.err; all put back after each test
local iso = logsink.isolation(T)
before_each(iso.before)
after_each(iso.after)

describe("log.formatTime", function()
  it("formats local time with Twisted's numeric UTC offset", function()
    assert.equal(STAMP, log.formatTime(T))
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d$", log.formatTime(T))
  end)

  it("uses the event clock when no time is given", function()
    assert.equal(STAMP, log.formatTime())
  end)

  it("shows -0500 under TZ=EST+5 (the API.md example line)", function()
    assert.equal("2015-02-17 11:46:16-0500\n",
      lua_in_tz("EST+5", "io.write(require('braid.log').formatTime(1424191576.9), '\\n')"))
  end)

  it("shows +0530 for a zone east of UTC with minutes", function()
    assert.equal("2015-02-17 22:16:16+0530\n",
      lua_in_tz("XXX-5:30", "io.write(require('braid.log').formatTime(1424191576), '\\n')"))
  end)

  it("shows -0330 for a zone west of UTC with minutes", function()
    assert.equal("2015-02-17 13:16:16-0330\n",
      lua_in_tz("NST+3:30", "io.write(require('braid.log').formatTime(1424191576), '\\n')"))
  end)

  it("follows daylight saving time: -0400 in June, -0500 in February", function()
    assert.equal("2015-06-17 12:46:16-0400 2015-02-17 11:46:16-0500\n",
      lua_in_tz("EST5EDT,M3.2.0,M11.1.0",
        "local l = require('braid.log'); io.write(l.formatTime(1434559576), ' ', l.formatTime(1424191576), '\\n')"))
  end)

  it("handles a date whose UTC day differs from the local day", function()
    -- 2015-01-01 02:00 UTC is 2014-12-31 21:00 in EST
    assert.equal("2014-12-31 21:00:00-0500\n",
      lua_in_tz("EST+5", "io.write(require('braid.log').formatTime(1420077600), '\\n')"))
  end)
end)

describe("log.startLogging", function()
  it("writes 'Log opened.' as the first line, in Twisted's format", function()
    local out = Sink()
    log.startLogging(out, false)
    assert.equal(STAMP .. " [-] Log opened.\n", out.buf)
  end)

  it("writes each message as `time [system] text` and flushes after each", function()
    local out = Sink()
    log.startLogging(out, false)
    log.msg("hello", 42)
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] hello 42\n", out.buf)
    assert.equal(2, out.flushes)
  end)

  it("appends to a file given by path", function()
    local path = tmppath()
    finally(function() cleanup(path) end)
    local f = assert(io.open(path, "w"))
    f:write("old line\n")
    f:close()
    log.startLogging(path, false)
    log.msg("new line")
    log.stopLogging()
    assert.equal("old line\n" .. STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] new line\n", slurp(path))
  end)

  it("accepts an io file handle", function()
    local path = tmppath()
    finally(function() cleanup(path) end)
    local f = assert(io.open(path, "w"))
    log.startLogging(f, false)
    log.msg("via handle")
    log.stopLogging()
    f:close()
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] via handle\n", slurp(path))
  end)

  it("writes to standard output for '-'", function()
    local out = lua_in_tz("EST+5", [[
      local log = require('braid.log')
      log.setClock(function() return 1424191576 end)
      log.startLogging('-')
      log.msg('to stdout')]])
    assert.equal("2015-02-17 11:46:16-0500 [-] Log opened.\n2015-02-17 11:46:16-0500 [-] to stdout\n", out)
  end)

  it("replaces the previous file when called again", function()
    local a, b = Sink(), Sink()
    log.startLogging(a, false)
    log.startLogging(b, false)
    log.msg("second")
    assert.equal(STAMP .. " [-] Log opened.\n", a.buf)
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] second\n", b.buf)
  end)

  it("closes a file it opened from a path when replaced", function()
    local path = tmppath()
    finally(function() cleanup(path) end)
    log.startLogging(path, false)
    log.startLogging(Sink(), false)
    log.msg("not in the file")
    assert.equal(STAMP .. " [-] Log opened.\n", slurp(path))
  end)

  it("raises TypeError for something that is not a file, path or writer", function()
    local ok, e = pcall(log.startLogging, 42)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.matches("bad argument #1 to 'startLogging'", tostring(e))
  end)

  it("raises an Error naming the path when the file can't be opened", function()
    local ok, e = pcall(log.startLogging, "/nonexistent-dir/x.log")
    assert.is_false(ok)
    assert.is_true(errors.Error:isinstance(e))
    assert.matches("/nonexistent%-dir/x%.log", tostring(e))
  end)

  it("startLoggingWithObserver makes the observer the main (level-filtered) one", function()
    local seen = {}
    log.startLoggingWithObserver(function(ev) seen[#seen + 1] = ev.text end, false)
    log.Logger("x"):debug("hidden")
    log.msg("shown")
    assert.same({ "Log opened.", "shown" }, seen)
  end)
end)

describe("print under startLogging", function()
  local orig
  before_each(function() orig = _G.print end)
  after_each(function() _G.print = orig end)

  it("is replaced by default, logging tab-joined arguments as print would", function()
    local out = Sink()
    log.startLogging(out)
    assert.are_not.equal(orig, _G.print)
    _G.print("a", 1, nil, true)
    assert.equal(STAMP .. " [-] a\t1\tnil\ttrue\n", out.buf:sub(#(STAMP .. " [-] Log opened.\n") + 1))
  end)

  it("logs each printed line as its own message", function()
    local out = Sink()
    log.startLogging(out)
    local events = collect()
    _G.print("one\ntwo")
    assert.equal(2, #events)
    assert.equal("one", events[1].text)
    assert.equal("two", events[2].text)
    assert.is_true(events[1].printed)
    assert.equal("info", events[1].level)
    assert.is_false(events[1].isError)
    assert.is_false(events[2].isError)
  end)

  it("uses the current system", function()
    local out = Sink()
    log.startLogging(out)
    log.callWithContext("Echo,1,127.0.0.1", _G.print, "in a protocol")
    assert.truthy(out.buf:find(STAMP .. " [Echo,1,127.0.0.1] in a protocol\n", 1, true))
  end)

  it("is left alone with setStdout = false", function()
    log.startLogging(Sink(), false)
    assert.equal(orig, _G.print)
  end)

  it("is left alone with setStdout false or 0 by startLogging and startLoggingWithObserver", function()
    log.startLoggingWithObserver(function() end, false)
    assert.equal(orig, _G.print)
    log.startLoggingWithObserver(function() end, 0)
    assert.equal(orig, _G.print)
    log.startLogging(Sink(), 0)
    assert.equal(orig, _G.print)
    log.stopLogging()
  end)

  it("is restored by stopLogging", function()
    log.startLogging(Sink())
    log.stopLogging()
    assert.equal(orig, _G.print)
  end)

  it("prints as before when called from inside an observer (no recursion)", function()
    local printed = {}
    _G.print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t") end
    local out = Sink()
    log.startLogging(out)
    log.addObserver(function(ev) if ev.text == "trigger" then _G.print("from observer") end end)
    log.msg("trigger")
    assert.same({ "from observer" }, printed)
    assert.is_nil(out.buf:find("from observer", 1, true))
  end)
end)

describe("log.msg", function()
  it("joins its arguments, tostring'ed, with single spaces", function()
    local events = collect()
    log.msg("a", 1, 2.5, nil, false)
    assert.equal("a 1 2.5 nil false", events[1].text)
  end)

  it("logs an empty text with no arguments", function()
    local events = collect()
    log.msg()
    assert.equal("", events[1].text)
  end)

  it("indents the continuation lines of a multi-line message with a tab (Twisted's format)", function()
    local out = Sink()
    log.startLogging(out, false)
    log.msg("line1\nline2\nline3")
    assert.equal(STAMP .. " [-] line1\n\tline2\n\tline3\n", out.buf:sub(#(STAMP .. " [-] Log opened.\n") + 1))
  end)

  it("makes events with level info, namespace log_legacy, isError false and the time", function()
    local events = collect()
    log.msg("x")
    local ev = events[1]
    assert.equal("info", ev.level)
    assert.equal("log_legacy", ev.namespace)
    assert.is_false(ev.isError)
    assert.equal("-", ev.system)
    assert.equal(T, ev.time)
    assert.is_nil(ev.failure)
  end)

  it("never raises for a value whose __tostring raises; a marker replaces it", function()
    local events = collect()
    local bad = setmetatable({}, { __tostring = function() error("no string for you") end })
    assert.has_no.errors(function() log.msg("before", bad, "after") end)
    assert.matches("^before <unprintable table: .*no string for you> after$", events[1].text)
  end)

  it("never raises for a __tostring returning a non-string", function()
    local events = collect()
    log.msg(setmetatable({}, { __tostring = function() return {} end }))
    assert.matches("^<unprintable table", events[1].text)
  end)

  it("does no work (no tostring) when nothing listens", function()
    local calls = 0
    local v = setmetatable({}, { __tostring = function() calls = calls + 1; return "v" end })
    log.msg(v)
    assert.equal(0, calls)
  end)

  it("does no work when the level hides info and no observer listens", function()
    local calls = 0
    local v = setmetatable({}, { __tostring = function() calls = calls + 1; return "v" end })
    log.startLogging(Sink(), false)
    log.setLevel("warn")
    log.msg(v)
    assert.equal(0, calls)
  end)
end)

describe("log.err", function()
  local function raised(v)
    local _, f = xpcall(function() error(v) end, failure.msgh)
    return f
  end

  -- its brief line raised, and the traceback was dropped for a
  -- "<traceback unavailable>" line
  it("keeps the traceback of a value whose __tostring raises", function()
    local out = Sink()
    log.startLogging(out, false)
    local bad = setmetatable({}, { __tostring = function() error("no text") end })
    log.err(raised(bad), "why")
    assert.matches("%[%-%] why\n\tTraceback %(most recent call last%):\n\tstack traceback:\n", out.buf)
    assert.matches("\n\tLuaError: <unprintable table: [^\n]*no text>\n$", out.buf)
  end)

  it("logs why, then the Failure's traceback, continuation lines tab-indented", function()
    local out = Sink()
    log.startLogging(out, false)
    local f = raised("boom")
    log.err(f, "oops")
    local body = out.buf:sub(#(STAMP .. " [-] Log opened.\n") + 1)
    local expected = STAMP .. " [-] oops\n\t" .. f:getTraceback():gsub("\n$", ""):gsub("\n", "\n\t") .. "\n"
    assert.equal(expected, body)
    assert.matches("\n\tLuaError: [^\n]*log_spec%.lua:%d+: boom\n$", body)
    assert.truthy(body:find("\n\tTraceback (most recent call last):\n", 1, true))
  end)

  it("uses 'Unhandled Error' when no why is given", function()
    local events = collect()
    log.err(raised("x"))
    assert.matches("^Unhandled Error\nTraceback %(most recent call last%):\n", events[1].text)
    assert.is_nil(events[1].why)
  end)

  it("makes events with isError, level critical, the failure and why", function()
    local events = collect()
    local f = raised(errors.ConnectionLost())
    log.err(f, "lost")
    local ev = events[1]
    assert.is_true(ev.isError)
    assert.equal("critical", ev.level)
    assert.equal(f, ev.failure)
    assert.equal("lost", ev.why)
    assert.equal("log_legacy", ev.namespace)
    assert.matches("ConnectionLost: Connection to the other side was lost in a non%-clean fashion%.$", ev.text)
  end)

  it("wraps a non-Failure value in a Failure whose traceback starts where err was called", function()
    local events = collect()
    local e = errors.ValueError("bad value")
    log.err(e)
    local f = events[1].failure
    assert.is_true(failure.isFailure(f))
    assert.equal(e, f.value)
    assert.equal(errors.ValueError, f.type)
    assert.matches("^stack traceback:\n\t[^\n]*log_spec%.lua:%d+:", f.traceback)
    assert.matches("ValueError: bad value$", events[1].text)
  end)

  it("wraps a raw value as a LuaError", function()
    local events = collect()
    log.err("plain string")
    assert.equal(errors.LuaError, events[1].failure.type)
    assert.matches("\nLuaError: plain string$", events[1].text)
  end)

  it("logs NoCurrentExceptionError when called with nothing", function()
    local events = collect()
    log.err()
    assert.equal(errors.NoCurrentExceptionError, events[1].failure.type)
  end)

  it("logs under the current system", function()
    local events = collect()
    log.callWithContext("Proto,3,10.0.0.1", log.err, "x")
    assert.equal("Proto,3,10.0.0.1", events[1].system)
  end)

  it("reportError logs a Failure or a raised value as err does", function()
    local events = collect()
    local f = raised("from a callback")
    log.reportError(f)
    log.reportError("raw")
    assert.equal(f, events[1].failure)
    assert.matches("^Unhandled Error\n", events[1].text)
    assert.equal("raw", events[2].failure.value)
    assert.is_true(events[2].isError)
  end)

  it("never raises when the error's tostring raises", function()
    local events = collect()
    local bad = setmetatable({}, { __tostring = function() error("nope") end })
    assert.has_no.errors(function() log.err(bad, bad) end)
    assert.matches("^<unprintable table", events[1].text)
  end)
end)

describe("output before startLogging", function()
  it("writes error events to stderr as full log lines", function()
    log.err("early", "early trouble")
    assert.matches("^" .. STAMP:gsub("%p", "%%%0") .. " %[%-%] early trouble\n\tTraceback", iso.err.buf)
    assert.matches("\n\tLuaError: early\n$", iso.err.buf)
  end)

  it("drops other messages", function()
    log.msg("nobody hears this")
    log.Logger("x"):warn("nor this")
    assert.equal("", iso.err.buf)
  end)

  it("writes Logger error and critical events to stderr", function()
    log.Logger("x"):error("bad {n}", { n = 1 })
    assert.equal(STAMP .. " [-] bad 1\n", iso.err.buf)
  end)

  it("resumes after stopLogging", function()
    local out = Sink()
    log.startLogging(out, false)
    log.err("in file")
    assert.equal("", iso.err.buf)
    log.stopLogging()
    log.err("on stderr")
    assert.matches("LuaError: on stderr\n$", iso.err.buf)
  end)

  it("writes events by their level, whatever their isError and whether or not observers were added", function()
    log.Logger("x"):info("info with a failure", { failure = errors.RuntimeError("x") })
    local events = collect()
    log.Logger("x"):info("info with a failure", { failure = errors.RuntimeError("x") })
    log.Logger("x"):critical("critical {n}", { n = 1, isError = false })
    assert.equal(2, #events)
    assert.equal(STAMP .. " [-] critical 1\n", iso.err.buf)
  end)

  it("still goes to stderr when only observers were added", function()
    local events = collect()
    log.err("x", "seen twice")
    assert.equal(1, #events)
    assert.matches("%[%-%] seen twice\n", iso.err.buf)
  end)
end)

describe("log observers", function()
  it("are called with each event", function()
    local events = collect()
    log.msg("one")
    log.msg("two")
    assert.equal(2, #events)
    assert.equal("two", events[2].text)
  end)

  it("stop being called after removeObserver", function()
    local events, obs = collect()
    log.msg("one")
    log.removeObserver(obs)
    log.msg("two")
    assert.equal(1, #events)
  end)

  it("removing an observer that is not there is harmless", function()
    assert.has_no.errors(function() log.removeObserver(function() end) end)
  end)

  it("are called once even if added twice", function()
    local events, obs = collect()
    log.addObserver(obs)
    log.msg("x")
    assert.equal(1, #events)
  end)

  it("are called in the order they were added", function()
    local order = {}
    log.addObserver(function() order[#order + 1] = "a" end)
    log.addObserver(function() order[#order + 1] = "b" end)
    log.msg("x")
    assert.same({ "a", "b" }, order)
  end)

  it("must be callable", function()
    local ok, e = pcall(log.addObserver, 42)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.matches("bad argument #1 to 'addObserver'", tostring(e))
  end)

  it("that raise are removed and reported on stderr; the others still get the event", function()
    local events = collect()
    local bad_calls = 0
    local function bad() bad_calls = bad_calls + 1; error("observer broke") end
    log.addObserver(bad)
    local after = {}
    log.addObserver(function(ev) after[#after + 1] = ev.text end)
    log.msg("first")
    log.msg("second")
    assert.equal(1, bad_calls)
    assert.equal(2, #events)
    assert.same({ "first", "second" }, after)
    assert.equal(2, #log.getObservers())
    assert.matches("%[%-%] Log observer function: [^\n]* raised an error and was removed\n\tTraceback", iso.err.buf)
    assert.matches("observer broke", iso.err.buf)
  end)

  it("a main observer that raises is dropped and errors go to stderr again", function()
    log.startLoggingWithObserver(function(ev) if ev.text == "boom" then error("disk full") end end, false)
    log.msg("boom")
    assert.matches("raised an error and was removed", iso.err.buf)
    iso.err.buf = ""
    log.err("later")
    assert.matches("LuaError: later\n$", iso.err.buf)
  end)

  it("see debug events even when the level hides them from the file", function()
    local events = collect()
    local out = Sink()
    log.startLogging(out, false)
    log.Logger("ns"):debug("quiet")
    assert.equal("quiet", events[#events].text)
    assert.is_nil(out.buf:find("quiet", 1, true))
  end)

  it("that log from inside an observer do not loop forever", function()
    local calls = 0
    log.addObserver(function() calls = calls + 1; log.msg("again") end)
    assert.has_no.errors(function() log.msg("start") end)
    assert.equal(8, calls)
  end)

  -- an observer that yielded left its coroutine waiting inside publish, and
  -- eight such coroutines dropped silenced the log for good (and print
  -- under startLogging); now it cannot yield there
  it("that yield raise, are removed, and leave nothing counted", function()
    local events = collect()
    local yielding = function(ev) if ev.text == "in co" then coroutine.yield() end end
    log.addObserver(yielding)
    for _ = 1, 20 do
      local co = coroutine.create(function() log.msg("in co") end)
      assert.is_true(coroutine.resume(co))
      assert.equal("dead", coroutine.status(co))
    end
    for _, o in ipairs(log.getObservers()) do assert.are_not.equal(yielding, o) end
    assert.matches("raised an error and was removed", iso.err.buf)
    assert.matches("attempt to yield across a C%-call boundary", iso.err.buf)
    log.msg("main")
    assert.equal("main", events[#events].text)
    -- nesting on a coroutine still stops an observer that logs
    local calls = 0
    log.addObserver(function(ev) if ev.text ~= "main" then calls = calls + 1; log.msg("again") end end)
    local co = coroutine.wrap(function() log.msg("start") end)
    co()
    assert.equal(8, calls)
  end)

  it("may remove themselves while an event is being delivered", function()
    local seen = {}
    local function once(ev) seen[#seen + 1] = "once:" .. ev.text; log.removeObserver(once) end
    log.addObserver(once)
    log.addObserver(function(ev) seen[#seen + 1] = "always:" .. ev.text end)
    log.msg("a")
    log.msg("b")
    assert.same({ "once:a", "always:a", "always:b" }, seen)
  end)
end)

describe("the log system", function()
  it("is '-' by default", function()
    assert.equal("-", log.getSystem())
  end)

  it("setSystem swaps it and returns the previous one", function()
    local out = Sink()
    log.startLogging(out, false)
    local prev = log.setSystem("Echo,0,127.0.0.1")
    log.msg("hi")
    assert.equal("Echo,0,127.0.0.1", log.setSystem(prev))
    log.msg("back")
    assert.truthy(out.buf:find(STAMP .. " [Echo,0,127.0.0.1] hi\n" .. STAMP .. " [-] back\n", 1, true))
  end)

  it("setSystem(nil) means '-'", function()
    log.setSystem(nil)
    assert.equal("-", log.getSystem())
  end)

  it("callWithContext runs f with the system and returns its results", function()
    local a, b, c = log.callWithContext("S", function(x, y)
      return log.getSystem(), x, y
    end, 1, nil)
    assert.equal("S", a)
    assert.equal(1, b)
    assert.is_nil(c)
    assert.equal("-", log.getSystem())
  end)

  it("callWithContext restores the system when f raises, passing the error unchanged", function()
    local e = errors.ValueError("inner")
    local ok, got = pcall(log.callWithContext, "S", function() error(e) end)
    assert.is_false(ok)
    assert.equal(e, got)
    assert.equal("-", log.getSystem())
  end)

  it("callWithContext keeps the traceback of the raise point", function()
    local ok, f = xpcall(log.callWithContext, failure.msgh, "S", function() error("deep") end)
    assert.is_false(ok)
    assert.matches("in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
  end)

  it("callWithContext nests", function()
    local seen = {}
    log.callWithContext("outer", function()
      seen[#seen + 1] = log.getSystem()
      log.callWithContext("inner", function() seen[#seen + 1] = log.getSystem() end)
      seen[#seen + 1] = log.getSystem()
    end)
    assert.same({ "outer", "inner", "outer" }, seen)
  end)

  it("callWithContext accepts Twisted's context table {system = ...}", function()
    assert.equal("T", log.callWithContext({ system = "T" }, log.getSystem))
  end)

  it("callWithContext with a context table without a system keeps the system in force, as Twisted merges it", function()
    assert.equal("-", log.callWithContext({}, log.getSystem))
    assert.equal("Outer", log.callWithContext("Outer", log.callWithContext, { other = 1 }, log.getSystem))
    assert.equal("Outer", log.callWithContext({ system = "Outer" }, log.callWithContext, {}, log.getSystem))
    log._setAmbientSystem(function() return "Amb,1,10.0.0.7" end)
    finally(function()
      local tcp_loaded = package.loaded["braid.tcp"] ~= nil
      log._setAmbientSystem(tcp_loaded and require("braid.core").tcp_current_system or nil)
    end)
    log.setSystem(false)
    assert.equal("Amb,1,10.0.0.7", log.callWithContext({}, log.getSystem))
    assert.equal("Amb,1,10.0.0.7", log.getSystem())
  end)
end)

describe("callWithContext in a coroutine", function()
  local defer = require "braid.defer"

  -- the system and text of each event, as "system text"
  local function lines(events)
    local t = {}
    for i, ev in ipairs(events) do t[i] = ev.system .. " " .. ev.text end
    return t
  end

  it("gives the caller's system back while f awaits, and f's again when it goes on", function()
    local events = collect()
    local d = defer.Deferred()
    local got
    defer.inlineCallbacks(function()
      return log.callWithContext("Ctx", function()
        log.msg("before")
        local v = defer.await(d)
        log.msg("after " .. v)
        return v * 2
      end)
    end)():addCallback(function(v) got = v end)
    log.msg("meanwhile")
    assert.equal("-", log.getSystem())
    d:callback(21)
    log.msg("done")
    assert.equal(42, got)
    assert.same({ "Ctx before", "- meanwhile", "Ctx after 21", "- done" }, lines(events))
  end)

  it("passes each yield of f out and each resume's values in, and returns f's results", function()
    local co = coroutine.create(function(a)
      return log.callWithContext("S", function(x)
        assert.is_true(coroutine.isyieldable())
        local y = coroutine.yield(x + 1, "two", log.getSystem())
        local z1, z2 = coroutine.yield(y * 2, log.getSystem())
        return z1, z2, nil, log.getSystem()
      end, a)
    end)
    assert.same({ true, 2, "two", "S" }, { coroutine.resume(co, 1) })
    assert.equal("-", log.getSystem())
    log.setSystem("Elsewhere")
    assert.same({ true, 20, "S" }, { coroutine.resume(co, 10) })
    assert.equal("Elsewhere", log.getSystem())
    assert.same({ true, "z", false, nil, "S", n = 5 }, table.pack(coroutine.resume(co, "z", false)))
    assert.equal("dead", coroutine.status(co))
    assert.equal("Elsewhere", log.getSystem())
  end)

  it("raises f's error after a yield unchanged, with the raise point's traceback", function()
    local e = errors.ValueError("late")
    local co = coroutine.create(function()
      return xpcall(log.callWithContext, failure.msgh, "S", function()
        coroutine.yield()
        error(e)
      end)
    end)
    assert.is_true((coroutine.resume(co)))
    assert.equal("-", log.getSystem())
    local ok, okf, f = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_false(okf)
    assert.equal(e, f.value)
    assert.matches("in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
    assert.equal("-", log.getSystem())
  end)

  it("raises a string error after an await into the inlineCallbacks function's Deferred, traceback included", function()
    local d = defer.Deferred()
    local f
    defer.inlineCallbacks(function()
      return log.callWithContext("S", function()
        defer.await(d)
        error("after the await")
      end)
    end)():addErrback(function(fl) f = fl end)
    d:callback(nil)
    assert.matches("log_spec%.lua:%d+: after the await$", f.value)
    assert.matches("in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
    assert.equal("-", log.getSystem())
  end)

  it("leaves defer's NotACoroutineError for a plain coroutine.yield in f to f's pcall", function()
    local got
    defer.inlineCallbacks(function()
      return log.callWithContext("S", function()
        local ok, e = pcall(function() coroutine.yield("plain") end)
        return { ok, defer.NotACoroutineError:isinstance(e), log.getSystem() }
      end)
    end)():addCallback(function(v) got = v end)
    assert.same({ false, true, "S" }, got)
    assert.equal("-", log.getSystem())
  end)

  it("nests: each level's system follows its own coroutine", function()
    local seen = {}
    local co = coroutine.wrap(function()
      log.callWithContext("outer", function()
        log.callWithContext("inner", function()
          coroutine.yield()
          seen[#seen + 1] = log.getSystem()
        end)
        seen[#seen + 1] = log.getSystem()
        coroutine.yield()
        seen[#seen + 1] = log.getSystem()
      end)
      seen[#seen + 1] = log.getSystem()
    end)
    co()
    seen[#seen + 1] = log.getSystem()
    log.callWithContext("third", co)  -- resumed under another system
    seen[#seen + 1] = log.getSystem()
    co()
    assert.same({ "-", "inner", "outer", "-", "outer", "-" }, seen)
  end)

  it("keeps a setSystem made inside f with f across a yield", function()
    local co = coroutine.wrap(function()
      return log.callWithContext("S", function()
        log.setSystem("Changed")
        coroutine.yield()
        return log.getSystem()
      end)
    end)
    co()
    assert.equal("-", log.getSystem())
    assert.equal("Changed", co())
    assert.equal("-", log.getSystem())
  end)

  it("raises f's error without a yield unchanged, with the raise point's traceback, closing what f left open", function()
    local e = errors.ValueError("early")
    local closed = false
    local co = coroutine.create(function()
      return xpcall(log.callWithContext, failure.msgh, "S", function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        error(e)
      end)
    end)
    local ok, okf, f = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_false(okf)
    assert.equal(e, f.value)
    assert.is_true(closed)
    assert.matches("in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
    assert.equal("-", log.getSystem())
  end)

  it("carries f's traceback only while its error is raised again: the same value raised later has its own", function()
    local co = coroutine.wrap(function()
      local first = table.pack(pcall(log.callWithContext, "S", function() error("same", 0) end))
      return first, table.pack(xpcall(function() error("same", 0) end, failure.msgh))
    end)
    local first, later = co()
    assert.same({ false, "same", n = 2 }, first)
    local ok, f = later[1], later[2]
    assert.is_false(ok)
    assert.equal("same", f.value)
    assert.is_nil(f.traceback:find("called from:", 1, true))
    assert.equal(1, select(2, f.traceback:gsub("in function 'error'", "")))
  end)

  it("leaves no carried traceback behind when the coroutine f's error killed is never closed", function()
    local co = coroutine.create(function()
      return log.callWithContext("S", function() error("stale", 0) end)
    end)
    assert.same({ false, "stale" }, { coroutine.resume(co) })
    assert.equal("dead", coroutine.status(co))
    local ok, f = xpcall(function() error("stale", 0) end, failure.msgh)
    assert.is_false(ok)
    assert.equal("stale", f.value)
    assert.is_nil(f.traceback:find("called from:", 1, true))
    assert.equal(1, select(2, f.traceback:gsub("in function 'error'", "")))
  end)

  it("nests: an error raised in the inner f keeps its raise point through the outer relay", function()
    local co = coroutine.create(function()
      return xpcall(log.callWithContext, failure.msgh, "outer", function()
        return log.callWithContext("inner", function() error("deep", 0) end)
      end)
    end)
    local ok, okf, f = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_false(okf)
    assert.equal("deep", f.value)
    assert.matches("^stack traceback:\n%s*%[C%]: in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
    -- the inner relay's frames, then the outer's, then the caller's
    assert.equal(1, select(2, f.traceback:gsub("stack traceback:", "")))
    assert.equal(2, select(2, f.traceback:gsub("\ncalled from:\n", "")))
    assert.equal("-", log.getSystem())
  end)

  it("keeps the carry of an error being raised when a coroutine that died carrying another is closed", function()
    local dead = coroutine.create(function()
      return log.callWithContext("S", function() error("old", 0) end)
    end)
    assert.is_false((coroutine.resume(dead)))
    local co = coroutine.wrap(function()
      return xpcall(log.callWithContext, function(e)
        coroutine.close(dead)
        return failure.msgh(e)
      end, "S", function() error("new", 0) end)
    end)
    local ok, f = co()
    assert.is_false(ok)
    assert.equal("new", f.value)
    assert.equal(1, select(2, f.traceback:gsub("\ncalled from:\n", "")))
    assert.matches("^stack traceback:\n%s*%[C%]: in function 'error'\n[^\n]*log_spec%.lua:%d+:", f.traceback)
  end)

  it("lets f await through nested callWithContext calls in an inlineCallbacks function", function()
    local d = defer.Deferred()
    local got
    defer.inlineCallbacks(function()
      return log.callWithContext("outer", function()
        return log.callWithContext("inner", function()
          local v = defer.await(d)
          return v .. " " .. log.getSystem()
        end) .. " " .. log.getSystem()
      end)
    end)():addCallback(function(v) got = v end)
    assert.equal("-", log.getSystem())
    d:callback("x")
    assert.equal("x inner outer", got)
    assert.equal("-", log.getSystem())
  end)

  it("keeps a setSystem made inside f after its first yield with f across the next", function()
    local co = coroutine.wrap(function()
      return log.callWithContext("S", function()
        coroutine.yield()
        log.setSystem("Changed")
        coroutine.yield()
        return log.getSystem()
      end)
    end)
    co()
    co()
    assert.equal("-", log.getSystem())
    assert.equal("Changed", co())
    assert.equal("-", log.getSystem())
  end)

  it("leaves NotACoroutineError for a plain coroutine.yield after an await to f's pcall", function()
    local d = defer.Deferred()
    local got
    defer.inlineCallbacks(function()
      return log.callWithContext("S", function()
        defer.await(d)
        local ok, e = pcall(function() coroutine.yield("plain") end)
        return { ok, defer.NotACoroutineError:isinstance(e), log.getSystem() }
      end)
    end)():addCallback(function(v) got = v end)
    d:callback(nil)
    assert.same({ false, true, "S" }, got)
    assert.equal("-", log.getSystem())
  end)

  it("calls a callable table as f", function()
    local f = setmetatable({}, { __call = function(_, a, b) return a + b, log.getSystem() end })
    local co = coroutine.wrap(function() return log.callWithContext("T", f, 1, 2) end)
    assert.same({ 3, "T" }, { co() })
    assert.equal("-", log.getSystem())
  end)

  it("closes what f left open when the caller's coroutine is closed while f waits", function()
    local closed = false
    local co = coroutine.create(function()
      log.callWithContext("S", function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        coroutine.yield()
      end)
    end)
    coroutine.resume(co)
    assert.is_false(closed)
    assert.is_true(coroutine.close(co))
    assert.is_true(closed)
    assert.equal("-", log.getSystem())
  end)
end)

describe("log levels", function()
  it("default to info", function()
    assert.equal("info", log.getLevel())
  end)

  it("hide lower levels from the log file", function()
    local out = Sink()
    log.startLogging(out, false)
    log.setLevel("error")
    local L = log.Logger("ns")
    L:info("no info")
    L:warn("no warn")
    log.msg("no msg")
    L:error("yes error")
    L:critical("yes critical")
    log.err("e", "yes err")
    local body = out.buf
    assert.is_nil(body:find("no ", 1, true))
    assert.truthy(body:find("[-] yes error\n", 1, true))
    assert.truthy(body:find("[-] yes critical\n", 1, true))
    assert.truthy(body:find("[-] yes err\n", 1, true))
  end)

  it("show debug messages once the level is debug", function()
    local out = Sink()
    log.startLogging(out, false)
    log.setLevel("debug")
    log.Logger("ns"):debug("now visible")
    assert.truthy(out.buf:find("[-] now visible\n", 1, true))
  end)

  it("accept upper case and 'warning'", function()
    log.setLevel("WARNING")
    assert.equal("warn", log.getLevel())
    log.setLevel("Critical")
    assert.equal("critical", log.getLevel())
  end)

  it("reject an unknown name with ValueError and a non-string with TypeError", function()
    local ok, e = pcall(log.setLevel, "loud")
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
    assert.matches("unknown level 'loud'", tostring(e))
    ok, e = pcall(log.setLevel, 3)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.equal("info", log.getLevel())
  end)

  it("filteringObserver passes only events at or above its level", function()
    local seen = {}
    log.addObserver(log.filteringObserver(function(ev) seen[#seen + 1] = ev.text end, "warn"))
    local L = log.Logger("ns")
    L:info("i")
    L:warn("w")
    L:critical("c")
    assert.same({ "w", "c" }, seen)
  end)

  it("filteringObserver takes the level names setLevel takes", function()
    local seen = {}
    for _, name in ipairs({ "WARN", "warning", "Warn" }) do
      log.addObserver(log.filteringObserver(function(ev) seen[#seen + 1] = name .. ":" .. ev.text end, name))
    end
    local L = log.Logger("ns")
    L:info("i")
    L:warn("w")
    table.sort(seen)
    assert.same({ "WARN:w", "Warn:w", "warning:w" }, seen)
    local ok, e = pcall(log.filteringObserver, print, "loud")
    assert.is_false(ok)
    assert.matches("unknown level 'loud'", tostring(e))
  end)

  it("takes a failure field of false as no failure", function()
    local events = collect()
    log.Logger("ns"):info("plain {x}", { x = 1, failure = false })
    assert.equal("plain 1", events[1].text)
    assert.is_false(events[1].isError)
  end)
end)

describe("log.Logger", function()
  it("fills {name} placeholders from the fields", function()
    local events = collect()
    log.Logger("ns"):info("hello {who}, you are {age}", { who = "bob", age = 42 })
    assert.equal("hello bob, you are 42", events[1].text)
  end)

  it("turns {{ and }} into literal braces", function()
    local events = collect()
    log.Logger("ns"):info("{{literal}} and {x} }}", { x = 1 })
    assert.equal("{literal} and 1 }", events[1].text)
  end)

  it("leaves a placeholder with no value as it is", function()
    local events = collect()
    log.Logger("ns"):info("value: {missing}, other: {x}", { x = false })
    assert.equal("value: {missing}, other: false", events[1].text)
  end)

  it("follows dotted paths into tables, numbers as list indexes", function()
    local events = collect()
    log.Logger("ns"):info("{peer.host}:{peer.port} {list.2}", { peer = { host = "1.2.3.4", port = 80 }, list = { "a", "b" } })
    assert.equal("1.2.3.4:80 b", events[1].text)
  end)

  it("can use the event's own keys such as {namespace} and {level}", function()
    local events = collect()
    log.Logger("myns"):warn("{namespace}/{level}")
    assert.equal("myns/warn", events[1].text)
  end)

  it("leaves text that is not a placeholder alone", function()
    local events = collect()
    log.Logger("ns"):info("a {not a key} {} { x } }")
    assert.equal("a {not a key} {} { x } }", events[1].text)
  end)

  it("logs 'Unable to format event' when formatting raises", function()
    local events = collect()
    local bad = setmetatable({}, { __index = function() error("no fields here") end })
    log.Logger("ns"):info("{a.b}", { a = bad })
    assert.matches('^Unable to format event "{a%.b}": .*no fields here', events[1].text)
  end)

  it("reads Python's conversions and format specs, as twisted.logger", function()
    local events = collect()
    local L = log.Logger("ns")
    L:info("{a!r} {b:>5}|", { a = "x", b = 3 })
    L:info("{s!r} {s!s} {u!a}", { s = "it's", u = "\u{e9}" })
    L:info("{f:.2f} {n:05d} {n:,} {h:#x} {h:_b} {c:c} {p:.1%}", { f = 3.14159, n = 1234567, h = 255, c = 65, p = 0.25 })
    L:info("{s:*^9} {s:.2} {big:010,} {neg:=+6} {t:>6}", { s = "abc", big = 1234, neg = -1, t = true })
    L:info("{a:{w}}| {a[k]} {g()}", { a = { k = "v" }, w = 3, g = function() return "called" end })
    L:info("{missing:>5} {missing!r}")
    assert.equal("'x'     3|", events[1].text)
    assert.equal("\"it's\" it's '\\xe9'", events[2].text)
    assert.equal("3.14 1234567 1,234,567 0xff 1111_1111 A 25.0%", events[3].text)
    assert.equal("***abc*** ab 00,001,234 -    1   true", events[4].text)
    assert.matches("^table: 0x%x+|", events[5].text)
    assert.matches("| v called$", events[5].text)
    assert.equal("{missing:>5} {missing!r}", events[6].text)
    assert.equal(6, #events)
  end)

  it("logs 'Unable to format event' for an unknown conversion or a bad spec, as Twisted", function()
    local events = collect()
    local L = log.Logger("ns")
    L:info("{a!x}", { a = "x" })
    L:info("{a:q}", { a = "x" })
    L:info("{a:d}", { a = 2.5 })
    L:info("{a:+}", { a = "x" })
    L:info("{a:<<<}", { a = "x" })
    L:info("{a:.2}", { a = 5 })
    assert.equal(6, #events)
    assert.equal('Unable to format event "{a!x}": Unknown conversion specifier x', events[1].text)
    assert.equal([[Unable to format event "{a:q}": Unknown format code 'q' for object of type 'str']], events[2].text)
    assert.equal([[Unable to format event "{a:d}": Unknown format code 'd' for object of type 'float']], events[3].text)
    assert.equal('Unable to format event "{a:+}": Sign not allowed in string format specifier', events[4].text)
    assert.equal([[Unable to format event "{a:<<<}": Invalid format specifier '<<<']], events[5].text)
    assert.equal('Unable to format event "{a:.2}": Precision not allowed in integer format specifier', events[6].text)
  end)

  it("gives observers level, namespace, format, system, time and the fields", function()
    local events = collect()
    log.Logger("app.db"):warn("slow query {ms}", { ms = 120, table = "users" })
    local ev = events[1]
    assert.equal("warn", ev.level)
    assert.equal("app.db", ev.namespace)
    assert.equal("slow query {ms}", ev.format)
    assert.equal("slow query 120", ev.text)
    assert.equal(120, ev.ms)
    assert.equal("users", ev.table)
    assert.equal("-", ev.system)
    assert.equal(T, ev.time)
    assert.is_false(ev.isError)
  end)

  it("marks error and critical events as errors (Twisted's legacy mapping)", function()
    local events = collect()
    local L = log.Logger("ns")
    L:debug("d"); L:info("i"); L:warn("w"); L:error("e"); L:critical("c")
    local flags = {}
    for i, ev in ipairs(events) do flags[i] = ev.level .. "=" .. tostring(ev.isError) end
    assert.same({ "debug=false", "info=false", "warn=false", "error=true", "critical=true" }, flags)
  end)

  it("lets a field named system set the system", function()
    local out = Sink()
    log.startLogging(out, false)
    log.Logger("ns"):info("x", { system = "custom" })
    assert.truthy(out.buf:find(STAMP .. " [custom] x\n", 1, true))
  end)

  it("does not modify the fields table", function()
    local fields = { x = 1 }
    collect()
    log.Logger("ns"):info("{x}", fields)
    assert.same({ x = 1 }, fields)
  end)

  it("defaults its namespace to the calling file's name", function()
    assert.equal("log_spec", log.Logger().namespace)
    assert.equal("log_spec", log.Logger:new().namespace)
    -- a subclass whose init calls Logger.init got "class" (braid.class's
    -- constructor was taken for the caller); as Twisted, the file of the
    -- subclass's init
    local path = tmp.path()
    local f = assert(io.open(path, "w"))
    f:write("local log = require 'braid.log'\n",
      "local My = log.Logger:extend('My')\n",
      "function My:init() log.Logger.init(self) end\n",
      "return My\n")
    f:close()
    local My = assert(loadfile(path))()
    os.remove(path)
    assert.equal(path:match("([^/]+)$"), My().namespace)
  end)

  it("prints as <Logger \"namespace\">", function()
    assert.equal('<Logger "ns">', tostring(log.Logger("ns")))
  end)

  it("raises TypeError when a method is called with '.'", function()
    local L = log.Logger("ns")
    local ok, e = pcall(L.info, "oops")
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    assert.matches("logger:info", tostring(e))
  end)

  it("emit(level, ...) logs at a level given by name and rejects unknown levels", function()
    local events = collect()
    log.Logger("ns"):emit("warn", "w")
    assert.equal("warn", events[1].level)
    local ok, e = pcall(log.Logger("ns").emit, log.Logger("ns"), "loud", "x")
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
  end)

  it("failure() logs the message and the traceback, level critical by default", function()
    local events = collect()
    local _, f = xpcall(function() error(errors.ConnectionDone()) end, failure.msgh)
    log.Logger("ns"):failure("lost {who}", f, nil, { who = "peer" })
    local ev = events[1]
    assert.equal("critical", ev.level)
    assert.equal(f, ev.failure)
    assert.equal("lost peer", ev.why)
    assert.is_true(ev.isError)
    assert.matches("^lost peer\nTraceback %(most recent call last%):\n.*ConnectionDone: Connection was closed cleanly%.$", ev.text)
  end)

  it("failure() refuses an unknown level and logs nothing", function()
    local events = collect()
    assert.has_error(function() log.Logger("ns"):failure("meh", "raw", "loud") end,
      "ValueError: bad argument #3 to 'failure' (unknown level 'loud')")
    assert.same({}, events)
  end)

  it("failure() takes a level and wraps a raw value", function()
    local events = collect()
    log.Logger("ns"):failure("meh", "raw", "warn")
    assert.equal("warn", events[1].level)
    assert.equal("raw", events[1].failure.value)
    assert.is_true(events[1].isError)
  end)

  it("a failure field adds the traceback as failure() does", function()
    local events = collect()
    local f = failure.Failure(errors.ValueError("v"))
    log.Logger("ns"):error("with {n}", { n = 1, failure = f })
    assert.equal(f, events[1].failure)
    assert.matches("^with 1\nTraceback", events[1].text)
  end)

  it("does not format when nothing listens at that level", function()
    local calls = 0
    local v = setmetatable({}, { __tostring = function() calls = calls + 1; return "v" end })
    log.startLogging(Sink(), false)
    log.Logger("ns"):debug("{v}", { v = v })
    assert.equal(0, calls)
    log.Logger("ns"):info("{v}", { v = v })
    assert.equal(1, calls)
  end)
end)

describe("log.toJSON", function()
  it("escapes quotes, backslashes and control characters", function()
    assert.equal([["a\"b\\c\n\r\t\b\f\u0001\u001f\u007f"]], log.toJSON('a"b\\c\n\r\t\b\f\1\31\127'))
  end)

  -- {[1] = "int", ["1"] = "str"} gave {"1":"str","1":"str"}: one value
  -- lost; a table 100,000 deep overflowed the stack
  it("keeps both values of keys with one text, and cuts nesting at 100 levels", function()
    assert.equal('{"1":"int","1":"str","a":1}', log.toJSON({ [1] = "int", ["1"] = "str", a = 1 }))
    assert.equal('{"true":1,"true":2}', log.toJSON({ [true] = 1, ["true"] = 2 }))
    local deep = {}
    local c = deep
    for _ = 1, 100000 do c.x = {}; c = c.x end
    local text = log.toJSON(deep)
    assert.equal(('{"x":'):rep(100) .. '"<too deep>"' .. ("}"):rep(100), text)
    local wide = {}
    for i = 1, 150 do wide[i] = { i } end  -- many tables, none deep
    assert.equal(150, select(2, log.toJSON(wide):gsub("%[%d+%]", "")))
  end)

  it("keeps valid UTF-8 and escapes the bytes of invalid UTF-8 as \\u00XX", function()
    assert.equal('"h\xc3\xa9"', log.toJSON("h\xc3\xa9"))
    assert.equal('"x\\u00ffy"', log.toJSON("x\xffy"))
  end)

  it("writes integers and floats exactly, NaN and infinities as strings", function()
    assert.equal("42", log.toJSON(42))
    assert.equal("-7", log.toJSON(-7))
    assert.equal("0.1", log.toJSON(0.1))
    assert.equal("1424191576.25", log.toJSON(T))
    assert.equal("0.30000000000000004", log.toJSON(0.1 + 0.2))
    assert.equal("1e+300", log.toJSON(1e300))
    assert.equal('"inf"', log.toJSON(math.huge))
    assert.equal('"-inf"', log.toJSON(-math.huge))
  end)

  it("writes true, false and null", function()
    assert.equal("[true,false]", log.toJSON({ true, false }))
    assert.equal("null", log.toJSON(nil))
  end)

  it("writes sequences as arrays and other tables as objects with sorted keys", function()
    assert.equal('[1,"two",[3]]', log.toJSON({ 1, "two", { 3 } }))
    assert.equal('{"a":1,"b":{"c":[]}}', log.toJSON({ b = { c = { {} } }, a = 1 }):gsub("%[%{%}%]", "[]"))
    assert.equal('{"1":"x","k":"y"}', log.toJSON({ "x", k = "y" }))
    assert.equal('{"1":"a","3":"c"}', log.toJSON({ [1] = "a", [3] = "c" }))
    assert.equal("{}", log.toJSON({}))
  end)

  it("writes values with __tostring, functions and cycles as strings", function()
    assert.equal('"ValueError: v"', log.toJSON(errors.ValueError("v")))
    assert.matches('^"function: 0?x?%x+"$', log.toJSON(print))
    local t = { name = "loop" }
    t.self = t
    assert.equal('{"name":"loop","self":"<cycle>"}', log.toJSON(t))
  end)
end)

describe("log.jsonObserver", function()
  it("writes one JSON object a line with text, time, system, level, namespace, isError and the fields", function()
    local out = Sink()
    log.addObserver(log.jsonObserver(out))
    log.Logger("spec"):info("hi {name}", { name = "bob" })
    log.msg("two\nlines")
    assert.equal(
      '{"format":"hi {name}","isError":false,"level":"info","name":"bob","namespace":"spec","system":"-",'
        .. '"text":"hi bob","time":1424191576.25}\n'
        .. '{"format":"{log_text}","isError":false,"level":"info","log_text":"two\\nlines",'
        .. '"namespace":"log_legacy","system":"-","text":"two\\nlines","time":1424191576.25}\n',
      out.buf)
    assert.equal(2, out.flushes)
  end)

  -- msg and err events had no format: an observer formatting events
  -- itself (formatEvent(ev.format, ev)) got "" where Twisted's legacy
  -- bridge gives log_format "{log_text}" and log_text
  it("gives msg and err events Twisted's format {log_text} and a log_text field", function()
    local seen = {}
    log.addObserver(function(ev) seen[#seen + 1] = log.formatEvent(ev.format, ev) end)
    log.msg("hi", 2)
    log.err(errors.ValueError("v"), "why")
    assert.equal("hi 2", seen[1])
    assert.equal("why\n", seen[2]:sub(1, 4))
    assert.matches("ValueError: v", seen[2])
    assert.equal(2, #seen)
  end)

  it("writes the failure of an error event as its text", function()
    local out = Sink()
    log.addObserver(log.jsonObserver(out))
    log.err(errors.ValueError("v"), "why")
    assert.matches('"failure":"%[Failure instance: Traceback: ValueError: v\\n', out.buf)
    assert.matches('"isError":true', out.buf)
    assert.matches('"why":"why"', out.buf)
  end)

  it("appends to a path", function()
    local path = tmppath()
    finally(function() cleanup(path) end)
    local obs = log.jsonObserver(path)
    obs({ text = "x", time = 1 })
    assert.equal('{"text":"x","time":1}\n', slurp(path))
  end)
end)

describe("log.textFileObserver", function()
  it("writes Twisted log lines for every event, whatever the level", function()
    local out = Sink()
    log.addObserver(log.textFileObserver(out))
    log.Logger("ns"):debug("dbg")
    assert.equal(STAMP .. " [-] dbg\n", out.buf)
  end)
end)

describe("log.LogFile", function()
  local path
  before_each(function() path = tmppath() end)
  after_each(function() cleanup(path) end)

  it("refuses write, flush and rotate once closed, as Twisted's closed file", function()
    local lf = log.LogFile(path)
    lf:close()
    local msg = "ValueError: I/O operation on closed log file " .. path
    assert.has_error(function() lf:write("x\n") end, msg)
    assert.has_error(function() lf:flush() end, msg)
    assert.has_error(function() lf:rotate() end, msg)
    assert.is_nil(slurp(path .. ".1"))
  end)

  it("appends to the file and counts its size", function()
    local f = assert(io.open(path, "w"))
    f:write("12345")
    f:close()
    local lf = log.LogFile(path)
    assert.equal(5, lf.size)
    assert.equal(1000000, lf.rotateLength)
    lf:write("678\n")
    lf:flush()
    assert.equal(9, lf.size)
    assert.equal("12345678\n", slurp(path))
    lf:close()
  end)

  it("rotates to path.1 on the first write after the file reached rotateLength", function()
    local lf = log.LogFile(path, { rotateLength = 10 })
    lf:write("aaaaaa\n") -- 7 bytes
    lf:write("bbbbbb\n") -- 14 bytes: over, but written whole
    assert.is_nil(slurp(path .. ".1"))
    lf:write("cc\n")
    lf:flush()
    assert.equal("aaaaaa\nbbbbbb\n", slurp(path .. ".1"))
    assert.equal("cc\n", slurp(path))
    assert.equal(3, lf.size)
    lf:close()
  end)

  it("shifts older files up: path.1 becomes path.2", function()
    local lf = log.LogFile(path, { rotateLength = 2 })
    lf:write("1\n"); lf:write("2\n"); lf:write("3\n")
    lf:flush()
    assert.equal("1\n", slurp(path .. ".2"))
    assert.equal("2\n", slurp(path .. ".1"))
    assert.equal("3\n", slurp(path))
    assert.same({ 1, 2 }, lf:listLogs())
    lf:close()
  end)

  it("keeps at most maxRotatedFiles old files", function()
    local lf = log.LogFile(path, { rotateLength = 2, maxRotatedFiles = 2 })
    for i = 1, 5 do lf:write(i .. "\n") end
    lf:flush()
    assert.equal("3\n", slurp(path .. ".2"))
    assert.equal("4\n", slurp(path .. ".1"))
    assert.equal("5\n", slurp(path))
    assert.is_nil(slurp(path .. ".3"))
    lf:close()
  end)

  it("never rotates with rotateLength false", function()
    local lf = log.LogFile(path, { rotateLength = false })
    for _ = 1, 3 do lf:write(("x"):rep(100)) end
    lf:flush()
    assert.is_nil(slurp(path .. ".1"))
    assert.equal(300, #slurp(path))
    lf:close()
  end)

  it("rotate() can be called by hand", function()
    local lf = log.LogFile(path)
    lf:write("old\n")
    lf:rotate()
    lf:write("new\n")
    lf:flush()
    assert.equal("old\n", slurp(path .. ".1"))
    assert.equal("new\n", slurp(path))
    lf:close()
  end)

  it("reopen() starts a new file after the old one was moved away", function()
    local lf = log.LogFile(path)
    lf:write("before\n")
    lf:flush()
    assert(os.rename(path, path .. ".6"))
    lf:reopen()
    lf:write("after\n")
    lf:flush()
    assert.equal("before\n", slurp(path .. ".6"))
    assert.equal("after\n", slurp(path))
    lf:close()
  end)

  it("raises ValueError when written after close()", function()
    local lf = log.LogFile(path)
    lf:close()
    assert.is_true(lf.closed)
    local ok, e = pcall(lf.write, lf, "x")
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(e))
  end)

  it("checks its arguments", function()
    local ok, e = pcall(log.LogFile, 42)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'LogFile'", tostring(e))
    ok, e = pcall(log.LogFile, path, { rotateLength = "big" })
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'LogFile'", tostring(e))
    -- a string maxRotatedFiles raised "compare number with string" at the
    -- second rotation, inside the main observer, which then was removed
    for _, bad in ipairs({ { maxRotatedFiles = "3" }, { maxRotatedFiles = 0 },
        { maxRotatedFiles = 2.5 }, { rotateLength = -1 }, { rotateLength = 0 / 0 } }) do
      ok, e = pcall(log.LogFile, path, bad)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'LogFile'", tostring(e))
    end
  end)

  -- reopen closed the old file before opening the new one: a failure left
  -- a closed file, whose next write removed the main observer for good
  it("reopen() that cannot open the file keeps writing to the old one, and tries again later", function()
    local lf = log.LogFile(path)
    log.startLogging(lf, false)
    assert(os.rename(path, path .. ".6"))
    assert(os.execute("mkdir " .. path))  -- the path cannot be opened as a file
    log.reopen()
    assert.matches("log.reopen failed: .*can't open log file", iso.err.buf)
    log.msg("still written")
    assert(os.execute("rmdir " .. path))
    log.reopen()
    log.msg("in the new file")
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] still written\n", slurp(path .. ".6"))
    assert.equal(STAMP .. " [-] in the new file\n", slurp(path))
  end)

  it("serves as the file of startLogging, and log.reopen() reopens it", function()
    local lf = log.LogFile(path)
    log.startLogging(lf, false)
    log.msg("first")
    assert(os.rename(path, path .. ".6"))
    log.reopen()
    log.msg("second")
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] first\n", slurp(path .. ".6"))
    assert.equal(STAMP .. " [-] second\n", slurp(path))
  end)
end)

describe("log.reopen", function()
  local path
  before_each(function() path = tmppath() end)
  after_each(function() cleanup(path) end)

  it("reopens a log file that startLogging opened from a path", function()
    log.startLogging(path, false)
    assert(os.rename(path, path .. ".6"))
    log.reopen()
    log.msg("fresh")
    log.stopLogging()
    assert.equal(STAMP .. " [-] Log opened.\n", slurp(path .. ".6"))
    assert.equal(STAMP .. " [-] fresh\n", slurp(path))
  end)

  it("does nothing without a log file", function()
    assert.has_no.errors(log.reopen)
  end)

  it("keeps the old file when the path cannot be opened, and opens it on a later reopen", function()
    log.startLogging(path, false)
    assert(os.rename(path, path .. ".6"))
    assert(os.execute("mkdir " .. path))
    log.reopen()
    assert.matches("log.reopen failed: can't reopen " .. path:gsub("%p", "%%%0"), iso.err.buf)
    log.msg("still written")
    assert(os.execute("rmdir " .. path))
    log.reopen()
    log.msg("fresh")
    log.stopLogging()
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] still written\n", slurp(path .. ".6"))
    assert.equal(STAMP .. " [-] fresh\n", slurp(path))
  end)
end)

describe("log output that cannot be written", function()
  -- a full disk lost every line without a word (write's and flush's
  -- nil, message were dropped)
  it("reports a failing write once, keeps the observer, and reports again after a success", function()
    local full = false
    local out = {
      buf = "",
      write = function(self, s)
        if full then return nil, "No space left on device" end
        self.buf = self.buf .. s
        return self
      end,
    }
    log.startLogging(out, false)
    full = true
    log.msg("lost 1")
    log.msg("lost 2")
    assert.equal(STAMP .. " [-] log: cannot write to " .. tostring(out)
      .. ": No space left on device (lines are lost until a write succeeds)\n", iso.err.buf)
    full = false
    log.msg("kept")
    full = true
    log.msg("lost 3")
    assert.equal(STAMP .. " [-] Log opened.\n" .. STAMP .. " [-] kept\n", out.buf)
    local _, reports = iso.err.buf:gsub("cannot write", "")
    assert.equal(2, reports)
  end)

  it("reports a failing write even when the flush after it succeeds", function()
    local full, flushes = false, 0
    local out = {
      write = function(self) if full then return nil, "No space left on device" end return self end,
      flush = function(self) flushes = flushes + 1 return self end,
    }
    log.startLogging(out, false)
    assert.equal(1, flushes)  -- "Log opened."
    full = true
    log.msg("lost")
    assert.equal(1, flushes)  -- no flush after a failed write
    assert.equal(STAMP .. " [-] log: cannot write to " .. tostring(out)
      .. ": No space left on device (lines are lost until a write succeeds)\n", iso.err.buf)
  end)

  it("reports a flush that fails on /dev/full, for a path and for a LogFile", function()
    log.startLogging("/dev/full", false)
    assert.matches("log: cannot write to .*No space left on device", iso.err.buf)
    log.stopLogging()
    iso.err.buf = ""
    local lf = log.LogFile("/dev/full", { rotateLength = false })
    log.startLogging(lf, false)
    assert.matches("log: cannot write to .*No space left on device", iso.err.buf)
  end)
end)

describe("log.DailyLogFile", function()
  local path, today
  local Daily = log.DailyLogFile:extend("TestDaily")
  function Daily:toDate(t)
    if t then return log.DailyLogFile.toDate(self, t) end
    return { today[1], today[2], today[3] }
  end

  before_each(function()
    path = tmppath()
    today = { 2015, 2, 7 }
  end)
  after_each(function() cleanup(path, { "2015_2_7", "2015_2_8" }) end)

  it("names rotated files path.YYYY_M_D without zero padding, as Twisted", function()
    local lf = Daily(path)
    assert.equal("2015_2_7", lf:suffix({ 2015, 2, 7 }))
    assert.equal("2015_12_31", lf:suffix({ 2015, 12, 31 }))
    assert.equal(os.date("%Y", 1424191576) .. "_2_" .. tonumber(os.date("%d", 1424191576)), lf:suffix(1424191576))
    lf:close()
  end)

  it("rotates on the first write of a new day", function()
    local lf = Daily(path)
    lf:write("saturday\n")
    today = { 2015, 2, 8 }
    lf:write("sunday\n")
    lf:flush()
    assert.equal("saturday\n", slurp(path .. ".2015_2_7"))
    assert.equal("sunday\n", slurp(path))
    assert.same({ 2015, 2, 8 }, lf.lastDate)
    lf:close()
  end)

  it("does not rotate within a day", function()
    local lf = Daily(path)
    lf:write("a\n")
    lf:write("b\n")
    lf:flush()
    assert.is_nil(slurp(path .. ".2015_2_7"))
    assert.equal("a\nb\n", slurp(path))
    lf:close()
  end)

  it("does not overwrite a rotated file that exists already", function()
    local f = assert(io.open(path .. ".2015_2_7", "w"))
    f:write("keep\n")
    f:close()
    local lf = Daily(path)
    lf:write("a\n")
    today = { 2015, 2, 8 }
    lf:write("b\n")
    lf:flush()
    assert.equal("keep\n", slurp(path .. ".2015_2_7"))
    assert.equal("a\nb\n", slurp(path))
    lf:close()
  end)

  it("uses local dates by default", function()
    local lf = log.DailyLogFile(path)
    local d = os.date("*t")
    assert.same({ d.year, d.month, d.day }, lf.lastDate)
    lf:close()
  end)
end)

describe("log file reopening on SIGUSR1", function()
  -- whether the process catches SIGUSR1 (its SigCgt mask)
  local function catches_usr1()
    local n = require("braid.core").signum("SIGUSR1")
    local f = assert(io.open("/proc/self/status"))
    local mask = f:read("a"):match("\nSigCgt:%s*(%x+)")
    f:close()
    local digit = tonumber(mask:sub(-1 - (n - 1) // 4, -1 - (n - 1) // 4), 16)
    return digit & (1 << ((n - 1) % 4)) ~= 0
  end

  it("reopens the log file when SIGUSR1 arrives, so logrotate can move it", function()
    local log = require "braid.log"
    local reactor = require "braid.reactor"
    local core = require "braid.core"
    local path = tmp.file()
    log.startLogging(path, false)
    log.msg("before rotation")
    assert(os.rename(path, path .. ".1"))
    local h = reactor.onSignal("SIGUSR1", function() reactor.stop() end)
    reactor.callLater(0, core.raise, "SIGUSR1")
    local guard = reactor.callLater(2, reactor.crash)
    reactor.run({ installSignalHandlers = false })
    h:cancel()
    guard:cancel()
    log.msg("after rotation")
    assert.is_true(catches_usr1())
    log.stopLogging()  -- gives SIGUSR1 its default action back
    assert.is_false(catches_usr1())
    local old = assert(io.open(path .. ".1")):read("a")
    local new = assert(io.open(path)):read("a")
    os.remove(path); os.remove(path .. ".1")
    assert.truthy(old:find("before rotation", 1, true))
    assert.is_nil(old:find("after rotation", 1, true))
    assert.truthy(new:find("after rotation", 1, true))
  end)
end)

describe("log.setErrorStream", function()
  it("refuses what is not a file, keeping the stream it had", function()
    local ok, e = pcall(log.setErrorStream, function() end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'setErrorStream' %(a file %(with a write method%) or nil "
      .. "expected, got function%)", tostring(e))
    log.err("still to the sink")
    assert.matches("still to the sink", iso.err.buf)
  end)
end)

-- the paths under /proc/self/fd that name `path` (this process's open
-- descriptors on that file)
local function open_on(path)
  local stat = assert(io.open("/proc/self/stat", "r"))
  local pid = stat:read("n")
  stat:close()
  local p = assert(io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null", "r"))
  local n = 0
  for line in p:lines() do
    if line:sub(-#path - 4) == " -> " .. path then n = n + 1 end
  end
  p:close()
  return n
end

describe("log corners", function()
  local path
  before_each(function() path = tmppath() end)
  after_each(function() cleanup(path, { "2015_1_31", "2015_2_7" }) end)

  it("setSystem(nil) and callWithContext(nil) mean '-', over an ambient system; false gives the ambient one", function()
    log._setAmbientSystem(function() return "Amb,1,10.0.0.7" end)
    finally(function()
      local tcp_loaded = package.loaded["braid.tcp"] ~= nil
      log._setAmbientSystem(tcp_loaded and require("braid.core").tcp_current_system or nil)
    end)
    log.setSystem(false)
    assert.equal("Amb,1,10.0.0.7", log.getSystem())
    assert.equal("-", log.callWithContext(nil, log.getSystem))
    assert.equal("Amb,1,10.0.0.7", log.callWithContext(false, log.getSystem))
    assert.equal("Amb,1,10.0.0.7", log.getSystem())
    assert.is_false(log.setSystem(nil))
    assert.equal("-", log.getSystem())
  end)

  it("getObservers gives a copy: changing it changes nothing", function()
    local function a() end
    local function b() end
    log.addObserver(a)
    local list = log.getObservers()
    list[2] = b
    list[1] = nil
    assert.same({ a }, log.getObservers())
    log.addObserver(b)
    assert.same({ a, b }, log.getObservers())
  end)

  it("refuses a closed io file as output, naming the function", function()
    local f = assert(io.open(path, "w"))
    f:close()
    for _, name in ipairs({ "startLogging", "textFileObserver", "jsonObserver" }) do
      local ok, e = pcall(log[name], f)
      assert.is_false(ok)
      assert.equal(("TypeError: bad argument #1 to '%s' (log file is closed)"):format(name), tostring(e))
    end
  end)

  it("filteringObserver drops an event without a level or a namespace, as Twisted's LogLevelFilterPredicate", function()
    local seen = {}
    local function obs(ev) seen[#seen + 1] = ev.text end
    local f = log.filteringObserver(obs, "debug")
    f({ text = "no level", namespace = "ns" })
    f({ text = "bogus level", level = "loud", namespace = "ns" })
    f({ text = "no namespace", level = "critical" })
    f({ text = "empty namespace", level = "critical", namespace = "" })
    f({ text = "kept", level = "debug", namespace = "ns" })
    assert.same({ "kept" }, seen)
  end)

  it("closes the file it opened from a path when logging stops, moves on or reopens", function()
    log.startLogging(path, false)
    assert.equal(1, open_on(path))
    log.stopLogging()
    assert.equal(0, open_on(path))
    log.startLogging(path, false)
    log.startLoggingWithObserver(function() end, false)
    assert.equal(0, open_on(path))
    log.startLogging(path, false)
    log.reopen()
    assert.equal(1, open_on(path))
    log.stopLogging()
    assert.equal(0, open_on(path))
    local lf = log.LogFile(path)
    lf:reopen()
    lf:reopen()
    assert.equal(1, open_on(path))
    lf:close()
    assert.equal(0, open_on(path))
  end)

  it("toJSON writes integers whole, and a table is an array only for keys 1..n", function()
    assert.equal("9223372036854775807", log.toJSON(math.maxinteger))
    assert.equal("-9223372036854775808", log.toJSON(math.mininteger))
    assert.equal('{"0":"z","1":"a","3":"c"}', log.toJSON({ [0] = "z", [1] = "a", [3] = "c" }))
    -- a table met twice, not inside itself, is no cycle
    local shared = { 1 }
    assert.equal('{"a":[1],"b":[1],"c":{"d":[1]}}', log.toJSON({ a = shared, b = shared, c = { d = shared } }))
  end)

  it("LogFile: close twice is fine, rotateLength 0 never rotates, non-strings are written as text", function()
    local lf = log.LogFile(path, { rotateLength = 0 })
    assert.equal(0, lf.rotateLength)
    assert.equal(lf, lf:write(string.rep("x", 100) .. "\n"))
    lf:write(42)
    lf:write(true)
    lf:flush()
    assert.is_false(lf:shouldRotate())
    assert.is_nil(slurp(path .. ".1"))
    assert.equal(string.rep("x", 100) .. "\n42true", slurp(path))
    assert.equal(107, lf.size)
    lf:close()
    lf:close()
    assert.is_true(lf.closed)
  end)

  describe("DailyLogFile", function()
    local today
    local Daily = log.DailyLogFile:extend("TestDaily2")
    function Daily:toDate(t)
      if t then return log.DailyLogFile.toDate(self, t) end
      return { today[1], today[2], today[3] }
    end

    it("rotates across a month's end (31 January, then 1 February)", function()
      today = { 2015, 1, 31 }
      local lf = Daily(path)
      lf:write("jan\n")
      today = { 2015, 2, 1 }
      assert.is_true(lf:shouldRotate())
      lf:write("feb\n")
      lf:flush()
      assert.equal("jan\n", slurp(path .. ".2015_1_31"))
      assert.equal("feb\n", slurp(path))
      lf:close()
    end)

    it("neither rotates nor goes back when the clock goes back a day, as Twisted's max()", function()
      today = { 2015, 2, 7 }
      local lf = Daily(path)
      today = { 2015, 2, 6 }
      assert.is_false(lf:shouldRotate())
      lf:write("a\n")
      lf:flush()
      assert.same({ 2015, 2, 7 }, lf.lastDate)
      assert.is_nil(slurp(path .. ".2015_2_6"))
      assert.equal("a\n", slurp(path))
      lf:close()
    end)

    it("moves lastDate on when the rotated file exists already, so it tries once", function()
      today = { 2015, 2, 7 }
      local f = assert(io.open(path .. ".2015_2_7", "w"))
      f:write("keep\n")
      f:close()
      local lf = Daily(path)
      today = { 2015, 2, 8 }
      lf:write("b\n")
      assert.same({ 2015, 2, 8 }, lf.lastDate)
      assert.is_false(lf:shouldRotate())
      lf:close()
      assert.equal("keep\n", slurp(path .. ".2015_2_7"))
    end)
  end)

  it("Logger(namespace, source) puts the source in its events", function()
    local events = collect()
    local src = { name = "the source" }
    log.Logger("ns", src):info("x")
    log.Logger("ns"):info("y")
    assert.equal(src, events[1].source)
    assert.is_nil(events[2].source)
  end)

  it("Logger:failure without a failure logs a NoCurrentExceptionError, critical", function()
    local events = collect()
    log.Logger("ns"):failure("oops")
    local ev = events[1]
    assert.equal("critical", ev.level)
    assert.is_true(ev.isError)
    assert.is_true(failure.isFailure(ev.failure))
    assert.equal(errors.NoCurrentExceptionError, ev.failure.type)
    assert.equal("oops", ev.why)
    assert.matches("^oops\nTraceback %(most recent call last%):\n", ev.text)
  end)
end)
