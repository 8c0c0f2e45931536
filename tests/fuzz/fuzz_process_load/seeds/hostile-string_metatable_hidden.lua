-- getmetatable('') must not hand out the string metatable.
-- phase: start
-- expect: attempt to index a boolean value
return process {
  name = "string-metatable-hidden", title = "Hostile: string_metatable_hidden",
  run = function(visit)
    getmetatable('').__index = { rep = function() end }
  end,
}
