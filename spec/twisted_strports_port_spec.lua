-- spec: twins of Twisted 22.4's twisted/test/test_strports.py (Tests for
-- twisted.application.strports): one describe per Twisted TestCase, each
-- it named after the Twisted test method. braid has no
-- twisted.application services; strports.service is serverFromString plus
-- a service that listens with the factory, so the twin asserts the same of
-- braid.endpoints.serverFromString and the endpoint's listen.
-- docs/twisted-tests.md maps every test method to its spec (or the reason
-- it has none).
local endpoints = require "braid.endpoints"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local testing = require "braid.testing"

describe("ServiceTests (test_strports)", function()
  it("test_service", function()
    -- the cake is a lie: parsing must not touch the reactor
    local touched = {}
    local reactor = setmetatable({}, { __index = function(_, k) touched[#touched + 1] = k end })
    local aFactory = protocol.Factory()
    local aGoodPort = 1337
    local ep = endpoints.serverFromString(reactor, "tcp:" .. tostring(aGoodPort))
    assert.is_true(endpoints.TCP4ServerEndpoint:isinstance(ep))
    assert.equal(aGoodPort, ep._port)
    assert.is_true(rawequal(reactor, ep._reactor))
    assert.same({}, touched)

    -- the service's factory: what the endpoint listens with
    local r = testing.MemoryReactor()
    local port
    endpoints.serverFromString(r, "tcp:" .. tostring(aGoodPort)):listen(aFactory)
      :addCallback(function(p) port = p end)
    assert.equal(1, #r.tcpServers)
    assert.equal(aGoodPort, r.tcpServers[1][1])
    assert.is_true(rawequal(aFactory, r.tcpServers[1][2]))
    assert.equal(aGoodPort, port:getHost().port)

    -- _raiseSynchronously: a listen that fails has failed by the time
    -- listen returns (the Deferred already holds the CannotListenError)
    local Raising = testing.MemoryReactor:extend("Raising")
    function Raising:listenTCP(p) error(errors.CannotListenError("", p, "in use"), 0) end
    local reason
    endpoints.serverFromString(Raising(), "tcp:" .. tostring(aGoodPort)):listen(aFactory)
      :addErrback(function(f) reason = f end)
    assert.is_not_nil(reason)
    assert.equal(errors.CannotListenError, reason.type)
    assert.equal(aGoodPort, reason.value.port)
  end)
end)
