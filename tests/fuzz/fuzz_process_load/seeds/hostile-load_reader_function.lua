-- A reader function would run under load's own handler.
-- phase: start
-- expect: load takes the source code as a string
return process {
  name = "load-reader-function", title = "Hostile: load_reader_function",
  run = function(visit)
    load(function() while true do end end)
  end,
}
