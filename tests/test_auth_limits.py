"""Per-client limits of the relying-party service (issue 9, item 3): one client flooding
``begin`` must not lock anyone else out, nor push their challenges off the page's board; its
refusals are answered 429 with Retry-After, counted in ``/api/stats`` and summarised in the log
rather than logged one by one. Fake timers drive the token buckets: no test waits on real time."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import httpx
import pytest
from auth_support import AUTH_PIN
from redis_env import redis_url  # noqa: F401  (session fixture: a private redis-server)

from jpki.auth.board import MemoryBoard, RedisBoard, SqliteBoard
from jpki.auth.client import answer_login, login
from jpki.auth.limits import (
    ClientLimits,
    MemoryLimiter,
    RedisLimiter,
    RefusalLog,
    SqliteLimiter,
    client_key,
)
from jpki.auth.protocol import parse_challenge
from jpki.auth.service import (
    ServiceConfig,
    build_relying_party,
    create_app,
    openapi_document,
)
from jpki.errors import UsageError

BASE = "http://testserver"
FLOODER = "203.0.113.7"
USER = "198.51.100.20"


class FakeTimer:
    """A clock for the token buckets that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(app: Any, method: str, path: str, client: str = USER, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(go())


def flood(app: Any, count: int, client: str = FLOODER, body: Any = None) -> list[httpx.Response]:
    """``count`` begins from ``client`` over one connection pool, as fast as the app answers."""
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            return [await c.post("/api/login/begin", json=body) for _ in range(count)]

    return asyncio.run(go())


class AsgiJsonFrom:
    """The login client's HttpJson over ASGITransport, from a given client address."""

    def __init__(self, app: Any, client: str) -> None:
        self.app, self.client = app, client

    def __call__(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        response = request(self.app, method, url.removeprefix(BASE), client=self.client, json=body)
        return response.status_code, response.json()


def make_app(home, clock, fetch, *, limits: ClientLimits, limiter=None, store: str = "memory",
             refusals: RefusalLog | None = None) -> Any:
    config = ServiceConfig(home=home, rp_id=BASE, store=store, board_quota=limits.board_quota)
    rp, board, close = build_relying_party(config, clock=clock, fetch=fetch)
    return create_app(rp, board=board, on_shutdown=[close], limits=limits,
                      limiter=limiter if limiter is not None else MemoryLimiter(timer=FakeTimer()),
                      refusals=refusals)


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


# --------------------------------------------------------------------------- the token bucket


def test_a_flood_from_one_client_gets_429_while_another_client_logs_in(home, clock, net, alice, timer, caplog):
    caplog.set_level(logging.INFO, logger="jpki.auth")
    app = make_app(home, clock, net, limits=ClientLimits(rate=2.0, burst=10, max_pending=0),
                   limiter=MemoryLimiter(timer=timer))
    try:
        answers = flood(app, 300)
        assert [a.status_code for a in answers[:10]] == [200] * 10
        refused = answers[10:]
        assert {a.status_code for a in refused} == {429}
        assert {a.json()["reason"] for a in refused} == {"rate-limited"}
        assert all(a.json()["ok"] is False and a.json()["message"] for a in refused)
        assert refused[0].headers["retry-after"] == "1"  # one token comes back in 0.5 s
        # meanwhile another client logs in as usual
        answer = login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, http=AsgiJsonFrom(app, USER))
        assert answer.ok and answer.status == 200
        # the flooder gets a token back as time passes (2 per second)
        timer.now += 1.0
        assert [a.status_code for a in flood(app, 3)] == [200, 200, 429]
        stats = request(app, "GET", "/api/stats").json()
        assert stats["refused"] == {"rate-limited": 291}
        assert stats["limits"]["rate"] == 2.0 and stats["limits"]["burst"] == 10
    finally:
        app.state.close()
    refusal_lines = [r for r in caplog.records if "refus" in r.getMessage() and r.name == "jpki.auth"
                     and "login refused" not in r.getMessage()]
    # one line when the refusals started, one summary at shutdown: not 291
    assert len(refusal_lines) == 2, [r.getMessage() for r in refusal_lines]
    assert FLOODER in refusal_lines[0].getMessage()
    assert "rate-limited=290" in refusal_lines[1].getMessage()


def test_the_refusal_log_summarises_once_per_interval(caplog):
    timer = FakeTimer()
    logger = logging.getLogger("test.refusals")
    caplog.set_level(logging.INFO, logger="test.refusals")
    counter = RefusalLog(60.0, timer=timer, logger=logger)
    for _ in range(500):
        counter.refused("rate-limited", "203.0.113.7")
    timer.now += 30
    counter.tick()  # not due yet
    counter.refused("too-many-challenges", "198.51.100.1")
    assert len(caplog.records) == 1  # the start only
    timer.now += 31
    counter.tick()
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert "refused 500 request(s)" in summary
    assert "rate-limited=499" in summary and "too-many-challenges=1" in summary
    assert "from 2 client(s), most from 203.0.113.7 (499)" in summary
    assert counter.counts == {"rate-limited": 500, "too-many-challenges": 1}
    timer.now += 120
    counter.tick()  # a quiet interval: no line
    assert len(caplog.records) == 2


def test_client_keys():
    assert client_key("192.0.2.1") == "192.0.2.1"
    # one IPv6 host holds a whole /64: its addresses share one bucket
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key(None) == "unknown"
    with pytest.raises(UsageError):
        ClientLimits(rate=-1)
    with pytest.raises(UsageError):
        ClientLimits(rate=1, burst=0)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_shared_limiters_count_across_processes(backend, tmp_path, request, timer):
    """Two limiters on one file or server (as two worker processes have) share the buckets
    and the pending counts."""
    if backend == "sqlite":
        one, two = (SqliteLimiter(tmp_path / "x.limits", timer=timer) for _ in range(2))
    else:
        url = request.getfixturevalue("redis_url")
        one, two = (RedisLimiter(url, prefix="limits-test:", timer=timer) for _ in range(2))
    try:
        assert [one.take("a", 1.0, 3), two.take("a", 1.0, 3), one.take("a", 1.0, 3)] == [0, 0, 0]
        assert two.take("a", 1.0, 3) == pytest.approx(1.0, abs=1e-3)
        assert one.take("b", 1.0, 3) == 0  # another client has its own bucket
        timer.now += 1.0
        assert two.take("a", 1.0, 3) == 0
        now = 5000.0
        assert one.reserve("a", "c1", now=now, until=now + 60, cap=2)
        assert two.reserve("a", "c2", now=now, until=now + 60, cap=2)
        assert not one.reserve("a", "c3", now=now, until=now + 60, cap=2)
        assert two.reserve("b", "c4", now=now, until=now + 60, cap=2)
        two.release("c1")
        assert one.reserve("a", "c5", now=now, until=now + 60, cap=2)
        # expired challenges no longer count
        assert one.reserve("a", "c6", now=now + 61, until=now + 121, cap=2)
    finally:
        one.close()
        two.close()


# --------------------------------------------------------------------------- pending challenges


def test_unanswered_challenges_are_capped_per_client(home, clock, net, alice):
    app = make_app(home, clock, net, limits=ClientLimits(rate=0, max_pending=5))
    store = app.state.rp.store
    try:
        answers = flood(app, 50)
        assert [a.status_code for a in answers[:5]] == [200] * 5
        assert {(a.status_code, a.json()["reason"]) for a in answers[5:]} == {(429, "too-many-challenges")}
        assert int(answers[5].headers["retry-after"]) > 0
        assert len(store) == 5  # the refused ones were withdrawn from the store
        # another client is not affected
        assert login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, http=AsgiJsonFrom(app, USER)).ok
        # an answered challenge stops counting: the flooder may begin one more
        challenge = parse_challenge(answers[0].content)
        done = request(app, "POST", "/api/login/complete", client=FLOODER,
                       json=answer_login(challenge, alice, pin=lambda: AUTH_PIN).to_json())
        assert done.status_code == 200
        assert [a.status_code for a in flood(app, 2)] == [200, 429]
        # so do expired ones
        clock.advance(minutes=4)
        assert [a.status_code for a in flood(app, 6)] == [200] * 5 + [429]
        assert request(app, "GET", "/api/stats").json()["refused"] == {"too-many-challenges": 47}
    finally:
        app.state.close()


def test_the_cap_holds_with_a_shared_sqlite_store(home, clock, net, tmp_path, timer):
    """Two server processes on one SQLite store count one client's challenges together."""
    spec = f"sqlite:{tmp_path / 'challenges.db'}"
    limits = ClientLimits(rate=1.0, burst=4, max_pending=3)
    one = make_app(home, clock, net, limits=limits, store=spec,
                   limiter=SqliteLimiter(tmp_path / "challenges.db.limits", timer=timer))
    two = make_app(home, clock, net, limits=limits, store=spec,
                   limiter=SqliteLimiter(tmp_path / "challenges.db.limits", timer=timer))
    try:
        assert [a.status_code for a in flood(one, 2) + flood(two, 2)] == [200, 200, 200, 429]
        timer.now += 10
        assert [a.json()["reason"] for a in flood(one, 1)] == ["too-many-challenges"]
        assert [a.status_code for a in flood(two, 1, client=USER)] == [200]
    finally:
        one.state.close()
        two.state.close()


# --------------------------------------------------------------------------- the board


def board_of(kind: str, tmp_path, request, per_owner: int, max_entries: int = 10_000) -> Any:
    if kind == "memory":
        return MemoryBoard(max_entries, per_owner=per_owner)
    if kind == "sqlite":
        return SqliteBoard(tmp_path / "x.board", max_entries=max_entries, per_owner=per_owner)
    return RedisBoard(request.getfixturevalue("redis_url"), prefix=f"board-test-{tmp_path.name}:",
                      per_owner=per_owner)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_flood_of_displayed_challenges_pushes_off_only_its_own(kind, tmp_path, request):
    board = board_of(kind, tmp_path, request, per_owner=5)
    ttl = dt.timedelta(minutes=13)
    try:
        board.show("page-real-user-entry-xxxxxxxxxxxx", {"state": "pending"}, ttl, owner=USER)
        for i in range(300):
            board.show(f"page-flood-{i:04d}-xxxxxxxxxxxxxxxx", {"state": "pending", "n": i}, ttl, owner=FLOODER)
        assert board.get("page-real-user-entry-xxxxxxxxxxxx") == {"state": "pending"}
        # the flooder keeps only its newest five
        kept = [i for i in range(300) if board.get(f"page-flood-{i:04d}-xxxxxxxxxxxxxxxx") is not None]
        assert kept == list(range(295, 300))
        assert board.finish("page-real-user-entry-xxxxxxxxxxxx", {"state": "done"}, ttl)
        assert board.get("page-real-user-entry-xxxxxxxxxxxx") == {"state": "done"}
    finally:
        board.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_full_board_evicts_from_the_biggest_holder(kind, tmp_path, request):
    board = board_of(kind, tmp_path, request, per_owner=100, max_entries=10)
    ttl = dt.timedelta(minutes=13)
    try:
        board.show("real-0", {"n": 0}, ttl, owner=USER)
        for i in range(30):  # more than the board holds, within the flooder's own quota
            board.show(f"flood-{i}", {"n": i}, ttl, owner=FLOODER)
        assert board.get("real-0") == {"n": 0}
        assert sum(board.get(f"flood-{i}") is not None for i in range(30)) == 9
    finally:
        board.close()


def test_the_page_board_keeps_a_real_users_challenge_during_a_flood(home, clock, net):
    app = make_app(home, clock, net, limits=ClientLimits(rate=0, max_pending=0, board_quota=4))
    try:
        mine = request(app, "POST", "/api/login/begin", json={"display": True}).json()
        answers = flood(app, 200, body={"display": True})
        assert {a.status_code for a in answers} == {200}
        assert request(app, "GET", f"/api/challenges/{mine['id']}").json() == mine
        shown = [request(app, "GET", f"/api/challenges/{a.json()['id']}").status_code for a in answers]
        assert shown == [404] * 196 + [200] * 4
    finally:
        app.state.close()


def test_openapi_documents_the_refusals_and_the_stats():
    doc = openapi_document(BASE, 65536)
    begin = doc["paths"]["/api/login/begin"]["post"]["responses"]
    complete = doc["paths"]["/api/login/complete"]["post"]["responses"]
    assert {"408", "429"} <= set(begin) and {"408", "429", "503"} <= set(complete)
    assert "Retry-After" in complete["429"]["headers"] and "busy" in complete["503"]["description"]
    stats = doc["paths"]["/api/stats"]["get"]["responses"]["200"]
    assert stats["content"]["application/json"]["schema"]["$ref"].endswith("/Stats")
    assert "refused" in doc["components"]["schemas"]["Stats"]["properties"]
