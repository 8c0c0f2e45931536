-- string.dump is removed.
-- phase: start
-- expect: field 'dump'
return process {
  name = "string-dump", title = "Hostile: string_dump",
  run = function(visit)
    local s = string.dump(function() end)
  end,
}
