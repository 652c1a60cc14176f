"""The key layout: the one place that builds Redis keys.

The full context lives exactly at ``full_context:<company_id>:<E.164 phone>``
(the Node service's layout), behind an optional namespace prefix applied here
and nowhere else: the Redis client never gets a prefix of its own, so the
spec's double-prefix bug cannot happen.

Every other key of a client uses the full-context key as its Redis Cluster
hash tag, ``{full_context:962302:+79001234567}:gen``, so all of a client's
keys share one hash slot and each Lua script touches a single slot.

With a key secret (``CTXCACHE_KEY_SECRET``) the phone in every client key is
replaced by ``HMAC-SHA256(secret, E.164 phone)`` cut to 32 hex digits
(:func:`ctxcache.core.crypto.phone_digest`): ``full_context:962302:3f1c...``.
No other key holds a phone (VIP registry members are sealed, see
:mod:`ctxcache.client.vip`); the masked name logs show still comes from the phone.

A company's sections, shared by all its clients, live under the hash tag
``{company_context:962302}``: one slot per company, another than its
clients'. No script touches both; a read that needs both sends one command
per slot in a single pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctxcache.core.crypto import phone_digest
from ctxcache.core.phone import mask_phone
from ctxcache.errors import ConfigurationError, InvalidCompanyIdError

__all__ = ["ClientKeys", "CompanyKeys", "KeyLayout", "validate_company_id"]

FULL_CONTEXT_NAMESPACE = "full_context"
COMPANY_CONTEXT_NAMESPACE = "company_context"
VIP_REGISTRY_NAME = "ctxcache:vip"
WARMUP_LOCK_NAME = "ctxcache:warmup:lock"
STATS_NAME = "ctxcache:stats"

# Redis integers are signed 64-bit; larger ids cannot be a database key either.
_MAX_COMPANY_ID = 2**63 - 1
_FORBIDDEN_PREFIX_CHARS = frozenset("{}*?[]\\ \t\r\n")


def validate_company_id(company_id: object) -> int:
    """Return ``company_id`` as a positive int, or raise :class:`InvalidCompanyIdError`."""
    value: int | None = None
    if isinstance(company_id, int) and not isinstance(company_id, bool):
        value = company_id
    elif isinstance(company_id, str) and company_id.isascii() and company_id.isdigit():
        value = int(company_id) if len(company_id) <= 20 else None  # int() refuses 4,300+ digits
    if value is None or not 0 < value <= _MAX_COMPANY_ID:
        raise InvalidCompanyIdError(
            f"company_id must be a positive integer, got {_shown(company_id)}",
            company_id=company_id,
        )
    return value


def _shown(value: object) -> str:
    """``repr(value)`` for a message, cut: a 5,000-digit input must not fill the terminal."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text):,} characters)"


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a key prefix, or None if it can."""
    if _FORBIDDEN_PREFIX_CHARS.intersection(prefix):
        # Braces would change the Cluster hash tag; glob characters the SCAN pattern.
        return f"{prefix!r} must not contain braces, glob characters or white space"
    return None


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """All keys of one client; built only by :meth:`KeyLayout.client`."""

    full_context: str
    generation: str
    lock: str
    dialog: str
    preferences: str
    masked: str  # the full-context key with the phone masked, for logs

    @property
    def lease(self) -> tuple[str, str, str]:
        """KEYS of the lease and store scripts: full context, generation, lock."""
        return (self.full_context, self.generation, self.lock)


@dataclass(frozen=True, slots=True)
class CompanyKeys:
    """All keys of one company's shared sections; built only by :meth:`KeyLayout.company`."""

    tag: str  # "{company_context:<id>}", the Cluster hash tag of every key below
    generations: str  # hash: section name -> generation
    lock: str  # the load lock of the company's sections
    label: str  # for logs: "company_context:<id>"

    def section(self, name: str) -> str:
        """The key of one company section (names are checked by the layout)."""
        return f"{self.tag}:section:{name}"

    def sections(self, names: tuple[str, ...]) -> list[str]:
        return [self.section(name) for name in names]


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Builds every key ctxcache uses, with ``prefix`` applied exactly once."""

    prefix: str = ""
    # CTXCACHE_KEY_SECRET: phones in keys become HMACs. Never in a repr.
    secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        problem = prefix_problem(self.prefix)
        if problem:
            raise ConfigurationError(
                f"CTXCACHE_KEY_PREFIX: {problem}", variable="CTXCACHE_KEY_PREFIX"
            )

    def full_context(self, company_id: int, phone: str) -> str:
        """``<prefix>full_context:<company_id>:<phone>``; inputs must be normalized."""
        return f"{self.prefix}{FULL_CONTEXT_NAMESPACE}:{company_id}:{self.phone_slot(phone)}"

    def phone_slot(self, phone: str) -> str:
        """What stands for ``phone`` in keys: itself, or its HMAC with a key secret."""
        return phone if self.secret is None else phone_digest(self.secret, phone)

    def client(self, company_id: int, phone: str) -> ClientKeys:
        """Keys of one client; inputs must already be validated and normalized."""
        main = self.full_context(company_id, phone)
        tag = "{" + main + "}"
        return ClientKeys(
            full_context=main,
            generation=f"{tag}:gen",
            lock=f"{tag}:lock",
            dialog=f"{tag}:dialog",
            preferences=f"{tag}:prefs",
            masked=f"{self.prefix}{FULL_CONTEXT_NAMESPACE}:{company_id}:{mask_phone(phone)}",
        )

    def company(self, company_id: int) -> CompanyKeys:
        """Keys of one company's sections; ``company_id`` must already be validated."""
        label = f"{self.prefix}{COMPANY_CONTEXT_NAMESPACE}:{company_id}"
        tag = "{" + label + "}"
        return CompanyKeys(tag=tag, generations=f"{tag}:gen", lock=f"{tag}:lock", label=label)

    @property
    def company_section_pattern(self) -> str:
        """SCAN pattern matching every company section key (and nothing else)."""
        return "{" + f"{self.prefix}{COMPANY_CONTEXT_NAMESPACE}:*" + "}:section:*"

    @property
    def full_context_pattern(self) -> str:
        """SCAN pattern matching every full-context key (and nothing else)."""
        return f"{self.prefix}{FULL_CONTEXT_NAMESPACE}:*"

    @property
    def vip_registry(self) -> str:
        return f"{self.prefix}{VIP_REGISTRY_NAME}"

    @property
    def warmup_lock(self) -> str:
        return f"{self.prefix}{WARMUP_LOCK_NAME}"

    @property
    def stats(self) -> str:
        return f"{self.prefix}{STATS_NAME}"
