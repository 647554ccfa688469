-- spec/examples_chat_spec.lua: examples/chat.lua, driven in memory by
-- braid.testing.transport's connectedServerAndClient.
local basic = require "braid.basic"
local testing = require "braid.testing.transport"

local chat = assert(loadfile("examples/chat.lua"))("--no-run")

local User = basic.LineReceiver:extend("User")
function User:connectionMade() self.lines = {} end
function User:lineReceived(line) self.lines[#self.lines + 1] = line end

-- sender says 1100 lines of 1000 bytes (1.1 MB); after each, the first
-- and third pumps are flushed, the second (a client that never reads) not.
-- Returns the line.
local function flood(sender, pumps)
  local line = string.rep("x", 1000)
  for _ = 1, 1100 do
    sender:sendLine(line)
    pumps[1]:flush()
    pumps[3]:flush()
  end
  return line
end

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

  it("drops a member whose unread messages pass 1 MiB, and serves the others on", function()
    local a, slow, c = join(1), join(2), join(3)
    a:sendLine("alice"); slow:sendLine("slow"); c:sendLine("carol"); flush()
    -- slow's pump is never flushed: what the server writes to it stays queued
    flood(a, pumps)
    local st = factory.users.slow.transport
    assert.is_true(st.aborted)
    pumps[2]:flush()
    assert.is_nil(factory.users.slow)
    assert.equal(1100 + 2, #c.lines)  -- carol got every line
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

describe("examples/hot/chat.lua", function()
  local protocol = require "braid.protocol"

  -- the hot example broadcast to every client, however much each had
  -- left unread: one that never read made the server hold all that was said
  it("drops a client whose unread lines pass 1 MiB, and serves the others on", function()
    local hot = assert(loadfile("examples/hot/chat.lua"))()
    local factory = protocol.Factory.forProtocol(hot.Chat)
    local HotUser = User:extend("HotUser")
    HotUser.delimiter = "\n"
    local pumps, clients = {}, {}
    for i = 1, 3 do
      local _, client, pump = testing.connectedServerAndClient(factory, HotUser, { seed = i, maxChunk = 7 })
      pumps[i], clients[i] = pump, client
      pump:flush()
    end
    local a, c = clients[1], clients[3]
    -- the second client's pump is never flushed: what the server writes to it stays queued
    local line = flood(a, pumps)
    pumps[2]:flush()  -- the abort reaches the slow client
    assert.equal(2, hot.count())
    assert.equal("welcome", c.lines[1])
    assert.equal(1 + 1100, #c.lines)  -- the welcome, then every line
    assert.equal("> " .. line, c.lines[1101])
  end)
end)

describe("examples/chat.lua over real sockets", function()
  local proc = require "helpers.proc"
  local tmp = require "helpers.tmp"
  local reactor = require "braid.reactor"
  local core = require "braid.core"
  local protocol = require "braid.protocol"

  local function spin(cond, limit)
    local deadline = core.monotonic() + (limit or 10)
    while not cond() do
      if core.monotonic() > deadline then error("timed out waiting", 2) end
      reactor.iterate(0.02)
    end
  end

  local function read_file(path)
    local f = io.open(path, "r")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
  end

  it("relays what nc and socat users say to a braid LineReceiver client", function()
    local p = proc.spawn({ "examples/chat.lua", "0" })
    local work0 = core.work()
    local bob
    local cleanups = {}
    local function later(f) cleanups[#cleanups + 1] = f end
    finally(function()
      if bob and bob.transport then bob.transport:abortConnection() end
      p:kill("TERM")
      p:finish()
      for i = #cleanups, 1, -1 do cleanups[i]() end
    end)
    local line = p:waitFor("port %d+")
    assert(line, table.concat(p.lines, "\n"))
    local port = tonumber(line:match("port (%d+)"))
    local Bob = basic.LineReceiver:extend("Bob")
    function Bob:connectionMade() bob = self self.lines = {} end
    function Bob:lineReceived(l)
      self.lines[#self.lines + 1] = l
      if l == "What's your name?" then self:sendLine("bob") end
    end
    function Bob:connectionLost() self.gone = true end
    reactor.connectTCP("127.0.0.1", port, { protocol = Bob, noisy = false })
    spin(function() return bob and bob.lines[2] == "Welcome, bob!" end)
    -- nc and socat send their name and a line, then close their side
    local ncout, socatout = tmp.path(), tmp.path()
    -- background commands, waited for when the spec ends (the server's
    -- end closes their connections)
    local nc = proc.background(("printf 'alice\\r\\nhello from nc\\r\\n' | timeout 10 nc -N 127.0.0.1 %d > %s 2>&1")
      :format(port, ncout))
    later(function() nc:finish() end)
    spin(function() return bob.lines[3] ~= nil end)
    local socat = proc.background(("printf 'carol\\r\\nhi via socat\\r\\n' | timeout 10 socat -t 2 - TCP:127.0.0.1:%d > %s 2>&1")
      :format(port, socatout))
    later(function() socat:finish() end)
    spin(function() return bob.lines[4] ~= nil end)
    assert.are.same({ "What's your name?", "Welcome, bob!", "<alice> hello from nc",
      "<carol> hi via socat" }, bob.lines)
    spin(function() return read_file(ncout):find("Welcome, alice!\r\n", 1, true) end)
    local greeting = "What's your name?\r\nWelcome, alice!\r\n"
    assert.equal(greeting, read_file(ncout):sub(1, #greeting))
    spin(function() return read_file(socatout):find("Welcome, carol!\r\n", 1, true) end)
    os.remove(ncout)
    os.remove(socatout)
    bob.transport:loseConnection()
    spin(function() return bob.gone and core.work() <= work0 end)
  end)
end)
