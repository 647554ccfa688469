-- spec/helpers/twisted_diff.lua: what the differential specs against Twisted
-- share (spec/defer_diff_spec.lua, spec/receivers_diff_spec.lua,
-- spec/task_diff_spec.lua). Each makes random programs as text, one
-- "prog ID ..." line, operations, "end"; runs them on braid in-process and
-- on Twisted with its own spec/peers/*_diff.py under Debian's
-- /usr/bin/python3; and requires the same trace ("== ID", then one line per
-- event) for every program.
local tmp = require "helpers.tmp"

local M = {}

M.PYTHON = "/usr/bin/python3"

--- A weighted choice: list of {weight, value}; rand(n) gives 1..n.
function M.pick(rand, list)
  local total = 0
  for _, e in ipairs(list) do total = total + e[1] end
  local r = rand(total)
  for _, e in ipairs(list) do
    r = r - e[1]
    if r <= 0 then return e[2] end
  end
end

--- generate(seed, n) for make(rand, id) -> one program's text: a small LCG,
-- so that every Lua makes the same programs from a seed.
function M.generator(make)
  return function(seed, n)
    local state = seed
    local function rand(m)
      state = (state * 1103515245 + 12345) % 2147483648
      return 1 + (state >> 8) % m
    end
    local out = {}
    for p = 1, n do out[p] = make(rand, ("%d.%d"):format(seed, p)) end
    return table.concat(out, "\n") .. "\n"
  end
end

local function words(line)
  local w = {}
  for word in line:gmatch("%S+") do w[#w + 1] = word end
  return w
end

--- Run every program of text on braid: start(header words) makes a program
-- P, P.op(words, line) runs each of its lines, P.finish() returns its trace.
-- split(line) cuts a line into words (default: at runs of spaces). Returns
-- {id = trace} and the ids in order.
function M.run(text, start, split)
  split = split or words
  local traces, order, prog = {}, {}, nil
  for line in text:gmatch("[^\n]+") do
    local w = split(line)
    if w[1] == "prog" then
      prog = start(w)
      order[#order + 1] = w[2]
    elseif w[1] == "end" then
      traces[order[#order]] = prog.finish()
      prog = nil
    elseif w[1] then
      prog.op(w, line)
    end
  end
  return traces, order
end

local cache = setmetatable({}, { __mode = "k" })

--- run(text) with braid.log's err silenced (the unhandled failures the
-- programs leave), then those failures collected and dropped; cached per
-- run function and text.
function M.braid(run, text)
  local c = cache[run] or {}
  cache[run] = c
  if c[text] then return c[text][1], c[text][2] end
  local saved = package.loaded["braid.log"]
  local quiet = { info = function() end }
  package.loaded["braid.log"] = {
    err = function() end, msg = function() end,
    callWithContext = function(_, f, ...) return f(...) end,
    Logger = function() return quiet end,
  }
  local ok, traces, order = pcall(run, text)
  collectgarbage()
  collectgarbage()
  require("braid.defer").pendingUnhandled(true)
  package.loaded["braid.log"] = saved
  assert(ok, traces)
  c[text] = { traces, order }
  return traces, order
end

--- Give every failed Deferred of list an errback, so that none is reported
-- as unhandled later.
function M.consume_failures(list)
  local isFailure = require("braid.failure").isFailure
  for _, d in ipairs(list) do
    if d.called and isFailure(d.result) then d:addErrback(function() end) end
  end
end

--- Give a program generator G (fields rand, made = {}, bodies, top) the
-- placement of actions used by the task and sync generators:
--   G.slot(act): where a top-level action "name:id..." goes, a slot in
--     [0, 1); what makes a thing (makes[name], the thing's prefix) comes in
--     the first 70%, what acts on it (acts_on[name]) after it when it is
--     made at top level too;
--   G.place(act, top_p, ok): put act in a random body accepted by ok(body),
--     or at top level (with probability top_p in 1/8ths, or when no body is
--     accepted).
function M.add_placement(G, makes, acts_on)
  local rand = G.rand
  function G.slot(act)
    local name, id = act:match("^(%a+):(%w+)")
    local key = (makes[name] or acts_on[name] or "") .. id
    local r = rand(1000) / 1000
    if makes[name] and not G.made[key] then
      G.made[key] = 0.7 * r
      return G.made[key]
    end
    local base = acts_on[name] and G.made[key] or 0
    return base + (1 - base) * r
  end
  function G.place(act, top_p, ok)
    local choices = {}
    for _, b in ipairs(G.bodies) do
      if ok(b) then choices[#choices + 1] = b end
    end
    if #choices == 0 or rand(8) <= top_p then
      G.top[#G.top + 1] = { act = act, slot = G.slot(act) }
      return
    end
    local b = choices[rand(#choices)]
    table.insert(b.acts, rand(#b.acts + 1), act)
  end
  return G
end

--- The runner of action bodies used by the task and sync interpreters:
-- returns run_body(b) and act(a). act runs the action a (a[1] names it in
-- actions; an error is logged as "<a.text> -> <error_name(e)>"); run_body
-- acts each action of b.acts, then b.term: ret:N returns N, raise:N raises
-- EN, fail:N returns a Failure of EN, d:N returns ds[N]; any other terminal
-- returns nil, true.
function M.body_runner(actions, log, error_name, ds)
  local Failure = require("braid.failure").Failure
  local function act(a)
    local ok, e = pcall(actions[a[1]] or error("unknown action " .. a[1]), a)
    if not ok then log(("%s -> %s"):format(a.text, error_name(e))) end
  end
  local function run_body(b)
    for _, a in ipairs(b.acts) do act(a) end
    local term = b.term
    if not term then return nil end
    local what, arg = term[1], tonumber(term[2])
    if what == "ret" then return arg
    elseif what == "raise" then error("E" .. arg, 0)
    elseif what == "fail" then return Failure("E" .. arg)
    elseif what == "d" then return ds[arg] end
    return nil, true
  end
  return run_body, act
end

--- Twisted's output ("== id" blocks) as {id = trace}.
function M.split(output)
  local traces, id, buf = {}, nil, nil
  local function flush()
    if id then traces[id] = "== " .. id .. (#buf > 0 and "\n" .. table.concat(buf, "\n") or "\n") end
  end
  for line in (output .. "\n"):gmatch("([^\n]*)\n") do
    local new = line:match("^== (%S+)$")
    if new then
      flush()
      id, buf = new, {}
    elseif id and line ~= "" then
      buf[#buf + 1] = line
    end
  end
  flush()
  return traces
end

--- One program's text, for a failure message.
function M.program_text(text, id)
  local pat = "prog " .. id:gsub("%.", "%%.") .. " "
  local s = text:find(pat, 1)
  if not s then return "?" end
  local e = text:find("\nend", s, true)
  return text:sub(s, e and e + 3 or -1)
end

--- Run the programs of text with Twisted (spec/peers/<script>); their
-- traces as {id = trace}. Python's stderr (Twisted's logged errors) is
-- dropped.
function M.twisted(script, text)
  local path = tmp.file(text)
  local p = assert(io.popen(("PYTHONDONTWRITEBYTECODE=1 %s spec/peers/%s %s 2>/dev/null")
    :format(M.PYTHON, script, path)))
  local out = p:read("a")
  local ok, how, code = p:close()
  os.remove(path)
  assert(ok, ("%s failed: %s %s"):format(script, tostring(how), tostring(code)))
  return M.split(out)
end

--- Raise, naming the first program whose traces differ and showing both,
-- unless every program in order has the same trace in mine and theirs.
function M.assert_same(text, order, mine, theirs, label)
  local bad = {}
  for _, id in ipairs(order) do
    if mine[id] ~= theirs[id] then bad[#bad + 1] = id end
  end
  if #bad == 0 then return end
  local id = bad[1]
  error(("%d of %d programs differ; the first:\n%s\n-- braid (%s):\n%s\n-- Twisted:\n%s")
    :format(#bad, #order, M.program_text(text, id), label, mine[id], tostring(theirs[id])), 0)
end

--- The whole check: n programs of text, run by run(text) on braid (M.braid)
-- and by spec/peers/<script> on Twisted, each with the same trace.
function M.check(run, script, text, n, label)
  local mine, order = M.braid(run, text)
  if #order ~= n then error(("%d programs ran, not %d"):format(#order, n), 0) end
  M.assert_same(text, order, mine, M.twisted(script, text), label or "braid")
end

return M
