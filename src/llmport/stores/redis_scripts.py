"""The Lua scripts behind ``RedisStore``: each check-and-update runs inside Redis, atomically.

``admit`` and ``settle`` are Lua functions of (KEYS, ARGV, k, a): their keys start at
``KEYS[k]`` and their arguments at ``ARGV[a]``, so ``BATCH`` runs a sequence of them in one
script call (see ``redis_batch.py``) over its own arrays, without copying each operation's
keys and arguments out first (that copying was ~5% of the script's time). The windows,
lease pools and counters they use are in ``redis_items.py``.
"""

from llmport.stores.redis_items import POOLS, WINDOWS

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
    local values = counters(KEYS, k, nc)
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

  -- Per window: the window, and this admission's amount, window size and current bucket.
  local windows, amounts, sizes, currents = {}, {}, {}, {}
  local named, name = nil, nil  -- the last bucket index named, and its name
  for i = 1, nw do
    local limit, amount, window_s = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local bucket_s = window_s / BUCKETS
    local current = math.floor(now / bucket_s)
    if current ~= named then named, name = current, index_name(current) end
    local w = open_window(KEYS[k], current, name)
    if w.total + amount > limit then
      if refused == 0 then refused = k - k0 + 1 end
      local wait = retry_after(w, amount, limit, now, window_s, bucket_s)
      if wait > retry then retry = wait end
    end
    windows[i], amounts[i], sizes[i], currents[i] = w, amount, window_s, current
    a, k = a + 3, k + 1
  end

  -- Per lease: its pool, id and time to live; then the pool's count after this admission.
  local pools, ids, ttls, counts = {}, {}, {}, {}
  for i = 1, nl do
    local key, limit, id = KEYS[k], tonumber(ARGV[a]), ARGV[a + 1]
    local p = open_pool(key, now, now_text)
    -- At the limit, only a lease renewing itself is let through.
    if p.count >= limit and not redis.call('ZSCORE', key, id) then
      if refused == 0 then refused = k - k0 + 1 end
      if retry < 1.0 then retry = 1.0 end
    end
    pools[i], ids[i], ttls[i], counts[i] = p, id, tonumber(ARGV[a + 2]), p.count
    a, k = a + 3, k + 1
  end

  if refused == 0 then
    retry = 0
    for i = 1, nw do
      local window_s = sizes[i]
      add(windows[i], currents[i], amounts[i], math.ceil((window_s + window_s / BUCKETS) * 1000))
    end
    for i = 1, nl do
      counts[i] = take_lease(pools[i], ids[i], now + ttls[i], math.ceil(ttls[i] * 1000))
    end
  end

  for i = 1, nw do
    local w = windows[i]
    out[#out + 1] = fmt(w.total)
    out[#out + 1] = fmt(reset_s(w, now, sizes[i] / BUCKETS))
  end
  for i = 1, nl do out[#out + 1] = fmt(counts[i]) end
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
        add(w, current, delta, math.ceil((window_s + bucket_s) * 1000))
      else
        take(w, -delta)
      end
    end
    a, k = a + 2, k + 1
  end
  for i = 1, nc do
    increment(KEYS[k], ARGV[a])
    a, k = a + 1, k + 1
  end
  for i = 1, nl do
    release_lease(KEYS[k], ARGV[a])
    a, k = a + 1, k + 1
  end
  return 1
end
"""

_FUNCTIONS = WINDOWS + POOLS + _ADMIT_FUNCTION + _SETTLE_FUNCTION

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
write_windows()
write_pools()
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
