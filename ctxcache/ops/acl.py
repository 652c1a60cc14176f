"""Least-privilege Redis ACL rules for ctxcache's users, derived from what the code sends.

- Key patterns come from :mod:`ctxcache.core.keys`: a client's full-context
  key, its hash-tagged siblings, a company's hash-tagged keys, and the
  ``ctxcache:`` keys (VIP registry, stats, warm-up lock, doctor's scratch keys).
- Commands: connecting (AUTH, HELLO, CLIENT SETNAME, SELECT, PING), the Lua
  scripts of :mod:`ctxcache.core.scripts` (EVALSHA, and EVAL when the server
  lost them; Redis checks each command a script calls against the same
  user), the commands those scripts call, and the few sent directly.
- The reader runs the same read script, so its keys need the ``~`` (read and
  write) permission: EVAL declares its keys as written. Its commands are
  read-only, so no script of it can write; a selector lets it push its
  counters to the stats hash alone (Redis 7).

INFO and CONFIG GET are left out: only ``ctxcache doctor`` uses them, and it
says what it could not check without them.
"""

from __future__ import annotations

from typing import Final

from ctxcache.core.keys import (
    COMPANY_CONTEXT_NAMESPACE,
    FULL_CONTEXT_NAMESPACE,
    STATS_NAME,
)

__all__ = ["READER_COMMANDS", "WORKER_COMMANDS", "key_patterns", "reader_rules", "worker_rules"]

_CONNECT: Final = ("ping", "auth", "hello", "client|setname", "select")
# What the Lua scripts call (core/scripts.py), then what is sent directly.
_SCRIPTS: Final = ("evalsha", "eval")
_SCRIPT_CALLS: Final = (
    "get", "set", "del", "exists", "expire", "getrange", "pttl", "time", "incr",
    "hget", "hset", "hmget", "hdel", "hexists", "hincrby", "hincrbyfloat",
)  # fmt: skip
_DIRECT: Final = (
    "hgetall",  # records
    "unlink",  # ctxcache namespace clear
    "zadd", "zrem", "zrangebylex", "zcard", "multi", "exec", "discard",  # VIP registry
    "scan", "strlen", "memory|usage",  # metrics and doctor: sizes of what is cached
)  # fmt: skip
WORKER_COMMANDS: Final = (*_CONNECT, *_SCRIPTS, *_SCRIPT_CALLS, *_DIRECT)
READER_COMMANDS: Final = (
    *_CONNECT,
    *_SCRIPTS,
    "get", "getrange", "pttl", "exists", "hget", "hmget", "hgetall",
    "zrangebylex", "zcard", "scan", "strlen", "memory|usage",
)  # fmt: skip


def key_patterns(prefix: str = "") -> list[str]:
    """ACL key patterns (``~...``) of every key ctxcache uses under ``prefix``."""
    return [
        f"~{prefix}{FULL_CONTEXT_NAMESPACE}:*",
        f"~{{{prefix}{FULL_CONTEXT_NAMESPACE}:*",
        f"~{{{prefix}{COMPANY_CONTEXT_NAMESPACE}:*",
        f"~{prefix}ctxcache:*",
        f"~{{{prefix}ctxcache:*",
    ]


def worker_rules(prefix: str = "") -> list[str]:
    """``ACL SETUSER <user> on ><password>`` followed by these: the cache and its workers."""
    return [
        "resetkeys",
        "resetchannels",
        *key_patterns(prefix),
        "-@all",
        *(f"+{command}" for command in WORKER_COMMANDS),
    ]


def reader_rules(prefix: str = "") -> list[str]:
    """The rules of a user that reads contexts, records and the VIP list, and writes nothing
    but its own counters."""
    stats = f"{prefix}{STATS_NAME}"
    return [
        "resetkeys",
        "resetchannels",
        *key_patterns(prefix),
        "-@all",
        *(f"+{command}" for command in READER_COMMANDS),
        f"(~{stats} +evalsha +eval +hincrby +hincrbyfloat)",
    ]
