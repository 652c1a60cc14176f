"""Operator tools: the ``ctxcache`` command, ``doctor`` checks and the metrics endpoint."""

__all__: list[str] = []
