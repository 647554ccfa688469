-- spec/helpers/receivers_diff.lua: random programs for braid.basic's framing
-- receivers, and braid's interpreter for them (spec/receivers_diff_spec.lua
-- runs the same programs against twisted.protocols.basic with
-- spec/peers/receivers_diff.py and compares the traces).
--
-- A program is text, one item per line:
--   prog ID KIND MAX DELIM EXCEED
--     KIND    line (LineReceiver), lineonly (LineOnlyReceiver), net
--             (NetstringReceiver), int8, int16, int32 (IntNStringReceiver)
--     MAX     the class's MAX_LENGTH, or "default" (the class keeps its own)
--     DELIM   the class's delimiter, escaped (line kinds); "-" otherwise
--     EXCEED  close: lineLengthExceeded / lengthLimitExceeded are the
--             defaults (loseConnection); keep (LineReceiver only, see
--             program() below): lineLengthExceeded only traces
--   chunk DATA  one dataReceived(DATA); DATA escaped, empty for ""
--   end
-- Escaped bytes: every byte outside "!".."~", and "\", is written \xHH.
--
-- Every receiver traces, in order:
--   line X / string X     each line or string delivered; then, by its first
--                         byte: q transport.loseConnection(); s sendLine(X) /
--                         sendString(X); p (line, intN) "pause" and
--                         pauseProducing(); c (line) "cleared Y" for
--                         clearLineBuffer() returning Y; r<N> (line)
--                         setRawMode(), then rawDataReceived collects N bytes
--                         and calls setLineMode(rest)
--   raw X                 the N bytes of a raw-mode episode, once complete
--                         (rawpart X at the end for one still open)
--   exceeded N            lineLengthExceeded got N bytes
--   limit N               lengthLimitExceeded(N)
--   parseerror            the netstring receiver's _handleParseError
--   lose                  each transport.loseConnection() call
--   resume                the driver calls resumeProducing (after each
--                         dataReceived, while the receiver is paused); what
--                         it delivers follows, then "resumed paused=B
--                         producer=S" (the receiver's and the transport's
--                         state) or "resume raised E"
--   raised E              dataReceived raised E (feeding stops, as a real
--                         transport drops the connection)
--   wrote X / disconnecting B  at the end: the transport's bytes and state
-- Feeding stops once the transport is disconnecting, as a real one does.
local basic = require "braid.basic"
local class = require "braid.class"
local errors = require "braid.error"
local StringTransport = require("braid.testing.transport").StringTransport
local td = require "helpers.twisted_diff"

local M = {}

local concat, min = table.concat, math.min

-- ---- escaping --------------------------------------------------------------

function M.esc(s)
  return (s:gsub("[\0-\32\\\127-\255]", function(c) return ("\\x%02x"):format(c:byte()) end))
end

local esc = M.esc

function M.unesc(s)
  return (s:gsub("\\x(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- ---- generating --------------------------------------------------------------

local pick = td.pick

local function text(rand, n, alphabet)
  local t = {}
  for i = 1, n do
    local j = rand(#alphabet)
    t[i] = alphabet:sub(j, j)
  end
  return concat(t)
end

local PLAIN = "xyz019:,."             -- no behaviour letter, no delimiter byte
local NOISE = PLAIN .. "ab|\r\n"      -- may make (or split) a delimiter
local RAW = "qsprcx0\r\nab|"          -- raw bytes look like commands and delimiters
-- Netstring programs never hold "\n": Twisted 22.4's _LENGTH_PREFIX is
-- re.compile(br"(0|[1-9]\d*)$") and Python's $ also matches before a final
-- "\n", so Twisted takes input ending in digits and "\n" (say "12\n") for
-- an unfinished length and waits, where braid (rightly) sees it malformed.
local NET_NOISE = PLAIN .. "ab|\r\0\255"
local BINARY = string.char(table.unpack((function()
  local bytes = {}
  for b = 0, 255 do bytes[b + 1] = b end
  return bytes
end)()))

local KINDS = { { 5, "line" }, { 3, "lineonly" }, { 4, "net" }, { 2, "int8" }, { 2, "int16" },
                { 2, "int32" } }
local DELIMS = { "\r\n", "\n", "ab", "|" }
local DEFAULT_MAX = { line = 16384, lineonly = 16384, net = 99999, int8 = 99999, int16 = 99999,
                      int32 = 99999 }
-- behaviours by a line's or string's first byte; "" is a plain one
local HEADS = { { 12, "" }, { 5, "s" }, { 3, "p" }, { 1, "q" } }

-- the body of a line or string: a behaviour byte, then n - 1 bytes
local function unit(rand, n, alphabet)
  if n == 0 then return "" end
  local head = pick(rand, HEADS)
  return head .. text(rand, n - #head, alphabet)
end

local LINE_TOKENS = { { 30, "plain" }, { 6, "empty" }, { 12, "unit" }, { 2, "clear" },
                      { 7, "raw" }, { 8, "edge" } }

-- A line receiver's input: lines (some acting on their first byte), raw
-- episodes, lines at and over max, then perhaps an unfinished line.
-- `edges` is false when no line may come near max (see program()).
local function line_input(rand, d, max, edges)
  local toks = {}
  local short = min(max + 2, 7)
  local big = max > 100
  for _ = 1, 1 + rand(10) do
    local what = pick(rand, LINE_TOKENS)
    if what == "edge" and (not edges or (big and rand(10) > 1)) then what = "plain" end
    if what == "plain" then
      toks[#toks + 1] = text(rand, rand(short + 1) - 1, rand(4) == 1 and NOISE or PLAIN) .. d
    elseif what == "empty" then
      toks[#toks + 1] = d
    elseif what == "unit" then
      toks[#toks + 1] = unit(rand, rand(short), PLAIN) .. d
    elseif what == "clear" then
      toks[#toks + 1] = "c" .. d
    elseif what == "raw" then
      local n = rand(13) - 1
      toks[#toks + 1] = "r" .. n .. d .. text(rand, math.max(0, n + rand(4) - 2), RAW)
    else -- a line near max: max - 1 .. max + #d + 1 bytes, most with a delimiter
      local n = math.max(0, max + rand(#d + 3) - 2)
      toks[#toks + 1] = text(rand, n, PLAIN) .. (rand(4) > 1 and d or "")
    end
  end
  if rand(2) == 1 then
    local n = edges and not big and rand(max + #d + 2) - 1 or rand(short) - 1
    toks[#toks + 1] = text(rand, n, rand(3) == 1 and NOISE or PLAIN)
  end
  return concat(toks)
end

local INT_TOKENS = { { 30, "frame" }, { 6, "edge" }, { 2, "huge" } }

-- An int-prefixed receiver's input: frames, frames at and over max,
-- prefixes of 2^(8k)-1 and 2^(8k-1), then perhaps an unfinished frame.
local function int_input(rand, k, max)
  local fmt, top = ">I" .. k, (1 << (8 * k)) - 1
  local toks = {}
  local function frame(n, body)
    return string.pack(fmt, n) .. body
  end
  for _ = 1, 1 + rand(8) do
    local what = pick(rand, INT_TOKENS)
    local alphabet = rand(4) == 1 and BINARY or NOISE
    if what == "frame" then
      local n = rand(min(max, 8) + 1) - 1
      toks[#toks + 1] = frame(n, unit(rand, n, alphabet))
    elseif what == "edge" and max <= 100 then -- max - 1 .. max + 2
      local n = min(top, math.max(0, max + rand(4) - 2))
      toks[#toks + 1] = frame(n, unit(rand, min(n, max), alphabet))
    else -- (an edge of a big max is a huge prefix) 2^(8k)-1 or 2^(8k-1): the
         -- payload follows in full only when it is accepted and short
      local n = rand(2) == 1 and top or 1 << (8 * k - 1)
      toks[#toks + 1] = frame(n, text(rand, n <= max and n <= 255 and n or rand(4), alphabet))
    end
  end
  if rand(2) == 1 then
    local n = rand(6)
    local whole = frame(n, unit(rand, n, NOISE))
    toks[#toks + 1] = whole:sub(1, rand(#whole) - 1)
  end
  return concat(toks)
end

local NET_TOKENS = { { 30, "valid" }, { 6, "edge" }, { 3, "zero" }, { 2, "nocolon" },
                     { 2, "nocomma" }, { 3, "nondigit" }, { 2, "huge" } }
local NONDIGIT = { "x3:abc,", " 3:abc,", "-1:a,", "+1:a,", ":", ":,", "," }

-- A netstring receiver's input: netstrings, ones at and over max, and
-- malformed ones (leading zeros, no ':' or ',', a non-digit start, a huge
-- length), then perhaps an unfinished one.
local function net_input(rand, max)
  local toks = {}
  local function ns(n, alphabet)
    local s = unit(rand, n, alphabet)
    return #s .. ":" .. s .. ","
  end
  for _ = 1, 1 + rand(8) do
    local what = pick(rand, NET_TOKENS)
    if what == "valid" then
      toks[#toks + 1] = ns(rand(min(max, 8) + 1) - 1, rand(4) == 1 and NET_NOISE or PLAIN)
    elseif what == "edge" then
      if max <= 100 then
        toks[#toks + 1] = ns(max + rand(3) - 2, PLAIN)
      else -- the length alone decides
        toks[#toks + 1] = (rand(2) == 1 and max or max + 1) .. ":" .. text(rand, rand(5), PLAIN)
      end
    elseif what == "zero" then
      toks[#toks + 1] = rand(3) == 1 and "00:," or "0" .. ns(1 + rand(3), PLAIN)
    elseif what == "nocolon" then
      local s = text(rand, 1 + rand(3), "xyz,.ab")
      toks[#toks + 1] = #s .. s .. ","
    elseif what == "nocomma" then
      local s = text(rand, rand(4) - 1, PLAIN)
      toks[#toks + 1] = #s .. ":" .. s .. text(rand, 1, "x.;0")
    elseif what == "nondigit" then
      toks[#toks + 1] = NONDIGIT[rand(#NONDIGIT)]
    else
      toks[#toks + 1] = ("12345678901234567890123"):sub(1, 5 + rand(18)) .. ":abc,"
    end
  end
  if rand(2) == 1 then
    local whole = rand(4) == 1 and "0" .. ns(1 + rand(3), PLAIN) or ns(rand(6), PLAIN)
    toks[#toks + 1] = whole:sub(1, rand(#whole) - 1)
  end
  return concat(toks)
end

-- The stream's dataReceived calls: all at once, byte by byte, or random
-- sizes (so delimiters, prefixes and lengths split anywhere), some empty.
local function chunks(rand, s)
  local how = rand(5)
  if how == 1 or s == "" then return { s } end
  local out = {}
  if how == 2 and #s <= 300 then
    for i = 1, #s do out[i] = s:sub(i, i) end
    return out
  end
  local most = ({ 3, 8, 30, 5000 })[rand(4)]
  local i = 1
  while i <= #s do
    local n = rand(most)
    out[#out + 1] = s:sub(i, i + n - 1)
    i = i + n
    if rand(15) == 1 then out[#out + 1] = "" end
  end
  return out
end

-- LineOnlyReceiver's input ends with its first line starting "q" (which
-- closes): Twisted's checks transport.disconnecting before each complete
-- line but not before its MAX_LENGTH check of the partial line after them,
-- so whether a long partial line after a closing one is reported depends
-- on whether it came in the same dataReceived (braid never reports it).
local function until_quit(input, delim)
  local at = 1
  while true do
    local i = input:find(delim, at, true)
    if not i then return input end
    if input:sub(at, at) == "q" then return input:sub(1, i + #delim - 1) end
    at = i + #delim
  end
end

-- one program as text; rand(n) gives an integer in 1..n
local function program(rand, id)
  local kind = pick(rand, KINDS)
  local max = rand(4) == 1 and "default" or rand(21) - 1
  local delim, exceed, input = "-", "close", nil
  -- Only LineReceiver's lineLengthExceeded may keep the connection (keep).
  -- LineOnlyReceiver's: when it does not close, Twisted's own results
  -- depend on the chunking (it drops the other lines of the same
  -- dataReceived, keeps the partial one after them, and reports a growing
  -- partial line again on each call). IntNStringReceiver's
  -- lengthLimitExceeded: when it does not close, Twisted's next
  -- dataReceived delivers again the strings that came before the long
  -- prefix in the same call (it keeps _unprocessed = alldata, from offset
  -- 0): the same.
  if kind == "line" then
    delim = DELIMS[rand(#DELIMS)]
    if rand(3) == 1 then exceed = "keep" end
    input = line_input(rand, delim, max == "default" and DEFAULT_MAX[kind] or max, true)
  elseif kind == "lineonly" then
    delim = DELIMS[rand(#DELIMS)]
    -- docs/basic.md, "Differences from Twisted": "`LineOnlyReceiver`
    -- reports a partial line as too long once it holds `MAX_LENGTH +
    -- #delimiter` bytes (Twisted: `MAX_LENGTH + 1`)": with a 2-byte
    -- delimiter no line comes near MAX_LENGTH, which keeps its default.
    if #delim > 1 then max = "default" end
    input = until_quit(line_input(rand, delim, max == "default" and DEFAULT_MAX[kind] or max,
      #delim == 1), delim)
  elseif kind == "net" then
    -- Twisted's NetstringReceiver computes math.log10(MAX_LENGTH): 0 raises
    -- ValueError on any input, so MAX_LENGTH is at least 1.
    if max == 0 then max = 1 end
    input = net_input(rand, max == "default" and DEFAULT_MAX[kind] or max)
  else
    local k = tonumber(kind:sub(4)) // 8
    input = int_input(rand, k, max == "default" and DEFAULT_MAX[kind] or max)
  end
  local lines = { ("prog %s %s %s %s %s"):format(id, kind, max, delim == "-" and "-" or esc(delim),
    exceed) }
  for _, c in ipairs(chunks(rand, input)) do
    lines[#lines + 1] = c == "" and "chunk" or "chunk " .. esc(c)
  end
  lines[#lines + 1] = "end"
  return concat(lines, "\n")
end

M.generate = td.generator(program)

-- ---- running -------------------------------------------------------------------

local BASES = {
  line = basic.LineReceiver, lineonly = basic.LineOnlyReceiver, net = basic.NetstringReceiver,
  int8 = basic.Int8StringReceiver, int16 = basic.Int16StringReceiver,
  int32 = basic.Int32StringReceiver,
}

-- An error as Twisted's side names it: its class.
local function error_name(e)
  if errors.isinstance(e) then return class.nameof(e) end
  return tostring(e)
end

local Transport = StringTransport:extend("TracingTransport")

function Transport:init(log)
  StringTransport.init(self)
  self._log = log
end

function Transport:loseConnection()
  self._log("lose")
  return StringTransport.loseConnection(self)
end

-- What a receiver does with each line or string (see the top).
local function act(self, what, data)
  local log = self._log
  log(what .. " " .. esc(data))
  local head, kind = data:sub(1, 1), self._kind
  if head == "q" then
    self.transport:loseConnection()
  elseif head == "s" then
    if what == "line" then self:sendLine(data) else self:sendString(data) end
  elseif head == "p" and kind ~= "lineonly" and kind ~= "net" then
    log("pause")
    self:pauseProducing()
  elseif head == "c" and kind == "line" then
    log("cleared " .. esc(self:clearLineBuffer()))
  elseif head == "r" and kind == "line" then
    local n = data:match("^r(%d+)")
    if n then
      self._need, self._got = tonumber(n), ""
      self:setRawMode()
    end
  end
end

local function rawDataReceived(self, data)
  local take = data:sub(1, self._need - #self._got)
  self._got = self._got .. take
  if #self._got == self._need then
    self._log("raw " .. esc(self._got))
    self._got = nil
    self:setLineMode(data:sub(#take + 1))
  end
end

-- The program's class: kind's braid class with its settings and behaviours.
local function make_class(kind, max, delim, exceed, newbuf)
  local base = BASES[kind]
  local fields = { _kind = kind, _newFrameBuffer = newbuf }
  if max ~= "default" then fields.MAX_LENGTH = tonumber(max) end
  if delim ~= "-" then fields.delimiter = M.unesc(delim) end
  function fields.lineReceived(self, line) act(self, "line", line) end
  function fields.stringReceived(self, s) act(self, "string", s) end
  fields.rawDataReceived = rawDataReceived
  function fields.lineLengthExceeded(self, line)
    self._log("exceeded " .. #line)
    if exceed == "close" then return base.lineLengthExceeded(self, line) end
  end
  function fields.lengthLimitExceeded(self, length)
    self._log("limit " .. length)
    if exceed == "close" then return base.lengthLimitExceeded(self, length) end
  end
  function fields._handleParseError(self)
    self._log("parseerror")
    return base._handleParseError(self)
  end
  return base:extend("Program", fields)
end

-- While the receiver is paused (and the transport open), resume it.
local function resume_all(p, t, log)
  local n = 0
  while p.paused and not t.disconnecting and n < 1000 do
    n = n + 1
    log("resume")
    local ok, e = pcall(p.resumeProducing, p)
    if ok then
      log(("resumed paused=%s producer=%s"):format(tostring(p.paused), t.producerState))
    else
      log("resume raised " .. error_name(e))
    end
  end
end

-- One program: its header words and chunks, with frame buffers from newbuf.
local function run_program(w, chunks_, newbuf)
  local out = {}
  local function log(s) out[#out + 1] = s end
  local P = make_class(w[3], w[4], w[5], w[6], newbuf)
  local t = Transport(log)
  local p = P()
  p._log = log
  p:makeConnection(t)
  for _, c in ipairs(chunks_) do
    if t.disconnecting then break end
    local ok, e = pcall(p.dataReceived, p, c)
    if not ok then
      log("raised " .. error_name(e))
      break
    end
    resume_all(p, t, log)
  end
  if p._got then log("rawpart " .. esc(p._got)) end
  log("wrote " .. esc(t:value()))
  log("disconnecting " .. tostring(t.disconnecting))
  return "== " .. w[2] .. "\n" .. concat(out, "\n")
end

-- Run every program of text with frame buffers from newbuf (default: the
-- C buffer when built); returns {id = trace, ...} and the ids in order.
function M.run(text_, newbuf)
  newbuf = newbuf or basic.newFrameBuffer
  return td.run(text_, function(header)
    local cs = {}
    return {
      op = function(w) cs[#cs + 1] = M.unesc(w[2] or "") end,  -- the chunk lines
      finish = function() return run_program(header, cs, newbuf) end,
    }
  end)
end

return M
