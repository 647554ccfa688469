-- spec/twisted_twistd_port_spec.lua: braid twins of the Twisted 22.4 tests
-- of twistd's pid file and options that no other spec asserts the same way
-- (docs/twisted-tests.md maps each Twisted test to its spec). One
-- describe per Twisted TestCase class, each `it` named after the Twisted
-- test method. Each runs the braid command as a process.
-- Sources: twisted/application/runner/test/test_pidfile.py,
-- twisted/test/test_twistd.py.
local proc = require "helpers.proc"
local tmp = require "helpers.tmp"

-- a path for a pidfile, with `content` in it (no file when nil)
local function pidfile(content)
  local path = tmp.path(".pid")
  if content then
    local f = assert(io.open(path, "w"))
    f:write(content)
    f:close()
  end
  return path
end

-- the whole content of path, or nil when there is no such file
local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Lua code printing the content of the pidfile at path while braid runs,
-- then braid's own pid (from /proc/self, which braid reads itself)
local function show(path)
  return ("io.write('holds ', io.open(%q):read('a'), 'self ', "
    .. "io.open('/proc/self/stat'):read('a'):match('^%%d+'), '\\n')"):format(path)
end

-- the lines show() prints for a pidfile that holds braid's pid
local function holds_own_pid(lines)
  assert.equal(2, #lines, table.concat(lines, "\n"))
  assert.equal("self " .. lines[1]:match("^holds (%d+)$"), lines[2])
end

---------------------------------------------------------------------------
-- twisted/application/runner/test/test_pidfile.py

describe("PIDFileTests", function()
  -- PIDFile._format(pid=1337) == b"1337\n": the pid in decimal and a newline
  it("test_formatWithPID", function()
    local path = pidfile()
    local lines, code = proc.run({ "--pidfile", path, "-e", show(path) })
    assert.equal(0, code)
    holds_own_pid(lines)
    assert.is_nil(slurp(path))
  end)

  -- Twisted raises InvalidPIDFileError ("non-integer PID value in PID file:
  -- b''"); an empty file has nothing to lose, and braid takes it over (a
  -- documented difference, docs/braid.md)
  it("test_readEmptyPID", function()
    for _, empty in ipairs({ "", "\n", "  \n" }) do
      local path = pidfile(empty)
      local lines, code = proc.run({ "--pidfile", path, "-e", show(path) })
      assert.equal(0, code, ("%q"):format(empty))
      holds_own_pid(lines)
      assert.is_nil(slurp(path))
    end
  end)

  -- InvalidPIDFileError for b"$foo!": braid refuses the file and leaves it
  -- as it was (it overwrote it, and removed it at exit)
  it("test_readWithBogusPID", function()
    local path = pidfile("$foo!")
    local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: pidfile %s holds no pid; refusing to overwrite it"):format(path) }, lines)
    assert.equal("$foo!", slurp(path))
  end)

  -- an OSError other than ENOENT while reading is raised, not taken as no
  -- file: a pidfile that is a symbolic link to itself
  it("test_readOpenRaisesOSErrorNotENOENT", function()
    local path = pidfile()
    assert(os.execute(("ln -s %s %s"):format(proc.quote(path), proc.quote(path))))
    local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: cannot read pidfile %s (Too many levels of symbolic links)"):format(path) },
      lines)
  end)

  -- Twisted's isRunning() is true for the pid of the process asking;
  -- braid takes over a pidfile that holds its own pid (a documented
  -- difference, docs/braid.md): the shell writes its pid, then execs braid
  it("test_isRunningThis", function()
    local path = pidfile()
    local p = proc.background(("echo $$ > %s; exec %s --pidfile %s -e %s 2>&1"):format(
      proc.quote(path), proc.quote(proc.BIN), proc.quote(path), proc.quote(show(path))))
    local lines, code = p:finish()
    assert.equal(0, code)
    holds_own_pid(lines)
    assert.equal("holds " .. p.pid, lines[1])
    assert.is_nil(slurp(path))
  end)

  -- pid 1 (init) is always running: alive to a root braid, EPERM to
  -- another, running either way; the file is left as it was
  it("test_isRunningInit", function()
    local path = pidfile("1\n")
    local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: another process (pid 1) runs with pidfile %s"):format(path) }, lines)
    assert.equal("1\n", slurp(path))
  end)
end)

---------------------------------------------------------------------------
-- twisted/test/test_twistd.py

describe("CheckPIDTests", function()
  -- twistd exits with "Pidfile ... contains non-numeric value"; braid
  -- refuses every content that is not one positive decimal number (blanks
  -- around it allowed, as int() takes it), and leaves the file alone
  it("test_nonNumeric", function()
    -- past the int range: 2^31 (a pid_t would wrap), 2^64 + 99999999 (a
    -- long would wrap to a stale pid); a stale pid followed, past 63 bytes,
    -- by text (braid reads at most 63)
    for _, bad in ipairs({ "non-numeric", "12abc", "0\n", "-5\n", "1 2\n", "12\0",
                           "99999999999999999999\n", ("1"):rep(100), "2147483648\n",
                           "18446744073809551615\n", "99999999" .. (" "):rep(70) .. "x" }) do
      local path = pidfile(bad)
      local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" })
      assert.equal(1, code, ("%q"):format(bad))
      assert.same({ ("braid: pidfile %s holds no pid; refusing to overwrite it"):format(path) }, lines)
      assert.equal(bad, slurp(path))
    end
    -- blanks around a pid are fine: a stale one is replaced
    local path = pidfile("  99999999 \n")
    local lines, code = proc.run({ "--pidfile", path, "-e", show(path) })
    assert.equal(0, code)
    holds_own_pid(lines)
  end)
end)

describe("UnixApplicationRunnerRemovePIDTests", function()
  -- twistd logs the ENOENT of a pidfile gone before its exit; braid
  -- removes the file only while it holds braid's pid, so one that is gone
  -- is left gone, and nothing is said
  it("test_removePIDErrors", function()
    local path = pidfile()
    local lines, code = proc.run({ "--pidfile", path, "-e",
      ("assert(os.remove(%q)); print('removed')"):format(path) })
    assert.equal(0, code)
    assert.same({ "removed" }, lines)
    assert.is_nil(slurp(path))
  end)
end)
