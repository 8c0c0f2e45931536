-- An outcome value that contains itself.
-- phase: start
-- expect: refers to itself
return process {
  name = "outcome-cycle", title = "Hostile: outcome_cycle",
  run = function(visit)
    local t = {}
    t.self = t
    visit:outcome('x', t)
  end,
}
