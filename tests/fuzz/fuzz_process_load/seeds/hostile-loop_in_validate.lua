-- The step's validate function loops; the session must stay at its step.
-- phase: complete-waiting
-- expect: ran too long
return process {
  name = "loop-in-validate", title = "Hostile: loop_in_validate",
  run = function(visit)
    visit:step { id = 'a', fields = { field.integer { name = 'n' } }, validate = function() while true do end end }
  end,
}
