-- spec/twisted_peers_spec.lua: lua/braid/basic.lua over real TCP against
-- Twisted's LineReceiver, NetstringReceiver and Int32StringReceiver
-- (spec/peers/twisted_framing_peer.py, run with Debian's /usr/bin/python3).
local reactor = require "braid.reactor"
local core = require "braid.core"
local protocol = require "braid.protocol"
local basic = require "braid.basic"
local tmp = require "helpers.tmp"
local proc = require "helpers.proc"

local PY = "/usr/bin/python3"

local function have_twisted()
  return os.execute(PY .. " -c 'import twisted' 2>/dev/null") == true
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- run the peer in the background and spin the reactor until it prints
local function run_peer(mode, port)
  local out = tmp.path()
  local peer = proc.background(("exec timeout -s KILL 20 %s spec/peers/twisted_framing_peer.py %s %d > %s 2>&1")
    :format(PY, mode, port, out))
  local deadline = core.monotonic() + 15
  local text = ""
  while not text:find("\n") do
    if core.monotonic() > deadline then break end
    reactor.iterate(0.02)
    text = read_file(out)
  end
  -- it exits once it has printed; one that has not is ended
  if text:find("\n") then peer:finish() else peer:stop() end
  os.remove(out)
  return text
end

local function echo_server(Base, send)
  local Echo = Base:extend("Echo" .. (Base.__name or ""))
  function Echo:lineReceived(line) self:sendLine(line) end
  function Echo:stringReceived(s) self[send](self, s) end
  local port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), 50, "127.0.0.1")
  return port
end



local describe_peers = have_twisted() and describe or pending

-- start the Twisted echo server in the background; returns its port (the
-- server is stopped when the spec ends: it would stop by itself once its
-- one client has gone)
local function twisted_server(mode)
  local out = tmp.path()
  local server = proc.background(("exec timeout -s KILL 20 %s spec/peers/twisted_echo_server.py %s > %s 2>&1")
    :format(PY, mode, out))
  finally(function() server:stop() end)
  local deadline = core.monotonic() + 15
  local port
  while not port do
    if core.monotonic() > deadline then break end
    reactor.iterate(0.02)
    port = tonumber(read_file(out):match("PORT (%d+)"))
  end
  os.remove(out)
  return assert(port, "the Twisted server did not start")
end

-- what twisted_framing_peer.py sends
local MSGS = { "hello", "", string.rep("x", 5000), "with:colon,comma\0\255", "last" }

describe_peers("braid receivers against Twisted peers", function()
  local work0
  before_each(function() work0 = core.work() end)
  after_each(function()
    -- ports closed and connections delivered: no work left for the loop
    local deadline = core.monotonic() + 5
    while core.work() > work0 or core.tcp_undelivered() > 0 do
      assert(core.monotonic() < deadline, "work left behind")
      reactor.iterate(0.02)
    end
  end)

  for _, case in ipairs({ { "line", basic.LineReceiver, "sendLine" },
      { "netstring", basic.NetstringReceiver, "sendString" },
      { "int32", basic.Int32StringReceiver, "sendString" } }) do
    it("echoes what a Twisted " .. case[1] .. " client sends, framed identically", function()
      local port = echo_server(case[2], case[3])
      finally(function() port:stopListening() end)
      assert.are.equal("OK\n", run_peer(case[1], port:getHost().port))
    end)

    it("sends to a Twisted " .. case[1] .. " server and gets the same frames back", function()
      local n = twisted_server(case[1])
      local Client = case[2]:extend("Client")
      local got, lost = {}, false
      function Client:connectionMade()
        for _, m in ipairs(MSGS) do self[case[3]](self, m) end
      end
      function Client:lineReceived(line) self:stringReceived(line) end
      function Client:stringReceived(s)
        got[#got + 1] = s
        if #got == #MSGS then self.transport:loseConnection() end
      end
      function Client:connectionLost() lost = true end
      local f = protocol.ClientFactory.forProtocol(Client)
      f.noisy = false
      function f:clientConnectionFailed(_, r) error(r:getErrorMessage()) end
      reactor.connectTCP("127.0.0.1", n, f)
      local deadline = core.monotonic() + 10
      while not lost do
        assert(core.monotonic() < deadline, "timed out; got " .. #got .. " frames")
        reactor.iterate(0.02)
      end
      assert.are.same(MSGS, got)
    end)
  end
end)
