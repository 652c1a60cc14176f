"""What every ``ctxcache`` command shares: ``--url``/``-v``, settings, the Redis session, output.

Exit codes: 0 ok; 1 a check failed or nothing was found; 2 bad input or
configuration; 3 Redis (or the broker) unreachable. With ``--json`` every
error is also a JSON object on stdout, ``{"error": "...", "exit_code": N}``.
"""

import contextlib
import itertools
import logging
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import orjson
import typer
from redis import exceptions as redis_errors
from typer.core import TyperGroup

import ctxcache
from ctxcache.client.sync import ContextCache
from ctxcache.errors import (
    CacheUnavailableError,
    ConfigurationError,
    InvalidCompanyIdError,
    InvalidPhoneError,
    SectionScopeError,
)
from ctxcache.ops.hints import auth_hint, tls_hint
from ctxcache.settings import CacheSettings, redact_url
from ctxcache.urls import parse_cache_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "AsJson",
    "CommandGroup",
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

Phone = Annotated[
    str,
    typer.Argument(metavar="PHONE", help="client phone, any format (+79001234567, 8 900 ...)"),
]
Company = Annotated[
    str, typer.Argument(metavar="COMPANY_ID", help="company id, a positive integer")
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts, nothing else")]


@dataclass
class State:
    """What the options before the command leave for it (``ctx.obj``)."""

    url: str | None = None


def url_option(ctx: typer.Context) -> str | None:
    """The ``--url`` given before the command, if any."""
    return ctx.obj.url if isinstance(ctx.obj, State) else None


def print_json(data: Any) -> None:
    """One line of JSON on stdout, for ``--json``."""
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


# Whether the running command line has --json; set by CommandGroup.main for die().
_json_errors: ContextVar[bool] = ContextVar("ctxcache_json_errors", default=False)


def _json_wanted(argv: Sequence[str]) -> bool:
    options = argv[: list(argv).index("--")] if "--" in argv else argv
    return "--json" in options


class CommandGroup(TyperGroup):
    """The top-level group: errors become JSON under ``--json``; ``-v 2`` gets a hint.

    Typer reports its own errors (a bad option value, an unknown command)
    before any command runs, so they are caught here, where the arguments
    are still at hand.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        as_json = _json_errors.set(_json_wanted(argv))
        try:
            result = super().main(
                argv, prog_name, complete_var, False, windows_expand_args, **extra
            )
        except typer.TyperException as exc:  # typer's usage and parameter errors
            if not standalone_mode:
                raise
            _report(exc, argv)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILED)
        finally:
            _json_errors.reset(as_json)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else EXIT_OK)


def _report(exc: typer.TyperException, argv: list[str]) -> None:
    """Show a usage error as typer would, with a hint for ``-v N``; as JSON too under --json."""
    for flag, value in itertools.pairwise(argv):
        # `ctxcache -v 2 stats` reads 2 as the command.
        if flag in ("-v", "--verbose") and value.isdigit() and f"'{value}'" in exc.message:
            exc.message += " (-v takes no number: repeat it, -v for info, -vv for debug)"
            break
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"Error: {exc.format_message()}", err=True)
    if _json_wanted(argv):
        print_json({"error": exc.format_message(), "exit_code": exc.exit_code})


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ctxcache {ctxcache.__version__}")
        raise typer.Exit(EXIT_OK)


def global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", help="Redis URL, instead of CTXCACHE_REDIS_URL"),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="log more: -v info, -vv debug (on stderr)",
        ),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
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
    """Stop with ``code``: the message on stderr, and as JSON on stdout under ``--json``."""
    typer.echo(f"error: {message}", err=True)
    if _json_errors.get():
        print_json({"error": message, "exit_code": code})
    raise typer.Exit(code)


def load_settings(ctx: typer.Context) -> CacheSettings:
    """The settings, with ``--url`` for the Redis URL; a bad one exits 2 naming its source."""
    url = url_option(ctx)
    if url:
        try:
            parse_cache_url(url)
        except ConfigurationError as exc:
            die(EXIT_USAGE, f"invalid --url: {exc}")
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
    except (ConfigurationError, InvalidPhoneError, InvalidCompanyIdError, SectionScopeError) as exc:
        die(EXIT_USAGE, str(exc))
    except redis_errors.AuthenticationError as exc:
        die(EXIT_UNREACHABLE, f"Redis at {where}: {auth_hint(settings, str(exc))} ({exc})")
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, CacheUnavailableError) as exc:
        advice = tls_hint(settings) or "try `ctxcache doctor`"
        die(EXIT_UNREACHABLE, f"Redis at {where} is unreachable: {str(exc).rstrip('.')}; {advice}")
    except redis_errors.InvalidResponse as exc:
        die(EXIT_UNREACHABLE, f"{where} does not answer as Redis: {exc}; wrong port or scheme?")
    except redis_errors.RedisError as exc:
        die(EXIT_FAILED, f"Redis at {where} answered with an error: {exc}")
    finally:
        cache.close()
