"""The service's board of displayed challenges: what its HTML page shows while a login waits.

A page asks the service for a challenge to *display* (``POST /api/login/begin`` with
``{"display": true}``); the card holder answers it from another device or program (``jpki login
URL --challenge ID``, which reads it with ``GET /api/challenges/ID``); the page polls
``GET /api/challenges/ID/result`` until the result is there. The board holds, per displayed
challenge, its public form while pending and then the outcome **without personal data**
(ok, reason, message, the account key of a login) — an eKYC's basic 4 info is never put on it.

Every server process must see the same board, so there is one backend per challenge-store
backend: :class:`MemoryBoard` (one process), :class:`SqliteBoard` (a file beside the SQLite
store) and :class:`RedisBoard` (the store's Redis server). :func:`board_for_store` picks it.
Entries expire on their own ``ttl`` after they were written (the challenge's lifetime plus
:data:`RESULT_TTL` to read the result).

Fairness: each entry is shown for an ``owner`` (the client key of whoever asked for it, see
:mod:`jpki.auth.limits`), and one owner holds at most ``per_owner`` entries: beyond that its
*own* oldest entry gives way. When a bounded board is full, the oldest entry of the owner with
the most entries goes. So a flood of displayed challenges from one client pushes off only its
own (10,000 displayed challenges from one client once pushed a real user's off the board).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from jpki.auth.store import (
    ChallengeStore,
    ChallengeStoreError,
    MemoryStore,
    RedisStore,
    SqliteStore,
)
from jpki.errors import UsageError

__all__ = ["DEFAULT_PER_OWNER", "RESULT_TTL", "Board", "MemoryBoard", "RedisBoard", "SqliteBoard", "board_for_store"]

#: How long a displayed challenge's result stays readable after it is finished.
RESULT_TTL: Final = _dt.timedelta(minutes=10)
_MAX_ENTRIES: Final = 10_000
#: Entries one owner may hold on the board by default.
DEFAULT_PER_OWNER: Final = 16


class Board(Protocol):
    """Displayed challenges and their outcomes, by challenge id (JSON-ready dicts)."""

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta, *,
             owner: str | None = None) -> None:
        """Put (or replace) the entry of ``challenge_id`` for ``ttl``, counted against ``owner``'s
        quota (None: no owner, no quota)."""

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """Replace the entry of ``challenge_id`` only if it is on the board; True if it was."""

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """The entry, or None when absent or expired."""

    def close(self) -> None:
        """Release connections."""


def _dumps(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class MemoryBoard:
    """A dict with expiry times (monotonic clock), for one server process; bounded in total
    (``max_entries``) and per owner (``per_owner``, 0: no quota)."""

    def __init__(self, max_entries: int = _MAX_ENTRIES, *, per_owner: int = DEFAULT_PER_OWNER) -> None:
        self._items: dict[str, tuple[float, str, str | None]] = {}
        self._owned: dict[str, dict[str, None]] = {}  # owner -> its ids, oldest first
        self._lock = threading.Lock()
        self._max = max_entries
        self._per_owner = per_owner

    def _drop(self, challenge_id: str) -> None:
        _, _, owner = self._items.pop(challenge_id)
        if owner is not None:
            ids = self._owned[owner]
            del ids[challenge_id]
            if not ids:
                del self._owned[owner]

    def _make_room(self, now: float, owner: str | None) -> None:
        for key in [k for k, (until, _, _) in self._items.items() if until <= now]:
            self._drop(key)
        if owner is not None and self._per_owner:
            mine = self._owned.get(owner, {})
            while len(mine) >= self._per_owner:
                self._drop(next(iter(mine)))
        while len(self._items) >= self._max:
            if self._owned:  # the oldest entry of the biggest holder
                biggest = max(self._owned.values(), key=len)
                self._drop(next(iter(biggest)))
            else:
                self._drop(next(iter(self._items)))

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta, *,
             owner: str | None = None) -> None:
        """Put the entry for ``ttl``, making room within ``owner``'s quota."""
        now = time.monotonic()
        with self._lock:
            if challenge_id in self._items:
                self._drop(challenge_id)
            self._make_room(now, owner)
            self._items[challenge_id] = (now + ttl.total_seconds(), _dumps(entry), owner)
            if owner is not None:
                self._owned.setdefault(owner, {})[challenge_id] = None

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """Replace the entry if present and unexpired (same owner)."""
        if not self._items:
            return False
        now = time.monotonic()
        with self._lock:
            current = self._items.get(challenge_id)
            if current is None or current[0] <= now:
                return False
            self._items[challenge_id] = (now + ttl.total_seconds(), _dumps(entry), current[2])
            return True

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """The entry if present and unexpired."""
        current = self._items.get(challenge_id)
        if current is None or current[0] <= time.monotonic():
            return None
        entry: dict[str, Any] = json.loads(current[1])
        return entry

    def close(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._owned.clear()


class SqliteBoard:
    """A table in a SQLite file (WAL), shared by the processes of one machine. Expiry by wall
    time (``time.time``), so that every process agrees; bounded in total (``max_entries``) and
    per owner (``per_owner``, 0: no quota) like :class:`MemoryBoard`."""

    def __init__(self, path: str | os.PathLike[str], *, max_entries: int = _MAX_ENTRIES,
                 per_owner: int = DEFAULT_PER_OWNER) -> None:
        self.path = Path(path)
        self._max = max_entries
        self._per_owner = per_owner
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._local = threading.local()
            with self._conn() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS board (id TEXT PRIMARY KEY, until REAL NOT NULL,"
                             " entry TEXT NOT NULL, owner TEXT) WITHOUT ROWID")
                columns = {row[1] for row in conn.execute("PRAGMA table_info(board)")}
                if "owner" not in columns:  # a board file of an earlier version
                    conn.execute("ALTER TABLE board ADD COLUMN owner TEXT")
                conn.execute("CREATE INDEX IF NOT EXISTS board_owner ON board (owner, until)")
        except (OSError, sqlite3.Error) as exc:
            raise ChallengeStoreError(f"cannot open the board {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._local.conn, self._local.pid = conn, os.getpid()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise ChallengeStoreError(f"board {self.path}: {exc}") from exc

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta, *,
             owner: str | None = None) -> None:
        """Insert or replace the entry; drop expired ones and make room within the quotas."""
        now = time.time()
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM board WHERE until <= ? OR id = ?", (now, challenge_id))
                if owner is not None and self._per_owner:
                    conn.execute("DELETE FROM board WHERE id IN (SELECT id FROM board WHERE owner = ?"
                                 " ORDER BY until DESC LIMIT -1 OFFSET ?)", (owner, self._per_owner - 1))
                (total,) = conn.execute("SELECT count(*) FROM board").fetchone()
                for _ in range(total - self._max + 1):
                    conn.execute("DELETE FROM board WHERE id = (SELECT id FROM board WHERE owner IS"
                                 " (SELECT owner FROM board GROUP BY owner ORDER BY count(*) DESC LIMIT 1)"
                                 " ORDER BY until LIMIT 1)")
                conn.execute("INSERT INTO board (id, until, entry, owner) VALUES (?, ?, ?, ?)",
                             (challenge_id, now + ttl.total_seconds(), _dumps(entry), owner))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """Update the entry if present and unexpired."""
        now = time.time()
        with self._conn() as conn:
            cur = conn.execute("UPDATE board SET until = ?, entry = ? WHERE id = ? AND until > ?",
                               (now + ttl.total_seconds(), _dumps(entry), challenge_id, now))
            return cur.rowcount > 0

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """The entry if present and unexpired."""
        with self._conn() as conn:
            row = conn.execute("SELECT entry FROM board WHERE id = ? AND until > ?",
                               (challenge_id, time.time())).fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# KEYS[1] the entry, KEYS[2] its owner's sorted set (entry keys scored by their end, ms);
# ARGV entry, px, now (ms), quota.
_LUA_SHOW: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZREM', KEYS[2], KEYS[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4]) + 1
if extra > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #popped, 2 do redis.call('DEL', popped[i]) end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisBoard:
    """Keys ``prefix + id`` with a PX expiry on a Redis server; per owner, a sorted set of its
    entries (``prefix + owner:`` + owner) that enforces its quota."""

    DEFAULT_PREFIX: Final = "jpki:board:"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, socket_timeout: float = 5.0,
                 per_owner: int = DEFAULT_PER_OWNER) -> None:
        try:
            import redis
        except ImportError:
            raise UsageError("the Redis board needs the redis package (pip install 'jpki[auth]')") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self.per_owner = per_owner
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                            socket_connect_timeout=socket_timeout)
        self._show = self._client.register_script(_LUA_SHOW)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise ChallengeStoreError(f"the Redis board failed: {exc}") from exc

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta, *,
             owner: str | None = None) -> None:
        """SET with PX; with an owner, one script also keeps the owner's sorted set of entries
        and deletes its oldest beyond the quota."""
        px = max(1, int(ttl.total_seconds() * 1000))
        with self._guard():
            if owner is None or not self.per_owner:
                self._client.set(self.prefix + challenge_id, _dumps(entry), px=px)
                return
            self._show(keys=[self.prefix + challenge_id, f"{self.prefix}owner:{owner}"],
                       args=[_dumps(entry), px, int(time.time() * 1000), self.per_owner])

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """SET XX with PX: only an entry that is there is replaced."""
        with self._guard():
            return bool(self._client.set(self.prefix + challenge_id, _dumps(entry), xx=True,
                                         px=max(1, int(ttl.total_seconds() * 1000))))

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """GET."""
        with self._guard():
            raw = self._client.get(self.prefix + challenge_id)
        return None if raw is None else json.loads(raw)

    def close(self) -> None:
        """Close the connection pool."""
        with contextlib.suppress(*self._errors):
            self._client.close()


def board_for_store(store: ChallengeStore, *, redis_url: str | None = None,
                    per_owner: int = DEFAULT_PER_OWNER) -> Board:
    """The board that the processes sharing ``store`` also share: memory for a
    :class:`MemoryStore`, ``PATH.board`` for a :class:`SqliteStore` on PATH, the same Redis
    server (``redis_url``, needed for a :class:`RedisStore`) under the store's prefix + ``board:``.
    ``per_owner`` is each owner's quota (0: none).
    """
    if isinstance(store, MemoryStore):
        return MemoryBoard(per_owner=per_owner)
    if isinstance(store, SqliteStore):
        return SqliteBoard(str(store.path) + ".board", per_owner=per_owner)
    if isinstance(store, RedisStore):
        if redis_url is None:
            raise UsageError("a Redis store needs its URL for the board")
        return RedisBoard(redis_url, prefix=store.prefix + "board:", per_owner=per_owner)
    return MemoryBoard(per_owner=per_owner)
