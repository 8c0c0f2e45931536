-- Lua's rep loops n times even for an empty string; the guard answers at once.
-- phase: start
-- expect: survived: 0
return process {
  name = "rep-empty-forever", title = "Hostile: rep_empty_forever",
  run = function(visit)
    local s = string.rep('', math.maxinteger)
    error('survived: ' .. #s)
  end,
}
