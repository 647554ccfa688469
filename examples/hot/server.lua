-- examples/hot/server.lua: a chat server whose protocol lives in chat.lua.
-- Run: ./build/braid --watch examples/hot/server.lua [port]   (0 picks one)
-- Then: nc 127.0.0.1 PORT, edit examples/hot/chat.lua, save, keep typing.
-- The script itself is never re-run by a reload: only modules are.
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local reload = require "braid.reload"
local chat = require "chat"

local portno = math.tointeger(tonumber(arg and arg[1] or 9000))
if not portno or portno < 0 or portno > 65535 then
  io.stderr:write("usage: braid examples/hot/server.lua [port]   (0 picks one; run it with --watch)\n")
  os.exit(2)
end
local factory = protocol.Factory.forProtocol(chat.Chat)
factory.noisy = false
local port = reactor.listenTCP(portno, factory)
print(("chat server listening on port %d"):format(port:getHost().port))
reload.on(function(name, version)
  local h = reload.history(name)[version]
  print(("reloaded %s version %d (source %s)"):format(name, version, h and h.hash or "?"))
end)
reactor.run()
