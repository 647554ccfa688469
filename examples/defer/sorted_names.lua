-- A callback that transforms the result (seed: the "Twisted" lecture
-- slides, the sorted(x.get_names()) exercise):
--     d = x.get_names()
--     d.addCallback(sorted)
-- get_names() would block, so it returns a Deferred; sorted runs on the
-- names once they arrive. (The slide stops there; the last callback here
-- prints the sorted names so that the program shows its result.)
--   braid examples/defer/sorted_names.lua [seconds]   (default 1)
local reactor = require "braid.reactor"
local defer = require "braid.defer"

local delay = tonumber(arg[1]) or 1

-- Python's sorted(): a new list, in ascending order; the input is untouched.
local function sorted(list)
  local copy = table.move(list, 1, #list, 1, {})
  table.sort(copy)
  return copy
end

local x = {}

-- The names come back `delay` seconds later, as from a slow lookup.
function x.get_names()
  local d = defer.Deferred()
  reactor.callLater(delay, d.callback, d, { "Poole", "HAL", "Bowman", "Kimball", "Floyd" })
  return d
end

local d = x.get_names()
d:addCallback(sorted)
d:addCallback(function(names) print(table.concat(names, "\n")) end)
d:addBoth(function() reactor.stop() end)
reactor.run()
