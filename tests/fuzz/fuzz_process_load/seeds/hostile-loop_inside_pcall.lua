-- An endless loop inside pcall: the budget error must not be swallowed.
-- phase: start
-- expect: ran too long
return process {
  name = "loop-inside-pcall", title = "Hostile: loop_inside_pcall",
  run = function(visit)
    while true do pcall(function() while true do end end) end
  end,
}
