"""The Lua scripts behind ``RedisStore``: each check-and-update runs inside Redis, atomically.

``admit`` and ``settle`` are Lua functions of (KEYS, ARGV); ``BATCH`` runs a
sequence of them in one script call (see ``redis_batch.py``).
"""

# Shared Lua: bucket arithmetic identical to MemoryStore's (same IEEE operations).
_LIVE_BUCKETS = """
local BUCKETS = 60
local function fmt(x) return string.format('%.17g', x) end
-- The window's live buckets oldest first as {index, amount}; stale fields are deleted.
local function live_buckets(key, current)
  local flat = redis.call('HGETALL', key)
  local live, stale = {}, {}
  for j = 1, #flat, 2 do
    local index = tonumber(flat[j])
    if index <= current - BUCKETS then
      stale[#stale + 1] = flat[j]
    else
      live[#live + 1] = {index, tonumber(flat[j + 1])}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  return live
end
local function write_field(live, current)
  -- A clock that stepped back adds to the newest bucket.
  if #live > 0 and live[#live][1] > current then current = live[#live][1] end
  return string.format('%.0f', current)
end
"""

# KEYS: ceilings, windows, leases. ARGV: now, #ceilings, #windows, #leases, then per ceiling:
# ceiling; per window: limit, amount, window_s; per lease: limit, lease_id, ttl_s.
# Returns {refused (1-based over KEYS, 0 = admitted), retry_after, ceiling values,
# window (used, reset) pairs, lease counts}.
_ADMIT_FUNCTION = """
local function admit(KEYS, ARGV)
  local now = tonumber(ARGV[1])
  local nc, nw, nl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local refused, retry = 0, 0
  local a, k = 5, 1
  local out = {}

  for i = 1, nc do
    local value = tonumber(redis.call('GET', KEYS[k]) or '0')
    if value >= tonumber(ARGV[a]) then
      if refused == 0 then refused = k end
      retry = 1.0
    end
    out[#out + 1] = fmt(value)
    a, k = a + 1, k + 1
  end

  local windows = {}
  for i = 1, nw do
    local limit, amount, window_s = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local bucket_s = window_s / BUCKETS
    local current = math.floor(now / bucket_s)
    local live = live_buckets(KEYS[k], current)
    local used = 0
    for j = 1, #live do used = used + live[j][2] end
    if used + amount > limit then
      if refused == 0 then refused = k end
      local wait = window_s
      if amount <= limit then
        local need, gone = used + amount - limit, 0
        for j = 1, #live do
          if live[j][2] > 0 then
            gone = gone + live[j][2]
            wait = (live[j][1] + BUCKETS) * bucket_s - now
            if gone >= need then break end
          end
        end
        if wait < 0.001 then wait = 0.001 end
      end
      if wait > retry then retry = wait end
    end
    windows[i] = {key = KEYS[k], amount = ARGV[a + 1], window_s = window_s, bucket_s = bucket_s,
                  current = current, live = live, used = used}
    a, k = a + 3, k + 1
  end

  local leases = {}
  for i = 1, nl do
    local key, limit = KEYS[k], tonumber(ARGV[a])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    local count = redis.call('ZCARD', key)
    local renewing = redis.call('ZSCORE', key, ARGV[a + 1]) ~= false
    if (not renewing) and count >= limit then
      if refused == 0 then refused = k end
      if retry < 1.0 then retry = 1.0 end
    end
    leases[i] = {key = key, id = ARGV[a + 1], ttl_s = tonumber(ARGV[a + 2]), count = count,
                 renewing = renewing}
    a, k = a + 3, k + 1
  end

  if refused == 0 then
    retry = 0
    for i = 1, nw do
      local w = windows[i]
      local field = write_field(w.live, w.current)
      redis.call('HINCRBYFLOAT', w.key, field, w.amount)
      local ttl_ms = math.ceil((w.window_s + w.bucket_s) * 1000)
      redis.call('PEXPIRE', w.key, string.format('%.0f', ttl_ms))
      w.used = w.used + tonumber(w.amount)
      w.live[#w.live + 1] = {tonumber(field), tonumber(w.amount)}
      table.sort(w.live, function(x, y) return x[1] < y[1] end)
    end
    for i = 1, nl do
      local l = leases[i]
      redis.call('ZADD', l.key, fmt(now + l.ttl_s), l.id)
      local ttl_ms = math.ceil(l.ttl_s * 1000)
      if redis.call('PTTL', l.key) < ttl_ms then
        redis.call('PEXPIRE', l.key, string.format('%.0f', ttl_ms))
      end
      if not l.renewing then l.count = l.count + 1 end
    end
  end

  for i = 1, nw do
    local w = windows[i]
    local reset = 0
    if w.used > 0 then
      for j = 1, #w.live do
        if w.live[j][2] > 0 then
          reset = (w.live[j][1] + BUCKETS) * w.bucket_s - now
          break
        end
      end
      if reset < 0 then reset = 0 end
    end
    out[#out + 1] = fmt(w.used)
    out[#out + 1] = fmt(reset)
  end
  for i = 1, nl do out[#out + 1] = fmt(leases[i].count) end
  return {refused, fmt(retry), out}
end
"""

# KEYS: windows, counters, leases. ARGV: now, #windows, #counters, #leases, then per window:
# delta, window_s; per counter: delta; per lease: lease_id.
_SETTLE_FUNCTION = """
local function settle(KEYS, ARGV)
  local now = tonumber(ARGV[1])
  local nw, nc, nl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local a, k = 5, 1
  for i = 1, nw do
    local key, delta, window_s = KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if delta > 0 or redis.call('EXISTS', key) == 1 then
      local bucket_s = window_s / BUCKETS
      local current = math.floor(now / bucket_s)
      local live = live_buckets(key, current)
      if delta >= 0 then
        redis.call('HINCRBYFLOAT', key, write_field(live, current), ARGV[a])
        redis.call('PEXPIRE', key, string.format('%.0f', math.ceil((window_s + bucket_s) * 1000)))
      else
        -- Taken from the newest buckets first, none below zero.
        local remaining = -delta
        for j = #live, 1, -1 do
          if remaining <= 0 then break end
          local amount = live[j][2]
          if amount > 0 then
            local taken = math.min(amount, remaining)
            remaining = remaining - taken
            local field = string.format('%.0f', live[j][1])
            if amount - taken <= 0 then
              redis.call('HDEL', key, field)
            else
              redis.call('HSET', key, field, fmt(amount - taken))
            end
          end
        end
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

_FUNCTIONS = _LIVE_BUCKETS + _ADMIT_FUNCTION + _SETTLE_FUNCTION

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
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[k + j - 1] end
  for j = 1, na do args[j] = fields[a + j - 1] end
  k, a = k + nk, a + na
  if kind == 'a' then
    local r = admit(keys, args)
    local line = tostring(r[1]) .. ',' .. r[2]
    if #r[3] > 0 then line = line .. ',' .. table.concat(r[3], ',') end
    results[i] = line
  else
    settle(keys, args)
    results[i] = '1'
  end
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
