-- spec/helpers/log_diff.lua: random programs for braid.log's Logger format
-- strings (log.formatEvent), and braid's interpreter for them
-- (spec/log_diff_spec.lua runs the same programs against Twisted's
-- twisted.logger.formatEvent with spec/peers/log_diff.py and compares
-- traces).
--
-- A program is text, one item per line:
--   prog ID log
--   field PATH KIND [VALUE]   one field of the event: PATH is a name or
--                             names joined by "." (a path into tables made
--                             by earlier "table" lines); KIND is int N,
--                             str =HEX (the bytes in hex), bool true|false,
--                             nil, or table (an empty table)
--   fmt N =HEX | fmt N nil    format the event with that format (nil: none)
--   end
-- Each fmt line traces "fN = [TEXT]" with the formatted text, or "fN unable"
-- when the result is Twisted's "Unable to format event ..." (the rest of
-- that text is not compared: braid documents its own form, `Unable to
-- format event "<format>": <error>` (docs/log.md, Logger), where Twisted
-- writes the repr of the whole event dict).
--
-- Format strings are literal text (no braces), "{{" and "}}", and "{PATH}"
-- for a field with an integer, string or boolean value (no malformed ones:
-- braid leaves them as written, docs/log.md, "Differences from Twisted").
-- Braid prints values with tostring (docs/log.md,
-- Logger: "`{name}` is replaced by the field's `tostring`"), so Twisted's
-- side spells booleans true/false.
-- Left out, where braid differs from Twisted on purpose or documents no
-- support:
-- * fields that are missing: absent names, nil values (a Lua table cannot
--   hold one), paths through a non-table or to an absent key (docs/log.md,
--   "Differences from Twisted": "Missing format fields stay as `{name}`").
--   nil fields are still made; no format names them.
-- * numeric path parts (docs/log.md, Logger: "`{list.2}` indexes a list"):
--   Twisted's "{a.b}" is attribute access, and tables are objects with
--   attributes on its side; "2" is no attribute name.
-- * a "{PATH}" naming a table: its tostring is an address.
-- * "[index]" and "name()" fields (braid indexes tables, where Twisted
--   gets items and attributes of Python objects), and digit-only names
--   (positional in Python).
-- Fields get conversions (!r, !s, !a and a bad one) and format specs
-- (valid and bad) at random: a bad one gives "unable" on both sides.
local log = require "braid.log"
local td = require "helpers.twisted_diff"

local M = {}

local pick = td.pick

local NAMES = { "x", "y", "n", "host", "port", "name", "_u", "A9", "t_1", "1a" }
local KINDS = { { 4, "int" }, { 3, "str" }, { 2, "bool" }, { 1, "nil" }, { 2, "table" } }
local INTS = { 0, 1, -1, 7, 42, 5432, -300, 65536, 1 << 53, math.maxinteger, math.mininteger }
local STR_CHUNKS = { "", "a", "db1", " ", "{", "}", "{x}", "%s", "\\", "\"", "'", ":", "nil",
                     "True" }
local TEXT = { "a", "hi ", " ", ":", "!", "%s", ".", "-", "x=", "\\", "\"", "'", "#", "()", "[0]",
               "ms)", "(", "%d" }

local CONVS = { "!r", "!s", "!a", "!x" }
-- format specs: valid ones for strings, integers or both, and bad ones
local SPECS = { ">5", "<4", "^7", "*^9", "05", "+", " ", "-", "#x", "x", "X", "o", "#o", "b",
                "#b", ",", "_", "010,", "d", "e", ".2e", "E", "f", ".3f", "g", ".3", "%",
                ".1%", "s", ".2", "=+8", "q", "10.3s", "=5", "#", "0", ",d", "_x", "012_b",
                "+08,", "<<<", "", ".0", "x^12", "-^+#011_x" }

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:sub(2):gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- fields: lines and the paths of the scalars a format may name
local function gen_fields(rand, lines, paths, tables, prefix, depth)
  local used = {}
  for _ = 1, rand(depth == 1 and 5 or 3) do
    local name = NAMES[rand(#NAMES)]
    if not used[name] then
      used[name] = true
      local path = prefix .. name
      local kind = pick(rand, KINDS)
      if kind == "table" and depth >= 3 then kind = "int" end
      if kind == "int" then
        lines[#lines + 1] = ("field %s int %d"):format(path, INTS[rand(#INTS)])
      elseif kind == "str" then
        local s = {}
        for i = 1, rand(3) - 1 do s[i] = STR_CHUNKS[rand(#STR_CHUNKS)] end
        lines[#lines + 1] = ("field %s str =%s"):format(path, hex(table.concat(s)))
      elseif kind == "bool" then
        lines[#lines + 1] = ("field %s bool %s"):format(path, rand(2) == 1 and "true" or "false")
      elseif kind == "nil" then
        lines[#lines + 1] = ("field %s nil"):format(path)
      end
      if kind == "table" then
        lines[#lines + 1] = ("field %s table"):format(path)
        tables[#tables + 1] = path
        gen_fields(rand, lines, paths, tables, path .. ".", depth + 1)
      elseif kind ~= "nil" then
        paths[#paths + 1] = path
      end
    end
  end
end

-- one format string: well-formed pieces (closed under concatenation: no
-- field is made across two of them). Malformed ones are left out: braid
-- leaves text that is no placeholder as written, where Twisted gives
-- "Unable to format event" (docs/log.md, "Differences from Twisted").
local function gen_format(rand, paths)
  local parts = {}
  for i = 1, rand(7) - 1 do
    local r = rand(10)
    if r <= 4 then
      parts[i] = TEXT[rand(#TEXT)]
    elseif r == 5 then
      parts[i] = "{{"
    elseif r == 6 then
      parts[i] = "}}"
    elseif #paths > 0 then
      -- a field, sometimes with a conversion and a format spec
      local conv = rand(4) == 1 and CONVS[rand(#CONVS)] or ""
      local spec = rand(2) == 1 and ":" .. SPECS[rand(#SPECS)] or ""
      parts[i] = "{" .. paths[rand(#paths)] .. conv .. spec .. "}"
    else
      parts[i] = TEXT[rand(#TEXT)]
    end
  end
  return table.concat(parts)
end

local function make(rand, id)
  local lines, paths, tables = { "prog " .. id .. " log" }, {}, {}
  gen_fields(rand, lines, paths, tables, "", 1)
  for f = 1, 2 + rand(4) do
    if rand(25) == 1 then
      lines[#lines + 1] = ("fmt %d nil"):format(f)
    else
      lines[#lines + 1] = ("fmt %d =%s"):format(f, hex(gen_format(rand, paths)))
    end
  end
  lines[#lines + 1] = "end"
  return table.concat(lines, "\n")
end

M.generate = td.generator(make)
M.unhex = unhex

-- ---- running on braid ----------------------------------------------------

local function start(w)
  local fields, out = {}, { "== " .. w[2] }
  local P = {}
  function P.op(words)
    if words[1] == "field" then
      local parent, key = fields, nil
      for part in words[2]:gmatch("[^.]+") do
        if key then parent = parent[key] end
        key = part
      end
      local kind, v = words[3], nil
      if kind == "int" then v = math.tointeger(tonumber(words[4]))
      elseif kind == "str" then v = unhex(words[4])
      elseif kind == "bool" then v = words[4] == "true"
      elseif kind == "table" then v = {} end
      parent[key] = v
    elseif words[1] == "fmt" then
      local fmt = words[3] ~= "nil" and unhex(words[3]) or nil
      local text = log.formatEvent(fmt, fields)
      if text:find("^Unable to format event ") then
        out[#out + 1] = ("f%s unable"):format(words[2])
      else
        out[#out + 1] = ("f%s = [%s]"):format(words[2], text)
      end
    else
      error("unknown line " .. table.concat(words, " "))
    end
  end
  function P.finish() return table.concat(out, "\n") end
  return P
end

function M.run(text)
  return td.run(text, start)
end

return M
