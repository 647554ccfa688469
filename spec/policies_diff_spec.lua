-- spec/policies_diff_spec.lua: braid.policies against Twisted's
-- twisted.protocols.policies, on random programs.
-- spec/helpers/policies_diff.lua makes the programs (one to three
-- factories: a plain Factory or a LimitTotalConnectionsFactory, with or
-- without an overflow protocol, under up to three of WrappingFactory,
-- TimeoutFactory, ThrottlingFactory (read and write limits, a connection
-- maximum), LimitConnectionsByPeer and TrafficLoggingFactory; protocols
-- that echo, register producers, write in connectionLost and are
-- TimeoutMixins; connections from a few hosts on traced StringTransports;
-- data, writes, writeSequence, loseConnection, abortConnection,
-- connectionLost, producer calls, setTimeout / cancelTimeout /
-- resetTimeout on the TimeoutProtocol and the mixin, resetCounter, and a
-- Clock advance before every operation) and runs them here;
-- spec/peers/policies_diff.py runs the same programs under Debian's
-- /usr/bin/python3 with Twisted. Every trace (what each protocol,
-- producer and transport saw and when; refusals, throttling pauses and
-- resumes, timeouts, logged traffic, errors; each factory's counters, each
-- connection's state, the pending calls) must be the same.
local pdiff = require "helpers.policies_diff"
local td = require "helpers.twisted_diff"

local PROGRAMS = 2000
local SEED = 20261215

local function braid_traces(text)
  return td.braid(pdiff.run, text)
end

-- The kinds of factory that refused a connection somewhere: "peer",
-- "throttle" (its maximum) or "total" (LimitTotalConnectionsFactory).
local function refusers(text, traces)
  local kinds = {}
  for prog in text:gmatch("prog (.-)\nend") do
    local id = prog:match("^(%S+)")
    local outer, of = {}, {}
    for f, layers, base in prog:gmatch("\nfactory (%d+) (%S+) (%S+)") do
      outer[f] = layers ~= "-" and layers:match("^(%a+)") or base:match("^(%a+)")
    end
    for k, f in prog:gmatch("%+ connect (%d+) (%d+)") do of[k] = f end
    for k in traces[id]:gmatch("\n[%d.e-]+ (%d+) refused") do kinds[outer[of[k]]] = true end
  end
  return kinds
end

describe("braid.policies against Twisted's twisted.protocols.policies", function()
  local text = pdiff.generate(SEED, PROGRAMS)

  it("gives the same trace for " .. PROGRAMS .. " random programs", function()
    td.check(pdiff.run, "policies_diff.py", text, PROGRAMS)
  end)

  it("runs programs that reach every operation and outcome", function()
    -- Lua patterns: %d is a digit
    for _, word in ipairs({ " wrap", ",wrap", "timeout:", "throttle:%-:%-:%-", "throttle:%d:",
                            "throttle:[%d-]+:%d+:%d+ ", "peer:1", "peer:2", "log[ ,]",
                            " plain ", " total:%-:over ", " total:%d:%- ", " total:%d:over ",
                            "[a-z,]+,[a-z]+:?[%d.:-]*,[a-z]", " [ep]+b?c? %d",
                            " e?p?b?c %d", " auto\n", " manual\n",
                            "%+ data ", "%+ write ", "%+ wseq %d %-\n", "%+ wseq %d %a+,%a",
                            "%+ lose ", "%+ abort ", "%+ lost %d done", "%+ lost %d lost",
                            "%+ reg %d s", "%+ reg %d p", "%+ unreg ", "%+ ipause ", "%+ iresume ",
                            "%+ istop ", "%+ tset %d %d", "%+ tset %d none", "%+ tcancel ",
                            "%+ treset ", "%+ mset %d %d", "%+ mset %d none", "%+ mreset ",
                            "%+ resetc ", "%+ state\n", "\nadvance 30\n" }) do
      assert.truthy(text:find(word), word)
    end
    local traces = braid_traces(text)
    local all = {}
    for _, t in pairs(traces) do all[#all + 1] = t end
    all = table.concat(all, "\n")
    for _, seen in ipairs({ " %d made\n", " %d made over\n", " %d data %a", " %d lost Done\n",
                            " %d lost Lost\n", " %d timeout\n", " %d mset %-> nil",
                            " %d mset %-> %d", " %d tw bye\n", " %d tws %a+,%a",
                            " %d tws %-\n", " %d tabort\n%S+ %d tlose\n", " %d tstop\n",
                            " %d treg s\n", " %d treg p\n", " %d tunreg\n",
                            "%-> RuntimeError\n",
                            -- a read limit pauses and resumes the transports; a
                            -- write limit, the producers; timeouts fire
                            "\n> [%d.]+%+\n[^>]*%d tpause\n",
                            "\n> [%d.]+%+\n[^>]*%d tresume\n",
                            " %d prod pause\n", " %d prod resume\n",
                            "\n> [%d.]+%+\n[%d.e-]+ %d tlose\n",
                            " open L%d%.%d%-1\n", " open L%d%.%d%-[2-9]\n", "%-%d| %*\n",
                            "%-%d| C %d: %a+\n", "%-%d| S %d: %a+\n", "%-%d| SV %d: %[%a",
                            "%-%d| SV %d: %[%]\n", "%-%d| S %d: %*\n",
                            "%-%d| C %d: F%(ConnectionDone%)", "%-%d| C %d: F%(ConnectionLost%)",
                            "throttle open=[1-9] count=[1-9] read=[1-9]",
                            "written=[1-9]", "log open=%d counter=0", "log open=%d counter=[2-9]",
                            "peers=[%d.]+=2", "total count=[2-9]", "wrap open=[1-9]",
                            "timeout open=[1-9]",
                            "tmo=[%d.]+ armed=true", "tmo=nil",
                            "mix=[%d.]+ armed=true", "mix=nil",
                            -- a timeout closes from its own layer down
                            "disc=true [^\n]*disc=false [^\n]*tr=",
                            "tr=paused", "tr=stopped",
                            "checkReadBandwidthID@", "unthrottleReadsID@",
                            "checkWriteBandwidthID@", "unthrottleWritesID@",
                            "%.timeout@", "%.mixin@", "\npending\n",
                            -- several connections throttled at once, nested
                            -- log factories, log prefixes
                            " %d tpause\n[%d.e-]+ %d tpause\n",
                            " open L(%d)%.%d%-%d+\n[%d.e-]+ open L%1%.",
                            " %d prefix Inner %(%a+%) %(%a+%)\n", " %d prefix Over %(",
                            "\nf%d prefix %a", "host=10%.0%.0%.1:12345" }) do
      assert.truthy(all:find(seen), seen)
    end
    local kinds = refusers(text, traces)
    for _, kind in ipairs({ "peer", "throttle", "total" }) do
      assert.truthy(kinds[kind], "refused by " .. kind)
    end
  end)
end)
