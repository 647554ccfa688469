-- examples/proxy.lua: a TCP proxy whose memory stays bounded when one side
-- reads slowly: each side is registered as the other's streaming producer,
-- so a full write buffer pauses reading from the other side. A side that
-- ends its sending (a half-close, as nc -N does) has the proxy end its
-- sending to the other side, which may go on answering.
-- Run: ./scripts/run examples/proxy.lua LISTENPORT HOST PORT [DRAIN_SECONDS]
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

-- a port number argument, or the default; anything else ends the program
local function port_arg(i, default)
  local n = math.tointeger(tonumber(arg[i] or default))
  if not n or n < 0 or n > 65535 then
    io.stderr:write("usage: braid examples/proxy.lua [LISTENPORT [HOST [PORT [DRAIN_SECONDS]]]]\n")
    os.exit(2)
  end
  return n
end
local listen_port = port_arg(1, 8000)
local host, port = arg[2] or "127.0.0.1", port_arg(3, 9000)

-- Once one side is gone, the other closes after sending what it holds; one
-- that cannot send it (its peer stopped reading) is aborted after this
-- many seconds (argument 4, default 10), so that a departed client cannot
-- pin a connection.
local DRAIN_TIMEOUT = tonumber(arg[4] or 10)
if not (DRAIN_TIMEOUT and DRAIN_TIMEOUT >= 0 and DRAIN_TIMEOUT < math.huge) then
  io.stderr:write("proxy.lua: DRAIN_SECONDS must be a number of seconds >= 0\n")
  os.exit(2)
end

local function close_after_drain(other)
  local t = other.transport
  t:loseConnection()
  if t:getWriteBufferSize() > 0 and not other.drain_call then
    other.drain_call = reactor.callLater(DRAIN_TIMEOUT, function() t:abortConnection() end)
  end
end

local function stop_drain_call(self)
  local call = self.drain_call
  if call and call:active() then call:cancel() end
end

-- the client side, towards HOST:PORT
local ProxyClient = protocol.Protocol:extend("ProxyClient")

function ProxyClient:connectionMade()
  local server = self.factory.server
  self.server = server
  server.client = self
  -- flow control both ways
  self.transport:registerProducer(server.transport, true)
  server.transport:registerProducer(self.transport, true)
  server.transport:resumeProducing()
  if server.pending then
    self.transport:writeSequence(server.pending)
    server.pending = nil
  end
  if server.read_done then self.transport:loseWriteConnection() end
end

function ProxyClient:dataReceived(data)
  self.server.transport:write(data)
end

-- HOST:PORT sends no more: neither do we, to the client
function ProxyClient:readConnectionLost()
  self.server.transport:loseWriteConnection()
end

function ProxyClient:connectionLost()
  stop_drain_call(self)
  close_after_drain(self.server)
end

local ProxyClientFactory = protocol.ClientFactory:extend("ProxyClientFactory")
ProxyClientFactory.protocol = ProxyClient
ProxyClientFactory.noisy = false
function ProxyClientFactory:clientConnectionFailed(_, reason)
  print(("cannot reach %s:%d: %s"):format(host, port, reason:getErrorMessage()))
  io.stdout:flush()
  self.server.transport:loseConnection()
end

-- the server side, facing whoever connects to us
local ProxyServer = protocol.Protocol:extend("ProxyServer")

function ProxyServer:connectionMade()
  self.transport:pauseProducing() -- until the other side is connected
  self.pending = {}
  local f = ProxyClientFactory()
  f.server = self
  reactor.connectTCP(host, port, f)
end

function ProxyServer:dataReceived(data)
  if self.client then
    self.client.transport:write(data)
  else
    self.pending[#self.pending + 1] = data
  end
end

-- the client sends no more: neither do we, to HOST:PORT (once it is
-- connected and has what the client sent)
function ProxyServer:readConnectionLost()
  self.read_done = true
  if self.client then self.client.transport:loseWriteConnection() end
end

function ProxyServer:connectionLost()
  stop_drain_call(self)
  if self.client then close_after_drain(self.client) end
end

local factory = protocol.Factory.forProtocol(ProxyServer)
factory.noisy = false
local p = reactor.listenTCP(listen_port, factory, 50, "127.0.0.1")
print(("proxy listening on port %d, forwarding to %s:%d"):format(p:getHost().port, host, port))
io.stdout:flush()
reactor.run()
