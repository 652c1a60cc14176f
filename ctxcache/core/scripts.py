"""Server-side atomic steps, as Lua scripts.

Each script touches the keys of one client or of one company, which share a
Redis Cluster hash slot (see :mod:`ctxcache.core.keys`); none touches both,
except ``READ_PARTS`` on a single server, where slots do not matter.

Generations are the guard against stale sets (a lease, as in Facebook's
memcache). A client's generation is a counter key; a company's are fields of
one hash, one per section. Every invalidation increments the generation; a
writer that read generation ``g`` before loading may write only while it
still reads ``g``. A missing generation reads as ``"0"``.

A generation that expired (or was evicted) must never come back with a value
a writer may still hold, or a load that began before the invalidation would
match again. So an invalidation that finds none seeds it from the server's
clock in microseconds, far above any value handed out before. Generations
stay below 2^53, exact in Lua's numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "COMPANY_LEASE",
    "INVALIDATE",
    "INVALIDATE_IF_BEHIND",
    "INVALIDATE_SECTIONS",
    "INVALIDATE_SECTIONS_IF_BEHIND",
    "LEASE",
    "LEASE_HIT",
    "LEASE_LOCKED",
    "LEASE_WON",
    "PART_ABSENT",
    "PART_UNCHANGED",
    "PART_VALUE",
    "PUSH_STATS",
    "READ_PARTS",
    "RELEASE_LOCK",
    "STORE_IF_GENERATION",
    "STORE_SECTIONS_IF_GENERATIONS",
    "UPDATE_CLIENT_PART",
    "UPDATE_COMPANY_SECTION",
    "UPDATE_RECORD",
    "WARM_LEASE",
    "LuaScript",
]


@dataclass(frozen=True)
class LuaScript:
    """A named Lua script; clients run it by SHA1 and load it on ``NOSCRIPT``."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


LEASE_HIT: Final = 0
LEASE_WON: Final = 1
LEASE_LOCKED: Final = 2

PART_ABSENT: Final = 0
PART_VALUE: Final = 1
PART_UNCHANGED: Final = 2

# Reads parts (of one slot, on a Cluster). For a part the reader holds decoded, it compares
# the 8-byte stamp at offset 8 of the envelope (see ctxcache.core.wire)
# instead of sending the value back.
# KEYS[i] a part; ARGV[i] the stamp the reader holds for it, or ''
# -> flat: per key, PART_ABSENT | PART_VALUE | PART_UNCHANGED, the value or '', its PTTL
READ_PARTS: Final = LuaScript(
    "READ_PARTS",
    """
local out = {}
for i, key in ipairs(KEYS) do
  local known = ARGV[i]
  local status, value = 0, ''
  if known ~= '' and redis.call('GETRANGE', key, 8, 15) == known then
    status = 2
  else
    local found = redis.call('GET', key)
    if found then
      status, value = 1, found
    end
  end
  out[#out + 1] = status
  out[#out + 1] = value
  out[#out + 1] = redis.call('PTTL', key)
end
return out
""",
)

# The end of both client lease scripts: take the load lock (token KEYS[3] <-
# ARGV[1], expiring after ARGV[2] ms) or report that another caller holds it.
_TAKE_LOAD_LOCK: Final = """
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, gen}
end
return {2, gen}
"""

# Called after a miss of a client's part. Returns the value if it appeared
# meanwhile; otherwise tries to take the load lock. Always returns the
# current generation.
# KEYS[1] client part, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] lock token, ARGV[2] lock ttl in ms
# -> {LEASE_HIT, gen, value} | {LEASE_WON, gen} | {LEASE_LOCKED, gen}
LEASE: Final = LuaScript(
    "LEASE",
    """
local gen = redis.call('GET', KEYS[2]) or '0'
local value = redis.call('GET', KEYS[1])
if value then
  return {0, gen, value}
end
"""
    + _TAKE_LOAD_LOCK,
)

# For warm-ups: a value whose remaining TTL is above the threshold is fresh
# and skipped; otherwise the load lock is taken as in LEASE.
# KEYS[1] client part, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] lock token, ARGV[2] lock ttl in ms, ARGV[3] refresh threshold in ms
# -> {LEASE_HIT, gen} (fresh) | {LEASE_WON, gen} | {LEASE_LOCKED, gen}
WARM_LEASE: Final = LuaScript(
    "WARM_LEASE",
    """
local gen = redis.call('GET', KEYS[2]) or '0'
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 or ttl > tonumber(ARGV[3]) then
  return {0, gen}
end
"""
    + _TAKE_LOAD_LOCK,
)


def _release_if_owner(lock: str, token: str) -> str:
    """Lua: delete the load lock if the writer still owns it (compare-and-delete)."""
    return f"""
if {token} ~= '' and redis.call('GET', {lock}) == {token} then
  redis.call('DEL', {lock})
end
"""


# Writes the client's part only if no invalidation happened since the writer
# read the generation, then releases the writer's lock if it still owns it.
# KEYS[1] client part, KEYS[2] generation, KEYS[3] load lock
# ARGV[1] expected generation, ARGV[2] value, ARGV[3] ttl in ms,
# ARGV[4] lock token ('' when the writer holds no lock)
# -> 1 written, 0 dropped (superseded by an invalidation)
STORE_IF_GENERATION: Final = LuaScript(
    "STORE_IF_GENERATION",
    """
local written = 0
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  written = 1
end
"""
    + _release_if_owner("KEYS[3]", "ARGV[4]")
    + "return written\n",
)

# Compare-and-delete: only the owner of a lock releases it.
# KEYS[1] lock; ARGV[1] token -> 1 released, 0 not ours (or expired)
RELEASE_LOCK: Final = LuaScript(
    "RELEASE_LOCK",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)


def _bump_counter(generation: str, ttl: str) -> str:
    """Lua: increment a client's generation (seeded from the clock if missing) into ``gen``."""
    return f"""
if redis.call('EXISTS', {generation}) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', {generation}, now[1] .. string.format('%06d', tonumber(now[2])))
end
local gen = redis.call('INCR', {generation})
redis.call('EXPIRE', {generation}, {ttl})
"""


# Lua: the same for one field of a company's generation hash.
_BUMP_FIELD: Final = """
local function bump(hash, name, ttl)
  if redis.call('HEXISTS', hash, name) == 0 then
    local now = redis.call('TIME')
    redis.call('HSET', hash, name, now[1] .. string.format('%06d', tonumber(now[2])))
  end
  local gen = redis.call('HINCRBY', hash, name, 1)
  redis.call('EXPIRE', hash, ttl)
  return gen
end
"""

# Deletes a client's part and voids every lease handed out before.
# KEYS[1] client part, KEYS[2] generation; ARGV[1] generation ttl in s
# -> {parts deleted (0 or 1), the generation this invalidation produced}
INVALIDATE: Final = LuaScript(
    "INVALIDATE",
    _bump_counter("KEYS[2]", "ARGV[1]") + "return {redis.call('DEL', KEYS[1]), gen}\n",
)

# The safety net behind an invalidation applied elsewhere: a no-op while the
# generation is still at or past the one that invalidation produced; if it is
# behind (or gone), that write was lost (a failover, a restore) and the
# invalidation is applied again.
# KEYS[1] client part, KEYS[2] generation; ARGV[1] generation ttl in s,
# ARGV[2] the generation the earlier invalidation produced
# -> {1 re-applied | 0 still in effect, the current generation}
INVALIDATE_IF_BEHIND: Final = LuaScript(
    "INVALIDATE_IF_BEHIND",
    """
local current = redis.call('GET', KEYS[2])
if current and tonumber(current) >= tonumber(ARGV[2]) then
  return {0, current}
end
"""
    + _bump_counter("KEYS[2]", "ARGV[1]")
    + "redis.call('DEL', KEYS[1])\nreturn {1, gen}\n",
)

# Replaces a client's part read earlier (its stamp unchanged: no lost update)
# keeping its expiry, and voids loads in flight, which read the database
# before the update. A part that is gone is not recreated.
# KEYS[1] client part, KEYS[2] generation
# ARGV[1] the stamp of the part the caller read, ARGV[2] new value, ARGV[3] generation ttl in s
# -> {1 updated | 0 not cached | -1 changed meanwhile (read again), generation}
UPDATE_CLIENT_PART: Final = LuaScript(
    "UPDATE_CLIENT_PART",
    """
local stamp = redis.call('GETRANGE', KEYS[1], 8, 15)
if stamp ~= '' and stamp ~= ARGV[1] then
  return {-1, 0}
end
"""
    + _bump_counter("KEYS[2]", "ARGV[3]")
    + """
if stamp == '' then
  return {0, gen}
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return {1, gen}
""",
)

# Merges fields into a client's record hash (dialog context, preferences),
# deleting the fields set to null, and invalidates the client's part in the
# same step, so no reader sees the new record next to an old context.
# KEYS[1] record hash, KEYS[2] client part, KEYS[3] generation
# ARGV[1] record ttl in s, ARGV[2] generation ttl in s, ARGV[3] 'clear' | 'merge',
# ARGV[4] number of fields to set n, ARGV[5..4+2n] field, value, ..., then fields to delete
# -> the generation produced
UPDATE_RECORD: Final = LuaScript(
    "UPDATE_RECORD",
    """
if ARGV[3] == 'clear' then
  redis.call('DEL', KEYS[1])
end
local set_end = 4 + 2 * tonumber(ARGV[4])
if set_end > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5, set_end))
end
if #ARGV > set_end then
  redis.call('HDEL', KEYS[1], unpack(ARGV, set_end + 1))
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
"""
    + _bump_counter("KEYS[3]", "ARGV[2]")
    + "redis.call('DEL', KEYS[2])\nreturn gen\n",
)

# -- company sections -------------------------------------------------------------------

# After a miss of company sections (or to warm them): the generation of each,
# the values present, and the company's load lock if some are needed. A
# section is needed when absent or, with a threshold, expiring within it.
# KEYS[1] generation hash, KEYS[2] load lock, KEYS[3..] sections
# ARGV[1] lock token ('' to read without locking), ARGV[2] lock ttl in ms,
# ARGV[3] threshold in ms (-1: absence only), ARGV[4] '1' to return values,
# ARGV[5..] section names (as KEYS[3..])
# -> {LEASE_HIT (none needed) | LEASE_WON | LEASE_LOCKED (not ours), {gen...},
#     {value or ''...}, {1 needed | 0...}}
COMPANY_LEASE: Final = LuaScript(
    "COMPANY_LEASE",
    """
local names = {unpack(ARGV, 5)}
local gens = redis.call('HMGET', KEYS[1], unpack(names))
local threshold = tonumber(ARGV[3])
local values, stale, needed = {}, {}, 0
for i = 1, #names do
  gens[i] = gens[i] or '0'
  local value = false
  if ARGV[4] == '1' then
    value = redis.call('GET', KEYS[i + 2])
  else
    value = redis.call('EXISTS', KEYS[i + 2]) == 1
  end
  local fresh = value ~= false
  if fresh and threshold >= 0 then
    local ttl = redis.call('PTTL', KEYS[i + 2])
    fresh = ttl == -1 or ttl > threshold
  end
  stale[i] = fresh and 0 or 1
  if not fresh then
    needed = needed + 1
  end
  if ARGV[4] == '1' and value then
    values[i] = value
  else
    values[i] = ''
  end
end
if needed == 0 then
  return {0, gens, values, stale}
end
if ARGV[1] ~= '' and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, gens, values, stale}
end
return {2, gens, values, stale}
""",
)

# Writes each company section whose generation is unchanged since the writer
# read it, then releases the writer's lock if it still owns it.
# KEYS[1] generation hash, KEYS[2] load lock, KEYS[3..] sections
# ARGV[1] lock token ('' none), ARGV[2] ttl in ms, then per section (as KEYS[3..]):
# name, expected generation, value
# -> {1 written | 0 dropped, ...} per section
STORE_SECTIONS_IF_GENERATIONS: Final = LuaScript(
    "STORE_SECTIONS_IF_GENERATIONS",
    """
local written = {}
for i = 3, #KEYS do
  local at = 3 + (i - 3) * 3
  if (redis.call('HGET', KEYS[1], ARGV[at]) or '0') == ARGV[at + 1] then
    redis.call('SET', KEYS[i], ARGV[at + 2], 'PX', ARGV[2])
    written[#written + 1] = 1
  else
    written[#written + 1] = 0
  end
end
"""
    + _release_if_owner("KEYS[2]", "ARGV[1]")
    + "return written\n",
)

# Deletes company sections and voids the leases on them.
# KEYS[1] generation hash, KEYS[2..] sections; ARGV[1] generation ttl in s,
# ARGV[2..] section names (as KEYS[2..]) -> {the generation produced, ...} per section
INVALIDATE_SECTIONS: Final = LuaScript(
    "INVALIDATE_SECTIONS",
    _BUMP_FIELD
    + """
local gens = {}
for i = 2, #KEYS do
  gens[#gens + 1] = bump(KEYS[1], ARGV[i], ARGV[1])
  redis.call('DEL', KEYS[i])
end
return gens
""",
)

# The safety net for company sections, as INVALIDATE_IF_BEHIND for a client.
# KEYS[1] generation hash, KEYS[2..] sections; ARGV[1] generation ttl in s,
# then per section (as KEYS[2..]): name, the generation the earlier invalidation produced
# -> flat: per section, 1 re-applied | 0 still in effect, the current generation
INVALIDATE_SECTIONS_IF_BEHIND: Final = LuaScript(
    "INVALIDATE_SECTIONS_IF_BEHIND",
    _BUMP_FIELD
    + """
local out = {}
for i = 2, #KEYS do
  local name, expected = ARGV[2 * i - 2], tonumber(ARGV[2 * i - 1])
  local current = redis.call('HGET', KEYS[1], name)
  if current and tonumber(current) >= expected then
    out[#out + 1] = 0
    out[#out + 1] = current
  else
    out[#out + 1] = 1
    out[#out + 1] = bump(KEYS[1], name, ARGV[1])
    redis.call('DEL', KEYS[i])
  end
end
return out
""",
)

# Replaces one company section and voids the loads of it in flight.
# KEYS[1] generation hash, KEYS[2] section; ARGV[1] name, ARGV[2] value,
# ARGV[3] ttl in ms, ARGV[4] generation ttl in s -> the generation produced
UPDATE_COMPANY_SECTION: Final = LuaScript(
    "UPDATE_COMPANY_SECTION",
    _BUMP_FIELD
    + """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return bump(KEYS[1], ARGV[1], ARGV[4])
""",
)

# -- metrics ----------------------------------------------------------------------------

# Adds a process's counts to the shared stats hash in one step.
# KEYS[1] stats hash; ARGV: field, 'i' | 'f', amount, ... -> 1
PUSH_STATS: Final = LuaScript(
    "PUSH_STATS",
    """
for i = 1, #ARGV, 3 do
  if ARGV[i + 1] == 'f' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 2])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return 1
""",
)
