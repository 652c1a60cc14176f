"""The sample salon's schema and the figures both its builder and its loader rely on."""

from __future__ import annotations

from datetime import date
from typing import Final

__all__ = [
    "CONVERSATION_LIMIT",
    "FIRST_COMPANY_ID",
    "FIRST_PHONE",
    "SAMPLE_TODAY",
    "SCHEDULE_DAYS",
    "SCHEMA_SQL",
    "SCHEMA_VERSION",
    "SERVICES_PER_COMPANY",
    "STAFF_PER_COMPANY",
    "VISIT_HISTORY_LIMIT",
]

SCHEMA_VERSION: Final = 1
FIRST_COMPANY_ID: Final = 962302
FIRST_PHONE: Final = "+79001234567"
# Dates are relative to this fixed day, so two builds with the same seed are identical.
SAMPLE_TODAY: Final = date(2026, 11, 25)
SERVICES_PER_COMPANY: Final = 160
STAFF_PER_COMPANY: Final = 18
SCHEDULE_DAYS: Final = 14
CONVERSATION_LIMIT: Final = 80  # messages in a context (and of a chatty client)
VISIT_HISTORY_LIMIT: Final = 30

SCHEMA_SQL = """
CREATE TABLE companies (id INTEGER PRIMARY KEY, title TEXT NOT NULL, address TEXT NOT NULL,
    timezone TEXT NOT NULL, working_hours TEXT NOT NULL, settings TEXT NOT NULL);
CREATE TABLE clients (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    phone TEXT NOT NULL, name TEXT NOT NULL, is_vip INTEGER NOT NULL DEFAULT 0,
    conversation_summary TEXT NOT NULL DEFAULT '', UNIQUE (company_id, phone));
CREATE TABLE services (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    title TEXT NOT NULL, category TEXT NOT NULL, price_min INTEGER NOT NULL,
    price_max INTEGER NOT NULL, duration INTEGER NOT NULL, description TEXT NOT NULL,
    active INTEGER NOT NULL, weight REAL NOT NULL);
CREATE TABLE staff (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    name TEXT NOT NULL, specialization TEXT NOT NULL, rating REAL NOT NULL, bio TEXT NOT NULL,
    avatar TEXT NOT NULL);
CREATE TABLE staff_services (staff_id INTEGER NOT NULL REFERENCES staff,
    service_id INTEGER NOT NULL REFERENCES services, PRIMARY KEY (staff_id, service_id));
CREATE TABLE bookings (id INTEGER PRIMARY KEY, company_id INTEGER NOT NULL REFERENCES companies,
    client_id INTEGER NOT NULL REFERENCES clients, service_id INTEGER NOT NULL REFERENCES services,
    staff_id INTEGER NOT NULL REFERENCES staff, start TEXT NOT NULL, cost INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('completed', 'booked', 'cancelled')));
CREATE TABLE staff_schedules (id INTEGER PRIMARY KEY,
    company_id INTEGER NOT NULL REFERENCES companies, staff_id INTEGER NOT NULL REFERENCES staff,
    slot_start TEXT NOT NULL, booking_id INTEGER REFERENCES bookings,
    UNIQUE (staff_id, slot_start));
CREATE TABLE messages (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL REFERENCES clients,
    role TEXT NOT NULL, text TEXT NOT NULL, ts TEXT NOT NULL);
CREATE TABLE client_preferences (client_id INTEGER PRIMARY KEY REFERENCES clients,
    favorite_service_id INTEGER, favorite_staff_id INTEGER, preferred_time TEXT,
    notes TEXT NOT NULL DEFAULT '');
CREATE INDEX bookings_client ON bookings (client_id, start);
CREATE INDEX schedules_free ON staff_schedules (company_id, booking_id, slot_start);
CREATE INDEX messages_client ON messages (client_id, ts);
"""
