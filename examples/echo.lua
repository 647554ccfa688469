-- examples/echo.lua: the lecture's echo server (Twisted's echoserv.py).
-- Run: ./scripts/run examples/echo.lua [port]   (default 9000; 0 picks one)
-- Try: nc 127.0.0.1 9000
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local Echo = protocol.Protocol:extend("Echo")

function Echo:dataReceived(data)
  self.transport:write(data)
end

local portno = math.tointeger(tonumber(arg and arg[1] or 9000))
if not portno or portno < 0 or portno > 65535 then
  io.stderr:write("usage: braid examples/echo.lua [port]   (0 picks one)\n")
  os.exit(2)
end
local factory = protocol.Factory.forProtocol(Echo)
factory.noisy = false
local port = reactor.listenTCP(portno, factory)
print(("echo server listening on port %d"):format(port:getHost().port))
io.stdout:flush()
reactor.run()
