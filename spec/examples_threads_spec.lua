-- spec for examples/defer_to_thread.lua and examples/defer/call_in_thread.lua:
-- the seed's deferToThread program (a blocking sleep in a thread while the
-- reactor prints dots) and its part two (work run in a thread, the main
-- code going on at once), run by braid
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

  -- the seed's case: stop() comes while the thread still sleeps. braid's
  -- shutdown waits for it with the loop running (docs/threads.md), so the
  -- dots go on and the job's OK still arrives, then the process exits 0
  it("waits for a job still sleeping at stop(), the dots going on, and delivers its OK", function()
    local lines, code = proc.run({ "examples/defer_to_thread.lua", "1", "0.3" })
    local out = table.concat(lines, "\n")
    assert.equal(0, code, out)
    local stop = index_of(lines, "end sleep 1")
    local ok = index_of(lines, "OK")
    assert.is_number(stop, out)
    -- the job's OK follows its last line; a dot may come between when the
    -- loop is slow to take the result (a loaded machine)
    assert.is_true(ok > stop and count(lines, ".", stop + 1, ok - 1) == ok - stop - 1, out)
    assert.equal(".", lines[stop - 2], out)  -- dots right up to the end, past stop() at 0.3 s
    assert.is_true(count(lines, ".", 1, stop) >= 4, out)  -- at most 3 came before stop()
    assert.is_nil(out:find("abandoned"), out)
  end)
end)

describe("examples/defer/call_in_thread.lua", function()
  it("goes on at once while the work runs in a thread, then prints its result and exits", function()
    local lines, code = proc.run({ "examples/defer/call_in_thread.lua", "1000", "5" })
    local out = table.concat(lines, "\n")
    assert.equal(0, code, out)
    assert.equal(7, #lines, out)
    -- the main chunk's four lines, in the seed's order (the job's lines may
    -- come between them: it starts at once, in its own thread)
    local elapsed = 1
    while lines[elapsed] and not tonumber(lines[elapsed]) do elapsed = elapsed + 1 end
    assert.is_true(tonumber(lines[elapsed]) < 1, out)
    local other = index_of(lines, "I will do something else here")
    local shown = nil
    for i, l in ipairs(lines) do if l:match("^<Deferred at 0x%x+>$") then shown = i end end
    local go_end = index_of(lines, "go end")
    assert.is_true(elapsed < other and other < shown and shown < go_end, out)
    local start, stop = index_of(lines, "fun test() is start"), index_of(lines, "fun test() is end")
    assert.is_true(start < stop, out)
    assert.equal("test() built a table of 5 keys", lines[7], out)
  end)

  it("refuses arguments that are no counts, with its usage and status 2", function()
    proc.expect({ "examples/defer/call_in_thread.lua", "x" }, 2,
      { "usage: braid examples/defer/call_in_thread.lua [n] [m]" })
  end)
end)
