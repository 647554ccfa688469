-- examples/http_hello.lua: a keep-alive HTTP/1.1 "Hello, world!" server.
-- Run: ./scripts/run examples/http_hello.lua [port]   (default 8080; 0 picks one)
-- Try: curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/again
--
-- Every request gets the same answer (HEAD the same head without the
-- body); requests may be pipelined. A request body announced by
-- Content-Length is read and ignored, then answered ("Expect:
-- 100-continue" gets its 100 Continue first). What the server cannot take
-- is answered with an error and the connection is closed: a malformed
-- request line (400), a chunked body (501), a head over 64 KiB (431). A
-- client that sends without reading the answers stops being read from
-- once 64 KiB of answers are queued (the transport is registered as its
-- own producer), so it cannot grow the server's memory.
local reactor = require "braid.reactor"
local protocol = require "braid.protocol"

local BODY = "Hello, world!\n"
local HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #BODY .. "\r\n\r\n"
local CLOSE_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
  .. #BODY .. "\r\n\r\n"
local RESPONSE, CLOSE_RESPONSE = HEAD .. BODY, CLOSE_HEAD .. BODY
local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"
local function error_response(status)
  return "HTTP/1.1 " .. status .. "\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
end
local BAD_REQUEST = error_response("400 Bad Request")
local UNSUPPORTED_CODING = error_response("501 Unsupported Transfer-Encoding")
local TOO_LARGE = error_response("431 Request Header Fields Too Large")
local MAX_HEAD = 65536

-- What to do with one request head (without its final blank line): the
-- response, how many body bytes follow, and whether the client waits for
-- a 100 Continue before sending them. Every response but RESPONSE and HEAD
-- closes the connection.
-- Only anchored patterns and plain finds: an unanchored pattern tries
-- every position of the head.
local function answer(head)
  local _, e = head:find("^%u+ [^%c ]+ HTTP/1%.[01]")
  if not e or (e < #head and head:sub(e + 1, e + 2) ~= "\r\n") then return BAD_REQUEST, 0 end
  local close, body, continue = head:byte(e) == 48, 0, false -- "0": HTTP/1.0
  if e < #head then -- headers: their names are case-insensitive
    local low = head:lower()
    if low:find("\ntransfer-encoding:", 1, true) then return UNSUPPORTED_CODING, 0 end
    local c = low:find("\ncontent-length:", 1, true)
    if c then
      local n = low:match("^[ \t]*(%d+)[ \t]*\r?$", c + 16) or low:match("^[ \t]*(%d+)[ \t]*\r\n", c + 16)
      body = n and #n <= 15 and tonumber(n)
      if not body then return BAD_REQUEST, 0 end
    end
    c = low:find("\nconnection:", 1, true)
    if c then
      local value = low:match("^[^\r\n]*", c + 12)
      for token in value:gmatch("[^,]+") do
        if token:match("^[ \t]*close[ \t]*$") then close = true end
      end
    end
    c = low:find("\nexpect:", 1, true)
    if c and head:byte(e) == 49 then -- no 100 Continue to an HTTP/1.0 client
      continue = low:match("^[ \t]*100%-continue[ \t]*\r?$", c + 8) ~= nil
        or low:match("^[ \t]*100%-continue[ \t]*\r\n", c + 8) ~= nil
    end
  end
  if head:find("^HEAD ") then return close and CLOSE_HEAD or HEAD, body, continue end
  return close and CLOSE_RESPONSE or RESPONSE, body, continue
end

local Hello = protocol.Protocol:extend("Hello")

function Hello:connectionMade()
  self.buf = ""
  self.transport:registerProducer(self.transport, true)
end

-- Write a response; false if it closes the connection.
local function respond(self, response)
  self.transport:write(response)
  if response == RESPONSE or response == HEAD then return true end
  self.transport:loseConnection()
  self.buf = ""
  return false
end

-- Fields: buf (what is not answered yet), skip and after (body bytes
-- still to discard, and the answer due once they are), head and response
-- (the last request without a body and its answer: a client repeating its
-- request is not parsed again).
function Hello:dataReceived(data)
  local buf = self.buf .. data
  local pos, n = 1, #buf
  while true do
    local skip = self.skip
    if skip then -- the body of the last request
      if n - pos + 1 < skip then
        self.skip = skip - (n - pos + 1)
        self.buf = ""
        return
      end
      pos, self.skip = pos + skip, nil
      if not respond(self, self.after) then return end
    end
    local e = buf:find("\r\n\r\n", pos, true)
    if not e or e - pos > MAX_HEAD then break end
    local head = buf:sub(pos, e - 1)
    local response, body, continue
    if head == self.head then
      response, body = self.response, 0
    else
      response, body, continue = answer(head)
      if body == 0 then self.head, self.response = head, response end
    end
    pos = e + 4
    if body > 0 then
      self.skip, self.after = body, response
      if continue then self.transport:write(CONTINUE) end
    elseif not respond(self, response) then
      return
    end
  end
  self.buf = buf:sub(pos)
  if #self.buf > MAX_HEAD then
    self.transport:write(TOO_LARGE)
    self.transport:loseConnection()
    self.buf = ""
  end
end

local portno = math.tointeger(tonumber(arg and arg[1] or 8080))
if not portno or portno < 0 or portno > 65535 then
  io.stderr:write("usage: braid examples/http_hello.lua [port]   (0 picks one)\n")
  os.exit(2)
end
local factory = protocol.Factory.forProtocol(Hello)
factory.noisy = false
local port = reactor.listenTCP(portno, factory)
print(("http server listening on port %d"):format(port:getHost().port))
io.stdout:flush()
reactor.run()
