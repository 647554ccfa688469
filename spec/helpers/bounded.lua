-- spec helper: pcall(f, ...) that fails instead of looping for ever inside
-- braid.defer. After 10^7 instructions a hook raises at the next
-- instruction of lua/braid/defer.lua (only there: the caller's own code
-- goes on, takes the hook off and reports), so a regression that loops
-- fails its spec rather than hanging the suite.
local sethook, getinfo = debug.sethook, debug.getinfo

local function stop_in_defer()
  local info = getinfo(2, "S")
  if info and info.source:find("braid/defer%.lua$") then
    error("still running after 10^7 instructions")
  end
end

return function(f, ...)
  sethook(function() sethook(stop_in_defer, "", 1) end, "", 10000000)
  local r = table.pack(pcall(f, ...))
  sethook()
  return table.unpack(r, 1, r.n)
end
