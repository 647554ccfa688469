-- spec/framing_spec.lua: runtime/framing.c (braid.core.framebuf) against
-- basic.LuaFrameBuffer, the pure-Lua fallback with the same interface.
local basic = require "braid.basic"
local errors = require "braid.error"

local function pack(...) return { n = select("#", ...), ... } end

-- a deterministic byte soup of lines, netstrings and prefixed strings
local function lcg(seed)
  local s = seed
  return function(n)
    s = (s * 1103515245 + 12345) & 0x7fffffff
    return s % n
  end
end

local ALPHABET = { "a", "b", "\r", "\n", "\r\n", "0", "1", "9", ":", ",", "\0", "\3", "\255" }

local function run_ops(newbuf, seed)
  local r = lcg(seed)
  local b = newbuf()
  local log = {}
  for _ = 1, 400 do
    local op = r(8)
    local res
    if op <= 2 then
      local parts = {}
      for i = 1, r(12) do parts[i] = ALPHABET[1 + r(#ALPHABET)] end
      res = pack(b:append(table.concat(parts)))
    elseif op == 3 then
      res = pack(b:nextLine(r(2) == 0 and "\r\n" or "\n", r(10)))
    elseif op == 4 then
      res = pack(b:nextNetstring(1 + r(20)))
    elseif op == 5 then
      res = pack(b:nextPrefixed(({ 1, 2, 4 })[1 + r(3)], r(300)))
    elseif op == 6 then
      res = pack(b:take(r(6)))
    else
      res = pack(b:len(), r(20) == 0 and b:takeAll() or nil)
    end
    log[#log + 1] = res
  end
  log[#log + 1] = pack(b:takeAll(), b:len())
  return log
end

describe("framebuf", function()
  local impls = { { "Lua", basic.LuaFrameBuffer.new } }
  if basic.cFrameBuffer then impls[2] = { "C", basic.cFrameBuffer } end

  it("is provided by the C runtime when braid.core is built", function()
    assert.is_function(basic.cFrameBuffer)
  end)

  it("holds every receiver's input by default, so framing never concatenates Lua strings", function()
    local StringTransport = require("braid.testing.transport").StringTransport
    for _, name in ipairs({ "LineReceiver", "LineOnlyReceiver", "NetstringReceiver",
        "Int8StringReceiver", "Int16StringReceiver", "Int32StringReceiver" }) do
      local R = basic[name]:extend("R")
      function R:lineReceived() end
      function R:stringReceived() end
      local p = R()
      p:makeConnection(StringTransport())
      p:dataReceived("\0\0\0")
      local mt = getmetatable(p._fbuf)
      assert.equal("braid.framebuf", mt and mt.__name, name)
    end
  end)

  -- a 64 KiB read grew the array to 128 KiB, kept for the connection's
  -- life: 2,000 idle receivers held 130 MB
  it("gives back the room a large read or a long line took, once it is consumed", function()
    assert.is_function(basic.cFrameBuffer, "braid.core has no framebuf")
    local b = basic.cFrameBuffer()
    b:append("a\n")
    assert.equal("a", b:nextLine("\n", 100))
    assert.equal(0, b:_capacity())  -- empty: no array, as Twisted's b""
    b:append(("line\n"):rep(13107) .. "part")  -- 65,539 bytes
    assert.is_true(b:_capacity() >= 65539)
    for _ = 1, 13107 do assert.equal("line", b:nextLine("\n", 100)) end
    assert.equal(4096, b:_capacity())  -- the partial line stays, in a small array
    b:append("ial\n")
    assert.equal("partial", b:nextLine("\n", 100))
    b:append(("x"):rep(100000))
    assert.equal(("x"):rep(100000), b:takeAll())
    assert.equal(0, b:_capacity())
    b:append(string.pack(">I4", 70000) .. ("y"):rep(70000))
    assert.equal(("y"):rep(70000), b:nextPrefixed(4, 99999))
    assert.equal(0, b:_capacity())
    b:append("70000:" .. ("z"):rep(70000) .. ",")
    assert.equal(("z"):rep(70000), b:nextNetstring(99999))
    assert.equal(0, b:_capacity())
    b:append(("w"):rep(70000))
    assert.equal(("w"):rep(69000), b:take(69000))
    assert.equal(4096, b:_capacity())
    assert.equal(("w"):rep(1000), b:takeAll())
    b:append(("v"):rep(70000))
    b:clear()
    assert.equal(0, b:_capacity())
    assert.equal(0, b:len())
    b:append("again\n")
    assert.equal("again", b:nextLine("\n", 100))
  end)

  it("leaves an idle LineReceiver no large array after a 64 KiB read", function()
    local StringTransport = require("braid.testing.transport").StringTransport
    local R = basic.LineReceiver:extend("R", { delimiter = "\n" })
    function R:lineReceived(line) self.n = (self.n or 0) + #line end
    local p = R()
    p:makeConnection(StringTransport())
    p:dataReceived(("0123456789\n"):rep(6000))
    assert.equal(60000, p.n)
    assert.equal(0, p._fbuf:_capacity())
  end)

  it("gives identical results in C and in Lua for 300 seeded operation sequences", function()
    assert.is_function(basic.cFrameBuffer, "braid.core has no framebuf")
    for seed = 1, 300 do
      assert.are.same(run_ops(basic.LuaFrameBuffer.new, seed), run_ops(basic.cFrameBuffer, seed),
        "seed " .. seed)
    end
  end)

  for _, impl in ipairs(impls) do
    local label, new = impl[1], impl[2]
    describe(label, function()
      it("returns a line without its delimiter and keeps the rest", function()
        local b = new()
        b:append("ab\r\ncd")
        assert.are.equal("ab", b:nextLine("\r\n", 10))
        assert.is_nil(b:nextLine("\r\n", 10))
        assert.are.equal(2, b:len())
        assert.are.equal("cd", b:takeAll())
        assert.are.equal(0, b:len())
      end)

      it("reports toolong for a line longer than max", function()
        local b = new()
        b:append("abcdef\n")
        assert.are.same({ false, "toolong" }, { b:nextLine("\n", 5) })
        assert.are.equal(7, b:len())
      end)

      it("reports toolong once max + #delimiter bytes hold no delimiter", function()
        local b = new()
        b:append("abcdef")
        assert.is_nil(b:nextLine("\r\n", 5))
        b:append("g")
        assert.are.same({ false, "toolong" }, { b:nextLine("\r\n", 5) })
      end)

      it("parses netstrings and reports malformed and toolong ones", function()
        local b = new()
        b:append("3:abc,0:,")
        assert.are.equal("abc", b:nextNetstring(99999))
        assert.are.equal("", b:nextNetstring(99999))
        assert.is_nil(b:nextNetstring(99999))
        b:append("x")
        assert.are.same({ false, "malformed" }, { b:nextNetstring(99999) })
        b:clear()
        b:append("100000")
        assert.are.same({ false, "toolong" }, { b:nextNetstring(99999) })
        b:clear() -- a leading zero: malformed, whatever the length (as Twisted)
        b:append("0999")
        assert.are.same({ false, "malformed" }, { b:nextNetstring(100) })
        b:clear() -- a length past any integer: toolong, not a wait for more
        b:append("9999999999999999999:x,")
        assert.are.same({ false, "toolong" }, { b:nextNetstring(math.maxinteger) })
        b:clear() -- 2^64, 20 digits: as a size_t it wraps to 0, yet it is too long
        b:append("18446744073709551616:x,")
        assert.are.same({ false, "toolong" }, { b:nextNetstring(math.maxinteger) })
        assert.are.equal(23, b:len())
        b:clear() -- a negative limit: every length is too long, 0 included
        b:append("1:a,")
        assert.are.same({ false, "toolong" }, { b:nextNetstring(-1) })
        b:clear()
        b:append("0:,")
        assert.are.same({ false, "toolong" }, { b:nextNetstring(-1) })
        assert.are.equal(3, b:len())
      end)

      it("parses big-endian length prefixes and reports the length when too long", function()
        local b = new()
        b:append(string.pack(">I2", 3) .. "abc" .. string.pack(">I4", 70000))
        assert.are.equal("abc", b:nextPrefixed(2, 100))
        assert.are.same({ false, "toolong", 70000 }, { b:nextPrefixed(4, 60000) })
      end)

      it("take(n) returns at most n bytes", function()
        local b = new()
        b:append("hello")
        assert.are.equal("he", b:take(2))
        assert.are.equal("llo", b:take(10))
        assert.are.equal("", b:take(1))
      end)

      -- found by tests/fuzz/fuzz_framebuf.c (C and Lua buffers side by side)
      it("handles limits up to math.maxinteger without overflowing", function()
        local b = new()
        assert.is_nil(b:nextLine("\r\n", math.maxinteger))
        b:append("abc")
        assert.is_nil(b:nextLine("\r\n", math.maxinteger))
        b:clear() -- a declared length near the limit: wait for it
        b:append("9223372036854775807:abc,")
        assert.is_nil(b:nextNetstring(math.maxinteger))
        b:clear() -- a float limit counts its digits as an integer would
        b:append("100000:")
        assert.is_nil(b:nextNetstring(1e15))
        b:clear()
        b:append("abc")
        assert.are.equal("a", b:take(1))
        assert.are.equal("bc", b:take(math.maxinteger))
        assert.are.equal(0, b:len())
      end)

      it("raises on an empty delimiter and a negative count", function()
        local b = new()
        b:append("abc")
        local function raises(msg, f) -- C raises a string, Lua a TypeError
          local ok, e = pcall(f)
          assert.is_false(ok)
          assert.truthy(tostring(e):find(msg, 1, true), tostring(e))
        end
        raises("bad argument #1 to 'nextLine' (empty delimiter)", function() b:nextLine("", 10) end)
        raises("bad argument #1 to 'take' (negative count)", function() b:take(-1) end)
        assert.are.equal(3, b:len())
      end)

      -- a callback that breaks a setting in the middle of a read gets the
      -- buffer's own error: the C one took a number delimiter as its digits
      -- where the Lua one raised a bare error, and the Lua one took a
      -- MAX_LENGTH of 1.5 where the C one raised
      it("checks its arguments as luaL_checktype and luaL_checkinteger do", function()
        local b = new()
        b:append("ab0\n12:")
        local function raises(cls, msg, f)
          local ok, e = pcall(f)
          assert.is_false(ok)
          assert.equal(cls, e.class, tostring(e))
          assert.truthy(tostring(e):find(msg, 1, true), tostring(e))
        end
        local TE, VE = errors.TypeError, errors.ValueError
        raises(TE, "(string expected, got number)", function() b:nextLine(0, 5) end)
        raises(TE, "(number has no integer representation)", function() b:nextLine("\n", 1.5) end)
        raises(TE, "(number expected, got table)", function() b:nextLine("\n", {}) end)
        raises(VE, "(empty delimiter)", function() b:nextLine("", 5) end)
        raises(TE, "(number has no integer representation)", function() b:nextNetstring(2.5) end)
        raises(TE, "(number has no integer representation)", function() b:nextPrefixed(1, 0.5) end)
        raises(VE, "(prefix must be 1, 2 or 4 bytes)", function() b:nextPrefixed(3, 5) end)
        raises(TE, "(number has no integer representation)", function() b:take(1.5) end)
        raises(VE, "(negative count)", function() b:take(-1) end)
        assert.are.equal(7, b:len())
        assert.are.equal("ab0", b:nextLine("\n", 1e3))
        assert.are.equal("1", b:take(1.0))
      end)

      -- a differential fuzzer found the C buffer taking a number as its
      -- digits where the Lua one raised
      it("refuses data that is not a string, a number too", function()
        local b = new()
        b:append("1")
        for _, v in ipairs({ 23, 4.5, false }) do
          local ok, e = pcall(function() b:append(v) end)
          assert.is_false(ok)
          assert.truthy(tostring(e):find("bad argument #1 to 'append' (string expected, got "
            .. type(v) .. ")", 1, true), tostring(e))
        end
        assert.are.equal(1, b:len())
        assert.are.equal("1", b:takeAll())
      end)
    end)
  end
end)
