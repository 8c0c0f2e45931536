-- Unbounded Lua recursion.
-- phase: start
-- expect: stack overflow|out of memory
return process {
  name = "deep-recursion", title = "Hostile: deep_recursion",
  run = function(visit)
    local function f(n) return 1 + f(n + 1) end
    f(1)
  end,
}
