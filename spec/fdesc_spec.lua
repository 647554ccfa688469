-- spec for lua/braid/fdesc.lua and runtime/fdwatch.c: addReader/addWriter descriptors
local reactor = require "braid.reactor"
local core = require "braid.core"

local loop = require "helpers.loop"
local spin = loop.spin


describe("braid.fdesc", function()
  local fdesc = require "braid.fdesc"
  local tcp = require "braid.tcp"
  -- the readers or writers without braid.tcp's own ports and connections
  -- (the specs below borrow those only for their descriptors)
  local function raw(list)
    local out = {}
    for _, d in ipairs(list) do
      if not tcp._isSelectable(d) then out[#out + 1] = d end
    end
    return out
  end
  local work0, clients
  before_each(function() work0, clients = core.work(), {} end)
  -- a client protocol kept in `clients`, closed after each spec
  local Client = { connectionMade = function(self) clients[#clients + 1] = self.transport end }
  after_each(function()
    for _, d in ipairs(raw(fdesc.getReaders())) do fdesc.removeReader(d) end
    for _, d in ipairs(raw(fdesc.getWriters())) do fdesc.removeWriter(d) end
    for _, t in ipairs(clients) do t:abortConnection() end
    -- every connection's close delivered: no work left for the loop
    spin(function() return core.work() <= work0 and core.tcp_undelivered() == 0 end)
  end)

  -- stdin of busted is not reliable; use a listening port's fd as a
  -- readable descriptor: it becomes readable when a client connects
  local function listening_fd()
    local port = reactor.listenTCP(0, { protocol = {}, noisy = false }, 50, "127.0.0.1")
    return port
  end

  it("calls doWrite on a writable descriptor until it is removed", function()
    local port = listening_fd()
    finally(function() port:stopListening() end)
    -- a connected client socket's fd is writable at once
    local t
    local C = { connectionMade = function(self) t = self.transport end }
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = C, noisy = false })
    spin(function() return t ~= nil end)
    local n = 0
    local d = { fileno = function() return t:fileno() end,
                doWrite = function(self) n = n + 1 if n == 3 then reactor.removeWriter(self) end end,
                connectionLost = function() end }
    reactor.addWriter(d)
    assert.same({ d }, raw(reactor.getWriters()))
    spin(function() return n == 3 end)
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(3, n)
    assert.same({}, raw(reactor.getWriters()))
    t:abortConnection()
  end)

  -- both were watched and both called; a descriptor closed without
  -- removeReader, whose number went to a new one, made the same mistake
  it("refuses a second descriptor on a watched fd with ValueError, until the first is removed", function()
    local port = listening_fd()
    finally(function() port:stopListening() end)
    local function desc() return { fileno = function() return port:fileno() end,
                                    doRead = function() end, doWrite = function() end,
                                    connectionLost = function() end } end
    local a, b = desc(), desc()
    reactor.addReader(a)
    for _, add in ipairs({ reactor.addReader, reactor.addWriter }) do
      local ok, e = pcall(add, b)
      assert.is_false(ok)
      assert.equal(require("braid.error").ValueError, e.class)
      assert.matches(("fd %d is watched for another descriptor"):format(port:fileno()), e.message)
    end
    assert.same({ a }, raw(reactor.getReaders()))
    assert.same({}, raw(reactor.getWriters()))
    reactor.addWriter(a)  -- the same descriptor may add the other direction
    reactor.removeReader(a)
    reactor.removeWriter(a)
    reactor.addReader(b)
    assert.same({ b }, raw(reactor.getReaders()))
  end)

  it("removes a descriptor whose doRead returns CONNECTION_DONE and calls connectionLost", function()
    local port = listening_fd()
    local d
    d = { fileno = function() return port:fileno() end,
          doRead = function() return reactor.CONNECTION_DONE end,
          connectionLost = function(self, r) self.reason = r end }
    -- take the port's fd away from the port's own watcher first
    reactor.addReader(d)
    assert.same({ d }, raw(reactor.getReaders()))
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = Client, noisy = false })
    spin(function() return d.reason ~= nil end)
    assert.is_truthy(d.reason:check(require("braid.error").ConnectionDone))
    assert.same({}, raw(reactor.getReaders()))
    port:stopListening()
  end)

  -- a reader on a listening port given doRead (or none), made readable by
  -- a client; returns its connectionLost reason, the error log silenced
  local function failing_reader(doRead)
    local port = listening_fd()
    local d = { fileno = function() return port:fileno() end, doRead = doRead,
                connectionLost = function(self, r) self.reason = r end }
    local log = require "braid.log"
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    finally(function() log.setErrorStream(prev) end)
    reactor.addReader(d)
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = Client, noisy = false })
    spin(function() return d.reason ~= nil end)
    port:stopListening()
    return d.reason
  end

  it("removes a descriptor whose doRead raises and gives it a Failure of the error", function()
    local reason = failing_reader(function() error("read failed") end)
    assert.matches("read failed", reason:getErrorMessage())
    assert.same({}, raw(reactor.getReaders()))
  end)

  it("names the missing method of a descriptor without doRead", function()
    assert.equal("descriptor has no doRead method", failing_reader(nil):getErrorMessage())
    assert.same({}, raw(reactor.getReaders()))
  end)

  it("logs the errors of doRead and connectionLost under the descriptor's logPrefix", function()
    local port = listening_fd()
    local d = { fileno = function() return port:fileno() end,
                logPrefix = function() return "MyDesc" end,
                doRead = function() error("read failed") end,
                connectionLost = function() error("lost failed") end }
    local log = require "braid.log"
    local systems = {}
    local function observer(ev)
      if ev.isError then systems[#systems + 1] = ev.system end
    end
    log.addObserver(observer)
    local prev = log.setErrorStream({ write = function() end, flush = function() end })
    finally(function()
      log.removeObserver(observer)
      log.setErrorStream(prev)
    end)
    reactor.addReader(d)
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = Client, noisy = false })
    spin(function() return #systems >= 2 end)
    assert.same({ "MyDesc", "MyDesc" }, systems)
    port:stopListening()
  end)

  it("removes a writer whose doWrite returns CONNECTION_LOST and gives it ConnectionLost", function()
    local port = listening_fd()
    finally(function() port:stopListening() end)
    local t
    local C = { connectionMade = function(self) t = self.transport clients[#clients + 1] = t end }
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = C, noisy = false })
    spin(function() return t ~= nil end)
    local writes = 0
    local d = { fileno = function() return t:fileno() end,
                doWrite = function() writes = writes + 1 return reactor.CONNECTION_LOST end,
                connectionLost = function(self, r) self.reason = r end }
    reactor.addWriter(d)
    spin(function() return d.reason ~= nil end)
    assert.equal(1, writes)
    assert.is_truthy(d.reason:check(require("braid.error").ConnectionLost))
    assert.same({}, raw(reactor.getWriters()))
  end)

  it("removes a descriptor whose doWrite returns a Failure and passes that Failure on", function()
    local port = listening_fd()
    finally(function() port:stopListening() end)
    local t
    local C = { connectionMade = function(self) t = self.transport clients[#clients + 1] = t end }
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = C, noisy = false })
    spin(function() return t ~= nil end)
    local errors = require "braid.error"
    local f = require("braid.failure").Failure(errors.ConnectionRefusedError())
    local d = { fileno = function() return t:fileno() end,
                doWrite = function() return f end,
                connectionLost = function(self, r) self.reason = r end }
    reactor.addWriter(d)
    spin(function() return d.reason ~= nil end)
    assert.equal(f, d.reason)
    assert.same({}, raw(reactor.getWriters()))
  end)

  it("removeAll returns every descriptor once", function()
    local p1, p2 = listening_fd(), listening_fd()
    finally(function() p1:stopListening() p2:stopListening() end)
    local a = { fileno = function() return p1:fileno() end, doRead = function() end }
    local b = { fileno = function() return p2:fileno() end, doWrite = function() end }
    reactor.addReader(a)
    reactor.addWriter(a)
    reactor.addWriter(b)
    local all = reactor.removeAll()
    -- the descriptors, then the listening ports (which stop accepting)
    assert.same({ a, b, p1, p2 }, all)
    assert.same({}, raw(reactor.getReaders()))
    assert.same({}, raw(reactor.getWriters()))
  end)

  it("raises for a descriptor without a usable fileno", function()
    assert.has_error(function() reactor.addReader({}) end,
      "TypeError: bad argument #1 to 'addReader' (descriptor's fileno() must return an integer"
      .. " from 0 to 2147483647, got an error)")
    assert.has_error(function() reactor.addReader({ fileno = function() return -1 end }) end,
      "TypeError: bad argument #1 to 'addReader' (descriptor's fileno() must return an integer"
      .. " from 0 to 2147483647, got -1)")
  end)

  it("refuses a descriptor that is not open, a regular file or /dev/null, with no warning of libevent's own",
    function()
    -- libevent prints "[warn] Epoll ADD(...) failed" to stderr when asked to
    -- watch a closed descriptor or a regular file: braid checks it first
    local proc = require "helpers.proc"
    local path = proc.script([[
local reactor = require "braid.reactor"
local ok, e = pcall(reactor.addReader, { fileno = function() return tonumber(arg[1]) end,
  doRead = function() end, connectionLost = function() end })
print(ok, tostring(e), #reactor.getReaders())
]])
    finally(function() os.remove(path) end)
    local function run(fd, input)
      -- the script's standard input is the script itself (a regular file)
      -- or input
      local p = assert(io.popen(("%s %s %d < %s 2>&1"):format(proc.quote(proc.BIN), proc.quote(path),
        fd, proc.quote(input or path))))
      local out = p:read("a")
      p:close()
      return out
    end
    assert.matches("^false\t.*ValueError: bad argument #1 to 'addReader' %(cannot watch "
      .. "descriptor 100000: Bad file descriptor%)\t0\n$", run(100000))
    assert.matches("^false\t.*ValueError: bad argument #1 to 'addReader' %(cannot watch "
      .. "descriptor 0: Operation not permitted%)\t0\n$", run(0))
    -- a character device epoll refuses: libevent's warning came once the
    -- loop ran (twice), after addReader had seemed to succeed
    assert.matches("^false\t.*ValueError: bad argument #1 to 'addReader' %(cannot watch "
      .. "descriptor 0: Operation not permitted%)\t0\n$", run(0, "/dev/null"))
  end)

  it("drops a descriptor closed while watched, with ConnectionLost, on the poll and select backends",
    function()
    -- poll reports a closed fd (POLLNVAL) on every turn, which libevent
    -- passed on as readable: doRead ran again and again; select fails the
    -- whole wait with EBADF, so the loop spun on "[warn] select: Bad file
    -- descriptor" and nothing was ever called
    local proc = require "helpers.proc"
    local path = proc.script([[
local reactor = require "braid.reactor"
local socket = require "socket"
local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
local a = assert(socket.connect("127.0.0.1", port))
local b = assert(srv:accept())
local quiet = assert(socket.connect("127.0.0.1", port))  -- never readable
assert(b:send("x"))
local fd, reads, lost, left = a:getfd(), 0, {}, nil
local d = { fileno = function() return fd end }
function d.doRead() reads = reads + 1 a:close() end  -- closed, still watched
function d.connectionLost(_, r)
  lost[#lost + 1] = r.value.__name
  left = reactor.getReaders()
  reactor.callLater(0, reactor.stop)
end
local q = { fileno = function() return quiet:getfd() end, doRead = function() end }
reactor.addReader(d)
reactor.addReader(q)
local guard = reactor.callLater(2, function() print("timed out") reactor.stop() end)
reactor.run()
if guard:active() then guard:cancel() end
print(reads, table.concat(lost, ","), left and #left, left and left[1] == q)
]])
    finally(function() os.remove(path) end)
    for _, backend in ipairs({ "poll", "select" }) do
      local out, code = proc.run({ "--reactor", backend, path })
      assert.equal(0, code)
      local warnings = 0
      for i = #out, 1, -1 do
        if out[i]:find("select: Bad file descriptor", 1, true) then
          warnings = warnings + 1
          table.remove(out, i)
        end
      end
      assert.same({ "1\tConnectionLost\t1\ttrue" }, out, backend)
      assert.is_true(warnings <= 1, backend .. ": " .. warnings .. " warnings")
    end
  end)

  it("adding twice keeps one entry", function()
    local p1 = listening_fd()
    finally(function() p1:stopListening() end)
    local a = { fileno = function() return p1:fileno() end, doRead = function() end }
    reactor.addReader(a)
    reactor.addReader(a)
    assert.equal(1, #raw(reactor.getReaders()))
    reactor.removeReader(a)
    reactor.removeReader(a)
    assert.same({}, raw(reactor.getReaders()))
  end)

  -- a connected client's fd: writable at once, readable once the server writes
  local function connected()
    local port = listening_fd()
    local t
    local C = { connectionMade = function(self) t = self.transport clients[#clients + 1] = t end }
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = C, noisy = false })
    spin(function() return t ~= nil end)
    return port, t
  end

  it("watches a descriptor again after it was removed from both sets", function()
    local port, t = connected()
    finally(function() port:stopListening() end)
    local writes = 0
    local d = { fileno = function() return t:fileno() end,
                doWrite = function(self) writes = writes + 1 reactor.removeWriter(self) end,
                connectionLost = function() end }
    reactor.addWriter(d)
    spin(function() return writes == 1 end)
    assert.same({}, raw(reactor.getWriters()))
    reactor.addWriter(d)
    assert.same({ d }, raw(reactor.getWriters()))
    spin(function() return writes == 2 end)
    assert.same({}, raw(reactor.getWriters()))
  end)

  it("keeps writing to a descriptor that was a reader too once it stops reading", function()
    local port, t = connected()
    finally(function() port:stopListening() end)
    local writes = 0
    local d = { fileno = function() return t:fileno() end,
                doRead = function() end,
                doWrite = function(self)
                  writes = writes + 1
                  if writes == 2 then reactor.removeWriter(self) end
                end,
                connectionLost = function() end }
    reactor.addReader(d)
    reactor.addWriter(d)
    reactor.removeReader(d)
    assert.same({}, raw(reactor.getReaders()))
    assert.same({ d }, raw(reactor.getWriters()))
    spin(function() return writes == 2 end)
    assert.same({}, raw(reactor.getWriters()))
  end)
end)

-- Twisted's reactors list their own TCP ports and connections among the
-- readers and writers (test_tcp's checks of reactor.getReaders()): braid
-- answered only with descriptors added by addReader/addWriter
describe("reactor.getReaders/getWriters with TCP ports and connections", function()
  local fdesc = require "braid.fdesc"
  local work0
  before_each(function() work0 = core.work() end)
  after_each(function()
    spin(function() return core.work() <= work0 and core.tcp_undelivered() == 0 end)
  end)

  local function set_of(list)
    local s = {}
    for _, v in ipairs(list) do s[v] = (s[v] or 0) + 1 end
    return s
  end

  -- a listening port, and a connected client and server protocol
  local function pair()
    local made = {}
    made.accepted = 0
    local S = { connectionMade = function(self)
                  made.accepted = made.accepted + 1
                  made.server = made.server or self
                end,
                dataReceived = function(self, data) self.got = (self.got or "") .. data end,
                connectionLost = function(self) self.lost = (self.lost or 0) + 1 end }
    local C = { connectionMade = function(self) made.client = self end,
                connectionLost = function(self) self.lost = (self.lost or 0) + 1 end }
    local port = reactor.listenTCP(0, { protocol = S, noisy = false }, 50, "127.0.0.1")
    assert.same({ port }, reactor.getReaders())
    assert.same({}, reactor.getWriters())
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = C, noisy = false })
    spin(function() return made.server ~= nil and made.client ~= nil end)
    return port, made.server, made.client, made
  end

  it("lists a port while it listens and each connection while it reads", function()
    local port, s, c = pair()
    local st, ct = s.transport, c.transport
    -- ports first, then connections in the order they were made
    local first, second = st, ct
    if ct.sessionno < st.sessionno then first, second = ct, st end
    assert.same({ port, first, second }, reactor.getReaders())
    assert.same({}, reactor.getWriters())
    st:pauseProducing()
    assert.same({ port, ct }, reactor.getReaders())
    st:resumeProducing()
    assert.same({ port, first, second }, reactor.getReaders())
    ct:loseConnection()
    spin(function() return c.lost == 1 and s.lost == 1 end)
    assert.same({ port }, reactor.getReaders())
    port:stopListening()
    assert.same({}, reactor.getReaders())
    assert.same({}, reactor.getWriters())
  end)

  it("lists a connection as a writer while the kernel buffer is full", function()
    local port, s, c = pair()
    finally(function() port:stopListening() end)
    local st, ct = s.transport, c.transport
    ct:pauseProducing()  -- the client reads nothing: the server's writes back up
    st:write(string.rep("x", 16 * 1024 * 1024))
    assert.is_true(st:getWriteBufferSize() > 0)
    assert.same({ st }, reactor.getWriters())
    assert.same(set_of({ port, st }), set_of(reactor.getReaders()))
    -- a loseConnection stops the reading, the output still goes
    st:loseConnection()
    assert.same({ port }, reactor.getReaders())
    assert.same({ st }, reactor.getWriters())
    st:abortConnection()
    ct:abortConnection()
    spin(function() return c.lost == 1 and s.lost == 1 end)
    assert.same({ port }, reactor.getReaders())
    assert.same({}, reactor.getWriters())
  end)

  it("removeAll returns ports and connections, which stop until added again", function()
    local port, s, c, made = pair()
    finally(function() port:stopListening() end)
    local st, ct = s.transport, c.transport
    ct:pauseProducing()
    st:write(string.rep("x", 16 * 1024 * 1024))
    local queued = st:getWriteBufferSize()
    local removed = reactor.removeAll()
    assert.same(set_of({ port, st }), set_of(removed))  -- each once; ct was in neither
    assert.equal(2, #removed)
    assert.same({}, reactor.getReaders())
    assert.same({}, reactor.getWriters())
    -- nothing is accepted, read or sent while removed
    local late
    reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = {
      connectionMade = function(self) late = self end }, noisy = false })
    ct:resumeProducing()
    ct:write("ping")
    spin(function() return late ~= nil end)  -- the kernel completes it unaccepted
    for _ = 1, 10 do reactor.iterate(0.01) end
    assert.equal(queued, st:getWriteBufferSize())
    assert.is_nil(s.got)
    assert.equal(1, made.accepted)
    assert.same({ ct, late.transport }, reactor.getReaders())
    -- added again: the port accepts, the server reads and sends
    reactor.addReader(port)
    reactor.addReader(st)
    reactor.addWriter(st)
    assert.same({ st }, reactor.getWriters())
    spin(function() return s.got == "ping" and made.accepted == 2 end)
    spin(function() return st:getWriteBufferSize() < queued end)
    local ok, e = pcall(reactor.addWriter, port)
    assert.is_false(ok)
    assert.equal("ValueError: bad argument #1 to 'addWriter' (a listening port is never a writer)",
      tostring(e))
    st:abortConnection()
    ct:abortConnection()
    late.transport:abortConnection()
    spin(function() return c.lost == 1 and s.lost == 1 end)
    spin(function() return #reactor.getReaders() == 1 end)  -- the late one's server end
    -- removed once, closed once: one connectionLost each
    for _ = 1, 3 do reactor.iterate(0) end
    assert.equal(1, s.lost)
    assert.equal(1, c.lost)
  end)

  it("removeAll takes out a connection that only writes, and returns it", function()
    local port, s, c = pair()
    finally(function() port:stopListening() end)
    local st, ct = s.transport, c.transport
    ct:pauseProducing()
    st:pauseProducing()  -- not reading: a writer only
    st:write(string.rep("x", 16 * 1024 * 1024))
    local queued = st:getWriteBufferSize()
    assert.is_true(queued > 0)
    assert.same({ port }, reactor.getReaders())
    assert.same({ st }, reactor.getWriters())
    local removed = reactor.removeAll()
    assert.same(set_of({ port, st }), set_of(removed))
    assert.same({}, reactor.getWriters())
    for _ = 1, 5 do reactor.iterate(0.01) end
    assert.equal(queued, st:getWriteBufferSize())
    st:abortConnection()
    ct:abortConnection()
    spin(function() return c.lost == 1 and s.lost == 1 end)
  end)

  it("removeReader on a connection is pauseProducing; a write restarts a removed writer", function()
    local port, s, c = pair()
    finally(function() port:stopListening() end)
    local st, ct = s.transport, c.transport
    reactor.removeReader(st)
    assert.is_true(st.paused)
    reactor.addReader(st)
    assert.is_false(st.paused)
    ct:pauseProducing()
    st:write(string.rep("x", 16 * 1024 * 1024))
    reactor.removeWriter(st)
    assert.same({}, reactor.getWriters())
    st:write("more")  -- as Twisted's write: startWriting
    assert.same({ st }, reactor.getWriters())
    st:abortConnection()
    ct:abortConnection()
    spin(function() return c.lost == 1 and s.lost == 1 end)
  end)

  it("a loseConnection restarts a removed writer: the queue is sent, then the close", function()
    local port, s, c = pair()
    finally(function() port:stopListening() end)
    local st, ct = s.transport, c.transport
    local got = 0
    function c.dataReceived(_, data) got = got + #data end
    ct:pauseProducing()
    st:write(string.rep("x", 16 * 1024 * 1024))
    local queued = st:getWriteBufferSize()
    assert.is_true(queued > 0)
    reactor.removeWriter(st)
    assert.same({}, reactor.getWriters())
    st:loseConnection()  -- as Twisted's loseConnection: startWriting
    assert.same({ st }, reactor.getWriters())
    ct:resumeProducing()
    spin(function() return c.lost == 1 and s.lost == 1 end)
    assert.equal(16 * 1024 * 1024, got)
    assert.same({ port }, reactor.getReaders())
    assert.same({}, reactor.getWriters())
  end)

  -- a port whose accepted server protocols are kept in the list returned;
  -- on_made(port, protocol) runs in each connectionMade; n clients of
  -- luasocket connected to it (the kernel completes them, unaccepted), and
  -- a function that connects one more. All closed when the test ends.
  local function port_with_backlog(n, on_made)
    local socket = require "socket"
    local servers, port = {}, nil
    local S = { connectionMade = function(self)
                  servers[#servers + 1] = self
                  if on_made then on_made(port, self) end
                end }
    port = reactor.listenTCP(0, { protocol = S, noisy = false }, 50, "127.0.0.1")
    local socks = {}
    local function connect()
      local sk = assert(socket.tcp())
      socks[#socks + 1] = sk
      assert(sk:connect("127.0.0.1", port:getHost().port))
    end
    for _ = 1, n do connect() end
    finally(function()  -- busted keeps one finally per test: this is it
      for _, sk in ipairs(socks) do sk:close() end
      for _, sp in ipairs(servers) do sp.transport:abortConnection() end
      port:stopListening()
    end)
    return port, servers, connect
  end

  it("removeReader(port) in connectionMade stops accepting at once; addReader accepts the rest", function()
    local removed = 0
    local port, servers = port_with_backlog(3, function(p)
      if removed == 0 then removed = 1 reactor.removeReader(p) end
    end)
    spin(function() return servers[1] ~= nil end)
    -- the other two wait in the backlog (Twisted's doRead accepts the rest
    -- of its batch first)
    for _ = 1, 10 do reactor.iterate(0.01) end
    assert.equal(1, #servers)
    assert.same({ servers[1].transport }, reactor.getReaders())
    reactor.addReader(port)
    spin(function() return #servers == 3 end)
    assert.equal(port, reactor.getReaders()[1])
  end)

  it("does not wake for a removed port's pending connection", function()
    local port, servers, connect = port_with_backlog(0)
    reactor.removeReader(port)
    connect()  -- completed by the kernel
    local fired = false
    reactor.callLater(0.05, function() fired = true end)
    -- nothing to wake for but the timer: a turn or two (a stray wakeup
    -- left by an earlier spec) reach it; a port still watched would wake
    -- every turn at once, readable, and accept nothing
    local turns = 0
    while not fired and turns < 5 do turns = turns + 1 reactor.iterate(2) end
    assert.is_true(fired)
    assert.same({}, servers)
  end)

  it("lists a client still connecting in neither list", function()
    -- 127.0.0.2:n with a full accept queue drops SYNs: the client stays connecting
    local socket = require "socket"
    local hole = assert(socket.tcp())
    assert(hole:bind("127.0.0.2", 0))
    assert(hole:listen(0))
    local _, n = hole:getsockname()
    local fillers = {}
    for i = 1, 3 do
      fillers[i] = socket.tcp()
      fillers[i]:settimeout(0)
      fillers[i]:connect("127.0.0.2", n)
    end
    local failed
    local connector = reactor.connectTCP("127.0.0.2", tonumber(n), { protocol = {}, noisy = false,
      clientConnectionFailed = function(_, _, r) failed = r end })
    finally(function()
      if connector.state == "connecting" then connector:stopConnecting() end
      spin(function() return failed ~= nil end)
      for _, f in ipairs(fillers) do f:close() end
      hole:close()
    end)
    for _ = 1, 10 do reactor.iterate(0.01) end
    assert.equal("connecting", connector.state)
    assert.same({}, reactor.getReaders())
    assert.same({}, reactor.getWriters())
  end)

  it("closes removed ports and connections at shutdown, with one connectionLost each", function()
    local proc = require "helpers.proc"
    local path = proc.script([[
local reactor = require "braid.reactor"
local lost, stops, server = {}, 0, nil
local P = { connectionMade = function(self) server = server or self end,
            connectionLost = function(self, r) lost[#lost + 1] = r.value.class.__name end }
local f = { protocol = P, noisy = false, stopFactory = function() stops = stops + 1 end }
local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
reactor.connectTCP("127.0.0.1", port:getHost().port, { protocol = P, noisy = false })
local guard = reactor.callLater(5, function() print("timed out") reactor.stop() end)
local function check()
  if not guard:active() then return end
  if not server or #reactor.getReaders() < 3 then return reactor.callLater(0.01, check) end
  guard:cancel()
  server.transport:write(string.rep("x", 16 * 1024 * 1024))
  print("removed", #reactor.removeAll(), #reactor.getReaders(), #reactor.getWriters())
  reactor.stop()
end
reactor.callWhenRunning(check)
reactor.run()
table.sort(lost)
print("lost", table.concat(lost, " "), "stopFactory", stops, port.connected)
print("after", #reactor.getReaders(), #reactor.getWriters(), #reactor.removeAll())
]])
    finally(function() os.remove(path) end)
    local p = assert(io.popen(("%s %s 2>&1"):format(proc.BIN, path)))
    local out = p:read("a")
    p:close()
    assert.equal("removed\t3\t0\t0\nlost\tConnectionLost ConnectionLost\tstopFactory\t1\tfalse\n"
      .. "after\t0\t0\t0\n", out)
  end)
end)
