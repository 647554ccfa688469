-- deferred_plain.lua: a minimal plain-Lua Deferred (and a coroutine-based
-- inlineCallbacks), written for scripts/bench/deferred as the "what anyone
-- would write in an afternoon" baseline. It keeps Twisted's core semantics:
-- a callback's return value is the next result, an error (caught with pcall)
-- switches to the errbacks, a Deferred returned by a callback pauses the chain
-- until it fires. It has no extra callback arguments, cancellation or
-- debugging. Run as a script (by braid or lua5.4) it runs the benchmark.
local pcall, setmetatable, getmetatable, error = pcall, setmetatable, getmetatable, error
local resume, yield, status = coroutine.resume, coroutine.yield, coroutine.status

local Failure = {}
Failure.__index = Failure
local function to_failure(e)
  if getmetatable(e) == Failure then return e end
  return setmetatable({ value = e }, Failure)
end

local Deferred = {}
Deferred.__index = Deferred
local function new() return setmetatable({ called = false, paused = 0, _n = 0, _i = 1 }, Deferred) end

local function run(d)  -- callbacks sit at [2k-1] (callback) and [2k] (errback)
  while d._i < d._n and d.paused == 0 do
    local i = d._i
    local f = d[getmetatable(d.result) == Failure and i + 1 or i]
    d[i], d[i + 1], d._i = nil, nil, i + 2
    if f then
      local ok, r = pcall(f, d.result)
      d.result = ok and r or to_failure(r)
      if getmetatable(r) == Deferred then  -- wait for it, then go on
        d.paused = d.paused + 1
        local function resume_d(v) d.paused = d.paused - 1; d.result = v; run(d) end
        r:addCallbacks(resume_d, resume_d)
      end
    end
  end
  if d._i > d._n then d._n, d._i = 0, 1 end
end

function Deferred:addCallbacks(cb, eb)
  local n = self._n
  self[n + 1], self[n + 2], self._n = cb, eb, n + 2
  if self.called then run(self) end
  return self
end
function Deferred:addCallback(f) return self:addCallbacks(f, nil) end
function Deferred:addErrback(f) return self:addCallbacks(nil, f) end
function Deferred:addBoth(f) return self:addCallbacks(f, f) end
local function fire(d, result)
  if d.called then error("AlreadyCalledError", 3) end
  d.called, d.result = true, result
  run(d)
end
function Deferred:callback(v) fire(self, v) end
function Deferred:errback(e) fire(self, to_failure(e)) end

local function succeed(v) local d = new(); d.called, d.result = true, v; return d end

local function await(v)  -- inside inlineCallbacks
  if getmetatable(v) ~= Deferred then return v end
  local r
  if v.called and v.paused == 0 and v._n == 0 then  -- settled: take its result now
    r, v.result = v.result, nil
  else
    r = yield(v)  -- the driver resumes us with the result
  end
  if getmetatable(r) == Failure then error(r.value, 0) end
  return r
end

-- Twisted's _inlineCallbacks loop: a Deferred that has already fired is
-- continued here, without nesting; one that has not resumes us later.
local function step(co, d, ok, v)
  while true do
    if not ok then return d:errback(v) end
    if status(co) == "dead" then return d:callback(v) end
    local waiting, result = true, nil
    v:addBoth(function(r)
      if waiting then waiting, result = false, r else step(co, d, resume(co, r)) end
    end)
    if waiting then waiting = false; return end
    ok, v = resume(co, result)
  end
end
local function inlineCallbacks(f)
  return function(...)
    local d, co = new(), coroutine.create(f)
    step(co, d, resume(co, ...))
    return d
  end
end

local M = { Deferred = new, succeed = succeed, await = await, inlineCallbacks = inlineCallbacks }

-- as a script: run the benchmark cases
local dir = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
require("deferred_cases").main(M, "plain", arg)
