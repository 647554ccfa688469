--- braid: every module as a field, loaded on first use.
-- `local braid = require "braid"; braid.reactor.callLater(1, f)`
local M = {}
return setmetatable(M, {
  __index = function(t, k)
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then return nil end
    local ok, mod = pcall(require, "braid." .. k)
    if not ok then
      if tostring(mod):find("module 'braid." .. k .. "' not found", 1, true) then return nil end
      error(mod, 2)
    end
    rawset(t, k, mod)
    return mod
  end,
})
