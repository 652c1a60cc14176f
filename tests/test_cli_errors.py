"""How the ``ctxcache`` command fails: bad settings, --json errors, help, auth and TLS hints.

Through the entry point (``python -m ctxcache.ops.cli`` in a subprocess), against
the real test Redis and private redis-servers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import metadata

import pytest
import redis
from cli_support import checks_by_name, run
from conftest import COMPANY, PHONE, TEST_REDIS_URL, SpareRedis, free_port

import ctxcache
from ctxcache import ContextCache
from ctxcache.settings import CacheSettings

SECRET = "s3cret-Pa55"
KEY = f"full_context:{COMPANY}:{PHONE}"

# Every command, with the arguments it needs to get as far as reading the settings.
COMMANDS = [
    ["get", PHONE, str(COMPANY)],
    ["invalidate", PHONE, str(COMPANY)],
    ["stats"],
    ["metrics", "--port", "1"],
    ["vip", "add", PHONE, str(COMPANY)],
    ["vip", "remove", PHONE, str(COMPANY)],
    ["vip", "list"],
    ["warm"],
    ["warm", "--queue"],
    ["doctor"],
    ["demo"],
    ["bench", "core"],
]
JSON_COMMANDS = [c for c in COMMANDS if c[0] not in ("metrics", "demo", "bench")]
BAD_URLS = [
    ("redis://127.0.0.1:6379/abc", "the database must be a number from 0 up"),
    ("http://127.0.0.1:6379/0", "scheme 'http' is not one of"),
    ("redis://127.0.0.1:99999/0", "port '99999' is not a number from 1 to 65535"),
    ("redis://127.0.0.1:6379/0?socket_timeout=abc", "option socket_timeout='abc' is not a number"),
    ("redis://[::1:6379/4", "malformed IPv6 address"),
]


def short_and_clear(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 2, stderr


@pytest.mark.parametrize(
    ("command", "bad"),
    # Every bad URL through one command, and every command with one of them.
    [(COMMANDS[0], bad) for bad in BAD_URLS]
    + [(command, BAD_URLS[i % len(BAD_URLS)]) for i, command in enumerate(COMMANDS[1:])],
    ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else v[0],
)
def test_every_command_refuses_a_bad_url_with_exit_2_naming_the_variable(
    command: list[str], bad: tuple[str, str]
) -> None:
    url, message = bad
    result = run(*command, CTXCACHE_REDIS_URL=url, CTXCACHE_LOADER="worker_support:load_context")
    assert result.returncode == 2, (url, result.stdout, result.stderr)
    assert f"CTXCACHE_REDIS_URL: {message}" in result.stderr
    short_and_clear(result.stderr)


@pytest.mark.parametrize("command", [["stats"], ["doctor"], ["warm", "--queue"]])
def test_a_bad_broker_url_is_named_too(command: list[str]) -> None:
    result = run(*command, CTXCACHE_BROKER_URL="redis://127.0.0.1:6379/abc")
    assert result.returncode == 2, result.stderr
    assert "CTXCACHE_BROKER_URL: the database must be a number" in result.stderr


def test_a_bad_url_option_is_named_as_the_option() -> None:
    result = run("--url", "redis://127.0.0.1:6379/abc", "stats")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid --url: the database must be a number")
    short_and_clear(result.stderr)


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_with_json_a_configuration_error_is_a_json_object_on_stdout(command: list[str]) -> None:
    result = run(*command, "--json", CTXCACHE_REDIS_URL="redis://127.0.0.1:99999/0")
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2
    assert error["error"].startswith("invalid ctxcache setting: CTXCACHE_REDIS_URL: port '99999'")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["get", "not a phone", "1", "--json"], 2, "not a phone number"),
        (["get", PHONE, "1", "--raw", "--json"], 2, "either --raw or --json"),
        (["warm", "--concurrency", "0", "--json"], 2, "--concurrency"),
        (["warm", "--refresh-threshold", "-1", "--json"], 2, "--refresh-threshold"),
        (["vip", "list", "--limit", "x", "--json"], 2, "--limit"),
        (["get", PHONE, "--json"], 2, "COMPANY_ID"),
        (["--url", f"redis://127.0.0.1:{free_port()}/0", "stats", "--json"], 3, "unreachable"),
    ],
)
def test_with_json_every_error_is_a_json_object_and_keeps_its_exit_code(
    real_client: redis.Redis, args: list[str], code: int, message: str
) -> None:
    result = run(*args)
    assert result.returncode == code, result.stderr
    error = json.loads(result.stdout)
    assert error == {"error": error["error"], "exit_code": code}
    assert message in error["error"]
    assert message in result.stderr  # and still a line for people


def test_help_reads_like_help() -> None:
    for args in (["--help"], ["get", "--help"], ["warm", "--help"], ["vip", "list", "--help"]):
        result = run(*args)
        assert result.returncode == 0
        assert "<int>" not in result.stdout
        assert "<bool>" not in result.stdout
    top = run("--help").stdout
    assert re.search(r"-v, --verbose\s+log more: -v info, -vv debug", top)
    assert "[default: 0]" not in top
    assert "Usage: ctxcache get [OPTIONS] {PHONE} {COMPANY_ID}" in run("get", "--help").stdout


def test_verbose_is_a_count_flag(real_client: redis.Redis) -> None:
    result = run("-vv", "stats", "--json")
    assert result.returncode == 0, result.stderr
    assert "hits" in json.loads(result.stdout)
    wrong = run("-v", "2", "stats")
    assert wrong.returncode == 2
    assert "-v takes no number: repeat it, -v for info, -vv for debug" in wrong.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ctxcache {metadata.version('ctxcache')}"
    assert ctxcache.__version__ == metadata.version("ctxcache")


def test_get_of_a_key_without_expiry(real_client: redis.Redis) -> None:
    cache = ContextCache.from_settings(CacheSettings.load(redis_url=TEST_REDIS_URL))
    assert cache.set_cached_full_context(PHONE, COMPANY, {"a": 1})
    cache.close()
    real_client.persist(KEY)  # as another writer without a TTL would leave it
    people = run("get", PHONE, str(COMPANY))
    assert people.returncode == 0, people.stderr
    assert "no expiry" in people.stdout
    assert "expires in no expiry" not in people.stdout
    parts = json.loads(run("get", PHONE, str(COMPANY), "--json").stdout)["parts"]
    assert parts[0]["name"] == "client"
    assert parts[0]["ttl_seconds"] is None


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["get", "9" * 5000, "1"], "(5,000 characters)"),
        (["get", PHONE, "9" * 5000], "(5,002 characters)"),
        (["vip", "add", "+7" + "0" * 4998, "1"], "(5,000 characters)"),
    ],
)
def test_long_input_is_cut_in_the_error(args: list[str], shown: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert shown in result.stderr
    assert len(result.stderr) < 300, result.stderr
    short_and_clear(result.stderr)


def test_stats_and_doctor_name_their_size_figures_apart(real_client: redis.Redis) -> None:
    cache = ContextCache.from_settings(CacheSettings.load(redis_url=TEST_REDIS_URL))
    assert cache.set_cached_full_context(PHONE, COMPANY, {"a": "x" * 2000})
    cache.close()
    assert "cache size (Redis memory)" in run("stats").stdout
    doctor = checks_by_name(run("doctor", "--json").stdout)["cached contexts"]["detail"]
    assert re.match(r"clients' parts: 1 keys, values \d+ B", doctor), doctor


# -- doctor's verdict --------------------------------------------------------------------


def test_doctor_counts_skipped_checks_apart_from_failed_ones(spare_redis: SpareRedis) -> None:
    spare_redis.stop()
    env = {"CTXCACHE_REDIS_URL": spare_redis.url, "CTXCACHE_BROKER_URL": spare_redis.url}
    report = json.loads(run("doctor", "--json", "--timeout", "0.5", **env).stdout)
    statuses = [check["status"] for check in report["checks"]]
    failed, skipped = statuses.count("FAIL"), statuses.count("SKIP")
    assert (failed, skipped) == (2, 9)  # Redis and the broker; what needed them is skipped
    assert (report["failed"], report["skipped"], report["ok"]) == (2, 9, False)
    people = run("doctor", "--timeout", "0.5", **env)
    assert people.returncode == 1
    assert people.stdout.strip().endswith(f"2 of {len(statuses)} checks failed, 9 skipped")


# -- authentication and TLS --------------------------------------------------------------


@pytest.fixture
def locked_redis(spare_redis_factory: Callable[..., SpareRedis]) -> SpareRedis:
    return spare_redis_factory(password=SECRET)


def test_auth_errors_say_what_to_do_and_which_password_was_used(
    locked_redis: SpareRedis,
) -> None:
    plain = locked_redis.url
    with_url = f"redis://:wrong-one@127.0.0.1:{locked_redis.port}/0"
    cases = [
        ({"CTXCACHE_REDIS_URL": plain}, "authentication required: set REDIS_PASSWORD or put it in"),
        ({"CTXCACHE_REDIS_URL": with_url}, "the password in the URL was refused: correct it"),
        (
            {"CTXCACHE_REDIS_URL": with_url, "REDIS_PASSWORD": SECRET},
            "the password in the URL was refused: correct it; "
            "REDIS_PASSWORD is set but not used when the URL has a password",
        ),
        (
            {"CTXCACHE_REDIS_URL": plain, "REDIS_PASSWORD": "wrong-two"},
            "the password from REDIS_PASSWORD was refused: correct it (the URL has none)",
        ),
    ]  # fmt: skip
    for env, advice in cases:
        result = run("stats", **env)
        assert result.returncode == 3, result.stderr
        assert advice in result.stderr
        assert SECRET not in result.stdout + result.stderr
        auth = checks_by_name(run("doctor", "--json", **env).stdout)["redis auth"]
        assert auth["status"] == "FAIL"
        assert auth["fix"].startswith(advice)
    good = run("stats", "--json", CTXCACHE_REDIS_URL=plain, REDIS_PASSWORD=SECRET)
    assert good.returncode == 0, good.stderr
    auth = checks_by_name(
        run("doctor", "--json", CTXCACHE_REDIS_URL=plain, REDIS_PASSWORD=SECRET).stdout
    )
    assert auth["redis auth"]["detail"] == "authenticated with the password from REDIS_PASSWORD"


def test_tls_against_a_plain_text_server_is_named_as_the_likely_cause(
    spare_redis: SpareRedis,
) -> None:
    url = f"rediss://127.0.0.1:{spare_redis.port}/0"
    result = run("stats", CTXCACHE_REDIS_URL=url)
    assert result.returncode == 3
    assert "the URL asks for TLS (rediss://)" in result.stderr
    assert "if it speaks plain text, use redis://" in result.stderr
    reach = checks_by_name(
        run("doctor", "--json", "--timeout", "0.5", CTXCACHE_REDIS_URL=url).stdout
    )
    assert reach["redis reachable"]["status"] == "FAIL"
    assert reach["redis reachable"]["fix"] == (
        f"the server at 127.0.0.1:{spare_redis.port} answers without TLS: "
        "use redis:// instead of rediss://, or turn TLS on in the server"
    )
