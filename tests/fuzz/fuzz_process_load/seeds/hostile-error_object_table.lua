-- An error object whose __tostring loops must not be called.
-- phase: start
-- expect: not a string
return process {
  name = "error-object-table", title = "Hostile: error_object_table",
  run = function(visit)
    error(setmetatable({}, { __tostring = function() while true do end end }))
  end,
}
