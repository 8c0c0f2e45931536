-- An endless loop in run.
-- phase: start
-- expect: ran too long
return process {
  name = "loop-infinite", title = "Hostile: loop_infinite",
  run = function(visit)
    while true do end
  end,
}
