"""The event log's Lua scripts (:mod:`ranker.live.events`): logging a slate and recording feedback, each in one round
trip, with the rules that keep live counters honest.

Every key a script touches carries the deployment's hash tag (``{<prefix>}:``, ``ARGV[1]``), so on a Redis Cluster
they all lie in the slot of ``KEYS[1]`` and a script never leaves it.

What no one can game (docs/api.md, "Counters no one can game"):

- **idempotency per ranking**: an event is a duplicate when its ``(ranking_id, event_id)`` was seen, so two users'
  rankings may use the same ``event_id``;
- **one event of a type per shown position**: the first click (cart, purchase) at a position of a ranking moves the
  shared live state (item counters, the user's activity, the reward series, the experiment's outcomes); repeats
  are stored in the stream (the learner's caps judge them) and fold into the user's own profile, nothing else;
- **per-user caps on live counters**: within a window (``counter_window_s``) one user adds an item at most one
  impression and ``counter_user_cap`` clicks and purchases, however many rankings and events they send;
- **per-user feedback rate limit**: requests per user and window, counted where the ranking's record names the
  user.

Both scripts also keep the user's log index (``{p}:user:<token>:log``: the stream entries and ranking ids of the
user), so erasure finds every copy without scanning the streams (:mod:`ranker.live.erasure`).
"""

from __future__ import annotations

# Logging a served slate. KEYS[1]: the rankings stream.
# ARGV: key base, user key, counter window index, counter window (s), user data ttl, log index max length, the number
#       of slate items, the session's key base ('' none), the session ttl (s), the query's hash, then per slate item
#       (LOG_STRIDE values): item id, examination prior, brand, colour, price level; then the ranking id, then the
#       stream entry's fields (name, value, ...).
# Returns the stream entry id. Impressions and exposure count once per user, item and window. What the user was
# shown (count, price levels, brands, colours) adds to their shown statistics; in a session, the items join the
# session's shown sets (all, and this query's) and the query its queries.
LOG_HEADER = 10
LOG_STRIDE = 5
LOG_RANKING = """
local base, user = ARGV[1], ARGV[2]
local n, head, stride = tonumber(ARGV[7]), 10, 5
local session, session_ttl, query = ARGV[8], ARGV[9], ARGV[10]
local ranking_id = ARGV[head + stride * n + 1]
local fields = {}
for i = head + stride * n + 2, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
local seen = base .. 'user:' .. user .. ':seen:' .. ARGV[3]
local shown = base .. 'user:' .. user .. ':shown'
local level = 0
for i = 1, n do
  local at = head + (i - 1) * stride
  local item, prior = ARGV[at + 1], ARGV[at + 2]
  if redis.call('HSETNX', seen, item, 1) == 1 then
    redis.call('HINCRBY', base .. 'counts:impressions', item, 1)
    redis.call('HINCRBYFLOAT', base .. 'counts:exposure', item, prior)
  end
  redis.call('HINCRBY', shown, 'b:' .. ARGV[at + 3], 1)
  redis.call('HINCRBY', shown, 'c:' .. ARGV[at + 4], 1)
  level = level + tonumber(ARGV[at + 5])
  if session ~= '' then
    redis.call('SADD', session .. 'shown', item)
    redis.call('SADD', session .. 'shown:' .. query, item)
  end
end
if n > 0 then
  redis.call('HINCRBY', shown, 'n', n)
  redis.call('HINCRBYFLOAT', shown, 'level', level)
  redis.call('EXPIRE', shown, ARGV[5])
end
if session ~= '' then
  redis.call('SADD', session .. 'queries', query)
  for _, name in ipairs({'shown', 'shown:' .. query, 'queries', 'clicked'}) do redis.call('EXPIRE', session .. name, session_ttl) end
end
redis.call('EXPIRE', seen, tonumber(ARGV[4]) * 2)
local log = base .. 'user:' .. user .. ':log'
redis.call('RPUSH', log, 'r ' .. id .. ' ' .. ranking_id)
redis.call('LTRIM', log, -tonumber(ARGV[6]), -1)
redis.call('EXPIRE', log, ARGV[5])
return id
"""

# One feedback request, one round trip (bench/README.md, "Feedback in one round trip").
# KEYS[1]: the ranking's lookup record. Every other key depends on what the record says (its user, its experiment),
#          so the script builds them from ARGV[1], the '{<prefix>}:' that every key of the deployment starts with.
# ARGV: key base, dedup ttl, stream max length, the oldest stream id to keep ('' none), the user data ttl, the series
#       ttl (seconds kept after its day ends), the profile decay, the ranking id, the per-user feedback limits ('' none;
#       else "count seconds count seconds ..."), now (unix seconds), the counter window (s), the per-user counter cap,
#       the number of events, then per event (STRIDE values): event id, item id, type, its JSON without the position
#       and the closing brace, revenue, reward, and what the profile learns: category, brand, colour, price level
#       ('' unknown), price, the item's text vector as float32 bytes ('': nothing, the item is gone from the catalog).
# A click in a session (the record's 'session', a key base) joins the session's clicked items.
# Returns {1, accepted flags...}, {0} when the ranking is unknown, {-1, index} when an event's item is not in its slate,
# {-2, seconds} when the user is over a feedback limit (retry after that many seconds).
# Nothing is written before every event is checked. The first write is the rate counter's INCR or a dedup SET, which
# Redis refuses when it is out of memory (maxmemory, noeviction): then nothing is written. A first write that frees
# memory (XTRIM) would let the rest through, so trimming comes last. The profile is read and written inside the
# script, so concurrent feedback for one user folds in every event, in the order the stream holds them.
FEEDBACK_HEADER = 13
FEEDBACK_STRIDE = 12
FEEDBACK = """
local base = ARGV[1]
local raw = redis.call('GET', KEYS[1])
if not raw then return {0} end
local record = cjson.decode(raw)
local slate, n, head, stride = record['slate'], tonumber(ARGV[13]), 13, 12
local positions = {}
for i = 1, n do
  local item = ARGV[head + (i - 1) * stride + 2]
  for p = 1, #slate do
    if slate[p] == item then positions[i] = p - 1; break end
  end
  if positions[i] == nil then return {-1, i - 1} end
end

local user = record['user_key']
local now = tonumber(ARGV[10])
for count, seconds in string.gmatch(ARGV[9], '(%d+) (%d+)') do
  local window = math.floor(now / tonumber(seconds))
  local bucket = base .. 'limits:feedback:' .. user .. ':' .. seconds .. ':' .. window
  local used = redis.call('INCR', bucket)
  if used == 1 then redis.call('EXPIRE', bucket, tonumber(seconds) + 1) end
  if used > tonumber(count) then return {-2, math.max(1, math.ceil((window + 1) * tonumber(seconds) - now))} end
end

local activity = base .. 'user:' .. user .. ':activity'
local ts = tonumber(record['ts'])
local minute = ts - math.fmod(ts, 60)  -- as Python's ts // 60 * 60, exactly
local day = (ts - math.fmod(ts, 86400)) / 86400
local series = base .. 'series:reward:' .. string.format('%d', day)
local bucket = string.format('%d', minute) .. '|' .. record['policy_version'] .. '|reward'
local exposure, outcomes = record['exposure'], nil
if type(exposure) == 'table' then outcomes = base .. 'exp:' .. exposure['experiment'] .. ':' end
local counted = KEYS[1] .. ':counted'  -- position:type pairs that already moved the live state
local capped = base .. 'user:' .. user .. ':counted:' .. string.format('%d', math.floor(ts / tonumber(ARGV[11])))
local cap = tonumber(ARGV[12])
local log = base .. 'user:' .. user .. ':log'

local profile_key, scalars, embedding, scale = base .. 'user:' .. user, nil, nil, 1
local decay = tonumber(ARGV[7])
-- The profile's fold (UserProfile.record): embedding <- unit(decay * embedding + (1 - decay) * vector). The loop keeps
-- the embedding unnormalised with its scale (1 / its norm) beside it, so each event takes one pass over it, and the
-- write at the end applies the scale.
local function learn(kind, category, brand, colour, level, price, bytes)
  if scalars == nil then
    local stored = redis.call('HMGET', profile_key, 'profile', 'embedding')
    if stored[1] then
      scalars = cjson.decode(stored[1])
      if stored[2] and #stored[2] > 0 then
        embedding = {struct.unpack('<' .. string.rep('f', #stored[2] / 4), stored[2])}
        embedding[#embedding] = nil  -- unpack's last value is the next read position
      end
    else
      scalars = {n_interactions = 0, category_counts = {}, brand_counts = {}, log_price_sum = 0, n_purchases = 0}
    end
  end
  local dim = #bytes / 4
  local vector = {struct.unpack('<' .. string.rep('f', dim), bytes)}
  vector[dim + 1] = nil
  local norm = 0
  if embedding ~= nil and #embedding == dim then
    local old, new = decay * scale, 1 - decay
    for d = 1, dim do
      local value = old * embedding[d] + new * vector[d]
      embedding[d] = value
      norm = norm + value * value
    end
  else  -- the first event (or a profile from an encoder of another dimension): the item's vector
    embedding = vector
    for d = 1, dim do norm = norm + vector[d] * vector[d] end
  end
  scale = 1 / math.max(math.sqrt(norm), 1e-12)
  scalars['n_interactions'] = scalars['n_interactions'] + 1
  scalars['category_counts'][category] = (scalars['category_counts'][category] or 0) + 1
  scalars['brand_counts'][brand] = (scalars['brand_counts'][brand] or 0) + 1
  if type(scalars['colour_counts']) ~= 'table' then scalars['colour_counts'] = {} end
  scalars['colour_counts'][colour] = (scalars['colour_counts'][colour] or 0) + 1
  if level ~= nil then
    scalars['level_sum'] = (scalars['level_sum'] or 0) + level
    scalars['n_levels'] = (scalars['n_levels'] or 0) + 1
  end
  if kind == 'purchase' and price > 0 then
    scalars['log_price_sum'] = scalars['log_price_sum'] + math.log(price)
    scalars['n_purchases'] = scalars['n_purchases'] + 1
  end
end

local flags, moved = {1}, false
for i = 1, n do
  local at = head + (i - 1) * stride
  local event_id, item, kind = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  if redis.call('SET', base .. 'event:' .. ARGV[8] .. ':' .. event_id, '1', 'NX', 'EX', ARGV[2]) then
    local position = positions[i]
    local id = redis.call('XADD', base .. 'interactions', 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[at + 4] .. ', "position": ' .. position .. '}')
    redis.call('RPUSH', log, 'i ' .. id)
    if redis.call('HSETNX', counted, position .. ':' .. kind, 1) == 1 then
      moved = true
      redis.call('HINCRBYFLOAT', series, bucket, ARGV[at + 6])
      redis.call('EXPIREAT', series, string.format('%d', (day + 1) * 86400 + tonumber(ARGV[6])))
      local field = nil
      if outcomes ~= nil then
        if type(exposure['teams']) == 'table' then field = ARGV[8] .. ':' .. tostring(exposure['teams'][position + 1])
        else field = exposure['session'] end
      end
      if kind == 'click' or kind == 'purchase' then
        local counter = kind .. 's'
        if redis.call('HINCRBY', capped, kind .. ':' .. item, 1) <= cap then
          redis.call('HINCRBY', base .. 'counts:' .. counter, item, 1)
        end
        redis.call('HINCRBY', activity, counter, 1)
        if field then redis.call('HINCRBY', outcomes .. counter, field, 1) end
        if field and kind == 'purchase' then redis.call('HINCRBYFLOAT', outcomes .. 'revenue', field, ARGV[at + 5]) end
      end
      redis.call('EXPIRE', activity, ARGV[5])
    end
    -- the user's own profile learns from every accepted event (it moves no one else's ranking)
    if ARGV[at + 12] ~= '' then
      learn(kind, ARGV[at + 7], ARGV[at + 8], ARGV[at + 9], tonumber(ARGV[at + 10]), tonumber(ARGV[at + 11]), ARGV[at + 12])
    end
    if kind == 'click' and type(record['session']) == 'string' then
      local clicked = record['session'] .. 'clicked'
      redis.call('RPUSH', clicked, item)
      redis.call('LTRIM', clicked, -20, -1)
      redis.call('EXPIRE', clicked, record['session_ttl'] or 1800)
    end
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
if #flags > 1 then
  redis.call('LTRIM', log, -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', log, ARGV[5])
end
if moved then
  redis.call('EXPIRE', capped, tonumber(ARGV[11]) * 2)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', counted, ttl) end
end
if embedding ~= nil then
  for d = 1, #embedding do embedding[d] = embedding[d] * scale end
  redis.call('HSET', profile_key, 'profile', cjson.encode(scalars), 'embedding', struct.pack('<' .. string.rep('f', #embedding), unpack(embedding)))
  redis.call('EXPIRE', profile_key, ARGV[5])
end
if outcomes ~= nil then
  local ttl = redis.call('PTTL', outcomes .. 'exposures')
  if ttl > 0 then
    for _, name in ipairs({'clicks', 'purchases', 'revenue'}) do
      if redis.call('EXISTS', outcomes .. name) == 1 then redis.call('PEXPIRE', outcomes .. name, ttl) end
    end
  end
end
if ARGV[4] ~= '' then redis.call('XTRIM', base .. 'interactions', 'MINID', ARGV[4]) end
return flags
"""
