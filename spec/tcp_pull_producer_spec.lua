-- spec for pull producers on TCP transports registered after a write:
-- Twisted queues every write, so the flush of one made just before the
-- producer registered asks the producer again; braid sends such a write at
-- once and must ask all the same (Twisted's test_resumeProducingThrows and
-- test_resumeProducingAbort hung on it: hunt15-a).
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local errors = require "braid.error"
local protocol = require "braid.protocol"

local loop = require "helpers.loop"

local Factory, ClientFactory = protocol.Factory, protocol.ClientFactory

describe("a pull producer registered after a write", function()
  it("asks a pull producer again after a write made just before it registered", function()
    local calls = {}
    local P = protocol.Protocol:extend("P")  -- the client: its writes go out at once
    function P:connectionMade()
      local t = self.transport
      t:write("header;")
      t:registerProducer({
        resumeProducing = function()
          calls[#calls + 1] = "resume"
          if #calls == 2 then  -- nothing to send the first time
            t:write("body;")
            t:unregisterProducer()
            t:loseConnection()
          end
        end,
        stopProducing = function() calls[#calls + 1] = "stop" end,
      }, false)
    end
    local done = defer.Deferred()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade() self.got = {} end
    function S:dataReceived(d) self.got[#self.got + 1] = d end
    function S:connectionLost(r) done:callback({ table.concat(self.got), r }) end
    local port = reactor.listenTCP(0, Factory.forProtocol(S), 50, "127.0.0.1")
    reactor.connectTCP("127.0.0.1", port:getHost().port, ClientFactory.forProtocol(P))
    local got = loop.wait(done)
    assert.are.equal("header;body;", got[1])
    assert.are.same({ "resume", "resume" }, calls)
    assert.is_true(errors.isinstance(got[2].value, errors.ConnectionDone), tostring(got[2].value))
    loop.wait(port:stopListening())
  end)

  it("asks a pull producer once when no write came just before it (as Twisted)", function()
    local calls, registered = 0, defer.Deferred()
    local S = protocol.Protocol:extend("S")
    function S:connectionMade()
      local t = self.transport
      t:write("hello;")
      reactor.callLater(0.05, function()  -- a later turn: that write is long gone
        t:registerProducer({
          resumeProducing = function() calls = calls + 1 end,
          stopProducing = function() end,
        }, false)
        reactor.callLater(0.05, function() registered:callback(t) end)
      end)
    end
    local port = reactor.listenTCP(0, Factory.forProtocol(S), 50, "127.0.0.1")
    local C = protocol.Protocol:extend("C")
    reactor.connectTCP("127.0.0.1", port:getHost().port, ClientFactory.forProtocol(C))
    local t = loop.wait(registered)
    assert.are.equal(1, calls)
    t:unregisterProducer()
    t:abortConnection()
    loop.wait(port:stopListening())
  end)
end)
