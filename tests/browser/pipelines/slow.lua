-- slow.lua - the browser test's stages: a few steps of sleeping with
-- progress, then done; fails for good when asked to (input fail) or for
-- every fifth batch job.
function run(job)
  if job.input.fail then sluice.fail(job.input.fail, "invalid_input") end
  if job.input.n and job.input.n % 5 == 0 then
    sluice.fail("n " .. job.input.n .. " is a multiple of 5", "invalid_input")
  end
  local steps = job.pipeline == "batch" and 1 or 3
  for i = 1, steps do
    sluice.sql.query("SELECT pg_sleep($1)", job.pipeline == "batch" and 0.15 or 0.4)
    sluice.progress(i * 100 // steps, string.format("step %d/%d", i, steps))
  end
  return {}
end
