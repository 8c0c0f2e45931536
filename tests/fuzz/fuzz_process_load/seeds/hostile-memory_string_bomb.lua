-- Keeps megabyte strings alive until the cap is hit.
-- phase: start
-- expect: out of memory
return process {
  name = "memory-string-bomb", title = "Hostile: memory_string_bomb",
  run = function(visit)
    local t = {}
    for i = 1, 1e6 do t[i] = string.rep('x', 1 << 20) .. i end
  end,
}
