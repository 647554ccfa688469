-- spec: twins of Twisted's own tests of endpoints, addresses and error
-- classes (twisted/internet/test/test_endpoints.py,
-- twisted/internet/test/test_address.py, twisted/test/test_error.py) that
-- no other spec covered: one describe per Twisted TestCase, each it named
-- after the Twisted test method, the same scenario and the same asserted
-- values. docs/twisted-tests.md maps every test method to its spec (or the
-- reason it has none).
local errors = require "braid.error"

describe("StringificationTests (test_error)", function()
  it("test_connectingCancelledError", function()
    local addr = {}
    local e = errors.ConnectingCancelledError(addr)
    assert.equal(addr, e.address)
  end)
end)
