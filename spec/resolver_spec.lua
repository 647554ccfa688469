-- spec for lua/braid/resolver.lua and runtime/resolve.c: non-blocking name resolution
local reactor = require "braid.reactor"
local resolver = require "braid.resolver"
local defer = require "braid.defer"
local errors = require "braid.error"

local loop = require "helpers.loop"
local spin = loop.spin

local result = loop.result

describe("braid.resolver", function()
  after_each(function() resolver.installResolver(nil) end)

  it("runs at most 16 lookups at once; the rest wait, and a waiting one cancelled never runs", function()
    local core = require "braid.core"
    local r0, w0 = core.resolve_stats()  -- slow lookups of other specs may still run
    assert.equal(0, w0)
    local got, reqs = {}, {}
    for i = 1, 40 do
      reqs[i] = core.getaddrinfo("localhost", function(list) got[#got + 1] = { i, list } end)
    end
    local running, waiting = core.resolve_stats()
    assert.equal(16, running)
    assert.equal(24 + r0, waiting)
    for i = 17, 30 do reqs[i]:cancel() end  -- still waiting: the first 16 run
    assert.equal(10 + r0, select(2, core.resolve_stats()))
    spin(function() return #got == 26 end)
    for _ = 1, 20 do reactor.iterate(0.005) end
    assert.equal(26, #got)
    local seen = {}
    for _, g in ipairs(got) do
      seen[g[1]] = true
      assert.is_true(#g[2] >= 1)
    end
    for i = 1, 40 do assert.equal(i < 17 or i > 30, seen[i] == true, "lookup " .. i) end
    running, waiting = core.resolve_stats()
    assert.is_true(running <= r0)
    assert.equal(0, waiting)
  end)

  -- each waiting lookup held an eventfd: 1,000 of them took every
  -- descriptor of the process, and the next lookup raised EMFILE
  it("gives a descriptor only to the lookups that run, not to those that wait", function()
    local core = require "braid.core"
    local pid = assert(io.open("/proc/self/stat")):read("n")
    local function fds()
      local p = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
      local n = p:read("n")
      p:close()
      return n
    end
    local r0 = core.resolve_stats()
    local before = fds()
    local got = 0
    for _ = 1, 200 do core.getaddrinfo("localhost", function() got = got + 1 end) end
    local running, waiting = core.resolve_stats()
    assert.equal(16, running)
    assert.equal(184 + r0, waiting)
    -- an eventfd per running lookup, and what its thread may have open
    -- just now (/etc/hosts, nsswitch's files): at most two each
    local after = fds()
    assert.is_true(after <= before + 2 * (16 - r0),
      ("descriptors: %d -> %d (%d running before)"):format(before, after, r0))
    spin(function() return got == 200 end)
    assert.equal(0, select(2, core.resolve_stats()))
  end)

  it("resolves localhost from /etc/hosts without blocking", function()
    local d = reactor.getHostByName("localhost")
    assert.is_false(d.called)  -- the lookup runs off the loop: the answer comes in a later turn
    local list = result(d)
    assert.is_true(#list >= 1)
    local hosts = {}
    for _, a in ipairs(list) do hosts[a.host] = a.family end
    assert.is_true(hosts["127.0.0.1"] == "INET" or hosts["::1"] == "INET6")
  end)

  it("wakes a running loop as soon as a lookup finishes", function()
    local t0, took = reactor.seconds(), nil
    reactor.getHostByName("localhost"):addBoth(function()
      took = reactor.seconds() - t0
      reactor.stop()
    end)
    local guard = reactor.callLater(3, reactor.stop)
    reactor.run()
    if guard:active() then guard:cancel() end
    assert.is_not_nil(took, "the lookup never finished")
    assert.is_true(took < 1, ("took %.2f s"):format(took))
  end)

  it("resolve fires with the first address string", function()
    assert.equal("127.0.0.1", result(reactor.resolve("127.0.0.1")))
    assert.equal("::1", result(reactor.resolve("::1")))
  end)

  -- API.md: "the first address string" of either family, where Twisted's
  -- reactor.resolve asks for IPv4 only (docs/resolver.md says so); an
  -- installed resolver is asked with no family and its first answer wins
  it("resolve gives the first address of either family and asks for no family", function()
    assert.equal("fe80::1%lo", result(reactor.resolve("fe80::1%lo")))
    local asked = {}
    reactor.installResolver({ getHostByName = function(_, name, opts)
      asked[#asked + 1] = { name, opts.family == nil }
      return defer.succeed({ { family = "INET6", host = "2001:db8::7" },
                             { family = "INET", host = "192.0.2.7" } })
    end })
    assert.equal("2001:db8::7", result(reactor.resolve("example.org")))
    assert.same({ { "example.org", true } }, asked)
  end)

  -- Twisted's GAIResolver takes addressTypes ([IPv4Address],
  -- [IPv6Address], both or None) and asks getaddrinfo for AF_INET,
  -- AF_INET6 or AF_UNSPEC; braid's getHostByName took no family
  it("getHostByName asks for the family in opts.family only", function()
    local v4 = result(reactor.getHostByName("localhost", { family = "INET" }))
    assert.is_true(#v4 >= 1)
    for _, a in ipairs(v4) do assert.equal("INET", a.family) end
    local v6 = result(reactor.getHostByName("localhost", { family = "INET6" }))
    if type(v6) == "table" and not errors.isinstance(v6.value) then  -- /etc/hosts may list ::1
      for _, a in ipairs(v6) do assert.equal("INET6", a.family) end
    else
      assert.is_truthy(errors.isinstance(v6.value, errors.DNSLookupError), tostring(v6))
    end
    -- a literal of the other family is no address of the one asked for
    local r = result(reactor.getHostByName("::1", { family = "INET" }))
    assert.is_truthy(errors.isinstance(r.value, errors.DNSLookupError), tostring(r))
    r = result(reactor.getHostByName("127.0.0.1", { family = "INET6" }))
    assert.is_truthy(errors.isinstance(r.value, errors.DNSLookupError), tostring(r))
    assert.same({ { family = "INET6", host = "::1" } }, result(reactor.getHostByName("::1", { family = "INET6" })))
    assert.same({ { family = "INET", host = "10.1.2.3" } },
      result(reactor.getHostByName("10.1.2.3", { family = "INET" })))
  end)

  -- a scoped IPv6 literal: getaddrinfo answers it (from no file and no
  -- server); braid.resolver answers it itself unless the family differs,
  -- so core.getaddrinfo is asked directly
  it("core.getaddrinfo asks for both families without a family, else for the one given", function()
    local core = require "braid.core"
    local name, got = "fe80::1%lo", {}
    local function record(i)
      return function(list, msg) got[i] = list and list[1] and list[1].family or ("failed: " .. tostring(msg)) end
    end
    core.getaddrinfo(name, record(1))
    core.getaddrinfo(name, record(2), nil)
    core.getaddrinfo(name, record(3), "INET6")
    core.getaddrinfo(name, record(4), "INET")
    core.getaddrinfo(name, record(5), "UNSPEC")
    spin(function() return got[1] and got[2] and got[3] and got[4] and got[5] end)
    assert.equal("INET6", got[1])
    assert.equal("INET6", got[2])
    assert.equal("INET6", got[3])
    assert.matches("^failed: ", got[4])
    assert.equal("INET6", got[5])
    local ok, e = pcall(core.getaddrinfo, name, record(6), "INET4")
    assert.is_false(ok)
    assert.equal("bad argument #3 to 'braid.core.getaddrinfo' (invalid option 'INET4')", e.message)
  end)

  it("refuses a getHostByName family other than INET and INET6", function()
    assert.has_error(function() reactor.getHostByName("localhost", { family = "UNSPEC" }) end,
      "ValueError: bad argument #2 to 'getHostByName' (family must be \"INET\" or \"INET6\", got \"UNSPEC\")")
    assert.has_error(function() reactor.getHostByName("localhost", 5) end,
      "TypeError: bad argument #2 to 'getHostByName' (table expected, got number)")
  end)

  it("returns numeric addresses at once", function()
    local d = reactor.getHostByName("10.1.2.3")
    assert.is_true(d.called)
    assert.same({ { family = "INET", host = "10.1.2.3" } }, d.result)
  end)

  it("fails an unknown name with DNSLookupError", function()
    local r = result(reactor.getHostByName("no-such-host.invalid"))
    assert.is_truthy(r:check(errors.DNSLookupError))
  end)

  it("uses an installed resolver and returns the previous one", function()
    local asked
    local fake = { getHostByName = function(_, name, opts)
      asked = { name, opts and opts.timeout }
      return defer.succeed({ { family = "INET6", host = "2001:db8::1" } })
    end }
    local prev = reactor.installResolver(fake)
    assert.equal(resolver.defaultResolver, prev)
    assert.equal("2001:db8::1", result(reactor.resolve("example.org", 3)))
    assert.same({ "example.org", 3 }, asked)
  end)

  it("resolve answers an address literal and the empty name itself, as Twisted's reactor.resolve",
    function()
    -- an installed resolver is not asked (it was: a fake knowing names only
    -- failed resolve("10.0.0.1")); the empty name failed with DNSLookupError
    local asked = {}
    reactor.installResolver({ getHostByName = function(_, name)
      asked[#asked + 1] = name
      return defer.fail(errors.DNSLookupError(name))
    end })
    for _, name in ipairs({ "10.0.0.1", "::1", "fe80::1%lo", "0.0.0.0" }) do
      local d = reactor.resolve(name, 1)
      assert.is_true(d.called)
      assert.equal(name, d.result)
    end
    local d = reactor.resolve("")
    assert.is_true(d.called)
    assert.equal("0.0.0.0", d.result)
    assert.same({}, asked)
    resolver.installResolver(nil)
    assert.equal("0.0.0.0", result(reactor.resolve("")))
  end)

  it("fails resolve with DNSLookupError after its timeout", function()
    reactor.installResolver({ getHostByName = function() return defer.Deferred() end })
    local r = result(reactor.resolve("slow.example", 0.05))
    assert.is_truthy(r:check(errors.DNSLookupError))
  end)

  -- an empty answer raised "attempt to index a nil value" inside resolve's
  -- callback: an unhandled error, and with a timeout a Deferred that never fired
  it("fails resolve with DNSLookupError when the resolver answers an empty list", function()
    reactor.installResolver({ getHostByName = function() return defer.succeed({}) end })
    for _, timeout in ipairs({ false, 1 }) do
      local r = result(reactor.resolve("empty.example", timeout or nil))
      assert.is_truthy(r:check(errors.DNSLookupError), tostring(r))
      assert.equal("empty.example: no address", r.value.message)
    end
  end)

  it("takes a resolve timeout of 0 as none, as connectTCP's", function()
    local r = result(reactor.resolve("localhost", 0))  -- was DNSLookupError at once
    assert.is_true(r == "127.0.0.1" or r == "::1", tostring(r))
  end)

  it("refuses a resolver without getHostByName", function()
    assert.has_error(function() reactor.installResolver({}) end,
      "TypeError: bad argument #1 to 'installResolver' (resolver with getHostByName expected, got table)")
  end)

  it("cancels a pending lookup", function()
    local d = reactor.getHostByName("cancel-me.invalid")
    d:addErrback(function(f) return f:trap(defer.CancelledError) end)
    d:cancel()
    assert.is_true(d.called)
  end)
end)
