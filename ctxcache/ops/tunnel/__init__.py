"""The developer SSH tunnel to Redis: ``ctxcache tunnel start | status | stop``.

- :mod:`.control`: start, stop and status (what the commands and doctor call);
- :mod:`.supervisor`: the detached process that keeps ssh running, with backoff;
- :mod:`.runtime`: the runtime directory, pid and state files, process identity;
- :mod:`.commands`: the typer sub-app.
"""

from ctxcache.ops.tunnel.control import (
    STATUS_NO_PROCESS,
    STATUS_NO_REDIS,
    STATUS_NOT_LISTENING,
    STATUS_OK,
    TunnelConfig,
    TunnelStatus,
    ssh_command,
    start_tunnel,
    stop_tunnel,
    tunnel_status,
)

__all__ = [
    "STATUS_NOT_LISTENING",
    "STATUS_NO_PROCESS",
    "STATUS_NO_REDIS",
    "STATUS_OK",
    "TunnelConfig",
    "TunnelStatus",
    "ssh_command",
    "start_tunnel",
    "stop_tunnel",
    "tunnel_status",
]
