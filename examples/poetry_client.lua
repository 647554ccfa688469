-- examples/poetry_client.lua: a poetry client in Dave Peticolas' style
-- (Twisted Introduction, part 5): one connection per server, the poem
-- collected until the server closes, printed, and the reactor stopped
-- when every poem is in.
-- Run: ./scripts/run examples/poetry_client.lua [host:]port ...
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local PoetryProtocol = protocol.Protocol:extend("PoetryProtocol")

function PoetryProtocol:connectionMade()
  self.poem = {}
end

function PoetryProtocol:dataReceived(data)
  self.poem[#self.poem + 1] = data
end

function PoetryProtocol:connectionLost(reason) -- luacheck: ignore reason
  self.factory:poemFinished(table.concat(self.poem))
end

local PoetryClientFactory = protocol.ClientFactory:extend("PoetryClientFactory")
PoetryClientFactory.protocol = PoetryProtocol
PoetryClientFactory.noisy = false

function PoetryClientFactory:init(poetryCount)
  self.poetryCount = poetryCount
  self.poems = {}
end

function PoetryClientFactory:poemFinished(poem)
  self.poems[#self.poems + 1] = poem
  self:check()
end

function PoetryClientFactory:clientConnectionFailed(connector, reason)
  io.stderr:write(("Failed to connect to: %s\n%s\n"):format(
    tostring(connector:getDestination()), reason:getErrorMessage()))
  self.poetryCount = self.poetryCount - 1
  self:check()
end

function PoetryClientFactory:check()
  if #self.poems >= self.poetryCount and reactor.running then
    for i, poem in ipairs(self.poems) do
      io.write(("Poem %d:\n%s\n"):format(i, poem))
    end
    io.write(("Got %d poems.\n"):format(#self.poems))
    io.stdout:flush()
    reactor.stop()
  end
end

local addresses = {}
for _, a in ipairs(arg) do
  local host, port = a:match("^(.*):(%d+)$")
  if not host then host, port = "127.0.0.1", a end
  addresses[#addresses + 1] = { host, tonumber(port) }
end
if #addresses == 0 then
  io.stderr:write("usage: poetry_client.lua [host:]port ...\n")
  os.exit(2)
end

local factory = PoetryClientFactory(#addresses)
for _, a in ipairs(addresses) do
  reactor.connectTCP(a[1], a[2], factory)
end
reactor.run()
