-- The slides' blocking program made asynchronous (seed: the "Twisted"
-- lecture slides, TWISTED DEFERREDS):
--     def func(x):
--         print(x)
--         d = defer.Deferred()
--         reactor.callLater(30, d.callback, "30 seconds have passed!")
--         return d
--     d = func("Hello!")
--     d.addCallback(print)
--     reactor.callLater(10, print, "10 seconds have passed!")
-- Unlike examples/reactor/blocking_sleep.lua, func returns a Deferred at
-- once instead of sleeping, so the 10 second call runs on time.
-- The reactor runs on afterwards, as in the original: press Ctrl-C.
--   braid examples/defer/callback_later.lua [wait] [later]   (default 30 10)
local reactor = require "braid.reactor"
local defer = require "braid.defer"

local wait = tonumber(arg[1]) or 30
local later = tonumber(arg[2]) or 10

local function func(x)
  print(x)
  local d = defer.Deferred()
  -- d.callback with d as its first argument is d:callback(...)
  reactor.callLater(wait, d.callback, d, ("%g seconds have passed!"):format(wait))
  return d
end

local d = func("Hello!")
d:addCallback(print)
reactor.callLater(later, print, ("%g seconds have passed!"):format(later))
reactor.run()
