"""Benchmarks for ctxcache, run with ``python -m benchmarks [suite ...]`` (``make bench``).

Each suite is a module with ``run(args: argparse.Namespace) -> dict``; it prints
its own report and writes its figures to ``benchmarks/results/<suite>.json``.
"""
