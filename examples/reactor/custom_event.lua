-- A custom system event fired by the reactor (seed: part 1).
--   braid examples/reactor/custom_event.lua [seconds]   (default 4)
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local delay = tonumber(arg[1]) or 4

local function callfunc(x)
  log.msg(tostring(x))
  log.msg(os.date("%y/%m/%d %H:%M:%S"))
  log.msg(("Fire Event1 after %g seconds"):format(delay))
  reactor.callLater(delay, reactor.fireSystemEvent, "Event1")
end

local function Event1_CustomEventHandler()
  log.msg(os.date("%y/%m/%d %H:%M:%S"))
  log.msg("In Event1_CustomEventHandler .., shutting down")
  reactor.stop()
end

log.msg(os.date("%y/%m/%d %H:%M:%S"))
reactor.callLater(delay, callfunc, ("callfunc called after %g sec"):format(delay))
reactor.addSystemEventTrigger("during", "Event1", Event1_CustomEventHandler)
reactor.run()
