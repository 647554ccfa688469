-- examples/chat.lua: a LineReceiver chat server (Twisted's chatserver.py).
-- Run: ./scripts/run examples/chat.lua [port]   (default 8123; 0 picks one)
-- Try: nc -C 127.0.0.1 8123   (type a name, then messages)
-- Loaded with the argument "--no-run" it returns { Chat, ChatFactory }.
local basic = require "braid.basic"
local protocol = require "braid.protocol"

local Chat = basic.LineReceiver:extend("Chat")

function Chat:connectionMade()
  self.name, self.state = nil, "GETNAME"
  self:sendLine("What's your name?")
end

function Chat:connectionLost()
  local users = self.factory.users
  if self.name and users[self.name] == self then users[self.name] = nil end
end

function Chat:lineReceived(line)
  if self.state == "GETNAME" then return self:handle_GETNAME(line) end
  return self:handle_CHAT(line)
end

function Chat:handle_GETNAME(name)
  local users = self.factory.users
  if name == "" or users[name] then
    self:sendLine("Name taken, please choose another.")
    return
  end
  self:sendLine(("Welcome, %s!"):format(name))
  self.name, self.state = name, "CHAT"
  users[name] = self
end

-- A member whose unread messages pass this many bytes is dropped, so that
-- one who never reads cannot make the server hold everything said.
local MAX_UNREAD = 1024 * 1024

function Chat:handle_CHAT(message)
  local text = ("<%s> %s"):format(self.name, message)
  for name, user in pairs(self.factory.users) do
    if name ~= self.name then
      if user.transport:getWriteBufferSize() > MAX_UNREAD then
        user.transport:abortConnection()
      else
        user:sendLine(text)
      end
    end
  end
end

local ChatFactory = protocol.ServerFactory:extend("ChatFactory")
ChatFactory.protocol = Chat
function ChatFactory:init() self.users = {} end

if ... == "--no-run" then return { Chat = Chat, ChatFactory = ChatFactory } end

local reactor = require "braid.reactor"
local portno = math.tointeger(tonumber(arg and arg[1] or 8123))
if not portno or portno < 0 or portno > 65535 then
  io.stderr:write("usage: braid examples/chat.lua [port]   (0 picks one)\n")
  os.exit(2)
end
local factory = ChatFactory()
factory.noisy = false
local port = reactor.listenTCP(portno, factory)
print(("chat server listening on port %d"):format(port:getHost().port))
io.stdout:flush()
reactor.run()
