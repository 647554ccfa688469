-- Twins of Twisted 22.4's twisted/test/test_context.py (the module-scope
-- API of twisted.python.context), through braid.log, whose context is the
-- log system: context.get is log.getSystem (nothing set: "-", the default
-- Twisted's log gives ILogContext), context.call is log.callWithContext
-- with a context table, and context.setDefault is log.setSystem (the
-- system in force outside every callWithContext). One describe per
-- Twisted TestCase class, each it named after the Twisted method; the
-- mapping is in docs/twisted-tests.md.
local log = require "braid.log"

describe("ContextTests", function()
  after_each(function() log.setSystem(false) end)

  it("test_notPresentIfNotSet", function()
    assert.equal("-", log.getSystem())
  end)

  it("test_setByCall", function()
    assert.equal("y", log.callWithContext({ system = "y" }, log.getSystem))
  end)

  it("test_unsetAfterCall", function()
    log.callWithContext({ system = "y" }, function() end)
    assert.equal("-", log.getSystem())
  end)

  it("test_setDefault", function()
    local prev = log.setSystem("y")
    finally(function() log.setSystem(prev) end)
    assert.equal("y", log.getSystem())
  end)
end)
