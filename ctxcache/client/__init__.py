"""Thin I/O shells around the core: the Redis client, its connection, the VIP registry."""

__all__: list[str] = []
