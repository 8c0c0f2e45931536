-- A __len of 2^40 would make table.insert shift forever in C.
-- phase: start
-- expect: the list has
return process {
  name = "table-insert-huge-len", title = "Hostile: table_insert_huge_len",
  run = function(visit)
    table.insert(setmetatable({}, { __len = function() return 1 << 40 end }), 1, 'x')
  end,
}
