"""Server-side atomic steps, as Lua scripts.

Each script touches only the keys of one client, which share a Redis Cluster
hash slot (see :mod:`ctxcache.core.keys`). The generation key is a counter that
every invalidation increments: a writer that read generation ``g`` before
loading may write only while the counter still reads ``g`` (a lease, as in
Facebook's memcache). A missing counter reads as ``"0"``.

A counter that expired (or was evicted) must never come back with a value a
writer may still hold, or a load that began before the invalidation would
match again. So an invalidation that finds no counter seeds it from the
server's clock in microseconds, far above any value handed out before.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "INVALIDATE",
    "INVALIDATE_IF_BEHIND",
    "LEASE",
    "LEASE_HIT",
    "LEASE_LOCKED",
    "LEASE_WON",
    "RELEASE_LOCK",
    "STORE_IF_GENERATION",
    "UPDATE_SECTION",
    "WARM_LEASE",
]

LEASE_HIT: Final = 0
LEASE_WON: Final = 1
LEASE_LOCKED: Final = 2

# The end of both lease scripts: take the load lock (token KEYS[3] <- ARGV[1],
# expiring after ARGV[2] ms) or report that another caller holds it.
_TAKE_LOAD_LOCK: Final = """
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, gen}
end
return {2, gen}
"""

# Called after a miss. Returns the value if it appeared meanwhile; otherwise
# tries to take the load lock. Always returns the current generation.
# KEYS[1] full context, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] lock token, ARGV[2] lock ttl in ms
# -> {LEASE_HIT, gen, value} | {LEASE_WON, gen} | {LEASE_LOCKED, gen}
LEASE: Final = (
    """
local gen = redis.call('GET', KEYS[2]) or '0'
local value = redis.call('GET', KEYS[1])
if value then
  return {0, gen, value}
end
"""
    + _TAKE_LOAD_LOCK
)

# For warm-ups: a value whose remaining TTL is above the threshold is fresh
# and skipped; otherwise the load lock is taken as in LEASE.
# KEYS[1] full context, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] lock token, ARGV[2] lock ttl in ms, ARGV[3] refresh threshold in ms
# -> {LEASE_HIT, gen} (fresh) | {LEASE_WON, gen} | {LEASE_LOCKED, gen}
WARM_LEASE: Final = (
    """
local gen = redis.call('GET', KEYS[2]) or '0'
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 or ttl > tonumber(ARGV[3]) then
  return {0, gen}
end
"""
    + _TAKE_LOAD_LOCK
)

# Writes the value only if no invalidation happened since the writer read the
# generation, then releases the writer's lock if it still owns it.
# KEYS[1] full context, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] expected generation, ARGV[2] value, ARGV[3] ttl in ms,
# ARGV[4] lock token ('' when the writer holds no lock)
# -> 1 written, 0 dropped (superseded by an invalidation)
STORE_IF_GENERATION: Final = """
local written = 0
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  written = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return written
"""

# Compare-and-delete: only the owner of a lock releases it.
# KEYS[1] lock; ARGV[1] token -> 1 released, 0 not ours (or expired)
RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _void_leases(generation: str, ttl: str, full_context: str) -> str:
    """Lua that bumps a client's generation and deletes its full context.

    Shared by every script that invalidates; the arguments name the KEYS and
    ARGV slots. A missing counter is seeded from the server clock first.
    """
    return f"""
if redis.call('EXISTS', {generation}) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', {generation}, now[1] .. string.format('%06d', tonumber(now[2])))
end
redis.call('INCR', {generation})
redis.call('EXPIRE', {generation}, {ttl})
local deleted = redis.call('DEL', {full_context})
"""


# Deletes the value and voids every lease handed out before.
# KEYS[1] full context, KEYS[2] generation; ARGV[1] generation ttl in s
# -> {values deleted (0 or 1), the generation this invalidation produced}
INVALIDATE: Final = (
    _void_leases("KEYS[2]", "ARGV[1]", "KEYS[1]") + "return {deleted, redis.call('GET', KEYS[2])}\n"
)

# The safety net behind an invalidation applied elsewhere: a no-op while the
# generation is still at or past the one that invalidation produced; if it is
# behind (or gone), that write was lost (a failover, a restore) and the
# invalidation is applied again. Generations stay below 2^53, exact in Lua.
# KEYS[1] full context, KEYS[2] generation; ARGV[1] generation ttl in s,
# ARGV[2] the generation the earlier invalidation produced
# -> {1 re-applied | 0 still in effect, the current generation}
INVALIDATE_IF_BEHIND: Final = (
    """
local current = redis.call('GET', KEYS[2])
if current and tonumber(current) >= tonumber(ARGV[2]) then
  return {0, current}
end
"""
    + _void_leases("KEYS[2]", "ARGV[1]", "KEYS[1]")
    + "return {1, redis.call('GET', KEYS[2])}\n"
)

# Merges fields into a client's section hash (dialog context, preferences)
# and invalidates the full context in the same step, so no reader can see the
# new section next to an old full context.
# KEYS[1] section hash, KEYS[2] full context, KEYS[3] generation
# ARGV[1] section ttl in s, ARGV[2] generation ttl in s, ARGV[3..] field, value, ...
# -> 1
UPDATE_SECTION: Final = (
    """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""
    + _void_leases("KEYS[3]", "ARGV[2]", "KEYS[2]")
    + "return 1\n"
)
