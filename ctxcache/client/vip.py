"""The VIP registry: the clients whose contexts the warm-up keeps in the cache.

One sorted set, all scores 0, members ``<company_id>:<E.164 phone>``: lexical
order groups a company's clients together, so one company is a ZRANGEBYLEX
and paging through everyone is ZRANGE with LIMIT, without loading the whole
set at once.
"""

from __future__ import annotations

from collections.abc import Iterator

from ctxcache.client.sync import ContextCache
from ctxcache.core.keys import validate_company_id

__all__ = ["VipRegistry"]

_PAGE_SIZE = 500
# An alias, because the method ``list`` shadows the builtin inside the class.
VipList = list[tuple[str, int]]


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
        return bool(self.cache.client.zadd(self.key, {self._member(phone, company_id): 0}))

    def remove(self, phone: str, company_id: int | str) -> bool:
        """Remove a client; True if it was there."""
        return bool(self.cache.client.zrem(self.key, self._member(phone, company_id)))

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
            yield [_parse(member) for member in members]
            offset += len(members)
            if len(members) < page_size:
                return

    def __len__(self) -> int:
        return int(self.cache.client.zcard(self.key))

    def __call__(self) -> Iterator[tuple[str, int]]:
        for page in self.pages():
            yield from page

    def _member(self, phone: str, company_id: int | str) -> str:
        normalized, company = self.cache.identify(phone, company_id)
        return f"{company}:{normalized}"


def _parse(member: bytes | str) -> tuple[str, int]:
    text = member.decode() if isinstance(member, bytes) else member
    company, phone = text.split(":", 1)
    return phone, int(company)
