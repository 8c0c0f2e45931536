-- A gmatch bomb: the iterator runs the matcher in C.
-- phase: start
-- expect: ran too long
return process {
  name = "pattern-gmatch-bomb", title = "Hostile: pattern_gmatch_bomb",
  run = function(visit)
    for x in (('a'):rep(30)):gmatch(('a*'):rep(12) .. 'b') do end
  end,
}
