"""The I/O-free core shared by every client: keys, wire format, Lua scripts, breaker, stats, phones.

Nothing here opens a socket or reads the clock on its own; the clients in
:mod:`ctxcache.client` do the I/O and hand the core what it needs.
"""

__all__: list[str] = []
