//! The server-side scripts. Each runs atomically on the Redis server, so a check and the
//! change it allows are one step however many sidecars ask at once.
//!
//! Keys, under the fleet's namespace `NS`:
//! - `NS:b:BUDGET:START` (hash): `used`, the window's usage from every sidecar, and `u:STORE`,
//!   each store's part of it; expires a week after a calendar window ends.
//! - `NS:b:BUDGET:START:res` (hash): open reservation id → `AMOUNT:EXPIRES_MS`.
//! - `NS:cursor:STORE`: the last event of that store counted (events apply once, in order).
//! - `NS:alive` (sorted set): store → when it last pushed, for the outage share.
//! - channel `NS:totals`: every change of a window's totals, as JSON.
//!
//! Times come from the server's clock (`TIME`), so sidecars' clocks need not agree.
//! Tables are encoded as JSON objects keyed by window key: an empty Lua table encodes as `{}`.

/// Sums a window's unexpired reservations, dropping expired ones; and its totals.
const TOTAL: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reserved_of(k, now)
  local h = redis.call('HGETALL', k .. ':res')
  local sum = 0
  for i = 1, #h, 2 do
    local amount, expires = string.match(h[i + 1], '^([^:]+):(%d+)$')
    if amount == nil or tonumber(expires) <= now then
      redis.call('HDEL', k .. ':res', h[i])
    else
      sum = sum + tonumber(amount)
    end
  end
  return sum
end
local function total(w, now, store)
  local used = tonumber(redis.call('HGET', w.k, 'used') or '0')
  local t = {n = w.n, w = w.w, used = used, reserved = reserved_of(w.k, now)}
  if store then
    t.mine = tonumber(redis.call('HGET', w.k, 'u:' .. store) or '0')
    t.s = store
  end
  return t
end
"#;

/// Push: ARGV[1] = {store, channel, alive_ms, last, items: [{s, k, n, w, a, x}],
/// releases: [{k, id}], watch: [{k, n, w}]}; KEYS[1] = the store's cursor, KEYS[2] = alive.
/// Applies the items after the cursor (each usage event once), moves the cursor, ends the
/// released reservations, marks the store alive, publishes what changed, and answers
/// {cursor, instances, totals} with this store's part of each watched window.
const PUSH: &str = r#"
local p = cjson.decode(ARGV[1])
local now = now_ms()
local cursor = tonumber(redis.call('GET', KEYS[1]) or '0')
local touched = {}
for _, it in ipairs(p.items) do
  if it.s > cursor then
    redis.call('HINCRBYFLOAT', it.k, 'used', it.a)
    redis.call('HINCRBYFLOAT', it.k, 'u:' .. p.store, it.a)
    if it.x > 0 then redis.call('EXPIREAT', it.k, it.x) end
    touched[it.k] = {k = it.k, n = it.n, w = it.w}
  end
end
if p.last > cursor then
  redis.call('SET', KEYS[1], p.last)
  cursor = p.last
end
for _, r in ipairs(p.releases) do
  if redis.call('HDEL', r.k .. ':res', r.id) > 0 then
    touched[r.k] = {k = r.k, n = r.n, w = r.w}
  end
end
redis.call('ZADD', KEYS[2], now, p.store)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - p.alive_ms)
local changed = {}
local any = false
for k, w in pairs(touched) do
  changed[k] = total(w, now, p.store)
  any = true
end
if any then redis.call('PUBLISH', p.channel, cjson.encode(changed)) end
local totals = {}
for _, w in ipairs(p.watch) do totals[w.k] = total(w, now, p.store) end
return cjson.encode({cursor = cursor, instances = redis.call('ZCARD', KEYS[2]), totals = totals})
"#;

/// Reserve: ARGV[1] = {store, id, ttl_ms, items: [{k, n, w, a, l, x}]}. Admits only if every
/// item fits (used + reserved + amount ≤ limit) and then holds them all; answers {ok, index,
/// totals} where index is the first item that did not fit (0-based).
const RESERVE: &str = r#"
local p = cjson.decode(ARGV[1])
local now = now_ms()
local totals = {}
for i, it in ipairs(p.items) do
  local t = total(it, now, p.store)
  totals[it.k] = t
  if t.used + t.reserved + it.a > it.l then
    return cjson.encode({ok = false, index = i - 1, totals = totals})
  end
end
for _, it in ipairs(p.items) do
  redis.call('HSET', it.k .. ':res', p.id, string.format('%.17g', it.a) .. ':' .. (now + p.ttl_ms))
  if it.x > 0 then redis.call('EXPIREAT', it.k .. ':res', it.x) end
  totals[it.k].reserved = totals[it.k].reserved + it.a
end
return cjson.encode({ok = true, index = -1, totals = totals})
"#;

pub fn push() -> redis::Script {
    redis::Script::new(&format!("{TOTAL}{PUSH}"))
}

pub fn reserve() -> redis::Script {
    redis::Script::new(&format!("{TOTAL}{RESERVE}"))
}
