"""The items of ``RedisStore``'s limits, in Lua: sliding windows, lease pools and counters.

``redis_scripts.py`` puts these functions in front of the admission and settlement
functions that use them. Each script call keeps the items it touches in tables for the
whole call (a batch: many requests' operations, mostly on one tenant's few keys) and writes
the windows and the pools' expiry once at the end (``write_windows``, ``write_pools``): the
same outcome as one read and one write per operation, at ~40% less of Redis's time a request
under load (``bench/redis_cost.py``). The semantics are ``memory_items.py``'s, to the bit.
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
#
# Within one script call (a batch of many requests' operations, most on the same few keys:
# one tenant's windows) each window is read once and written once: ``open_window`` loads it
# into a table that the operations change in memory, and ``write_windows`` stores every
# changed one at the end. Read-then-written per operation, a request's windows cost Redis
# more than the rest of its script; in memory the values are the same doubles Redis would
# hand back (``%.17g`` round-trips them), so the outcome is the same as one write per change.
WINDOWS = """
local BUCKETS = 60
local function fmt(x) return string.format('%.17g', x) end
local index_names = {}  -- formatted once a call
local function index_name(x)
  local name = index_names[x]
  if not name then
    name = string.format('%.0f', x)
    index_names[x] = name
  end
  return name
end

-- This call's windows by key, and those with changes to write, in order of first change.
-- A window: key; total, oldest (nil: no usage), newest (nil: no bucket); amounts, by bucket
-- index: the amount, false for no field, nil for not read yet (only while not complete:
-- complete means every bucket is known); changed: indexes whose field must be written;
-- stored_oldest: what 'o' holds in Redis; ttl_ms: set when a bucket was opened.
local windows_by_key, changed_windows = {}, {}

local function changed(w)
  if not w.dirty then
    w.dirty = true
    changed_windows[#changed_windows + 1] = w
  end
end

-- The amount of bucket `index`, read from Redis at most once a call.
local function amount_at(w, index)
  local amount = w.amounts[index]
  if amount == nil then
    amount = false
    if not w.complete then
      amount = tonumber(redis.call('HGET', w.key, index_name(index))) or false
    end
    w.amounts[index] = amount
  end
  return amount or 0
end

-- Every bucket with a field, oldest first, as {index, amount}: what HGETALL would return if
-- this call's changes were written.
local function buckets(w)
  if not w.complete then
    local flat = redis.call('HGETALL', w.key)
    for j = 1, #flat, 2 do
      local index = tonumber(flat[j])
      if index and w.amounts[index] == nil then w.amounts[index] = tonumber(flat[j + 1]) end
    end
    w.complete = true
  end
  local list = {}
  for index, amount in pairs(w.amounts) do
    if amount then list[#list + 1] = {index, amount} end
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

-- Deletes the window's key now (what this call changed in it goes with it).
local function delete_window(w)
  redis.call('DEL', w.key)
  w.total, w.oldest, w.newest, w.stored_oldest, w.stored_newest = 0, nil, nil, nil, nil
  w.ttl_ms = false
  w.amounts, w.changed, w.complete = {}, {}, true
end

-- Drops the buckets that left the window ending at bucket `current` and counts the rest.
local function recount(w, current)
  local live = {}
  for _, b in ipairs(buckets(w)) do
    if b[1] <= current - BUCKETS then
      w.amounts[b[1]], w.changed[b[1]] = false, true
    else
      live[#live + 1] = b
    end
  end
  if #live == 0 then
    delete_window(w)
    return
  end
  local total = 0
  for j = 1, #live do total = total + live[j][2] end
  w.total = total
  -- The newest index outlives its bucket when that was given back (as in MemoryStore).
  if not (w.newest and w.newest > current - BUCKETS) then w.newest = live[#live][1] end
  w.oldest = oldest_with_usage(live)
  changed(w)
end

-- The window `key` at bucket `current` (named `field`: index_name(current), which the
-- callers format once for all their windows of one size), buckets that left it dropped.
local function open_window(key, current, field)
  local w = windows_by_key[key]
  if w == nil then
    local r = redis.call('HMGET', key, 't', 'o', 'n', field)
    local oldest, newest = tonumber(r[2]), tonumber(r[3])
    -- Every field set here (false for none), so the table is made at its final size.
    w = {key = key, total = tonumber(r[1]), oldest = oldest, newest = newest,
         amounts = {[current] = tonumber(r[4]) or false}, changed = {}, complete = false,
         stored_oldest = oldest, stored_newest = newest, dirty = false, ttl_ms = false}
    windows_by_key[key] = w
    if not w.total then
      if redis.call('EXISTS', key) == 0 then
        w.total, w.oldest, w.newest, w.amounts, w.complete = 0, nil, nil, {}, true
      else  -- a hash without the bookkeeping fields: recount
        recount(w, current)
      end
      return w
    end
  end
  if w.oldest and w.oldest <= current - BUCKETS then recount(w, current) end  -- usage left
  return w
end

-- Adds `amount` to the window at bucket `current`.
local function add(w, current, amount, ttl_ms)
  -- A clock that stepped back adds to the newest bucket.
  if w.newest and w.newest > current then current = w.newest end
  w.amounts[current] = amount_at(w, current) + amount
  w.changed[current] = true
  w.total = w.total + amount
  if w.newest ~= current then
    w.newest, w.ttl_ms = current, ttl_ms
  end
  if not w.oldest and amount > 0 then w.oldest = current end
  changed(w)
end

-- Removes `amount` from the newest buckets first, none below zero.
local function take(w, amount)
  if not w.oldest then return end
  local j, emptied_oldest = w.newest, false
  while amount > 0 and j >= w.oldest do
    local have = amount_at(w, j)
    if have > 0 then
      local taken = math.min(have, amount)
      amount = amount - taken
      w.total = w.total - taken
      if have - taken <= 0 then
        w.amounts[j] = false
        emptied_oldest = j == w.oldest
      else
        w.amounts[j] = have - taken
      end
      w.changed[j] = true
    end
    j = j - 1
  end
  if w.total <= 0 then
    delete_window(w)
    return
  end
  changed(w)
  if emptied_oldest then  -- yet a total is left (rounding): find the oldest with usage
    w.oldest = oldest_with_usage(buckets(w))
  end
end

-- Stores every window this call changed: one HSET (and an HDEL, a PEXPIRE when needed) each,
-- of the fields that changed.
local function write_windows()
  for _, w in ipairs(changed_windows) do
    local only = next(w.changed)
    if only and next(w.changed, only) == nil and w.amounts[only]
        and w.newest == w.stored_newest and w.oldest == w.stored_oldest then
      -- Most windows: one bucket and the total changed (a burst within one bucket).
      redis.call('HSET', w.key, index_name(only), fmt(w.amounts[only]), 't', fmt(w.total))
    elseif w.newest then  -- (else deleted, and nothing added since)
      local fields, gone = {'t', fmt(w.total)}, nil
      for index in pairs(w.changed) do
        local amount = w.amounts[index]
        if amount then
          fields[#fields + 1], fields[#fields + 2] = index_name(index), fmt(amount)
        else
          gone = gone or {}
          gone[#gone + 1] = index_name(index)
        end
      end
      if w.newest ~= w.stored_newest then
        fields[#fields + 1], fields[#fields + 2] = 'n', index_name(w.newest)
      end
      if w.oldest ~= w.stored_oldest then
        if w.oldest then
          fields[#fields + 1], fields[#fields + 2] = 'o', index_name(w.oldest)
        else
          gone = gone or {}
          gone[#gone + 1] = 'o'
        end
      end
      redis.call('HSET', w.key, unpack(fields))
      if gone then redis.call('HDEL', w.key, unpack(gone)) end
      if w.ttl_ms then redis.call('PEXPIRE', w.key, string.format('%.0f', w.ttl_ms)) end
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
local function retry_after(w, amount, limit, now, window_s, bucket_s)
  if amount > limit then return window_s end
  local need, gone, wait = w.total + amount - limit, 0, window_s
  for _, b in ipairs(buckets(w)) do
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


# Lease pools and counters, kept for the call like the windows: a pool is pruned of expired
# leases and counted once (again only when one of its leases may have expired since), and its
# expiry renewed once, at the end; a counter is read once (later reads see the values the
# call's own increments returned).
POOLS = """
-- A pool: key; count, the leases held; soonest, an expiry no later than the earliest held
-- (nothing held expires before it: no pruning needed until then); ttl_ms, the longest time
-- to live a lease taken in this call asks for (false: none taken).
local pools_by_key, changed_pools = {}, {}
local counter_values = {}  -- by key: the value as stored (a string), false for none

local function count_pool(p, now_text)
  redis.call('ZREMRANGEBYSCORE', p.key, '-inf', now_text)
  local first = redis.call('ZRANGE', p.key, 0, 0, 'WITHSCORES')
  p.count, p.soonest = redis.call('ZCARD', p.key), tonumber(first[2]) or math.huge
end

-- The pool `key` at `now` (`now_text` as sent), its expired leases dropped.
local function open_pool(key, now, now_text)
  local p = pools_by_key[key]
  if p == nil then
    p = {key = key, count = 0, soonest = 0, ttl_ms = false}
    pools_by_key[key] = p
    count_pool(p, now_text)
  elseif now >= p.soonest then
    count_pool(p, now_text)
  end
  return p
end

-- Adds lease `id` until `expiry` (a renewal when it is held already): the count after it.
local function take_lease(p, id, expiry, ttl_ms)
  -- ZADD counts the members it added: 0 for a lease renewing itself.
  p.count = p.count + redis.call('ZADD', p.key, fmt(expiry), id)
  if expiry < p.soonest then p.soonest = expiry end
  if not p.ttl_ms then changed_pools[#changed_pools + 1] = p end
  if not p.ttl_ms or ttl_ms > p.ttl_ms then p.ttl_ms = ttl_ms end
  return p.count
end

local function release_lease(key, id)
  local removed = redis.call('ZREM', key, id)
  local p = pools_by_key[key]
  if p then p.count = p.count - removed end
end

-- The pools' expiry: never shorter than the longest lease taken in them.
local function write_pools()
  for _, p in ipairs(changed_pools) do
    if redis.call('PTTL', p.key) < p.ttl_ms then
      redis.call('PEXPIRE', p.key, string.format('%.0f', p.ttl_ms))
    end
  end
end

-- The counters KEYS[k .. k + n - 1] as stored (false for none).
local function counters(KEYS, k, n)
  local values, missing = {}, {}
  for i = 1, n do
    local value = counter_values[KEYS[k + i - 1]]
    if value == nil then missing[#missing + 1] = KEYS[k + i - 1] end
    values[i] = value
  end
  if #missing > 0 then
    local read = redis.call('MGET', unpack(missing))
    for j = 1, #missing do counter_values[missing[j]] = read[j] end
    for i = 1, n do values[i] = counter_values[KEYS[k + i - 1]] end
  end
  return values
end

local function increment(key, delta)
  counter_values[key] = redis.call('INCRBYFLOAT', key, delta)
end
"""
