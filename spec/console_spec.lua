-- spec/console_spec.lua: lua/braid/console.lua
local console = require("braid.console")
local reactor = require("braid.reactor")
local socket = require("socket")
local unix_ok, socket_unix = pcall(require, "socket.unix")

describe("console.eval", function()
  local env
  before_each(function() env = console.newEnv(function() end) end)

  it("evaluates an expression and prints every result", function()
    assert.equal("3\tx\tnil", console.eval("1 + 2, 'x', nil", env))
  end)

  it("runs a statement and keeps its globals for the next line", function()
    assert.is_nil(console.eval("y = 41", env))
    assert.equal("42", console.eval("y + 1", env))
  end)

  it("reports a syntax error", function()
    assert.matches("^error: .*", console.eval("local = 1", env))
  end)

  it("reports a raised error and goes on", function()
    assert.matches("^error: .*boom", console.eval("error('boom')", env))
    assert.equal("2", console.eval("1 + 1", env))
  end)

  it("stops a line that runs past the time limit", function()
    local saved = console.TIME_LIMIT
    console.TIME_LIMIT = 0.05
    finally(function() console.TIME_LIMIT = saved end)
    assert.matches("time limit exceeded", console.eval("while true do end", env))
    assert.is_nil(debug.gethook())
  end)

  it("offers inspect.modules and reload", function()
    assert.equal("table", console.eval("type(inspect.modules())", env))
    assert.equal("function", console.eval("type(reload)", env))
  end)
end)

describe("console.serve", function()
  it("refuses a non-loopback TCP host without a password file", function()
    local errors = require("braid.error")
    local ok, e = pcall(console.serve, "tcp:0.0.0.0:0")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)

  it("answers a real client over a UNIX socket with mode 0600", function()
    local path = os.tmpname()
    os.remove(path)
    local port = console.serve("unix:" .. path)
    finally(function() port:stopListening(); os.remove(path) end)
    local f = io.popen("stat -c %a " .. path); local mode = f:read("l"); f:close()
    assert.equal("600", mode)
    local c = assert((unix_ok and (type(socket_unix) == "table" and socket_unix.stream or socket_unix) or socket.unix)())
    assert(c:connect(path))
    c:settimeout(0)
    local got, buf = {}, ""
    local function pump(n)
      for _ = 1, 200 do
        reactor.iterate(0.01)
        local data, err, part = c:receive("*a")
        buf = buf .. (data or part or "")
        for l in buf:gmatch("([^\n]*)\n") do got[#got + 1] = l end
        buf = buf:match("[^\n]*$")
        if #got >= n then return end
        if err == "closed" then return end
      end
    end
    pump(1)
    assert.matches("^braid console", got[1])
    c:send("return 6 * 7\n")
    pump(2)
    assert.equal("42", got[2])
    c:send("error('bad')\n")
    pump(3)
    assert.matches("^error: .*bad", got[3])
    c:close()
  end)

  it("closes a connection whose line exceeds the limit, and keeps serving", function()
    local saved = console.MAX_LINE
    console.MAX_LINE = 1000
    local port = console.serve("tcp:127.0.0.1:0")
    finally(function() console.MAX_LINE = saved; port:stopListening() end)
    local pn = port:getHost().port
    local function client()
      local c = assert(socket.connect("127.0.0.1", pn))
      c:settimeout(0)
      return c
    end
    local function pump(c, pat)
      local buf = ""
      for _ = 1, 200 do
        reactor.iterate(0.01)
        local data, err, part = c:receive("*a")
        buf = buf .. (data or part or "")
        if pat and buf:find(pat) then return buf, "found" end
        if err == "closed" then return buf, "closed" end
      end
      return buf, "timeout"
    end
    local bad = client()
    bad:send(string.rep("x", 5000))
    local _, how = pump(bad)
    assert.equal("closed", how)
    bad:close()
    local good = client()
    good:send("return 'ok'\n")
    local out = pump(good, "ok\n")
    assert.matches("\nok\n$", out)
    good:close()
  end)
end)
