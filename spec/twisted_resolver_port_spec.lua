-- spec: twins of Twisted's own tests of name resolution and address
-- predicates (twisted/internet/test/test_resolver.py,
-- twisted/test/test_abstract.py) that no other spec covered: one describe
-- per Twisted TestCase, each it named after the Twisted test method, the
-- same scenario and the same asserted values. No network: /etc/hosts'
-- localhost, literals, and installed resolvers only. docs/twisted-tests.md
-- maps every test method to its spec (or the reason it has none).
local address = require "braid.address"
local errors = require "braid.error"

local isIPAddress, isIPv6Address = address.isIPAddress, address.isIPv6Address

describe("AddressTests (test_abstract.py)", function()
  it("test_decimalDotted", function()
    assert.is_true(isIPAddress("0.1.2.3"))
    assert.is_true(isIPAddress("252.253.254.255"))
  end)

  it("test_shortDecimalDotted", function()
    assert.is_false(isIPAddress("0"))
    assert.is_false(isIPAddress("0.1"))
    assert.is_false(isIPAddress("0.1.2"))
    assert.is_false(isIPAddress("0.1.2.3.4"))
  end)

  it("test_invalidLetters", function()
    assert.is_false(isIPAddress("a.2.3.4"))
    assert.is_false(isIPAddress("1.b.3.4"))
  end)

  it("test_invalidPunctuation", function()
    assert.is_false(isIPAddress(","))
    assert.is_false(isIPAddress("1,2"))
    assert.is_false(isIPAddress("1,2,3"))
    assert.is_false(isIPAddress("1.,.3,4"))
  end)

  it("test_emptyString", function()
    assert.is_false(isIPAddress(""))
  end)

  it("test_invalidNegative", function()
    assert.is_false(isIPAddress("-1"))
    assert.is_false(isIPAddress("1.-2"))
    assert.is_false(isIPAddress("1.2.-3"))
    assert.is_false(isIPAddress("1.2.-3.4"))
  end)

  it("test_invalidPositive", function()
    assert.is_false(isIPAddress("256.0.0.0"))
    assert.is_false(isIPAddress("0.256.0.0"))
    assert.is_false(isIPAddress("0.0.256.0"))
    assert.is_false(isIPAddress("0.0.0.256"))
    assert.is_false(isIPAddress("256.256.256.256"))
  end)

  -- Lua strings are bytes: one case stands for Python's str and bytes
  it("test_unicodeAndBytes", function()
    assert.is_false(isIPAddress("256.0.0.0"))
    assert.is_true(isIPAddress("252.253.254.255"))
  end)

  it("test_nonIPAddressFamily", function()
    local ok, err = pcall(isIPAddress, "anything", "IPX")
    assert.is_false(ok)
    assert.is_true(errors.ValueError:isinstance(err), tostring(err))
    assert.equal("bad argument #2 to 'isIPAddress' (unknown address family \"IPX\")", err.message)
  end)

  it("test_nonASCII", function()
    assert.is_false(isIPAddress("\xff.notascii"))
    assert.is_false(isIPAddress("\u{4321}.notascii"))
  end)

  -- what Twisted 22.4's isIPAddress / isIPv6Address answer (checked with
  -- /usr/bin/python3): leading zeros, inet_aton's short forms, blanks, a
  -- NUL byte (Python's inet_pton refuses it) and IPv6 scopes
  it("answers the edge cases as Twisted 22.4's isIPAddress and isIPv6Address", function()
    local cases = {
      -- addr, isIPAddress, isIPv6Address
      { "1.2.3.4", true, false }, { "127.1", false, false }, { "0x7f.0.0.1", false, false },
      { "01.02.03.04", false, false }, { "1.2.3.004", false, false },
      { "1.2.3.4\0x", false, false }, { "::1\0", false, false },
      { " 1.2.3.4", false, false }, { "::1 ", false, false }, { "1.2.3.4%x", false, false },
      { "::1%", false, true }, { "::1%eth0", false, true }, { "fe80::1%1", false, true },
      { "::1%" .. ("x"):rep(100), false, true },
      { "::ffff:1.2.3.4", false, true }, { "0000:0000:0000:0000:0000:0000:0000:0001", false, true },
      { ":::", false, false }, { "1::2::3", false, false }, { "00000::1", false, false },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], isIPAddress(c[1]), ("isIPAddress(%q)"):format(c[1]))
      assert.equal(c[3], isIPv6Address(c[1]), ("isIPv6Address(%q)"):format(c[1]))
      assert.equal(c[3], isIPAddress(c[1], "INET6"), ("isIPAddress(%q, \"INET6\")"):format(c[1]))
    end
    assert.is_true(isIPAddress("10.0.0.1", "INET"))
  end)

  it("raises TypeError for an address that is not a string", function()
    local ok, err = pcall(isIPv6Address, 1)
    assert.is_false(ok)
    assert.is_true(errors.TypeError:isinstance(err), tostring(err))
    assert.equal("bad argument #1 to 'isIPv6Address' (string expected, got number)", err.message)
  end)
end)
