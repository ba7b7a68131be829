"""The platform's timestamps: UTC, ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stamp(at: datetime) -> str:
    """A time as it names objects (reports, labelled rows, retraining files): 20260104T030000Z."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")
