-- spec for lua/braid/protocol.lua: Protocol, Factory, ClientFactory, ReconnectingClientFactory
local protocol = require "braid.protocol"
local errors = require "braid.error"
local log = require "braid.log"

local Protocol, Factory = protocol.Protocol, protocol.Factory

-- a minimal fake clock: callLater(delay, f) recorded, advance runs due calls
local function Clock()
  local c = { now = 0, calls = {} }
  function c:seconds() return self.now end
  function c:callLater(delay, f, ...)
    local args = table.pack(...)
    local dc = { time = self.now + delay, f = f, args = args, active = true }
    function dc.cancel() dc.active = false end
    self.calls[#self.calls + 1] = dc
    return dc
  end
  function c:advance(n)
    self.now = self.now + n
    for _, dc in ipairs(self.calls) do
      if dc.active and dc.time <= self.now then
        dc.active = false
        dc.f(table.unpack(dc.args, 1, dc.args.n))
      end
    end
  end
  return c
end

describe("braid.protocol", function()
  describe("Protocol", function()
    it("makeConnection sets transport and connected, then calls connectionMade", function()
      local P = Protocol:extend("P")
      local seen
      function P:connectionMade() seen = { self.transport, self.connected } end
      local p = P()
      assert.is_false(p.connected)  -- "sets": it was not connected before
      assert.is_nil(p.transport)
      p:makeConnection("T")
      assert.same({ "T", true }, seen)
    end)

    it("logPrefix is the class name", function()
      assert.equal("Echo", Protocol:extend("Echo")():logPrefix())
      assert.equal("Protocol", Protocol():logPrefix())
    end)
  end)

  describe("plain-table protocols", function()
    it("get a fresh instance per connection and leave the table unmodified", function()
      local P = { dataReceived = function(self, d) self.got = d end }
      local f = Factory.forProtocol(P)
      local a, b = f:buildProtocol(nil), f:buildProtocol(nil)
      assert.are_not.equal(a, b)
      a:makeConnection("T")
      a:dataReceived("x")
      assert.equal("x", a.got)
      assert.is_nil(b.got)
      assert.same({ "dataReceived" }, (function() local k = {} for n in pairs(P) do k[#k + 1] = n end return k end)())
      assert.equal(f, a.factory)
    end)

    it("look methods up in the table then in Protocol on every access", function()
      local P = {}
      local p = Factory.forProtocol(P):buildProtocol(nil)
      assert.equal(Protocol.connectionMade, p.connectionMade)
      local function dr() end
      P.dataReceived = dr
      assert.equal(dr, p.dataReceived)
      P.dataReceived = nil
      assert.equal(Protocol.dataReceived, p.dataReceived)
    end)

    it("use the table's __name as log prefix, Protocol otherwise", function()
      assert.equal("Chat", Factory.forProtocol({ __name = "Chat" }):buildProtocol():logPrefix())
      assert.equal("Protocol", Factory.forProtocol({}):buildProtocol():logPrefix())
    end)
  end)

  describe("Factory", function()
    it("starts on the first doStart and stops on the last doStop", function()
      local calls = {}
      local F = Factory:extend("F")
      F.noisy = false
      function F:startFactory() calls[#calls + 1] = "start" end
      function F:stopFactory() calls[#calls + 1] = "stop" end
      local f = F()
      f:doStart()
      f:doStart()
      assert.same({ "start" }, calls)
      assert.equal(2, f.numPorts)
      f:doStop()
      assert.same({ "start" }, calls)
      f:doStop()
      assert.same({ "start", "stop" }, calls)
      f:doStop()
      assert.same({ "start", "stop" }, calls)
    end)

    it("logs Starting/Stopping factory as Logger events: format, factory field, source and namespace, [-]", function()
      local events = {}
      local function obs(ev) events[#events + 1] = ev end
      log.addObserver(obs)
      finally(function() log.removeObserver(obs) end)
      local EchoFactory = Factory:extend("EchoFactory")
      local f = EchoFactory()
      log.callWithContext("Echo,3,10.0.0.7", f.doStart, f)
      f:doStop()
      assert.equal(2, #events)
      for i, what in ipairs({ "Starting", "Stopping" }) do
        local ev = events[i]
        assert.equal(what .. " factory {factory!r}", ev.format)
        assert.equal(f, ev.factory)
        assert.equal(f, ev.source)
        assert.equal("EchoFactory", ev.namespace)
        assert.equal("info", ev.level)
        assert.is_false(ev.isError)
        assert.equal("-", ev.system)
        assert.equal(what .. " factory " .. tostring(f), ev.text)
      end
    end)

    it("forProtocol works with a dot call and a subclass colon call", function()
      local P = Protocol:extend("P")
      assert.equal(P, Factory.forProtocol(P).protocol)
      local CF = protocol.ClientFactory:forProtocol(P)
      assert.is_true(protocol.ClientFactory:isinstance(CF))
      assert.equal(P, CF.protocol)
    end)

    describe("forProtocol on a subclass (Twisted's classmethod)", function()
      local P = Protocol:extend("P")
      local function check(cls, f)
        assert.equal(cls, getmetatable(f))
        assert.equal(P, f.protocol)
      end

      it("Factory.forProtocol and Factory:forProtocol make a Factory", function()
        check(Factory, Factory.forProtocol(P))
        check(Factory, Factory:forProtocol(P))
      end)

      it("ClientFactory.forProtocol and ClientFactory:forProtocol make a ClientFactory", function()
        check(protocol.ClientFactory, protocol.ClientFactory.forProtocol(P))
        check(protocol.ClientFactory, protocol.ClientFactory:forProtocol(P))
        check(protocol.ServerFactory, protocol.ServerFactory.forProtocol(P))
      end)

      it("ReconnectingClientFactory.forProtocol with a dot or a colon makes one that reconnects", function()
        local RCF = protocol.ReconnectingClientFactory
        for _, f in ipairs({ RCF.forProtocol(P), RCF:forProtocol(P) }) do
          check(RCF, f)
          assert.is_true(f.continueTrying)
          assert.equal(RCF.retry, f.retry)
        end
      end)

      it("a user subclass gets its init run with the extra arguments, dot or colon", function()
        local MyF = Factory:extend("MyF")
        function MyF:init(a, b) self.a, self.b, self.n = a, b, select("#", a, b) end
        local f1 = MyF.forProtocol(P, 1, 2)
        check(MyF, f1)
        assert.same({ 1, 2 }, { f1.a, f1.b })
        local f2 = MyF:forProtocol(P, 3, 4)
        check(MyF, f2)
        assert.same({ 3, 4 }, { f2.a, f2.b })
        local Deep = MyF:extend("Deep")  -- a grandchild, made later
        local f3 = Deep.forProtocol(P, "x", nil)
        check(Deep, f3)
        assert.same({ "x" }, { f3.a, f3.b })
        check(Deep, Deep:forProtocol(P))
        -- a subclass of ReconnectingClientFactory, two levels down
        local MyR = protocol.ReconnectingClientFactory:extend("MyR")
        check(MyR, MyR.forProtocol(P))
        local MyR2 = MyR:extend("MyR2")
        check(MyR2, MyR2.forProtocol(P))
        check(MyR2, MyR2:forProtocol(P))
      end)

      it("the extra arguments go to init, nils included, as Factory.forProtocol(P, ...)", function()
        local F = Factory:extend("F")
        function F:init(...) self.args = table.pack(...) end
        assert.same({ n = 3, 1, nil, 3 }, F.forProtocol(P, 1, nil, 3).args)
        assert.same({ n = 2, nil, 2 }, F:forProtocol(P, nil, 2).args)
        assert.same({ n = 0 }, F.forProtocol(P).args)
      end)

      it("looking it up twice gives the same function", function()
        local F = Factory:extend("F")
        assert.equal(F.forProtocol, F.forProtocol)
        assert.equal(protocol.ClientFactory.forProtocol, protocol.ClientFactory.forProtocol)
        assert.are_not.equal(F.forProtocol, protocol.ClientFactory.forProtocol)
      end)

      it("calls the current Factory.forProtocol when it is replaced (hot reload)", function()
        local F = Factory:extend("F")
        local bound = F.forProtocol
        local old = rawget(Factory, "forProtocol")
        local seen
        Factory.forProtocol = require("braid.class").classmethod(function(cls, Q, ...)
          seen = { cls, Q, select("#", ...) }
          return old(cls, Q, ...)
        end)
        local ok, err = pcall(function()
          check(F, bound(P, 1))
          assert.same({ F, P, 1 }, seen)
          check(F, F:forProtocol(P))
          assert.same({ F, P, 0 }, seen)
        end)
        Factory.forProtocol = old
        assert(ok, err)
      end)

      it("a subclass may override forProtocol", function()
        local F = Factory:extend("F")
        function F.forProtocol(Q) return "mine " .. tostring(Q.__name) end
        assert.equal("mine P", F.forProtocol(P))
        assert.equal("mine P", F:extend("G").forProtocol(P))
      end)
    end)

    it("buildProtocol sets factory on the instance", function()
      local P = Protocol:extend("P")
      local f = Factory.forProtocol(P)
      local p = f:buildProtocol({ type = "TCP" })
      assert.is_true(P:isinstance(p))
      assert.equal(f, p.factory)
    end)

    it("buildProtocol raises ValueError without a protocol, TypeError for one of the wrong type", function()
      assert.has_error(function() Factory():buildProtocol(nil) end, "ValueError: factory has no protocol")
      local f = Factory()
      f.protocol = 42
      assert.has_error(function() f:buildProtocol(nil) end,
        "TypeError: protocol must be a class or a table, got number")
    end)

    it("protocol.call falls back to the base method for plain factories", function()
      local f = { protocol = {} }
      local p = protocol.call(f, Factory, "buildProtocol", nil)
      assert.equal(f, p.factory)
      assert.is_nil(protocol.call({}, protocol.ClientFactory, "startedConnecting", nil))
    end)
  end)

  describe("ReconnectingClientFactory", function()
    local RCF = protocol.ReconnectingClientFactory

    it("has Twisted's defaults", function()
      local f = RCF()
      assert.equal(1.0, f.initialDelay)
      assert.equal(2.7182818284590451, f.factor)
      assert.equal(0.119626565582, f.jitter)
      assert.equal(3600, f.maxDelay)
      assert.is_nil(f.maxRetries)
      assert.is_true(f.continueTrying)
    end)

    it("retries with delays growing by factor up to maxDelay", function()
      local clock = Clock()
      local f = RCF()
      f.noisy, f.clock, f.jitter = false, clock, 0
      f.maxDelay = 10
      local connects = 0
      local connector = { connect = function() connects = connects + 1 end,
                          stopConnecting = function() end }
      f:clientConnectionFailed(connector, nil)
      assert.near(math.exp(1), f.delay, 1e-9)
      assert.equal(1, f.retries)
      clock:advance(f.delay)
      assert.equal(1, connects)
      f:clientConnectionLost(connector, nil)
      assert.near(math.exp(2), f.delay, 1e-9)
      f:retry()
      assert.equal(10, f.delay)
      f:resetDelay()
      assert.equal(1.0, f.delay)
      assert.equal(0, f.retries)
    end)

    it("gives up after maxRetries", function()
      local clock = Clock()
      local f = RCF()
      f.noisy, f.clock, f.maxRetries = false, clock, 2
      local connector = { connect = function() end }
      f:retry(connector)
      f:retry(connector)
      local n = #clock.calls
      f:retry(connector)
      assert.equal(n, #clock.calls)
      assert.equal(3, f.retries)
    end)

    it("stopTrying cancels the pending retry and stops the connector", function()
      local clock = Clock()
      local f = RCF()
      f.noisy, f.clock = false, clock
      local stopped, connects = 0, 0
      local connector = { connect = function() connects = connects + 1 end,
                          stopConnecting = function() stopped = stopped + 1 end }
      f:clientConnectionFailed(connector, nil)
      f:stopTrying()
      clock:advance(100)
      assert.equal(0, connects)
      assert.equal(1, stopped)
      assert.is_false(f.continueTrying)
      f:clientConnectionFailed(connector, nil)
      assert.equal(1, f.retries)
    end)

    -- spec/factory_diff_spec.lua found these two against Twisted 22.4
    it("stopTrying ignores NotConnectingError from the connector and raises anything else", function()
      local f = RCF()
      f.noisy, f.clock = false, Clock()
      f.connector = { stopConnecting = function() error(errors.NotConnectingError()) end }
      f:stopTrying()
      f = RCF()
      f.noisy, f.clock = false, Clock()
      f.connector = { stopConnecting = function() error(errors.ValueError("boom")) end }
      local ok, e = pcall(f.stopTrying, f)
      assert.is_false(ok)
      assert.is_true(errors.isinstance(e, errors.ValueError))
      assert.is_false(f.continueTrying)
    end)

    it("logs a retry whose delay is past any integer", function()
      local f = RCF()
      f.clock, f.jitter, f.initialDelay, f.maxDelay, f.factor = Clock(), 0, 1e18, 1e30, 10
      f:resetDelay()
      local lines = {}
      local saved = log.msg
      log.msg = function(s) lines[#lines + 1] = s end
      finally(function() log.msg = saved end)
      f:retry({ connect = function() end })
      assert.equal(1e19, f.delay)
      assert.truthy(lines[#lines]:find("will retry in 10000000000000000000 seconds", 1, true),
        lines[#lines])
    end)

    it("jitters the delay with a normal variate around the backoff", function()
      local f = RCF()
      f.noisy, f.clock = false, Clock()
      math.randomseed(7)
      local n, total, squares = 2000, 0, 0
      for _ = 1, n do
        f.delay = 1
        f:retry({ connect = function() end })
        total = total + f.delay
        squares = squares + f.delay ^ 2
      end
      local mean = total / n
      assert.near(math.exp(1), mean, 0.05)
      -- Twisted's normalvariate(delay, delay * jitter): a spread of e * 0.1196
      assert.near(math.exp(1) * f.jitter, math.sqrt(squares / n - mean ^ 2), 0.03)
    end)

    -- ported from Twisted's ReconnectingFactoryTests (test_factories.py)
    it("does not reconnect after stopTrying while connected, when the connection is lost", function()
      local f = RCF()
      f.noisy, f.protocol = false, protocol.Protocol
      f:buildProtocol(nil)
      f:stopTrying()
      f:clientConnectionLost({
        stopConnecting = function() error("Shouldn't be called, we're connected.") end,
        connect = function() error("Shouldn't be reconnecting.") end,
      }, nil)
      assert.is_false(f.continueTrying)
    end)

    it("stopTrying does not retry on the connector it stops", function()
      local f = RCF()
      f.noisy, f.clock = false, Clock()
      local connector = { attemptedRetry = false }
      function connector.stopConnecting(c) f:clientConnectionFailed(c, nil) end
      function connector.connect(c) c.attemptedRetry = true end
      f.connector = connector
      f:stopTrying()
      assert.is_false(connector.attemptedRetry)
      assert.are.same({}, f.clock.calls)  -- no retry left scheduled
      assert.is_nil(f._callID)
    end)

    it("schedules its retry on the clock it is given", function()
      local clock = Clock()
      local f = RCF()
      f.noisy, f.clock = false, clock
      f:clientConnectionLost({ connect = function() end }, nil)
      assert.equal(1, #clock.calls)
    end)

    it("retry without a connector raises ValueError", function()
      local f = RCF()
      f.noisy = false
      local ok, e = pcall(f.retry, f)
      assert.is_false(ok)
      assert.is_true(errors.ValueError:isinstance(e))
    end)
  end)
end)
