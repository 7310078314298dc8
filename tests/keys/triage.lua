-- Labels a ticket with its own key, so the test sees the text key reach
-- Lua (job.subject_id) and the label reach the next stage.
function run(job)
  return {label = "triaged " .. job.subject_id .. ": " .. (job.input.body or "")}
end
