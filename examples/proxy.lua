-- examples/proxy.lua: a TCP proxy whose memory stays bounded when one side
-- reads slowly: each side is registered as the other's streaming producer,
-- so a full write buffer pauses reading from the other side.
-- Run: ./scripts/run examples/proxy.lua LISTENPORT HOST PORT
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local listen_port = tonumber(arg[1]) or 8000
local host, port = arg[2] or "127.0.0.1", tonumber(arg[3]) or 9000

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
end

function ProxyClient:dataReceived(data)
  self.server.transport:write(data)
end

function ProxyClient:connectionLost()
  self.server.transport:loseConnection()
end

local ProxyClientFactory = protocol.ClientFactory:extend("ProxyClientFactory")
ProxyClientFactory.protocol = ProxyClient
ProxyClientFactory.noisy = false
function ProxyClientFactory:clientConnectionFailed()
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

function ProxyServer:connectionLost()
  if self.client then self.client.transport:loseConnection() end
end

local factory = protocol.Factory.forProtocol(ProxyServer)
factory.noisy = false
local p = reactor.listenTCP(listen_port, factory, 50, "127.0.0.1")
print(("proxy listening on port %d, forwarding to %s:%d"):format(p:getHost().port, host, port))
io.stdout:flush()
reactor.run()
