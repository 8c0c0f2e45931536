-- Keeps the first session's visit in an upvalue and uses it from the second.
-- phase: twice
-- expect: belongs to another session
local saved
return process {
  name = "stale-visit", title = "Stale visit",
  run = function(visit)
    if saved then saved:step { id = "stolen" } end
    saved = visit
    visit:step { id = "a" }
  end,
}
