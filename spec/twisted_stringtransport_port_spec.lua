-- spec/twisted_stringtransport_port_spec.lua: braid twins of the tests in
-- Twisted's twisted/test/test_stringtransport.py (the tests of
-- twisted.test.proto_helpers, now twisted/internet/test/test_testing.py)
-- that neither spec/twisted_testing_port_spec.lua nor another spec asserts
-- in the same scenario (docs/twisted-tests.md maps each Twisted test to
-- its spec). One describe per Twisted TestCase class, each `it` named after
-- the Twisted test method.
local testing = require "braid.testing"
local errors = require "braid.error"

local StringTransport = testing.StringTransport

-- Twisted's assertRaises(cls, f, ...): the error raised, of class cls
local function raises(cls, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected " .. tostring(cls) .. ", nothing raised")
  assert.is_true(cls:isinstance(e), "expected another error class, got " .. tostring(e))
  return e
end

describe("StringTransportTests", function()
  local transport
  before_each(function() transport = StringTransport() end)

  it("test_initialProducerState", function()
    assert.are.equal("producing", transport.producerState)
  end)

  it("test_pauseProducing", function()
    transport:pauseProducing()
    assert.are.equal("paused", transport.producerState)
  end)

  it("test_resumeProducing", function()
    transport:pauseProducing()
    transport:resumeProducing()
    assert.are.equal("producing", transport.producerState)
  end)

  it("test_stopProducing", function()
    transport:stopProducing()
    assert.are.equal("stopped", transport.producerState)
  end)

  it("test_stoppedTransportCannotResume", function()
    transport:stopProducing()
    local e = raises(errors.RuntimeError, transport.resumeProducing, transport)
    assert.are.equal("Cannot resume a stopped producer", e.message)
    assert.are.equal("stopped", transport.producerState)
  end)

  it("test_disconnectingTransportCannotResume", function()
    transport:loseConnection()
    local e = raises(errors.RuntimeError, transport.resumeProducing, transport)
    assert.are.equal("Cannot resume producing after loseConnection", e.message)
    assert.are.equal("producing", transport.producerState)
  end)

  it("test_loseConnectionSetsDisconnecting", function()
    assert.is_false(transport.disconnecting)
    transport:loseConnection()
    assert.is_true(transport.disconnecting)
  end)
end)

-- Twisted's verifyObject(IReactorTCP / IReactorSSL / IReactorUNIX, r): in
-- Lua, that each method of the three interfaces is there and callable
local REACTOR_METHODS = { "listenTCP", "connectTCP", "listenSSL", "connectSSL",
  "listenUNIX", "connectUNIX" }

describe("ReactorTests", function()
  it("test_memoryReactorProvides", function()
    local memoryReactor = testing.MemoryReactor()
    for _, name in ipairs(REACTOR_METHODS) do
      assert.are.equal("function", type(memoryReactor[name]), name)
    end
  end)

  it("test_raisingReactorProvides", function()
    local listenE, connectE = errors.ValueError("listen"), errors.RuntimeError("connect")
    local raisingReactor = testing.RaisingMemoryReactor(listenE, connectE)
    for _, name in ipairs(REACTOR_METHODS) do
      assert.are.equal("function", type(raisingReactor[name]), name)
      local want = name:find("^listen") and listenE or connectE
      assert.are.equal(want, select(2, pcall(raisingReactor[name], raisingReactor, 0, {})), name)
    end
  end)
end)
