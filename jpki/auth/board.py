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

__all__ = ["RESULT_TTL", "Board", "MemoryBoard", "RedisBoard", "SqliteBoard", "board_for_store"]

#: How long a displayed challenge's result stays readable after it is finished.
RESULT_TTL: Final = _dt.timedelta(minutes=10)
_MAX_ENTRIES: Final = 10_000


class Board(Protocol):
    """Displayed challenges and their outcomes, by challenge id (JSON-ready dicts)."""

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> None:
        """Put (or replace) the entry of ``challenge_id`` for ``ttl``."""

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """Replace the entry of ``challenge_id`` only if it is on the board; True if it was."""

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """The entry, or None when absent or expired."""

    def close(self) -> None:
        """Release connections."""


def _dumps(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class MemoryBoard:
    """A dict with expiry times (monotonic clock), for one server process; bounded."""

    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def _expire(self, now: float) -> None:
        for key in [k for k, (until, _) in self._items.items() if until <= now]:
            del self._items[key]
        while len(self._items) >= self._max:
            self._items.pop(next(iter(self._items)))

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> None:
        """Put the entry for ``ttl``."""
        now = time.monotonic()
        with self._lock:
            if challenge_id not in self._items:
                self._expire(now)
            self._items[challenge_id] = (now + ttl.total_seconds(), _dumps(entry))

    def finish(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> bool:
        """Replace the entry if present and unexpired."""
        if not self._items:
            return False
        now = time.monotonic()
        with self._lock:
            current = self._items.get(challenge_id)
            if current is None or current[0] <= now:
                return False
            self._items[challenge_id] = (now + ttl.total_seconds(), _dumps(entry))
            return True

    def get(self, challenge_id: str) -> dict[str, Any] | None:
        """The entry if present and unexpired."""
        current = self._items.get(challenge_id)
        if current is None or current[0] <= time.monotonic():
            return None
        return json.loads(current[1])

    def close(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()


class SqliteBoard:
    """A table in a SQLite file (WAL), shared by the processes of one machine. Expiry by wall
    time (``time.time``), so that every process agrees."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._local = threading.local()
            with self._conn() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS board (id TEXT PRIMARY KEY, until REAL NOT NULL,"
                             " entry TEXT NOT NULL) WITHOUT ROWID")
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

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> None:
        """Insert or replace the entry; drop expired ones."""
        now = time.time()
        with self._conn() as conn:
            conn.execute("DELETE FROM board WHERE until <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO board (id, until, entry) VALUES (?, ?, ?)",
                         (challenge_id, now + ttl.total_seconds(), _dumps(entry)))

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


class RedisBoard:
    """Keys ``prefix + id`` with a PX expiry on a Redis server."""

    DEFAULT_PREFIX: Final = "jpki:board:"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, socket_timeout: float = 5.0) -> None:
        try:
            import redis
        except ImportError:
            raise UsageError("the Redis board needs the redis package (pip install 'jpki[auth]')") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                            socket_connect_timeout=socket_timeout)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise ChallengeStoreError(f"the Redis board failed: {exc}") from exc

    def show(self, challenge_id: str, entry: Mapping[str, Any], ttl: _dt.timedelta) -> None:
        """SET with PX."""
        with self._guard():
            self._client.set(self.prefix + challenge_id, _dumps(entry),
                             px=max(1, int(ttl.total_seconds() * 1000)))

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


def board_for_store(store: ChallengeStore, *, redis_url: str | None = None) -> Board:
    """The board that the processes sharing ``store`` also share: memory for a
    :class:`MemoryStore`, ``PATH.board`` for a :class:`SqliteStore` on PATH, the same Redis
    server (``redis_url``, needed for a :class:`RedisStore`) under the store's prefix + ``board:``.
    """
    if isinstance(store, MemoryStore):
        return MemoryBoard()
    if isinstance(store, SqliteStore):
        return SqliteBoard(str(store.path) + ".board")
    if isinstance(store, RedisStore):
        if redis_url is None:
            raise UsageError("a Redis store needs its URL for the board")
        return RedisBoard(redis_url, prefix=store.prefix + "board:")
    return MemoryBoard()
