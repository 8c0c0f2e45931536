-- The file's top level loops while it is loaded.
-- phase: load
-- expect: ran too long
while true do end
return process { name = "h", title = "h", run = function(visit) end }
