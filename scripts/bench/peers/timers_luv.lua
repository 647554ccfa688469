-- timers_luv.lua: the luv peer of scripts/bench/timers (run with lua5.4).
--
-- uv.new_timer():start(ms, 0, cb); cancel = stop + close. libuv timers count
-- whole milliseconds, so the delay given is floor(us / 1000) ms. A fired
-- timer must be closed by its callback, which needs the handle: each phase-1
-- timer gets its own closure (what a luv program does). Prints key=value
-- lines; exits 1 when the work did not happen.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "benchlib"
local uv = require "luv"

local n = math.tointeger(tonumber(arg[1] or "1000000"))
local now, cpu, new_timer = B.now, B.cpu, uv.new_timer

-- setup, untimed
local us, sum = B.delaysUs(n)
local ms = {}
for i = 1, n do ms[i] = us[i] // 1000 end
us = nil

local fired, fired2, t_done, cpu_done = 0, 0, 0, 0
local function on_fire()
  fired = fired + 1
  if fired == n then t_done, cpu_done = now(), cpu() end
end
local function on_fire2() fired2 = fired2 + 1 end -- must never run

-- phase 1: schedule N, then run until all have fired
B.gc()
local rss0 = B.statusKb("VmRSS")
local t0 = now()
for i = 1, n do
  local t = new_timer()
  t:start(ms[i], 0, function() t:close(); on_fire() end)
end
local t1 = now()
local hwm = B.statusKb("VmHWM")
local c1 = cpu()
uv.run()
if fired ~= n then B.fail(("phase 1: %d of %d calls fired"):format(fired, n)) end

-- phase 2: schedule N again (timed apart) with the same spread 1000 s out, so
-- none falls due; one loop turn (untimed); then cancel each and run one loop
-- turn, which runs the close callbacks cancelling asked for
B.gc()
local handles = {}
for i = 1, n do handles[i] = false end
local t2 = now()
for i = 1, n do
  local t = new_timer()
  t:start(1000000 + ms[i], 0, on_fire2)
  handles[i] = t
end
local t3 = now()
uv.run("nowait")
local t4 = now()
for i = 1, n do
  local t = handles[i]
  t:stop()
  t:close()
end
local t5 = now()
uv.run("nowait")
local t6 = now()
if uv.loop_alive() then B.fail("phase 2: the loop still has live handles after cancel") end
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
