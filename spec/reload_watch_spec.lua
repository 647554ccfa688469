-- spec/reload_watch_spec.lua: `braid --watch` (lua/braid/reload.lua, runtime/reload.c) with a real server and client
local proc = require("spec.helpers.proc")
local socket = require("socket")
local unix_ok, socket_unix = pcall(require, "socket.unix")

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local function readfile(p)
  local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s
end
local original = readfile(proc.root .. "/examples/hot/chat.lua")
local function save(src)
  local f = assert(io.open(dir .. "/chat.lua", "w")); f:write(src); f:close()
end
save(original)
local sf = assert(io.open(dir .. "/server.lua", "w"))
sf:write(readfile(proc.root .. "/examples/hot/server.lua")); sf:close()

local function edit(from, to, src)
  local s, n = (src or original):gsub(from:gsub("%p", "%%%0"), (to:gsub("%%", "%%%%")))
  assert(n > 0, "edit pattern not found: " .. from)
  return s
end

describe("braid --watch with a live chat connection", function()
  local p, c, version = nil, nil, 1

  local function line()
    local l, err = c:receive("*l")
    assert(l, "client read failed: " .. tostring(err))
    return l
  end
  local function say(s) assert(c:send(s .. "\n")) end
  local function reloaded()
    version = version + 1
    assert.truthy(p:waitFor("reloaded chat version " .. version), "no reload seen")
  end

  setup(function()
    p = proc.spawn({ "--watch", "--console", "unix:" .. dir .. "/console.sock",
                     dir .. "/server.lua", "0" }, { limit = 60 })
    local l = p:waitFor("listening on port")
    assert(l, "server did not start")
    local port = tonumber(l:match("port (%d+)"))
    c = assert(socket.connect("127.0.0.1", port))
    c:settimeout(10)
    assert.equal("welcome", line())
  end)

  teardown(function()
    if c then c:close() end
    if p then p:kill("TERM"); p:finish() end
    os.execute("rm -rf " .. dir)
  end)

  it("answers with the new format on the same connection, state intact", function()
    say("hi"); assert.equal("> hi", line())
    save(edit('"> " .. line', '"[" .. self.said .. "] " .. line'))
    reloaded()
    say("again"); assert.equal("[2] again", line())
  end)

  it("keeps the old logic serving after a syntax error, and logs it", function()
    save("return {")
    assert.truthy(p:waitFor("reload of chat failed: .*previous code kept"))
    say("still"); assert.equal("[3] still", line())
  end)

  it("serves an added command", function()
    local src = edit('"> " .. line', '"[" .. self.said .. "] " .. line')
    save(edit("function M.count()",
      'function M.Chat:cmd_ping() self:sendLine("pong") end\nfunction M.count()', src))
    reloaded()
    say("/ping"); assert.equal("pong", line())
    say("/count"); assert.equal("said 3", line())
  end)

  it("forgets a removed command", function()
    save(edit('"> " .. line', '"[" .. self.said .. "] " .. line'))
    reloaded()
    say("/ping"); assert.equal("unknown command ping", line())
  end)

  it("runs __reload to migrate state", function()
    save(edit("return M", [[
function M.__reload(old)
  old.migrated = old.count()
end
function M.Chat:cmd_migrated() self:sendLine("migrated " .. tostring(M.migrated)) end
return M]]))
    reloaded()
    say("/migrated"); assert.equal("migrated 1", line())
  end)

  it("reloads a change by SIGHUP", function()
    local src = edit('"> " .. line', '"hup: " .. line')
    local saved = p
    -- SIGHUP reloads at once whatever changed; the poll may win the race,
    -- either way one reload happens
    save(src)
    saved:kill("HUP")
    reloaded()
    say("x"); assert.equal("hup: x", line())
  end)

  it("keeps the connection across many quick saves", function()
    for i = 1, 20 do save(edit('"> " .. line', '"v' .. i .. ': " .. line')) end
    -- the last save wins once the file is stable
    local l
    repeat
      l = p:waitFor("reloaded chat version")
      local src = readfile(dir .. "/chat.lua")
      assert.truthy(src:find('"v20: "', 1, true))
      say("n"); l = line()
    until l == "v20: n"
    assert.equal("v20: n", l)
  end)

  it("is driven through the console: evaluate, inspect, roll back", function()
    local new = unix_ok and (type(socket_unix) == "table" and socket_unix.stream or socket_unix) or socket.unix
    local k = assert(new())
    assert(k:connect(dir .. "/console.sock"))
    k:settimeout(10)
    local function ask(q)
      assert(k:send(q .. "\n"))
      return assert(k:receive("*l"))
    end
    assert.matches("^braid console", assert(k:receive("*l")))
    assert.equal("1", ask('require("chat").count()'))
    assert.matches("^error: .*nope", ask("error('nope')"))
    assert.equal("true", ask('rollback("chat")'))
    assert.truthy(p:waitFor("reloaded chat version %d+"))
    -- back to whichever save before the last one was loaded
    say("r")
    local l = line()
    assert.matches("^%S+: r$", l)
    assert.are_not.equal("v20: r", l)
    k:close()
  end)
end)
