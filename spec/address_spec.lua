-- spec for lua/braid/address.lua: the values Twisted 22.4's
-- twisted.internet.address gives for the same calls
local address = require "braid.address"

describe("braid.address", function()
  it("IPv6Address defaults flowInfo and scopeID to 0, as fields", function()
    local a = address.IPv6Address("TCP", "::1", 80)
    assert.same({ "TCP", "::1", 80, 0, 0 }, { a.type, a.host, a.port, a.flowInfo, a.scopeID })
    assert.equal("IPv6Address(type='TCP', host='::1', port=80, flowInfo=0, scopeID=0)", tostring(a))
  end)

  it("prints a missing UNIX name as Python's None", function()
    assert.equal("UNIXAddress(None)", tostring(address.UNIXAddress(nil)))
    assert.equal("UNIX", address.UNIXAddress(nil).type)
  end)

  it("compares every field, whichever side lacks one", function()
    local full = address.IPv4Address("TCP", "h", 1)
    local nohost = address.IPv4Address("TCP", nil, 1)
    assert.is_true(full == address.IPv4Address("TCP", "h", 1))
    assert.is_false(full == nohost)
    assert.is_false(nohost == full)
    assert.is_false(full == address.IPv4Address("TCP", "h", 2))
    assert.is_false(full == address.IPv4Address("UDP", "h", 1))
  end)
end)
