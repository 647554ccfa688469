-- deferred_floor.lua: the C floor of scripts/bench/deferred (information
-- only; see deferred_floor.c), run by lua5.4: deferred_cases.lua's two cases
-- against the least Deferred Lua can call. inlineCallbacks here only runs
-- the function in a coroutine: every await of the bench is of a fired
-- Deferred, so nothing ever waits.
-- arg[1]: N; arg[2]: the directory of deferred_floor_c.so.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
package.cpath = (arg[2] or ".") .. "/?.so;" .. package.cpath
local floor = require "deferred_floor_c"

local function inlineCallbacks(f)
  return function(...)
    local co = coroutine.create(f)
    local ok, r = coroutine.resume(co, ...)
    if not ok then error(r, 0) end
    return floor.succeed(r)
  end
end

require("deferred_cases").main({
  Deferred = floor.Deferred,
  succeed = floor.succeed,
  await = floor.await,
  inlineCallbacks = inlineCallbacks,
}, "C-floor/lua5.4", { arg[1] })
