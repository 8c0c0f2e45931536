-- A table.sort comparator that loops, called from C.
-- phase: start
-- expect: ran too long
return process {
  name = "loop-sort-comparator", title = "Hostile: loop_sort_comparator",
  run = function(visit)
    local t = {3, 2, 1}
    while true do pcall(table.sort, t, function(a, b) while true do end end) end
  end,
}
