-- Globals would be shared by every visit of the brand.
-- phase: start
-- expect: cannot assign the global 'leak'
return process {
  name = "global-write", title = "Hostile: global_write",
  run = function(visit)
    leak = visit.customer
  end,
}
