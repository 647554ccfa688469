-- spec for runtime/tcp.c's read fast path (conn_cb's own recv, deliver_fast, data_p)
local reactor = require "braid.reactor"
local core = require "braid.core"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local log = require "braid.log"

local Protocol, Factory = protocol.Protocol, protocol.Factory
local spin = require("helpers.loop").spin

local Rec = Protocol:extend("FastRec")
function Rec:init() self.data = {} end
function Rec:dataReceived(d)
  self.data[#self.data + 1] = d
  if self.onData then self:onData(d) end
end
function Rec:connectionMade() if self.onMade then self:onMade() end end
function Rec:connectionLost(r) self.reason = r self.lost = (self.lost or 0) + 1 end
function Rec:received() return table.concat(self.data) end

local Echo = Protocol:extend("FastEcho")
function Echo:dataReceived(d) self.transport:write(d) end

local function factory(P, setup, F)
  local f = (F or Factory).forProtocol(P)
  f.noisy, f.built = false, {}
  local build = f.buildProtocol
  function f:buildProtocol(addr)
    local p = build(self, addr)
    self.built[#self.built + 1] = p
    if setup then setup(p) end
    return p
  end
  return f
end

-- errors logged while fn runs, with stderr kept quiet
local function logged_errors(fn)
  local logged = {}
  local obs = function(ev) if ev.isError then logged[#logged + 1] = ev end end
  log.addObserver(obs)
  local prev = log.setErrorStream({ write = function() end, flush = function() end })
  local ok, e = pcall(fn)
  log.removeObserver(obs)
  log.setErrorStream(prev)
  if not ok then error(e, 0) end
  return logged
end

describe("the TCP read fast path", function()
  local ports
  before_each(function() ports = {} end)
  after_each(function()
    for _, port in ipairs(ports) do
      local done = false
      port:stopListening():addCallback(function() done = true end)
      spin(function() return done end)
    end
    spin(function() return core.tcp_undelivered() == 0 end)
  end)

  local function listen(P, setup)
    local f = factory(P, setup)
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    ports[#ports + 1] = port
    return f, port:getHost().port
  end

  local function connect(n, setup, P)
    local f = factory(P or Rec, setup, protocol.ClientFactory)
    reactor.connectTCP("127.0.0.1", n, f)
    spin(function() return f.built[1] ~= nil and f.built[1].transport ~= nil end)
    return f.built[1]
  end

  local function close(p)
    p.transport:loseConnection()
    spin(function() return p.lost == 1 end)
  end

  -- the log system a server protocol's dataReceived runs under, checked
  -- to be its connection's; and the system after the delivery
  local function delivery_system()
    local sys
    local sf, n = listen(Rec, function(p) function p:onData() sys = log.getSystem() end end)
    local c = connect(n)
    c.transport:write("x")
    spin(function() return sys ~= nil end)
    assert.equal("FastRec," .. sf.built[1].transport.sessionno .. ",127.0.0.1", sys)
    local after = log.getSystem()
    close(c)
    return after
  end

  -- a server protocol whose dataReceived lookup raises `msg`, sent one
  -- byte: its factory and the errors logged
  local function lookup_failure(msg)
    local sf
    local logged = logged_errors(function()
      local n
      sf, n = listen(Rec, function(p)
        setmetatable(p, { __index = function(_, k)
          if k == "dataReceived" then error(msg) end
          return Rec[k]
        end })
      end)
      local c = connect(n)
      c.transport:write("x")
      spin(function() return c.lost == 1 and sf.built[1].lost == 1 end)
    end)
    return sf, logged
  end

  it("echoes every byte in order, NUL bytes and reads of 64 KiB included", function()
    local _, n = listen(Echo)
    local parts = {}
    for i = 1, 5000 do parts[i] = string.char(i % 256, 0, (i * 7) % 256) .. ("%05d"):format(i) end
    local payload = table.concat(parts):rep(5) -- 200,000 bytes
    local c = connect(n)
    c.transport:write(payload)
    spin(function() return #c:received() >= #payload end)
    assert.equal(#payload, #c:received())
    assert.is_true(c:received() == payload)
    close(c)
  end)

  it("hands each read to dataReceived as one string with the protocol as self", function()
    local selves = {}
    local sf, n = listen(Rec, function(p) function p:onData() selves[#selves + 1] = self end end)
    local c = connect(n)
    c.transport:write("ping")
    spin(function() return sf.built[1] and sf.built[1]:received() == "ping" end)
    assert.same({ "ping" }, sf.built[1].data)
    assert.equal(sf.built[1], selves[1])
    close(c)
  end)

  it("runs dataReceived under the connection's log system and restores the previous one after", function()
    assert.equal("-", delivery_system())
  end)

  it("logs from dataReceived under the connection's system; a setSystem inside is undone by the caller's restore", function()
    local events, inner, after_restore = {}, nil, nil
    local obs = function(ev) events[#events + 1] = ev end
    local sf, n = listen(Rec, function(p)
      function p:onData()
        log.msg("from dataReceived")
        local prev = log.setSystem("Inner")
        inner = log.getSystem()
        log.setSystem(prev)
        after_restore = log.getSystem()
      end
    end)
    log.addObserver(obs)
    local c = connect(n)
    c.transport:write("x")
    spin(function() return after_restore ~= nil end)
    log.removeObserver(obs)
    local sys = "FastRec," .. sf.built[1].transport.sessionno .. ",127.0.0.1"
    local mine = {}
    for _, ev in ipairs(events) do if ev.text == "from dataReceived" then mine[#mine + 1] = ev end end
    assert.equal(1, #mine)
    assert.equal(sys, mine[1].system)
    assert.equal("Inner", inner)
    assert.equal(sys, after_restore)
    assert.equal("-", log.getSystem())
    close(c)
  end)

  it("with a system left set outside any delivery, still runs dataReceived under the connection's (and a failing lookup is that protocol's failure)", function()
    local prev = log.setSystem("LeftOver")
    local ok, e = pcall(function()
      assert.equal("LeftOver", delivery_system())
      local bad, logged = lookup_failure("no dataReceived here either")
      assert.equal(1, #logged)
      assert.matches("no dataReceived here either", bad.built[1].reason:getErrorMessage())
      assert.equal("LeftOver", log.getSystem())
    end)
    log.setSystem(prev)
    if not ok then error(e, 0) end
  end)

  it("restores the log system and aborts only that connection when dataReceived raises", function()
    local Bad = Rec:extend("FastBad")
    function Bad:dataReceived(d)
      if d == "boom" then error("boom in fast path") end
      self.transport:write(d)
    end
    local sf, n
    local logged = logged_errors(function()
      sf, n = listen(Bad)
      local c1 = connect(n)
      c1.transport:write("boom")
      spin(function() return c1.lost == 1 and sf.built[1].lost == 1 end)
      assert.equal("-", log.getSystem())
      local c2 = connect(n)
      c2.transport:write("fine")
      spin(function() return c2:received() == "fine" end)
      close(c2)
    end)
    assert.equal(1, #logged)
    assert.equal("FastBad," .. sf.built[1].transport.sessionno .. ",127.0.0.1", logged[1].system)
    assert.matches("boom in fast path", sf.built[1].reason:getErrorMessage())
    assert.matches("stack traceback:.*tcp_fastpath_spec%.lua:%d+: in", logged[1].failure:getTraceback())
    assert.is_nil(sf.built[2].reason)
  end)

  it("treats a dataReceived that is not callable as that protocol's failure", function()
    local sf
    local logged = logged_errors(function()
      local n
      sf, n = listen(Rec, function(p) p.dataReceived = 42 end)
      local c = connect(n)
      c.transport:write("x")
      spin(function() return c.lost == 1 and sf.built[1].lost == 1 end)
    end)
    assert.equal(1, #logged)
    assert.matches("call a number value", sf.built[1].reason:getErrorMessage())
  end)

  it("treats an error raised while looking dataReceived up as that protocol's failure", function()
    local sf, logged = lookup_failure("no dataReceived here")
    assert.equal(1, #logged)
    assert.matches("no dataReceived here", sf.built[1].reason:getErrorMessage())
    assert.equal("-", log.getSystem())
  end)

  it("reads nothing more after pauseProducing in dataReceived until resumeProducing", function()
    local sf, n = listen(Rec, function(p)
      function p:onData() if #self.data == 1 then self.transport:pauseProducing() end end
    end)
    local c = connect(n)
    c.transport:write("a")
    spin(function() return sf.built[1] and #sf.built[1].data == 1 end)
    c.transport:write("b") -- in the server's socket at once (loopback), never read while paused
    for _ = 1, 20 do reactor.iterate(0) end
    assert.same({ "a" }, sf.built[1].data)
    assert.is_true(sf.built[1].transport.paused)
    sf.built[1].transport:resumeProducing()
    spin(function() return sf.built[1]:received() == "ab" end)
    close(c)
  end)

  it("delivers nothing more once dataReceived called loseConnection, and flushes what it wrote", function()
    local sf, n = listen(Rec, function(p)
      function p:onData(d)
        self.transport:write("bye:" .. d)
        self.transport:loseConnection()
      end
    end)
    local c = connect(n)
    c.transport:write("a")
    spin(function() return c.lost == 1 end)
    assert.equal("bye:a", c:received())
    assert.same({ "a" }, sf.built[1].data)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionDone))
  end)

  it("ends with ConnectionLost (not ConnectionDone) when the peer resets the connection", function()
    local sf, n = listen(Rec, function(p)
      function p:onMade() self.transport:write("unread") end
    end)
    -- the client never reads "unread": closing it then sends a reset
    local c = connect(n, function(p) function p:onMade() self.transport:pauseProducing() end end)
    spin(function() return sf.built[1] ~= nil and sf.built[1].transport.connected end)
    c.transport:abortConnection()
    spin(function() return sf.built[1].lost == 1 end)
    assert.is_truthy(sf.built[1].reason:check(errors.ConnectionLost))
    assert.is_falsy(sf.built[1].reason:check(errors.ConnectionDone))
    assert.matches("reset", sf.built[1].reason:getErrorMessage())
  end)

  it("serves a hundred connections echoing at once, each getting back exactly its own bytes", function()
    local _, n = listen(Echo)
    local clients = {}
    for i = 1, 100 do clients[i] = connect(n) end
    for round = 1, 3 do
      for i, c in ipairs(clients) do c.transport:write(("%d.%d;"):format(i, round)) end
    end
    spin(function()
      for i, c in ipairs(clients) do
        if c:received() ~= ("%d.1;%d.2;%d.3;"):format(i, i, i) then return false end
      end
      return true
    end)
    for _, c in ipairs(clients) do close(c) end
  end)
end)
