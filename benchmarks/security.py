"""Security suite: the cost of encrypted values and of TLS, each next to the plain path.

- Encryption: hit and set of the 300 KB fixture context with
  ``CTXCACHE_ENCRYPTION_KEYS`` against the same cache without it, on the
  same Redis (``--url``), interleaved (A B B A ...). The in-process cache is
  off for both, so every hit fetches, decrypts and decodes the value: the
  worst case (with it on, a hit whose stamp is current decrypts nothing).
- TLS: one redis-server started here with a plain port and a TLS port
  (certificates from trustme, mutual TLS), so the transport is the only
  difference: PING, hit and set over ``rediss://`` against ``redis://``.

Ratios are of medians from the same run. Writes only keys under
``ctxcache-bench:`` on ``--url`` (deleted at start and end); the TLS server
is its own, on a loopback port in 7200-7299, stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import (
    NAMESPACE,
    bench_url,
    cpu_model,
    delete_bench_keys,
    iteration_options,
    load_fixture,
    ms,
    summary,
    table,
    write_results,
)
from benchmarks.core import interleave
from ctxcache import ContextCache
from ctxcache.settings import CacheSettings, redact_url

PHONE = "+79001234567"
COMPANY_ID = 962302
TARGET_ENCRYPTION_RATIO = 1.15
PORTS = range(7200, 7300)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the suite, print the report, write ``results/security[.quick].json``."""
    quick, iterations, warmup = iteration_options(args)
    url = bench_url(args)
    _, raw_json, context = load_fixture()
    admin = redis.Redis.from_url(url)
    delete_bench_keys(admin)
    results: dict[str, Any] = {
        "suite": "security",
        "quick": quick,
        "environment": {
            "cpu": cpu_model(),
            "redis_url": redact_url(url),
            "context_json_bytes": len(raw_json),
        },
        "method": {"iterations": iterations, "warmup": warmup, "order": "ABBA interleaved"},
    }
    try:
        results["encryption"] = measure_encryption(url, context, iterations, warmup)
    finally:
        delete_bench_keys(admin)
        admin.close()
    with tls_server() as (plain_url, tls_url, files):
        results["tls"] = measure_tls(plain_url, tls_url, files, context, iterations, warmup)
    print(report(results))
    out = write_results("security", quick, results, getattr(args, "results", None))
    print(f"\nfigures written to {out}")
    return results


def _cache(url: str, prefix: str, **settings: Any) -> ContextCache:
    values: dict[str, Any] = {"redis_url": url, "key_prefix": prefix, "l1_max_bytes": 0}
    values.update(settings)
    return ContextCache.from_settings(CacheSettings.load(**values))


def _pair(a: list[int], b: list[int]) -> dict[str, Any]:
    first, second = summary(a), summary(b)
    return {
        "secured": first,
        "plain": second,
        "ratio": round(first["median_ms"] / second["median_ms"], 3),
    }


def _hit_and_set(
    secured: ContextCache, plain: ContextCache, context: dict[str, Any], n: int, warmup: int
) -> dict[str, Any]:
    for cache in (secured, plain):
        assert cache.set_cached_full_context(PHONE, COMPANY_ID, context)
        assert cache.get_cached_full_context(PHONE, COMPANY_ID) == context
    hit = interleave(
        lambda: secured.get_cached_full_context(PHONE, COMPANY_ID),
        lambda: plain.get_cached_full_context(PHONE, COMPANY_ID),
        n,
        warmup,
    )
    put = interleave(
        lambda: secured.set_cached_full_context(PHONE, COMPANY_ID, context),
        lambda: plain.set_cached_full_context(PHONE, COMPANY_ID, context),
        n,
        warmup,
    )
    return {"hit": _pair(*hit), "set": _pair(*put)}


def measure_encryption(
    url: str, context: dict[str, Any], iterations: int, warmup: int
) -> dict[str, Any]:
    key = base64.b64encode(os.urandom(32)).decode()
    secured = _cache(url, NAMESPACE + "enc:", encryption_keys=key)
    plain = _cache(url, NAMESPACE + "plain:")
    try:
        figures = _hit_and_set(secured, plain, context, iterations, warmup)
        stored = secured.describe_cached_context(PHONE, COMPANY_ID)
        if stored is None:
            raise RuntimeError("the encrypted context was not cached")
        figures["stored_bytes"] = sum(part.stored_bytes for part in stored.parts)
        figures["target"] = TARGET_ENCRYPTION_RATIO
    finally:
        secured.close()
        plain.close()
    return figures


def measure_tls(
    plain_url: str, tls_url: str, files: dict[str, str], context: dict[str, Any], n: int, w: int
) -> dict[str, Any]:
    tls = {"tls_ca_file": files["ca"], "tls_cert_file": files["cli"], "tls_key_file": files["key"]}
    secured = _cache(tls_url, NAMESPACE, **tls)
    plain = _cache(plain_url, NAMESPACE)
    try:
        ping = interleave(secured.client.ping, plain.client.ping, n, w)
        figures = {"ping": _pair(*ping), **_hit_and_set(secured, plain, context, n, w)}
    finally:
        secured.close()
        plain.close()
    return figures


@contextlib.contextmanager
def tls_server() -> Iterator[tuple[str, str, dict[str, str]]]:
    """A redis-server with a plain and a TLS port (mutual TLS), in a process group of its own."""
    import trustme  # the test extra; imported here so the other suites never need it

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="ctxcache-bench-tls") as directory:
        ca = trustme.CA()
        server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("ctxcache-bench")
        files = {
            name: str(Path(directory) / f"{name}.pem") for name in ("ca", "srv", "sk", "cli", "key")
        }
        ca.cert_pem.write_to_path(files["ca"])
        server.cert_chain_pems[0].write_to_path(files["srv"])
        server.private_key_pem.write_to_path(files["sk"])
        client.cert_chain_pems[0].write_to_path(files["cli"])
        client.private_key_pem.write_to_path(files["key"])
        plain_port, tls_port = _free_ports(2)
        argv = [
            binary, "--port", str(plain_port), "--tls-port", str(tls_port),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory,
            "--tls-cert-file", files["srv"], "--tls-key-file", files["sk"],
            "--tls-ca-cert-file", files["ca"], "--tls-auth-clients", "yes", "--logfile", "",
        ]  # fmt: skip
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            probe = redis.Redis(port=plain_port, socket_timeout=1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    probe.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the TLS redis-server did not start") from None
                    time.sleep(0.05)
            probe.close()
            yield f"redis://127.0.0.1:{plain_port}/0", f"rediss://127.0.0.1:{tls_port}/0", files
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


def _free_ports(count: int) -> list[int]:
    found: list[int] = []
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise SystemExit("no free loopback ports in 7200-7299")


def report(results: dict[str, Any]) -> str:
    rows = [["", "secured p50", "plain p50", "ratio", "target"]]
    enc = results["encryption"]
    for op in ("hit", "set"):
        figures = enc[op]
        rows.append(
            [
                f"encryption: {op}",
                ms(figures["secured"]["median_ms"]),
                ms(figures["plain"]["median_ms"]),
                f"{figures['ratio']:.3f}",
                f"<= {TARGET_ENCRYPTION_RATIO}",
            ]
        )
    for op in ("ping", "hit", "set"):
        figures = results["tls"][op]
        rows.append(
            [
                f"TLS: {op}",
                ms(figures["secured"]["median_ms"]),
                ms(figures["plain"]["median_ms"]),
                f"{figures['ratio']:.3f}",
                "",
            ]
        )
    return "security suite (medians, same run)\n" + table(rows)
