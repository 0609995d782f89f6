"""The Lua scripts that keep a rolling-window budget in Redis, atomically.

Each window of a budget (requests per second, requests per minute, tokens
per minute) is three keys: a sorted set of admissions scored by the time
they were admitted, a hash of each admission's amount, and the sum of the
amounts still inside the window. A script runs alone on the server, so
checking the budget and charging it cannot interleave between processes.
Time is the server's clock (``TIME``), in whole microseconds, so every
process measures windows on one clock, and scores stay exact in a double.

These are the same rules as the in-process ``_Window``: an admission leaves
its window ``period`` after it was admitted, or after its call ended when the
call is settled while the admission is still inside the window (with the
amount really used); an amount above the whole limit goes alone once the
window is empty.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "SETTLE"]

# What both scripts start with: the server's clock, the call's id and count,
# and a time-to-live helper.
_PREAMBLE = """
-- Only ever lengthens a key's time to live: another process's held call
-- (scored up to the hold limit ahead) must outlive this admission's window.
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id = ARGV[1]
local n = tonumber(ARGV[2])
"""

# KEYS: per window i (1-based): 3i-2 sorted set, 3i-1 amounts hash, 3i used sum.
# ARGV: 1 admission id, 2 number of windows, 3 hold in microseconds (0: none),
#       then per window i: 3+3i-2 limit, 3+3i-1 period in microseconds,
#       3+3i amount to charge (0: none).
# A held admission is scored ``hold`` into the future, so it stays counted while
# its call is in flight; settling it scores it at the call's end.
# Returns {1, 0, used...} when admitted (used after the charge), or
# {0, microseconds to wait, used...} when not, charging nothing.
ACQUIRE = (
    _PREAMBLE
    + """
local hold = tonumber(ARGV[3])
local wait = 0
local used = {}

local function expire(z, a, u, period)
  local cutoff = now - period
  while true do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local amounts = redis.call('HMGET', a, unpack(old))
    local freed = 0
    for j = 1, #old do freed = freed + (tonumber(amounts[j]) or 0) end
    redis.call('ZREM', z, unpack(old))
    redis.call('HDEL', a, unpack(old))
    redis.call('DECRBY', u, freed)
  end
end

local function delay(z, a, current, limit, amount, period)
  local need = current + math.min(amount, limit) - limit
  local freed = 0
  local start = 0
  local last = nil
  while true do
    local batch = redis.call('ZRANGE', z, start, start + 99, 'WITHSCORES')
    if #batch == 0 then break end
    for j = 1, #batch, 2 do
      freed = freed + (tonumber(redis.call('HGET', a, batch[j])) or 0)
      last = tonumber(batch[j + 1])
      if freed >= need then return math.max(last + period - now, 1) end
    end
    start = start + 100
  end
  if last == nil then return 0 end
  return math.max(last + period - now, 1)
end

for i = 1, n do
  local z, a, u = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit = tonumber(ARGV[3 + 3 * i - 2])
  local period = tonumber(ARGV[3 + 3 * i - 1])
  local amount = tonumber(ARGV[3 + 3 * i])
  expire(z, a, u, period)
  local current = tonumber(redis.call('GET', u) or '0')
  used[i] = current
  if amount > 0 and current + amount > limit then
    wait = math.max(wait, delay(z, a, current, limit, amount, period))
  end
end

if wait > 0 then
  local out = {0, wait}
  for i = 1, n do out[#out + 1] = used[i] end
  return out
end

local out = {1, 0}
for i = 1, n do
  local z, a, u = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local period = tonumber(ARGV[3 + 3 * i - 1])
  local amount = tonumber(ARGV[3 + 3 * i])
  if amount > 0 then
    redis.call('ZADD', z, now + hold, id)
    redis.call('HSET', a, id, amount)
    used[i] = redis.call('INCRBY', u, amount)
  end
  -- Idle budgets vanish once their last admission has left the window.
  local ttl = math.floor((period + hold) / 1000) + 1000
  keep(z, ttl)
  keep(a, ttl)
  keep(u, ttl)
  out[#out + 1] = used[i]
end
return out
"""
)

# KEYS: per window i, as for ACQUIRE.
# ARGV: 1 admission id, 2 number of windows, then per window i:
#       2+3i-2 period in microseconds, 2+3i-1 amount really used (1 for a request),
#       2+3i "1" when the admission charged this window nothing (a token estimate of 0).
# The call ended now: an admission still inside its window counts from now, with
# the amount really used (the endpoint saw the call arrive at some time before
# now, so a window from now covers it). Returns the used sums afterwards.
SETTLE = (
    _PREAMBLE
    + """
local out = {}
for i = 1, n do
  local z, a, u = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local period = tonumber(ARGV[2 + 3 * i - 2])
  local actual = tonumber(ARGV[2 + 3 * i - 1])
  local uncharged = ARGV[2 + 3 * i] == '1'
  local at = redis.call('ZSCORE', z, id)
  if at and tonumber(at) > now - period then
    local before = tonumber(redis.call('HGET', a, id) or '0')
    if actual > 0 then
      redis.call('ZADD', z, now, id)
      redis.call('HSET', a, id, actual)
    else
      redis.call('ZREM', z, id)
      redis.call('HDEL', a, id)
    end
    redis.call('INCRBY', u, actual - before)
  elseif uncharged and actual > 0 then
    redis.call('ZADD', z, now, id)
    redis.call('HSET', a, id, actual)
    redis.call('INCRBY', u, actual)
  end
  local ttl = math.floor(period / 1000) + 1000
  keep(z, ttl)
  keep(a, ttl)
  keep(u, ttl)
  out[i] = tonumber(redis.call('GET', u) or '0')
end
return out
"""
)
