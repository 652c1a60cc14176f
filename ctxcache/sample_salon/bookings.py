"""Bookings in the sample salon: taking a free slot and giving it back."""

from __future__ import annotations

from pathlib import Path

from ctxcache.sample_salon.database import write_transaction

__all__ = ["cancel_booking", "create_booking"]


def create_booking(
    path: str | Path | None,
    phone: str,
    company_id: int,
    *,
    service_id: int | None = None,
    staff_id: int | None = None,
    start: str | None = None,
) -> int:
    """Book the earliest free slot matching the given filters; returns the booking id.

    An unknown phone in a known company is registered as a new client.
    """
    with write_transaction(path) as conn:
        if conn.execute("SELECT 1 FROM companies WHERE id = ?", (company_id,)).fetchone() is None:
            raise LookupError(f"company {company_id} not found")
        conn.execute(
            "INSERT OR IGNORE INTO clients (company_id, phone, name) VALUES (?, ?, '')",
            (company_id, phone),
        )
        slot = conn.execute(
            "SELECT sl.id AS slot_id, sl.staff_id, sl.slot_start, sv.id AS service_id,"
            " (sv.price_min + sv.price_max) / 2 AS cost FROM staff_schedules sl"
            " JOIN staff_services ss ON ss.staff_id = sl.staff_id"
            " JOIN services sv ON sv.id = ss.service_id AND sv.active = 1"
            " WHERE sl.company_id = :cid AND sl.booking_id IS NULL"
            " AND (:svc IS NULL OR sv.id = :svc) AND (:st IS NULL OR sl.staff_id = :st)"
            " AND (:start IS NULL OR sl.slot_start = :start)"
            " ORDER BY sl.slot_start, sl.staff_id, sv.id LIMIT 1",
            {"cid": company_id, "svc": service_id, "st": staff_id, "start": start},
        ).fetchone()
        if slot is None:
            raise ValueError(
                f"no free slot in company {company_id} for service={service_id}"
                f" staff={staff_id} start={start}"
            )
        booking_id: int = conn.execute(
            "INSERT INTO bookings (company_id, client_id, service_id, staff_id, start, cost,"
            " status) SELECT ?, id, ?, ?, ?, ?, 'booked' FROM clients"
            " WHERE company_id = ? AND phone = ? RETURNING id",
            (
                company_id,
                slot["service_id"],
                slot["staff_id"],
                slot["slot_start"],
                slot["cost"],
                company_id,
                phone,
            ),
        ).fetchone()[0]
        conn.execute(
            "UPDATE staff_schedules SET booking_id = ? WHERE id = ?", (booking_id, slot["slot_id"])
        )
        return booking_id


def cancel_booking(path: str | Path | None, booking_id: int) -> None:
    """Mark an upcoming booking cancelled and free its slot (no-op if already cancelled)."""
    with write_transaction(path) as conn:
        row = conn.execute("SELECT status FROM bookings WHERE id = ?", (booking_id,)).fetchone()
        if row is None:
            raise LookupError(f"booking {booking_id} not found")
        if row["status"] == "completed":
            raise ValueError(f"booking {booking_id} is already completed")
        conn.execute("UPDATE bookings SET status = 'cancelled' WHERE id = ?", (booking_id,))
        conn.execute(
            "UPDATE staff_schedules SET booking_id = NULL WHERE booking_id = ?", (booking_id,)
        )
