-- deferToThread: a blocking function runs in a thread while the reactor
-- keeps printing dots (the seed's "comprehensive example", part one).
--   braid examples/defer_to_thread.lua [sleep] [stop]   (default 2 3)
-- The seed slept 10 s and stopped at 3 s: Twisted's stop then waits for the
-- thread. braid waits too, at most 5 s (threads.setShutdownGracePeriod),
-- then logs the job as abandoned and exits.
local reactor = require "braid.reactor"
local threads = require "braid.threads"

local sec = tonumber(arg[1]) or 2
local stop_after = tonumber(arg[2]) or 3

-- Python's `deferred = deferToThread.__get__` decorator: calling the result
-- runs f in a thread and returns a Deferred.
local function deferred(f)
  return function(...) return threads.deferToThread(f, ...) end
end

local function todoprint_(result)
  print(result)
end

local function running()
  -- Prints a few dots on stdout while the reactor is running.
  print(".")
  reactor.callLater(0.1, running)
end

-- A blocking function magically converted in a non-blocking one. It runs
-- in a worker's own Lua state: its only upvalue may be _ENV, so what it
-- needs comes as arguments.
local sleep = deferred(function(s)
  print("start sleep " .. s)
  os.execute("sleep " .. s)  -- blocks this thread only
  print("\nend sleep " .. s)
  return "OK"
end)

sleep(sec):addBoth(todoprint_)
reactor.callLater(0.1, running)
reactor.callLater(stop_after, reactor.stop)
print("go !!!")
reactor.run()
