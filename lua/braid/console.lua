-- braid.console: a line-based Lua console served inside a running process
-- (`braid --console unix:PATH|tcp:127.0.0.1:PORT`). Spec: spec/console_spec.lua.
--
-- Each line is tried as `return LINE` first, then as a statement; results
-- are tostring'ed and tab-separated, errors are printed as `error: ...`.
-- A statement runs under a count hook that raises once it has run longer
-- than M.TIME_LIMIT seconds, so a loop typed by mistake is reported, not
-- fatal.
local M = {}

local reactor = require("braid.reactor")
local basic = require("braid.basic")
local protocol = require("braid.protocol")
local reload = require("braid.reload")
local errors = require("braid.error")

local pack, unpack, select, tostring, type = table.pack, table.unpack, select, tostring, type
local sethook, gethook = debug.sethook, debug.gethook
local seconds = reactor.seconds

M.TIME_LIMIT = 5           -- seconds of wall time per line
M.MAX_LINE = 1024 * 1024   -- longer lines close the connection
M.HOOK_COUNT = 10000       -- instructions between time checks

local function log_msg(...)
  local ok, log = pcall(require, "braid.log")
  if ok then log.msg(...) end
end

---------------------------------------------------------------------------
-- inspect helpers

local inspect = {}
M.inspect = inspect

--- Live connections, when the transport layer exposes them
-- (tcp._connections): protocol, peer, bytes queued, paused, code version.
function inspect.connections()
  local out = {}
  local ok, tcp = pcall(require, "braid.tcp")
  local conns = ok and type(tcp._connections) == "function" and tcp._connections() or {}
  for i = 1, #conns do
    local t = conns[i]
    local p = t.protocol
    local peer = t.getPeer and t:getPeer()
    out[i] = {
      protocol = p and require("braid.class").nameof(p) or "?",
      peer = peer and (peer.host and (tostring(peer.host) .. ":" .. tostring(peer.port)) or tostring(peer.name)) or "?",
      queued = t.getQueuedBytes and t:getQueuedBytes() or nil,
      paused = t.paused or false,
    }
  end
  return out
end

--- Pending DelayedCalls (reactor.getDelayedCalls).
function inspect.delayedCalls()
  local f = reactor.getDelayedCalls
  return f and f() or {}
end

--- Pending Deferreds (recorded only with defer.setDebugging(true)).
function inspect.deferreds()
  local ok, defer = pcall(require, "braid.defer")
  local f = ok and defer._pendingDeferreds
  return f and f() or {}
end

--- Watched modules: name, path, version, whether the file changed.
function inspect.modules()
  local changed = {}
  for _, n in ipairs(reload.changed()) do changed[n] = true end
  local out = {}
  for name, rec in pairs(reload._records) do
    out[#out + 1] = { name = name, path = rec.path, version = #rec.versions,
                      changed = changed[name] or false }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Render a value for the console: tables of tables one per line.
local function render(v)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do
    if type(x) == "table" and getmetatable(x) == nil then
      local fields = {}
      for fk, fv in pairs(x) do fields[#fields + 1] = tostring(fk) .. "=" .. tostring(fv) end
      table.sort(fields)
      parts[#parts + 1] = tostring(k) .. ": " .. table.concat(fields, " ")
    else
      parts[#parts + 1] = tostring(k) .. ": " .. tostring(x)
    end
  end
  table.sort(parts)
  if #parts == 0 then return "{}" end
  return table.concat(parts, "\n")
end

---------------------------------------------------------------------------
-- Evaluation

local function timed_out() error("console: time limit exceeded", 2) end

--- Evaluate one line in env; returns the text to print (never raises).
-- @param line Lua source
-- @param env the environment (a table)
function M.eval(line, env)
  local chunk = load("return " .. line, "=console", "t", env)
  if not chunk then
    local err
    chunk, err = load(line, "=console", "t", env)
    if not chunk then return "error: " .. tostring(err) end
  end
  local deadline = seconds() + M.TIME_LIMIT
  local hf, hm, hc = gethook()
  sethook(function()
    if seconds() > deadline then timed_out() end
  end, "", M.HOOK_COUNT)
  local r = pack(pcall(chunk))
  sethook(hf, hm, hc or 0)
  if not r[1] then return "error: " .. tostring(r[2]) end
  if r.n == 1 then return nil end
  local out = {}
  for i = 2, r.n do out[#out + 1] = render(r[i]) end
  return table.concat(out, "\t")
end

--- A console environment: globals plus inspect, reload and rollback.
function M.newEnv(write)
  local env = {
    inspect = inspect, reload = reload.reload, rollback = reload.rollback,
    reloadlib = reload,
    print = function(...)
      local n = select("#", ...)
      local t = { ... }
      for i = 1, n do t[i] = tostring(t[i]) end
      write(table.concat(t, "\t", 1, n))
    end,
  }
  return setmetatable(env, { __index = _G })
end

---------------------------------------------------------------------------
-- The protocol

local Console = basic.LineReceiver:extend("Console")
Console.delimiter = "\n"
M.Console = Console

function Console:connectionMade()
  self.MAX_LENGTH = M.MAX_LINE
  local factory = self.factory
  self._password = factory and factory.password or nil
  self._env = M.newEnv(function(s) self:sendLine(s) end)
  if not self._password then self:sendLine("braid console " .. require("braid.core").version) end
end

function Console:lineReceived(line)
  line = line:gsub("\r$", "")
  if self._password then
    if line ~= self._password then
      log_msg("console: wrong password, connection closed")
      self:sendLine("error: wrong password")
      self.transport:loseConnection()
      return
    end
    self._password = nil
    self:sendLine("braid console " .. require("braid.core").version)
    return
  end
  if line:match("^%s*$") then return end
  local out = M.eval(line, self._env)
  if out then self:sendLine(out) end
end

function Console:lineLengthExceeded()
  log_msg("console: line longer than " .. M.MAX_LINE .. " bytes, connection closed")
  self.transport:loseConnection()
end

local function read_password(path)
  local f, err = io.open(path, "r")
  if not f then error(errors.ValueError("console.serve: cannot read auth file: " .. tostring(err)), 3) end
  local pw = f:read("l")
  f:close()
  if not pw or pw == "" then error(errors.ValueError("console.serve: empty auth file " .. path), 3) end
  return pw
end

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }

--- Serve the console on `unix:PATH` or `tcp:[HOST:]PORT`.
-- @param endpoint the endpoint string
-- @param authfile optional password file (required for a non-loopback host)
-- @return the listening port
function M.serve(endpoint, authfile)
  errors.checktype("serve", 1, endpoint, "string")
  if authfile ~= nil then errors.checktype("serve", 2, authfile, "string") end
  local factory = protocol.Factory.forProtocol(Console)
  factory.noisy = false
  if authfile then factory.password = read_password(authfile) end
  local path = endpoint:match("^unix:(.+)$")
  if path then
    os.remove(path)
    return reactor.listenUNIX(path, factory, nil, tonumber("600", 8))
  end
  local host, port = endpoint:match("^tcp:(.-):?(%d+)$")
  if not port then
    error(errors.ValueError("console.serve: endpoint must be unix:PATH or tcp:[HOST:]PORT, got " .. endpoint), 2)
  end
  if host == "" then host = "127.0.0.1" end
  if not LOOPBACK[host] and not authfile then
    error(errors.ValueError("console.serve: " .. host .. " is not loopback; use --console-auth FILE"), 2)
  end
  return reactor.listenTCP(tonumber(port), factory, nil, host)
end

return M
