-- spec/factory_diff_spec.lua: braid.protocol's factory lifecycle and
-- ReconnectingClientFactory, and braid.endpoints' description strings,
-- against Twisted's twisted.internet.protocol and twisted.internet.endpoints,
-- on random programs.
-- spec/helpers/factory_diff.lua makes the programs (Factory, ClientFactory
-- and ReconnectingClientFactory subclasses with doStart/doStop in random
-- order, startFactory/stopFactory raising once, buildProtocol with or
-- without resetDelay; fake connectors that log, refuse or accept on
-- connect, and whose stopConnecting is quiet, raises NotConnectingError or
-- another error, or fails the connection; connection failures and losses,
-- retry, stopTrying, resetDelay, chosen factor/initialDelay/maxDelay/
-- maxRetries with jitter 0, Clock advances; and tcp, tcp6 and unix server
-- and client strings with positional and keyword arguments, escapes,
-- defaults and invalid parts) and runs them here; spec/peers/factory_diff.py
-- runs the same programs under Debian's /usr/bin/python3 with Twisted.
-- Every trace (connect attempts and their times, delay, retries,
-- continueTrying, the pending retry, numPorts, start/stopFactory calls,
-- what the factory logs, each operation's error; each parsed endpoint's
-- class and fields, or the error class) must be the same.
local fd = require "helpers.factory_diff"
local td = require "helpers.twisted_diff"

local FACTORY_PROGRAMS = 2000
local ENDPOINT_PROGRAMS = 2000
local SEED = 20261207

local function all_traces(traces)
  local all = {}
  for _, t in pairs(traces) do all[#all + 1] = t end
  return table.concat(all, "\n")
end

local function assert_all(text, words)
  for _, word in ipairs(words) do assert.truthy(text:find(word), word) end
end

describe("braid.protocol's factories against Twisted's", function()
  local text = fd.generate_factory(SEED, FACTORY_PROGRAMS)

  it("give the same trace for " .. FACTORY_PROGRAMS .. " random programs", function()
    td.check(fd.run_factory, "factory_diff.py", text, FACTORY_PROGRAMS)
  end)

  it("run programs that reach every operation and outcome", function()
    -- Lua patterns: %d is a digit
    assert_all(text, { " fac factory ", " fac client ", " fac rcf ", " noisy ", " quiet ",
                       " reset ", " plain ", " start\n", " stop\n", "\nset factor ",
                       "\nset initialDelay ", "\nset maxDelay ", "\nset maxRetries ",
                       "\nconn %d log ", "\nconn %d refuse:%d ", "\nconn %d accept:%d ",
                       " ok\n", " notc\n", " aware\n", " boom\n", "\nstart\n", "\nstop\n",
                       "\nbuild\n", "\nconnecting %d", "\nfailed %d refused", "\nlost %d done",
                       "\nfailed %d none", "\nlost %d timeout", "\nretry\n", "\nretry %d",
                       "\nstoptrying\n", "\nresetdelay\n", "\nadvance ", "\ndefaults\n" })
    local all = all_traces((td.braid(fd.run_factory, text)))
    assert_all(all, { "\nstartFactory\n", "\nstopFactory\n", "= n=2", "-> E1", "-> E2",
                      "c%d connect @[%d.]+\n", "c%d built", "c%d stopConnecting",
                      "retry %-> ValueError",
                      "log Starting factory F", "log Stopping factory F",
                      "log c%d will retry in %d+ seconds", "log Abandoning c%d after %d+ retries",
                      "log Abandoning nil on explicit request", "\ndefaults maxDelay=",
                      "ct=false", "ct=true c=c%d call=[%d.]", "r=[3-9]", "d=3600 ",
                      "d=10 ", "d=1e%+19 ", "built true", "pending [%d.]", "pending\n" })
  end)
end)

describe("braid.endpoints' strings against Twisted's", function()
  local text = fd.generate_endpoints(SEED, ENDPOINT_PROGRAMS)

  it("parse the same for " .. ENDPOINT_PROGRAMS .. " random programs", function()
    td.check(fd.run_endpoints, "factory_diff.py", text, ENDPOINT_PROGRAMS)
  end)

  it("run programs that reach every kind of description and outcome", function()
    assert_all(text, { "\nserver tcp:", "\nserver tcp6:", "\nserver unix:", "\nclient tcp:",
                       "\nclient unix:", "\nclient TCP:", "\nserver bogus",
                       "\nserver :", "\nclient :", "\nserver tcp\n", "\\:", "\\=", "\\\\",
                       "\\[a-z]", "::", ":\n", "interface=", "backlog=", "port=", "host=",
                       "timeout=", "bindAddress=", "mode=", "lockfile=", "checkPID=",
                       "address=", "path=", "colour=", ":=" })
    local all = all_traces((td.braid(fd.run_endpoints, text)))
    assert_all(all, { "-> TCP4ServerEndpoint _port=%d+ _backlog=%d+ _interface='[^']+'",
                      "-> TCP4ServerEndpoint _port=%d+ _backlog=50 _interface=''",
                      "-> TCP6ServerEndpoint _port=%d+ _backlog=%d+ _interface='::'",
                      "-> UNIXServerEndpoint _address='[^']+' _backlog=50 _mode=438",
                      "-> UNIXServerEndpoint _address='[^']+' _backlog=%d+ _mode=432",
                      "-> TCP4ClientEndpoint _host='[^']+' _port=%d+ _timeout=30 _bindAddress=None",
                      "-> TCP4ClientEndpoint _host='[^']+' _port=%d+ _timeout=%d+ _bindAddress=%(",
                      "-> UNIXClientEndpoint _path='[^']+' _timeout=30",
                      "-> UNIXClientEndpoint _path='[^']+' _timeout=5",
                      "_address='/var/run/a:b'", "_path='a=b'", "_path='/p\\x5cq'",
                      "_interface='::1'", "-> ValueError" })
  end)
end)
