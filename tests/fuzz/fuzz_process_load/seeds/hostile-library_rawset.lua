-- rawset cannot get around the read-only library either.
-- phase: start
-- expect: cannot change a library
return process {
  name = "library-rawset", title = "Hostile: library_rawset",
  run = function(visit)
    rawset(string, 'rep', function() return 'pwned' end)
  end,
}
