-- A loop of steps that never ends.
-- phase: steps
-- expect: limit of
return process {
  name = "steps-limit", title = "Hostile: steps_limit",
  run = function(visit)
    while true do visit:step { id = 'again' } end
  end,
}
