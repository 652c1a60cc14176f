"""What every ``ctxcache`` command shares: ``--url``/``-v``, settings, the Redis session, output.

Exit codes: 0 ok; 1 a check failed or nothing was found; 2 bad input or
configuration; 3 Redis (or the broker) unreachable.
"""

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import orjson
import typer
from redis import exceptions as redis_errors

from ctxcache.client.sync import ContextCache
from ctxcache.errors import (
    CacheUnavailableError,
    ConfigurationError,
    InvalidCompanyIdError,
    InvalidPhoneError,
)
from ctxcache.settings import CacheSettings, redact_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "AsJson",
    "Company",
    "Phone",
    "State",
    "die",
    "global_options",
    "load_settings",
    "print_json",
    "session",
    "url_option",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
logger = logging.getLogger("ctxcache")

Phone = Annotated[str, typer.Argument(help="client phone, any format (+79001234567, 8 900 ...)")]
Company = Annotated[str, typer.Argument(help="company id, a positive integer")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts, nothing else")]


@dataclass
class State:
    url: str | None = None


def url_option(ctx: typer.Context) -> str | None:
    """The ``--url`` given before the command, if any."""
    return ctx.obj.url if isinstance(ctx.obj, State) else None


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="Redis URL, instead of CTXCACHE_REDIS_URL")
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="log more (-vv: debug)")
    ] = 0,
) -> None:
    """Options given before the command, for every command."""
    ctx.obj = State(url=url)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)])

    def restore() -> None:  # leave the library's logger as it was (tests, embedding)
        logger.removeHandler(handler)
        logger.setLevel(level)

    ctx.call_on_close(restore)


def die(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings(ctx: typer.Context) -> CacheSettings:
    url = url_option(ctx)
    try:
        return CacheSettings.load(redis_url=url) if url else CacheSettings.load()
    except ConfigurationError as exc:
        die(EXIT_USAGE, str(exc))


@contextlib.contextmanager
def session(ctx: typer.Context) -> Iterator[ContextCache]:
    """A cache from the settings; bad input exits 2, an unreachable Redis 3."""
    settings = load_settings(ctx)
    reason = "--url" if url_option(ctx) else settings.url_reason
    where = f"{redact_url(settings.effective_redis_url)} ({reason})"
    cache = ContextCache.from_settings(settings)
    try:
        yield cache
    except (ConfigurationError, InvalidPhoneError, InvalidCompanyIdError) as exc:
        die(EXIT_USAGE, str(exc))
    except redis_errors.AuthenticationError as exc:
        die(EXIT_UNREACHABLE, f"Redis at {where} refused the login: {exc}; set REDIS_PASSWORD")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, CacheUnavailableError) as exc:
        die(
            EXIT_UNREACHABLE,
            f"Redis at {where} is unreachable: {str(exc).rstrip('.')}; try `ctxcache doctor`",
        )
    except redis_errors.InvalidResponse as exc:
        die(EXIT_UNREACHABLE, f"{where} does not answer as Redis: {exc}; wrong port or scheme?")
    except redis_errors.RedisError as exc:
        die(EXIT_FAILED, f"Redis at {where} answered with an error: {exc}")
    finally:
        cache.close()


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")
