-- spec/helpers/loop.lua: drive the real reactor from integration specs.
local core = require "braid.core"
local reactor = require "braid.reactor"
local failure = require "braid.failure"

local M = {}

--- Iterate the reactor until cond() is true; error after `limit` seconds
-- (default 5), blamed on the caller.
function M.spin(cond, limit)
  local deadline = core.monotonic() + (limit or 5)
  while not cond() do
    if core.monotonic() > deadline then error("timed out waiting", 2) end
    reactor.iterate(0.01)
  end
end

--- The result of Deferred d (a value or a Failure), once it has one.
function M.result(d, limit)
  local r, done
  d:addBoth(function(v) r, done = v, true end)
  M.spin(function() return done end, limit)
  return r
end

--- The result of d; its failure's value is raised.
function M.wait(d, limit)
  local r = M.result(d, limit)
  if failure.isFailure(r) then error(r.value, 0) end
  return r
end

return M
