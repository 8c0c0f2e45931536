-- __gc added after setmetatable is never registered by Lua.
-- phase: start
-- expect: done
return process {
  name = "gc-added-late", title = "Hostile: gc_added_late",
  run = function(visit)
    local mt = {}
    for i = 1, 1000 do setmetatable({}, mt) end
    mt.__gc = function() while true do end end
    collectgarbage('count')
    error('done')
  end,
}
