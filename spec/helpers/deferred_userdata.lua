-- spec/helpers/deferred_userdata.lua: a userdata given the Deferred class
-- (debug.setmetatable), which the chain runners must refuse to read as a
-- table. Call inside a spec with busted's finally (not visible here): its
-- own metatable is put back, and the file closed, when the spec ends.
return function(Deferred, finally)
  local ud = io.tmpfile()
  local mt = debug.getmetatable(ud)
  finally(function()
    debug.setmetatable(ud, mt)
    ud:close()
  end)
  debug.setmetatable(ud, Deferred)
  return ud
end
