-- examples/hot/server.lua: a chat server whose protocol lives in chat.lua.
-- Run: ./build/braid --watch examples/hot/server.lua [port]   (0 picks one)
-- Then: nc 127.0.0.1 PORT, edit examples/hot/chat.lua, save, keep typing.
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local chat = require "chat"

local factory = protocol.Factory.forProtocol(chat.Chat)
factory.noisy = false
local port = reactor.listenTCP(tonumber(arg and arg[1]) or 9000, factory)
print(("chat server listening on port %d"):format(port:getHost().port))
io.stdout:flush()
require("braid.reload").on(function(name, version)
  print(("reloaded %s version %d"):format(name, version))
  io.stdout:flush()
end)
reactor.run()
