-- Logging to standard output with the reactor running (seed: part 1).
-- Ctrl-C logs "Received SIGINT, shutting down." and "Main loop terminated."
local reactor = require "braid.reactor"
local log = require "braid.log"

-- Log to standard output
log.startLogging(io.stdout)
print("\nTo stop this example, press ctrl-c\n")
reactor.run()
