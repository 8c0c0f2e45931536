-- The message handler of xpcall loops.
-- phase: start
-- expect: ran too long
return process {
  name = "loop-in-xpcall-handler", title = "Hostile: loop_in_xpcall_handler",
  run = function(visit)
    while true do xpcall(function() error('x') end, function() while true do end end) end
  end,
}
