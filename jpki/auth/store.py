"""Challenge stores: where a relying party keeps the challenges it has issued until they are used.

A challenge is issued by ``begin`` and consumed by ``complete``. The store makes it usable
**exactly once**: :meth:`ChallengeStore.take` removes and returns it atomically, so of any number
of concurrent ``take`` calls for one id (threads, processes, server machines) exactly one gets
it, and every other one — and every later one — gets ``None``. A challenge whose
``expires_at`` is not after ``now`` (``now >= expires_at``) is never returned: ``take`` deletes
it and answers ``None``.

Three backends share the :class:`ChallengeStore` protocol:

=========================  ==============================================================
``MemoryStore()``          a dict behind a lock; one process only; bounded (``max_entries``)
``SqliteStore(path)``      one SQLite file (WAL), shared by the processes of one machine
``RedisStore(url)``        a Redis server (>= 6.2 uses GETDEL, older a Lua script), shared by
                           any number of server processes and machines
=========================  ==============================================================

:func:`open_store` builds one from a spec string: ``memory``, ``sqlite:PATH`` or
``redis://HOST[:PORT][/DB][?prefix=KEYPREFIX]`` (also ``rediss://`` for TLS).

Time is an input: ``take`` and ``purge_expired`` are given ``now`` (from the relying party's
injected clock) and compare it with the challenge's own ``expires_at``. The stores read no clock,
except that Redis is also told to drop a key by itself once the challenge's lifetime (plus a
grace period) has passed on the server's clock, so that abandoned challenges never pile up.

This module imports only the standard library and :mod:`jpki.errors`; the Redis client is
imported when a :class:`RedisStore` is made (``pip install 'jpki[auth]'``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Self, runtime_checkable

from jpki.errors import JpkiError, UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import redis

__all__ = [
    "CHALLENGE_ID_BYTES",
    "NONCE_SIZE",
    "PURPOSES",
    "Challenge",
    "ChallengeStore",
    "ChallengeStoreError",
    "DuplicateChallengeError",
    "MalformedChallengeError",
    "MemoryStore",
    "Purpose",
    "RedisStore",
    "SqliteStore",
    "StoreFullError",
    "new_challenge_id",
    "open_store",
]

Purpose = Literal["login", "ekyc"]
#: The purposes a challenge can be issued for.
PURPOSES: Final[tuple[Purpose, ...]] = ("login", "ekyc")
#: Random bytes behind a challenge id (192 bits; the id is their base64url form, 32 characters).
CHALLENGE_ID_BYTES: Final = 24
#: Size of the random nonce the card signs.
NONCE_SIZE: Final = 32
#: Version tag written into :meth:`Challenge.to_json`.
FORMAT_VERSION: Final = 1

# An id is URL-safe base64 text carrying at least 128 bits (22 characters); the upper bound keeps
# a hostile id from becoming a huge database or Redis key.
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{22,128}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)


# --------------------------------------------------------------------------- errors


class ChallengeStoreError(JpkiError):
    """The challenge store failed: unreachable, closed, full, or holding data it cannot read."""


class StoreFullError(ChallengeStoreError):
    """A :class:`MemoryStore` holds ``max_entries`` pending challenges and refuses another."""


class DuplicateChallengeError(ChallengeStoreError):
    """``put`` was given a challenge whose id the store already holds."""


class MalformedChallengeError(JpkiError, ValueError):
    """Serialised challenge data (JSON or a stored row) is not a valid challenge."""


# --------------------------------------------------------------------------- the challenge


def _require_aware(name: str, value: object) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise UsageError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(f"{name} must be timezone-aware")
    return value


def _require_utf8(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{name} is not encodable as UTF-8 (lone surrogate)") from None


def _to_micros(when: _dt.datetime) -> int:
    """Microseconds since the Unix epoch (exact integer arithmetic)."""
    return (when - _EPOCH) // _MICROSECOND


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_challenge_id() -> str:
    """A fresh random challenge id: 192 bits from :mod:`secrets`, base64url without padding."""
    return secrets.token_urlsafe(CHALLENGE_ID_BYTES)


@dataclass(frozen=True)
class Challenge:
    """One challenge issued by a relying party. Immutable; validated on construction.

    ``id`` names it in the store and on the wire (URL-safe, at least 128 random bits); ``nonce``
    is the 32 random bytes the card signs; ``rp_id`` the relying party it is meant for;
    ``purpose`` ``'login'`` or ``'ekyc'``; ``created_at`` / ``expires_at`` timezone-aware
    datetimes (it is expired when ``now >= expires_at``); ``transaction_text`` an optional text
    the card holder signs along with an eKYC challenge (``None`` for login).

    Make new ones with :meth:`create`; invalid field values raise :class:`~jpki.errors.UsageError`.
    """

    id: str
    nonce: bytes
    rp_id: str
    purpose: Purpose
    created_at: _dt.datetime
    expires_at: _dt.datetime
    transaction_text: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.fullmatch(self.id):
            raise UsageError("challenge id must be 22-128 URL-safe base64 characters (>= 128 bits)")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise UsageError(f"challenge nonce must be {NONCE_SIZE} bytes")
        if not isinstance(self.rp_id, str) or not self.rp_id:
            raise UsageError("rp_id must be a non-empty string")
        _require_utf8("rp_id", self.rp_id)
        if self.purpose not in PURPOSES:
            raise UsageError(f"purpose must be one of {', '.join(PURPOSES)}, not {self.purpose!r}")
        created = _require_aware("created_at", self.created_at)
        expires = _require_aware("expires_at", self.expires_at)
        if expires <= created:
            raise UsageError("expires_at must be after created_at")
        if self.transaction_text is not None:
            if not isinstance(self.transaction_text, str):
                raise UsageError("transaction_text must be a string or None")
            if self.purpose != "ekyc":
                raise UsageError("transaction_text is only for eKYC challenges")
            _require_utf8("transaction_text", self.transaction_text)

    @classmethod
    def create(
        cls,
        *,
        rp_id: str,
        purpose: Purpose,
        now: _dt.datetime,
        ttl: _dt.timedelta,
        transaction_text: str | None = None,
    ) -> Challenge:
        """A new challenge with a fresh random id and nonce, valid from ``now`` for ``ttl``."""
        _require_aware("now", now)
        if not isinstance(ttl, _dt.timedelta) or ttl <= _dt.timedelta(0):
            raise UsageError("ttl must be a positive timedelta")
        return cls(
            id=new_challenge_id(),
            nonce=secrets.token_bytes(NONCE_SIZE),
            rp_id=rp_id,
            purpose=purpose,
            created_at=now,
            expires_at=now + ttl,
            transaction_text=transaction_text,
        )

    @property
    def ttl(self) -> _dt.timedelta:
        """The challenge's lifetime, ``expires_at - created_at``."""
        return self.expires_at - self.created_at

    def is_expired(self, now: _dt.datetime) -> bool:
        """True when ``now`` is at or past ``expires_at``."""
        return _require_aware("now", now) >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the nonce in unpadded base64url, datetimes in ISO 8601."""
        out: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "id": self.id,
            "nonce": _b64url(self.nonce),
            "rp_id": self.rp_id,
            "purpose": self.purpose,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }
        if self.transaction_text is not None:
            out["transaction_text"] = self.transaction_text
        return out

    def encode(self) -> str:
        """Compact JSON text of :meth:`to_json` (keys sorted): how the stores keep a challenge;
        :meth:`from_json` reads it back."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> Challenge:
        """The challenge :meth:`to_json` described (the dict, or its JSON text as :meth:`encode`
        writes it); :class:`MalformedChallengeError` otherwise."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, TypeError) as exc:
                raise MalformedChallengeError(f"challenge is not valid JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise MalformedChallengeError("challenge data must be a JSON object")
        if type(data.get("v")) is not int or data["v"] != FORMAT_VERSION:
            raise MalformedChallengeError(f"unknown challenge format version {data.get('v')!r}")
        allowed = {"v", "id", "nonce", "rp_id", "purpose", "created_at", "expires_at",
                   "transaction_text"}
        unknown = set(data) - allowed
        if unknown:
            raise MalformedChallengeError(f"unknown challenge fields: {', '.join(sorted(unknown))}")
        try:
            fields = {name: data[name] for name in
                      ("id", "nonce", "rp_id", "purpose", "created_at", "expires_at")}
        except KeyError as exc:
            raise MalformedChallengeError(f"challenge field {exc.args[0]!r} missing") from None
        for name, value in fields.items():
            if not isinstance(value, str):
                raise MalformedChallengeError(f"challenge field {name!r} must be a string")
        text = data.get("transaction_text")
        try:
            nonce = _b64url_decode(fields["nonce"])
            created = _dt.datetime.fromisoformat(fields["created_at"])
            expires = _dt.datetime.fromisoformat(fields["expires_at"])
        except (ValueError, binascii.Error) as exc:
            raise MalformedChallengeError(f"malformed challenge data: {exc}") from None
        try:
            return cls(id=fields["id"], nonce=nonce, rp_id=fields["rp_id"],
                       purpose=fields["purpose"], created_at=created, expires_at=expires,
                       transaction_text=text)
        except UsageError as exc:
            raise MalformedChallengeError(f"invalid challenge: {exc}") from None


# --------------------------------------------------------------------------- the protocol


@runtime_checkable
class ChallengeStore(Protocol):
    """Pending challenges, each usable once. Every backend is safe to share between threads."""

    def put(self, challenge: Challenge) -> None:
        """Keep ``challenge`` until taken or expired.

        Raises :class:`DuplicateChallengeError` if its id is already held,
        :class:`ChallengeStoreError` if the store cannot keep it.
        """

    def take(self, challenge_id: str, *, now: _dt.datetime) -> Challenge | None:
        """Atomically remove and return the challenge ``challenge_id``, at most once ever.

        ``None`` when there is no such challenge, it was already taken, or it is expired at
        ``now`` (an expired one is deleted).
        """

    def purge_expired(self, now: _dt.datetime) -> int:
        """Delete every challenge expired at ``now``; return how many were deleted."""

    def close(self) -> None:
        """Release connections and files. Idempotent; the store is unusable afterwards."""


class _StoreBase:
    """Context-manager support and the closed flag shared by the backends."""

    _closed: bool = False

    def close(self) -> None:  # pragma: no cover - overridden
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ChallengeStoreError(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _valid_id(challenge_id: object) -> bool:
    return isinstance(challenge_id, str) and _ID_RE.fullmatch(challenge_id) is not None


def _check_challenge(challenge: object) -> Challenge:
    if not isinstance(challenge, Challenge):
        raise UsageError(f"expected a Challenge, not {type(challenge).__name__}")
    return challenge


# --------------------------------------------------------------------------- memory


class MemoryStore(_StoreBase):
    """Challenges in a dict behind a lock: the default, for one server process.

    Each process has its own store, so a service run with several worker processes needs
    :class:`SqliteStore` or :class:`RedisStore`. At most ``max_entries`` challenges are held;
    ``put`` beyond that raises :class:`StoreFullError` — call :meth:`purge_expired`
    regularly (the relying party does) so that abandoned challenges make room.
    """

    DEFAULT_MAX_ENTRIES: Final = 100_000

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise UsageError("max_entries must be a positive integer")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: dict[str, Challenge] = {}

    def __len__(self) -> int:
        """Challenges held now, expired or not."""
        with self._lock:
            return len(self._items)

    def __bool__(self) -> bool:
        """Always true, even when empty (so ``store or default`` keeps this store)."""
        return True

    def put(self, challenge: Challenge) -> None:
        """Keep ``challenge``; :class:`StoreFullError` when ``max_entries`` are held."""
        challenge = _check_challenge(challenge)
        with self._lock:
            self._check_open()
            if challenge.id in self._items:
                raise DuplicateChallengeError(f"challenge {challenge.id} is already stored")
            if len(self._items) >= self.max_entries:
                raise StoreFullError(
                    f"the in-memory challenge store is full ({self.max_entries} pending "
                    "challenges): call purge_expired(), raise max_entries, or use a SQLite or "
                    "Redis store")
            self._items[challenge.id] = challenge

    def take(self, challenge_id: str, *, now: _dt.datetime) -> Challenge | None:
        """Remove and return the challenge once; ``None`` if absent, taken or expired."""
        _require_aware("now", now)
        if not _valid_id(challenge_id):
            return None
        with self._lock:
            self._check_open()
            challenge = self._items.pop(challenge_id, None)
        if challenge is None or now >= challenge.expires_at:
            return None
        return challenge

    def purge_expired(self, now: _dt.datetime) -> int:
        """Delete the challenges expired at ``now``; return how many."""
        _require_aware("now", now)
        with self._lock:
            self._check_open()
            expired = [cid for cid, c in self._items.items() if now >= c.expires_at]
            for cid in expired:
                del self._items[cid]
        return len(expired)

    def close(self) -> None:
        """Forget every challenge; later calls raise :class:`ChallengeStoreError`."""
        with self._lock:
            self._items.clear()
            self._closed = True


# --------------------------------------------------------------------------- SQLite

_SQLITE_SCHEMA_VERSION: Final = 1
_SQLITE_HAS_RETURNING: Final = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteStore(_StoreBase):
    """Challenges in one SQLite file, shared safely by the threads and processes of a machine.

    The file is created with mode 0600 (SQLite gives its ``-wal`` and ``-shm`` files the same
    mode) and runs in WAL mode with ``synchronous=FULL``: a ``take`` that has returned stays
    done even after a power loss, so a used challenge can never come back. ``take`` is one
    ``DELETE ... RETURNING`` statement (SQLite >= 3.35; a ``BEGIN IMMEDIATE`` transaction
    before that), atomic across connections and processes.

    Connections are pooled: a thread borrows one for a call and gives it back, so the store
    can be shared by any number of threads. ``timeout`` is how long a call waits for another
    connection's write lock before raising :class:`ChallengeStoreError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise UsageError(
                "SqliteStore needs a file path (use MemoryStore for an in-memory store)")
        self.path = Path(raw).expanduser()
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._use_returning = _SQLITE_HAS_RETURNING
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ChallengeStoreError(f"cannot open challenge store {self.path}: {exc}") from exc
        os.close(fd)
        with self._connection() as conn:
            self._initialise(conn)

    # -- connections

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise ChallengeStoreError(f"cannot open challenge store {self.path}: {exc}") from exc
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a pooled connection (a new one if none is idle); SQLite errors become
        :class:`ChallengeStoreError`."""
        with self._lock:
            self._check_open()
            if self._pid != os.getpid():
                # Forked: the parent's connections must not be used (nor closed) here.
                self._idle, self._all, self._pid = [], [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
            with self._lock:
                self._all.append(conn)
        healthy = True
        try:
            yield conn
        except sqlite3.Error as exc:
            healthy = False
            raise ChallengeStoreError(f"challenge store {self.path}: {exc}") from exc
        finally:
            with self._lock:
                if healthy and conn.in_transaction:
                    healthy = False
                if healthy and not self._closed:
                    self._idle.append(conn)
                else:
                    with contextlib.suppress(ValueError):
                        self._all.remove(conn)
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()

    def _initialise(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ChallengeStoreError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SQLITE_SCHEMA_VERSION):
                raise ChallengeStoreError(
                    f"{self.path}: unknown challenge store schema version {version}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS challenges ("
                " id TEXT PRIMARY KEY,"
                " expires_us INTEGER NOT NULL,"
                " data TEXT NOT NULL"
                ") WITHOUT ROWID")
            conn.execute("CREATE INDEX IF NOT EXISTS challenges_expiry ON challenges (expires_us)")
            conn.execute(f"PRAGMA user_version={_SQLITE_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- the protocol

    def put(self, challenge: Challenge) -> None:
        """Insert ``challenge``; :class:`DuplicateChallengeError` if its id is there."""
        challenge = _check_challenge(challenge)
        with self._connection() as conn:
            try:
                conn.execute("INSERT INTO challenges (id, expires_us, data) VALUES (?, ?, ?)",
                             (challenge.id, _to_micros(challenge.expires_at), challenge.encode()))
            except sqlite3.IntegrityError:
                raise DuplicateChallengeError(
                    f"challenge {challenge.id} is already stored") from None

    def take(self, challenge_id: str, *, now: _dt.datetime) -> Challenge | None:
        """Delete the row and return its challenge in one atomic step; ``None`` if absent,
        already taken or expired at ``now``."""
        _require_aware("now", now)
        if not _valid_id(challenge_id):
            return None
        with self._connection() as conn:
            if self._use_returning:
                # Autocommit: the statement is its own transaction, committed once all its
                # rows have been fetched.
                rows = conn.execute(
                    "DELETE FROM challenges WHERE id = ? RETURNING expires_us, data",
                    (challenge_id,)).fetchall()
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute("SELECT expires_us, data FROM challenges WHERE id = ?",
                                        (challenge_id,)).fetchall()
                    if rows:
                        conn.execute("DELETE FROM challenges WHERE id = ?", (challenge_id,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        if not rows:
            return None
        expires_us, data = rows[0]
        if _to_micros(now) >= expires_us:
            return None
        return Challenge.from_json(data)

    def purge_expired(self, now: _dt.datetime) -> int:
        """Delete the rows expired at ``now``; return how many."""
        _require_aware("now", now)
        with self._connection() as conn:
            cur = conn.execute("DELETE FROM challenges WHERE expires_us <= ?", (_to_micros(now),))
            return cur.rowcount

    def close(self) -> None:
        """Close every pooled connection (idempotent)."""
        with self._lock:
            self._closed = True
            conns = self._all if self._pid == os.getpid() else []
            self._all, self._idle = [], []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


# --------------------------------------------------------------------------- Redis

# GET and DEL run as one script: Redis executes a script atomically, so this is GETDEL for
# servers older than 6.2.
_LUA_GETDEL: Final = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
"""


def _redis_glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisStore(_StoreBase):
    """Challenges in Redis, for several server processes or machines.

    Each challenge is one key ``prefix + id`` holding its JSON, written with ``SET NX PX``:
    the key expires by itself on the server after the challenge's lifetime plus
    ``expiry_grace``, so abandoned challenges never accumulate. ``take`` is ``GETDEL`` (Redis
    >= 6.2) or, on older servers, a Lua script doing GET + DEL — both run atomically in the
    server, so exactly one of any number of concurrent takers gets the challenge. Whether a
    challenge is expired is decided against the ``now`` given to ``take``.

    ``url`` is a redis-py URL (``redis://[:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://``,
    ``unix://PATH``). ``take_method`` is ``'auto'`` (GETDEL when the server has it),
    ``'getdel'`` or ``'lua'``. The server is contacted at once: an unreachable server raises
    :class:`ChallengeStoreError` here rather than on the first login.

    Durability follows the server's: with AOF ``appendfsync always`` a used challenge cannot
    reappear after a crash; with less, a crash may bring back a challenge taken in the last
    moments before it (still bounded by its expiry).
    """

    DEFAULT_PREFIX: Final = "jpki:challenge:"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        expiry_grace: _dt.timedelta = _dt.timedelta(seconds=5),
        take_method: Literal["auto", "getdel", "lua"] = "auto",
        socket_timeout: float = 5.0,
    ) -> None:
        if not isinstance(prefix, str):
            raise UsageError("the Redis key prefix must be a string")
        if take_method not in ("auto", "getdel", "lua"):
            raise UsageError(f"take_method must be auto, getdel or lua, not {take_method!r}")
        if not isinstance(expiry_grace, _dt.timedelta) or expiry_grace < _dt.timedelta(0):
            raise UsageError("expiry_grace must be a non-negative timedelta")
        try:
            import redis
        except ImportError:
            raise UsageError(
                "the Redis challenge store needs the redis package (pip install 'jpki[auth]')"
            ) from None
        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self.expiry_grace = expiry_grace
        self._redacted_url = _redact_url(url)
        try:
            # One connection, not a pool (see jpki.idp.kv.RedisKV: the pool's fork checks cost more
            # than the commands).
            self._client: redis.Redis = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                single_connection_client=True)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"bad Redis URL {self._redacted_url}: {exc}") from None
        except redis.RedisError as exc:   # the one connection is made here
            raise ChallengeStoreError(
                f"cannot connect to the Redis challenge store at {self._redacted_url}: {exc}") from exc
        try:
            with self._errors("connect to"):
                try:
                    version = str(self._client.info("server").get("redis_version", "unknown"))
                except redis.ResponseError:  # INFO not permitted (ACL): assume nothing
                    self._client.ping()
                    version = "unknown"
            has_getdel = _version_tuple(version) >= (6, 2)
            if take_method == "getdel" and not has_getdel:
                raise ChallengeStoreError(
                    f"Redis {version} at {self._redacted_url} has no GETDEL (needs >= 6.2)")
        except BaseException:
            self._client.close()
            raise
        self.server_version = version
        self.take_method: Literal["getdel", "lua"] = (
            "getdel" if take_method == "getdel" or (take_method == "auto" and has_getdel)
            else "lua")
        self._getdel_script = self._client.register_script(_LUA_GETDEL)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except self._redis_errors as exc:
            raise ChallengeStoreError(
                f"cannot {doing} the Redis challenge store at {self._redacted_url}: {exc}"
            ) from exc

    def _key(self, challenge_id: str) -> str:
        return self.prefix + challenge_id

    def put(self, challenge: Challenge) -> None:
        """``SET prefix+id json NX PX lifetime+grace``; :class:`DuplicateChallengeError` if the
        key exists."""
        challenge = _check_challenge(challenge)
        px = max(1, math.ceil((challenge.ttl + self.expiry_grace) / _dt.timedelta(milliseconds=1)))
        with self._errors("write to"):
            stored = self._client.set(self._key(challenge.id), challenge.encode(), nx=True, px=px)
        if not stored:
            raise DuplicateChallengeError(f"challenge {challenge.id} is already stored")

    def take(self, challenge_id: str, *, now: _dt.datetime) -> Challenge | None:
        """Atomically get and delete the key; ``None`` if absent, taken or expired at ``now``."""
        _require_aware("now", now)
        if not _valid_id(challenge_id):
            return None
        key = self._key(challenge_id)
        with self._errors("read from"):
            raw = self._client.getdel(key) if self.take_method == "getdel" else self._getdel_script(keys=[key])
        if raw is None:
            return None
        challenge = Challenge.from_json(raw)
        if challenge.id != challenge_id:
            raise MalformedChallengeError(f"Redis key {key} holds challenge {challenge.id}")
        if now >= challenge.expires_at:
            return None
        return challenge

    def purge_expired(self, now: _dt.datetime) -> int:
        """Delete the challenges under ``prefix`` expired at ``now``; return how many.

        Redis drops keys by itself once their lifetime has passed on its clock; this deletes
        those expired at ``now`` (the relying party's clock). Keys under the prefix that do not
        hold a challenge are left alone.
        """
        _require_aware("now", now)
        pattern = _redis_glob_escape(self.prefix) + "*"
        deleted = 0
        with self._errors("purge"):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self._purge_batch(batch, now)
                    batch = []
            if batch:
                deleted += self._purge_batch(batch, now)
        return deleted

    def _purge_batch(self, keys: list[bytes], now: _dt.datetime) -> int:
        expired = []
        for key, raw in zip(keys, self._client.mget(keys), strict=True):
            if raw is None:
                continue
            try:
                challenge = Challenge.from_json(raw)
            except MalformedChallengeError:
                continue
            if now >= challenge.expires_at:
                expired.append(key)
        if not expired:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for key in expired:
            pipe.delete(key)
        return sum(int(n) for n in pipe.execute())

    def close(self) -> None:
        """Close the client's connections (idempotent)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(*self._redis_errors):
                self._client.close()


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        parts.append(int(digits.group()) if digits else 0)
    return tuple(parts)


def _redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for error messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:" if parts.username else ":"
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))
    except ValueError:
        return "<unparseable Redis URL>"


# --------------------------------------------------------------------------- open_store

_SPEC_HELP: Final = "use memory, sqlite:PATH or redis://HOST[:PORT][/DB][?prefix=KEYPREFIX]"


def open_store(spec: str) -> ChallengeStore:
    """The store a spec string names (the ``--store`` option of ``jpki rp serve``).

    ``memory``: a :class:`MemoryStore`. ``sqlite:PATH``: a :class:`SqliteStore` on ``PATH``.
    ``redis://…`` or ``rediss://…``: a :class:`RedisStore`; an optional ``prefix`` query
    parameter sets the key prefix and is not passed on to the client. Anything else raises
    :class:`~jpki.errors.UsageError`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"no challenge store given: {_SPEC_HELP}")
    spec = spec.strip()
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if not path:
            raise UsageError("sqlite: needs a file path, e.g. sqlite:/var/lib/jpki/challenges.db")
        return SqliteStore(path)
    scheme = spec.partition(":")[0].lower()
    if scheme in ("redis", "rediss") and spec[len(scheme):].startswith("://"):
        url, prefix = _split_prefix(spec)
        return RedisStore(url) if prefix is None else RedisStore(url, prefix=prefix)
    raise UsageError(f"unknown challenge store {spec!r}: {_SPEC_HELP}")


def _split_prefix(url: str) -> tuple[str, str | None]:
    """Take the ``prefix`` query parameter out of a Redis URL."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"bad Redis URL: {exc}") from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if not prefixes:
        return url, None
    if len(prefixes) > 1:
        raise UsageError("the Redis URL gives prefix more than once")
    rest = urllib.parse.urlencode([(n, v) for n, v in query if n != "prefix"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), prefixes[0]
