-- The string metatable reaches rep too: ('x'):rep(1e9).
-- phase: start
-- expect: string.rep would build
return process {
  name = "rep-through-metatable", title = "Hostile: rep_through_metatable",
  run = function(visit)
    local s = ('x'):rep(1e9)
  end,
}
