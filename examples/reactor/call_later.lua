-- reactor.callLater: call a function after a delay (seed: part 1).
--   braid examples/reactor/call_later.lua [seconds]   (default 4)
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local delay = tonumber(arg[1]) or 4

local function callfunc(x)
  log.msg(tostring(x))
  log.msg(os.date("%y/%m/%d %H:%M:%S"))
  log.msg("Will stop")
  reactor.stop() -- try reactor.crash() too
end

log.msg(os.date("%y/%m/%d %H:%M:%S"))
local delayedCall = reactor.callLater(delay, callfunc, ("callfunc called after %g sec"):format(delay))
log.msg("scheduled for " .. os.date("%H:%M:%S", math.floor(delayedCall:getTime())))
reactor.run()
