-- No io.
-- phase: start
-- expect: unknown global 'io'
return process {
  name = "io-library", title = "Hostile: io_library",
  run = function(visit)
    io.open('/etc/passwd')
  end,
}
