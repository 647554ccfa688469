-- spec/task_diff_spec.lua: braid.task's deterministic-time API against
-- Twisted's twisted.internet.task, on random programs.
-- spec/helpers/task_diff.lua makes the programs (a Clock; timed calls at
-- small delays, scheduled, cancelled, reset and delayed (moved calls too
-- sharing their time with others), some from inside other calls, some at
-- the same time or "now", one raising out of advance,
-- a nested advance; LoopingCalls, plain and withCount, started now or
-- later, whose calls log, raise, return Failures or Deferreds fired later,
-- stop, restart or reset themselves or others; deferLater calls, some
-- cancelled; Cooperators scheduling on the Clock, each running a task that
-- returns values and Deferreds, raises, finishes, is paused, resumed and
-- stopped; advances of 0 to 20 seconds and pumps) and runs them here;
-- spec/peers/task_diff.py runs the same programs under Debian's
-- /usr/bin/python3 with Twisted. Every trace (what ran when, what each
-- operation raised, how each Deferred ended, the final state of every call,
-- loop, task and Cooperator, the pending calls) must be the same.
local tdiff = require "helpers.task_diff"
local td = require "helpers.twisted_diff"

local PROGRAMS = 3000
local SEED = 20261201

local function braid_traces(text)
  return td.braid(tdiff.run, text)
end

describe("braid.task against Twisted's twisted.internet.task", function()
  local text = tdiff.generate(SEED, PROGRAMS)

  it("gives the same trace for " .. PROGRAMS .. " random programs", function()
    td.check(tdiff.run, "task_diff.py", text, PROGRAMS)
  end)
  it("runs programs that reach every operation and outcome", function()
    -- Lua patterns: %d is a digit
    for _, word in ipairs({ "\nloop %d 0 ", "\nloop %d [%d.]+ now", "\nloop %d [%d.]+ later",
                            " count ", " plain stop", "\nlater ", "\ncoop %d 0 %d stopped",
                            " coiterate ", "\npump ", "\nadvance 0\n", "\nadvance 20\n",
                            "sched:", "cancel:", "reset:", "delay:%d+:%-",
                            -- reset and delay amounts without a bit of their own
                            "reset:%d+:%d+%.?5?[,%s]", "delay:%d+:%-?%d+%.?5?[,%s]", "adv:", "fire:%d:ok",
                            "fire:%d:err", "start:", "stop:", "resetl:", "defer:", "canceld:",
                            "cooperate:", "pause:", "resume:", "stopt:", "when:", "cstop:",
                            "cstart:", "ret:", "raise:", "fail:", "d:%d", "done" }) do
      assert.truthy(text:find(word), word)
    end
    local all = {}
    for _, t in pairs((braid_traces(text))) do all[#all + 1] = t end
    all = table.concat(all, "\n")
    for _, seen in ipairs({ "cancel:%d %-> AlreadyCalled", "cancel:%d %-> AlreadyCancelled",
                            "reset:%d:[%d.]+ %-> AlreadyCalled", "delay:%d:%S+ %-> AlreadyCancelled",
                            "fire:%d:%a+ %-> AlreadyFired", "start:%d %-> AlreadyRunning",
                            "stop:%d %-> NotRunning", "resetl:%d %-> NotRunningReset",
                            "advance %S+ %-> E%d", "pump %S+ %-> E%d", "adv:%S+ %-> E%d",
                            "pause:%d %-> TaskDone", "pause:%d %-> TaskStopped",
                            "pause:%d %-> TaskFailed", "pause:%d %-> SchedulerStopped",
                            "resume:%d %-> NotPaused", "stopt:%d %-> Task%a+",
                            "count=[2-9]", "l%d start#%d %-> lc%d", "l%d start#2 ",
                            "l%d start#%d %-> F%(E%d+%)", "dl%d %-> %d+", "dl%d %-> F%(E%d+%)",
                            "dl%d %-> F%(Cancelled%)", "dl%d %-> nil", "t%d done %-> it",
                            "t%d done %-> F%(E%d+%)", "t%d done %-> F%(TaskStopped%)",
                            "t%d done %-> F%(SchedulerStopped%)", "t%d when %-> ",
                            "state c%d called=false cancelled=true", "state c%d called=true",
                            "state c%d called=false cancelled=false active=true",
                            "state c%d called=true cancelled=false active=false time=%d+%.%d%d%d",
                            "state t%d paused=[1-9]",
                            "state k%d running=false", "pending c%d@[%d.]+ ", "pending l%d@",
                            "pending k%d@", "pending %?@", "pending\n" }) do
      assert.truthy(all:find(seen), seen)
    end
  end)
end)
