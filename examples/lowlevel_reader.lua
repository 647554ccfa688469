-- examples/lowlevel_reader.lua: a LuaSocket connection driven by the
-- reactor through addReader, as the seeds' low-level reader: the socket's
-- getfd() is the descriptor, doRead reads what is there, and returning
-- reactor.CONNECTION_DONE at EOF removes it and calls connectionLost.
-- Run: ./scripts/run examples/lowlevel_reader.lua HOST PORT
local reactor = require "braid.reactor"
local socket = require "socket"

local host, port = arg[1] or "127.0.0.1", tonumber(arg[2]) or 9000

local sock = assert(socket.connect(host, port))
sock:settimeout(0)

local reader = {}

function reader.fileno() return sock:getfd() end
function reader.logPrefix() return "lowlevel" end

function reader.doRead()
  local data, err, partial = sock:receive(65536)
  data = data or partial
  if data and #data > 0 then
    io.write(data)
    io.stdout:flush()
  end
  if err == "closed" then return reactor.CONNECTION_DONE end
end

function reader.connectionLost(_, reason)
  io.write(("\nconnection lost: %s\n"):format(reason:getErrorMessage()))
  sock:close()
  -- at Ctrl-C the reactor's shutdown is what closes it: nothing to stop then
  if reactor.running then reactor.stop() end
end

reactor.addReader(reader)
reactor.run()
