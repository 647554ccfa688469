--- braid.fdesc: low-level descriptors for reactor.addReader/addWriter.
-- test-case-name: spec/fdesc_spec.lua
--
-- A descriptor is a table with fileno() (an integer fd, e.g. LuaSocket's
-- getfd()), doRead()/doWrite(), connectionLost(reason) and optionally
-- logPrefix(). A doRead/doWrite that returns reactor.CONNECTION_DONE,
-- reactor.CONNECTION_LOST or a Failure, or raises, is removed from both
-- sets and gets connectionLost(reason).
--
-- braid.tcp's listening ports and connections are in the sets too (as
-- Twisted's are selectables): asked of braid.tcp when the lists are
-- wanted, never tracked here, and added or removed through it.
local core = require "braid.core"
local errors = require "braid.error"
local failure = require "braid.failure"

local M = {}

local Failure, msgh = failure.Failure, failure.msgh
local report = core.report_error

local entries = {}      -- descriptor -> { w = watcher, fd = fd, r = bool, wr = bool }
local by_fd = {}        -- fd -> the descriptor watched on it
local readers, writers = {}, {}  -- insertion-ordered lists

local set_system = function(s) return s end
do
  local ok, log = pcall(require, "braid.log")
  if ok and log.setSystem then set_system = log.setSystem end
end

local function reactor() return require "braid.reactor" end

local function list_remove(list, d)
  for i = 1, #list do
    if list[i] == d then table.remove(list, i) return true end
  end
  return false
end

local function sync(d, e)
  if not e.r and not e.wr then
    e.w:close()
    entries[d] = nil
    if by_fd[e.fd] == d then by_fd[e.fd] = nil end
  else
    e.w:set(e.r, e.wr)
  end
end

local function prefix_of(d)
  local f = d.logPrefix
  if type(f) == "function" then
    local ok, p = pcall(f, d)
    if ok and type(p) == "string" then return p end
  end
  return "-"
end

-- Remove d from both sets and tell it why.
local function lose(d, why)
  local e = entries[d]
  if e then
    e.r, e.wr = false, false
    list_remove(readers, d)
    list_remove(writers, d)
    sync(d, e)
  end
  local R = reactor()
  local reason
  if why == R.CONNECTION_DONE then reason = Failure(errors.ConnectionDone())
  elseif why == R.CONNECTION_LOST then reason = Failure(errors.ConnectionLost())
  else reason = Failure(why) end
  local f = d.connectionLost
  if type(f) == "function" then
    local prev = set_system(prefix_of(d))
    local ok, err = xpcall(f, msgh, d, reason)
    if not ok then report(err) end  -- under d's prefix too
    set_system(prev)
  end
end

local function is_close(v)
  if v == nil then return false end -- the usual result: no module lookup per event
  local R = reactor()
  return v == R.CONNECTION_DONE or v == R.CONNECTION_LOST or failure.isFailure(v)
end

-- d:doRead() or d:doWrite() under d's log prefix; false when it ended d
local function dispatch(d, method)
  local prev = set_system(prefix_of(d))
  local f = d[method]
  local ok, v
  if f == nil then
    ok, v = xpcall(error, msgh, errors.TypeError(("descriptor has no %s method"):format(method)), 0)
  else
    ok, v = xpcall(f, msgh, d)
  end
  local keep = ok and not is_close(v)
  if not ok then report(v) end  -- logged under d's prefix, as Twisted's callWithLogger
  set_system(prev)
  if not keep then lose(d, v) end
  return keep
end

-- closed: the watcher found d's fd closed under it (the poll and select
-- backends would report it on every turn) and stopped; d goes, as
-- Twisted's poll and select reactors drop a descriptor that went bad
local function make_cb(d)
  return function(readable, writable, closed)
    local e = entries[d]
    if closed then
      if e then lose(d, reactor().CONNECTION_LOST) end
      return
    end
    if readable and e and e.r and not dispatch(d, "doRead") then return end
    e = entries[d]
    if writable and e and e.wr then dispatch(d, "doWrite") end
  end
end

local function check(fname, d)
  if type(d) ~= "table" and type(d) ~= "userdata" then
    errors.argerror(fname, 1, "descriptor expected, got " .. type(d), 4)
  end
  local ok, fd = pcall(function() return d:fileno() end)
  fd = ok and math.tointeger(fd) -- LuaSocket's getfd() gives a float
  if not fd or fd < 0 or fd > 0x7fffffff then
    errors.argerror(fname, 1, "descriptor's fileno() must return an integer from 0 to 2147483647, got "
      .. (ok and tostring(d:fileno()) or "an error"), 4)
  end
  return fd
end

-- Watch d for reading ("r") or writing; the sets change only once the
-- watcher took the new interest (a descriptor the OS refuses, closed or
-- not pollable, raises and leaves everything as it was).
local function add(fname, d, which)
  local fd = check(fname, d)
  local e = entries[d]
  local fresh = e == nil
  -- one descriptor per fd, as Twisted's reactors keep: another object on a
  -- watched fd is a mistake, most often a descriptor closed without
  -- removeReader whose number the system gave to a new one
  local other = by_fd[fd]
  if fresh and other ~= nil and other ~= d then
    error(errors.ValueError(("bad argument #1 to '%s' (fd %d is watched for another descriptor: "
      .. "remove that one first; was it closed without removeReader/removeWriter?)"):format(fname, fd)), 3)
  end
  if fresh then e = { w = core.fd_watch(fd, make_cb(d)), fd = fd, r = false, wr = false } end
  local r, wr = e.r, e.wr
  if which == "r" then r = true else wr = true end
  if r ~= e.r or wr ~= e.wr then
    local ok, err = pcall(e.w.set, e.w, r, wr)
    if not ok then
      if fresh then e.w:close() else pcall(e.w.set, e.w, e.r, e.wr) end
      error(errors.ValueError(("bad argument #1 to '%s' (%s)"):format(fname, tostring(err))), 3)
    end
  end
  if fresh then
    entries[d] = e
    by_fd[fd] = d
  end
  if which == "r" then
    if not e.r then readers[#readers + 1] = d end
    e.r = true
  else
    if not e.wr then writers[#writers + 1] = d end
    e.wr = true
  end
end

local function remove(d, which)
  local e = entries[d]
  if not e then return end
  if which == "r" then
    if e.r then list_remove(readers, d) end
    e.r = false
  else
    if e.wr then list_remove(writers, d) end
    e.wr = false
  end
  sync(d, e)
end

-- braid.tcp when d is one of its ports or connections (only a loaded
-- braid.tcp can have made one)
local function tcp_of(d)
  local tcp = package.loaded["braid.tcp"]
  if type(tcp) == "table" and tcp._isSelectable(d) then return tcp end
  return nil
end

-- addReader/addWriter (on) and removeReader/removeWriter (not on) for
-- `which` ("r" or "w"): a port or connection of braid.tcp is started or
-- stopped there, any other descriptor is watched here
local function watch_fn(fname, which, on)
  return function(d)
    local tcp = tcp_of(d)
    if tcp then return tcp._setWatch(fname, d, which, on) end
    if on then add(fname, d, which) else remove(d, which) end
  end
end

--- addReader(d): d:doRead() when its fileno() is readable (a listening
-- port accepts again, a connection reads again).
M.addReader = watch_fn("addReader", "r", true)
--- addWriter(d): d:doWrite() when writable (a connection sends its queued
-- output again).
M.addWriter = watch_fn("addWriter", "w", true)
M.removeReader = watch_fn("removeReader", "r", false)
M.removeWriter = watch_fn("removeWriter", "w", false)

-- Remove every descriptor added here; the removed ones, each once.
local function remove_raw()
  local out, seen = {}, {}
  for _, list in ipairs({ readers, writers }) do
    for _, d in ipairs(list) do
      if not seen[d] then seen[d] = true out[#out + 1] = d end
    end
  end
  for _, d in ipairs(out) do
    local e = entries[d]
    if e then e.r, e.wr = false, false sync(d, e) end
  end
  readers, writers = {}, {}
  return out
end

-- braid.tcp's watched ports and connections: readers, writers (empty
-- lists when braid.tcp is not loaded)
local function tcp_watched()
  local tcp = package.loaded["braid.tcp"]
  if type(tcp) ~= "table" then return {}, {} end
  return tcp._watched()
end

--- Remove every reader and writer; returns the removed ones, each once:
-- the descriptors added here, then the listening ports (which stop
-- accepting) and connections (which stop reading and sending) of
-- braid.tcp, as Twisted's removeAll. Nothing is closed: addReader /
-- addWriter (or resumeProducing, a write) starts them again, and the
-- reactor's shutdown closes them as it closes the rest.
function M.removeAll()
  local out = remove_raw()
  local tr, tw = tcp_watched()
  local seen = {}
  local tcp = package.loaded["braid.tcp"]
  for _, list in ipairs({ tr, tw }) do
    for _, d in ipairs(list) do
      if not seen[d] then
        seen[d] = true
        out[#out + 1] = d
        tcp._setWatch("removeAll", d, "r", false)
        tcp._setWatch("removeAll", d, "w", false)
      end
    end
  end
  return out
end

--- Internal (the reactor's "during shutdown" trigger): every descriptor
-- added here is removed and gets connectionLost(ConnectionLost), as
-- Twisted's disconnectAll does (braid.tcp closes its own).
function M._disconnectAll()
  for _, d in ipairs(remove_raw()) do lose(d, reactor().CONNECTION_LOST) end
end

local function concat(a, b)
  local out = { table.unpack(a) }
  for i = 1, #b do out[#out + 1] = b[i] end
  return out
end

--- The readers: descriptors added here (in that order), listening ports
-- accepting, and connections reading.
function M.getReaders() return concat(readers, (tcp_watched())) end
--- The writers: descriptors added here, and connections with output
-- queued for the loop to send.
function M.getWriters()
  local _, tw = tcp_watched()
  return concat(writers, tw)
end

--- Internal (braid.testing's cleanup): the descriptors added here, as
-- readers and writers, without braid.tcp's.
function M._descriptors()
  return { table.unpack(readers) }, { table.unpack(writers) }
end

return M
