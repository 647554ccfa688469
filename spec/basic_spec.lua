-- spec/basic_spec.lua: lua/braid/basic.lua (with runtime/framing.c), ported
-- from Twisted's src/twisted/protocols/test/test_basic.py.
local basic = require "braid.basic"
local errors = require "braid.error"
local testing = require "braid.testing.transport"
local Clock = require("braid.task").Clock
local Protocol = require("braid.protocol").Protocol

local IMPLS = { { "Lua buffer", basic.LuaFrameBuffer.new } }
if basic.cFrameBuffer then IMPLS[#IMPLS + 1] = { "C buffer", basic.cFrameBuffer } end

local function join(t) return table.concat(t, "|") end

-- the server protocol after a connection whose deliveries are split by seed
local function connected_server(ServerClass, ClientClass, seed)
  local server = testing.connectedServerAndClient(ServerClass, ClientClass,
    { seed = seed, maxChunk = 1 + seed % 17 })
  return server
end

-- Twisted's LineTester
local function line_tester(newbuf)
  local T = basic.LineReceiver:extend("LineTester", {
    delimiter = "\n", MAX_LENGTH = 64, _newFrameBuffer = newbuf,
  })
  function T:init(clock) self.clock = clock end
  function T:connectionMade() self.received = {} end
  function T:lineReceived(line)
    local r = self.received
    r[#r + 1] = line
    if line == "" then
      self:setRawMode()
    elseif line == "pause" then
      self:pauseProducing()
      self.clock:callLater(0, function() self:resumeProducing() end)
    elseif line == "rawpause" then
      self:pauseProducing()
      self:setRawMode()
      r[#r + 1] = ""
      self.clock:callLater(0, function() self:resumeProducing() end)
    elseif line == "stop" then
      self:stopProducing()
    elseif line:sub(1, 4) == "len " then
      self.length = tonumber(line:sub(5))
    elseif line:sub(1, 7) == "produce" then
      self.transport:registerProducer(self, false)
    elseif line:sub(1, 9) == "unproduce" then
      self.transport:unregisterProducer()
    end
  end
  function T:rawDataReceived(data)
    local rest = data:sub(self.length + 1)
    data = data:sub(1, self.length)
    self.length = self.length - #data
    local r = self.received
    r[#r] = r[#r] .. data
    if self.length == 0 then self:setLineMode(rest) end
  end
  function T:lineLengthExceeded(line)
    if #line > self.MAX_LENGTH + 1 then
      self:setLineMode(line:sub(self.MAX_LENGTH + 2))
    end
  end
  return T
end

local BUFFER = table.concat({
  "len 10", "", "0123456789len 5", "", "1234", "len 20", "foo 123", "",
  "0123456789", "012345678len 0", "foo 5", "",
  "1234567890123456789012345678901234567890123456789012345678901234567890",
  "len 1", "", "a" }, "\n")
local OUTPUT = { "len 10", "0123456789", "len 5", "1234\n", "len 20", "foo 123",
  "0123456789\n012345678", "len 0", "foo 5", "", "67890", "len 1", "a" }

local function feed(p, data, size)
  for i = 1, #data, size do p:dataReceived(data:sub(i, i + size - 1)) end
end

for _, impl in ipairs(IMPLS) do
  local label, newbuf = impl[1], impl[2]

  describe("LineReceiver (" .. label .. ")", function()
    local LineTester = line_tester(newbuf)
    local function LR(fields)
      fields = fields or {}
      fields._newFrameBuffer = newbuf
      return basic.LineReceiver:extend("LR", fields)
    end

    it("frames lines and raw data identically for packet sizes 1 to 9", function()
      for size = 1, 9 do
        local a = LineTester()
        a:makeConnection(testing.StringTransport())
        feed(a, BUFFER, size)
        assert.are.same(OUTPUT, a.received)
      end
    end)

    it("frames lines and raw data identically under 200 seeded random splits", function()
      local Sender = Protocol:extend("Sender")
      function Sender:connectionMade() self.transport:write(BUFFER) end
      for seed = 1, 200 do
        local server = connected_server(LineTester, Sender, seed)
        assert.are.same(OUTPUT, server.received, "seed " .. seed)
      end
    end)

    it("stops delivering while paused and resumes on resumeProducing", function()
      local buf = "twiddle1\ntwiddle2\npause\ntwiddle3\n"
      for size = 1, 9 do
        local clock = Clock()
        local a = LineTester(clock)
        local t = testing.StringTransport()
        a:makeConnection(t)
        feed(a, buf, size)
        assert.are.same({ "twiddle1", "twiddle2", "pause" }, a.received)
        assert.are.equal("paused", t.producerState)
        clock:advance(0)
        assert.are.same({ "twiddle1", "twiddle2", "pause", "twiddle3" }, a.received)
        assert.are.equal("producing", t.producerState)
      end
    end)

    -- spec/receivers_diff_spec.lua found this against Twisted 22.4
    it("resumes the transport before the buffered lines, which may pause it again", function()
      local C = LR({ delimiter = "\n" })
      function C:connectionMade() self.received = {} end
      function C:lineReceived(line)
        self.received[#self.received + 1] = line
        if line == "p" then self:pauseProducing() end
      end
      local a, t = C(), testing.StringTransport()
      a:makeConnection(t)
      a:dataReceived("p\np\nx\n")
      assert.are.same({ "p" }, a.received)
      a:resumeProducing()
      assert.are.same({ "p", "p" }, a.received)
      assert.is_true(a.paused)
      assert.are.equal("paused", t.producerState)
      a:resumeProducing()
      assert.are.same({ "p", "p", "x" }, a.received)
      assert.are.equal("producing", t.producerState)
    end)

    it("resumes in raw mode when paused after setRawMode", function()
      local buf = "twiddle1\ntwiddle2\nlen 5\nrawpause\n12345twiddle3\n"
      for size = 1, 9 do
        local clock = Clock()
        local a = LineTester(clock)
        a:makeConnection(testing.StringTransport())
        feed(a, buf, size)
        assert.are.same({ "twiddle1", "twiddle2", "len 5", "rawpause", "" }, a.received)
        clock:advance(0)
        assert.are.same({ "twiddle1", "twiddle2", "len 5", "rawpause", "12345", "twiddle3" },
          a.received)
      end
    end)

    it("delivers nothing after stopProducing", function()
      local buf = "twiddle1\ntwiddle2\nstop\nmore\nstuff\n"
      for size = 1, 9 do
        local a = LineTester()
        local t = testing.StringTransport()
        a:makeConnection(t)
        feed(a, buf, size)
        assert.are.same({ "twiddle1", "twiddle2", "stop" }, a.received)
        assert.are.equal("stopped", t.producerState)
      end
    end)

    it("can register itself as a producer from lineReceived", function()
      local a = LineTester()
      local t = testing.StringTransport()
      a:makeConnection(t)
      a:dataReceived("produce\nhello world\nunproduce\ngoodbye\n")
      assert.are.same({ "produce", "hello world", "unproduce", "goodbye" }, a.received)
      assert.is_nil(t.producer)
    end)

    it("clearLineBuffer returns the buffered bytes and drops them", function()
      local C = LR()
      function C:lineReceived(line)
        self.line = line
        self.rest = self:clearLineBuffer()
      end
      local p = C()
      p:dataReceived("foo\r\nbar\r\nbaz")
      assert.are.equal("foo", p.line)
      assert.are.equal("bar\r\nbaz", p.rest)
      p:dataReceived("quux\r\n")
      assert.are.equal("quux", p.line)
      assert.are.equal("", p.rest)
    end)

    -- as Twisted's: a true value from lineReceived, rawDataReceived or
    -- lineLengthExceeded ends the dataReceived that delivered it and is
    -- its result; what was buffered waits for the next dataReceived
    it("stops at a callback's true result, returns it and keeps the rest buffered", function()
      local W = LR({ delimiter = "\n" })
      function W:connectionMade() self.got = {} end
      function W:lineReceived(line)
        self.got[#self.got + 1] = line
        if line == "stop" then return "why" end
      end
      function W:rawDataReceived(data)
        self.got[#self.got + 1] = "raw:" .. data
        self:setLineMode("x\n")
        return "rawwhy"
      end
      function W:lineLengthExceeded(data)
        self.got[#self.got + 1] = "long:" .. data
        self:setLineMode("y\n")
        return "longwhy"
      end
      local p = W()
      p:makeConnection(testing.StringTransport())
      assert.are.equal("why", p:dataReceived("a\nstop\nb\n"))
      assert.are.same({ "a", "stop" }, p.got)
      assert.is_nil(p:dataReceived(""))
      assert.are.same({ "a", "stop", "b" }, p.got)
      assert.are.equal("why", p:setLineMode("stop\nc\n"))  -- setLineMode returns it too
      assert.are.same({ "a", "stop", "b", "stop" }, p.got)
      assert.are.equal("c\n", p:clearLineBuffer())

      p = W()
      p:makeConnection(testing.StringTransport())
      p:setRawMode()
      assert.are.equal("rawwhy", p:dataReceived("zz"))
      assert.are.same({ "raw:zz" }, p.got)
      assert.are.equal("x\n", p:clearLineBuffer())

      p = W()
      p.MAX_LENGTH = 3
      p:makeConnection(testing.StringTransport())
      assert.are.equal("longwhy", p:dataReceived("abcdef\n"))
      assert.are.same({ "long:abcdef\n" }, p.got)
      assert.are.equal("y\n", p:clearLineBuffer())
    end)

    it("delivers nothing more after a lineLengthExceeded that closes the connection", function()
      local W = LR({ delimiter = "\n", MAX_LENGTH = 3 })
      function W:connectionMade() self.got = {} end
      function W:lineReceived(line) self.got[#self.got + 1] = line end
      function W:lineLengthExceeded(data)
        self.got[#self.got + 1] = "long:" .. data
        self.transport:loseConnection()
        self:setLineMode("y\n")  -- buffered, not delivered: the connection is closing
      end
      local p = W()
      local t = testing.StringTransport()
      p:makeConnection(t)
      assert.is_nil(p:dataReceived("abcdef\n"))
      assert.is_true(t.disconnecting)
      assert.are.same({ "long:abcdef\n" }, p.got)
      assert.are.equal("y\n", p:clearLineBuffer())
    end)

    it("handles 100000 lines in one call without recursion", function()
      local a = LineTester()
      a:makeConnection(testing.StringTransport())
      a:dataReceived(("x\n"):rep(100000))
      assert.are.equal(100000, #a.received)
    end)

    it("disconnects when a line exceeds MAX_LENGTH", function()
      local p = LR()()
      local t = testing.StringTransport()
      p:makeConnection(t)
      p:dataReceived(("x"):rep(p.MAX_LENGTH + 1) .. "\r\nr")
      assert.is_true(t.disconnecting)
    end)

    it("passes lineLengthExceeded the long line, its delimiter and the rest", function()
      local C = LR({ MAX_LENGTH = 4 })
      function C:lineLengthExceeded(line) self.exceeded = line end
      local p = C()
      p:makeConnection(testing.StringTransport())
      p:dataReceived("xxxxx\r\nrest")
      assert.are.equal("xxxxx\r\nrest", p.exceeded)
    end)

    it("disconnects when MAX_LENGTH + #delimiter bytes come without a delimiter", function()
      local p = LR({ MAX_LENGTH = 4 })()
      local t = testing.StringTransport()
      p:makeConnection(t)
      p:dataReceived("xxxxx")
      assert.is_false(t.disconnecting)
      p:dataReceived("x")
      assert.is_true(t.disconnecting)
    end)

    it("accepts a MAX_LENGTH line whose delimiter arrives split", function()
      local C = LR({ MAX_LENGTH = 4 })
      function C:connectionMade() self.lines = {} end
      function C:lineReceived(line) self.lines[#self.lines + 1] = line end
      local p = C()
      local t = testing.StringTransport()
      p:makeConnection(t)
      p:dataReceived("xxxx\r")
      assert.is_false(t.disconnecting)
      p:dataReceived("\n")
      assert.is_false(t.disconnecting)
      assert.are.same({ "xxxx" }, p.lines)
    end)

    it("delivers no further line once the transport is disconnecting", function()
      local C = LR()
      function C:connectionMade() self.lines = {} end
      function C:lineReceived(line)
        self.lines[#self.lines + 1] = line
        self.transport:loseConnection()
      end
      local p = C()
      p:makeConnection(testing.StringTransport())
      p:dataReceived("a\r\nb\r\nc\r\n")
      assert.are.same({ "a" }, p.lines)
    end)

    it("switches to raw mode for the rest of the data already received", function()
      local C = LR()
      function C:connectionMade() self.got = {} end
      function C:lineReceived(line)
        self.got[#self.got + 1] = "line:" .. line
        if line == "raw" then self:setRawMode() end
      end
      function C:rawDataReceived(data)
        self.got[#self.got + 1] = "raw:" .. data
        self:setLineMode()
      end
      local p = C()
      p:makeConnection(testing.StringTransport())
      p:dataReceived("a\r\nraw\r\nbytes\r\nb\r\n")
      assert.are.same({ "line:a", "line:raw", "raw:bytes\r\nb\r\n" }, p.got)
      p:dataReceived("c\r\n")
      assert.are.equal("line:c", p.got[4])
    end)

    it("setLineMode(extra) processes extra as received data", function()
      local C = LR()
      function C:connectionMade() self.got = {} end
      function C:lineReceived(line) self.got[#self.got + 1] = line end
      local p = C()
      p:makeConnection(testing.StringTransport())
      p:setRawMode()
      p:setLineMode("x\r\ny\r\n")
      assert.are.equal("x|y", join(p.got))
    end)

    it("sendLine writes the line and the delimiter", function()
      local p = LR()()
      local t = testing.StringTransport()
      p:makeConnection(t)
      p:sendLine("hello")
      assert.are.equal("hello\r\n", t:value())
    end)

    it("raises NotImplementedError from the default lineReceived and rawDataReceived", function()
      local p = LR()()
      p:makeConnection(testing.StringTransport())
      local ok, e = pcall(p.dataReceived, p, "foo\r\n")
      assert.is_false(ok)
      assert.is_true(errors.NotImplementedError:isinstance(e))
      local q = LR()()
      q:makeConnection(testing.StringTransport())
      q:setRawMode()
      ok, e = pcall(q.dataReceived, q, "foo")
      assert.is_false(ok)
      assert.is_true(errors.NotImplementedError:isinstance(e))
    end)

    -- the traceback a server logs for the error must reach the user's code
    -- (a pcall and re-raise in dataReceived kept only the re-raise's), and
    -- the receiver delivers again afterwards
    it("lets an error from lineReceived, rawDataReceived or lineLengthExceeded out with its traceback", function()
      local T = LR({ MAX_LENGTH = 4 })
      local function fail_here(what) error(errors.ValueError(what)) end
      function T:lineReceived(line)
        if line == "bad" then fail_here("line") end
        self.got = line
      end
      function T:rawDataReceived() fail_here("raw") end
      function T:lineLengthExceeded() fail_here("long") end
      for _, case in ipairs({ { "bad\r\n", "line" }, { "toolong\r\n", "long" }, { "raw", "raw" } }) do
        local p = T()
        p:makeConnection(testing.StringTransport())
        if case[2] == "raw" then p:setRawMode() end
        local trace
        local ok, e = xpcall(p.dataReceived, function(err)
          trace = debug.traceback("", 2)
          return err
        end, p, case[1])
        assert.is_false(ok)
        assert.is_true(errors.ValueError:isinstance(e))
        assert.equal(case[2], e.message)
        assert.matches("in upvalue 'fail_here'", trace)
        assert.is_false(p._busy)
        p:setLineMode()
        p:dataReceived("ok\r\n")
        assert.equal("ok", p.got)
      end
    end)
  end)

  describe("LineOnlyReceiver (" .. label .. ")", function()
    local T = basic.LineOnlyReceiver:extend("LineOnlyTester", {
      delimiter = "\n", MAX_LENGTH = 64, _newFrameBuffer = newbuf })
    function T:connectionMade() self.received = {} end
    function T:lineReceived(line) self.received[#self.received + 1] = line end
    local buf = "foo\n bleakness\n desolation\n discouragement\n"

    it("frames lines for every packet size", function()
      for size = 1, #buf do
        local a = T()
        a:makeConnection(testing.StringTransport())
        feed(a, buf, size)
        assert.are.same({ "foo", " bleakness", " desolation", " discouragement" }, a.received)
      end
    end)

    it("has LineReceiver's delimiter and MAX_LENGTH defaults", function()
      assert.are.equal("\r\n", basic.LineOnlyReceiver.delimiter)
      assert.are.equal(16384, basic.LineOnlyReceiver.MAX_LENGTH)
    end)

    it("disconnects on a line that is too long", function()
      local a = T()
      local t = testing.StringTransport()
      a:makeConnection(t)
      a:dataReceived(("x"):rep(200))
      assert.is_true(t.disconnecting)
    end)

    it("stops delivering once the transport is disconnecting", function()
      local C = T:extend("C")
      function C:lineReceived(line)
        self.received[#self.received + 1] = line
        self.transport:loseConnection()
      end
      local a = C()
      a:makeConnection(testing.StringTransport())
      a:dataReceived("a\nb\n")
      assert.are.same({ "a" }, a.received)
    end)

    -- tests/fuzz found this: Twisted 22.4's rule (a partial line over
    -- MAX_LENGTH bytes is too long) rejects a line of MAX_LENGTH bytes when
    -- its delimiter arrives split across reads; braid waits for
    -- MAX_LENGTH + #delimiter bytes, so every split gives the same lines
    it("takes a MAX_LENGTH line whose two-byte delimiter is split across reads", function()
      local C = T:extend("C", { MAX_LENGTH = 4, delimiter = "\r\n" })
      function C:lineLengthExceeded(line) self.exceeded = line end
      for _, chunks in ipairs({ { "abcd\r\n" }, { "abcd\r", "\n" }, { "ab", "cd\r", "\n" } }) do
        local a = C()
        a:makeConnection(testing.StringTransport())
        for _, c in ipairs(chunks) do a:dataReceived(c) end
        assert.are.same({ "abcd" }, a.received)
        assert.is_nil(a.exceeded)
      end
      local a = C()
      a:makeConnection(testing.StringTransport())
      a:dataReceived("abcde\r")  -- MAX_LENGTH + #delimiter bytes, no delimiter
      assert.equal("abcde\r", a.exceeded)
    end)

    -- a subclass of T with this MAX_LENGTH that keeps what lineLengthExceeded gets
    local function keeping_exceeded(max)
      local C = T:extend("C", { MAX_LENGTH = max })
      function C:lineLengthExceeded(line)
        self.exceeded = line
        return T.lineLengthExceeded(self, line)
      end
      return C
    end
    local function connected(C)
      local p, t = C(), testing.StringTransport()
      p:makeConnection(t)
      return p, t
    end

    -- a differential fuzzer against Twisted 22.4 found this: Twisted checks
    -- each line against self.MAX_LENGTH as it comes to it, so a lineReceived
    -- that changes MAX_LENGTH applies to the next line of the same read
    it("checks each line against MAX_LENGTH as lineReceived leaves it", function()
      local C = keeping_exceeded(10)
      function C:lineReceived(line)
        self.received[#self.received + 1] = line
        local n = tonumber(line:match("^max(%d+)$"))
        if n then self.MAX_LENGTH = n end
      end
      local a, t = connected(C)
      a:dataReceived("max3\nabcd\nxy\n")
      assert.are.same({ "max3" }, a.received)
      assert.are.equal("abcd", a.exceeded)
      assert.is_true(t.disconnecting)
      local b, u = connected(C)
      b:dataReceived("max20\n" .. ("y"):rep(15) .. "\n")
      assert.are.same({ "max20", ("y"):rep(15) }, b.received)
      assert.is_nil(b.exceeded)
      assert.is_false(u.disconnecting)
    end)

    -- spec/receivers_diff_spec.lua found this against Twisted 22.4
    it("gives lineLengthExceeded the long line alone, as Twisted does", function()
      local a, t = connected(keeping_exceeded(3))
      a:dataReceived("ab\nabcdef\nxy\n")
      assert.are.same({ "ab" }, a.received)
      assert.are.equal("abcdef", a.exceeded)
      assert.is_true(t.disconnecting)
    end)
  end)

  describe("NetstringReceiver (" .. label .. ")", function()
    local T = basic.NetstringReceiver:extend("TestNetstring", { _newFrameBuffer = newbuf })
    function T:connectionMade() self.received = {} end
    function T:stringReceived(s)
      self.received[#self.received + 1] = s
      self.transport:write(s)
    end
    local function make(max)
      local p = T()
      if max then p.MAX_LENGTH = max end
      local t = testing.StringTransport()
      p:makeConnection(t)
      return p, t
    end
    local STRINGS = { "hello", "world", "how", "are", "you123", ":today", ("a"):rep(515) }

    it("receives what sendString sent, for packet sizes 1 to 9", function()
      local sender, st = make()
      for _, s in ipairs(STRINGS) do sender:sendString(s) end
      local data = st:value()
      for size = 1, 9 do
        local p = make(699)
        feed(p, data, size)
        assert.are.same(STRINGS, p.received)
      end
    end)

    for _, bad in ipairs({ "9999999999999999999999", "abc", "4:abcde",
        "51:" .. ("a"):rep(51) .. ",", ":aaa,", "3aaa,", "01:a,", "3:12345," }) do
      it("disconnects on the illegal netstring " .. ("%q"):format(bad), function()
        for size = 1, #bad do
          local p, t = make(50)
          feed(p, bad, size)
          assert.is_true(t.disconnecting)
          assert.is_true(p.brokenPeer)
          assert.are.same({}, p.received)
        end
      end)
    end

    for _, case in ipairs({
        { { "0:," }, { "" } }, { { "1:a," }, { "a" } }, { { "2:ab," }, { "ab" } },
        { { "8:1:a,1:b,," }, { "1:a,1:b," } }, { { "4:aa", "aa," }, { "aaaa" } },
        { { "1", "0:012", "3456789", "," }, { "0123456789" } },
        { { "2", ":", "a", "b", "," }, { "ab" } }, { { "1:a,1", ":b," }, { "a", "b" } } }) do
      it("receives " .. join(case[1]) .. " as " .. join(case[2]), function()
        local p, t = make()
        for _, piece in ipairs(case[1]) do p:dataReceived(piece) end
        assert.are.same(case[2], p.received)
        assert.is_false(t.disconnecting)
      end)
    end

    it("waits for more data on a partial netstring", function()
      local p, t = make()
      p:dataReceived("aaa")
      assert.is_true(t.disconnecting) -- not a number: malformed at once
      local z, w = make()
      z:dataReceived("1:a,03")
      assert.are.same({ "a" }, z.received)
      assert.is_true(w.disconnecting) -- a leading zero: malformed at once, as Twisted
      local q, u = make()
      q:dataReceived("3:ab")
      assert.is_false(u.disconnecting)
      assert.are.same({}, q.received)
    end)

    it("disconnects when the announced length exceeds MAX_LENGTH", function()
      local p, t = make(10)
      p:dataReceived("11:")
      assert.is_true(t.disconnecting)
    end)

    it("sendString writes length:data,", function()
      local p, t = make()
      p:sendString("data")
      assert.are.equal("4:data,", t:value())
    end)

    it("raises NotImplementedError from the default stringReceived", function()
      local p = basic.NetstringReceiver:extend("N", { _newFrameBuffer = newbuf })()
      p:makeConnection(testing.StringTransport())
      local ok, e = pcall(p.dataReceived, p, "1:a,")
      assert.is_false(ok)
      assert.is_true(errors.NotImplementedError:isinstance(e))
    end)
  end)

  for _, spec in ipairs({ { "Int8StringReceiver", 1, ">I1" }, { "Int16StringReceiver", 2, ">I2" },
      { "Int32StringReceiver", 4, ">I4" } }) do
    local name, k, fmt = spec[1], spec[2], spec[3]
    describe(name .. " (" .. label .. ")", function()
      local T = basic[name]:extend("Test" .. name, { _newFrameBuffer = newbuf })
      function T:connectionMade() self.received = {} end
      function T:stringReceived(s) self.received[#self.received + 1] = s end
      function T:lengthLimitExceeded(n)
        self.exceeded = n
        basic[name].lengthLimitExceeded(self, n)
      end
      local function make()
        local p, t = T(), testing.StringTransport()
        p:makeConnection(t)
        return p, t
      end

      it("receives what sendString sent, for every packet size", function()
        local strings = { "a", ("b"):rep(16), "" }
        local sender, st = make()
        for _, s in ipairs(strings) do sender:sendString(s) end
        local data = st:value()
        for size = 1, #data do
          local p = make()
          feed(p, data, size)
          assert.are.same(strings, p.received)
        end
      end)

      it("delivers nothing from partial strings fed one byte at a time", function()
        for _, partial in ipairs({ ("\0"):rep(k - 1), string.pack(fmt, 20) .. "hello there", "" }) do
          local p = make()
          feed(p, partial, 1)
          assert.are.same({}, p.received)
        end
      end)

      it("decodes a big-endian prefix", function()
        local p = make()
        p:dataReceived(string.pack(fmt, 4) .. "ubar")
        assert.are.same({ "ubar" }, p.received)
        assert.are.equal(("\0"):rep(k - 1) .. "\4", string.pack(fmt, 4))
      end)

      it("sendString writes the prefix and the data", function()
        local p, t = make()
        p:sendString(("b"):rep(16))
        assert.are.equal(string.pack(fmt, 16) .. ("b"):rep(16), t:value())
      end)

      it("calls lengthLimitExceeded and closes when a prefix exceeds MAX_LENGTH", function()
        local p, t = make()
        p.MAX_LENGTH = 10
        p:dataReceived(string.pack(fmt, 11) .. ("x"):rep(11))
        assert.are.equal(11, p.exceeded)
        assert.is_true(t.disconnecting)
        assert.are.same({}, p.received)
      end)

      it("has MAX_LENGTH 99999", function()
        assert.are.equal(99999, basic[name].MAX_LENGTH)
      end)

      -- a stringReceived that pauses and resumes at once (its transport's
      -- buffer is empty) re-entered the delivery loop once per string, and
      -- one 64 KiB read of empty strings overflowed the stack
      it("delivers 100,000 strings of one read to a stringReceived that pauses and resumes", function()
        local P = T:extend("PauseResume" .. name)
        function P:stringReceived(s)
          self.n = (self.n or 0) + 1
          self:pauseProducing()
          self:resumeProducing()
          self.last = s
        end
        local p = P()
        p:makeConnection(testing.StringTransport())
        local frames = {}
        for i = 1, 100000 do frames[i] = string.pack(fmt, 1) .. string.char(i % 256) end
        p:dataReceived(table.concat(frames))
        assert.equal(100000, p.n)
        assert.equal(string.char(100000 % 256), p.last)
        assert.is_false(p._busy)
        p:dataReceived(string.pack(fmt, 1))  -- half a frame: kept for the next read
        p:dataReceived("z")
        assert.equal(100001, p.n)
        assert.equal("z", p.last)
      end)

      if k < 4 then
        it("raises StringTooLongError and writes nothing for a string too long for the prefix", function()
          local p, t = make()
          local ok, e = pcall(p.sendString, p, ("a"):rep(1 << (8 * k)))
          assert.is_false(ok)
          assert.is_true(basic.StringTooLongError:isinstance(e))
          assert.are.equal("", t:value())
        end)
      end
    end)
  end

  describe("every receiver under seeded random splits (" .. label .. ")", function()
    -- a client that sends its frames at once; the pump splits them by seed
    local function sender(payload)
      local S = Protocol:extend("Sender")
      function S:connectionMade() self.transport:write(payload) end
      return S
    end
    local function receiver(Base, fields)
      fields = fields or {}
      fields._newFrameBuffer = newbuf
      local R = Base:extend("Fuzzed", fields)
      function R:connectionMade() self.received = {} end
      function R:lineReceived(line) self.received[#self.received + 1] = line end
      function R:stringReceived(s) self.received[#self.received + 1] = s end
      return R
    end
    local STRINGS = { "hello", "", "with:colon,comma", ("z"):rep(300), "\0\1\2\r\n", "last" }

    it("LineOnlyReceiver frames the same lines for 100 seeds", function()
      local lines = { "alpha", "", "beta gamma", ("l"):rep(200), "omega" }
      local payload = table.concat(lines, "\r\n") .. "\r\n"
      for seed = 1, 100 do
        local server = connected_server(receiver(basic.LineOnlyReceiver), sender(payload), seed)
        assert.are.same(lines, server.received, "seed " .. seed)
      end
    end)

    it("NetstringReceiver receives the same strings for 100 seeds", function()
      local parts = {}
      for i, str in ipairs(STRINGS) do parts[i] = #str .. ":" .. str .. "," end
      local payload = table.concat(parts)
      for seed = 1, 100 do
        local server = connected_server(receiver(basic.NetstringReceiver), sender(payload), seed)
        assert.are.same(STRINGS, server.received, "seed " .. seed)
      end
    end)

    for _, spec in ipairs({ { "Int8StringReceiver", ">s1" }, { "Int16StringReceiver", ">s2" },
        { "Int32StringReceiver", ">s4" } }) do
      it(spec[1] .. " receives the same strings for 100 seeds", function()
        local parts = {}
        for i, str in ipairs(STRINGS) do
          parts[i] = string.pack(spec[2], spec[1] == "Int8StringReceiver" and str:sub(1, 255) or str)
        end
        local want = {}
        for i, str in ipairs(STRINGS) do
          want[i] = spec[1] == "Int8StringReceiver" and str:sub(1, 255) or str
        end
        local payload = table.concat(parts)
        for seed = 1, 100 do
          local server = connected_server(receiver(basic[spec[1]]), sender(payload), seed)
          assert.are.same(want, server.received, "seed " .. seed)
        end
      end)
    end

    it("a malformed netstring closes the connection after the good strings, for every seed", function()
      for seed = 1, 50 do
        local server = connected_server(receiver(basic.NetstringReceiver),
          sender("5:hello,3:abcX5:never,"), seed)
        assert.are.same({ "hello" }, server.received, "seed " .. seed)
        assert.is_true(server.transport.disconnected, "seed " .. seed)
      end
    end)

    it("an oversized Int32 prefix closes the connection after the good strings, for every seed", function()
      for seed = 1, 50 do
        local server = connected_server(receiver(basic.Int32StringReceiver, { MAX_LENGTH = 100 }),
          sender(string.pack(">s4", "ok") .. string.pack(">I4", 101) .. ("x"):rep(101)), seed)
        assert.are.same({ "ok" }, server.received, "seed " .. seed)
        assert.is_true(server.transport.disconnected, "seed " .. seed)
      end
    end)

    it("an over-long line closes the connection after the good lines, for every seed", function()
      for seed = 1, 50 do
        local server = connected_server(receiver(basic.LineReceiver, { MAX_LENGTH = 10 }),
          sender("short\r\n" .. ("x"):rep(50) .. "\r\nnever\r\n"), seed)
        assert.are.same({ "short" }, server.received, "seed " .. seed)
        assert.is_true(server.transport.disconnected, "seed " .. seed)
      end
    end)
  end)
end

describe("receivers' settings of the wrong type", function()
  -- each dataReceived checks the settings it uses and names a bad one
  local function feed(cls, settings, data)
    local P = basic[cls]:extend("P", settings)
    function P:lineReceived() end
    function P:stringReceived() end
    local p = P()
    p:makeConnection(testing.StringTransport())
    local ok, e = pcall(p.dataReceived, p, data)
    assert.is_false(ok)
    return e
  end

  local function is(cls, e, msg)
    assert.equal(cls, e.class)
    assert.equal(msg, e.message)
  end

  it("name MAX_LENGTH, delimiter and prefixLength, not the framing helper", function()
    is(errors.TypeError, feed("LineReceiver", { MAX_LENGTH = 1.5 }, "a\r\n"),
      "LineReceiver.MAX_LENGTH must be an integer, got 1.5")
    is(errors.TypeError, feed("LineReceiver", { MAX_LENGTH = "big" }, "a\r\n"),
      "LineReceiver.MAX_LENGTH must be an integer, got string")
    is(errors.ValueError, feed("LineReceiver", { delimiter = "" }, "a\r\n"),
      "LineReceiver.delimiter must not be empty")
    is(errors.TypeError, feed("LineReceiver", { delimiter = 10 }, "a\r\n"),
      "LineReceiver.delimiter must be a string, got 10")
    is(errors.TypeError, feed("LineOnlyReceiver", { MAX_LENGTH = 0 / 0 }, "a\r\n"),
      "LineOnlyReceiver.MAX_LENGTH must be an integer, got " .. tostring(0 / 0))
    is(errors.TypeError, feed("LineOnlyReceiver", { delimiter = false }, "a\r\n"),
      "LineOnlyReceiver.delimiter must be a string, got boolean")
    is(errors.TypeError, feed("NetstringReceiver", { MAX_LENGTH = {} }, "1:a,"),
      "NetstringReceiver.MAX_LENGTH must be an integer, got table")
    is(errors.TypeError, feed("Int16StringReceiver", { MAX_LENGTH = math.huge }, "\0\1a"),
      "IntNStringReceiver.MAX_LENGTH must be an integer, got " .. tostring(math.huge))
    is(errors.TypeError, feed("IntNStringReceiver", {}, "\0\1a"),
      "IntNStringReceiver.prefixLength must be 1, 2 or 4 (subclass Int8StringReceiver, "
      .. "Int16StringReceiver or Int32StringReceiver), got nil")
  end)

  -- Twisted's raise TypeError for data that is not bytes; braid's C frame
  -- buffer took a number as its digits (dataReceived(12) delivered "12")
  it("refuse data that is not a string, a number too, naming dataReceived", function()
    for _, impl in ipairs(IMPLS) do
      for _, cls in ipairs({ "LineReceiver", "LineOnlyReceiver", "NetstringReceiver",
                             "Int8StringReceiver", "Int32StringReceiver" }) do
        local got = {}
        local P = basic[cls]:extend("P", { _newFrameBuffer = impl[2] })
        function P:lineReceived(l) got[#got + 1] = l end
        function P:stringReceived(s) got[#got + 1] = s end
        local p = P()
        p:makeConnection(testing.StringTransport())
        for _, v in ipairs({ 12, 1.5, true }) do
          local e = select(2, pcall(p.dataReceived, p, v))
          assert.equal(errors.TypeError, e.class)
          assert.equal(("TypeError: bad argument #1 to 'dataReceived' (string expected, got %s)")
            :format(type(v)), tostring(e))
        end
        assert.same({}, got, cls .. " " .. impl[1])
      end
      local got = {}
      local P = basic.LineReceiver:extend("P", { _newFrameBuffer = impl[2] })
      function P:lineReceived(l) got[#got + 1] = l end
      local p = P()
      p:makeConnection(testing.StringTransport())
      local e = select(2, pcall(p.setLineMode, p, 5))
      assert.equal("TypeError: bad argument #1 to 'setLineMode' (string expected, got number)",
        tostring(e))
      p:dataReceived("\r\n")
      assert.same({ "" }, got, impl[1])
    end
  end)

  it("take a whole float as an integer, and leave raw mode's delimiter alone", function()
    local P = basic.LineReceiver:extend("P", { MAX_LENGTH = 1e3 })
    local got = {}
    function P:lineReceived(l) got[#got + 1] = l; if l == "raw" then self:setRawMode() end end
    function P:rawDataReceived(d) got[#got + 1] = "raw:" .. d; self.delimiter = "" end
    local p = P()
    p:makeConnection(testing.StringTransport())
    p:dataReceived("a\r\nraw\r\nxyz")
    p:dataReceived("more")
    assert.same({ "a", "raw", "raw:xyz", "raw:more" }, got)
  end)
end)
