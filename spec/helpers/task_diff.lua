-- spec/helpers/task_diff.lua: random programs for braid.task's
-- deterministic-time API (Clock, DelayedCall, LoopingCall, deferLater, and
-- Cooperators driven by the Clock), and braid's interpreter for them
-- (spec/task_diff_spec.lua runs the same programs against Twisted's
-- twisted.internet.task with spec/peers/task_diff.py and compares traces).
--
-- A program is text, one item per line: first the definitions, then the
-- operations, run in order on one Clock.
--   prog ID ND                ND plain Deferreds d1 .. dND
--   call I DELAY BODY         timed call cI: scheduled (callLater(DELAY)) by
--                             the action sched:I, it logs "cI @T" and runs BODY
--   loop L INTERVAL now|later plain|count DEFAULT BODY ...
--                             LoopingCall lL (plain, or withCount) on the
--                             Clock; start:L starts it with INTERVAL and
--                             now true/false; its Nth call logs "lL#N @T"
--                             (plus " count=C" with withCount) and runs the
--                             Nth BODY; calls past the last BODY run DEFAULT:
--                             "-" (nothing) or "stop" (stops itself)
--   later K DELAY BODY|nofn   the action defer:K makes dlK = deferLater(clock,
--                             DELAY, f); f logs "dlK @T" and runs BODY
--                             (with nofn: deferLater(clock, DELAY), no f)
--   coop K DELAY UNITS started|stopped
--                             Cooperator kK: scheduler callLater(DELAY) on
--                             the Clock, UNITS work units a tick, started or
--                             not; each one runs a single task (below)
--   task T K cooperate|coiterate BODY ...
--                             the action cooperate:T runs tT on kK; its
--                             iterator's Nth call logs "tT#N @T" and runs the
--                             Nth BODY; after the last one it is exhausted
--   do ACTION                 run one action
--   advance S | pump S,S,...  move the Clock
--   end
-- A BODY is "-" or actions joined by ",", the last possibly a terminal:
--   sched:I  cancel:I  reset:I:S  delay:I:S   on cI (logs "unscheduled"
--                             when cI was never scheduled)
--   adv:S                     a nested clock:advance(S) (call bodies only)
--   fire:K:ok|err             dK:callback(1000+K) / errback(E(1000+K))
--   start:L  stop:L  resetl:L the LoopingCall's start / stop / reset
--   defer:K  canceld:K        make dlK / cancel it
--   cooperate:T  pause:T  resume:T  stopt:T  when:T (one more whenDone)
--   cstop:K  cstart:K         the Cooperator's stop / start
--   terminals: ret:N (returns N), raise:N (raises EN), fail:N (returns a
--   Failure of EN), d:K (returns dK), done (an iterator returns nil: done)
-- An action that raises logs "ACTION -> ERROR"; a top-level advance that
-- raises logs "advance S -> ERROR". Errors print as Twisted's side names
-- them: AlreadyCalled, AlreadyCancelled (DelayedCall), AlreadyFired (a
-- Deferred), AlreadyRunning / NotRunning / NotRunningReset (LoopingCall's
-- assertions; Assert for a bare one), EN, TaskDone, NotPaused, ... Each
-- loop start's Deferred logs "lL start#N -> V", each deferLater "dlK -> V",
-- each task's whenDone "tT done -> V" (and "tT when -> V" for when:T).
-- Values: numbers, nil, lcL (a LoopingCall), it (an iterator), DK, F(EN),
-- F(Cancelled), F(Name). At the end: "state cI ..." for every timed call
-- (called, cancelled, active, getTime), "state lL running=.. call=T|-",
-- "state dK ..." and "state dlK ..." (called, result, and unh: whether it
-- holds a Failure to report as unhandled), "state tT paused=N
-- done=State|-", "state kK running=.. tasks=N call=T|-", and "pending
-- NAME@T ...": the Clock's pending calls by time (NAME is cI, lL, kK or ?).
--
-- Times are multiples of 0.5, so float time is exact in both languages.
-- Left out, where braid differs from Twisted on purpose:
-- * negative callLater delays and advance amounts (docs/task.md, "Where
--   braid differs"), and negative reset amounts (braid refuses them too).
-- * several tasks in one Cooperator (docs/task.md: braid keeps the
--   round-robin position and stop() fails every task), a Deferred failing
--   after its task was stopped (docs/task.md: braid consumes it). See
--   gen_coops.
-- * a task step that stops its own task or Cooperator and then raises or
--   finishes: Twisted's list.remove raises ValueError out of the tick
--   (fix_self_stops).
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local task = require "braid.task"
local td = require "helpers.twisted_diff"

local M = {}

-- ---- generating --------------------------------------------------------

local pick = td.pick

local function num(x) return ("%.17g"):format(x) end

local DELAYS = { { 3, 0 }, { 4, 0.5 }, { 6, 1 }, { 3, 1.5 }, { 5, 2 }, { 3, 3 }, { 2, 4 }, { 1, 6 } }
local INTERVALS = { { 1, 0 }, { 3, 0.5 }, { 4, 1 }, { 2, 1.5 }, { 3, 2 }, { 2, 3 } }
local STEPS = { { 2, 0 }, { 3, 0.5 }, { 5, 1 }, { 2, 1.5 }, { 3, 2 }, { 2, 3 }, { 1, 5 },
                { 1, 8 }, { 1, 20 } }
-- reset amounts stay >= 0: braid's reset refuses a negative one (ValueError,
-- as callLater does), Twisted's moves the call back
local RESET_BASE = { { 2, 0 }, { 2, 0.5 }, { 3, 1 }, { 2, 2 }, { 1, 3 } }
local DELAY_BASE = { { 1, -2 }, { 2, -1 }, { 1, -0.5 }, { 1, 0 }, { 2, 0.5 }, { 2, 1 }, { 1, 2 },
                     { 1, 3 } }
local LOOP_TERMS = { { 8, false }, { 3, "ret" }, { 2, "raise" }, { 1, "fail" }, { 4, "d" } }
local LATER_TERMS = { { 1, false }, { 4, "ret" }, { 2, "raise" }, { 1, "fail" }, { 2, "d" } }
local TASK_TERMS = { { 6, false }, { 2, "ret" }, { 4, "d" }, { 1, "raise" }, { 1, "done" } }

local function new_body(kind, idx)
  return { kind = kind, idx = idx, acts = {} }
end

local function body_text(b)
  local parts = {}
  for i, a in ipairs(b.acts) do parts[i] = a end
  if b.term then parts[#parts + 1] = b.term end
  return #parts > 0 and table.concat(parts, ",") or "-"
end

-- the actions that make a thing, and those that act on one
local MAKES = { sched = "c", start = "l", defer = "dl", cooperate = "t" }
local ACTS_ON = { cancel = "c", reset = "c", delay = "c", start = "l", stop = "l", resetl = "l",
                  canceld = "dl", pause = "t", resume = "t", stopt = "t", when = "t" }

-- A program under construction: its definitions, bodies and top-level ops.
local function new_program(rand)
  local G = { rand = rand, calls = {}, loops = {}, laters = {}, coops = {}, tasks = {},
              ds = {}, bodies = {}, top = {}, made = {}, bits = 0, code = 0 }

  -- a fresh error/return number
  function G.code_n()
    G.code = G.code + 1
    return G.code
  end

  function G.body(kind, idx)
    local b = new_body(kind, idx)
    G.bodies[#G.bodies + 1] = b
    return b
  end

  -- a new Deferred; private ones belong to one controlled task (below)
  function G.newd(private)
    local kind = (private or rand(3) > 1) and "ok" or "err"
    G.ds[#G.ds + 1] = { kind = kind, private = private }
    return #G.ds
  end

  function G.public_d()
    local public = {}
    for k, d in ipairs(G.ds) do
      if not d.private then public[#public + 1] = k end
    end
    if #public == 0 or rand(3) == 1 then return G.newd(false) end
    return public[rand(#public)]
  end

  function G.terminal(what, private)
    if not what then return nil end
    if what == "d" then return "d:" .. (private and G.newd(true) or G.public_d()) end
    if what == "done" then return "done" end
    return what .. ":" .. G.code_n()
  end

  -- Amount for reset/delay (at most 10 a program): the base, so that a
  -- moved call shares its time with others (the order of such ties is the
  -- Clock's list order in both), or one time in three the base plus
  -- 2^-(2+n), n new for each operation, a time of its own.
  function G.amount(base)
    if G.bits >= 10 then return nil end
    G.bits = G.bits + 1
    if rand(3) > 1 then return base end
    return base + 2.0 ^ -(2 + G.bits)
  end

  return td.add_placement(G, MAKES, ACTS_ON)
end

local function any_body() return true end
local function call_body(b) return b.kind == "call" end

local function gen_calls(G)
  local rand = G.rand
  for i = 1, 1 + rand(6) do
    local b = G.body("call", i)
    if rand(8) == 1 then b.term = "raise:" .. G.code_n() end
    G.calls[i] = { delay = pick(rand, DELAYS), body = b }
  end
end

local function gen_loops(G)
  local rand = G.rand
  for l = 1, rand(3) - 1 do
    local interval = pick(rand, INTERVALS)
    local L = { interval = interval, now = rand(2) == 1, count = rand(4) == 1, bodies = {} }
    -- interval 0 runs again within the same advance: it must stop itself
    L.default = (interval == 0 or rand(4) == 1) and "stop" or "-"
    for n = 1, rand(4) - 1 do
      local b = G.body("loop", l)
      b.term = G.terminal(pick(rand, LOOP_TERMS))
      L.bodies[n] = b
    end
    G.loops[l] = L
  end
end

local function gen_laters(G)
  local rand = G.rand
  for k = 1, rand(3) - 1 do
    local nofn = rand(6) == 1
    local b = nofn and new_body("later", k) or G.body("later", k)
    if not nofn then b.term = G.terminal(pick(rand, LATER_TERMS)) end
    G.laters[k] = { delay = pick(rand, DELAYS), body = b, nofn = nofn }
  end
end

-- Each Cooperator runs one task: with several, a task leaving the list moves
-- Twisted's list iterator past the next one (docs/task.md, "Where braid
-- differs": braid keeps the round-robin position). A "controlled" task (one
-- with resume or stopt actions) returns only Deferreds of its own that
-- never fail: a Deferred that fails after its task was stopped is consumed
-- by braid and raises AlreadyCalledError in Twisted (the same section).
local function gen_coops(G)
  local rand = G.rand
  for k = 1, rand(3) - 1 do
    G.coops[k] = { delay = pick(rand, { { 3, 0 }, { 1, 0.5 }, { 1, 1 } }),
                   units = pick(rand, { { 3, 1 }, { 1, 2 }, { 1, 3 } }), started = rand(4) > 1 }
    local co = rand(4) == 1
    local T = { coop = k, co = co, controlled = not co and rand(2) == 1, steps = {} }
    for n = 1, rand(4) do
      local b = G.body("task", k)
      b.term = G.terminal(pick(rand, TASK_TERMS), T.controlled)
      T.steps[n] = b
    end
    G.tasks[k] = T
  end
end

local function sched_sites(G)
  for i in ipairs(G.calls) do
    G.place("sched:" .. i, 4, function(b) return b.kind ~= "call" or b.idx < i end)
  end
end

local function loop_sites(G)
  local rand = G.rand
  for l, L in ipairs(G.loops) do
    G.place("start:" .. l, 6, call_body)
    if rand(3) == 1 then G.place("start:" .. l, 3, call_body) end
    for _ = 1, rand(3) - 1 do G.place("stop:" .. l, 3, any_body) end
    if rand(4) == 1 then G.place("resetl:" .. l, 3, any_body) end
  end
end

local function later_sites(G)
  local rand = G.rand
  for k in ipairs(G.laters) do
    G.place("defer:" .. k, 5, function(b) return b.kind == "call" or b.kind == "loop" end)
    if rand(3) == 1 then G.place("canceld:" .. k, 3, any_body) end
  end
end

local function task_sites(G)
  local rand = G.rand
  for t, T in ipairs(G.tasks) do
    G.place("cooperate:" .. t, 6, call_body)
    if not T.co then
      if rand(4) == 1 then G.place("when:" .. t, 3, any_body) end
      if rand(3) == 1 then G.place("pause:" .. t, 3, any_body) end
      if T.controlled then
        local stop = rand(2) == 1
        if stop then G.place("stopt:" .. t, 3, any_body) end
        for _ = 1, stop and rand(2) - 1 or rand(2) do G.place("resume:" .. t, 3, any_body) end
      end
    end
    local K = G.coops[T.coop]
    if not K.started and rand(7) > 1 then G.place("cstart:" .. T.coop, 4, any_body) end
    if rand(4) == 1 then G.place("cstop:" .. T.coop, 4, any_body) end
    if rand(6) == 1 then G.place("cstart:" .. T.coop, 4, any_body) end
  end
end

local function fire_sites(G)
  local rand = G.rand
  for k, d in ipairs(G.ds) do
    local n = d.private and (rand(7) > 1 and 1 or 0) or pick(rand, { { 1, 0 }, { 4, 1 }, { 2, 2 } })
    for _ = 1, n do G.place(("fire:%d:%s"):format(k, d.kind), 4, any_body) end
  end
end

-- A task step that stops its own task or Cooperator and then raises or
-- finishes makes Twisted complete the task twice: the second _removeTask's
-- list.remove raises ValueError out of the tick (braid ignores the second
-- removal). Such steps return a value instead.
local function fix_self_stops(G)
  for _, b in ipairs(G.bodies) do
    if b.kind == "task" and (b.term == "done" or (b.term or ""):find("^raise")) then
      for _, a in ipairs(b.acts) do
        if a == "stopt:" .. b.idx or a == "cstop:" .. G.tasks[b.idx].coop then b.term = nil end
      end
    end
  end
end

local function call_ops(G)
  local rand = G.rand
  local n = #G.calls
  for _ = 1, rand(n + 2) - 1 do
    local i, op = rand(n), pick(rand, { { 3, "cancel" }, { 3, "reset" }, { 3, "delay" } })
    if op == "cancel" then
      G.place("cancel:" .. i, 4, any_body)
    else
      local s = G.amount(pick(rand, op == "reset" and RESET_BASE or DELAY_BASE))
      if s then G.place(("%s:%d:%s"):format(op, i, num(s)), 4, any_body) end
    end
  end
  if rand(3) == 1 then
    G.place("adv:" .. num(pick(rand, { { 2, 0 }, { 2, 0.5 }, { 2, 1 }, { 1, 2 } })), 0, call_body)
  end
end

-- The top-level ops: advances and pumps at evenly spaced slots, with the
-- top-level actions among them by their slots (see G.slot).
local function top_ops(G)
  local rand = G.rand
  local ops = {}
  local n = 2 + rand(5)
  for i = 1, n do
    local op
    if rand(5) == 1 then
      local steps = {}
      for s = 1, 1 + rand(3) do steps[s] = num(pick(rand, STEPS)) end
      op = "pump " .. table.concat(steps, ",")
    else
      op = "advance " .. num(pick(rand, STEPS))
    end
    ops[#ops + 1] = { op = op, slot = (i - 0.5) / n }
  end
  for _, t in ipairs(G.top) do ops[#ops + 1] = { op = "do " .. t.act, slot = t.slot } end
  for i, o in ipairs(ops) do o.seq = i end
  table.sort(ops, function(x, y)
    if x.slot ~= y.slot then return x.slot < y.slot end
    return x.seq < y.seq
  end)
  local out = {}
  for i, o in ipairs(ops) do out[i] = o.op end
  if rand(2) == 1 then out[#out + 1] = "advance 30" end
  return out
end

local function program(rand, id)
  local G = new_program(rand)
  gen_calls(G)
  gen_loops(G)
  gen_laters(G)
  gen_coops(G)
  sched_sites(G)
  loop_sites(G)
  later_sites(G)
  task_sites(G)
  call_ops(G)
  fire_sites(G)
  fix_self_stops(G)
  local lines = { ("prog %s %d"):format(id, #G.ds) }
  for i, c in ipairs(G.calls) do
    lines[#lines + 1] = ("call %d %s %s"):format(i, num(c.delay), body_text(c.body))
  end
  for l, L in ipairs(G.loops) do
    local bodies = {}
    for n, b in ipairs(L.bodies) do bodies[n] = " " .. body_text(b) end
    lines[#lines + 1] = ("loop %d %s %s %s %s%s"):format(l, num(L.interval),
      L.now and "now" or "later", L.count and "count" or "plain", L.default, table.concat(bodies))
  end
  for k, D in ipairs(G.laters) do
    lines[#lines + 1] = ("later %d %s %s"):format(k, num(D.delay),
      D.nofn and "nofn" or body_text(D.body))
  end
  for k, K in ipairs(G.coops) do
    lines[#lines + 1] = ("coop %d %s %d %s"):format(k, num(K.delay), K.units,
      K.started and "started" or "stopped")
  end
  for t, T in ipairs(G.tasks) do
    local steps = {}
    for n, b in ipairs(T.steps) do steps[n] = body_text(b) end
    lines[#lines + 1] = ("task %d %d %s %s"):format(t, T.coop, T.co and "coiterate" or "cooperate",
      table.concat(steps, " "))
  end
  for _, op in ipairs(top_ops(G)) do lines[#lines + 1] = op end
  lines[#lines + 1] = "end"
  return table.concat(lines, "\n")
end

M.generate = td.generator(program)

-- ---- running -------------------------------------------------------------

local ASSERTIONS = {
  { "already running", "AlreadyRunning" },
  { "stop a LoopingCall", "NotRunning" },
  { "reset a LoopingCall", "NotRunningReset" },
}

-- An error as Twisted's side names it.
function M.error_name(e)
  if errors.isinstance(e, defer.AlreadyCalledError) then return "AlreadyFired" end
  if errors.isinstance(e) then
    local name = e.class.__name
    if name ~= "Error" then return name end
    -- a plain Error is one of Twisted's assertions
    for _, a in ipairs(ASSERTIONS) do
      if tostring(e.message):find(a[1], 1, true) then return a[2] end
    end
    return "Assert"
  end
  return tostring(e):match("E%d+") or tostring(e)  -- also "unscheduled", "uncreated"
end

local function split(s, sep)
  local out = {}
  for part in s:gmatch("[^" .. sep .. "]+") do out[#out + 1] = part end
  return out
end

-- "a:1,b:2:x,ret:3" -> { acts = { {"a","1"}, ... }, term = {"ret","3"} }
local TERMINALS = { ret = true, raise = true, fail = true, d = true, done = true }
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

local function run_program(pid, nd)
  local R = { out = {}, clock = task.Clock(), ds = {}, calls = {}, dcs = {}, loops = {}, lcs = {},
              laters = {}, dls = {}, coops = {}, tasks = {}, tks = {}, its = {} }
  local clock = R.clock
  for k = 1, nd do R.ds[k] = defer.Deferred() end
  local function log(s) R.out[#R.out + 1] = s end
  local function now() return num(clock:seconds()) end

  local function rep(v)
    if v == nil then return "nil" end
    local t = type(v)
    if t == "number" or t == "boolean" or t == "string" then return tostring(v) end
    if failure.isFailure(v) then
      if v:check(defer.CancelledError) then return "F(Cancelled)" end
      return ("F(%s)"):format(M.error_name(v.value))
    end
    for k, d in ipairs(R.ds) do
      if d == v then return "D" .. k end
    end
    for l, lc in pairs(R.lcs) do
      if lc == v then return "lc" .. l end
    end
    for _, it in pairs(R.its) do
      if it == v then return "it" end
    end
    return "?" .. t
  end

  local function watch(what)
    return function(v)
      log(("%s -> %s"):format(what, rep(v)))
      return nil
    end
  end

  local actions = {}
  -- a body's actions, then its terminal's value (and true for "done")
  local run_body, act = td.body_runner(actions, log, M.error_name, R.ds)

  local function run_call(i)
    log(("c%d @%s"):format(i, now()))
    run_body(R.calls[i].body)
  end

  local function make_loop(l, w)
    local L = { interval = tonumber(w[3]), now = w[4] == "now", count = w[5] == "count",
                default = w[6], bodies = {}, calls = 0, starts = 0 }
    for n = 7, #w do L.bodies[n - 6] = parse_body(w[n]) end
    local function f(count)
      L.calls = L.calls + 1
      local n = L.calls
      log(("l%d#%d @%s%s"):format(l, n, now(), L.count and (" count=%d"):format(count) or ""))
      local b = L.bodies[n]
      if b then return (run_body(b)) end
      if L.default == "stop" then act({ "stop", tostring(l), text = "stop:" .. l }) end
      return nil
    end
    local lc = L.count and task.LoopingCall.withCount(f) or task.LoopingCall(f)
    lc.clock = clock
    R.loops[l], R.lcs[l] = L, lc
  end

  local function make_iterator(t)
    local T, n = R.tasks[t], 0
    return function()
      n = n + 1
      local b = T.steps[n]
      if not b then return nil end
      log(("t%d#%d @%s"):format(t, n, now()))
      local v, done = run_body(b)
      if done then return nil end
      if v == nil then return true end
      return v
    end
  end

  local function dc_of(i)
    local dc = R.dcs[i]
    if not dc then error("unscheduled", 0) end
    return dc
  end

  local function need(v, what)
    if v == nil then error(what, 0) end
    return v
  end

  actions.sched = function(a)
    local i = tonumber(a[2])
    R.dcs[i] = clock:callLater(R.calls[i].delay, run_call, i)
  end
  actions.cancel = function(a) dc_of(tonumber(a[2])):cancel() end
  actions.reset = function(a) dc_of(tonumber(a[2])):reset(tonumber(a[3])) end
  actions.delay = function(a) dc_of(tonumber(a[2])):delay(tonumber(a[3])) end
  actions.adv = function(a) clock:advance(tonumber(a[2])) end
  actions.fire = function(a)
    local k = tonumber(a[2])
    if a[3] == "ok" then R.ds[k]:callback(1000 + k) else R.ds[k]:errback("E" .. (1000 + k)) end
  end
  actions.start = function(a)
    local l = tonumber(a[2])
    local L = R.loops[l]
    local d = R.lcs[l]:start(L.interval, L.now)
    L.starts = L.starts + 1
    d:addBoth(watch(("l%d start#%d"):format(l, L.starts)))
  end
  actions.stop = function(a) R.lcs[tonumber(a[2])]:stop() end
  actions.resetl = function(a) R.lcs[tonumber(a[2])]:reset() end
  actions.defer = function(a)
    local k = tonumber(a[2])
    local D = R.laters[k]
    if D.nofn then
      R.dls[k] = task.deferLater(clock, D.delay)
    else
      R.dls[k] = task.deferLater(clock, D.delay, function()
        log(("dl%d @%s"):format(k, now()))
        return (run_body(D.body))
      end)
    end
    R.dls[k]:addBoth(watch("dl" .. k))
  end
  actions.canceld = function(a) need(R.dls[tonumber(a[2])], "uncreated"):cancel() end
  actions.cooperate = function(a)
    local t = tonumber(a[2])
    local T = R.tasks[t]
    local it = make_iterator(t)
    R.its[t] = it
    local coop = R.coops[T.coop]
    if T.co then
      coop:coiterate(it):addBoth(watch(("t%d done"):format(t)))
    else
      R.tks[t] = coop:cooperate(it)
      R.tks[t]:whenDone():addBoth(watch(("t%d done"):format(t)))
    end
  end
  actions.pause = function(a) need(R.tks[tonumber(a[2])], "uncreated"):pause() end
  actions.resume = function(a) need(R.tks[tonumber(a[2])], "uncreated"):resume() end
  actions.stopt = function(a) need(R.tks[tonumber(a[2])], "uncreated"):stop() end
  actions.when = function(a)
    local t = tonumber(a[2])
    need(R.tks[t], "uncreated"):whenDone():addBoth(watch(("t%d when"):format(t)))
  end
  actions.cstop = function(a) R.coops[tonumber(a[2])]:stop() end
  actions.cstart = function(a) R.coops[tonumber(a[2])]:start() end

  local function make_coop(w)
    local delay, units = tonumber(w[3]), tonumber(w[4])
    return task.Cooperator({
      scheduler = function(f) return clock:callLater(delay, f) end,
      terminationPredicateFactory = function()
        local n = 0
        return function()
          n = n + 1
          return n >= units
        end
      end,
      started = w[5] == "started",
    })
  end

  local function advance(steps, text)
    local ok, e = pcall(function()
      if #steps == 1 then clock:advance(steps[1]) else clock:pump(steps) end
    end)
    if not ok then log(("%s -> %s"):format(text, M.error_name(e))) end
  end

  local P = {}
  function P.op(w, line)
    local kind = w[1]
    if kind == "call" then
      R.calls[tonumber(w[2])] = { delay = tonumber(w[3]), body = parse_body(w[4]) }
    elseif kind == "loop" then
      make_loop(tonumber(w[2]), w)
    elseif kind == "later" then
      local nofn = w[4] == "nofn"
      R.laters[tonumber(w[2])] = { delay = tonumber(w[3]), nofn = nofn,
                                   body = not nofn and parse_body(w[4]) or nil }
    elseif kind == "coop" then
      R.coops[tonumber(w[2])] = make_coop(w)
    elseif kind == "task" then
      local T = { coop = tonumber(w[3]), co = w[4] == "coiterate", steps = {} }
      for n = 5, #w do T.steps[n - 4] = parse_body(w[n]) end
      R.tasks[tonumber(w[2])] = T
    elseif kind == "do" then
      local a = split(w[2], ":")
      a.text = w[2]
      act(a)
    elseif kind == "advance" then
      advance({ tonumber(w[2]) }, line)
    elseif kind == "pump" then
      local steps = {}
      for i, s in ipairs(split(w[2], ",")) do steps[i] = tonumber(s) end
      advance(steps, line)
    else
      error("unknown line " .. line)
    end
  end

  local function opt_time(dc) return dc and num(dc:getTime()) or "-" end

  local function state_lines()
    for i in ipairs(R.calls) do
      local dc = R.dcs[i]
      if dc then
        log(("state c%d called=%s cancelled=%s active=%s time=%s"):format(i, tostring(dc.called),
          tostring(dc.cancelled), tostring(dc:active()), num(dc:getTime())))
      else
        log(("state c%d -"):format(i))
      end
    end
    for l, lc in ipairs(R.lcs) do
      log(("state l%d running=%s call=%s"):format(l, tostring(lc.running), opt_time(lc.call)))
    end
    local function dstate(name, d)
      local s = rawget(d, "_dbg")
      log(("state %s called=%s result=%s unh=%s"):format(name, tostring(d.called),
        d.called and rep(d.result) or "-", tostring(s and s.failure ~= nil or false)))
    end
    for k, d in ipairs(R.ds) do dstate("d" .. k, d) end
    for k in ipairs(R.laters) do
      if R.dls[k] then dstate("dl" .. k, R.dls[k]) end
    end
    for t in ipairs(R.tasks) do
      local tk = R.tks[t]
      if tk then
        local st = tk._completionState
        log(("state t%d paused=%d done=%s"):format(t, tk._pauseCount, st and st.__name or "-"))
      end
    end
    for k, coop in ipairs(R.coops) do
      log(("state k%d running=%s tasks=%d call=%s"):format(k, tostring(coop.running),
        #coop._tasks, opt_time(coop._delayedCall)))
    end
  end

  local function name_of(dc)
    for i, c in pairs(R.dcs) do
      if c == dc then return "c" .. i end
    end
    for l, lc in pairs(R.lcs) do
      if lc.call == dc then return "l" .. l end
    end
    for k, coop in pairs(R.coops) do
      if coop._delayedCall == dc then return "k" .. k end
    end
    return "?"
  end

  local function pending_line()
    local list = {}
    for i, dc in ipairs(clock:getDelayedCalls()) do list[i] = { dc, i } end
    table.sort(list, function(x, y)
      local tx, ty = x[1]:getTime(), y[1]:getTime()
      if tx ~= ty then return tx < ty end
      return x[2] < y[2]
    end)
    local names = {}
    for i, e in ipairs(list) do names[i] = name_of(e[1]) .. "@" .. num(e[1]:getTime()) end
    log("pending" .. (#names > 0 and " " .. table.concat(names, " ") or ""))
  end

  function P.finish()
    state_lines()
    pending_line()
    -- consume what failed, so nothing is reported later
    local all = {}
    for _, d in ipairs(R.ds) do all[#all + 1] = d end
    for _, d in pairs(R.dls) do all[#all + 1] = d end
    td.consume_failures(all)
    return "== " .. pid .. "\n" .. table.concat(R.out, "\n")
  end
  return P
end

-- Run every program of text; returns {id = trace, ...} and the ids in order.
function M.run(text)
  return td.run(text, function(w) return run_program(w[2], tonumber(w[3])) end,
    function(line) return split(line, " ") end)
end

return M
