"""``python -m ctxcache.ops.cli``: the same as the ``ctxcache`` console script."""

from ctxcache.ops.cli import main

main()
