/*
** fuzz_receivers.c: lua/braid/basic.lua's receivers on untrusted bytes.
**
** Input: class byte (receiver, and delimiter for the line receivers),
** MAX_LENGTH byte, cut count byte, that many gap bytes, then the body.
** The body goes to three fresh protocols, each on a StringTransport:
**   whole  one dataReceived with the C frame buffer;
**   split  the body cut after each gap (a 0 gap sends ""), C buffer;
**   lua    the same cuts, LuaFrameBuffer.
** Each records what it delivered: lines, raw data, strings,
** lineLengthExceeded / lengthLimitExceeded / netstring parse errors,
** loseConnection calls and the bytes left buffered. The three records must
** agree (cutting may only shorten what lineLengthExceeded receives: it gets
** what is buffered), and dataReceived must never raise. As a real transport,
** the harness stops delivering after loseConnection, and resumes a paused
** protocol once dataReceived returns.
**
** The protocols' callbacks also steer them, by first byte, so a mutation
** finds the commands: a line "q..." loses the connection; "p..." (a line
** to a LineReceiver, or a string to an IntN receiver) pauses until
** resumed; on a LineReceiver "r<N>..." then an empty line switch to raw
** mode for N bytes (as Twisted's LineTester with "len N").
*/
#include "fuzz_lua.h"

static const char *setup =
  "local lua_dir = ...\n"
  "package.path = lua_dir .. '/?.lua;' .. lua_dir .. '/?/init.lua;' .. package.path\n"
  "local basic = require 'braid.basic'\n"
  "local StringTransport = require('braid.testing.transport').StringTransport\n"
  "assert(basic.cFrameBuffer, 'braid.core has no framebuf')\n"
  "\n"
  "local function add(self, ev) local e = self.events; e[#e + 1] = ev end\n"
  "\n"
  "-- as braid's TCP transport: pausing or resuming after loseConnection is no error\n"
  "local Transport = StringTransport:extend('FuzzTransport')\n"
  "function Transport:loseConnection() add(self, 'loseConnection'); self.disconnecting = true end\n"
  "function Transport:pauseProducing() if not self.disconnecting then self.producerState = 'paused' end end\n"
  "function Transport:resumeProducing() if not self.disconnecting then self.producerState = 'producing' end end\n"
  "\n"
  "local function line_class(name)\n"
  "  local Base = basic[name]\n"
  "  local C = Base:extend('Fuzz' .. name)\n"
  "  local can_pause = name == 'LineReceiver'\n"
  "  function C:lineReceived(line)\n"
  "    add(self, 'line ' .. line)\n"
  "    local c = line:sub(1, 1)\n"
  "    if c == 'q' then self.transport:loseConnection()\n"
  "    elseif c == 'p' and can_pause then self:pauseProducing()\n"
  "    elseif can_pause then\n"
  "      local n = line:match('^r(%d+)')\n"
  "      if n then self.rawLength = math.min(tonumber(n), 1000000)\n"
  "      elseif line == '' and (self.rawLength or 0) > 0 then self:setRawMode() end\n"
  "    end\n"
  "  end\n"
  "  function C:rawDataReceived(data)\n"
  "    local n = self.rawLength\n"
  "    local part, rest = data:sub(1, n), data:sub(n + 1)\n"
  "    self.rawLength = n - #part\n"
  "    add(self, { 'raw', part })\n"
  "    if self.rawLength == 0 then return self:setLineMode(rest) end\n"
  "  end\n"
  "  function C:lineLengthExceeded(line)\n"
  "    add(self, { 'lineLengthExceeded', line })\n"
  "    return Base.lineLengthExceeded(self, line)\n"
  "  end\n"
  "  return C\n"
  "end\n"
  "\n"
  "local Netstring = basic.NetstringReceiver:extend('FuzzNetstring')\n"
  "function Netstring:stringReceived(s) add(self, 'string ' .. s) end\n"
  "function Netstring:_handleParseError()\n"
  "  add(self, 'parse error: ' .. tostring(self._parseError))\n"
  "  return basic.NetstringReceiver._handleParseError(self)\n"
  "end\n"
  "\n"
  "local function intn_class(name)\n"
  "  local Base = basic[name]\n"
  "  local C = Base:extend('Fuzz' .. name)\n"
  "  function C:stringReceived(s)\n"
  "    add(self, 'string ' .. s)\n"
  "    if s:sub(1, 1) == 'p' then self:pauseProducing() end\n"
  "  end\n"
  "  function C:lengthLimitExceeded(length)\n"
  "    add(self, 'lengthLimitExceeded ' .. tostring(length))\n"
  "    return Base.lengthLimitExceeded(self, length)\n"
  "  end\n"
  "  return C\n"
  "end\n"
  "\n"
  "local CLASSES = {\n"
  "  line_class('LineReceiver'), line_class('LineOnlyReceiver'), Netstring,\n"
  "  intn_class('Int8StringReceiver'), intn_class('Int16StringReceiver'),\n"
  "  intn_class('Int32StringReceiver'),\n"
  "}\n"
  "\n"
  "local function run(cls, max, delim, chunks, newbuf)\n"
  "  local events = {}\n"
  "  local t = Transport()\n"
  "  t.events = events\n"
  "  local p = cls()\n"
  "  p.events, p.MAX_LENGTH = events, max\n"
  "  if delim then p.delimiter = delim end\n"
  "  if newbuf then p._newFrameBuffer = newbuf end\n"
  "  p:makeConnection(t)\n"
  "  for i = 1, #chunks do\n"
  "    if t.disconnecting then break end -- a transport reads no more\n"
  "    p:dataReceived(chunks[i])\n"
  "    while p.paused and not t.disconnecting do p:resumeProducing() end\n"
  "  end\n"
  "  local b = rawget(p, '_fbuf')\n"
  "  if not t.disconnecting then add(p, 'buffered ' .. (b and b:len() or 0)) end\n"
  "  if type(b) == 'userdata' then getmetatable(b).__close(b) end -- free it now\n"
  "  -- join consecutive raw deliveries: how raw data is cut is free\n"
  "  local out = {}\n"
  "  for _, e in ipairs(events) do\n"
  "    local last = out[#out]\n"
  "    if type(e) == 'table' and e[1] == 'raw' and type(last) == 'table' and last[1] == 'raw' then\n"
  "      out[#out] = { 'raw', last[2] .. e[2] }\n"
  "    else out[#out + 1] = e end\n"
  "  end\n"
  "  return out\n"
  "end\n"
  "\n"
  "local function q(s) return (string.format('%q', s):gsub('\\\\\\n', '\\\\n')) end\n"
  "local function show(ev)\n"
  "  local t = {}\n"
  "  for i, e in ipairs(ev) do t[i] = type(e) == 'table' and (e[1] .. ' ' .. q(e[2])) or q(e) end\n"
  "  return '{ ' .. table.concat(t, ', ') .. ' }'\n"
  "end\n"
  "\n"
  "-- nil when b delivered what a did; with prefix_ok, one lineLengthExceeded\n"
  "-- argument may be a prefix of the other (a complete long line is passed\n"
  "-- alone, a partial one whole, as in Twisted: cutting decides which)\n"
  "local function differ(a, b, prefix_ok)\n"
  "  for i = 1, math.max(#a, #b) do\n"
  "    local x, y = a[i], b[i]\n"
  "    if type(x) ~= type(y) then return i end\n"
  "    if type(x) == 'string' then if x ~= y then return i end\n"
  "    elseif x[1] ~= y[1] then return i\n"
  "    elseif x[1] == 'lineLengthExceeded' and prefix_ok then\n"
  "      local s, t = x[2], y[2]\n"
  "      if #s < #t then s, t = t, s end\n"
  "      if s:sub(1, #t) ~= t then return i end\n"
  "    elseif x[2] ~= y[2] then return i end\n"
  "  end\n"
  "end\n"
  "\n"
  "return function(ci, max, delim, chunks)\n"
  "  local cls = CLASSES[ci]\n"
  "  local function case()\n"
  "    local cs = {}\n"
  "    for k, c in ipairs(chunks) do cs[k] = q(c) end\n"
  "    return ('class %s, MAX_LENGTH %d, delimiter %s\\nchunks { %s }'):format(cls.__name, max,\n"
  "      delim and q(delim) or '-', table.concat(cs, ', '))\n"
  "  end\n"
  "  local runs = {}\n"
  "  for r, how in ipairs({ 'whole', 'split', 'lua' }) do\n"
  "    local ok, ev = xpcall(run, debug.traceback, cls, max, delim,\n"
  "      how == 'whole' and { table.concat(chunks) } or chunks,\n"
  "      how == 'lua' and basic.LuaFrameBuffer.new or nil)\n"
  "    if not ok then return ('%s run raised: %s\\n%s'):format(how, tostring(ev), case()) end\n"
  "    runs[r] = ev\n"
  "  end\n"
  "  local whole, split, lua = runs[1], runs[2], runs[3]\n"
  "  local i, what = differ(whole, split, true), 'cutting the input changed what was delivered'\n"
  "  if not i then i, what = differ(split, lua, false), 'the C and Lua frame buffers delivered differently' end\n"
  "  if not i then return nil end\n"
  "  return ('%s (event %d)\\n%s\\nwhole: %s\\nsplit: %s\\nlua:   %s'):format(what, i, case(),\n"
  "    show(whole), show(split), show(lua))\n"
  "end\n";

enum { CHECK = 1, NSETUP = 1 };

#define NCLASSES 6
#define LINE_CLASSES 2 /* the first two take a delimiter */

static const struct { const char *s; size_t n; } DELIMS[] = {
  { "\r\n", 2 }, { "\n", 1 }, { "\0", 1 }, { "aba", 3 }, { "\r\n\r\n", 4 }, { "xx", 2 },
};
#define NDELIMS (sizeof DELIMS / sizeof DELIMS[0])

static const lua_Integer MAXES[] = {
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 31, 64,
  99, 100, 255, 256, 999, 1000, 9999, 16384, 65535, 65536, 99999, 100000,
  2147483647, 4294967295,
};
#define NMAXES (sizeof MAXES / sizeof MAXES[0])

#define MAX_CUTS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  lua_State *L = fuzz_state(setup, NSETUP);
  fuzz_begin(L);
  int ci = data[0] % NCLASSES;
  size_t di = (size_t)(data[0] / NCLASSES) % NDELIMS;
  lua_Integer max = MAXES[data[1] % NMAXES];
  size_t ncuts = data[2] % (MAX_CUTS + 1), pos = 3;
  const uint8_t *gaps = data + pos;
  if (ncuts > size - pos) ncuts = size - pos;
  pos += ncuts;
  const char *body = (const char *)data + pos;
  size_t len = size - pos;

  lua_pushvalue(L, CHECK);
  lua_pushinteger(L, ci + 1);
  lua_pushinteger(L, max);
  if (ci < LINE_CLASSES) lua_pushlstring(L, DELIMS[di].s, DELIMS[di].n);
  else lua_pushnil(L);
  lua_createtable(L, (int)ncuts + 1, 0);
  size_t at = 0;
  int k = 0;
  for (size_t i = 0; i < ncuts && at < len; i++) {
    size_t n = gaps[i];
    if (n > len - at) n = len - at;
    lua_pushlstring(L, body + at, n);
    lua_rawseti(L, -2, ++k);
    at += n;
  }
  lua_pushlstring(L, body + at, len - at);
  lua_rawseti(L, -2, ++k);
  if (lua_pcall(L, 4, 1, 0) != LUA_OK)
    fuzz_fail("the harness raised: %s", luaL_tolstring(L, -1, NULL));
  if (lua_isstring(L, -1)) fuzz_fail("%s", lua_tostring(L, -1));
  fuzz_end(L);
  return 0;
}
