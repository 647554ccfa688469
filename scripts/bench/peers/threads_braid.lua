-- threads_braid.lua: the braid peer of scripts/bench/threads (run with braid).
--
-- threads.deferToThread round trips of a trivial function on the default
-- pool (10 threads, started lazily), two cases:
--   batch   N calls issued at once; time until the last result arrived
--   serial  N calls one after another, each issued by the previous one's
--           callback (round-trip latency)
-- An untimed warm-up of 1000 calls starts the pool's threads first.
-- Prints key=value lines; exits 1 when the work did not happen.
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "benchlib"
local reactor = require "braid.reactor"
local threads = require "braid.threads"

local n = math.tointeger(tonumber(arg[1] or "100000"))
local WARM = 1000
local now, cpu, deferToThread = B.now, B.cpu, threads.deferToThread

local function trivial(x) return x end

local results = {}
local function finish(k, v) results[#results + 1] = { k, v } end

local run_serial
local function run_batch()
  B.gc()
  local got, sum = 0, 0
  local t0, c0 = now(), cpu()
  local function on_result(v)
    got = got + 1
    sum = sum + v
    if got == n then
      finish("batch_s", now() - t0)
      finish("batch_cpu_s", cpu() - c0)
      local want = n * (n + 1) // 2
      if sum ~= want then B.fail(("batch: sum %d, expected %d"):format(sum, want)) end
      reactor.callLater(0, run_serial)
    end
  end
  for i = 1, n do deferToThread(trivial, i):addCallback(on_result) end
end

run_serial = function()
  B.gc()
  local got = 0
  local t0, c0 = now(), cpu()
  local step
  step = function(v)
    if v ~= got then B.fail(("serial: got %s, expected %d"):format(tostring(v), got)) end
    got = got + 1
    if got == n + 1 then
      finish("serial_s", now() - t0)
      finish("serial_cpu_s", cpu() - c0)
      reactor.stop()
      return
    end
    deferToThread(trivial, got):addCallback(step)
  end
  deferToThread(trivial, 0):addCallback(step)
end

local function warm_up()
  local left = WARM
  for i = 1, WARM do
    deferToThread(trivial, i):addCallback(function()
      left = left - 1
      if left == 0 then reactor.callLater(0, run_batch) end
    end)
  end
end

local watchdog = reactor.callLater(600, function() B.fail("timed out") end)
reactor.callWhenRunning(warm_up)
reactor.run()
if watchdog:active() then watchdog:cancel() end
if #results ~= 4 then B.fail("the cases did not finish") end
B.emit("n", n)
B.emit("threads", threads._stats().max)
for _, kv in ipairs(results) do B.emit(kv[1], kv[2]) end
