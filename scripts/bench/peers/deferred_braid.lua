-- deferred_braid.lua: the braid peer of scripts/bench/deferred (run with
-- braid): braid.defer's Deferred, succeed, inlineCallbacks and await, driven
-- by deferred_cases.lua exactly as the plain-Lua Deferred is.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local defer = require "braid.defer"
local reactor = require "braid.reactor"

require("deferred_cases").main({
  Deferred = defer.Deferred,
  succeed = defer.succeed,
  await = defer.await,
  inlineCallbacks = defer.inlineCallbacks,
  settle = function(is_done)  -- only if awaits ever need the loop to finish
    local deadline = reactor.seconds() + 300
    while not is_done() and reactor.seconds() < deadline do reactor.iterate(0.01) end
  end,
}, "braid", arg)
