-- braid.reload: hot-editing Lua modules in a running process.
-- Covers runtime/reload.c; specs: spec/reload_spec.lua, spec/reload_watch_spec.lua.
--
-- A reload runs the module's chunk again and merges its result into the
-- table already in package.loaded, so every reference to that table (live
-- protocol instances through their metatables, factories, subclasses) sees
-- the new functions on its next lookup while data stays put.
--
-- The watcher: inotify on the directories of watched modules (so a save by
-- rename is seen), a file loaded once its writer has closed it or renamed
-- it into place (never while a write is in progress), at most once per
-- DEBOUNCE; a stat poller where inotify is not available.
local M = {}

local type, pairs, next, pcall, tostring = type, pairs, next, pcall, tostring
local getupvalue, upvaluejoin, getinfo = debug.getupvalue, debug.upvaluejoin, debug.getinfo
local loaded = package.loaded
local byte, format = string.byte, string.format

M.reloading = false

-- Directories whose modules are never watched (system libraries, braid).
-- (each ends with "/": /usr/share/luafoo is not /usr/share/lua)
local SYSTEM_DIRS = {
  "/usr/share/lua/", "/usr/lib/x86_64-linux-gnu/lua/", "/usr/local/share/lua/",
  "/usr/local/lib/lua/",
}
do
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*/)reload%.lua$")
  if dir then SYSTEM_DIRS[#SYSTEM_DIRS + 1] = dir end
end

--- A finished save (the writer closed the file or renamed it into place)
-- is loaded at once, unless the file was loaded less than DEBOUNCE seconds
-- ago: then after DEBOUNCE seconds of quiet, so a storm of saves ends in a
-- load of the last one.
M.DEBOUNCE = 0.01
--- Seconds a vanished file may take to come back (a rename-save) before it
-- is reported; with polling, how long a changed stamp must hold still
-- before the file is loaded.
M.SETTLE = 0.1
--- Seconds between two stats of the polling fallback.
M.POLL_INTERVAL = 0.05
--- Set to true before modules are watched to poll their files instead of
-- using inotify (network filesystems, where inotify misses remote writes).
M.usePolling = false
--- How many recent versions keep their source for rollback.
M.KEEP_SOURCES = 32

local records = {}   -- modname -> record
local listeners = {}

local core
do
  local ok, c = pcall(require, "braid.core")
  core = ok and c or nil
end

local function core_stamp(path)
  if core and core.fileStamp then return core.fileStamp(path) end
  -- without the C core: size + content (slow, but only a fallback)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a"); f:close()
  if not s then return nil, "unreadable" end
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

-- A problem with a watched file (deleted, unreadable, watch lost): shown
-- even before startLogging (error level, no traceback).
local logger
local function log_problem(text)
  if logger == nil then
    local ok, log = pcall(require, "braid.log")
    logger = ok and log.Logger and log.Logger("braid.reload") or false
  end
  if logger then logger:error("{text}", { text = text })
  else io.stderr:write(text, "\n") end
end

local function now()
  local r = loaded["braid.reactor"]
  if type(r) == "table" and r.seconds then return r.seconds() end
  return os.time()
end

local mono = core and core.monotonic or os.time

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

-- In a snapshot: the version held a function under that key (a reload
-- removes only those, not functions stored there at run time).
local FN = setmetatable({}, { __name = "function in the previous version" })

-- Returns a tree copy of the non-function values (cycles guarded; FN for a
-- function) and fills ups with the upvalues of every function reachable
-- from t.
local function snapshot(t, ups, seen)
  if seen[t] then return seen[t] end
  local copy = {}
  seen[t] = copy
  for k, v in pairs(t) do
    local tv = type(v)
    if tv == "table" then copy[k] = snapshot(v, ups, seen)
    elseif tv == "function" then
      copy[k] = FN
      snap_upvalues(v, ups, seen)
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

-- During a merge (set by apply): the lines of the running and of the new
-- version's source, and the new chunk's source name; the pairs {live, new}
-- of local tables join_upvalues joined (merged by merge_local_tables).
local old_lines, new_lines, merge_src
local local_tables
-- Tables of other modules (their values, and those values' fields: the
-- classes they export) during a merge: a field that now points at one is
-- pointed there, never merged into (a class whose parent changed from
-- LineReceiver to Protocol used to merge Protocol into LineReceiver).
local foreign = {}

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
    local ov
    if o then ov = select(2, getupvalue(o[1], o[2])) end
    if o and name ~= "_ENV" then
      local p = prevups[name]
      if type(nv) == "function" and type(ov) == "function" and p ~= nil
          and type(p[1]) == "function" and ov ~= p[1] then
        -- a local the program pointed at another function since the last
        -- load (a handler it installed): that choice is kept
        upvaluejoin(nf, i, o[1], o[2])
      elseif type(nv) == "function" and type(ov) == "function" then
        join_upvalues(nv, ov, prevups, seen, modups)
      elseif type(nv) ~= "function" then
        if type(ov) == "table" or p == nil or ov ~= p[1] then
          upvaluejoin(nf, i, o[1], o[2])
          if local_tables and type(nv) == "table" and type(ov) == "table" and nv ~= ov then
            local_tables[#local_tables + 1] = { ov, nv }
          end
        end
      end
    end
    if type(nv) == "function" and type(ov) ~= "function" and merge_src
        and getinfo(nv, "S").source == merge_src then
      -- a local helper this version adds: its own upvalues are the
      -- module's locals (`clients`), joined as an added function's are
      join_upvalues(nv, nil, prevups, seen, modups)
    end
    i = i + 1
  end
end

-- visit(f, i, name, value) for every upvalue of every function reachable
-- from t (through tables, and through functions held as upvalues).
local function each_upvalue(t, visit, seen)
  if seen[t] then return end
  seen[t] = true
  if type(t) == "function" then
    local i = 1
    while true do
      local name, v = getupvalue(t, i)
      if name == nil then break end
      visit(t, i, name, v)
      if type(v) == "function" then each_upvalue(v, visit, seen) end
      i = i + 1
    end
  else
    for _, v in pairs(t) do
      local tv = type(v)
      if tv == "function" or tv == "table" then each_upvalue(v, visit, seen) end
    end
  end
end

-- Every upvalue reachable from the live module's functions, by name (the
-- first seen wins): new functions with no predecessor join module locals
-- through it. Only functions defined in the module's own file count: the
-- walk also reaches other modules' functions (a class's superclass from
-- another file, a helper it calls), whose locals of the same name (their
-- own `M`) must not stand for this module's.
local function collect_upvalues(t, into, source)
  local own = {}
  each_upvalue(t, function(f, i, name)
    local mine = own[f]
    if mine == nil then
      mine = getinfo(f, "S").source == source
      own[f] = mine
    end
    if mine and into[name] == nil then into[name] = { f, i } end
  end, {})
end

-- After a merge, upvalues of the new functions that still hold one of the
-- new chunk's merged tables (its `M`) are pointed at the live table.
local function remap_upvalues(t, map)
  each_upvalue(t, function(f, i, _, v)
    if type(v) == "table" then
      local lv = map[v]
      if type(lv) == "table" and lv ~= v then debug.setupvalue(f, i, lv) end
    end
  end, {})
end


local class = require "braid.class"
local METAMETHODS, inherit_metamethod = class.METAMETHODS, class.inheritMetamethod
local function lines_of(source)
  local t = {}
  for l in (source .. "\n"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end
local function text_of(f, lines)
  local info = debug.getinfo(f, "S")
  if lines == nil or info.source ~= merge_src or info.linedefined <= 0 then return nil end
  -- a record made after the module loaded (reload.watch of a module loaded
  -- before the watcher) holds the file as it was then, which may be shorter
  -- than the text the live function came from: its text is then unknown
  if info.lastlinedefined > #lines then return nil end
  return table.concat(lines, "\n", info.linedefined, info.lastlinedefined)
end
-- Whether two functions have the same text: the lines each spans in the
-- source of its version (old_lines, new_lines), so a function that only
-- moved in the file counts as unchanged. Unknown counts as changed.
local function same_code(f, g)
  local a = text_of(f, old_lines)
  return a ~= nil and a == text_of(g, new_lines)
end

-- Whether table t holds a function of the file being merged (so it is
-- this module's own even where another module refers to it too).
local function defined_here(t)
  for _, f in next, t do
    if type(f) == "function" then
      local info = getinfo(f, "S")
      if info and info.source == merge_src then return true end
    end
  end
  return false
end

-- The local tables of the new version joined to the live ones (`local
-- commands = {}` and the functions the chunk put in it) that the merge of
-- the module's tables did not cover: their functions are put in the live
-- table (their upvalues joined in turn), so edited handlers run and added
-- ones are found; data, and what the program stored there, stay. `merged`
-- is the merge's map (a live table it merged into, a new table it merged).
-- Returns how many of its functions were replaced by other code.
local function merge_local_tables(merged, prevups, jseen, modups)
  local count, i = 0, 1
  while local_tables[i] do
    local live, new = local_tables[i][1], local_tables[i][2]
    if not (merged[new] or merged[live] or foreign[new] or foreign[live]) then
      merged[new], merged[live] = live, true
      for k, v in next, new do
        if type(v) == "function" and getinfo(v, "S").source == merge_src then
          local lv = rawget(live, k)
          if lv ~= v then
            join_upvalues(v, type(lv) == "function" and lv or nil, prevups, jseen, modups)
            if type(lv) == "function" and not same_code(lv, v) then count = count + 1 end
            rawset(live, k, v)
          end
        end
      end
    end
    i = i + 1
  end
  return count
end

local function merge(live, new, prev, prevups, modups, seen, jseen, count)
  if seen[live] then return count end
  seen[live] = true
  seen[new] = live -- remap: the new chunk's tables stand for the live ones
  -- raw access only: a class's inherited method is not its own (joining
  -- with it would link the new method to the superclass's module), and a
  -- strict module's __index or __newindex must not run (it raised half-way)
  for k, v in next, new do
    local lv = rawget(live, k)
    local tv = type(v)
    if tv == "function" then
      if type(lv) == "function" then
        if lv ~= v then
          join_upvalues(v, lv, prevups, jseen, modups)
          if not same_code(lv, v) then count = count + 1 end
          -- subclasses hold copies of a class's metamethods
          if METAMETHODS[k] then inherit_metamethod(live, k, lv, v) end
        end
      else
        join_upvalues(v, nil, prevups, jseen, modups)
      end
      rawset(live, k, v)
    elseif tv == "table" and type(lv) == "table" then
      if foreign[v] or (foreign[lv] and not defined_here(lv)) then
        rawset(live, k, v)  -- another module's table: a reference, not ours to merge
      elseif lv ~= v then
        count = merge(lv, v, type(prev) == "table" and rawget(prev, k) or nil, prevups, modups, seen,
          jseen, count)
      end
    elseif lv == nil then
      rawset(live, k, v)
    elseif type(lv) ~= "table" and type(lv) ~= "function" then
      -- data: take the new value only if nobody changed the live one
      if type(prev) == "table" and lv == rawget(prev, k) then rawset(live, k, v) end
    else
      rawset(live, k, v)
    end
  end
  -- functions the previous version defined and this one does not go;
  -- removed data, and functions stored at run time, stay (live state)
  local k, lv = next(live)
  local gone
  while k ~= nil do
    if type(lv) == "function" and rawget(new, k) == nil
        and (type(prev) ~= "table" or rawget(prev, k) == FN) then
      gone = gone or {}
      gone[#gone + 1] = k
    end
    k, lv = next(live, k)
  end
  if gone then for i = 1, #gone do rawset(live, gone[i], nil) end end
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
--- Internal (specs): whether modules at `path` are left unwatched.
M._isSystemPath = is_system

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s, rerr = f:read("a")
  f:close()
  if not s then return nil, path .. ": " .. tostring(rerr) end
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
    rec.disk_hash = rec.versions[1].hash
  end
  return rec
end

local function find_path(name)
  return package.searchpath(name, package.path)
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
    rec.first_snap = nil
  end
end

local function notify(name, version)
  for i = 1, #listeners do
    local ok, err = pcall(listeners[i], name, version)
    if not ok then log_err(err, "reload listener failed") end
  end
end

-- A chunk's error as a Failure with the traceback where it was raised.
local function chunk_msgh(e)
  local ok, failure = pcall(require, "braid.failure")
  if ok then return failure.msgh(e) end
  return { getErrorMessage = function() return tostring(e) end }
end

--- Seconds of CPU a new version's chunk may run when it loads: one that
-- runs longer (a loop that never ends) is stopped and the previous code
-- kept, where it would have frozen the server.
M.LOAD_TIME_LIMIT = 5

-- Run a chunk as xpcall(chunk, chunk_msgh, ...) does, stopped with an
-- error once it has run M.LOAD_TIME_LIMIT seconds of CPU (core.runLimited:
-- a loop that catches the error, or runs in a coroutine, is stopped too).
local function run_chunk(chunk, ...)
  local limit = M.LOAD_TIME_LIMIT
  if not (core and core.runLimited) then return xpcall(chunk, chunk_msgh, ...) end  -- no C core: no limit
  return core.runLimited(limit, "cpu",
    ("the module ran more than %s seconds as it loaded (reload.LOAD_TIME_LIMIT)")
      :format(tostring(limit)), chunk_msgh, chunk, ...)
end

-- The tables of the modules other than `name`: their values and the
-- tables among those values' fields.
local function foreign_tables(name)
  local set = {}
  for other, v in pairs(loaded) do
    if other ~= name and type(v) == "table" then
      set[v] = true
      for _, f in next, v do
        if type(f) == "table" then set[f] = true end
      end
    end
  end
  set[loaded[name]] = nil
  return set
end

-- A file's text as require's luaL_loadfile reads it: a UTF-8 BOM, then a
-- first line that starts with '#' (a shebang), are skipped; that line's
-- end stays, so the lines keep their numbers.
local function chunk_text(source)
  if source:sub(1, 3) == "\239\187\191" then source = source:sub(4) end
  if source:sub(1, 1) == "#" then
    local nl = source:find("\n", 1, true)
    source = nl and source:sub(nl) or ""
  end
  return source
end

-- Load `source` as the new version of rec and merge it. Returns true, or
-- nil, the error message and (when the chunk raised) its Failure; nothing
-- has changed then.
local function apply(rec, source, is_rollback, h)
  local name = rec.name
  local live = loaded[name]
  local chunk, cerr = load(chunk_text(source), "@" .. rec.path)
  if not chunk then return nil, cerr end
  local was = M.reloading
  M.reloading = true
  local ok, new = run_chunk(chunk, name, rec.path)
  M.reloading = was
  if not ok then return nil, new:getErrorMessage(), new end
  if new == nil then new = true end
  if live ~= nil and type(new) ~= type(live) then
    return nil, ("module returned a %s, previously a %s"):format(type(new), type(live))
  end
  ensure_snapshot(rec)
  local nsnap = take_snapshot(new)
  local count = 0
  local cur = rec.versions[#rec.versions]
  old_lines = cur and cur.source and not cur.unverified and lines_of(cur.source) or nil
  new_lines, merge_src = lines_of(source), "@" .. rec.path
  local modups = {}
  if type(live) == "table" or type(live) == "function" then
    collect_upvalues(live, modups, "@" .. rec.path)
  end
  local_tables = {}
  if type(live) == "table" then
    local seen, jseen = {}, {}
    foreign = foreign_tables(name)
    count = merge(live, new, rec.snap.data, rec.snap.ups, modups, seen, jseen, 0)
    count = count + merge_local_tables(seen, rec.snap.ups, jseen, modups)
    foreign = {}
    local_tables = nil
    remap_upvalues(new, seen)
    local hook = rawget(live, "__reload")
    if type(hook) == "function" then
      -- limited as the chunk is: a migration that never ends must not
      -- freeze the server
      local hok, herr = run_chunk(hook, live, new)
      if not hok then log_err(herr, ("__reload of %s failed"):format(name)) end
    end
  else
    if type(live) == "function" and type(new) == "function" then
      local jseen = {}
      join_upvalues(new, live, rec.snap.ups, jseen, modups)
      count = (same_code(live, new) and 0 or 1) + merge_local_tables({}, rec.snap.ups, jseen, modups)
    end
    local_tables = nil
    loaded[name] = new
  end
  old_lines, new_lines = nil, nil
  rec.snap = nsnap
  rec.failed_hash = nil
  local vs = rec.versions
  local v = { version = #vs + 1, time = now(), hash = h or hash(source),
              replaced = count, source = source, rollback = is_rollback or nil }
  vs[v.version] = v
  local old = vs[v.version - M.KEEP_SOURCES]
  if old then old.source = nil end
  log_msg(("reloaded %s (%d functions replaced)"):format(name, count))
  notify(name, v.version)
  return true
end

-- Log a failed reload: one line, and the traceback when the chunk raised.
local function fail(name, err, f)
  local text = ("reload of %s failed: %s; previous code kept"):format(name, tostring(err))
  if f and f.getTraceback then log_err(f, text) else log_problem(text) end
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

-- The watcher loads a file's source (h its hash): nothing happens when it
-- is the version running now (a touch, a chmod, an editor's second write),
-- or one that already failed (reported once).
-- The source of hash h failed to load with err (f: the Failure when the
-- chunk raised). Only such a raise may go once another module has loaded:
-- a syntax error will not change, and a load that ran out of time would
-- take that time again.
local function note_failed(rec, h, err, f)
  rec.failed_hash = h
  rec.failed_err = tostring(err)
  rec.retry = f ~= nil and not tostring(err):find("reload.LOAD_TIME_LIMIT", 1, true)
end

local retry_failed

local function load_source(rec, source, h)
  if rec.dep then
    -- a module a failed reload could not require: now that it is saved,
    -- the modules whose load it broke are tried again (and report again)
    if records[rec.name] == nil and loaded[rec.name] == nil then retry_failed(nil, rec.path) end
    return
  end
  if loaded[rec.name] == nil then return end
  local cur = rec.versions[#rec.versions]
  if cur and cur.hash == h then
    -- the file holds the running version again (a failed save undone): it
    -- no longer fails, and the same mistake saved later is reported again
    rec.failed_hash, rec.failed_err, rec.retry = nil, nil, nil
    return
  end
  if rec.failed_hash == h then return end
  local ok, err, f = apply(rec, source, nil, h)
  if not ok then
    note_failed(rec, h, err, f)
    fail(rec.name, err, f)
  else
    retry_failed(rec)
  end
end

-- After a module loaded: the modules whose file failed to load as their
-- chunk raised are tried again, once each, quietly (they were reported):
-- a checkout writes a.lua, which needs the new b.lua, just before b.lua.
-- Until more succeed. After a save of `path` (a module they failed to
-- require), those whose error names it are not quiet when they fail again.
retry_failed = function(done, path)
  local again = true
  while again do
    again = false
    -- listed first: a load may require a module, which adds a record
    local waiting = {}
    for _, rec in pairs(records) do
      if rec ~= done and rec.failed_hash and rec.retry and loaded[rec.name] ~= nil then
        waiting[#waiting + 1] = rec
      end
    end
    for _, rec in ipairs(waiting) do
      local source, h = read_file(rec.path), rec.failed_hash
      if source and hash(source) == h then
        local ok, err, f = apply(rec, source, nil, h)  -- clears failed_hash when it loads
        if ok then
          log_msg(("reload of %s succeeded on a second try"):format(rec.name))
          again = true
        else
          local said = rec.failed_err
          note_failed(rec, h, err, f)
          if path and said and said:find(path, 1, true) then fail(rec.name, err, f) end
        end
      end
    end
  end
end

-- The file of a watched module is missing or unreadable: said once.
local function problem(rec, err)
  err = tostring(err)
  if not err:find(rec.path, 1, true) then err = rec.path .. ": " .. err end
  if rec.problem == err then return end
  rec.problem = err
  log_problem(("reload of %s: %s; previous code kept"):format(rec.name, err))
end

-- The file as it is now counts as seen (reload, rollback): a watcher check
-- still pending for a save made before does nothing.
local function mark_seen(rec, stamp, source)
  rec.stamp = stamp
  rec.disk_hash = source and hash(source) or nil
end

-- Read a watched file now and load it if it is new. A file that changed
-- while it was read is tried again later; one whose text is the text last
-- seen on disk is left alone (its new stamp noted).
local schedule, drain, watch_places
local due = {}         -- rec -> monotonic time of its check
local function check_file(rec)
  local s1, serr = core_stamp(rec.path)
  if not s1 then return problem(rec, serr) end
  local source, rerr = read_file(rec.path)
  if not source then return problem(rec, rerr) end
  if core_stamp(rec.path) ~= s1 then return schedule(rec, M.DEBOUNCE) end
  -- a writer that opened the file (truncating it) after the events were
  -- last taken in, and before the first stat, is told by its events now:
  -- its close will bring the check back
  drain()
  if rec.writing or due[rec] then return end
  -- an empty file is most likely one a writer has just truncated (a storm
  -- of saves still showed it, with no event left to tell): looked at again
  -- after SETTLE, and loaded only if it is still empty then
  if #source == 0 and not rec.empty_seen then
    rec.empty_seen = true
    return schedule(rec, M.SETTLE)
  end
  rec.empty_seen = nil
  rec.problem = nil
  rec.checked_at = mono()
  if rec.dir then watch_places(rec) end
  local h = hash(source)
  rec.stamp = s1
  -- text byte-identical to the text last seen on disk (a touch, a chmod,
  -- the same text saved again, a save after a rollback that changes
  -- nothing) is no edit: nothing loads, so a rollback stays in place
  if h == rec.disk_hash then return end
  rec.disk_hash = h
  load_source(rec, source, h)
end

---------------------------------------------------------------------------
-- The watcher: inotify, or polling where inotify is not available.

local watcher          -- core.inotify() watcher; false once it failed
local dirs = {}        -- real directory -> { wd =, path =, files = { base -> rec } }
local by_wd = {}       -- watch descriptor -> dirs entry
-- (due: declared above check_file, which reads it)
local check_call       -- the DelayedCall of the next check
local polled = {}      -- rec -> true: watched by the poller
local polling = false
local watch_all = false

local function reactor_mod()
  local ok, r = pcall(require, "braid.reactor")
  return ok and r or nil
end

local run_checks
local check_at         -- monotonic time check_call is due
local function arm()
  local first
  for _, t in pairs(due) do
    if first == nil or t < first then first = t end
  end
  if first == nil then return end
  if check_call and check_at <= first + 0.0005 then return end
  local reactor = reactor_mod()
  if not reactor then return end
  if check_call then check_call:cancel() end
  local delay = first - mono()
  check_call, check_at = reactor.callLater(delay > 0 and delay or 0, run_checks), first
end

--- Check rec's file after `delay` seconds of quiet (a later event moves it).
schedule = function(rec, delay)
  due[rec] = mono() + delay
  arm()
end

local IN = core and core.IN
local M_DONE, M_WRITING, M_CREATE, M_GONE, M_ATTRIB, M_DIRGONE, M_OVERFLOW
if IN then
  M_DONE = IN.CLOSE_WRITE | IN.MOVED_TO
  M_WRITING = IN.MODIFY
  M_CREATE = IN.CREATE
  M_GONE = IN.DELETE | IN.MOVED_FROM
  M_ATTRIB = IN.ATTRIB
  M_DIRGONE = IN.DELETE_SELF | IN.MOVE_SELF | IN.IGNORED | IN.UNMOUNT
  M_OVERFLOW = IN.Q_OVERFLOW
end

local start_polling, poll_rec

-- A directory watch is gone (directory deleted or moved): its modules are
-- polled from now on.
local function lose_dir(d, mask)
  if by_wd[d.wd] ~= d then return end
  by_wd[d.wd] = nil
  for path, e in pairs(dirs) do         -- under each of its names
    if e == d then dirs[path] = nil end
  end
  -- a moved directory keeps its kernel watch (a deleted one's is gone)
  if mask & IN.MOVE_SELF ~= 0 then watcher:remove(d.wd) end
  for _, rec in pairs(d.files) do
    rec.dir = nil
    log_problem(("reload: lost the watch on %s; polling %s"):format(d.path, rec.path))
    poll_rec(rec)
  end
  for _, set in pairs(d.links) do
    for rec in pairs(set) do poll_rec(rec) end
  end
end

-- One event, in the order the kernel queued it. Only a finished save
-- (close after write, rename into place) or a pause after a create or a
-- removal leads to a check; a write in progress blocks it until its close.
local function on_event(ev)
  local mask = ev.mask
  if mask & M_OVERFLOW ~= 0 then
    -- events were lost: look at every file once things settle
    for _, d in pairs(dirs) do
      for _, rec in pairs(d.files) do rec.writing = false; schedule(rec, M.SETTLE) end
      for _, set in pairs(d.links) do
        for rec in pairs(set) do schedule(rec, M.SETTLE) end
      end
    end
    return
  end
  local d = by_wd[ev.wd]
  if not d then return end
  if mask & M_DIRGONE ~= 0 and ev.name == nil then return lose_dir(d, mask) end
  local set = ev.name and d.links[ev.name]
  if set and mask & (M_DONE | M_GONE | M_CREATE) ~= 0 then
    -- a symlinked directory on the way to these files was replaced or
    -- pointed elsewhere (ln -sfn): their files are looked at again
    for r in pairs(set) do
      if not due[r] then schedule(r, mask & M_DONE ~= 0 and M.DEBOUNCE or M.SETTLE) end
    end
  end
  local rec = ev.name and d.files[ev.name]
  if not rec then return end
  if mask & M_DONE ~= 0 then
    -- at once, unless the file was looked at less than DEBOUNCE ago: then
    -- after DEBOUNCE of quiet (a storm of saves ends in the last one)
    rec.writing = false
    local last = rec.checked_at
    schedule(rec, (last == nil or mono() - last >= M.DEBOUNCE) and 0 or M.DEBOUNCE)
  elseif mask & M_WRITING ~= 0 then
    rec.writing = true                  -- loaded after the writer closes it
  elseif mask & (M_GONE | M_CREATE) ~= 0 then
    rec.writing = false
    schedule(rec, M.SETTLE)             -- a rename-save puts it back soon
  elseif mask & M_ATTRIB ~= 0 then
    if not rec.writing then schedule(rec, M.DEBOUNCE) end
  end
end

local function on_events(list)
  for i = 1, #list do on_event(list[i]) end
end

-- Take in the events queued now (the checks must not act on a file whose
-- new write is already announced).
drain = function()
  if not watcher then return end
  local list = watcher:read()
  if list then on_events(list) end
end

run_checks = function()
  -- called early (an inotify batch, _pump): the armed check is not needed
  if check_call and check_call:active() then check_call:cancel() end
  check_call = nil
  drain()
  local t = mono()
  local ready
  for rec, at in pairs(due) do
    if at <= t + 0.0005 then
      ready = ready or {}
      ready[#ready + 1] = rec
    end
  end
  if ready then
    for i = 1, #ready do
      local rec = ready[i]
      due[rec] = nil
      if not rec.writing then
        local ok, err = pcall(check_file, rec)
        if not ok then log_err(err, "reload watcher failed") end
      end
    end
  end
  arm()
end

local function get_watcher()
  if watcher ~= nil then return watcher end
  watcher = false
  if not (core and core.inotify) then return false end
  local w, err = core.inotify()
  if not w then
    log_problem("reload: inotify unavailable (" .. tostring(err) .. "); polling files")
    return false
  end
  w:start(function(list)
    local ok, e = pcall(on_events, list)
    if not ok then log_err(e, "reload watcher failed") end
    -- a finished save is loaded now, not at the next turn's timers (on a
    -- busy loop, a turn can be long)
    local t = mono()
    for _, at in pairs(due) do
      if at <= t then return run_checks() end
    end
  end)
  watcher = w
  return w
end

-- Polling fallback: a changed stamp is loaded once it has held still for
-- SETTLE seconds (a save in progress keeps moving it).
local function poll()
  local t = mono()
  for rec in pairs(polled) do
    local s, serr = core_stamp(rec.path)
    if s == nil then
      problem(rec, serr)
      rec.seen_stamp = nil
    elseif s ~= rec.stamp then
      if rec.seen_stamp ~= s then
        rec.seen_stamp, rec.seen_at = s, t
      elseif t - rec.seen_at >= M.SETTLE then
        rec.seen_stamp = nil
        check_file(rec)
      end
    end
  end
end

poll_rec = function(rec)
  polled[rec] = true
  start_polling()
end

local ticking = false
start_polling = function()
  if polling then return end
  local reactor = reactor_mod()
  if not reactor then return end
  polling = true
  local function tick()
    local ok, err = pcall(poll)
    if not ok then log_err(err, "reload watcher failed") end
    reactor.callLater(M.POLL_INTERVAL, tick)
  end
  local function start()
    if ticking then return end
    ticking = true
    reactor.callLater(M.POLL_INTERVAL, tick)
  end
  -- start with the reactor, so the poller alone never makes braid run a
  -- script's reactor (it runs it only when the script started something)
  if reactor.running then start()
  else reactor.addSystemEventTrigger("after", "startup", start) end
end

local function split_path(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  if not dir then return ".", path end
  if dir == "" then dir = "/" end
  return dir, base
end

-- The places (real directory, name) where a save of rec's file shows:
-- the name its path gives, in its directory (a save that replaces a
-- symlink by a file, as `sed -i` does, or points it elsewhere, happens
-- there) and, when that name is a symlink, the file it points to (a save
-- through the link writes there). Second list: the symlinked directories
-- on the way (a `current -> release1` pointed at release2), as places.
local function places_of(rec)
  local rp = core and core.realpath
  local dir, base = split_path(rec.path)
  dir = rp and rp(dir) or dir
  local list, links = { { dir, base } }, {}
  local real = rp and rp(rec.path)
  if real then
    local rdir, rbase = split_path(real)
    if rdir ~= dir or rbase ~= base then list[2] = { rdir, rbase } end
  end
  if rp then
    local parent = rec.path:sub(1, 1) == "/" and "/" or "."
    for name in rec.path:gmatch("[^/]+/") do
      name = name:sub(1, -2)
      local here = (parent == "/" and "" or parent) .. "/" .. name
      if name ~= "." and name ~= ".." then
        local rparent, rhere = rp(parent), rp(here)
        if rparent and rhere and rhere ~= (rparent == "/" and "" or rparent) .. "/" .. name then
          links[#links + 1] = { rparent, name }
        end
      end
      parent = here
    end
  end
  return list, links
end

-- Watch the directories of rec's places (again after each check: a
-- symlink may point into another directory now).
watch_places = function(rec)
  local w = watcher
  if not w or polled[rec] then return end
  local list, links = places_of(rec)
  local function dir_entry(dir)
    local d = dirs[dir]
    if d then return d end
    local wd, err = w:add(dir)
    if not wd then
      log_problem(("reload: cannot watch %s (%s); polling %s"):format(dir, tostring(err), rec.path))
      return poll_rec(rec)
    end
    d = by_wd[wd]              -- the same directory by another name
    if not d then
      d = { wd = wd, path = dir, files = {}, links = {} }
      by_wd[wd] = d
    end
    dirs[dir] = d
    return d
  end
  for _, place in ipairs(list) do
    local d = dir_entry(place[1])
    if not d then return end
    d.files[place[2]] = rec
    rec.dir = rec.dir or d
  end
  for _, place in ipairs(links) do
    local d = dir_entry(place[1])
    if not d then return end
    local set = d.links[place[2]]
    if not set then set = {}; d.links[place[2]] = set end
    set[rec] = true
  end
end

-- Start watching rec's file.
local function watch_rec(rec)
  if rec.watched then return end
  rec.watched = true
  local w = not M.usePolling and get_watcher()
  if not w then return poll_rec(rec) end
  watch_places(rec)
end

-- Modules whose first load raised (a new version of a module required a
-- new module with a mistake in it), or that no file held yet: path -> a
-- record that only watches the file (rec.dep), so that its fix (or its
-- creation) tries again the modules that failed.
local deps = {}
local function watch_dep(name, path)
  if not watch_all or records[name] or type(path) ~= "string" or deps[path]
      or is_system(path) then
    return
  end
  local source = read_file(path)
  local rec = { name = name, path = path, stamp = core_stamp(path), versions = {},
                disk_hash = source and hash(source), dep = true }
  deps[path] = rec
  watch_rec(rec)
end

-- A module a new version requires and no file holds yet (a checkout wrote
-- the requirer first): each place package.path would find it, in a
-- directory that exists, is watched.
local function watch_missing(name)
  local rp = core and core.realpath
  if not rp then return end
  local file = name:gsub("%.", "/")
  for template in package.path:gmatch("[^;]+") do
    local path = template:gsub("%?", function() return file end)
    local dir = path:match("^(.*)/[^/]+$") or "."
    if dir == "" then dir = "/" end
    if rp(dir) then watch_dep(name, path) end
  end
end

-- Record a module loaded through require: its path, source and snapshot.
local searcher_installed = false
local function install_searcher()
  if searcher_installed then return end
  searcher_installed = true
  local searchers = package.searchers
  local lua_searcher = searchers[2]
  searchers[2] = function(name)
    -- called through pcall, a C function: the searcher's own error (a
    -- module that does not compile) gets no position, as under require
    -- (called from here, it began with this line of reload.lua)
    local ok, loader, path = pcall(lua_searcher, name)
    if not ok then
      pcall(watch_dep, name, package.searchpath(name, package.path))  -- does not compile
      error(loader, 0)
    end
    if type(loader) ~= "function" or type(path) ~= "string" then
      if M.reloading and type(loader) == "string" then pcall(watch_missing, name) end
      return loader, path
    end
    return function(modname, p)
      -- a chunk that raises leaves its file watched (the error passes on
      -- with its traceback, taken where it was raised)
      local _ <close> = watch_all and not records[modname] and setmetatable({}, {
        __close = function(_, e) if e ~= nil then pcall(watch_dep, modname, p) end end,
      }) or nil
      local r = loader(modname, p)
      local v = r
      if v == nil then v = loaded[modname] end
      if v == nil then v = true end
      if not records[modname] and not is_system(p) then
        local rec = new_record(modname, p, read_file(p))
        rec.pending_snapshot = true
        rec.first_snap = take_snapshot(v)
        if watch_all then watch_rec(rec) end
      end
      return r
    end, path
  end
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
  local made_now = records[modname] == nil
  local rec = get_record(modname)
  if not rec then return fail(modname, "module file not found") end
  -- a record made now holds the file about to be loaded, not the text the
  -- live functions came from: which of them changed is unknown, so each
  -- one replaced counts (compared with itself, none did)
  if made_now and rec.versions[1] then rec.versions[1].unverified = true end
  local stamp = core_stamp(rec.path)
  local source, err = read_file(rec.path)
  if not source then return fail(modname, err) end
  mark_seen(rec, stamp, source)
  if rec.dir then watch_places(rec) end   -- a symlink may point elsewhere now
  local ok, aerr, f = apply(rec, source)
  if not ok then
    note_failed(rec, hash(source), aerr, f)
    return fail(modname, aerr, f)
  end
  retry_failed(rec)
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
  watch_rec(rec)
end

--- Modules whose files changed on disk since they were last loaded, and
-- those whose file failed to load (their code is the previous version).
-- @return a sorted list of module names
function M.changed()
  local out = {}
  for name, rec in pairs(records) do
    local s = core_stamp(rec.path)
    if s ~= rec.stamp or rec.failed_hash then out[#out + 1] = name end
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
    if vs[i].hash ~= cur.hash and vs[i].source then target = vs[i]; break end
  end
  if not target then return nil, "no previous version of " .. modname end
  local stamp = core_stamp(rec.path)
  mark_seen(rec, stamp, stamp and read_file(rec.path))
  local ok, err, f = apply(rec, target.source, true, target.hash)
  if not ok then return fail(modname, err, f) end
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

--- Reload every watched module whose file changed (what SIGHUP does).
-- @return the list of changed modules
function M.reloadChanged()
  local list = M.changed()
  for i = 1, #list do
    if loaded[list[i]] ~= nil then M.reload(list[i]) end
  end
  return list
end

--- What `braid --watch` calls before the script runs: watch every module
-- loaded from outside the system's directories; reload on SIGHUP.
function M.enableWatch()
  install_searcher()
  watch_all = true
  for _, rec in pairs(records) do watch_rec(rec) end
  local reactor = require("braid.reactor")
  reactor._setSignalAction("SIGHUP", function() M.reloadChanged() end)
end

--- How a module's file is watched: "inotify", "poll", or nil.
function M.watchMode(modname)
  local rec = records[modname]
  if not (rec and rec.watched) then return nil end
  return polled[rec] and "poll" or "inotify"
end

--- Test hooks: start recording required modules without watching; the
-- records; poll once; take in queued inotify events and run the checks due.
M._installSearcher = install_searcher
M._records = records
M._poll = poll
function M._pump()
  drain()
  if next(due) then run_checks() end
end

return M
