"""Challenge stores (jpki.auth.store): the Challenge record and the three backends.

Every backend runs the same tests through the parametrised ``backend`` fixture: memory, SQLite
(a file in tmp_path) and Redis (a real redis-server started for the session by redis_env, each
test under its own key prefix). Times are fixed; no test depends on the wall clock except for
Redis' own key expiry, which is minutes away from anything a test does.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from redis_env import redis_url  # noqa: F401  (session fixture: a private redis-server)

from jpki.auth import store as store_mod
from jpki.auth.store import (
    Challenge,
    ChallengeStore,
    ChallengeStoreError,
    DuplicateChallengeError,
    MalformedChallengeError,
    MemoryStore,
    RedisStore,
    SqliteStore,
    StoreFullError,
    new_challenge_id,
    open_store,
)
from jpki.cli._fail import fail_for
from jpki.clock import JST
from jpki.errors import JpkiError, UsageError
from jpki.pki import free_port

T0 = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=5)
REPO = Path(__file__).resolve().parents[1]


def make(purpose: str = "login", *, now: dt.datetime = T0, ttl: dt.timedelta = TTL,
         rp_id: str = "https://rp.example.jp", text: str | None = None) -> Challenge:
    return Challenge.create(rp_id=rp_id, purpose=purpose,  # type: ignore[arg-type]
                            now=now, ttl=ttl, transaction_text=text)


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    name: str
    store: ChallengeStore
    #: a spec for open_store() naming the same storage (None: the store cannot be shared)
    spec: str | None

    def reopen(self) -> ChallengeStore:
        """A second, independent store object on the same storage (as another process has)."""
        assert self.spec is not None
        return open_store(self.spec)


def _open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if name == "memory":
        return Backend(name, MemoryStore(), None)
    if name == "sqlite":
        path = tmp_path / "challenges.db"
        return Backend(name, SqliteStore(path), f"sqlite:{path}")
    url = request.getfixturevalue("redis_url")
    prefix = f"jpki-test:{uuid.uuid4().hex}:"
    return Backend(name, RedisStore(url, prefix=prefix), f"{url}?prefix={prefix}")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _open_backend(request.param, request, tmp_path)
    yield b
    b.store.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backends several processes can share."""
    b = _open_backend(request.param, request, tmp_path)
    yield b
    b.store.close()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, prefix=f"jpki-test:{uuid.uuid4().hex}:")
    yield s
    s.close()


# --------------------------------------------------------------------------- the Challenge record


def test_create_makes_random_ids_and_nonces():
    a, b = make(), make()
    assert a.id != b.id and a.nonce != b.nonce
    assert len(a.nonce) == 32
    assert len(a.id) >= 22  # >= 128 bits of base64url
    assert set(a.id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert a.created_at == T0 and a.expires_at == T0 + TTL and a.ttl == TTL
    assert len({new_challenge_id() for _ in range(1000)}) == 1000


def test_challenge_is_frozen():
    c = make()
    with pytest.raises(AttributeError):
        c.nonce = b"\0" * 32  # type: ignore[misc]


@pytest.mark.parametrize("challenge", [
    make(),
    make("ekyc", text="振込先 みずほ銀行 ¥12,345 を承認します"),
    make("ekyc", now=dt.datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=JST)),
], ids=["login", "ekyc-text", "jst-microseconds"])
def test_json_round_trip(challenge: Challenge):
    text = challenge.encode()
    back = Challenge.from_json(text)
    assert back == challenge
    assert back.created_at.utcoffset() == challenge.created_at.utcoffset()
    assert Challenge.from_json(text.encode()) == challenge
    assert Challenge.from_json(json.loads(text)) == challenge
    assert Challenge.from_json(challenge.to_json()) == challenge
    data = json.loads(text)
    assert data["v"] == 1 and data["purpose"] == challenge.purpose
    assert ("transaction_text" in data) == (challenge.transaction_text is not None)


def test_is_expired_at_and_after_expires_at():
    c = make()
    assert not c.is_expired(T0)
    assert not c.is_expired(c.expires_at - dt.timedelta(microseconds=1))
    assert c.is_expired(c.expires_at)
    assert c.is_expired(c.expires_at.astimezone(JST))


@pytest.mark.parametrize("change, message", [
    ({"id": "short"}, "challenge id"),
    ({"id": "a" * 21}, "challenge id"),
    ({"id": "a/b+c" * 10}, "challenge id"),
    ({"nonce": b"\0" * 31}, "nonce"),
    ({"nonce": "0" * 32}, "nonce"),
    ({"rp_id": ""}, "rp_id"),
    ({"purpose": "sign"}, "purpose"),
    ({"created_at": dt.datetime(2026, 11, 27, 3, 0)}, "timezone-aware"),
    ({"expires_at": T0}, "after created_at"),
    ({"expires_at": T0 - dt.timedelta(seconds=1)}, "after created_at"),
    ({"transaction_text": "pay 100 yen"}, "only for eKYC"),
    ({"purpose": "ekyc", "transaction_text": "bad \udc80"}, "UTF-8"),
])
def test_invalid_challenges_are_refused(change: dict, message: str):
    with pytest.raises(UsageError, match=message):
        replace(make(), **change)


def test_create_refuses_naive_now_and_bad_ttl():
    with pytest.raises(UsageError, match="timezone-aware"):
        make(now=dt.datetime(2026, 11, 27))
    with pytest.raises(UsageError, match="ttl"):
        make(ttl=dt.timedelta(0))


@pytest.mark.parametrize("text", [
    "", "not json", "[]", "null", '{"v": 2}', '{"v": true}',
    '{"v": 1, "id": "x"}',
])
def test_from_json_refuses_garbage(text: str):
    with pytest.raises(MalformedChallengeError) as info:
        Challenge.from_json(text)
    assert isinstance(info.value, JpkiError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("field, value", [
    ("nonce", "AAAA"),                   # decodes, but 3 bytes
    ("nonce", "@@@@"),                   # not base64url
    ("nonce", 12),                       # not a string
    ("created_at", "yesterday"),
    ("created_at", "2026-11-27T03:00:00"),  # naive
    ("purpose", "sign"),
    ("transaction_text", 5),
    ("extra", "field"),
])
def test_from_json_refuses_bad_fields(field: str, value: object):
    data = make().to_json()
    data[field] = value
    with pytest.raises(MalformedChallengeError):
        Challenge.from_json(json.dumps(data))


# --------------------------------------------------------------------------- every backend


def test_store_satisfies_the_protocol(backend: Backend):
    assert isinstance(backend.store, ChallengeStore)


@pytest.mark.parametrize("purpose, text", [("login", None), ("ekyc", "契約 No.42 に同意")])
def test_put_take_round_trip(backend: Backend, purpose: str, text: str | None):
    c = make(purpose, text=text)
    backend.store.put(c)
    got = backend.store.take(c.id, now=T0 + dt.timedelta(seconds=30))
    assert got == c
    assert got is not None and got.nonce == c.nonce and got.transaction_text == text


def test_take_is_single_use(backend: Backend):
    c = make()
    backend.store.put(c)
    assert backend.store.take(c.id, now=T0) == c
    assert backend.store.take(c.id, now=T0) is None
    assert backend.store.take(c.id, now=T0 + dt.timedelta(seconds=1)) is None


def test_unknown_and_malformed_ids_give_none(backend: Backend):
    backend.store.put(make())
    for cid in (new_challenge_id(), "", "x", "../../etc/passwd", "*", "a" * 129, "ä" * 30):
        assert backend.store.take(cid, now=T0) is None


def test_take_after_expiry_gives_none_and_deletes(backend: Backend):
    c = make()
    backend.store.put(c)
    assert backend.store.take(c.id, now=c.expires_at) is None
    # gone: not even a take at an earlier time finds it
    assert backend.store.take(c.id, now=T0) is None


def test_take_just_before_expiry_succeeds(backend: Backend):
    c = make()
    backend.store.put(c)
    assert backend.store.take(c.id, now=c.expires_at - dt.timedelta(microseconds=1)) == c


def test_expiry_compares_instants_across_time_zones(backend: Backend):
    c = make(now=dt.datetime(2026, 11, 27, 12, 0, tzinfo=JST))  # 03:00 UTC
    backend.store.put(c)
    assert backend.store.take(c.id, now=T0 + TTL) is None     # 03:05 UTC == expiry
    d = make(now=dt.datetime(2026, 11, 27, 12, 0, tzinfo=JST))
    backend.store.put(d)
    assert backend.store.take(d.id, now=T0 + TTL - dt.timedelta(seconds=1)) == d


def test_purge_expired(backend: Backend):
    short = [make(ttl=dt.timedelta(seconds=10)) for _ in range(3)]
    long = [make(ttl=dt.timedelta(minutes=10)) for _ in range(2)]
    for c in short + long:
        backend.store.put(c)
    now = T0 + dt.timedelta(seconds=10)  # the short ones expire exactly now
    assert backend.store.purge_expired(T0) == 0
    assert backend.store.purge_expired(now) == 3
    assert backend.store.purge_expired(now) == 0
    for c in short:
        assert backend.store.take(c.id, now=T0) is None
    for c in long:
        assert backend.store.take(c.id, now=now) == c
    assert backend.store.purge_expired(T0 + dt.timedelta(days=1)) == 0


def test_duplicate_put_is_refused(backend: Backend):
    c = make()
    backend.store.put(c)
    with pytest.raises(DuplicateChallengeError):
        backend.store.put(c)
    with pytest.raises(DuplicateChallengeError):
        backend.store.put(replace(c, nonce=os.urandom(32)))
    assert backend.store.take(c.id, now=T0) == c
    assert backend.store.take(c.id, now=T0) is None


def test_interleaved_challenges(backend: Backend):
    s = backend.store
    a, b, c = make(), make("ekyc", text="t"), make(ttl=dt.timedelta(seconds=5))
    s.put(a)
    s.put(b)
    assert s.take(b.id, now=T0) == b
    d = make("ekyc")
    s.put(c)
    s.put(d)
    assert s.take(b.id, now=T0) is None
    assert s.take(c.id, now=T0 + dt.timedelta(seconds=5)) is None       # expired
    assert s.take(d.id, now=T0 + dt.timedelta(seconds=5)) == d
    assert s.take(a.id, now=T0 + dt.timedelta(seconds=6)) == a
    assert [s.take(x.id, now=T0) for x in (a, b, c, d)] == [None] * 4


def test_take_needs_an_aware_now(backend: Backend):
    c = make()
    backend.store.put(c)
    with pytest.raises(UsageError):
        backend.store.take(c.id, now=dt.datetime(2026, 11, 27, 3, 0))
    with pytest.raises(UsageError):
        backend.store.purge_expired(dt.datetime(2026, 11, 27, 3, 0))
    with pytest.raises(UsageError):
        backend.store.put("not a challenge")  # type: ignore[arg-type]
    assert backend.store.take(c.id, now=T0) == c


def test_closed_store_refuses_work(backend: Backend):
    backend.store.close()
    backend.store.close()  # idempotent
    with pytest.raises(ChallengeStoreError, match="closed"):
        backend.store.put(make())
    with pytest.raises(ChallengeStoreError, match="closed"):
        backend.store.take(new_challenge_id(), now=T0)


def test_context_manager_closes(backend: Backend):
    with backend.store as s:
        s.put(make())
    with pytest.raises(ChallengeStoreError):
        backend.store.put(make())


def test_another_store_object_sees_the_same_challenges(shared_backend: Backend):
    other = shared_backend.reopen()
    try:
        c = make()
        shared_backend.store.put(c)
        assert other.take(c.id, now=T0) == c
        assert shared_backend.store.take(c.id, now=T0) is None
        with pytest.raises(DuplicateChallengeError):
            d = make()
            other.put(d)
            shared_backend.store.put(d)
    finally:
        other.close()


# --------------------------------------------------------------------------- concurrency

N_THREADS = 8
N_PROCESSES = 4
N_RACED = 25


def _race_threads(take: Callable[[str], Challenge | None], ids: list[str]) -> list[list[Challenge]]:
    """N_THREADS threads start together and each tries to take every id (in its own order)."""
    barrier = threading.Barrier(N_THREADS)
    wins: list[list[Challenge]] = [[] for _ in range(N_THREADS)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        order = ids[:]
        random.Random(i).shuffle(order)
        try:
            barrier.wait(timeout=30)
            for cid in order:
                got = take(cid)
                if got is not None:
                    wins[i].append(got)
        except Exception as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return wins


def _assert_each_won_once(challenges: list[Challenge], winners: list[tuple[str, bytes]]) -> None:
    counts = Counter(cid for cid, _ in winners)
    assert counts == Counter({c.id: 1 for c in challenges}), "a challenge was taken twice or never"
    nonces = {c.id: c.nonce for c in challenges}
    assert all(nonces[cid] == nonce for cid, nonce in winners)


def test_threads_race_for_one_challenge(backend: Backend):
    c = make()
    backend.store.put(c)
    wins = _race_threads(lambda cid: backend.store.take(cid, now=T0), [c.id])
    assert sorted(len(w) for w in wins) == [0] * (N_THREADS - 1) + [1]


def test_threads_race_for_many_challenges(backend: Backend):
    challenges = [make("ekyc" if i % 3 else "login") for i in range(N_RACED)]
    for c in challenges:
        backend.store.put(c)
    wins = _race_threads(lambda cid: backend.store.take(cid, now=T0), [c.id for c in challenges])
    _assert_each_won_once(challenges, [(c.id, c.nonce) for w in wins for c in w])


def test_threads_put_and_take_interleaved(backend: Backend):
    """Each thread issues its own challenges while racing the others for everyone's."""
    lock = threading.Lock()
    issued: list[Challenge] = []
    winners: list[tuple[str, bytes]] = []
    barrier = threading.Barrier(N_THREADS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        rng = random.Random(i)
        try:
            barrier.wait(timeout=30)
            for _ in range(15):
                c = make()
                backend.store.put(c)
                with lock:
                    issued.append(c)
                    candidates = rng.sample(issued, min(3, len(issued)))
                for cand in candidates:
                    got = backend.store.take(cand.id, now=T0)
                    if got is not None:
                        with lock:
                            winners.append((got.id, got.nonce))
        except Exception as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for c in issued:  # the leftovers, once each
        got = backend.store.take(c.id, now=T0)
        if got is not None:
            winners.append((got.id, got.nonce))
    assert len(issued) == N_THREADS * 15
    _assert_each_won_once(issued, winners)


def _process_worker(spec: str, ids: list[str], now_iso: str, seed: int,
                    barrier: multiprocessing.synchronize.Barrier,  # type: ignore[name-defined]
                    results: multiprocessing.Queue) -> None:
    """Runs in a spawned process: open the store from its spec and race for every id."""
    store = open_store(spec)
    try:
        now = dt.datetime.fromisoformat(now_iso)
        order = ids[:]
        random.Random(seed).shuffle(order)
        barrier.wait(timeout=60)
        won = []
        for cid in order:
            got = store.take(cid, now=now)
            if got is not None:
                won.append((got.id, got.nonce))
        results.put((seed, won))
    finally:
        store.close()


def _race_processes(spec: str, ids: list[str]) -> list[tuple[str, bytes]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_process_worker,
                         args=(spec, ids, T0.isoformat(), seed, barrier, results))
             for seed in range(N_PROCESSES)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * N_PROCESSES
    assert sorted(seed for seed, _ in outcomes) == list(range(N_PROCESSES))
    return [w for _, won in outcomes for w in won]


@pytest.mark.slow
def test_processes_race_for_one_challenge(shared_backend: Backend):
    c = make()
    shared_backend.store.put(c)
    assert shared_backend.spec is not None
    winners = _race_processes(shared_backend.spec, [c.id])
    assert winners == [(c.id, c.nonce)]


@pytest.mark.slow
def test_processes_race_for_many_challenges(shared_backend: Backend):
    challenges = [make() for _ in range(N_RACED)]
    for c in challenges:
        shared_backend.store.put(c)
    assert shared_backend.spec is not None
    winners = _race_processes(shared_backend.spec, [c.id for c in challenges])
    _assert_each_won_once(challenges, winners)
    assert all(shared_backend.store.take(c.id, now=T0) is None for c in challenges)


# --------------------------------------------------------------------------- MemoryStore


def test_memory_store_is_bounded():
    s = MemoryStore(max_entries=3)
    old = [make(ttl=dt.timedelta(seconds=1)) for _ in range(3)]
    for c in old:
        s.put(c)
    assert len(s) == 3 and s  # an empty store is still truthy
    with pytest.raises(StoreFullError, match=r"full .3 pending.*purge_expired"):
        s.put(make())
    assert s.purge_expired(T0 + dt.timedelta(seconds=1)) == 3
    s.put(make())
    assert len(s) == 1
    with pytest.raises(UsageError):
        MemoryStore(max_entries=0)


def test_memory_store_take_makes_room():
    s = MemoryStore(max_entries=1)
    c = make()
    s.put(c)
    assert s.take(c.id, now=T0) == c
    s.put(make())


# --------------------------------------------------------------------------- SqliteStore


def test_sqlite_files_are_private(tmp_path: Path):
    path = tmp_path / "c.db"
    s = SqliteStore(path)
    try:
        s.put(make())
        files = [p for p in tmp_path.iterdir() if p.name.startswith("c.db")]
        assert {p.name for p in files} >= {"c.db", "c.db-wal", "c.db-shm"}
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        s.close()


def test_sqlite_uses_wal_and_survives_reopening(tmp_path: Path):
    path = tmp_path / "c.db"
    c = make("ekyc", text="テスト")
    with SqliteStore(path) as s:
        s.put(c)
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    with SqliteStore(path) as s:
        assert s.take(c.id, now=T0) == c
    with SqliteStore(path) as s:
        assert s.take(c.id, now=T0) is None


def test_sqlite_transaction_fallback_is_single_use_too(tmp_path: Path, monkeypatch):
    """The BEGIN IMMEDIATE path used with SQLite < 3.35 (no RETURNING)."""
    s = SqliteStore(tmp_path / "c.db")
    monkeypatch.setattr(s, "_use_returning", False)
    try:
        challenges = [make() for _ in range(N_RACED)]
        for c in challenges:
            s.put(c)
        expired = make(ttl=dt.timedelta(seconds=1))
        s.put(expired)
        wins = _race_threads(lambda cid: s.take(cid, now=T0), [c.id for c in challenges])
        _assert_each_won_once(challenges, [(c.id, c.nonce) for w in wins for c in w])
        assert s.take(expired.id, now=T0 + dt.timedelta(seconds=1)) is None
        assert s.take(expired.id, now=T0) is None
    finally:
        s.close()


@pytest.mark.parametrize("path", ["", ":memory:", "file:x.db?mode=memory"])
def test_sqlite_needs_a_file(path: str):
    with pytest.raises(UsageError, match="file path"):
        SqliteStore(path)


def test_sqlite_unopenable_path_is_a_store_error(tmp_path: Path):
    with pytest.raises(ChallengeStoreError, match="cannot open"):
        SqliteStore(tmp_path / "no" / "such" / "dir" / "c.db")


def test_sqlite_refuses_a_foreign_schema_version(tmp_path: Path):
    import sqlite3

    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.commit()
    conn.close()
    with pytest.raises(ChallengeStoreError, match="schema version 7"):
        SqliteStore(path)


def test_sqlite_corrupt_row_is_reported(tmp_path: Path):
    import sqlite3

    path = tmp_path / "c.db"
    c = make()
    with SqliteStore(path) as s:
        s.put(c)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE challenges SET data = 'garbage'")
        conn.commit()
        conn.close()
        with pytest.raises(MalformedChallengeError):
            s.take(c.id, now=T0)
        assert s.take(c.id, now=T0) is None  # taken (and gone) all the same


# --------------------------------------------------------------------------- RedisStore


def test_redis_keys_carry_the_prefix_and_a_server_side_expiry(redis_store: RedisStore):
    c = make()
    redis_store.put(c)
    client = redis_store._client
    key = redis_store.prefix + c.id
    assert Challenge.from_json(client.get(key)) == c
    pttl = client.pttl(key)
    ms = dt.timedelta(milliseconds=1)
    assert TTL / ms < pttl <= (TTL + redis_store.expiry_grace) / ms
    assert redis_store.take(c.id, now=T0) == c
    assert client.exists(key) == 0


def test_redis_uses_getdel_on_this_server(redis_store: RedisStore):
    assert redis_store.take_method == "getdel"
    assert tuple(int(x) for x in redis_store.server_version.split(".")[:2]) >= (6, 2)


def test_redis_lua_take_is_single_use(redis_url: str):
    """The script used for servers older than 6.2, against the real server."""
    s = RedisStore(redis_url, prefix=f"jpki-test:{uuid.uuid4().hex}:", take_method="lua")
    try:
        assert s.take_method == "lua"
        challenges = [make() for _ in range(N_RACED)]
        for c in challenges:
            s.put(c)
        wins = _race_threads(lambda cid: s.take(cid, now=T0), [c.id for c in challenges])
        _assert_each_won_once(challenges, [(c.id, c.nonce) for w in wins for c in w])
        expired = make()
        s.put(expired)
        assert s.take(expired.id, now=expired.expires_at) is None
        assert s.take(expired.id, now=T0) is None
    finally:
        s.close()


def test_redis_prefixes_keep_stores_apart(redis_url: str):
    a = RedisStore(redis_url, prefix=f"jpki-test:{uuid.uuid4().hex}:a:")
    b = RedisStore(redis_url, prefix=f"jpki-test:{uuid.uuid4().hex}:b:")
    try:
        c = make(ttl=dt.timedelta(seconds=1))
        a.put(c)
        assert b.take(c.id, now=T0) is None
        assert b.purge_expired(T0 + dt.timedelta(days=1)) == 0
        assert a.take(c.id, now=T0) == c
    finally:
        a.close()
        b.close()


def test_redis_purge_leaves_foreign_keys_and_handles_glob_characters(redis_url: str):
    base = f"jpki-test:{uuid.uuid4().hex}:"
    prefix = base + "*?[ab]\\:"
    # the prefix, read as an (unescaped) glob, would also match this key of another store
    sibling = base + "xyza\\:" + new_challenge_id()
    foreign = prefix + "not-a-challenge"
    s = RedisStore(redis_url, prefix=prefix)
    client = s._client
    try:
        client.set(foreign, b"hello", px=60_000)
        client.set(sibling, make(ttl=dt.timedelta(seconds=1)).encode(), px=60_000)
        old = [make(ttl=dt.timedelta(seconds=1)) for _ in range(600)]  # more than one SCAN batch
        for c in old:
            s.put(c)
        assert s.purge_expired(T0 + dt.timedelta(seconds=1)) == 600
        assert client.get(foreign) == b"hello"
        assert client.exists(sibling) == 1
    finally:
        client.delete(foreign, sibling)
        s.close()


def test_redis_foreign_value_under_a_challenge_key_is_reported(redis_store: RedisStore):
    cid = new_challenge_id()
    redis_store._client.set(redis_store.prefix + cid, b"{not json", px=60_000)
    with pytest.raises(MalformedChallengeError):
        redis_store.take(cid, now=T0)
    other = make()
    redis_store._client.set(redis_store.prefix + cid, other.encode(), px=60_000)
    with pytest.raises(MalformedChallengeError, match="holds challenge"):
        redis_store.take(cid, now=T0)


def test_redis_unreachable_server_is_a_store_error():
    import redis_env

    port = redis_env.free_port()  # nothing listens there
    with pytest.raises(ChallengeStoreError, match=f"127.0.0.1:{port}"):
        RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0)


def test_redis_errors_never_show_the_password():
    import redis_env

    port = redis_env.free_port()
    with pytest.raises(ChallengeStoreError) as info:
        RedisStore(f"redis://user:s3cret-pw@127.0.0.1:{port}/0", socket_timeout=1.0)
    assert "s3cret-pw" not in str(info.value)
    assert "***" in str(info.value)


def test_redis_bad_arguments():
    with pytest.raises(UsageError, match="take_method"):
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", take_method="fast")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expiry_grace"):
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", expiry_grace=dt.timedelta(seconds=-1))


# --------------------------------------------------------------------------- open_store


def test_open_store_memory():
    s = open_store("memory")
    assert isinstance(s, MemoryStore)
    s.close()


def test_open_store_sqlite(tmp_path: Path):
    s = open_store(f"sqlite:{tmp_path / 'x.db'}")
    try:
        assert isinstance(s, SqliteStore) and s.path == tmp_path / "x.db"
    finally:
        s.close()


def test_open_store_redis_with_prefix(redis_url: str):
    s = open_store(f"{redis_url}?prefix=myapp:ch:")
    try:
        assert isinstance(s, RedisStore) and s.prefix == "myapp:ch:"
        c = make()
        s.put(c)
        assert s._client.exists("myapp:ch:" + c.id) == 1
        assert s.take(c.id, now=T0) == c
    finally:
        s.close()
    s = open_store(redis_url)
    try:
        assert isinstance(s, RedisStore) and s.prefix == RedisStore.DEFAULT_PREFIX
    finally:
        s.close()


@pytest.mark.parametrize("spec", ["", "  ", "mem", "memory:", "sqlite:", "sqlite", "redis:",
                                  "redis:/x", "postgres://db/x", "MEMORY"])
def test_open_store_refuses_unknown_specs(spec: str):
    with pytest.raises(UsageError) as info:
        open_store(spec)
    assert fail_for(info.value).exit_code == 2
    assert "memory" in str(info.value) or "sqlite" in str(info.value)


def test_open_store_refuses_two_prefixes():
    with pytest.raises(UsageError, match="prefix more than once"):
        open_store(f"redis://127.0.0.1:{free_port()}/0?prefix=a&prefix=b")


# --------------------------------------------------------------------------- layering


def test_the_store_imports_no_card_library():
    """jpki.auth.store (and jpki.auth) import in an interpreter where the card layers, the
    emulator and pyscard cannot be imported, and pull none of them in."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        BLOCKED = ("jpki.session", "jpki.transport", "jpki.apdu", "jpki.cli", "card_emulator",
                   "smartcard")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import jpki.auth.store
        import json
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("jpki"))))
    """)
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    loaded = json.loads(p.stdout)
    assert "jpki.auth.store" in loaded and "jpki.auth" in loaded


def test_the_redis_client_is_imported_lazily():
    code = "import sys, jpki.auth.store; print('redis' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def test_module_has_no_print_exit_or_logging_config():
    source = Path(store_mod.__file__).read_text(encoding="utf-8")
    for forbidden in ("print(", "sys.exit(", "basicConfig("):
        assert forbidden not in source
