"""The ``ctxcache`` command through its entry point, against the real test Redis.

Most tests run ``python -m ctxcache.ops.cli`` as a subprocess, as a shell would;
the quick input checks use typer's ``CliRunner``. The commands get the test
database as their broker too; the worker started here uses a private redis-server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_support import BROKER, checks_by_name, cli_env, run
from conftest import COMPANY, PHONE, TEST_REDIS_URL, SpareRedis, free_port, make_settings
from typer.testing import CliRunner
from worker_support import LOADS_KEY, REPO, CeleryProcess, wait_until

from ctxcache import ContextCache, VipRegistry
from ctxcache.core.layout import DEFAULT_COMPANY_SECTIONS
from ctxcache.ops import cli
from ctxcache.ops.doctor import Check, run_checks

KEY = f"full_context:{COMPANY}:{PHONE}"
OTHER = "+79007654321"
SECRET = "s3cret-Pa55"
CONTEXT: dict[str, Any] = {
    "company": {"company_id": COMPANY, "title": "Салон"},
    "services": [{"id": i, "title": f"Стрижка {i}", "price": 1000 + i} for i in range(400)],
    "conversation": [{"role": "user", "text": "Хочу записаться"}] * 50,
    "summary": "постоянный клиент",
}


def failing_loader(phone: str, company_id: int) -> dict[str, Any]:
    """A loader for ``warm`` tests (CTXCACHE_LOADER=test_cli:failing_loader): OTHER fails."""
    if phone == OTHER:
        raise LookupError("client not in the database")
    return {"phone": phone, "companyId": company_id}


@pytest.fixture
def cache(real_client: redis.Redis) -> Iterator[ContextCache]:
    cache = ContextCache.from_settings(make_settings())
    yield cache
    cache.close()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in [n for n in os.environ if n.startswith("CTXCACHE_")] + ["REDIS_PASSWORD"]:
        monkeypatch.delenv(name, raising=False)
    return CliRunner(env={"CTXCACHE_REDIS_URL": TEST_REDIS_URL, "CTXCACHE_BROKER_URL": BROKER})


# -- get / invalidate ---------------------------------------------------------------------


def test_get_summarizes_a_cached_context(cache: ContextCache, real_client: redis.Redis) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    people = run("get", "8 (900) 123-45-67", str(COMPANY))
    assert people.returncode == 0, people.stderr
    assert KEY in people.stdout
    for word in (
        "client",
        "company",
        "services",
        "conversation",
        "compression",
        "11 h 59 min",
    ):
        assert word in people.stdout

    result = run("get", PHONE, str(COMPANY), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["cached"] is True
    assert summary["key"] == KEY
    parts = {part["name"]: part for part in summary["parts"]}
    assert list(parts) == ["client", "company", "services"]  # the company sections it has
    assert parts["client"]["stored_bytes"] == real_client.strlen(KEY)
    assert parts["services"]["scope"] == "company"
    assert all(part["found"] for part in parts.values())
    assert all(43_000 < part["ttl_seconds"] <= 43_200 for part in parts.values())
    assert all(0 <= part["age_seconds"] < 60 for part in parts.values())
    assert summary["stored_bytes"] == sum(real_client.strlen(p["key"]) for p in parts.values())
    assert summary["compression_ratio"] > 2
    assert [s["name"] for s in summary["sections"]] == list(CONTEXT)
    assert {s["name"]: s["type"] for s in summary["sections"]}["services"] == "array"

    raw = run("get", PHONE, str(COMPANY), "--raw")
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout) == CONTEXT


def test_get_names_the_missing_part(cache: ContextCache, real_client: redis.Redis) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert cache.invalidate_company(COMPANY, ["services"])
    result = run("get", PHONE, str(COMPANY), "--json")
    assert result.returncode == 1
    parts = {part["name"]: part["found"] for part in json.loads(result.stdout)["parts"]}
    assert parts == {"client": True, "company": True, "services": False}
    people = run("get", PHONE, str(COMPANY))
    assert "missing: services" in people.stderr


def test_get_of_an_absent_context_exits_1(real_client: redis.Redis) -> None:
    result = run("get", PHONE, str(COMPANY))
    assert result.returncode == 1
    assert f"not cached: {KEY} (missing: client" in result.stderr
    result = run("get", PHONE, str(COMPANY), "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert (summary["key"], summary["phone"], summary["company_id"]) == (KEY, PHONE, COMPANY)
    assert summary["cached"] is False
    assert not any(part["found"] for part in summary["parts"])


def test_get_of_a_corrupt_value_exits_1_and_leaves_it(real_client: redis.Redis) -> None:
    real_client.set(KEY, b"\x00ctx\x09\x00garbage")
    result = run("get", PHONE, str(COMPANY))
    assert result.returncode == 1
    assert "cannot be decoded" in result.stderr
    assert real_client.exists(KEY)  # an inspector does not delete


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "not a phone", "1"], "not a phone number"),
        (["get", PHONE, "0"], "company_id must be a positive integer"),
        (["get", PHONE, "12abc"], "company_id must be a positive integer"),
        (["invalidate", "12", str(COMPANY)], "not a phone number"),
        (["vip", "add", PHONE, "5x"], "company_id"),
        (["vip", "list", "--company", "x"], "company_id"),
        (["--url", "localhost:6379", "get", PHONE, "1"], "must be a URL"),
        (["get", PHONE, "1", "--raw", "--json"], "either --raw or --json"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    runner: CliRunner, real_client: redis.Redis, args: list[str], message: str
) -> None:
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    if "--json" in args:  # the error as JSON, and nothing else
        assert json.loads(result.stdout) == {"error": "use either --raw or --json", "exit_code": 2}
    else:
        assert result.stdout == ""


def test_get_shows_a_stale_part_with_the_grace_it_has_left(
    runner: CliRunner, real_client: redis.Redis
) -> None:
    writer = ContextCache.from_settings(make_settings(stale_grace=100))
    try:
        assert writer.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    finally:
        writer.close()
    real_client.pexpire(KEY, 40_000)  # 60 s past its TTL, 40 s of grace left
    env = {"CTXCACHE_STALE_GRACE": "100"}
    result = runner.invoke(cli.app, ["get", PHONE, str(COMPANY), "--json"], env=env)
    assert result.exit_code == 0, result.output
    parts = {part["name"]: part for part in json.loads(result.stdout)["parts"]}
    assert parts["client"]["stale"] is True
    assert -61 <= parts["client"]["ttl_seconds"] < -59
    assert 39 < parts["client"]["grace_seconds"] <= 40
    assert parts["services"]["stale"] is False
    assert 43_000 < parts["services"]["ttl_seconds"] <= 43_200  # the TTL, not the grace
    shown = runner.invoke(cli.app, ["get", PHONE, str(COMPANY)], env={**env, "COLUMNS": "200"})
    assert "stale, 0 min 39 s of grace left" in shown.stdout


def test_bad_input_is_reported_before_connecting(runner: CliRunner) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(cli.app, ["--url", dead, "get", "not a phone", "1"])
    assert result.exit_code == 2


def test_unreachable_redis_exits_3_without_showing_the_password() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    for args in (["get", PHONE, "1"], ["invalidate", PHONE, "1"], ["vip", "list"], ["stats"]):
        result = run("--url", url, *args)
        assert result.returncode == 3, (args, result.stderr)
        assert "unreachable" in result.stderr
        assert "redis://:***@127.0.0.1" in result.stderr
        assert SECRET not in result.stdout + result.stderr


def test_a_server_that_is_not_redis_exits_3_and_fails_the_doctor(runner: CliRunner) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"redis://127.0.0.1:{http.server_address[1]}/0"
    try:
        result = runner.invoke(cli.app, ["--url", url, "get", PHONE, "1"])
        assert result.exit_code == 3
        assert "does not answer as Redis" in result.stderr
        checks = {c.name: c for c in run_checks(make_settings(redis_url=url), celery=False)}
    finally:
        http.shutdown()
        http.server_close()
    assert checks["redis reachable"].status == "FAIL"
    assert "not as Redis" in checks["redis reachable"].detail


def test_invalidate_deletes_and_voids_loads(cache: ContextCache, real_client: redis.Redis) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    generation = cache.current_generation(PHONE, COMPANY)
    result = run("invalidate", "+7 900 123 45 67", str(COMPANY))
    assert result.returncode == 0, result.stderr
    assert "deleted" in result.stdout
    assert not real_client.exists(KEY)
    assert cache.current_generation(PHONE, COMPANY) != generation

    again = run("invalidate", PHONE, str(COMPANY), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"key": KEY, "invalidated": True, "was_cached": False}


# -- vip / warm ---------------------------------------------------------------------------


def test_vip_add_list_remove(cache: ContextCache) -> None:
    registry = VipRegistry(cache)
    added = run("vip", "add", "8 900 123-45-67", str(COMPANY), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"phone": PHONE, "company_id": COMPANY, "added": True}
    assert "already a VIP" in run("vip", "add", PHONE, str(COMPANY)).stdout
    assert run("vip", "add", OTHER, "1001").returncode == 0
    assert sorted(registry.list()) == sorted([(PHONE, COMPANY), (OTHER, 1001)])

    listed = json.loads(run("vip", "list", "--json").stdout)
    assert listed["count"] == 2
    assert {"phone": "+79*******67", "company_id": COMPANY} in listed["vips"]  # masked
    assert PHONE not in run("vip", "list").stdout
    shown = json.loads(
        run("vip", "list", "--company", str(COMPANY), "--show-phones", "--json").stdout
    )
    assert shown == {
        "count": 1,
        "vips": [{"phone": PHONE, "company_id": COMPANY}],
        "truncated": False,
    }

    assert run("vip", "remove", OTHER, "1001").returncode == 0
    missing = run("vip", "remove", OTHER, "1001")
    assert missing.returncode == 1
    assert "not a VIP" in missing.stdout
    assert registry.list() == [(PHONE, COMPANY)]


def test_warm_loads_every_vip_then_finds_them_fresh(
    cache: ContextCache, real_client: redis.Redis
) -> None:
    registry = VipRegistry(cache)
    registry.add(PHONE, COMPANY)
    registry.add(OTHER, COMPANY)
    loader = {"CTXCACHE_LOADER": "worker_support:load_context"}
    first = run("warm", "--json", **loader)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "vips": 2, "written": 2, "fresh": 0, "busy": 0, "superseded": 0,
        "unavailable": 0, "unknown": 0, "invalid": 0, "failed": 0,
    }  # fmt: skip
    assert len(real_client.hgetall(LOADS_KEY)) == 2
    assert cache.get_cached_full_context(OTHER, COMPANY) == {
        "phone": OTHER,
        "companyId": COMPANY,
        "load": 1,
    }
    second = run("warm", **loader)
    assert second.returncode == 0, second.stderr
    assert "fresh" in second.stdout
    assert sorted(int(v) for v in real_client.hgetall(LOADS_KEY).values()) == [1, 1]


def test_warm_reports_a_failing_load_and_exits_1(cache: ContextCache) -> None:
    registry = VipRegistry(cache)
    registry.add(PHONE, COMPANY)
    registry.add(OTHER, COMPANY)
    result = run("warm", "--json", CTXCACHE_LOADER="test_cli:failing_loader")
    assert result.returncode == 1
    counts = json.loads(result.stdout)
    assert (counts["written"], counts["failed"]) == (1, 1)
    assert "client not in the database" in result.stderr
    assert OTHER not in result.stderr  # phones are masked in the log


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        (None, "CTXCACHE_LOADER is not set"),
        ("no_such_module:load", "cannot import 'no_such_module'"),
        ("worker_support:nothing", "has no attribute"),
    ],
)
def test_warm_without_a_usable_loader_exits_2(
    runner: CliRunner, real_client: redis.Redis, loader: str | None, message: str
) -> None:
    env = {"CTXCACHE_LOADER": loader} if loader else {}
    result = runner.invoke(cli.app, ["warm"], env=env)
    assert result.exit_code == 2
    assert message in result.stderr


def test_warm_queue_publishes_the_warm_up_task(
    real_client: redis.Redis, spare_redis: SpareRedis
) -> None:
    result = run("warm", "--queue", "--json", CTXCACHE_BROKER_URL=spare_redis.url)  # private
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queued"] == "ctxcache.warm_vip_contexts"
    broker = redis.Redis.from_url(spare_redis.url)
    message = json.loads(broker.lindex("ctxcache.warmup", 0) or b"{}")
    broker.close()
    assert message["headers"]["task"] == "ctxcache.warm_vip_contexts"

    dead = run("warm", "--queue", CTXCACHE_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert dead.returncode == 3
    assert "could not publish" in dead.stderr


# -- stats / metrics ----------------------------------------------------------------------


def test_stats_json_sums_what_workers_flushed(
    cache: ContextCache, real_client: redis.Redis
) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    assert cache.get_cached_full_context(PHONE, COMPANY) == CONTEXT
    assert cache.get_cached_full_context(OTHER, COMPANY) is None
    assert cache.flush_stats()
    result = run("stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    parts = 1 + sum(1 for name in CONTEXT if name in DEFAULT_COMPANY_SECTIONS)
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, parts)
    assert stats["hit_rate"] == stats["miss_rate"] == 0.5
    assert stats["cached_contexts"] == 1
    assert stats["cached_bytes"] >= real_client.strlen(KEY)
    people = run("stats")
    assert "hit rate" in people.stdout
    assert "50.0%" in people.stdout


def test_metrics_command_serves_prometheus_until_terminated(real_client: redis.Redis) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ctxcache.ops.cli", "metrics", "--port", str(port)],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body: list[str] = []

        def scraped() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body.append(r.read().decode())
            except OSError:
                return False
            return True

        wait_until(scraped, 30, "the metrics endpoint")
        assert "ctxcache_hits_total" in body[0]
        assert "ctxcache_redis_up 1.0" in body[0]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0  # a clean shutdown
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


# -- doctor -------------------------------------------------------------------------------


def test_doctor_on_a_healthy_server_without_workers(
    real_client: redis.Redis, spare_redis: SpareRedis
) -> None:
    broker = {"CTXCACHE_BROKER_URL": spare_redis.url}  # no worker can be listening there
    result = run("doctor", "--json", **broker)
    assert result.returncode == 1  # no worker consumes the queues
    checks = checks_by_name(result.stdout)
    for name in ("redis url", "redis reachable", "redis auth", "redis version", "cache round trip"):
        assert checks[name]["ok"], checks[name]
    assert "CTXCACHE_REDIS_URL is set" in checks["redis url"]["detail"]
    assert checks["broker reachable"]["ok"]
    for queue in ("ctxcache.invalidate", "ctxcache.warmup"):
        check = checks[f"worker: {queue}"]
        assert check["status"] == "FAIL"
        assert "celery -A tasks worker" in check["fix"]
    assert real_client.keys("*doctor*") == []  # the scratch keys are gone

    people = run("doctor", **broker)
    assert "PASS redis reachable" in people.stdout
    assert "FAIL worker: ctxcache.invalidate" in people.stdout
    assert "fix: start one: celery -A tasks worker" in people.stdout


def test_doctor_passes_with_a_worker_on_both_queues(
    real_client: redis.Redis, spare_redis: SpareRedis, tmp_path: Path
) -> None:
    broker = {"CTXCACHE_BROKER_URL": spare_redis.url}  # a private broker
    worker = CeleryProcess(
        [
            "worker", "-Q", "ctxcache.invalidate,ctxcache.warmup", "-c", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", "clidoctor@%h", "--loglevel", "INFO",
        ],
        cli_env(CTXCACHE_LOADER="worker_support:load_context", **broker),
        tmp_path / "worker.log",
    )  # fmt: skip
    worker.start()
    try:
        result = run("doctor", **broker)
    finally:
        worker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS worker: ctxcache.invalidate: consumed by clidoctor@" in result.stdout
    assert "PASS worker: ctxcache.warmup: consumed by clidoctor@" in result.stdout
    assert "all checks passed" in result.stdout


def test_doctor_against_a_stopped_server_fails_fast_with_a_fix(
    spare_redis: SpareRedis,
) -> None:
    spare_redis.stop()
    started = time.monotonic()
    env = cli_env()
    del env["CTXCACHE_BROKER_URL"]  # the default: the same (stopped) server
    result = subprocess.run(
        [sys.executable, "-m", "ctxcache.ops.cli", "--url", spare_redis.url, "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=30,
    )
    assert time.monotonic() - started < 8
    assert result.returncode == 1
    checks = checks_by_name(result.stdout)
    reach = checks["redis reachable"]
    assert reach["status"] == "FAIL"
    assert "Connection refused" in reach["detail"]
    assert "redis-cli ping" in reach["fix"]
    assert checks["redis version"]["status"] == "SKIP"
    assert checks["broker reachable"]["status"] == "FAIL"
    assert "given with --url" in checks["redis url"]["detail"]


def test_doctor_points_at_the_tunnel_in_development(runner: CliRunner) -> None:
    result = runner.invoke(cli.app, ["doctor", "--json", "--timeout", "0.5"], env={
        "CTXCACHE_REDIS_URL": None,
        "CTXCACHE_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    })  # fmt: skip
    checks = checks_by_name(result.stdout)
    assert "6380" in checks["redis url"]["detail"]
    if not checks["redis reachable"]["ok"]:  # unless a tunnel really runs here
        assert "ctxcache tunnel start" in checks["redis reachable"]["fix"]


def doctor_checks(url: str, **settings: Any) -> dict[str, Check]:
    checks = run_checks(make_settings(redis_url=url, **settings), timeout=1.0, celery=False)
    return {check.name: check for check in checks}


def test_doctor_tells_auth_problems_apart(
    spare_redis: SpareRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    with_password = f"redis://:{SECRET}@127.0.0.1:{spare_redis.port}/0"
    check = doctor_checks(with_password)["redis auth"]
    assert check.ok  # redis-py tolerates a password the server does not need
    assert SECRET not in check.detail

    admin = redis.Redis(port=spare_redis.port)
    admin.config_set("requirepass", SECRET)
    admin.close()
    check = doctor_checks(spare_redis.url)["redis auth"]
    assert not check.ok
    assert check.fix == "authentication required: set REDIS_PASSWORD or put it in the URL"
    assert "sent: no password" in check.detail
    wrong = doctor_checks(f"redis://:wrong@127.0.0.1:{spare_redis.port}/0")["redis auth"]
    assert not wrong.ok
    assert (wrong.fix or "").startswith("the password in the URL was refused")
    assert "sent: password from the URL" in wrong.detail
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    checks = doctor_checks(spare_redis.url)
    assert checks["redis auth"].status == "PASS"
    assert checks["cache round trip"].ok, checks["cache round trip"]
    assert all(SECRET not in check.detail + (check.fix or "") for check in checks.values())


def test_doctor_judges_memory_limits_and_eviction(spare_redis: SpareRedis) -> None:
    admin = redis.Redis(port=spare_redis.port)
    checks = doctor_checks(spare_redis.url)
    assert checks["maxmemory"].status == "WARN"
    assert "10,000 contexts take" in checks["maxmemory"].detail

    admin.config_set("maxmemory", "64mb")
    checks = doctor_checks(spare_redis.url)
    assert checks["maxmemory"].status == "PASS"
    assert checks["eviction policy"].status == "FAIL"  # noeviction: writes fail when full
    assert "allkeys-lru" in (checks["eviction policy"].fix or "")

    admin.config_set("maxmemory-policy", "allkeys-lru")
    assert doctor_checks(spare_redis.url)["eviction policy"].status == "PASS"
    # ... but a broker on that evicting server can lose queued invalidations.
    broker = f"redis://127.0.0.1:{spare_redis.port}/1"
    checks = {
        c.name: c
        for c in run_checks(
            make_settings(redis_url=spare_redis.url, broker_url=broker), timeout=1.0
        )
    }
    assert checks["broker eviction"].status == "FAIL"
    assert "the cache's own server" in checks["broker eviction"].detail
    admin.close()


def test_doctor_counts_cached_contexts(cache: ContextCache) -> None:
    for phone in (PHONE, OTHER):
        assert cache.set_cached_full_context(phone, COMPANY, CONTEXT)
    check = doctor_checks(TEST_REDIS_URL)["cached contexts"]
    assert check.ok
    assert check.detail.startswith("clients' parts: 2 keys, values ")
    assert "; company sections: 2 keys" in check.detail  # company and services, once


# -- help, demo, bench --------------------------------------------------------------------


COMMANDS = [
    [], ["get"], ["invalidate"], ["stats"], ["metrics"], ["warm"], ["doctor"], ["demo"],
    ["bench"], ["vip"], ["vip", "add"], ["vip", "remove"], ["vip", "list"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ctxcache")
def test_every_command_has_help(runner: CliRunner, command: list[str]) -> None:
    result = runner.invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_demo_gets_its_arguments() -> None:
    result = run("demo", "--", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "--runs" in result.stdout


def test_bench_runs_the_benchmarks_module_from_the_checkout() -> None:
    result = run("bench", "no-such-suite")
    assert result.returncode == 2
    assert "unknown suite(s) no-such-suite" in result.stderr  # from python -m benchmarks


def test_bench_without_a_checkout_exits_2(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli.tools, "REPO_ROOT", tmp_path)
    result = runner.invoke(cli.app, ["bench"])
    assert result.exit_code == 2
    assert "no benchmarks/" in result.stderr


def test_entry_point_is_installed() -> None:
    script = Path(sys.executable).with_name("ctxcache")
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("get", "invalidate", "stats", "metrics", "vip", "warm", "doctor", "demo"):
        assert command in result.stdout


def test_invalidate_company_sections(cache: ContextCache, real_client: redis.Redis) -> None:
    assert cache.set_cached_full_context(PHONE, COMPANY, CONTEXT)
    sections = f"{{company_context:{COMPANY}}}:section:"
    result = run("invalidate", "--company", str(COMPANY), "--section", "services", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "company": f"company_context:{COMPANY}",
        "invalidated": ["services"],
    }
    assert not real_client.exists(sections + "services")
    assert real_client.exists(sections + "company")
    assert real_client.exists(KEY)  # the client's part is left alone
    everything = run("invalidate", "--company", str(COMPANY))
    assert everything.returncode == 0, everything.stderr
    assert "businessStats" in everything.stdout
    assert not real_client.exists(sections + "company")
    bad = run("invalidate", "--company", str(COMPANY), "--section", "client")
    assert bad.returncode == 2
    assert "not company sections" in bad.stderr
    both = run("invalidate", PHONE, str(COMPANY), "--company", str(COMPANY))
    assert both.returncode == 2
