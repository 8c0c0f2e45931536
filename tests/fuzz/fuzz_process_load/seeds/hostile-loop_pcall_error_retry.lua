-- Catches every error, including the budget's, and retries.
-- phase: start
-- expect: ran too long
return process {
  name = "loop-pcall-error-retry", title = "Hostile: loop_pcall_error_retry",
  run = function(visit)
    local n = 0
    while true do local ok = pcall(function() for i = 1, 1e12 do n = n + i end end) end
  end,
}
