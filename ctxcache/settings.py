"""One typed settings object, read from ``CTXCACHE_*`` environment variables."""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import phonenumbers
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctxcache.core.crypto import parse_keys
from ctxcache.core.keys import prefix_problem
from ctxcache.core.layout import DEFAULT_BOOKING_SECTIONS, DEFAULT_COMPANY_SECTIONS, SectionLayout
from ctxcache.core.wire import (
    DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_COMPRESSION_THRESHOLD,
    DEFAULT_MAX_CONTEXT_BYTES,
    JsonDefault,
)
from ctxcache.errors import ConfigurationError, InvalidUrlError
from ctxcache.protocols import resolve_callable
from ctxcache.urls import check_broker_url, default_broker_url, parse_cache_url

__all__ = [
    "DEVELOPMENT_PORT",
    "DIALOG_CONTEXT_TTL",
    "FULL_CONTEXT_TTL",
    "PREFERENCES_TTL",
    "PRODUCTION_PORT",
    "CacheSettings",
    "redact_url",
]

FULL_CONTEXT_TTL = 12 * 60 * 60
DIALOG_CONTEXT_TTL = 30 * 24 * 60 * 60
PREFERENCES_TTL = 365 * 24 * 60 * 60

# The spec's ports: locally an SSH tunnel on 6380, on the server Redis itself.
DEVELOPMENT_PORT = 6380
PRODUCTION_PORT = 6379
ENV_PREFIX = "CTXCACHE_"


class CacheSettings(BaseSettings):
    """Everything ctxcache can be told; each field is ``CTXCACHE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: str | None = None
    """Wins when set; ``rediss://`` for TLS. Otherwise ``env`` picks the port."""
    redis_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_PASSWORD", "CTXCACHE_REDIS_PASSWORD")
    )
    redis_username: str | None = None
    """An ACL user (Redis 6+); with ``REDIS_PASSWORD`` as its password."""
    env: Literal["development", "production"] = "development"
    key_prefix: str = ""

    # -- Security (README "Security") ------------------------------------------------------
    # TLS for rediss:// URLs (the cache's and a derived Redis broker's): the CA that
    # signed the server's certificate, and a client certificate for mutual TLS.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Values sealed with AES-GCM: base64 keys, comma-separated; the first seals, all open.
    encryption_keys: SecretStr | None = None
    # Plain values read back are misses (only encrypted ones are trusted).
    require_encryption: bool = False
    # Keys carry HMAC-SHA256(secret, phone) instead of the phone: a new keyspace.
    key_secret: SecretStr | None = None
    # Phones in task messages (safety nets, VIP warm-ups) go sealed; needs a key.
    # Turn on once every worker runs a version that opens them (tasks/sealed.py).
    seal_task_phones: bool = False

    full_context_ttl: int = Field(default=FULL_CONTEXT_TTL, gt=0)
    dialog_context_ttl: int = Field(default=DIALOG_CONTEXT_TTL, gt=0)
    preferences_ttl: int = Field(default=PREFERENCES_TTL, gt=0)
    generation_ttl: int = Field(default=7 * 24 * 60 * 60, gt=0)

    socket_timeout: float = Field(default=0.25, gt=0, le=60)
    connect_timeout: float = Field(default=0.25, gt=0, le=60)
    breaker_threshold: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=5.0, gt=0)

    # Invalidations wait for replicas (WAIT) before they count as done, so a
    # failover cannot lose them: "auto" asks for 1 where the server has replicas
    # connected, a number asks for that many always (0: never wait).
    invalidation_replicas: int | Literal["auto"] = Field(default="auto")
    invalidation_wait_timeout: float = Field(default=0.1, gt=0, le=60)

    lock_ttl: float = Field(default=30.0, gt=0)
    lock_wait: float = Field(default=10.0, ge=0)

    compression_threshold: int = Field(default=DEFAULT_COMPRESSION_THRESHOLD, ge=0)
    compression_level: int = Field(default=DEFAULT_COMPRESSION_LEVEL, ge=1, le=22)
    max_context_bytes: int = Field(default=DEFAULT_MAX_CONTEXT_BYTES, gt=0)
    phone_region: str = "RU"

    # Celery side (tasks/ and celeryconfig.py).
    broker_url: str | None = None
    broker_master_name: str | None = None
    """The master a ``sentinel://`` broker's sentinels watch (kombu's ``master_name``)."""
    broker_key_prefix: str = ""
    """Prefix of every key a Redis broker writes (kombu's ``global_keyprefix``)."""
    loader: str | None = None
    vip_source: str | None = None
    warmup_interval: float = Field(default=600.0, gt=0)
    warmup_refresh_threshold: int = Field(default=3600, ge=0)
    warmup_chunk_size: int = Field(default=50, ge=1)
    visibility_timeout: float = Field(default=3600.0, gt=0)
    # Redis broker, workers consuming ctxcache.invalidate alone: a killed worker's
    # invalidations come back after this many seconds (see celeryconfig.py).
    invalidate_visibility_timeout: float = Field(default=30.0, ge=1)

    # The sectioned layout: sections cached once per company (comma-separated),
    # and those of them a booking changes. A bad list fails at start-up.
    company_sections: str = ",".join(DEFAULT_COMPANY_SECTIONS)
    booking_sections: str = ",".join(DEFAULT_BOOKING_SECTIONS)
    # package.module:function turning values orjson cannot encode (Decimal...) into JSON.
    json_default: str | None = None

    # The in-process cache: bytes of JSON it may hold (0 turns it off), and
    # whether callers get private copies or shared read-only sections. The
    # default shares the company sections alone: a repeated hit then costs
    # 0.3x dogpile.cache's against 0.9x in "copy" (benchmarks, l1 suite).
    l1_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    l1_mode: Literal["copy", "shared-company", "shared"] = "shared-company"
    # Early refresh (XFetch): a part is reloaded in the background when
    # now - load_time * beta * ln(rand) passes its expiry; 0 turns it off.
    early_refresh_beta: float = Field(default=1.0, ge=0, le=100)
    # Stale-while-revalidate: parts live this many seconds past their TTL, and a
    # load-through read in that grace gets the part at once while one refresh
    # reloads it in the background. Never past an invalidation. 0 turns it off.
    stale_grace: float = Field(default=0.0, ge=0, le=7 * 24 * 60 * 60)

    # Metrics: counters are pushed to Redis at most this often per process.
    stats_flush_interval: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    publish_timeout: float = Field(default=2.0, gt=0)

    # -- Developer tunnel (`ctxcache tunnel`, ctxcache/ops/tunnel/) -------------------------
    # ssh -N -L 127.0.0.1:<tunnel_local_port>:<tunnel_redis_host>:<tunnel_redis_port> to the
    # bastion <tunnel_user>@<tunnel_host>:<tunnel_port>. The host is required only to start.
    tunnel_host: str | None = None
    tunnel_user: str | None = None
    tunnel_port: int = Field(default=22, ge=1, le=65535)
    tunnel_identity: str | None = None
    tunnel_redis_host: str = "127.0.0.1"
    """Redis as the bastion sees it."""
    tunnel_redis_port: int = Field(default=PRODUCTION_PORT, ge=1, le=65535)
    tunnel_local_port: int = Field(default=DEVELOPMENT_PORT, ge=1, le=65535)
    tunnel_strict_host_key_checking: Literal["yes", "accept-new"] = "accept-new"
    tunnel_known_hosts_file: str | None = None
    tunnel_alive_interval: int = Field(default=15, ge=1, le=3600)
    tunnel_runtime_dir: str | None = None
    """Pid, state and log files; default ``$XDG_RUNTIME_DIR/ctxcache`` or a private temp dir."""

    @field_validator(
        "tunnel_host",
        "tunnel_user",
        "tunnel_identity",
        "tunnel_known_hosts_file",
        "tunnel_runtime_dir",
        mode="before",
    )
    @classmethod
    def _blank_tunnel_value_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tunnel_host", "tunnel_user", "tunnel_redis_host")
    @classmethod
    def _ssh_word(cls, value: str | None) -> str | None:
        # These become ssh arguments: a leading "-" would be read as an option.
        if value is not None and (
            not value or value.startswith("-") or any(c.isspace() or c == "@" for c in value)
        ):
            raise ValueError("must be a plain host or user name (no spaces, '@' or leading '-')")
        return value

    @field_validator(
        "encryption_keys",
        "key_secret",
        "redis_username",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        # Checked now: a wrong path would otherwise surface as an SSL error on the first command.
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value!r}")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _usable_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keys(value.get_secret_value())  # the message names a key by position only
        return value

    @field_validator("key_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes (32 random bytes in base64 is good)")
        return value

    @field_validator("seal_task_phones")
    @classmethod
    def _sealing_needs_a_key(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("encryption_keys") is None and not info.data.get("key_secret"):
            raise ValueError("true needs CTXCACHE_ENCRYPTION_KEYS or CTXCACHE_KEY_SECRET")
        return value

    @field_validator("require_encryption")
    @classmethod
    def _required_needs_keys(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("encryption_keys") is None:
            raise ValueError("true needs CTXCACHE_ENCRYPTION_KEYS")
        return value

    def tls_options(self) -> dict[str, str]:
        """redis-py's TLS options from ``CTXCACHE_TLS_*``; the server is always verified."""
        options = {"ssl_cert_reqs": "required"}
        if self.tls_ca_file:
            options["ssl_ca_certs"] = self.tls_ca_file
        if self.tls_cert_file:
            options["ssl_certfile"] = self.tls_cert_file
        if self.tls_key_file:
            options["ssl_keyfile"] = self.tls_key_file
        return options

    def encryption_key_list(self) -> list[bytes]:
        """The raw keys of ``CTXCACHE_ENCRYPTION_KEYS`` (none when unset), the sealing one first."""
        if self.encryption_keys is None:
            return []
        return parse_keys(self.encryption_keys.get_secret_value())

    def key_secret_bytes(self) -> bytes | None:
        """``CTXCACHE_KEY_SECRET`` as bytes, or None when keys carry phones."""
        return self.key_secret.get_secret_value().encode() if self.key_secret else None

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r}; use a code such as RU, KZ or DE")
        return region

    @field_validator("key_prefix", "broker_key_prefix")
    @classmethod
    def _usable_prefix(cls, value: str) -> str:
        problem = prefix_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _usable_layout(self) -> CacheSettings:
        self.section_layout()  # raises ConfigurationError naming the variable
        return self

    @field_validator("invalidation_replicas", mode="before")
    @classmethod
    def _replicas(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, str) and not (value.strip().isdigit() and int(value) <= 16):
            raise ValueError("must be auto or a number of replicas from 0 to 16")
        return value

    @model_validator(mode="after")
    def _consistent_ha(self) -> CacheSettings:
        # Checked here, at start-up, rather than when a worker connects.
        explicit = "invalidation_wait_timeout" in self.model_fields_set  # else it adapts
        if explicit and self.invalidation_wait_timeout >= self.socket_timeout:
            raise ConfigurationError(
                "invalid ctxcache setting: CTXCACHE_INVALIDATION_WAIT_TIMEOUT: must be shorter"
                f" than CTXCACHE_SOCKET_TIMEOUT ({self.socket_timeout:g} s), or the wait for"
                " replicas would time the connection out",
                variable="CTXCACHE_INVALIDATION_WAIT_TIMEOUT",
            )
        sentinel = self.broker_url and self.broker_url.lower().startswith("sentinel://")
        if sentinel and not self.broker_master_name:
            raise ConfigurationError(
                "invalid ctxcache setting: CTXCACHE_BROKER_MASTER_NAME: must be set for a"
                " sentinel:// broker: the name of the master its sentinels watch"
                " (e.g. mymaster)",
                variable="CTXCACHE_BROKER_MASTER_NAME",
            )
        return self

    def section_layout(self) -> SectionLayout:
        """The layout of sections and scopes that ``CTXCACHE_*_SECTIONS`` describe."""
        return SectionLayout(
            tuple(self.company_sections.split(",")), tuple(self.booking_sections.split(","))
        )

    def resolve_json_default(self) -> JsonDefault | None:
        """The function ``CTXCACHE_JSON_DEFAULT`` names, if any (imported now)."""
        if not self.json_default:
            return None
        function: JsonDefault = resolve_callable(
            self.json_default, variable="CTXCACHE_JSON_DEFAULT"
        )
        return function

    @field_validator(
        "redis_url", "broker_url", "loader", "vip_source", "json_default", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CTXCACHE_REDIS_URL= in an env file means "not set", not "a bad URL".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url", "broker_url")
    @classmethod
    def _valid_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Every part checked now (ctxcache.urls), so a typo stops the start, not a later call.
        if value is not None:
            value = value.strip()
            check = parse_cache_url if info.field_name == "redis_url" else check_broker_url
            check(value)
        return value

    @field_validator("lock_wait", "stale_grace")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value == float("inf"):
            raise ValueError("must be a finite number of seconds")
        return value

    @classmethod
    def load(cls, **overrides: Any) -> CacheSettings:
        """Read the environment; a bad value raises :class:`ConfigurationError` naming it."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                variable = "REDIS_PASSWORD" if field == "redis_password" else _env_name(field)
                problems.append(f"{variable}: {error['msg'].removeprefix('Value error, ')}")
            first = str(exc.errors()[0]["loc"][0]) if exc.errors() else None
            raise ConfigurationError(
                "invalid ctxcache setting: " + "; ".join(problems),
                variable=_env_name(first) if first else None,
            ) from None

    @property
    def effective_redis_url(self) -> str:
        """The URL in force: ``CTXCACHE_REDIS_URL``, else the port ``CTXCACHE_ENV`` implies."""
        if self.redis_url:
            return self.redis_url
        port = PRODUCTION_PORT if self.env == "production" else DEVELOPMENT_PORT
        return f"redis://localhost:{port}/0"

    @property
    def effective_broker_url(self) -> str:
        """``CTXCACHE_BROKER_URL``, else the cache's server on a neighbouring database.

        Fine for development. In production give the broker its own server: an
        LRU-evicting cache may evict broker keys (queued invalidations).
        """
        if self.broker_url:
            return self.broker_url
        password = self.redis_password.get_secret_value() if self.redis_password else None
        try:
            return default_broker_url(
                parse_cache_url(self.effective_redis_url),
                password,
                fallback_username=self.redis_username,
                tls=self.tls_options(),
            )
        except InvalidUrlError as exc:  # a Cluster cache: Celery needs a broker of its own
            raise ConfigurationError(
                f"invalid ctxcache setting: CTXCACHE_BROKER_URL: {exc}",
                variable="CTXCACHE_BROKER_URL",
            ) from None

    @property
    def effective_broker_master_name(self) -> str | None:
        """The master name of a ``sentinel://`` broker: the setting, else the cache's own."""
        if self.broker_master_name:
            return self.broker_master_name
        if self.broker_url:
            return None
        return parse_cache_url(self.effective_redis_url).master_name

    @property
    def broker_reason(self) -> str:
        if self.broker_url:
            return "CTXCACHE_BROKER_URL is set"
        return "the default: the cache's Redis server, next database number"

    @property
    def url_reason(self) -> str:
        """Why :attr:`effective_redis_url` is what it is, for ``doctor`` and logs."""
        if self.redis_url:
            return "CTXCACHE_REDIS_URL is set"
        if self.env == "production":
            return "CTXCACHE_ENV=production: Redis on this host, port 6379"
        return "CTXCACHE_ENV=development (the default): the SSH tunnel port 6380"


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:  # redis-py also takes ?password=...
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))
