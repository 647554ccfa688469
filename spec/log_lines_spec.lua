-- spec for the log lines braid's reactor, ports, connectors and factories
-- write themselves, with their [system] prefixes, as twistd (or
-- log.startLogging(sys.stdout)) shows them for the same program under
-- Twisted 22.4. Each program runs in a braid child process; the expected
-- lines are Twisted's, with braid's reprs (<EchoFactory instance>) and
-- sessionno (per process, see docs/tcp.md) in place of Python's.
local proc = require "helpers.proc"
local tmp = require "helpers.tmp"

-- the lines of braid -e code, without their time stamps
local function run(code)
  local lines, status = proc.run({ "-e", code })
  local out = {}
  for i, l in ipairs(lines) do out[i] = proc.untime(l) end
  return out, status
end

local PRELUDE = [[
local log = require "braid.log"
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"
log.startLogging(io.stdout)
]]

describe("log lines", function()
  it("Starting factory and Stopping factory are [-] lines, also inside a connection's callbacks", function()
    -- Twisted logs them through a twisted.logger Logger, which ignores the
    -- legacy log context; the factory's own startFactory line has it
    local out, status = run(PRELUDE .. [[
local CF = protocol.ClientFactory:extend("CF")
local Outgoing = protocol.Protocol:extend("Outgoing")
function Outgoing:connectionMade() self.transport:loseConnection() end
CF.protocol = Outgoing
function CF:startFactory() log.msg("cf startFactory") end
function CF:clientConnectionLost() reactor.stop() end
local Srv = protocol.Protocol:extend("Srv")
function Srv:dataReceived() reactor.connectTCP("127.0.0.1", self.factory.port:getHost().port, CF()) end
local F = protocol.Factory:extend("EchoFactory")
F.protocol, F.noisy = Srv, false
local f = F()
f.port = reactor.listenTCP(0, f, 50, "127.0.0.1")
local cf = protocol.ClientFactory()
cf.protocol, cf.noisy = protocol.Protocol:extend("Cli"), false
function cf.protocol:connectionMade() self.transport:write("x") end
reactor.connectTCP("127.0.0.1", f.port:getHost().port, cf)
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    assert.same("[-] Starting factory <CF instance>", out[3])
    assert.matches("^%[Srv,%d+,127%.0%.0%.1%] cf startFactory$", out[4])
    assert.same("[-] Stopping factory <CF instance>", out[5])
  end)

  it("a port closed by the reactor's shutdown logs under the port's prefix, its factory's stop line as [-]", function()
    local path = tmp.path()
    local out, status = run(PRELUDE .. [[
local F = protocol.Factory:extend("EchoFactory")
F.protocol = protocol.Protocol
function F:stopFactory() log.msg("in stopFactory") end
local G = protocol.Factory:extend("UnixFactory")
G.protocol = protocol.Protocol
reactor.listenTCP(0, F(), 50, "127.0.0.1")
reactor.listenUNIX(]] .. ("%q"):format(path) .. [[, G())
reactor.callLater(0, reactor.stop)
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    local n = assert(out[2]:match("^%[%-%] EchoFactory starting on (%d+)$"), out[2])
    assert.same({
      "[-] Log opened.",
      "[-] EchoFactory starting on " .. n,
      "[-] Starting factory <EchoFactory instance>",
      "[-] UnixFactory starting on '" .. path .. "'",
      "[-] Starting factory <UnixFactory instance>",
      "[EchoFactory] (TCP Port " .. n .. " Closed)",
      "[-] Stopping factory <EchoFactory instance>",
      "[EchoFactory] in stopFactory",
      "[UnixFactory] (UNIX Port " .. path .. " Closed)",
      "[-] Stopping factory <UnixFactory instance>",
      "[-] Main loop terminated.",
    }, out)
  end)

  it("a port closed by stopListening logs [-], as Twisted's callLater'd close", function()
    local out, status = run(PRELUDE .. [[
local F = protocol.Factory:extend("EchoFactory")
F.protocol, F.noisy = protocol.Protocol, false
local p = reactor.listenTCP(0, F(), 50, "127.0.0.1")
p:stopListening():addCallback(function() reactor.stop() end)
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    local n = assert(out[2]:match("^%[%-%] EchoFactory starting on (%d+)$"), out[2])
    assert.same({ "[-] Log opened.", "[-] EchoFactory starting on " .. n,
                  "[-] (TCP Port " .. n .. " Closed)", "[-] Main loop terminated." }, out)
  end)

  it("clientConnectionLost runs under the client connection's system", function()
    local out, status = run(PRELUDE .. [[
local F = protocol.Factory:extend("EchoFactory")
F.protocol, F.noisy = protocol.Protocol, false
local p = reactor.listenTCP(0, F(), 50, "127.0.0.1")
local Cli = protocol.Protocol:extend("Cli")
function Cli:connectionMade() self.transport:loseConnection() end
local CF = protocol.ClientFactory:extend("CF")
CF.protocol = Cli
function CF:clientConnectionLost(connector, reason)
  log.msg("lost", require("braid.class").nameof(reason.type))
end
function CF:stopFactory() log.msg("cf stopFactory") reactor.stop() end
reactor.connectTCP("127.0.0.1", p:getHost().port, CF())
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    assert.same({ "[-] Starting factory <CF instance>", "[Cli,client] lost ConnectionDone",
                  "[-] Stopping factory <CF instance>", "[Cli,client] cf stopFactory",
                }, { table.unpack(out, 3, 6) })
  end)

  it("an accepted connection's buildProtocol and connectionMade log under the port's prefix", function()
    -- Twisted's Port.doRead builds and connects the protocol inside the
    -- reactor's callWithLogger(port); the connection's own system serves
    -- its later calls
    local out, status = run(PRELUDE .. [[
local Echo = protocol.Protocol:extend("Echo")
function Echo:connectionMade() log.msg("made") end
function Echo:dataReceived() log.msg("got") self.transport:loseConnection() end
function Echo:connectionLost() log.msg("lost") reactor.stop() end
local F = protocol.Factory:extend("EchoFactory")
F.protocol, F.noisy = Echo, false
function F:buildProtocol(addr) log.msg("build") return protocol.Factory.buildProtocol(self, addr) end
local p = reactor.listenTCP(0, F(), 50, "127.0.0.1")
local cf = protocol.ClientFactory()
cf.protocol, cf.noisy = protocol.Protocol:extend("Cli"), false
function cf.protocol:connectionMade() self.transport:write("x") end
reactor.connectTCP("127.0.0.1", p:getHost().port, cf)
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    local n = assert(out[2]:match("^%[%-%] EchoFactory starting on (%d+)$"), out[2])
    local rest = { table.unpack(out, 3) }
    for i, l in ipairs(rest) do rest[i] = l:gsub("^%[Echo,%d+,", "[Echo,S,") end
    assert.same({
      "[EchoFactory] build",
      "[EchoFactory] made",
      "[Echo,S,127.0.0.1] got",
      "[Echo,S,127.0.0.1] lost",
      "[EchoFactory] (TCP Port " .. n .. " Closed)",
      "[-] Main loop terminated.",
    }, rest)
  end)

  it("a TCP client is Uninitialized until connected, a UNIX client's connect is [-]", function()
    -- Twisted's TCP connect completes in the transport's doConnect, under
    -- its logstr "Uninitialized"; its UNIX connect at once, in a timed call
    local path = tmp.path()
    local out, status = run(PRELUDE .. [[
local class = require "braid.class"
local F = protocol.Factory:extend("EchoFactory")
F.protocol, F.noisy = protocol.Protocol, false
local tcp = reactor.listenTCP(0, F(), 50, "127.0.0.1")
local unix = reactor.listenUNIX(]] .. ("%q"):format(path) .. [[, F())
local Cli = protocol.Protocol:extend("Cli")
function Cli:connectionMade() log.msg("made") self.transport:loseConnection() end
local CF = protocol.ClientFactory:extend("CF")
CF.protocol, CF.noisy = Cli, false
function CF:buildProtocol(addr) log.msg("build") return protocol.ClientFactory.buildProtocol(self, addr) end
local steps = {}
function CF:clientConnectionLost() table.remove(steps, 1)() end
function CF:clientConnectionFailed(_, reason) log.msg("failed", class.nameof(reason.type)) reactor.stop() end
steps[1] = function() reactor.connectUNIX(]] .. ("%q"):format(path) .. [[, CF()) end
steps[2] = function()
  local n = tcp:getHost().port
  tcp:stopListening():addCallback(function() reactor.connectTCP("127.0.0.1", n, CF()) end)
end
reactor.connectTCP("127.0.0.1", tcp:getHost().port, CF())
reactor.run()
]])
    assert.equal(0, status, table.concat(out, "\n"))
    local n = assert(out[2]:match("^%[%-%] EchoFactory starting on (%d+)$"), out[2])
    assert.same({
      "[-] Log opened.",
      "[-] EchoFactory starting on " .. n,
      "[-] EchoFactory starting on '" .. path .. "'",
      "[Uninitialized] build", "[Uninitialized] made",
      "[-] build", "[-] made",
      "[-] (TCP Port " .. n .. " Closed)",
      "[Uninitialized] failed ConnectionRefusedError",
      "[EchoFactory] (UNIX Port " .. path .. " Closed)",
      "[-] Main loop terminated.",
    }, out)
  end)
end)
