-- timers_braid.lua: the braid peer of scripts/bench/timers (run with braid).
--
-- reactor.callLater(delay, f) / DelayedCall:cancel(). Same workload as every
-- peer: N calls with delays of (x mod 1e6) microseconds given in seconds.
-- Prints key=value lines; exits 1 when the work did not happen.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "benchlib"
local reactor = require "braid.reactor"

local n = math.tointeger(tonumber(arg[1] or "1000000"))
local now, cpu, callLater = B.now, B.cpu, reactor.callLater

-- setup, untimed
local us, sum = B.delaysUs(n)
local delays = {}
for i = 1, n do delays[i] = us[i] / 1e6 end
us = nil

local fired, fired2, t_done, cpu_done = 0, 0, 0, 0
local function on_fire()
  fired = fired + 1
  if fired == n then
    t_done, cpu_done = now(), cpu()
    reactor.stop()
  end
end
local function on_fire2() fired2 = fired2 + 1 end -- must never run

-- phase 1: schedule N, then run until all have fired
B.gc()
local rss0 = B.statusKb("VmRSS")
local t0 = now()
for i = 1, n do callLater(delays[i], on_fire) end
local t1 = now()
local hwm = B.statusKb("VmHWM")
local c1 = cpu()
local watchdog = callLater(300, reactor.stop)  -- a lost call must not hang the run
reactor.run()
if watchdog:active() then watchdog:cancel() end
if fired ~= n then B.fail(("phase 1: %d of %d calls fired"):format(fired, n)) end

-- phase 2: schedule N again (timed apart) with the same spread 1000 s out, so
-- none falls due; one loop iteration (untimed); then cancel each and run one
-- iteration, which absorbs whatever cancelling left
B.gc()
local handles = {}
for i = 1, n do handles[i] = false end
local t2 = now()
for i = 1, n do handles[i] = callLater(1000 + delays[i], on_fire2) end
local t3 = now()
reactor.iterate(0)
local t4 = now()
for i = 1, n do handles[i]:cancel() end
local t5 = now()
reactor.iterate(0)
local t6 = now()
local left = #reactor.getDelayedCalls()
if left ~= 0 then B.fail(("phase 2: %d calls still pending after cancel"):format(left)) end
if fired2 ~= 0 then B.fail("phase 2: a cancelled call ran") end

B.emit("n", n)
B.emit("delay_sum_us", sum)
B.emit("schedule_s", t1 - t0)
B.emit("fire_cpu_s", cpu_done - c1)
B.emit("total_s", t_done - t0)
B.emit("schedule2_s", t3 - t2)
B.emit("cancel_s", t6 - t4)
B.emit("cancel_calls_s", t5 - t4)
B.emit("rss_before_kb", rss0)
B.emit("hwm_pending_kb", hwm)
B.emit("bytes_per_call", (hwm - rss0) * 1024 / n)
B.emit("fired", fired)
