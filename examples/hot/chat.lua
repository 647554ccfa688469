-- examples/hot/chat.lua: the chat protocol, hot-editable under --watch.
-- Edit the message format or add a command while clients stay connected:
-- braid re-runs this file and merges it into the loaded module, so live
-- connections keep their state (name, lines said) and run the new code on
-- their next line. Walkthrough: docs/hot-editing.md.
local basic = require "braid.basic"

local M = {}

local clients = {}      -- live connections: kept across reloads (a table)
local joined = 0        -- a counter: kept, since it changed after loading
M.greeting = "welcome"  -- data: takes an edited value unless changed live

-- A client whose unread lines pass this many bytes is dropped, so that one
-- who never reads cannot make the server hold everything said.
local MAX_UNREAD = 1024 * 1024

M.Chat = basic.LineReceiver:extend("Chat")
M.Chat.delimiter = "\n"

function M.Chat:connectionMade()
  joined = joined + 1
  clients[self] = true
  self.name = "guest" .. joined
  self.said = 0
  self:sendLine(M.greeting)
end

function M.Chat:connectionLost()
  clients[self] = nil
end

-- How a line is shown to everybody.
function M.Chat:format(line)
  return "> " .. line
end

function M.Chat:lineReceived(line)
  local cmd, rest = line:match("^/(%w+)%s*(.*)$")
  if cmd then
    local h = self["cmd_" .. cmd]
    if h then return h(self, rest) end
    return self:sendLine("unknown command " .. cmd)
  end
  self.said = self.said + 1
  local out = self:format(line)
  for c in pairs(clients) do
    if c.transport:getWriteBufferSize() > MAX_UNREAD then
      c.transport:abortConnection()
    else
      c:sendLine(out)
    end
  end
end

-- /count: how many lines this connection said
function M.Chat:cmd_count()
  self:sendLine("said " .. self.said)
end

-- /nick NAME: change this connection's name
function M.Chat:cmd_nick(name)
  if name == "" then return self:sendLine("usage: /nick NAME") end
  self.name = name
  self:sendLine("you are " .. name)
end

-- /who: everybody connected
function M.Chat:cmd_who()
  local names = {}
  for c in pairs(clients) do names[#names + 1] = c.name end
  table.sort(names)
  self:sendLine("here: " .. table.concat(names, " "))
end

--- The number of connected clients (for the console: require("chat").count()).
function M.count()
  local n = 0
  for _ in pairs(clients) do n = n + 1 end
  return n
end

return M
