--- braid.address: socket addresses as plain tables (twisted.internet.address).
-- test-case-name: spec/tcp_spec.lua
--
-- `{type = "TCP", host = "127.0.0.1", port = 9000}`; IPv6 adds `flowInfo`
-- and `scopeID`; UNIX addresses are `{type = "UNIX", name = path}`; a
-- HostnameEndpoint's is `{hostname = "example.com", port = 80}`.
-- tostring gives Twisted's repr.
local M = {}

-- Python's repr of a str: quoted with ' (with " when the string holds a '
-- and no "), backslash, the quote, \t \n \r and the other control bytes
-- escaped (an abstract UNIX name's NUL reads \x00); nil is None
local ESCAPES = { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }
local function quote(s)
  if s == nil then return "None" end
  s = tostring(s)
  local q = (s:find("'", 1, true) and not s:find('"', 1, true)) and '"' or "'"
  local body = s:gsub("[%c\\" .. q .. "]", function(c)
    return ESCAPES[c] or (c == q and "\\" .. c) or ("\\x%02x"):format(c:byte())
  end)
  return q .. body .. q
end
M.repr = quote

-- a number as %d shows an integer, anything else as tostring, nil as None
-- (Twisted's repr of an address made without a port)
local function num(v)
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if v == nil then return "None" end
  if type(v) == "string" then return quote(v) end  -- Python's repr: a scopeID "eth0" is 'eth0'
  return tostring(v)
end

-- Equal addresses are of one class (Twisted's __eq__ compares the
-- classes first) with equal fields.
local function eq(a, b)
  if getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end

local IPv4Address = { __name = "IPv4Address", __eq = eq }
IPv4Address.__index = IPv4Address
function IPv4Address.__tostring(a)
  return ("IPv4Address(type=%s, host=%s, port=%s)"):format(quote(a.type), quote(a.host), num(a.port))
end

local IPv6Address = { __name = "IPv6Address", __eq = eq }
IPv6Address.__index = IPv6Address
function IPv6Address.__tostring(a)
  return ("IPv6Address(type=%s, host=%s, port=%s, flowInfo=%s, scopeID=%s)"):format(
    quote(a.type), quote(a.host), num(a.port), num(a.flowInfo or 0), num(a.scopeID or 0))
end

-- UNIX addresses are equal when their names are, or name one file through
-- links (Twisted compares with os.path.samefile); braid.core tells, where
-- it can be loaded
local function unix_eq(a, b)
  if getmetatable(a) ~= getmetatable(b) then return false end
  if a.name == b.name then return true end
  if type(a.name) ~= "string" or type(b.name) ~= "string" then return false end
  if a.name:byte(1) == 0 or b.name:byte(1) == 0 then return false end  -- abstract names
  local ok, core = pcall(require, "braid.core")
  return ok and type(core) == "table" and core.samefile ~= nil and core.samefile(a.name, b.name)
end

local UNIXAddress = { __name = "UNIXAddress", __eq = unix_eq }
UNIXAddress.__index = UNIXAddress
function UNIXAddress.__tostring(a)
  return ("UNIXAddress(%s)"):format(quote(a.name))
end

-- The address of a HostnameEndpoint: the name and port it connects to
-- (Twisted's HostnameAddress; no `type`, as Twisted's has none)
local HostnameAddress = { __name = "HostnameAddress", __eq = eq }
HostnameAddress.__index = HostnameAddress
function HostnameAddress.__tostring(a)
  return ("HostnameAddress(hostname=%s, port=%s)"):format(quote(a.hostname), num(a.port))
end

-- Twisted's attrs validator: the type is "TCP" or "UDP", else ValueError
local function check_type(fname, kind)
  if kind ~= "TCP" and kind ~= "UDP" then
    local errors = require "braid.error"
    local got = _G.type(kind) == "string" and ("%q"):format(kind) or tostring(kind)
    error(errors.ValueError(("bad argument #1 to '%s' (type must be \"TCP\" or \"UDP\", got %s)")
      :format(fname, got)), 3)
  end
end

--- An IPv4 address. @param type "TCP" or "UDP"
function M.IPv4Address(type, host, port)
  check_type("IPv4Address", type)
  return setmetatable({ type = type, host = host, port = port }, IPv4Address)
end

--- An IPv6 address.
function M.IPv6Address(type, host, port, flowInfo, scopeID)
  check_type("IPv6Address", type)
  return setmetatable({ type = type, host = host, port = port,
    flowInfo = flowInfo or 0, scopeID = scopeID or 0 }, IPv6Address)
end

--- A UNIX socket address; name may be nil (an unbound peer).
function M.UNIXAddress(name)
  return setmetatable({ type = "UNIX", name = name }, UNIXAddress)
end

--- The address of a HostnameEndpoint: a host name and a port.
function M.HostnameAddress(hostname, port)
  require("braid.error").checktype("HostnameAddress", 1, hostname, "string")
  return setmetatable({ hostname = hostname, port = port }, HostnameAddress)
end

--- Build an address from what the C core returns:
-- family ("INET", "INET6", "UNIX"), host or path, port, flowinfo, scope.
function M.fromCore(kind, family, host, port, flow, scope)
  if family == "INET" then return M.IPv4Address(kind, host, port) end
  if family == "INET6" then return M.IPv6Address(kind, host, port, flow, scope) end
  if family == "UNIX" then return M.UNIXAddress(host) end
  return nil
end

-- Whether addr is an IP literal of family ("INET" or "INET6"), as
-- Twisted's twisted.internet.abstract.isIPAddress: inet_pton's reading
-- (braid.core's ip_family), with exactly four dotted parts for IPv4 and
-- an IPv6 scope ("%eth0") not looked at. A NUL byte makes no address
-- (Python's inet_pton refuses it; the C one would stop reading there).
local function ip_literal(addr, family)
  if addr:find("\0", 1, true) then return false end
  local core = require "braid.core"
  if family == "INET6" then
    return core.ip_family((addr:match("^[^%%]*"))) == "IPv6"
  end
  local _, dots = addr:gsub("%.", "")
  return dots == 3 and core.ip_family(addr) == "IPv4"
end

--- Whether addr is an IPv4 address literal (family "INET", the default)
-- or an IPv6 one (family "INET6"), as Twisted's isIPAddress.
function M.isIPAddress(addr, family)
  local errors = require "braid.error"
  errors.checktype("isIPAddress", 1, addr, "string")
  if family == nil then family = "INET" end
  if family ~= "INET" and family ~= "INET6" then
    local got = _G.type(family) == "string" and ("%q"):format(family) or tostring(family)
    error(errors.ValueError(("bad argument #2 to 'isIPAddress' (unknown address family %s)")
      :format(got)), 2)
  end
  return ip_literal(addr, family)
end

--- Whether addr is an IPv6 address literal, as Twisted's isIPv6Address.
function M.isIPv6Address(addr)
  require("braid.error").checktype("isIPv6Address", 1, addr, "string")
  return ip_literal(addr, "INET6")
end

--- True when v is one of these address tables.
function M.isAddress(v)
  local mt = getmetatable(v)
  return mt == IPv4Address or mt == IPv6Address or mt == UNIXAddress or mt == HostnameAddress
end

return M
