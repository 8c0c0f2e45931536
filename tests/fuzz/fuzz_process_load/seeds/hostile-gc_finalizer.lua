-- A finalizer would run inside another session's step.
-- phase: start
-- expect: __gc metamethods are not allowed
return process {
  name = "gc-finalizer", title = "Hostile: gc_finalizer",
  run = function(visit)
    setmetatable({}, { __gc = function() while true do end end })
  end,
}
