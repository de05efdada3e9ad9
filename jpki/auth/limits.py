"""Per-client limits of the relying-party service: one client must not lock everyone out.

Without them one client sending 95,000 ``POST /api/login/begin`` in 27 s filled the challenge
store, and every real login got 503 until the challenges expired. Two limits, both per client
address (an IPv4 address, or the /64 network of an IPv6 one, which one host usually holds whole):

* a **token bucket**: ``burst`` requests at once, then ``rate`` per second
  (:meth:`Limiter.take` says how long to wait when the bucket is empty);
* a **cap on pending challenges**: at most ``max_pending`` challenges issued to one client are
  unanswered and unexpired at a time (:meth:`Limiter.reserve` / :meth:`Limiter.release`), so a
  flood can fill at most that share of the store, however slowly it is sent.

The limiter is shared the way the challenge store is, so that several server processes count
together: :class:`MemoryLimiter` (one process), :class:`SqliteLimiter` (``PATH.limits`` beside a
SQLite store) and :class:`RedisLimiter` (the store's Redis server); :func:`limiter_for_store`
picks it. :class:`RefusalLog` counts the refusals and logs one summary line per interval instead
of one line per refused request (a flood would otherwise flood the log too).

Time: the buckets read ``timer`` (monotonic in memory; wall time when shared between processes,
which must agree); pending challenges expire by the relying party's clock, given as arguments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
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
from jpki.serving import client_key  # the key of every per-client limit (one place)

__all__ = [
    "ClientLimits",
    "Limiter",
    "MemoryLimiter",
    "RedisLimiter",
    "RefusalLog",
    "SqliteLimiter",
    "client_key",
    "limiter_for_store",
]

log = logging.getLogger("jpki.auth")

#: Clients whose buckets a :class:`MemoryLimiter` remembers (least recently seen forgotten first).
_MAX_CLIENTS: Final = 100_000


@dataclasses.dataclass(frozen=True)
class ClientLimits:
    """The per-client limits of the service (0 turns a limit off).

    ``rate`` requests per second and ``burst`` at once (the POST endpoints: begin and complete);
    ``max_pending`` unanswered challenges per client; ``board_quota`` entries per client on the
    page's board (its own oldest give way beyond it, never another client's).
    """

    rate: float = 5.0
    burst: int = 40
    max_pending: int = 32
    board_quota: int = 16

    def __post_init__(self) -> None:
        if not (self.rate >= 0 and math.isfinite(self.rate)):
            raise UsageError("the rate limit must be a non-negative number of requests per second")
        for name in ("burst", "max_pending", "board_quota"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be a non-negative integer")
        if self.rate and self.burst < 1:
            raise UsageError("a rate limit needs a burst of at least 1")


class Limiter(Protocol):
    """Token buckets and pending-challenge counts per client key."""

    #: True when the calls do I/O (run them off the event loop).
    blocking: bool

    def take(self, client: str, rate: float, burst: int) -> float:
        """Take one token from ``client``'s bucket: 0 when admitted, else the seconds until
        a token is there (nothing taken)."""

    def reserve(self, client: str, challenge_id: str, *, now: float, until: float, cap: int) -> bool:
        """Count ``challenge_id`` (pending until ``until``, epoch seconds) against ``client``
        unless it already has ``cap`` pending at ``now``; False when refused."""

    def release(self, challenge_id: str) -> None:
        """The challenge was answered (or discarded): it no longer counts."""

    def close(self) -> None:
        """Release connections."""


def _refill(tokens: float, at: float, now: float, rate: float, burst: int) -> float:
    return min(float(burst), tokens + max(0.0, now - at) * rate)


class MemoryLimiter:
    """The limits of one process, in dicts behind a lock (bounded in clients)."""

    blocking = False

    def __init__(self, *, timer: Callable[[], float] = time.monotonic, max_clients: int = _MAX_CLIENTS) -> None:
        self._timer = timer
        self._max = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._pending: dict[str, dict[str, float]] = {}
        self._owner: dict[str, str] = {}
        self._reserves = 0

    def take(self, client: str, rate: float, burst: int) -> float:
        now = self._timer()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(burst), now))
            tokens = _refill(tokens, at, now, rate, burst)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait

    def reserve(self, client: str, challenge_id: str, *, now: float, until: float, cap: int) -> bool:
        with self._lock:
            self._reserves += 1
            if self._reserves % 1024 == 0:  # forget the expired challenges of clients gone quiet
                for owner in list(self._pending):
                    self._drop_expired(owner, now)
            self._drop_expired(client, now)
            mine = self._pending.setdefault(client, {})
            if len(mine) >= cap:
                return False
            mine[challenge_id] = until
            self._owner[challenge_id] = client
            return True

    def _drop_expired(self, client: str, now: float) -> None:
        mine = self._pending.get(client)
        if mine is None:
            return
        for cid in [cid for cid, until in mine.items() if until <= now]:
            del mine[cid]
            self._owner.pop(cid, None)
        if not mine:
            del self._pending[client]

    def release(self, challenge_id: str) -> None:
        with self._lock:
            client = self._owner.pop(challenge_id, None)
            if client is not None:
                mine = self._pending.get(client, {})
                mine.pop(challenge_id, None)
                if not mine:
                    self._pending.pop(client, None)

    def pending(self, client: str) -> int:
        """Challenges counted against ``client`` (expired ones included until next looked at)."""
        with self._lock:
            return len(self._pending.get(client, {}))

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._pending.clear()
            self._owner.clear()


class SqliteLimiter:
    """The limits in a SQLite file (WAL) shared by the server processes of one machine; the
    buckets run on wall time (``timer``), which every process agrees on."""

    blocking = True

    def __init__(self, path: str | os.PathLike[str], *, timer: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._timer = timer
        self._local = threading.local()
        self._ops = 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            with self._conn() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS buckets (client TEXT PRIMARY KEY, tokens REAL NOT NULL,"
                             " at REAL NOT NULL) WITHOUT ROWID")
                conn.execute("CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, client TEXT NOT NULL,"
                             " until REAL NOT NULL) WITHOUT ROWID")
                conn.execute("CREATE INDEX IF NOT EXISTS pending_client ON pending (client, until)")
        except (OSError, sqlite3.Error) as exc:
            raise ChallengeStoreError(f"cannot open the limits file {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")  # counters, not records: speed over durability
            self._local.conn, self._local.pid = conn, os.getpid()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise ChallengeStoreError(f"limits {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def take(self, client: str, rate: float, burst: int) -> float:
        now = self._timer()
        with self._transaction() as conn:
            row = conn.execute("SELECT tokens, at FROM buckets WHERE client = ?", (client,)).fetchone()
            held, at = row if row else (float(burst), now)
            tokens = _refill(held, at, now, rate, burst)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            conn.execute("INSERT OR REPLACE INTO buckets (client, tokens, at) VALUES (?, ?, ?)",
                         (client, tokens - 1 if wait == 0 else tokens, now))
            self._ops += 1
            if self._ops % 1024 == 0:  # a bucket untouched for burst/rate seconds is full again
                conn.execute("DELETE FROM buckets WHERE at < ?", (now - burst / rate,))
        return wait

    def reserve(self, client: str, challenge_id: str, *, now: float, until: float, cap: int) -> bool:
        with self._transaction() as conn:
            self._ops += 1
            if self._ops % 1024 == 0:
                conn.execute("DELETE FROM pending WHERE until <= ?", (now,))
            else:
                conn.execute("DELETE FROM pending WHERE client = ? AND until <= ?", (client, now))
            count = conn.execute("SELECT count(*) FROM pending WHERE client = ?", (client,)).fetchone()[0]
            if count >= cap:
                return False
            conn.execute("INSERT OR REPLACE INTO pending (id, client, until) VALUES (?, ?, ?)",
                         (challenge_id, client, until))
            return True

    def release(self, challenge_id: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM pending WHERE id = ?", (challenge_id,))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# KEYS[1] bucket; ARGV now (s), rate, burst, expiry (ms). Returns the wait in microseconds
# (Redis turns Lua numbers into integers).
_LUA_TAKE: Final = """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return math.ceil(wait * 1000000)
"""
# KEYS[1] the client's pending set, KEYS[2] the challenge's owner key; ARGV now, until (s),
# cap, client, expiry (ms).
_LUA_RESERVE: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
return 1
"""


class RedisLimiter:
    """The limits on the challenge store's Redis server, for any number of processes and
    machines: a hash per bucket and a sorted set of pending challenges per client, each
    updated by one Lua script (atomic in the server) and expiring by itself."""

    blocking = True
    DEFAULT_PREFIX: Final = "jpki:limit:"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timer: Callable[[], float] = time.time,
                 socket_timeout: float = 5.0) -> None:
        try:
            import redis
        except ImportError:
            raise UsageError("the Redis limits need the redis package (pip install 'jpki[auth]')") from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self._timer = timer
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                            socket_connect_timeout=socket_timeout)
        self._take = self._client.register_script(_LUA_TAKE)
        self._reserve = self._client.register_script(_LUA_RESERVE)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise ChallengeStoreError(f"the Redis limits failed: {exc}") from exc

    def take(self, client: str, rate: float, burst: int) -> float:
        expiry = max(1000, math.ceil(burst / rate * 1000) + 1000)
        with self._guard():
            micros = self._take(keys=[f"{self.prefix}bucket:{client}"],
                                args=[repr(self._timer()), repr(rate), burst, expiry])
        return int(micros) / 1e6

    def reserve(self, client: str, challenge_id: str, *, now: float, until: float, cap: int) -> bool:
        expiry = max(1000, math.ceil((until - now) * 1000) + 1000)
        with self._guard():
            return bool(self._reserve(keys=[f"{self.prefix}pending:{client}", f"{self.prefix}owner:{challenge_id}"],
                                      args=[repr(now), repr(until), cap, client, expiry]))

    def release(self, challenge_id: str) -> None:
        owner_key = f"{self.prefix}owner:{challenge_id}"
        with self._guard():
            client = self._client.getdel(owner_key)
            if client is not None:
                name = client.decode() if isinstance(client, bytes) else client  # bytes: no decode_responses
                self._client.zrem(f"{self.prefix}pending:{name}", owner_key)

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._client.close()


def limiter_for_store(store: ChallengeStore, *, redis_url: str | None = None) -> Limiter:
    """The limiter that the processes sharing ``store`` also share: memory for a
    :class:`MemoryStore` (and any other store), ``PATH.limits`` for a :class:`SqliteStore` on
    PATH, the same Redis server (``redis_url``) under the store's prefix + ``limit:``."""
    if isinstance(store, SqliteStore):
        return SqliteLimiter(str(store.path) + ".limits")
    if isinstance(store, RedisStore):
        if redis_url is None:
            raise UsageError("a Redis store needs its URL for the limits")
        return RedisLimiter(redis_url, prefix=store.prefix + "limit:")
    if not isinstance(store, MemoryStore):
        log.debug("limits kept per process for a %s", type(store).__name__)
    return MemoryLimiter()


class RefusalLog:
    """Counts refused requests by reason and client; logs one line when refusals start and
    then at most one summary line per ``interval`` seconds (never one line per request).

    ``counts`` (reason -> total since start) is what ``GET /api/stats`` shows. Per process: with
    several server processes each counts its own.
    """

    def __init__(self, interval: float = 60.0, *, timer: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.interval = interval
        self._timer = timer
        self._log = logger
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._window: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._window_start: float | None = None

    def refused(self, reason: str, client: str) -> None:
        """Count one refusal (and log if a line is due)."""
        now = self._timer()
        line: tuple[Any, ...] | None = None
        with self._lock:
            self.counts[reason] += 1
            if self._window_start is None:
                self._window_start = now
                line = (("refusing requests from client %s (%s); further refusals are counted and "
                        "summarised every %g s"), client, reason, self.interval)
            else:
                self._window[reason] += 1
                self._clients[client] += 1
                if now - self._window_start >= self.interval:
                    line = self._summary_locked(now)
        if line is not None:
            self._log.warning(*line)

    def _summary_locked(self, now: float) -> tuple[Any, ...] | None:
        start = self._window_start if self._window_start is not None else now
        if not self._window:
            self._window_start = None
            return None
        total = sum(self._window.values())
        top, top_count = self._clients.most_common(1)[0]
        line = ("refused %d request(s) in %.0f s: %s; from %d client(s), most from %s (%d)", total,
                now - start, ", ".join(f"{k}={v}" for k, v in sorted(self._window.items())),
                len(self._clients), top, top_count)
        self._window.clear()
        self._clients.clear()
        self._window_start = now
        return line

    def tick(self) -> None:
        """Log the summary if the current window is ``interval`` old (the service calls this
        periodically, so that the last refusals of a flood are reported when it stops)."""
        now = self._timer()
        with self._lock:
            due = self._window_start is not None and now - self._window_start >= self.interval
            line = self._summary_locked(now) if due else None
        if line is not None:
            self._log.warning(*line)

    def flush(self) -> None:
        """Log the summary of the current window now (at shutdown)."""
        with self._lock:
            line = self._summary_locked(self._timer())
        if line is not None:
            self._log.warning(*line)
