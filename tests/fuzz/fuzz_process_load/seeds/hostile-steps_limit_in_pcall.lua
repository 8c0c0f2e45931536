-- The step limit cannot be caught either.
-- phase: steps
-- expect: limit of
return process {
  name = "steps-limit-in-pcall", title = "Hostile: steps_limit_in_pcall",
  run = function(visit)
    while true do pcall(visit.step, visit, { id = 'again' }) end
  end,
}
