-- spec/connector_spec.lua: connectors stopped or restarted from their own
-- callbacks, connections that cannot start, and the addresses a name gives
-- (lua/braid/tcp.lua, runtime/tcp.c, runtime/resolve.c), on real sockets
-- on 127.0.0.1, checked against what Twisted 22.4 does in each case.
local reactor = require "braid.reactor"
local errors = require "braid.error"
local protocol = require "braid.protocol"
local resolver = require "braid.resolver"
local loop = require "helpers.loop"

local Protocol, Factory, ClientFactory = protocol.Protocol, protocol.Factory, protocol.ClientFactory
local spin, wait = loop.spin, loop.wait

-- A listening port counting the connections it accepts.
local function counting_server()
  local f = Factory.forProtocol(Protocol)
  f.accepted = 0
  local build = f.buildProtocol
  function f:buildProtocol(addr)
    self.accepted = self.accepted + 1
    return build(self, addr)
  end
  local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
  return port, f
end

-- A ClientFactory recording its events in order.
local function recorder(cls)
  local f = (cls or ClientFactory).forProtocol(Protocol)
  f.events = {}
  local function rec(...) f.events[#f.events + 1] = table.concat({ ... }, " ") end
  f.rec = rec
  function f:startFactory() rec("startFactory") end
  function f:stopFactory() rec("stopFactory") end
  function f:startedConnecting() rec("startedConnecting") end
  function f:clientConnectionFailed(_, reason) rec("clientConnectionFailed", reason.value.class.__name) end
  function f:clientConnectionLost(_, reason) rec("clientConnectionLost", reason.value.class.__name) end
  return f
end

local run_out_of_descriptors = require("helpers.proc").run_out_of_descriptors

describe("a connector", function()
  it("is connected from buildProtocol on: a ReconnectingClientFactory may stopTrying there", function()
    -- Twisted's BaseConnector.buildProtocol sets state first; braid's
    -- stopConnecting used to fail the attempt and then connect anyway
    local port = counting_server()
    finally(function() port:stopListening() end)
    local f = recorder(protocol.ReconnectingClientFactory)
    local state, conn
    function f:buildProtocol(addr)
      state = self.connector and self.connector.state
      self:stopTrying()
      self.rec("buildProtocol")
      local p = protocol.ReconnectingClientFactory.buildProtocol(self, addr)
      function p.connectionMade(pr) conn = pr; f.rec("connectionMade") end
      return p
    end
    function f:clientConnectionLost(_, reason)
      self.rec("clientConnectionLost", reason.value.class.__name)
    end
    local c = reactor.connectTCP("127.0.0.1", port:getHost().port, f)
    f.connector = c
    spin(function() return conn ~= nil end)
    assert.equal("connected", state)
    assert.equal("connected", c.state)
    conn.transport:loseConnection()
    spin(function() return f.events[#f.events] == "stopFactory" end)
    assert.same({ "startFactory", "startedConnecting", "buildProtocol", "connectionMade",
      "clientConnectionLost ConnectionDone", "stopFactory" }, f.events)
  end)

  it("refuses stopConnecting from buildProtocol with NotConnectingError", function()
    local port = counting_server()
    finally(function() port:stopListening() end)
    local f = recorder()
    local raised, conn
    function f:buildProtocol(addr)
      local ok, e = pcall(self.connector.stopConnecting, self.connector)
      raised = not ok and e.class
      self.connector:disconnect()  -- nothing to do yet, as in Twisted
      local p = ClientFactory.buildProtocol(self, addr)
      function p.connectionMade(pr) conn = pr end
      return p
    end
    f.connector = reactor.connectTCP("127.0.0.1", port:getHost().port, f)
    spin(function() return conn ~= nil end)
    assert.equal(errors.NotConnectingError, raised)
    assert.is_true(conn.transport.connected)
    conn.transport:loseConnection()
    spin(function() return f.events[#f.events] == "stopFactory" end)
    assert.same({ "startFactory", "startedConnecting", "clientConnectionLost ConnectionDone",
      "stopFactory" }, f.events)
  end)

  it("stopped in startedConnecting and connected again in clientConnectionFailed makes one attempt",
    function()
    -- the outer connect() went on too: two sockets, and a timeout timer
    -- nothing could cancel
    local port, sf = counting_server()
    finally(function() port:stopListening() end)
    local f = recorder()
    local tries, conn = 0, nil
    function f:startedConnecting(connector)
      tries = tries + 1
      self.rec("startedConnecting")
      if tries == 1 then connector:stopConnecting() end
    end
    function f:clientConnectionFailed(connector, reason)
      self.rec("clientConnectionFailed", reason.value.class.__name)
      connector:connect()
    end
    function f:buildProtocol(addr)
      local p = ClientFactory.buildProtocol(self, addr)
      function p.connectionMade(pr) conn = pr end
      return p
    end
    local before = {}
    for _, dc in ipairs(reactor.getDelayedCalls()) do before[dc] = true end
    local c = reactor.connectTCP("127.0.0.1", port:getHost().port, f, 5)
    spin(function() return conn ~= nil and sf.accepted > 0 end)
    -- a turn more for a second connection to show up, had one been made
    wait(require("braid.task").deferLater(reactor, 0.05))
    assert.equal(1, sf.accepted)
    assert.equal(2, tries)
    for _, dc in ipairs(reactor.getDelayedCalls()) do  -- no timeout timer left behind
      assert.is_true(before[dc] or false, "left behind: " .. tostring(dc))
    end
    assert.equal("connected", c.state)
    conn.transport:loseConnection()
    spin(function() return f.events[#f.events] == "stopFactory" end)
    assert.same({ "startFactory", "startedConnecting", "clientConnectionFailed UserError",
      "startedConnecting", "clientConnectionLost ConnectionDone", "stopFactory" }, f.events)
  end)

  it("refuses connect() while connecting or connected with RuntimeError, as Twisted's", function()
    local port = counting_server()
    finally(function() port:stopListening() end)
    local f = recorder()
    local conn
    function f:buildProtocol(addr)
      local p = ClientFactory.buildProtocol(self, addr)
      function p.connectionMade(pr) conn = pr end
      return p
    end
    local c = reactor.connectTCP("127.0.0.1", port:getHost().port, f)
    local ok, e = pcall(c.connect, c)
    assert.is_false(ok)
    assert.equal(errors.RuntimeError, e.class)
    assert.equal("RuntimeError: can't connect in this state", tostring(e))
    spin(function() return conn ~= nil end)
    ok, e = pcall(c.connect, c)
    assert.is_false(ok)
    assert.equal(errors.RuntimeError, e.class)
    assert.equal("connected", c.state)
    conn.transport:loseConnection()
    spin(function() return f.events[#f.events] == "stopFactory" end)
    assert.same({ "startFactory", "startedConnecting", "clientConnectionLost ConnectionDone",
      "stopFactory" }, f.events)
  end)

  it("fails with ConnectBindError naming a bind address that does not resolve", function()
    local f = recorder()
    local reason
    function f:clientConnectionFailed(_, r) reason = r end
    reactor.connectTCP("127.0.0.1", 9, f, 5, { "no-such-host.invalid", 0 })
    spin(function() return reason ~= nil end)
    assert.equal(errors.ConnectBindError, reason.value.class)
    assert.matches("cannot resolve the bind address no%-such%-host%.invalid", tostring(reason.value))
  end)

  it("that cannot start its name's lookup (out of descriptors) fails once, on a later turn", function()
    local out = run_out_of_descriptors([[
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local events = {}
local f = protocol.ClientFactory.forProtocol(protocol.Protocol)
function f:clientConnectionFailed(_, r) events[#events + 1] = "failed " .. tostring(r.value) end
function f:stopFactory() events[#events + 1] = "stopFactory" end
reactor.callLater(0.2, reactor.stop)
reactor.iterate(0)      -- the loop is made before the descriptors run out,
require "braid.tcp"     -- and the modules loaded
require "braid.resolver"
require "braid.defer"
local held = {}
while true do  -- use up the descriptors
  local h = io.open("/dev/null")
  if not h then break end
  held[#held + 1] = h
end
local ok, c = pcall(reactor.connectTCP, "localhost", 9, f, 0)
print("returned", ok, c and c.state)
for _, h in ipairs(held) do h:close() end
reactor.run()
for _, e in ipairs(events) do print(e) end
]])
    assert.matches("^returned\ttrue\tconnecting\nfailed ConnectError: An error occurred while "
      .. "connecting: eventfd: Too many open files%.\nstopFactory\n", out)
  end)

  it("to a name, and stopListening, work out of descriptors without loading a module first", function()
    -- braid.tcp loaded braid.resolver and braid.defer only when a connect
    -- to a name or a stopListening first needed them: out of descriptors,
    -- require could not open their files, and both raised "module
    -- 'braid.resolver' not found" (the connect leaving its timeout armed)
    local out = run_out_of_descriptors([[
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
local events = {}
local f = protocol.ClientFactory.forProtocol(protocol.Protocol)
function f:clientConnectionFailed(_, r) events[#events + 1] = "failed " .. tostring(r.value) end
local port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), 50, "127.0.0.1")
reactor.callLater(0.2, reactor.stop)
local held = {}
while true do  -- use up the descriptors
  local h = io.open("/dev/null")
  if not h then break end
  held[#held + 1] = h
end
local ok, c = pcall(reactor.connectTCP, "localhost", port:getHost().port, f, 0)
print("connect", ok, ok and c.state or c)
local ok2, d = pcall(port.stopListening, port)
print("stopListening", ok2, ok2 and "" or d)
if ok2 then d:addCallback(function() events[#events + 1] = "stopped" end) end
for _, h in ipairs(held) do h:close() end
reactor.run()
for _, e in ipairs(events) do print(e) end
]])
    assert.equal("connect\ttrue\tconnecting\nstopListening\ttrue\t\n"
      .. "failed ConnectError: An error occurred while connecting: eventfd: Too many open files.\n"
      .. "stopped\n", out)
  end)
end)

describe("a name's addresses", function()
  it("come once each, loopback IPv6 included (no AI_ADDRCONFIG, as Twisted's HostnameEndpoint)",
    function()
    local list = wait(resolver.getHostByName("localhost"))
    local seen = {}
    for _, a in ipairs(list) do
      assert.is_nil(seen[a.host], "listed twice: " .. a.host)
      seen[a.host] = true
    end
    assert.is_true(seen["127.0.0.1"])
  end)
end)

describe("UNIX paths", function()
  it("refuse an empty path, naming the function", function()
    local f = Factory.forProtocol(Protocol)
    local ok, e = pcall(reactor.listenUNIX, "", f)
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal("bad argument #1 to 'listenUNIX' (empty path)", e.message)
    ok, e = pcall(reactor.connectUNIX, "", ClientFactory.forProtocol(Protocol))
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'connectUNIX' (empty path)", e.message)
  end)
end)
