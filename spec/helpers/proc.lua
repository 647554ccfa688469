-- spec helper: run a braid script as a child process, read its output line
-- by line (blocking reads: no sleeps), signal it, collect its exit status.
local tmp = require "helpers.tmp"

local M = {}

local root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers/proc%.lua$")) or "."
M.root = root
M.BIN = os.getenv("BRAID_BIN") or (root .. "/build/braid")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = quote

local Proc = {}
Proc.__index = Proc

--- Start `braid args...` (stderr merged into stdout), killed after `limit`
-- seconds (default 20) so a hung child fails the spec instead of hanging;
-- opts.stdin: a file for its standard input.
function M.spawn(args, opts)
  opts = opts or {}
  local parts = {}
  for i, a in ipairs(args) do parts[i] = quote(a) end
  local cmd = ("cd %s && echo $$ && exec timeout -s KILL %d %s %s 2>&1%s"):format(
    quote(opts.cwd or root), opts.limit or 20, opts.bin or M.BIN, table.concat(parts, " "),
    opts.stdin and " < " .. quote(opts.stdin) or "")
  local f = assert(io.popen(cmd, "r"))
  local pid = tonumber(f:read("l"))
  return setmetatable({ f = f, pid = pid, lines = {} }, Proc)
end

--- Read lines until one matches `pattern`; returns that line (or nil at EOF).
function Proc:waitFor(pattern)
  while true do
    local l = self.f:read("l")
    if not l then return nil end
    self.lines[#self.lines + 1] = l
    if l:find(pattern) then return l end
  end
end

--- The pid of braid itself (the child of the timeout guard).
function Proc:braidPid()
  if not self.child then
    local f = io.open(("/proc/%d/task/%d/children"):format(self.pid, self.pid))
    self.child = f and tonumber(f:read("a"):match("%d+"))
    if f then f:close() end
  end
  return self.child or self.pid
end

local SIGNUM = { HUP = 1, INT = 2, QUIT = 3, USR1 = 10, USR2 = 12, TERM = 15 }

-- Whether process pid catches signal number n (/proc's SigCgt mask); nil
-- when that cannot be read (the process is gone).
local function catches(pid, n)
  local f = io.open(("/proc/%d/status"):format(pid))
  if not f then return nil end
  local mask = f:read("a"):match("\nSigCgt:%s*(%x+)")
  f:close()
  if not mask then return nil end
  local digit = tonumber(mask:sub(-1 - (n - 1) // 4, -1 - (n - 1) // 4), 16)
  return digit & (1 << ((n - 1) % 4)) ~= 0
end

--- Send a signal ("INT", "TERM", "HUP"...) to braid, once braid catches it
-- (a script prints before reactor.run() installs the handlers; a signal
-- sent in between would kill it). Gives up waiting after 5 s. (Signalling
-- the timeout guard would deliver it twice: timeout forwards it to the
-- child and to its process group.)
function Proc:kill(sig)
  sig = sig or "TERM"
  local deadline = os.time() + 5
  local pid, n = self:braidPid(), SIGNUM[sig]
  -- braid itself, not the guard (which forwards, and whose child is the
  -- guard's copy until it has exec'd braid)
  local function is_guard(p)
    local f = io.open(("/proc/%d/comm"):format(p))
    local comm = f and f:read("l")
    if f then f:close() end
    return comm == "timeout"
  end
  while (pid == self.pid or is_guard(pid)) and os.time() < deadline do
    self.child = nil
    pid = self:braidPid()
  end
  if n then
    while catches(pid, n) == false and os.time() < deadline do end
  end
  os.execute(("kill -%s %d 2>/dev/null"):format(sig, pid))
end

--- Read the rest of the output; returns all lines and the exit code.
-- Again after the end: the same.
function Proc:finish()
  if not self.code then
    for l in self.f:lines() do self.lines[#self.lines + 1] = l end
    local _, how, code = self.f:close()
    if how == "signal" then code = 128 + code end
    self.code = code
  end
  return self.lines, self.code
end

--- Start the shell command `cmd` (which sends its own output where it
-- wants) in the background; returns a Proc whose finish() waits for it to
-- end and stop() ends it. No orphan is left: the command is this process's
-- child until finish().
function M.background(cmd)
  local f = assert(io.popen("echo $$; " .. cmd, "r"))
  local pid = tonumber(f:read("l"))
  return setmetatable({ f = f, pid = pid, lines = {} }, Proc)
end

--- End a background command unless it has ended: SIGTERM to what its
-- shell runs (a timeout guard, which passes it on), then finish().
function Proc:stop()
  if not self.code then
    local f = io.open(("/proc/%d/task/%d/children"):format(self.pid, self.pid))
    local child = f and tonumber(f:read("a"):match("%d+"))
    if f then f:close() end
    os.execute(("kill -TERM %d 2>/dev/null"):format(child or self.pid))
  end
  return self:finish()
end

--- Run to completion: returns the output lines and the exit code.
function M.run(args, opts)
  return M.spawn(args, opts):finish()
end

--- Run to completion and assert the exit code and the whole output.
function M.expect(args, code, lines)
  local check = require "luassert"
  local out, got = M.run(args)
  check.equal(code, got, table.concat(out, "\n"))
  check.same(lines, out)
end

--- Write `source` to a temporary script file; returns its path (removed
-- once the test is over, see helpers.tmp; the caller may remove it sooner).
function M.script(source)
  return tmp.file(source)
end

--- The output (stderr too) of a braid script run with at most 256
-- descriptors: what runs out of them (by opening /dev/null until it
-- fails, its own business) and what it prints then.
function M.run_out_of_descriptors(script)
  local path = M.script(script)
  local p = assert(io.popen(("sh -c 'ulimit -n 256; exec %s %s' 2>&1"):format(quote(M.BIN), quote(path))))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

--- Strip Twisted's "2015-02-17 11:46:16-0500 " timestamp from a log line.
function M.untime(line)
  return (line:gsub("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d ", ""))
end

return M
