-- spec/reload_spec.lua: lua/braid/reload.lua (the merge engine) and runtime/reload.c
local reload = require("braid.reload")
local log = require("braid.log")
local tmp = require("helpers.tmp")

-- braid.reload goes on watching it after this file: removed at exit
local dir = tmp.dirUntilExit()
package.path = dir .. "/?.lua;" .. package.path
reload._installSearcher()

local seq = 0
local function write(name, src)
  local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
  f:write(src)
  f:close()
end
-- a fresh module name per test, so tests never share package.loaded
local function fresh(src)
  seq = seq + 1
  local name = "hotmod" .. seq
  write(name, src)
  return name, require(name)
end

local logged
local function observer(e) logged[#logged + 1] = e.text end
before_each(function() logged = {}; log.addObserver(observer) end)
after_each(function() log.removeObserver(observer) end)
-- the errors these specs provoke are checked through the observer, not shown
local saved_stream = log.setErrorStream({ write = function() end, flush = function() end })
teardown(function() log.setErrorStream(saved_stream) end)

-- reload[key] = value until the end of the running spec
local function set_for_spec(key, value)
  local saved = reload[key]
  reload[key] = value
  finally(function() reload[key] = saved end)
end

local function has_log(pat)
  for _, t in ipairs(logged) do if t:find(pat) then return true end end
  return false
end

describe("reload.reload", function()
  -- the record made at the first reload held the edited file, and cutting
  -- the live function's lines out of it indexed past its end: reload
  -- raised "invalid value (nil) at index 5 in table for 'concat'"
  it("reloads a module loaded before it watched, edited to fewer lines, without raising", function()
    seq = seq + 1
    local name = "hotmod" .. seq
    write(name, "local M = {}\n\n\n\nfunction M.f()\n  return 1\nend\nreturn M\n")
    local m = assert(loadfile(dir .. "/" .. name .. ".lua"))()
    package.loaded[name] = m
    assert.equal(1, m.f())
    write(name, "local M = {}\nfunction M.f() return 2 end\nreturn M\n")
    assert.is_true(reload.reload(name))
    assert.equal(2, m.f())
  end)

  -- the record made at that first reload held the edited file, so each
  -- function was compared with its own new text: "reloaded NAME (0
  -- functions replaced)" for an edited function, and history said 0
  it("counts the functions it replaces in a module loaded before it watched", function()
    seq = seq + 1
    local name = "hotmod" .. seq
    write(name, "local M = {}\nfunction M.f() return 1 end\nreturn M\n")
    local m = assert(loadfile(dir .. "/" .. name .. ".lua"))()
    package.loaded[name] = m
    write(name, "local M = {}\nfunction M.f() return 2 end\nfunction M.g() end\nreturn M\n")
    assert.is_true(reload.reload(name))
    assert.equal(2, m.f())
    assert.is_true(has_log("reloaded " .. name .. " %(1 functions replaced%)"))
    local h = reload.history(name)
    assert.equal(1, h[#h].replaced)
    -- the record's first version is the file read at that reload: nothing to roll back to
    assert.same({ nil, "no previous version of " .. name }, { reload.rollback(name) })
  end)

  it("replaces functions in the same module table", function()
    local name, m = fresh("local M = {} function M.f() return 1 end return M")
    local f = m.f
    write(name, "local M = {} function M.f() return 2 end return M")
    assert.is_true(reload.reload(name))
    assert.equal(m, package.loaded[name])
    assert.equal(2, m.f())
    assert.equal(1, f())
  end)

  -- the walk for module locals reaches another file's functions (here a
  -- superclass's): their own local M must not stand for this module's
  it("gives a new function this module's M, not a same-named local of another file", function()
    local base = fresh([[
      local M = { tag = "base module" }
      local Base = {}
      function Base.tag() return M.tag end
      M.Base = Base
      return M]])
    local name, m = fresh(([[
      local basemod = require(%q)
      return { Chat = { super = basemod.Base }, state = 1 }]]):format(base))
    write(name, ([[
      local basemod = require(%q)
      local M = { Chat = { super = basemod.Base }, state = 1 }
      function M.Chat.read() return M.state end
      return M]]):format(base))
    assert.is_true(reload.reload(name))
    m.state = 42
    assert.equal(42, m.Chat.read())
  end)

  it("gives a method added to a subclass its own module's locals, not the superclass's", function()
    -- the merge read the class's inherited method through its __index and
    -- joined the new one to that method's upvalues (the superclass's M)
    local bname, base = fresh([[
      local class = require "braid.class"
      local M = { tag = "BASE" }
      M.Base = class.Object:extend("Base")
      function M.Base:hello() return "base " .. M.tag end
      return M]])
    local name, m = fresh(([[
      local M = { tag = "APP" }
      M.App = require(%q).Base:extend("App")
      return M]]):format(bname))
    write(name, ([[
      local M = { tag = "APP" }
      M.App = require(%q).Base:extend("App")
      function M.App:hello() return "app " .. M.tag end
      return M]]):format(bname))
    assert.is_true(reload.reload(name))
    assert.equal("app APP", m.App():hello())
    assert.equal("base BASE", base.Base():hello())
  end)

  it("merges a strict module (its __index and __newindex raise) whole", function()
    local src = [[
      local M = {}
      function M.f() return %d end
      %s
      return setmetatable(M, { __index = function(_, k) error("strict: no field " .. k) end,
                               __newindex = function(_, k) error("strict: cannot set " .. k) end })]]
    local name, m = fresh(src:format(1, ""))
    write(name, src:format(2, "function M.g() return 3 end"))
    assert.is_true(reload.reload(name))
    assert.equal(2, m.f())
    assert.equal(3, m.g())
  end)

  it("stops a new version whose load runs too long, and keeps the previous code", function()
    local name, m = fresh("local M = {} function M.f() return 1 end return M")
    write(name, "local M = {} function M.f() return 2 end while true do end return M")
    set_for_spec("LOAD_TIME_LIMIT", 0.05)
    local ok, err = reload.reload(name)
    assert.is_nil(ok)
    assert.matches("the module ran more than 0.05 seconds as it loaded", err)
    assert.equal(1, m.f())
  end)

  it("runs a function under core.runLimited as xpcall does, or stops it", function()
    local core = require("braid.core")
    assert.same({ n = 4, true, 1, nil, 3 }, table.pack(core.runLimited(1, "cpu", "late", nil,
      function(a, b, c) return a, b, c end, 1, nil, 3)))
    local ok, e = core.runLimited(1, "wall", "late", function(m) return "handled: " .. m end, error, "x", 0)
    assert.equal(false, ok)
    assert.equal("handled: x", e)
    ok, e = core.runLimited(0, "wall", "too slow", function(m) return { m, debug.traceback() } end,
      function() while true do end end)
    assert.equal(false, ok)
    assert.matches("too slow$", e[1])
    assert.matches("stack traceback", e[2])
    assert.is_nil(debug.gethook())
    local function err_of(...)
      local ok2, msg = pcall(core.runLimited, ...)
      assert.is_false(ok2)
      return tostring(msg)
    end
    assert.matches("bad argument #2 to 'braid.core.runLimited' %(invalid option 'both'%)",
      err_of(1, "both", "m", nil, print))
    assert.matches("bad argument #1 to 'braid.core.runLimited' %(seconds must be a number >= 0%)",
      err_of(-1, "cpu", "m", nil, print))
    assert.matches("bad argument #4 to 'braid.core.runLimited' %(function expected, got number%)",
      err_of(1, "cpu", "m", 1, print))
  end)

  it("stops a load that catches the time limit's error or loops in a coroutine", function()
    local name, m = fresh("local M = {} function M.f() return 1 end return M")
    set_for_spec("LOAD_TIME_LIMIT", 0.05)
    write(name, "local M = {} function M.f() return 2 end "
      .. "while true do pcall(function() while true do end end) end return M")
    local ok, err = reload.reload(name)
    assert.is_nil(ok)
    assert.matches("the module ran more than 0.05 seconds as it loaded", err)
    write(name, "local M = {} function M.f() return 3 end "
      .. "coroutine.wrap(function() while true do end end)() return M")
    ok, err = reload.reload(name)
    assert.is_nil(ok)
    assert.matches("the module ran more than 0.05 seconds as it loaded", err)
    assert.equal(1, m.f())
    assert.is_nil(debug.gethook())
    write(name, "local M = {} function M.f() return 4 end return M")
    assert.is_true(reload.reload(name))
    assert.equal(4, m.f())
  end)

  it("adds new keys and removes removed functions", function()
    local name, m = fresh("local M = {} function M.a() end function M.b() end return M")
    write(name, "local M = {} function M.a() end function M.c() return 'c' end M.data = 5 return M")
    assert.is_true(reload.reload(name))
    assert.is_nil(m.b)
    assert.equal("c", m.c())
    assert.equal(5, m.data)
  end)

  it("keeps a data field changed at run time and updates an untouched one", function()
    local name, m = fresh("return { count = 0, limit = 10 }")
    m.count = 7
    write(name, "return { count = 0, limit = 20 }")
    assert.is_true(reload.reload(name))
    assert.equal(7, m.count)
    assert.equal(20, m.limit)
  end)

  it("keeps a local table upvalue and takes an edited constant", function()
    local name, m = fresh([[
      local clients = {}
      local LIMIT = 10
      local M = {}
      function M.add(c) clients[#clients + 1] = c; return #clients, LIMIT end
      return M]])
    m.add("x"); m.add("y")
    write(name, [[
      local clients = {}
      local LIMIT = 20
      local M = {}
      function M.add(c) clients[#clients + 1] = c; return #clients * 100, LIMIT end
      return M]])
    assert.is_true(reload.reload(name))
    local n, limit = m.add("z")
    assert.equal(300, n)
    assert.equal(20, limit)
  end)

  it("joins an added function to the module's locals", function()
    local name, m = fresh([[
      local seen = {}
      local M = {}
      function M.add(x) seen[#seen + 1] = x end
      return M]])
    m.add("a")
    write(name, [[
      local seen = {}
      local M = {}
      function M.add(x) seen[#seen + 1] = x end
      function M.count() return #seen, M end
      return M]])
    assert.is_true(reload.reload(name))
    local n, mod = m.count()
    assert.equal(1, n)
    assert.equal(m, mod)
  end)

  -- a helper new in this version, called from a replaced function, kept the
  -- new chunk's own `clients` (empty): a refactor that moved a loop over
  -- the live clients into a new local function saw nobody
  it("joins the upvalues of a local helper the new version adds to the module's locals", function()
    local name, m = fresh([[
      local clients = {}
      local hits = 0
      local M = {}
      function M.add(c) clients[#clients + 1] = c; hits = hits + 1 end
      function M.count() return #clients end
      return M]])
    m.add("a"); m.add("b")
    write(name, [[
      local clients = {}
      local hits = 0
      local M = {}
      local function names() return table.concat(clients, ","), hits end
      function M.add(c) clients[#clients + 1] = c; hits = hits + 1 end
      function M.count() return #clients end
      function M.list() return names() end
      return M]])
    assert.is_true(reload.reload(name))
    m.add("c")
    local list, hits = m.list()
    assert.equal("a,b,c", list)
    assert.equal(3, hits)
    assert.equal(3, m.count())
  end)

  -- a local table was joined to the live one whole: a dispatch table of
  -- handlers (`local commands = {}`) kept its old functions, so an edited
  -- handler never ran and an added one was not found
  it("puts the edited and added functions of a local table in the live one, its data kept", function()
    local name, m = fresh([[
      local clients = {}
      local commands = { prefix = "> " }
      function commands.ping() return "pong1" end
      local M = {}
      function M.add(c) clients[#clients + 1] = c end
      function M.run(c) return commands[c]() end
      function M.set(k, v) commands[k] = v end
      return M]])
    m.add("a")
    m.set("prefix", "$ ")
    m.set("custom", function() return "mine" end)
    write(name, [[
      local clients = {}
      local commands = { prefix = "> " }
      function commands.ping() return "pong2" end
      function commands.who() return commands.prefix .. table.concat(clients, ",") end
      local M = {}
      function M.add(c) clients[#clients + 1] = c end
      function M.run(c) return commands[c]() end
      function M.set(k, v) commands[k] = v end
      return M]])
    assert.is_true(reload.reload(name))
    assert.equal("pong2", m.run("ping"))
    m.add("b")
    assert.equal("$ a,b", m.run("who"))
    assert.equal("mine", m.run("custom"))
    assert.equal(1, reload.history(name)[2].replaced)
  end)

  it("joins the upvalues of a local helper: its counter kept, its edited constant taken", function()
    local src = [[
      local M = {}
      local count, LIMIT = 0, %d
      local function bump() count = count + 1; return count, LIMIT end
      function M.hit() return bump() end
      return M]]
    local name, m = fresh(src:format(5))
    m.hit(); m.hit()
    write(name, src:format(6))
    assert.is_true(reload.reload(name))
    assert.same({ 3, 6 }, { m.hit() })
  end)

  it("reloads a module that is a function: its locals kept, only changed code counted", function()
    local src = "local n = 0\nreturn function() n = n + 1; return n * %d end\n"
    local name, f = fresh(src:format(1))
    f(); f()
    write(name, src:format(10))
    assert.is_true(reload.reload(name))
    assert.equal(30, package.loaded[name]())
    write(name, "\n" .. src:format(10))  -- the same code, a line lower
    assert.is_true(reload.reload(name))
    assert.equal(40, package.loaded[name]())
    local h = reload.history(name)
    assert.same({ 0, 1, 0 }, { h[1].replaced, h[2].replaced, h[3].replaced })
  end)

  it("gives a field whose kind changed (a table now a number, a function now a string) its new value", function()
    local name, m = fresh("return { opts = { a = 1 }, mode = function() end }")
    write(name, "return { opts = 5, mode = 'fast' }")
    assert.is_true(reload.reload(name))
    assert.equal(5, m.opts)
    assert.equal("fast", m.mode)
  end)

  it("keeps a local counter that changed since load", function()
    local name, m = fresh([[
      local n = 0
      return { bump = function() n = n + 1; return n end }]])
    m.bump(); m.bump()
    write(name, [[
      local n = 0
      return { bump = function() n = n + 10; return n end }]])
    assert.is_true(reload.reload(name))
    assert.equal(12, m.bump())
  end)

  it("merges nested class tables so live instances run the new methods", function()
    local name, m = fresh([[
      local class = require("braid.class")
      local M = {}
      M.Chat = class.Object:extend("Chat")
      function M.Chat:init() self.lines = {} end
      function M.Chat:fmt(s) return "<" .. s .. ">" end
      return M]])
    local Sub = m.Chat:extend("Sub")
    local obj, sub = m.Chat(), Sub()
    obj.lines[1] = "kept"
    local Chat = m.Chat
    write(name, [[
      local class = require("braid.class")
      local M = {}
      M.Chat = class.Object:extend("Chat")
      function M.Chat:init() self.lines = {} end
      function M.Chat:fmt(s) return "[" .. s .. "]" end
      function M.Chat:shout(s) return s:upper() end
      return M]])
    assert.is_true(reload.reload(name))
    assert.equal(Chat, m.Chat)
    assert.equal("[a]", obj:fmt("a"))
    assert.equal("B", obj:shout("b"))
    assert.equal("kept", obj.lines[1])
    assert.equal("[c]", sub:fmt("c"))
  end)

  it("survives a module table that refers to itself", function()
    local name, m = fresh("local M = {} M.self = M function M.f() return 1 end return M")
    write(name, "local M = {} M.self = M function M.f() return 2 end return M")
    assert.is_true(reload.reload(name))
    assert.equal(m, m.self)
    assert.equal(2, m.f())
  end)

  it("runs __reload(old, new) after the merge", function()
    local name, m = fresh("return { users = { 'ann' } }")
    write(name, [[
      local M = { names = {} }
      function M.__reload(old, new)
        for i, u in ipairs(old.users) do old.names[u] = i end
      end
      return M]])
    assert.is_true(reload.reload(name))
    assert.equal(1, m.names.ann)
  end)

  it("sets reload.reloading while the chunk runs again", function()
    local name = fresh("return { was = require('braid.reload').reloading }")
    assert.is_false(package.loaded[name].was)
    write(name, "return { now = require('braid.reload').reloading }")
    assert.is_true(reload.reload(name))
    assert.is_true(package.loaded[name].now)
    assert.is_false(reload.reloading)
  end)

  it("keeps the previous code on a syntax error and logs it", function()
    local name, m = fresh("return { f = function() return 1 end }")
    write(name, "return { f = function() return 2 end")
    local ok, err = reload.reload(name)
    assert.is_nil(ok)
    assert.is_string(err)
    assert.equal(1, m.f())
    assert.is_true(has_log("reload of " .. name .. " failed: .*previous code kept"))
  end)

  it("keeps the previous code when the chunk raises, and logs the error with its traceback", function()
    local name, m = fresh("return { f = function() return 1 end }")
    write(name, "error('boom') return {}")
    local events = {}
    local function keep(e) events[#events + 1] = e end
    log.addObserver(keep)
    local ok, err = reload.reload(name)
    log.removeObserver(keep)
    assert.is_nil(ok)
    assert.matches(name .. "%.lua:1: boom", err)
    assert.equal(1, m.f())
    local f
    for _, e in ipairs(events) do
      if e.isError and tostring(e.why):find("reload of " .. name .. " failed", 1, true) then f = e.failure end
    end
    assert.is_table(f)
    assert.matches(name .. "%.lua:1: boom", f:getErrorMessage())
    assert.matches("traceback", f:getTraceback())
  end)

  it("refuses a module that now returns another type", function()
    local name, m = fresh("return { f = function() return 1 end }")
    write(name, "return 42")
    local ok, err = reload.reload(name)
    assert.is_nil(ok)
    assert.matches("returned a number", err)
    assert.equal(m, package.loaded[name])
  end)

  it("logs each successful reload with the count of functions whose code changed", function()
    local name = fresh("return {\n a = function() end,\n b = function() end,\n c = function() return 'c' end }")
    -- a and c change, b only moves down a line
    write(name, "return {\n a = function()\n return 1 end,\n b = function() end,\n c = function() return 'C' end }")
    assert.is_true(reload.reload(name))
    assert.is_true(has_log("reloaded " .. name .. " %(2 functions replaced%)"))
  end)

  it("raises a TypeError for a non-string module name", function()
    local errors = require("braid.error")
    local ok, e = pcall(reload.reload, 42)
    assert.is_false(ok)
    assert.equal(errors.TypeError, e.class)
  end)
end)

-- found by a hunt against docs/reload.md's promises
describe("reload.reload keeps what is not the module's own", function()
  -- the merge recursed into `super`: Protocol was merged into LineReceiver
  -- (which lost sendLine and lineReceived for every protocol)
  it("points a class at its new parent without touching the old one", function()
    local basic = require "braid.basic"
    local protocol = require "braid.protocol"
    local had = rawget(basic.LineReceiver, "sendLine")
    local name, m = fresh([[
      local basic = require "braid.basic"
      local M = {}
      M.P = basic.LineReceiver:extend("P")
      function M.P:hello() return "v1" end
      return M]])
    local P = m.P
    write(name, [[
      local protocol = require "braid.protocol"
      local M = {}
      M.P = protocol.Protocol:extend("P")
      function M.P:hello() return "v2" end
      return M]])
    assert.is_true(reload.reload(name))
    assert.equal(P, m.P)
    assert.equal(protocol.Protocol, P.super)
    assert.equal("v2", P():hello())
    assert.equal(had, rawget(basic.LineReceiver, "sendLine"))
    assert.is_function(rawget(basic.LineReceiver, "lineReceived"))
    assert.is_nil(rawget(protocol.Protocol, "hello"))
  end)

  it("points a field at another module instead of merging the two", function()
    local a = fresh("return { name = 'a', f = function() return 'a' end }")
    local b = fresh("return { name = 'b', g = function() return 'b' end }")
    local name, m = fresh(("return { codec = require(%q) }"):format(a))
    write(name, ("return { codec = require(%q) }"):format(b))
    assert.is_true(reload.reload(name))
    assert.equal(package.loaded[b], m.codec)
    assert.same({ "a", "a" }, { package.loaded[a].name, package.loaded[a].f() })
    assert.is_nil(package.loaded[a].g)
  end)

  -- every function missing from the new version was removed, also those
  -- the program had stored in the module's data at run time
  it("keeps functions stored in the module's tables at run time", function()
    local name, m = fresh([[
      local M = { handlers = {} }
      function M.on(n, f) M.handlers[n] = f end
      function M.gone() end
      return M]])
    m.on("greet", function(n) return "hi " .. n end)
    write(name, [[
      local M = { handlers = {} }
      function M.on(n, f) M.handlers[n] = f end
      return M]])
    assert.is_true(reload.reload(name))
    assert.equal("hi ann", m.handlers.greet("ann"))
    assert.is_nil(m.gone)
  end)

  -- a function upvalue was never joined: the new code's default came back
  it("keeps a local the program pointed at another function", function()
    local name, m = fresh([[
      local function default(x) return "default " .. x end
      local handler = default
      return { set = function(f) handler = f end, run = function(x) return handler(x) end }]])
    m.set(function(x) return "custom " .. x end)
    write(name, [[
      local function default(x) return "default " .. x end
      local handler = default
      return { set = function(f) handler = f end, run = function(x) return handler(x) .. "!" end }]])
    assert.is_true(reload.reload(name))
    assert.equal("custom a!", m.run("a"))
  end)

  -- Object:extend copies metamethods: the subclass kept the old copy
  it("merges a class another module re-exports in place, keeping its identity", function()
    local src = [[
      local class = require "braid.class"
      local M = {}
      M.C = class.Object:extend("C")
      function M.C:v() return %d end
      return M]]
    local name, m = fresh(src:format(1))
    local C, obj = m.C, m.C()
    local _, other = fresh(("return { C = require(%q).C }"):format(name))
    write(name, src:format(2))
    assert.is_true(reload.reload(name))
    assert.equal(C, m.C)
    assert.equal(C, other.C)
    assert.equal(2, obj:v())
  end)

  it("points a field that held another module's table at the new version's own table, the other untouched", function()
    local dep = fresh("return { Shared = { tag = 'dep', f = function() return 'dep' end } }")
    local name, m = fresh(("return { T = require(%q).Shared }"):format(dep))
    local shared = package.loaded[dep].Shared
    write(name, "return { T = { tag = 'own', g = function() return 'own' end } }")
    assert.is_true(reload.reload(name))
    assert.are_not.equal(shared, m.T)
    assert.same({ "own", "own" }, { m.T.tag, m.T.g() })
    assert.equal("dep", shared.tag)
    assert.is_function(rawget(shared, "f"))
    assert.is_nil(rawget(shared, "g"))
  end)

  it("points a field at another module's table when the new version says so, its old table left as it was", function()
    local dep = fresh("return { tag = 'dep' }")
    local name, m = fresh("return { H = { tag = 'own' } }")
    local own = m.H
    write(name, ("return { H = require(%q) }"):format(dep))
    assert.is_true(reload.reload(name))
    assert.equal(package.loaded[dep], m.H)
    assert.equal("own", own.tag)
    assert.equal("dep", package.loaded[dep].tag)
  end)

  it("passes an edited metamethod on to subclasses made in other modules", function()
    local base, bm = fresh([[
      local class = require "braid.class"
      local M = {}
      M.Base = class.Object:extend("Base")
      M.Base.__tostring = function() return "Base v1" end
      return M]])
    local _, sm = fresh(("return { Sub = require(%q).Base:extend('Sub') }"):format(base))
    assert.equal("Base v1", tostring(sm.Sub()))
    write(base, [[
      local class = require "braid.class"
      local M = {}
      M.Base = class.Object:extend("Base")
      M.Base.__tostring = function() return "Base v2" end
      return M]])
    assert.is_true(reload.reload(base))
    assert.equal("Base v2", tostring(bm.Base()))
    assert.equal("Base v2", tostring(sm.Sub()))
  end)

  it("stops a __reload hook that never ends, as it stops the chunk", function()
    set_for_spec("LOAD_TIME_LIMIT", 0.05)
    local name, m = fresh("return { v = 1 }")
    -- (a loop that ends after some seconds, so that without the limit this
    -- spec fails rather than hangs)
    write(name, "return { v = 2, __reload = function() for _ = 1, 1e9 do end end }")
    assert.is_true(reload.reload(name))
    assert.equal(2, m.v)
    assert.is_true(has_log("__reload of " .. name .. " failed"))
  end)

  -- a failed load was never tried again, and changed() did not list it
  it("tries a module that failed again once another one loads", function()
    local b, bm = fresh("return { ver = 1 }")
    local a, am = fresh(("local b = require(%q) return { say = function() return 'a1' end }"):format(b))
    write(a, ([[local b = require(%q)
      assert(b.format, "b.format missing")
      return { say = function() return 'a2+' .. b.format() end }]]):format(b))
    assert.is_nil(reload.reload(a))
    assert.equal("a1", am.say())
    local changed = reload.changed()
    assert.is_truthy(table.concat(changed, " "):find(a, 1, true))
    write(b, "return { ver = 2, format = function() return 'b2' end }")
    assert.is_true(reload.reload(b))
    assert.equal(2, bm.ver)
    assert.equal("a2+b2", am.say())
    assert.is_true(has_log("reload of " .. a .. " succeeded on a second try"))
  end)
end)

describe("reload.reload of files require reads", function()
  -- require (luaL_loadfile) skips a UTF-8 BOM and a '#' first line; the
  -- reload ran load() on the file's text, which failed to compile: such a
  -- module loaded but never reloaded ("unexpected symbol near '#'")
  it("reloads a module that starts with a shebang line or a UTF-8 BOM, with the file's line numbers", function()
    local name, m = fresh("#!/usr/bin/env lua\nreturn { f = function() return 1 end }\n")
    write(name, "#!/usr/bin/env lua\n\nreturn { f = function() error('two') end }\n")
    assert.is_true(reload.reload(name))
    local ok, err = pcall(m.f)
    assert.is_false(ok)
    assert.equal(dir .. "/" .. name .. ".lua:3: two", err)
    local bname, b = fresh("\239\187\191return { f = function() return 1 end }\n")
    write(bname, "\239\187\191return { f = function() return 2 end }\n")
    assert.is_true(reload.reload(bname))
    assert.equal(2, b.f())
    assert.is_false(has_log("failed"))
  end)
end)

describe("the searcher that records required modules", function()
  -- it called Lua's searcher from a line of reload.lua, which the
  -- searcher's error took for its position: under --watch a module that
  -- did not compile was reported as "/.../reload.lua:921: error loading ..."
  it("leaves a module's compile error as require gives it, without a position in reload.lua", function()
    seq = seq + 1
    local name = "hotmod" .. seq
    write(name, "return {")
    local ok, err = pcall(require, name)
    assert.is_false(ok)
    assert.equal(("error loading module '%s' from file '%s/%s.lua':"):format(name, dir, name),
      err:match("^[^\n]*"))
    assert.matches("^\t" .. dir:gsub("%p", "%%%0") .. "/" .. name .. "%.lua:1: ", err:match("\n(.*)$"))
  end)
end)

describe("the directories never watched", function()
  -- matched as bare prefixes, /usr/share/luafoo counted as /usr/share/lua
  it("are whole directories, not name prefixes", function()
    assert.is_true(reload._isSystemPath("/usr/share/lua/5.4/busted/core.lua"))
    assert.is_true(reload._isSystemPath("/usr/local/lib/lua/5.4/x.so"))
    assert.is_false(reload._isSystemPath("/usr/share/luafoo/app.lua"))
    assert.is_false(reload._isSystemPath("/usr/local/share/luarocks-app/m.lua"))
    assert.is_false(reload._isSystemPath(dir .. "/hotmod1.lua"))
  end)
end)

describe("reload.history and reload.rollback", function()
  it("records each version with time, hash and functions replaced", function()
    local name = fresh("return { f = function() return 1 end }")
    write(name, "return { f = function() return 2 end }")
    assert.is_true(reload.reload(name))
    local h = reload.history(name)
    assert.equal(2, #h)
    assert.equal(1, h[2].replaced)
    assert.is_number(h[2].time)
    assert.matches("^%x%x%x%x%x%x%x%x$", h[1].hash)
    assert.are_not.equal(h[1].hash, h[2].hash)
  end)

  it("rolls back to the previous version keeping state", function()
    local name, m = fresh("local s = {} return { f = function(x) s[#s+1] = x return 'v1', #s end }")
    m.f("a")
    write(name, "local s = {} return { f = function(x) s[#s+1] = x return 'v2', #s end }")
    assert.is_true(reload.reload(name))
    assert.same({ "v2", 2 }, { m.f("b") })
    assert.is_true(reload.rollback(name))
    assert.same({ "v1", 3 }, { m.f("c") })
    assert.equal(3, #reload.history(name))
  end)

  it("returns nil and a message when there is no previous version", function()
    local name = fresh("return {}")
    local ok, err = reload.rollback(name)
    assert.is_nil(ok)
    assert.matches("no previous version", err)
  end)
end)

describe("reload.on and reload.changed", function()
  it("calls listeners with the module name and version", function()
    local name = fresh("return { f = function() end }")
    local got
    reload.on(function(n, v) if n == name then got = v end end)
    write(name, "return { f = function() return 1 end }")
    assert.is_true(reload.reload(name))
    assert.equal(2, got)
  end)

  it("lists modules whose file changed on disk", function()
    local name = fresh("return {}")
    assert.is_nil(((" " .. table.concat(reload.changed(), " ") .. " "):find(" " .. name .. " ", 1, true)))
    write(name, "return { x = 1, padding = 'changed size' }")
    local found = false
    for _, n in ipairs(reload.changed()) do if n == name then found = true end end
    assert.is_true(found)
  end)
end)

-- Turn the reactor until cond() holds (bounded: a spec fails, never hangs).
local reactor = require("braid.reactor")
local function until_(cond, what)
  for _ = 1, 300 do
    if cond() then return end
    reactor.iterate(0.01)
  end
  error("timed out waiting for " .. what)
end
-- Turn the reactor for about `s` seconds (to see that nothing happens).
local function turn(s)
  local t = reactor.seconds() + s
  while reactor.seconds() < t do reactor.iterate(0.01) end
end
local function count_log(pat)
  local n = 0
  for _, t in ipairs(logged) do if t:find(pat) then n = n + 1 end end
  return n
end

describe("the inotify watcher", function()
  local function watched(src)
    local name, m = fresh(src)
    reload.watch(name)
    assert.equal("inotify", reload.watchMode(name))
    return name, m
  end

  it("leaves no check scheduled once a check has run early", function()
    local name = watched("return { x = 1 }")
    local before = #reactor.getDelayedCalls()
    assert(os.execute("touch " .. dir .. "/" .. name .. ".lua")) -- queues an event now
    for _ = 1, 3 do reload._pump() end
    assert.equal(before, #reactor.getDelayedCalls())
  end)

  it("loads a truncate-and-write save once the writer closes it, never the half-written file", function()
    local name, m = watched("return { f = function() return 1 end }")
    local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
    f:write("return { f = function() return 2 ")
    f:flush()
    turn(reload.SETTLE * 2)                   -- longer than any settle window
    assert.equal(1, m.f())
    assert.equal(0, count_log("failed"))
    f:write("end }")
    f:close()
    until_(function() return m.f() == 2 end, "the finished save to load")
    assert.equal(0, count_log("failed"))
    assert.equal(2, #reload.history(name))
  end)

  -- the race a storm of saves hit: the next writer truncates the file after
  -- the check took in the events and before its first stat, so both stats
  -- agree on the empty file, which was loaded ("module returned a boolean")
  it("does not load a file a writer truncated just before the check read it", function()
    local core = require("braid.core")
    local name, m = watched("return { f = function() return 1 end }")
    local path = dir .. "/" .. name .. ".lua"
    write(name, "return { f = function() return 2 end }")  -- a finished save: a check is due
    local stamp, writer = core.fileStamp, nil
    core.fileStamp = function(p)
      if p == path and writer == nil then writer = assert(io.open(path, "w")) end  -- truncates
      return stamp(p)
    end
    finally(function() core.fileStamp = stamp end)
    reload._pump()
    core.fileStamp = stamp
    assert.is_truthy(writer)
    assert.equal(1, m.f())
    assert.equal(0, count_log("failed"))
    writer:write("return { f = function() return 3 end }")
    writer:close()
    until_(function() return m.f() == 3 end, "the writer's save to load")
    assert.equal(0, count_log("failed"))
  end)

  -- an empty read is taken for a writer's truncation (a storm of saves
  -- loaded the empty file with no event left to tell it), so it waits
  -- SETTLE; a file really saved empty is loaded then (and refused here)
  it("loads a file saved empty only once it is still empty after SETTLE", function()
    local name, m = watched("return { f = function() return 1 end }")
    write(name, "")
    reload._pump()
    assert.equal(0, count_log("failed"))
    until_(function() return count_log("failed") > 0 end, "the empty file to be tried")
    assert.equal(1, count_log("module returned a boolean"))
    assert.equal(1, m.f())
  end)

  it("sees a save by rename (a temp file renamed over the module)", function()
    local name, m = watched("return { f = function() return 1 end }")
    local tmp = dir .. "/." .. name .. ".swp"
    local f = assert(io.open(tmp, "w")); f:write("return { f = function() return 2 end }"); f:close()
    assert(os.rename(tmp, dir .. "/" .. name .. ".lua"))
    until_(function() return m.f() == 2 end, "the renamed file to load")
  end)

  it("sees a save like vim's: old file moved away, a new one written in its place", function()
    local name, m = watched("return { f = function() return 1 end }")
    local path = dir .. "/" .. name .. ".lua"
    assert(os.rename(path, path .. "~"))
    write(name, "return { f = function() return 2 end }")
    os.remove(path .. "~")
    until_(function() return m.f() == 2 end, "the new file to load")
    assert.equal(0, count_log("previous code kept"))
  end)

  -- write, at path p, a module whose f() returns v
  local function put_version(p, v)
    local f = assert(io.open(p, "w")); f:write(("return { f = function() return %d end }"):format(v)); f:close()
  end
  -- make directories a and b, removed when the spec ends
  local function scratch_dirs(a, b)
    finally(function() os.execute("rm -rf " .. a .. " " .. b) end)
    assert(os.execute("mkdir -p " .. a .. " " .. b))
  end

  -- only the directory of the link's target was watched: `sed -i` on the
  -- link's path (which puts a file in the link's place) and a link pointed
  -- at another file went unseen, the old code running on
  it("sees the saves of a module whose file is a symlink: through it, over it, and after it is repointed", function()
    seq = seq + 1
    local name = "hotmod" .. seq
    local path = dir .. "/" .. name .. ".lua"
    local other1, other2 = dir .. "_real1", dir .. "_real2"
    scratch_dirs(other1, other2)
    put_version(other1 .. "/target.lua", 1)
    assert(os.execute(("ln -s %s/target.lua %s"):format(other1, path)))
    local m = require(name)
    reload.watch(name)
    put_version(path, 2)                                 -- through the link
    until_(function() return m.f() == 2 end, "the save through the link to load")
    put_version(dir .. "/." .. name .. ".tmp", 3)        -- sed -i: a file renamed over the link
    assert(os.rename(dir .. "/." .. name .. ".tmp", path))
    until_(function() return m.f() == 3 end, "the file renamed over the link to load")
    put_version(other2 .. "/target.lua", 4)              -- ln -sfn: the name points elsewhere
    assert(os.execute(("ln -s %s/target.lua %s.new && mv -T %s.new %s"):format(other2, path, path, path)))
    until_(function() return m.f() == 4 end, "the repointed link to load")
    put_version(other2 .. "/target.lua", 5)              -- a save in the new target's directory
    until_(function() return m.f() == 5 end, "the save in the new target's directory to load")
    assert.equal(0, count_log("failed"))
  end)

  -- only the directory the link led to when the module loaded was watched:
  -- a symlinked directory pointed at a new release went unseen, and so did
  -- every save in the new release afterwards
  it("sees a symlinked directory on a module's path pointed elsewhere, and the saves made there after", function()
    seq = seq + 1
    local link = "linkdir" .. seq
    local rel1, rel2 = dir .. "_" .. link .. "_1", dir .. "_" .. link .. "_2"
    scratch_dirs(rel1, rel2)
    put_version(rel1 .. "/m.lua", 1)
    put_version(rel2 .. "/m.lua", 2)
    assert(os.execute(("ln -s %s %s/%s"):format(rel1, dir, link)))
    local name = link .. ".m"
    local m = require(name)
    reload.watch(name)
    assert.equal(1, m.f())
    assert(os.execute(("ln -s %s %s/%s.new && mv -T %s/%s.new %s/%s"):format(rel2, dir, link, dir, link, dir, link)))
    until_(function() return m.f() == 2 end, "the module of the new release to load")
    put_version(rel2 .. "/m.lua", 3)
    until_(function() return m.f() == 3 end, "the save in the new release to load")
    assert.equal(0, count_log("failed"))
  end)

  it("reports a source that failed once, however often it is saved again", function()
    local name, m = watched("return { f = function() return 1 end }")
    write(name, "return { f = function() return 2 end")
    until_(function() return count_log("reload of " .. name .. " failed") > 0 end, "the failure to be logged")
    write(name, "return { f = function() return 2 end")
    turn(reload.SETTLE * 2)
    assert.equal(1, count_log("reload of " .. name .. " failed"))
    assert.equal(1, m.f())
    write(name, "return { f = function() return 2 end }")
    until_(function() return m.f() == 2 end, "the fixed save to load")
  end)

  -- the failed source was remembered after the file went back to the
  -- running version: reload.changed() kept listing the module, and the
  -- same mistake saved again later was not reported at all
  it("forgets a failed save once the file is back to the running version", function()
    local good = "return { f = function() return 1 end }"
    local bad = "return { f = function() return 2 end"
    local name, m = watched(good)
    local function listed()
      for _, n in ipairs(reload.changed()) do if n == name then return true end end
      return false
    end
    write(name, bad)
    until_(function() return count_log("reload of " .. name .. " failed") == 1 end, "the failure to be logged")
    assert.is_true(listed())
    write(name, good)                                   -- the mistake undone
    until_(function() return not listed() end, "the undone save to be seen")
    assert.equal(1, #reload.history(name))
    write(name, bad)                                    -- the same mistake again
    until_(function() return count_log("reload of " .. name .. " failed") == 2 end, "the failure to be logged again")
    assert.is_true(listed())
    assert.equal(1, m.f())
  end)

  it("tries a module whose chunk raised again once the watcher loads another one", function()
    local b = watched("return { ver = 1 }")
    local a, am = watched(("local b = require(%q) return { say = function() return 'a1' end }"):format(b))
    write(a, ([[local b = require(%q)
      assert(b.format, "b.format missing")
      return { say = function() return 'a2+' .. b.format() end }]]):format(b))
    until_(function() return count_log("reload of " .. a .. " failed") > 0 end, "a's failure to be logged")
    write(b, "return { ver = 2, format = function() return 'b2' end }")
    until_(function() return am.say() == "a2+b2" end, "a to load on its second try")
    assert.is_true(has_log("reload of " .. a .. " succeeded on a second try"))
  end)

  it("reloads nothing when a save leaves the source as it was", function()
    local name = watched("return { f = function() return 1 end }")
    write(name, "return { f = function() return 1 end }")
    turn(reload.DEBOUNCE * 5)
    assert.equal(1, #reload.history(name))
  end)

  -- the watcher's stamp is mtime+size+inode: a touch after a rollback
  -- changed it, and the text on disk (the version rolled back from) was
  -- loaded again, undoing the rollback
  describe("after a rollback", function()
    local core = require("braid.core")
    local v1 = "return { f = function() return 1 end }"
    local v2 = "return { f = function() return 2 end }"
    -- a module at v2, rolled back to v1 (v2 still on disk)
    local function rolled_back()
      local name, m = watched(v1)
      write(name, v2)
      until_(function() return m.f() == 2 end, "v2 to load")
      assert.is_true(reload.rollback(name))
      assert.equal(1, m.f())
      return name, m, dir .. "/" .. name .. ".lua"
    end
    -- wait until the watcher has taken in the file as it is now
    local function seen(name, path)
      local s = core.fileStamp(path)
      until_(function() return reload._records[name].stamp == s end, "the watcher to see the file")
    end

    it("keeps the rolled-back version when the file is only touched", function()
      local name, m, path = rolled_back()
      assert(os.execute("touch -d '2001-02-03 04:05:06' " .. path))
      seen(name, path)
      assert.equal(1, m.f())
      assert.equal(3, #reload.history(name))
      for _, n in ipairs(reload.changed()) do assert.are_not.equal(name, n) end
    end)

    it("keeps the rolled-back version when the same text is saved again, twice", function()
      local name, m, path = rolled_back()
      write(name, v2)
      seen(name, path)
      write(name, v2)
      seen(name, path)
      assert.equal(1, m.f())
      assert.equal(3, #reload.history(name))
    end)

    it("loads a real edit, and reload.reload loads the file as it is", function()
      local name, m = rolled_back()
      assert.is_true(reload.reload(name))        -- forced: the file's v2
      assert.equal(2, m.f())
      assert.is_true(reload.rollback(name))
      assert.equal(1, m.f())
      write(name, "return { f = function() return 3 end }")
      until_(function() return m.f() == 3 end, "the edit to load")
      assert.equal(6, #reload.history(name))
    end)

    it("loads nothing when a failed save is undone to the running version, then loads a real edit", function()
      local name, m, path = rolled_back()
      write(name, "return { f = function() return 4 end")   -- does not compile
      until_(function() return count_log("reload of " .. name .. " failed") == 1 end, "the failure")
      write(name, v1)                                        -- the running version's text
      seen(name, path)
      assert.equal(1, m.f())
      assert.equal(3, #reload.history(name))
      write(name, v2)                                        -- the text it was rolled back from: an edit now
      until_(function() return m.f() == 2 end, "v2 to load again")
      assert.equal(4, #reload.history(name))
    end)
  end)

  it("loads two identical saves in a row once", function()
    local name, m = watched("return { f = function() return 1 end }")
    local path = dir .. "/" .. name .. ".lua"
    write(name, "return { f = function() return 2 end }")
    write(name, "return { f = function() return 2 end }")
    until_(function() return m.f() == 2 end, "the save to load")
    local s = require("braid.core").fileStamp(path)
    until_(function() return reload._records[name].stamp == s end, "the watcher to see the file")
    assert.equal(2, #reload.history(name))
  end)

  it("logs a deleted file once, keeps the old code, and loads the file when it comes back", function()
    local name, m = watched("return { f = function() return 1 end }")
    os.remove(dir .. "/" .. name .. ".lua")
    until_(function() return count_log(name .. ": .*previous code kept") > 0 end, "the deletion to be logged")
    turn(reload.SETTLE)
    assert.equal(1, count_log(name .. ": .*previous code kept"))
    assert.equal(1, m.f())
    write(name, "return { f = function() return 3 end }")
    until_(function() return m.f() == 3 end, "the file to come back")
    -- each time the file goes away is a new problem, logged again
    os.remove(dir .. "/" .. name .. ".lua")
    until_(function() return count_log(name .. ": .*previous code kept") > 1 end, "the second deletion to be logged")
    assert.equal(2, count_log(name .. ": .*previous code kept"))
    assert.equal(3, m.f())
  end)

  it("logs a file made unreadable and keeps the old code", function()
    local name, m = watched("return { f = function() return 1 end }")
    local path = dir .. "/" .. name .. ".lua"
    os.execute("chmod 000 " .. path)
    local probe = io.open(path, "rb")
    local readable = probe and probe:read("a") ~= nil
    if probe then probe:close() end
    if readable then
      -- root reads anything: make the name unreadable another way
      os.remove(path)
      assert(os.execute("mkdir " .. path))
    end
    until_(function() return count_log(name .. ": .*previous code kept") > 0 end, "the problem to be logged")
    assert.equal(1, m.f())
    os.execute("rm -rf " .. path)
    write(name, "return { f = function() return 4 end }")
    until_(function() return m.f() == 4 end, "the readable file to load")
  end)

  it("logs a module that now returns another type and keeps the old one", function()
    local name, m = watched("return { f = function() return 1 end }")
    write(name, "return function() end")
    until_(function() return count_log("reload of " .. name .. " failed: .*function") > 0 end, "the failure")
    assert.equal(m, package.loaded[name])
    assert.equal(1, m.f())
  end)

  it("survives a storm of 100 saves in a second and ends on the last one", function()
    local name, m = watched("return { f = function() return 0 end }")
    for i = 1, 100 do
      write(name, ("return { f = function() return %d end }"):format(i))
      reactor.iterate(0.01)
    end
    until_(function() return m.f() == 100 end, "the last save to load")
    assert.equal(0, count_log("failed"))
    assert.is_true(#reload.history(name) <= 101)
    turn(reload.DEBOUNCE * 3)
    assert.equal(100, m.f())
  end)

  it("keeps the source of only the last KEEP_SOURCES versions", function()
    local name, m = watched("return { f = function() return 0 end }")
    set_for_spec("KEEP_SOURCES", 2)
    for i = 1, 3 do
      write(name, ("return { f = function() return %d end }"):format(i))
      assert.is_true(reload.reload(name))
    end
    assert.equal(3, m.f())
    assert.is_true(reload.rollback(name))
    assert.equal(2, m.f())
    local recs = reload._records[name].versions
    assert.is_nil(recs[1].source)
    assert.is_nil(recs[2].source)
    assert.is_nil(recs[3].source)
    assert.is_string(recs[4].source)
    assert.is_string(recs[5].source)
  end)
end)

describe("the polling fallback", function()
  local saved_settle
  before_each(function() saved_settle = reload.SETTLE; reload.SETTLE = 0; reload.usePolling = true end)
  after_each(function() reload.SETTLE = saved_settle; reload.usePolling = false end)

  it("loads a changed file once its stamp holds still, and retries after a failed compile", function()
    local name, m = fresh("return { f = function() return 1 end }")
    reload.watch(name)
    assert.equal("poll", reload.watchMode(name))
    write(name, "return { f = function() return 2 end") -- half-written
    reload._poll(); reload._poll()
    assert.equal(1, m.f())
    assert.equal(1, count_log("reload of " .. name .. " failed"))
    reload._poll()
    assert.equal(1, count_log("reload of " .. name .. " failed"))
    write(name, "return { f = function() return 3 end, g = 'longer file now' }")
    reload._poll(); reload._poll()
    assert.equal(3, m.f())
  end)

  it("keeps a rolled-back version when the file is only touched", function()
    local name, m = fresh("return { f = function() return 1 end }")
    reload.watch(name)
    write(name, "return { f = function() return 2 end, pad = 1 }")
    reload._poll(); reload._poll()
    assert.equal(2, m.f())
    assert.is_true(reload.rollback(name))
    assert(os.execute("touch -d '2001-02-03 04:05:06' " .. dir .. "/" .. name .. ".lua"))
    reload._poll(); reload._poll(); reload._poll()
    assert.equal(1, m.f())
    assert.equal(3, #reload.history(name))
  end)

  it("logs a deleted file once and keeps the old code", function()
    local name, m = fresh("return { f = function() return 1 end }")
    reload.watch(name)
    os.remove(dir .. "/" .. name .. ".lua")
    reload._poll(); reload._poll()
    assert.equal(1, m.f())
    assert.equal(1, count_log("previous code kept"))
  end)
end)

describe("braid.core.fileStamp", function()
  it("returns a stamp string, or nil and an error for a missing file", function()
    local core = require("braid.core")
    assert.matches("^%d+:%d+:%d+:%d+$", core.fileStamp(dir))
    local s, msg, code = core.fileStamp(dir .. "/nope")
    assert.is_nil(s)
    assert.is_string(msg)
    assert.equal("ENOENT", code)
  end)
end)
