--- braid.testing: helpers for busted specs, as twisted.trial and
-- twisted.internet.testing.
-- test-case-name: spec/testing_spec.lua
--
-- The pieces live in braid/testing/*.lua and are re-exported here:
--   braid.testing.results  successResultOf, failureResultOf, assertNoResult
--   braid.testing.async    wait, async, flushLoggedErrors, addCleanupHook,
--                          _cleanupHooks
-- plus Clock (the same class as braid.task.Clock). Further pieces
-- (StringTransport, MemoryReactor, loopbackAsync, ...) go in their own
-- files under braid/testing/ and are added to PARTS below.
local M = {}

M.Clock = require("braid.task").Clock

local PARTS = {
  "braid.testing.results",
  "braid.testing.async",
  "braid.testing.transport",
}

for _, name in ipairs(PARTS) do
  for k, v in pairs(require(name)) do
    if M[k] ~= nil and M[k] ~= v then
      error(("braid.testing: %s is exported by two parts"):format(k))
    end
    M[k] = v
  end
end

return M
