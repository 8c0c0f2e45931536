-- Doubles a string until memory runs out.
-- phase: start
-- expect: out of memory
return process {
  name = "memory-doubling", title = "Hostile: memory_doubling",
  run = function(visit)
    local s = 'x'
    local keep = {}
    for i = 1, 64 do s = s .. s; keep[i] = s end
  end,
}
