--- braid.error: error classes with Twisted's names, hierarchy and messages.
-- test-case-name: spec/error_spec.lua
--
-- An error object has fields `message` (the explicit message, or nil) and
-- `class`; tostring gives `Name: text`. Classes with a Twisted default text
-- print `Name: default text` without a message and `Name: default text:
-- message` with one; the twisted.internet.error classes end with a period,
-- as Twisted's __str__ does.
local class = require "braid.class"

local M = {}

--- tostring that never raises (Twisted's reflect.safe_str): a value whose
-- __tostring raises, or returns no string, gives `<unprintable TYPE: why>`.
function M.safeString(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local ok, s = pcall(tostring, v)
  if ok and type(s) == "string" then return s end
  return "<unprintable " .. t .. ": " .. (type(s) == "string" and s or "tostring failed") .. ">"
end

local Error = class.Object:extend("Error")
Error.class = Error

--- Make a subclass; every error class knows itself as `.class`.
function Error:extend(name, fields)
  local cls = class.Object.extend(self, name, fields)
  cls.class = cls
  return cls
end

function Error:init(message, ...)
  if message ~= nil then self.message = M.safeString(message) end
  if select("#", ...) > 0 then self.args = table.pack(...) end
end

--- The text after `Name: `.
function Error:text()
  local default, message = self.defaultText, self.message
  local s
  if default and message then
    s = default .. ": " .. message
  else
    s = message or default or ""
  end
  if self.period and s ~= "" and s:sub(-1) ~= "." then s = s .. "." end
  return s
end

function Error:__tostring()
  local t = self:text()
  if t == "" then return self.__name end
  return self.__name .. ": " .. t
end

--- Make an error class.
-- @param name the class name
-- @param parent the parent class (default Error)
-- @param defaultText Twisted's default text, or nil
function M.class(name, parent, defaultText, fields)
  if type(name) ~= "string" then
    M.argerror("class", 1, "string expected, got " .. class.nameof(name))
  end
  if parent == nil then parent = Error end
  if not (class.isclass(parent) and parent:issubclass(Error)) then
    M.argerror("class", 2, "error class expected, got " .. class.nameof(parent))
  end
  if defaultText ~= nil and type(defaultText) ~= "string" then
    M.argerror("class", 3, "string expected, got " .. class.nameof(defaultText))
  end
  if fields ~= nil and type(fields) ~= "table" then
    M.argerror("class", 4, "table expected, got " .. class.nameof(fields))
  end
  local cls = parent:extend(name, fields)
  if defaultText ~= nil then cls.defaultText = defaultText end
  M[name] = M[name] or cls
  return cls
end

--- True when v is an error object of cls (default Error).
function M.isinstance(v, cls)
  if cls ~= nil and not class.isclass(cls) then
    M.argerror("isinstance", 2, "an error class expected (errors.ValueError, say), got "
      .. class.nameof(cls))
  end
  return (cls or Error):isinstance(v)
end

--- Raise a TypeError naming the function and argument, blaming the caller's
-- caller (level 3 by default: the user code calling the API function).
function M.argerror(fname, argn, msg, level)
  error(M.TypeError(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg)),
        level or 3)
end

--- Check that v has Lua type tname (or is nil when optional).
function M.checktype(fname, argn, v, tname, optional)
  if type(v) == tname or (optional and v == nil) then return v end
  error(M.TypeError(("bad argument #%d to '%s' (%s expected, got %s)")
    :format(argn, fname, tname, type(v))), 3)
end

--- Check a duration: a finite number of seconds >= 0 (or nil when
-- optional). TypeError for a non-number, ValueError for a negative, NaN or
-- infinite one, naming `what` (default "seconds").
function M.checkseconds(fname, argn, v, what, optional)
  if v == nil and optional then return v end
  if type(v) ~= "number" then
    error(M.TypeError(("bad argument #%d to '%s' (number expected, got %s)")
      :format(argn, fname, class.nameof(v))), 3)
  end
  if not (v >= 0 and v < math.huge) then
    error(M.ValueError(("bad argument #%d to '%s' (%s must be a finite number >= 0, got %s)")
      :format(argn, fname, what or "seconds", tostring(v))), 3)
  end
  return v
end

--- Check a method's self: `ok` says whether it is `what` (a class name);
-- else raise TypeError, with the usual fix for a method called with '.'.
function M.checkself(fname, ok, self, what)
  if ok then return end
  error(M.TypeError(("bad argument #1 to '%s' (%s expected, got %s; call it as obj:%s(...))")
    :format(fname, what, class.nameof(self), fname)), 3)
end

--- Check that v is callable (a function or a table/userdata with __call).
function M.checkcallable(fname, argn, v, optional)
  if optional and v == nil then return v end
  if type(v) == "function" then return v end
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__call then return v end
  error(M.TypeError(("bad argument #%d to '%s' (function expected, got %s)")
    :format(argn, fname, class.nameof(v))), 3)
end

M.Error = Error
local C = M.class

-- Lua's own errors (a raw value raised with error()).
C("LuaError")
C("TypeError")
C("ValueError")
C("NotImplementedError")
C("RuntimeError")
C("NoCurrentExceptionError")

-- twisted.internet.error
local function I(name, parent, text)
  local cls = C(name, parent, text)
  cls.period = true
  return cls
end

local CannotListenError = I("CannotListenError", nil, nil)
function CannotListenError:init(interface, port, socketError)
  self.interface, self.port, self.socketError = interface, port, socketError
  self.message = ("Couldn't listen on %s:%s: %s"):format(
    (interface == nil or interface == "") and "any" or M.safeString(interface),
    M.safeString(port), M.safeString(socketError))
end

local ConnectError = I("ConnectError", nil, "An error occurred while connecting")
function ConnectError:init(osError, message)
  if message == nil and osError ~= nil and type(osError) ~= "number" then
    message, osError = osError, nil
  end
  self.osError = osError
  if message ~= nil then self.message = M.safeString(message) end
end
function ConnectError:text()
  local s = self.defaultText
  local os_error = self.osError
  -- Twisted tests `if self.osError:`, so 0, false and "" print nothing
  if os_error ~= nil and os_error ~= 0 and os_error ~= false and os_error ~= "" then
    s = s .. ": " .. M.safeString(os_error)
  end
  if self.message ~= nil and self.message ~= "" then s = s .. ": " .. self.message end
  return s .. "."
end
I("ConnectBindError", ConnectError, "Couldn't bind")
I("UnknownHostError", ConnectError, "Hostname couldn't be looked up")
I("NoRouteError", ConnectError, "No route to host")
I("ConnectionRefusedError", ConnectError, "Connection was refused by other side")
I("TCPTimedOutError", ConnectError, "TCP connection timed out")
I("BadFileError", ConnectError, "File used for UNIX socket is no good")
I("ServiceNameUnknownError", ConnectError, "Service name given as port is unknown")
local UserError = I("UserError", ConnectError, "User aborted connection")
I("TimeoutError", UserError, "User timeout caused connection failure")
I("SSLError", ConnectError, "An SSL error occurred")
I("DNSLookupError", nil, "DNS lookup failed")
local ConnectingCancelledError = I("ConnectingCancelledError", nil,
  "The connection attempt was cancelled")
-- as Twisted's: the address the attempt was to is kept as `address` (and
-- printed after the default text)
function ConnectingCancelledError:init(address, ...)
  Error.init(self, address, ...)
  self.address = address
end
I("NoProtocol", nil, "The factory given to an endpoint returned nil from buildProtocol")

local ConnectionClosed = I("ConnectionClosed", nil,
  "Connection was closed, whether cleanly or non-cleanly")
local ConnectionDone = I("ConnectionDone", ConnectionClosed, "Connection was closed cleanly")
local ConnectionLost = I("ConnectionLost", ConnectionClosed,
  "Connection to the other side was lost in a non-clean fashion")
I("ConnectionAborted", ConnectionLost,
  "Connection was aborted locally using ITCPTransport.abortConnection")
I("ConnectionFdescWentAway", ConnectionLost, "Uh")

I("AlreadyCalled", M.ValueError, "Tried to cancel an already-called event")
I("AlreadyCancelled", M.ValueError, "Tried to cancel an already-cancelled event")
I("NotConnectingError", nil,
  "The Connector was not connecting when it was asked to stop connecting")
I("NotListeningError", nil,
  "The Port was not listening when it was asked to stop listening")
C("ReactorNotRunning")
C("ReactorAlreadyRunning")
C("ReactorAlreadyInstalledError")
C("ReactorNotRestartable")

local ProcessDone = I("ProcessDone", ConnectionDone, "A process has ended without apparent errors")
function ProcessDone:init(status)
  self.exitCode, self.status, self.signal = 0, status, nil
  self.message = "process finished with exit code 0"
end
local ProcessTerminated = I("ProcessTerminated", ConnectionLost,
  "A process has ended with a probable error condition")
function ProcessTerminated:init(exitCode, signal, status)
  self.exitCode, self.signal, self.status = exitCode, signal, status
  local s = "process ended"
  if exitCode ~= nil then s = s .. " with exit code " .. tostring(exitCode) end
  if signal ~= nil then s = s .. " by signal " .. tostring(signal) end
  self.message = s
end

return M
