"""The Redis peer store's Lua scripts: each change is one script, atomic in Redis and one round trip.

They port PeerStore's logic (swarmreg/tracker/peers.py); docs/swarm.md lists the keys. Every
script gets the key prefix as ARGV[1] and names its keys from it (so not for Redis Cluster: one
Redis, or a Sentinel-managed primary). An entry is a JSON array:
[host, port, complete, origin, owner or null, expires or null (an origin's), progress, since, rescues].
A missing owner is "" in arguments.
"""

# Shared by every script: removing an entry the way PeerStore._remove does.
_PRELUDE = """
local P = ARGV[1]
local function owner_of(e) if e[5] == cjson.null then return "" end return e[5] end
local function remove(ih, pid, owner)
  local t = P .. "t:" .. ih
  local raw = redis.call("HGET", t, pid)
  if not raw then return nil end
  local e = cjson.decode(raw)
  if owner_of(e) ~= owner then return nil end
  redis.call("HDEL", t, pid)
  redis.call("SREM", P .. "s:" .. ih, pid)
  redis.call("SREM", P .. "l:" .. ih, pid)
  redis.call("ZREM", P .. "expiry", ih .. "/" .. pid)
  if owner ~= "" and redis.call("HGET", P .. "owned:" .. owner, ih) == pid then
    redis.call("HDEL", P .. "owned:" .. owner, ih)
  end
  if e[4] then
    if redis.call("DECR", P .. "origin:" .. pid) <= 0 then redis.call("DEL", P .. "origin:" .. pid) end
  end
  return e
end
local function live(e, now) return e[6] == cjson.null or e[6] > now end
-- Up to n live entries of the set, but exclude's, at random (more are drawn than needed: some
-- may have expired, unswept yet): a flat list of peer id, entry.
local function draw(ih, set, exclude, now, n, out)
  if n <= 0 then return end
  local ids = redis.call("SRANDMEMBER", P .. set .. ih, n + 1)
  if #ids == 0 then return end
  local raws = redis.call("HMGET", P .. "t:" .. ih, unpack(ids))
  local taken = 0
  for i, pid in ipairs(ids) do
    if raws[i] and pid ~= exclude and taken < n and live(cjson.decode(raws[i]), now) then
      out[#out + 1] = pid
      out[#out + 1] = raws[i]
      taken = taken + 1
    end
  end
end
local function pick(ih, exclude, now, n)
  local seeds, others = {}, {}
  draw(ih, "s:", exclude, now, n, seeds)
  draw(ih, "l:", exclude, now, n - #seeds / 2, others)
  return seeds, others
end
"""

# ARGV: prefix, info-hash, peer id, owner, host, port, complete, origin, now, ttl, progress, max peers.
# Returns {"taken", message} or {"ok", news, #seeds, (peer id, entry)...}.
ANNOUNCE = _PRELUDE + """
local ih, pid, owner, host, port = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local complete, origin = ARGV[7] == "1", ARGV[8] == "1"
local now, ttl, progress, n = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local ttl_ms = math.floor(ttl * 1000)
if origin then
  local holder = redis.call("GET", P .. "claim:" .. pid)
  if holder then  -- an origin takes its peer id back from a connection
    redis.call("DEL", P .. "claim:" .. pid)
    local owned = redis.call("HGETALL", P .. "owned:" .. holder)
    for i = 1, #owned, 2 do
      if owned[i + 1] == pid then remove(owned[i], pid, holder) end
    end
  end
else
  if tonumber(redis.call("GET", P .. "origin:" .. pid) or "0") > 0 then
    return {"taken", "peer id " .. pid .. " is an origin's"}
  end
  local holder = redis.call("GET", P .. "claim:" .. pid)
  if holder and holder ~= owner then
    return {"taken", "peer id " .. pid .. " belongs to another connection"}
  end
  if owner ~= "" then
    local mine = redis.call("GET", P .. "id:" .. owner)
    if mine and mine ~= pid then
      return {"taken", "this connection announced peer id " .. mine .. ": it cannot be another peer"}
    end
    redis.call("SET", P .. "id:" .. owner, pid, "PX", ttl_ms)
    redis.call("SET", P .. "claim:" .. pid, owner, "PX", ttl_ms)
  end
end
local t = P .. "t:" .. ih
local raw = redis.call("HGET", t, pid)
local prev = raw and cjson.decode(raw)
if owner ~= "" then  -- one peer per owner and torrent: a restarted origin replaces its old entry
  local stale = redis.call("HGET", P .. "owned:" .. owner, ih)
  if stale and stale ~= pid then remove(ih, stale, owner) end
end
if prev then remove(ih, pid, owner_of(prev)) end
local since, rescues = now, 0
if prev and not (progress > prev[7] or complete) then since, rescues = prev[8], prev[9] end
local expires = cjson.null
if not origin then expires = now + ttl end
local who = cjson.null
if owner ~= "" then who = owner end
redis.call("HSET", t, pid, cjson.encode({host, port, complete, origin, who, expires, progress, since, rescues}))
if origin or complete then redis.call("SADD", P .. "s:" .. ih, pid) else redis.call("SADD", P .. "l:" .. ih, pid) end
if not origin then redis.call("ZADD", P .. "expiry", expires, ih .. "/" .. pid) end
if owner ~= "" then
  redis.call("HSET", P .. "owned:" .. owner, ih, pid)
  if not origin then redis.call("PEXPIRE", P .. "owned:" .. owner, 2 * ttl_ms) end
end
if origin then redis.call("INCR", P .. "origin:" .. pid) end
local news = 0
if not prev or prev[1] ~= host or prev[2] ~= port or prev[3] ~= complete or prev[4] ~= origin then news = 1 end
local seeds, others = pick(ih, pid, now, n)
local out = {"ok", news, #seeds / 2}
for _, v in ipairs(seeds) do out[#out + 1] = v end
for _, v in ipairs(others) do out[#out + 1] = v end
return out
"""

# ARGV: prefix, info-hash, exclude, now, max peers. Returns {#seeds, (peer id, entry)...}.
PEERS = _PRELUDE + """
local seeds, others = pick(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
local out = {#seeds / 2}
for _, v in ipairs(seeds) do out[#out + 1] = v end
for _, v in ipairs(others) do out[#out + 1] = v end
return out
"""

# ARGV: prefix, info-hash, peer id, now, stall_after. For a stalled download: counts the rescue in
# its entry and returns {rescues before, (peer id, entry)...} of the whole torrent; else {}.
RESCUE = _PRELUDE + """
local t, pid, now = P .. "t:" .. ARGV[2], ARGV[3], tonumber(ARGV[4])
local raw = redis.call("HGET", t, pid)
if not raw then return {} end
local me = cjson.decode(raw)
if me[3] or me[4] or now - me[8] < tonumber(ARGV[5]) then return {} end
local before = me[9]
me[9] = before + 1
redis.call("HSET", t, pid, cjson.encode(me))
local out = {before}
local all = redis.call("HGETALL", t)
for _, v in ipairs(all) do out[#out + 1] = v end
return out
"""

# ARGV: prefix, info-hash, owner.
LEAVE = _PRELUDE + """
local pid = redis.call("HGET", P .. "owned:" .. ARGV[3], ARGV[2])
if pid then remove(ARGV[2], pid, ARGV[3]) end
return 0
"""

# ARGV: prefix, info-hash, owners... Returns how many entries went.
FORGET = _PRELUDE + """
local owners = {}
for i = 3, #ARGV do owners[ARGV[i]] = true end
local all = redis.call("HGETALL", P .. "t:" .. ARGV[2])
local gone = 0
for i = 1, #all, 2 do
  local owner = owner_of(cjson.decode(all[i + 1]))
  if owners[owner] and remove(ARGV[2], all[i], owner) then gone = gone + 1 end
end
return gone
"""

# ARGV: prefix, owner. Returns how many entries went.
DROP_OWNER = _PRELUDE + """
local owner = ARGV[2]
local owned = redis.call("HGETALL", P .. "owned:" .. owner)
for i = 1, #owned, 2 do remove(owned[i], owned[i + 1], owner) end
redis.call("DEL", P .. "owned:" .. owner)
local claimed = redis.call("GET", P .. "id:" .. owner)
if claimed then
  redis.call("DEL", P .. "id:" .. owner)
  if redis.call("GET", P .. "claim:" .. claimed) == owner then redis.call("DEL", P .. "claim:" .. claimed) end
end
return #owned / 2
"""

# ARGV: prefix, now, batch. Removes up to batch expired entries: {swept, (info-hash, owner)...}.
EXPIRE = _PRELUDE + """
local now = tonumber(ARGV[2])
local members = redis.call("ZRANGEBYSCORE", P .. "expiry", "-inf", now, "LIMIT", 0, tonumber(ARGV[3]))
local out = {#members}
for _, member in ipairs(members) do
  local slash = string.find(member, "/", 1, true)
  local ih, pid = string.sub(member, 1, slash - 1), string.sub(member, slash + 1)
  local raw = redis.call("HGET", P .. "t:" .. ih, pid)
  if not raw then
    redis.call("ZREM", P .. "expiry", member)  -- only the index entry was left
  else
    local e = cjson.decode(raw)
    if e[6] == cjson.null then  -- an origin's now: it never expires
      redis.call("ZREM", P .. "expiry", member)
    elseif live(e, now) then  -- announced again: its index entry lagged
      redis.call("ZADD", P .. "expiry", e[6], member)
    elseif remove(ih, pid, owner_of(e)) then
      out[#out + 1] = ih
      out[#out + 1] = owner_of(e)
    end
  end
end
return out
"""
