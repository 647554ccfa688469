-- Custom signal handlers (seed: part 1). SIGHUP is logged; SIGINT is logged
-- and shuts down (a SIGINT handler replaces braid's default stop).
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local function SIGINT_CustomEventHandler(num, name)
  log.msg("Recieved signal - " .. name)
  log.msg("In SIGINT_CustomEventHandler")
  if name == "SIGINT" then
    log.msg("shutting down ....")
    reactor.stop()
  end
  return num
end

reactor.onSignal("SIGINT", SIGINT_CustomEventHandler)
reactor.onSignal("SIGHUP", SIGINT_CustomEventHandler)
reactor.run()
