"""Every error ctxcache raises derives from :class:`CtxCacheError`.

Errors about bad input also derive from :class:`ValueError`, so callers that
already catch ``ValueError`` around user input keep working. Errors carry the
context they are about, with phone numbers masked: exception messages end up
in logs.
"""

from __future__ import annotations

__all__ = [
    "CacheUnavailableError",
    "ConfigurationError",
    "ContextTooLargeError",
    "CtxCacheError",
    "InvalidCompanyIdError",
    "InvalidContextError",
    "InvalidPhoneError",
    "InvalidTTLError",
    "InvalidUrlError",
    "InvalidationFailedError",
    "MissingKeyError",
    "SectionScopeError",
    "TunnelError",
    "TunnelNotRunningError",
    "UndecodableValueError",
    "UndecryptableValueError",
]


class CtxCacheError(Exception):
    """Base class of every ctxcache error."""

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's own pickling replays only ``args``, which would fail on the
        # keyword-only fields below; process pools and Celery results pickle errors.
        return (_rebuild_error, (type(self), self.args, self.__dict__))


def _rebuild_error(
    cls: type[CtxCacheError], args: tuple[object, ...], state: dict[str, object]
) -> CtxCacheError:
    error = cls.__new__(cls, *args)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConfigurationError(CtxCacheError):
    """A setting is invalid or a dotted path does not resolve.

    Raised at start-up; ``variable`` names the environment variable to fix.
    """

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class InvalidUrlError(ConfigurationError, ValueError):
    """A Redis or broker URL that its client library would misread or refuse.

    The message says which part is wrong (never the password); the settings
    prefix it with the variable's name.
    """


class InvalidPhoneError(CtxCacheError, ValueError):
    """A phone number cannot be normalized to E.164.

    ``masked`` is the offending input with most digits hidden.
    """

    def __init__(self, message: str, *, masked: str) -> None:
        super().__init__(message)
        self.masked = masked


class InvalidCompanyIdError(CtxCacheError, ValueError):
    """A company id is not a positive integer (or a string of digits)."""

    def __init__(self, message: str, *, company_id: object) -> None:
        super().__init__(message)
        self.company_id = company_id


class InvalidTTLError(CtxCacheError, ValueError):
    """A TTL is not a positive number of seconds."""


class InvalidContextError(CtxCacheError, ValueError):
    """A context is not a JSON object or holds values JSON cannot encode.

    Raised before anything is written, so a value already cached stays.
    ``path`` locates the offending value (``services[3].price``) when known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SectionScopeError(CtxCacheError, ValueError):
    """A section was given where its scope does not allow it.

    An unknown company section in an update, a company section passed to a
    client update, or a loader that returns one where only client sections
    belong. Raised before anything is written.
    """


class ContextTooLargeError(InvalidContextError):
    """A context's serialized JSON exceeds the configured cap."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message, path=None)
        self.size = size
        self.limit = limit


class UndecodableValueError(CtxCacheError):
    """A value read from Redis cannot be decoded (corrupted or unknown version).

    The cache treats it as a miss and removes it; it never reaches callers of
    the get/load API.
    """


class UndecryptableValueError(UndecodableValueError):
    """An encrypted value cannot be opened (tampered, copied from another key, sealed with a key
    not configured), or a plain value was read while encryption is required.

    Handled as any undecodable value: a counted miss. The message never holds the value.
    """


class CacheUnavailableError(CtxCacheError):
    """Redis could not be used for a step that must not be dropped.

    Raised by the Celery tasks so that the invalidation is retried.
    """


class InvalidationFailedError(CtxCacheError):
    """Neither the broker nor Redis took an invalidation after a booking.

    The booking hooks raise it rather than lose the invalidation silently;
    the stale context then lives at most until its TTL ends.
    """


class TunnelError(CtxCacheError):
    """The developer SSH tunnel (``ctxcache tunnel``) could not be started or managed.

    The message carries ssh's own last error line when there is one.
    """


class TunnelNotRunningError(TunnelError):
    """``ctxcache tunnel stop`` found no tunnel that it started."""


class MissingKeyError(UndecryptableValueError):
    """A sealed value or task argument names a key this process does not hold.

    Unlike a tampered value it may open elsewhere (a process with the key, or
    this one once configured): a queued invalidation is retried, not dropped.
    """
