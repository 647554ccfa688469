-- spec/sync_diff_spec.lua: braid.defer's DeferredLock, DeferredSemaphore
-- and DeferredQueue against Twisted's twisted.internet.defer, on random
-- programs.
-- spec/helpers/sync_diff.lua makes the programs (up to two locks,
-- semaphores of 1 to 3 tokens and queues with a size and backlog of nil or
-- 0 to 2; acquires whose callbacks release, acquire again, run, get, put,
-- cancel, fire or raise; run(f) with f returning a value, a Failure or a
-- Deferred fired later, or raising; puts of numbers, nil and the objects,
-- gets, overflows and underflows; cancels and errbacks of waiting acquire,
-- run and get Deferreds; the objects' states read midway) and runs them
-- here; spec/peers/sync_diff.py runs the same programs under Debian's
-- /usr/bin/python3 with Twisted. Every trace (what fired when and with
-- what, what each operation raised, each object's state midway and at the
-- end, every Deferred's final result) must be the same.
local sdiff = require "helpers.sync_diff"
local td = require "helpers.twisted_diff"

local PROGRAMS = 4000
local SEED = 20261202

local function braid_traces(text)
  return td.braid(sdiff.run, text)
end

describe("braid.defer's DeferredLock, DeferredSemaphore and DeferredQueue against Twisted's",
  function()
    local text = sdiff.generate(SEED, PROGRAMS)

    it("gives the same trace for " .. PROGRAMS .. " random programs", function()
      local mine, order = braid_traces(text)
      assert.equal(PROGRAMS, #order)
      td.assert_same(text, order, mine, td.twisted("sync_diff.py", text), "braid")
    end)
    it("runs programs that reach every operation and outcome", function()
      -- Lua patterns: %d is a digit, %- a dash
      for _, word in ipairs({ "\nlock 2\n", "\nsem %d 1\n", "\nsem %d 3\n", "\nqueue %d %- %-\n",
                              "\nqueue %d 0 ", "\nqueue %d %d 0\n", "\nqueue %d 2 2\n",
                              "\nacq %d L%d ", "\nacq %d S%d ", "\nrun %d L%d ", "\nrun %d S%d ",
                              "acq:", "rel:", "run:", "get:", "cancel:", "cancelr:", "cancelg:",
                              "canceld:", "fira:", "firr:", "firg:%d+:ok", "firg:%d+:err",
                              "fire:%d+:ok", "fire:%d+:err", "put:Q%d:%d", "put:Q%d:nil",
                              "put:Q%d:[LSQ]", "st:L", "st:S", "st:Q", "ret:", "raise:", "fail:",
                              "d:%d" }) do
        assert.truthy(text:find(word), word)
      end
      local all = {}
      for _, t in pairs((braid_traces(text))) do all[#all + 1] = t end
      all = table.concat(all, "\n")
      for _, seen in ipairs({ "\na%d %-> L%d", "\na%d %-> S%d", "\na%d %-> F%(Cancelled%)",
                              "\na%d %-> F%(E5%d%d%)", "\nr%d f%(10%d%)", "\nr%d %-> %d+\n",
                              "\nr%d %-> nil", "\nr%d %-> F%(E%d%)", "\nr%d %-> F%(Cancelled%)",
                              "\nr%d %-> F%(E6%d%d%)", "\nr%d %-> 10%d%d", "\nr%d %-> F%(E10%d%d%)",
                              "\ng%d %-> %d+\n", "\ng%d %-> nil", "\ng%d %-> [LSQ]%d",
                              "\ng%d %-> F%(Cancelled%)", "\ng%d %-> 7%d%d",
                              "\ng%d %-> F%(E7%d%d%)",
                              -- a holder's callback releasing, and the next holder's running
                              "\na%d %-> (L%d)\na%d %-> %1", "\na%d %-> (S%d)\na%d %-> %1",
                              "\nr%d %-> [^\n]*\nr%d f", "\nrel:%d %-> unheld",
                              "\nrel:%d %-> AlreadyFired", "\nput:Q%d:%S+ %-> QueueOverflow",
                              "\nget:%d %-> QueueUnderflow", "\nput:Q%d:%S+ %-> AlreadyFired",
                              "\nfire:%d:%a+ %-> AlreadyFired", "\nfirg:%d:%a+ %-> AlreadyFired",
                              "\nfira:%d %-> AlreadyFired", "\nfirr:%d %-> AlreadyFired",
                              "\n%a+:%d %-> unmade", "\nL%d locked=true waiting=[1-9]",
                              "\nS%d tokens=0 limit=%d waiting=[1-9]", "\nQ%d [^\n]*pending=%[%]",
                              "\nQ%d [^\n]*pending=%[[^%]\n]+,", "\nQ%d [^\n]*waiting=[1-9]",
                              "\nstate L%d locked=false waiting=0", "\nstate L%d locked=true",
                              "\nstate S%d tokens=0", "\nstate S%d tokens=3 limit=3",
                              "\nstate Q%d [^\n]*pending=[^\n]*nil[^\n]*count=[2-9]",
                              "\nstate Q%d size=%- backlog=%- pending=%[%] count=0 waiting=[1-9]",
                              "\nstate a%d called=false",
                              "\nstate a%d called=true result=F%(E%d+%)",
                              "\nstate a%d called=true result=%d", "\nstate r%d called=false",
                              "\nstate g%d called=false", "\nstate d%d called=false",
                              "\nstate d%d called=true result=F%(Cancelled%)",
                              "\nstate d%d called=true result=nil" }) do
        assert.truthy(all:find(seen), seen)
      end
    end)
  end)
