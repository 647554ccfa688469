-- Cooperative multitasking (seed: "Learning Twisted (part 4): Cooperative
-- multitasking"). The post has no code, only this picture of two tasks
-- whose wait periods are put to use by interleaving them:
--     |task1 | wait period | comp||task2 | wait period | comp|
--     |task1 | wait period | comp|
--            |task2 | wait period | comp|
-- Each task is a coroutine run by the Cooperator (task.cooperate and
-- task.coiterate). A step yields true to let the other task run; a wait
-- yields a Deferred (deferLater), which pauses that task alone until it
-- fires. task2 works and completes during task1's wait period.
--   braid examples/defer/cooperative_tasks.lua [seconds]   (default 1)
local reactor = require "braid.reactor"
local defer = require "braid.defer"
local task = require "braid.task"

local wait = tonumber(arg[1]) or 1
local yield = coroutine.yield

local function job(name, waitFor)
  return coroutine.wrap(function()
    print(name .. ": working")
    yield(true)
    print(("%s: waiting %g seconds"):format(name, waitFor))
    yield(task.deferLater(reactor, waitFor))
    print(name .. ": complete")
  end)
end

-- cooperate returns the task (pause, resume, stop, whenDone);
-- coiterate only the Deferred of its whenDone
local task1 = task.cooperate(job("task1", 2 * wait))
local done2 = task.coiterate(job("task2", wait))

defer.gatherResults({ task1:whenDone(), done2 })
  :addCallback(function() print("both tasks are done") end)
  :addErrback(function(f) print("a task failed: " .. f:getErrorMessage()) end)
  :addBoth(function() reactor.stop() end)
reactor.run()
