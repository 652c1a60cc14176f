"""The ``ctxcache`` command: look into the cache and operate it from a shell.

Configured like the library, from ``CTXCACHE_*`` variables (``--url`` overrides
``CTXCACHE_REDIS_URL``). Tables for people, ``--json`` for scripts (JSON on
stdout and nothing else, errors too). Exit codes: 0 ok; 1 a check failed or
nothing was found; 2 bad input or configuration; 3 Redis (or the broker)
unreachable.

One module per command group, each with its own ``commands``; :data:`app`
joins them in the order ``ctxcache --help`` lists them.
"""

import typer

from ctxcache.ops.tunnel.commands import app as tunnel_commands

from . import contexts, stats, tools, vip, warm
from .base import CommandGroup, global_options

__all__ = ["app", "main"]

app = typer.Typer(
    name="ctxcache",
    help="Inspect and operate the ctxcache full-context cache in Redis.",
    callback=global_options,
    cls=CommandGroup,
    # Plain help: the rich panels print `<bool>` after every flag and `<int>` after -v.
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold a password
)
for _group in (contexts, warm, stats, tools):
    app.add_typer(_group.commands)
app.add_typer(vip.commands, name="vip")
app.add_typer(tunnel_commands, name="tunnel")


def main() -> None:
    """The console script's entry point (``ctxcache = ctxcache.ops.cli:main``)."""
    app(prog_name="ctxcache")  # `python -m ctxcache.ops.cli` too
