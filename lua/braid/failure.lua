--- braid.failure: a raised value with its traceback, as twisted.python.failure.
-- test-case-name: spec/failure_spec.lua
local class = require "braid.class"
local errors = require "braid.error"

local M = {}

local safe_str = errors.safeString

local Failure = class.Object:extend("Failure")

local function make(value, tb)
  local f = setmetatable({}, Failure)
  if value == nil then
    value = errors.NoCurrentExceptionError()
  end
  if rawequal(value, errors.Error) or (class.isclass(value) and value:issubclass(errors.Error)) then
    -- error(errors.ConnectionDone): the class raised, as Python's `raise
    -- ConnectionDone`, stands for an instance made without arguments
    local ok, inst = pcall(value)
    if ok and errors.Error:isinstance(inst) then value = inst end
  end
  f.value = value
  local cls = errors.Error:isinstance(value) and value.class or errors.LuaError
  f.type = cls
  f.traceback = tb or debug.traceback("", 2):gsub("^\n", "")
  return f
end

--- Failure(value?, traceback?): wrap a raised value. A Failure is returned as
-- is. Without a traceback, the traceback of the caller is recorded.
function Failure.__new(_, value, tb)
  if Failure:isinstance(value) then return value end
  if tb ~= nil and type(tb) ~= "string" then
    errors.argerror("Failure", 2, "traceback string expected, got " .. class.nameof(tb))
  end
  return make(value, tb)
end

--- The first of the classes that this failure's type is or inherits from,
-- or that the value is an instance of (a raised object of a class made with
-- class.Object:extend has type LuaError, and is still found by its class).
function Failure:check(...)
  errors.checkself("check", getmetatable(self) == Failure or Failure:isinstance(self), self, "Failure")
  local v = self.value
  for i = 1, select("#", ...) do
    local cls = select(i, ...)
    if cls ~= nil and class.isclass(cls) and (self.type:issubclass(cls) or cls:isinstance(v)) then
      return cls
    end
  end
  return nil
end

--- As check, but raise this Failure when nothing matches (errback idiom).
function Failure:trap(...)
  errors.checkself("trap", getmetatable(self) == Failure or Failure:isinstance(self), self, "Failure")
  local c = self:check(...)
  if c == nil then error(self, 0) end
  return c
end

--- The error's text: an error object's text, or the raw value as raised.
-- Never raises: a value whose __tostring (or text()) raises gives
-- `<unprintable TYPE: why>`, as Twisted's safe_str.
function Failure:getErrorMessage()
  errors.checkself("getErrorMessage", getmetatable(self) == Failure or Failure:isinstance(self), self, "Failure")
  local v = self.value
  if errors.Error:isinstance(v) then
    local ok, s = pcall(v.text, v)
    if ok and type(s) == "string" then return s end
  end
  return safe_str(v)
end

--- The error's `Name: text` line (never raises). An error object whose
-- tostring raises is still named by its class, as Twisted's traceback
-- names the type whatever str(value) does.
function Failure:brief()
  local v = self.value
  if errors.Error:isinstance(v) then
    local ok, s = pcall(tostring, v)
    if ok and type(s) == "string" then return s end
    return class.nameof(v) .. ": " .. safe_str(v)
  end
  return "LuaError: " .. safe_str(v)
end

--- Twisted-shaped traceback text, ending with the error line.
function Failure:getTraceback()
  errors.checkself("getTraceback", getmetatable(self) == Failure or Failure:isinstance(self), self, "Failure")
  return "Traceback (most recent call last):\n" .. (self.traceback or "")
    .. "\n" .. self:brief() .. "\n"
end

--- Raise the wrapped value again.
function Failure:raiseException()
  errors.checkself("raiseException", getmetatable(self) == Failure or Failure:isinstance(self), self, "Failure")
  error(self.value, 0)
end

Failure.__tostring = function(self)
  return "[Failure instance: Traceback: " .. self:brief() .. "\n"
    .. (self.traceback or "") .. "]"
end

--- True when v is a Failure.
function M.isFailure(v)
  return Failure:isinstance(v)
end

-- A value raised again in another coroutine carries the traceback of its
-- first raise (braid.log's callWithContext runs f in a coroutine of its
-- own and raises f's error again in the caller's): carried_tb is that
-- traceback while the value carried_v is raised again in (or out of) the
-- coroutine carried_co, until the frame that raised it again is left or
-- that coroutine is closed. Only a handler in that coroutine (msgh), or
-- one given that coroutine dead (the resumer's), sees it: a coroutine
-- that died raising and was never closed leaves no carry behind for the
-- same value raised later elsewhere.
local carried_v, carried_tb, carried_co, carried_token = nil, nil, nil, nil

local CARRY = {
  __close = function(token)
    if carried_token == token then
      carried_v, carried_tb, carried_co, carried_token = nil, nil, nil, nil
    end
  end,
}

--- braid.log's hook: value v is raised again in the running coroutine, tb
-- is its first traceback. Returns a to-be-closed value that ends this
-- carry (the frame that raised it again is left).
function M._carry(v, tb)
  local token = setmetatable({}, CARRY)
  carried_v, carried_tb, carried_co, carried_token = v, tb, coroutine.running(), token
  return token
end

--- The traceback v carries from its first raise, if it is being raised
-- again in coroutine co (nil: the running one), else nil.
function M._carried(v, co)
  if carried_tb ~= nil and rawequal(v, carried_v)
    and rawequal(co or coroutine.running(), carried_co) then
    return carried_tb
  end
  return nil
end

--- tb (a traceback taken where v was raised in coroutine co, nil: the
-- running one; "stack traceback:\n...") with the traceback v carries from
-- its first raise in front.
function M._withCarried(v, tb, co)
  local c = M._carried(v, co)
  if c == nil then return tb end
  return c .. "\n" .. (tb:gsub("^stack traceback:", "called from:", 1))
end

--- Resume the suspended coroutine co so that it raises e (error level
-- `level`) where it stands, by a one-shot count hook; a hook co had (a
-- coverage tool's) is put back first. Returns what coroutine.resume does.
-- (braid.defer raises at a stray yield this way, braid.log's
-- callWithContext the error of the coroutine it relays for.)
function M._resumeRaising(co, e, level)
  local hook, mask, count = debug.gethook(co)
  if type(hook) ~= "function" then hook = nil end
  debug.sethook(co, function()
    debug.sethook(co, hook, mask, count)
    error(e, level)
  end, "", 1)
  return coroutine.resume(co)
end

--- Message handler for xpcall: wraps what was raised in a Failure holding
-- the traceback at the point of the error. A raised Failure is kept.
function M.msgh(e)
  if Failure:isinstance(e) then return e end
  local tb = debug.traceback("", 2):gsub("^\n", "")
  if carried_tb ~= nil then tb = M._withCarried(e, tb) end
  return make(e, tb)
end

M.Failure = Failure
return M
