-- spec/helpers/factory_diff.lua: random programs for two families, and
-- braid's interpreter for them (spec/factory_diff_spec.lua runs the same
-- programs against Twisted with spec/peers/factory_diff.py and compares the
-- traces).
--
-- Family 1: the factory lifecycle and ReconnectingClientFactory
-- (braid.protocol; twisted.internet.protocol). A program is text:
--   prog ID fac KIND NOISY BUILD FAIL
--     KIND   factory (Factory), client (ClientFactory), rcf
--            (ReconnectingClientFactory); a subclass F whose repr is "F",
--            whose protocol is Protocol and whose startFactory/stopFactory
--            log "startFactory"/"stopFactory"
--     NOISY  noisy | quiet: the factory's noisy flag; what the factory logs
--            is traced as "log TEXT"
--     BUILD  plain, or reset: F.buildProtocol calls resetDelay() first
--     FAIL   none, start (startFactory raises E1 on its first call), stop
--            (stopFactory raises E2 on its first call)
--   set FIELD VALUE      an rcf field: jitter (always 0, first: Twisted
--                        jitters with random.normalvariate), factor,
--                        initialDelay, maxDelay, maxRetries (some programs
--                        reach delays past 2^63: initialDelay 1e18, factor
--                        10, then resetdelay)
--   conn N CONNECT STOP  fake connector cN (tostring "cN"); connect() logs
--                        "cN connect @T", then by CONNECT: log (nothing
--                        more), refuse:K / accept:K (its first K connects
--                        call startedConnecting and then
--                        clientConnectionFailed(cN, refused) / buildProtocol);
--                        stopConnecting() logs "cN stopConnecting", then by
--                        STOP: ok, notc (raises NotConnectingError), aware
--                        (calls clientConnectionFailed(cN, nil), as
--                        test_factories.py's FactoryAwareFakeConnector), boom
--                        (raises E3)
--   start | stop | build            doStart / doStop / buildProtocol(nil)
--   connecting N | failed N R | lost N R
--                        startedConnecting / clientConnectionFailed /
--                        clientConnectionLost with cN; R names the reason:
--                        refused, done, lost, timeout, none
--   retry [N]            retry() / retry(cN)
--   stoptrying | resetdelay
--   advance S            the Clock (the rcf's clock) moves S seconds
--   defaults             logs ReconnectingClientFactory's class fields
--   end
-- Every line logs what it caused, "OP -> ERROR" if it raised, then
-- "= n=NUMPORTS" (rcf: and " d=DELAY r=RETRIES ct=CONTINUE c=CONNECTOR
-- call=T|-", the pending retry's time). At the end: "pending T ...".
-- Numbers print as integers, or floats with "%.17g" (".0" added when that
-- reads as an integer), so integer/float types are compared too.
--
-- Family 2: endpoint description strings (braid.endpoints;
-- twisted.internet.endpoints). Only parsed, never listened or connected:
--   prog ID ep
--   server DESC | client DESC   serverFromString / clientFromString(DESC);
--                               DESC is the rest of the line
--   end
-- Each line logs "#I -> CLASS attr=VALUE ..." (the endpoint's private
-- fields: _port _backlog _interface; _address _backlog _mode; _host _port
-- _timeout _bindAddress; _path _timeout) or "#I -> ERRORCLASS".
-- Descriptions are made from the Twisted argument roles of each type, in
-- Twisted's positional order, with keywords anywhere, escaped ':' '=' and
-- '\', needless escapes, empty parts, duplicates, missing or unknown
-- arguments, bad integers, and some random text after the type.
--
-- Left out:
-- * jitter: set to 0 in every rcf program (Twisted draws from
--   random.normalvariate, braid from math.random).
-- * a Factory without a protocol: Twisted's buildProtocol asserts (gone
--   under python -O); braid raises ValueError. Every F has a protocol.
-- * a connector without stopConnecting (Twisted: AttributeError out of
--   stopTrying; braid's pcall hides a missing method as any other error).
-- * infinite delays (maxDelay = inf): braid's Clock refuses a non-finite
--   delay, Twisted's takes it; Python's "%d" of inf raises OverflowError.
-- * ssl:, systemd:, stdio: and other plugin types (docs/endpoints.md, "Where
--   braid differs": "Only tcp:, tcp6: and unix: here").
-- * _wantPID and _checkPID (docs/endpoints.md, "Where braid differs":
--   "unix: ignores lockfile and checkPID"). A lockfile that is no integer
--   stays in: Twisted's int() rejects it.
-- * "Abandoning None on explicit request" (retry() without a connector
--   after stopTrying): the peer prints Python's None as Lua's nil.
-- * upper-case types in server strings: Twisted is inconsistent there
--   (serverFromString looks "tcp"/"unix" up case-sensitively but finds
--   "TCP6" through the plugin's case-insensitive prefix; endpoints.py
--   _parseServer, _matchPluginToPrefix). Client strings (Twisted upper-cases
--   every type) keep them.
-- * a description whose first part holds "=" (Twisted takes the first
--   positional argument as the type, wherever it is, or raises IndexError),
--   and one ending in a lone backslash (Twisted's _tokenize calls next() past
--   the end: RuntimeError).
-- * non-ASCII digits (Python's int() takes them), and integers beyond 64
--   bits (Python's are unbounded; braid cannot hold them).
-- * the client TCP class: braid's clientFromString gives HostnameEndpoint
--   (docs/endpoints.md, the table under "Strings"), Twisted's
--   TCP4ClientEndpoint; both are traced as TCP4ClientEndpoint.
local class = require "braid.class"
local endpoints = require "braid.endpoints"
local errors = require "braid.error"
local failure = require "braid.failure"
local protocol = require "braid.protocol"
local task = require "braid.task"
local td = require "helpers.twisted_diff"

local M = {}

local pick, concat = td.pick, table.concat

--- A number as both sides print it: integers plainly, floats with %.17g
-- (".0" added when that looks like an integer).
function M.num(x)
  if math.type(x) == "integer" then return ("%d"):format(x) end
  local s = ("%.17g"):format(x)
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end
local num = M.num

-- ---- generating: factories --------------------------------------------------

local FACTORS = { { 2, 2 }, { 2, 1.5 }, { 1, 0.5 }, { 1, 1 }, { 1, 3 }, { 1, 10 } }
local INITIAL = { { 2, 0.5 }, { 2, 2 }, { 1, 1 }, { 1, 3 }, { 1, 0.25 } }
local MAXDELAY = { { 2, 10 }, { 2, 5 }, { 1, 60 }, { 1, 1 }, { 1, 3600.0 }, { 1, 2 } }
local STEPS = { { 1, 0 }, { 3, 0.5 }, { 4, 1 }, { 3, 2 }, { 3, 3 }, { 2, 5 }, { 2, 10 },
                { 1, 100 } }
local REASONS = { { 2, "refused" }, { 2, "done" }, { 1, "lost" }, { 1, "timeout" }, { 1, "none" } }
local CONNECTS = { { 4, "log" }, { 2, "refuse" }, { 2, "accept" } }
local STOPS = { { 5, "ok" }, { 2, "notc" }, { 2, "aware" }, { 1, "boom" } }

local function gen_params(rand, lines)
  lines[#lines + 1] = "set jitter 0"
  if rand(12) == 1 then
    -- delays past 2^63 (Python's "%d" prints them whole)
    for _, l in ipairs({ "set initialDelay 1e+18", "set maxDelay 1e+30", "set factor 10",
                         "resetdelay" }) do
      lines[#lines + 1] = l
    end
    return
  end
  local function maybe(field, list)
    if rand(3) > 1 then lines[#lines + 1] = ("set %s %s"):format(field, num(pick(rand, list))) end
  end
  maybe("factor", FACTORS)
  maybe("initialDelay", INITIAL)
  maybe("maxDelay", MAXDELAY)
  if rand(3) == 1 then lines[#lines + 1] = "set maxRetries " .. (rand(6) - 1) end
end

local function gen_conns(rand, lines)
  local n = rand(2)
  for i = 1, n do
    local c = pick(rand, CONNECTS)
    if c ~= "log" then c = c .. ":" .. rand(3) end
    lines[#lines + 1] = ("conn %d %s %s"):format(i, c, pick(rand, STOPS))
  end
  return n
end

-- one operation of a client or rcf program with n connectors
local function client_op(rand, n, rcf)
  local c = rand(n)
  local ops = {
    { 2, "connecting " .. c }, { 4, ("failed %d %s"):format(c, pick(rand, REASONS)) },
    { 3, ("lost %d %s"):format(c, pick(rand, REASONS)) }, { 2, "start" }, { 2, "stop" },
    { 1, "build" },
  }
  if rcf then
    local extra = {
      { 1, "retry" }, { 1, "retry " .. c }, { 2, "stoptrying" }, { 2, "resetdelay" },
      { 6, "advance " .. num(pick(rand, STEPS)) }, { 1, "defaults" },
      { 1, "set factor " .. num(pick(rand, FACTORS)) },
      { 1, "set maxRetries " .. (rand(4) - 1) },
    }
    for _, e in ipairs(extra) do ops[#ops + 1] = e end
  end
  return pick(rand, ops)
end

local function factory_program(rand, id)
  local kind = pick(rand, { { 2, "factory" }, { 1, "client" }, { 5, "rcf" } })
  local noisy = rand(3) == 1 and "noisy" or "quiet"
  local build = (kind == "rcf" and rand(2) == 1) and "reset" or "plain"
  local fail = pick(rand, { { 6, "none" }, { 1, "start" }, { 1, "stop" } })
  local lines = { ("prog %s fac %s %s %s %s"):format(id, kind, noisy, build, fail) }
  local n = 0
  if kind == "rcf" then gen_params(rand, lines) end
  if kind ~= "factory" then n = gen_conns(rand, lines) end
  for _ = 1, 3 + rand(12) do
    if kind == "factory" then
      lines[#lines + 1] = pick(rand, { { 4, "start" }, { 4, "stop" }, { 1, "build" } })
    else
      lines[#lines + 1] = client_op(rand, n, kind == "rcf")
    end
  end
  if kind == "rcf" and rand(2) == 1 then lines[#lines + 1] = "advance 1000" end
  lines[#lines + 1] = "end"
  return concat(lines, "\n")
end

M.generate_factory = td.generator(factory_program)

-- ---- generating: endpoint strings -------------------------------------------

local INTS = { { 12, "80" }, { 3, "0" }, { 3, "8080" }, { 2, "65535" }, { 1, "65536" },
               { 1, "-1" }, { 1, "+80" }, { 1, " 80" }, { 1, "80 " }, { 1, "080" },
               { 1, "0x50" }, { 1, "80.0" }, { 1, "8e1" }, { 1, "1_0" }, { 2, "http" },
               { 1, "" }, { 1, "1.5" }, { 1, "-0" }, { 1, "999999999999999999" },
               { 1, "\t7" } }
local BACKLOGS = { { 6, "50" }, { 4, "5" }, { 2, "0" }, { 1, "-3" }, { 1, "x" }, { 1, "" },
                   { 1, " 9" }, { 1, "7.0" }, { 1, "1_2" } }
-- no fractional timeouts: braid takes any number (Twisted: int())
local TIMEOUTS = { { 5, "30" }, { 3, "5" }, { 1, "0" }, { 1, "-1" }, { 1, "x" },
                   { 1, "" }, { 1, " 9" } }
local MODES = { { 5, "660" }, { 2, "666" }, { 2, "600" }, { 1, "777" }, { 1, "0" },
                { 1, "0o660" }, { 1, "8" }, { 1, "66a" }, { 1, "" }, { 1, "+660" },
                { 1, "1000" }, { 1, "0660" } }
local LOCKFILES = { { 4, "0" }, { 4, "1" }, { 1, "x" }, { 1, "" }, { 1, " 1" } }
local CHECKPIDS = { { 1, "0" }, { 1, "1" }, { 1, "yes" } }
local HOSTS = { { 6, "localhost" }, { 4, "127.0.0.1" }, { 3, "example.org" }, { 2, "::1" },
                { 1, "" }, { 1, "a=b" }, { 1, "h\\x" }, { 1, "h:p" } }
local INTERFACES = { { 5, "127.0.0.1" }, { 3, "::1" }, { 1, "" }, { 2, "0.0.0.0" }, { 1, "lo" },
                     { 1, "a=b" } }
local PATHS = { { 6, "/tmp/s" }, { 2, "/var/run/a:b" }, { 2, "rel" }, { 1, "a=b" }, { 1, "" },
                { 1, "/p\\q" }, { 1, "x y" }, { 1, "/tmp/=x" } }
-- no "H,P": braid's addition (docs/endpoints.md); Twisted takes H alone
local BINDS = { { 4, "127.0.0.1" }, { 1, "::1" }, { 1, "h" }, { 1, "" },
                { 1, "0.0.0.0" } }
local OTHER = { { 3, "x" }, { 2, "80" }, { 1, "" }, { 1, "a=b" } }

local POOLS = { port = INTS, backlog = BACKLOGS, timeout = TIMEOUTS, mode = MODES,
                lockfile = LOCKFILES, checkPID = CHECKPIDS, host = HOSTS, interface = INTERFACES,
                address = PATHS, path = PATHS, bindAddress = BINDS }

-- Each type's arguments in Twisted's positional order, then its other
-- keywords (endpoints.py: _parseTCP, _TCP6ServerParser._parseServer,
-- _parseUNIX, _parseClientTCP, _parseClientUNIX).
local ROLES = {
  server = {
    tcp = { pos = { "port", "interface", "backlog" }, kw = {} },
    tcp6 = { pos = { "port", "backlog", "interface" }, kw = {} },
    unix = { pos = { "address", "mode", "backlog", "lockfile" }, kw = {} },
    other = { pos = { "port", "interface" }, kw = {} },
  },
  client = {
    tcp = { pos = { "host", "port" }, kw = { "timeout", "bindAddress" } },
    unix = { pos = { "path" }, kw = { "timeout", "lockfile", "checkPID" } },
    other = { pos = { "host", "port" }, kw = { "timeout" } },
  },
}
-- server types: upper case left out (see the top)
local SERVER_TYPES = { { 8, "tcp" }, { 4, "tcp6" }, { 7, "unix" }, { 1, "bogus" }, { 1, "" },
                       { 1, "udp" } }
-- no tcp6 clients: braid's addition (docs/endpoints.md); Twisted has none
local CLIENT_TYPES = { { 8, "tcp" }, { 7, "unix" }, { 1, "TCP" }, { 1, "Unix" },
                       { 1, "bogus" }, { 1, "" } }
local UNKNOWN_KEYS = { { 3, "colour" }, { 1, "factory" }, { 1, "address" }, { 1, "path" },
                       { 1, "checkPID" }, { 1, "lockfile" }, { 1, "Port" }, { 1, "bad-key" },
                       { 1, "" }, { 1, "host" }, { 1, "timeout" }, { 1, "interface" } }
local SOUP = "80:=\\aport"

-- s with '\' and ':' escaped, '=' escaped with probability eq in 1/4ths, and
-- a few needless escapes of other characters
local function escape(rand, s, eq)
  return (s:gsub(".", function(ch)
    if ch == "\\" or ch == ":" then return "\\" .. ch end
    if ch == "=" then return rand(4) <= eq and "\\=" or "=" end
    if ch:match("%w") and rand(12) == 1 then return "\\" .. ch end
    return ch
  end))
end

local function soup(rand)
  local t = {}
  for i = 1, rand(10) - 1 do
    local j = rand(#SOUP)
    t[i] = SOUP:sub(j, j)
  end
  local s = concat(t)
  -- never a lone backslash at the end (see the top)
  if #s:match("\\*$") % 2 == 1 then s = s .. "1" end
  return s
end

-- values for a keyword: its role's if R has that role, else any
local function key_pool(R, key)
  for _, role in ipairs(R.pos) do
    if role == key then return POOLS[key] end
  end
  for _, role in ipairs(R.kw) do
    if role == key then return POOLS[key] end
  end
  return OTHER
end

-- the parts (rendered) of an argument list for roles R
local function gen_parts(rand, R)
  local pos, kws = {}, {}
  local npos = rand(#R.pos + 1) - 1
  for i, role in ipairs(R.pos) do
    local v = pick(rand, POOLS[role])
    if i <= npos then
      pos[#pos + 1] = escape(rand, v, 3)
    elseif rand(3) > 1 then
      kws[#kws + 1] = role .. "=" .. escape(rand, v, 2)
    end
  end
  for _, role in ipairs(R.kw) do
    if rand(3) == 1 then kws[#kws + 1] = role .. "=" .. escape(rand, pick(rand, POOLS[role]), 2) end
  end
  -- mutations: an extra positional argument, an unknown (or repeated)
  -- keyword, a role's keyword after its positional value, an empty part
  if rand(8) == 1 then pos[#pos + 1] = escape(rand, pick(rand, OTHER), 3) end
  if rand(8) == 1 then
    local key = pick(rand, UNKNOWN_KEYS)
    kws[#kws + 1] = key .. "=" .. escape(rand, pick(rand, key_pool(R, key)), 2)
  end
  if rand(10) == 1 then
    local role = R.pos[rand(#R.pos)]
    kws[#kws + 1] = role .. "=" .. escape(rand, pick(rand, POOLS[role]), 2)
  end
  if rand(12) == 1 then pos[#pos + 1] = "" end
  -- keywords go anywhere among the positional arguments
  local parts = pos
  for _, kw in ipairs(kws) do table.insert(parts, rand(#parts + 1), kw) end
  return parts
end

local function description(rand, side)
  local kind = pick(rand, side == "server" and SERVER_TYPES or CLIENT_TYPES)
  local R = ROLES[side][kind:lower()] or ROLES[side].other
  if rand(10) == 1 then return kind .. ":" .. soup(rand) end
  if rand(25) == 1 then return kind end
  local parts = gen_parts(rand, R)
  table.insert(parts, 1, kind)
  return concat(parts, ":")
end

local function endpoint_program(rand, id)
  local lines = { ("prog %s ep"):format(id) }
  for _ = 1, 3 + rand(6) do
    local side = rand(2) == 1 and "server" or "client"
    lines[#lines + 1] = side .. " " .. description(rand, side)
  end
  lines[#lines + 1] = "end"
  return concat(lines, "\n")
end

M.generate_endpoints = td.generator(endpoint_program)

-- ---- running ----------------------------------------------------------------

--- An error as Twisted's side names it: its class, or EN for the programs'
-- own errors.
function M.error_name(e)
  if errors.isinstance(e) then return e.class.__name end
  local code = type(e) == "string" and e:match("^E%d+$")
  return code or "LuaError"
end

local function bool(v) return v and "true" or "false" end

local function rep(v)
  if v == nil then return "None" end
  local t = type(v)
  if t == "number" then return num(v) end
  if t == "boolean" then return bool(v) end
  if t == "string" then
    return "'" .. (v:gsub(".", function(c)
      local b = c:byte()
      if b < 32 or b > 126 or c == "'" or c == "\\" then return ("\\x%02x"):format(b) end
    end)) .. "'"
  end
  if t == "table" and #v == 2 then return ("(%s,%s)"):format(rep(v[1]), rep(v[2])) end
  return "?" .. t
end

local REASON_CLASSES = { refused = "ConnectionRefusedError", done = "ConnectionDone",
                         lost = "ConnectionLost", timeout = "TimeoutError" }

local function reason(r)
  local cls = REASON_CLASSES[r]
  return cls and failure.Failure(errors[cls]()) or nil
end

local BASES = { factory = protocol.Factory, client = protocol.ClientFactory,
                rcf = protocol.ReconnectingClientFactory }

-- The program's factory class F (see the top).
local function factory_class(R, kind, build, fail)
  local base = BASES[kind]
  local F = base:extend("F")
  F.__tostring = function() return "F" end
  F.protocol = protocol.Protocol
  local raised = {}
  local function hook(name, code)
    F[name] = function()
      R.log(name)
      if fail == name:sub(1, -8) and not raised[name] then
        raised[name] = true
        error(code, 0)
      end
    end
  end
  hook("startFactory", "E1")
  hook("stopFactory", "E2")
  if build == "reset" then
    function F:buildProtocol(addr)
      self:resetDelay()
      return base.buildProtocol(self, addr)
    end
  end
  return F
end

local function make_connector(R, i, how, stop)
  local c = setmetatable({}, { __tostring = function() return "c" .. i end })
  local mode, k = how:match("^(%a+):?(%d*)$")
  local left = tonumber(k) or 0
  function c.connect(self)
    R.log(("c%d connect @%s"):format(i, num(R.clock:seconds())))
    if left == 0 then return end
    left = left - 1
    R.f:startedConnecting(self)
    if mode == "refuse" then
      R.f:clientConnectionFailed(self, reason("refused"))
    else
      R.f:buildProtocol(nil)
      R.log("c" .. i .. " built")
    end
  end
  function c.stopConnecting(self)
    R.log(("c%d stopConnecting"):format(i))
    if stop == "notc" then error(errors.NotConnectingError(), 0) end
    if stop == "boom" then error("E3", 0) end
    if stop == "aware" then R.f:clientConnectionFailed(self, nil) end
  end
  return c
end

local DEFAULTS = { "maxDelay", "initialDelay", "factor", "jitter", "delay", "retries",
                   "maxRetries", "noisy", "numPorts" }

local function defaults_line()
  local RCF = protocol.ReconnectingClientFactory
  local parts = {}
  for i, k in ipairs(DEFAULTS) do parts[i] = k .. "=" .. rep(RCF[k]) end
  return "defaults " .. concat(parts, " ") .. " continueTrying=" .. bool(RCF.continueTrying)
end

local function factory_ops(R)
  local f = R.f
  local function conn(n) return R.conns[tonumber(n)] end
  return {
    set = function(w)
      f[w[2]] = tonumber(w[3])
    end,
    conn = function(w)
      R.conns[tonumber(w[2])] = make_connector(R, tonumber(w[2]), w[3], w[4])
    end,
    start = function() f:doStart() end,
    stop = function() f:doStop() end,
    build = function()
      local p = f:buildProtocol(nil)
      R.log("built " .. bool(p.factory == f))
    end,
    connecting = function(w) f:startedConnecting(conn(w[2])) end,
    failed = function(w) f:clientConnectionFailed(conn(w[2]), reason(w[3])) end,
    lost = function(w) f:clientConnectionLost(conn(w[2]), reason(w[3])) end,
    retry = function(w) f:retry(w[2] and conn(w[2])) end,
    stoptrying = function() f:stopTrying() end,
    resetdelay = function() f:resetDelay() end,
    advance = function(w) R.clock:advance(tonumber(w[2])) end,
    defaults = function() R.log(defaults_line()) end,
  }
end

local function state_line(R)
  local f = R.f
  local s = "= n=" .. num(f.numPorts)
  if R.kind ~= "rcf" then return s end
  local c = "-"
  for i, x in pairs(R.conns) do
    if f.connector == x then c = "c" .. i end
  end
  return ("%s d=%s r=%s ct=%s c=%s call=%s"):format(s, num(f.delay), num(f.retries),
    bool(f.continueTrying), c, f._callID and num(f._callID:getTime()) or "-")
end

local function pending_line(clock)
  local t = {}
  for i, dc in ipairs(clock:getDelayedCalls()) do t[i] = num(dc:getTime()) end
  return "pending" .. (#t > 0 and " " .. concat(t, " ") or "")
end

local function factory_run(pid, w)
  local R = { out = {}, clock = task.Clock(), conns = {}, kind = w[4] }
  function R.log(s) R.out[#R.out + 1] = s end
  local F = factory_class(R, w[4], w[6], w[7])
  R.f = F()
  R.f.noisy = w[5] == "noisy"
  if R.kind == "rcf" then R.f.clock = R.clock end
  local ops = factory_ops(R)
  local P = { log = R.log }
  function P.op(words, line)
    local ok, e = pcall(ops[words[1]], words)
    if not ok then R.log(line .. " -> " .. M.error_name(e)) end
    if words[1] ~= "set" and words[1] ~= "conn" then R.log(state_line(R)) end
  end
  function P.finish()
    R.log(pending_line(R.clock))
    return "== " .. pid .. "\n" .. concat(R.out, "\n")
  end
  return P
end

-- what braid.protocol logs, as "log TEXT", while fn runs
local function with_log(R, fn, ...)
  local saved = package.loaded["braid.log"]
  -- braid.log may be twisted_diff's stand-in here: format with the formatter
  local format_fields = require("braid.log.format").fields
  local logger = {
    info = function(_, fmt, fields) R.current.log("log " .. format_fields(fmt, fields)) end,
  }
  package.loaded["braid.log"] = {
    msg = function(...) R.current.log("log " .. concat({ ... }, " ")) end,
    err = function() end,
    callWithContext = function(_, f, ...) return f(...) end,
    Logger = function() return logger end,
  }
  local ok, a, b = pcall(fn, ...)
  package.loaded["braid.log"] = saved
  assert(ok, a)
  return a, b
end

-- Run every factory program of text; returns {id = trace} and the ids.
function M.run_factory(text)
  local R = {}
  return with_log(R, td.run, text, function(w)
    local P = factory_run(w[2], w)
    R.current = P
    return P
  end)
end

-- ---- running: endpoint strings ------------------------------------------------

local ATTRS = {
  TCP4ServerEndpoint = { "_port", "_backlog", "_interface" },
  TCP6ServerEndpoint = { "_port", "_backlog", "_interface" },
  UNIXServerEndpoint = { "_address", "_backlog", "_mode" },
  TCP4ClientEndpoint = { "_host", "_port", "_timeout", "_bindAddress" },
  UNIXClientEndpoint = { "_path", "_timeout" },
}

local function endpoint_line(ep)
  local name = class.nameof(ep)
  -- braid's tcp client is a HostnameEndpoint (docs/endpoints.md, "Strings")
  if name == "HostnameEndpoint" then name = "TCP4ClientEndpoint" end
  local parts = { name }
  for _, a in ipairs(ATTRS[name] or {}) do parts[#parts + 1] = a .. "=" .. rep(ep[a]) end
  return concat(parts, " ")
end

local function endpoint_run(pid)
  local out, n, reactor = {}, 0, {}
  local P = {}
  function P.op(words, line)
    n = n + 1
    local parse = words[1] == "server" and endpoints.serverFromString or endpoints.clientFromString
    local ok, ep = pcall(parse, reactor, line:sub(#words[1] + 2))
    out[#out + 1] = ("#%d -> %s"):format(n, ok and endpoint_line(ep) or M.error_name(ep))
  end
  function P.finish() return "== " .. pid .. "\n" .. concat(out, "\n") end
  return P
end

-- Run every endpoint program of text; returns {id = trace} and the ids.
function M.run_endpoints(text)
  return td.run(text, function(w) return endpoint_run(w[2]) end)
end

return M
