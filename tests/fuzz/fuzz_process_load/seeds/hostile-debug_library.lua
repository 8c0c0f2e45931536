-- No debug.
-- phase: start
-- expect: unknown global 'debug'
return process {
  name = "debug-library", title = "Hostile: debug_library",
  run = function(visit)
    debug.getregistry()
  end,
}
