-- Exponential backtracking in string.find (HARDENING.md).
-- phase: start
-- expect: ran too long
return process {
  name = "pattern-bomb", title = "Hostile: pattern_bomb",
  run = function(visit)
    string.find(('a'):rep(16), ('a-'):rep(16) .. 'b')
  end,
}
