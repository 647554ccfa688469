-- twist.py of the "Twisted reactor" slides: callWhenRunning with logging.
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local function func(x)
  log.msg("In func as event handler")
  log.msg(tostring(x))
  log.msg("Shutting down now!")
  reactor.stop()
end

reactor.callWhenRunning(func, "Hello!")
reactor.run()
