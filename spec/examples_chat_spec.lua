-- spec/examples_chat_spec.lua: examples/chat.lua, driven in memory by
-- braid.testing.transport's connectedServerAndClient.
local basic = require "braid.basic"
local testing = require "braid.testing.transport"

local chat = assert(loadfile("examples/chat.lua"))("--no-run")

local User = basic.LineReceiver:extend("User")
function User:connectionMade() self.lines = {} end
function User:lineReceived(line) self.lines[#self.lines + 1] = line end

describe("examples/chat.lua", function()
  local factory, pumps
  before_each(function()
    factory, pumps = chat.ChatFactory(), {}
  end)
  local function join(seed)
    local server, client, pump = testing.connectedServerAndClient(factory, User,
      { seed = seed, maxChunk = 3 })
    pumps[#pumps + 1] = pump
    return client, server
  end
  local function flush() for _, p in ipairs(pumps) do p:flush() end end

  it("asks a new user for a name and welcomes them", function()
    local alice = join(1)
    assert.are.same({ "What's your name?" }, alice.lines)
    alice:sendLine("alice")
    flush()
    assert.are.same({ "What's your name?", "Welcome, alice!" }, alice.lines)
  end)

  it("refuses a name already taken", function()
    local a, b = join(1), join(2)
    a:sendLine("alice"); flush()
    b:sendLine("alice"); flush()
    assert.are.equal("Name taken, please choose another.", b.lines[2])
  end)

  it("broadcasts a message to every other user, not the sender", function()
    local a, b, c = join(1), join(2), join(3)
    a:sendLine("alice"); b:sendLine("bob"); c:sendLine("carol"); flush()
    a:sendLine("hi all"); flush()
    assert.are.equal("<alice> hi all", b.lines[3])
    assert.are.equal("<alice> hi all", c.lines[3])
    assert.is_nil(a.lines[3])
  end)

  it("frees the name when its user disconnects", function()
    local a = join(1)
    a:sendLine("alice"); flush()
    a.transport:loseConnection(); flush()
    assert.is_nil(factory.users.alice)
    local b = join(2)
    b:sendLine("alice"); flush()
    assert.are.equal("Welcome, alice!", b.lines[2])
  end)
end)
