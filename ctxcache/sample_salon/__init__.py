"""The sample salon: a SQLite database and a SQL loader of a client's context.

This is the "slow database" the cache sits in front of in the demo and the
worker tests; it is not part of the library. The package's modules, one per
concern:

- :mod:`~ctxcache.sample_salon.schema`: the tables and the figures shared below;
- :mod:`~ctxcache.sample_salon.build`: the deterministic builder of a database;
- :mod:`~ctxcache.sample_salon.database`: where it lives, snapshots and transactions;
- :mod:`~ctxcache.sample_salon.loader`: :class:`SqlContextLoader`, in both loader forms;
- :mod:`~ctxcache.sample_salon.bookings`: creating and cancelling bookings;
- :mod:`~ctxcache.sample_salon.clients`: the VIPs and sample clients of a company.

``CTXCACHE_LOADER=ctxcache.sample_salon:load_context`` and
``CTXCACHE_VIP_SOURCE=ctxcache.sample_salon:vip_clients`` use the database at
``$CTXCACHE_SAMPLE_DB``.
"""

from ctxcache.sample_salon.bookings import cancel_booking, create_booking
from ctxcache.sample_salon.build import create_sample_database
from ctxcache.sample_salon.clients import list_vip_clients, sample_clients, vip_clients
from ctxcache.sample_salon.database import DEFAULT_DB_ENV, default_db_path
from ctxcache.sample_salon.loader import (
    CLIENT_SECTIONS,
    COMPANY_WIDE_SECTIONS,
    CONTEXT_SECTIONS,
    SqlContextLoader,
    load_context,
)
from ctxcache.sample_salon.schema import (
    CONVERSATION_LIMIT,
    FIRST_COMPANY_ID,
    FIRST_PHONE,
    SAMPLE_TODAY,
    SCHEDULE_DAYS,
    SCHEMA_VERSION,
    SERVICES_PER_COMPANY,
    STAFF_PER_COMPANY,
    VISIT_HISTORY_LIMIT,
)

__all__ = [
    "CLIENT_SECTIONS",
    "COMPANY_WIDE_SECTIONS",
    "CONTEXT_SECTIONS",
    "CONVERSATION_LIMIT",
    "DEFAULT_DB_ENV",
    "FIRST_COMPANY_ID",
    "FIRST_PHONE",
    "SAMPLE_TODAY",
    "SCHEDULE_DAYS",
    "SCHEMA_VERSION",
    "SERVICES_PER_COMPANY",
    "STAFF_PER_COMPANY",
    "VISIT_HISTORY_LIMIT",
    "SqlContextLoader",
    "cancel_booking",
    "create_booking",
    "create_sample_database",
    "default_db_path",
    "list_vip_clients",
    "load_context",
    "sample_clients",
    "vip_clients",
]
