-- examples/poetry_client.lua: the seed's Example 2 (Dave Peticolas' poetry
-- client, Twisted Introduction part 5): one connection per server, each
-- chunk reported as it arrives (so the servers' chunks interleave), the
-- poem collected until the server closes, and the reactor stopped when
-- every connection is done. The poems are printed at the end, in task order.
-- Run: ./scripts/run examples/poetry_client.lua [host:]port ...
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local PoetryProtocol = protocol.Protocol:extend("PoetryProtocol")

-- called when the connection is set up: the seed prints the transport and
-- the factory, then the base class does its work (connectionMade)
function PoetryProtocol:makeConnection(transport)
  print("make connection: get transport: ", tostring(transport))
  print("My factory is:", tostring(self.factory))
  return protocol.Protocol.makeConnection(self, transport)
end

function PoetryProtocol:connectionMade()
  self.poem = {}
end

function PoetryProtocol:dataReceived(data)
  self.poem[#self.poem + 1] = data
  print(("task %d: got %d bytes of poetry from %s"):format(
    self.task_num, #data, tostring(self.transport:getPeer())))
end

function PoetryProtocol:connectionLost(reason) -- luacheck: ignore reason
  self.factory:poemFinished(self.task_num, table.concat(self.poem))
end

local PoetryClientFactory = protocol.ClientFactory:extend("PoetryClientFactory")
PoetryClientFactory.protocol = PoetryProtocol
PoetryClientFactory.noisy = false

function PoetryClientFactory:init(poetryCount)
  self.poetryCount = poetryCount
  self.poems = {}   -- task number -> poem
  self.done = 0     -- connections finished or failed
  self.tasks = 0
end

-- each protocol gets the next task number, as in the seed
function PoetryClientFactory:buildProtocol(addr)
  local proto = protocol.ClientFactory.buildProtocol(self, addr)
  self.tasks = self.tasks + 1
  proto.task_num = self.tasks
  return proto
end

function PoetryClientFactory:poemFinished(task_num, poem)
  self.poems[task_num] = poem
  self.done = self.done + 1
  self:check()
end

function PoetryClientFactory:clientConnectionFailed(connector, reason)
  print("failed to connect to:", tostring(connector:getDestination()), reason:getErrorMessage())
  self.done = self.done + 1
  self:check()
end

function PoetryClientFactory:check()
  if self.done >= self.poetryCount and reactor.running then
    local got = 0
    for i = 1, self.tasks do
      if self.poems[i] then
        got = got + 1
        io.write(("Poem %d:\n%s\n"):format(i, self.poems[i]))
      end
    end
    io.write(("Got %d poems.\n"):format(got))
    io.stdout:flush()
    reactor.stop()
  end
end

local function usage()
  io.stderr:write("usage: poetry_client.lua [host:]port ...   (ports 1 to 65535)\n")
  os.exit(2)
end

local addresses = {}
for _, a in ipairs(arg) do
  local host, port = a:match("^(.*):(%d+)$")
  if not host then host, port = "127.0.0.1", a end
  port = math.tointeger(tonumber(port))
  if not port or port < 1 or port > 65535 then usage() end
  addresses[#addresses + 1] = { host, port }
end
if #addresses == 0 then usage() end

local factory = PoetryClientFactory(#addresses)
for _, a in ipairs(addresses) do
  reactor.connectTCP(a[1], a[2], factory)
end
reactor.run()
