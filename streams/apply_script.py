"""The Lua script that applies a micro-batch's features (:func:`streams.features.to_payload`)
atomically with the offset watermarks and the event-id dedupe sets of its partitions.

ARGV: ``n``, then ``(watermark key, first, last)`` per partition, then the JSON payload.
Steps, all inside one script (so one atomic step for Redis):

1. every partition's range must lie wholly above its watermark, else nothing changes and the
   reply says why per range (the caller trims and sends again);
2. the batch's event ids (``dd``: per partition, the id buckets to look in and the ids to
   add) must not be in the partition's recent-id sets, else nothing changes and the reply
   lists the ids seen before (the caller drops those events and sends again);
3. the features are applied, the ids recorded, old id buckets dropped and the watermarks
   moved.

Why read-then-write (HMGET + HSET, ZMSCORE + ZADD) instead of HINCRBY/ZINCRBY per field or
member: every ``redis.call`` costs a command dispatch, which dominated the script on batches
with many distinct users, items and hourly buckets (the MovieLens replay: ~2 ZINCRBY per
event). One read and one write per key is exact here: the script runs atomically.
"""

from __future__ import annotations

# Per range: applied; already applied (last <= watermark); straddles its watermark; would
# apply, but another range of the call did not, so nothing changed (send it again); holds
# event ids already applied at earlier offsets (listed after the statuses as (range number,
# id) pairs; send it again without them).
APPLIED, SKIPPED, CONFLICT, NOT_APPLIED, DUPLICATE = 0, 1, 2, 3, 4

APPLY_LUA = """
local call = redis.call
local CHUNK = 1000  -- unpack() and the Lua stack take a few thousand values at most
local n = tonumber(ARGV[1])
local out, ok = {}, true
for j = 0, n - 1 do
  local wm = tonumber(call('GET', ARGV[2 + 3 * j]) or '-1')
  local first, last = tonumber(ARGV[3 + 3 * j]), tonumber(ARGV[4 + 3 * j])
  local st = 0
  if last <= wm then st = 1 elseif first <= wm then st = 2 end
  if st ~= 0 then ok = false end
  out[#out + 1] = st
  out[#out + 1] = tostring(wm)
end
local function not_applied()
  for j = 1, 2 * n, 2 do if out[j] == 0 then out[j] = 3 end end
  return out
end
if not ok then return not_applied() end
local doc = cjson.decode(ARGV[2 + 3 * n])
local now, cap, ttl = doc.now, doc.cap, doc.ttl
-- A number passed to redis.call is formatted (sprintf '%.14g', glibc's slow float path) on
-- every call: the constants are formatted once.
now = tostring(now)
for j = 1, #ttl do ttl[j] = tostring(ttl[j]) end
local function num(v, default) return v and tonumber(v) or (default or 0) end
-- cmd(key, list...) in chunks; returns the sum of the integer replies
local function chunked(cmd, key, list, opt)
  local total = 0
  for s = 1, #list, CHUNK do
    local r
    if opt then r = call(cmd, key, opt, unpack(list, s, math.min(s + CHUNK - 1, #list)))
    else r = call(cmd, key, unpack(list, s, math.min(s + CHUNK - 1, #list))) end
    if type(r) == 'number' then total = total + r end
  end
  return total
end
-- 2. event ids seen before, per partition: dd[j] = {check keys, {{key, {ids}}...}, drops}
local dd, dup = doc.dd or {}, {}
for j, d in ipairs(dd) do
  for _, add in ipairs(d[2]) do
    local ids = add[2]
    for _, k in ipairs(d[1]) do
      for s = 1, #ids, CHUNK do
        local e = math.min(s + CHUNK - 1, #ids)
        local hit = call('SMISMEMBER', k, unpack(ids, s, e))
        for i = 1, #hit do
          if hit[i] == 1 then
            dup[#dup + 1] = j
            dup[#dup + 1] = ids[s + i - 1]
            out[2 * j - 1] = 4
          end
        end
      end
    end
  end
end
if #dup > 0 then
  not_applied()
  for _, id in ipairs(dup) do out[#out + 1] = id end
  return out
end
-- 3. features; key names are head .. id .. tail (doc.k)
local ttl_u = ttl[1]
local K = doc.k
local sh, st, rh, rt, hh, ht, gh, gt = K[1][1], K[1][2], K[2][1], K[2][2], K[3][1], K[3][2],
  K[4][1], K[4][2]
for _, u in ipairs(doc.u) do
  local id, ex = u[1], u[9]  -- ex: + 1 expire the stats, + 2 the history, + 4 the genres
  local sk = sh .. id .. st
  local cur = call('HMGET', sk, 'n_watch', 'n_rate', 'rating_sum', 'last_active')
  -- Every stats hash written has last_active: without it the user is new here.
  local new = not cur[4]
  local a = {'updated_at', now}
  if u[2] > 0 then a[#a + 1] = 'n_watch'; a[#a + 1] = num(cur[1]) + u[2] end
  if u[3] > 0 then
    a[#a + 1] = 'n_rate'; a[#a + 1] = num(cur[2]) + u[3]
    a[#a + 1] = 'rating_sum'; a[#a + 1] = num(cur[3]) + u[4]
  end
  if u[5] > num(cur[4], -1) then a[#a + 1] = 'last_active'; a[#a + 1] = u[5] end
  call('HSET', sk, unpack(a))
  if ex % 2 == 1 then call('EXPIRE', sk, ttl_u) end
  local recent = u[6]
  if #recent > 0 then
    local rk = rh .. id .. rt
    local added = chunked('ZADD', rk, recent, 'GT')
    if u[7] ~= 0 then
      chunked('HSET', hh .. id .. ht, u[7])
      call('EXPIRE', hh .. id .. ht, ttl_u)
    end
    -- Only new members can push the history over its cap: skip ZCARD otherwise, and for a
    -- new user adding no more than the cap (its history, if one outlived the stats by an
    -- eviction or a later TTL, is trimmed on the user's next batch that adds an item).
    local m = 0
    if added > 0 and not (new and added <= cap) then m = call('ZCARD', rk) end
    if m > cap then
      local old = call('ZRANGE', rk, 0, m - cap - 1)
      call('ZREMRANGEBYRANK', rk, 0, m - cap - 1)
      chunked('HDEL', hh .. id .. ht, old)
    end
    if ex % 4 >= 2 then call('EXPIRE', rk, ttl_u) end
  end
  local g = u[8]  -- {genre, count, ...} or 0
  if g ~= 0 then
    local gk = gh .. id .. gt
    local names = {}
    for j = 1, #g, 2 do names[#names + 1] = g[j] end
    local c = call('HMGET', gk, unpack(names))
    for j = 2, #g, 2 do g[j] = g[j] + num(c[j / 2]) end
    call('HSET', gk, unpack(g))
    if ex >= 4 then call('EXPIRE', gk, ttl_u) end
  end
end
local ih, it_ = K[5][1], K[5][2]
for _, it in ipairs(doc.i) do
  local k = ih .. it[1] .. it_
  local cur = call('HMGET', k, 'n_watch', 'n_rate', 'rating_sum', 'last_seen')
  local a = {}
  if it[2] > 0 then a[#a + 1] = 'n_watch'; a[#a + 1] = num(cur[1]) + it[2] end
  if it[3] > 0 then
    a[#a + 1] = 'n_rate'; a[#a + 1] = num(cur[2]) + it[3]
    a[#a + 1] = 'rating_sum'; a[#a + 1] = num(cur[3]) + it[4]
  end
  if it[5] > num(cur[4], -1) then a[#a + 1] = 'last_seen'; a[#a + 1] = it[5] end
  if #a > 0 then call('HSET', k, unpack(a)) end
  if it[6] == 1 then call('EXPIRE', k, ttl[2]) end
end
-- Popularity sets keep their top doc.pc items (ZCARD is O(1); a trim removes only what
-- this batch pushed over the cap), so no input can grow them without bound.
local pcap = doc.pc
local function trim(key)
  if pcap and call('ZCARD', key) > pcap then call('ZREMRANGEBYRANK', key, 0, -pcap - 1) end
end
-- list = {n, item, n, item, ...}: add n to each item's score
local function zincr(key, list, t)
  if #list == 2 then
    call('ZINCRBY', key, list[1], list[2])
  else
    for s = 1, #list, CHUNK do
      local e = math.min(s + CHUNK - 1, #list)
      local members = {}
      for j = s + 1, e, 2 do members[#members + 1] = list[j] end
      local c = call('ZMSCORE', key, unpack(members))
      for j = s, e, 2 do list[j] = list[j] + num(c[(j - s) / 2 + 1]) end
      call('ZADD', key, unpack(list, s, e))
    end
  end
  trim(key)
  if t then call('EXPIRE', key, t) end
end
for _, h in ipairs(doc.h) do zincr(h[1], h[2], h[3] == 1 and ttl[3] or nil) end
for _, h in ipairs(doc.d) do zincr(h[1], h[2], h[3] == 1 and ttl[4] or nil) end
if #doc.a[2] > 0 then zincr(doc.a[1], doc.a[2], nil) end
-- record the ids, drop id buckets past the window
for _, d in ipairs(dd) do
  for _, add in ipairs(d[2]) do
    chunked('SADD', add[1], add[2])
    call('EXPIRE', add[1], doc.dd_ttl)
  end
  if #d[3] > 0 then call('UNLINK', unpack(d[3])) end
end
for j = 0, n - 1 do
  call('SET', ARGV[2 + 3 * j], ARGV[4 + 3 * j])
  out[2 * j + 2] = ARGV[4 + 3 * j]
end
return out
"""
