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

  it("isIPAddress and isIPv6Address refuse an address that is not a string", function()
    local ok, e = pcall(address.isIPAddress, nil)
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'isIPAddress' (string expected, got nil)", e.message)
    ok, e = pcall(address.isIPv6Address, 6)
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'isIPv6Address' (string expected, got number)", e.message)
  end)

  -- Twisted 22.4: HostnameAddress(b"example.com", 80) has hostname and
  -- port only, reprs as HostnameAddress(hostname=b'example.com', port=80)
  -- and equals no IPv4Address of the same name
  it("HostnameAddress has hostname and port, compares by value and prints as Twisted's repr", function()
    local a = address.HostnameAddress("example.com", 80)
    local fields = {}
    for k, v in pairs(a) do fields[k] = v end
    assert.same({ hostname = "example.com", port = 80 }, fields)
    assert.equal("HostnameAddress(hostname='example.com', port=80)", tostring(a))
    assert.equal("HostnameAddress(hostname=\"it's\", port=None)", tostring(address.HostnameAddress("it's")))
    assert.is_true(a == address.HostnameAddress("example.com", 80))
    assert.is_false(a == address.HostnameAddress("example.com", 81))
    assert.is_false(a == address.IPv4Address("TCP", "example.com", 80))
    assert.is_true(address.isAddress(a))
    local ok, e = pcall(address.HostnameAddress, 80)
    assert.is_false(ok)
    assert.equal("bad argument #1 to 'HostnameAddress' (string expected, got number)", e.message)
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
