-- The coroutine library is not in the sandbox.
-- phase: start
-- expect: unknown global 'coroutine'
return process {
  name = "coroutine-library", title = "Hostile: coroutine_library",
  run = function(visit)
    local co = coroutine.wrap(function() end)
  end,
}
