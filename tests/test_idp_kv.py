"""The provider's shared store (jpki.idp.kv) on all three backends: set-if-absent, take once,
compare-and-set, expiry decided by the caller's clock, and exactly one winner when several
threads (or two store objects on one file or server, as two workers have) race."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import secrets
from collections.abc import Iterator

import pytest
from redis_env import redis_url  # noqa: F401  (session fixture)

from jpki.errors import UsageError
from jpki.idp.kv import KV, KVError, MemoryKV, RedisKV, SqliteKV, open_kv
from jpki.pki import free_port

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(seconds=60)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def pair(request, tmp_path) -> Iterator[tuple[KV, KV]]:
    """Two stores sharing their records (one object twice for memory: it is per process)."""
    if request.param == "memory":
        store = MemoryKV()
        yield store, store
        store.close()
        return
    if request.param == "sqlite":
        spec = f"sqlite:{tmp_path / 'kv.db'}"
    else:
        spec = request.getfixturevalue("redis_url") + f"?prefix=kv{secrets.token_hex(4)}:"
    a, b = open_kv(spec), open_kv(spec)
    yield a, b
    a.close()
    b.close()


def test_add_take_swap_and_expiry(pair):
    a, b = pair
    assert a.add("k", "v1", now=NOW, expires_at=LATER)
    assert not b.add("k", "v2", now=NOW, expires_at=LATER)            # set if absent
    assert b.get("k", now=NOW) == "v1"
    assert b.get("k", now=LATER) is None                              # expired at the caller's now
    assert b.add("k", "v3", now=LATER, expires_at=LATER + dt.timedelta(seconds=60))   # expired = absent
    assert not a.swap("k", "v1", "x", now=LATER, expires_at=LATER + dt.timedelta(seconds=60))
    assert a.swap("k", "v3", "v4", now=LATER, expires_at=LATER + dt.timedelta(seconds=60))
    assert b.get("k", now=LATER) == "v4"
    assert b.take("k", now=LATER) == "v4"
    assert a.take("k", now=LATER) is None and a.get("k", now=LATER) is None
    a.put("p", "one", now=NOW, expires_at=LATER)
    a.put("p", "two", now=NOW, expires_at=LATER)
    assert b.take("p", now=LATER) is None                             # taken but expired: gone, None
    assert a.get("p", now=NOW) is None
    a.put("d", "x", now=NOW, expires_at=LATER)
    b.delete("d")
    assert a.get("d", now=NOW) is None
    assert not a.swap("absent", "x", "y", now=NOW, expires_at=LATER)
    text = "日本語 | with a bar"
    a.put("u", text, now=NOW, expires_at=LATER)
    assert b.get("u", now=NOW) == text


def test_one_winner_among_racing_threads(pair):
    a, b = pair
    a.put("code", "c", now=NOW, expires_at=LATER)
    a.put("state", "pending", now=NOW, expires_at=LATER)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda i: (a if i % 2 else b).take("code", now=NOW), range(16)))
        added = list(pool.map(lambda i: (a if i % 2 else b).add("jti", str(i), now=NOW, expires_at=LATER), range(16)))
        swapped = list(pool.map(lambda i: (a if i % 2 else b).swap("state", "pending", f"done{i}", now=NOW,
                                                                     expires_at=LATER), range(16)))
    assert taken.count("c") == 1 and taken.count(None) == 15
    assert added.count(True) == 1
    assert swapped.count(True) == 1


def test_purge_and_bounds(tmp_path):
    memory = MemoryKV(max_entries=2)
    memory.put("a", "1", now=NOW, expires_at=NOW + dt.timedelta(seconds=1))
    memory.put("b", "2", now=NOW, expires_at=LATER)
    with pytest.raises(KVError, match="full"):
        memory.put("c", "3", now=NOW, expires_at=LATER)
    memory.put("c", "3", now=NOW + dt.timedelta(seconds=2), expires_at=LATER)   # the expired one made room
    assert memory.purge_expired(LATER) == 2
    sqlite = SqliteKV(tmp_path / "kv.db")
    sqlite.put("a", "1", now=NOW, expires_at=NOW + dt.timedelta(seconds=1))
    assert sqlite.purge_expired(LATER) == 1
    assert oct((tmp_path / "kv.db").stat().st_mode & 0o777) == "0o600"
    sqlite.close()
    with pytest.raises(KVError):
        sqlite.get("a", now=NOW)
    with pytest.raises(UsageError):
        memory.get("", now=NOW)
    with pytest.raises(UsageError):
        memory.get("k", now=NOW.replace(tzinfo=None))


def test_specs():
    assert isinstance(open_kv("memory"), MemoryKV)
    for bad in ("", "sqlite:", "postgres://x", "redis:/nohost"):
        with pytest.raises(UsageError):
            open_kv(bad)
    with pytest.raises(KVError):
        RedisKV(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5)     # unreachable: fails at once


def test_put_many_stores_every_record_at_once(pair):
    a, b = pair
    a.put("old", "x", now=NOW, expires_at=LATER)
    a.put_many({"old": "replaced", "new": "日本語 | bar"}, now=NOW, expires_at=LATER)
    assert b.get("old", now=NOW) == "replaced" and b.get("new", now=NOW) == "日本語 | bar"
    assert b.get("new", now=LATER) is None                             # the given expiry
    with pytest.raises(UsageError):
        a.put_many({"ok": "v", "": "bad key"}, now=NOW, expires_at=LATER)
    assert b.get("ok", now=NOW) is None                                # nothing stored: all or none


def test_put_many_with_expiries_of_its_own(pair):
    a, b = pair
    a.put_many({"short": "s", "long": "l"}, now=NOW, expires_at=LATER,
               expiries={"long": LATER + dt.timedelta(days=7)})
    assert b.get("short", now=LATER) is None and b.get("long", now=LATER) == "l"
    assert b.get("long", now=LATER + dt.timedelta(days=7)) is None


def test_put_capped_counts_live_keys_across_stores_without_a_release(pair):
    a, b = pair
    assert a.put_capped("p1", "x", group="g", cap=2, now=NOW, expires_at=LATER)
    assert b.put_capped("p2", "y", group="g", cap=2, now=NOW, expires_at=LATER)
    assert not a.put_capped("p3", "z", group="g", cap=2, now=NOW, expires_at=LATER)     # full: nothing stored
    assert b.get("p3", now=NOW) is None and b.get("p2", now=NOW) == "y"
    assert b.put_capped("q1", "x", group="other", cap=2, now=NOW, expires_at=LATER)      # groups apart
    assert b.take("p1", now=NOW) == "x"                 # a member taken stops counting, no release needed
    assert a.put_capped("p3", "z", group="g", cap=2, now=NOW, expires_at=LATER)
    a.delete("p2")                                      # so does a deleted one
    assert b.put_capped("p4", "w", group="g", cap=2, now=NOW, expires_at=LATER + dt.timedelta(seconds=60))
    assert not a.put_capped("p5", "v", group="g", cap=2, now=NOW, expires_at=LATER)
    assert a.put_capped("p5", "v", group="g", cap=2, now=LATER, expires_at=LATER + dt.timedelta(seconds=60))
    assert not b.put_capped("p6", "u", group="g", cap=2, now=LATER,   # p3 expired at LATER; p4, p5 live
                            expires_at=LATER + dt.timedelta(seconds=60))
    with pytest.raises(UsageError):
        a.put_capped("p6", "u", group="g", cap=0, now=LATER, expires_at=LATER)


def test_put_capped_one_winner_for_the_last_place(pair):
    a, b = pair
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        placed = list(pool.map(lambda i: (a if i % 2 else b).put_capped(f"k{i}", "v", group="race", cap=5, now=NOW,
                                                                         expires_at=LATER), range(16)))
    assert placed.count(True) == 5


def test_purge_forgets_the_groups_of_finished_keys(tmp_path):
    memory = MemoryKV()
    memory.put_capped("k", "v", group="g", cap=1, now=NOW, expires_at=LATER)
    memory.take("k", now=NOW)
    memory.purge_expired(NOW)
    assert memory.groups() == 0
    sqlite = SqliteKV(tmp_path / "kv.db")
    sqlite.put_capped("k", "v", group="g", cap=1, now=NOW, expires_at=LATER)
    sqlite.put_capped("e", "v", group="g2", cap=1, now=NOW, expires_at=NOW + dt.timedelta(seconds=1))
    sqlite.take("k", now=NOW)
    sqlite.purge_expired(NOW + dt.timedelta(seconds=2))
    with sqlite._connection() as conn:
        assert conn.execute("SELECT count(*) FROM idp_kv_groups").fetchone()[0] == 0
    sqlite.close()


def test_add_then_take_is_one_step_and_takes_only_after_adding(pair):
    # The token endpoint records the client assertion's jti and takes the code in one round trip:
    # a replayed jti must leave the code where it is.
    a, b = pair
    a.put("code", "c1", now=NOW, expires_at=LATER)
    assert b.add_then_take("jti:1", "1", take="code", now=NOW, expires_at=LATER) == (True, "c1")
    a.put("code", "c2", now=NOW, expires_at=LATER)
    assert a.add_then_take("jti:1", "1", take="code", now=NOW, expires_at=LATER) == (False, None)   # replayed
    assert b.get("code", now=NOW) == "c2"                                                          # untouched
    assert a.add_then_take("jti:2", "1", take="absent", now=NOW, expires_at=LATER) == (True, None)
    assert b.add_then_take("jti:1", "1", take="code", now=LATER, expires_at=LATER + dt.timedelta(seconds=9)) \
        == (True, None)   # the old jti expired: stored again; the code expired too: gone, None
    assert a.get("code", now=NOW) is None
