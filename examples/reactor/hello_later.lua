-- The slides' callLater program: "Hello after 5 seconds!".
--   braid examples/reactor/hello_later.lua [seconds]   (default 5)
local reactor = require "braid.reactor"
local log = require "braid.log"
log.startLogging(io.stdout)

local delay = tonumber(arg[1]) or 5

local function func(x)
  log.msg(tostring(x))
  log.msg(os.date("%y/%m/%d %H:%M:%S"))
  log.msg("Shutting down now!")
  reactor.stop()
end

log.msg(os.date("%y/%m/%d %H:%M:%S"))
reactor.callLater(delay, func, ("Hello after %g seconds!"):format(delay))
reactor.run()
