-- report.lua - the `run` hook of the report pipeline (pipelines/report.yaml).
--
-- A row in report_jobs names a project. This hook gathers the insights of
-- the project's interviews with sluice.sql (read-only), clusters them into
-- topics by keyword overlap, summarises each topic (with the configured LLM
-- when there is one, else extractively), and returns the report as JSON
-- plus Markdown; the runtime stores them in report_jobs.report and
-- report_jobs.markdown.
--
-- Clustering: each insight becomes the set of its content keywords (stop
-- words removed, lightly stemmed; textutil.lua). Insights are merged
-- bottom-up by average-linkage Jaccard similarity until no two clusters are
-- at least `similarity` alike. A topic is labelled by the keywords that are
-- frequent in it and rare elsewhere (count x idf).
--
-- with: (all optional)
--   summaries: auto        auto | llm | extractive: `auto` uses the LLM
--                          when sluice.llm is available and configured
--   model: ...             passed to sluice.llm.chat
--   similarity: 0.2        merge threshold (0..1)
--   max_topics: 8          the rest go into "Other insights"
--   max_insights: 300      most confident insights considered
--   insights_per_topic: 5  listed under each topic

local text = require("textutil")

local function num(v, default)
  return tonumber(v or "") or default
end

-- ---------------------------------------------------------------- data

local function fetch(project, limit)
  local proj = sluice.sql.query(
    "SELECT name, account_id::text AS account_id FROM projects WHERE id = $1",
    project)[1]
  if not proj then
    sluice.fail("project " .. project .. " does not exist", "invalid_input")
  end
  local interviews = sluice.sql.query([[
    SELECT id::text AS id, coalesce(title, 'Untitled interview') AS title,
           status::text AS status
      FROM interviews WHERE project_id = $1
     ORDER BY created_at, id]], project)
  local rows = sluice.sql.query([[
    SELECT s.id::text AS id, s.interview_id::text AS interview_id, s.kind,
           s.content, s.quote, s.speaker, s.confidence
      FROM insights s JOIN interviews i ON i.id = s.interview_id
     WHERE i.project_id = $1 AND s.kind NOT IN ('keywords', 'summary')
     ORDER BY s.confidence DESC NULLS LAST, i.created_at, s.chunk, s.seq
     LIMIT $2]], project, limit)
  local personas = sluice.sql.query([[
    SELECT p.name, p.role, p.description, i.title AS interview
      FROM personas p JOIN interviews i ON i.id = p.interview_id
     WHERE i.project_id = $1
     ORDER BY i.created_at, p.name]], project)
  return proj, interviews, rows, personas
end

-- The insights to cluster: one per distinct (interview, content); a quote
-- that repeats another insight of its interview is kept as that insight's
-- quote rather than clustered twice.
local function prepare(rows)
  local seen, items = {}, {}
  for _, r in ipairs(rows) do
    local key = r.interview_id .. "\0" .. text.trim(r.content):lower()
    local prev = seen[key]
    if prev then
      prev.quote = prev.quote or r.quote
    else
      local set, n = text.keyword_set(r.content .. " " .. (r.quote or ""))
      local it = {
        id = r.id, interview_id = r.interview_id, kind = r.kind,
        content = r.content, quote = r.quote, speaker = r.speaker,
        confidence = r.confidence or 0, set = set, nset = n,
      }
      seen[key] = it
      items[#items + 1] = it
    end
  end
  return items
end

-- ---------------------------------------------------------- clustering

-- Average-linkage agglomerative clustering. Returns a list of clusters,
-- each a list of item indexes.
local function cluster(items, threshold)
  local n = #items
  local sim = {}
  for i = 1, n do
    sim[i] = {}
    for j = i + 1, n do
      sim[i][j] = text.jaccard(items[i].set, items[i].nset,
                               items[j].set, items[j].nset)
    end
  end
  local function get(a, b)
    if a < b then return sim[a][b] else return sim[b][a] end
  end
  local function put(a, b, v)
    if a < b then sim[a][b] = v else sim[b][a] = v end
  end
  local members, active = {}, {}
  for i = 1, n do members[i] = {i}; active[i] = true end
  while true do
    local best, ba, bb = threshold, nil, nil
    for a = 1, n do
      if active[a] then
        local row = sim[a]
        for b = a + 1, n do
          if active[b] and row[b] >= best and (ba == nil or row[b] > best) then
            best, ba, bb = row[b], a, b
          end
        end
      end
    end
    if not ba then break end
    local na, nb = #members[ba], #members[bb]
    for c = 1, n do
      if active[c] and c ~= ba and c ~= bb then
        put(ba, c, (na * get(ba, c) + nb * get(bb, c)) / (na + nb))
      end
    end
    for _, m in ipairs(members[bb]) do members[ba][#members[ba] + 1] = m end
    active[bb] = false
    if sluice.should_stop() then sluice.retry("stopping while clustering") end
  end
  local out = {}
  for i = 1, n do
    if active[i] then
      table.sort(members[i])
      out[#out + 1] = members[i]
    end
  end
  return out, get
end

-- Labels a cluster by count x idf of its keywords; returns up to n
-- keywords (surface forms).
local function label_keywords(items, members, df, nitems, n)
  local counts, surface = {}, {}
  for _, m in ipairs(members) do
    for _, w in ipairs(text.words(items[m].content)) do
      if not text.STOP[w] and #w >= 3 and not w:match("^%d+$") then
        local k = text.stem(w)
        counts[k] = (counts[k] or 0) + 1
        surface[k] = surface[k] or {}
        surface[k][w] = (surface[k][w] or 0) + 1
      end
    end
  end
  local scored = {}
  for k, c in pairs(counts) do
    local idf = math.log((nitems + 1) / ((df[k] or 0) + 1)) + 1
    scored[#scored + 1] = {k = k, s = c * idf, c = c}
  end
  table.sort(scored, function(x, y)
    if x.s ~= y.s then return x.s > y.s end
    return x.k < y.k
  end)
  local out = {}
  for _, e in ipairs(scored) do
    if #out >= n then break end
    -- In a multi-insight topic a label word should recur.
    if #members == 1 or e.c >= 2 or #out == 0 then
      local best, bn = e.k, 0
      for _, w in ipairs(text.sorted_keys(surface[e.k])) do
        if surface[e.k][w] > bn then best, bn = w, surface[e.k][w] end
      end
      out[#out + 1] = best
    end
  end
  return out
end

-- ----------------------------------------------------------- summaries

local KIND_NAMES = {
  pain_point = {"pain point", "pain points"},
  wish = {"wish", "wishes"},
  praise = {"positive remark", "positive remarks"},
  quote = {"quote", "quotes"},
}

local function kind_name(kind, count)
  local names = KIND_NAMES[kind] or {kind:gsub("_", " "), kind:gsub("_", " ") .. "s"}
  return count == 1 and names[1] or names[2]
end

local function plural(n, one, many)
  return string.format("%d %s", n, n == 1 and one or many)
end

local function extractive_summary(topic)
  local parts = {}
  for _, k in ipairs(text.sorted_keys(topic.kinds)) do
    parts[#parts + 1] = plural(topic.kinds[k], kind_name(k, 1), kind_name(k, 2))
  end
  table.sort(parts)
  return string.format("%s from %s about %s (%s). Most representative: \"%s\"",
    plural(topic.size, "insight", "insights"),
    plural(topic.interviews, "interview", "interviews"),
    table.concat(topic.keywords, ", "), table.concat(parts, ", "),
    text.tidy(topic.representative))
end

local function llm_available(cfg)
  local mode = tostring(cfg.summaries or "auto")
  if mode == "extractive" or mode == "false" then return false end
  local llm = sluice.llm
  local ok = llm ~= nil and llm.chat ~= nil and
             (llm.available == nil or llm.available())
  if mode == "llm" and not ok then
    sluice.fail("summaries: llm was asked for but no LLM provider is configured",
                "invalid_input")
  end
  return ok
end

local SUMMARY_SCHEMA = {
  type = "object",
  properties = {
    title = {type = "string"},
    summary = {type = "string"},
  },
  required = {"title", "summary"},
  additionalProperties = false,
}

local function llm_summary(cfg, project_name, topic)
  local lines = {}
  for _, it in ipairs(topic.insights) do
    lines[#lines + 1] = string.format("- [%s] %s%s", it.kind, it.content,
      it.quote and it.quote ~= it.content and (' (quote: "' .. it.quote .. '")') or "")
  end
  local reply = sluice.llm.chat{
    model = cfg.model,
    schema = SUMMARY_SCHEMA,
    schema_name = "topic_summary",
    messages = {
      {role = "system", content =
        "You summarise user-research findings. Be concrete and faithful to " ..
        "the insights given; do not invent facts. Answer in JSON."},
      {role = "user", content = string.format(
        "Project: %s\nTopic keywords: %s\nInsights (%d, from %d interviews):\n%s\n\n" ..
        "Give the topic a short title and a 2-3 sentence summary.",
        project_name, table.concat(topic.keywords, ", "), topic.size,
        topic.interviews, table.concat(lines, "\n"))},
    },
  }
  -- sluice.llm.chat returns the parsed JSON reply when a schema is given.
  local r = type(reply) == "table" and (reply.json or reply) or {summary = tostring(reply)}
  if type(r.summary) ~= "string" or r.summary == "" then
    sluice.retry("the LLM reply had no summary")
  end
  return r.summary, type(r.title) == "string" and r.title or nil
end

-- ------------------------------------------------------------ markdown

local function md_escape(s)
  return (tostring(s):gsub("([\\`*_%[%]<>#|])", "\\%1"):gsub("\n", " "))
end

local function markdown(report)
  local out = {}
  local function add(s) out[#out + 1] = s end
  add("# Research report: " .. md_escape(report.project.name))
  add("")
  add(string.format("_Generated %s from %s across %s. Topics are clusters of " ..
    "insights that share keywords (average-linkage Jaccard similarity >= %.2f); " ..
    "summaries are %s._", report.generated_at,
    plural(report.insight_count, "insight", "insights"),
    plural(report.interview_count, "interview", "interviews"),
    report.method.similarity, report.method.summaries))
  add("")
  if #report.topics == 0 then
    add("No insights yet: analyse some interviews of this project first.")
    add("")
  else
    add("## Topics")
    add("")
    for i, t in ipairs(report.topics) do
      add(string.format("### %d. %s", i, md_escape(t.title)))
      add("")
      add(string.format("*%s, %s; keywords: %s*", plural(t.size, "insight", "insights"),
        plural(t.interviews, "interview", "interviews"), md_escape(table.concat(t.keywords, ", "))))
      add("")
      add(md_escape(t.summary))
      add("")
      for _, it in ipairs(t.insights) do
        add(string.format("- **%s**: %s (%s)", kind_name(it.kind, 1),
          md_escape(it.content), md_escape(it.interview)))
      end
      for _, q in ipairs(t.quotes) do
        add("")
        add(string.format("> \"%s\"%s", md_escape(q.text),
          q.speaker and (" - " .. md_escape(q.speaker)) or ""))
      end
      add("")
    end
  end
  if #report.personas > 0 then
    add("## Personas")
    add("")
    for _, p in ipairs(report.personas) do
      add(string.format("- **%s**%s: %s (%s)", md_escape(p.name),
        p.role and (" (" .. md_escape(p.role) .. ")") or "",
        md_escape(p.description or ""), md_escape(p.interview)))
    end
    add("")
  end
  add("## Interviews")
  add("")
  for _, iv in ipairs(report.interviews) do
    add(string.format("- %s (%s, %s)", md_escape(iv.title), iv.status,
      plural(iv.insights, "insight", "insights")))
  end
  add("")
  return table.concat(out, "\n")
end

-- ----------------------------------------------------------------- run

function run(job)
  local cfg = job.config or {}
  local project = job.input and job.input.project_id
  if not project then
    sluice.fail("a report job needs project_id", "invalid_input")
  end
  local threshold = num(cfg.similarity, 0.2)
  local max_topics = math.tointeger(num(cfg.max_topics, 8)) or 8
  local per_topic = math.tointeger(num(cfg.insights_per_topic, 5)) or 5
  local limit = math.tointeger(num(cfg.max_insights, 300)) or 300
  local use_llm = llm_available(cfg)

  sluice.progress(5, "gathering insights")
  local proj, interviews, rows, persona_rows = fetch(project, limit)
  local items = prepare(rows)
  local titles, per_interview = {}, {}
  for _, iv in ipairs(interviews) do titles[iv.id] = iv.title end
  for _, it in ipairs(items) do
    per_interview[it.interview_id] = (per_interview[it.interview_id] or 0) + 1
  end

  sluice.progress(20, string.format("clustering %d insights", #items))
  local clusters, sim = cluster(items, threshold)

  -- Document frequency of keywords over all insights (for labels).
  local df = {}
  for _, it in ipairs(items) do
    for k in pairs(it.set) do df[k] = (df[k] or 0) + 1 end
  end

  local topics, singles = {}, {}
  for _, members in ipairs(clusters) do
    if #members >= 2 then
      topics[#topics + 1] = {members = members}
    else
      singles[#singles + 1] = members[1]
    end
  end
  local function interviews_of(members)
    local set, n = {}, 0
    for _, m in ipairs(members) do
      if not set[items[m].interview_id] then
        set[items[m].interview_id] = true; n = n + 1
      end
    end
    return n
  end
  table.sort(topics, function(a, b)
    if #a.members ~= #b.members then return #a.members > #b.members end
    local ia, ib = interviews_of(a.members), interviews_of(b.members)
    if ia ~= ib then return ia > ib end
    return a.members[1] < b.members[1]
  end)
  while #topics > max_topics do
    for _, m in ipairs(table.remove(topics).members) do singles[#singles + 1] = m end
  end
  if #singles > 0 then
    table.sort(singles)
    topics[#topics + 1] = {members = singles, other = true}
  end

  sluice.progress(40, string.format("%d topics", #topics))
  local cp = sluice.checkpoint.get() or {}
  local done = cp.summaries or {}
  for i, t in ipairs(topics) do
    local members = t.members
    -- The medoid: the member most similar on average to the others.
    local rep, rep_score = members[1], -1
    for _, a in ipairs(members) do
      local s = 0
      for _, b in ipairs(members) do
        if a ~= b then s = s + sim(a, b) end
      end
      s = s + items[a].confidence * 1e-3
      if s > rep_score then rep, rep_score = a, s end
    end
    local kinds = {}
    for _, m in ipairs(members) do
      kinds[items[m].kind] = (kinds[items[m].kind] or 0) + 1
    end
    local ranked = {}
    for _, m in ipairs(members) do ranked[#ranked + 1] = m end
    table.sort(ranked, function(a, b)
      if a == rep or b == rep then return a == rep end
      if items[a].confidence ~= items[b].confidence then
        return items[a].confidence > items[b].confidence
      end
      return a < b
    end)
    local listed, quotes = sluice.json.array(), sluice.json.array()
    for _, m in ipairs(ranked) do
      local it = items[m]
      if #listed < per_topic then
        listed[#listed + 1] = {
          id = it.id, kind = it.kind, content = it.content, quote = it.quote,
          speaker = it.speaker, interview_id = it.interview_id,
          interview = titles[it.interview_id] or it.interview_id,
          confidence = it.confidence,
        }
      end
      if it.quote and #quotes < 3 then
        quotes[#quotes + 1] = {text = it.quote, speaker = it.speaker,
                               interview = titles[it.interview_id]}
      end
    end
    local keywords = t.other and {"various"} or
                     label_keywords(items, members, df, #items, 3)
    local topic = {
      id = string.format("t%d", i),
      keywords = sluice.json.array(keywords),
      size = #members,
      interviews = interviews_of(members),
      kinds = kinds,
      representative = items[rep].content,
      insights = listed,
      quotes = quotes,
      other = t.other or false,
    }
    topic.title = t.other and "Other insights" or table.concat(keywords, " / ")
    -- Summaries already made by an earlier attempt are reused (LLM calls
    -- cost money); the key names the topic by its members.
    local key = items[members[1]].id .. ":" .. #members
    if use_llm and not t.other then
      local prev = done[key]
      if prev then
        topic.summary, topic.title = prev.summary, prev.title or topic.title
      else
        local summary, title = llm_summary(cfg, proj.name, topic)
        topic.summary, topic.title = summary, title or topic.title
        done[key] = {summary = summary, title = title}
        sluice.checkpoint.set({summaries = done})
      end
      topic.summary_source = "llm"
    else
      topic.summary = extractive_summary(topic)
      topic.summary_source = "extractive"
    end
    topics[i] = topic
    sluice.progress(40 + math.floor(55 * i / #topics),
                    string.format("topic %d/%d", i, #topics))
  end

  local personas = sluice.json.array()
  for _, p in ipairs(persona_rows) do
    personas[#personas + 1] = {name = p.name, role = p.role,
                               description = p.description, interview = p.interview}
  end
  local ivs = sluice.json.array()
  for _, iv in ipairs(interviews) do
    ivs[#ivs + 1] = {id = iv.id, title = iv.title, status = iv.status,
                     insights = per_interview[iv.id] or 0}
  end

  local report = {
    project = {id = project, name = proj.name},
    generated_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    interview_count = #interviews,
    insight_count = #items,
    topics = sluice.json.array(topics),
    personas = personas,
    interviews = ivs,
    method = {
      clustering = "average-linkage agglomerative, Jaccard similarity of keyword sets",
      similarity = threshold,
      summaries = use_llm and "written by the LLM" or "extractive (no LLM configured)",
    },
  }
  local md = markdown(report)
  sluice.progress(100, "report ready")
  return {report = report, markdown = md}
end
