-- spec for examples/echo.lua, http_hello.lua, proxy.lua, poetry_client.lua, lowlevel_reader.lua (and runtime/tcp.c under a real peer)
local proc = require "helpers.proc"
local tmp = require "helpers.tmp"
local reactor = require "braid.reactor"
local core = require "braid.core"
local protocol = require "braid.protocol"

local quote = proc.quote

local loop = require "helpers.loop"
local function spin(cond, limit) loop.spin(cond, limit or 10) end

local function sh(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  f:close()
  return out
end

-- start an example server, return the process and its port
local function serve(script, ...)
  local p = proc.spawn({ script, ... })
  local line = p:waitFor("port %d+")
  assert(line, "server did not start: " .. table.concat(p.lines, "\n"))
  return p, tonumber(line:match("port (%d+)"))
end

local function finish(p)
  p:kill("TERM")
  p:finish()
end

-- run a braid child in the background, its output to a file the reactor
-- loop can poll without blocking; a last line "exit N" gives its status
-- (137: killed by the 20 s limit, a child that did not stop). Returns that
-- file's path and the background command (for a later stop()).
local function background(args, prefix)
  local out = tmp.path()
  local parts = {}
  for i, a in ipairs(args) do parts[i] = quote(a) end
  local bg = proc.background(("cd %s && %s timeout -s KILL 20 %s %s > %s 2>&1; echo \"exit $?\" >> %s"):format(
    quote(proc.root), prefix or "", quote(proc.BIN), table.concat(parts, " "), quote(out), quote(out)))
  return out, bg
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

describe("stream examples", function()
  -- busted keeps only the last finally() of a spec: cleanups go in a list,
  -- run in reverse order; then every connection's close is delivered, so
  -- the loop is left with no work (a braid interpreter would run it on)
  local cleanups, work0
  local function later(f) cleanups[#cleanups + 1] = f end
  before_each(function()
    cleanups, work0 = {}, core.work()
  end)
  after_each(function()
    for i = #cleanups, 1, -1 do cleanups[i]() end
    spin(function() return core.work() <= work0 and core.tcp_undelivered() == 0 end, 5)
  end)

  it("echo.lua echoes what nc and socat send", function()
    local p, port = serve("examples/echo.lua", "0")
    later(function() finish(p) end)
    assert.equal("hello over nc", sh(("printf 'hello over nc' | nc -N 127.0.0.1 %d"):format(port)))
    assert.equal("via socat\n", sh(("echo 'via socat' | socat -t 2 - TCP:127.0.0.1:%d"):format(port)))
  end)

  it("echo.lua with no argument serves the lecture's port 9000", function()
    local p = proc.spawn({ "examples/echo.lua" })
    later(function() finish(p) end)
    -- either it listens on 9000, or 9000 is taken on this machine and the
    -- error it dies with names that port: both show the default
    local line = p:waitFor("9000")
    if line and line:find("in use", 1, true) then
      assert.matches("CannotListenError: Couldn't listen on any:9000: [Errno 98] Address already in use", line, 1, true)
      return
    end
    assert.equal("echo server listening on port 9000", line)
    assert.equal("lecture", sh("printf lecture | nc -N 127.0.0.1 9000"))
  end)

  it("echo.lua echoes a megabyte intact to a braid client", function()
    local p, port = serve("examples/echo.lua", "0")
    later(function() finish(p) end)
    local payload = string.rep("0123456789abcdef", 65536)
    local got, n, lost = {}, 0, false
    local C = {}
    function C:connectionMade() self.transport:write(payload) end
    function C:dataReceived(d)
      got[#got + 1] = d
      n = n + #d
      if n >= #payload then self.transport:loseConnection() end
    end
    function C:connectionLost() lost = true end
    reactor.connectTCP("127.0.0.1", port, { protocol = C, noisy = false })
    spin(function() return lost end)
    assert.equal(payload, table.concat(got))
  end)

  it("http_hello.lua answers two curl requests on one kept-alive connection", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local url = ("http://127.0.0.1:%d/"):format(port)
    local out = sh(("curl -sv %s %sagain 2>&1"):format(url, url))
    local bodies = select(2, out:gsub("Hello, world!", ""))
    assert.equal(2, bodies)
    assert.matches("Re%-using existing connection", out)
    assert.matches("HTTP/1.1 200 OK", out)
    assert.equal("Hello, world!\n", sh(("curl -s -H 'Connection: close' %s"):format(url)))
  end)

  -- send raw bytes to an example server with /usr/bin/python3 and return
  -- the status codes of the responses and whether the server closed, then
  -- all it sent
  local function http_raw(port, payload)
    local py = table.concat({
      "import socket, sys, re",
      "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))",
      "s.settimeout(5)",
      "s.sendall(sys.stdin.buffer.read())",
      "data = b''",
      "closed = 'open'",
      "while True:",
      "    try:",
      "        d = s.recv(65536)",
      "    except socket.timeout:",
      "        break",
      "    except ConnectionResetError:",
      "        closed = 'reset'; break",
      "    if not d:",
      "        closed = 'closed'; break",
      "    data += d",
      "print(' '.join(c.decode() for c in re.findall(rb'HTTP/1.1 (\\d+)', data)), closed)",
      "sys.stdout.flush()",
      "sys.stdout.buffer.write(data)",
    }, "\n")
    local src, input = tmp.path(), tmp.path()
    local f = assert(io.open(src, "w")) f:write(py) f:close()
    f = assert(io.open(input, "wb")) f:write(payload) f:close()
    local out = sh(("/usr/bin/python3 %s %d < %s"):format(quote(src), port, quote(input)))
    os.remove(src)
    os.remove(input)
    return out:match("^([^\n]*)\n(.*)$")
  end

  it("http_hello.lua answers what it cannot take with an error and closes", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local CLOSE = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    -- a body is read and ignored: the request hidden in it is not answered
    assert.equal("200 200 closed", http_raw(port,
      "POST / HTTP/1.1\r\nContent-Length: 23\r\n\r\nGET /admin HTTP/1.1\r\n\r\n" .. CLOSE))
    assert.equal("400 closed", http_raw(port, "\1\2\3 garbage\r\n\r\n" .. CLOSE))
    assert.equal("400 closed", http_raw(port, "GET /\0 HTTP/1.1\r\n\r\n"))
    -- empty lines before a request line are skipped (RFC 9112; Twisted too)
    assert.equal("200 200 closed", http_raw(port, "\r\n\r\nGET / HTTP/1.1\r\n\r\n\n\r\n" .. CLOSE))
    assert.equal("501 closed", http_raw(port,
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n\r\n\r\n\r\n0\r\n\r\n"))
    -- Connection's tokens: "close" among others closes, "closed" does not
    assert.equal("200 closed", http_raw(port, "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n"))
    assert.equal("200 200 closed", http_raw(port, "GET / HTTP/1.1\r\nConnection: closed\r\n\r\n" .. CLOSE))
    -- a head over 64 KiB, however it arrives
    assert.equal("431 closed", http_raw(port,
      "GET / HTTP/1.1\r\nX: " .. string.rep("a", 80000) .. "\r\n\r\n"))
  end)

  it("http_hello.lua answers HEAD with the head alone, so the next answer is read right", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n"
    local close_head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
      .. "Content-Length: 14\r\n\r\n"
    local codes, got = http_raw(port, "HEAD / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n"
      .. "GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert.equal("200 200 200 closed", codes)
    assert.equal(head .. head .. close_head .. "Hello, world!\n", got)
    codes, got = http_raw(port, "HEAD / HTTP/1.0\r\n\r\n")
    assert.equal("200 closed", codes)
    assert.equal(close_head, got)
    -- curl's -I, then a GET on the same connection
    local url = ("http://127.0.0.1:%d/"):format(port)
    local out = sh(("curl -sv -I %s --next %s 2>&1"):format(url, url))
    assert.matches("Re%-using existing connection", out)
    assert.equal(1, select(2, out:gsub("Hello, world!", "")))
  end)

  it("http_hello.lua answers a body once it is read, after a 100 Continue if one is expected", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local url = ("http://127.0.0.1:%d/"):format(port)
    -- curl waits for the 100 before it sends the body (as it does on its
    -- own for a body over 1 MiB): answered at once, it sent no body and
    -- its next request was taken for the body
    local out = sh(("timeout 10 curl -sv --expect100-timeout 5 -H 'Expect: 100-continue' -d hello %s"
      .. " --next %stwo 2>&1"):format(url, url))
    assert.matches("< HTTP/1.1 100 Continue", out, 1, true)
    assert.matches("Re%-using existing connection", out)
    assert.equal(2, select(2, out:gsub("Hello, world!", "")))
    assert.equal(0, select(2, out:gsub("400 Bad Request", "")))
    local codes, got = http_raw(port, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
      .. "helloGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert.equal("100 200 200 closed", codes)
    assert.equal("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", got:sub(1, 42))
    -- no 100 to an HTTP/1.0 client
    assert.equal("200 closed", http_raw(port,
      "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"))
  end)

  it("http_hello.lua refuses a header line it cannot read one way only, and takes bare LFs", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local CLOSE = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
    local SMUGGLED = "GET /admin HTTP/1.1\r\n\r\n"
    -- each of these hid the body's request from the server, or showed it
    -- one that a proxy in front would take for a body (Twisted: 400)
    for _, header in ipairs({ "Content-Length : 23", "Content-Length: 0\r\nContent-Length: 23",
                              "Transfer-Encoding : chunked", "Content-Length:\r\n 23", "no colon" }) do
      local request = "POST / HTTP/1.1\r\n" .. header .. "\r\n\r\n" .. SMUGGLED .. CLOSE
      assert.equal("400 closed", http_raw(port, request), header)
    end
    -- a folded Connection: close was ignored, the connection kept
    assert.equal("400 closed", http_raw(port, "GET / HTTP/1.1\r\nConnection:\r\n close\r\n\r\n"))
    -- lines ended by a bare LF (nc without -C) are lines, in whole requests
    -- or mixed, sent at once or pipelined
    assert.equal("200 200 200 closed", http_raw(port, "GET / HTTP/1.1\nHost: x\n\n"
      .. "POST / HTTP/1.1\r\nContent-Length: 2\n\r\nhiGET / HTTP/1.1\nConnection: close\n\n"))
    local out = sh(("printf 'GET / HTTP/1.0\\n\\n' | timeout 5 nc 127.0.0.1 %d"):format(port))
    assert.equal("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
      .. "Content-Length: 14\r\n\r\nHello, world!\n", out)
  end)

  it("http_hello.lua stops reading from a client that pipelines requests and never reads", function()
    local p, port = serve("examples/http_hello.lua", "0")
    later(function() finish(p) end)
    local rss0 = tonumber(read_file(("/proc/%d/status"):format(p:braidPid())):match("VmRSS:%s*(%d+)"))
    -- 20 MB of requests, with a small receive buffer and no reading: the
    -- server's answers would be 4.4 times that
    local out = sh(("/usr/bin/python3 -c %s %d"):format(quote(table.concat({
      "import socket, sys",
      "s = socket.socket()",
      "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)",
      "s.connect(('127.0.0.1', int(sys.argv[1])))",
      "s.settimeout(2)",
      "req = b'GET / HTTP/1.1\\r\\n\\r\\n' * 4096",
      "sent = 0",
      "try:",
      "    while sent < 20000000:",
      "        sent += s.send(req)",
      "except socket.timeout:",
      "    pass",
      "print(sent)",
    }, "\n")), port))
    local sent = tonumber(out)
    assert.is_true(sent < 20000000, "the server read all " .. tostring(sent) .. " bytes")
    local rss = tonumber(read_file(("/proc/%d/status"):format(p:braidPid())):match("VmRSS:%s*(%d+)"))
    assert.is_true(rss - rss0 < 16 * 1024, ("RSS grew by %d kB"):format(rss - rss0))
    assert.matches("Hello, world!", sh(("curl -s http://127.0.0.1:%d/"):format(port)))
  end)

  it("an example given a port that is not a number says how to run it", function()
    for _, script in ipairs({ "examples/echo.lua", "examples/http_hello.lua", "examples/chat.lua",
                              "examples/proxy.lua", "examples/hot/server.lua" }) do
      local out = sh(("cd %s && %s %s http 2>&1; echo rc=$?"):format(quote(proc.root), quote(proc.BIN),
        script))
      assert.matches("^usage: braid " .. script:gsub("%p", "%%%0") .. " %[", out)
      assert.matches("rc=2\n$", out)
    end
  end)

  it("proxy.lua relays both ways to the echo server", function()
    local e, eport = serve("examples/echo.lua", "0")
    later(function() finish(e) end)
    local p, pport = serve("examples/proxy.lua", "0", "127.0.0.1", tostring(eport))
    later(function() finish(p) end)
    local payload = string.rep("proxy!", 200000)
    local got, n, lost = {}, 0, false
    local C = {}
    function C:connectionMade() self.transport:write(payload) end
    function C:dataReceived(d)
      got[#got + 1] = d
      n = n + #d
      if n >= #payload then self.transport:loseConnection() end
    end
    function C:connectionLost() lost = true end
    reactor.connectTCP("127.0.0.1", pport, { protocol = C, noisy = false })
    spin(function() return lost end)
    assert.equal(#payload, #table.concat(got))
    assert.equal(payload, table.concat(got))
  end)

  it("proxy.lua passes a half-close on either way, and the other way goes on", function()
    -- the client ends its sending (nc -N): the echo server behind still answers
    local e, eport = serve("examples/echo.lua", "0")
    later(function() finish(e) end)
    local p, pport = serve("examples/proxy.lua", "0", "127.0.0.1", tostring(eport))
    later(function() finish(p) end)
    assert.equal("half", sh(("printf half | timeout 5 nc -N 127.0.0.1 %d"):format(pport)))
    -- the far side ends its sending first: the client still reaches it
    local st = {}
    local Far = protocol.Protocol:extend("Far")
    function Far:connectionMade()
      self.got = ""
      self.transport:write("banner")
      self.transport:loseWriteConnection()
    end
    function Far:dataReceived(d) self.got = self.got .. d end
    function Far:readConnectionLost() st.far_got = self.got end
    local ff = protocol.Factory.forProtocol(Far)
    ff.noisy = false
    local fport = reactor.listenTCP(0, ff, 50, "127.0.0.1")
    later(function() fport:stopListening() end)
    local p2, pport2 = serve("examples/proxy.lua", "0", "127.0.0.1", tostring(fport:getHost().port))
    later(function() finish(p2) end)
    local C = protocol.Protocol:extend("C")
    function C:connectionMade() self.got = "" end
    function C:dataReceived(d) self.got = self.got .. d end
    function C:readConnectionLost()
      st.client_got = self.got
      self.transport:write("after the banner")
      self.transport:loseWriteConnection()
    end
    function C:connectionLost() st.client_lost = true end
    reactor.connectTCP("127.0.0.1", pport2, { protocol = C, noisy = false })
    spin(function() return st.far_got ~= nil and st.client_lost end)
    assert.equal("banner", st.client_got)
    assert.equal("after the banner", st.far_got)
  end)

  -- proxy.lua between a pull producer writing 48 MB in 256 KiB chunks and a
  -- far side that starts paused; returns the proxy process, the far side's
  -- state (st.slow: its protocol, st.sent: bytes written, st.t: our
  -- transport) and TOTAL
  local function slow_proxy(drain)
    local st = { sent = 0 }
    local Slow = protocol.Protocol:extend("Slow")
    function Slow:connectionMade() st.slow = self self.n = 0 self.transport:pauseProducing() end
    function Slow:dataReceived(d) self.n = self.n + #d end
    function Slow:connectionLost() st.lost = true end
    local sf = protocol.Factory.forProtocol(Slow)
    sf.noisy = false
    local sport = reactor.listenTCP(0, sf, 50, "127.0.0.1")
    later(function() sport:stopListening() end)
    local p, pport = serve("examples/proxy.lua", "0", "127.0.0.1", tostring(sport:getHost().port),
      drain)
    later(function() finish(p) end)
    local TOTAL, CHUNK = 48 * 1024 * 1024, string.rep("p", 256 * 1024)
    local producer = {
      resumeProducing = function()
        if st.sent < TOTAL then st.sent = st.sent + #CHUNK st.t:write(CHUNK) end
        -- done: a pull producer unregisters (as Twisted's FileSender), or
        -- a loseConnection waits for it
        if st.sent >= TOTAL then st.t:unregisterProducer() end
      end,
      stopProducing = function() end,
    }
    local C = {}
    function C:connectionMade() st.t = self.transport st.t:registerProducer(producer, false) end
    reactor.connectTCP("127.0.0.1", pport, { protocol = C, noisy = false })
    return p, st, TOTAL
  end

  it("proxy.lua keeps its memory bounded while the far side does not read", function()
    local p, st, TOTAL = slow_proxy()
    -- run until the pipeline stalls (no progress for a while) or all is sent
    local last, still = -1, 0
    spin(function()
      if st.sent == last then still = still + 1 else still, last = 0, st.sent end
      return still >= 20 or st.sent >= TOTAL
    end, 20)
    assert.is_true(st.sent < TOTAL) -- the slow side holds everything back
    local rss = tonumber(read_file(("/proc/%d/status"):format(p:braidPid())):match("VmRSS:%s*(%d+)"))
    assert.is_true(rss < 24 * 1024, "proxy RSS " .. tostring(rss) .. " kB")
    -- once the far side reads again, data flows on
    local slow = st.slow
    local before = slow.n
    slow.transport:resumeProducing()
    spin(function() return slow.n > before + 4 * 1024 * 1024 end, 30)
    st.t:abortConnection()
    slow.transport:abortConnection()
  end)

  it("proxy.lua closes the far side that cannot drain, DRAIN_SECONDS after the client left", function()
    -- both sides stalled, then the client goes: the proxy's connection to
    -- the far side, which does not read, used to stay open for good
    local _, st = slow_proxy("1")
    local last, still = -1, 0
    spin(function()
      if st.sent == last then still = still + 1 else still, last = 0, st.sent end
      return still >= 20
    end, 20)
    -- the far side talks (while it reads nothing), so that the proxy, whose
    -- reading from the client is paused, hears of the client's going when
    -- it writes to it
    local talk = require("braid.task").LoopingCall(function() st.slow.transport:write("x") end)
    talk:start(0.02)
    later(function() if talk.running then talk:stop() end end)
    local left = core.monotonic()
    st.t:abortConnection()
    spin(function() return st.lost end, 10)
    assert.is_true(core.monotonic() - left >= 0.9)
  end)

  it("proxy.lua drains all 48 MB after the far side resumes", function()
    local _, st, TOTAL = slow_proxy()
    spin(function() return st.slow ~= nil and st.sent >= 4 * 1024 * 1024 end)
    local slow = st.slow
    slow.transport:resumeProducing()
    spin(function() return slow.n == TOTAL end, 60)
    assert.equal(TOTAL, st.sent)
    st.t:loseConnection()
    spin(function() return slow.transport.connected == false end)
  end)

  it("poetry_client.lua collects two poems and prints them", function()
    local Poet = protocol.Protocol:extend("Poet")
    function Poet:connectionMade()
      self.transport:write(self.factory.poem)
      self.transport:loseConnection()
    end
    local f1, f2 = protocol.Factory.forProtocol(Poet), protocol.Factory.forProtocol(Poet)
    f1.noisy, f2.noisy = false, false
    f1.poem, f2.poem = "Roses are red\n", "This is just to say\n"
    local p1 = reactor.listenTCP(0, f1, 50, "127.0.0.1")
    local p2 = reactor.listenTCP(0, f2, 50, "127.0.0.1")
    later(function() p1:stopListening() p2:stopListening() end)
    -- a third address where nothing listens: reported, and not waited for
    local closed = reactor.listenTCP(0, f1, 50, "127.0.0.1")
    local dead = closed:getHost().port
    loop.result(closed:stopListening())
    local out, client = background({ "examples/poetry_client.lua",
      tostring(p1:getHost().port), "127.0.0.1:" .. p2:getHost().port, tostring(dead) })
    later(function() client:stop() end)
    spin(function() return read_file(out):find("exit %d+") end)
    local s = read_file(out)
    os.remove(out)
    -- the seed's lines: the transport and factory at makeConnection, one
    -- per chunk with its task number and peer, one per failed connection
    local _, made = s:gsub("make connection: get transport: \t<TCP transport", "")
    assert.equal(2, made)
    assert.matches("My factory is:\t<PoetryClientFactory instance>", s)
    assert.matches(("task [12]: got 14 bytes of poetry from IPv4Address%%(type='TCP', host='127.0.0.1', "
      .. "port=%d%%)"):format(p1:getHost().port), s)
    assert.matches(("task [12]: got 20 bytes of poetry from IPv4Address%%(type='TCP', host='127.0.0.1', "
      .. "port=%d%%)"):format(p2:getHost().port), s)
    assert.matches(("failed to connect to:\tIPv4Address%%(type='TCP', host='127.0.0.1', port=%d%%)\t"
      .. "Connection was refused"):format(dead), s)
    assert.matches("Poem 1:\n", s)
    assert.matches("Poem 2:\n", s)
    assert.matches("Roses are red", s)
    assert.matches("This is just to say", s)
    assert.matches("Got 2 poems%.\nexit 0\n$", s)
  end)

  it("poetry_client.lua refuses a port that is no port, with its usage and status 2", function()
    for _, bad in ipairs({ "abc", "70000", "127.0.0.1:0" }) do
      proc.expect({ "examples/poetry_client.lua", bad }, 2,
        { "usage: poetry_client.lua [host:]port ...   (ports 1 to 65535)" })
    end
  end)

  it("lowlevel_reader.lua reads a LuaSocket socket through addReader until EOF", function()
    local Talk = protocol.Protocol:extend("Talk")
    function Talk:connectionMade()
      self.transport:write("low-level hello\n")
      self.transport:loseConnection()
    end
    local f = protocol.Factory.forProtocol(Talk)
    f.noisy = false
    local port = reactor.listenTCP(0, f, 50, "127.0.0.1")
    later(function() port:stopListening() end)
    local out, reader = background({ "examples/lowlevel_reader.lua", "127.0.0.1", tostring(port:getHost().port) })
    later(function() reader:stop() end)
    spin(function() return read_file(out):find("exit %d+") end)
    local s = read_file(out)
    os.remove(out)
    assert.equal("low-level hello\n\nconnection lost: Connection was closed cleanly.\nexit 0\n", s)
  end)

  it("a server out of file descriptors keeps listening and serves again once they free up", function()
    local p = proc.spawn({ "sh", "-c", ("ulimit -n 24 && exec %s examples/echo.lua 0"):format(quote(proc.BIN)) },
      { bin = "" })
    later(function() finish(p) end)
    local line = p:waitFor("port %d+")
    assert(line, table.concat(p.lines, "\n"))
    local port = tonumber(line:match("port (%d+)"))
    local made, lost, failed = 0, 0, 0
    local conns = {}
    local Hold = protocol.Protocol:extend("Hold")
    function Hold:connectionMade()
      made = made + 1
      conns[#conns + 1] = self
      self.got = ""
      self.transport:write("x")
    end
    function Hold:dataReceived(d) self.got = self.got .. d end
    function Hold:connectionLost() self.gone = true lost = lost + 1 end
    local f = protocol.ClientFactory.forProtocol(Hold)
    f.noisy = false
    function f.clientConnectionFailed() failed = failed + 1 end
    for _ = 1, 40 do reactor.connectTCP("127.0.0.1", port, f) end
    -- each connection is either served (its "x" echoed) or dropped
    spin(function()
      if made + failed < 40 then return false end
      for _, c in ipairs(conns) do
        if not c.gone and c.got ~= "x" then return false end
      end
      return true
    end)
    -- past the limit, connections were accepted and dropped (the reserve
    -- descriptor trick); those that got a descriptor are served
    assert.equal(0, failed)
    assert.is_true(lost >= 40 - 24, "dropped " .. lost)
    assert.is_true(lost < 40, "none served")
    for _, c in ipairs(conns) do c.transport:loseConnection() end
    spin(function() return lost == made end)
    -- once the server has closed its side too, a new client is served; an
    -- attempt made before it got there may still be dropped, so try again
    local got, done, attempts = nil, false, 0
    local C = {}
    function C:connectionMade() self.got = "" self.transport:write("still serving") end
    function C:dataReceived(d)
      self.got = self.got .. d
      if self.got == "still serving" then got = self.got self.transport:loseConnection() end
    end
    function C:connectionLost()
      if got then done = true return end
      if attempts < 20 then
        attempts = attempts + 1
        reactor.callLater(0.05, reactor.connectTCP, "127.0.0.1", port, { protocol = C, noisy = false })
      else
        done = true
      end
    end
    reactor.connectTCP("127.0.0.1", port, { protocol = C, noisy = false })
    spin(function() return done end)
    assert.equal("still serving", got)
  end)
end)
