-- textutil.lua - small lexical tools shared by the shipped hooks
-- (local_analysis.lua, report.lua): sentence splitting, tokens, stop
-- words, a light suffix stemmer, keyword counting and Jaccard similarity.
-- Loaded with require('textutil'); it only uses the sandbox's string,
-- table and math libraries.

local M = {}

local STOP = {}
for w in ([[
a about above after again against all almost also am an and any are aren't
around as at be because been before being below between both but by can
can't cannot could couldn't did didn't do does doesn't doing don't down
during each else even ever every few for from further get gets getting got
had hadn't has hasn't have haven't having he he'd he'll he's her here
here's hers herself him himself his how how's however i i'd i'll i'm i've
if in into is isn't it it's its itself just kind know let's like likely
lot lots maybe me might mine more most much must mustn't my myself need
no nor not now of off often ok okay on once one only or other ought our
ours ourselves out over own pretty quite rather really right said same say
says she she'd she'll she's should shouldn't so some something sort still
such sure than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've thing things think this
those though through to too um uh under until up upon us use used using
very want was wasn't way we we'd we'll we're we've well were weren't what
what's when when's where where's whether which while who who's whom why
why's will with won't would wouldn't yeah yes yet you you'd you'll you're
you've your yours yourself yourselves actually basically going gonna
stuff mean guess ah oh mm hmm
]]):gmatch("%S+") do
  STOP[w] = true
end
M.STOP = STOP

-- Abbreviations whose period does not end a sentence.
local ABBREV = {
  ["mr"] = true, ["mrs"] = true, ["ms"] = true, ["dr"] = true,
  ["e.g"] = true, ["i.e"] = true, ["etc"] = true, ["vs"] = true,
  ["approx"] = true, ["inc"] = true, ["jr"] = true, ["sr"] = true,
}

-- Words before which an unpunctuated stream (speech recognition output)
-- is broken into sentences once the current one is long enough.
local BREAK_BEFORE = {
  ["but"] = true, ["so"] = true, ["because"] = true, ["and"] = true,
  ["i"] = true, ["we"] = true, ["it"] = true, ["then"] = true,
  ["also"] = true, ["honestly"] = true, ["actually"] = true,
}

function M.trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Lower-case word tokens (letters, digits, inner apostrophes).
function M.words(s)
  local out = {}
  local text = s:lower():gsub("\226\128[\152\153]", "'")
  for w in text:gmatch("[%w']+") do
    w = w:gsub("^'+", ""):gsub("'+$", "")
    if w ~= "" then out[#out + 1] = w end
  end
  return out
end

-- A light suffix stemmer (enough to fold "exports/exporting/exported").
function M.stem(w)
  if #w <= 4 then return w end
  local rules = {
    {"ations", "ate"}, {"ation", "ate"}, {"ness", ""}, {"ments", "ment"},
    {"ingly", ""}, {"edly", ""}, {"ies", "y"}, {"ing", ""}, {"ed", ""},
    {"ly", ""}, {"es", ""}, {"s", ""},
  }
  for _, r in ipairs(rules) do
    local suf, rep = r[1], r[2]
    if #w - #suf >= 3 and w:sub(-#suf) == suf then
      local base = w:sub(1, #w - #suf) .. rep
      -- "stopped" -> "stopp" -> "stop"
      if rep == "" and #base >= 4 and base:sub(-1) == base:sub(-2, -2)
          and not base:match("[aeiou]$") and base:sub(-1) ~= "l"
          and base:sub(-1) ~= "s" then
        base = base:sub(1, -2)
      end
      return base
    end
  end
  return w
end

-- Content keywords of a text: stemmed, stop words and short words removed.
-- Returns a list (in order of appearance, with repeats).
function M.keywords(s)
  local out = {}
  for _, w in ipairs(M.words(s)) do
    if not STOP[w] and #w >= 3 and not w:match("^%d+$") then
      out[#out + 1] = M.stem(w)
    end
  end
  return out
end

-- The set {keyword = true} of a text, and its size.
function M.keyword_set(s)
  local set, n = {}, 0
  for _, k in ipairs(M.keywords(s)) do
    if not set[k] then set[k] = true; n = n + 1 end
  end
  return set, n
end

-- Jaccard similarity |A n B| / |A u B| of two sets (with their sizes).
function M.jaccard(a, na, b, nb)
  if na == 0 or nb == 0 then return 0 end
  local inter = 0
  if na > nb then a, b = b, a end
  for k in pairs(a) do
    if b[k] then inter = inter + 1 end
  end
  return inter / (na + nb - inter)
end

-- Sorted keys of a table (deterministic iteration).
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  return keys
end

-- The n most frequent entries of a {word = count} table, as a list of
-- {word = w, count = c}, ties broken alphabetically.
function M.top(counts, n)
  local list = {}
  for w, c in pairs(counts) do list[#list + 1] = {word = w, count = c} end
  table.sort(list, function(x, y)
    if x.count ~= y.count then return x.count > y.count end
    return x.word < y.word
  end)
  while #list > n do table.remove(list) end
  return list
end

local function word_count(s)
  local n = 0
  for _ in s:gmatch("%S+") do n = n + 1 end
  return n
end
M.word_count = word_count

-- Breaks a run of text without punctuation into sentence-sized pieces at
-- discourse words (speech recognisers emit no punctuation).
local function split_unpunctuated(text, out, speaker, min_words, max_words)
  local cur, n = {}, 0
  for w in text:gmatch("%S+") do
    local lw = w:lower()
    if n >= max_words or (n >= min_words and BREAK_BEFORE[lw]) then
      out[#out + 1] = {text = table.concat(cur, " "), speaker = speaker}
      cur, n = {}, 0
    end
    cur[#cur + 1] = w
    n = n + 1
  end
  if n > 0 then out[#out + 1] = {text = table.concat(cur, " "), speaker = speaker} end
end

-- Splits a transcript into sentences. Lines that start with a speaker
-- label ("Alice:", "Speaker A:", "[Bob]") attribute the following text to
-- that speaker. Returns a list of {text = ..., speaker = ... or nil}.
function M.sentences(transcript)
  local out = {}
  local speaker = nil
  for line in (transcript .. "\n"):gmatch("([^\n]*)\n") do
    line = M.trim(line)
    local label, rest = line:match("^%[?([%a][%w%.%- ]-)%]?:%s+(.*)$")
    if label and #label <= 40 and word_count(label) <= 4 then
      speaker, line = label, rest
    end
    if line ~= "" then
      -- Sentences end at . ! ? (runs of them) followed by space or the end
      -- of the line, except after a known abbreviation or a single letter.
      local start, pos = 1, 1
      local pieces = {}
      while true do
        local s, e = line:find("[%.!%?]+", pos)
        if not s then break end
        local after = line:sub(e + 1, e + 1)
        local before = line:sub(start, s - 1):match("([%w%.]+)$") or ""
        local is_abbrev = ABBREV[before:lower()] or (#before == 1 and line:sub(s, e) == ".")
        if (after == "" or after:match("%s")) and not is_abbrev then
          pieces[#pieces + 1] = M.trim(line:sub(start, e))
          start = e + 1
        end
        pos = e + 1
      end
      if start <= #line then pieces[#pieces + 1] = M.trim(line:sub(start)) end
      for _, p in ipairs(pieces) do
        if p ~= "" then
          if word_count(p) > 40 and not p:find("[%.!%?]") then
            split_unpunctuated(p, out, speaker, 8, 24)
          elseif word_count(p) > 60 then
            split_unpunctuated(p, out, speaker, 12, 40)
          else
            out[#out + 1] = {text = p, speaker = speaker}
          end
        end
      end
    end
  end
  return out
end

-- Upper-cases the first letter and makes sure the text ends with
-- punctuation.
function M.tidy(s)
  s = M.trim(s):gsub("%s+", " ")
  s = s:gsub("^%l", string.upper):gsub("%f[%w]i%f[^%w]", "I")
  if not s:match("[%.!%?]$") then s = s .. "." end
  return s
end

return M
