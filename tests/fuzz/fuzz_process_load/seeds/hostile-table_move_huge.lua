-- table.move over the whole integer range.
-- phase: start
-- expect: table.move: at most
return process {
  name = "table-move-huge", title = "Hostile: table_move_huge",
  run = function(visit)
    table.move({}, 1, math.maxinteger, 2)
  end,
}
