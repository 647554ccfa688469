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

local errsink

before_each(function()
  log.setClock(function() return T end)
  errsink = Sink()
  log.setErrorStream(errsink)
end)

after_each(function()
  log.stopLogging()
  for _, o in ipairs(log.getObservers()) do log.removeObserver(o) end
  log.setClock(nil)
  log.setErrorStream(io.stderr)
  log.setLevel("info")
  log.setSystem("-")
end)

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
