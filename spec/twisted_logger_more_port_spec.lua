-- Twins of Twisted 22.4's twisted/logger/test/ tests of filtering, the
-- legacy bridge, flattening and standard-output redirection
-- (test_filter.py, test_legacy.py, test_flatten.py, test_io.py,
-- test_capture.py) that no other braid spec covers: same scenario, same
-- asserted values, one describe per Twisted TestCase class, each it named
-- after the Twisted method. braid's msg/err and Logger publish one kind of
-- event to the same observers, so the legacy bridge's tests become tests
-- of the keys of that event. The mapping of every test method to its spec
-- is in docs/twisted-tests.md.
local log = require "braid.log"
local errors = require "braid.error"
local Failure = require("braid.failure").Failure
local logsink = require "helpers.logsink"
local Sink, collect = logsink.Sink, logsink.collect

local T = 1424191576.25

-- a fixed clock, the error stream in iso.err; all put back after each test
local iso = logsink.isolation(T)
before_each(iso.before)
after_each(iso.after)

describe("LegacyLogObserverWrapperTests (test_legacy)", function()
  -- a Logger event as an observer sees it
  local function observe(level, fmt, fields)
    local events = collect()
    log.Logger("ns"):emit(level, fmt, fields)
    assert.equal(1, #events)
    return events[1]
  end

  -- the event keeps every field given, and the keys the logging system
  -- adds are there
  local function forwardAndVerify(level, fmt, fields)
    local ev = observe(level, fmt, fields)
    for k, v in pairs(fields) do
      if k ~= "time" then assert.equal(v, ev[k]) end
    end
    assert.equal(T, ev.time)
    assert.equal(level, ev.level)
    assert.equal("-", ev.system)
    return ev
  end

  local function eventWithFailure(fields)
    fields.failure = Failure(errors.RuntimeError("nyargh!"))
    return forwardAndVerify("info", "oopsie...", fields)
  end

  it("test_forward", function()
    local ev = forwardAndVerify("info", "", { foo = 1, bar = 2 })
    assert.equal(1, ev.foo)
    assert.equal(2, ev.bar)
  end)

  it("test_time", function()
    assert.equal(T, observe("info", "x", {}).time)
  end)

  it("test_system", function()
    assert.equal("foo", observe("info", "x", { system = "foo" }).system)
  end)

  it("test_systemAlreadySet", function()
    -- the system in force is Twisted's log_system; a system field wins
    local ev = log.callWithContext("foo", observe, "info", "x", { system = "bar" })
    assert.equal("bar", ev.system)
  end)

  it("test_noSystem", function()
    local out = Sink()
    log.textFileObserver(out)({ time = T, level = "info", text = "no system" })
    assert.truthy(out.buf:find("] no system\n", 1, true))
    assert.equal("[-]", out.buf:match("%[.-%]"))
  end)

  it("test_levelNotChange", function()
    assert.equal(1, forwardAndVerify("info", "x", { isError = 1 }).isError)
    assert.equal(1, forwardAndVerify("warn", "x", { isError = 1 }).isError)
    assert.equal(0, forwardAndVerify("error", "x", { isError = 0 }).isError)
    assert.equal(0, forwardAndVerify("critical", "x", { isError = 0 }).isError)
    assert.is_false(forwardAndVerify("critical", "x", { isError = false }).isError)
  end)

  it("test_pythonLogLevelNotSet", function()
    assert.is_nil(forwardAndVerify("info", "x", {}).logLevel)
  end)

  it("test_stringPythonLogLevel", function()
    assert.equal("WARNING", forwardAndVerify("info", "x", { logLevel = "WARNING" }).logLevel)
  end)

  it("test_format", function()
    assert.equal("Hello, world!", forwardAndVerify("info", "Hello, {who}!", { who = "world" }).text)
  end)

  it("test_formatMessage", function()
    assert.equal("Hello, world!", forwardAndVerify("info", "Hello, {message}!", { message = "world" }).text)
  end)

  it("test_failure", function()
    local f = Failure(errors.RuntimeError("nyargh!"))
    local ev = forwardAndVerify("info", "oopsie...", { failure = f })
    assert.is_true(rawequal(f, ev.failure))
    assert.is_true(ev.isError)
    assert.equal("oopsie...", ev.why)
  end)

  it("test_isErrorAlreadySet", function()
    assert.equal(0, eventWithFailure({ isError = 0 }).isError)
  end)

  it("test_whyAlreadySet", function()
    assert.equal("blah", eventWithFailure({ why = "blah" }).why)
  end)
end)

describe("LoggingFileTests (test_io)", function()
  -- startLogging's print is braid's LoggingFile for sys.stdout
  local orig
  before_each(function() orig = _G.print end)
  after_each(function() _G.print = orig end)

  local function observedPrint()
    log.startLogging(Sink())
    local events = collect()
    local messages = {}
    log.addObserver(function(ev) if ev.log_io ~= nil then messages[#messages + 1] = ev.log_io end end)
    return events, messages
  end

  it("test_writeBuffering", function()
    local _, messages = observedPrint()
    _G.print("Hello, world!")
    assert.same({ "Hello, world!" }, messages)
    _G.print("It's nice to meet you.\n\nIndeed.")
    assert.same({ "Hello, world!", "It's nice to meet you.", "", "Indeed." }, messages)
  end)

  it("test_writeUnicode", function()
    local _, messages = observedPrint()
    _G.print("Hello, Mr. S\u{e1}nchez")
    assert.same({ "Hello, Mr. S\u{e1}nchez" }, messages)
  end)

  it("test_writeLevel", function()
    local events = observedPrint()
    _G.print("Hello")
    assert.equal(1, #events)
    assert.equal("info", events[1].level)
  end)

  it("test_writeFormat", function()
    local events = observedPrint()
    _G.print("Hello")
    assert.equal(1, #events)
    assert.equal("{log_io}", events[1].format)
    assert.equal("Hello", events[1].log_io)
    assert.equal("stdout", events[1].namespace)
    assert.equal("Hello", log.formatEvent(events[1].format, events[1]))
  end)
end)

describe("FilteringLogObserverTests (test_filter)", function()
  it("test_call", function()
    -- braid's one predicate is the level: at or above it is Twisted's
    -- yes/maybe (seen), below it no (not seen)
    local function seenAt(level)
      local seen = {}
      local e = { level = level, namespace = "ns", obj = {} }
      log.filteringObserver(function(ev) seen[#seen + 1] = ev end, "warn")(e)
      return seen[1] == e
    end
    assert.is_true(seenAt("critical"))
    assert.is_true(seenAt("warn"))
    assert.is_false(seenAt("info"))
  end)
end)

describe("LogLevelFilterPredicateTests (test_filter)", function()
  it("test_defaultLogLevel", function()
    assert.equal("info", log.getLevel())
    local sink = Sink()
    log.startLogging(sink, false)
    local L = log.Logger("rocker.cool.namespace")
    L:debug("d")
    L:info("i")
    assert.is_nil(sink.buf:find("] d\n", 1, true))
    assert.truthy(sink.buf:find("] i\n", 1, true))
  end)

  it("test_filtering", function()
    local seen
    local f = log.filteringObserver(function(ev) seen = true end, "error")
    local function check(namespace, level, expected)
      seen = false
      f({ namespace = namespace, level = level })
      assert.equal(expected, seen, tostring(namespace) .. " " .. tostring(level))
    end
    check("", "debug", false)
    check(nil, "debug", false)
    check("", "error", false)
    check(nil, "error", false)
    check("twext.web2.dav", "debug", false)
    check("twext.web2.dav", "error", true)
    check("", "critical", false)
    check(nil, "critical", false)
    check("twext.web2", nil, false)
  end)
end)

describe("PublishToNewObserverTests (test_legacy)", function()
  -- log.msg and log.err reach the observers Logger events reach
  it("test_observed", function()
    local events = collect()
    log.msg()
    assert.equal(1, #events)
  end)

  it("test_time", function()
    local events = collect()
    log.msg("x")
    assert.equal(T, events[1].time)
  end)

  it("test_message", function()
    local events = collect()
    local sink = Sink()
    log.startLogging(sink, false)
    log.msg("Hello,", "world!")
    -- the event's text is the text the legacy file writes
    local ev = events[#events]
    assert.equal("Hello, world!", ev.text)
    assert.equal("] Hello, world!\n", sink.buf:match("%][^\n]*\n$"))
  end)

  it("test_defaultLogLevel", function()
    local events = collect()
    log.msg("x")
    assert.equal("info", events[1].level)
  end)

  it("test_isError", function()
    local events = collect()
    log.err(errors.RuntimeError("x"))
    assert.equal("critical", events[1].level)
    assert.is_true(events[1].isError)
  end)

  it("test_defaultNamespace", function()
    local events = collect()
    log.msg("x")
    log.err(errors.RuntimeError("x"))
    assert.equal("log_legacy", events[1].namespace)
    assert.equal("log_legacy", events[2].namespace)
  end)

  it("test_system", function()
    local events = collect()
    log.callWithContext("sys", log.msg, "x")
    log.msg("y")
    assert.equal("sys", events[1].system)
    assert.equal("-", events[2].system)
  end)
end)

describe("FlatFormattingTests (test_flatten)", function()
  it("test_formatFlatEvent", function()
    local counter = 0
    local fmt = "callable: {callme()} attribute: {object.attribute} numrepr: {number!r} "
      .. "numstr: {number!s} strrepr: {string!r} unistr: {unistr!s}"
    local fields = {
      callme = function() local n = counter; counter = counter + 1; return n end,
      object = { attribute = "value" }, number = 7, string = "hello", unistr = "\u{f6}",
    }
    assert.equal("callable: 0 attribute: value numrepr: 7 numstr: 7 strrepr: 'hello' unistr: \u{f6}",
      log.formatEvent(fmt, fields))
  end)

  it("test_formatFlatEventBadFormat", function()
    local text = log.formatEvent("strrepr: {string!X}", { string = "hello" })
    assert.equal(1, text:find("Unable to format event", 1, true))
  end)

  it("test_formatFlatEventFieldNamesSame", function()
    local counter = 0
    local CountStr = setmetatable({}, {
      __tostring = function() local n = counter; counter = counter + 1; return tostring(n) end,
    })
    assert.equal("0 1", log.formatEvent("{x} {x}", { x = CountStr }))
  end)

  it("test_formatEventFlatTrailingText", function()
    assert.equal("test value trailing", log.formatEvent("test {x} trailing", { x = "value" }))
  end)
end)

describe("LogCaptureTests (test_capture)", function()
  it("test_capture", function()
    local foo = {}
    local captured, obs = collect()
    local L = log.Logger("capture")
    L:debug("Capture this, please", { foo = foo })
    L:info("Capture this too, please", { foo = foo })
    log.removeObserver(obs)
    L:info("not captured")
    assert.equal(2, #captured)
    assert.equal("Capture this, please", captured[1].format)
    assert.equal("debug", captured[1].level)
    assert.is_true(rawequal(foo, captured[1].foo))
    assert.equal("Capture this too, please", captured[2].format)
    assert.equal("info", captured[2].level)
    assert.is_true(rawequal(foo, captured[2].foo))
  end)
end)
