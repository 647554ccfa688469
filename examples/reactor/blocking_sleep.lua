-- Why a callback must not block (the slides' time.sleep(30) demonstration).
-- func blocks the reactor with a sleep, so the call due after 10 seconds
-- runs late, after "30 seconds have passed!".
--   braid examples/reactor/blocking_sleep.lua [sleep] [later]   (default 30 10)
-- The reactor runs on after that, as in the original: press Ctrl-C. (A
-- Ctrl-C during the sleep ends the sleep command, and braid takes it as its
-- own SIGINT, as a shell would: docs/reactor.md, "Signals".)
local reactor = require "braid.reactor"

local sleep = tonumber(arg[1]) or 30
local later = tonumber(arg[2]) or 10

local function func(x)
  print(x)
  os.execute("sleep " .. sleep) -- blocks the whole reactor
  print(("%g seconds have passed!"):format(sleep))
end

reactor.callWhenRunning(func, "Hello!")
reactor.callLater(later, print, ("%g seconds have passed!"):format(later))
reactor.run()
