--- braid.class: the one class model shared by every braid module.
-- test-case-name: spec/class_spec.lua
--
-- Classes are plain tables. An instance's metatable is its class; a class's
-- metatable makes it callable and chains lookups to its parent, so methods
-- are found at call time (never cached: hot reload replaces them in place).
local M = {}

-- A misuse raises braid.error's TypeError (API.md: errors are objects);
-- braid.error is built on this module, so it is required here, at the
-- error, and while it is itself loading the plain message is raised.
-- `level` as error()'s, counted from the caller.
local function type_error(msg, level)
  local ok, errors = pcall(require, "braid.error")
  if ok and type(errors) == "table" and errors.TypeError then error(errors.TypeError(msg), level + 1) end
  error(msg, level + 1)
end

-- Metamethods Lua looks up with rawget on the metatable: a subclass copies
-- its parent's so instances inherit them. __mode (weak instances) is read
-- raw by the collector the same way.
local METAMETHODS = {
  "__tostring", "__eq", "__lt", "__le", "__concat", "__len", "__call",
  "__add", "__sub", "__mul", "__div", "__mod", "__unm", "__close",
  "__idiv", "__pow", "__band", "__bor", "__bxor", "__shl", "__shr", "__bnot",
  "__gc", "__newindex", "__pairs", "__mode",
}

local ClassMeta = {}

-- cls -> weak set of the classes made by cls:extend() (so that a reload
-- that edits a copied metamethod can pass it on: M.inheritMetamethod)
local SUBCLASSES = setmetatable({}, { __mode = "k" })

local function new(cls, ...)
  local ctor = cls.__new  -- a class may construct itself (Failure(f) is f)
  if ctor then return ctor(cls, ...) end
  local obj = setmetatable({}, cls)
  local init = cls.init
  if init then init(obj, ...) end
  return obj
end

-- Class methods (Python's classmethod). CLASSMETHOD[f] is true for a
-- function marked by M.classmethod, false for a function bound by `bound`
-- (one weak table, so lookups pay a single index).
local CLASSMETHOD = setmetatable({}, { __mode = "k" })
local BOUND = setmetatable({}, { __mode = "k" })  -- cls -> { [name] = bound }

-- The class method `name` as seen from cls, at call time: bound functions
-- are skipped, so a reload that replaces it on an ancestor is seen at once.
local function classmethod_of(cls, name)
  local c = cls
  while c ~= nil do
    local v = rawget(c, name)
    if v ~= nil and CLASSMETHOD[v] ~= false then return v end
    c = rawget(c, "super")
  end
  return nil
end

-- cls.name for a class method: a function that calls it with cls, from a
-- dot call (cls.name(...)) or a colon call (cls:name(...)) alike.
local function bound(cls, name)
  local byname = BOUND[cls]
  if byname == nil then
    byname = {}
    BOUND[cls] = byname
  end
  local b = byname[name]
  if b == nil then
    b = function(...)
      local f = classmethod_of(cls, name)
      if f == nil then
        error("class " .. tostring(rawget(cls, "__name")) .. " has no method '" .. name .. "'", 2)
      end
      -- a colon call (or a method no longer a class method) passes through
      if rawequal((...), cls) or not CLASSMETHOD[f] then return f(...) end
      return f(cls, ...)
    end
    CLASSMETHOD[b] = false
    byname[name] = b
  end
  return b
end

ClassMeta.__call = new
ClassMeta.__index = function(cls, k)
  local parent = rawget(cls, "super")
  if parent then
    local v = parent[k]
    if v ~= nil and CLASSMETHOD[v] ~= nil then return bound(cls, k) end
    return v
  end
  return nil
end
ClassMeta.__tostring = function(cls)
  return "<class " .. tostring(rawget(cls, "__name") or "?") .. ">"
end

-- The metatables of classes: ClassMeta, and the copies setconstructor makes.
local CLASSMETA = setmetatable({ [ClassMeta] = true }, { __mode = "k" })

local Object = setmetatable({ __name = "Object" }, ClassMeta)
Object.__index = Object

--- Make a subclass.
-- @param name optional class name (used by tostring, log prefixes, errors)
-- @param fields optional table of fields and methods copied into the class
-- @return the new class
function Object:extend(name, fields)
  if not M.isclass(self) then
    type_error("bad argument #1 to 'extend' (class expected, got " .. M.nameof(self)
      .. "; call it as Cls:extend(...))", 2)
  end
  if type(name) == "table" and fields == nil then
    fields, name = name, nil
  end
  if name ~= nil and type(name) ~= "string" then
    type_error("bad argument #1 to 'extend' (string expected, got " .. type(name) .. ")", 2)
  end
  if fields ~= nil and type(fields) ~= "table" then
    type_error("bad argument #2 to 'extend' (table expected, got " .. type(fields) .. ")", 2)
  end
  local cls = {}
  for _, mm in ipairs(METAMETHODS) do
    local v = rawget(self, mm)
    if v ~= nil then cls[mm] = v end
  end
  if fields then
    for k, v in pairs(fields) do cls[k] = v end
  end
  if type(rawget(cls, "__index")) ~= "function" then  -- fields may give one
    local inherited = rawget(self, "__index")
    if type(inherited) == "function" then
      -- the parent's instances look missing keys up with a function (as a
      -- Python __getattr__): the subclass's instances look in the class
      -- chain first, then ask the parent's __index of the moment
      cls.__index = function(obj, k)
        local v = cls[k]
        if v ~= nil then return v end
        local f = rawget(self, "__index")
        if type(f) == "function" then return f(obj, k) end
        return nil
      end
    else
      cls.__index = cls
    end
  end
  cls.__name = name or rawget(self, "__name")
  cls.super = self
  local subs = SUBCLASSES[self]
  if subs == nil then
    subs = setmetatable({}, { __mode = "k" })
    SUBCLASSES[self] = subs
  end
  subs[cls] = true
  return setmetatable(cls, ClassMeta)
end

--- Make an instance and call its init(...) when defined.
function Object:new(...)
  if not M.isclass(self) then
    type_error("bad argument #1 to 'new' (class expected, got " .. M.nameof(self)
      .. "; call it as Cls:new(...))", 2)
  end
  return new(self, ...)
end

-- A method of a class called on something else (a dot call, an instance):
-- the TypeError, raised only once the answer would be false, so the true
-- answers cost nothing more.
local function check_class(fname, self, level)
  if not M.isclass(self) then
    type_error("bad argument #1 to '" .. fname .. "' (class expected, got " .. M.nameof(self)
      .. "; call it as Cls:" .. fname .. "(...))", level + 1)
  end
end

--- True when v is an instance of this class or of a subclass. Classes are
-- compared raw: an __eq of the instances takes no part.
function Object:isinstance(v)
  if type(v) == "table" then
    local mt = getmetatable(v)
    while type(mt) == "table" do
      if rawequal(mt, self) then return true end
      mt = rawget(mt, "super")
    end
  end
  check_class("isinstance", self, 2)
  return false
end

--- True when this class is cls or inherits from it (compared raw).
function Object:issubclass(cls)
  local c = self
  while type(c) == "table" do
    if rawequal(c, cls) then return true end
    c = rawget(c, "super")
  end
  check_class("issubclass", self, 2)
  if not M.isclass(cls) then
    type_error("bad argument #1 to 'issubclass' (class expected, got " .. M.nameof(cls) .. ")", 2)
  end
  return false
end

--- The class of an instance (its metatable), or nil.
function M.classof(v)
  local mt = type(v) == "table" and getmetatable(v)
  if type(mt) == "table" and CLASSMETA[getmetatable(mt)] then return mt end
  return nil
end

--- True when v is a class made by this module.
function M.isclass(v)
  return type(v) == "table" and CLASSMETA[getmetatable(v)] == true
end

--- Make cls(...) call ctor(cls, ...) directly (a constructor written in C,
-- say), or go back to the usual new (ctor nil). Subclasses of cls made
-- later keep the usual path: ctor must handle cls itself only.
function M.setconstructor(cls, ctor)
  if not M.isclass(cls) then
    type_error("bad argument #1 to 'setconstructor' (class expected, got " .. type(cls) .. ")", 2)
  end
  if ctor == nil then return setmetatable(cls, ClassMeta) end
  local meta = {}
  for k, v in pairs(ClassMeta) do meta[k] = v end
  meta.__call = ctor
  CLASSMETA[meta] = true
  return setmetatable(cls, meta)
end

--- Mark f(cls, ...) as a class method (Python's classmethod) and return
-- it: stored in a class C, C.name is f itself, and for any subclass S
-- (made before or after), S.name(...) and S:name(...) both call
-- f(S, ...). Looking S.name up again gives the same function; it finds the
-- method at call time, so replacing C.name (hot reload) takes effect.
function M.classmethod(f)
  if type(f) ~= "function" then
    type_error("bad argument #1 to 'classmethod' (function expected, got " .. type(f) .. ")", 2)
  end
  CLASSMETHOD[f] = true
  return f
end

--- The class name of an instance or class, else Lua's type name.
function M.nameof(v)
  if M.isclass(v) then return rawget(v, "__name") end
  local cls = M.classof(v)
  if cls then return cls.__name end
  return type(v)
end

Object.__tostring = function(self)
  local cls = getmetatable(self)
  return "<" .. tostring(cls.__name) .. " instance>"
end

M.Object = Object

--- Internal (braid.reload): cls's metamethod `name` went from `old` to
-- `new`; the subclasses (made by extend, at any depth) that still hold the
-- copy of `old` that extend gave them get `new`, as their methods, which
-- they look up through cls, do.
function M.inheritMetamethod(cls, name, old, new)
  local subs = SUBCLASSES[cls]
  if subs == nil then return end
  for sub in pairs(subs) do
    if rawget(sub, name) == old then
      rawset(sub, name, new)
      M.inheritMetamethod(sub, name, old, new)
    end
  end
end
M.METAMETHODS = {}
for _, mm in ipairs(METAMETHODS) do M.METAMETHODS[mm] = true end
M.extend = function(...) return Object:extend(...) end
return M
