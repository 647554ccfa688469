-- Twins of Twisted 22.4's own tests of Failure and logging
-- (twisted/test/test_failure.py, test_log.py, test_logfile.py and
-- twisted/logger/test/*) that no other braid spec covers: same scenario,
-- same asserted values, one describe per Twisted TestCase class, each it
-- named after the Twisted method. The mapping of every test method to its
-- spec is in docs/twisted-tests.md.
local log = require "braid.log"
local errors = require "braid.error"
local failure = require "braid.failure"
local tmp = require "helpers.tmp"
local logsink = require "helpers.logsink"
local Sink, collect, slurp = logsink.Sink, logsink.collect, logsink.slurp

local Failure = failure.Failure

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function put(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- log.formatTime(t) in a child Lua under the given TZ
local function formatTime_in_tz(tz, t)
  local code = ("package.path = %q io.write(require('braid.log').formatTime(%d))"):format(package.path, t)
  local p = assert(io.popen(("TZ=%s lua5.4 -e %s 2>&1"):format(shell_quote(tz), shell_quote(code)), "r"))
  local out = p:read("a")
  p:close()
  return out
end

-- a fixed clock, the error stream in iso.err; all put back after each test
local iso = logsink.isolation(0)
before_each(iso.before)
after_each(iso.after)

describe("FailureTests (test_failure)", function()
  it("test_failAndTrap", function()
    local f = Failure(errors.NotImplementedError("test"))
    -- NotImplementedError is a RuntimeError in Python; braid's descends from Error
    assert.equal(errors.Error, f:trap(errors.ReactorNotRunning, errors.Error))
    assert.equal(errors.NotImplementedError, f.type)
  end)

  it("test_ExplictPass", function()
    local e = errors.ValueError()
    local f = Failure(e)
    f:trap(errors.ValueError)
    assert.is_true(rawequal(e, f.value))
  end)
end)

describe("GetTracebackTests (test_failure)", function()
  -- an error class whose instances cannot be made into a string
  local BrokenStr = errors.class("BrokenStr")
  BrokenStr.__tostring = function() error("str of BrokenStr", 0) end
  local BrokenText = errors.class("BrokenText")
  function BrokenText.text() error("text of BrokenText", 0) end

  for _, detail in ipairs({ "Brief", "Default", "Verbose" }) do
    it("test_brokenValue" .. detail .. "Detail", function()
      local f = Failure(BrokenStr())
      local tb = f:getTraceback()
      assert.equal("string", type(tb))
      -- the type is still named, as Twisted's `qual(type): safe_str(value)`
      assert.matches("\nBrokenStr: <unprintable table: str of BrokenStr>\n$", tb)
      assert.equal("BrokenStr: <unprintable table: str of BrokenStr>", f:brief())
      assert.matches("^%[Failure instance: Traceback: BrokenStr: <unprintable", tostring(f))
    end)

    it("test_brokenType" .. detail .. "Detail", function()
      local f = Failure(BrokenText())
      local tb = f:getTraceback()
      assert.equal("string", type(tb))
      assert.matches("\nBrokenText: <unprintable table: text of BrokenText>\n$", tb)
    end)
  end
end)

describe("TextFromEventDictTests (test_log)", function()
  it("test_noTracebackForYou", function()
    local out = Sink()
    local observe = log.textFileObserver(out)
    observe({ time = 0, isError = true, failure = {} })  -- not a Failure
    assert.matches("\n\t%(unable to obtain traceback: table is no Failure%)\n$", out.buf)
  end)
end)

describe("LogTests (test_log)", function()
  local values = {
    { "hello world", errors.LuaError },
    { errors.ValueError(), errors.ValueError },
    { Failure(errors.ConnectionLost()), errors.ConnectionLost },
  }

  it("testErrors", function()
    local events = collect()
    for _, case in ipairs(values) do
      log.err(case[1])
      local ev = table.remove(events)
      assert.is_true(ev.isError)
      assert.equal(case[2], ev.failure.type)
      assert.is_nil(ev.why)
    end
    assert.equal(0, #events)
  end)

  it("testErrorsWithWhy", function()
    local events = collect()
    for _, case in ipairs(values) do
      log.err(case[1], "foobar")
      local ev = table.remove(events)
      assert.is_true(ev.isError)
      assert.equal("foobar", ev.why)
      assert.equal(case[2], ev.failure.type)
    end
  end)
end)

describe("LogPublisherTests (test_log)", function()
  it("test_singleUnicode", function()
    local out = Sink()
    log.startLogging(out, false)
    local message = "Hello, \u{BD} world."
    log.msg(message)
    assert.matches(message, out.buf, 1, true)
    local n = select(2, out.buf:gsub("\n", ""))
    assert.equal(2, n) -- Log opened. and the message
  end)
end)

describe("FileObserverTests (test_log)", function()
  it("test_timeFormatting", function()
    local when = 981173106 -- calendar.timegm((2001, 2, 3, 4, 5, 6, 7, 8, 0))
    -- POSIX TZ offsets are west of UTC, as Twisted's getTimezoneOffset
    assert.equal("2001-02-02 23:05:06-0500", formatTime_in_tz("AAA5", when))
    assert.equal("2001-02-03 05:05:06+0100", formatTime_in_tz("AAA-1", when))
    assert.equal("2001-02-03 15:05:06+1100", formatTime_in_tz("AAA-11", when))
    assert.equal("2001-02-03 02:35:06-0130", formatTime_in_tz("AAA1:30", when))
    assert.equal("2001-02-03 05:35:06+0130", formatTime_in_tz("AAA-1:30", when))
    assert.equal("2001-02-03 03:35:06-0030", formatTime_in_tz("AAA0:30", when))
    assert.equal("2001-02-03 04:35:06+0030", formatTime_in_tz("AAA-0:30", when))
  end)

  it("test_brokenSystem__str__", function()
    local out = Sink()
    log.startLogging(out, false)
    log.setSystem(setmetatable({}, { __tostring = function() error("evil system", 0) end }))
    assert.has_no.errors(function() log.msg("huh") end)
    assert.matches("%[<unprintable table: evil system>%] huh\n$", out.buf)
  end)

  it("test_formattingAnObjectWithBroken__str__", function()
    local events = collect()
    local evil = setmetatable({}, { __tostring = function() error("evil str", 0) end })
    assert.has_no.errors(function() log.Logger("t"):info("{blat}", { blat = evil }) end)
    assert.equal(1, #events)
    assert.equal("<unprintable table: evil str>", events[1].text)
  end)

  it("test_evilFormat__repr__And__str__", function()
    local events = collect()
    local evil = setmetatable({}, { __tostring = function() error("evil format", 0) end })
    assert.has_no.errors(function() log.Logger("t"):info(evil, { blat = 1 }) end)
    assert.equal(1, #events)
    assert.equal("<unprintable table: evil format>", events[1].text)
  end)
end)

describe("LoggerTests (test_logger)", function()
  it("test_namespaceOMGItsTooHard", function()
    -- a Logger made in a chunk loaded from a string: no module to name
    local chunk = assert(load("local Logger = ... local l = Logger() return l"))
    assert.equal("<unknown>", chunk(log.Logger).namespace)
    -- a chunk its loader named ("=name") goes by that name
    chunk = assert(load("local Logger = ... local l = Logger() return l", "=stdin"))
    assert.equal("stdin", chunk(log.Logger).namespace)
  end)

  it("test_conflictingKwargs", function()
    local events = collect()
    local logger = log.Logger("ns")
    logger:warn("*", { format = "#", level = "error", namespace = "*namespace*", time = 7 })
    local ev = events[1]
    assert.equal("*", ev.format)
    assert.equal("warn", ev.level)
    assert.equal("ns", ev.namespace)
    assert.is_false(ev.isError)
    assert.equal(0, ev.time)
  end)
end)

describe("FormattingTests (test_format)", function()
  it("test_formatEvent", function()
    assert.equal("", log.formatEvent("", {}))
    assert.equal("abc", log.formatEvent("{x}", { x = "abc" }))
    assert.equal("no, yes.", log.formatEvent("{not_called}, {called()}.",
      { not_called = "no", called = function() return "yes" end }))
    assert.equal("S\xc3\xa1nchez", log.formatEvent("S\xc3\xa1nchez", {}))
  end)

  it("test_formatEventNoFormat", function()
    assert.equal("", log.formatEvent(nil, { foo = 1, bar = 2 }))
  end)

  it("test_formatUnformattableEvent", function()
    local s = log.formatEvent("{evil()}", { evil = function() return 1 // 0 end })
    assert.matches('^Unable to format event "{evil%(%)}": .*attempt to divide by zero$', s)
  end)

  it("test_formatUnformattableEventWithUnformattableErrorOMGWillItStop", function()
    local evil = setmetatable({}, { __tostring = function() error("unprintable error", 0) end })
    local s = log.formatEvent("{evil()}", { evil = function() error(evil) end })
    assert.equal('Unable to format event "{evil()}": <unprintable table: unprintable error>', s)
  end)
end)

describe("FormatFieldTests (test_format)", function()
  it("test_formatWithCall", function()
    assert.equal("Hello, earth. maybe.", log.formatEvent("Hello, {world}. {callme()}.",
      { world = "earth", callme = function() return "maybe" end }))
    assert.equal("Hello, 'repr'.", log.formatEvent("Hello, {repr()!r}.",
      { ["repr"] = function() return "repr" end }))
  end)
end)

describe("EventAsTextTests (test_format)", function()
  it("test_formatEmptyEventWithTraceback", function()
    local out = Sink()
    local f = Failure(errors.ValueError("CapturedError"))
    log.textFileObserver(out)({ time = 0, failure = f })
    local lines = {}
    for line in out.buf:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    assert.matches("%[%-%] $", lines[1])
    assert.equal("\tTraceback (most recent call last):", lines[2])
    assert.equal("\tValueError: CapturedError", lines[#lines])
  end)

  it("test_formatUnformattableWithTraceback", function()
    local out = Sink()
    local f = Failure(errors.ValueError("CapturedError"))
    log.textFileObserver(out)({ time = 0, format = "{evil()}",
      evil = function() error("boom", 0) end, failure = f })
    assert.matches('%[%-%] Unable to format event "{evil%(%)}": boom\n\tTraceback', out.buf)
    assert.matches("\tValueError: CapturedError\n$", out.buf)
  end)

  it("test_formatEventUnformattableTraceback", function()
    local out = Sink()
    local f = Failure(errors.ValueError("x"))
    f.getTraceback = function() error("no traceback here", 0) end
    log.textFileObserver(out)({ time = 0, format = "hello", failure = f })
    assert.matches("%] hello\n\t<traceback unavailable: no traceback here>\n$", out.buf)
  end)

  it("test_formatEventNonCritical", function()
    local events = collect()
    local f = Failure(errors.ValueError("CapturedError"))
    log.Logger("t"):info("This is a fake error", { failure = f })
    assert.matches("^This is a fake error\nTraceback", events[1].text)
    assert.equal("info", events[1].level)
  end)
end)

describe("LogPublisherTests (logger test_observer)", function()
  it("test_observerRaisesAndLoggerHatesMe", function()
    log.setErrorStream({ write = function() error("the error stream broke too") end })
    log.addObserver(function() error("Sad panda") end)
    assert.has_no.errors(function() log.msg("x") end)
    assert.equal(0, #log.getObservers())
  end)
end)

describe("FileLogObserverTests (logger test_file)", function()
  it("test_observeFlushes", function()
    local out = Sink()
    log.textFileObserver(out)({ time = 0, text = "x" })
    assert.equal(1, out.writes)
    assert.equal(1, out.flushes)
  end)
end)

describe("TextFileLogObserverTests (logger test_file)", function()
  it("test_observeFailure", function()
    local out = Sink()
    local ok, f = xpcall(function() return 1 // 0 end, failure.msgh)
    assert.is_false(ok)
    log.textFileObserver(out)({ time = 0, failure = f })
    local second = out.buf:match("^[^\n]*\n([^\n]*)")
    assert.equal("\tTraceback (most recent call last):", second)
  end)

  it("test_observeFailureThatRaisesInGetTraceback", function()
    local out = Sink()
    log.textFileObserver(out)({ time = 0, failure = 42 })
    assert.matches("%(unable to obtain traceback: number is no Failure%)", out.buf)
  end)
end)

describe("SaveLoadTests (logger test_json)", function()
  it("test_simpleSaveLoad", function()
    assert.equal("{}", log.toJSON({}))
  end)

  it("test_saveLoad", function()
    assert.equal('{"1":2,"3":"4"}', log.toJSON({ [1] = 2, ["3"] = "4" }))
  end)

  it("test_saveNonASCII", function()
    assert.equal('{"\u{1234}":"\u{4321}"}', log.toJSON({ ["\u{1234}"] = "\u{4321}" }))
  end)
end)

describe("FileLogObserverTests (logger test_json)", function()
  it("test_observeWritesEmptyRecordSeparator", function()
    local out = Sink()
    log.jsonObserver(out)({ x = 1 })
    assert.equal('{"x":1}\n', out.buf)
  end)
end)

describe("LogFileTests (test_logfile)", function()
  local path
  before_each(function() path = tmp.path(".log") end)

  it("test_writing", function()
    local lf = log.LogFile(path)
    lf:write("123")
    lf:write("456")
    lf:flush()
    lf:write("7890")
    lf:close()
    assert.equal("1234567890", slurp(path))
  end)

  it("test_rotation", function()
    local lf = log.LogFile(path, { rotateLength = 10 })
    lf:write("123")
    lf:write("4567890")
    lf:write(("1"):rep(11))
    assert.is_true(exists(path .. ".1"))
    assert.is_false(exists(path .. ".2"))
    lf:write("")
    assert.is_true(exists(path .. ".1"))
    assert.is_true(exists(path .. ".2"))
    assert.is_false(exists(path .. ".3"))
    lf:write("3")
    assert.is_false(exists(path .. ".3"))
    lf:rotate()
    assert.is_true(exists(path .. ".3"))
    assert.is_false(exists(path .. ".4"))
    lf:close()
    assert.same({ 1, 2, 3 }, lf:listLogs())
  end)

  it("test_append", function()
    local lf = log.LogFile(path)
    lf:write("0123456789")
    lf:close()
    lf = log.LogFile(path)
    assert.equal(10, lf.size)
    lf:write("abc")
    assert.equal(13, lf.size)
    lf:close()
    assert.equal("0123456789abc", slurp(path))
  end)

  it("test_maxNumberOfLog", function()
    local lf = log.LogFile(path, { rotateLength = 10, maxRotatedFiles = 3 })
    lf:write(("1"):rep(11))
    lf:write(("2"):rep(11))
    assert.is_true(exists(path .. ".1"))
    lf:write(("3"):rep(11))
    assert.is_true(exists(path .. ".2"))
    lf:write(("4"):rep(11))
    assert.is_true(exists(path .. ".3"))
    assert.equal(("1"):rep(11), slurp(path .. ".3"))
    lf:write(("5"):rep(11))
    assert.equal(("2"):rep(11), slurp(path .. ".3"))
    assert.is_false(exists(path .. ".4"))
    lf:close()
  end)

  it("test_nonExistentDir", function()
    local ok, e = pcall(log.LogFile, tmp.path() .. "/this_dir_does_not_exist/test.log")
    assert.is_false(ok)
    assert.is_true(errors.Error:isinstance(e))
    assert.matches("No such file or directory", tostring(e))
  end)

  it("test_listLogsWithBadlyNamedFiles", function()
    local lf = log.LogFile(path)
    put(path .. ".1", "123")
    put(path .. ".bad-file", "123")
    assert.same({ 1 }, lf:listLogs())
    lf:close()
    os.remove(path .. ".bad-file")
  end)

  it("test_listLogsIgnoresZeroSuffixedFiles", function()
    local lf = log.LogFile(path)
    for i = 0, 2 do put(path .. "." .. i, "123") end
    assert.same({ 1, 2 }, lf:listLogs())
    lf:close()
    os.remove(path .. ".0")
  end)
end)

describe("DailyLogFileTests (test_logfile)", function()
  local path
  -- Twisted's RiggedDailyLogFile: dates from a settable clock, in UTC
  local Rigged = log.DailyLogFile:extend("RiggedDailyLogFile", { _clock = 0 })
  function Rigged:toDate(t)
    local d = os.date("!*t", math.floor(t or self._clock))
    return { d.year, d.month, d.day }
  end

  before_each(function() path = tmp.path(".log") end)

  it("test_writing", function()
    local lf = Rigged(path)
    lf:write("123")
    lf:write("456")
    lf:flush()
    lf:write("7890")
    lf:close()
    assert.equal("1234567890", slurp(path))
  end)

  it("test_rotation", function()
    local lf = Rigged(path)
    local days = {}
    for day = 0, 2 do days[day + 1] = path .. "." .. lf:suffix(day * 86400) end
    assert.equal(path .. ".1970_1_1", days[1])
    lf._clock = 0
    lf:write("123")
    lf._clock = 43200
    lf:write("4567890")
    lf._clock = 86400
    lf:write(("1"):rep(11))
    assert.is_true(exists(days[1]))
    assert.is_false(exists(days[2]))
    lf._clock = 172800
    lf:write("")
    assert.is_true(exists(days[1]))
    assert.is_true(exists(days[2]))
    assert.is_false(exists(days[3]))
    lf._clock = 259199
    lf:write("3")
    assert.is_false(exists(days[3]))
    lf:close()
    assert.equal("1234567890", slurp(days[1]))
    assert.equal(("1"):rep(11), slurp(days[2]))
    assert.equal("3", slurp(path))
  end)

  it("test_rotateAlreadyExists", function()
    local lf = Rigged(path)
    put(path .. "." .. lf:suffix(lf.lastDate), "123")
    local previous = lf._file
    lf:rotate()
    assert.equal(previous, lf._file)
    lf:close()
  end)

  it("test_toDate", function()
    local lf = log.DailyLogFile(path)
    local t = os.time({ year = 2000, month = 1, day = 1, hour = 0, min = 0, sec = 0 })
    assert.same({ 2000, 1, 1 }, lf:toDate(t))
    lf:close()
  end)

  it("test_toDateUsesArgumentsToMakeADate", function()
    local lf = log.DailyLogFile(path)
    local t = os.time({ year = 2014, month = 10, day = 22, hour = 0, min = 0, sec = 0 })
    assert.same({ 2014, 10, 22 }, lf:toDate(t))
    lf:close()
  end)
end)
