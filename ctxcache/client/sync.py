"""ContextCache: the cache on redis-py's blocking client.

All cache logic is in :mod:`ctxcache.core` and the methods in
:mod:`ctxcache.client.api`; this shell only runs their steps: round trips as
pipelines (a lone script as one call, no pipeline), pauses with ``sleep``,
loader calls, background refreshes on a small thread pool.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, Unpack

import redis
from redis.exceptions import RedisClusterException

from ctxcache.client.api import CacheMethods, CoreOptions
from ctxcache.client.connection import cluster_failure, connect
from ctxcache.client.steps import FlowRunner, check_routes, command_args, queue_commands
from ctxcache.core.steps import Background, CallLoader, Command, Flow, Pause, RoundTrip, Step
from ctxcache.settings import CacheSettings

__all__ = ["ContextCache"]

T = TypeVar("T")

RedisClient = Any  # redis.Redis, or redis.RedisCluster: both pipeline the same way


class ContextCache(CacheMethods):
    """The full-context cache of one Redis deployment, for threads and processes.

    Reads return ``None`` and writes ``False`` when Redis is unreachable or
    slow; bad input raises a :class:`~ctxcache.errors.CtxCacheError` that is
    also a ``ValueError``. Thread-safe: share one instance per process.
    """

    _connect = staticmethod(connect)

    def __init__(
        self,
        client: RedisClient,
        settings: CacheSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        **options: Unpack[CoreOptions],
    ) -> None:
        """Wrap a redis-py client (built without ``decode_responses``).

        ``settings`` default to the ``CTXCACHE_*`` environment; ``clock`` and
        ``sleep`` are injected by tests; ``layout`` and ``json_default``
        override ``CTXCACHE_COMPANY_SECTIONS`` and ``CTXCACHE_JSON_DEFAULT``.
        """
        super().__init__(client, settings, **options)
        self._sleep = sleep
        self._background: ThreadPoolExecutor | None = None
        self._background_lock = threading.Lock()

    def close(self) -> None:
        """Stop background refreshes, empty the in-process cache, push the last counts
        (its bytes leave the fleet's total), close the connections."""
        if self._background is not None:
            self._background.shutdown(wait=True, cancel_futures=True)
        self.core.l1.clear()
        self.flush_stats()
        self.client.close()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()

    def __enter__(self) -> ContextCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, flow: Flow[T]) -> T:
        """Run a flow of the core to its end with blocking I/O."""
        runner = FlowRunner(flow)
        while (step := runner.next()) is not None:
            with runner:  # what a step raises goes to the flow (fail-open, release locks)
                runner.answer = self._answer(step)
        return runner.result

    def _answer(self, step: Step) -> Any:
        if isinstance(step, RoundTrip):
            commands = step.commands
            if len(commands) == 1 and commands[0].script is not None and not self.core.cluster:
                return [self._call_script(commands[0])]
            try:
                pipe = self.client.pipeline(transaction=False)
                checks = queue_commands(pipe, step.commands)
                results = pipe.execute(raise_on_error=False)
            except RedisClusterException as exc:  # a slot map being rebuilt: Redis unusable
                raise cluster_failure(exc) from exc
            return check_routes(pipe, checks, results) if checks else results
        if isinstance(step, CallLoader):
            return _call_loader(step)
        if isinstance(step, Pause):
            self._sleep(step.seconds)
            return None
        if isinstance(step, Background):
            self._pool().submit(self.run, step.flow)
            return None
        raise TypeError(f"unknown step {step!r}")

    def _call_script(self, command: Command) -> Any:
        """One script call on a pooled connection, with no pipeline built around it.

        A hit with every part in the in-process cache is this one call; the
        pipeline's bookkeeping was a third of its time. As in a pipeline, an
        error the server answered is returned, not raised.
        """
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(*command_args(command))
            return connection.read_response()
        except redis.ResponseError as exc:  # the whole reply was read: the connection is clean
            return exc
        except BaseException:
            # A timeout, an interrupt: the reply may still come. Sentinel's connections
            # do not close themselves on a failed read; a pooled one would hand this
            # reply to the next caller.
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _pool(self) -> ThreadPoolExecutor:
        with self._background_lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(2, thread_name_prefix="ctxcache-refresh")
            return self._background

    def run_guarded(self, operation: str, target: str, call: Callable[[], T]) -> T:
        """Run a Redis ``call`` through the breaker, logging and error counters.

        For code beside the cache (metrics, tools) that must know whether the
        call happened: raises :class:`~ctxcache.CacheUnavailableError` when it
        did not. ``target`` names what is touched, for the log; never a raw phone.
        """
        from ctxcache.errors import CacheUnavailableError

        if not self.breaker.allow():
            raise CacheUnavailableError(f"redis {operation} on {target} skipped: breaker open")
        try:
            result = call()
        except redis.RedisError as exc:
            self.breaker.record_failure()
            raise CacheUnavailableError(f"redis {operation} on {target} failed: {exc}") from exc
        except BaseException:
            self.breaker.release_trial()
            raise
        self.breaker.record_success()
        return result


def _call_loader(step: CallLoader) -> Any:
    result = step.function(*step.args)
    if inspect.isawaitable(result):  # an async loader: this client cannot await it
        if inspect.iscoroutine(result):
            result.close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"the loader {step.function!r} is asynchronous: ContextCache calls plain"
            " functions; await it with AsyncContextCache"
        )
    return result
