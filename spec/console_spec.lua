-- spec/console_spec.lua: lua/braid/console.lua
local console = require("braid.console")
local reactor = require("braid.reactor")
local reload = require("braid.reload")
local defer = require("braid.defer")
local protocol = require("braid.protocol")
local errors = require("braid.error")
local tmp = require("helpers.tmp")
local socket = require("socket")
local unix_ok, socket_unix = pcall(require, "socket.unix")

local function unix_socket()
  return assert((unix_ok and (type(socket_unix) == "table" and socket_unix.stream or socket_unix) or socket.unix)())
end

-- Iterate the reactor until cond() is true (bounded: fails, never hangs).
local function until_(cond, what)
  for _ = 1, 500 do
    if cond() then return end
    reactor.iterate(0.01)
  end
  error("timed out waiting for " .. (what or "a condition"))
end

-- A real client of a console port: reads lines while the reactor turns.
local function client(c)
  c:settimeout(0)
  local k = { c = c, lines = {}, buf = "", closed = false }
  function k.pump()
    local data, err, part = c:receive("*a")
    k.buf = k.buf .. (data or part or "")
    while true do
      local l, rest = k.buf:match("^([^\n]*)\n(.*)$")
      if not l then break end
      k.lines[#k.lines + 1] = l
      k.buf = rest
    end
    if err == "closed" then k.closed = true end
  end
  function k.line(i)
    until_(function() k.pump(); return #k.lines >= i or k.closed end, "console line " .. i)
    return k.lines[i]
  end
  function k.send(s) assert(c:send(s)) end
  function k.waitClosed()
    until_(function() k.pump(); return k.closed end, "the console to close the connection")
  end
  return k
end

-- Nothing may stay open after a spec: turn the reactor until the server
-- side of every closed client is gone too.
local function settle()
  until_(function() return #console.inspect.connections() == 0 end, "connections to close")
end

local function tcp_client(port)
  return client(assert(socket.connect("127.0.0.1", port:getHost().port)))
end

-- console.serve with a password file holding pw; a connected client that
-- has read the prompt. Everything is closed and removed after the spec.
local function serve_with_password(pw)
  local path = tmp.file(pw .. "\n")
  local port = console.serve("tcp:127.0.0.1:0", path)
  local k = tcp_client(port)
  finally(function() k.c:close(); port:stopListening(); os.remove(path) end)
  assert.equal("password:", k.line(1))
  return k
end

-- Lower console.TIME_LIMIT to 0.05 s for the running spec.
local function short_limit()
  local saved = console.TIME_LIMIT
  console.TIME_LIMIT = 0.05
  finally(function() console.TIME_LIMIT = saved end)
end

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

  it("asks for more input when a statement is unfinished", function()
    local out, more = console.eval("for i = 1, 3 do", env)
    assert.is_nil(out)
    assert.is_true(more)
    assert.is_nil(console.eval("for i = 1, 3 do\n s = (s or 0) + i\nend", env))
    assert.equal("6", console.eval("s", env))
  end)

  it("reports a raised error and goes on", function()
    assert.matches("^error: .*boom", console.eval("error('boom')", env))
    assert.equal("2", console.eval("1 + 1", env))
  end)

  it("reports a result whose __tostring raises instead of raising", function()
    local out = console.eval("setmetatable({}, {__tostring = function() error('no text') end})", env)
    assert.matches("^error: .*no text", out)
  end)

  it("interrupts a statement that loops past the configurable time limit", function()
    short_limit()
    local t0 = reactor.seconds()
    assert.matches("time limit exceeded", console.eval("while true do end", env))
    assert.is_true(reactor.seconds() - t0 < 2)
    assert.is_nil(debug.gethook())
  end)

  it("changes the time limit from the console itself", function()
    local saved = console.TIME_LIMIT
    finally(function() console.TIME_LIMIT = saved end)
    assert.is_nil(console.eval("console.TIME_LIMIT = 0.05", env))
    assert.equal(0.05, console.TIME_LIMIT)
    assert.matches("time limit exceeded", console.eval("local t = {} while true do t[1] = 1 end", env))
  end)

  it("interrupts printing a result that loops", function()
    short_limit()
    local out = console.eval("setmetatable({}, {__tostring = function() while true do end end})", env)
    assert.matches("time limit exceeded", out)
  end)

  it("interrupts a loop that catches the time limit's error with pcall", function()
    short_limit()
    local t0 = reactor.seconds()
    local out = console.eval("while true do pcall(function() while true do end end) end", env)
    assert.equal("error: console:1: console: time limit exceeded", out)
    assert.is_true(reactor.seconds() - t0 < 2)
    assert.is_nil(debug.gethook())
  end)

  it("interrupts a loop running in a coroutine the line made", function()
    short_limit()
    local t0 = reactor.seconds()
    local out = console.eval("while true do coroutine.resume(coroutine.create(function() "
      .. "while true do end end)) end", env)
    assert.equal("error: console:1: console: time limit exceeded", out)
    out = console.eval("coroutine.wrap(function() while true do end end)()", env)
    assert.matches("^error: .*console: time limit exceeded$", out)
    assert.is_true(reactor.seconds() - t0 < 4)
  end)

  it("lets a coroutine made under the limit run freely on a later line", function()
    assert.is_nil(console.eval("co = coroutine.wrap(function() for i = 1, 3 do "
      .. "local n = 0 for j = 1, 100000 do n = n + j end coroutine.yield(n + i) end end)", env))
    assert.equal("5000050001", console.eval("co()", env))
    assert.is_nil(debug.gethook())
    assert.equal("5000050002", console.eval("co()", env))
  end)

  it("reports an error object whose __tostring loops or raises by its type", function()
    short_limit()
    assert.equal("error: (error object is a table value)",
      console.eval("error(setmetatable({}, {__tostring = function() while true do end end}))", env))
    assert.equal("error: (error object is a table value)",
      console.eval("error(setmetatable({}, {__tostring = function() error('inner') end}))", env))
    assert.equal("error: console:1: plain", console.eval("error('plain')", env))
  end)

  it("prints a plain table one sorted field per line, and an empty one as {}", function()
    assert.equal("{}", console.eval("{}", env))
    assert.equal("a: 1\nb: x\nc: 3\nd: 4\ne: 5\nf: 6\ng: 7\nh: 8",
      console.eval("{ h = 8, g = 7, f = 6, e = 5, d = 4, c = 3, b = 'x', a = 1 }", env))
  end)

  it("offers inspect, reload, rollback and reloadlib", function()
    assert.equal("table", console.eval("type(inspect.modules())", env))
    assert.equal("function", console.eval("type(reload)", env))
    assert.equal("function", console.eval("type(rollback)", env))
    assert.equal("true", console.eval("reloadlib == require('braid.reload')", env))
  end)
end)

describe("console.Console", function()
  local testing = require("braid.testing")

  local function connected()
    local p = protocol.Factory.forProtocol(console.Console):buildProtocol(nil)
    local t = testing.StringTransport()
    p:makeConnection(t)
    t:clear()
    return p, t
  end

  it("takes an unfinished statement up to MAX_PENDING_LINES lines", function()
    local p, t = connected()
    p:dataReceived("console_spec_t = {\n" .. ("1,\n"):rep(console.MAX_PENDING_LINES - 2) .. "}\n")
    p:dataReceived("return #console_spec_t\n")
    console_spec_t = nil  -- luacheck: ignore
    assert.equal(tostring(console.MAX_PENDING_LINES - 2) .. "\n", t:value())
  end)

  it("drops an unfinished statement past MAX_PENDING_LINES lines, at once", function()
    local p, t = connected()
    local t0 = os.clock()
    p:dataReceived("t = {\n" .. ("1,\n"):rep(console.MAX_PENDING_LINES) .. "return 7\n")
    assert.equal(("error: unfinished statement longer than %d lines or %d bytes; dropped\n7\n")
      :format(console.MAX_PENDING_LINES, console.MAX_PENDING), t:value())
    assert.is_true(os.clock() - t0 < 2)
    assert.is_true(t.connected)
  end)

  it("drops an unfinished statement past MAX_PENDING bytes", function()
    local p, t = connected()
    local saved = console.MAX_PENDING
    console.MAX_PENDING = 100
    finally(function() console.MAX_PENDING = saved end)
    p:dataReceived("s = [[\n" .. ("x"):rep(60) .. "\n" .. ("y"):rep(60) .. "\n1 + 2\n")
    assert.equal("error: unfinished statement longer than 1000 lines or 100 bytes; dropped\n3\n",
      t:value())
  end)
end)

describe("console inspect helpers", function()
  after_each(settle)
  local dir = tmp.dir()
  package.path = dir .. "/?.lua;" .. package.path
  reload._installSearcher()
  local f = assert(io.open(dir .. "/inspected_proto.lua", "w"))
  f:write([[
local M = {}
M.Echo = require("braid.protocol").Protocol:extend("InspectedEcho")
function M.Echo:dataReceived(d) self.transport:write(d) end
return M
]])
  f:close()
  f = assert(io.open(dir .. "/inspected_aaa.lua", "w"))
  f:write("return {}\n")
  f:close()
  local mod = require("inspected_proto")
  require("inspected_aaa")
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("lists live connections with protocol, peer, bytes queued and code version", function()
    local port = reactor.listenTCP(0, protocol.Factory.forProtocol(mod.Echo), nil, "127.0.0.1")
    local c = assert(socket.connect("127.0.0.1", port:getHost().port))
    finally(function() c:close(); port:stopListening() end)
    local row
    until_(function()
      for _, r in ipairs(console.inspect.connections()) do
        if r.protocol == "InspectedEcho" then row = r end
      end
      return row ~= nil
    end, "the connection to show")
    assert.equal("InspectedEcho", row.protocol)
    assert.matches("^127%.0%.0%.1:%d+$", row.peer)
    assert.equal(0, row.queued)
    assert.is_false(row.paused)
    assert.equal("inspected_proto v1", row.version)
    assert.equal("open", row.state)
    assert.matches("1 connections?\n  session=%d+ protocol=InspectedEcho", tostring(console.inspect.connections()))
  end)

  it("lists connections by session, with the watched module a subclass's code comes from, else -", function()
    local Sub = mod.Echo:extend("InspectedSub")
    local Plain = protocol.Protocol:extend("InspectedPlain")
    local ports, clients = {}, {}
    finally(function()
      for _, c in ipairs(clients) do c:close() end
      for _, p in ipairs(ports) do p:stopListening() end
    end)
    for _, P in ipairs({ Sub, Plain, Sub }) do
      local port = reactor.listenTCP(0, protocol.Factory.forProtocol(P), nil, "127.0.0.1")
      ports[#ports + 1] = port
      clients[#clients + 1] = assert(socket.connect("127.0.0.1", port:getHost().port))
      -- each accepted before the next connects, so sessions follow this order
      until_(function()
        local n = 0
        for _, r in ipairs(console.inspect.connections()) do
          if r.protocol == "InspectedSub" or r.protocol == "InspectedPlain" then n = n + 1 end
        end
        return n == #clients
      end, "the connection to show")
    end
    local rows = {}
    for _, r in ipairs(console.inspect.connections()) do
      if r.protocol == "InspectedSub" or r.protocol == "InspectedPlain" then rows[#rows + 1] = r end
    end
    assert.same({ "InspectedSub", "InspectedPlain", "InspectedSub" },
      { rows[1].protocol, rows[2].protocol, rows[3].protocol })
    assert.same({ "inspected_proto v1", "-", "inspected_proto v1" },
      { rows[1].version, rows[2].version, rows[3].version })
    assert.is_true(rows[1].session < rows[2].session and rows[2].session < rows[3].session)
  end)

  it("lists pending delayed calls, soonest first, with where their function is", function()
    local later = reactor.callLater(50, function() end)
    local sooner = reactor.callLater(20, print)
    finally(function() later:cancel(); sooner:cancel() end)
    local rows = console.inspect.delayedCalls()
    local mine = {}
    for _, r in ipairs(rows) do
      if r.due > 19 and r.due <= 50 then mine[#mine + 1] = r end
    end
    assert.equal(2, #mine)
    assert.equal("[C]", mine[1].func)
    assert.matches("console_spec%.lua:%d+$", mine[2].func)
    assert.is_true(mine[1].due < mine[2].due)
  end)

  it("counts a delayed call's arguments, nils included, and prints due with three decimals", function()
    local dc = reactor.callLater(40, print, 1, nil)
    finally(function() dc:cancel() end)
    local report = console.inspect.delayedCalls()
    local row
    for _, r in ipairs(report) do if r.due > 39 and r.due <= 40 then row = r end end
    assert.equal(2, row.args)
    assert.matches("\n  due=[34]%d%.%d%d%d func=%[C%] args=2", tostring(report))
  end)

  it("finds a pending Deferred held only by a local, with where and when it was made", function()
    defer.setDebugging(true)
    local d = defer.Deferred()
    defer.setDebugging(false)
    local fired = defer.Deferred()
    fired:callback(1)
    local found
    for _, r in ipairs(console.inspect.deferreds()) do
      if r.deferred == tostring(d) then found = r end
      assert.are_not.equal(tostring(fired), r.deferred)
    end
    assert.is_table(found)
    assert.matches("console_spec%.lua:%d+$", found.made)
    assert.is_true(found.age >= 0 and found.age < 5)
    d:callback(nil)
  end)

  -- the walk took a Deferred for fired unless it held `called = false`
  -- itself, which one made by the C constructor (every Deferred made while
  -- debugging is off) does not: none of them was ever listed
  it("finds a pending Deferred made with debugging off, printing no where or when for it", function()
    local d = defer.Deferred()
    finally(function() d:callback(nil) end)
    local text = tostring(console.inspect.deferreds())
    local line = text:match("\n  (deferred=" .. tostring(d):gsub("%p", "%%%0") .. "[^\n]*)")
    assert.is_string(line)
    assert.is_nil(line:find("made=", 1, true))
    assert.is_nil(line:find("age=", 1, true))
  end)

  it("lists recorded modules with their version and how they are watched", function()
    local found
    for _, r in ipairs(console.inspect.modules()) do
      if r.name == "inspected_proto" then found = r end
    end
    assert.equal(1, found.version)
    assert.equal("-", found.watch)
    assert.is_false(found.changed)
    assert.matches("inspected_proto%.lua$", found.path)
  end)

  it("lists modules sorted by name and marks the one whose file changed", function()
    local f = assert(io.open(dir .. "/inspected_aaa.lua", "a"))
    f:write("-- edited\n")
    f:close()
    local rows = console.inspect.modules()
    local names, changed = {}, {}
    for _, r in ipairs(rows) do names[#names + 1] = r.name; changed[r.name] = r.changed end
    local sorted = { table.unpack(names) }
    table.sort(sorted)
    assert.same(sorted, names)
    assert.is_true(#names >= 2)
    assert.is_true(changed.inspected_aaa)
    assert.is_false(changed.inspected_proto)
  end)
end)

describe("console.serve", function()
  after_each(settle)
  it("refuses a non-loopback TCP host without a password file", function()
    local ok, e = pcall(console.serve, "tcp:0.0.0.0:0")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)

  it("refuses an endpoint it does not know", function()
    local ok, e = pcall(console.serve, "ssl:0")
    assert.is_false(ok)
    assert.equal(errors.ValueError, e.class)
  end)

  it("listens on loopback for tcp:PORT and keeps the port as console.port", function()
    local port = console.serve("tcp:0")
    finally(function() port:stopListening() end)
    assert.equal(port, console.port)
    assert.equal("127.0.0.1", port:getHost().host)
  end)

  it("answers a real client over a UNIX socket with mode 0600", function()
    local path = tmp.path()
    local port = console.serve("unix:" .. path)
    local c = unix_socket()
    finally(function() c:close(); port:stopListening(); os.remove(path) end)
    local f = io.popen("stat -c %a " .. path); local mode = f:read("l"); f:close()
    assert.equal("600", mode)
    assert(c:connect(path))
    local k = client(c)
    assert.matches("^braid console", k.line(1))
    k.send("return 6 * 7\n")
    assert.equal("42", k.line(2))
    k.send("error('bad')\n")
    assert.matches("^error: .*bad", k.line(3))
    k.send("for i = 1, 2 do\nprint('p' .. i)\nend\n")
    assert.equal("p1", k.line(4))
    assert.equal("p2", k.line(5))
  end)

  -- it removed whatever was at PATH first: a file, or the live console of
  -- another server, which it then took over
  it("leaves a file or another server's live socket at PATH alone, and raises", function()
    local path = tmp.file("notes\n")
    local ok, e = pcall(console.serve, "unix:" .. path)
    assert.is_false(ok)
    assert.matches("Address already in use", tostring(e))
    f = assert(io.open(path)); local text = f:read("a"); f:close()
    assert.equal("notes\n", text)
    os.remove(path)
    local first = console.serve("unix:" .. path)
    local c
    -- busted keeps only the last finally(): one for both
    finally(function() if c then c:close() end; first:stopListening(); os.remove(path) end)
    ok, e = pcall(console.serve, "unix:" .. path)
    assert.is_false(ok)
    assert.matches("Address already in use", tostring(e))
    c = unix_socket()
    assert(c:connect(path))
    assert.matches("^braid console", client(c).line(1))
  end)

  it("replaces the socket file a dead server left at PATH", function()
    local path = tmp.path()
    -- a socket bound by a process that has exited: nothing listens on it
    assert.is_true(os.execute("/usr/bin/python3 -c 'import socket; socket.socket(socket.AF_UNIX)"
      .. ".bind(\"" .. path .. "\")'"))
    assert.equal("socket", io.popen("stat -c %F " .. path):read("l"))
    local port = console.serve("unix:" .. path)
    local c = unix_socket()
    finally(function() c:close(); port:stopListening(); os.remove(path) end)
    assert(c:connect(path))
    assert.matches("^braid console", client(c).line(1))
  end)

  it("serves with a password: the right one opens the console", function()
    local k = serve_with_password("s3cret")
    k.send("s3cret\r\n")
    assert.matches("^braid console", k.line(2))
    k.send("1 + 1\n")
    assert.equal("2", k.line(3))
  end)

  it("closes the connection on a wrong password and evaluates nothing", function()
    local k = serve_with_password("s3cret")
    k.send("guess\nconsole_spec_owned = true\n")
    assert.equal("error: wrong password", k.line(2))
    k.waitClosed()
    assert.is_nil(rawget(_G, "console_spec_owned"))
    assert.equal(2, #k.lines)
  end)

  -- a client that never sent the password held its connection, and up to
  -- MAX_LINE (1 MiB) of buffered input, for ever
  it("closes a client that sends no password within LOGIN_TIMEOUT", function()
    local saved = console.LOGIN_TIMEOUT
    console.LOGIN_TIMEOUT = 0.05
    finally(function() console.LOGIN_TIMEOUT = saved end)
    local k = serve_with_password("s3cret")
    assert.equal("error: login timed out", k.line(2))
    k.waitClosed()
    assert.equal(2, #k.lines)
  end)

  it("closes a client whose password line is longer than MAX_PASSWORD_LINE, and keeps MAX_LINE after login", function()
    local k = serve_with_password("s3cret")
    k.send(("x"):rep(console.MAX_PASSWORD_LINE + 10))
    assert.equal("error: line too long", k.line(2))
    k.waitClosed()
    local k2 = serve_with_password("s3cret")
    k2.send("s3cret\n")
    assert.matches("^braid console", k2.line(2))
    k2.send("return #'" .. ("y"):rep(4000) .. "'\n")
    assert.equal("4000", k2.line(3))
  end)

  it("survives garbage: binary bytes, NULs and half statements are errors", function()
    local port = console.serve("tcp:127.0.0.1:0")
    local k = tcp_client(port)
    finally(function() k.c:close(); port:stopListening() end)
    k.line(1)
    k.send("\0\1\2\255\254 garbage ))(( \n")
    assert.matches("^error: ", k.line(2))
    k.send("end end end\n")
    assert.matches("^error: ", k.line(3))
    k.send(string.rep("\255", 4096) .. "\n")
    assert.matches("^error: ", k.line(4))
    k.send("return 'alive'\n")
    assert.equal("alive", k.line(5))
  end)

  it("closes a connection sending a 10 MB line, and keeps serving others", function()
    local port = console.serve("tcp:127.0.0.1:0")
    local bad, good = tcp_client(port), nil
    finally(function() bad.c:close(); if good then good.c:close() end; port:stopListening() end)
    bad.line(1)
    local chunk = string.rep("x", 1024 * 1024)
    local sent = 0
    bad.c:settimeout(0)
    until_(function()
      if sent < 10 * #chunk then
        local n, _, part = bad.c:send(chunk)
        sent = sent + (n or part or 0)
      end
      bad.pump()
      return bad.closed or sent >= 10 * #chunk
    end, "the 10 MB line to be sent or refused")
    bad.waitClosed()
    assert.equal("error: line too long", bad.lines[2])
    good = tcp_client(port)
    good.line(1)
    good.send("return 'ok'\n")
    assert.equal("ok", good.line(2))
  end)
end)
