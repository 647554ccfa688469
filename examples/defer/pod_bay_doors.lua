-- The Deferred as a placeholder (seed: the "Twisted" lecture slides, the
-- pod bay doors example):
--     d = pod_bay_doors.open()
--     d.addCallback(lambda ignored: pod.launch())
-- open() takes a while, so it returns a Deferred at once (an IOU) and the
-- reactor is free until the doors are open; only then is the pod launched.
--   braid examples/defer/pod_bay_doors.lua [seconds]   (default 2)
local reactor = require "braid.reactor"
local defer = require "braid.defer"

local delay = tonumber(arg[1]) or 2

local pod_bay_doors = {}

function pod_bay_doors.open()
  print("Opening the pod bay doors...")
  local d = defer.Deferred()
  -- the doors open `delay` seconds from now: the placeholder fires then
  reactor.callLater(delay, d.callback, d, "open")
  return d
end

local pod = {}

function pod.launch()
  print("Launching the pod.")
end

local d = pod_bay_doors.open()
print("open() returned a placeholder; the doors are not open yet")
d:addCallback(function(ignored) return pod.launch() end)
d:addCallback(function() reactor.stop() end)
reactor.run()
