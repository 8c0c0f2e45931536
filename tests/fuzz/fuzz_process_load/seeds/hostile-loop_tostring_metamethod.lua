-- A __tostring that loops, reached from C (tostring).
-- phase: start
-- expect: ran too long
return process {
  name = "loop-tostring-metamethod", title = "Hostile: loop_tostring_metamethod",
  run = function(visit)
    local t = setmetatable({}, { __tostring = function() while true do end end })
    pcall(tostring, t) error('survived')
  end,
}
