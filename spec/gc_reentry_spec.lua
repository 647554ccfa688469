-- spec/gc_reentry_spec.lua: C code that allocates while its own state is
-- half-updated. Any allocation may run a collection, and its finalizers
-- (Lua code) may call back into braid. Each case opens that window
-- deterministically: generational mode, the collector stopped while a
-- garbage object with a __gc is made, restarted (no allocation debt), then
-- a table grown (debt, but no check yet): the next allocation that checks,
-- inside the function under test, runs a young collection and the __gc.
local core = require "braid.core"
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local log = require "braid.log"
local socket = require "socket"

-- Call f() with fin() run by the first collection check inside it.
local function in_gc_window(fin, f)
  local mode = collectgarbage("generational")
  finally(function() collectgarbage("restart"); collectgarbage(mode) end)
  collectgarbage("stop")
  setmetatable({}, { __gc = function() fin() end })
  local pad = {}
  collectgarbage("restart")
  for i = 1, 64 do pad[i] = i end
  return f()
end

describe("a framebuf used by a finalizer while it makes a frame's string", function()
  local cases = {
    { "nextLine", "hello\r\nworld\r\n", { "\r\n", 1000 }, "hello" },
    { "nextNetstring", "5:hello,5:world,", { 1000 }, "hello" },
    { "nextPrefixed", "\0\5hello\0\5world", { 2, 1000 }, "hello" },
    { "take", "helloworld", { 5 }, "hello" },
    { "takeAll", "hello", {}, "hello" },
  }
  for _, c in ipairs(cases) do
    local method, input, args, want = c[1], c[2], c[3], c[4]
    it(method .. " consumes first, so a clear() inside leaves a sound, empty buffer", function()
      local b = core.framebuf()
      b:append(input)
      local cleared = false
      local got = in_gc_window(function() b:clear(); cleared = true end,
        function() return b[method](b, table.unpack(args)) end)
      assert.is_true(cleared)
      assert.equal(want, got)
      assert.equal(0, b:len())
      b:append(("x"):rep(5000))
      assert.equal(5000, b:len())
      assert.equal(5000, #b:takeAll())
    end)
  end
end)

describe("a transport closed by a finalizer", function()
  local function wait(cond)
    for _ = 1, 300 do
      if cond() then return end
      reactor.iterate(0.01)
    end
    error("timed out")
  end

  it("is not queued again by the loseConnection whose write ran it", function()
    local seen
    local Server = protocol.Protocol:extend("Server")
    function Server:dataReceived()
      local t = self.transport
      local lost_before = self.lost
      in_gc_window(function() t:abortConnection(); core.tcp_deliver_closes() end,
        function() t:loseConnection() end)
      seen = { lost_before, self.lost, core.tcp_undelivered() }
    end
    function Server:connectionLost() self.lost = (self.lost or 0) + 1 end
    local port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), 50, "127.0.0.1")
    local c
    -- one finally for both (busted keeps only the last one given)
    finally(function() if c then c:close() end; port:stopListening() end)
    c = assert(socket.connect("127.0.0.1", port:getHost().port))
    c:send("hi")
    wait(function() return seen end)
    assert.same({ nil, 1, 0 }, seen)
    collectgarbage(); collectgarbage()
    reactor.iterate(0)  -- the pending list held the collected transport
    assert.equal(0, core.tcp_undelivered())
  end)

  it("is not handed to connectionMade when a finalizer stops its connect", function()
    local server = assert(socket.bind("127.0.0.1", 0))  -- listens, never accepts
    local obs, prev
    -- one finally for all (busted keeps only the last one given)
    finally(function()
      server:close()
      if obs then log.removeObserver(obs) log.setErrorStream(prev) end
    end)
    local _, sport = server:getsockname()
    local made, failed = 0, 0
    local Client = protocol.Protocol:extend("Client")
    function Client:connectionMade() made = made + 1 end
    local cf = protocol.ClientFactory.forProtocol(Client)
    function cf:clientConnectionFailed() failed = failed + 1 end
    local logged = {}
    obs = function(ev) if ev.isError then logged[#logged + 1] = ev end end
    log.addObserver(obs)
    prev = log.setErrorStream({ write = function() end, flush = function() end })
    local connector = reactor.connectTCP("127.0.0.1", tonumber(sport), cf)
    local ran = false
    -- the first check in that iterate: the completed connect's field writes
    in_gc_window(function() connector:stopConnecting(); core.tcp_deliver_closes(); ran = true end,
      function() core.iterate(0.5) end)
    assert.is_true(ran)
    for _ = 1, 5 do reactor.iterate(0.01) end
    assert.equal(0, made)
    assert.equal(1, failed)
    assert.same({}, logged)  -- the connected handler ran with a nil transport
  end)
end)
