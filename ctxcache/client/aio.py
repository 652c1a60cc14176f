"""AsyncContextCache: the cache on ``redis.asyncio``, for aiogram, FastAPI and other asyncio bots.

The same methods as :class:`~ctxcache.ContextCache` (from
:mod:`ctxcache.client.api`), as coroutines, on the same I/O-free core: this
shell only runs the core's steps. Round trips are pipelines (a lone script
one call) awaited on the event loop, pauses ``asyncio.sleep``, a loader is awaited when it is a
coroutine function and run in a thread otherwise (a blocking database call
never stalls the loop), and background refreshes are tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

from redis.exceptions import RedisClusterException, ResponseError

from ctxcache.client.api import CacheMethods, CoreOptions
from ctxcache.client.connection import cluster_failure, connect_async
from ctxcache.client.steps import FlowRunner, check_routes, command_args, queue_commands
from ctxcache.core.steps import Background, CallLoader, Command, Flow, Pause, RoundTrip, Step
from ctxcache.settings import CacheSettings

__all__ = ["AsyncContextCache"]

logger = logging.getLogger("ctxcache")

T = TypeVar("T")

RedisClient = Any  # redis.asyncio.Redis, or redis.asyncio.RedisCluster


class AsyncContextCache(CacheMethods):
    """The full-context cache for asyncio programs: every cache method is a coroutine.

    The same guarantees as :class:`~ctxcache.ContextCache`: reads give
    ``None`` and writes ``False`` when Redis fails (fail-open), bad input
    raises a :class:`~ctxcache.errors.CtxCacheError` (when awaited), and a
    load-through loads once across coroutines, threads and processes alike.
    One instance per event loop: redis-py's asyncio connections belong to the
    loop that opened them.
    """

    _connect = staticmethod(connect_async)

    def __init__(
        self,
        client: RedisClient,
        settings: CacheSettings | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **options: Unpack[CoreOptions],
    ) -> None:
        """Wrap a ``redis.asyncio`` client (built without ``decode_responses``).

        ``sleep`` (awaited for the load lock's polls) and ``clock`` are
        injected by tests; ``layout`` and ``json_default`` as for the sync client.
        """
        super().__init__(client, settings, **options)
        self._sleep = sleep
        self._background: set[asyncio.Task[Any]] = set()  # kept: the loop holds tasks weakly

    async def aclose(self) -> None:
        """Let background refreshes finish, empty the in-process cache, push the last
        counts (its bytes leave the fleet's total), close the connections.

        As ``ContextCache.close`` waits for its refresh threads: a refresh
        holds a load lock that others would otherwise wait out.
        """
        await asyncio.gather(*self._background, return_exceptions=True)
        self.core.l1.clear()
        await self.flush_stats()
        await self.client.aclose()
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def __aenter__(self) -> AsyncContextCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(self, flow: Flow[T]) -> T:
        """Run a flow of the core to its end on the event loop."""
        runner = FlowRunner(flow)
        while (step := runner.next()) is not None:
            with runner:  # a cancellation too: the flow releases its locks, then re-raises
                runner.answer = await self._answer(step)
        return runner.result

    async def _answer(self, step: Step) -> Any:
        if isinstance(step, RoundTrip):
            commands = step.commands
            if len(commands) == 1 and commands[0].script is not None and not self.core.cluster:
                return [await self._call_script(commands[0])]
            if self.core.cluster:
                try:  # the slot map is read at the first use; a routed command needs it
                    await self.client.initialize()
                except RedisClusterException as exc:
                    raise cluster_failure(exc) from exc
            try:
                pipe = self.client.pipeline(transaction=False)
                checks = queue_commands(pipe, step.commands)
                results = await pipe.execute(raise_on_error=False)
            except RedisClusterException as exc:  # a slot map being rebuilt: Redis unusable
                raise cluster_failure(exc) from exc
            return check_routes(pipe, checks, results) if checks else results
        if isinstance(step, CallLoader):
            return await _call_loader(step.function, step.args)
        if isinstance(step, Pause):
            await self._sleep(step.seconds)
            return None
        if isinstance(step, Background):
            task = asyncio.create_task(self.run(step.flow), name="ctxcache-refresh")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return None
        raise TypeError(f"unknown step {step!r}")

    async def _call_script(self, command: Command) -> Any:
        """One script call on a pooled connection, with no pipeline (see the sync client's)."""
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_command(*command_args(command))
            return await connection.read_response()
        except ResponseError as exc:  # the whole reply was read: the connection is clean
            return exc
        except BaseException:  # a timeout, a cancellation: the reply may still come
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)


async def _call_loader(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Await a coroutine function; run anything else in a thread (it may block on a database)."""
    if _is_async(function):
        return await function(*args)
    result = await asyncio.to_thread(function, *args)
    if inspect.isawaitable(result):  # a plain callable that hands back an awaitable
        result = await result
    return result


def _is_async(function: Callable[..., Any]) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)
