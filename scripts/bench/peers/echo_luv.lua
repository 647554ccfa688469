-- echo_luv.lua: the luv peer of scripts/bench/echo (Debian lua-luv, run with
-- lua5.4).
--
-- read_start's callback writes each chunk back with client:write (libuv
-- writes at once when nothing is queued); TCP_NODELAY on every connection.
-- Listens on 127.0.0.1:PORT (0, the default, picks one), prints "port=N"
-- and serves until killed.
local uv = require "luv"

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
  client:read_start(function(_, data)
    if data then
      client:write(data)
    else -- EOF or an error (the load client resets its connections)
      client:close()
    end
  end)
end))
io.stdout:write("port=", server:getsockname().port, "\n")
io.stdout:flush()
uv.run()
