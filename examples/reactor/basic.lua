-- The simplest reactor program (seed: "Learning Twisted (part 1)").
-- Runs until Ctrl-C (SIGINT) or SIGTERM.
--   braid examples/reactor/basic.lua
local reactor = require "braid.reactor"

print("To stop this example, press ctrl-c")
reactor.run()
