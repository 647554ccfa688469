-- spec for lua/braid/class.lua
local class = require "braid.class"
local Object = class.Object

describe("class.Object:extend", function()
  it("returns a subclass whose name is used by tostring", function()
    local Animal = Object:extend("Animal")
    assert.equal("<class Animal>", tostring(Animal))
    assert.equal("<Animal instance>", tostring(Animal()))
    assert.equal(Object, Animal.super)
  end)

  it("copies the fields table into the class", function()
    local function speak() return "..." end
    local Animal = Object:extend("Animal", { legs = 4, speak = speak })
    assert.equal(4, rawget(Animal, "legs"))
    assert.equal(speak, rawget(Animal, "speak"))
    assert.equal("...", Animal():speak())
  end)

  it("accepts the fields table alone, keeping the parent's name", function()
    local Animal = Object:extend("Animal")
    local Dog = Animal:extend({ legs = 4 })
    assert.equal(4, Dog.legs)
    assert.equal("Animal", class.nameof(Dog))
    assert.equal(Animal, Dog.super)
  end)

  it("without a name inherits the parent's name", function()
    local Animal = Object:extend("Animal")
    assert.equal("<class Animal>", tostring(Animal:extend()))
  end)

  it("rejects a name that is not a string", function()
    local ok, e = pcall(Object.extend, Object, 42)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'extend' %(string expected, got number%)", tostring(e))
    assert.is_true(require("braid.error").isinstance(e, require("braid.error").TypeError))
  end)

  it("takes a table first as the fields only when no fields follow: a table name with fields is refused", function()
    local ok, e = pcall(Object.extend, Object, { a = 1 }, { b = 2 })
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'extend' %(string expected, got table%)", tostring(e))
    assert.is_true(require("braid.error").isinstance(e, require("braid.error").TypeError))
  end)

  it("rejects fields that are not a table", function()
    local ok, e = pcall(Object.extend, Object, "X", "nope")
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'extend' %(table expected, got string%)", e)
  end)

  it("class.extend is Object:extend", function()
    local C = class.extend("C", { x = 1 })
    assert.equal(Object, C.super)
    assert.equal(1, C.x)
    assert.equal("C", class.nameof(C))
  end)
end)

describe("making instances", function()
  it("Cls(...) calls init with the arguments and returns the instance", function()
    local Point = Object:extend("Point")
    function Point:init(x, y) self.x, self.y = x, y end
    local p = Point(1, 2)
    assert.equal(1, p.x)
    assert.equal(2, p.y)
    assert.equal(Point, getmetatable(p))
  end)

  it("Cls:new(...) does the same as Cls(...)", function()
    local Point = Object:extend("Point")
    function Point:init(x, y) self.x, self.y = x, y end
    local p = Point:new(3, 4)
    assert.equal(3, p.x)
    assert.equal(4, p.y)
    assert.is_true(Point:isinstance(p))
  end)

  it("works without an init", function()
    local Empty = Object:extend("Empty")
    local e = Empty("ignored")
    assert.is_true(Empty:isinstance(e))
    assert.is_nil(rawget(e, 1))
  end)

  it("passes nils through to init, keeping the argument count", function()
    local C = Object:extend("C")
    function C:init(...) self.n = select("#", ...) end
    assert.equal(3, C(nil, nil, nil).n)
  end)

  it("a subclass uses its parent's init; an override can call it through super", function()
    local Base = Object:extend("Base")
    function Base:init(a) self.a = a end
    local Child = Base:extend("Child")
    assert.equal(1, Child(1).a)
    local Grand = Child:extend("Grand")
    function Grand:init(a, b)
      Grand.super.init(self, a)
      self.b = b
    end
    local g = Grand(1, 2)
    assert.equal(1, g.a)
    assert.equal(2, g.b)
  end)

  it("instance fields stay on the instance", function()
    local C = Object:extend("C")
    local a, b = C(), C()
    a.x = 1
    assert.is_nil(b.x)
    assert.is_nil(rawget(C, "x"))
  end)

  it("a class with __new constructs itself and init is not called for it", function()
    local inits = 0
    local Singleton = Object:extend("Singleton")
    local the
    function Singleton:init() inits = inits + 1 end
    function Singleton.__new(cls, v)
      if v == "same" and the then return the end
      the = setmetatable({ made = true }, cls)
      return the
    end
    local a = Singleton()
    local b = Singleton("same")
    assert.equal(a, b)
    assert.is_true(a.made)
    assert.equal(0, inits)
    assert.equal(a, Singleton:new("same"))
  end)

  it("__new may return several values", function()
    local C = Object:extend("C")
    function C.__new(_, x) return x, x * 2 end
    local a, b = C(5)
    assert.equal(5, a)
    assert.equal(10, b)
  end)
end)

describe("method lookup", function()
  it("finds methods of the class, then of its ancestors", function()
    local A = Object:extend("A")
    function A:who() return "A" end
    function A:only_a() return "a" end
    local B = A:extend("B")
    function B:who() return "B" end
    local b = B()
    assert.equal("B", b:who())
    assert.equal("a", b:only_a())
  end)

  it("happens at call time: a method replaced on the parent is seen by existing subclass instances", function()
    local A = Object:extend("A")
    function A:v() return 1 end
    local B = A:extend("B")
    local b = B()
    assert.equal(1, b:v())
    function A:v() return 2 end
    assert.equal(2, b:v())
    function A:late() return "late" end
    assert.equal("late", b:late())
  end)

  it("a class's fields are found by lookup from subclasses", function()
    local A = Object:extend("A", { size = 10 })
    local B = A:extend("B")
    assert.equal(10, B.size)
    assert.is_nil(rawget(B, "size"))
  end)

  it("looking up a missing name gives nil", function()
    local C = Object:extend("C")
    assert.is_nil(C().nothing)
    assert.is_nil(C.nothing)
  end)
end)

describe("isinstance and issubclass", function()
  local A, B, C, Other
  before_each(function()
    A = Object:extend("A")
    B = A:extend("B")
    C = B:extend("C")
    Other = Object:extend("Other")
  end)

  it("isinstance is true for instances of the class and of its subclasses", function()
    assert.is_true(A:isinstance(A()))
    assert.is_true(A:isinstance(B()))
    assert.is_true(A:isinstance(C()))
    assert.is_true(Object:isinstance(C()))
  end)

  it("isinstance is false for a parent's instance, another class's instance and non-instances", function()
    assert.is_false(B:isinstance(A()))
    assert.is_false(A:isinstance(Other()))
    assert.is_false(A:isinstance({}))
    assert.is_false(A:isinstance(setmetatable({}, {})))
    assert.is_false(A:isinstance("A"))
    assert.is_false(A:isinstance(nil))
    assert.is_false(A:isinstance(42))
  end)

  it("isinstance is false for the class itself", function()
    assert.is_false(A:isinstance(A))
    assert.is_false(A:isinstance(B))
  end)

  it("issubclass is true for the class itself and its ancestors", function()
    assert.is_true(C:issubclass(C))
    assert.is_true(C:issubclass(B))
    assert.is_true(C:issubclass(A))
    assert.is_true(C:issubclass(Object))
  end)

  it("issubclass is false for descendants and unrelated classes", function()
    assert.is_false(A:issubclass(B))
    assert.is_false(C:issubclass(Other))
  end)

  it("compare classes raw: an instance whose __eq says true is not a class they match", function()
    local Eq = Object:extend("Eq", { __eq = function() return true end })
    local ok, e = pcall(Object.issubclass, Object, Eq())
    assert.is_false(ok)
    assert.equal("TypeError: bad argument #1 to 'issubclass' (class expected, got Eq)", tostring(e))
    ok, e = pcall(Object.isinstance, Eq(), A())
    assert.is_false(ok)
    assert.equal("TypeError: bad argument #1 to 'isinstance' (class expected, got Eq; "
      .. "call it as Cls:isinstance(...))", tostring(e))
  end)

  it("called with '.' or on what is not a class, raise a TypeError naming the method", function()
    local a = A()
    local cases = {
      { "isinstance", function() return A.isinstance(a) end, "A" },
      { "isinstance", function() return a:isinstance(a) end, "A" },
      { "issubclass", function() return A.issubclass(nil) end, "nil" },
      { "issubclass", function() return a:issubclass(A) end, "A" },
      { "issubclass", function() return Object.issubclass("A", Object) end, "string" },
      { "extend", function() return a:extend("Sub") end, "A" },
      { "extend", function() return Object.extend("Sub") end, "string" },
      { "extend", function() return Object.extend(nil, "Sub") end, "nil" },
      { "new", function() return A.new() end, "nil" },
      { "new", function() return A.new(a) end, "A" },
      { "new", function() return Object.new(42) end, "number" },
    }
    for _, c in ipairs(cases) do
      local ok, e = pcall(c[2])
      assert.is_false(ok, c[1])
      assert.is_true(require("braid.error").TypeError:isinstance(e), c[1])
      assert.equal(("TypeError: bad argument #1 to '%s' (class expected, got %s; call it as Cls:%s(...))")
        :format(c[1], c[3], c[1]), tostring(e))
    end
  end)

  it("issubclass raises a TypeError for an argument that is not a class, as Python's", function()
    for _, v in ipairs({ 42, "A", {}, A() }) do
      local ok, e = pcall(B.issubclass, B, v)
      assert.is_false(ok)
      assert.equal("TypeError: bad argument #1 to 'issubclass' (class expected, got "
        .. class.nameof(v) .. ")", tostring(e))
    end
    local ok, e = pcall(B.issubclass, B)
    assert.is_false(ok)
    assert.equal("TypeError: bad argument #1 to 'issubclass' (class expected, got nil)", tostring(e))
  end)

  it("the true answers are unchanged for classes made by setconstructor", function()
    local K = Object:extend("K")
    class.setconstructor(K, function(cls) return setmetatable({}, cls) end)
    assert.is_true(K:isinstance(K()))
    assert.is_true(K:issubclass(Object))
    assert.is_false(K:isinstance({}))
    assert.is_false(K:issubclass(A))
  end)
end)

describe("class helpers", function()
  local A = Object:extend("A")

  it("classof gives an instance's class, nil for anything else", function()
    assert.equal(A, class.classof(A()))
    assert.is_nil(class.classof(A))
    assert.is_nil(class.classof({}))
    assert.is_nil(class.classof(setmetatable({}, {})))
    assert.is_nil(class.classof("s"))
    assert.is_nil(class.classof(nil))
  end)

  it("isclass is true only for classes", function()
    assert.is_true(class.isclass(A))
    assert.is_true(class.isclass(Object))
    assert.is_false(class.isclass(A()))
    assert.is_false(class.isclass({}))
    assert.is_false(class.isclass(nil))
  end)

  it("nameof gives a class's or instance's class name, else the Lua type", function()
    assert.equal("A", class.nameof(A))
    assert.equal("A", class.nameof(A()))
    assert.equal("Object", class.nameof(Object))
    assert.equal("table", class.nameof({}))
    assert.equal("number", class.nameof(1))
    assert.equal("nil", class.nameof(nil))
  end)
end)

describe("metamethods", function()
  it("a class's metamethods apply to its instances", function()
    local V = Object:extend("V")
    function V:init(x) self.x = x end
    V.__add = function(a, b) return V(a.x + b.x) end
    V.__eq = function(a, b) return a.x == b.x end
    V.__tostring = function(v) return "V(" .. v.x .. ")" end
    assert.equal("V(3)", tostring(V(1) + V(2)))
    assert.is_true(V(1) == V(1))
  end)

  it("are inherited by subclasses made after they were defined", function()
    local V = Object:extend("V")
    function V:init(x) self.x = x end
    V.__tostring = function(v) return "V(" .. tostring(v.x) .. ")" end
    V.__eq = function(a, b) return a.x == b.x end
    V.__lt = function(a, b) return a.x < b.x end
    V.__le = function(a, b) return a.x <= b.x end
    V.__add = function(a, b) return a.x + b.x end
    V.__sub = function(a, b) return a.x - b.x end
    V.__mul = function(a, b) return a.x * b.x end
    V.__div = function(a, b) return a.x / b.x end
    V.__mod = function(a, b) return a.x % b.x end
    V.__unm = function(a) return -a.x end
    V.__concat = function(a, b) return tostring(a.x) .. "|" .. tostring(b.x) end
    V.__len = function(a) return a.x end
    V.__call = function(a, y) return a.x + y end
    local W = V:extend("W")
    local a, b = W(6), W(4)
    assert.equal("V(6)", tostring(a))
    assert.is_true(W(1) == W(1))
    assert.is_true(b < a)
    assert.is_true(b <= a)
    assert.equal(10, a + b)
    assert.equal(2, a - b)
    assert.equal(24, a * b)
    assert.equal(1.5, a / b)
    assert.equal(2, a % b)
    assert.equal(-6, -a)
    assert.equal("6|4", a .. b)
    assert.equal(6, #a)
    assert.equal(7, a(1))
  end)

  it("__close is inherited, so instances work as to-be-closed variables", function()
    local closed = {}
    local R = Object:extend("R")
    function R:init(n) self.n = n end
    R.__close = function(r) closed[#closed + 1] = r.n end
    local S = R:extend("S")
    do
      local _ <close> = S("s")
    end
    assert.same({ "s" }, closed)
  end)

  it("__mode is inherited, so a subclass of a weak class makes weak instances", function()
    local Weak = Object:extend("Weak", { __mode = "k" })
    local Sub = Weak:extend("Sub")
    local SubSub = Sub:extend("SubSub")
    assert.equal("k", rawget(SubSub, "__mode"))
    for _, cls in ipairs({ Weak, Sub, SubSub }) do
      local set = cls()
      set[{}] = true
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(set), class.nameof(cls))
    end
    assert.is_true(class.METAMETHODS.__mode)
  end)

  it("are copied when the subclass is made: one added to the parent later is not seen by it", function()
    local P = Object:extend("P")
    local C = P:extend("C")
    P.__tostring = function() return "P!" end
    assert.equal("P!", tostring(P()))
    assert.equal("<C instance>", tostring(C()))
  end)

  it("an __index function is inherited, as Python's __getattr__: the class chain first, then it", function()
    local P = Object:extend("P")
    function P:who() return "P" end
    local asked = {}
    P.__index = function(obj, k)
      local v = P[k]
      if v ~= nil then return v end
      asked[#asked + 1] = k
      return "dyn:" .. k .. ":" .. tostring(rawget(obj, "id"))
    end
    local C = P:extend("C")
    function C:who() return "C" end
    C.extra = 5
    local G = C:extend("G")
    local g = G()
    g.id = 7
    assert.equal("C", g:who())
    assert.equal(5, g.extra)
    assert.equal("dyn:missing:7", g.missing)
    assert.equal("dyn:other:nil", C().other)
    assert.same({ "missing", "other" }, asked)
    -- the parent's __index of the moment (a reload that replaces it)
    P.__index = function(_, k) return "new:" .. k end
    assert.equal("new:x", g.x)
    assert.equal("C", g:who())
    -- a plain parent: instances look in the class chain only
    local Q = Object:extend("Q")
    assert.is_nil(Q:extend("R")().missing)
  end)

  it("an __index function given in extend's fields is kept", function()
    local D = Object:extend("D", { __index = function(_, k) return "D:" .. k end })
    assert.equal("D:q", D().q)
  end)

  -- what braid.reload calls when it replaces a class's metamethod in place
  it("inheritMetamethod passes a replaced metamethod down every depth, leaving a subclass's own alone", function()
    local A = Object:extend("A")
    local old = function() return "old" end
    A.__tostring = old
    local B = A:extend("B")
    local C = B:extend("C")
    local D = A:extend("D")
    D.__tostring = function() return "D's own" end
    local E = D:extend("E")
    local new = function() return "new" end
    A.__tostring = new
    class.inheritMetamethod(A, "__tostring", old, new)
    assert.equal("new", tostring(B()))
    assert.equal("new", tostring(C()))
    assert.equal("D's own", tostring(D()))
    assert.equal("D's own", tostring(E()))
  end)

  it("Object's default tostring names the class", function()
    local Thing = Object:extend("Thing")
    assert.equal("<Thing instance>", tostring(Thing()))
    assert.equal("<Object instance>", tostring(Object()))
  end)

  -- regression (class.lua METAMETHODS): the list lacks __idiv, __pow and the bitwise
  -- metamethods, so subclasses lose them. Fix: add "__idiv", "__pow",
  -- "__band", "__bor", "__bxor", "__shl", "__shr", "__bnot" to METAMETHODS.
  it("__pow, __idiv and the bitwise metamethods are inherited", function()
    local N = Object:extend("N")
    function N:init(x) self.x = x end
    N.__pow = function(a, b) return a.x ^ b.x end
    N.__idiv = function(a, b) return a.x // b.x end
    N.__band = function(a, b) return a.x & b.x end
    N.__bor = function(a, b) return a.x | b.x end
    N.__bxor = function(a, b) return a.x ~ b.x end
    N.__shl = function(a, b) return a.x << b.x end
    N.__shr = function(a, b) return a.x >> b.x end
    N.__bnot = function(a) return ~a.x end
    local M = N:extend("M")
    local a, b = M(6), M(2)
    local ok, e = pcall(function()
      return { a ^ b, a // b, a & b, a | b, a ~ b, a << b, a >> b, ~a }
    end)
    assert.is_true(ok, tostring(e))
    assert.same({ 36.0, 3, 2, 6, 4, 24, 1, -7 }, e)
  end)

  -- regression (class.lua METAMETHODS): __gc, __newindex and __pairs are not copied
  -- either: a subclass of a class with a finalizer (a Deferred reporting
  -- unhandled errors) silently loses it. Fix: add "__gc", "__newindex",
  -- "__pairs" (and "__mode", "__metatable" if wanted) to METAMETHODS.
  it("__gc, __newindex and __pairs are inherited", function()
    local finalized = 0
    local G = Object:extend("G")
    G.__gc = function() finalized = finalized + 1 end
    G.__newindex = function(t, k, v) rawset(t, k, v == nil and v or ("set:" .. tostring(v))) end
    G.__pairs = function() return function() return nil end, nil, nil end
    local H = G:extend("H")
    local h = H()
    h.x = 1
    assert.equal("set:1", rawget(h, "x"))
    local n = 0
    for _ in pairs(h) do n = n + 1 end
    assert.equal(0, n)
    h = nil
    collectgarbage()
    collectgarbage()
    assert.equal(1, finalized)
  end)
  describe("setconstructor", function()
    it("routes cls(...) to the constructor and keeps cls a class", function()
      local C = Object:extend("C")
      function C:init(x) self.x = x end
      local calls = {}
      class.setconstructor(C, function(cls, ...)
        calls[#calls + 1] = select("#", ...)
        return setmetatable({ x = "ctor" }, cls)
      end)
      local c = C(1, 2)
      assert.same({ 2 }, calls)
      assert.equal("ctor", c.x)
      assert.is_true(class.isclass(C))
      assert.equal(C, class.classof(c))
      assert.equal("C", class.nameof(c))
      assert.equal("<class C>", tostring(C))
      local D = C:extend("D")  -- a subclass takes the usual path: init runs
      assert.equal(7, D(7).x)
      assert.same({ 2 }, calls)
      class.setconstructor(C, nil)
      assert.equal(3, C(3).x)
      assert.is_true(class.isclass(C))
    end)

    it("refuses what is not a class", function()
      assert.has_error(function() class.setconstructor({}, print) end,
        "TypeError: bad argument #1 to 'setconstructor' (class expected, got table)")
    end)
  end)
end)

describe("classmethod", function()
  local function Base()
    local B = Object:extend("B")
    function B:init(...) self.args = table.pack(...) end
    B.make = class.classmethod(function(cls, ...) return cls(...) end)
    return B
  end

  it("on the class that defines it, the function is the stored one", function()
    local f = function(cls) return cls end
    local C = Object:extend("C")
    assert.equal(f, class.classmethod(f))
    C.m = f
    assert.equal(f, C.m)
    assert.equal(C, C:m())
  end)

  it("a subclass gets it bound, from a dot call and a colon call alike", function()
    local B = Base()
    local S = B:extend("S")
    local T = S:extend("T")  -- at any depth
    for _, cls in ipairs({ S, T }) do
      local a, b = cls.make(1, nil, 3), cls:make(1, nil, 3)
      assert.equal(cls, getmetatable(a))
      assert.equal(cls, getmetatable(b))
      assert.same({ n = 3, 1, nil, 3 }, a.args)
      assert.same({ n = 3, 1, nil, 3 }, b.args)
    end
    assert.same({ n = 0 }, T.make().args)
    assert.equal(T, getmetatable(T(1).make(2)))  -- through an instance too
  end)

  it("the same bound function is returned on every lookup, one per class", function()
    local B = Base()
    local S = B:extend("S")
    assert.equal(S.make, S.make)
    assert.are_not.equal(S.make, S:extend("T").make)
  end)

  it("the bound function calls the method found at call time", function()
    local B = Base()
    local S = B:extend("S")
    local make = S.make
    B.make = class.classmethod(function(cls, x) return { cls = cls, x = x } end)
    assert.same({ cls = S, x = 5 }, make(5))
    assert.same({ cls = S, x = 6 }, make(S, 6))
    function S.make(x) return "plain " .. x end  -- an override is not bound
    assert.equal("plain 7", S.make(7))
    assert.equal("plain 8", S:extend("T").make(8))
    assert.equal("plain 9", make(9))
    S.make = nil
    B.make = nil
    assert.has_error(function() make(1) end, "class S has no method 'make'")
  end)

  it("a bound function stored in a subclass still calls the method with the class it is looked up from", function()
    local C = Object:extend("C")
    C.make = class.classmethod(function(cls, x) return cls, x end)
    local S = C:extend("S")
    S.make = S.make
    local T = S:extend("T")
    -- (a bound function that finds itself calls itself for ever: stopped)
    debug.sethook(function() debug.sethook(); error("the class method did not return") end, "", 1e6)
    local ok, c1, x1, c2, x2, c3, x3 = pcall(function()
      local a, b = S.make(1)
      local c, d = T.make(2)
      return a, b, c, d, T:make(3)
    end)
    debug.sethook()
    assert.is_true(ok, c1)
    assert.equal(S, c1); assert.equal(1, x1)
    assert.equal(T, c2); assert.equal(2, x2)
    assert.equal(T, c3); assert.equal(3, x3)
  end)

  it("keeps no class alive", function()
    local B = Base()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local S = B:extend("S")
      weak.cls, weak.fn = S, S.make
      assert.equal(S, getmetatable(weak.fn()))
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.cls)
    assert.is_nil(weak.fn)
  end)

  it("refuses what is not a function", function()
    assert.has_error(function() class.classmethod({}) end,
      "TypeError: bad argument #1 to 'classmethod' (function expected, got table)")
  end)
end)
