-- spec: twins of Twisted's tests of the POSIX reactor base, its file
-- descriptors and socket adoption (twisted/internet/test/test_posixbase.py,
-- test_socket.py and test_abstract.py) that no other spec covered: one
-- describe per Twisted TestCase, each it named after the Twisted test
-- method, the same scenario and the same asserted values. Real sockets on
-- 127.0.0.1, port 0. docs/twisted-tests.md maps every test method to its
-- spec (or the reason it has none).
local reactor = require "braid.reactor"
local errors = require "braid.error"
local failure = require "braid.failure"
local address = require "braid.address"
local threads = require "braid.threads"
local core = require "braid.core"
local socket = require "socket"

local loop = require "helpers.loop"
local proc = require "helpers.proc"

-- a socket bound to 127.0.0.1 (so it has a descriptor), for the reactor's
-- reader and writer sets; closed by the caller
local function bound_socket()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  return s
end

-- a descriptor on socket s that is never called (the loop is not turned
-- while it is added)
local function descriptor(s)
  return { fileno = function() return s:getfd() end, doRead = function() end,
           doWrite = function() end, connectionLost = function() end }
end

local function has(list, v)
  for _, x in ipairs(list) do if x == v then return true end end
  return false
end

describe("PosixReactorBaseTests", function()
  -- Twisted's waker is an internal reader in _readers; braid's wake-up of
  -- the loop (threads, signals) is libevent's and in no list (docs/fdesc.md)
  it("test_wakerIsInternalReader", function()
    assert.equal(42, loop.wait(threads.deferToThread(function() return 42 end)))
    assert.same({}, reactor.getReaders())
    assert.same({}, reactor.getWriters())
  end)

  it("test_removeAllSkipsInternalReaders", function()
    local s = bound_socket()
    -- one finally for both (busted keeps only the last one given)
    finally(function() s:close(); package.loaded["braid_posix_port_spec"] = nil end)
    local extra = descriptor(s)
    reactor.addReader(extra)
    assert.same({ extra }, reactor.removeAll())
    -- what the loop has for itself is left alone: a worker's result and a
    -- worker's callFromThread still wake it
    assert.equal(7, loop.wait(threads.deferToThread(function() return 7 end)))
    local called = false
    package.loaded["braid_posix_port_spec"] = { call = function() called = true end }
    reactor.callInThread(function()
      require("braid.threads").callFromThread("braid_posix_port_spec.call")
    end)
    loop.spin(function() return called end)
    assert.same({}, reactor.getReaders())
  end)

  it("test_removeAllReturnsRemovedDescriptors", function()
    local s1, s2 = bound_socket(), bound_socket()
    finally(function() s1:close() s2:close() end)
    local reader, writer = descriptor(s1), descriptor(s2)
    reactor.addReader(reader)
    reactor.addWriter(writer)
    local removed = reactor.removeAll()
    assert.equal(2, #removed)
    assert.is_true(has(removed, reader))
    assert.is_true(has(removed, writer))
    assert.is_false(has(reactor.getReaders(), reader))
    assert.is_false(has(reactor.getWriters(), writer))
  end)
end)

describe("TCPPortTests", function()
  -- Twisted's Port.connectionLost raises; braid's port has no connectionLost
  -- to replace, and the code it runs that may raise is the factory's doStop
  it("test_connectionLostFailed", function()
    local f = { protocol = {}, noisy = false }
    function f.doStop() return 1 // 0 end
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local r = loop.result(port:stopListening())
    assert.is_true(failure.isFailure(r))
    assert.equal(errors.LuaError, r.type)
    assert.matches("attempt to divide by zero", tostring(r.value), 1, true)
    assert.is_false(port.connected)
  end)
end)

-- Twisted's doIteration timeout, seen from outside: how long one turn of
-- the real loop (reactor.iterate, which waits at most its delay) waits
-- with the delayed calls as each test sets them
describe("IterationTimeoutTests", function()
  local function timed_iterate(delay)
    local t0 = core.monotonic()
    reactor.iterate(delay)
    return core.monotonic() - t0
  end
  before_each(function() assert.same({}, reactor.getDelayedCalls()) end)

  it("test_noCalls", function()
    -- no call to wake for: the turn waits the whole delay
    assert.is_true(timed_iterate(0.1) >= 0.095)
  end)

  it("test_delayedCall", function()
    local ran = false
    reactor.callLater(0.1, function() ran = true end)
    local took = timed_iterate(5)
    assert.is_true(ran)
    assert.is_true(took >= 0.095 and took < 2, tostring(took))
  end)

  it("test_timePasses", function()
    local ran = false
    reactor.callLater(0.4, function() ran = true end)
    assert.is_true(timed_iterate(0.2) >= 0.195)
    assert.is_false(ran)
    local took = timed_iterate(5)
    assert.is_true(ran)
    -- the wait left was what remained of the 0.4, not 0.4 again
    assert.is_true(took < 0.4, tostring(took))
  end)

  it("test_multipleDelayedCalls", function()
    local order = {}
    local a = reactor.callLater(0.5, function() order[#order + 1] = 50 end)
    reactor.callLater(0.05, function() order[#order + 1] = 10 end)
    local c = reactor.callLater(1, function() order[#order + 1] = 100 end)
    finally(function() a:cancel() c:cancel() end)
    local took = timed_iterate(5)
    assert.same({ 10 }, order)
    assert.is_true(took < 0.5, tostring(took))
  end)

  it("test_resetDelayedCall", function()
    local ran = false
    local call = reactor.callLater(5, function() ran = true end)
    call:reset(0.05)
    local took = timed_iterate(10)
    assert.is_true(ran)
    assert.is_true(took < 2, tostring(took))
  end)

  it("test_delayDelayedCall", function()
    local ran = false
    local t0 = core.monotonic()
    local call = reactor.callLater(0.05, function() ran = true end)
    call:delay(0.3)
    timed_iterate(0.15)
    assert.is_false(ran)
    timed_iterate(5)
    assert.is_true(ran)
    assert.is_true(core.monotonic() - t0 >= 0.345)
  end)

  it("test_cancelDelayedCall", function()
    local ran = false
    local call = reactor.callLater(0.05, function() ran = true end)
    call:cancel()
    assert.is_true(timed_iterate(0.2) >= 0.195)
    assert.is_false(ran)
  end)
end)

describe("AdoptStreamPortErrorsTestsBuilder", function()
  -- in a new braid process (Twisted's buildReactor): the descriptor of a
  -- socket just closed
  it("test_invalidDescriptor", function()
    local out, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      local socket = require "socket"
      local probe = assert(socket.tcp())
      assert(probe:bind("127.0.0.1", 0))
      local fileno = math.tointeger(probe:getfd())
      probe:close()
      local ok, e = pcall(reactor.adoptStreamPort, fileno, { protocol = {}, noisy = false })
      print(ok, require("braid.error").CannotListenError:isinstance(e), e.socketError)
    ]] })
    assert.equal(0, code, table.concat(out, "\n"))
    assert.same({ "false\ttrue\t[Errno 9] Bad file descriptor" }, out)
  end)

  -- the same for adoptStreamConnection: a mutant that made the event base
  -- first (its epoll descriptor taking the closed number) answered
  -- ENOTSOCK (88) where EBADF is right, and the specs, run in a process
  -- whose base existed already, did not see it
  it("adoptStreamConnection of a descriptor just closed, in a new process, fails with EBADF as adoptStreamPort does", function()
    local out, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      local socket = require "socket"
      local probe = assert(socket.tcp())
      assert(probe:bind("127.0.0.1", 0))
      local fileno = math.tointeger(probe:getfd())
      probe:close()
      local ok, e = pcall(reactor.adoptStreamConnection, fileno, { protocol = {}, noisy = false })
      print(ok, require("braid.error").ConnectError:isinstance(e), e.osError, e.message)
    ]] })
    assert.equal(0, code, table.concat(out, "\n"))
    assert.same({ "false\ttrue\t9\tBad file descriptor" }, out)
  end)

  -- another process holds the listening socket (here: this one, which
  -- gives it to a braid child); the child's stopListening closes its copy
  -- without shutting the socket down, so this one can still accept on it
  it("test_stopOnlyCloses", function()
    local portSocket = assert(socket.tcp())
    finally(function() portSocket:close() end)
    assert(portSocket:bind("127.0.0.1", 0))
    assert(portSocket:listen(1))
    local fd = math.tointeger(portSocket:getfd())
    local out, code = proc.run({ "-e", ([[
      local reactor = require "braid.reactor"
      local port = reactor.adoptStreamPort(%d, { protocol = {}, noisy = false })
      print("adopted", port:getHost().port)
      port:stopListening():addCallback(function() print("stopped") reactor.stop() end)
    ]]):format(fd) })
    local _, n = portSocket:getsockname()
    assert.equal(0, code, table.concat(out, "\n"))
    assert.same({ "adopted\t" .. n, "stopped" }, out)
    portSocket:settimeout(0)
    -- EAGAIN (LuaSocket's "timeout"); a shut down socket answers EINVAL
    assert.same({ nil, "timeout" }, { portSocket:accept() })
  end)
end)

describe("IPv6AddressTests", function()
  local isIPv6Address = address.isIPv6Address

  it("test_empty", function()
    assert.is_false(isIPv6Address(""))
  end)

  it("test_colon", function()
    assert.is_false(isIPv6Address(":"))
  end)

  it("test_loopback", function()
    assert.is_true(isIPv6Address("::1"))
  end)

  it("test_scopeID", function()
    assert.is_true(isIPv6Address("fe80::1%eth0"))
    assert.is_true(isIPv6Address("fe80::2%1"))
    assert.is_true(isIPv6Address("fe80::3%en2"))
  end)

  it("test_invalidWithScopeID", function()
    assert.is_false(isIPv6Address("%eth0"))
    assert.is_false(isIPv6Address(":%eth0"))
    assert.is_false(isIPv6Address("hello%eth0"))
  end)

  -- Lua strings are bytes: "\u{4321}" is its UTF-8 encoding
  it("test_unicodeAndBytes", function()
    assert.is_true(isIPv6Address("fe80::2%1"))
    assert.is_false(isIPv6Address("\u{4321}"))
    assert.is_false(isIPv6Address("hello%eth0"))
  end)
end)
