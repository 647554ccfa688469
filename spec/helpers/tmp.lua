-- spec helper: temporary paths that remove themselves. Every path lives in
-- one private directory (/tmp/braid-spec.XXXXXX, made on first use), so
-- whatever a spec or a process it spawns writes next to a path ("x.1",
-- "x~", a socket in a temp dir) goes too. A path handed out during a test
-- is removed once the test is over (its `finally` and after_each have
-- run: when the next test starts or the spec file ends); one handed out
-- outside a test (at file level, in setup, in before_each) when the spec
-- file ends; and anything still there when this module is collected (at
-- the latest when busted closes the Lua state, which os.exit(code, true)
-- does) then.
local M = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local root          -- the private directory, once made
local count = 0     -- names handed out so far
local in_test = false
local test_paths, file_paths = {}, {}

-- Remove path (a file, socket, fifo or a whole directory tree); a path
-- that is already gone is fine.
local function rm(path)
  local ok, _, code = os.remove(path)
  if ok or code == 2 then return end -- ENOENT
  os.execute("rm -rf -- " .. quote(path))
end

local function remove_all(paths)
  for i = #paths, 1, -1 do
    rm(paths[i])
    paths[i] = nil
  end
end

local function cleanup()
  remove_all(test_paths)
  remove_all(file_paths)
  if root then
    rm(root)
    root = nil
  end
end

-- Collected with this module (insulate drops it when its spec file ends),
-- or at lua_close.
local sentinel = setmetatable({}, { __gc = cleanup })
M._sentinel = sentinel

-- Under busted: scope paths to the running test or the spec file.
local has_busted, busted = pcall(require, "busted")
if has_busted and type(busted.subscribe) == "function" then
  -- a subscriber must return nil, true or later ones (the output handler)
  -- never hear of the event
  local start_sub = busted.subscribe({ "test", "start" }, function()
    remove_all(test_paths) -- the previous test's, its after_each done
    in_test = true
    return nil, true
  end)
  local end_sub = busted.subscribe({ "test", "end" }, function()
    in_test = false
    return nil, true
  end)
  busted.subscribe({ "file", "end" }, function()
    -- removing a subscriber of the channel being published would skip the
    -- next one; these two are on other channels
    if start_sub then
      busted.unsubscribe(start_sub.id, { "test", "start" })
      busted.unsubscribe(end_sub.id, { "test", "end" })
      start_sub, end_sub = nil, nil
      cleanup()
    end
    return nil, true
  end)
end

local function mktemp_d()
  local p = assert(io.popen("mktemp -d /tmp/braid-spec.XXXXXX"))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "spec/helpers/tmp: mktemp -d failed")
  return dir
end

local function private_root()
  if not root then root = mktemp_d() end
  return root
end

--- A new path that does not exist yet, ending in `suffix` (default ""),
-- removed (with all it holds, if it becomes a directory) once the test, or
-- the spec file, is over.
function M.path(suffix)
  count = count + 1
  local path = ("%s/%d%s"):format(private_root(), count, suffix or "")
  local list = in_test and test_paths or file_paths
  list[#list + 1] = path
  return path
end

--- A new file holding `content` (default empty); returns its path.
function M.file(content, suffix)
  local path = M.path(suffix)
  local f = assert(io.open(path, "w"))
  f:write(content or "")
  f:close()
  return path
end

--- A new empty directory; returns its path.
function M.dir(suffix)
  local path = M.path(suffix)
  assert(os.execute("mkdir " .. quote(path)))
  return path
end

--- A new named pipe; returns its path.
function M.fifo(suffix)
  local path = M.path(suffix)
  assert(os.execute("mkfifo " .. quote(path)))
  return path
end

-- Directories kept until busted closes the Lua state, whatever module
-- instance made them: in the registry, which insulate does not restore.
local EXIT_KEY = "spec.helpers.tmp: until exit"

--- A new empty directory in a private directory of its own (removed with
-- it, and whatever was made next to it), removed only
-- when busted's Lua state closes: for a directory something in-process
-- goes on watching after its spec file has ended (braid.reload has no
-- unwatch: removing the directory at the file's end made it log, in a
-- later spec file, that the modules' files were gone).
function M.dirUntilExit()
  local registry = debug.getregistry()
  local keep = registry[EXIT_KEY]
  if not keep then
    keep = {}
    keep.sentinel = setmetatable({}, { __gc = function()
      for i = #keep, 1, -1 do rm(keep[i]) end
    end })
    registry[EXIT_KEY] = keep
  end
  local top = mktemp_d()
  keep[#keep + 1] = top
  -- a directory in it, so that names made from the path ("dir_other")
  -- are inside too
  local dir = top .. "/d"
  assert(os.execute("mkdir " .. quote(dir)))
  return dir
end

--- Remove path now (a file, socket, fifo or directory tree).
M.remove = rm

M.quote = quote

return M
