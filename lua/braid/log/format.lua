-- braid.log.format: the replacement fields of twisted.logger-style format
-- strings (PEP 3101), for braid.log's formatEvent. Private to braid.log.
local errors = require "braid.error"

local type, tostring = type, tostring
local concat = table.concat
local find, sub, gsub, format, byte = string.find, string.sub, string.gsub, string.format, string.byte
local safe_tostring = errors.safeString

-- Logger format strings: PEP 3101 replacement fields, as twisted.logger's
-- formatEvent reads them: `{name}`, a path `{a.b}` / `{a[b]}` into tables
-- (`{list.2}` and `{list[2]}` index a list), `{f()}` calls the field,
-- `!s` / `!r` / `!a` convert it and `:spec` formats it with Python's
-- format-spec mini-language (a spec may hold one nested `{field}`). `{{`
-- and `}}` are literal braces; a field with no value is left as written.
-- A bad conversion or spec raises, and formatEvent gives Twisted's
-- "Unable to format event".

-- one step of a path: t[part], a numeric part also as an integer key
local function index(v, part)
  if type(v) ~= "table" then return nil end
  local w = v[part]
  if w == nil then
    local n = math.tointeger(tonumber(part))
    if n then w = v[n] end
  end
  return w
end

-- A field name (`a`, `a.b`, `a[b]`, `a.b()`): true and its value (nil
-- when absent), or false when `key` is no field name.
local function lookup(ev, key)
  local call = sub(key, -2) == "()"
  if call then key = sub(key, 1, -3) end
  local first, rest = key:match("^([%w_]+)(.*)$")
  if not first then return false end
  local v = ev[first]
  local i, len = 1, #rest
  while i <= len do
    local c, part, e = sub(rest, i, i), nil, nil
    if c == "." then
      part, e = rest:match("^([%w_]+)()", i + 1)
    elseif c == "[" then
      part, e = rest:match("^([^%]]+)%]()", i + 1)
    end
    if not part then return false end
    v = index(v, part)
    i = e
  end
  if call and v ~= nil then
    errors.checkcallable(key .. "()", 1, v)
    v = v()
  end
  return true, v
end

local function ulen(s)
  return utf8.len(s) or #s
end

-- Python's repr of a string (ascii: ascii() instead); bytes that are no
-- UTF-8 are escaped as \xNN
local PY_ESC = { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function py_repr_string(s, ascii)
  local q = (find(s, "'", 1, true) and not find(s, '"', 1, true)) and '"' or "'"
  local out, n = { q }, 1
  local function put(x) n = n + 1; out[n] = x end
  local function code(cp, ch)
    if ch == q then put("\\" .. q)
    elseif PY_ESC[ch] then put(PY_ESC[ch])
    elseif cp < 32 or cp == 127 or (cp >= 128 and cp <= 160) or cp == 173 then
      put(format("\\x%02x", cp))
    elseif cp >= 128 and ascii then
      put(cp < 256 and format("\\x%02x", cp) or cp < 65536 and format("\\u%04x", cp)
        or format("\\U%08x", cp))
    else put(ch) end
  end
  if utf8.len(s) then
    for _, cp in utf8.codes(s) do code(cp, utf8.char(cp)) end
  else
    for k = 1, #s do
      local b = byte(s, k)
      if b >= 128 then put(format("\\x%02x", b)) else code(b, sub(s, k, k)) end
    end
  end
  put(q)
  return concat(out, "", 1, n)
end

local function convert(v, conv)
  if conv == "s" then return safe_tostring(v) end
  if conv == "r" or conv == "a" then
    if type(v) == "string" then return py_repr_string(v, conv == "a") end
    local s = safe_tostring(v)
    if conv == "a" then return (py_repr_string(s, true):sub(2, -2)) end
    return s
  end
  error("Unknown conversion specifier " .. conv, 0)
end

-- the mini-language: [[fill]align][sign][#][0][width][grouping][.precision][type]
local function parse_spec(spec)
  local p, i = {}, 1
  local fill, align, e = spec:match("^(" .. utf8.charpattern .. ")([<>=^])()")
  if not fill then align, e = spec:match("^([<>=^])()") end
  if align then p.fill, p.align, i = fill, align, e end
  local function take(pat)
    local m, e2 = spec:match("^(" .. pat .. ")()", i)
    if m then i = e2 end
    return m
  end
  p.sign = take("[%+%- ]")
  p.alt = take("#") ~= nil
  p.zero = take("0") ~= nil
  p.width = tonumber(take("%d+"))
  p.group = take("[,_]")
  local prec = take("%.%d+")
  p.precision = prec and tonumber(sub(prec, 2))
  p.type = take("[bcdeEfFgGnosxX%%]")
  if i <= #spec then
    if i == #spec and find(sub(spec, i), "^[%a]") then
      p.type = sub(spec, i)   -- an unknown type letter: refused by its formatter
    else
      error("Invalid format specifier '" .. spec .. "'", 0)
    end
  end
  if p.zero and not p.align then p.fill = "0" end
  p.fill = p.fill or " "
  return p
end

local rep = string.rep

-- pad `body` (after `head`, a sign and prefix) to the spec's width
local function pad(p, head, body, default_align)
  local len = ulen(head) + ulen(body)
  local w = p.width
  if not w or len >= w then return head .. body end
  local fill, n, align = p.fill, w - len, p.align or default_align
  if align == "<" then return head .. body .. rep(fill, n) end
  if align == ">" then return rep(fill, n) .. head .. body end
  if align == "=" then return head .. rep(fill, n) .. body end
  local l = n // 2
  return rep(fill, l) .. head .. body .. rep(fill, n - l)
end

-- digits grouped by sep every k from the right (up to any '.' or 'e')
local function group(digits, sep, k)
  local int, rest = digits:match(k == 4 and "^(%x*)(.*)$" or "^(%d*)(.*)$")
  local parts, n = {}, 0
  while #int > k do
    n = n + 1; parts[n] = sub(int, -k)
    int = sub(int, 1, -k - 1)
  end
  local out = int
  for j = n, 1, -1 do out = out .. sep .. parts[j] end
  return out .. rest
end

local function sign_of(p, neg)
  if neg then return "-" end
  if p.sign == "+" or p.sign == " " then return p.sign end
  return ""
end

-- pad a number: `body` is its digits, grouped here when the spec asks
-- (every k digits); zeros that pad it are grouped too, as Python's
local function number_pad(p, head, body, k)
  if p.zero and not p.align then p.align = "=" end
  if p.group and find(body, "^%w") and body ~= "inf" and body ~= "nan" then
    if p.align == "=" and p.fill == "0" and p.width then
      local w = p.width - ulen(head)
      local g = group(body, p.group, k)
      while #g < w do
        body = "0" .. body
        g = group(body, p.group, k)
      end
      return head .. g
    end
    body = group(body, p.group, k)
  end
  return pad(p, head, body, ">")
end

local function format_string(s, p)
  local t = p.type
  if t and t ~= "s" then
    error(format("Unknown format code '%s' for object of type 'str'", t), 0)
  end
  if p.sign then error("Sign not allowed in string format specifier", 0) end
  if p.alt then error("Alternate form (#) not allowed in string format specifier", 0) end
  if p.group then error(format("Cannot specify '%s' with 's'.", p.group), 0) end
  if p.align == "=" then error("'=' alignment not allowed in string format specifier", 0) end
  if p.precision and ulen(s) > p.precision then
    if utf8.len(s) then
      local cut = utf8.offset(s, p.precision + 1)
      s = sub(s, 1, cut - 1)
    else
      s = sub(s, 1, p.precision)
    end
  end
  return pad(p, "", s, "<")
end

local INT_PREFIX = { x = "0x", X = "0X", o = "0o", b = "0b" }

local function format_int(v, p)
  local t = p.type or "d"
  if p.precision then error("Precision not allowed in integer format specifier", 0) end
  if t == "c" then
    if p.sign then error("Sign not allowed with integer format specifier 'c'", 0) end
    if v < 0 or v > 0x10FFFF then error("%c arg not in range(0x110000)", 0) end
    return pad(p, "", utf8.char(v), ">")
  end
  if p.group == "," and t ~= "d" and t ~= "n" then
    error(format("Cannot specify ',' with '%s'.", t), 0)
  end
  local neg = v < 0
  local m = neg and -v or v   -- mininteger stays itself: read unsigned below
  local digits
  if t == "d" or t == "n" then
    digits = format("%d", v):gsub("^%-", "")
  elseif t == "x" or t == "X" then
    digits = format(t == "x" and "%x" or "%X", m)
  elseif t == "o" then
    digits = format("%o", m)
  else -- b
    local bits, k = {}, 0
    repeat
      k = k + 1; bits[k] = tostring(m & 1)
      m = m >> 1
    until m == 0
    digits = concat(bits):reverse()
  end
  local head = sign_of(p, neg) .. (p.alt and INT_PREFIX[t] or "")
  return number_pad(p, head, digits, (t == "d" or t == "n") and 3 or 4)
end

local function format_float(v, p)
  local t = p.type
  local neg = v < 0 or (v == 0 and 1 / v < 0)
  local x = neg and -v or v
  local body
  if x ~= x or x == math.huge then
    body = x ~= x and "nan" or "inf"
    if t == "E" or t == "F" or t == "G" then body = body:upper() end
    if t == "%" then body = body .. "%" end
    return number_pad(p, sign_of(p, neg), body, 3)
  end
  local alt = p.alt and "#" or ""
  local prec = p.precision
  if t == nil then
    if prec == nil then
      body = safe_tostring(x)
    else
      -- Python's general form: 'g', but always a digit after the point,
      -- so the exponent form starts one digit earlier
      if prec == 0 then prec = 1 end
      local es = format("%." .. (prec - 1) .. "e", x)
      local exp = tonumber(es:match("e([%+%-]%d+)$"))
      if exp < -4 or exp >= prec - 1 then
        body = p.alt and es or es:gsub("%.?0*e", "e")
      else
        body = format("%" .. alt .. "." .. prec .. "g", x)
        if not find(body, ".", 1, true) then body = body .. ".0" end
      end
    end
  elseif t == "%" then
    body = format("%" .. alt .. "." .. (prec or 6) .. "f", x * 100) .. "%"
  else
    local ct = t == "n" and "g" or t
    body = format("%" .. alt .. "." .. (prec or 6) .. ct, x)
  end
  return number_pad(p, sign_of(p, neg), body, 3)
end

local FLOAT_TYPES = { e = true, E = true, f = true, F = true, g = true, G = true, n = true, ["%"] = true }

-- format(v, spec): numbers as Python's int and float; any other value as
-- the string of its tostring (a boolean as `true`/`false`)
local function format_value(v, spec)
  local p = parse_spec(spec)
  local mt = math.type(v)
  if mt == "integer" then
    if p.type and FLOAT_TYPES[p.type] and p.type ~= "n" then return format_float(v + 0.0, p) end
    if p.type == nil or find("bcdoxXn", p.type, 1, true) then return format_int(v, p) end
    error(format("Unknown format code '%s' for object of type 'int'", p.type), 0)
  elseif mt == "float" then
    if p.type == nil or FLOAT_TYPES[p.type] then return format_float(v, p) end
    error(format("Unknown format code '%s' for object of type 'float'", p.type), 0)
  end
  return format_string(safe_tostring(v), p)
end

-- One replacement field's text (between the braces), or nil when it names
-- no value (or is no field at all): then it stays as written.
local function replace_field(body, ev)
  local name, conv, spec = body:match("^([^!:]*)!(.)(.*)$")
  if not name then
    name, spec = body:match("^([^!:]*)(.*)$")
  elseif spec ~= "" and sub(spec, 1, 1) ~= ":" then
    error("expected ':' after conversion specifier", 0)
  end
  if spec ~= "" then
    if sub(spec, 1, 1) ~= ":" then return nil end
    spec = sub(spec, 2)
  end
  local ok, v = lookup(ev, name)
  if not ok or v == nil then return nil end
  if find(spec, "{", 1, true) or find(spec, "}", 1, true) then
    local missing = false
    spec = gsub(spec, "{([^{}]*)}", function(inner)
      local w = replace_field(inner, ev)
      if w == nil then missing = true; return "" end
      return w
    end)
    if missing then return nil end
    if find(spec, "[{}]") then error("Max string recursion exceeded", 0) end
  end
  if conv then v = convert(v, conv) end
  if spec == "" then return safe_tostring(v) end
  return format_value(v, spec)
end

local function format_fields(fmt, ev)
  local out, n, i, len = {}, 0, 1, #fmt
  while i <= len do
    local s = find(fmt, "[{}]", i)
    if not s then
      n = n + 1; out[n] = sub(fmt, i)
      break
    end
    if s > i then n = n + 1; out[n] = sub(fmt, i, s - 1) end
    local c, c2 = byte(fmt, s), byte(fmt, s + 1)
    if c == 125 then -- "}"
      n = n + 1; out[n] = "}"
      i = s + (c2 == 125 and 2 or 1)
    elseif c2 == 123 then -- "{{"
      n = n + 1; out[n] = "{"
      i = s + 2
    else
      -- the matching "}" (a spec may hold nested fields)
      local depth, e, j = 1, nil, s + 1
      while true do
        j = find(fmt, "[{}]", j)
        if not j then break end
        if byte(fmt, j) == 123 then depth = depth + 1 else depth = depth - 1 end
        if depth == 0 then e = j; break end
        j = j + 1
      end
      n = n + 1
      if e then
        -- a field with no value stays as written
        out[n] = replace_field(sub(fmt, s + 1, e - 1), ev) or sub(fmt, s, e)
        i = e + 1
      else
        out[n] = "{"
        i = s + 1
      end
    end
  end
  return concat(out, "", 1, n)
end

return { fields = format_fields }
