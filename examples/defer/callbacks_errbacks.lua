-- addCallbacks and addBoth (seed: "Analyze the core features of Python's
-- Twisted framework", section 4, twisted Deferred):
--     d = Deferred()
--     d.addCallbacks(your_ok_callback, your_err_callback)
--     d.addBoth(your_common_callback)
--     d.callback(res)  # your_ok_callback(res) -> your_common_callback(res)
--     d.errback(err)   # your_err_callback(err) -> your_common_callback(err)
-- and "only one request can be returned": firing a Deferred twice raises.
-- Both paths run here, one Deferred each, then a second callback is tried.
local defer = require "braid.defer"
local errors = require "braid.error"
local failure = require "braid.failure"

local function your_ok_callback(res)
  print("your_ok_callback: " .. tostring(res))
  return res
end

local function your_err_callback(err)
  print("your_err_callback: " .. err:getErrorMessage())
  return err -- a Failure returned goes on down the errback chain
end

local function your_common_callback(res)
  if failure.isFailure(res) then
    print("your_common_callback: failed with " .. tostring(res.value))
  else
    print("your_common_callback: succeeded with " .. tostring(res))
  end
  -- the common step closes the chain: returning nil handles the error
end

local function make()
  local d = defer.Deferred()
  d:addCallbacks(your_ok_callback, your_err_callback)
  d:addBoth(your_common_callback)
  return d
end

print("-- d:callback(42)")
local ok_d = make()
ok_d:callback(42)

print("-- d:errback(ValueError)")
local err_d = make()
err_d:errback(errors.ValueError("no result"))

print("-- d:callback(43) again")
local ok, e = pcall(ok_d.callback, ok_d, 43)
print(("second callback: ok=%s, error=%s"):format(tostring(ok), tostring(e)))
print("AlreadyCalledError: " .. tostring(defer.AlreadyCalledError:isinstance(e)))
