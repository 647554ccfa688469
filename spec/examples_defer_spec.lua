-- spec for examples/defer/*.lua: the seeds' Deferred, LoopingCall/deferLater and Cooperator programs, run by braid
local proc = require "helpers.proc"

local TIME = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d "

-- every line carries a log timestamp; return the lines without it
local function untimed(lines)
  local out = {}
  for i, l in ipairs(lines) do
    assert.matches(TIME, l)
    out[i] = proc.untime(l)
  end
  return out
end

describe("examples/defer", function()
  it("pod_bay_doors.lua returns the placeholder at once and launches the pod when it fires", function()
    local lines, code = proc.run({ "examples/defer/pod_bay_doors.lua", "0.05" })
    assert.equal(0, code)
    assert.same({
      "Opening the pod bay doors...",
      "open() returned a placeholder; the doors are not open yet",
      "Launching the pod.",
    }, lines)
  end)

  it("callback_later.lua runs the later call on time while the Deferred waits", function()
    local p = proc.spawn({ "examples/defer/callback_later.lua", "0.3", "0.1" })
    assert.equal("0.3 seconds have passed!", p:waitFor("0%.3 seconds"))
    p:kill("INT")
    local lines, code = p:finish()
    assert.equal(0, code)
    assert.same({ "Hello!", "0.1 seconds have passed!", "0.3 seconds have passed!" }, lines)
  end)

  it("callbacks_errbacks.lua takes the callback path, the errback path, and refuses a second callback", function()
    local lines, code = proc.run({ "examples/defer/callbacks_errbacks.lua" })
    assert.equal(0, code)
    assert.same({
      "-- d:callback(42)",
      "your_ok_callback: 42",
      "your_common_callback: succeeded with 42",
      "-- d:errback(ValueError)",
      "your_err_callback: no result",
      "your_common_callback: failed with ValueError: no result",
      "-- d:callback(43) again",
      "second callback: ok=false, error=AlreadyCalledError",
      "AlreadyCalledError: true",
    }, lines)
  end)

  it("sorted_names.lua sorts the names once the Deferred fires", function()
    local lines, code = proc.run({ "examples/defer/sorted_names.lua", "0.05" })
    assert.equal(0, code)
    assert.same({ "Bowman", "Floyd", "HAL", "Kimball", "Poole" }, lines)
  end)

  it("pprint_names.lua pretty-prints the sorted names as Python's pprint, once per chain", function()
    local lines, code = proc.run({ "examples/defer/pprint_names.lua", "0.05" })
    assert.equal(0, code)
    local one = {
      "['Bowman, David',",
      " 'Floyd, Heywood',",
      " 'HAL 9000',",
      " 'Hunter, Charles',",
      " 'Kaminsky, Victor',",
      " 'Kimball, Jack',",
      " 'Poole, Frank']",
    }
    local both = table.move(one, 1, #one, #one + 1, table.move(one, 1, #one, 1, {}))
    assert.same(both, lines)
  end)

  it("looping_call.lua starts a LoopingCall after deferLater and stops after three ticks", function()
    local lines, code = proc.run({ "examples/defer/looping_call.lua", "0.05" })
    assert.equal(0, code)
    assert.same({
      "[-] Log opened.",
      "[-] deferLater: starting in 0.05 seconds",
      "[-] Starting a LoopingCall every 0.05 seconds",
      "[-] tick 1 of 3",
      "[-] tick 2 of 3",
      "[-] tick 3 of 3",
      "[-] Loop stopped after 3 ticks (running: false)",
      "[-] Main loop terminated.",
    }, untimed(lines))
  end)

  it("cooperative_tasks.lua interleaves two tasks and completes task2 during task1's wait", function()
    local lines, code = proc.run({ "examples/defer/cooperative_tasks.lua", "0.2" })
    assert.equal(0, code)
    assert.same({
      "task1: working",
      "task2: working",
      "task1: waiting 0.4 seconds",
      "task2: waiting 0.2 seconds",
      "task2: complete",
      "task1: complete",
      "both tasks are done",
    }, lines)
  end)
end)
