-- The seed's "comprehensive example", part two: a Deferred whose callback
-- is the work, fired from a thread with reactor.callInThread(de.callback,
-- 10000000, 100), and the main code going on at once.
--   braid examples/defer/call_in_thread.lua [n] [m]   (default 100000 100)
-- Firing a Deferred from another thread is not safe in Twisted either, and
-- in braid a worker has its own Lua state: it cannot touch `de` at all. The
-- braid way is deferToThread: the work runs in the worker, and the Deferred
-- fires with its result on the reactor's thread. In the seed this part runs
-- after reactor.run() has returned, so its pool never starts and the work
-- never runs (Python prints the four lines and exits); here the job is
-- pending work, so braid runs the reactor, and the callback stops it.
-- (The seed's n of 10,000,000 takes minutes in any language; pass it to see.)
local reactor = require "braid.reactor"
local threads = require "braid.threads"

local n = math.tointeger(tonumber(arg[1] or "100000"))
local m = math.tointeger(tonumber(arg[2] or "100"))
if not n or not m or n < 0 or m < 0 then
  io.stderr:write("usage: braid examples/defer/call_in_thread.lua [n] [m]\n")
  os.exit(2)
end

-- Builds a table of m keys, n times (the seed's dict(zip(keys, vals))). It
-- runs in a worker's own state: what it needs comes as arguments.
local function test(n_, m_)
  io.write("fun test() is start\n"); io.flush()
  local keys, vals = {}, {}
  for i = 0, m_ - 1 do
    vals[#vals + 1] = i
    keys[#keys + 1] = "a" .. i
  end
  local d
  for _ = 1, n_ do
    d = {}
    for i = 1, m_ do d[keys[i]] = vals[i] end
  end
  io.write("fun test() is end\n"); io.flush()
  local count = 0
  for _ in pairs(d or {}) do count = count + 1 end
  return count
end

-- Two threads print here: each line goes out in one io.write (print
-- writes a line in pieces, which the other thread's output can split).
local function say(line)
  io.write(tostring(line) .. "\n")
  io.flush()
end

local aa = reactor.seconds()
local de = threads.deferToThread(test, n, m)
de:addCallback(function(count) say(("test() built a table of %d keys"):format(count)) end)
de:addBoth(function() reactor.stop() end)
say(reactor.seconds() - aa)
say("I will do something else here")
say(de)
say("go end")
