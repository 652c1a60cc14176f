"""Running the ``ctxcache`` command as a shell would: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from conftest import TEST_REDIS_URL
from worker_support import REPO

BROKER = TEST_REDIS_URL  # the one test database; no CLI test consumes from it


def cli_env(**extra: str) -> dict[str, str]:
    """The environment minus any ctxcache settings, plus the test Redis and broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXCACHE_")}
    env.pop("REDIS_PASSWORD", None)
    env.update(
        CTXCACHE_REDIS_URL=TEST_REDIS_URL,
        CTXCACHE_BROKER_URL=BROKER,
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]),
    )
    env.update(extra)
    return env


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctxcache.ops.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(**env),
        cwd=REPO,
        timeout=timeout,
    )


def checks_by_name(output: str) -> dict[str, dict[str, Any]]:
    report = json.loads(output)
    return {check["name"]: check for check in report["checks"]}
