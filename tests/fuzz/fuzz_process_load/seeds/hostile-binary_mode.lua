-- Asking load for mode 'b' is refused.
-- phase: start
-- expect: accepts only text chunks
return process {
  name = "binary-mode", title = "Hostile: binary_mode",
  run = function(visit)
    load('return 1', 'x', 'b')
  end,
}
