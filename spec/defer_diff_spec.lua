-- spec/defer_diff_spec.lua: braid.defer against Twisted's own Deferred, on
-- random programs. spec/helpers/defer_diff.lua makes the programs (Deferreds
-- with and without cancellers; add*, callback/errback, pause/unpause,
-- chainDeferred, cancel; callbacks that return values, Failures or other
-- Deferreds, raise, fire, cancel or pause other Deferreds, or add callbacks
-- to them; and inlineCallbacks functions that await those, each other,
-- succeed and fail, fire Deferreds, raise and return, some cancelled; and
-- DeferredLists and gatherResults over those, with every option, watched
-- and cancelled) and runs them here; spec/peers/defer_diff.py runs the same
-- programs under Debian's /usr/bin/python3 with Twisted. Every trace (what
-- each callback got, what each call raised, each Deferred's end state and
-- whether it holds a Failure to report as unhandled) must be the same.
-- scripts/test runs this file with both chain runners (C, and
-- BRAID_DEFER_LUA=1).
local defer = require "braid.defer"
local dd = require "helpers.defer_diff"
local td = require "helpers.twisted_diff"

local PROGRAMS = 1500

local function braid_traces(text)
  return td.braid(dd.run, text)
end

-- Every trace of text's programs under braid, in one string.
local function all_traces(text)
  local all = {}
  for _, t in pairs((braid_traces(text))) do all[#all + 1] = t end
  return table.concat(all, "\n")
end

-- The same programs under braid and under Twisted: every trace the same.
local function same_traces(text)
  td.check(dd.run, "defer_diff.py", text, PROGRAMS, defer.implementation())
end

describe("braid.defer against Twisted's Deferred", function()
  it("gives the same trace for " .. PROGRAMS .. " random programs", function()
    same_traces(dd.generate(20261123, PROGRAMS))
  end)

  it("gives the same trace for " .. PROGRAMS .. " random inlineCallbacks programs", function()
    same_traces(dd.generate_ic(20261124, PROGRAMS))
  end)

  it("gives the same trace for " .. PROGRAMS .. " random DeferredList programs", function()
    same_traces(dd.generate_dl(20261125, PROGRAMS))
  end)

  it("runs programs that exercise every operation and behaviour", function()
    -- the generator's coverage: each op and callback behaviour appears
    local text = dd.generate(20261123, PROGRAMS)
    for _, word in ipairs({ "canceller %d noop", "canceller %d fire", "canceller %d errfire",
                            "add %d cb ", "add %d eb ", "add %d both ", "add %d cbs ",
                            "fire %d ok", "fire %d err", "pause %d", "unpause %d", "chain %d %d",
                            "cancel %d", ":ret", ":pass", ":raise", ":failret", ":d:%d", ":succ",
                            ":fail", ":fire:%d", ":cancel:%d", ":pause:%d", ":add:%d" }) do
      assert.truthy(text:find(word), word)  -- Lua patterns: %d is a digit
    end
    local all = all_traces(text)
    for _, seen in ipairs({ "AlreadyCalled", "F%(Cancelled%)", "F%(AlreadyCalled%)", "canceller d",
                            "unpause d%d skipped", "paused=1", "result=D%d", "k5%d%d%(" }) do
      assert.truthy(all:find(seen), seen)
    end
  end)

  it("runs inlineCallbacks programs that exercise every step and operation", function()
    local text = dd.generate_ic(20261124, PROGRAMS)
    for _, word in ipairs({ "\nco %d await:d%d", " await:r%d", " await:succ", " await:fail",
                            " fire:%d", " raise", " ret", "\nstart %d", "\nwatch %d",
                            "\ncancelr %d" }) do
      assert.truthy(text:find(word), word)
    end
    local all = all_traces(text)
    for _, seen in ipairs({ "c%d got %d", "c%d caught E1%d%d", "c%d caught Cancelled",
                            "r%d %-> done", "r%d %-> %d0\n", "r%d %-> F%(E1%d%d%)",
                            "c%d fire d%d %-> ok", "c%d fire d%d %-> AlreadyCalled",
                            "cancelled r%d", "state r%d called=true" }) do
      assert.truthy(all:find(seen), seen)
    end
  end)

  it("runs DeferredList programs that exercise every kind, option and outcome", function()
    local text = dd.generate_dl(20261125, PROGRAMS)
    for _, flags in ipairs({ "-", "c", "e", "x", "ce", "cx", "ex", "cex" }) do
      assert.truthy(text:find("\nlist %d dl " .. flags:gsub("%-", "%%-") .. " %d"), flags)
    end
    for _, word in ipairs({ "\nlist %d gather x %d", "\nlist %d gather %- %d",
                            "\nwatchl %d", "\ncancell %d" }) do
      assert.truthy(text:find(word), word)
    end
    local all = all_traces(text)
    for _, seen in ipairs({ "l%d %-> %[%(true,%d+%)", "l%d %-> %[%(false,F%(E%d+%)%)",
                            "l%d %-> %(%d+,%d%)", "l%d %-> %[%d+", "F%(FirstError@%d:F%(",
                            "FirstError@%d:F%(Cancelled%)", "cancelled l%d", "state l%d called=false" }) do
      assert.truthy(all:find(seen), seen)
    end
  end)

  it("reads Twisted's output back as it prints it", function()
    local t = td.split("== 1.1\nk1(5)\nstate d1 called=true paused=0 result=1\n== 1.2\nx\n")
    assert.same({ ["1.1"] = "== 1.1\nk1(5)\nstate d1 called=true paused=0 result=1",
                  ["1.2"] = "== 1.2\nx" }, t)
  end)
end)
