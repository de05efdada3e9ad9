"""The test CA's certificate database (SQLite, WAL mode, file mode 0600).

Timestamps are stored as ISO 8601 UTC text (``2025-04-01T03:00:00+00:00``), so they sort as
text. Serial numbers are lowercase hexadecimal without leading zeros. Every write is one
``BEGIN IMMEDIATE`` transaction.

Status transitions: ``good`` → ``revoked`` | ``superseded``; ``superseded`` → ``revoked``;
``revoked`` with reason ``certificateHold`` → ``good`` (release of a hold). Anything else is
refused with :class:`CertificateStatusError`.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.errors import JpkiError, UsageError

__all__ = [
    "AlreadyRevokedError",
    "CertListing",
    "CertRecord",
    "CertificateDB",
    "CertificateStatusError",
    "RevokedRow",
    "Status",
    "UnknownCertificateError",
    "reason_value",
    "serial_hex",
]

Kind = Literal["sign", "auth"]
Status = Literal["good", "revoked", "superseded"]
KINDS = ("sign", "auth")
STATUSES = ("good", "revoked", "superseded")
#: Revocation reasons: the values of cryptography's ``x509.ReasonFlags`` (CRL reason codes).
REASONS = frozenset(flag.value for flag in x509.ReasonFlags)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('sign', 'auth')),
    card        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'good' CHECK (status IN ('good', 'revoked', 'superseded')),
    revoked_at  TEXT,
    reason      TEXT,
    der         BLOB NOT NULL,
    issued_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_card ON certificates (card, kind);
CREATE INDEX IF NOT EXISTS certificates_status ON certificates (kind, status);
CREATE TABLE IF NOT EXISTS links (
    old_serial  TEXT NOT NULL REFERENCES certificates (serial),
    new_serial  TEXT NOT NULL REFERENCES certificates (serial),
    linked_at   TEXT NOT NULL,
    PRIMARY KEY (old_serial, new_serial)
);
CREATE INDEX IF NOT EXISTS links_new ON links (new_serial);
"""

# Revocation additions. ``invalidity_date`` is added to ``certificates`` by a migration (see
# ``CertificateDB._migrate``) so that databases made before it keep working.
_REVOCATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS crl_numbers (
    kind         TEXT PRIMARY KEY CHECK (kind IN ('sign', 'auth')),
    last_number  INTEGER NOT NULL,
    this_update  TEXT NOT NULL
);
"""


class UnknownCertificateError(JpkiError):
    """No certificate with that serial number is in the database."""


class CertificateStatusError(UsageError):
    """The requested status change is not allowed (e.g. un-revoking a revoked certificate)."""


class AlreadyRevokedError(CertificateStatusError):
    """The certificate is already revoked (only a ``certificateHold`` may be made permanent)."""


class CertListing(NamedTuple):
    """One certificate as ``jpki ca list`` shows it: text only (times as stored, ISO 8601 UTC),
    no DER, so that a million of them stream cheaply (see :meth:`CertificateDB.iter_listing`)."""

    serial: str
    kind: str
    card: str
    status: str
    not_after: str
    revoked_at: str | None
    reason: str | None


class RevokedRow(NamedTuple):
    """A revoked certificate as the CRL needs it (see :meth:`CertificateDB.revoked_entries`).

    ``reason`` is the stored ``x509.ReasonFlags`` value (``keyCompromise``…).
    """

    serial: int
    kind: Kind
    revoked_at: _dt.datetime
    reason: str = x509.ReasonFlags.unspecified.value
    invalidity_date: _dt.datetime | None = None


def serial_hex(serial: int | str) -> str:
    """Normalise a serial (int, or hex text with or without ``0x``/colons) to lowercase hex."""
    if isinstance(serial, bool):
        raise UsageError("a serial number is an int or hex text")
    if isinstance(serial, int):
        value = serial
    elif isinstance(serial, str):
        text = serial.strip().lower().replace(":", "")
        if text.startswith("0x"):
            text = text[2:]
        try:
            value = int(text, 16)
        except ValueError:
            raise UsageError(f"not a hexadecimal serial number: {serial!r}") from None
    else:
        raise UsageError("a serial number is an int or hex text")
    if value <= 0:
        raise UsageError("serial numbers are positive")
    return format(value, "x")


def reason_value(reason: str | x509.ReasonFlags) -> str:
    """A CRL reason as stored: the ``x509.ReasonFlags`` value (``keyCompromise``…)."""
    if isinstance(reason, x509.ReasonFlags):
        return reason.value
    if reason in REASONS:
        return reason
    try:
        return x509.ReasonFlags[reason].value
    except KeyError:
        raise UsageError(f"unknown revocation reason {reason!r}") from None


def _iso(when: _dt.datetime) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("timestamps must be timezone-aware")
    return when.astimezone(_dt.UTC).isoformat(timespec="seconds")


def _parse(text: str | None) -> _dt.datetime | None:
    return None if text is None else _dt.datetime.fromisoformat(text)


@dataclasses.dataclass(frozen=True)
class CertRecord:
    """One row of ``certificates``."""

    serial: str
    kind: Kind
    card: str
    subject: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    status: Status
    revoked_at: _dt.datetime | None
    reason: str | None
    der: bytes = dataclasses.field(repr=False)
    issued_at: _dt.datetime
    #: When the key is known or suspected to have been compromised (CRL invalidity date).
    invalidity_date: _dt.datetime | None = None

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    def certificate(self) -> x509.Certificate:
        """The stored certificate, parsed."""
        return x509.load_der_x509_certificate(self.der)

    @property
    def issuance_id(self) -> str | None:
        """The CN of the subject (the opaque issuance id), if any."""
        attrs = self.certificate().subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else None

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> CertRecord:
        return cls(
            serial=row["serial"],
            kind=row["kind"],
            card=row["card"],
            subject=row["subject"],
            not_before=_dt.datetime.fromisoformat(row["not_before"]),
            not_after=_dt.datetime.fromisoformat(row["not_after"]),
            status=row["status"],
            revoked_at=_parse(row["revoked_at"]),
            reason=row["reason"],
            der=bytes(row["der"]),
            issued_at=_dt.datetime.fromisoformat(row["issued_at"]),
            invalidity_date=_parse(row["invalidity_date"]),
        )


_ALLOWED: dict[str, frozenset[str]] = {
    "good": frozenset({"revoked", "superseded"}),
    "superseded": frozenset({"revoked"}),
    "revoked": frozenset(),  # except the release of a certificate_hold, see set_status
}


class CertificateDB:
    """Certificates issued by the test CA, their status and renewal links.

    Safe to share between threads (one connection behind a lock) and between processes (WAL,
    busy timeout). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        """Open (or create, 0600) the database at ``path``. ``durable=False`` lets a commit
        return before it reaches the disk (SQLite ``synchronous=NORMAL`` in WAL mode: still
        atomic and consistent, but the last commits may be lost at a power cut): for the
        throwaway CAs of test fixtures, where the fsync of every commit is the slow part."""
        self.path = Path(path)
        if not self.path.exists():
            # Create the file 0600 before SQLite opens it; SQLite gives its -wal and -shm
            # files the same mode.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        with self._transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            self._migrate(conn)

    # -- plumbing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CertificateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- certificates

    def record(
        self,
        cert: x509.Certificate,
        kind: Kind,
        card: str,
        *,
        issued_at: _dt.datetime | None = None,
    ) -> CertRecord:
        """Store a newly issued certificate with status ``good``. ``issued_at`` defaults to its
        notBefore. A serial already present is refused (UsageError)."""
        if kind not in KINDS:
            raise UsageError(f"kind must be 'sign' or 'auth', not {kind!r}")
        if not card:
            raise UsageError("card id must not be empty")
        serial = serial_hex(cert.serial_number)
        row = (
            serial,
            kind,
            card,
            cert.subject.rfc4514_string(),
            _iso(cert.not_valid_before_utc),
            _iso(cert.not_valid_after_utc),
            cert.public_bytes(Encoding.DER),
            _iso(issued_at if issued_at is not None else cert.not_valid_before_utc),
        )
        try:
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO certificates (serial, kind, card, subject, not_before, not_after,"
                    " status, der, issued_at) VALUES (?, ?, ?, ?, ?, ?, 'good', ?, ?)",
                    row,
                )
        except sqlite3.IntegrityError:
            raise UsageError(f"serial {serial} is already recorded") from None
        found = self.get(serial)
        assert found is not None
        return found

    def get(self, serial: int | str) -> CertRecord | None:
        """The record for ``serial`` (int or hex), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM certificates WHERE serial = ?", (serial_hex(serial),)
            ).fetchone()
        return None if row is None else CertRecord._from_row(row)

    def list(
        self,
        kind: Kind | None = None,
        card: str | None = None,
        status: Status | None = None,
    ) -> list[CertRecord]:
        """Records matching every given filter, oldest issuance first."""
        where, params = self._filters(kind, card, status)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM certificates{where} ORDER BY issued_at, serial", params
            ).fetchall()
        return [CertRecord._from_row(r) for r in rows]

    def _filters(self, kind: str | None, card: str | None,
                 status: str | None) -> tuple[str, builtins.list[str]]:
        clauses, params = [], []
        for column, value in (("kind", kind), ("card", card), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def count(self, kind: Kind | None = None, card: str | None = None,
              status: Status | None = None) -> int:
        """How many records match every given filter."""
        where, params = self._filters(kind, card, status)
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM certificates{where}", params).fetchone()[0])

    def iter_listing(self, kind: Kind | None = None, card: str | None = None,
                     status: Status | None = None, *, batch: int = 5000) -> Iterator[CertListing]:
        """The records of :meth:`list` (same filters and order) as :class:`CertListing` text
        rows, fetched ``batch`` at a time from one query: nothing is parsed, no certificate is
        read, so a CA with a million revoked entries lists in a few seconds, in flat memory."""
        where, params = self._filters(kind, card, status)
        with self._lock:
            cursor = self._conn.execute(
                "SELECT serial, kind, card, status, not_after, revoked_at, reason FROM certificates"
                f"{where} ORDER BY issued_at, serial", params)
        try:
            while True:
                with self._lock:
                    rows = cursor.fetchmany(batch)
                if not rows:
                    return
                for row in rows:
                    yield CertListing(*row)
        finally:
            cursor.close()

    def serials_with_prefix(self, prefix: str, *, limit: int = 10) -> builtins.list[str]:
        """Up to ``limit`` stored serials (lowercase hex) that start with the hex ``prefix``
        (case, colons and a ``0x`` ignored), in order; UsageError if it is not hex."""
        # stored serials have no leading zeros
        text = prefix.strip().lower().replace(":", "").removeprefix("0x").lstrip("0")
        if not text or any(c not in "0123456789abcdef" for c in text):
            raise UsageError(f"not a hexadecimal serial number (prefix): {prefix!r}")
        with self._lock:
            rows = self._conn.execute(
                "SELECT serial FROM certificates WHERE serial >= ? AND serial < ? ORDER BY serial"
                " LIMIT ?", (text, text + "g", limit)).fetchall()
        return [row[0] for row in rows]

    def set_status(
        self,
        serial: int | str,
        status: Status,
        *,
        revoked_at: _dt.datetime | None = None,
        reason: str | x509.ReasonFlags | None = None,
    ) -> CertRecord:
        """Change a certificate's status and return the new record.

        ``revoked`` needs ``revoked_at``; ``reason`` is a CRL reason (an ``x509.ReasonFlags``,
        its value such as ``keyCompromise`` or its name such as ``key_compromise``; stored as the
        value), default ``unspecified``. ``superseded`` may carry a reason; ``good`` clears both.
        Raises UnknownCertificateError or CertificateStatusError.
        """
        if status not in STATUSES:
            raise UsageError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        reason = None if reason is None else reason_value(reason)
        key = serial_hex(serial)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, reason FROM certificates WHERE serial = ?", (key,)
            ).fetchone()
            if row is None:
                raise UnknownCertificateError(f"no certificate with serial {key}")
            current = row["status"]
            releasing_hold = (
                current == "revoked"
                and status == "good"
                and row["reason"] == x509.ReasonFlags.certificate_hold.value
            )
            if status not in _ALLOWED[current] and not releasing_hold:
                raise CertificateStatusError(f"certificate {key} is {current}; cannot make it {status}")
            values: tuple[str, str | None, str | None]
            if status == "revoked":
                if revoked_at is None:
                    raise UsageError("revoking needs revoked_at")
                values = (status, _iso(revoked_at), reason or x509.ReasonFlags.unspecified.value)
            elif status == "superseded":
                values = (status, None, reason)
            else:
                values = (status, None, None)
            conn.execute(
                "UPDATE certificates SET status = ?, revoked_at = ?, reason = ?,"
                " invalidity_date = NULL WHERE serial = ?",
                (*values, key),
            )
        found = self.get(key)
        assert found is not None
        return found

    # -- renewal links

    def link(self, old_serial: int | str, new_serial: int | str, *, linked_at: _dt.datetime) -> None:
        """Record that ``new_serial`` renews (replaces) ``old_serial``. Both must be known."""
        old, new = serial_hex(old_serial), serial_hex(new_serial)
        if old == new:
            raise UsageError("a certificate cannot renew itself")
        try:
            with self._transaction() as conn:
                for key in (old, new):
                    if conn.execute(
                        "SELECT 1 FROM certificates WHERE serial = ?", (key,)
                    ).fetchone() is None:
                        raise UnknownCertificateError(f"no certificate with serial {key}")
                conn.execute(
                    "INSERT OR IGNORE INTO links (old_serial, new_serial, linked_at) VALUES (?, ?, ?)",
                    (old, new, _iso(linked_at)),
                )
        except sqlite3.IntegrityError as exc:  # pragma: no cover - guarded above
            raise UsageError(str(exc)) from None

    def successors(self, serial: int | str) -> builtins.list[str]:  # (``list`` is a method here)
        """Serials that renew ``serial`` (oldest link first)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT new_serial FROM links WHERE old_serial = ? ORDER BY linked_at, new_serial",
                (serial_hex(serial),),
            ).fetchall()
        return [r[0] for r in rows]

    def predecessors(self, serial: int | str) -> builtins.list[str]:
        """Serials that ``serial`` renews (oldest link first)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT old_serial FROM links WHERE new_serial = ? ORDER BY linked_at, old_serial",
                (serial_hex(serial),),
            ).fetchall()
        return [r[0] for r in rows]

    # -- revocation

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring a database made by an older version up to date (inside the open transaction)."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(certificates)")}
        if "invalidity_date" not in columns:
            conn.execute("ALTER TABLE certificates ADD COLUMN invalidity_date TEXT")
        for statement in _REVOCATION_SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)

    def revoke(
        self,
        serial: int | str,
        *,
        revoked_at: _dt.datetime,
        reason: str | x509.ReasonFlags = x509.ReasonFlags.unspecified,
        invalidity_date: _dt.datetime | None = None,
    ) -> CertRecord:
        """Revoke a ``good`` or ``superseded`` certificate and return the new record.

        A certificate on hold (revoked with ``certificateHold``) may be revoked for good with
        another reason; the new time and reason replace the hold's. ``removeFromCRL`` is not a
        reason to revoke. Raises UnknownCertificateError, AlreadyRevokedError or UsageError.
        """
        reason = reason_value(reason)
        if reason == x509.ReasonFlags.remove_from_crl.value:
            raise UsageError("removeFromCRL only appears in delta CRLs; release a hold instead")
        hold = x509.ReasonFlags.certificate_hold.value
        values = (
            _iso(revoked_at),
            reason,
            None if invalidity_date is None else _iso(invalidity_date),
        )
        key = serial_hex(serial)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, reason FROM certificates WHERE serial = ?", (key,)
            ).fetchone()
            if row is None:
                raise UnknownCertificateError(f"no certificate with serial {key}")
            if row["status"] == "revoked" and (row["reason"] != hold or reason == hold):
                raise AlreadyRevokedError(
                    f"certificate {key} is already revoked ({row['reason']})"
                )
            conn.execute(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?,"
                " invalidity_date = ? WHERE serial = ?",
                (*values, key),
            )
        found = self.get(key)
        assert found is not None
        return found

    def revoked_entries(self, kind: Kind) -> builtins.list[RevokedRow]:
        """Every revoked certificate of ``kind``, in the order they were recorded."""
        return builtins.list(self.iter_revoked(kind))

    def iter_revoked(self, kind: Kind, *, page: int = 10_000) -> Iterator[RevokedRow]:
        """Every revoked certificate of ``kind``, in the order they were recorded, read
        ``page`` rows at a time (the lock is not held between pages), so that a CRL of a
        million entries streams from the database without holding it all in memory."""
        if kind not in KINDS:
            raise UsageError(f"kind must be 'sign' or 'auth', not {kind!r}")
        parse = _dt.datetime.fromisoformat
        unspecified = x509.ReasonFlags.unspecified.value
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT rowid, serial, revoked_at, reason, invalidity_date FROM certificates"
                    " WHERE kind = ? AND status = 'revoked' AND rowid > ? ORDER BY rowid LIMIT ?",
                    (kind, after, page),
                ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            for _, serial, revoked_at, reason, invalid in rows:
                yield RevokedRow(
                    int(serial, 16),
                    kind,
                    parse(revoked_at),
                    reason or unspecified,
                    None if invalid is None else parse(invalid),
                )

    def count_revoked(self, kind: Kind) -> int:
        """How many certificates of ``kind`` are revoked."""
        with self._lock:
            return int(
                self._conn.execute(
                    "SELECT COUNT(*) FROM certificates WHERE kind = ? AND status = 'revoked'",
                    (kind,),
                ).fetchone()[0]
            )

    def bulk_insert_revoked(
        self,
        rows: Iterable[RevokedRow | tuple[Any, ...]],
        *,
        card: str = "bulk",
        not_after: _dt.datetime | None = None,
    ) -> int:
        """Insert many synthetic revoked records in one transaction (benchmarks and tests).

        Each row is a :class:`RevokedRow` (or a tuple ``(serial, kind, revoked_at[, reason[,
        invalidity_date]])``). The records hold no certificate (an empty ``der``, an empty
        subject): ``not_before`` and ``issued_at`` are the revocation time, ``not_after`` is
        ``not_after`` (default: the revocation time). Returns the number of rows inserted; a
        bad or duplicate row rolls back the whole batch (UsageError).
        """
        if not card:
            raise UsageError("card id must not be empty")
        end = None if not_after is None else _iso(not_after)
        unspecified = x509.ReasonFlags.unspecified.value
        count = 0

        def values() -> Iterator[tuple[object, ...]]:
            nonlocal count
            for row in rows:
                serial, kind, revoked_at, *rest = row
                if kind not in KINDS:
                    raise UsageError(f"kind must be 'sign' or 'auth', not {kind!r}")
                given: list[Any] = [*rest, None, None]
                reason = unspecified if given[0] is None else reason_value(given[0])
                invalid = given[1]
                when = _iso(revoked_at)
                count += 1
                yield (
                    serial_hex(serial),
                    kind,
                    card,
                    when,
                    end or when,
                    when,
                    reason,
                    None if invalid is None else _iso(invalid),
                    when,
                )

        try:
            with self._transaction() as conn:
                conn.executemany(
                    "INSERT INTO certificates (serial, kind, card, subject, not_before, not_after,"
                    " status, revoked_at, reason, invalidity_date, der, issued_at)"
                    " VALUES (?, ?, ?, '', ?, ?, 'revoked', ?, ?, ?, x'', ?)",
                    values(),
                )
        except sqlite3.IntegrityError as exc:
            raise UsageError(f"bulk insert refused, nothing inserted: {exc}") from None
        return count

    def next_crl_number(self, kind: Kind, *, this_update: _dt.datetime) -> int:
        """Allocate the next CRL number of ``kind`` (1, 2, …; persisted, never reused)."""
        if kind not in KINDS:
            raise UsageError(f"kind must be 'sign' or 'auth', not {kind!r}")
        when = _iso(this_update)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT last_number FROM crl_numbers WHERE kind = ?", (kind,)
            ).fetchone()
            number = 1 if row is None else int(row[0]) + 1
            conn.execute(
                "INSERT INTO crl_numbers (kind, last_number, this_update) VALUES (?, ?, ?)"
                " ON CONFLICT (kind) DO UPDATE SET last_number = excluded.last_number,"
                " this_update = excluded.this_update",
                (kind, number, when),
            )
        return number

    def last_crl_number(self, kind: Kind) -> int | None:
        """The CRL number last allocated for ``kind``, or None before the first CRL."""
        with self._lock:
            row = self._conn.execute(
                "SELECT last_number FROM crl_numbers WHERE kind = ?", (kind,)
            ).fetchone()
        return None if row is None else int(row[0])
