-- spec/helpers/sync_diff.lua: random programs for braid.defer's
-- DeferredLock, DeferredSemaphore and DeferredQueue, and braid's
-- interpreter for them (spec/sync_diff_spec.lua runs the same programs
-- against Twisted's twisted.internet.defer with spec/peers/sync_diff.py and
-- compares traces).
--
-- A program is text, one item per line: first the definitions, then the
-- operations, run in order.
--   prog ID ND                ND plain Deferreds d1 .. dND
--   lock I                    DeferredLock LI
--   sem I TOKENS              DeferredSemaphore(TOKENS) SI
--   queue I SIZE|- BACKLOG|-  DeferredQueue(SIZE, BACKLOG) QI ("-": nil)
--   acq K OBJ BODY            the action acq:K makes aK = OBJ:acquire() (OBJ
--                             is LI or SI); when aK fires it logs "aK -> V"
--                             and, if it succeeded, aK holds OBJ and runs
--                             BODY (the callback returns BODY's terminal)
--   run K OBJ BODY            the action run:K makes rK = OBJ:run(f, 100+K);
--                             f logs "rK f(ARG)", runs BODY and returns its
--                             terminal; rK logs "rK -> V" when it fires
--   get K QI BODY             the action get:K makes gK = QI:get(); it logs
--                             "gK -> V" when it fires and then, if it
--                             succeeded, runs BODY
--   do ACTION                 run one action
--   end
-- A BODY is "-" or actions joined by ",", the last possibly a terminal:
--   acq:K  run:K  get:K       make aK / rK / gK (at most once each)
--   rel:K                     release the object aK holds ("unheld" unless
--                             aK succeeded and was not released yet)
--   cancel:K  cancelr:K  cancelg:K  canceld:J
--                             cancel aK / rK / gK / dJ
--   fira:K  firr:K            errback aK / rK with E(500+K) / E(600+K)
--   firg:K:ok|err             gK:callback(700+K) / errback(E(700+K))
--   fire:J:ok|err             dJ:callback(1000+J) / errback(E(1000+J))
--   put:QI:V                  QI:put(V); V is a number, nil or an object
--   st:OBJ                    log OBJ's state (as the "state" lines below)
--   terminals: ret:N (returns N), raise:N (raises EN), fail:N (returns a
--   Failure of EN), d:J (returns dJ)
-- An action that raises logs "ACTION -> ERROR"; one acting on an aK, rK or
-- gK not made yet raises "unmade". Errors print as Twisted's side names
-- them: AlreadyFired (AlreadyCalledError), QueueOverflow, QueueUnderflow,
-- EN. Values: numbers, nil, LI / SI / QI (the objects), DJ, F(EN),
-- F(Cancelled), F(Name). At the end: "state LI locked=B waiting=N",
-- "state SI tokens=N limit=N waiting=N", "state QI size=N|- backlog=N|-
-- pending=[V,...] count=N waiting=N" (count: pendingCount() here,
-- len(pending) in Twisted), then "state NAME called=B result=V|- unh=B"
-- (unh: it holds a Failure to report as unhandled) for every aK, rK and gK
-- made and every dJ.
--
-- Left out, where braid differs from Twisted on purpose: release() of an
-- unlocked lock or a full semaphore raises ValueError in braid, and
-- AssertionError in Twisted (docs/defer.md, "Where braid differs from
-- Twisted"). So every release is one holder's: rel:K releases what aK
-- acquired, once ("unheld" otherwise, on both sides), and a waiting acquire
-- or run Deferred is only ever errbacked by the program (fira, firr), never
-- called back, which would run its holder's code without the lock and
-- release it once too often later.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local td = require "helpers.twisted_diff"

local M = {}

-- ---- generating --------------------------------------------------------

local pick = td.pick

local SIZES = { { 3, "-" }, { 1, "0" }, { 2, "1" }, { 2, "2" } }
local BACKLOGS = { { 3, "-" }, { 1, "0" }, { 2, "1" }, { 1, "2" } }
local HOLD_TERMS = { { 8, false }, { 1, "raise" }, { 1, "ret" } }
local RUN_TERMS = { { 3, "ret" }, { 2, "raise" }, { 1, "fail" }, { 4, "d" }, { 1, false } }

-- the actions that make a thing, and those that act on one
local MAKES = { acq = "a", run = "r", get = "g" }
local ACTS_ON = { rel = "a", cancel = "a", fira = "a", cancelr = "r", firr = "r",
                  cancelg = "g", firg = "g" }

local function body_text(b)
  local parts = {}
  for i, a in ipairs(b.acts) do parts[i] = a end
  if b.term then parts[#parts + 1] = b.term end
  return #parts > 0 and table.concat(parts, ",") or "-"
end

-- A program under construction: its objects, definitions, bodies and
-- top-level actions.
local function new_program(rand)
  local G = { rand = rand, prims = {}, queues = {}, sems = {}, nlocks = 0, acqs = {}, runs = {},
              gets = {}, nd = 0, bodies = {}, top = {}, made = {}, code = 0 }

  function G.code_n()
    G.code = G.code + 1
    return G.code
  end

  function G.body(kind, idx)
    local b = { kind = kind, idx = idx, acts = {} }
    G.bodies[#G.bodies + 1] = b
    return b
  end

  -- a Deferred for a run's f to return: often one returned already
  function G.some_d()
    if G.nd == 0 or rand(3) == 1 then G.nd = G.nd + 1 end
    return rand(G.nd) == 1 and 1 or G.nd
  end

  function G.terminal(what)
    if not what then return nil end
    if what == "d" then return "d:" .. G.some_d() end
    return what .. ":" .. G.code_n()
  end

  return td.add_placement(G, MAKES, ACTS_ON)
end

local function any_body() return true end

-- not the body of what act makes (it would never run)
local function not_own(kind, k)
  return function(b) return not (b.kind == kind and b.idx == k) end
end

local function gen_objects(G)
  local rand = G.rand
  G.nlocks = rand(3) - 1
  for i = 1, G.nlocks do G.prims[#G.prims + 1] = "L" .. i end
  for i = 1, rand(3) - 1 do
    G.sems[i] = rand(3)
    G.prims[#G.prims + 1] = "S" .. i
  end
  for i = 1, rand(3) - 1 do
    G.queues[i] = { size = pick(rand, SIZES), backlog = pick(rand, BACKLOGS) }
  end
  if #G.prims == 0 and #G.queues == 0 then
    G.nlocks = 1
    G.prims[1] = "L1"
  end
end

local function gen_holders(G)
  local rand = G.rand
  if #G.prims == 0 then return end
  for k = 1, rand(6) do
    local b = G.body("acq", k)
    b.term = G.terminal(pick(rand, HOLD_TERMS))
    G.acqs[k] = { obj = G.prims[rand(#G.prims)], body = b }
  end
  for k = 1, rand(4) - 1 do
    local b = G.body("run", k)
    b.term = G.terminal(pick(rand, RUN_TERMS))
    G.runs[k] = { obj = G.prims[rand(#G.prims)], body = b }
  end
end

local function gen_gets(G)
  local rand = G.rand
  if #G.queues == 0 then return end
  for k = 1, rand(6) - 1 do
    local b = G.body("get", k)
    b.term = G.terminal(pick(rand, HOLD_TERMS))
    G.gets[k] = { q = rand(#G.queues), body = b }
  end
end

local function objects(G)
  local all = {}
  for _, p in ipairs(G.prims) do all[#all + 1] = p end
  for q in ipairs(G.queues) do all[#all + 1] = "Q" .. q end
  return all
end

-- Releases: in aK's own callback (re-entrancy), elsewhere, or never.
local function acq_sites(G)
  local rand = G.rand
  for k in ipairs(G.acqs) do
    G.place("acq:" .. k, 5, not_own("acq", k))
    local r = rand(7)
    if r <= 2 then
      table.insert(G.acqs[k].body.acts, "rel:" .. k)
    elseif r <= 6 then
      G.place("rel:" .. k, 3, any_body)
    end
    if rand(4) == 1 then G.place("cancel:" .. k, 3, any_body) end
    if rand(10) == 1 then G.place("fira:" .. k, 3, any_body) end
  end
end

local function run_sites(G)
  local rand = G.rand
  for k in ipairs(G.runs) do
    G.place("run:" .. k, 5, not_own("run", k))
    if rand(4) == 1 then G.place("cancelr:" .. k, 4, any_body) end
    if rand(10) == 1 then G.place("firr:" .. k, 4, any_body) end
  end
end

local function put_value(G)
  local rand = G.rand
  local r = rand(8)
  if r == 1 then return "nil" end
  if r == 2 then
    local all = objects(G)
    return all[rand(#all)]
  end
  return tostring(G.code_n())
end

local function queue_sites(G)
  local rand = G.rand
  for k, g in ipairs(G.gets) do
    G.place("get:" .. k, 5, not_own("get", k))
    if rand(4) == 1 then G.place("cancelg:" .. k, 4, any_body) end
    if rand(10) == 1 then
      G.place(("firg:%d:%s"):format(k, rand(2) == 1 and "ok" or "err"), 4, any_body)
    end
    if rand(3) > 1 then G.place(("put:Q%d:%s"):format(g.q, put_value(G)), 4, any_body) end
  end
  for q in ipairs(G.queues) do
    for _ = 1, rand(4) - 1 do G.place(("put:Q%d:%s"):format(q, put_value(G)), 4, any_body) end
  end
end

local function other_sites(G)
  local rand = G.rand
  for j = 1, G.nd do
    for _ = 1, pick(rand, { { 1, 0 }, { 5, 1 }, { 2, 2 } }) do
      G.place(("fire:%d:%s"):format(j, rand(3) == 1 and "err" or "ok"), 4, any_body)
    end
    if rand(8) == 1 then G.place("canceld:" .. j, 4, any_body) end
  end
  local all = objects(G)
  for _ = 1, rand(3) - 1 do G.place("st:" .. all[rand(#all)], 2, any_body) end
end

local function top_ops(G)
  for i, t in ipairs(G.top) do t.seq = i end
  table.sort(G.top, function(x, y)
    if x.slot ~= y.slot then return x.slot < y.slot end
    return x.seq < y.seq
  end)
  local out = {}
  for i, t in ipairs(G.top) do out[i] = "do " .. t.act end
  return out
end

local function program(rand, id)
  local G = new_program(rand)
  gen_objects(G)
  gen_holders(G)
  gen_gets(G)
  acq_sites(G)
  run_sites(G)
  queue_sites(G)
  other_sites(G)
  local lines = { ("prog %s %d"):format(id, G.nd) }
  local function add(fmt, ...) lines[#lines + 1] = fmt:format(...) end
  for i = 1, G.nlocks do add("lock %d", i) end
  for i, t in ipairs(G.sems) do add("sem %d %d", i, t) end
  for i, q in ipairs(G.queues) do add("queue %d %s %s", i, q.size, q.backlog) end
  for k, a in ipairs(G.acqs) do add("acq %d %s %s", k, a.obj, body_text(a.body)) end
  for k, r in ipairs(G.runs) do add("run %d %s %s", k, r.obj, body_text(r.body)) end
  for k, g in ipairs(G.gets) do add("get %d Q%d %s", k, g.q, body_text(g.body)) end
  for _, op in ipairs(top_ops(G)) do add("%s", op) end
  add("end")
  return table.concat(lines, "\n")
end

M.generate = td.generator(program)

-- ---- running -------------------------------------------------------------

-- An error as Twisted's side names it.
function M.error_name(e)
  if errors.isinstance(e, defer.AlreadyCalledError) then return "AlreadyFired" end
  if errors.isinstance(e) then return e.class.__name end
  return tostring(e):match("E%d+") or tostring(e)  -- also "unmade", "unheld"
end

local function split(s, sep)
  local out = {}
  for part in s:gmatch("[^" .. sep .. "]+") do out[#out + 1] = part end
  return out
end

-- "a:1,rel:2,ret:3" -> { acts = { {"a","1", text = "a:1"}, ... }, term = {"ret","3"} }
local TERMINALS = { ret = true, raise = true, fail = true, d = true }
local function parse_body(text)
  local b = { acts = {} }
  if text == "-" then return b end
  for _, item in ipairs(split(text, ",")) do
    local a = split(item, ":")
    a.text = item
    if TERMINALS[a[1]] then b.term = a else b.acts[#b.acts + 1] = a end
  end
  return b
end

local function opt(n) return n == nil and "-" or tostring(n) end

local function run_program(pid, nd)
  local R = { out = {}, ds = {}, objs = {}, order = {}, defs = { a = {}, r = {}, g = {} },
              made = { a = {}, r = {}, g = {} }, held = {} }
  for j = 1, nd do R.ds[j] = defer.Deferred() end
  local function log(s) R.out[#R.out + 1] = s end

  local function rep(v)
    if v == nil then return "nil" end
    local t = type(v)
    if t == "number" or t == "boolean" or t == "string" then return tostring(v) end
    if failure.isFailure(v) then
      if v:check(defer.CancelledError) then return "F(Cancelled)" end
      return ("F(%s)"):format(M.error_name(v.value))
    end
    for name, o in pairs(R.objs) do
      if o == v then return name end
    end
    for j, d in ipairs(R.ds) do
      if d == v then return "D" .. j end
    end
    return "?" .. t
  end

  local function state(name)
    local o = R.objs[name]
    local kind = name:sub(1, 1)
    if kind == "L" then
      return ("%s locked=%s waiting=%d"):format(name, tostring(o.locked), #o.waiting)
    elseif kind == "S" then
      return ("%s tokens=%d limit=%d waiting=%d"):format(name, o.tokens, o.limit, #o.waiting)
    end
    local vals = {}
    for i = o._ph, o._pt do vals[#vals + 1] = rep(o._pending[i]) end
    return ("%s size=%s backlog=%s pending=[%s] count=%d waiting=%d"):format(name, opt(o.size),
      opt(o.backlog), table.concat(vals, ","), o:pendingCount(), #o.waiting)
  end

  local actions = {}
  -- a body's actions, then its terminal's value (and true for "done")
  local run_body, act = td.body_runner(actions, log, M.error_name, R.ds)

  local function made(kind, k)
    local d = R.made[kind][tonumber(k)]
    if not d then error("unmade", 0) end
    return d
  end

  -- aK / gK: the object's acquire() / get() Deferred; what it gives is
  -- logged, then (unless a failure) the body runs, aK's as the holder
  local function taking(kind, method, hold)
    return function(a)
      local k = tonumber(a[2])
      local def = R.defs[kind][k]
      local obj = R.objs[def.obj]
      local d = obj[method](obj)
      R.made[kind][k] = d
      d:addBoth(function(v)
        log(("%s%d -> %s"):format(kind, k, rep(v)))
        if failure.isFailure(v) then return v end
        if hold then R.held[k] = true end
        return run_body(def.body)
      end)
    end
  end
  actions.acq = taking("a", "acquire", true)
  actions.rel = function(a)
    local k = tonumber(a[2])
    if not R.held[k] then error("unheld", 0) end
    R.held[k] = false
    R.objs[R.defs.a[k].obj]:release()
  end
  actions.run = function(a)
    local k = tonumber(a[2])
    local def = R.defs.r[k]
    local d = R.objs[def.obj]:run(function(arg)
      log(("r%d f(%s)"):format(k, rep(arg)))
      return run_body(def.body)
    end, 100 + k)
    R.made.r[k] = d
    d:addBoth(function(v)
      log(("r%d -> %s"):format(k, rep(v)))
      return v
    end)
  end
  actions.get = taking("g", "get", false)
  actions.cancel = function(a) made("a", a[2]):cancel() end
  actions.cancelr = function(a) made("r", a[2]):cancel() end
  actions.cancelg = function(a) made("g", a[2]):cancel() end
  actions.canceld = function(a) R.ds[tonumber(a[2])]:cancel() end
  actions.fira = function(a) made("a", a[2]):errback("E" .. (500 + tonumber(a[2]))) end
  actions.firr = function(a) made("r", a[2]):errback("E" .. (600 + tonumber(a[2]))) end
  actions.firg = function(a)
    local k = tonumber(a[2])
    local d = made("g", k)
    if a[3] == "ok" then d:callback(700 + k) else d:errback("E" .. (700 + k)) end
  end
  actions.fire = function(a)
    local j = tonumber(a[2])
    if a[3] == "ok" then R.ds[j]:callback(1000 + j) else R.ds[j]:errback("E" .. (1000 + j)) end
  end
  actions.put = function(a)
    local v = a[3]
    if v == "nil" then v = nil elseif R.objs[v] then v = R.objs[v] else v = tonumber(v) end
    R.objs[a[2]]:put(v)
  end
  actions.st = function(a) log(state(a[2])) end

  -- "acq|run|get K OBJ BODY"
  local function define(w)
    R.defs[w[1]:sub(1, 1)][tonumber(w[2])] = { obj = w[3], body = parse_body(w[4]) }
  end

  local P = {}
  function P.op(w, line)
    local kind = w[1]
    if kind == "lock" then
      R.objs["L" .. w[2]] = defer.DeferredLock()
      R.order[#R.order + 1] = "L" .. w[2]
    elseif kind == "sem" then
      R.objs["S" .. w[2]] = defer.DeferredSemaphore(tonumber(w[3]))
      R.order[#R.order + 1] = "S" .. w[2]
    elseif kind == "queue" then
      R.objs["Q" .. w[2]] = defer.DeferredQueue(tonumber(w[3]), tonumber(w[4]))
      R.order[#R.order + 1] = "Q" .. w[2]
    elseif kind == "acq" or kind == "run" or kind == "get" then
      define(w)
    elseif kind == "do" then
      local a = split(w[2], ":")
      a.text = w[2]
      act(a)
    else
      error("unknown line " .. line)
    end
  end

  local function deferred_states()
    local all = {}
    for _, kind in ipairs({ "a", "r", "g" }) do
      for k in ipairs(R.defs[kind]) do
        local d = R.made[kind][k]
        if d then all[#all + 1] = { kind .. k, d } end
      end
    end
    for j, d in ipairs(R.ds) do all[#all + 1] = { "d" .. j, d } end
    return all
  end

  function P.finish()
    for _, name in ipairs(R.order) do log("state " .. state(name)) end
    local list = {}
    for i, e in ipairs(deferred_states()) do
      local d = e[2]
      local s = rawget(d, "_dbg")
      log(("state %s called=%s result=%s unh=%s"):format(e[1], tostring(d.called),
        d.called and rep(d.result) or "-", tostring(s and s.failure ~= nil or false)))
      list[i] = d
    end
    td.consume_failures(list)  -- so nothing is reported later
    return "== " .. pid .. "\n" .. table.concat(R.out, "\n")
  end
  return P
end

-- Run every program of text; returns {id = trace, ...} and the ids in order.
function M.run(text)
  return td.run(text, function(w) return run_program(w[2], tonumber(w[3])) end)
end

return M
