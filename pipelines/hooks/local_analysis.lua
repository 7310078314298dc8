-- local_analysis.lua - an offline, heuristic analysis of an interview
-- transcript, for pipelines that run without an LLM (docs/lua.md).
--
-- It is a `run` hook for a stage with `handler: lua` and
-- `sql_writes: true`. It reads the transcript (job.input.transcript, else
-- interviews.transcript of the subject), splits it into sentences, scores
-- each sentence against small lexicons of cue phrases (pain points,
-- wishes, praise), picks quotable sentences, counts keywords, guesses a
-- persona per speaker, and UPSERTs the results into `insights` (keyed by
-- interview_id, chunk, seq) and `personas` (keyed by interview_id, name).
--
-- Honest limits: this is lexical pattern matching, not understanding. It
-- finds sentences that *say* "frustrating", "I wish", "would love" and
-- the like; it misses pain expressed without those words, can be fooled
-- by sarcasm, and its confidence values are cue-count scores, not
-- probabilities. It exists so that the pipeline produces useful, real
-- output offline; configure an LLM provider for real analysis.
--
-- with: (all optional)
--   chunk_sentences: 40   sentences per chunk (one checkpoint per chunk)
--   max_quotes: 3         quotes kept for the whole interview
--   min_words: 4          shorter sentences are ignored
--   interviewer: "Alex"   speaker label whose sentences are not analysed
--                         (default: detected as the speaker who mostly
--                         asks questions, or one named Interviewer/Host/
--                         Moderator)

local text = require("textutil")

local PAIN = {
  {"%f[%a]frustrat", 2}, {"%f[%a]annoy", 2}, {"%f[%a]difficult", 1.5},
  {"%f[%a]hard to%f[%A]", 1.5}, {"%f[%a]hard%f[%A]", 1}, {"%f[%a]problem", 1.5},
  {"%f[%a]issues?%f[%A]", 1}, {"%f[%a]slow", 1.5}, {"%f[%a]confus", 2},
  {"%f[%a]hate", 2}, {"%f[%a]struggl", 2}, {"%f[%a]wast", 1.5},
  {"%f[%a]painful", 2}, {"%f[%a]pain%f[%A]", 1.5}, {"%f[%a]broken", 2},
  {"%f[%a]bugs?%f[%A]", 1.5}, {"%f[%a]buggy", 2}, {"%f[%a]crash", 2},
  {"%f[%a]can't%f[%A]", 1}, {"%f[%a]cannot%f[%A]", 1}, {"%f[%a]unable to", 1},
  {"doesn't work", 2}, {"does not work", 2}, {"%f[%a]takes? forever", 2},
  {"too long", 1.5}, {"%f[%a]complicated", 1.5}, {"%f[%a]expensive", 1.5},
  {"%f[%a]errors?%f[%A]", 1}, {"%f[%a]fail", 1}, {"%f[%a]stuck", 1.5},
  {"%f[%a]tedious", 2}, {"%f[%a]manual", 1}, {"%f[%a]clunky", 2},
  {"%f[%a]worr", 1}, {"%f[%a]lost%f[%A]", 1}, {"%f[%a]lose%f[%A]", 1},
  {"%f[%a]workaround", 1.5}, {"%f[%a]nightmare", 2.5}, {"%f[%a]terrible", 2},
  {"%f[%a]awful", 2}, {"%f[%a]messy", 1.5}, {"%f[%a]missing", 1},
  {"%f[%a]overwhelm", 2}, {"%f[%a]stress", 1.5}, {"%f[%a]hassle", 2},
  {"%f[%a]unreliable", 2}, {"%f[%a]difficulty", 1.5},
}

local NOT_PAIN = {
  {"no problem", 2}, {"not a problem", 2}, {"no issues?", 2},
  {"never had an? problem", 2}, {"not difficult", 2}, {"not hard", 2},
  {"isn't hard", 2}, {"not bad", 1.5}, {"not too bad", 1.5},
}

local WISH = {
  {"%f[%a]wish", 2.5}, {"would love", 2.5}, {"i'd love", 2.5},
  {"would be great", 2}, {"would be nice", 2}, {"would be helpful", 2},
  {"would be awesome", 2}, {"would be amazing", 2}, {"%f[%a]i want", 1.5},
  {"%f[%a]we want", 1.5}, {"%f[%a]need an? ", 1}, {"%f[%a]needs? to%f[%A]", 1},
  {"if only", 2}, {"should be able", 2}, {"%f[%a]hope", 1},
  {"would like", 2}, {"i'd like", 2}, {"%f[%a]ideally", 2},
  {"looking for", 1}, {"if i could", 2}, {"if we could", 2},
  {"would help", 1.5}, {"it'd be", 1}, {"%f[%a]want to be able", 2},
}

local PRAISE = {
  {"%f[%a]love%f[%A]", 1.5}, {"%f[%a]great%f[%A]", 1}, {"%f[%a]easy%f[%A]", 1.5},
  {"%f[%a]helpful", 1}, {"like how", 2}, {"works well", 2},
  {"%f[%a]favou?rite", 1.5}, {"%f[%a]saves? me", 1.5}, {"%f[%a]enjoy", 1.5},
  {"%f[%a]amazing", 1.5}, {"%f[%a]fast%f[%A]", 1}, {"%f[%a]simple%f[%A]", 1},
  {"%f[%a]intuitive", 2}, {"%f[%a]reliable", 1}, {"%f[%a]happy with", 2},
}

local INTENSE = {
  "%f[%a]really%f[%A]", "%f[%a]very%f[%A]", "%f[%a]extremely", "%f[%a]always%f[%A]",
  "%f[%a]never%f[%A]", "every time", "%f[%a]constantly", "%f[%a]so much",
  "%f[%a]literally", "%f[%a]totally",
}

local FIRST_PERSON = {"%f[%a]i%f[%A]", "%f[%a]i'm%f[%A]", "%f[%a]we%f[%A]",
                      "%f[%a]my%f[%A]", "%f[%a]our%f[%A]", "%f[%a]me%f[%A]"}

local ROLE_WORDS = {}
for w in ([[manager designer engineer developer researcher lead founder
  analyst director owner consultant marketer teacher student nurse doctor
  writer editor producer scientist officer ceo cto cfo coo pm head
  specialist coordinator administrator admin freelancer architect
  accountant recruiter salesperson representative rep strategist
  assistant intern vp president principal owner operator]]):gmatch("%S+") do
  ROLE_WORDS[w] = true
end

local ROLE_PATTERNS = {
  "i'm an? ([%a%-]+ ?[%a%-]* ?[%a%-]*)", "i am an? ([%a%-]+ ?[%a%-]* ?[%a%-]*)",
  "i work as an? ([%a%-]+ ?[%a%-]* ?[%a%-]*)", "as an? ([%a%-]+ ?[%a%-]*)",
  "i'm the ([%a%-]+ ?[%a%-]* ?[%a%-]*)", "my role is ([%a%-]+ ?[%a%-]* ?[%a%-]*)",
}

-- An integer from a config value (a number or a numeric string).
local function int(v, default)
  return math.tointeger(tonumber(v or "") or default) or default
end

local function score(lower, cues)
  local s, hits = 0, {}
  for _, c in ipairs(cues) do
    if lower:find(c[1]) then
      s = s + c[2]
      hits[#hits + 1] = (c[1]:gsub("%%f%[%%?%a%]", ""):gsub("[%%%?%[%]]", ""))
    end
  end
  return s, hits
end

local function matches_any(lower, pats)
  local n = 0
  for _, p in ipairs(pats) do
    if lower:find(p) then n = n + 1 end
  end
  return n
end

-- Scores one sentence. Returns a table with kind (or nil), score,
-- confidence, cues.
local function classify(sentence)
  local lower = " " .. sentence:lower() .. " "
  local pain, pain_hits = score(lower, PAIN)
  local neg = score(lower, NOT_PAIN)
  pain = math.max(0, pain - neg * 1.5)
  local wish, wish_hits = score(lower, WISH)
  local praise, praise_hits = score(lower, PRAISE)
  -- "would love" is a wish, not praise.
  if wish > 0 then praise = math.max(0, praise - 1.5) end
  local intense = matches_any(lower, INTENSE) + (sentence:find("!") and 1 or 0)
  local factor = 1 + 0.25 * math.min(intense, 3)
  pain, wish, praise = pain * factor, wish * factor, praise * factor
  local best, kind, hits = 0, nil, {}
  if pain > best then best, kind, hits = pain, "pain_point", pain_hits end
  if wish >= best and wish > 0 then best, kind, hits = wish, "wish", wish_hits end
  if praise > best then best, kind, hits = praise, "praise", praise_hits end
  if best < 1.5 then kind = nil end
  return {
    kind = kind,
    score = best,
    total = pain + wish + praise,
    intense = intense,
    pain = pain, wish = wish, praise = praise,
    cues = hits,
    -- A cue-count score squashed into (0, 0.9]: not a probability.
    confidence = math.floor((0.9 * (1 - math.exp(-best / 3))) * 100 + 0.5) / 100,
  }
end

local function is_question(s)
  return s:match("%?%s*$") ~= nil
end

-- Chooses the interviewer: configured, named so, or the speaker whose
-- sentences are mostly questions (only when there are several speakers).
local function find_interviewer(sentences, configured)
  if configured and configured ~= "" then return configured end
  local total, questions, names = {}, {}, {}
  for _, s in ipairs(sentences) do
    if s.speaker then
      if not total[s.speaker] then names[#names + 1] = s.speaker end
      total[s.speaker] = (total[s.speaker] or 0) + 1
      if is_question(s.text) then
        questions[s.speaker] = (questions[s.speaker] or 0) + 1
      end
    end
  end
  if #names < 2 then return nil end
  for _, n in ipairs(names) do
    local l = n:lower()
    if l:find("interviewer") or l:find("moderator") or l:find("host")
        or l:find("researcher") then
      return n
    end
  end
  local best, ratio = nil, 0.3
  for _, n in ipairs(names) do
    local r = (questions[n] or 0) / total[n]
    if r > ratio then best, ratio = n, r end
  end
  return best
end

local function detect_role(lower_text)
  for _, p in ipairs(ROLE_PATTERNS) do
    for phrase in lower_text:gmatch(p) do
      local words = {}
      for w in phrase:gmatch("[%a%-]+") do words[#words + 1] = w end
      -- Keep the longest prefix that ends in a role word.
      for n = #words, 1, -1 do
        if ROLE_WORDS[words[n]] then
          return table.concat(words, " ", 1, n)
        end
      end
    end
  end
  return nil
end

local function upsert_insight(interview, chunk, seq, ins)
  sluice.sql.query([[
    INSERT INTO insights (interview_id, chunk, seq, kind, content, quote,
                          speaker, confidence, data)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
    ON CONFLICT (interview_id, chunk, seq) DO UPDATE
      SET kind = EXCLUDED.kind, content = EXCLUDED.content,
          quote = EXCLUDED.quote, speaker = EXCLUDED.speaker,
          confidence = EXCLUDED.confidence, data = EXCLUDED.data]],
    interview, chunk, seq, ins.kind, ins.content, ins.quote, ins.speaker,
    ins.confidence, ins.data)
end

local function upsert_persona(interview, p)
  sluice.sql.query([[
    INSERT INTO personas (interview_id, name, role, description, traits)
    VALUES ($1, $2, $3, $4, $5::jsonb)
    ON CONFLICT (interview_id, name) DO UPDATE
      SET role = EXCLUDED.role, description = EXCLUDED.description,
          traits = EXCLUDED.traits]],
    interview, p.name, p.role, p.description, p.traits)
end

-- Keyword counts of the analysed sentences: stem -> count, and the most
-- frequent surface form of each stem.
local function count_keywords(sentences)
  local counts, surface = {}, {}
  for _, s in ipairs(sentences) do
    for _, w in ipairs(text.words(s.text)) do
      if not text.STOP[w] and #w >= 3 and not w:match("^%d+$") then
        local k = text.stem(w)
        counts[k] = (counts[k] or 0) + 1
        surface[k] = surface[k] or {}
        surface[k][w] = (surface[k][w] or 0) + 1
      end
    end
  end
  local function form(k)
    local best, n = k, 0
    for _, w in ipairs(text.sorted_keys(surface[k])) do
      if surface[k][w] > n then best, n = w, surface[k][w] end
    end
    return best
  end
  return counts, form
end

local function top_keywords(sentences, n)
  local counts, form = count_keywords(sentences)
  local out = sluice.json.array()
  for _, e in ipairs(text.top(counts, n)) do
    if e.count >= 2 or #out < 3 then
      out[#out + 1] = {word = form(e.word), count = e.count}
    end
  end
  return out
end

-- Picks up to n quotable sentences: first person, 8..45 words, strongly
-- worded; no two near-duplicates.
local function pick_quotes(analysed, n)
  local cands = {}
  for _, a in ipairs(analysed) do
    local words = text.word_count(a.text)
    local lower = " " .. a.text:lower() .. " "
    if words >= 8 and words <= 45 and not is_question(a.text)
        and matches_any(lower, FIRST_PERSON) > 0
        and (a.c.total >= 1.5 or a.c.intense >= 2) then
      cands[#cands + 1] = a
    end
  end
  table.sort(cands, function(x, y)
    local sx = x.c.total + 0.5 * x.c.intense
    local sy = y.c.total + 0.5 * y.c.intense
    if sx ~= sy then return sx > sy end
    return x.index < y.index
  end)
  local picked = {}
  for _, a in ipairs(cands) do
    if #picked >= n then break end
    local set, ns = text.keyword_set(a.text)
    local dup = false
    for _, p in ipairs(picked) do
      if text.jaccard(set, ns, p.set, p.nset) > 0.5 then dup = true end
    end
    if not dup then
      picked[#picked + 1] = {a = a, set = set, nset = ns}
    end
  end
  local out = {}
  for _, p in ipairs(picked) do out[#out + 1] = p.a end
  return out
end

local function personas_of(analysed, interviewer)
  local by = {}
  local order = {}
  for _, a in ipairs(analysed) do
    local name = a.speaker or "Interviewee"
    if not by[name] then
      by[name] = {sentences = {}, pain = 0, wish = 0, praise = 0, top_pain = nil}
      order[#order + 1] = name
    end
    local p = by[name]
    p.sentences[#p.sentences + 1] = a
    if a.c.kind == "pain_point" then
      p.pain = p.pain + 1
      if not p.top_pain or a.c.score > p.top_pain.c.score then p.top_pain = a end
    elseif a.c.kind == "wish" then
      p.wish = p.wish + 1
      if not p.top_wish or a.c.score > p.top_wish.c.score then p.top_wish = a end
    elseif a.c.kind == "praise" then
      p.praise = p.praise + 1
    end
  end
  local out = {}
  for _, name in ipairs(order) do
    local p = by[name]
    if name ~= interviewer and #p.sentences >= 2 then
      local all = {}
      for _, a in ipairs(p.sentences) do all[#all + 1] = a.text end
      local role = detect_role(" " .. table.concat(all, " "):lower() .. " ")
      local kws = top_keywords(p.sentences, 5)
      local kw_words = {}
      for _, k in ipairs(kws) do kw_words[#kw_words + 1] = k.word end
      local opinions = p.pain + p.wish + p.praise
      local desc = string.format(
        "%s%s; %d sentence%s analysed: %d pain point%s, %d wish%s, %d positive remark%s.%s",
        name, role and (", " .. role) or "", #p.sentences,
        #p.sentences == 1 and "" or "s", p.pain, p.pain == 1 and "" or "s",
        p.wish, p.wish == 1 and "" or "es", p.praise, p.praise == 1 and "" or "s",
        #kw_words > 0 and (" Talks most about " .. table.concat(kw_words, ", ") .. ".") or "")
      out[#out + 1] = {
        name = name,
        role = role,
        description = desc,
        traits = {
          keywords = kws,
          pain_points = p.pain,
          wishes = p.wish,
          praise = p.praise,
          sentences = #p.sentences,
          -- (praise - pain) / opinions, in [-1, 1]; 0 when no opinion.
          sentiment = opinions > 0 and
            math.floor((p.praise - p.pain) / opinions * 100 + 0.5) / 100 or 0,
          top_pain_point = p.top_pain and text.tidy(p.top_pain.text) or nil,
          top_wish = p.top_wish and text.tidy(p.top_wish.text) or nil,
          method = "lexical-heuristic",
        },
      }
    end
  end
  return out
end

local function load_transcript(job)
  local t = job.input and job.input.transcript
  if type(t) == "string" and t ~= "" then return t end
  local id = job.subject_id or (job.input and job.input.interview_id)
  if not id then return nil end
  local rows = sluice.sql.query(
    "SELECT transcript FROM interviews WHERE id = $1", id)
  return rows[1] and rows[1].transcript or nil
end

function run(job)
  local cfg = job.config or {}
  local interview = job.subject_id or (job.input and job.input.interview_id)
  if not interview then
    sluice.fail("local analysis needs an interview (the job's subject)",
                "invalid_input")
  end
  local transcript = load_transcript(job)
  if not transcript or transcript:match("^%s*$") then
    sluice.fail("the interview has no transcript to analyse", "invalid_input")
  end

  local per_chunk = math.max(1, int(cfg.chunk_sentences, 40))
  local max_quotes = int(cfg.max_quotes, 3)
  local min_words = int(cfg.min_words, 4)

  local sentences = text.sentences(transcript)
  local interviewer = find_interviewer(sentences,
    type(cfg.interviewer) == "string" and cfg.interviewer or nil)

  -- The analysed sentences: the interviewee's, long enough.
  local analysed = {}
  for i, s in ipairs(sentences) do
    if s.speaker ~= interviewer or interviewer == nil then
      if text.word_count(s.text) >= min_words then
        analysed[#analysed + 1] = {index = i, text = s.text, speaker = s.speaker,
                                   c = classify(s.text)}
      end
    end
  end

  local nchunks = math.max(1, (#analysed + per_chunk - 1) // per_chunk)
  local cp = sluice.checkpoint.get() or {}
  local start = int(cp.next_chunk, 0)
  if start == 0 then
    -- A fresh analysis replaces what an earlier one of this interview
    -- left (a re-uploaded transcript may produce fewer rows); rows written
    -- by other analysers (an LLM) are left alone.
    sluice.sql.query([[DELETE FROM insights
      WHERE interview_id = $1 AND data->>'source' = 'local_analysis']],
      interview)
    sluice.sql.query([[DELETE FROM personas
      WHERE interview_id = $1 AND traits->>'method' = 'lexical-heuristic']],
      interview)
  end

  local found = cp.found or 0
  for chunk = start, nchunks - 1 do
    if sluice.should_stop() then
      sluice.retry(string.format("stopping; will resume at chunk %d", chunk))
    end
    local seq = 0
    for i = chunk * per_chunk + 1, math.min(#analysed, (chunk + 1) * per_chunk) do
      local a = analysed[i]
      if a.c.kind and not is_question(a.text) then
        upsert_insight(interview, chunk, seq, {
          kind = a.c.kind,
          content = text.tidy(a.text),
          quote = a.text,
          speaker = a.speaker,
          confidence = a.c.confidence,
          data = {source = "local_analysis", method = "lexical-heuristic",
                  cues = sluice.json.array(a.c.cues), score = a.c.score,
                  sentence = a.index},
        })
        seq = seq + 1
        found = found + 1
      end
    end
    sluice.checkpoint.set({next_chunk = chunk + 1, found = found})
    sluice.progress(math.floor((chunk + 1) * 90 / nchunks),
                    string.format("chunk %d/%d", chunk + 1, nchunks))
  end

  -- The whole-interview results live in one extra chunk after the others:
  -- quotes, then a keyword summary.
  local keywords = top_keywords(analysed, 12)
  local quotes = pick_quotes(analysed, max_quotes)
  local seq = 0
  for _, q in ipairs(quotes) do
    upsert_insight(interview, nchunks, seq, {
      kind = "quote",
      content = text.tidy(q.text),
      quote = q.text,
      speaker = q.speaker,
      confidence = q.c.confidence,
      data = {source = "local_analysis", method = "lexical-heuristic",
              sentence = q.index},
    })
    seq = seq + 1
  end
  local words = {}
  for _, k in ipairs(keywords) do words[#words + 1] = k.word end
  upsert_insight(interview, nchunks, seq, {
    kind = "keywords",
    content = #words > 0 and ("Most frequent topics: " .. table.concat(words, ", ") .. ".")
                         or "No recurring keywords.",
    confidence = 0.5,
    data = {source = "local_analysis", method = "word frequency without stop words",
            keywords = keywords, sentences = #sentences, analysed = #analysed},
  })

  local personas = personas_of(analysed, interviewer)
  for _, p in ipairs(personas) do upsert_persona(interview, p) end
  sluice.progress(100, "analysis done")

  return {
    insight_count = found + #quotes + 1,
    persona_count = #personas,
    keywords = sluice.json.array(words),
    analysis = "local-heuristic",
  }
end
