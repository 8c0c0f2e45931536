-- Grows a table without end: memory cap or budget, whichever first.
-- phase: start
-- expect: 
return process {
  name = "memory-table-bomb", title = "Hostile: memory_table_bomb",
  run = function(visit)
    local t = {}
    local i = 0
    while true do i = i + 1; t[i] = { i, i, i } end
  end,
}
