-- deferred_cases.lua: the two cases of scripts/bench/deferred, shared by the
-- Lua peers (deferred_braid.lua, deferred_plain.lua) so both run the very
-- same code against their Deferred implementation.
--   chain: N times, make a Deferred, add three callbacks, fire it.
--   await: N awaits of already-fired Deferreds inside one inlineCallbacks
--          function: await(succeed(i)).
-- Prints key=value lines; exits 1 when the work did not happen.
local B = require "benchlib"

local M = {}

--- Run both cases with `impl` = {Deferred, succeed, await, inlineCallbacks,
-- settle?}; settle(isDone) runs an event loop until isDone() if the
-- implementation needs one to finish the await case.
function M.main(impl, label, arg)
  local n = math.tointeger(tonumber(arg and arg[1] or "1000000"))
  local now = B.now
  local Deferred, succeed, await = impl.Deferred, impl.succeed, impl.await

  -- chain
  local acc = 0
  local function cb1(x) return x + 1 end
  local function cb2(x) return x + 1 end
  local function cb3(x) acc = acc + x; return x end
  B.gc()
  local t0 = now()
  for i = 1, n do
    local d = Deferred()
    d:addCallback(cb1)
    d:addCallback(cb2)
    d:addCallback(cb3)
    d:callback(i)
  end
  local t1 = now()
  local want = n * (n + 1) // 2 + 2 * n
  if acc ~= want then B.fail(("chain: callbacks summed %d, expected %d"):format(acc, want)) end

  -- await
  local body = impl.inlineCallbacks(function(m)
    local s = 0
    for i = 1, m do s = s + await(succeed(i)) end
    return s
  end)
  local done, result = false, nil
  local function finished(r) done, result = true, r end
  local function is_done() return done end
  B.gc()
  local t2 = now()
  body(n):addBoth(finished)
  if not done and impl.settle then impl.settle(is_done) end
  local t3 = now()
  want = n * (n + 1) // 2
  if result ~= want then
    B.fail(("await: the function returned %s, expected %d"):format(tostring(result), want))
  end

  B.emit("n", n)
  B.emit("impl", label)
  B.emit("chain_s", t1 - t0)
  B.emit("await_s", t3 - t2)
  B.emit("clock", (B.clock:gsub("%s", "_")))
end

return M
