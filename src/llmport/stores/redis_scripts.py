"""The Lua scripts behind ``RedisStore``: each check-and-update runs inside Redis, atomically.

``admit`` and ``settle`` are Lua functions of (KEYS, ARGV, k, a): their keys start at
``KEYS[k]`` and their arguments at ``ARGV[a]``, so ``BATCH`` runs a sequence of them in one
script call (see ``redis_batch.py``) over its own arrays, without copying each operation's
keys and arguments out first (that copying was ~5% of the script's time).
"""

# Shared Lua: bucket arithmetic identical to MemoryStore's (same IEEE operations).
#
# A window is a HASH of buckets (field = bucket index, value = amount) and three bookkeeping
# fields: 't' the buckets' total, 'o' the oldest bucket holding usage (absent when none does)
# and 'n' the newest bucket. With them an admission reads three fields instead of every
# bucket; the buckets are read whole only when the oldest with usage has left the window (at
# most once a bucket) and to refuse (the Retry-After). The key's expiry is renewed when a bucket
# is opened: the newest bucket leaves the window before it. A bucket settled down to zero loses
# its field; a window whose total reaches zero is deleted.
_WINDOWS = """
local BUCKETS = 60
local function fmt(x) return string.format('%.17g', x) end
local function index_name(x) return string.format('%.0f', x) end

-- The window's buckets, oldest first, as {index, amount, field}.
local function buckets(key)
  local flat = redis.call('HGETALL', key)
  local list = {}
  for j = 1, #flat, 2 do
    local index = tonumber(flat[j])
    if index then list[#list + 1] = {index, tonumber(flat[j + 1]), flat[j]} end
  end
  table.sort(list, function(x, y) return x[1] < y[1] end)
  return list
end

local function oldest_with_usage(list)
  for j = 1, #list do
    if list[j][2] > 0 then return list[j][1] end
  end
  return nil
end

-- The window at bucket `current` (named `field`: index_name(current), which the callers
-- format once for all their windows of one size) as {total, oldest, newest, current,
-- field, here = the current bucket's amount}, buckets that left it dropped.
local function open_window(key, current, field)
  local r = redis.call('HMGET', key, 't', 'o', 'n', field)
  local total, oldest, newest = tonumber(r[1]), tonumber(r[2]), tonumber(r[3])
  if total then
    if not oldest or oldest > current - BUCKETS then
      return {total = total, oldest = oldest, newest = newest, current = current,
              field = field, here = tonumber(r[4])}
    end
  elseif redis.call('EXISTS', key) == 0 then
    return {total = 0, current = current, field = field}
  end
  -- Usage left the window (or the hash lacks the bookkeeping fields): recount.
  local live, stale = {}, {}
  for _, b in ipairs(buckets(key)) do
    if b[1] <= current - BUCKETS then stale[#stale + 1] = b[3] else live[#live + 1] = b end
  end
  if #live == 0 then
    redis.call('DEL', key)
    return {total = 0, current = current, field = field}
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  total = 0
  for j = 1, #live do total = total + live[j][2] end
  -- The newest index outlives its bucket when that was given back (as in MemoryStore).
  if not (newest and newest > current - BUCKETS) then newest = live[#live][1] end
  oldest = oldest_with_usage(live)
  redis.call('HSET', key, 't', fmt(total), 'n', index_name(newest))
  if oldest then
    redis.call('HSET', key, 'o', index_name(oldest))
  else
    redis.call('HDEL', key, 'o')
  end
  return {total = total, oldest = oldest, newest = newest, current = current, field = field,
          here = tonumber(r[4])}
end

-- Adds `amount` to the window (opened by open_window) in one HSET.
local function add(key, w, amount, ttl_ms)
  local current, field, here = w.current, w.field, w.here
  -- A clock that stepped back adds to the newest bucket.
  if w.newest and w.newest > current then
    current = w.newest
    field = index_name(current)
    here = tonumber(redis.call('HGET', key, field))
  end
  w.total = w.total + amount
  local opened = w.newest ~= current
  if not opened and (w.oldest or amount <= 0) then  -- most calls: no table to build
    redis.call('HSET', key, field, fmt((here or 0) + amount), 't', fmt(w.total))
    return
  end
  local fields = {field, fmt((here or 0) + amount), 't', fmt(w.total)}
  if opened then
    w.newest = current
    fields[#fields + 1], fields[#fields + 2] = 'n', field
  end
  if not w.oldest and amount > 0 then
    w.oldest = current
    fields[#fields + 1], fields[#fields + 2] = 'o', field
  end
  redis.call('HSET', key, unpack(fields))
  if opened then redis.call('PEXPIRE', key, string.format('%.0f', ttl_ms)) end
end

-- Removes `amount` from the newest buckets first, none below zero.
local function take(key, w, amount)
  if not w.oldest then return end
  local j, emptied_oldest = w.newest, false
  while amount > 0 and j >= w.oldest do
    local field = index_name(j)
    local have = tonumber(redis.call('HGET', key, field) or '0')
    if have > 0 then
      local taken = math.min(have, amount)
      amount = amount - taken
      w.total = w.total - taken
      if have - taken <= 0 then
        redis.call('HDEL', key, field)
        emptied_oldest = j == w.oldest
      else
        redis.call('HSET', key, field, fmt(have - taken))
      end
    end
    j = j - 1
  end
  if w.total <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 't', fmt(w.total))
  if emptied_oldest then  -- yet a total is left (rounding): find the oldest with usage
    w.oldest = oldest_with_usage(buckets(key))
    if w.oldest then
      redis.call('HSET', key, 'o', index_name(w.oldest))
    else
      redis.call('HDEL', key, 'o')
    end
  end
end

-- Seconds until the oldest usage leaves the window.
local function reset_s(w, now, bucket_s)
  if w.total <= 0 or not w.oldest then return 0 end
  local reset = (w.oldest + BUCKETS) * bucket_s - now
  if reset < 0 then reset = 0 end
  return reset
end

-- Seconds until enough usage leaves the window for `amount` to fit.
local function retry_after(key, total, amount, limit, now, window_s, bucket_s)
  if amount > limit then return window_s end
  local need, gone, wait = total + amount - limit, 0, window_s
  for _, b in ipairs(buckets(key)) do
    if b[2] > 0 then
      gone = gone + b[2]
      wait = (b[1] + BUCKETS) * bucket_s - now
      if gone >= need then break end
    end
  end
  if wait < 0.001 then wait = 0.001 end
  return wait
end
"""

# KEYS from k: ceilings, windows, leases. ARGV from a: now, #ceilings, #windows, #leases, then
# per ceiling: ceiling; per window: limit, amount, window_s; per lease: limit, lease_id, ttl_s.
# Returns {refused (1-based over its own keys, 0 = admitted), retry_after, ceiling values,
# window (used, reset) pairs, lease counts}.
_ADMIT_FUNCTION = """
local function admit(KEYS, ARGV, k, a)
  local now_text = ARGV[a]
  local now = tonumber(now_text)
  local nc, nw, nl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local refused, retry = 0, 0
  local k0 = k
  a = a + 4
  local out = {}

  if nc > 0 then
    local values = redis.call('MGET', unpack(KEYS, k, k + nc - 1))
    for i = 1, nc do
      local value = tonumber(values[i] or '0')
      if value >= tonumber(ARGV[a]) then
        if refused == 0 then refused = k - k0 + 1 end
        retry = 1.0
      end
      out[#out + 1] = values[i] or '0'  -- as stored: INCRBYFLOAT writes a number Redis parses
      a, k = a + 1, k + 1
    end
  end

  local windows = {}
  local named, name = nil, nil  -- the last bucket index named, and its name
  for i = 1, nw do
    local limit, amount, window_s = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local bucket_s = window_s / BUCKETS
    local current = math.floor(now / bucket_s)
    if current ~= named then named, name = current, index_name(current) end
    local w = open_window(KEYS[k], current, name)
    if w.total + amount > limit then
      if refused == 0 then refused = k - k0 + 1 end
      local wait = retry_after(KEYS[k], w.total, amount, limit, now, window_s, bucket_s)
      if wait > retry then retry = wait end
    end
    w.key, w.amount, w.window_s, w.bucket_s = KEYS[k], amount, window_s, bucket_s
    windows[i] = w
    a, k = a + 3, k + 1
  end

  local leases = {}
  for i = 1, nl do
    local key, limit = KEYS[k], tonumber(ARGV[a])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_text)
    local count = redis.call('ZCARD', key)
    -- At the limit, only a lease renewing itself is let through.
    if count >= limit and not redis.call('ZSCORE', key, ARGV[a + 1]) then
      if refused == 0 then refused = k - k0 + 1 end
      if retry < 1.0 then retry = 1.0 end
    end
    leases[i] = {key = key, id = ARGV[a + 1], ttl_s = tonumber(ARGV[a + 2]), count = count}
    a, k = a + 3, k + 1
  end

  if refused == 0 then
    retry = 0
    for i = 1, nw do
      local w = windows[i]
      add(w.key, w, w.amount, math.ceil((w.window_s + w.bucket_s) * 1000))
    end
    for i = 1, nl do
      local l = leases[i]
      -- ZADD counts the members it added: 0 for a lease renewing itself.
      l.count = l.count + redis.call('ZADD', l.key, fmt(now + l.ttl_s), l.id)
      local ttl_ms = math.ceil(l.ttl_s * 1000)
      if redis.call('PTTL', l.key) < ttl_ms then
        redis.call('PEXPIRE', l.key, string.format('%.0f', ttl_ms))
      end
    end
  end

  for i = 1, nw do
    local w = windows[i]
    out[#out + 1] = fmt(w.total)
    out[#out + 1] = fmt(reset_s(w, now, w.bucket_s))
  end
  for i = 1, nl do out[#out + 1] = fmt(leases[i].count) end
  return {refused, fmt(retry), out}
end
"""

# KEYS from k: windows, counters, leases. ARGV from a: now, #windows, #counters, #leases, then
# per window: delta, window_s; per counter: delta; per lease: lease_id.
_SETTLE_FUNCTION = """
local function settle(KEYS, ARGV, k, a)
  local now = tonumber(ARGV[a])
  local nw, nc, nl = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  local named, name = nil, nil  -- the last bucket index named, and its name
  for i = 1, nw do
    local key, delta, window_s = KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if delta ~= 0 then  -- (MemoryStore adds an empty bucket for 0: nothing it can observe)
      local bucket_s = window_s / BUCKETS
      local current = math.floor(now / bucket_s)
      if current ~= named then named, name = current, index_name(current) end
      local w = open_window(key, current, name)
      if delta > 0 then
        add(key, w, delta, math.ceil((window_s + bucket_s) * 1000))
      else
        take(key, w, -delta)
      end
    end
    a, k = a + 2, k + 1
  end
  for i = 1, nc do
    redis.call('INCRBYFLOAT', KEYS[k], ARGV[a])
    a, k = a + 1, k + 1
  end
  for i = 1, nl do
    redis.call('ZREM', KEYS[k], ARGV[a])
    a, k = a + 1, k + 1
  end
  return 1
end
"""

_FUNCTIONS = _WINDOWS + _ADMIT_FUNCTION + _SETTLE_FUNCTION

# Several operations in one call, in order. ARGV[1]: one comma-separated string (one
# argument to pack and send, however large the batch): n, then per operation its kind ("a"
# admit, "s" settle), number of keys and number of arguments, then every operation's arguments
# one after the other (numbers and lease ids: never a comma). KEYS: every operation's keys, in
# the same order. Returns one string: per operation, its result's fields joined by commas
# (an admission: refused, retry_after, then its values; a settlement: 1), joined by ";".
BATCH = _FUNCTIONS + """
local fields = {}
for field in string.gmatch(ARGV[1], '[^,]+') do fields[#fields + 1] = field end
local n = tonumber(fields[1])
local k, a = 1, 2 + 3 * n
local results = {}
for i = 1, n do
  local kind = fields[3 * i - 1]
  local nk, na = tonumber(fields[3 * i]), tonumber(fields[3 * i + 1])
  if kind == 'a' then
    local r = admit(KEYS, fields, k, a)
    local line = tostring(r[1]) .. ',' .. r[2]
    if #r[3] > 0 then line = line .. ',' .. table.concat(r[3], ',') end
    results[i] = line
  else
    settle(KEYS, fields, k, a)
    results[i] = '1'
  end
  k, a = k + nk, a + na
end
return table.concat(results, ';')
"""


# KEYS: record. ARGV: fingerprint, running_ttl_ms.
CLAIM = """
local r = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'response')
if not r[1] then
  redis.call('HSET', KEYS[1], 'state', 'running', 'fingerprint', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if r[2] ~= ARGV[1] then return {'conflict'} end
if r[1] == 'done' then return {'done', r[3]} end
return {'running'}
"""

# KEYS: record. ARGV: fingerprint, response, ttl_ms.
COMPLETE = """
local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
if fingerprint and fingerprint ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'fingerprint', ARGV[1], 'response', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: record. ARGV: fingerprint.
ABANDON = """
local r = redis.call('HMGET', KEYS[1], 'state', 'fingerprint')
if r[1] == 'running' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
