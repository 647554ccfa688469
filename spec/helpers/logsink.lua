-- spec/helpers/logsink.lua: where log specs send braid.log's output and
-- events, and how they read a log file back.
local M = {}

--- An in-memory file: `buf` has what was written, `writes` and `flushes`
-- count the calls.
function M.Sink()
  return {
    buf = "", writes = 0, flushes = 0,
    write = function(self, s) self.buf = self.buf .. s; self.writes = self.writes + 1 end,
    flush = function(self) self.flushes = self.flushes + 1 end,
  }
end

--- Observe braid.log's events: the list they are appended to, and the
-- observer (for log.removeObserver).
function M.collect()
  local events = {}
  local function obs(ev) events[#events + 1] = ev end
  require("braid.log").addObserver(obs)
  return events, obs
end

--- The contents of the file at path, or nil when it cannot be opened.
function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Isolation of braid.log for each test of a file: `before` (give it to
-- before_each) fixes the clock at `t` and puts the error stream in a Sink
-- (the returned table's `err`); `after` (to after_each) stops logging,
-- removes every observer, and puts back clock, error stream, level and
-- system.
function M.isolation(t)
  local log = require "braid.log"
  local state = {}
  function state.before()
    log.setClock(function() return t end)
    state.err = M.Sink()
    log.setErrorStream(state.err)
  end
  function state.after()
    log.stopLogging()
    for _, o in ipairs(log.getObservers()) do log.removeObserver(o) end
    log.setClock(nil)
    log.setErrorStream(io.stderr)
    log.setLevel("info")
    log.setSystem("-")
  end
  return state
end

return M
