-- braid.console: a line-based Lua console served inside a running process
-- (`braid --console unix:PATH|tcp:127.0.0.1:PORT`). Spec: spec/console_spec.lua,
-- spec/reload_watch_spec.lua (with a real `braid --watch --console`).
--
-- Each line is tried as `return LINE` first, then as a statement; a line
-- that leaves a statement unfinished waits for the next (as lua.c does).
-- Results are tostring'ed and tab-separated, errors printed as
-- `error: ...`. Evaluation and printing run under core.runLimited's count
-- hook, which raises once they have run longer than M.TIME_LIMIT seconds
-- (and at every instruction after that, so a loop catching the error with
-- pcall is stopped too, coroutines included), so a loop typed by mistake
-- is reported, not fatal. The inspect helpers read the runtime
-- without hooks in it: connections from the registry anchors braid keeps
-- for live transports, pending Deferreds by walking what is reachable.
local M = {}

local reactor = require("braid.reactor")
local basic = require("braid.basic")
local protocol = require("braid.protocol")
local reload = require("braid.reload")
local errors = require("braid.error")
local class = require("braid.class")

local pack, select, tostring, type, pcall = table.pack, select, tostring, type, pcall
local next, rawget, concat, sort = next, rawget, table.concat, table.sort
local runLimited = require("braid.core").runLimited
local getupvalue, getuservalue, getlocal, getinfo = debug.getupvalue, debug.getuservalue, debug.getlocal, debug.getinfo
local rawmeta = debug.getmetatable
local seconds = reactor.seconds

--- Seconds of wall time a line may run (evaluation and printing) before
-- it is interrupted. Change it here or from the console (`console.TIME_LIMIT = 30`).
M.TIME_LIMIT = 5
--- Longer input lines (or unfinished statements) close the connection.
M.MAX_LINE = 1024 * 1024
--- An unfinished statement longer than this many lines (or than
-- MAX_PENDING bytes) is dropped with an error: each line parses it again
-- whole, so its cost grows with the square of its length.
M.MAX_PENDING_LINES = 1000
M.MAX_PENDING = 64 * 1024
--- With a password: seconds a client has to send it before it is closed,
-- and the longest line taken as one (a longer one closes the connection),
-- so a client that never logs in holds neither a connection nor a buffer
-- for long.
M.LOGIN_TIMEOUT = 30
M.MAX_PASSWORD_LINE = 1024

local function log_msg(...)
  local ok, log = pcall(require, "braid.log")
  if ok then log.msg(...) end
end

---------------------------------------------------------------------------
-- Reports: the inspect helpers return lists of rows that print as a table
-- (one row per line, fields in a fixed order) and index as plain lists.

local Report = {}
Report.__index = Report

local function fmt_value(v)
  if type(v) == "number" and math.type(v) == "float" then return ("%.3f"):format(v) end
  return tostring(v)
end

Report.__tostring = function(r)
  local lines = { ("%d %s"):format(#r, r._what) }
  for i = 1, #r do
    local row, parts = r[i], {}
    for _, k in ipairs(r._fields) do
      local v = row[k]
      if v ~= nil then parts[#parts + 1] = k .. "=" .. fmt_value(v) end
    end
    lines[#lines + 1] = "  " .. concat(parts, " ")
  end
  return concat(lines, "\n")
end

local function report(what, fields, rows)
  rows._what, rows._fields = what, fields
  return setmetatable(rows, Report)
end

---------------------------------------------------------------------------
-- inspect helpers

local inspect = {}
M.inspect = inspect

-- Which watched module a class (or plain table) belongs to: tables found
-- in each module table down to three levels (not through `super` or
-- `__index`, which lead into other modules), mapped to "name vN".
local function module_map()
  local map, loaded = {}, package.loaded
  local owned = {}
  for _, v in next, loaded do if type(v) == "table" then owned[v] = true end end
  local function visit(t, label, depth)
    if map[t] then return end
    map[t] = label
    if depth == 0 then return end
    for k, v in next, t do
      if type(v) == "table" and k ~= "super" and k ~= "__index" and not owned[v] then
        visit(v, label, depth - 1)
      end
    end
  end
  for name, rec in pairs(reload._records) do
    local live = loaded[name]
    if type(live) == "table" then visit(live, name .. " v" .. #rec.versions, 3) end
  end
  return map
end

-- The code version of a protocol instance: its class or a parent of it
-- found in a watched module.
local function code_version(p, map)
  local c = rawmeta(p)
  local hops = 0
  while type(c) == "table" and hops < 32 do
    local v = map[c]
    if v then return v end
    local idx = rawget(c, "__index")
    if type(idx) == "table" and idx ~= c and map[idx] then return map[idx] end
    c = rawget(c, "super")
    hops = hops + 1
  end
  return "-"
end

local function peer_text(t)
  local ok, a = pcall(t.getPeer, t)
  if not ok or type(a) ~= "table" then return "?" end
  if a.port then return tostring(a.host) .. ":" .. tostring(a.port) end
  return a.name and tostring(a.name) or "unix"
end

--- Live connections: the transports braid keeps anchored while open.
-- @return a list of {session, protocol, peer, queued (bytes of output
--   not yet written), paused, version (the watched module and version of
--   the protocol's code), state}
function inspect.connections()
  local rows = {}
  local reg = debug.getregistry()
  if reg["braid.tcp"] ~= nil then
    local is_transport = require("braid.core").tcp_is_transport
    local map = module_map()
    for _, t in next, reg do
      if type(t) == "userdata" and is_transport(t) then
        local ok, state = pcall(t._state, t)
        if ok and state ~= "closed" then
          local p = t.protocol
          local paused = t.paused
          if paused == nil and type(p) == "table" then paused = p.paused == true end
          rows[#rows + 1] = {
            session = t.sessionno,
            protocol = p ~= nil and class.nameof(p) or "-",
            peer = peer_text(t),
            queued = t:getWriteBufferSize(),
            paused = paused or false,
            version = type(p) == "table" and code_version(p, map) or "-",
            state = t.disconnecting and "closing" or state,
          }
        end
      end
    end
  end
  sort(rows, function(a, b) return a.session < b.session end)
  return report("connections", { "session", "protocol", "peer", "queued", "paused", "version", "state" }, rows)
end

local function where(f)
  if type(f) ~= "function" then return tostring(f) end
  local info = getinfo(f, "S")
  if info.what == "C" then return "[C]" end
  return info.short_src .. ":" .. info.linedefined
end

--- Pending DelayedCalls, soonest first.
-- @return a list of {due (seconds from now), func (where it is defined), args}
function inspect.delayedCalls()
  local rows = {}
  local now = seconds()
  for _, dc in ipairs(reactor.getDelayedCalls()) do
    local ok, active = pcall(dc.active, dc)
    if ok and active then
      rows[#rows + 1] = { due = dc:getTime() - now, func = where(dc.func), args = dc.args.n }
    end
  end
  sort(rows, function(a, b) return a.due < b.due end)
  return report("delayed calls", { "due", "func", "args" }, rows)
end

-- Every pending Deferred reachable from the registry (modules, anchored
-- transports and timers, the main thread's stack...): an iterative walk of
-- tables, functions' upvalues, userdata's metatables and user values, and
-- threads' stacks.
local function pending_deferreds()
  local defer = package.loaded["braid.defer"]
  local out = {}
  if type(defer) ~= "table" or not defer.isDeferred then return out end
  local isDeferred = defer.isDeferred
  local seen, stack, n = {}, { debug.getregistry() }, 1
  seen[seen], seen[stack], seen[out] = true, true, true
  local function push(v)
    local tv = type(v)
    if (tv == "table" or tv == "function" or tv == "userdata" or tv == "thread") and not seen[v] then
      seen[v] = true
      n = n + 1
      stack[n] = v
    end
  end
  while n > 0 do
    local v = stack[n]
    stack[n] = nil
    n = n - 1
    local tv = type(v)
    if tv == "table" then
      -- a Deferred made by the C constructor holds no `called` of its own
      -- until it fires (its class's false stands for it)
      if rawget(v, "called") ~= true and isDeferred(v) then out[#out + 1] = v end
      push(rawmeta(v))
      for k, x in next, v do push(k); push(x) end
    elseif tv == "function" then
      local i = 1
      while true do
        local name, x = getupvalue(v, i)
        if name == nil then break end
        push(x)
        i = i + 1
      end
    elseif tv == "userdata" then
      push(rawmeta(v))
      local i = 1
      while true do
        local x, ok = getuservalue(v, i)
        if not ok then break end
        push(x)
        i = i + 1
      end
    else -- a thread: its functions and locals, level by level
      local level = 0
      while true do
        local info = getinfo(v, level, "f")
        if not info then break end
        push(info.func)
        local i = 1
        while true do
          local name, x = getlocal(v, level, i)
          if name == nil then break end
          push(x)
          i = i + 1
        end
        level = level + 1
      end
    end
  end
  return out
end

local function made_where(tb)
  if type(tb) ~= "string" then return nil end
  for line in tb:gmatch("[^\n]+") do
    local w = line:match("^%s*([^%[%s][^:]*:%d+):")
    if w and not w:find("braid/defer%.lua") and not w:find("braid/class%.lua") then return w end
  end
  return nil
end

--- Pending (not yet fired) Deferreds. Where each was made and its age are
-- known for Deferreds made while defer.setDebugging(true) was on.
-- @return a list of {deferred, made (file:line), age (seconds), paused}
function inspect.deferreds()
  local rows = {}
  local now = os.time()
  for _, d in ipairs(pending_deferreds()) do
    local dbg = rawget(d, "_dbg")
    local made = type(dbg) == "table" and rawget(dbg, "made")
    rows[#rows + 1] = {
      deferred = tostring(d),
      made = type(dbg) == "table" and made_where(rawget(dbg, "creator")) or nil,
      age = type(made) == "number" and now - made or nil,
      paused = d.paused,
    }
  end
  sort(rows, function(a, b) return (a.age or -1) > (b.age or -1) end)
  local ok, defer = pcall(require, "braid.defer")
  local what = "pending deferreds"
  if ok and not defer.getDebugging() then what = what .. " (defer.setDebugging(true) records where and when)" end
  return report(what, { "deferred", "made", "age", "paused" }, rows)
end

--- Modules loaded from files braid can reload.
-- @return a list of {name, version, watch ("inotify", "poll" or "-"),
--   changed (the file differs from what runs), path}
function inspect.modules()
  local changed = {}
  for _, n in ipairs(reload.changed()) do changed[n] = true end
  local rows = {}
  for name, rec in pairs(reload._records) do
    rows[#rows + 1] = { name = name, version = #rec.versions,
                        watch = reload.watchMode(name) or "-",
                        changed = changed[name] or false, path = rec.path }
  end
  sort(rows, function(a, b) return a.name < b.name end)
  return report("modules", { "name", "version", "watch", "changed", "path" }, rows)
end

---------------------------------------------------------------------------
-- Evaluation

local TIMED_OUT = "console: time limit exceeded"

-- Render a value for the console: plain tables one field per line.
local function render(v)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do
    parts[#parts + 1] = tostring(k) .. ": " .. tostring(x)
  end
  sort(parts)
  if #parts == 0 then return "{}" end
  return concat(parts, "\n")
end

local function run_and_render(chunk)
  local r = pack(chunk())
  if r.n == 0 then return nil end
  local out = {}
  for i = 1, r.n do out[i] = render(r[i]) end
  return concat(out, "\t")
end

local INCOMPLETE = "<eof>$"

--- Evaluate one chunk of source in env; returns the text to print (nil
-- when there is nothing to print) and never raises. The second result is
-- true when the source is an unfinished statement (more lines wanted). A
-- non-string line raises TypeError.
-- @param line Lua source
-- @param env the environment (a table)
function M.eval(line, env)
  errors.checktype("eval", 1, line, "string")
  local chunk = load("return " .. line, "=console", "t", env)
  if not chunk then
    local err
    chunk, err = load(line, "=console", "t", env)
    if not chunk then
      if tostring(err):find(INCOMPLETE) then return nil, true end
      return "error: " .. tostring(err)
    end
  end
  local limit = M.TIME_LIMIT
  local ok, out = runLimited(limit, "wall", TIMED_OUT, nil, run_and_render, chunk)
  if ok then return out end
  -- an error value's __tostring is user code too
  local shown, text = runLimited(limit, "wall", TIMED_OUT, nil, tostring, out)
  if not shown or type(text) ~= "string" then
    text = ("(error object is a %s value)"):format(class.nameof(out))
  end
  return "error: " .. text
end

--- A console environment: globals plus inspect, reload, rollback, the
-- braid.reload module (reloadlib), this module (console) and print.
function M.newEnv(write)
  local env = {
    inspect = inspect, reload = reload.reload, rollback = reload.rollback,
    reloadlib = reload, console = M,
    print = function(...)
      local n = select("#", ...)
      local t = { ... }
      for i = 1, n do t[i] = tostring(t[i]) end
      write(concat(t, "\t", 1, n))
    end,
  }
  return setmetatable(env, { __index = _G })
end

---------------------------------------------------------------------------
-- The protocol

local Console = basic.LineReceiver:extend("Console")
Console.delimiter = "\n"
M.Console = Console

local function banner()
  return "braid console " .. require("braid.core").version ..
    " (expressions or statements; inspect.connections(), inspect.modules(), reload(name), rollback(name))"
end

-- compare without stopping at the first difference
local function same(a, b)
  local diff = #a ~ #b
  for i = 1, #a do diff = diff | (a:byte(i) ~ (b:byte(i) or 0)) end
  return diff == 0
end

function Console:connectionMade()
  self.MAX_LENGTH = M.MAX_LINE
  local factory = self.factory
  self._password = factory and factory.password or nil
  self._pending = nil
  self._pendingLines = 0
  self._env = M.newEnv(function(s) self:sendLine(s) end)
  if self._password then
    self.MAX_LENGTH = M.MAX_PASSWORD_LINE
    self._loginTimer = reactor.callLater(M.LOGIN_TIMEOUT, function()
      self._loginTimer = nil
      log_msg("console: no password in " .. M.LOGIN_TIMEOUT .. " s, connection closed")
      self:sendLine("error: login timed out")
      self.transport:loseConnection()
    end)
    self:sendLine("password:")
  else
    self:sendLine(banner())
  end
end

function Console:_stopLoginTimer()
  local t = self._loginTimer
  self._loginTimer = nil
  if t and t:active() then t:cancel() end
end

function Console:connectionLost()
  self:_stopLoginTimer()
end

function Console:lineReceived(line)
  if line:byte(-1) == 13 then line = line:sub(1, -2) end
  if self._password then
    self:_stopLoginTimer()
    if not same(line, self._password) then
      log_msg("console: wrong password, connection closed")
      self:sendLine("error: wrong password")
      self.transport:loseConnection()
      return
    end
    self._password = nil
    self.MAX_LENGTH = M.MAX_LINE
    self:sendLine(banner())
    return
  end
  local src = line
  if self._pending then src = self._pending .. "\n" .. line
  elseif line:match("^%s*$") then return end
  if #src > M.MAX_LINE then return self:lineLengthExceeded(src) end
  local out, more = M.eval(src, self._env)
  local lines = (self._pendingLines or 0) + 1
  self._pending, self._pendingLines = nil, 0
  if more then
    if lines > M.MAX_PENDING_LINES or #src > M.MAX_PENDING then
      out = ("error: unfinished statement longer than %d lines or %d bytes; dropped")
        :format(M.MAX_PENDING_LINES, M.MAX_PENDING)
    else
      self._pending, self._pendingLines = src, lines
    end
  end
  if out then self:sendLine(out) end
end

function Console:lineLengthExceeded()
  self:_stopLoginTimer()
  log_msg("console: line longer than " .. self.MAX_LENGTH .. " bytes, connection closed")
  self:sendLine("error: line too long")
  self.transport:loseConnection()
end

local function read_password(path)
  local f, err = io.open(path, "r")
  if not f then error(errors.ValueError("console.serve: cannot read auth file: " .. tostring(err)), 3) end
  local pw = f:read("l")
  f:close()
  if pw then pw = pw:gsub("\r$", "") end
  if not pw or pw == "" then error(errors.ValueError("console.serve: empty auth file " .. path), 3) end
  return pw
end

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = "127.0.0.1" }

-- "tcp:PORT", "tcp:HOST:PORT", "tcp:[V6]:PORT", "tcp:PORT:interface=HOST"
local function parse_tcp(spec)
  local port, iface = spec:match("^(%d+):interface=(.+)$")
  if port then return iface, port end
  port = spec:match("^(%d+)$")
  if port then return "127.0.0.1", port end
  local host
  host, port = spec:match("^%[(.+)%]:(%d+)$")
  if host then return host, port end
  return spec:match("^(.+):(%d+)$")
end

--- Serve the console on `unix:PATH` or `tcp:[HOST:]PORT` (HOST defaults to
-- 127.0.0.1). The listening port is also kept as console.port. Under
-- `--workers`, worker N serves on PATH.N, or on PORT + N - 1.
-- @param endpoint the endpoint string
-- @param authfile optional password file (required for a non-loopback host)
-- @return the listening port
function M.serve(endpoint, authfile)
  errors.checktype("serve", 1, endpoint, "string")
  if authfile ~= nil then errors.checktype("serve", 2, authfile, "string") end
  local factory = protocol.Factory.forProtocol(Console)
  factory.noisy = false
  if authfile then factory.password = read_password(authfile) end
  local path = endpoint:match("^unix:address=(.+)$") or endpoint:match("^unix:(.+)$")
  local port
  local worker = reactor.workerId
  if path then
    if worker then path = path .. "." .. worker end
    -- listenUNIX removes only a socket file no server listens on: anything
    -- else at PATH (a file, another server's live console) is an error
    port = reactor.listenUNIX(path, factory, nil, tonumber("600", 8))
  else
    local host, pnum = parse_tcp(endpoint:match("^tcp:(.+)$") or "")
    if not pnum then
      error(errors.ValueError("console.serve: endpoint must be unix:PATH or tcp:[HOST:]PORT, got " .. endpoint), 2)
    end
    local lb = LOOPBACK[host]
    if type(lb) == "string" then host = lb end
    if not lb and not authfile then
      error(errors.ValueError("console.serve: " .. host .. " is not loopback; use --console-auth FILE"), 2)
    end
    pnum = tonumber(pnum)
    if worker and pnum ~= 0 then pnum = pnum + worker - 1 end
    port = reactor.listenTCP(pnum, factory, nil, host)
  end
  M.port = port
  log_msg("console listening on " .. tostring(port))
  return port
end

return M
