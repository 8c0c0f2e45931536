-- Pattern bombs retried under pcall.
-- phase: start
-- expect: ran too long
return process {
  name = "pattern-bomb-in-pcall", title = "Hostile: pattern_bomb_in_pcall",
  run = function(visit)
    while true do pcall(string.gsub, ('a'):rep(20), ('a-'):rep(20) .. 'b', '') end
  end,
}
