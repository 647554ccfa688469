-- examples/hot/chat.lua: the chat protocol, hot-editable under --watch.
-- Edit the message format or add a command while clients stay connected:
-- braid re-runs this file and merges it into the loaded module.
local basic = require "braid.basic"

local M = {}

local clients = {}      -- live connections: kept across reloads (a table)
M.greeting = "welcome"  -- data: kept unless edited here and not changed live

M.Chat = basic.LineReceiver:extend("Chat")
M.Chat.delimiter = "\n"

function M.Chat:connectionMade()
  clients[self] = true
  self.said = 0
  self:sendLine(M.greeting)
end

function M.Chat:connectionLost()
  clients[self] = nil
end

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
  for c in pairs(clients) do c:sendLine(out) end
end

function M.Chat:cmd_count()
  self:sendLine("said " .. self.said)
end

function M.count()
  local n = 0
  for _ in pairs(clients) do n = n + 1 end
  return n
end

return M
