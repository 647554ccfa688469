-- spec/log_diff_spec.lua: braid.log's Logger format strings
-- (log.formatEvent) against Twisted's twisted.logger.formatEvent, on random
-- programs. spec/helpers/log_diff.lua makes the programs (events with
-- integer, string, boolean, nil and nested table fields; format strings of
-- literal text, "{{", "}}", "{name}" and "{a.b}" fields, and a missing
-- format; malformed ones are left out, see docs/log.md) and runs them here;
-- spec/peers/log_diff.py runs the same programs under Debian's
-- /usr/bin/python3 with Twisted. Every formatted text must be the same.
local ldiff = require "helpers.log_diff"
local td = require "helpers.twisted_diff"

local PROGRAMS = 3000
local SEED = 20261207

describe("braid.log's formatEvent against Twisted's twisted.logger", function()
  local text = ldiff.generate(SEED, PROGRAMS)

  it("gives the same trace for " .. PROGRAMS .. " random programs", function()
    td.check(ldiff.run, "log_diff.py", text, PROGRAMS)
  end)
  it("runs programs that reach every piece and outcome", function()
    local fmts = {}
    for h in text:gmatch("\nfmt %d+ (=%x*)") do fmts[#fmts + 1] = ldiff.unhex(h) end
    local all_fmts = table.concat(fmts, "\n")
    -- plain finds: the pieces of format strings
    for _, piece in ipairs({ "{{", "}}", "{x}", "}}}", "{{{", "%s" }) do
      assert.truthy(all_fmts:find(piece, 1, true), piece)
    end
    -- Lua patterns: a nested path, an empty format
    for _, pat in ipairs({ "{[%w_]+%.[%w_]+%.[%w_]+}", "^\n", "\n\n" }) do
      assert.truthy(("\n" .. all_fmts .. "\n"):find(pat), pat)
    end
    for _, line in ipairs({ "\nfield [%w_]+ int %-", "\nfield [%w_]+ str =\n",
                            "\nfield [%w_]+ bool true", "\nfield [%w_]+ bool false",
                            "\nfield [%w_.]+ nil", "\nfield [%w_]+%.[%w_]+ table",
                            "\nfmt %d+ nil" }) do
      assert.truthy(text:find(line), line)
    end
    local all = {}
    for _, t in pairs((td.braid(ldiff.run, text))) do all[#all + 1] = t end
    all = table.concat(all, "\n")
    for _, seen in ipairs({ "= %[%]", "= %[true%]", "= %[false%]", "9223372036854775807",
                            "%-9223372036854775808", "{x}", "= %[[^%]]*{[^%]]*%]" }) do
      assert.truthy(all:find(seen), seen)
    end
  end)
end)
