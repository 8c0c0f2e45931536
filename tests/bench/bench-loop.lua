-- The process of the durable-completions benchmark (scripts/bench, tests/bench/loadgen.c): one
-- step with one integer field, over and over, so that every completion is the same small
-- amount of script work and the figure measures the server and its commits. The engine stops
-- a visit after 1000 steps, so the load generator starts a new session after 900.
return process {
  name = "bench-loop",
  title = "Benchmark loop",
  run = function(visit)
    while true do
      visit:step {
        id = "tick",
        title = "Tick",
        fields = { field.integer { name = "n", required = true, min = 0 } },
      }
    end
  end,
}
