"""``ctxcache tunnel start | status | stop``: the spec's ``maintain-redis-tunnel.sh`` as commands.

Exit codes: 0 ok; 1 the tunnel could not be started or stopped (or none is
running); 2 bad configuration; ``status``: 4 no tunnel process (or ssh is
reconnecting), 5 the local port does not listen, 6 Redis does not answer PING
through it.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, NoReturn

import orjson
import typer

from ctxcache.errors import ConfigurationError, TunnelError, TunnelNotRunningError
from ctxcache.ops.tunnel.control import start_tunnel, stop_tunnel, tunnel_status
from ctxcache.settings import CacheSettings

__all__ = ["app"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    help=(
        "The developer SSH tunnel to Redis: 127.0.0.1:CTXCACHE_TUNNEL_LOCAL_PORT (6380) through "
        "CTXCACHE_TUNNEL_HOST, supervised and re-established when it drops."
    ),
    no_args_is_help=True,
)

AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts, nothing else")]


def _settings(ctx: typer.Context) -> CacheSettings:
    # The root command's --url (if any) says which password PING uses.
    url = getattr(ctx.find_root().obj, "url", None)
    try:
        return CacheSettings.load(redis_url=url) if url else CacheSettings.load()
    except ConfigurationError as exc:
        _fail(EXIT_USAGE, str(exc), as_json=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _fail(code: int, message: str, *, as_json: bool) -> NoReturn:
    if as_json:
        _print_json({"ok": False, "error": message})
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def start(
    ctx: typer.Context,
    wait: Annotated[
        float, typer.Option(min=1, max=300, help="seconds to wait for the tunnel to come up")
    ] = 15.0,
    as_json: AsJson = False,
) -> None:
    """Start the supervised tunnel and wait until its port listens. Exit 1 with ssh's error.

    Starting a running tunnel says so and exits 0.
    """
    settings = _settings(ctx)
    try:
        state, already = start_tunnel(settings, wait=wait)
    except ConfigurationError as exc:
        _fail(EXIT_USAGE, str(exc), as_json=as_json)
    except TunnelError as exc:
        _fail(EXIT_FAILED, str(exc), as_json=as_json)
    if as_json:
        _print_json({"ok": True, "already_running": already, "state": state.as_dict()})
        return
    if already:
        typer.echo(
            f"a tunnel is already running: {state.target} (supervisor pid "
            f"{state.supervisor_pid}); `ctxcache tunnel stop` first to change it"
        )
    else:
        typer.echo(
            f"tunnel up: {state.target} (supervisor pid {state.supervisor_pid}, "
            f"ssh pid {state.ssh_pid})"
        )


@app.command()
def status(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(min=0.1, max=30, help="seconds per check")] = 2.0,
    as_json: AsJson = False,
) -> None:
    """Is the tunnel process alive, does its port listen, does Redis answer PING through it?

    Exit 0 all three; 4 no tunnel process (or ssh reconnecting); 5 the local
    port does not listen; 6 Redis does not answer PING (or refuses the password).
    """
    settings = _settings(ctx)
    try:
        result = tunnel_status(settings, timeout=timeout)
    except TunnelError as exc:
        _fail(EXIT_USAGE, str(exc), as_json=as_json)
    if as_json:
        _print_json(result.as_dict())
    else:
        typer.echo(("ok: " if result.ok else "FAIL: ") + result.summary)
    raise typer.Exit(result.code)


@app.command()
def stop(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Stop the tunnel `start` started (and nothing else). Exit 1 if none is running."""
    settings = _settings(ctx)
    try:
        pid = stop_tunnel(settings)
    except TunnelNotRunningError as exc:
        _fail(EXIT_FAILED, str(exc), as_json=as_json)
    except TunnelError as exc:
        _fail(EXIT_USAGE, str(exc), as_json=as_json)
    if as_json:
        _print_json({"ok": True, "stopped_pid": pid})
    else:
        typer.echo(f"tunnel stopped (supervisor pid {pid})")
