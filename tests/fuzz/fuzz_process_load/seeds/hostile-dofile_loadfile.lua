-- No dofile or loadfile.
-- phase: start
-- expect: unknown global 'dofile'
return process {
  name = "dofile-loadfile", title = "Hostile: dofile_loadfile",
  run = function(visit)
    dofile('/etc/passwd')
  end,
}
