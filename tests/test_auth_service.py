"""The relying-party HTTP service (jpki.auth.service): the ASGI app in process through
httpx.ASGITransport, with the SQLite and Redis stores, and once under real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from auth_support import (
    AUTH_PIN,
    BASE,
    SIGN_PIN,
    assert_no_personal_data,
    credentials,
    forged_login,
    make_service,
    request,
)
from redis_env import redis_url  # noqa: F401  (session fixture: a private redis-server)

from jpki.auth.client import (
    ChallengeRefusedError,
    HttpxJson,
    ServiceClient,
    answer_ekyc,
    answer_login,
    ekyc,
    login,
)
from jpki.auth.protocol import parse_challenge
from jpki.auth.service import (
    DEFAULT_MAX_BODY,
    ServiceConfig,
    running_service,
    serve,
    serve_in_thread,
    status_for,
)
from jpki.errors import UsageError
from jpki.lifecycle import lost
from jpki.provision import Home, read_holder


class AsgiJson:
    """The client's HttpJson over httpx.ASGITransport: the app in this process."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE) as c:
                return await c.request(method, url, json=body)

        response = asyncio.run(go())
        return response.status_code, response.json()






@pytest.fixture
def app(home, clock, net) -> Iterator[Any]:
    application = make_service(home, clock, net)
    yield application
    application.state.close()


# --------------------------------------------------------------------------- both flows


def test_login_over_http(app, alice):
    begun = request(app, "POST", "/api/login/begin")
    assert begun.status_code == 200 and begun.headers["cache-control"] == "no-store"
    challenge = parse_challenge(begun.content)
    assert challenge.rp_id == BASE and challenge.purpose == "login"
    response = answer_login(challenge, alice, pin=lambda: AUTH_PIN)
    done = request(app, "POST", "/api/login/complete", json=response.to_json())
    assert done.status_code == 200, done.text
    doc = done.json()
    assert doc["ok"] is True and doc["account"]["key"].startswith("jpki1:")
    again = request(app, "POST", "/api/login/complete", json=response.to_json())
    assert again.status_code == 403 and again.json()["reason"] == "replayed"


def test_the_client_runs_both_flows_against_the_app(app, alice, home, clock):
    answer = login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, http=AsgiJson(app))
    assert answer.ok and answer.status == 200 and answer.document["account"]["renewals"] == 0
    answer = ekyc(BASE, alice, clock=clock, pin=lambda: SIGN_PIN, transaction_text="本人確認", http=AsgiJson(app))
    assert answer.ok, answer.document
    persona = read_holder(Home(home), "alice").persona
    assert answer.document["identity"]["name"] == persona.name
    assert answer.document["identity"]["birth_date"] == persona.birth_date.isoformat()
    assert answer.document["transaction_text"] == "本人確認"


def test_ekyc_over_http_logs_no_personal_data(app, alice, home, caplog):
    caplog.set_level(logging.DEBUG)
    begun = request(app, "POST", "/api/ekyc/begin", json={"transaction_text": "口座開設"})
    challenge = parse_challenge(begun.content)
    assert challenge.transaction_text == "口座開設"
    response = answer_ekyc(challenge, alice, pin=lambda: SIGN_PIN)
    done = request(app, "POST", "/api/ekyc/complete", json=response.to_json())
    assert done.status_code == 200 and done.json()["identity"]["sex"] == "female"
    assert "eKYC ok" in caplog.text
    assert_no_personal_data(caplog.text, home)


def test_the_client_refuses_a_challenge_for_another_relying_party(home, clock, net, alice):
    app = make_service(home, clock, net, rp_id="https://bank.example.jp")
    try:
        with pytest.raises(ChallengeRefusedError) as refused:
            login(BASE, alice, clock=clock, pin=lambda: pytest.fail("no PIN may be asked"), http=AsgiJson(app))
        assert refused.value.reason == "wrong-rp"
        # told that the service is known under that name, it goes on
        answer = login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, http=AsgiJson(app),
                       expected_rp_id="https://bank.example.jp")
        assert answer.ok
    finally:
        app.state.close()


# --------------------------------------------------------------------------- refusals


def test_refusals_map_to_status_codes(app, home, alice, clock):
    key, der = credentials(home, "alice", "sign")
    challenge = parse_challenge(request(app, "POST", "/api/login/begin").content)
    confused = forged_login(challenge, key, der)
    done = request(app, "POST", "/api/login/complete", json=confused.to_json())
    assert (done.status_code, done.json()["reason"]) == (403, "wrong-key-kind")
    challenge = parse_challenge(request(app, "POST", "/api/login/begin").content)
    response = answer_login(challenge, alice, pin=lambda: AUTH_PIN)
    clock.advance(minutes=10)
    done = request(app, "POST", "/api/login/complete", json=response.to_json())
    assert (done.status_code, done.json()["reason"]) == (403, "expired")
    assert status_for(None) == 200 and status_for("store-unavailable") == 503


def test_revoked_over_http(app, home, alice, clock):
    lost(Home(home), "alice", clock=clock)
    answer = login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, http=AsgiJson(app))
    assert (answer.status, answer.reason) == (403, "revoked")


@pytest.mark.parametrize("body", [b"{", b"\xff", b"[]", b'{"v":1}',
                                  b'{"v":1,"challenge_id":"AAAAAAAAAAAAAAAAAAAAAAAA","client_data":"***",'
                                  b'"certificate":"AA","signature":"AA"}'])
@pytest.mark.parametrize("purpose", ["login", "ekyc"])
def test_malformed_json_or_base64_is_400(app, body, purpose):
    done = request(app, "POST", f"/api/{purpose}/complete", content=body)
    assert done.status_code == 400
    assert done.json()["reason"] == "malformed" and done.json()["ok"] is False


@pytest.mark.parametrize("body", [b"{", b"[1]", b'{"display": 1}', b'{"nope": true}',
                                  b'{"transaction_text": "\\u0000"}'])
def test_malformed_begin_is_400(app, body):
    done = request(app, "POST", "/api/ekyc/begin", content=body)
    assert (done.status_code, done.json()["reason"]) == (400, "malformed")


def test_login_begin_takes_no_transaction_text(app):
    done = request(app, "POST", "/api/login/begin", json={"transaction_text": "x"})
    assert done.status_code == 400


@pytest.mark.parametrize("path", ["/api/login/complete", "/api/ekyc/complete", "/api/login/begin"])
def test_oversized_bodies_are_413(app, path):
    big = b"{" + b" " * DEFAULT_MAX_BODY + b"}"
    done = request(app, "POST", path, content=big)
    assert (done.status_code, done.json()["reason"]) == (413, "too-large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(DEFAULT_MAX_BODY // 4096 + 2):
            yield b" " * 4096

    done = request(app, "POST", path, content=chunks())
    assert (done.status_code, done.json()["reason"]) == (413, "too-large")


def test_a_lying_content_length_is_still_counted(home, clock, net):
    app = make_service(home, clock, net, max_body=2048)
    try:
        async def send() -> list[dict[str, Any]]:
            sent: list[dict[str, Any]] = []
            messages = [{"type": "http.request", "body": b" " * 1500, "more_body": True},
                        {"type": "http.request", "body": b" " * 1500, "more_body": False}]

            async def receive() -> dict[str, Any]:
                return messages.pop(0)

            async def collect(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/api/login/complete",
                     "raw_path": b"/api/login/complete",
                     "query_string": b"", "headers": [(b"content-length", b"10")], "http_version": "1.1",
                     "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 1), "root_path": ""}
            await app(scope, receive, collect)
            return sent

        sent = asyncio.run(send())
        assert sent[0]["status"] == 413
    finally:
        app.state.close()


def test_store_unavailable_is_503(app):
    app.state.rp.store.close()
    done = request(app, "POST", "/api/login/begin")
    assert (done.status_code, done.json()["reason"]) == (503, "store-unavailable")


# --------------------------------------------------------------------------- documents and page


def test_openapi_document(app):
    done = request(app, "GET", "/openapi.json")
    doc = done.json()
    assert done.status_code == 200 and doc["openapi"].startswith("3.1")
    assert {"/api/login/begin", "/api/login/complete", "/api/ekyc/begin", "/api/ekyc/complete",
            "/api/challenges/{id}", "/api/challenges/{id}/result"} <= set(doc["paths"])
    complete = doc["paths"]["/api/login/complete"]["post"]
    assert {"200", "400", "403", "413", "503"} <= set(complete["responses"])
    schemas = doc["components"]["schemas"]
    assert schemas["LoginResponse"]["required"] == ["challenge_id", "client_data", "certificate", "signature"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_the_page_shows_a_pending_login_and_its_result(app, alice, clock):
    page = request(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Log in with My Number Card" in page.text and 'src="page.js"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = request(app, "GET", "/page.js")
    assert "api/login/begin" in script.text and "display: true" in script.text
    info = request(app, "GET", "/api/info").json()
    assert info["rp_id"] == BASE
    # what the page's script does: a displayed challenge …
    challenge = request(app, "POST", "/api/login/begin", json={"display": True}).json()
    cid = challenge["id"]
    assert cid.startswith("page-")  # displayed challenges are tagged: only they touch the board
    plain = request(app, "POST", "/api/login/begin").json()
    assert not plain["id"].startswith("page-")
    assert request(app, "GET", f"/api/challenges/{plain['id']}").status_code == 404
    assert request(app, "GET", f"/api/challenges/{cid}/result").json() == {"state": "pending"}
    assert request(app, "GET", f"/api/challenges/{cid}").json() == challenge
    # … answered by `jpki login URL --challenge ID` …
    answer = login(BASE, alice, clock=clock, pin=lambda: AUTH_PIN, challenge_id=cid, http=AsgiJson(app))
    assert answer.ok
    # … and the page sees the result, without personal data
    state = request(app, "GET", f"/api/challenges/{cid}/result").json()
    assert state["state"] == "done" and state["result"]["ok"] is True
    assert state["result"]["account"] == answer.document["account"]["key"]
    assert request(app, "GET", f"/api/challenges/{cid}").status_code == 404
    assert request(app, "GET", "/api/challenges/AAAAAAAAAAAAAAAAAAAAAAAAAAAA/result").status_code == 404


def test_the_board_shows_a_refusal(app, home):
    key, der = credentials(home, "alice", "sign")
    challenge = parse_challenge(request(app, "POST", "/api/login/begin", json={"display": True}).content)
    request(app, "POST", "/api/login/complete", json=forged_login(challenge, key, der).to_json())
    state = request(app, "GET", f"/api/challenges/{challenge.id}/result").json()
    assert state["state"] == "done" and state["result"]["reason"] == "wrong-key-kind"


# --------------------------------------------------------------------------- shared stores


def test_sqlite_store_shared_by_two_apps(home, clock, net, tmp_path, alice):
    spec = f"sqlite:{tmp_path / 'challenges.db'}"
    one, two = make_service(home, clock, net, store=spec), make_service(home, clock, net, store=spec)
    try:
        challenge = parse_challenge(request(one, "POST", "/api/login/begin", json={"display": True}).content)
        response = answer_login(challenge, alice, pin=lambda: AUTH_PIN)
        assert request(two, "POST", "/api/login/complete", json=response.to_json()).status_code == 200
        assert request(one, "POST", "/api/login/complete", json=response.to_json()).json()["reason"] == "replayed"
        assert request(one, "GET", f"/api/challenges/{challenge.id}/result").json()["state"] == "done"
    finally:
        one.state.close()
        two.state.close()


def test_redis_store_shared_by_two_apps(home, clock, net, alice, redis_url):
    spec = f"{redis_url}?prefix=svc-test:"
    one, two = make_service(home, clock, net, store=spec), make_service(home, clock, net, store=spec)
    try:
        for purpose in ("login", "ekyc"):
            challenge = parse_challenge(request(one, "POST", f"/api/{purpose}/begin",
                                                json={"display": True}).content)
            assert request(two, "GET", f"/api/challenges/{challenge.id}").json()["id"] == challenge.id
            if purpose == "login":
                response: Any = answer_login(challenge, alice, pin=lambda: AUTH_PIN)
            else:
                response = answer_ekyc(challenge, alice, pin=lambda: SIGN_PIN)
            done = request(two, "POST", f"/api/{purpose}/complete", json=response.to_json())
            assert done.status_code == 200, done.text
            again = request(one, "POST", f"/api/{purpose}/complete", json=response.to_json())
            assert again.json()["reason"] == "replayed"
            result = request(one, "GET", f"/api/challenges/{challenge.id}/result").json()
            assert result["state"] == "done" and result["result"]["ok"] is True
            assert "identity" not in result["result"]  # the board never holds personal data
    finally:
        one.state.close()
        two.state.close()


def test_serve_refuses_several_workers_on_a_memory_store(home):
    with pytest.raises(UsageError, match="shared challenge store"):
        serve(ServiceConfig(home=home, rp_id=BASE, store="memory"), workers=2)


def test_config_round_trips_through_json(home):
    config = ServiceConfig(home=home, rp_id=BASE, store="sqlite:/tmp/x.db", challenge_ttl=60.0)
    assert ServiceConfig.from_json(config.to_json()) == config


# --------------------------------------------------------------------------- real uvicorn


def test_both_flows_under_uvicorn(home, clock, net, alice):
    app = make_service(home, clock, net, rp_id="http://127.0.0.1")  # the port is not known yet
    with serve_in_thread(app) as server:
        http = HttpxJson(timeout=10)
        expected = "http://127.0.0.1"
        answer = login(server.url, alice, clock=clock, pin=lambda: AUTH_PIN, http=http, expected_rp_id=expected)
        assert answer.ok, answer.document
        answer = ekyc(server.url, alice, clock=clock, pin=lambda: SIGN_PIN, http=http, expected_rp_id=expected,
                      transaction_text="uvicorn")
        assert answer.ok and answer.document["transaction_text"] == "uvicorn"
        status, doc = http("POST", f"{server.url}/api/login/complete", {"v": 1})
        assert (status, doc["reason"]) == (400, "malformed")
        service = ServiceClient(server.url, http=http)
        assert service.begin("login").purpose == "login"
        raw = json.loads(httpx.get(f"{server.url}/openapi.json").text)
        assert raw["info"]["title"].startswith("jpki relying party")


def test_running_service_for_the_demo(home, clock, net, alice):
    """What jpki demo does: a service in a thread, a login, an eKYC, then a lost card refused."""
    with running_service(home, clock=clock, fetch=net, revocation_max_age=0) as service:
        assert service.rp.rp_id == service.url
        assert login(service.url, alice, clock=clock, pin=lambda: AUTH_PIN).ok
        answer = ekyc(service.url, alice, clock=clock, pin=lambda: SIGN_PIN, transaction_text="demo")
        assert answer.ok and answer.document["identity"]["sex"] == "female"
        lost(Home(home), "alice", clock=clock)
        refused = login(service.url, alice, clock=clock, pin=lambda: AUTH_PIN)
        assert (refused.status, refused.reason) == (403, "revoked")
