-- spec for examples/defer_to_thread.lua: the seed's deferToThread program
-- (a blocking sleep in a thread while the reactor prints dots), run by braid
local proc = require "helpers.proc"

local function index_of(lines, want, from)
  for i = from or 1, #lines do
    if lines[i] == want then return i end
  end
  return nil
end

local function count(lines, want, from, to)
  local n = 0
  for i = from, to do
    if lines[i] == want then n = n + 1 end
  end
  return n
end

describe("examples/defer_to_thread.lua", function()
  it("keeps printing dots while the thread sleeps, then prints OK and stops", function()
    local lines, code = proc.run({ "examples/defer_to_thread.lua", "0.5", "1" })
    local out = table.concat(lines, "\n")
    assert.equal(0, code, out)
    -- the job starts at once (docs/threads.md): its first line and the main
    -- chunk's "go !!!" come in either order, both before any dot
    local go = index_of(lines, "go !!!")
    assert.is_number(go, out)
    assert.is_true(go <= 2, out)
    local start = index_of(lines, "start sleep 0.5")
    local stop = index_of(lines, "end sleep 0.5")
    local ok = index_of(lines, "OK")
    assert.is_number(start, out)
    assert.is_number(stop, out)
    assert.is_number(ok, out)
    assert.is_true(start <= 2 and start < stop and stop < ok, out)
    assert.equal("", lines[stop - 1], out)  -- the seed's "\nend sleep"
    -- the reactor ran on during the blocking sleep: dots between start and end
    assert.is_true(count(lines, ".", start, stop) >= 2, out)
    -- and after it, until stop at 1 s
    assert.is_true(count(lines, ".", ok, #lines) >= 1, out)
    for _, l in ipairs(lines) do
      assert.is_truthy(l == "" or l == "." or l == "OK" or l == "go !!!" or l:find("sleep 0%.5$"), out)
    end
  end)
end)
