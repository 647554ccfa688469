-- examples/http_hello.lua: a keep-alive HTTP/1.1 "Hello, world!" server.
-- Run: ./scripts/run examples/http_hello.lua [port]   (default 8080; 0 picks one)
-- Try: curl -v http://127.0.0.1:8080/ http://127.0.0.1:8080/again
--
-- Every request gets the same answer (HEAD the same head without the
-- body); requests may be pipelined, lines may end in a bare LF, and empty
-- lines before a request are skipped. A
-- request body announced by Content-Length is read and ignored, then
-- answered ("Expect: 100-continue" gets its 100 Continue first). What the
-- server cannot take is answered with an error and the connection is
-- closed: a malformed request line or header line, such as one with
-- blanks before its colon or a folded one, or a second Content-Length
-- (400), a chunked body (501), a head over 64 KiB (431). A client that
-- sends without reading the answers stops being read from once 64 KiB of
-- answers are queued (the transport is registered as its own producer), so
-- it cannot grow the server's memory.
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
-- a 100 Continue before sending them. Every response but RESPONSE and
-- HEAD closes the connection.
-- Every pattern here is anchored or matches in one pass: a long head
-- costs time in proportion to its length.
local function answer(head)
  local response, http10, body, continue, close
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do
    if line:byte(-1) == 13 then line = line:sub(1, -2) end -- a CRLF's CR
    if not response then -- the request line
      local method, version = line:match("^(%u+) [^%c ]+ HTTP/1%.([01])$")
      if not method then return BAD_REQUEST, 0 end
      response, http10 = method == "HEAD" and HEAD or RESPONSE, version == "0"
      close = http10
    else -- a header line: a name (case-insensitive), a colon, a value
      local name, value = line:match("^([%w!#$%%&'*+.^_`|~%-]+):(.*)$")
      if not name then return BAD_REQUEST, 0 end
      name = name:lower()
      if name == "transfer-encoding" then return UNSUPPORTED_CODING, 0 end
      if name == "content-length" then
        local n = value:match("^[ \t]*(%d+)[ \t]*$")
        if body or not n or #n > 15 then return BAD_REQUEST, 0 end -- body: a second one
        body = tonumber(n)
      elseif name == "connection" then
        for token in value:lower():gmatch("[^,]+") do
          if token:match("^[ \t]*close[ \t]*$") then close = true end
        end
      elseif name == "expect" then
        continue = value:lower():match("^[ \t]*100%-continue[ \t]*$") ~= nil
      end
    end
  end
  if close then response = response == HEAD and CLOSE_HEAD or CLOSE_RESPONSE end
  return response, body or 0, continue and not http10 -- no 100 to HTTP/1.0
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
  -- buf had no blank line: search from its last bytes, not its start (a
  -- head sent a byte at a time must not be searched over and over)
  local from = #self.buf > 3 and #self.buf - 3 or 1
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
    local b = buf:byte(pos) -- empty lines before a request line are skipped (RFC 9112)
    if b == 13 or b == 10 then pos = buf:match("^[\r\n]*()", pos) end
    -- the head ends at its first empty line: a plain find for the usual
    -- CRLF CRLF, which must give the last head again to be trusted
    if from < pos then from = pos end
    local s, e = buf:find("\r\n\r\n", from, true)
    local head = s and buf:sub(pos, s - 1)
    local response, body, continue
    if head and head == self.head then
      response, body = self.response, 0
    elseif pos > n then
      break
    else -- lines may end in a bare LF
      s, e = buf:find("\r?\n\r?\n", from)
      if not s or s - pos > MAX_HEAD then break end
      head = buf:sub(pos, s - 1)
      response, body, continue = answer(head)
      if body == 0 then self.head, self.response = head, response end
    end
    pos = e + 1
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
