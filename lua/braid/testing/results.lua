--- braid.testing.results: read a Deferred's state without a reactor, as
-- trial's successResultOf / failureResultOf / assertNoResult.
-- test-case-name: spec/testing_spec.lua
--
-- Re-exported by braid.testing. Assertion failures are raised as strings at
-- level 2, so busted shows the spec's file and line and Twisted's wording.
local class = require "braid.class"
local errors = require "braid.error"
local failure = require "braid.failure"
local defer = require "braid.defer"

local M = {}

local isFailure, isDeferred = failure.isFailure, defer.isDeferred
local type, tostring, select, error = type, tostring, select, error

local function check_deferred(fname, d)
  if not isDeferred(d) then
    error(errors.TypeError(("bad argument #1 to '%s' (Deferred expected, got %s)")
      :format(fname, class.nameof(d))), 3)
  end
end

-- raise unless every argument from the `first`th of fname is a class
-- (braid.testing.async's flushLoggedErrors uses it too)
local function check_classes(fname, first, ...)
  for i = 1, select("#", ...) do
    local cls = select(i, ...)
    if not class.isclass(cls) then
      error(errors.TypeError(("bad argument #%d to '%s' (error class expected, got %s)")
        :format(first + i - 1, fname, class.nameof(cls))), 3)
    end
  end
end

-- a result as the messages show it: a string quoted, a Failure briefly
-- (its traceback is shown apart, or not at all), else tostring
local function show(r)
  if type(r) == "string" then return "'" .. r .. "'" end
  if isFailure(r) then return "<Failure " .. r:brief() .. ">" end
  return tostring(r)
end

-- Take d's current result, as trial does with addBoth(list.append): when
-- there is one, d's result becomes nil (a Failure is handled).
local function take(d)
  local got, value = false, nil
  d:addBoth(function(r)
    got, value = true, r
    return nil
  end)
  return got, value
end

--- The success result of `d`; raises when `d` has no result yet or failed.
-- Afterwards `d`'s result is nil (as in trial).
-- @param d a Deferred
function M.successResultOf(d)
  check_deferred("successResultOf", d)
  local got, r = take(d)
  local desc = tostring(d)  -- as trial, once the result is taken
  if not got then
    error(("Success result expected on %s, found no result instead"):format(desc), 2)
  end
  if isFailure(r) then
    error(("Success result expected on %s, found failure result instead:\n%s")
      :format(desc, r:getTraceback()), 2)
  end
  return r
end

local function class_names(...)
  local names = {}
  for i = 1, select("#", ...) do names[i] = class.nameof(select(i, ...)) end
  return table.concat(names, " or ")
end

--- The failure result (a Failure) of `d`; raises when `d` has no result
-- yet, succeeded, or failed with none of the classes `cls...` (when given).
-- Afterwards `d`'s result is nil, so the failure counts as handled.
-- @param d a Deferred
-- @param ... optional error classes
function M.failureResultOf(d, ...)
  check_deferred("failureResultOf", d)
  check_classes("failureResultOf", 2, ...)
  local got, r = take(d)
  local desc = tostring(d)  -- as trial, once the result is taken
  if not got then
    error(("Failure result expected on %s, found no result instead"):format(desc), 2)
  end
  if not isFailure(r) then
    error(("Failure result expected on %s, found success result (%s) instead")
      :format(desc, show(r)), 2)
  end
  if select("#", ...) > 0 and not r:check(...) then
    error(("Failure of type (%s) expected on %s, found type %s instead: %s")
      :format(class_names(...), desc, class.nameof(r.type), r:getTraceback()), 2)
  end
  return r
end

--- Raise unless `d` has no result yet (not fired, or waiting on another
-- Deferred). When it has one, a failure result is swallowed (the raised
-- message reports it).
-- @param d a Deferred
function M.assertNoResult(d)
  check_deferred("assertNoResult", d)
  local got, r = false, nil
  d:addBoth(function(v)
    got, r = true, v
    return v
  end)
  if got then
    d:addErrback(function() return nil end)
    error(("No result expected on %s, found %s instead"):format(tostring(d), show(r)), 2)
  end
end

M._check_classes = check_classes

return M
