--- braid.basic: framing receivers (twisted.protocols.basic).
-- test-case-name: spec/basic_spec.lua
--
-- Every receiver keeps its unconsumed input in a frame buffer: the C
-- `braid.core.framebuf()` when the runtime provides it (runtime/framing.c),
-- else `LuaFrameBuffer`, a pure-Lua buffer with the same interface.
local class = require "braid.class"
local errors = require "braid.error"
local checkself = errors.checkself
local Protocol = require("braid.protocol").Protocol

local M = {}

local type, error, string_pack = type, error, string.pack
local find, sub = string.find, string.sub

M.StringTooLongError = errors.class("StringTooLongError", errors.ValueError)
M.NetstringParseError = errors.class("NetstringParseError", errors.ValueError)

---------------------------------------------------------------------------
-- Pure-Lua frame buffer: the fallback, and the reference the C one must match.

local LuaFrameBuffer = {}
LuaFrameBuffer.__index = LuaFrameBuffer
M.LuaFrameBuffer = LuaFrameBuffer

--- A new empty pure-Lua frame buffer.
function LuaFrameBuffer.new()
  return setmetatable({ _s = "", _pos = 1 }, LuaFrameBuffer)
end

function LuaFrameBuffer:append(data)
  if type(data) ~= "string" then errors.checktype("append", 1, data, "string") end
  if data == "" then return end
  local s, pos = self._s, self._pos
  if pos > 1 then s = sub(s, pos) end
  self._s, self._pos = s .. data, 1
end

function LuaFrameBuffer:len()
  return #self._s - self._pos + 1
end

local function consume(self, n)
  local pos = self._pos + n
  if pos > #self._s then self._s, pos = "", 1 end
  self._pos = pos
end

-- The arguments checked as framing.c's luaL_checklstring (a string, not a
-- number: luaL_checktype first) and luaL_checkinteger do, with their messages.
local math_type, tointeger = math.type, math.tointeger

local function checkstring(fname, argn, v)
  if type(v) ~= "string" then errors.checktype(fname, argn, v, "string") end
end

local function checkinteger(fname, argn, v)
  if math_type(v) == "integer" then return v end
  local n = tointeger(v)
  if n ~= nil then return n end
  errors.argerror(fname, argn, type(v) == "number" and "number has no integer representation"
    or "number expected, got " .. type(v))
end

-- a bad value of the right type: framing.c's luaL_argcheck, a ValueError
local function valueerror(fname, argn, msg)
  error(errors.ValueError(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg)), 3)
end

function LuaFrameBuffer:nextLine(delim, max)
  if type(delim) ~= "string" or math_type(max) ~= "integer" or delim == "" then -- rare
    checkstring("nextLine", 1, delim)
    max = checkinteger("nextLine", 2, max)
    if delim == "" then valueerror("nextLine", 1, "empty delimiter") end
  end
  local s, pos = self._s, self._pos
  local i = find(s, delim, pos, true)
  if not i then
    if #s - pos + 1 - #delim >= max then return false, "toolong" end -- max + #delim may wrap
    return nil
  end
  if i - pos > max then return false, "toolong" end
  local line = sub(s, pos, i - 1)
  consume(self, i - pos + #delim)
  return line
end

function LuaFrameBuffer:nextNetstring(max)
  max = checkinteger("nextNetstring", 1, max)
  local s, pos = self._s, self._pos
  local maxdigits = #string.format("%d", max) -- not tostring: 1e15 is "1e+15"
  local _, e, digits = find(s, "^(%d*)", pos)
  local nd = #digits
  -- a leading zero is malformed at once, and before too long, as in Twisted
  if nd > 1 and sub(digits, 1, 1) == "0" then return false, "malformed" end
  if nd > maxdigits then return false, "toolong" end
  if nd > 0 and tonumber(digits) > max then return false, "toolong" end
  if e == #s then return nil end
  if nd == 0 or sub(s, e + 1, e + 1) ~= ":" then return false, "malformed" end
  local n = tonumber(digits)
  if #s - e - 2 < n then return nil end -- e + 1 + n + 1 may wrap when max is huge
  if sub(s, e + 2 + n, e + 2 + n) ~= "," then return false, "malformed" end
  local str = sub(s, e + 2, e + 1 + n)
  consume(self, e + 2 + n - pos + 1)
  return str
end

local FMT = { [1] = ">I1", [2] = ">I2", [4] = ">I4" }

function LuaFrameBuffer:nextPrefixed(k, max)
  k = checkinteger("nextPrefixed", 1, k)
  max = checkinteger("nextPrefixed", 2, max)
  if k ~= 1 and k ~= 2 and k ~= 4 then
    valueerror("nextPrefixed", 1, "prefix must be 1, 2 or 4 bytes")
  end
  local s, pos = self._s, self._pos
  if #s - pos + 1 < k then return nil end
  local n = string.unpack(FMT[k], s, pos)
  if n > max then return false, "toolong", n end
  if #s - pos + 1 < k + n then return nil end
  local str = sub(s, pos + k, pos + k + n - 1)
  consume(self, k + n)
  return str
end

function LuaFrameBuffer:take(n)
  n = checkinteger("take", 1, n)
  if n < 0 then valueerror("take", 1, "negative count") end
  local s, pos = self._s, self._pos
  local avail = #s - pos + 1
  if n > avail then n = avail end -- else pos + n - 1 may wrap around
  local str = sub(s, pos, pos + n - 1)
  consume(self, n)
  return str
end

function LuaFrameBuffer:takeAll()
  local str = sub(self._s, self._pos)
  self._s, self._pos = "", 1
  return str
end

function LuaFrameBuffer:clear()
  self._s, self._pos = "", 1
end

local ok_core, core = pcall(require, "braid.core")
local c_framebuf = ok_core and type(core) == "table" and core.framebuf or nil

--- The C frame buffer constructor, or nil when the runtime lacks it.
M.cFrameBuffer = c_framebuf

--- A new frame buffer: C when available, else pure Lua.
-- Receivers call `self:_newFrameBuffer()`, so a class (or a spec) may set
-- `_newFrameBuffer = basic.LuaFrameBuffer.new` to force the fallback.
function M.newFrameBuffer()
  if c_framebuf then return c_framebuf() end
  return LuaFrameBuffer.new()
end

local function buffer_of(self)
  local b = self._fbuf
  if b == nil then
    b = self._newFrameBuffer()
    self._fbuf = b
  end
  return b
end

local function must_override(name)
  return function(self)
    error(errors.NotImplementedError(("%s.%s must be overridden by a subclass")
      :format(class.nameof(self), name)), 2)
  end
end

---------------------------------------------------------------------------
-- Pausing (twisted.protocols.basic._PausableMixin)

local function pauseProducing(self)
  self.paused = true
  self.transport:pauseProducing()
end

-- The transport first, as Twisted does: the buffered data may pause the
-- receiver again, or close the connection.
local function resumeProducing(self)
  self.paused = false
  local t = self.transport
  if t then t:resumeProducing() end
  self:dataReceived("")
end

local function stopProducing(self)
  self.paused = true
  self.transport:stopProducing()
end

-- A receiver's delivery loop marks it _busy: a dataReceived from inside a
-- callback (resumeProducing, setLineMode(extra)) only appends, and the loop
-- below goes on with it, so the C stack does not grow per frame. busy(self)
-- sets the mark and returns a to-be-closed guard that clears it when the
-- loop is left, also by an error, which then goes on with its own traceback
-- (a pcall and a re-raise would keep only the re-raise's). One guard per
-- receiver, made on its first delivery.
local BUSY = { __close = function(g) g[1]._busy = false end }
local function busy(self)
  self._busy = true
  local g = rawget(self, "_busyGuard")
  if g == nil then
    g = setmetatable({ self }, BUSY)
    self._busyGuard = g
  end
  return g
end

---------------------------------------------------------------------------
-- A receiver's settings, checked once per dataReceived, so that one of the
-- wrong type is told by its name rather than by the framing helper it
-- reaches (an error in dataReceived closes that connection, logged). A
-- callback that breaks a setting in the middle of a read still gets the
-- helper's error.

local function shown(v)
  return type(v) == "number" and tostring(v) or class.nameof(v)
end

local function check_max(cls, max)
  if tointeger(max) == nil then  -- 1e6 is one; 1.5 and "x" are not
    error(errors.TypeError(("%s.MAX_LENGTH must be an integer, got %s"):format(cls, shown(max))), 3)
  end
end

local function check_delimiter(cls, delim)
  if type(delim) ~= "string" then
    error(errors.TypeError(("%s.delimiter must be a string, got %s"):format(cls, shown(delim))), 3)
  elseif delim == "" then
    error(errors.ValueError(("%s.delimiter must not be empty"):format(cls)), 3)
  end
end

---------------------------------------------------------------------------
-- LineReceiver

local LineReceiver = Protocol:extend("LineReceiver")
M.LineReceiver = LineReceiver
LineReceiver.delimiter = "\r\n"
LineReceiver.MAX_LENGTH = 16384
LineReceiver.line_mode = true
LineReceiver.paused = false
LineReceiver._busy = false
LineReceiver._newFrameBuffer = M.newFrameBuffer
LineReceiver.pauseProducing = pauseProducing
LineReceiver.resumeProducing = resumeProducing
LineReceiver.stopProducing = stopProducing

--- Clear the buffer; returns the bytes that were buffered.
-- @return string
function LineReceiver:clearLineBuffer()
  if type(self) ~= "table" then checkself("clearLineBuffer", false, self, "LineReceiver") end
  return buffer_of(self):takeAll()
end

--- Frame data into lines (or pass it on raw in raw mode).
function LineReceiver:dataReceived(data)
  if type(self) ~= "table" then checkself("dataReceived", false, self, "LineReceiver") end
  if type(data) ~= "string" then errors.checktype("dataReceived", 1, data, "string") end
  local buf = buffer_of(self)
  buf:append(data)
  if self._busy then return end -- re-entered from lineReceived: the loop below sees it
  if self.line_mode then
    check_delimiter("LineReceiver", self.delimiter)
    check_max("LineReceiver", self.MAX_LENGTH)
  end
  local _ <close> = busy(self)
  return self:_deliver(buf)
end

function LineReceiver:_deliver(buf)
  while not self.paused and buf:len() > 0 do
    if self.line_mode then
      local line = buf:nextLine(self.delimiter, self.MAX_LENGTH)
      if line == nil then return end
      if line == false then -- reason is "toolong"
        local why = self:lineLengthExceeded(buf:takeAll())
        if why then return why end
        local t = self.transport
        if t and t.disconnecting then return end
        -- a lineLengthExceeded that calls setLineMode(rest) goes on here
      else
        local why = self:lineReceived(line)
        if why then return why end
        local t = self.transport
        if t and t.disconnecting then return end
      end
    else
      local why = self:rawDataReceived(buf:takeAll())
      if why then return why end
    end
  end
end

--- Switch to line mode; `extra` is then processed as received data.
function LineReceiver:setLineMode(extra)
  if type(self) ~= "table" then checkself("setLineMode", false, self, "LineReceiver") end
  if extra ~= nil and type(extra) ~= "string" then
    errors.checktype("setLineMode", 1, extra, "string")
  end
  self.line_mode = true
  if extra ~= nil and extra ~= "" then return self:dataReceived(extra) end
end

--- Switch to raw mode: data goes to rawDataReceived.
function LineReceiver:setRawMode()
  if type(self) ~= "table" then checkself("setRawMode", false, self, "LineReceiver") end
  self.line_mode = false
end

LineReceiver.rawDataReceived = must_override("rawDataReceived")
LineReceiver.lineReceived = must_override("lineReceived")

--- Write line followed by the delimiter.
function LineReceiver:sendLine(line)
  if type(self) ~= "table" then checkself("sendLine", false, self, "LineReceiver") end
  if type(line) ~= "string" then errors.checktype("sendLine", 1, line, "string") end
  return self.transport:write(line .. self.delimiter)
end

--- Called with the buffered data from a too-long line on; closes by default.
function LineReceiver:lineLengthExceeded(line) -- luacheck: ignore line
  return self.transport:loseConnection()
end

---------------------------------------------------------------------------
-- LineOnlyReceiver

local LineOnlyReceiver = Protocol:extend("LineOnlyReceiver")
M.LineOnlyReceiver = LineOnlyReceiver
LineOnlyReceiver.delimiter = "\r\n"
LineOnlyReceiver.MAX_LENGTH = 16384
LineOnlyReceiver._newFrameBuffer = M.newFrameBuffer

function LineOnlyReceiver:dataReceived(data)
  if type(self) ~= "table" then checkself("dataReceived", false, self, "LineOnlyReceiver") end
  if type(data) ~= "string" then errors.checktype("dataReceived", 1, data, "string") end
  local buf = buffer_of(self)
  buf:append(data)
  -- the delimiter is read once (Twisted splits the data once), MAX_LENGTH
  -- before each line (Twisted checks each line against self.MAX_LENGTH, so
  -- a lineReceived that changes it applies to the next line)
  local delim, t = self.delimiter, self.transport
  check_delimiter("LineOnlyReceiver", delim)
  check_max("LineOnlyReceiver", self.MAX_LENGTH)
  while true do
    if t and t.disconnecting then return end
    local line = buf:nextLine(delim, self.MAX_LENGTH)
    if line == nil then return end
    if line == false then -- as Twisted: a complete long line alone, else the partial one
      local data = buf:takeAll()
      local i = find(data, delim, 1, true)
      return self:lineLengthExceeded(i and sub(data, 1, i - 1) or data)
    end
    self:lineReceived(line)
  end
end

LineOnlyReceiver.lineReceived = must_override("lineReceived")

function LineOnlyReceiver:sendLine(line)
  if type(self) ~= "table" then checkself("sendLine", false, self, "LineOnlyReceiver") end
  if type(line) ~= "string" then errors.checktype("sendLine", 1, line, "string") end
  return self.transport:write(line .. self.delimiter)
end

function LineOnlyReceiver:lineLengthExceeded(line) -- luacheck: ignore line
  return self.transport:loseConnection()
end

---------------------------------------------------------------------------
-- NetstringReceiver

local NetstringReceiver = Protocol:extend("NetstringReceiver")
M.NetstringReceiver = NetstringReceiver
NetstringReceiver.MAX_LENGTH = 99999
NetstringReceiver.brokenPeer = false
NetstringReceiver._newFrameBuffer = M.newFrameBuffer

function NetstringReceiver:dataReceived(data)
  if type(self) ~= "table" then checkself("dataReceived", false, self, "NetstringReceiver") end
  if type(data) ~= "string" then errors.checktype("dataReceived", 1, data, "string") end
  local buf = buffer_of(self)
  buf:append(data)
  check_max("NetstringReceiver", self.MAX_LENGTH)
  while not self.brokenPeer do
    local s, reason = buf:nextNetstring(self.MAX_LENGTH)
    if s == nil then return end
    if s == false then
      self.brokenPeer = true
      self._parseError = M.NetstringParseError(reason == "toolong"
        and "netstring too long" or "malformed netstring")
      return self:_handleParseError()
    end
    self:stringReceived(s)
  end
end

function NetstringReceiver:_handleParseError()
  return self.transport:loseConnection()
end

NetstringReceiver.stringReceived = must_override("stringReceived")

--- Send s as a netstring.
function NetstringReceiver:sendString(s)
  if type(self) ~= "table" then checkself("sendString", false, self, "NetstringReceiver") end
  if type(s) ~= "string" then errors.checktype("sendString", 1, s, "string") end
  return self.transport:write(#s .. ":" .. s .. ",")
end

---------------------------------------------------------------------------
-- IntNStringReceiver

local IntNStringReceiver = Protocol:extend("IntNStringReceiver")
M.IntNStringReceiver = IntNStringReceiver
IntNStringReceiver.MAX_LENGTH = 99999
IntNStringReceiver.paused = false
IntNStringReceiver._busy = false
IntNStringReceiver._newFrameBuffer = M.newFrameBuffer
IntNStringReceiver.pauseProducing = pauseProducing
IntNStringReceiver.resumeProducing = resumeProducing
IntNStringReceiver.stopProducing = stopProducing

function IntNStringReceiver:dataReceived(data)
  if type(self) ~= "table" then checkself("dataReceived", false, self, "IntNStringReceiver") end
  if type(data) ~= "string" then errors.checktype("dataReceived", 1, data, "string") end
  local buf = buffer_of(self)
  buf:append(data)
  local k = self.prefixLength
  if k ~= 1 and k ~= 2 and k ~= 4 then
    error(errors.TypeError(("IntNStringReceiver.prefixLength must be 1, 2 or 4 (subclass "
      .. "Int8StringReceiver, Int16StringReceiver or Int32StringReceiver), got %s"):format(shown(k))), 2)
  end
  check_max("IntNStringReceiver", self.MAX_LENGTH)
  if self._busy then return end -- re-entered from stringReceived: the loop below sees it
  local _ <close> = busy(self)
  while not self.paused do
    local s, _, length = buf:nextPrefixed(k, self.MAX_LENGTH)
    if s == nil then return end
    if s == false then return self:lengthLimitExceeded(length) end
    self:stringReceived(s)
  end
end

IntNStringReceiver.stringReceived = must_override("stringReceived")

--- Called when a prefix announces more than MAX_LENGTH; closes by default.
function IntNStringReceiver:lengthLimitExceeded(length) -- luacheck: ignore length
  return self.transport:loseConnection()
end

--- Send s with its length prefix; raises StringTooLongError if s does
-- not fit the prefix (nothing is written then).
function IntNStringReceiver:sendString(s)
  if type(self) ~= "table" then checkself("sendString", false, self, "IntNStringReceiver") end
  if type(s) ~= "string" then errors.checktype("sendString", 1, s, "string") end
  local k = self.prefixLength
  if k < 8 and #s >= 1 << (8 * k) then
    error(M.StringTooLongError(("Try to send %d bytes whereas maximum is %d")
      :format(#s, 1 << (8 * k))), 2)
  end
  return self.transport:write(string_pack(self.structFormat, #s) .. s)
end

M.Int8StringReceiver = IntNStringReceiver:extend("Int8StringReceiver",
  { prefixLength = 1, structFormat = ">I1" })
M.Int16StringReceiver = IntNStringReceiver:extend("Int16StringReceiver",
  { prefixLength = 2, structFormat = ">I2" })
M.Int32StringReceiver = IntNStringReceiver:extend("Int32StringReceiver",
  { prefixLength = 4, structFormat = ">I4" })

return M
