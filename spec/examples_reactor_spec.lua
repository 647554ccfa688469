-- spec for examples/reactor/*.lua: the seeds' reactor programs, run by braid
local proc = require "helpers.proc"

local untime = proc.untime
local TIME = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%+%-]%d%d%d%d %[%-%] "

local function strip(lines)
  local out = {}
  for i, l in ipairs(lines) do out[i] = untime(l) end
  return out
end

describe("examples/reactor", function()
  it("basic.lua prints its hint and stops cleanly on SIGINT", function()
    local p = proc.spawn({ "examples/reactor/basic.lua" })
    assert.equal("To stop this example, press ctrl-c", p:waitFor("ctrl%-c"))
    p:kill("INT")
    local lines, code = p:finish()
    assert.equal(0, code)
    assert.same({ "To stop this example, press ctrl-c" }, lines)
  end)

  it("logging.lua logs Log opened, the SIGINT line and Main loop terminated", function()
    local p = proc.spawn({ "examples/reactor/logging.lua" })
    assert.truthy(p:waitFor("ctrl%-c"))
    p:kill("INT")
    local lines, code = p:finish()
    assert.equal(0, code)
    assert.matches(TIME .. "Log opened%.$", lines[1])
    local s = strip(lines)
    assert.same({
      "[-] Log opened.",
      "[-] ",
      "[-] To stop this example, press ctrl-c",
      "[-] ",
      "[-] Received SIGINT, shutting down.",
      "[-] Main loop terminated.",
    }, s)
  end)

  it("call_when_running.lua runs callfunc once the reactor runs", function()
    local lines, code = proc.run({ "examples/reactor/call_when_running.lua" })
    assert.equal(0, code)
    for _, l in ipairs(lines) do assert.matches(TIME, l) end
    assert.same({
      "[-] Log opened.",
      "[-] In callfunc as event handler",
      "[-] This was passed to callfunc",
      "[-] Will shut down",
      "[-] Main loop terminated.",
    }, strip(lines))
  end)

  it("call_later.lua calls back after the delay", function()
    local lines, code = proc.run({ "examples/reactor/call_later.lua", "0.2" })
    assert.equal(0, code)
    local s = strip(lines)
    assert.equal("[-] Log opened.", s[1])
    assert.matches("^%[%-%] %d%d/%d%d/%d%d %d%d:%d%d:%d%d$", s[2])
    assert.matches("^%[%-%] scheduled for %d%d:%d%d:%d%d$", s[3])
    assert.equal("[-] callfunc called after 0.2 sec", s[4])
    assert.matches("^%[%-%] %d%d/%d%d/%d%d %d%d:%d%d:%d%d$", s[5])
    assert.same({ "[-] Will stop", "[-] Main loop terminated." }, { s[6], s[7] })
    assert.equal(7, #s)
  end)

  it("custom_event.lua fires Event1 and its during trigger stops the reactor", function()
    local lines, code = proc.run({ "examples/reactor/custom_event.lua", "0.1" })
    assert.equal(0, code)
    local s = strip(lines)
    local want = {
      "[-] Log opened.", "DATE",
      "[-] callfunc called after 0.1 sec", "DATE",
      "[-] Fire Event1 after 0.1 seconds", "DATE",
      "[-] In Event1_CustomEventHandler .., shutting down",
      "[-] Main loop terminated.",
    }
    assert.equal(#want, #s)
    for i, w in ipairs(want) do
      if w == "DATE" then assert.matches("^%[%-%] %d%d/%d%d/%d%d %d%d:%d%d:%d%d$", s[i])
      else assert.equal(w, s[i]) end
    end
  end)

  it("signal_handler.lua logs SIGHUP and shuts down on SIGINT with its own handler", function()
    local p = proc.spawn({ "examples/reactor/signal_handler.lua" })
    assert.truthy(p:waitFor("Log opened"))
    p:kill("HUP")
    assert.truthy(p:waitFor("In SIGINT_CustomEventHandler"))
    p:kill("INT")
    local lines, code = p:finish()
    assert.equal(0, code)
    assert.same({
      "[-] Log opened.",
      "[-] Recieved signal - SIGHUP",
      "[-] In SIGINT_CustomEventHandler",
      "[-] Recieved signal - SIGINT",
      "[-] In SIGINT_CustomEventHandler",
      "[-] shutting down ....",
      "[-] Main loop terminated.",
    }, strip(lines))
  end)

  it("hello.lua is the slides' twist.py", function()
    local lines, code = proc.run({ "examples/reactor/hello.lua" })
    assert.equal(0, code)
    assert.same({
      "[-] Log opened.",
      "[-] In func as event handler",
      "[-] Hello!",
      "[-] Shutting down now!",
      "[-] Main loop terminated.",
    }, strip(lines))
  end)

  it("hello_later.lua says hello after the delay", function()
    local lines, code = proc.run({ "examples/reactor/hello_later.lua", "0.1" })
    assert.equal(0, code)
    local s = strip(lines)
    assert.equal(6, #s)
    assert.equal("[-] Hello after 0.1 seconds!", s[3])
    assert.equal("[-] Shutting down now!", s[5])
    assert.equal("[-] Main loop terminated.", s[6])
  end)

  it("blocking_sleep.lua runs the due call late, after the blocking sleep", function()
    local p = proc.spawn({ "examples/reactor/blocking_sleep.lua", "0.3", "0.1" })
    assert.truthy(p:waitFor("0.1 seconds have passed!"))
    p:kill("INT")
    local lines, code = p:finish()
    assert.equal(0, code)
    assert.same({ "Hello!", "0.3 seconds have passed!", "0.1 seconds have passed!" }, lines)
  end)
end)
