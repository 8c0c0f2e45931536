-- The same bomb through the string metatable.
-- phase: start
-- expect: ran too long
return process {
  name = "pattern-bomb-metatable", title = "Hostile: pattern_bomb_metatable",
  run = function(visit)
    local s = ('a'):rep(16)
    s:find(('a-'):rep(16) .. 'b')
  end,
}
