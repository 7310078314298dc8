-- A hook with a syntax error ('end' on line 5).
function post(job, out)
  local x = 1
  return x +
end
