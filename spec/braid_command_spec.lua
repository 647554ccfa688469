-- spec for runtime/main.c: the braid command
local proc = require "helpers.proc"
local tmp = require "helpers.tmp"

local function tmpfile(content)
  return tmp.file(content)
end

local function script(content)
  local dir = tmp.dir()
  local path = dir .. "/main.lua"
  local f = assert(io.open(path, "w"))
  f:write(content)
  f:close()
  return path, dir
end

-- run the lines as `braid -e CODE`; it must exit 0; its output lines
local function run_code(lines)
  local out, code = proc.run({ "-e", table.concat(lines, "\n") })
  assert.equal(0, code)
  return out
end

describe("braid", function()
  it("-v names braid's, Lua's and libevent's versions and the backend", function()
    local lines, code = proc.run({ "-v" })
    assert.equal(0, code)
    assert.equal(1, #lines)
    assert.matches("^braid %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libevent 2%.%d+%.%d+%-stable, backend epoll%)$", lines[1])
  end)

  it("-v with a script prints the versions, then runs it (as lua5.4 -v)", function()
    local lines, code = proc.run({ "-v", "-e", "print('ran', ...)" })
    assert.equal(0, code)
    assert.equal(2, #lines)
    assert.matches("^braid %d+%.%d+%.%d+ %(", lines[1])
    assert.equal("ran", lines[2])
  end)

  -- the values were checked by Lua code run with a traceback handler, so
  -- a mistyped level printed a stack trace
  it("a bad --loglevel or --console value gives one line and status 1", function()
    local lines, code = proc.run({ "--loglevel", "nope", "-e", "print(1)" })
    assert.equal(1, code)
    assert.same({ "braid: ValueError: bad argument #1 to 'setLevel' (unknown level 'nope'; "
      .. "expected debug, info, warn, error or critical)" }, lines)
    lines, code = proc.run({ "--console", "bogus", "-e", "print(1)" })
    assert.equal(1, code)
    assert.same({ "braid: ValueError: console.serve: endpoint must be unix:PATH or "
      .. "tcp:[HOST:]PORT, got bogus" }, lines)
  end)

  it("--console-auth without --console gives one line and status 1", function()
    local lines, code = proc.run({ "--console-auth", "pw.txt", "-e", "print(1)" })
    assert.equal(1, code)
    assert.same({ "braid: --console-auth needs --console" }, lines)
  end)

  it("-v reports the backend chosen with --reactor", function()
    for _, b in ipairs({ "poll", "select", "epoll" }) do
      local lines, code = proc.run({ "--reactor", b, "-e", "print(require('braid.reactor').backend())" })
      assert.equal(0, code)
      assert.same({ b }, lines)
    end
  end)

  it("refuses an unknown backend with one line and status 1", function()
    local lines, code = proc.run({ "--reactor", "kqueue", "-e", "print(1)" })
    assert.equal(1, code)
    assert.equal(1, #lines)
    assert.matches("^braid: .*unknown backend 'kqueue' %(epoll, poll or select%)", lines[1])
  end)

  it("-h prints usage and exits 0", function()
    local lines, code = proc.run({ "-h" })
    assert.equal(0, code)
    assert.matches("^usage: braid %[options%] script%.lua %[args%.%.%.%]", lines[1])
    local text = table.concat(lines, "\n")
    for _, opt in ipairs({ "--watch", "--reactor", "--logfile", "--loglevel", "--pidfile",
                           "--console", "--workers", "--shutdown-grace", "-e CODE", "--version" }) do
      assert.truthy(text:find(opt, 1, true), opt)
    end
  end)

  it("a bad option gives one line and status 1", function()
    local lines, code = proc.run({ "--frobnicate", "x.lua" })
    assert.equal(1, code)
    assert.same({ "braid: unknown option '--frobnicate' (try braid --help)" }, lines)
  end)

  it("an option missing its value gives one line and status 1", function()
    local lines, code = proc.run({ "--reactor" })
    assert.equal(1, code)
    assert.same({ "braid: option '--reactor' needs a value (try braid --help)" }, lines)
  end)

  -- strtol took a leading space or sign and ran ' 2' as 2 workers
  it("--workers takes digits only, from 1 to 1024, and names itself otherwise", function()
    for _, bad in ipairs({ " 2", "2 ", "+2", "-1", "", "0", "1025", "99999999999999999999", "2x", "0x2" }) do
      local lines, code = proc.run({ "--workers", bad, "-e", "print('ran')" })
      assert.equal(1, code, bad)
      assert.same({ ("braid: --workers needs a number from 1 to 1024, got '%s'"):format(bad) }, lines)
    end
    local lines, code = proc.run({ "--workers", "01", "-e", "print('ran')" })
    assert.equal(0, code)
    assert.same({ "ran" }, lines)
  end)

  it("a missing script gives one line and status 1", function()
    local lines, code = proc.run({ "/nonexistent/nothing.lua" })
    assert.equal(1, code)
    assert.same({ "braid: cannot open /nonexistent/nothing.lua (No such file or directory)" }, lines)
  end)

  it("no script at all gives one line and status 1", function()
    local lines, code = proc.run({})
    assert.equal(1, code)
    assert.same({ "braid: no script given (try braid --help)" }, lines)
  end)

  it("sets arg and passes the script's arguments as ...", function()
    local path = script("print(arg[0]:match('main.lua$'), arg[1], arg[2], select('#', ...), ...)")
    local lines, code = proc.run({ path, "a", "b c" })
    assert.equal(0, code)
    assert.same({ "main.lua\ta\tb c\t2\ta\tb c" }, lines)
  end)

  it("puts the script's directory first on package.path", function()
    local path, dir = script("print(require('helpermod').value)")
    local f = assert(io.open(dir .. "/helpermod.lua", "w"))
    f:write("return { value = 'from beside the script' }")
    f:close()
    local lines, code = proc.run({ path })
    assert.equal(0, code)
    assert.same({ "from beside the script" }, lines)
  end)

  it("an error in the main chunk prints the message and traceback and exits 1", function()
    local path = script("local function f() error('kaboom') end\nf()\n")
    local lines, code = proc.run({ path })
    assert.equal(1, code)
    assert.matches("^braid: .*main%.lua:1: kaboom$", lines[1])
    assert.equal("stack traceback:", lines[2])
  end)

  it("an error class raised by the main chunk prints as an instance of it, as braid.failure takes it", function()
    local path = script("local errors = require 'braid.error'\nerror(errors.ConnectionDone)\n")
    local lines, code = proc.run({ path })
    assert.equal(1, code)
    assert.equal("braid: ConnectionDone: Connection was closed cleanly.", lines[1])
    assert.equal("stack traceback:", lines[2])
    lines, code = proc.run({ "-e", "error(require('braid.error').ReactorNotRunning)" })
    assert.equal(1, code)
    assert.equal("braid: ReactorNotRunning", lines[1])
    lines, code = proc.run({ "-e", "error(require('braid.class').Object)" })
    assert.equal(1, code)
    assert.equal("braid: <class Object>", lines[1])
  end)

  it("runs the reactor itself when the script leaves a call pending", function()
    local path = script([[
      local reactor = require "braid.reactor"
      reactor.callLater(0.01, function() print("fired", reactor.running); reactor.stop() end)
      print("script done")
    ]])
    local lines, code = proc.run({ path })
    assert.equal(0, code)
    assert.same({ "script done", "fired\ttrue" }, lines)
  end)

  it("runs callWhenRunning callbacks left by the script", function()
    local lines, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      reactor.callWhenRunning(function() print("running"); reactor.stop() end)
    ]] })
    assert.equal(0, code)
    assert.same({ "running" }, lines)
  end)

  it("exits at once when the script leaves nothing pending", function()
    local lines, code = proc.run({ "-e", "require('braid.reactor'); print('bye')" })
    assert.equal(0, code)
    assert.same({ "bye" }, lines)
  end)

  it("does not run the reactor again after the script ran and stopped it", function()
    local lines, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      reactor.callLater(0, reactor.stop)
      reactor.callLater(60, print, "never")
      reactor.run()
      print("after run")
    ]] })
    assert.equal(0, code)
    assert.same({ "after run" }, lines)
  end)

  it("leaves the loop alone when the script drove it with iterate (as busted does)", function()
    local lines, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      reactor.callLater(0, print, "ran in iterate")
      reactor.callLater(60, print, "never")
      reactor.iterate(0)
      print("done")
    ]] })
    assert.equal(0, code)
    assert.same({ "ran in iterate", "done" }, lines)
  end)

  -- os.execute was system(), which ignores SIGINT and SIGQUIT in braid while
  -- the command runs (a Ctrl-C ended the command and the reactor never
  -- heard of it) and puts back the settings it began with when the command
  -- ends (a thread-pool job's command spanning run() put a stale SIGINT
  -- setting back). braid's own leaves them alone.
  it("runs commands with braid's SIGINT and SIGQUIT handling left alone, in the script and in a thread", function()
    local lines, code = proc.run({ "-e", [[
      local threads = require "braid.threads"
      local reactor = require "braid.reactor"
      -- SigIgn and SigCgt of braid (the shell's parent), read while the command runs
      local function masks()
        local out = os.tmpname()
        assert(os.execute("grep -E '^Sig(Ign|Cgt)' /proc/$PPID/status > " .. out))
        local f = assert(io.open(out))
        local ign = tonumber(f:read("l"):match("%x+$"), 16)
        local cgt = tonumber(f:read("l"):match("%x+$"), 16)
        f:close()
        os.remove(out)
        local function bits(m) return (m >> 1) & 1, (m >> 2) & 1 end  -- SIGINT 2, SIGQUIT 3
        local ii, iq = bits(ign)
        local ci, cq = bits(cgt)
        return ("ignored %d%d caught %d%d"):format(ii, iq, ci, cq)
      end
      print("before run", masks())
      reactor.callWhenRunning(function()
        print("script", masks())
        threads.deferToThread(masks):addBoth(function(v)
          print("thread", v)
          reactor.stop()
        end)
      end)
      reactor.run()
    ]] })
    assert.equal(0, code, table.concat(lines, "\n"))
    assert.same({ "before run\tignored 00 caught 00", "script\tignored 00 caught 10",
                  "thread\tignored 00 caught 10" }, lines)
  end)

  -- a Ctrl-C goes to braid and its command alike (the terminal signals the
  -- whole process group): the reactor's handler stops it, from a command
  -- in the script or in a thread
  it("stops at a Ctrl-C that comes while a command runs, in the script or in a thread", function()
    for _, job in ipairs({
      "print(os.execute('kill -INT $PPID $$'))",
      "threads.deferToThread(function() return os.execute('kill -INT $PPID $$') end)",
    }) do
      local lines, code = proc.run({ "--logfile", "-", "-e", [[
        local reactor = require "braid.reactor"
        local threads = require "braid.threads"
        reactor.callWhenRunning(function() ]] .. job .. [[ end)
        reactor.callLater(10, function() print("not stopped") reactor.stop() end)
        reactor.run()
      ]] })
      assert.equal(0, code)
      local text = table.concat(lines, "\n")
      assert.matches("%[%-%] Received SIGINT, shutting down%.", text)
      assert.is_nil(text:find("not stopped"), text)
      local _, count = text:gsub("Received SIGINT", "")
      assert.equal(1, count, text)
    end
  end)

  -- the same results as Lua's own os.execute (system()), in the script and in
  -- a thread
  it("gives os.execute's results as Lua's own does", function()
    local script = [[
      local function all()
        local function show(...)
          local t = table.pack(...)
          for i = 1, t.n do t[i] = tostring(t[i]) end
          return table.concat(t, " ", 1, t.n)
        end
        return table.concat({ show(os.execute()), show(os.execute("true")),
          show(os.execute("exit 3")), show(os.execute("kill -TERM $$")),
          show(os.execute("exec 2>/dev/null; no-such-command-here")),
          show(pcall(os.execute, {})) }, "|")
      end
      print(all())
      if BRAID then
        local threads = require "braid.threads"
        local reactor = require "braid.reactor"
        threads.deferToThread(all):addBoth(function(v) print(v) reactor.stop() end)
        reactor.run()
      end
    ]]
    local want = { "true", "true exit 0", "nil exit 3", "nil signal 15", "nil exit 127" }
    local lines, code = proc.run({ "-e", "BRAID = true " .. script })
    assert.equal(0, code, table.concat(lines, "\n"))
    local err = "false TypeError: bad argument #1 to 'os.execute' (string expected, got table)"
    local braid = table.concat(want, "|") .. "|" .. err
    assert.same({ braid, braid }, lines)
    local h = assert(io.popen("lua5.4 -e " .. proc.quote(script) .. " 2>&1"))
    local plain = h:read("a")
    h:close()
    assert.equal(table.concat(want, "|")
      .. "|false bad argument #1 to 'os.execute' (string expected, got table)\n", plain)
  end)

  -- braid's own writes get EPIPE instead of SIGPIPE; an ignored SIGPIPE
  -- would pass to the commands it runs (exec keeps it), and a pipeline
  -- into `head` then never ended
  it("runs commands with SIGPIPE at its default, in the script and in a thread", function()
    local lines, code = proc.run({ "-e", [[
      local threads = require "braid.threads"
      local reactor = require "braid.reactor"
      local function ignored()
        local h = io.popen("grep SigIgn /proc/self/status")
        local mask = tonumber(h:read("l"):match("SigIgn:%s*(%x+)"), 16)
        h:close()
        return mask & (1 << 12) ~= 0  -- SIGPIPE is 13
      end
      print("script", ignored())
      threads.deferToThread(ignored):addBoth(function(v)
        print("thread", v)
        reactor.stop()
      end)
      reactor.run()
      print("pipeline", os.execute("yes | head -n 1 >/dev/null"))
    ]] })
    assert.equal(0, code)
    assert.same({ "script\tfalse", "thread\tfalse", "pipeline\ttrue\texit\t0" }, lines)
  end)

  -- a braid serving with --pidfile at a fresh path, once it runs
  local function serving_with_pidfile()
    local pidfile = tmpfile()
    os.remove(pidfile)
    local p = proc.spawn({ "--pidfile", pidfile, "-e", [[
      local reactor = require "braid.reactor"
      print("up")
      reactor.run()
    ]] })
    assert.equal("up", p:waitFor("up"))
    return p, pidfile
  end

  it("--pidfile writes the pid and removes the file at exit", function()
    local p, pidfile = serving_with_pidfile()
    local f = assert(io.open(pidfile))
    local pid = tonumber(f:read("l"))
    f:close()
    assert.equal(p:braidPid(), pid)
    p:kill("TERM")
    local _, code = p:finish()
    assert.equal(0, code)
    assert.is_nil(io.open(pidfile))
  end)

  -- a second instance overwrote the file, and removed it at its exit
  -- while the first still ran
  it("--pidfile refuses a pidfile whose process is alive, and replaces a stale one", function()
    local p, pidfile = serving_with_pidfile()
    local lines, code = proc.run({ "--pidfile", pidfile, "-e", "print('second ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: another process (pid %d) runs with pidfile %s"):format(p:braidPid(), pidfile) },
      lines)
    local f = assert(io.open(pidfile))
    assert.equal(p:braidPid(), tonumber(f:read("l")))
    f:close()
    p:kill("TERM")
    assert.equal(0, select(2, p:finish()))
    assert.is_nil(io.open(pidfile))
    -- a pid no process has (above pid_max): stale, replaced and removed
    f = assert(io.open(pidfile, "w")); f:write("99999999\n"); f:close()
    lines, code = proc.run({ "--pidfile", pidfile, "-e", "print(io.open('" .. pidfile .. "'):read('n') ~= 99999999)" })
    assert.equal(0, code)
    assert.same({ "true" }, lines)
    assert.is_nil(io.open(pidfile))
  end)

  -- the message said which file but not why it could not be written
  it("--pidfile that cannot be written names the path and the reason, status 1", function()
    local dir = tmp.path()
    local path = dir .. "/missing/braid.pid"
    local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: cannot write pidfile %s (No such file or directory)"):format(path) }, lines)
    assert(os.execute("mkdir -p " .. proc.quote(dir)))
    lines, code = proc.run({ "--pidfile", dir, "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ ("braid: cannot write pidfile %s (Is a directory)"):format(dir) }, lines)
  end)

  -- a named pipe as the pidfile: braid waited for ever in open(), for a
  -- writer (reading it) or a reader (writing it)
  it("--pidfile refuses a named pipe instead of waiting on it, status 1", function()
    local path = tmp.path(".pid")
    assert(os.execute("mkfifo " .. proc.quote(path)))
    local lines, code = proc.run({ "--pidfile", path, "-e", "print('ran')" }, { limit = 5 })
    assert.equal(1, code)
    assert.same({ ("braid: pidfile %s is a named pipe; refusing to use it"):format(path) }, lines)
    os.remove(path)
  end)

  it("--pidfile leaves the file alone at exit if another process took it over", function()
    local pidfile = tmpfile()
    os.remove(pidfile)
    local lines, code = proc.run({ "--pidfile", pidfile, "-e", [[
      local f = assert(io.open("]] .. pidfile .. [[", "w"))
      f:write("1\n")
      f:close()
      print("rewritten")
    ]] })
    assert.equal(0, code)
    assert.same({ "rewritten" }, lines)
    local f = assert(io.open(pidfile))
    assert.equal(1, tonumber(f:read("l")))
    f:close()
    os.remove(pidfile)
  end)

  it("--logfile - logs to standard output in Twisted's format", function()
    local lines, code = proc.run({ "--logfile", "-", "-e", [[
      local log = require "braid.log"
      log.msg("hello", 42)
    ]] })
    assert.equal(0, code)
    assert.equal(2, #lines)
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d %[%-%] Log opened%.$", lines[1])
    assert.equal("[-] hello 42", proc.untime(lines[2]))
  end)

  it("--logfile PATH appends log lines to the file", function()
    local path = tmpfile()
    local _, code = proc.run({ "--logfile", path, "-e", "require('braid.log').msg('into the file')" })
    assert.equal(0, code)
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    os.remove(path)
    assert.matches("%[%-%] Log opened%.\n", text)
    assert.matches("%[%-%] into the file\n", text)
  end)

  it("--loglevel filters lower levels", function()
    local lines, code = proc.run({ "--logfile", "-", "--loglevel", "error", "-e", [[
      local log = require "braid.log"
      local logger = log.Logger("spec")
      logger:info("hidden")
      logger:error("shown {x}", { x = 1 })
    ]] })
    assert.equal(0, code)
    local s = {}
    for i, l in ipairs(lines) do s[i] = proc.untime(l) end
    assert.is_nil(table.concat(s, "\n"):find("hidden"))
    assert.truthy(table.concat(s, "\n"):find("shown 1", 1, true))
  end)

  it("--workers N runs N workers that know their workerId, and stops them on SIGTERM", function()
    local p = proc.spawn({ "--workers", "2", "-e", [[
      local reactor = require "braid.reactor"
      reactor.addSystemEventTrigger("before", "shutdown", function()
        print("worker " .. reactor.workerId .. " shutting down")
      end)
      -- said once run() has its SIGTERM handler: before that, a SIGTERM
      -- ends a worker by its default action (as a Twisted process before
      -- reactor.run), and a loaded machine let it land there
      reactor.callWhenRunning(function()
        print("worker " .. tostring(reactor.workerId))
        io.stdout:flush()
      end)
      reactor.run()
    ]] })
    local seen = {}
    seen[#seen + 1] = p:waitFor("^worker %d$")
    seen[#seen + 1] = p:waitFor("^worker %d$")
    table.sort(seen)
    assert.same({ "worker 1", "worker 2" }, seen)
    p:kill("TERM")
    local lines, code = p:finish()
    assert.equal(0, code)
    local downs = {}
    for _, l in ipairs(lines) do
      if l:match("shutting down$") then downs[#downs + 1] = l end
    end
    table.sort(downs)
    assert.same({ "worker 1 shutting down", "worker 2 shutting down" }, downs)
  end)

  -- each worker read stdin after the fork: the first took the script and
  -- the others ran an empty chunk and exited
  it("--workers N - reads the script from stdin once, for every worker", function()
    local script = proc.script("#!/usr/bin/env braid\n"
      .. "local reactor = require 'braid.reactor'\n"
      .. "print('worker ' .. reactor.workerId .. ' at line ' .. debug.getinfo(1, 'l').currentline)\n")
    finally(function() os.remove(script) end)
    local lines, code = proc.run({ "--workers", "3", "-" }, { stdin = script })
    assert.equal(0, code)
    table.sort(lines)
    assert.same({ "worker 1 at line 3", "worker 2 at line 3", "worker 3 at line 3" }, lines)
  end)

  -- a worker that got the SIGTERM before it had put back its own handlers
  -- used to run the supervisor's, lose it and serve on, and the supervisor
  -- waited for it for ever (about one start in three at 40 workers)
  it("--workers stops every worker on a SIGTERM sent while they start", function()
    for _ = 1, 4 do
      local p = proc.spawn({ "--workers", "40", "-e", [[
        local reactor = require "braid.reactor"
        reactor.callLater(30, reactor.stop)  -- no orphan outlives a failure
        reactor.run()
      ]] }, { limit = 15 })
      p:kill("TERM")  -- once the supervisor catches it: it is forking now
      local t0 = os.time()
      local _, code = p:finish()
      assert.equal(0, code)
      assert.is_true(os.time() - t0 < 10)
    end
  end)

  it("--workers restarts a worker that dies", function()
    local marker = tmpfile()
    os.remove(marker)
    local p = proc.spawn({ "--workers", "1", "-e", ([[
      local reactor = require "braid.reactor"
      local f = io.open(%q)
      if not f then
        io.open(%q, "w"):close()
        print("first life")
        os.exit(3)
      end
      f:close()
      print("second life")
      reactor.run()
    ]]):format(marker, marker) })
    assert.equal("first life", p:waitFor("life"))
    assert.equal("second life", p:waitFor("second life"))
    p:kill("TERM")
    local lines, code = p:finish()
    os.remove(marker)
    assert.equal(0, code)
    assert.matches("worker 1 %(pid %d+%) exited with 3; restarting in 0%.1 s", table.concat(lines, "\n"))
  end)

  -- the supervisor exited 1 once any worker had ever died, however it
  -- ended: a crash that a restart had mended failed the whole run
  it("--workers exits 0 when every worker ends with 0, after one died and was restarted", function()
    local marker = tmpfile()
    os.remove(marker)
    finally(function() os.remove(marker) end)
    local lines, code = proc.run({ "--workers", "2", "-e", ([[
      local reactor = require "braid.reactor"
      if reactor.workerId == 1 and not io.open(%q) then
        io.open(%q, "w"):close()
        os.exit(3)
      end
      reactor.callWhenRunning(function()
        print("worker " .. reactor.workerId .. " runs")
        reactor.stop()
      end)
      reactor.run()
    ]]):format(marker, marker) })
    assert.equal(0, code, table.concat(lines, "\n"))
    local out = table.concat(lines, "\n")
    assert.matches("worker 1 %(pid %d+%) exited with 3; restarting in 0%.1 s", out)
    assert.truthy(out:find("worker 1 runs", 1, true))
    assert.truthy(out:find("worker 2 runs", 1, true))
  end)

  -- a stop by SIGTERM exited 0 whatever the workers did: one that failed
  -- its own shutdown (here exiting 2) went unreported
  it("--workers exits 1, naming the worker, when one ends a stop with a failure", function()
    local p = proc.spawn({ "--workers", "2", "-e", [[
      local reactor = require "braid.reactor"
      reactor.addSystemEventTrigger("before", "shutdown", function()
        if reactor.workerId == 2 then os.exit(2) end
      end)
      reactor.callWhenRunning(function()
        print("worker " .. reactor.workerId)
        io.stdout:flush()
      end)
      reactor.callLater(15, reactor.stop)  -- no orphan outlives a failure
      reactor.run()
    ]] })
    p:waitFor("^worker %d$")
    p:waitFor("^worker %d$")
    p:kill("TERM")
    local lines, code = p:finish()
    assert.equal(1, code, table.concat(lines, "\n"))
    assert.matches("braid: worker 2 %(pid %d+%) exited with 2 while stopping", table.concat(lines, "\n"))
    assert.is_nil(table.concat(lines, "\n"):find("worker 1 (pid", 1, true))
  end)

  -- a worker that did not stop at the SIGTERM (here it has its own
  -- handler, which replaces the stop) kept the supervisor waiting for ever
  it("--workers sends SIGKILL to a worker still running --shutdown-grace seconds after the SIGTERM, and exits 1", function()
    local p = proc.spawn({ "--workers", "2", "--shutdown-grace", "0.5", "-e", [[
      local reactor = require "braid.reactor"
      if reactor.workerId == 2 then
        reactor.onSignal("TERM", function() print("worker 2 ignores SIGTERM") io.stdout:flush() end)
      end
      reactor.addSystemEventTrigger("before", "shutdown", function()
        print("worker " .. reactor.workerId .. " shutting down")
      end)
      reactor.callWhenRunning(function()
        print("worker " .. reactor.workerId)
        io.stdout:flush()
      end)
      reactor.callLater(15, reactor.stop)  -- no orphan outlives a failure
      reactor.run()
    ]] })
    p:waitFor("^worker %d$")
    p:waitFor("^worker %d$")
    local t0 = os.time()
    p:kill("TERM")
    local lines, code = p:finish()
    local out = table.concat(lines, "\n")
    assert.equal(1, code, out)
    assert.is_true(os.time() - t0 < 5)
    assert.truthy(out:find("worker 1 shutting down", 1, true))
    assert.truthy(out:find("worker 2 ignores SIGTERM", 1, true))
    assert.is_nil(out:find("worker 2 shutting down", 1, true))
    assert.matches("braid: worker 2 %(pid %d+%) still running 0%.5 s after SIGTERM; sending SIGKILL", out)
    assert.is_nil(out:find("worker 1 (pid", 1, true))
  end)

  it("--shutdown-grace takes seconds from 0 to 86400 and needs --workers", function()
    for _, bad in ipairs({ " 1", "1x", "-1", "", ".", "inf", "nan", "0x10", "86401" }) do
      local lines, code = proc.run({ "--workers", "1", "--shutdown-grace", bad, "-e", "print('ran')" })
      assert.equal(1, code, bad)
      assert.same({ ("braid: --shutdown-grace needs a number of seconds from 0 to 86400, got '%s'"):format(bad) }, lines)
    end
    local lines, code = proc.run({ "--shutdown-grace", "3", "-e", "print('ran')" })
    assert.equal(1, code)
    assert.same({ "braid: --shutdown-grace needs --workers" }, lines)
    lines, code = proc.run({ "--workers", "1", "--shutdown-grace", "2.5", "-e", "print('ran')" })
    assert.equal(0, code)
    assert.same({ "ran" }, lines)
  end)

  -- a worker whose script raised at load was restarted for ever (every
  -- 10 s once the backoff had grown), the supervisor never failing
  it("--workers gives up on a worker that dies within 1 s of its start 5 times in a row, stops the others, exits 1", function()
    local p = proc.spawn({ "--workers", "2", "-e", [[
      local reactor = require "braid.reactor"
      if reactor.workerId == 1 then error("worker 1 cannot start") end
      reactor.addSystemEventTrigger("before", "shutdown", function()
        print("worker " .. reactor.workerId .. " shutting down")
      end)
      reactor.callLater(15, reactor.stop)  -- no orphan outlives a failure
      reactor.run()
    ]] }, { limit = 10 })
    local t0 = os.time()
    local lines, code = p:finish()
    local out = table.concat(lines, "\n")
    assert.equal(1, code, out)
    assert.is_true(os.time() - t0 < 8)
    local restarts = {}
    for delay in out:gmatch("worker 1 %(pid %d+%) exited with 1; restarting in ([%d.]+) s") do
      restarts[#restarts + 1] = delay
    end
    assert.same({ "0.1", "0.2", "0.4", "0.8" }, restarts)
    assert.matches("braid: worker 1 %(pid %d+%) exited with 1; it died within 1 s of its start "
      .. "5 times in a row: giving up, stopping the other workers", out)
    assert.truthy(out:find("worker 2 shutting down", 1, true))
    assert.is_nil(out:find("worker 2 (pid", 1, true))
  end)

  -- SIGUSR1 and SIGUSR2 were left at their default action in the
  -- supervisor: logrotate's `kill -USR1 $(cat pidfile)` ended it and left
  -- its workers serving as orphans, their logs never reopened
  -- braid --workers 2 with these options running `body` (which has
  -- `local reactor`), each worker saying "worker N" once it runs; returns
  -- once both have
  local function two_workers(opts, body)
    local args = { "--workers", "2" }
    for _, a in ipairs(opts) do args[#args + 1] = a end
    args[#args + 1] = "-e"
    args[#args + 1] = body .. [[
      reactor.callWhenRunning(function()
        io.stdout:write("worker ", reactor.workerId, "\n")
        io.stdout:flush()
      end)
    ]]
    local p = proc.spawn(args)
    p:waitFor("^worker %d$")
    p:waitFor("^worker %d$")
    return p
  end

  it("--workers forwards SIGUSR1 (the log reopen) and SIGUSR2 to every worker", function()
    local dir = tmp.dir()
    finally(function() os.execute("rm -rf " .. proc.quote(dir)) end)
    local logpath = dir .. "/braid.log"
    local p = two_workers({ "--logfile", logpath }, [[
      local reactor = require "braid.reactor"
      for _, sig in ipairs({ "USR1", "USR2" }) do
        reactor.onSignal(sig, function(_, name)
          io.stdout:write(name, " in worker ", reactor.workerId, "\n")
          io.stdout:flush()
        end)
      end
      reactor.callLater(15, reactor.stop)  -- no orphan outlives a failure
    ]])
    assert(os.rename(logpath, logpath .. ".1"))
    p:kill("USR1")
    local got = { p:waitFor("^SIGUSR1 in worker %d$"), p:waitFor("^SIGUSR1 in worker %d$") }
    table.sort(got)
    assert.same({ "SIGUSR1 in worker 1", "SIGUSR1 in worker 2" }, got)
    -- braid's own action ran before the handlers: the log is open again at its path
    local f = io.open(logpath)
    assert.is_truthy(f)
    if f then f:close() end
    p:kill("USR2")
    got = { p:waitFor("^SIGUSR2 in worker %d$"), p:waitFor("^SIGUSR2 in worker %d$") }
    table.sort(got)
    assert.same({ "SIGUSR2 in worker 1", "SIGUSR2 in worker 2" }, got)
    p:kill("TERM")
    local lines, code = p:finish()
    assert.equal(0, code, table.concat(lines, "\n"))
    assert.is_nil(table.concat(lines, "\n"):find("restarting", 1, true))
  end)

  -- a supervisor killed with SIGKILL left its workers running for ever,
  -- orphans holding the shared port
  it("--workers: a supervisor that dies sends its workers a SIGTERM", function()
    local p = two_workers({}, [[
      local reactor = require "braid.reactor"
      local how = "on SIGTERM"
      reactor.callLater(15, function() how = "by the timer" reactor.stop() end)
      reactor.addSystemEventTrigger("before", "shutdown", function()
        io.stdout:write("worker ", reactor.workerId, " stops ", how, "\n")
        io.stdout:flush()
      end)
    ]])
    local t0 = os.time()
    p:kill("KILL")
    local lines = p:finish()  -- at EOF: the workers are gone too
    local stops = {}
    for _, l in ipairs(lines) do
      if l:find(" stops ", 1, true) then stops[#stops + 1] = l end
    end
    table.sort(stops)
    assert.same({ "worker 1 stops on SIGTERM", "worker 2 stops on SIGTERM" }, stops, table.concat(lines, "\n"))
    assert.is_true(os.time() - t0 < 10)
  end)

  -- the BRAID_WORKER_ID a worker has in its environment went on to the
  -- commands it ran: a braid among them was a worker too (workerId 1,
  -- SO_REUSEPORT on by default, so it shared the worker's port)
  it("--workers: a braid that a worker runs is no worker", function()
    local child = proc.quote(proc.BIN) .. " -e "
      .. proc.quote("print('child', require('braid.reactor').workerId)")
    local lines, code = proc.run({ "--workers", "1", "-e", ([[
      print("worker", require("braid.reactor").workerId)
      os.execute(%q)
    ]]):format(child) })
    assert.equal(0, code)
    assert.same({ "worker\t1", "child\tnil" }, lines)
  end)

  it("run() frees the garbage startup left behind before it serves", function()
    -- In generational mode a minor collection never frees an object that
    -- died old: here 2 MB of strings made old by a full collection, then
    -- dropped. run() collects them before its first turn, and keeps the
    -- script's collector mode.
    local lines = run_code({
      "local r = require('braid.reactor')",
      "local t = {} for i = 1, 2000 do t[i] = ('x'):rep(1000) .. i end",
      "collectgarbage() t = nil",
      "local before = collectgarbage('count')",
      "r.callLater(0, function()",
      "  print(math.floor((before - collectgarbage('count')) / 1000))",
      "  print(collectgarbage('generational')) r.stop() end)",
      "r.run()",
    })
    assert.equal(2, #lines)
    assert.is_true(tonumber(lines[1]) >= 1, "freed " .. lines[1] .. " MB")
    assert.equal("generational", lines[2])
  end)

  it("reports a Failure left in a Deferred when the script ends, referenced or not", function()
    local lines = run_code({
      "local defer = require('braid.defer')",
      "local r = require('braid.reactor')",
      "KEPT = defer.fail(defer.CancelledError('kept-global'))",  -- reachable until the state closes
      "local d = defer.Deferred()",                               -- unreachable once the script ends
      "r.callLater(0, function() d:errback(defer.CancelledError('kept-local')) end)",
      "r.callLater(0.01, r.stop)",
      "r.run()",
      "print('script done')",
    })
    local text = table.concat(lines, "\n")
    local _, reports = text:gsub("Unhandled error in Deferred:", "")
    assert.equal(2, reports)
    local l = text:find("CancelledError: kept-local", 1, true)
    local g = text:find("CancelledError: kept-global", 1, true)
    assert.is_truthy(l and g)
    assert.is_true(l < g)  -- the unreachable one at the script's end, the other at close
    assert.is_true(text:find("script done", 1, true) < l)
  end)

  it("reports a Failure held by two Deferreds at the state's close once", function()
    local lines = run_code({
      "local defer = require('braid.defer')",
      "local failure = require('braid.failure')",
      "local F = failure.Failure(defer.CancelledError('shared'))",
      "KEPT1 = defer.fail(F)",
      "KEPT2 = defer.fail(F)",
    })
    local text = table.concat(lines, "\n")
    local _, reports = text:gsub("Unhandled error in Deferred:", "")
    local _, shared = text:gsub("CancelledError: shared", "")
    assert.equal(1, reports)
    assert.equal(1, shared)
  end)

  it("task.react reports the Failures left in Deferreds before the process exits", function()
    local lines = run_code({
      "local defer = require('braid.defer')",
      "local task = require('braid.task')",
      "KEPT = defer.fail(defer.CancelledError('kept-global'))",
      "task.react(function(reactor)",
      "  return task.deferLater(reactor, 0, function()",
      "    local d = defer.Deferred()",
      "    d:errback(defer.CancelledError('dropped-in-run'))",
      "  end)",
      "end)",
    })
    local text = table.concat(lines, "\n")
    local _, reports = text:gsub("Unhandled error in Deferred:", "")
    assert.equal(2, reports)
    local l = text:find("CancelledError: dropped-in-run", 1, true)
    local g = text:find("CancelledError: kept-global", 1, true)
    assert.is_truthy(l and g)
    assert.is_true(l < g)  -- the unreachable one at shutdown, the other as the state closes
  end)
end)
