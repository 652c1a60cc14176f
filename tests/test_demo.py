"""``make demo`` end to end: embedded (in-process and as ``python -m ctxcache.demo``) and real.

The real-mode run uses the test Redis as both the cache and the broker, seeded
with keys "the user" wrote, and the ``celery -A tasks worker`` the demo starts
itself; in CI it must run, like every integration test.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import orjson
import pytest
import redis
import zstandard
from conftest import TEST_NAMESPACE, free_port

from ctxcache.core.wire import WireCodec
from ctxcache.demo import NAMESPACE, demo_broker, main
from ctxcache.demo.sections import old_layout_blob
from ctxcache.sample_salon import (
    FIRST_COMPANY_ID,
    FIRST_PHONE,
    SqlContextLoader,
    create_sample_database,
    list_vip_clients,
)

REPO = Path(__file__).resolve().parents[1]
RUNS = "2"


@pytest.fixture(scope="module")
def salon_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sample database for the module; each demo run adds one booking to it."""
    return create_sample_database(tmp_path_factory.mktemp("demo") / "salon.sqlite3")


@pytest.fixture
def embedded_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CTXCACHE_REDIS_URL: the demo's embedded default."""
    monkeypatch.delenv("CTXCACHE_REDIS_URL", raising=False)
    monkeypatch.delenv("CTXCACHE_BROKER_URL", raising=False)


def latest_booking(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT MAX(b.id) FROM bookings b JOIN clients c ON c.id = b.client_id"
            " WHERE c.phone = ? AND c.company_id = ? AND b.status = 'booked'",
            (FIRST_PHONE, FIRST_COMPANY_ID),
        ).fetchone()
    return int(row[0])


def running(marker: str) -> bool:
    """Whether any process has ``marker`` in its command line."""
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in path.read_bytes():
                return True
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return False


def assert_story(output: str, db: Path, *, real: bool = False, quiet: bool = False) -> None:
    """The facts of the story, not just an exit code; rich may wrap lines, so flatten them."""
    text = " ".join(output.split())
    booking = latest_booking(db)
    assert "first load: miss, from the database" in text
    assert "(its own part and the company's 5 sections); now cached" in text
    assert "second load: hit, from the cache" in text
    assert re.search(r"context: [\d,]+ bytes of JSON, [\d,]+ stored \(\d+%, zstd\)", text)
    assert f"created booking #{booking} in the database: A took that slot" in text
    hook = r"booking_created hook: invalidation inline_and_queued; key gone [\d.,]+ m?s later"
    assert re.search(hook, text)
    assert "next load: miss, from the database" in text
    assert f"client.upcomingBookings now lists booking #{booking}:" in text
    assert_freshness_for_two_clients(text, db, booking, quiet)
    assert_new_clients_load_their_own_part(text)
    assert_memory_table(text, real)
    vips = list_vip_clients(db)
    assert f"the database's {len(vips)} VIPs" in text
    assert f"all {len(vips)} VIP contexts cached after" in text
    # One warm-up per VIP (A was cached already), besides one per company for its
    # sections, which the demo does not wait for.
    outcomes = re.search(r"worker: (\d+) written, (\d+) fresh", text)
    assert outcomes is not None, text
    written, fresh = map(int, outcomes.groups())
    assert written + fresh >= len(vips)
    assert fresh >= 1
    for other, _ in vips[1:]:
        assert other not in text, "other clients' phones are masked"
    for label in ("database load", "cache load (hit)", "save (set)", "invalidation (hook"):
        assert re.search(re.escape(label) + r".*? [\d.,]+ m?s ", text), label
    for spec in ("~8.2 s", "~2.7 s", "~7.5 s", "< 100 ms"):
        assert spec in text
    assert f"ctxcache (median of {RUNS})" in text
    assert re.search(r"hits / misses \d+ / \d+ hit rate / miss rate \d+% / \d+%", text)
    assert "average load time" in text
    assert text.endswith("demo finished")


def booked_slot(db: Path, booking: int) -> tuple[int, str]:
    with closing(sqlite3.connect(db)) as conn:
        staff_id, start = conn.execute(
            "SELECT staff_id, start FROM bookings WHERE id = ?", (booking,)
        ).fetchone()
    return int(staff_id), str(start)


def assert_freshness_for_two_clients(text: str, db: Path, booking: int, quiet: bool) -> None:
    """A booked the slot B was offered; B's next load no longer offered it (the demo checked)."""
    assert "B's first load: miss, its own part from the database" in text  # the company's cached
    offered = re.search(r"B is offered (\S+) with staff #(\d+), its first free slot", text)
    assert offered, text
    start, staff_id = offered[1], int(offered[2])
    assert booked_slot(db, booking) == (staff_id, start)  # A's booking took exactly that slot
    # Stale until told: the cache cannot know of a booking by itself (a note: not with --quiet).
    assert ("B's cached context still offers it" in text) is not quiet
    assert (
        "the same call invalidated the company's availability (staffSchedules, businessStats)"
        in text
    )
    assert (
        f"no longer offers {start} with staff #{staff_id}; the same context as the database's"
        in text
    )
    assert re.search(r"B's next load: hit in [\d.,]+ m?s: no longer offers", text)


def assert_new_clients_load_their_own_part(text: str) -> None:
    whole = re.search(r"whole context, company cold (\d+) ([\d.]+) ms ([\d.]+) ms", text)
    own = re.search(r"own part, company cached (\d+) ([\d.]+) ms ([\d.]+) ms", text)
    assert whole, text
    assert own, text
    assert int(whole[1]) == int(RUNS)
    assert int(own[1]) > 150  # the company's 200 clients, less those cached before
    assert float(own[2]) < float(whole[2])  # its own part costs the database less
    assert f"load_company_sections was not called for any of the {own[1]}" in text


def assert_memory_table(text: str, real: bool) -> None:
    unit = "Redis memory (MEMORY USAGE)" if real else "bytes stored"
    assert f"layout keys {unit} per client" in text
    size = r"([\d.,]+ [KMG]?B)"
    new = re.search(r"by section \(now\) 200 \+ 5 " + size, text)
    old = re.search(r"one blob per client \(0\.1\) 200 " + size, text)
    assert new, text
    assert old, text
    assert bytes_of(new[1]) * 5 < bytes_of(old[1])  # the company's data is not repeated
    assert re.search(r"10,000 such clients: [\d.,]+ [KMG]?B against [\d.,]+ [KMG]?B", text)


def bytes_of(shown: str) -> float:
    number, unit = shown.split()
    return float(number.replace(",", "")) * {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def test_embedded_demo_in_process(
    salon_db: Path, embedded_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", str(salon_db), "--runs", RUNS]) == 0
    out = capsys.readouterr().out
    assert "Embedded mode" in out
    assert "CTXCACHE_REDIS_URL=redis://" in out  # how to run against a real Redis
    # The VIPs' warm-ups (5 loaded, A fresh) and the company's sections, warmed once.
    counts = re.search(r"warm-ups written / fresh (\d+) / (\d+)", " ".join(out.split()))
    assert counts is not None
    written, fresh = map(int, counts.groups())
    assert written >= 5
    assert written + fresh >= 7
    assert_story(out, salon_db)


def test_embedded_demo_as_a_module(salon_db: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CTXCACHE_REDIS_URL", "CTXCACHE_BROKER_URL"}
    }
    argv = [sys.executable, "-m", "ctxcache.demo", "--db", str(salon_db), "--runs", RUNS]
    result = subprocess.run(
        [*argv, "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Embedded mode" in result.stdout
    assert "fresh: had more than" not in result.stdout  # --quiet drops the explanations
    assert_story(result.stdout, salon_db, quiet=True)


def seed_user_data(client: redis.Redis) -> dict[bytes, bytes]:
    """What a user's server holds where the demo runs: DUMP of each key, to compare after."""
    user_client = f"{FIRST_COMPANY_ID}:{FIRST_PHONE}"  # the demo's own client, cached by "them"
    client.zadd("ctxcache:vip", {user_client: 1.0, "962302:+79990000000": 2.0})
    client.hset("ctxcache:stats", mapping={"hits": 41, "misses": 7})
    client.set("ctxcache:warmup:lock", "their-beat", px=540_000)  # their beat's current tick
    client.set(f"full_context:{user_client}", b'{"theirs": true}', ex=43_200)
    client.set(f"{{full_context:{user_client}}}:gen", 12345)
    # Their Redis broker on the same db, with an invalidation waiting for their workers.
    client.sadd("_kombu.binding.ctxcache.invalidate", "ctxcache.invalidate\x06\x16\x06\x16")
    client.lpush("ctxcache.invalidate", b'{"body": "their queued invalidation"}')
    client.set("session:42", "unrelated")
    return {key: client.dump(key) for key in client.scan_iter() if not is_suites(key)}  # type: ignore[misc]


def is_suites(key: bytes) -> bool:
    """The suite's own keys (its marker, its brokers' queues): neither the user's nor the demo's."""
    return key.startswith(TEST_NAMESPACE.encode())


@pytest.mark.celery
def test_real_redis_and_a_worker_subprocess_leave_the_users_keys_alone(
    salon_db: Path,
    real_client: redis.Redis,
    real_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    theirs = seed_user_data(real_client)
    assert len(theirs) == 8
    monkeypatch.setenv("CTXCACHE_REDIS_URL", real_redis_url)
    monkeypatch.setenv("CTXCACHE_BROKER_URL", real_redis_url)  # one database for everything
    assert main(["--db", str(salon_db), "--runs", RUNS]) == 0
    out = capsys.readouterr().out
    assert "Real mode" in out
    assert_story(out, salon_db, real=True)
    # The worker really ran: its log shows the tasks, and it was stopped afterwards.
    log = (salon_db.parent / "worker.log").read_text()
    assert "ready." in log
    assert "ctxcache.invalidate_context" in log
    vips = list_vip_clients(salon_db)
    assert log.count("warm-up of +") == len(vips)  # and "warm-up of company ..." lines
    assert "Warm shutdown" in log
    assert not running(f"ctxcache-demo-{os.getpid()}@"), "the demo's worker is still running"
    # Every key the user had is as it was, their lock still running; the demo's are gone.
    after = {key: real_client.dump(key) for key in real_client.scan_iter() if not is_suites(key)}
    assert after == theirs
    assert real_client.pttl("ctxcache:warmup:lock") > 0
    text = " ".join(out.split())
    deleted = re.search(rf"deleted the (\d+) keys the demo wrote under {NAMESPACE}", text)
    assert deleted, text
    assert int(deleted[1]) > 2 * len(vips)  # contexts and generations at least: it did write
    assert "it wrote no other key" in text
    assert f"Left behind: the sample database {salon_db}" in text


def test_a_rabbitmq_broker_is_set_aside_for_a_redis_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's queues must not be the user's: a Redis broker, where its keys are prefixed."""
    monkeypatch.setenv("CTXCACHE_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    broker, note = demo_broker("redis://:pw@127.0.0.1:6379/3")
    assert broker == "redis://:pw@127.0.0.1:6379/4"
    assert note is not None
    assert "RabbitMQ" in note
    assert "pw" not in note
    monkeypatch.setenv("CTXCACHE_BROKER_URL", "redis://127.0.0.1:6379/9")
    assert demo_broker("redis://127.0.0.1:6379/3") == ("redis://127.0.0.1:6379/9", None)


def test_the_old_layouts_size_is_that_of_a_real_version_1_envelope(salon_db: Path) -> None:
    """The memory table's old layout is what ctxcache 0.1 wrote: today's reader decodes it."""
    context = SqlContextLoader(salon_db)(FIRST_PHONE, FIRST_COMPANY_ID)
    blob = old_layout_blob(context, zstandard.ZstdCompressor(level=1))
    assert WireCodec().decode(blob) == context
    assert len(blob) < len(orjson.dumps(context)) / 3


def test_unreachable_redis_is_a_clear_error_without_the_password(
    salon_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("CTXCACHE_REDIS_URL", f"redis://demo:s3cret@127.0.0.1:{port}/0")
    assert main(["--db", str(salon_db), "--runs", "1"]) == 1
    captured = capsys.readouterr()
    error = " ".join(captured.err.split())
    assert f"Redis at redis://demo:***@127.0.0.1:{port}/0 (CTXCACHE_REDIS_URL) is not" in error
    assert "unset it to run the embedded demo" in error
    assert "s3cret" not in captured.out + captured.err
