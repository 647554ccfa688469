-- spec for lua/braid/endpoints.lua: endpoint strings and TCP/UNIX endpoints
local reactor = require "braid.reactor"
local endpoints = require "braid.endpoints"
local protocol = require "braid.protocol"
local errors = require "braid.error"
local address = require "braid.address"

local loop = require "helpers.loop"
local tmp = require "helpers.tmp"
local spin = loop.spin

local result = loop.result

local Echo = protocol.Protocol:extend("Echo")
function Echo:dataReceived(d) self.transport:write(d) end

describe("braid.endpoints", function()
  it("parses tcp server strings", function()
    local ep = endpoints.serverFromString(reactor, "tcp:8080:interface=127.0.0.1:backlog=7")
    assert.is_true(endpoints.TCP4ServerEndpoint:isinstance(ep))
    assert.equal(8080, ep._port)
    assert.equal("127.0.0.1", ep._interface)
    assert.equal(7, ep._backlog)
    assert.equal("::1", endpoints.serverFromString(reactor, "tcp6:80:interface=\\:\\:1")._interface)
  end)

  it("parses unix server strings with an octal mode", function()
    local ep = endpoints.serverFromString(reactor, "unix:/run/x.sock:mode=660")
    assert.equal("/run/x.sock", ep._address)
    assert.equal(tonumber("660", 8), ep._mode)
  end)

  it("parses tcp and unix client strings", function()
    local ep = endpoints.clientFromString(reactor, "tcp:host=example.org:port=80:timeout=5")
    assert.same({ "example.org", 80, 5 }, { ep._host, ep._port, ep._timeout })
    ep = endpoints.clientFromString(reactor, "tcp:example.org:81")
    assert.same({ "example.org", 81 }, { ep._host, ep._port })
    ep = endpoints.clientFromString(reactor, "unix:path=/run/x.sock")
    assert.equal("/run/x.sock", ep._path)
  end)

  -- spec/factory_diff_spec.lua compares these with Twisted 22.4's parsers
  it("takes Twisted's positional arguments, escapes and bindAddress", function()
    local ep = endpoints.serverFromString(reactor, "tcp:80:127.0.0.1:7")
    assert.same({ 80, "127.0.0.1", 7 }, { ep._port, ep._interface, ep._backlog })
    ep = endpoints.serverFromString(reactor, "unix:/tmp/s:660:5")
    assert.same({ "/tmp/s", tonumber("660", 8), 5 }, { ep._address, ep._mode, ep._backlog })
    ep = endpoints.clientFromString(reactor, "tcp:h:80:bindAddress=127.0.0.1")
    assert.same({ "127.0.0.1", 0 }, ep._bindAddress)
    ep = endpoints.clientFromString(reactor, "tcp:h:80:bindAddress=127.0.0.1,99")
    assert.same({ "127.0.0.1", 99 }, ep._bindAddress)
    assert.equal("a=b", endpoints.clientFromString(reactor, "unix:a\\=b")._path)
    assert.equal("h", endpoints.clientFromString(reactor, "TCP:h:80")._host)
  end)

  -- a number with 19 digits or more was "too large", leading zeros counted
  it("reads integers with leading zeros as Python's int() does, however many", function()
    local ep = endpoints.serverFromString(reactor,
      "tcp:0000000000000000080:backlog=0000000000000000000005")
    assert.same({ 80, 5 }, { ep._port, ep._backlog })
    ep = endpoints.serverFromString(reactor, "unix:/x:mode=0o0000000000000000000660")
    assert.equal(tonumber("660", 8), ep._mode)
    assert.equal(80, endpoints.clientFromString(reactor, "tcp:h:00000000000000000000080")._port)
    -- 18 significant digits are read; 19 are too large
    assert.equal(999999999999999999,
      endpoints.serverFromString(reactor, "tcp:80:backlog=0999999999999999999")._backlog)
    local ok, e = pcall(endpoints.serverFromString, reactor, "tcp:80:backlog=1000000000000000000")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
    assert.equal('invalid endpoint description "tcp:80:backlog=1000000000000000000": '
      .. "backlog too large: 1000000000000000000", e.message)
  end)

  -- connect(nil) errbacked with "attempt to index a nil value" from
  -- inside the wrapper, and serverFromString(nil, ...) failed at listen
  it("raises TypeError at once for a connect without a factory or a string without a reactor", function()
    local ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", 1)
    for _, bad in ipairs({ false, "x", 42 }) do
      local ok, e = pcall(ep.connect, ep, bad or nil)
      assert.is_false(ok)
      assert.is_true(errors.TypeError:isinstance(e))
      assert.matches("^bad argument #1 to 'connect' %(factory expected", e.message)
    end
    local ok, e = pcall(endpoints.UNIXClientEndpoint(reactor, "/nonexistent").connect, ep, {})
    assert.is_false(ok)
    assert.matches("^bad argument #1 to 'connect'", e.message)
    for _, f in ipairs({ "serverFromString", "clientFromString" }) do
      ok, e = pcall(endpoints[f], nil, "tcp:0")
      assert.is_false(ok)
      assert.equal(("bad argument #1 to '%s' (table expected, got nil)"):format(f), e.message)
    end
  end)

  it("raises ValueError naming the wrong part of a malformed string", function()
    local function msg(f, s)
      local ok, e = pcall(f, reactor, s)
      assert.is_false(ok)
      assert.is_true(errors.ValueError:isinstance(e))
      return tostring(e)
    end
    assert.matches("port must be an integer, got \"http\"", msg(endpoints.serverFromString, "tcp:http"))
    assert.matches("port must be an integer, got \"\"", msg(endpoints.serverFromString, "tcp:"))
    assert.matches("port must be an integer, got \"0x50\"", msg(endpoints.serverFromString, "tcp:0x50"))
    assert.matches("port too large", msg(endpoints.serverFromString, "tcp:999999999999999999999"))
    assert.matches("port given twice", msg(endpoints.serverFromString, "tcp:80:port=81"))
    assert.matches("too many arguments", msg(endpoints.serverFromString, "tcp:80:a:1:x"))
    assert.matches("unknown endpoint type \"bogus\"", msg(endpoints.serverFromString, "bogus:1"))
    assert.matches("unknown parameter \"colour\"", msg(endpoints.serverFromString, "tcp:80:colour=red"))
    assert.matches("port out of range: 70000", msg(endpoints.serverFromString, "tcp:70000"))
    assert.matches("mode must be octal", msg(endpoints.serverFromString, "unix:/x:mode=abc"))
    assert.matches("mode must be from 0 to 7777 %(octal%), got \"%-1\"",
      msg(endpoints.serverFromString, "unix:/x:mode=-1"))
    assert.matches("mode must be from 0 to 7777", msg(endpoints.serverFromString, "unix:/x:mode=10000"))
    -- a trailing backslash was taken literally (Twisted's tokenizer fails)
    assert.matches("a backslash at the end escapes nothing", msg(endpoints.serverFromString, "tcp:80\\"))
    assert.matches("a backslash at the end escapes nothing", msg(endpoints.clientFromString, "unix:/x\\"))
    assert.matches("missing host", msg(endpoints.clientFromString, "tcp:port=80"))
    assert.matches("missing port", msg(endpoints.clientFromString, "tcp:host=a"))
    assert.matches("timeout must be a finite number of seconds >= 0, got \"x\"",
      msg(endpoints.clientFromString, "tcp:a:1:timeout=x"))
    for _, t in ipairs({ "1e400", "inf", "-1", "0x10", "nan" }) do
      assert.matches("timeout must be a finite number of seconds >= 0", msg(endpoints.clientFromString,
        "tcp:a:1:timeout=" .. t))
    end
    assert.equal(2.5, endpoints.clientFromString(reactor, "unix:/x:timeout=2.5")._timeout)
    -- an address with its colons unescaped is cut at them: the error says how to write it
    assert.matches("interface given twice %(write each ':' inside a value as '\\:', as in "
      .. "interface=\\:\\:1%)", msg(endpoints.serverFromString, "tcp:80:interface=[::1]"))
  end)

  it("calls a MemoryReactor's methods, which record each listen and connect", function()
    local testing = require "braid.testing"
    local r = testing.MemoryReactor()
    local f = protocol.Factory.forProtocol(Echo)
    local port = result(endpoints.serverFromString(r, "tcp:8080:interface=127.0.0.1"):listen(f))
    assert.same({ 8080, f, 50, "127.0.0.1" }, r.tcpServers[1])
    assert.equal(8080, port:getHost().port)
    result(endpoints.serverFromString(r, "unix:/run/x.sock"):listen(f))
    assert.equal("/run/x.sock", r.unixServers[1][1])
    endpoints.clientFromString(r, "tcp:host=example.com:port=80:timeout=7"):connect(f)
    assert.same({ "example.com", 80, 7 }, { r.tcpClients[1][1], r.tcpClients[1][2], r.tcpClients[1][4] })
    endpoints.clientFromString(r, "unix:path=/run/x.sock"):connect(f)
    assert.equal("/run/x.sock", r.unixClients[1][1])
    -- a HostnameEndpoint passes its timeout and bindAddress on too
    endpoints.HostnameEndpoint(r, "example.org", 443, 5, { "10.0.0.2", 0 }):connect(f)
    local hc = r.tcpClients[2]
    assert.same({ "example.org", 443, 5, { "10.0.0.2", 0 } }, { hc[1], hc[2], hc[4], hc[5] })
  end)

  it("listens and connects through endpoints; connect fires after connectionMade", function()
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local port = result(endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1"):listen(f))
    local n = port:getHost().port
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() self.made = true end
    function C:dataReceived(d) self.got = d end
    function C:connectionLost() self.lost = true end
    local cf = protocol.Factory.forProtocol(C)
    cf.noisy = false
    local p = result(endpoints.clientFromString(reactor, "tcp:127.0.0.1:" .. n):connect(cf))
    assert.is_true(C:isinstance(p))
    assert.is_true(p.made)
    p.transport:write("via endpoint")
    spin(function() return p.got == "via endpoint" end)
    p.transport:loseConnection()
    spin(function() return p.lost end)
    result(port:stopListening())
  end)

  it("errbacks connect with ConnectionRefusedError", function()
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local n = port:getHost().port
    result(port:stopListening())
    local r = result(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", n):connect({ protocol = {}, noisy = false }))
    assert.is_truthy(r:check(errors.ConnectionRefusedError))
  end)

  it("fails a cancelled connect with ConnectingCancelledError naming the destination", function()
    local resolver = require "braid.resolver"
    local defer = require "braid.defer"
    resolver.installResolver({ getHostByName = function() return defer.Deferred() end })
    local failed = 0
    local f = protocol.Factory.forProtocol(Echo)
    local d = endpoints.clientFromString(reactor, "tcp:host=slow.example:port=80"):connect(f)
    local reason
    d:addErrback(function(r) reason = r failed = failed + 1 end)
    d:cancel()
    resolver.installResolver(nil)
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, failed)
    assert.is_truthy(reason:check(errors.ConnectingCancelledError))
    -- tcp: gives a HostnameEndpoint, whose address is a HostnameAddress (it
    -- was an IPv4Address with the name as host); Twisted's
    -- ConnectingCancelledError(HostnameAddress(b"slow.example", 80))
    assert.equal(address.HostnameAddress("slow.example", 80), reason.value.address)
    assert.equal("HostnameAddress(hostname='slow.example', port=80)", tostring(reason.value.address))
    assert.is_nil(reason.value.address.type)
  end)

  it("fails a HostnameEndpoint connect cancelled from connectionMade with ConnectingCancelledError(HostnameAddress)", function()
    local served = {}
    local S = protocol.Protocol:extend("S")
    function S:connectionLost() served.lost = true end
    local sf = protocol.Factory.forProtocol(S)
    sf.noisy = false
    local port = reactor.listenTCP(0, sf, 50, "127.0.0.1")
    local n = port:getHost().port
    local d, lost
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() d:cancel() end
    function C:connectionLost(reason) lost = reason end
    local cf = protocol.Factory.forProtocol(C)
    cf.noisy = false
    d = endpoints.HostnameEndpoint(reactor, "localhost", n):connect(cf)
    local reason = result(d)
    assert.equal(errors.ConnectingCancelledError, reason.type)
    assert.equal(address.HostnameAddress("localhost", n), reason.value.address)
    spin(function() return lost ~= nil and served.lost end)
    assert.equal(errors.ConnectionAborted, lost.type)
    result(port:stopListening())
  end)

  -- a cancel from connectionMade (the Deferred not yet fired) failed it
  -- with a plain CancelledError; Twisted's canceller errbacks
  -- ConnectingCancelledError (then its stopConnecting raises
  -- NotConnectingError, which drops the connection)
  for _, kind in ipairs({ "TCP", "UNIX" }) do
    it("fails a connect cancelled from connectionMade with ConnectingCancelledError and aborts it (" .. kind .. ")", function()
      local served = {}
      local S = protocol.Protocol:extend("S")
      function S:connectionLost() served.lost = true end
      local sf = protocol.Factory.forProtocol(S)
      sf.noisy = false
      local port, ep, dest
      if kind == "UNIX" then
        local path = tmp.path(".sock")
        port = reactor.listenUNIX(path, sf)
        ep, dest = endpoints.UNIXClientEndpoint(reactor, path), address.UNIXAddress(path)
      else
        port = reactor.listenTCP(0, sf, 50, "127.0.0.1")
        local n = port:getHost().port
        ep, dest = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", n), address.IPv4Address("TCP", "127.0.0.1", n)
      end
      local d, lost, cancel_ok
      local C = protocol.Protocol:extend("C")
      function C:connectionMade() cancel_ok = pcall(d.cancel, d) end
      function C:connectionLost(reason) lost = reason end
      local cf = protocol.Factory.forProtocol(C)
      cf.noisy = false
      d = ep:connect(cf)
      local reason = result(d)
      assert.is_true(cancel_ok)
      assert.equal(errors.ConnectingCancelledError, reason.type)
      assert.equal(dest, reason.value.address)
      spin(function() return lost ~= nil and served.lost end)
      assert.equal(errors.ConnectionAborted, lost.type)
      result(port:stopListening())
    end)
  end

  it("fails a connect cancelled from buildProtocol with ConnectingCancelledError and closes the connection", function()
    local served = {}
    local S = protocol.Protocol:extend("S")
    function S:connectionLost() served.lost = true end
    local sf = protocol.Factory.forProtocol(S)
    sf.noisy = false
    local port = reactor.listenTCP(0, sf, 50, "127.0.0.1")
    local n = port:getHost().port
    local d, made = nil, false
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() made = true end
    local cf = protocol.Factory.forProtocol(C)
    cf.noisy = false
    function cf:buildProtocol(addr)
      d:cancel()
      return protocol.Factory.buildProtocol(self, addr)
    end
    d = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", n):connect(cf)
    local reason = result(d)
    assert.equal(errors.ConnectingCancelledError, reason.type)
    assert.equal(address.IPv4Address("TCP", "127.0.0.1", n), reason.value.address)
    spin(function() return served.lost end)
    assert.is_false(made)
    result(port:stopListening())
  end)

  it("errbacks listen with CannotListenError", function()
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    local r = result(endpoints.TCP4ServerEndpoint(reactor, port:getHost().port, 50, "127.0.0.1"):listen(f))
    assert.is_truthy(r:check(errors.CannotListenError))
    result(port:stopListening())
  end)

  it("makes HostnameEndpoint and UNIXServerEndpoint by name, as Twisted's", function()
    local path = tmp.path(".sock")
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local uport = result(endpoints.UNIXServerEndpoint(reactor, path):listen(f))
    assert.equal(path, uport:getHost().name)
    local tport = result(endpoints.TCP4ServerEndpoint(reactor, 0, 50, "127.0.0.1"):listen(f))
    local C = protocol.Protocol:extend("C")
    function C:dataReceived(d) self.got = d end
    function C:connectionLost() self.lost = true end
    local cf = protocol.Factory.forProtocol(C)
    cf.noisy = false
    local p = result(endpoints.HostnameEndpoint(reactor, "localhost", tport:getHost().port):connect(cf))
    assert.equal("127.0.0.1", p.transport:getPeer().host)
    p.transport:write("by name")
    spin(function() return p.got == "by name" end)
    p.transport:loseConnection()
    spin(function() return p.lost end)
    -- os.rename(path, path) succeeds while any file is there: io.open
    -- cannot open a socket, so it would answer nil either way
    assert.is_true(os.rename(path, path))
    result(tport:stopListening())
    result(uport:stopListening())
    assert.is_nil((os.rename(path, path)))
  end)

  it("connectProtocol connects a given protocol instance over UNIX", function()
    local path = tmp.path(".sock")
    local f = protocol.Factory.forProtocol(Echo)
    f.noisy = false
    local port = result(endpoints.serverFromString(reactor, "unix:" .. path):listen(f))
    local p = protocol.Protocol()
    function p.dataReceived(self, d) self.got = d end
    function p.connectionLost(self) self.lost = true end
    local got = result(endpoints.connectProtocol(endpoints.UNIXClientEndpoint(reactor, path), p))
    assert.equal(p, got)
    p.transport:write("unix!")
    spin(function() return p.got == "unix!" end)
    p.transport:loseConnection()
    spin(function() return p.lost end)
    result(port:stopListening())
  end)

  it("fills Twisted's defaults in endpoints made directly (backlog 50, interface \"\" or \"::\", mode 0666)", function()
    local tcp = endpoints.TCP4ServerEndpoint(reactor, 80)
    assert.same({ 80, 50, "" }, { tcp._port, tcp._backlog, tcp._interface })
    local tcp6 = endpoints.TCP6ServerEndpoint(reactor, 80)
    assert.same({ 50, "::" }, { tcp6._backlog, tcp6._interface })
    local unix = endpoints.UNIXServerEndpoint(reactor, "/run/x.sock")
    assert.same({ 50, tonumber("666", 8) }, { unix._backlog, unix._mode })
  end)

  it("parses the corners of endpoint strings as Twisted's parsers", function()
    local function msg(f, s)
      local ok, e = pcall(f, reactor, s)
      assert.is_false(ok)
      assert.equal(errors.ValueError, e.class)
      return e.message
    end
    -- Python's int() takes "_" only between digits
    assert.equal('invalid endpoint description "tcp:_80": port must be an integer, got "_80"',
      msg(endpoints.serverFromString, "tcp:_80"))
    assert.equal('invalid endpoint description "=80": missing endpoint type',
      msg(endpoints.serverFromString, "=80"))
    -- of two unknown keywords the first in sorted order is named, whatever the order written
    assert.equal('invalid endpoint description "tcp:80:zz=1:aa=2": unknown parameter "aa"',
      msg(endpoints.serverFromString, "tcp:80:zz=1:aa=2"))
    -- tcp6 is a plugin prefix in Twisted, matched whatever its case
    local ep = endpoints.serverFromString(reactor, "TCP6:80")
    assert.is_true(endpoints.TCP6ServerEndpoint:isinstance(ep))
    assert.same({ 80, "::" }, { ep._port, ep._interface })
    ep = endpoints.clientFromString(reactor, "tcp6:host=\\:\\:1:port=81")
    assert.is_true(endpoints.HostnameEndpoint:isinstance(ep))
    assert.same({ "::1", 81 }, { ep._host, ep._port })
    -- bindAddress=H,P: the port follows the last comma
    ep = endpoints.clientFromString(reactor, "tcp:h:80:bindAddress=a,b,99")
    assert.same({ "a,b", 99 }, ep._bindAddress)
  end)

  it("connect wraps the factory: doStart, doStop, buildProtocol errors and cancel reach the caller", function()
    local testing = require "braid.testing"
    local r = testing.MemoryReactor()
    local calls = {}
    local f = protocol.Factory.forProtocol(Echo)
    function f.doStart() calls[#calls + 1] = "start" end
    function f.doStop() calls[#calls + 1] = "stop" end
    function f.buildProtocol() error(errors.ValueError("no protocol for you")) end
    local d = endpoints.TCP4ClientEndpoint(r, "example.com", 80):connect(f)
    local wrapper = r.tcpClients[1][3]
    wrapper:doStart()
    assert.is_nil(wrapper:buildProtocol(nil))
    wrapper:doStop()
    assert.same({ "start", "stop" }, calls)
    local reason = result(d)
    assert.equal(errors.ValueError, reason.type)
    assert.equal("no protocol for you", reason:getErrorMessage())

    -- a cancel while connecting stops the connector, and fails with ConnectingCancelledError
    d = endpoints.TCP4ClientEndpoint(r, "example.com", 81):connect(protocol.Factory.forProtocol(Echo))
    local connector = r.connectors[2]
    assert.equal("connecting", connector.state)
    d:cancel()
    assert.is_true(connector.stoppedConnecting)
    assert.equal("disconnected", connector.state)
    reason = result(d)
    assert.equal(errors.ConnectingCancelledError, reason.type)
    assert.equal(81, reason.value.address.port)
  end)

  it("connect fails its Deferred, and raises nothing, when the reactor's connect raises", function()
    local r = setmetatable({}, { __index = {
      connectTCP = function() error(errors.ValueError("cannot connect here")) end,
      connectUNIX = function() error("raw refusal", 0) end,
    } })
    local reason = result(endpoints.TCP4ClientEndpoint(r, "h", 1):connect(protocol.Factory.forProtocol(Echo)))
    assert.equal(errors.ValueError, reason.type)
    assert.equal("cannot connect here", reason:getErrorMessage())
    reason = result(endpoints.UNIXClientEndpoint(r, "/x"):connect(protocol.Factory.forProtocol(Echo)))
    assert.equal(errors.LuaError, reason.type)
    assert.equal("raw refusal", reason.value)
  end)
end)
