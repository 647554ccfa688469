-- spec: twins of Twisted's own tests of name resolution and address
-- predicates (twisted/internet/test/test_resolver.py,
-- twisted/test/test_abstract.py) that no other spec covered: one describe
-- per Twisted TestCase, each it named after the Twisted test method, the
-- same scenario and the same asserted values. No network: /etc/hosts'
-- localhost, literals, and installed resolvers only. docs/twisted-tests.md
-- maps every test method to its spec (or the reason it has none).
local address = require "braid.address"
local errors = require "braid.error"
local defer = require "braid.defer"
local reactor = require "braid.reactor"
local resolver = require "braid.resolver"

local result = require("helpers.loop").result

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

-- Twisted's GAIResolver takes a patched getaddrinfo; braid's default
-- resolver is the system's getaddrinfo, asked here for literals and
-- /etc/hosts' localhost only
describe("HostnameResolutionTests (test_resolver.py)", function()
  it("test_resolveOneIPv6Host", function()
    local d = reactor.getHostByName("::1", { family = "INET6" })
    assert.same({ { family = "INET6", host = "::1" } }, result(d))
  end)

  it("test_resolveBoth", function()
    -- no family (Twisted's addressTypes=None) or both: either family answers
    assert.same({ { family = "INET", host = "127.0.0.1" } }, result(reactor.getHostByName("127.0.0.1")))
    assert.same({ { family = "INET6", host = "::1" } }, result(reactor.getHostByName("::1", {})))
    local list = result(reactor.getHostByName("localhost"))
    local v4 = false
    for _, a in ipairs(list) do v4 = v4 or (a.family == "INET" and a.host == "127.0.0.1") end
    assert.is_true(v4)
  end)
end)

-- Twisted's IResolverSimple (one address) and IHostnameResolver are one
-- interface in braid (docs/resolver.md): an installed resolver answers
-- getHostByName with a list, and reactor.resolve takes its first address
-- as ComplexResolverSimplifier takes the first addressResolved
describe("LegacyCompatibilityTests (test_resolver.py)", function()
  after_each(function() resolver.installResolver(nil) end)

  local function silly()
    local requests = {}
    return requests, { getHostByName = function(_, name)
      requests[#requests + 1] = { name = name, d = defer.Deferred() }
      return requests[#requests].d
    end }
  end

  it("test_success", function()
    local requests, simple = silly()
    reactor.installResolver(simple)
    local d = reactor.resolve("example.com")
    assert.equal(1, #requests)
    assert.equal("example.com", requests[1].name)
    assert.is_false(d.called)
    requests[1].d:callback({ { family = "INET", host = "192.168.1.1" } })
    assert.is_true(d.called)
    assert.equal("192.168.1.1", d.result)
  end)

  it("test_failure", function()
    local requests, simple = silly()
    reactor.installResolver(simple)
    local d = reactor.resolve("example.com")
    assert.is_false(d.called)
    requests[1].d:errback(errors.DNSLookupError("nope"))
    local f = result(d)
    assert.is_truthy(f:check(errors.DNSLookupError))
    assert.equal("nope", f.value.message)
  end)

  -- a resolver's error that was not DNSLookupError was dropped unlogged:
  -- connectTCP failed with DNSLookupError and nothing said why
  it("test_error", function()
    local requests, simple = silly()
    reactor.installResolver(simple)
    local logsink = require "helpers.logsink"
    local events, obs = logsink.collect()
    local f = require("braid.protocol").ClientFactory()
    f.noisy = false
    local reasons = {}
    function f.clientConnectionFailed(_, _, reason) reasons[#reasons + 1] = reason end
    reactor.connectTCP("example.com", 80, f)
    assert.equal(1, #requests)
    requests[1].d:errback(errors.ValueError("zow"))
    require("braid.log").removeObserver(obs)
    assert.equal(1, #reasons)
    assert.is_truthy(reasons[1]:check(errors.DNSLookupError))
    local logged = {}
    for _, ev in ipairs(events) do
      if ev.failure and ev.failure:check(errors.ValueError) then logged[#logged + 1] = ev end
    end
    assert.equal(1, #logged)
    assert.equal("while looking up {name}", logged[1].format)
    assert.equal("braid.resolver", logged[1].namespace)
    assert.equal("example.com", logged[1].name)
    assert.equal("zow", logged[1].failure.value.message)
  end)

  it("test_simplifier", function()
    reactor.installResolver({ getHostByName = function(_, name)
      if name == "example.com" then
        return defer.succeed({ { family = "INET", host = "192.168.3.4" } })
      end
      return defer.fail(errors.DNSLookupError(name))
    end })
    local success = reactor.resolve("example.com")
    local failure = reactor.resolve("nx.example.com")
    assert.is_truthy(result(failure):check(errors.DNSLookupError))
    assert.equal("192.168.3.4", result(success))
  end)
end)

describe("ReactorInstallationTests (test_resolver.py)", function()
  after_each(function() resolver.installResolver(nil) end)

  it("test_installingOldStyleResolver", function()
    local it_ = { getHostByName = function() return defer.succeed({ { family = "INET", host = "10.9.8.7" } }) end }
    assert.equal(resolver.defaultResolver, reactor.installResolver(it_))
    assert.equal("10.9.8.7", result(reactor.resolve("anything.example")))
    assert.equal(it_, reactor.installResolver(nil))
  end)

  it("test_defaultToGAIResolver", function()
    local prev = reactor.installResolver(nil)
    assert.equal(resolver.defaultResolver, prev)
    -- the default is the system's getaddrinfo: /etc/hosts applies
    assert.equal("127.0.0.1", result(reactor.resolve("localhost")))
  end)
end)
