-- Recursion through pcall hits the C stack limit, inside pcall.
-- phase: start
-- expect: survived
return process {
  name = "deep-recursion-pcall", title = "Hostile: deep_recursion_pcall",
  run = function(visit)
    local function f() return pcall(f) end
    f()
    error('survived')
  end,
}
