-- spec: twins of Twisted's tests of the POSIX reactor base, its file
-- descriptors and socket adoption (twisted/internet/test/test_posixbase.py,
-- test_socket.py and test_abstract.py) that no other spec covered: one
-- describe per Twisted TestCase, each it named after the Twisted test
-- method, the same scenario and the same asserted values. Real sockets on
-- 127.0.0.1, port 0. docs/twisted-tests.md maps every test method to its
-- spec (or the reason it has none).
local proc = require "helpers.proc"

describe("AdoptStreamPortErrorsTestsBuilder", function()
  -- in a new braid process (Twisted's buildReactor): the descriptor of a
  -- socket just closed
  it("test_invalidDescriptor", function()
    local out, code = proc.run({ "-e", [[
      local reactor = require "braid.reactor"
      local socket = require "socket"
      local probe = assert(socket.tcp())
      assert(probe:bind("127.0.0.1", 0))
      local fileno = math.tointeger(probe:getfd())
      probe:close()
      local ok, e = pcall(reactor.adoptStreamPort, fileno, { protocol = {}, noisy = false })
      print(ok, require("braid.error").CannotListenError:isinstance(e), e.socketError)
    ]] })
    assert.equal(0, code, table.concat(out, "\n"))
    assert.same({ "false\ttrue\t[Errno 9] Bad file descriptor" }, out)
  end)
end)
