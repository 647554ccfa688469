-- examples/http_hello.lua: a keep-alive HTTP/1.1 "Hello, world!" server.
-- Run: ./scripts/run examples/http_hello.lua [port]   (default 8080; 0 picks one)
-- Try: curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/again
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local BODY = "Hello, world!\n"
local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
  .. #BODY .. "\r\n\r\n" .. BODY
local CLOSE_RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
  .. #BODY .. "\r\n\r\n" .. BODY

local Hello = protocol.Protocol:extend("Hello")

function Hello:connectionMade()
  self.buf = ""
end

-- answer every complete request head; requests may be pipelined
function Hello:dataReceived(data)
  local buf = self.buf .. data
  local pos = 1
  while true do
    local e = buf:find("\r\n\r\n", pos, true)
    if not e then break end
    local head = buf:sub(pos, e - 1)
    pos = e + 4
    -- HTTP/1.0, or "Connection: close": plain searches first, patterns only
    -- when they may match
    local close = head:find(" HTTP/1.0", 1, true) and head:match("^%u+ %S+ HTTP/1%.0")
    if not close then
      local low = head:lower()
      close = low:find("close", 1, true) and low:find("\nconnection:%s*close")
    end
    if close then
      self.transport:write(CLOSE_RESPONSE)
      self.transport:loseConnection()
      self.buf = ""
      return
    end
    self.transport:write(RESPONSE)
  end
  self.buf = buf:sub(pos)
  if #self.buf > 65536 then self.transport:loseConnection() end -- no body support
end

local factory = protocol.Factory.forProtocol(Hello)
factory.noisy = false
local port = reactor.listenTCP(tonumber(arg and arg[1]) or 8080, factory)
print(("http server listening on port %d"):format(port:getHost().port))
io.stdout:flush()
reactor.run()
