-- benchlib.lua: clocks, memory readings, the shared workload and output for
-- the Lua peers of scripts/bench (braid, luv, plain Lua). Not part of braid.
local M = {}

local tonumber, math_type, string_format = tonumber, math.type, string.format

-- now(): monotonic seconds. Under braid, braid.core's clock_gettime
-- (CLOCK_MONOTONIC); under lua5.4, luv's uv.hrtime(). Both are
-- clock_gettime(CLOCK_MONOTONIC) underneath.
-- M.braid tells whether the interpreter is the braid executable (which
-- preloads braid.core).
M.braid = (package.preload["braid.core"] or package.loaded["braid.core"]) ~= nil
local core = M.braid and require("braid.core") or nil
if core and type(core.monotonic) == "function" then
  M.now = core.monotonic
  M.clock = "braid.core.monotonic"
else
  local ok, uv = pcall(require, "luv")
  if ok then
    local hrtime = uv.hrtime
    M.now = function() return hrtime() * 1e-9 end
    M.clock = "uv.hrtime"
  else
    M.now = os.clock
    M.clock = "os.clock (CPU time: no monotonic clock available)"
  end
end

-- cpu(): process CPU seconds (C clock(): every thread of the process).
M.cpu = os.clock

--- A field of /proc/self/status in kB (VmRSS, VmHWM), or -1.
function M.statusKb(field)
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)")) or -1
end

--- The timers workload: delays in microseconds, x = x * 48271 mod 2^31-1.
-- @return list of N integers in [0, 1e6), and their sum
function M.delaysUs(n)
  local t, x, sum = {}, 1, 0
  for i = 1, n do
    x = x * 48271 % 2147483647
    local us = x % 1000000
    sum = sum + us
    t[i] = us
  end
  return t, sum
end

--- Print `key=value` (floats with 6 decimals).
function M.emit(k, v)
  if math_type(v) == "float" then v = string_format("%.6f", v) end
  io.stdout:write(k, "=", tostring(v), "\n")
end

--- Report a failed check and exit 1.
function M.fail(msg)
  io.stdout:flush()
  io.stderr:write("error: ", msg, "\n")
  os.exit(1)
end

--- A full collection, as untimed setup before a phase.
function M.gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

return M
