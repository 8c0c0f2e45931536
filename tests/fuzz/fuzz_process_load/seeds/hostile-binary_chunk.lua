-- load refuses binary chunks (mode is forced to text).
-- phase: start
-- expect: attempt to load a binary chunk
return process {
  name = "binary-chunk", title = "Hostile: binary_chunk",
  run = function(visit)
    local f, err = load('\27LuaT\0\25\147\r\n\26\n')
    error(err)
  end,
}
