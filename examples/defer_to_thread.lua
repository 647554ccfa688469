-- deferToThread: a blocking function runs in a thread while the reactor
-- keeps printing dots (the seed's "comprehensive example", part one).
--   braid examples/defer_to_thread.lua [sleep] [stop]   (default 2 3)
-- The seed slept 10 s and stopped at 3 s: Twisted's stop then blocks in
-- its pool's join until the thread ends (no more dots; "end sleep" is
-- printed, "OK" never is). braid waits at most 5 s
-- (threads.setShutdownGracePeriod) with the loop still running, so the dots
-- go on and a job that ends in time delivers its result ("OK") before the
-- exit; one still running after that is logged as abandoned and the
-- process exits without it (docs/threads.md, "Shutdown"). So `10 3` prints
-- dots until 8 s, then the abandon line, and no "end sleep 10".
local reactor = require "braid.reactor"
local threads = require "braid.threads"

local sec = tonumber(arg[1]) or 2
local stop_after = tonumber(arg[2]) or 3

-- Two threads print here: each line goes out in one io.write (print
-- writes a line in pieces, which the other thread's output can split).
local function say(line)
  io.write(line .. "\n")
  io.flush()
end

-- Python's `deferred = deferToThread.__get__` decorator: calling the result
-- runs f in a thread and returns a Deferred.
local function deferred(f)
  return function(...) return threads.deferToThread(f, ...) end
end

local function todoprint_(result)
  say(tostring(result))
end

local function running()
  -- Prints a few dots on stdout while the reactor is running.
  say(".")
  reactor.callLater(0.1, running)
end

-- A blocking function magically converted in a non-blocking one. It runs
-- in a worker's own Lua state: its only upvalue may be _ENV, so what it
-- needs comes as arguments.
local sleep = deferred(function(s)
  io.write("start sleep " .. s .. "\n"); io.flush()
  os.execute("sleep " .. s)  -- blocks this thread only
  io.write("\nend sleep " .. s .. "\n"); io.flush()
  return "OK"
end)

sleep(sec):addBoth(todoprint_)
reactor.callLater(0.1, running)
reactor.callLater(stop_after, reactor.stop)
say("go !!!")
reactor.run()
