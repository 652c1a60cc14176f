"""Celery configuration for ctxcache, loaded by ``app.config_from_object("celeryconfig")``.

Lowercase setting names only. Values come from the same ``CTXCACHE_*``
environment as the cache (see README, "Settings").
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from ctxcache.settings import CacheSettings
from ctxcache.urls import broker_tls

INVALIDATE_QUEUE = "ctxcache.invalidate"
WARMUP_QUEUE = "ctxcache.warmup"

_settings = CacheSettings.load()


# Default: the cache's server on the next database number, fine for development.
# In production give the broker its own server: an LRU-evicting cache may evict
# broker keys (queued invalidations).
broker_url = _settings.effective_broker_url
# A rediss:// broker named by CTXCACHE_BROKER_URL gets the CTXCACHE_TLS_* files too
# (the derived URL carries them in its query already); the server is always verified.
if _settings.broker_url and broker_url.startswith("rediss://"):
    broker_use_ssl = broker_tls(_settings.tls_options())


def restore_cadence(visibility_timeout: float) -> dict[str, Any]:
    """How often kombu sweeps for the messages of dead workers (Redis broker).

    It restores the entries of its unacked index older than the visibility
    timeout, every ``interval x throttle`` seconds (100 s by default): a tenth
    of the timeout here, between 1 and 10 s, scanning every time.
    """
    return {
        "unacked_restore_interval": max(1.0, min(10.0, visibility_timeout / 10)),
        "unacked_restore_throttle": 1,
    }


# A message not acknowledged within this many seconds is delivered again (Redis
# broker). Retry delays and time limits below stay well under it.
broker_transport_options: dict[str, Any] = {
    "visibility_timeout": _settings.visibility_timeout,
    **restore_cadence(_settings.visibility_timeout),
    # RabbitMQ: wait for the broker to confirm each publish, so a booking hook
    # never reports a queued invalidation the broker did not take (the Redis
    # transport ignores this option).
    "confirm_publish": True,
    "socket_timeout": 5,
    "socket_connect_timeout": _settings.publish_timeout,
}
if broker_url.lower().startswith("sentinel://"):
    # kombu's Sentinel transport: the sentinels of the URL(s) name the master, and
    # the workers follow it through a failover. Celery has no Redis Cluster transport.
    broker_transport_options["master_name"] = _settings.effective_broker_master_name
if _settings.broker_key_prefix:
    # Redis broker: every queue, binding and unacked key starts with the prefix, so
    # two namespaces (the tests', the demo's, a second deployment) can share a
    # database without consuming each other's messages. AMQP ignores it: use a vhost.
    broker_transport_options["global_keyprefix"] = _settings.broker_key_prefix

# A worker that consumes ctxcache.invalidate alone lays these over the options
# above when it starts (tasks/transport.py). The short visibility timeout brings a killed
# worker's invalidations back in seconds instead of an hour. The unacked keys are
# their own because kombu's sweep restores every entry of its index older than
# its own timeout, whatever queue it came from: on the shared index it would
# hand out warm-ups that another worker holds (prefetched behind a long load).
# A stale sweep lock (its holder was killed mid-sweep) blocks the sweeps only
# for a fraction of the timeout, not kombu's default 300 s.
INVALIDATE_TRANSPORT_OPTIONS: dict[str, Any] = {
    "visibility_timeout": _settings.invalidate_visibility_timeout,
    **restore_cadence(_settings.invalidate_visibility_timeout),
    "unacked_key": f"{INVALIDATE_QUEUE}.unacked",
    "unacked_index_key": f"{INVALIDATE_QUEUE}.unacked_index",
    "unacked_mutex_key": f"{INVALIDATE_QUEUE}.unacked_mutex",
    "unacked_mutex_expire": int(max(5, _settings.invalidate_visibility_timeout / 3)),
}
broker_connection_timeout = _settings.publish_timeout
broker_connection_retry_on_startup = True

# JSON only: nothing read from the broker is ever unpickled.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# Nothing reads task results.
task_ignore_result = True
result_backend = None

# One direct exchange per queue: an invalidation is never routed to the warm-up
# queue (or the other way round).
task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in (INVALIDATE_QUEUE, WARMUP_QUEUE)
)
task_default_queue = WARMUP_QUEUE
task_routes = {
    "ctxcache.invalidate_context": {"queue": INVALIDATE_QUEUE},
    "ctxcache.invalidate_company": {"queue": INVALIDATE_QUEUE},
    "ctxcache.warm_vip_contexts": {"queue": WARMUP_QUEUE},
    "ctxcache.warm_company": {"queue": WARMUP_QUEUE},
    "ctxcache.warm_context": {"queue": WARMUP_QUEUE},
}
# Warm-ups take a loader's time each; one prefetched message per process keeps
# a long backlog from sitting on one worker while others idle.
worker_prefetch_multiplier = 1

# Under the visibility timeout, or a running task would be delivered twice. The
# invalidation task is one bounded Redis call; its retry delays stay under the
# shorter invalidation timeout (tasks/app.py).
task_time_limit = min(150.0, 0.9 * _settings.visibility_timeout)
task_soft_time_limit = 0.8 * task_time_limit
worker_send_task_events = False

beat_schedule = {
    "warm-vip-contexts": {
        "task": "ctxcache.warm_vip_contexts",
        "schedule": _settings.warmup_interval,
        # A warm-up that waited a whole interval in the queue is stale: drop it.
        "options": {"expires": _settings.warmup_interval},
    },
}
