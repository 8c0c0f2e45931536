-- No os.
-- phase: start
-- expect: unknown global 'os'
return process {
  name = "os-library", title = "Hostile: os_library",
  run = function(visit)
    os.execute('id')
  end,
}
