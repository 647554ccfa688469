-- A callback chain (seed: the "Twisted" lecture slides, the
-- pprint(sorted(x.get_names())) exercise), written both ways the slides
-- give:
--     d = x.get_names()
--     d.addCallback(sorted)
--     d.addCallback(pprint)
-- and
--     x.get_names().addCallback(sorted).addCallback(pprint)
-- Each callback gets the previous one's result: the names, then the sorted
-- names, which pprint prints as Python's pprint would.
--   braid examples/defer/pprint_names.lua [seconds]   (default 1)
local reactor = require "braid.reactor"
local defer = require "braid.defer"

local delay = tonumber(arg[1]) or 1

-- Python's sorted(): a new list, in ascending order; the input is untouched.
local function sorted(list)
  local copy = table.move(list, 1, #list, 1, {})
  table.sort(copy)
  return copy
end

local ESCAPES = { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["'"] = "\\'", ['"'] = '\\"' }

-- Python's repr() of a string, number, boolean, nil or list (a sequence).
local function repr(v)
  local t = type(v)
  if t == "string" then
    local q = (v:find("'", 1, true) and not v:find('"', 1, true)) and '"' or "'"
    return q .. v:gsub("[\\\n\r\t" .. q .. "]", ESCAPES) .. q
  elseif t == "table" then
    local parts = {}
    for i = 1, #v do parts[i] = repr(v[i]) end
    return "[" .. table.concat(parts, ", ") .. "]"
  elseif t == "boolean" then
    return v and "True" or "False"
  elseif v == nil then
    return "None"
  end
  return tostring(v)
end

-- Python's pprint(): repr() when it fits in 80 columns, else a list with
-- one item per line (pprint.PrettyPrinter._format and _format_items).
local WIDTH = 80
local function format(v, out, indent, allowance)
  local rep = repr(v)
  if #rep <= WIDTH - indent - allowance or type(v) ~= "table" or #v == 0 then
    out[#out + 1] = rep
    return
  end
  out[#out + 1] = "["
  local n = #v
  for i = 1, n do
    if i > 1 then out[#out + 1] = ",\n" .. (" "):rep(indent + 1) end
    format(v[i], out, indent + 1, i == n and allowance + 1 or 1)
  end
  out[#out + 1] = "]"
end

local function pprint(v)
  local out = {}
  format(v, out, 0, 0)
  print(table.concat(out))
end

local x = {}

-- The crew list comes back `delay` seconds later, as from a slow lookup.
function x.get_names()
  local d = defer.Deferred()
  reactor.callLater(delay, d.callback, d, {
    "Poole, Frank", "HAL 9000", "Bowman, David", "Kimball, Jack", "Floyd, Heywood",
    "Kaminsky, Victor", "Hunter, Charles",
  })
  return d
end

-- Step by step.
local d = x.get_names()
d:addCallback(sorted)
d:addCallback(pprint)

-- As one chain: every add* returns the Deferred.
local d2 = x.get_names():addCallback(sorted):addCallback(pprint)

defer.gatherResults({ d, d2 }):addBoth(function() reactor.stop() end)
reactor.run()
