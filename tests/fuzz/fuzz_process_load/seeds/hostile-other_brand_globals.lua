-- Looks for another brand's data: nothing of it is reachable.
-- phase: start
-- expect: isolated
-- The test loads a process holding SECRET_OF_BRAND_A in brand A's state first.
return process {
  name = "other-brand", title = "Other brand",
  run = function(visit)
    local found = {}
    for k in pairs(_ENV) do found[#found + 1] = k end
    assert(#found == 0, "the environment has entries")
    assert(getmetatable(_ENV) == false, "the environment's metatable is reachable")
    assert(rawget(_ENV, "SECRET_OF_BRAND_A") == nil)
    assert(not pcall(function() return SECRET_OF_BRAND_A end))
    assert(not pcall(function() return _G end))
    assert(load("return ...", "x", "t")() == nil)
    local ok, v = pcall(load("return secret"))
    assert(not ok, "a loaded chunk sees globals")
    error("isolated")
  end,
}
