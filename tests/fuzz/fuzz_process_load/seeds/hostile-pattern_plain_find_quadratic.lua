-- A plain find whose memcmp work is quadratic.
-- phase: start
-- expect: ran too long
return process {
  name = "pattern-plain-find-quadratic", title = "Hostile: pattern_plain_find_quadratic",
  run = function(visit)
    local s = ('a'):rep(1 << 20)
    local p = ('a'):rep(1 << 19) .. 'b'
    for i = 1, 100 do s:find(p, 1, true) end
  end,
}
