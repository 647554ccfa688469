-- braid.reload: hot-editing Lua modules in a running process.
-- Covers runtime/reload.c; specs: spec/reload_spec.lua, spec/reload_watch_spec.lua.
--
-- A reload runs the module's chunk again and merges its result into the
-- table already in package.loaded, so every reference to that table (live
-- protocol instances through their metatables, factories, subclasses) sees
-- the new functions on its next lookup while data stays put.
local M = {}

local type, pairs, next, pcall, tostring = type, pairs, next, pcall, tostring
local getupvalue, upvaluejoin = debug.getupvalue, debug.upvaluejoin
local loaded = package.loaded
local byte, format = string.byte, string.format

M.reloading = false

-- Directories whose modules are never watched (system libraries, braid).
local SYSTEM_DIRS = {
  "/usr/share/lua", "/usr/lib/x86_64-linux-gnu/lua", "/usr/local/share/lua",
  "/usr/local/lib/lua",
}
do
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*/)reload%.lua$")
  if dir then SYSTEM_DIRS[#SYSTEM_DIRS + 1] = dir end
end

--- Poll interval of the watcher (seconds) and the debounce (a file must keep
-- the same stamp this long before it is loaded, so a half-written save is
-- not taken).
M.POLL_INTERVAL = 0.02
M.DEBOUNCE = 0.02

local records = {}   -- modname -> record
local listeners = {}

local function core_stamp(path)
  local core = loaded["braid.core"]
  if core == nil then
    local ok, c = pcall(require, "braid.core")
    core = ok and c or false
  end
  if core and core.fileStamp then return core.fileStamp(path) end
  -- without the C core: size + content (slow, but only a fallback)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a"); f:close()
  return #s .. ":" .. s
end

local function log_msg(...)
  local ok, log = pcall(require, "braid.log")
  if ok and log.msg then log.msg(...) end
end

local function log_err(v, why)
  local ok, log = pcall(require, "braid.log")
  if ok and log.err then log.err(v, why) else io.stderr:write(why, "\n") end
end

local function now()
  local r = loaded["braid.reactor"]
  if type(r) == "table" and r.seconds then return r.seconds() end
  return os.time()
end

-- FNV-1a, 32 bits: a short stable fingerprint of a version's source.
local function hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ byte(s, i)) * 16777619) & 0xffffffff
  end
  return format("%08x", h)
end

local function checkname(fname, name)
  if type(name) ~= "string" then
    local errors = require("braid.error")
    error(errors.TypeError(("reload.%s: modname must be a string, got %s")
      :format(fname, type(name))), 3)
  end
end

---------------------------------------------------------------------------
-- Snapshots of a version: its data fields and its functions' upvalues, as
-- they were when that version's chunk ran (before anything used them).

local function snap_upvalues(f, into, seen)
  if seen[f] then return end
  seen[f] = true
  local i = 1
  while true do
    local name, v = getupvalue(f, i)
    if name == nil then break end
    if into[name] == nil then into[name] = { v } end
    if type(v) == "function" then snap_upvalues(v, into, seen) end
    i = i + 1
  end
end

-- Returns a tree copy of the non-function values (cycles guarded) and fills
-- ups with the upvalues of every function reachable from t.
local function snapshot(t, ups, seen)
  if seen[t] then return seen[t] end
  local copy = {}
  seen[t] = copy
  for k, v in pairs(t) do
    local tv = type(v)
    if tv == "table" then copy[k] = snapshot(v, ups, seen)
    elseif tv == "function" then snap_upvalues(v, ups, seen)
    else copy[k] = v end
  end
  return copy
end

local function take_snapshot(value)
  local ups = {}
  local data
  if type(value) == "table" then data = snapshot(value, ups, {})
  elseif type(value) == "function" then snap_upvalues(value, ups, {})
  else data = value end
  return { data = data, ups = ups }
end

---------------------------------------------------------------------------
-- The merge

-- Join the upvalues of the new function nf to those of the old one of that
-- share their name, when the old one holds a table or has changed since the
-- previous version loaded. Function upvalues (local helpers) are not joined
-- (their new code should run): their own upvalues are joined recursively.
local function join_upvalues(nf, of, prevups, seen, modups)
  if seen[nf] then return end
  seen[nf] = true
  local olds = {}
  if of then
    local j = 1
    while true do
      local name = getupvalue(of, j)
      if name == nil then break end
      olds[name] = { of, j }
      j = j + 1
    end
  end
  local i = 1
  while true do
    local name, nv = getupvalue(nf, i)
    if name == nil then break end
    local o = olds[name] or modups[name]
    if o and name ~= "_ENV" then
      local _, ov = getupvalue(o[1], o[2])
      if type(nv) == "function" and type(ov) == "function" then
        join_upvalues(nv, ov, prevups, seen, modups)
      elseif type(nv) ~= "function" then
        local p = prevups[name]
        if type(ov) == "table" or p == nil or ov ~= p[1] then
          upvaluejoin(nf, i, o[1], o[2])
        end
      end
    end
    i = i + 1
  end
end

-- Every upvalue reachable from the live module's functions, by name (the
-- first seen wins): new functions with no predecessor join module locals
-- through it.
local function collect_upvalues(t, into, seen)
  if seen[t] then return end
  seen[t] = true
  if type(t) == "function" then
    local i = 1
    while true do
      local name, v = getupvalue(t, i)
      if name == nil then break end
      if into[name] == nil then into[name] = { t, i } end
      if type(v) == "function" then collect_upvalues(v, into, seen) end
      i = i + 1
    end
  else
    for _, v in pairs(t) do
      local tv = type(v)
      if tv == "function" or tv == "table" then collect_upvalues(v, into, seen) end
    end
  end
end

-- After a merge, upvalues of the new functions that still hold one of the
-- new chunk's merged tables (its `M`) are pointed at the live table.
local function remap_upvalues(t, map, seen)
  if seen[t] then return end
  seen[t] = true
  if type(t) == "function" then
    local i = 1
    while true do
      local name, v = getupvalue(t, i)
      if name == nil then break end
      if type(v) == "table" then
        local lv = map[v]
        if type(lv) == "table" and lv ~= v then debug.setupvalue(t, i, lv) end
      elseif type(v) == "function" then
        remap_upvalues(v, map, seen)
      end
      i = i + 1
    end
  else
    for _, v in pairs(t) do
      local tv = type(v)
      if tv == "function" or tv == "table" then remap_upvalues(v, map, seen) end
    end
  end
end

local function merge(live, new, prev, prevups, modups, seen, jseen, count)
  if seen[live] then return count end
  seen[live] = true
  seen[new] = live -- remap: the new chunk's tables stand for the live ones
  for k, v in pairs(new) do
    local lv = live[k]
    local tv = type(v)
    if tv == "function" then
      if type(lv) == "function" then
        if lv ~= v then
          join_upvalues(v, lv, prevups, jseen, modups)
          count = count + 1
        end
      else
        join_upvalues(v, nil, prevups, jseen, modups)
      end
      live[k] = v
    elseif tv == "table" and type(lv) == "table" then
      if lv ~= v then
        count = merge(lv, v, type(prev) == "table" and prev[k] or nil, prevups, modups, seen, jseen, count)
      end
    elseif lv == nil then
      live[k] = v
    elseif type(lv) ~= "table" and type(lv) ~= "function" then
      -- data: take the new value only if nobody changed the live one
      if type(prev) == "table" and lv == prev[k] then live[k] = v end
    else
      live[k] = v
    end
  end
  -- removed functions go; removed data stays (it may be live state)
  local k, lv = next(live)
  local gone
  while k ~= nil do
    if type(lv) == "function" and new[k] == nil then
      gone = gone or {}
      gone[#gone + 1] = k
    end
    k, lv = next(live, k)
  end
  if gone then for i = 1, #gone do live[gone[i]] = nil end end
  return count
end

---------------------------------------------------------------------------
-- Records

local function is_system(path)
  for i = 1, #SYSTEM_DIRS do
    local d = SYSTEM_DIRS[i]
    if path:sub(1, #d) == d then return true end
  end
  return false
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("a")
  f:close()
  if not s then return nil, rerr end
  return s
end

local function new_record(name, path, source)
  local rec = {
    name = name, path = path, stamp = core_stamp(path),
    versions = {}, snap = nil,
  }
  records[name] = rec
  if source then
    rec.versions[1] = { version = 1, time = now(), hash = hash(source),
                        replaced = 0, source = source }
  end
  return rec
end

local function find_path(name)
  return package.searchpath(name, package.path)
end

-- Record a module loaded through require: its path, source and snapshot.
local function record_loaded(name, path)
  if records[name] or is_system(path) then return end
  local rec = new_record(name, path, read_file(path))
  rec.pending_snapshot = true
end

local function ensure_snapshot(rec)
  if rec.pending_snapshot or rec.snap == nil then
    -- taken lazily at the first reload: the live table now may already have
    -- been used, but its upvalue snapshot is the best approximation left
    rec.pending_snapshot = nil
    if rec.first_snap then rec.snap = rec.first_snap
    else
      local v = loaded[rec.name]
      rec.snap = take_snapshot(v)
    end
  end
end

local searcher_installed = false
local function install_searcher()
  if searcher_installed then return end
  searcher_installed = true
  local searchers = package.searchers
  local lua_searcher = searchers[2]
  searchers[2] = function(name)
    local loader, path = lua_searcher(name)
    if type(loader) ~= "function" or type(path) ~= "string" then
      return loader, path
    end
    return function(modname, p)
      local r = loader(modname, p)
      local v = r
      if v == nil then v = loaded[modname] end
      if v == nil then v = true end
      if not records[modname] and not is_system(p) then
        record_loaded(modname, p)
        local rec = records[modname]
        if rec then rec.first_snap = take_snapshot(v) end
      end
      return r
    end, path
  end
end

local function notify(name, version)
  for i = 1, #listeners do
    local ok, err = pcall(listeners[i], name, version)
    if not ok then log_err(err, "reload listener failed") end
  end
end

-- Load `source` as the new version of rec and merge it. Returns true, or
-- nil and the error (nothing changed).
local function apply(rec, source, is_rollback)
  local name = rec.name
  local live = loaded[name]
  local chunk, cerr = load(source, "@" .. rec.path)
  if not chunk then return nil, cerr end
  local was = M.reloading
  M.reloading = true
  local ok, new = pcall(chunk, name, rec.path)
  M.reloading = was
  if not ok then return nil, tostring(new) end
  if new == nil then new = true end
  if live ~= nil and type(new) ~= type(live) then
    return nil, ("module returned a %s, previously a %s"):format(type(new), type(live))
  end
  ensure_snapshot(rec)
  local nsnap = take_snapshot(new)
  local count = 0
  local modups = {}
  if type(live) == "table" or type(live) == "function" then
    collect_upvalues(live, modups, {})
  end
  if type(live) == "table" then
    local seen = {}
    count = merge(live, new, rec.snap.data, rec.snap.ups, modups, seen, {}, 0)
    remap_upvalues(new, seen, {})
    local hook = live.__reload
    if type(hook) == "function" then
      local hok, herr = pcall(hook, live, new)
      if not hok then log_err(herr, ("__reload of %s failed"):format(name)) end
    end
  else
    if type(live) == "function" and type(new) == "function" then
      join_upvalues(new, live, rec.snap.ups, {}, modups)
      count = 1
    end
    loaded[name] = new
  end
  rec.snap = nsnap
  local v = { version = #rec.versions + 1, time = now(), hash = hash(source),
              replaced = count, source = source, rollback = is_rollback or nil }
  rec.versions[v.version] = v
  log_msg(("reloaded %s (%d functions replaced)"):format(name, count))
  notify(name, v.version)
  return true
end

local function fail(name, err)
  log_err(err, ("reload of %s failed: %s; previous code kept"):format(name, tostring(err)))
  return nil, err
end

local function get_record(name)
  local rec = records[name]
  if rec then return rec end
  local path = find_path(name)
  if not path then return nil end
  rec = new_record(name, path, read_file(path))
  rec.pending_snapshot = true
  return rec
end

---------------------------------------------------------------------------
-- Public API

--- Reload a module now.
-- @param modname a module name already in package.loaded
-- @return true, or nil and the error (the previous code is kept)
function M.reload(modname)
  checkname("reload", modname)
  if loaded[modname] == nil then
    return fail(modname, "module not loaded")
  end
  local rec = get_record(modname)
  if not rec then return fail(modname, "module file not found") end
  local stamp = core_stamp(rec.path)
  local source, err = read_file(rec.path)
  if not source then return fail(modname, err) end
  rec.stamp = stamp
  local ok, aerr = apply(rec, source)
  if not ok then return fail(modname, aerr) end
  return true
end

--- Watch a module's file (modules loaded under --watch are watched already).
-- @param modname module name
function M.watch(modname)
  checkname("watch", modname)
  local rec = get_record(modname)
  if not rec then
    local errors = require("braid.error")
    error(errors.ValueError(("reload.watch: no file found for module %q"):format(modname)), 2)
  end
  rec.watched = true
  M._startPolling()
end

--- Modules whose files changed on disk since they were last loaded.
-- @return a sorted list of module names
function M.changed()
  local out = {}
  for name, rec in pairs(records) do
    local s = core_stamp(rec.path)
    if s ~= rec.stamp then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

--- Versions of a module: {version, time, hash, replaced} each, oldest first.
function M.history(modname)
  checkname("history", modname)
  local rec = records[modname]
  local out = {}
  if rec then
    for i, v in ipairs(rec.versions) do
      out[i] = { version = v.version, time = v.time, hash = v.hash,
                 replaced = v.replaced, rollback = v.rollback }
    end
  end
  return out
end

--- Go back to the previous version of a module, merged the same way.
-- @return true, or nil and the error
function M.rollback(modname)
  checkname("rollback", modname)
  local rec = records[modname]
  local vs = rec and rec.versions
  if not vs or #vs < 2 then return nil, "no previous version of " .. modname end
  -- the version before the current one (skipping over rollbacks' copies)
  local cur = vs[#vs]
  local target
  for i = #vs - 1, 1, -1 do
    if vs[i].hash ~= cur.hash then target = vs[i]; break end
  end
  if not target then return nil, "no previous version of " .. modname end
  local ok, err = apply(rec, target.source, true)
  if not ok then return fail(modname, err) end
  return true
end

--- Call f(modname, version) after each reload.
function M.on(f)
  if type(f) ~= "function" then
    local errors = require("braid.error")
    error(errors.TypeError("reload.on: f must be a function, got " .. type(f)), 2)
  end
  listeners[#listeners + 1] = f
end

-- Watcher: poll the stamps; a changed file is loaded once its stamp has
-- stayed the same for DEBOUNCE seconds (a save in progress keeps moving).
local polling = false
local function poll()
  local nowt = now()
  for name, rec in pairs(records) do
    if rec.watched ~= false then
      local s, serr = core_stamp(rec.path)
      if s == nil then
        if not rec.missing then
          rec.missing = true
          log_msg(("reload: %s: %s; previous code kept"):format(rec.path, tostring(serr)))
        end
      else
        rec.missing = nil
        if s ~= rec.stamp and s ~= rec.failed_stamp then
          if rec.seen_stamp ~= s then
            rec.seen_stamp, rec.seen_at = s, nowt
          elseif nowt - rec.seen_at >= M.DEBOUNCE then
            local source = read_file(rec.path)
            if source and loaded[name] ~= nil then
              rec.stamp = s
              local ok, err = apply(rec, source)
              if not ok then
                rec.failed_stamp = s
                fail(name, err)
              end
            end
          end
        end
      end
    end
  end
end
M._poll = poll

function M._startPolling()
  if polling then return end
  local ok, reactor = pcall(require, "braid.reactor")
  if not ok then return end
  polling = true
  local function tick()
    local pok, err = pcall(poll)
    if not pok then log_err(err, "reload watcher failed") end
    reactor.callLater(M.POLL_INTERVAL, tick)
  end
  -- start with the reactor, so the poller alone never keeps a script's
  -- reactor running (braid runs it only when the script started something)
  if reactor.running or not reactor.callWhenRunning then
    reactor.callLater(M.POLL_INTERVAL, tick)
  else
    reactor.callWhenRunning(function() reactor.callLater(M.POLL_INTERVAL, tick) end)
  end
end

--- Reload every watched module whose file changed (what SIGHUP does).
function M.reloadChanged()
  local list = M.changed()
  for i = 1, #list do
    if loaded[list[i]] ~= nil then M.reload(list[i]) end
  end
  return list
end

--- What `braid --watch` calls before the script runs: record every module
-- loaded from outside the system's directories, poll their files, reload
-- on SIGHUP.
function M.enableWatch()
  install_searcher()
  M._startPolling()
  local reactor = require("braid.reactor")
  reactor._setSignalAction("SIGHUP", function() M.reloadChanged() end)
end

--- Test hook: start recording required modules without polling.
M._installSearcher = install_searcher
M._records = records

return M
