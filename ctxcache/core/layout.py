"""Sections and scopes: which parts of a context are cached once per company.

A context is a JSON object whose top-level keys are its *sections*. The
company-scope sections (by default the Node service's ``company``,
``services``, ``staff``, ``staffSchedules`` and ``businessStats``) are the same
for every client of a company, so they are cached once per company; every
other section is client scope and lives in the client's own part. A read
merges the parts back into the dict the loader returned, in its key order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ctxcache.errors import ConfigurationError, SectionScopeError

__all__ = [
    "DEFAULT_BOOKING_SECTIONS",
    "DEFAULT_COMPANY_SECTIONS",
    "ClientPart",
    "SectionLayout",
    "parse_section_list",
]

DEFAULT_COMPANY_SECTIONS: Final = (
    "company",
    "services",
    "staff",
    "staffSchedules",
    "businessStats",
)
# What a booking changes for everyone: the free slots and the figures derived from bookings.
DEFAULT_BOOKING_SECTIONS: Final = ("staffSchedules", "businessStats")

_MAX_SECTION_NAME = 200


def parse_section_list(value: str | Iterable[str], *, variable: str) -> tuple[str, ...]:
    """A comma-separated (or iterable) list of section names; refuses empty lists and repeats."""
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else list(value)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise ConfigurationError(
            f"{variable} must name at least one section, comma-separated, without empty names",
            variable=variable,
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(
            f"{variable} names {', '.join(repeated)} more than once", variable=variable
        )
    for name in names:
        if len(name) > _MAX_SECTION_NAME or any(c in name for c in "{}*?[]\\ \t\r\n"):
            raise ConfigurationError(
                f"{variable}: {name[:40]!r} is not a usable section name "
                "(braces, glob characters and white space are not allowed)",
                variable=variable,
            )
    return tuple(names)


@dataclass(frozen=True, slots=True)
class ClientPart:
    """A client's own part of a context, and how to merge the company sections back in.

    ``order`` is the key order of the whole context; ``company`` names the
    company sections it was stored with: a read needs every one of them.
    """

    data: dict[str, Any]
    company: tuple[str, ...]
    order: tuple[str, ...]

    def meta(self) -> dict[str, list[str]]:
        return {"company": list(self.company), "order": list(self.order)}

    @classmethod
    def from_meta(cls, data: dict[str, Any], meta: Mapping[str, Any]) -> ClientPart:
        """Rebuild from a stored part; raises ``ValueError`` if the metadata is malformed."""
        company, order = meta.get("company"), meta.get("order")
        if not isinstance(company, list) or not isinstance(order, list):
            raise ValueError("client part metadata lacks its section lists")
        if not all(isinstance(n, str) for n in (*company, *order)):
            raise ValueError("client part metadata holds a non-string section name")
        if set(order) != set(company) | set(data) or set(company) & set(data):
            raise ValueError("client part metadata does not match its sections")
        return cls(data=data, company=tuple(company), order=tuple(order))

    def merge(self, sections: Mapping[str, Any]) -> dict[str, Any]:
        """The whole context, in its stored key order; ``sections`` must hold every company one."""
        data = self.data
        return {name: sections[name] if name in sections else data[name] for name in self.order}


@dataclass(frozen=True, slots=True)
class SectionLayout:
    """Which sections are company scope, and which of those a booking changes."""

    company_sections: tuple[str, ...] = DEFAULT_COMPANY_SECTIONS
    booking_sections: tuple[str, ...] = DEFAULT_BOOKING_SECTIONS

    def __post_init__(self) -> None:
        company = parse_section_list(self.company_sections, variable="CTXCACHE_COMPANY_SECTIONS")
        booking = parse_section_list(self.booking_sections, variable="CTXCACHE_BOOKING_SECTIONS")
        unknown = [name for name in booking if name not in company]
        if unknown:
            raise ConfigurationError(
                f"CTXCACHE_BOOKING_SECTIONS: {', '.join(unknown)} is not a company section "
                f"(CTXCACHE_COMPANY_SECTIONS={','.join(company)})",
                variable="CTXCACHE_BOOKING_SECTIONS",
            )
        object.__setattr__(self, "company_sections", company)
        object.__setattr__(self, "booking_sections", booking)

    def is_company(self, name: str) -> bool:
        return name in self.company_sections

    def split(self, context: Mapping[str, Any]) -> tuple[ClientPart, dict[str, Any]]:
        """The client's part and the company sections of ``context``."""
        company: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for name, value in context.items():
            (company if name in self.company_sections else data)[name] = value
        part = ClientPart(data=data, company=tuple(company), order=tuple(context))
        return part, company

    def company_names(self, names: Iterable[str] | None) -> tuple[str, ...]:
        """``names`` checked to be company sections (``None``: all of them), in layout order."""
        if names is None:
            return self.company_sections
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in wanted if not isinstance(n, str) or n not in self.company_sections]
        if unknown:
            raise SectionScopeError(
                f"not company sections: {', '.join(map(repr, unknown))[:200]}; "
                f"the company sections are {', '.join(self.company_sections)}"
            )
        return tuple(n for n in self.company_sections if n in wanted)

    def check_client_sections(self, names: Iterable[str], *, source: str) -> None:
        """Raise :class:`SectionScopeError` if any of ``names`` is a company section."""
        misplaced = [name for name in names if name in self.company_sections]
        if misplaced:
            raise SectionScopeError(
                f"{source} has company section(s) {', '.join(misplaced)} where only client "
                "sections belong; company sections are loaded and updated per company"
            )
