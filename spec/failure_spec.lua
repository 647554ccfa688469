-- spec for lua/braid/failure.lua
local failure = require "braid.failure"
local errors = require "braid.error"
local class = require "braid.class"
local Failure = failure.Failure

-- raise v inside a named function and catch it with failure.msgh
local function raise_in_place(v)
  local function thrower() error(v) end
  local ok, f = xpcall(thrower, failure.msgh)
  assert(not ok)
  return f
end

describe("Failure(value)", function()
  it("wraps an error object: value is the object, type its class", function()
    local e = errors.ConnectionLost("reset by peer")
    local f = Failure(e)
    assert.equal(e, f.value)
    assert.equal(errors.ConnectionLost, f.type)
    assert.is_string(f.traceback)
  end)

  it("wraps a raw value with type LuaError", function()
    local f = Failure("boom")
    assert.equal("boom", f.value)
    assert.equal(errors.LuaError, f.type)
    local t = {}
    assert.equal(errors.LuaError, Failure(t).type)
    assert.equal(t, Failure(t).value)
    assert.equal(errors.LuaError, Failure(42).type)
  end)

  it("returns a Failure given to it as is", function()
    local f = Failure("x")
    assert.equal(f, Failure(f))
    assert.is_true(rawequal(f, Failure(f)))
    assert.is_true(rawequal(f, Failure:new(f)))
    assert.is_true(rawequal(f, Failure(f, "another traceback")))
  end)

  it("with no value (or nil) wraps a NoCurrentExceptionError", function()
    for _, f in ipairs({ Failure(), Failure(nil) }) do
      assert.is_true(errors.NoCurrentExceptionError:isinstance(f.value))
      assert.equal(errors.NoCurrentExceptionError, f.type)
      assert.equal("", f:getErrorMessage())
      assert.equal("NoCurrentExceptionError", f:brief())
    end
  end)

  it("keeps a traceback given as the second argument", function()
    local f = Failure("x", "stack traceback:\n\tsomewhere:1: in here")
    assert.equal("stack traceback:\n\tsomewhere:1: in here", f.traceback)
  end)

  -- regression (failure.lua make()): `debug.traceback("", 3)` skips the function
  -- that called Failure(...): __call -> __new -> make are tail calls, so
  -- level 2 is already the caller. Fix: debug.traceback("", 2) in make().
  it("records the stack from the function that made the Failure", function()
    local function maker() local f = Failure("x"); return f end
    local f = maker()
    local line = debug.getinfo(1, "l").currentline - 2
    assert.matches("^stack traceback:\n\t[^\n]*failure_spec%.lua:" .. line .. ": in local 'maker'", f.traceback)
  end)

  it("is an instance of the Failure class", function()
    local f = Failure("x")
    assert.is_true(Failure:isinstance(f))
    assert.equal("Failure", class.nameof(f))
  end)
end)

describe("failure.isFailure", function()
  it("is true only for Failures", function()
    assert.is_true(failure.isFailure(Failure("x")))
    assert.is_false(failure.isFailure(errors.Error("x")))
    assert.is_false(failure.isFailure("x"))
    assert.is_false(failure.isFailure({ value = "x" }))
    assert.is_false(failure.isFailure(nil))
  end)
end)

describe("Failure:check", function()
  local f
  before_each(function() f = Failure(errors.ConnectionDone()) end)

  it("returns the class when the type is that class", function()
    assert.equal(errors.ConnectionDone, f:check(errors.ConnectionDone))
  end)

  it("returns an ancestor class the type inherits from", function()
    assert.equal(errors.ConnectionClosed, f:check(errors.ConnectionClosed))
    assert.equal(errors.Error, f:check(errors.Error))
  end)

  it("returns the first matching argument, in argument order", function()
    assert.equal(errors.ConnectionClosed, f:check(errors.ConnectionLost, errors.ConnectionClosed, errors.ConnectionDone))
    assert.equal(errors.ConnectionDone, f:check(errors.ConnectionDone, errors.ConnectionClosed))
  end)

  it("returns nil when nothing matches", function()
    assert.is_nil(f:check(errors.ConnectionLost, errors.ValueError))
    assert.is_nil(f:check())
  end)

  it("skips nil and non-class arguments", function()
    assert.equal(errors.ConnectionDone, f:check(nil, "ConnectionDone", {}, errors.ConnectionDone))
  end)

  it("finds a raised object of a plain class by its class and its ancestors, as Twisted's check finds any exception class", function()
    local AppError = class.Object:extend("AppError")
    local Quota = AppError:extend("Quota")
    local ok, g = xpcall(function() error(Quota()) end, failure.msgh)
    assert.is_false(ok)
    assert.equal(errors.LuaError, g.type)
    assert.equal(Quota, g:check(errors.ValueError, Quota))
    assert.equal(AppError, g:check(AppError))
    assert.equal(errors.LuaError, g:check(errors.LuaError, AppError))
    assert.is_nil(g:check(errors.ValueError, class.Object:extend("Other")))
    assert.equal(AppError, g:trap(AppError))
    local raised = select(2, pcall(g.trap, g, errors.ValueError))
    assert.is_true(rawequal(g, raised))
  end)

  it("takes a raised error class as an instance made without arguments, as Python's raise ConnectionDone", function()
    local ok, f = xpcall(function() error(errors.ConnectionDone) end, failure.msgh)
    assert.is_false(ok)
    assert.equal(errors.ConnectionDone, f.type)
    assert.is_true(errors.ConnectionDone:isinstance(f.value))
    assert.equal(errors.ConnectionClosed, f:check(errors.ValueError, errors.ConnectionClosed))
    assert.equal("ConnectionDone: Connection was closed cleanly.", f:brief())
    local g = Failure(errors.TimeoutError)
    assert.equal(errors.TimeoutError, g.type)
    assert.equal("User timeout caused connection failure.", g:getErrorMessage())
    -- a class that is no error class stays the raised value
    local Plain = class.Object:extend("Plain")
    assert.equal(Plain, Failure(Plain).value)
    assert.equal(errors.LuaError, Failure(Plain).type)
  end)

  it("matches LuaError (and Error) for raw values", function()
    local raw = Failure("boom")
    assert.equal(errors.LuaError, raw:check(errors.ValueError, errors.LuaError))
    assert.equal(errors.Error, raw:check(errors.Error))
  end)
end)

describe("Failure:trap", function()
  it("returns the matching class", function()
    local f = Failure(errors.ConnectionLost())
    assert.equal(errors.ConnectionClosed, f:trap(errors.ConnectionClosed))
  end)

  it("follows check's argument order", function()
    local f = Failure(errors.ConnectionAborted())
    assert.equal(errors.ConnectionLost, f:trap(errors.ConnectionLost, errors.ConnectionAborted))
  end)

  it("raises the Failure itself when nothing matches", function()
    local f = Failure(errors.ValueError("v"))
    local ok, raised = pcall(f.trap, f, errors.ConnectionLost, errors.TypeError)
    assert.is_false(ok)
    assert.is_true(rawequal(f, raised))
  end)
end)

describe("Failure:getErrorMessage", function()
  it("gives an error object's text (without the class name)", function()
    assert.equal("Connection was closed cleanly.", Failure(errors.ConnectionDone()):getErrorMessage())
    assert.equal("bad", Failure(errors.ValueError("bad")):getErrorMessage())
  end)

  it("keeps Lua's file:line: prefix of a raw error(\"boom\")", function()
    local line
    local ok, e = pcall(function() line = debug.getinfo(1, "l").currentline; error("boom") end)
    assert.is_false(ok)
    local f = Failure(e)
    assert.equal(e, f:getErrorMessage())
    assert.matches("^[^\n]*failure_spec%.lua:" .. line .. ": boom$", f:getErrorMessage())
  end)

  it("tostrings other raw values", function()
    assert.equal("42", Failure(42):getErrorMessage())
    assert.equal("true", Failure(true):getErrorMessage())
  end)

  -- as Twisted's safe_str (test_brokenValue*Detail): the text methods of a
  -- Failure never raise, whatever its value's __tostring does
  it("gives a marker for a value whose __tostring raises or returns no string", function()
    local raising = setmetatable({}, { __tostring = function() error("no text", 0) end })
    local f = Failure(raising)
    assert.equal("<unprintable table: no text>", f:getErrorMessage())
    assert.equal("LuaError: <unprintable table: no text>", f:brief())
    assert.matches("\nLuaError: <unprintable table: no text>\n$", f:getTraceback())
    assert.matches("^%[Failure instance: Traceback: LuaError: <unprintable table: no text>\n", tostring(f))
    local Odd = errors.ValueError:extend("OddError")
    function Odd:text() error("no text either", 0) end
    function Odd:__tostring() return {} end
    local g = Failure(Odd())
    assert.equal("<unprintable table: '__tostring' must return a string>", g:getErrorMessage())
    assert.equal("OddError: <unprintable table: '__tostring' must return a string>", g:brief())
  end)
end)

describe("Failure:brief", function()
  it("gives `Name: text` for error objects and `LuaError: value` for raw ones", function()
    assert.equal("ValueError: bad", Failure(errors.ValueError("bad")):brief())
    assert.equal("LuaError: boom", Failure("boom"):brief())
  end)
end)

describe("Failure:getTraceback", function()
  it("gives Twisted's header, the traceback and the error line", function()
    local f = Failure(errors.ValueError("bad"), "stack traceback:\n\tx.lua:1: in main chunk")
    assert.equal("Traceback (most recent call last):\nstack traceback:\n\tx.lua:1: in main chunk\nValueError: bad\n",
      f:getTraceback())
  end)
end)

describe("tostring(failure)", function()
  it("reads [Failure instance: Traceback: Name: text\\n<traceback>]", function()
    local f = Failure(errors.ConnectionLost(), "stack traceback:\n\tx.lua:1: in main chunk")
    assert.equal("[Failure instance: Traceback: ConnectionLost: Connection to the other side was lost "
      .. "in a non-clean fashion.\nstack traceback:\n\tx.lua:1: in main chunk]", tostring(f))
  end)

  it("names LuaError for raw values", function()
    assert.matches("^%[Failure instance: Traceback: LuaError: boom\n", tostring(Failure("boom")))
  end)
end)

describe("Failure:raiseException", function()
  it("raises the wrapped error object itself", function()
    local e = errors.ValueError("v")
    local ok, raised = pcall(Failure(e).raiseException, Failure(e))
    assert.is_false(ok)
    assert.is_true(rawequal(e, raised))
  end)

  it("raises a raw string unchanged, with no second position prefix", function()
    local f = Failure("x.lua:1: boom")
    local ok, raised = pcall(f.raiseException, f)
    assert.is_false(ok)
    assert.equal("x.lua:1: boom", raised)
  end)
end)

describe("failure.msgh", function()
  it("turns what was raised into a Failure, as an xpcall message handler", function()
    local e = errors.ConnectionRefusedError()
    local f = raise_in_place(e)
    assert.is_true(failure.isFailure(f))
    assert.equal(e, f.value)
    assert.equal(errors.ConnectionRefusedError, f.type)
  end)

  it("captures the traceback at the raise point", function()
    local f = raise_in_place("boom")
    -- the first frames: error itself, then thrower (line 9 of this file)
    assert.matches("^stack traceback:\n\t%[C%]: in function 'error'\n\t[^\n]*failure_spec%.lua:9: in ", f.traceback)
  end)

  it("keeps a raw error's file:line: prefix in value", function()
    local f = raise_in_place("boom")
    assert.matches("failure_spec%.lua:%d+: boom$", f.value)
    assert.equal(errors.LuaError, f.type)
  end)

  it("wraps runtime errors (indexing nil) with their Lua message", function()
    local ok, f = xpcall(function() local t = nil; return t.x end, failure.msgh)
    assert.is_false(ok)
    assert.matches("attempt to index a nil value", f:getErrorMessage())
    assert.equal(errors.LuaError, f.type)
  end)

  it("passes a raised Failure through unchanged", function()
    local inner = Failure(errors.ValueError("v"), "original traceback")
    local f = raise_in_place(inner)
    assert.is_true(rawequal(inner, f))
    assert.equal("original traceback", f.traceback)
  end)

  it("makes trap's re-raise arrive as the same Failure", function()
    local f = Failure(errors.ValueError("v"))
    local ok, got = xpcall(function() f:trap(errors.TypeError) end, failure.msgh)
    assert.is_false(ok)
    assert.is_true(rawequal(f, got))
  end)
end)

describe("Failure's arguments", function()
  local function raised(f, ...)
    local ok, e = pcall(f, ...)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(e))
    return tostring(e)
  end

  it("refuses a traceback that is not a string, whatever its type", function()
    for _, tb in ipairs({ 42, false, true, {} }) do
      assert.equal("TypeError: bad argument #2 to 'Failure' (traceback string expected, got "
        .. class.nameof(tb) .. ")", raised(Failure, "boom", tb))
    end
  end)

  it("methods called with '.' name themselves, Failure and the fix", function()
    local f = Failure(errors.ValueError("x"))
    for _, name in ipairs({ "check", "trap", "getErrorMessage", "getTraceback", "raiseException" }) do
      assert.equal(("TypeError: bad argument #1 to '%s' (Failure expected, got %s; call it as obj:%s(...))")
        :format(name, class.nameof(errors.ValueError), name),
        raised(f[name], errors.ValueError))
      assert.equal(("TypeError: bad argument #1 to '%s' (Failure expected, got nil; call it as obj:%s(...))")
        :format(name, name), raised(f[name]))
    end
  end)
end)
