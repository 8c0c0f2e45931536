-- string.rep asked for a gigabyte.
-- phase: start
-- expect: string.rep would build
return process {
  name = "rep-huge", title = "Hostile: rep_huge",
  run = function(visit)
    local s = string.rep('x', 1e9)
  end,
}
