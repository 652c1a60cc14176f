"""The VIP registry: the clients whose contexts the warm-up keeps in the cache.

One sorted set, all scores 0, members ``<company_id>:<E.164 phone>``: lexical
order groups a company's clients together, so one company is a ZRANGEBYLEX
and paging through everyone is ZRANGE with LIMIT, without loading the whole
set at once.

With encryption or hashed keys on, the phone is sealed (``<company_id>:~<base64>``,
deterministic per key so a member is found again, bound to the registry's key
and the company): the warm-up needs the phone back, so it cannot be a hash.
A member sealed with a key no longer configured is skipped with a log line.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

from ctxcache.client.sync import ContextCache
from ctxcache.core.keys import validate_company_id
from ctxcache.errors import UndecryptableValueError

__all__ = ["VipRegistry"]

logger = logging.getLogger("ctxcache")

_PAGE_SIZE = 500
_SEALED = "~"  # E.164 phones start with "+"
# An alias, because the method ``list`` shadows the builtin inside the class.
VipList = list[tuple[str, int]]
Members = list[str]


class VipRegistry:
    """VIP clients kept in Redis; callable, so it is a :class:`~ctxcache.VipSource` too.

    Unlike the cache calls, these raise Redis errors: a registry change that
    silently did nothing would be worse than an error.
    """

    def __init__(self, cache: ContextCache) -> None:
        self.cache = cache
        self.key = cache.keys.vip_registry

    def add(self, phone: str, company_id: int | str) -> bool:
        """Add a client; True if it was not there yet."""
        member, *older = self._members(phone, company_id)
        if not older:
            return bool(self.cache.client.zadd(self.key, {member: 0}))
        # After a key rotation: the member sealed with an older key gives way to the new one.
        pipe = self.cache.client.pipeline(transaction=True)
        pipe.zrem(self.key, *older)
        pipe.zadd(self.key, {member: 0})
        removed, added = pipe.execute()
        return bool(added) and not removed

    def remove(self, phone: str, company_id: int | str) -> bool:
        """Remove a client; True if it was there."""
        return bool(self.cache.client.zrem(self.key, *self._members(phone, company_id)))

    def list(self, company_id: int | str | None = None) -> VipList:
        """All VIPs as (phone, company_id), or those of one company."""
        return [vip for page in self.pages(company_id) for vip in page]

    def pages(
        self, company_id: int | str | None = None, page_size: int = _PAGE_SIZE
    ) -> Iterator[VipList]:
        """The VIPs in pages of at most ``page_size``, for fan-out without a full load."""
        if company_id is None:
            low, high = b"-", b"+"
        else:
            company = validate_company_id(company_id)
            low, high = f"[{company}:".encode(), f"[{company};".encode()  # ";" follows ":"
        offset = 0
        while True:
            members = self.cache.client.zrangebylex(
                self.key, low, high, start=offset, num=page_size
            )
            if not members:
                return
            yield [vip for vip in map(self._parse, members) if vip is not None]
            offset += len(members)
            if len(members) < page_size:
                return

    def __len__(self) -> int:
        return int(self.cache.client.zcard(self.key))

    def __call__(self) -> Iterator[tuple[str, int]]:
        for page in self.pages():
            yield from page

    def _members(self, phone: str, company_id: int | str) -> Members:
        """The client's member as written now, then as older keys sealed it."""
        normalized, company = self.cache.identify(phone, company_id)
        cipher = self.cache.core.member_cipher
        if cipher is None:
            return [f"{company}:{normalized}"]
        aad = self._aad(company)
        return [
            f"{company}:{_SEALED}"
            + base64.urlsafe_b64encode(cipher.seal_fixed(normalized.encode(), aad, kid)).decode()
            for kid in cipher.key_ids
        ]

    def _aad(self, company: int) -> bytes:
        return f"{self.key}\x00{company}".encode()

    def _parse(self, member: bytes | str) -> tuple[str, int] | None:
        text = member.decode() if isinstance(member, bytes) else member
        company, phone = text.split(":", 1)
        if phone.startswith(_SEALED):
            cipher = self.cache.core.member_cipher
            try:
                if cipher is None:
                    raise UndecryptableValueError("member is sealed; no key is configured")
                sealed = base64.urlsafe_b64decode(phone[len(_SEALED) :])
                phone = cipher.open(sealed, self._aad(int(company))).decode()
            except (UndecryptableValueError, ValueError) as exc:
                logger.error("skipping a VIP member of company %s: %s", company, exc)
                return None
        elif self.cache.core.codec.require_encryption:
            logger.error("skipping a plain VIP member of company %s: encryption required", company)
            return None
        return phone, int(company)
