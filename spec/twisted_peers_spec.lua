-- spec/twisted_peers_spec.lua: lua/braid/basic.lua over real TCP against
-- Twisted's LineReceiver, NetstringReceiver and Int32StringReceiver
-- (spec/peers/twisted_framing_peer.py, run with Debian's /usr/bin/python3).
local reactor = require "braid.reactor"
local core = require "braid.core"
local protocol = require "braid.protocol"
local basic = require "braid.basic"
local class = require "braid.class"
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


-- The same bytes, written in one write, to a Twisted receiver and to
-- braid's, each a server with MAX_LENGTH 100 (spec/peers/twisted_receiver_peer.py
-- documents the trace): both must trace the same frames, pauses, limit
-- calls and close, and the sending client must read the same echo and see
-- the same close on both.
local RMAX = 100

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

local FRAMERS = {
  line = function(s) return s .. "\r\n" end,
  lineonly = function(s) return s .. "\r\n" end,
  netstring = function(s) return #s .. ":" .. s .. "," end,
  int16 = function(s) return string.pack(">I2", #s) .. s end,
  int32 = function(s) return string.pack(">I4", #s) .. s end,
}

local RECEIVERS = {
  line = basic.LineReceiver, lineonly = basic.LineOnlyReceiver, netstring = basic.NetstringReceiver,
  int16 = basic.Int16StringReceiver, int32 = basic.Int32StringReceiver,
}

-- braid's twin of the peer's Receiver; trace collects its events
local function braid_receiver(kind, trace, done)
  local Base = RECEIVERS[kind]
  local R = Base:extend("R" .. kind)
  R.MAX_LENGTH = RMAX
  function R:frame(s)
    trace[#trace + 1] = "frame " .. hex(s)
    if kind == "line" or kind == "lineonly" then self:sendLine(s) else self:sendString(s) end
    if s == "PAUSE" then
      trace[#trace + 1] = "pause"
      self:pauseProducing()
      reactor.callLater(0, function()
        trace[#trace + 1] = "resume"
        self:resumeProducing()
      end)
    elseif s == "QUIT" then
      self.transport:loseConnection()
    end
  end
  function R:lineReceived(line) self:frame(line) end
  function R:stringReceived(s) self:frame(s) end
  function R:lineLengthExceeded(data)
    trace[#trace + 1] = "exceeded " .. #data
    return Base.lineLengthExceeded(self, data)
  end
  function R:lengthLimitExceeded(n)
    trace[#trace + 1] = "limit " .. n
    return Base.lengthLimitExceeded(self, n)
  end
  function R:_handleParseError()
    trace[#trace + 1] = "parseerror"
    return Base._handleParseError(self)
  end
  function R:connectionLost(reason)
    trace[#trace + 1] = "lost " .. class.nameof(reason.type)
    done()
  end
  return R
end

local function spin_until(cond, what)
  local deadline = core.monotonic() + 10
  while not cond() do
    assert(core.monotonic() < deadline, "timed out waiting for " .. what)
    reactor.iterate(0.01)
  end
end

-- what a test leaves to after_each (busted keeps one finally per test)
local cleanups = {}

-- the peer in the background, its output in a temp file; returns a reader
local function start_peer(args)
  local out = tmp.path()
  local peer = proc.background(("exec timeout -s KILL 20 %s spec/peers/twisted_receiver_peer.py %s > %s 2>&1")
    :format(PY, args, out))
  cleanups[#cleanups + 1] = function() peer:stop() end
  return function() return read_file(out) end
end

-- Twisted's receiver as the server, a braid client writing data
local function against_twisted(kind, data)
  local output = start_peer("server " .. kind .. " " .. RMAX)
  local port
  spin_until(function()
    port = tonumber(output():match("PORT (%d+)"))
    return port
  end, "the Twisted server")
  local got, lost = {}, nil
  local C = protocol.Protocol:extend("C")
  function C:connectionMade() self.transport:write(data) end
  function C:dataReceived(d) got[#got + 1] = d end
  function C:connectionLost(reason) lost = class.nameof(reason.type) end
  local f = protocol.ClientFactory.forProtocol(C)
  f.noisy = false
  reactor.connectTCP("127.0.0.1", port, f)
  spin_until(function() return lost and output():find("\nEND\n") end, "the exchange")
  local trace = {}
  for l in output():match("PORT %d+\n(.-)END\n"):gmatch("[^\n]+") do trace[#trace + 1] = l end
  return trace, { got = hex(table.concat(got)), lost = lost }
end

-- braid's receiver as the server, Twisted's client writing data
local function against_braid(kind, data)
  local trace, finished = {}, false
  local f = protocol.Factory.forProtocol(braid_receiver(kind, trace, function() finished = true end))
  f.noisy = false
  local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
  cleanups[#cleanups + 1] = function() port:stopListening() end
  local output = start_peer(("client %d %s"):format(port:getHost().port, hex(data)))
  spin_until(function() return finished and output():find("\nLOST %a+\n") end, "the exchange")
  local gothex, lost = output():match("GOT (%x*)\nLOST (%a+)\n")
  return trace, { got = gothex, lost = lost }
end

describe_peers("braid receivers and Twisted's, side by side over TCP", function()
  local work0
  before_each(function() work0 = core.work() end)
  after_each(function()
    for i = #cleanups, 1, -1 do
      cleanups[i]()
      cleanups[i] = nil
    end
    local deadline = core.monotonic() + 5
    while core.work() > work0 or core.tcp_undelivered() > 0 do
      assert(core.monotonic() < deadline, "work left behind")
      reactor.iterate(0.02)
    end
  end)

  for _, kind in ipairs({ "line", "lineonly", "netstring", "int16", "int32" }) do
    local frame = FRAMERS[kind]
    it(kind .. ": frames at MAX_LENGTH arrive, one past it closes the connection", function()
      local data = frame("a") .. frame(("x"):rep(RMAX)) .. frame(("y"):rep(RMAX + 1)) .. frame("after")
      local t_trace, t_client = against_twisted(kind, data)
      local b_trace, b_client = against_braid(kind, data)
      assert.are.same(t_trace, b_trace)
      assert.are.same(t_client, b_client)
      assert.are.equal("frame " .. hex(("x"):rep(RMAX)), b_trace[2])
      assert.are.equal("lost ConnectionDone", b_trace[#b_trace])
      assert.are.same({ got = hex(frame("a") .. frame(("x"):rep(RMAX))), lost = "ConnectionDone" }, b_client)
    end)
  end

  for _, kind in ipairs({ "line", "int16", "int32" }) do
    local frame = FRAMERS[kind]
    it(kind .. ": a pause in the middle of a read holds the rest until resumed", function()
      local parts = {}
      for i = 1, 30 do parts[#parts + 1] = frame(i % 5 == 0 and "PAUSE" or ("f" .. i)) end
      parts[#parts + 1] = frame("QUIT") .. frame("tail")
      local data = table.concat(parts)
      local t_trace, t_client = against_twisted(kind, data)
      local b_trace, b_client = against_braid(kind, data)
      assert.are.same(t_trace, b_trace)
      assert.are.same(t_client, b_client)
      -- every pause is followed by its resume before the next frame
      for i, e in ipairs(b_trace) do
        if e == "pause" then assert.are.equal("resume", b_trace[i + 1]) end
      end
    end)
  end
end)
