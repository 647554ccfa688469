-- spec/helpers/defer_diff.lua: random Deferred programs, and braid's
-- interpreter for them (spec/defer_diff_spec.lua runs the same programs
-- against Twisted with spec/peers/defer_diff.py and compares the traces).
--
-- A program is text, one operation per line:
--   prog ID K                 K Deferreds, d1 .. dK
--   canceller I KIND          dI is made with a canceller (first lines only):
--                             noop (does nothing), fire (callback "C"),
--                             errfire (errback E99)
--   add I cb|eb|both SPEC     addCallback / addErrback / addBoth on dI
--   add I cbs SPEC SPEC       addCallbacks(callback, errback)
--   fire I ok N | fire I err N  dI:callback(N) / dI:errback(EN)
--   pause I | unpause I       (unpause only if the program paused dI more
--                             often than it unpaused it; else it logs so)
--   chain I J                 dI:chainDeferred(dJ)
--   cancel I                  dI:cancel()
--   end
-- A callback SPEC is K:WHAT[:J]: callback number K logs "kK(<its argument>)"
-- and then, by WHAT: ret (returns K), pass (returns its argument), raise
-- (raises EK), failret (returns a Failure of EK), d:J (returns dJ), succ
-- (returns succeed(K)), fail (returns fail(EK)), fire:J (fires dJ with K,
-- logs the outcome, passes its argument), cancel:J, pause:J, add:J (adds
-- callback K+500, a pass, to dJ; J may be its own Deferred).
-- Programs of the second kind (M.generate_ic) add M inlineCallbacks
-- functions c1 .. cM, whose Deferreds are r1 .. rM:
--   prog ID K M
--   co I STEP ...             cI's body: await:dJ, await:rJ (J < I),
--                             await:succ, await:fail, fire:J (fires dJ with
--                             300+I, logs the outcome), raise, ret; each await
--                             logs "cI got V" or "cI caught E" and goes on;
--                             raise raises E(100+I); ret returns 10*I; after
--                             the last step it returns "done"
--   start I                   calls cI (starts are in order: r1 .. rI-1 exist)
--   watch I                   rI:addBoth(log "rI -> V")
--   cancelr I                 rI:cancel()
-- Programs of the third kind (M.generate_dl) add L lists l1 .. lL:
--   prog ID K 0 L
--   list I dl|gather FLAGS J ...  lI = DeferredList({dJ, ...}, opts) with
--                             FLAGS from c (fireOnOneCallback), e
--                             (fireOnOneErrback), x (consumeErrors), or "-";
--                             or gatherResults({dJ, ...}, consumeErrors: x)
--   watchl I                  lI:addBoth(log "lI -> V")
--   cancell I                 lI:cancel()
-- List results print as [(true,V),(false,V)], (V,INDEX) for
-- fireOnOneCallback, [V,V] for gatherResults, F(FirstError@INDEX:V).
-- Values print as integers, strings, nil, DJ for a Deferred, F(EK) for a
-- Failure of EK, F(Cancelled), F(AlreadyCalled). At the end each Deferred
-- prints "state dI called=.. paused=.. result=.. unh=.." (result "-" if not called;
-- unh: whether the Deferred holds a Failure to report as unhandled).
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"
local td = require "helpers.twisted_diff"

local pick = td.pick
local M = {}

-- ---- generating --------------------------------------------------------

local BEHAVIOURS = {
  { 20, "ret" }, { 14, "pass" }, { 12, "raise" }, { 6, "failret" }, { 12, "d" },
  { 5, "succ" }, { 5, "fail" }, { 10, "fire" }, { 6, "cancel" }, { 5, "pause" },
  { 6, "add" },
}
local OPS = {
  { 44, "add" }, { 22, "fire" }, { 6, "pause" }, { 8, "unpause" }, { 8, "chain" },
  { 8, "cancel" },
}
local ADD_KINDS = { { 4, "cb" }, { 3, "eb" }, { 2, "both" }, { 2, "cbs" } }
local CANCELLERS = { { 11, false }, { 3, "noop" }, { 3, "fire" }, { 3, "errfire" } }

-- one program as text; rand(n) gives an integer in 1..n
local function program(rand, id)
  local k = 1 + rand(3)
  local lines = { ("prog %s %d"):format(id, k) }
  local next_cb = 0
  local function spec(owner)
    next_cb = next_cb + 1
    local what = pick(rand, BEHAVIOURS)
    if what == "d" then
      local j = rand(k - 1)
      if j >= owner then j = j + 1 end  -- never the Deferred it is added to
      return ("%d:d:%d"):format(next_cb, j)
    elseif what == "fire" or what == "cancel" or what == "pause" or what == "add" then
      return ("%d:%s:%d"):format(next_cb, what, rand(k))
    end
    return ("%d:%s"):format(next_cb, what)
  end
  for i = 1, k do
    local c = pick(rand, CANCELLERS)
    if c then lines[#lines + 1] = ("canceller %d %s"):format(i, c) end
  end
  for _ = 1, 3 + rand(12) do
    local op, i = pick(rand, OPS), rand(k)
    if op == "add" then
      local kind = pick(rand, ADD_KINDS)
      if kind == "cbs" then
        lines[#lines + 1] = ("add %d cbs %s %s"):format(i, spec(i), spec(i))
      else
        lines[#lines + 1] = ("add %d %s %s"):format(i, kind, spec(i))
      end
    elseif op == "fire" then
      lines[#lines + 1] = ("fire %d %s %d"):format(i, rand(4) == 1 and "err" or "ok", 100 + rand(99))
    elseif op == "chain" then
      local j = rand(k - 1)
      if j >= i then j = j + 1 end
      lines[#lines + 1] = ("chain %d %d"):format(i, j)
    else
      lines[#lines + 1] = ("%s %d"):format(op, i)
    end
  end
  -- most programs fire everything at the end, so the chains run
  if rand(5) > 1 then
    for i = 1, k do lines[#lines + 1] = ("fire %d ok %d"):format(i, 200 + i) end
  end
  lines[#lines + 1] = "end"
  return table.concat(lines, "\n")
end

local STEPS = { { 8, "await:d" }, { 3, "await:r" }, { 2, "await:succ" }, { 2, "await:fail" },
                { 3, "fire:" }, { 1, "raise" }, { 1, "ret" } }
-- callbacks added to pool Deferreds by the inlineCallbacks and list programs
local POOL_BEHAVIOURS = { { 20, "ret" }, { 14, "pass" }, { 12, "raise" }, { 6, "failret" },
                          { 5, "succ" }, { 5, "fail" }, { 8, "fire" }, { 4, "cancel" } }
local IC_OPS = { { 20, "add" }, { 24, "fire" }, { 8, "watch" }, { 6, "cancelr" },
                 { 5, "cancel" }, { 3, "pause" }, { 4, "unpause" } }
local DL_OPS = { { 16, "add" }, { 24, "fire" }, { 8, "watchl" }, { 6, "cancell" },
                 { 5, "cancel" }, { 3, "pause" }, { 4, "unpause" } }
local FLAGS = { "-", "-", "c", "e", "x", "ce", "cx", "ex", "cex" }

-- The frame of the inlineCallbacks and list programs: k pool Deferreds,
-- some with cancellers; `more(lines)` adds the program's own lines, then
-- 4 to 15 steps, each either `own(lines)` (when it returns true: it made
-- one of its things) or an operation of `ops` (those ops not on the pool,
-- the watch and cancel ones, go to thing rand(made())); then `finish(lines)`
-- and every pool Deferred fired.
local function frame(rand, header, k, ops, more, own, made, finish)
  local lines = { header }
  local next_cb = 0
  for i = 1, k do
    local c = pick(rand, CANCELLERS)
    if c then lines[#lines + 1] = ("canceller %d %s"):format(i, c) end
  end
  more(lines)
  for _ = 1, 4 + rand(12) do
    if not own(lines) then
      local op, i = pick(rand, ops), rand(k)
      if op == "add" then
        next_cb = next_cb + 1
        local b = pick(rand, POOL_BEHAVIOURS)
        if b == "fire" or b == "cancel" then b = b .. ":" .. rand(k) end
        lines[#lines + 1] = ("add %d %s %d:%s"):format(i, (pick(rand, ADD_KINDS):gsub("cbs", "both")),
          next_cb, b)
      elseif op == "fire" then
        lines[#lines + 1] = ("fire %d %s %d"):format(i, rand(4) == 1 and "err" or "ok", 100 + rand(99))
      elseif op == "cancel" or op == "pause" or op == "unpause" then
        lines[#lines + 1] = ("%s %d"):format(op, i)
      elseif made() > 0 then
        lines[#lines + 1] = ("%s %d"):format(op, rand(made()))
      end
    end
  end
  finish(lines)
  for i = 1, k do lines[#lines + 1] = ("fire %d ok %d"):format(i, 200 + i) end
  lines[#lines + 1] = "end"
  return table.concat(lines, "\n")
end

local function program_ic(rand, id)
  local k, m = 1 + rand(3), 1 + rand(3)
  local started = 0
  return frame(rand, ("prog %s %d %d"):format(id, k, m), k, IC_OPS,
    function(lines)
      for i = 1, m do
        local steps = {}
        for s = 1, rand(4) do
          local st = pick(rand, STEPS)
          if st == "await:r" and i == 1 then st = "await:d" end
          if st == "await:d" or st == "fire:" then st = st .. rand(k)
          elseif st == "await:r" then st = st .. rand(i - 1) end
          steps[s] = st
          if st == "raise" or st == "ret" then break end
        end
        lines[#lines + 1] = ("co %d %s"):format(i, table.concat(steps, " "))
      end
    end,
    function(lines)
      if started == m or rand(3) > 1 then return false end
      started = started + 1
      lines[#lines + 1] = ("start %d"):format(started)
      return true
    end,
    function() return started end,
    function(lines)
      for i = started + 1, m do lines[#lines + 1] = ("start %d"):format(i) end
      for i = 1, m do
        if rand(2) == 1 then lines[#lines + 1] = ("watch %d"):format(i) end
      end
    end)
end

local function program_dl(rand, id)
  local k, l = 1 + rand(3), 1 + rand(2)
  local made = 0
  return frame(rand, ("prog %s %d 0 %d"):format(id, k, l), k, DL_OPS,
    function() end,
    function(lines)
      if made == l or rand(3) > 1 then return false end
      made = made + 1
      local members = {}
      for j = 1, rand(k + 1) do members[j] = rand(k) end
      if rand(3) == 1 then
        lines[#lines + 1] = ("list %d gather %s %s"):format(made, rand(2) == 1 and "x" or "-",
          table.concat(members, " "))
      else
        lines[#lines + 1] = ("list %d dl %s %s"):format(made, FLAGS[rand(#FLAGS)],
          table.concat(members, " "))
      end
      return true
    end,
    function() return made end,
    function(lines)
      for i = made + 1, l do lines[#lines + 1] = ("list %d dl - %d"):format(i, rand(k)) end
      for i = 1, l do
        if rand(2) == 1 then lines[#lines + 1] = ("watchl %d"):format(i) end
      end
    end)
end

-- n programs from seed (a small LCG, so every Lua gives the same programs)
M.generate = td.generator(program)
M.generate_ic = td.generator(program_ic)
M.generate_dl = td.generator(program_dl)

-- ---- running -------------------------------------------------------------

-- An error as Twisted's side names it: its class, or "overflow" for Lua's
-- stack overflow (Python's RecursionError).
function M.error_name(e)
  if errors.isinstance(e) then return e.class.__name end
  if tostring(e):find("overflow", 1, true) then return "overflow" end
  return tostring(e)
end

local function run_program(pid, k, m, nl)
  local P = { ds = {}, pauses = {}, out = {}, cos = {}, rs = {}, ls = {}, lkind = {} }
  nl = nl or 0
  for i = 1, k do
    P.ds[i] = defer.Deferred()
    P.pauses[i] = 0
  end
  m = m or 0
  local function log(s) P.out[#P.out + 1] = s end

  local function rep(v)
    local t = type(v)
    if v == nil then return "nil" end
    if t == "boolean" or t == "number" or t == "string" then return tostring(v) end
    if failure.isFailure(v) then
      if v:check(defer.CancelledError) then return "F(Cancelled)" end
      if v:check(defer.AlreadyCalledError) then return "F(AlreadyCalled)" end
      local e = tostring(v.value):match("E%d+")
      return ("F(%s)"):format(e or tostring(v.type and v.type.__name or "?"))
    end
    for i, d in ipairs(P.ds) do
      if d == v then return "D" .. i end
    end
    for i = 1, m do
      if P.rs[i] == v then return "R" .. i end
    end
    for i = 1, nl do
      if P.ls[i] == v then return "L" .. i end
    end
    if defer.Deferred:isinstance(v) then return "D?" end
    return "?" .. t
  end

  local function outcome(ok, e)
    if ok then return "ok" end
    if errors.isinstance(e, defer.AlreadyCalledError) then return "AlreadyCalled" end
    return "raised " .. M.error_name(e)
  end

  local function fire(j, ok, value)
    local d = P.ds[j]
    if ok then return outcome(pcall(d.callback, d, value)) end
    return outcome(pcall(d.errback, d, "E" .. value))
  end

  local function make_fn(spec, owner)
    local k, what, arg = spec:match("^(%d+):(%a+):?(%d*)$")
    k, arg = tonumber(k), tonumber(arg)
    local fn
    fn = function(x)
      log(("k%d(%s)"):format(k, rep(x)))
      if what == "ret" then return k
      elseif what == "pass" then return x
      elseif what == "raise" then error("E" .. k, 0)
      elseif what == "failret" then return failure.Failure("E" .. k)
      elseif what == "d" then return P.ds[arg]
      elseif what == "succ" then return defer.succeed(k)
      elseif what == "fail" then return defer.fail("E" .. k)
      elseif what == "fire" then
        log(("k%d fire d%d -> %s"):format(k, arg, fire(arg, true, k)))
        return x
      elseif what == "cancel" then
        P.ds[arg]:cancel()
        log(("k%d cancelled d%d"):format(k, arg))
        return x
      elseif what == "pause" then
        P.ds[arg]:pause()
        P.pauses[arg] = P.pauses[arg] + 1
        return x
      elseif what == "add" then
        P.ds[arg]:addCallback(make_fn(("%d:pass"):format(k + 500), arg))
        return x
      end
      error("unknown behaviour " .. what)
    end
    return fn
  end

  local function canceller(kind, i)
    return function(d)
      log(("canceller d%d"):format(i))
      if kind == "fire" then d:callback("C")
      elseif kind == "errfire" then d:errback("E99") end
    end
  end

  -- an error raised at an await, as Twisted's side names it
  local function caught(e)
    if errors.isinstance(e, defer.CancelledError) then return "Cancelled" end
    return tostring(e):match("E%d+") or M.error_name(e)
  end

  local function make_co(i, steps)
    return defer.inlineCallbacks(function()
      for _, st in ipairs(steps) do
        local what, j = st:match("^([%a:]+)(%d*)$")
        j = tonumber(j)
        if what == "raise" then error("E" .. (100 + i), 0)
        elseif what == "ret" then return 10 * i
        elseif what == "fire:" then
          log(("c%d fire d%d -> %s"):format(i, j, fire(j, true, 300 + i)))
        else
          local target
          if what == "await:d" then target = P.ds[j]
          elseif what == "await:r" then target = P.rs[j]
          elseif what == "await:succ" then target = defer.succeed(i)
          else target = defer.fail("E" .. (100 + i)) end
          local ok, v = pcall(defer.await, target)
          if ok then log(("c%d got %s"):format(i, rep(v)))
          else log(("c%d caught %s"):format(i, caught(v))) end
        end
      end
      return "done"
    end)
  end

  -- a list's result: pairs, (value, index), gathered values, FirstError
  local function lrep(i, v)
    if failure.isFailure(v) and v:check(defer.FirstError) then
      return ("F(FirstError@%d:%s)"):format(v.value.index, rep(v.value.subFailure))
    end
    if type(v) ~= "table" or failure.isFailure(v) then return rep(v) end
    local items = {}
    if P.lkind[i] == "gather" then
      for j = 1, v.n do items[j] = rep(v[j]) end
      return "[" .. table.concat(items, ",") .. "]"
    end
    if type(v[2]) == "number" then return ("(%s,%d)"):format(rep(v[1]), v[2]) end
    for j, pair in ipairs(v) do items[j] = ("(%s,%s)"):format(tostring(pair[1]), rep(pair[2])) end
    return "[" .. table.concat(items, ",") .. "]"
  end

  local ops = {
    list = function(i, w)
      local members = {}
      for j = 5, #w do members[#members + 1] = P.ds[tonumber(w[j])] end
      local flags = w[4]
      P.lkind[i] = w[3]
      if w[3] == "gather" then
        P.ls[i] = defer.gatherResults(members, flags:find("x") ~= nil)
      else
        P.ls[i] = defer.DeferredList(members, { fireOnOneCallback = flags:find("c") ~= nil,
          fireOnOneErrback = flags:find("e") ~= nil, consumeErrors = flags:find("x") ~= nil })
      end
    end,
    watchl = function(i)
      P.ls[i]:addBoth(function(v)
        log(("l%d -> %s"):format(i, lrep(i, v)))
        return v
      end)
    end,
    cancell = function(i)
      P.ls[i]:cancel()
      log(("cancelled l%d"):format(i))
    end,
    co = function(i, w) P.cos[i] = make_co(i, { table.unpack(w, 3) }) end,
    start = function(i) P.rs[i] = P.cos[i]() end,
    watch = function(i)
      P.rs[i]:addBoth(function(v) log(("r%d -> %s"):format(i, rep(v))) end)
    end,
    cancelr = function(i)
      P.rs[i]:cancel()
      log(("cancelled r%d"):format(i))
    end,
    canceller = function(i, w) P.ds[i] = defer.Deferred(canceller(w[3], i)) end,
    add = function(i, w)
      local d, kind = P.ds[i], w[3]
      if kind == "cb" then d:addCallback(make_fn(w[4], i))
      elseif kind == "eb" then d:addErrback(make_fn(w[4], i))
      elseif kind == "both" then d:addBoth(make_fn(w[4], i))
      else d:addCallbacks(make_fn(w[4], i), make_fn(w[5], i)) end
    end,
    fire = function(i, w)
      log(("fire d%d %s -> %s"):format(i, w[3], fire(i, w[3] == "ok", tonumber(w[4]))))
    end,
    pause = function(i)
      P.ds[i]:pause()
      P.pauses[i] = P.pauses[i] + 1
    end,
    unpause = function(i)
      if P.pauses[i] > 0 then
        P.pauses[i] = P.pauses[i] - 1
        P.ds[i]:unpause()
      else
        log(("unpause d%d skipped"):format(i))
      end
    end,
    chain = function(i, w) P.ds[i]:chainDeferred(P.ds[tonumber(w[3])]) end,
    cancel = function(i)
      P.ds[i]:cancel()
      log(("cancelled d%d"):format(i))
    end,
  }

  function P.op(w)
    local f = ops[w[1]] or error("unknown op " .. w[1])
    local ok, e = pcall(f, tonumber(w[2]), w)
    if not ok then log(("op %s raised %s"):format(w[1], M.error_name(e))) end
  end

  function P.finish()
    local all = {}
    for i, d in ipairs(P.ds) do all[#all + 1] = { "d" .. i, d } end
    for i = 1, m do all[#all + 1] = { "r" .. i, P.rs[i] } end
    for i = 1, nl do all[#all + 1] = { "l" .. i, P.ls[i], i } end
    for _, e in ipairs(all) do
      local d = e[2]
      local r = not d.called and "-" or e[3] and lrep(e[3], d.result) or rep(d.result)
      local s = rawget(d, "_dbg")  -- the sentinel holds a Failure to report
      log(("state %s called=%s paused=%d result=%s unh=%s"):format(e[1], tostring(d.called),
        d.paused, r, tostring(s and s.failure ~= nil or false)))
    end
    local ds = {}
    for i, e in ipairs(all) do ds[i] = e[2] end
    td.consume_failures(ds)  -- so nothing is reported later
    return "== " .. pid .. "\n" .. table.concat(P.out, "\n")
  end
  return P
end

-- Run every program of text; returns {id = trace, ...} and the ids in order.
function M.run(text)
  return td.run(text, function(w)
    return run_program(w[2], tonumber(w[3]), tonumber(w[4]), tonumber(w[5]))
  end)
end

return M
