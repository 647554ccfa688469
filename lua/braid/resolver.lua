--- braid.resolver: name resolution without blocking the loop.
-- test-case-name: spec/resolver_spec.lua
--
-- The default resolver runs the system's getaddrinfo (nsswitch: /etc/hosts,
-- DNS...) on a thread per lookup (runtime/resolve.c); the answer comes back
-- through the loop. installResolver(r) replaces it
-- with any table whose r:getHostByName(name, opts) returns a Deferred of a
-- list of {family = "INET"|"INET6", host = addr}; opts.family ("INET" or
-- "INET6", Twisted's addressTypes) asks for one family only.
local core = require "braid.core"
local errors = require "braid.error"

local M = {}

-- loaded when first needed, out of descriptors too (core.require_spare)
local function defer() return core.require_spare("braid.defer") end

-- an IP literal (as inet_pton reads it) of the family asked for (or of
-- either) is its own answer; one of the other family is left to
-- getaddrinfo, which refuses it
local function numeric(name, family)
  local f = core.ip_family(name)
  f = (f == "IPv4" and "INET") or (f == "IPv6" and "INET6") or nil
  if f and (family == nil or family == f) then return { { family = f, host = name } } end
  return nil
end

local Default = {}
Default.__index = Default

--- The built-in resolver.
function Default:getHostByName(name, opts)
  local D = defer()
  local family = opts and opts.family
  local list = numeric(name, family)
  if list then return D.succeed(list) end
  local req
  local d = D.Deferred(function() if req then req:cancel() end end)
  req = core.getaddrinfo(name, function(res, msg)
    req = nil
    if d.called then return end
    if res == nil or #res == 0 then
      d:errback(errors.DNSLookupError(("address %q not found: %s"):format(name, tostring(msg or "no address"))))
    else
      d:callback(res)
    end
  end, family)
  return d
end

M.defaultResolver = setmetatable({}, Default)
local current = M.defaultResolver

--- Replace the resolver; returns the previous one. nil restores the default.
function M.installResolver(r)
  if r ~= nil and (type(r) ~= "table" or type(r.getHostByName) ~= "function") then
    errors.argerror("installResolver", 1, "resolver with getHostByName expected, got " .. type(r))
  end
  local prev = current
  current = r or M.defaultResolver
  return prev
end

-- a name to look up: a string without NUL bytes (the system's resolver
-- would read only up to the first)
local function check_name(fname, name)
  errors.checktype(fname, 1, name, "string")
  if name:find("\0", 1, true) then
    error(errors.ValueError(("bad argument #1 to '%s' (name contains a NUL byte)"):format(fname)), 3)
  end
end

--- Every address of name: Deferred of a list of {family, host}.
-- @param opts optional table: family = "INET" or "INET6" for that
-- family's addresses only (nil: both), timeout (passed on to the resolver)
function M.getHostByName(name, opts)
  check_name("getHostByName", name)
  errors.checktype("getHostByName", 2, opts, "table", true)
  local family = opts and opts.family
  if family ~= nil and family ~= "INET" and family ~= "INET6" then
    local got = type(family) == "string" and ("%q"):format(family) or tostring(family)
    error(errors.ValueError(("bad argument #2 to 'getHostByName' (family must be \"INET\" or \"INET6\", got %s)")
      :format(got)), 2)
  end
  return current:getHostByName(name, opts)
end

-- The first address of a resolver's answer; an empty list (a resolver
-- may give one) is a DNSLookupError, as connectTCP takes it.
local function first_host(name, list)
  local a = type(list) == "table" and list[1]
  if type(a) ~= "table" or type(a.host) ~= "string" then
    error(errors.DNSLookupError(("%s: no address"):format(name)), 0)
  end
  return a.host
end

--- Deferred firing with the first address string of name (either family,
-- as API.md says; Twisted's asks for IPv4 only: docs/resolver.md).
-- @param timeout optional seconds; DNSLookupError after that (0 or nil:
-- none, as connectTCP's)
function M.resolve(name, timeout)
  check_name("resolve", name)
  errors.checkseconds("resolve", 2, timeout, "timeout", true)
  -- as Twisted's ReactorBase.resolve: the empty name is "0.0.0.0" and an
  -- address literal is its own answer, whatever resolver is installed
  -- (Twisted's: an IPv4 one; braid's resolve gives either family)
  if name == "" then return defer().succeed("0.0.0.0") end
  if core.ip_family(name) then return defer().succeed(name) end
  if timeout == 0 then timeout = nil end
  local d = current:getHostByName(name, { timeout = timeout })
  if timeout then
    local D = defer()
    local timer
    local out = D.Deferred(function() d:cancel() end)
    timer = require("braid.reactor").callLater(timeout, function()
      timer = nil
      if not out.called then
        out:errback(errors.DNSLookupError(("%s: resolution timed out"):format(name)))
        d:addErrback(function() end)
        d:cancel()
      end
    end)
    d:addCallbacks(function(list)
      if timer then timer:cancel() timer = nil end
      if out.called then return end
      local ok, host = pcall(first_host, name, list)
      if ok then out:callback(host) else out:errback(host) end
    end, function(f)
      if timer then timer:cancel() timer = nil end
      if not out.called then out:errback(f) end
    end)
    return out
  end
  return d:addCallback(function(list) return first_host(name, list) end)
end

return M
