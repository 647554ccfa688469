-- LoopingCall and deferLater (seed: "Learning Twisted (part 3): Scheduling
-- with reactor"). The seed keeps only the program's imports:
--     from twisted.internet import reactor
--     from twisted.python import log
--     import sys, time
--     from twisted.internet.task import LoopingCall, deferLater
-- so this twin uses each of them as the post describes: deferLater waits
-- one interval and starts a LoopingCall that logs a tick every interval;
-- the third tick stops the loop, which fires the Deferred that stops the
-- reactor.
--   braid examples/defer/looping_call.lua [interval]   (default 1)
local reactor = require "braid.reactor"
local log = require "braid.log"
local task = require "braid.task"
local LoopingCall, deferLater = task.LoopingCall, task.deferLater

log.startLogging(io.stdout)

local interval = tonumber(arg[1]) or 1
local TICKS = 3

local count = 0
local loop
local function tick()
  count = count + 1
  log.msg(("tick %d of %d"):format(count, TICKS))
  if count == TICKS then loop:stop() end
end
loop = LoopingCall(tick)

local function startLoop()
  log.msg(("Starting a LoopingCall every %g seconds"):format(interval))
  -- start() calls tick at once, then every interval; its Deferred fires
  -- when stop() is called, and deferLater's Deferred waits for it
  return loop:start(interval)
end

log.msg(("deferLater: starting in %g seconds"):format(interval))
deferLater(reactor, interval, startLoop)
  :addCallback(function(lc)
    log.msg(("Loop stopped after %d ticks (running: %s)"):format(count, tostring(lc.running)))
  end)
  :addErrback(function(f) log.err(f, "loop failed") end)
  :addBoth(function() reactor.stop() end)
reactor.run()
