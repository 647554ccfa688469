-- http_luv.lua: the luv peer of scripts/bench/http (Debian lua-luv, run
-- with lua5.4).
--
-- The same keep-alive HTTP/1.1 hello server as examples/http_hello.lua, the
-- same Lua code on luv's API: buffer what arrives, answer each complete
-- request head (pipelining allowed), close after answering an HTTP/1.0
-- request or one with "Connection: close". Listens on 127.0.0.1:PORT (0, the
-- default, picks one), prints "port=N" and serves until killed.
local uv = require "luv"

local BODY = "Hello, world!\n"
local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
  .. #BODY .. "\r\n\r\n" .. BODY
local CLOSE_RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
  .. "Content-Length: " .. #BODY .. "\r\n\r\n" .. BODY

local function serve(client)
  local pending = ""
  client:read_start(function(_, data)
    if not data then client:close() return end -- EOF or a reset
    local buf = pending .. data
    local pos = 1
    while true do
      local e = buf:find("\r\n\r\n", pos, true)
      if not e then break end
      local head = buf:sub(pos, e - 1)
      pos = e + 4
      local close = head:find(" HTTP/1.0", 1, true) and head:match("^%u+ %S+ HTTP/1%.0")
      if not close then
        local low = head:lower()
        close = low:find("close", 1, true) and low:find("\nconnection:%s*close")
      end
      if close then
        client:write(CLOSE_RESPONSE)
        client:shutdown(function() client:close() end)
        pending = ""
        return
      end
      client:write(RESPONSE)
    end
    pending = buf:sub(pos)
    if #pending > 65536 then client:close() end -- no body support
  end)
end

-- libuv leaves SIGPIPE alone: catch it, so a write to a reset connection
-- fails with EPIPE instead of killing the process
local sigpipe = uv.new_signal()
sigpipe:start("sigpipe", function() end)

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg[1]) or 0))
assert(server:listen(1024, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  serve(client)
end))
io.stdout:write("port=", server:getsockname().port, "\n")
io.stdout:flush()
uv.run()
