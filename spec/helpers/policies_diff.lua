-- spec/helpers/policies_diff.lua: random programs for braid.policies
-- (WrappingFactory/ProtocolWrapper, TimeoutFactory, ThrottlingFactory,
-- LimitConnectionsByPeer, LimitTotalConnectionsFactory,
-- TrafficLoggingFactory, TimeoutMixin), and braid's interpreter for them
-- (spec/policies_diff_spec.lua runs the same programs against Twisted's
-- twisted.protocols.policies with spec/peers/policies_diff.py and compares
-- traces). No sockets: one task.Clock, factories' buildProtocol and
-- makeConnection on traced StringTransports.
--
-- A program is text, one item per line: "prog ID NF", its NF factories,
-- the operations, then "end".
--   factory F LAYERS BASE FLAGS MIXIN
--     LAYERS  "-" or wrapping factories, outermost first, joined by ",":
--             wrap (WrappingFactory), timeout:P (TimeoutFactory, period P),
--             throttle:MAX:R:W (ThrottlingFactory; maxConnectionCount,
--             readLimit, writeLimit, "-" for the default / None),
--             peer:MAX (LimitConnectionsByPeer, maxConnectionsPerPeer),
--             log (TrafficLoggingFactory, prefix "LF.I" for layer I)
--     BASE    plain (a Factory for the protocol below) or total:LIMIT:OVER
--             (LimitTotalConnectionsFactory; connectionLimit or "-";
--             OVER "over" sets an overflowProtocol, "-" none)
--     FLAGS   "-" or letters for the protocol: e echoes data back; p
--             registers a streaming producer in connectionMade; b writes
--             "bye" in connectionLost; c (with MIXIN) setTimeout(nil) in
--             connectionLost
--     MIXIN   "-" or P: the protocol is a TimeoutMixin, setTimeout(P) in
--             connectionMade, resetTimeout() in dataReceived; its
--             timeoutConnection traces "timeout" and closes its transport
--   Every factory has noisy off, its clock on the program's Clock and is
--   started (doStart on the outermost).
-- An operation line is "B+ OP": clock:advance(B + EPS), EPS = 2^-20 (see
-- Times below), then OP (none: "B+" alone); or "advance S" (S exactly).
-- OP is one of:
--   connect K F HOST auto|manual
--             connection K: buildProtocol(IPv4Address(TCP, HOST, 5000+K)) on
--             factory F's outermost; if built, makeConnection on a traced
--             StringTransport. auto: its loseConnection calls the
--             protocol's connectionLost(ConnectionDone) at once (as
--             StringTransportWithDisconnection); manual: only "lost" does.
--   data K X          the transport delivers X (skipped once the transport
--                     is disconnecting or lost, as a real one stops reading)
--   lost K done|lost  the transport reports connectionLost(ConnectionDone |
--                     ConnectionLost) (skipped once lost)
--   write K X | wseq K A,B|- | lose K | abort K | reg K s|p | unreg K |
--   ipause K | iresume K | istop K
--                     the innermost protocol calls write / writeSequence /
--                     loseConnection / abortConnection / registerProducer
--                     (a new producer; streaming or not) / unregisterProducer
--                     / pauseProducing / resumeProducing / stopProducing on
--                     its transport (the innermost wrapper)
--   tset K P|none | tcancel K | treset K
--                     setTimeout / cancelTimeout / resetTimeout of K's
--                     outermost TimeoutProtocol
--   mset K P|none | mreset K   the TimeoutMixin's setTimeout / resetTimeout
--   resetc F          resetCounter() of F's outermost TrafficLoggingFactory
--   state             every factory's state line (below)
-- Operations on a refused or unknown connection do nothing.
--
-- The trace: one line per event, "T WHAT" with T the Clock's time, after
-- "> B+" for what an advance did and "> OP" for what an operation did
-- (neither when nothing happened). Events: "K refused" (buildProtocol gave
-- nil); "K made" ("K made over" for an overflow protocol), "K data X", "K
-- lost Done|Lost", "K timeout" (TimeoutMixin), "K mset -> PREV"; "K prefix
-- X", the wrapper's logPrefix(), after makeConnection; the transport's
-- calls "K tw X", "K tws A,B", "K tlose", "K tabort", "K tpause", "K
-- tresume", "K tstop", "K treg s|p", "K tunreg"; a producer's "K prod
-- pause|resume|stop"; a log factory's "open NAME" and each line it logs,
-- "NAME| LINE"; "OP -> ERROR" when an operation or advance raised (ERROR:
-- the error's class name). At the end: "fF ..." (each layer's state: open
-- connections, throttling counters, per-peer counts, the logging counter,
-- LimitTotal's count) and "fF prefix X" (the outermost's logPrefix());
-- "cK ..." for every connection (each wrapper's disconnecting, each
-- TimeoutProtocol's period and whether its call is pending, the mixin's
-- timeOut and call, the transport's producer state and disconnecting,
-- getHost() through the wrappers); "pending NAME@T ...", the Clock's calls
-- by time, then name.
--
-- Left out or adapted, where braid differs from Twisted on purpose or
-- Twisted depends on something braid cannot mirror:
-- * docs/policies.md, "Differences from Twisted": "`callLater` comes from a
--   `clock` field" (the peer assigns callLater = clock.callLater instead)
--   and "Data in logs is quoted with Lua's `%q`" (log lines are compared
--   unquoted, data is lowercase letters, a connectionLost line is
--   "F(Name)").
-- * docs/protocol.md, "Where braid differs": "`Protocol.connected` becomes
--   false before `connectionLost` runs": `connected` is not traced.
-- * Ties: a reset DelayedCall sharing its time with another call runs in
--   another order (docs/task.md, "Where braid differs": braid's reset
--   reschedules, Twisted's Clock keeps the list position). Every operation
--   comes after an advance by a multiple of 0.5 plus EPS, and every timeout
--   period is a multiple of 0.5 plus a power of two of its own (2^-5 ..
--   2^-12, G.period), so a reset call's time is its own.
-- * A wrapped factory that refuses: Twisted wraps None and fails in
--   makeConnection. Only the outermost factory may refuse (peer, a throttle
--   maximum); a total base under wrappers never refuses (gen_base).
-- * LimitConnectionsByPeer: Twisted reads addr[0] in buildProtocol and
--   getPeer()[1] in unregisterProtocol, so the peer passes tuples; it never
--   removes a closed wrapper from `protocols`, not traced for peer.
-- * ThrottlingFactory: when the count drops to 0 Twisted cancels the
--   pending unthrottle call but keeps it, and cancels it again
--   (AlreadyCancelled out of connectionLost) the next time: a factory with
--   limits gets no connection once one of its connections may have closed
--   (may_connect). Its throttleWrites finds the transport's `producer`
--   (None) through ProtocolWrapper's __getattr__ and fails: write-limited
--   chains register a producer in connectionMade (flag p) and never
--   unregister. ThrottlingProtocol.unregisterProducer without a producer
--   raises AttributeError (`del`), braid the transport's RuntimeError: on
--   throttled chains only while one is registered (FILTERS).
-- * TimeoutProtocol: Twisted's timeoutFunc keeps its called DelayedCall,
--   so until connectionLost every write, data and resetTimeout raises
--   AlreadyCalled (braid clears it, as TimeoutMixin does in both; not in
--   docs/policies.md yet): chains with a timeout layer use auto transports,
--   and setTimeout comes only while the connection cannot be lost yet
--   (FILTERS.tset), as a timer armed after connectionLost fires on its own.
-- * TrafficLoggingFactory's lengthLimit: Twisted 22.4 adds a str to bytes
--   (TypeError); not set.
-- * The transports never refuse pauseProducing / resumeProducing (as
--   Twisted's lenient StringTransport): a RuntimeError out of a bandwidth
--   check stops Twisted's checks, and the cancel in unregisterProtocol then
--   raises AlreadyCalled (braid cancels quietly).
local address = require "braid.address"
local errors = require "braid.error"
local failure = require "braid.failure"
local policies = require "braid.policies"
local protocol = require "braid.protocol"
local task = require "braid.task"
local testing = require "braid.testing.transport"
local td = require "helpers.twisted_diff"

local M = {}

local concat = table.concat

-- ---- generating --------------------------------------------------------

local pick = td.pick

local EPS = 2.0 ^ -20

local function num(x) return ("%.17g"):format(x) end

local STEPS = { { 6, 0 }, { 3, 0.5 }, { 4, 1 }, { 1, 1.5 }, { 2, 2 }, { 1, 3 }, { 1, 5 } }
local PERIODS = { { 1, 0.5 }, { 3, 1 }, { 2, 1.5 }, { 3, 2 }, { 2, 3 }, { 1, 5 } }
local LIMITS = { { 3, false }, { 1, 3 }, { 1, 4 }, { 2, 5 }, { 1, 8 }, { 2, 10 } }
local LAYERS = { { 3, "wrap" }, { 4, "timeout" }, { 4, "throttle" }, { 2, "log" } }
local OUTER = { { 3, "wrap" }, { 4, "timeout" }, { 5, "throttle" }, { 3, "peer" }, { 2, "log" } }
local HOSTS = { "1.1.1.1", "2.2.2.2", "3.3.3.3" }
local LETTERS = "abcdefghijklmnopqrstuvwxyz"

local function word(rand)
  local t = {}
  for i = 1, pick(rand, { { 3, 1 }, { 3, 3 }, { 3, 5 }, { 2, 8 }, { 1, 12 } }) do
    local j = rand(#LETTERS)
    t[i] = LETTERS:sub(j, j)
  end
  return concat(t)
end

local function opt(v) return v and tostring(v) or "-" end

local function new_program(rand)
  local G = { rand = rand, factories = {}, conns = {}, bits = 0, now = 0 }

  -- A timeout period: a multiple of 0.5 plus a power of two no other
  -- period of the program has (nil once 8 are used).
  function G.period()
    if G.bits >= 8 then return nil end
    G.bits = G.bits + 1
    return pick(rand, PERIODS) + 2.0 ^ -(4 + G.bits)
  end
  return G
end

local function gen_layer(G, F, i, kind)
  local outermost = i == 1
  local rand = G.rand
  if kind == "timeout" then
    local p = G.period()
    if not p then return "wrap" end
    F.timeout = true
    F.periods[i] = p
    F.first_timeout = F.first_timeout or i
    return "timeout:" .. num(p)
  elseif kind == "throttle" then
    local max = outermost and pick(rand, { { 3, false }, { 1, 1 }, { 1, 2 } }) or false
    local r, w = pick(rand, LIMITS), pick(rand, LIMITS)
    F.throttle = true
    if r or w then F.limited = true end
    if w then F.wlimited = true end
    return ("throttle:%s:%s:%s"):format(opt(max), opt(r), opt(w))
  elseif kind == "peer" then
    return "peer:" .. rand(2)
  elseif kind == "log" then
    F.log = true
  end
  return kind
end

local function gen_base(G, F)
  local rand = G.rand
  if rand(4) > 1 then return "plain" end
  local limit = pick(rand, { { 1, false }, { 2, 1 }, { 2, 2 } })
  -- wrapped, it must not refuse (Twisted wraps None)
  local over = rand(2) == 1 or (#F.layers > 0 and limit)
  return ("total:%s:%s"):format(opt(limit), over and "over" or "-")
end

local function gen_factory(G, f)
  local rand = G.rand
  local F = { id = f, layers = {}, periods = {} }
  for i = 1, pick(rand, { { 2, 0 }, { 4, 1 }, { 3, 2 }, { 1, 3 } }) do
    F.layers[i] = gen_layer(G, F, i, pick(rand, i == 1 and OUTER or LAYERS))
  end
  F.base = gen_base(G, F)
  F.mixin = rand(3) == 1 and G.period() or nil
  local flags = {}
  if rand(2) == 1 then flags[#flags + 1] = "e" end
  if F.wlimited or rand(4) == 1 then
    flags[#flags + 1] = "p"
    F.prod = true
  end
  if rand(5) == 1 then flags[#flags + 1] = "b" end
  if F.mixin and rand(2) == 1 then flags[#flags + 1] = "c" end
  F.flags = #flags > 0 and concat(flags) or "-"
  G.factories[f] = F
end

local function factory_line(F)
  return ("factory %d %s %s %s %s"):format(F.id, #F.layers > 0 and concat(F.layers, ",") or "-",
    F.base, F.flags, F.mixin and num(F.mixin) or "-")
end

-- ---- operations

-- What the generator knows of a connection c: c.timers, for each timer
-- that can close it (the TimeoutProtocols' by layer, the mixin's) the
-- earliest time it can fire (data and writes only move a timer later); and
-- c.gone, set once an operation, or a timer on an auto transport, may have
-- closed it (see advance).

-- A throttling factory with limits gets no connection once one of its
-- connections may have closed (see the header).
local function may_connect(G, F)
  if not F.limited then return true end
  for _, c in ipairs(G.conns) do
    if c.F == F and c.gone then return false end
  end
  return true
end

local function op_connect(G)
  local rand = G.rand
  local open = {}
  for _, F in ipairs(G.factories) do
    if may_connect(G, F) then open[#open + 1] = F end
  end
  if #open == 0 or #G.conns >= 7 then return nil end
  local F = open[rand(#open)]
  local k = #G.conns + 1
  local auto = F.timeout or rand(2) == 1
  local c = { F = F, auto = auto, reg = F.prod, timers = {} }
  for i, p in pairs(F.periods) do c.timers[i] = G.now + p end
  if F.mixin then c.timers.mixin = G.now + F.mixin end
  G.conns[k] = c
  return ("connect %d %d %s %s"):format(k, F.id, HOSTS[rand(#HOSTS)], auto and "auto" or "manual")
end

-- A connection accepted by ok(c), most often one that is still open.
local function some_conn(G, ok)
  local live, all = {}, {}
  for k, c in ipairs(G.conns) do
    if not ok or ok(c) then
      all[#all + 1] = k
      if not c.gone then live[#live + 1] = k end
    end
  end
  local list = (#live > 0 and G.rand(8) > 1) and live or all
  if #list == 0 then return nil end
  local k = list[G.rand(#list)]
  return k, G.conns[k]
end

local SIMPLE = { write = true, ipause = true, iresume = true, istop = true, treset = true,
                 mreset = true }

local FILTERS = {
  -- a TimeoutProtocol armed once its connection is lost keeps its called
  -- DelayedCall in Twisted (see the header): set only while open
  tset = function(c) return c.F.timeout and not c.gone end,
  tcancel = function(c) return c.F.timeout end,
  treset = function(c) return c.F.timeout end,
  mset = function(c) return c.F.mixin end,
  mreset = function(c) return c.F.mixin end,
  -- no unregisterProducer without a producer on a throttled chain, never
  -- on a write-limited one (see the header)
  unreg = function(c) return not c.F.wlimited and (c.reg or not c.F.throttle) end,
}

local function timer_op(G, what, k, c)
  local p = G.rand(4) == 1 and "none" or G.period()
  if not p then return nil end
  local key = what == "tset" and c.F.first_timeout or "mixin"
  c.timers[key] = p ~= "none" and G.now + p or nil
  return ("%s %d %s"):format(what, k, p == "none" and p or num(p))
end

local function op_on_conn(G, what)
  local rand = G.rand
  local k, c = some_conn(G, FILTERS[what])
  if not k then return nil end
  if what == "data" or what == "write" then return ("%s %d %s"):format(what, k, word(rand)) end
  if SIMPLE[what] then return ("%s %d"):format(what, k) end
  if what == "wseq" then
    local parts = {}
    for i = 1, rand(4) - 1 do parts[i] = word(rand) end
    return ("wseq %d %s"):format(k, #parts > 0 and concat(parts, ",") or "-")
  elseif what == "lost" then
    c.gone = true
    return ("lost %d %s"):format(k, rand(3) == 1 and "lost" or "done")
  elseif what == "lose" or what == "abort" then
    if c.auto then c.gone = true end
    return ("%s %d"):format(what, k)
  elseif what == "reg" then
    c.reg = true
    return ("reg %d %s"):format(k, rand(2) == 1 and "s" or "p")
  elseif what == "unreg" then
    c.reg = false
    return ("unreg %d"):format(k)
  elseif what == "tcancel" then
    c.timers[c.F.first_timeout] = nil
    return ("tcancel %d"):format(k)
  end
  return timer_op(G, what, k, c)
end

local OPS = { { 5, "connect" }, { 10, "data" }, { 5, "write" }, { 1, "wseq" }, { 2, "lose" },
              { 1, "abort" }, { 2, "lost" }, { 1, "reg" }, { 1, "unreg" }, { 1, "ipause" },
              { 1, "iresume" }, { 1, "istop" }, { 2, "tset" }, { 1, "tcancel" }, { 2, "treset" },
              { 2, "mset" }, { 2, "mreset" }, { 1, "resetc" }, { 1, "state" } }

local function gen_op(G)
  local what = pick(G.rand, OPS)
  if what == "connect" or #G.conns == 0 then return op_connect(G) end
  if what == "state" then return "state" end
  if what == "resetc" then
    local logs = {}
    for _, F in ipairs(G.factories) do
      if F.log then logs[#logs + 1] = F.id end
    end
    return #logs > 0 and "resetc " .. logs[G.rand(#logs)] or nil
  end
  return op_on_conn(G, what)
end

-- The line of an advance by base + EPS ("advance 30" exactly); marks the
-- connections a timer may have closed.
local function advance(G, base)
  G.now = G.now + (base == 30 and base or base + EPS)
  for _, c in ipairs(G.conns) do
    for _, t in pairs(c.timers) do
      if c.auto and t <= G.now + 1e-9 then c.gone = true end
    end
  end
  return base == 30 and "advance 30" or num(base) .. "+"
end

local function program(rand, id)
  local G = new_program(rand)
  for f = 1, pick(rand, { { 4, 1 }, { 4, 2 }, { 2, 3 } }) do gen_factory(G, f) end
  local lines = { ("prog %s %d"):format(id, #G.factories) }
  for _, F in ipairs(G.factories) do lines[#lines + 1] = factory_line(F) end
  local first = advance(G, 0)  -- before op_connect, which reads G.now
  lines[#lines + 1] = first .. " " .. op_connect(G)
  for _ = 1, 6 + rand(16) do
    local step = advance(G, pick(rand, STEPS))
    local op = gen_op(G)
    lines[#lines + 1] = op and step .. " " .. op or step
  end
  lines[#lines + 1] = advance(G, pick(rand, { { 1, 1 }, { 1, 3 }, { 1, 30 } }))
  lines[#lines + 1] = "end"
  return concat(lines, "\n")
end

M.generate = td.generator(program)

-- ---- running -------------------------------------------------------------

--- An error as the peer names it: its class name (Lua errors as text).
function M.error_name(e)
  if errors.isinstance(e) then return e.class.__name end
  return tostring(e)
end

local function split(s, sep)
  local out = {}
  for part in s:gmatch("[^" .. sep .. "]+") do out[#out + 1] = part end
  return out
end

local function bool(v) return tostring(v and true or false) end
local function optnum(v) return v == nil and "nil" or num(v) end

-- A log factory's line, its data unquoted (docs/policies.md: "Data in
-- logs is quoted with Lua's %q rather than Python's repr").
local function canon_log(line)
  local d, n, data = line:match('^([CS]) (%d+): "(.*)"$')
  if d then return ("%s %s: %s"):format(d, n, data) end
  local sn, items = line:match("^SV (%d+): %[(.*)%]$")
  if sn then return ("SV %s: [%s]"):format(sn, (items:gsub('"', ""):gsub(", ", ","))) end
  local cn, rest = line:match("^C (%d+): (.*)$")
  if cn then
    local name = rest:match("Connection%a+")
    if name then return ("C %s: F(%s)"):format(cn, name) end
  end
  return line
end

-- ---- the protocol, producer and transport

local Inner = protocol.Protocol:extend("Inner")
Inner.over = false

function Inner:connectionMade()
  local R, spec = self.R, self.factory.spec
  R.log(("%d made%s"):format(self.cid, self.over and " over" or ""))
  if spec.prod then R.register(self, true) end
  if spec.mixin then self:setTimeout(spec.mixin) end
end

function Inner:dataReceived(data)
  local spec = self.factory.spec
  self.R.log(("%d data %s"):format(self.cid, data))
  if spec.mixin then self:resetTimeout() end
  if spec.echo then self.transport:write(data) end
end

function Inner:connectionLost(reason)
  local spec = self.factory.spec
  local name = reason:check(errors.ConnectionDone) and "Done"
    or reason:check(errors.ConnectionLost) and "Lost" or "?"
  self.R.log(("%d lost %s"):format(self.cid, name))
  if spec.cancel then self:setTimeout(nil) end
  if spec.bye then self.transport:write("bye") end
end

function Inner:timeoutConnection()
  self.R.log(("%d timeout"):format(self.cid))
  return policies.TimeoutMixin.timeoutConnection(self)
end

policies.TimeoutMixin:mixInto(Inner)

local Over = Inner:extend("Over")
Over.over = true

local function producer(R, k)
  local P = {}
  for _, what in ipairs({ "pause", "resume", "stop" }) do
    P[what .. "Producing"] = function() R.log(("%d prod %s"):format(k, what)) end
  end
  return P
end

local StringTransport = testing.StringTransport
local Traced = StringTransport:extend("TracedTransport")

function Traced:init(R, k, auto, addr)
  StringTransport.init(self, nil, addr)
  self.R, self.k, self.auto = R, k, auto
end

function Traced:tr(what) self.R.log(("%d %s"):format(self.k, what)) end

function Traced:write(data)
  self:tr("tw " .. data)
  return StringTransport.write(self, data)
end

function Traced:writeSequence(list)
  self:tr("tws " .. (#list > 0 and concat(list, ",") or "-"))
  return StringTransport.write(self, concat(list))
end

function Traced:loseConnection()
  self:tr("tlose")
  self.disconnecting = true
  if self.auto and self.connected then
    self.connected = false
    self.protocol:connectionLost(failure.Failure(errors.ConnectionDone("Bye.")))
  end
end

function Traced:abortConnection()
  self:tr("tabort")
  self.aborted = true
  return self:loseConnection()
end

-- lenient: see the header
function Traced:pauseProducing() self:tr("tpause"); self.producerState = "paused" end
function Traced:resumeProducing() self:tr("tresume"); self.producerState = "producing" end
function Traced:stopProducing() self:tr("tstop"); self.producerState = "stopped" end

function Traced:registerProducer(p, streaming)
  self:tr("treg " .. (streaming and "s" or "p"))
  return StringTransport.registerProducer(self, p, streaming)
end

function Traced:unregisterProducer()
  self:tr("tunreg")
  return StringTransport.unregisterProducer(self)
end

-- ---- factories

local function parse_flags(flags, mixin)
  return { echo = flags:find("e") ~= nil, prod = flags:find("p") ~= nil,
           bye = flags:find("b") ~= nil, cancel = flags:find("c") ~= nil,
           mixin = mixin ~= "-" and tonumber(mixin) or nil }
end

local function make_base(R, w)
  local kind = split(w[4], ":")
  local f
  if kind[1] == "plain" then
    f = protocol.Factory.forProtocol(Inner)
  else
    f = policies.LimitTotalConnectionsFactory()
    f.protocol = Inner
    f.connectionLimit = tonumber(kind[2])
    if kind[3] == "over" then f.overflowProtocol = Over end
  end
  f.spec, f.R, f.noisy = parse_flags(w[5], w[6]), R, false
  return { kind = kind[1], f = f }
end

local function log_opener(R)
  return function(_, name)
    R.log("open " .. name)
    return {
      write = function(_, s)
        R.log(name .. "| " .. canon_log((s:gsub("\n$", ""))))
      end,
      flush = function() end,
    }
  end
end

local function make_layer(R, fid, i, spec, inner)
  local a = split(spec, ":")
  local kind, f = a[1], nil
  if kind == "wrap" then
    f = policies.WrappingFactory(inner)
  elseif kind == "timeout" then
    f = policies.TimeoutFactory(inner, tonumber(a[2]))
  elseif kind == "throttle" then
    f = policies.ThrottlingFactory(inner, tonumber(a[2]), tonumber(a[3]), tonumber(a[4]))
  elseif kind == "peer" then
    f = policies.LimitConnectionsByPeer(inner)
    f.maxConnectionsPerPeer = tonumber(a[2])
  elseif kind == "log" then
    f = policies.TrafficLoggingFactory(inner, ("L%d.%d"):format(fid, i))
    f.open = log_opener(R)
  end
  f.clock, f.noisy = R.clock, false
  return { kind = kind, f = f }
end

local function make_factory(R, w)
  local fid = tonumber(w[2])
  local base = make_base(R, w)
  local layers = {}
  local specs = w[3] == "-" and {} or split(w[3], ",")
  local cur = base.f
  for i = #specs, 1, -1 do
    layers[i] = make_layer(R, fid, i, specs[i], cur)
    cur = layers[i].f
  end
  layers[#layers + 1] = base
  cur:doStart()
  return { outer = cur, layers = layers }
end

-- ---- state lines

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

local function layer_state(L)
  local f = L.f
  if L.kind == "plain" then
    return "plain"
  elseif L.kind == "total" then
    return ("total count=%d"):format(f.connectionCount)
  elseif L.kind == "peer" then
    local hosts = {}
    for h, n in pairs(f.peerConnections) do hosts[#hosts + 1] = ("%s=%d"):format(h, n) end
    table.sort(hosts)
    return "peers=" .. concat(hosts, ",")
  end
  local s = ("%s open=%d"):format(L.kind, count(f.protocols))
  if L.kind == "throttle" then
    s = s .. (" count=%d read=%d written=%d"):format(f.connectionCount, f.readThisSecond,
      f.writtenThisSecond)
  elseif L.kind == "log" then
    s = s .. (" counter=%d"):format(f._counter)
  end
  return s
end

local function active(dc) return dc ~= nil and dc:active() end

local function conn_state(c)
  local parts = {}
  for _, p in ipairs(c.layers) do
    local s = "disc=" .. bool(p.disconnecting)
    if policies.TimeoutProtocol:isinstance(p) then
      s = s .. (" tmo=%s armed=%s"):format(optnum(p.timeoutPeriod), bool(active(p.timeoutCall)))
    end
    parts[#parts + 1] = s
  end
  local inner = c.inner
  if inner.factory.spec.mixin then
    parts[#parts + 1] = ("mix=%s armed=%s"):format(optnum(inner.timeOut),
      bool(active(inner._timeoutCall)))
  end
  local t, host = c.t, inner.transport:getHost()
  parts[#parts + 1] = ("tr=%s disc=%s host=%s:%d"):format(t.producerState, bool(t.disconnecting),
    host.host, host.port)
  return concat(parts, " ")
end

-- ---- the program

local function run_program(pid)
  local R = { out = {}, clock = task.Clock(), factories = {}, conns = {} }
  local clock = R.clock
  local function now() return num(clock:seconds()) end
  function R.log(s) R.out[#R.out + 1] = now() .. " " .. s end
  function R.register(inner, streaming)
    inner.transport:registerProducer(producer(R, inner.cid), streaming)
  end

  local function connect(w)
    local k = tonumber(w[2])
    local F = R.factories[tonumber(w[3])]
    local addr = address.IPv4Address("TCP", w[4], 5000 + k)
    local p = F.outer:buildProtocol(addr)
    if p == nil then return R.log(("%d refused"):format(k)) end
    local layers, x = {}, p
    while policies.ProtocolWrapper:isinstance(x) do
      layers[#layers + 1] = x
      x = x.wrappedProtocol
    end
    x.cid, x.R, x.clock = k, R, clock
    local t = Traced(R, k, w[5] == "auto", addr)
    t.protocol = p
    R.conns[k] = { p = p, t = t, layers = layers, inner = x, F = F }
    p:makeConnection(t)
    R.log(("%d prefix %s"):format(k, p:logPrefix()))
  end

  local function first(c, cls)
    for _, p in ipairs(c.layers) do
      if cls:isinstance(p) then return p end
    end
  end

  local function period(s) return s ~= "none" and tonumber(s) or nil end

  local on_conn = {
    data = function(c, w)
      if c.t.connected and not c.t.disconnecting then c.p:dataReceived(w[3]) end
    end,
    lost = function(c, w)
      if not c.t.connected then return end
      c.t.connected = false
      local e = w[3] == "done" and errors.ConnectionDone() or errors.ConnectionLost()
      c.p:connectionLost(failure.Failure(e))
    end,
    write = function(c, w) c.inner.transport:write(w[3]) end,
    wseq = function(c, w)
      c.inner.transport:writeSequence(w[3] == "-" and {} or split(w[3], ","))
    end,
    lose = function(c) c.inner.transport:loseConnection() end,
    abort = function(c) c.inner.transport:abortConnection() end,
    reg = function(c, w)
      c.inner.transport:registerProducer(producer(R, c.inner.cid), w[3] == "s")
    end,
    unreg = function(c) c.inner.transport:unregisterProducer() end,
    ipause = function(c) c.inner.transport:pauseProducing() end,
    iresume = function(c) c.inner.transport:resumeProducing() end,
    istop = function(c) c.inner.transport:stopProducing() end,
    tset = function(c, w) first(c, policies.TimeoutProtocol):setTimeout(period(w[3])) end,
    tcancel = function(c) first(c, policies.TimeoutProtocol):cancelTimeout() end,
    treset = function(c) first(c, policies.TimeoutProtocol):resetTimeout() end,
    mset = function(c, w)
      R.log(("%d mset -> %s"):format(c.inner.cid, optnum(c.inner:setTimeout(period(w[3])))))
    end,
    mreset = function(c) c.inner:resetTimeout() end,
  }

  local function state()
    for fid, F in ipairs(R.factories) do
      local parts = {}
      for i, L in ipairs(F.layers) do parts[i] = layer_state(L) end
      R.out[#R.out + 1] = ("f%d %s"):format(fid, concat(parts, " | "))
    end
  end

  local function resetc(w)
    for _, L in ipairs(R.factories[tonumber(w[2])].layers) do
      if L.kind == "log" then return L.f:resetCounter() end
    end
  end

  local function run_op(w)
    local what = w[1]
    if what == "connect" then return connect(w) end
    if what == "state" then return state() end
    if what == "resetc" then return resetc(w) end
    local c = R.conns[tonumber(w[2])]
    if c then on_conn[what](c, w) end
  end

  -- f(), traced after "> TEXT" unless nothing happened
  local function step(text, f, ...)
    local out = R.out
    local n = #out + 1
    out[n] = "> " .. text
    local ok, e = pcall(f, ...)
    if not ok then R.log(("%s -> %s"):format(text, M.error_name(e))) end
    if #out == n then out[n] = nil end
  end

  local function advance(amount) clock:advance(amount) end

  local P = {}
  function P.op(w, line)
    if w[1] == "factory" then
      R.factories[tonumber(w[2])] = make_factory(R, w)
    elseif w[1] == "advance" then
      step(line, advance, tonumber(w[2]))
    else
      step(w[1], advance, tonumber(w[1]:sub(1, -2)) + EPS)
      if w[2] then step(line:match("^%S+ (.*)$"), run_op, { table.unpack(w, 2) }) end
    end
  end

  local function name_of(dc)
    for fid, F in ipairs(R.factories) do
      for i, L in ipairs(F.layers) do
        local f = L.f
        for _, n in ipairs({ "checkReadBandwidthID", "unthrottleReadsID",
                             "checkWriteBandwidthID", "unthrottleWritesID" }) do
          if L.kind == "throttle" and f[n] == dc then return ("f%d.%d.%s"):format(fid, i, n) end
        end
      end
    end
    for k, c in pairs(R.conns) do
      for i, p in ipairs(c.layers) do
        if p.timeoutCall == dc then return ("c%d.%d.timeout"):format(k, i) end
      end
      if c.inner._timeoutCall == dc then return ("c%d.mixin"):format(k) end
    end
    return "?"
  end

  function P.finish()
    state()
    for fid, F in ipairs(R.factories) do
      R.out[#R.out + 1] = ("f%d prefix %s"):format(fid, F.outer:logPrefix())
    end
    local ks = {}
    for k in pairs(R.conns) do ks[#ks + 1] = k end
    table.sort(ks)
    for _, k in ipairs(ks) do R.out[#R.out + 1] = ("c%d %s"):format(k, conn_state(R.conns[k])) end
    local list = {}
    for i, dc in ipairs(clock:getDelayedCalls()) do list[i] = { dc:getTime(), name_of(dc) } end
    table.sort(list, function(x, y)
      if x[1] ~= y[1] then return x[1] < y[1] end
      return x[2] < y[2]
    end)
    local names = {}
    for i, e in ipairs(list) do names[i] = e[2] .. "@" .. num(e[1]) end
    R.out[#R.out + 1] = "pending" .. (#names > 0 and " " .. concat(names, " ") or "")
    return "== " .. pid .. "\n" .. concat(R.out, "\n")
  end
  return P
end

-- Run every program of text; returns {id = trace, ...} and the ids in order.
function M.run(text)
  return td.run(text, function(w) return run_program(w[2]) end)
end

return M
