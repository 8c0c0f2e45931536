-- collectgarbage beyond count.
-- phase: start
-- expect: only supports "count"
return process {
  name = "gc-collect", title = "Hostile: gc_collect",
  run = function(visit)
    collectgarbage('collect')
  end,
}
