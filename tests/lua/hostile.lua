-- hostile.lua - the hook of tests/test_lua_hostile.c: one attack per job
-- (job.input.attack), and `ordinary`, the job that runs after each attack
-- and reports what it sees of the sandbox.
local G = load("return _ENV")() -- the shared global table
local STRMT = getmetatable("")
local loop = function() while true do end end

-- Every function reachable from the sandbox, found at run time: the global
-- table and the tables under it (two levels), and the string metatable.
local function enumerate()
  local out, seen = {}, {}
  local function walk(t, prefix, depth)
    if seen[t] or depth > 2 then return end
    seen[t] = true
    for k, v in next, t do
      if type(k) == "string" then
        if type(v) == "function" then out[#out + 1] = prefix .. k
        elseif type(v) == "table" then walk(v, prefix .. k .. ".", depth + 1) end
      end
    end
  end
  walk(G, "", 0)
  seen[STRMT] = nil
  walk(STRMT, "stringmt.", 2)
  table.sort(out)
  return table.concat(out, " ")
end

local function resolve(path)
  local t = G
  if path:sub(1, 9) == "stringmt." then t, path = STRMT, path:sub(10) end
  for part in path:gmatch("[^.]+") do t = rawget(t, part) end
  return t
end

-- Hostile arguments, the ones that may run Lua code last.
local HOSTILE = {
  {}, {nil, nil}, {-1, -1}, {0, 0}, {math.maxinteger, math.maxinteger},
  {math.mininteger, math.mininteger}, {0 / 0}, {1 / 0, -1 / 0},
  {("x"):rep(1 << 20)}, {"%", "%"}, {"%b", "%f"}, {"\0\255", "\0"},
  {("a"):rep(64), ("a?"):rep(64) .. ("a"):rep(64) .. "b"},
  {"x", math.maxinteger, math.mininteger}, {{}, {}, {}}, {sluice.json.null},
  {"*t", math.maxinteger}, {"!%c", -1 << 62}, {"<i16", "x"},
  {setmetatable({}, {__len = function() return math.maxinteger end})},
  {setmetatable({}, {__index = loop, __tostring = loop, __eq = loop})},
  {loop, loop, loop},
}

local function ordinary()
  local n, m = 0, 0
  for _ in next, G do n = n + 1 end
  for _ in next, string do m = m + 1 end
  local rows = sluice.sql.query(
    "SELECT current_setting('search_path') AS sp, "
    .. "current_setting('default_transaction_read_only') AS ro, "
    .. "(SELECT count(*) FROM pg_prepared_statements) AS ps, "
    .. "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    .. " AND pid = pg_backend_pid()) AS locks")
  local r = rows[1]
  return string.format(
    "%s g=%d s=%d upper=%s idx=%s leak=%s/%s find=%s pi=%.2f sp=%s ro=%s ps=%d "
    .. "locks=%d arr=%s", string.upper("ok"), n, m, ("ab"):upper(),
    tostring(STRMT.__index == string and getmetatable("") == STRMT),
    tostring(rawget(G, "leak")), tostring(rawget(_ENV, "leak")),
    tostring(("abc"):find("b")), math.pi, r.sp, r.ro, r.ps, r.locks,
    sluice.json.encode(sluice.json.array()))
end

local A = {}
A.xpcall_error_loop = function() return xpcall(error, loop) end
A.xpcall_loop_loop = function() return xpcall(loop, loop) end
A.pcall_loop = function() while true do pcall(loop) end end
A.pcall_catches_limit = function()
  local ok = pcall(loop)
  while true do end
end
A.gc_finalizer = function()
  setmetatable({}, {__gc = loop}); collectgarbage()
end
A.gc_false_then_loop = function()
  local mt = {__gc = false}; setmetatable({}, mt); mt.__gc = loop
  collectgarbage()
end
A.gc_added_late = function()
  local mt = {}; setmetatable({}, mt); mt.__gc = loop; collectgarbage()
  return "no finalizer"
end
A.gc_on_array_mt = function()
  local mt = getmetatable(sluice.json.array()); mt.__gc = loop
end
A.error_tostring_loop = function() error(setmetatable({}, {__tostring = loop})) end
A.close_loop = function()
  local x <close> = setmetatable({}, {__close = loop}); error("x")
end
A.pattern_find = function()
  return ("a"):rep(40):find(("a?"):rep(40) .. ("a"):rep(40) .. "b")
end
A.pattern_match = function()
  return ("a"):rep(40):match(("a?"):rep(40) .. ("a"):rep(40) .. "b")
end
A.pattern_gmatch = function()
  for _ in ("a"):rep(3000):gmatch(("a-"):rep(20) .. "b") do end
end
A.pattern_gsub = function()
  return ("a"):rep(30000):gsub(".-.-.-.-b", "")
end
A.pattern_backref = function()
  return ("a"):rep(1 << 20):find("(.*)%1%1b")
end
A.plain_find = function()
  return ("a"):rep(1 << 24):find(("a"):rep(1 << 22) .. "b", 1, true)
end
A.table_move = function() return table.move({}, 1, math.maxinteger - 1, 2) end
A.table_remove_border = function()
  local t = {}
  for k = 0, 61 do t[1 << k] = 1 end
  return table.remove(t, 1)
end
A.table_sort_c_comparator = function()
  local t = {}
  for k = 0, 30 do t[1 << k] = 1 end
  table.sort(t, rawequal)
end
A.table_insert_len = function()
  table.insert(setmetatable({}, {__len = function() return math.maxinteger end}), 1, 1)
end
A.table_concat_index = function()
  return table.concat(setmetatable({}, {__index = tostring}), "", 1, math.maxinteger)
end
A.load_huge_chunk = function() return load(("x=1;"):rep(1 << 22)) end
A.memory = function()
  local t = {}
  for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end
end
A.recursion = function() local function f() return f() + 1 end return f() end
A.tamper = function()
  string.upper = function() return "PWNED" end
  STRMT.__index = {upper = function() return "PWNED" end}
  rawset(G, "leak", "PWNED")
  rawset(_ENV, "leak", "PWNED")
  rawset(string, "extra", 1)
  math.pi = 3
  sluice.json.array = function() return "PWNED" end
  return string.upper("x")
end
A.sql_session = function()
  local q = sluice.sql.query
  for _, s in ipairs{
    "SET search_path = pg_catalog", "SET default_transaction_read_only = on",
    "DEALLOCATE ALL", "PREPARE sl_hostile AS SELECT 1",
    "SELECT pg_advisory_lock(1)", "SELECT pg_advisory_lock(hashtext('sluice'))",
    "LISTEN hostile", "SET ROLE NONE", "COMMIT", "BEGIN",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "CREATE TEMP TABLE hostile_tmp (x int)",
  } do pcall(q, s) end
  return "done"
end
A.sql_read_only_bypass = function()
  local q = sluice.sql.query
  for _, s in ipairs{
    "PREPARE w AS INSERT INTO canary VALUES (1)", "EXECUTE w",
    "SET transaction_read_only = off", "INSERT INTO canary VALUES (2)",
    "COMMIT", "INSERT INTO canary VALUES (3)",
    "DO $$ BEGIN INSERT INTO canary VALUES (4); END $$",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "WITH x AS (INSERT INTO canary VALUES (5) RETURNING 1) SELECT * FROM x",
    "COPY canary FROM STDIN", "COPY (SELECT 1) TO STDOUT",
  } do pcall(q, s) end
  return "done"
end
A.sql_memory = function()
  return #sluice.sql.query(
    "SELECT repeat('x', 50000000) AS x FROM generate_series(1, 30)")
end
A.sql_many_rows = function()
  return #sluice.sql.query("SELECT g, repeat('y', 100) FROM generate_series(1, 5000000) g")
end
A.http_loopback = function()
  return sluice.http.request{url = "http://127.0.0.1:" .. sluice.config().port .. "/"}
end
A.http_redirect_private = function()
  return sluice.http.request{url = "http://[::1]:1/", follow_redirects = true}
end
A.http_auth_elsewhere = function()
  return sluice.http.request{url = "http://example.invalid/", auth = "bearer"}
end
A.escape_io = function() return io.open("/tmp/sluice-hostile-marker", "w") end
A.escape_os = function() return os.execute("touch /tmp/sluice-hostile-marker") end
A.escape_require = function() return require("..etc.passwd") end

function run(job)
  local attack, arg = job.input.attack, job.input.arg
  if attack == "ordinary" then return {result = ordinary()} end
  if attack == "enumerate" then return {result = enumerate()} end
  if attack == "call" then
    local f = resolve(arg)
    for _, args in ipairs(HOSTILE) do pcall(f, table.unpack(args, 1, 3)) end
    return {result = "called " .. arg}
  end
  local ok, v = true, A[attack]()
  return {result = tostring(v)}
end
