-- reactor.callWhenRunning: call a function once the reactor runs (seed: part 1).
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local function callfunc(x)
  log.msg("In callfunc as event handler")
  log.msg(tostring(x))
  log.msg("Will shut down")
  reactor.stop()
end

reactor.callWhenRunning(callfunc, "This was passed to callfunc")
reactor.run()
