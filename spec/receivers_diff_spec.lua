-- spec/receivers_diff_spec.lua: braid.basic's framing receivers against
-- Twisted's own (twisted.protocols.basic), on random programs.
-- spec/helpers/receivers_diff.lua makes the programs (LineReceiver,
-- LineOnlyReceiver, NetstringReceiver, Int8/16/32StringReceiver; MAX_LENGTH
-- 0..20 or the default; delimiters "\r\n", "\n", "ab", "|"; lines and
-- strings that close, echo, pause, clear the buffer or switch to raw mode
-- for N bytes; lines and strings at and over MAX_LENGTH, malformed
-- netstrings, huge prefixes, unfinished frames; fed in one piece, byte by
-- byte or in random chunks, some empty) and runs them here on a
-- StringTransport, with the C frame buffer and with the Lua one;
-- spec/peers/receivers_diff.py runs the same programs under Debian's
-- /usr/bin/python3 with Twisted on its StringTransport. Every trace (what
-- each callback got, each loseConnection, each resume and what it left
-- paused, what was written) must be the same.
local basic = require "braid.basic"
local rd = require "helpers.receivers_diff"
local td = require "helpers.twisted_diff"

local SEED = 20261126
local PROGRAMS = 5000

local IMPLS = { { "Lua buffer", basic.LuaFrameBuffer.new } }
if basic.cFrameBuffer then table.insert(IMPLS, 1, { "C buffer", basic.cFrameBuffer }) end

local text_cache

local function programs()
  text_cache = text_cache or rd.generate(SEED, PROGRAMS)
  return text_cache
end

local theirs_cache

-- Twisted's traces of the programs.
local function twisted_traces()
  theirs_cache = theirs_cache or td.twisted("receivers_diff.py", programs())
  return theirs_cache
end

local braid_cache = {}

local function braid_traces(impl)
  local c = braid_cache[impl[1]]
  if not c then
    local traces, order = rd.run(programs(), impl[2])
    c = { traces, order }
    braid_cache[impl[1]] = c
  end
  return c[1], c[2]
end

-- The programs under braid (with impl's frame buffer) and under Twisted:
-- every trace the same.
local function same_traces(impl)
  local mine, order = braid_traces(impl)
  assert.equal(PROGRAMS, #order)
  td.assert_same(programs(), order, mine, twisted_traces(), impl[1])
end

-- braid's traces by receiver kind, each kind's in one string.
local function traces_by_kind()
  local mine, order = braid_traces(IMPLS[1])
  local kinds, all = {}, {}
  for kind_of in programs():gmatch("prog %S+ (%S+) ") do kinds[#kinds + 1] = kind_of end
  for i, id in ipairs(order) do
    local k = kinds[i]
    all[k] = all[k] or {}
    all[k][#all[k] + 1] = mine[id]
  end
  for k, list in pairs(all) do all[k] = table.concat(list, "\n") end
  return all
end

describe("braid.basic's receivers against Twisted's", function()
  for _, impl in ipairs(IMPLS) do
    it("give the same trace for " .. PROGRAMS .. " random programs (" .. impl[1] .. ")", function()
      same_traces(impl)
    end)
  end

  it("run programs of every receiver kind, setting and input", function()
    local text = programs()
    for _, kind in ipairs({ "line", "lineonly", "net", "int8", "int16", "int32" }) do
      assert.truthy(text:find("prog %S+ " .. kind .. " default "), kind .. " default")
      assert.truthy(text:find("prog %S+ " .. kind .. " %d+ "), kind .. " MAX_LENGTH")
    end
    for _, word in ipairs({ " line 0 ", " line 20 ", " lineonly 0 ", " net 1 ", " int8 0 ",
                            " keep\n", " close\n", "\nchunk\n" }) do
      assert.truthy(text:find(word, 1, true), word)
    end
    for _, kind in ipairs({ "line", "lineonly" }) do
      for _, d in ipairs({ "\\x0d\\x0a", "\\x0a", "ab", "|" }) do
        assert.truthy(text:find(" " .. kind .. " %S+ " .. d:gsub("%p", "%%%0") .. " "), kind .. d)
      end
    end
  end)

  it("reach every outcome of every receiver kind", function()
    local all = traces_by_kind()
    local want = {
      line = { "\nline \n", "\nline s", "\nraw ", "\nraw \n", "\nrawpart ", "\ncleared [^\n]",
               "\nexceeded %d", "\nexceeded 1638%d", "\nlose\nwrote", "\npause\n",
               "\nresumed paused=true", "\nresumed paused=false", "\nwrote [^\n]",
               "exceeded %d+\nline ", "disconnecting false", "disconnecting true" },
      lineonly = { "\nline \n", "\nline q", "\nexceeded %d+\nlose", "\nwrote [^\n]",
                   "disconnecting false" },
      net = { "\nstring \n", "\nstring s", "\nstring q[^\n]*\nlose", "\nparseerror\nlose",
              "\nwrote %d+:s", "disconnecting false" },
      int8 = { "\nstring \n", "\nlimit %d", "\nlimit 255", "\npause\n", "\nwrote [^\n]" },
      int16 = { "\nstring \n", "\nlimit %d", "\nlimit 65535", "\nresumed paused=true" },
      int32 = { "\nstring \n", "\nlimit 2147483648", "\nlimit 4294967295",
                "\npause\nraised RuntimeError", "\nresumed paused=false" },
    }
    for kind, patterns in pairs(want) do
      for _, seen in ipairs(patterns) do
        assert.truthy(all[kind]:find(seen), kind .. ": " .. seen)
      end
    end
  end)

  it("escapes bytes in programs and traces and reads them back", function()
    assert.equal("a\\x20\\x5c\\x00\\xffb", rd.esc("a \\\0\255b"))
    assert.equal("a \\\0\255b", rd.unesc(rd.esc("a \\\0\255b")))
  end)
end)
