-- string.rep cannot be replaced for other sessions.
-- phase: start
-- expect: cannot change a library
return process {
  name = "library-readonly", title = "Hostile: library_readonly",
  run = function(visit)
    string.rep = function() return 'pwned' end
  end,
}
