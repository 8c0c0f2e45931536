-- validate tries to move the session.
-- phase: complete-waiting
-- expect: validate cannot call visit:step
return process {
  name = "validate-calls-step", title = "Hostile: validate_calls_step",
  run = function(visit)
    visit:step { id = 'a', validate = function(d, v) v:step { id = 'b' } end }
  end,
}
