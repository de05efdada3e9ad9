"""A small key-value store with expiry, shared by the provider's worker processes.

The OpenID Provider keeps four kinds of short-lived records: pending authorizations (a state
machine, :mod:`jpki.idp.pending`), authorization codes (used once), access tokens (read many
times) and the ``jti`` of client assertions (seen once). Each needs one atomic operation that a
plain get/put cannot give when several uvicorn workers serve at once:

=================  =====================================================================
``add``            set if absent (or expired): a ``jti`` is recorded by exactly one request
``take``           get and delete: a code is exchanged by exactly one request
``swap``           compare and set: a pending authorization leaves ``pending`` once; a
                   refresh token is rotated once
``put_capped``     put, counted in a group of at most ``cap`` live keys: one client address
                   holds at most that many pending authorizations, however many workers
=================  =====================================================================

A group needs no release: a member counts while its key lives (a key taken, deleted or expired
stops counting), so ``put_capped`` costs what a ``put`` costs — one Redis round trip — and only
when a group is full does the store look which of its members are gone.

Three backends, as for :mod:`jpki.auth.store` (whose spec strings they share):
:class:`MemoryKV` (one process), :class:`SqliteKV` (a table ``idp_kv`` in a SQLite file, shared
by the processes of a machine; single statements, so every operation is atomic across
connections) and :class:`RedisKV` (Lua scripts, atomic in the server). Values are text
(JSON); keys are short text (the provider hashes secrets before they become keys).

Time is an input: expiry is an absolute ``expires_at``, and reads are given ``now`` from the
provider's injected clock, so that a test's :class:`~jpki.clock.FixedClock` decides what has
expired. Redis is also told to drop a key by itself a little after its expiry (by its own
clock), so abandoned records never pile up; memory and SQLite are purged by
:meth:`purge_expired`. SQLite and Redis survive a restart of the provider (a used code or a
seen ``jti`` stays used); memory does not.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, Self, runtime_checkable

from jpki.auth.store import ChallengeStoreError
from jpki.errors import UsageError

__all__ = ["KV", "KVError", "MemoryKV", "RedisKV", "SqliteKV", "open_kv"]

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND: Final = _dt.timedelta(microseconds=1)
#: Longest key accepted (keys are made by the provider: a prefix and a hash or random id).
MAX_KEY: Final = 256


class KVError(ChallengeStoreError):
    """The store failed (unreachable, closed, full): the provider answers 503, never guesses.

    A :class:`~jpki.auth.store.ChallengeStoreError`, so that one ``except`` covers the
    provider's stores and the relying party's challenge store."""

    code = "idp_store"


def _micros(when: _dt.datetime) -> int:
    if not isinstance(when, _dt.datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("store times must be timezone-aware datetimes")
    return (when - _EPOCH) // _MICROSECOND


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise UsageError(f"a store key is 1-{MAX_KEY} characters")
    return key


def _check_cap(cap: object) -> int:
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise UsageError("a group's cap is a positive integer")
    return cap


def _rows(values: Mapping[str, str], expires_at: _dt.datetime,
          expiries: Mapping[str, _dt.datetime] | None) -> list[tuple[str, str, int]]:
    """``put_many``'s records as (key, value, expiry in microseconds), all checked first."""
    default = _micros(expires_at)
    extra = {k: _micros(v) for k, v in (expiries or {}).items()}
    return [(_check_key(k), v, extra.get(k, default)) for k, v in values.items()]


@runtime_checkable
class KV(Protocol):
    """Text values with an absolute expiry; every method is atomic and thread-safe."""

    def add(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> bool:
        """Store ``value`` unless a live (unexpired at ``now``) value is there; True if stored."""

    def put(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> None:
        """Store ``value``, replacing any."""

    def put_many(self, values: Mapping[str, str], *, now: _dt.datetime, expires_at: _dt.datetime,
                 expiries: Mapping[str, _dt.datetime] | None = None) -> None:
        """:meth:`put` each of ``values`` (key → value), all together: one round trip to Redis,
        one SQLite transaction. ``expiries`` gives some keys another expiry than ``expires_at``."""

    def put_capped(self, key: str, value: str, *, group: str, cap: int, now: _dt.datetime,
                   expires_at: _dt.datetime) -> bool:
        """:meth:`put` ``value`` and count ``key`` in ``group``, unless ``cap`` live keys (not
        taken, deleted or expired at ``now``) are counted there already: then store nothing and
        return False."""

    def get(self, key: str, *, now: _dt.datetime) -> str | None:
        """The live value, or None."""

    def take(self, key: str, *, now: _dt.datetime) -> str | None:
        """Delete and return the value, at most once ever; None if absent or expired."""

    def add_then_take(self, key: str, value: str, *, take: str, now: _dt.datetime,
                      expires_at: _dt.datetime) -> tuple[bool, str | None]:
        """:meth:`add` ``value`` at ``key``; only if it was stored, :meth:`take` ``take`` — as one
        step (one round trip to Redis). Returns (stored, the value taken or None)."""

    def swap(self, key: str, expected: str, value: str, *, now: _dt.datetime,
             expires_at: _dt.datetime) -> bool:
        """Replace the live value by ``value`` only if it equals ``expected``; True if replaced."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""

    def purge_expired(self, now: _dt.datetime) -> int:
        """Delete what has expired at ``now``; return how many (0 where the backend expires by itself)."""

    def close(self) -> None:
        """Release connections (idempotent)."""


class _Base:
    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise KVError(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- memory


class MemoryKV(_Base):
    """A dict behind a lock, for one process; at most ``max_entries`` live records (expired
    ones are purged to make room, then :class:`KVError`)."""

    DEFAULT_MAX_ENTRIES: Final = 200_000

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise UsageError("max_entries must be a positive integer")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: dict[str, tuple[int, str]] = {}
        self._groups: dict[str, dict[str, int]] = {}   # group -> {member key: its expiry}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _room(self, key: str, now_us: int | None) -> None:
        if key in self._items or len(self._items) < self.max_entries:
            return
        if now_us is not None:
            for k in [k for k, (e, _) in self._items.items() if e <= now_us]:
                del self._items[k]
        if len(self._items) >= self.max_entries:
            raise KVError(f"the in-memory store is full ({self.max_entries} records): use a SQLite "
                          "or Redis store")

    def add(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._lock:
            self._check_open()
            current = self._items.get(key)
            if current is not None and current[0] > now_us:
                return False
            self._room(key, now_us)
            self._items[key] = (exp_us, value)
            return True

    def put(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> None:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._lock:
            self._check_open()
            self._room(key, now_us)
            self._items[key] = (exp_us, value)

    def put_many(self, values: Mapping[str, str], *, now: _dt.datetime, expires_at: _dt.datetime,
                 expiries: Mapping[str, _dt.datetime] | None = None) -> None:
        rows, now_us = _rows(values, expires_at, expiries), _micros(now)
        with self._lock:
            self._check_open()
            for key, value, exp_us in rows:
                self._room(key, now_us)
                self._items[key] = (exp_us, value)

    def put_capped(self, key: str, value: str, *, group: str, cap: int, now: _dt.datetime,
                   expires_at: _dt.datetime) -> bool:
        key, group, now_us, exp_us = _check_key(key), _check_key(group), _micros(now), _micros(expires_at)
        cap = _check_cap(cap)
        with self._lock:
            self._check_open()
            members = self._groups.setdefault(group, {})
            if len(members) >= cap:
                self._prune(members, now_us)
                if len(members) >= cap:
                    return False
            self._room(key, now_us)
            self._items[key] = (exp_us, value)
            members[key] = exp_us
            return True

    def _prune(self, members: dict[str, int], now_us: int) -> None:
        """Forget the members whose key is gone or expired (under the lock)."""
        for member in [m for m, exp in members.items()
                       if exp <= now_us or (item := self._items.get(m)) is None or item[0] <= now_us]:
            del members[member]

    def get(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._lock:
            self._check_open()
            current = self._items.get(key)
        return current[1] if current is not None and current[0] > now_us else None

    def take(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._lock:
            self._check_open()
            current = self._items.pop(key, None)
        return current[1] if current is not None and current[0] > now_us else None

    def add_then_take(self, key: str, value: str, *, take: str, now: _dt.datetime,
                      expires_at: _dt.datetime) -> tuple[bool, str | None]:
        key, take, now_us, exp_us = _check_key(key), _check_key(take), _micros(now), _micros(expires_at)
        with self._lock:
            self._check_open()
            current = self._items.get(key)
            if current is not None and current[0] > now_us:
                return False, None
            self._room(key, now_us)
            self._items[key] = (exp_us, value)
            taken = self._items.pop(take, None)
        return True, (taken[1] if taken is not None and taken[0] > now_us else None)

    def swap(self, key: str, expected: str, value: str, *, now: _dt.datetime,
             expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._lock:
            self._check_open()
            current = self._items.get(key)
            if current is None or current[0] <= now_us or current[1] != expected:
                return False
            self._items[key] = (exp_us, value)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._items.pop(_check_key(key), None)

    def purge_expired(self, now: _dt.datetime) -> int:
        now_us = _micros(now)
        with self._lock:
            self._check_open()
            expired = [k for k, (e, _) in self._items.items() if e <= now_us]
            for k in expired:
                del self._items[k]
            for group, members in list(self._groups.items()):
                self._prune(members, now_us)
                if not members:
                    del self._groups[group]
        return len(expired)

    def groups(self) -> int:
        """How many groups are remembered (for tests: purging forgets the empty ones)."""
        with self._lock:
            return len(self._groups)

    def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._groups.clear()
            self._closed = True


# --------------------------------------------------------------------------- SQLite

_HAS_RETURNING: Final = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteKV(_Base):
    """Records in the table ``idp_kv`` of a SQLite file (WAL, ``synchronous=FULL``, mode 0600),
    shared by the processes of a machine. It may be the file of a
    :class:`jpki.auth.store.SqliteStore` (its own table; the schema version is left alone).

    Every operation is one statement (``INSERT … ON CONFLICT … WHERE``, ``DELETE … RETURNING``,
    ``UPDATE … WHERE value = ?``), atomic across connections and processes; a call borrows a
    pooled connection, so the store can be shared by threads.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise UsageError("SqliteKV needs a file path (use MemoryKV in memory)")
        self.path = Path(raw).expanduser()
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise KVError(f"cannot open the store {self.path}: {exc}") from exc
        with self._connection() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise KVError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode})")
            conn.execute("CREATE TABLE IF NOT EXISTS idp_kv (key TEXT PRIMARY KEY, expires_us INTEGER "
                         "NOT NULL, value TEXT NOT NULL) WITHOUT ROWID")
            conn.execute("CREATE INDEX IF NOT EXISTS idp_kv_expiry ON idp_kv (expires_us)")
            conn.execute("CREATE TABLE IF NOT EXISTS idp_kv_groups (grp TEXT NOT NULL, key TEXT NOT NULL, "
                         "expires_us INTEGER NOT NULL, PRIMARY KEY (grp, key)) WITHOUT ROWID")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        healthy = True
        try:
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA synchronous=FULL")
            yield conn
        except sqlite3.Error as exc:
            healthy = False
            raise KVError(f"store {self.path}: {exc}") from exc
        finally:
            if conn is not None:
                with self._lock:
                    if healthy and not conn.in_transaction and not self._closed:
                        self._idle.append(conn)
                    else:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()

    def add(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._connection() as conn:
            cur = conn.execute(
                "INSERT INTO idp_kv (key, expires_us, value) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                "UPDATE SET expires_us = excluded.expires_us, value = excluded.value "
                "WHERE idp_kv.expires_us <= ?", (key, exp_us, value, now_us))
            return cur.rowcount == 1

    def put(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> None:
        key, exp_us = _check_key(key), _micros(expires_at)
        _micros(now)
        with self._connection() as conn:
            conn.execute("INSERT OR REPLACE INTO idp_kv (key, expires_us, value) VALUES (?, ?, ?)",
                         (key, exp_us, value))

    def put_many(self, values: Mapping[str, str], *, now: _dt.datetime, expires_at: _dt.datetime,
                 expiries: Mapping[str, _dt.datetime] | None = None) -> None:
        rows = _rows(values, expires_at, expiries)
        _micros(now)
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO idp_kv (key, expires_us, value) VALUES (?, ?, ?)",
                             [(key, exp_us, value) for key, value, exp_us in rows])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def put_capped(self, key: str, value: str, *, group: str, cap: int, now: _dt.datetime,
                   expires_at: _dt.datetime) -> bool:
        key, group, now_us, exp_us = _check_key(key), _check_key(group), _micros(now), _micros(expires_at)
        cap = _check_cap(cap)
        with self._transaction() as conn:
            conn.execute("DELETE FROM idp_kv_groups WHERE grp = ? AND expires_us <= ?", (group, now_us))
            count = conn.execute("SELECT count(*) FROM idp_kv_groups WHERE grp = ?", (group,)).fetchone()[0]
            if count >= cap:   # full: forget the members whose record is gone, then count again
                conn.execute("DELETE FROM idp_kv_groups WHERE grp = ? AND NOT EXISTS (SELECT 1 FROM idp_kv "
                             "WHERE idp_kv.key = idp_kv_groups.key AND idp_kv.expires_us > ?)", (group, now_us))
                count = conn.execute("SELECT count(*) FROM idp_kv_groups WHERE grp = ?", (group,)).fetchone()[0]
                if count >= cap:
                    return False
            conn.execute("INSERT OR REPLACE INTO idp_kv (key, expires_us, value) VALUES (?, ?, ?)",
                         (key, exp_us, value))
            conn.execute("INSERT OR REPLACE INTO idp_kv_groups (grp, key, expires_us) VALUES (?, ?, ?)",
                         (group, key, exp_us))
            return True

    def get(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM idp_kv WHERE key = ? AND expires_us > ?",
                               (key, now_us)).fetchone()
        return None if row is None else str(row[0])

    def take(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._connection() as conn:
            if _HAS_RETURNING:
                rows = conn.execute("DELETE FROM idp_kv WHERE key = ? RETURNING expires_us, value",
                                    (key,)).fetchall()
            else:  # pragma: no cover - SQLite < 3.35
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = conn.execute("SELECT expires_us, value FROM idp_kv WHERE key = ?",
                                        (key,)).fetchall()
                    conn.execute("DELETE FROM idp_kv WHERE key = ?", (key,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        if not rows or rows[0][0] <= now_us:
            return None
        return str(rows[0][1])

    def add_then_take(self, key: str, value: str, *, take: str, now: _dt.datetime,
                      expires_at: _dt.datetime) -> tuple[bool, str | None]:
        key, take, now_us, exp_us = _check_key(key), _check_key(take), _micros(now), _micros(expires_at)
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO idp_kv (key, expires_us, value) VALUES (?, ?, ?) ON CONFLICT (key) DO "
                "UPDATE SET expires_us = excluded.expires_us, value = excluded.value "
                "WHERE idp_kv.expires_us <= ?", (key, exp_us, value, now_us))
            if cur.rowcount != 1:
                return False, None
            rows = conn.execute("SELECT expires_us, value FROM idp_kv WHERE key = ?", (take,)).fetchall()
            conn.execute("DELETE FROM idp_kv WHERE key = ?", (take,))
        return True, (str(rows[0][1]) if rows and rows[0][0] > now_us else None)

    def swap(self, key: str, expected: str, value: str, *, now: _dt.datetime,
             expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._connection() as conn:
            cur = conn.execute("UPDATE idp_kv SET value = ?, expires_us = ? WHERE key = ? AND value = ? "
                               "AND expires_us > ?", (value, exp_us, key, expected, now_us))
            return cur.rowcount == 1

    def delete(self, key: str) -> None:
        key = _check_key(key)
        with self._connection() as conn:
            conn.execute("DELETE FROM idp_kv WHERE key = ?", (key,))

    def purge_expired(self, now: _dt.datetime) -> int:
        now_us = _micros(now)
        with self._connection() as conn:
            purged = conn.execute("DELETE FROM idp_kv WHERE expires_us <= ?", (now_us,)).rowcount
            conn.execute("DELETE FROM idp_kv_groups WHERE expires_us <= ? OR NOT EXISTS (SELECT 1 FROM idp_kv "
                         "WHERE idp_kv.key = idp_kv_groups.key)", (now_us,))
            return int(purged)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = (self._idle if self._pid == os.getpid() else []), []
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


# --------------------------------------------------------------------------- Redis

# A value is stored as "EXPIRES_US|VALUE": the scripts compare the expiry with the caller's now
# (the provider's clock), while PX lets Redis drop the key a little later by its own clock.
_LUA_ADD: Final = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  if bar and tonumber(string.sub(cur, 1, bar - 1)) > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_LUA_TAKE: Final = """
local cur = redis.call('GET', KEYS[1])
if cur then redis.call('DEL', KEYS[1]) end
return cur
"""
_LUA_SWAP: Final = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local bar = string.find(cur, '|', 1, true)
if not bar or tonumber(string.sub(cur, 1, bar - 1)) <= tonumber(ARGV[3]) then return 0 end
if string.sub(cur, bar + 1) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
return 1
"""

# _LUA_ADD on KEYS[1], then, only if it stored, _LUA_TAKE on KEYS[2]: {stored (0/1), taken or nil}.
_LUA_ADD_THEN_TAKE: Final = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  if bar and tonumber(string.sub(cur, 1, bar - 1)) > tonumber(ARGV[3]) then return {0, false} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local taken = redis.call('GET', KEYS[2])
if taken then redis.call('DEL', KEYS[2]) end
return {1, taken}
"""

# KEYS the records, ARGV each one's stored value and PX in turn.
_LUA_PUT_MANY: Final = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i - 1], 'PX', ARGV[2 * i])
end
return #KEYS
"""

# KEYS[1] the record, KEYS[2] its group: a sorted set of record keys scored by their expiry.
# ARGV the stored value, its PX, now (us), its expiry (us), the cap. Expired members go first;
# a full group then forgets the members whose record is gone (taken or deleted).
_LUA_PUT_CAPPED: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local cap = tonumber(ARGV[5])
if redis.call('ZCARD', KEYS[2]) >= cap then
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', member) == 0 then redis.call('ZREM', KEYS[2], member) end
  end
  if redis.call('ZCARD', KEYS[2]) >= cap then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


class RedisKV(_Base):
    """Records in Redis under ``prefix``, for any number of processes and machines; each
    operation is one Lua script (atomic in the server). ``url`` as for redis-py
    (``redis://[:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://``, ``unix://``). The server is
    contacted at once, so an unreachable one fails here rather than at the first login."""

    DEFAULT_PREFIX: Final = "jpki:idp:"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 expiry_grace: _dt.timedelta = _dt.timedelta(seconds=30), socket_timeout: float = 5.0) -> None:
        try:
            import redis
        except ImportError:
            raise UsageError("the Redis store needs the redis package (pip install 'jpki[auth]')") from None
        self._errors_types: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self._grace_ms = max(0, math.ceil(expiry_grace / _dt.timedelta(milliseconds=1)))
        self._where = _redact(url)
        try:
            # One connection, not a pool: the pool's fork check (a getpid() system call, twice per
            # command) cost a twentieth of a whole code flow; a worker process uses it from its
            # event loop and the thread pool, under the client's own lock.
            self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                                socket_connect_timeout=socket_timeout, single_connection_client=True)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"bad Redis URL {self._where}: {exc}") from None
        except redis.RedisError as exc:   # the one connection is made here
            raise KVError(f"cannot connect to the Redis store at {self._where}: {exc}") from exc
        try:
            with self._errors("connect to"):
                self._client.ping()
        except BaseException:
            self._client.close()
            raise
        self._add = self._client.register_script(_LUA_ADD)
        self._take = self._client.register_script(_LUA_TAKE)
        self._swap = self._client.register_script(_LUA_SWAP)
        self._put_capped = self._client.register_script(_LUA_PUT_CAPPED)
        self._put_many = self._client.register_script(_LUA_PUT_MANY)
        self._add_then_take = self._client.register_script(_LUA_ADD_THEN_TAKE)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        self._check_open()
        try:
            yield
        except self._errors_types as exc:
            raise KVError(f"cannot {doing} the Redis store at {self._where}: {exc}") from exc

    def _px(self, exp_us: int, now_us: int) -> int:
        """Milliseconds Redis keeps the key: the record's life from ``now`` plus the grace."""
        return max(1, math.ceil((exp_us - now_us) / 1000)) + self._grace_ms

    @staticmethod
    def _unwrap(raw: Any, now_us: int) -> str | None:
        if raw is None:
            return None
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        expiry, bar, value = text.partition("|")
        if not bar or not expiry.isdigit() or int(expiry) <= now_us:
            return None
        return value

    def add(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._errors("write to"):
            return bool(self._add(keys=[self.prefix + key],
                                  args=[f"{exp_us}|{value}", self._px(exp_us, now_us), now_us]))

    def put(self, key: str, value: str, *, now: _dt.datetime, expires_at: _dt.datetime) -> None:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._errors("write to"):
            self._client.set(self.prefix + key, f"{exp_us}|{value}", px=self._px(exp_us, now_us))

    def put_many(self, values: Mapping[str, str], *, now: _dt.datetime, expires_at: _dt.datetime,
                 expiries: Mapping[str, _dt.datetime] | None = None) -> None:
        rows, now_us = _rows(values, expires_at, expiries), _micros(now)
        args: list[Any] = []
        for _, value, exp_us in rows:
            args += [f"{exp_us}|{value}", self._px(exp_us, now_us)]
        with self._errors("write to"):
            # one script: one round trip, run whole with no other command in between (as MULTI …
            # EXEC, for half the client's work: no pipeline object, no connection from the pool)
            self._put_many(keys=[self.prefix + key for key, _, _ in rows], args=args)

    def put_capped(self, key: str, value: str, *, group: str, cap: int, now: _dt.datetime,
                   expires_at: _dt.datetime) -> bool:
        key, group, now_us, exp_us = _check_key(key), _check_key(group), _micros(now), _micros(expires_at)
        cap = _check_cap(cap)
        with self._errors("write to"):
            return bool(self._put_capped(keys=[self.prefix + key, self.prefix + "group:" + group],
                                         args=[f"{exp_us}|{value}", self._px(exp_us, now_us), now_us, exp_us, cap]))

    def get(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._errors("read from"):
            raw = self._client.get(self.prefix + key)
        return self._unwrap(raw, now_us)

    def take(self, key: str, *, now: _dt.datetime) -> str | None:
        key, now_us = _check_key(key), _micros(now)
        with self._errors("read from"):
            raw = self._take(keys=[self.prefix + key])
        return self._unwrap(raw, now_us)

    def add_then_take(self, key: str, value: str, *, take: str, now: _dt.datetime,
                      expires_at: _dt.datetime) -> tuple[bool, str | None]:
        key, take, now_us, exp_us = _check_key(key), _check_key(take), _micros(now), _micros(expires_at)
        with self._errors("write to"):
            stored, raw = self._add_then_take(keys=[self.prefix + key, self.prefix + take],
                                              args=[f"{exp_us}|{value}", self._px(exp_us, now_us), now_us])
        return (True, self._unwrap(raw, now_us)) if stored else (False, None)

    def swap(self, key: str, expected: str, value: str, *, now: _dt.datetime,
             expires_at: _dt.datetime) -> bool:
        key, now_us, exp_us = _check_key(key), _micros(now), _micros(expires_at)
        with self._errors("write to"):
            return bool(self._swap(keys=[self.prefix + key],
                                   args=[expected, f"{exp_us}|{value}", now_us, self._px(exp_us, now_us)]))

    def delete(self, key: str) -> None:
        key = _check_key(key)
        with self._errors("write to"):
            self._client.delete(self.prefix + key)

    def purge_expired(self, now: _dt.datetime) -> int:
        """0: Redis drops the keys by itself (PX)."""
        _micros(now)
        return 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(*self._errors_types):
                self._client.close()


def _redact(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    except ValueError:
        return "<unparseable Redis URL>"


def split_redis_prefix(url: str) -> tuple[str, str | None]:
    """A Redis URL without its ``prefix`` query parameter, and that prefix (or None)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"bad Redis URL: {exc}") from None
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "prefix"]
    if len(prefixes) > 1:
        raise UsageError("the Redis URL gives prefix more than once")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "prefix"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), (prefixes[0] if prefixes else None)


_SPEC_HELP: Final = "use memory, sqlite:PATH or redis://HOST[:PORT][/DB][?prefix=KEYPREFIX]"


def open_kv(spec: str) -> KV:
    """The store a spec names: ``memory``, ``sqlite:PATH``, ``redis://…`` / ``rediss://…``
    (an optional ``prefix`` query parameter; default ``jpki:idp:``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"no store given: {_SPEC_HELP}")
    spec = spec.strip()
    if spec == "memory":
        return MemoryKV()
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if not path:
            raise UsageError("sqlite: needs a file path, e.g. sqlite:/var/lib/jpki/idp.db")
        return SqliteKV(path)
    scheme = spec.partition(":")[0].lower()
    if scheme in ("redis", "rediss") and spec[len(scheme):].startswith("://"):
        url, prefix = split_redis_prefix(spec)
        return RedisKV(url, prefix=(prefix if prefix is not None else RedisKV.DEFAULT_PREFIX) + "kv:")
    raise UsageError(f"unknown store {spec!r}: {_SPEC_HELP}")
