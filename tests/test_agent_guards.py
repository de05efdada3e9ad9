"""The local agent's guards, one attack at a time (see jpki/agent/guards.py): DNS rebinding
(Host), cross-site requests (Origin, Sec-Fetch-Site, the page token), drive-by and framing
(fetch metadata, CSP), providers not approved (the trust list and what an issuer may be),
bounded bodies and time (ours and the provider's answers), loopback only."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agent_support import AGENT, SAME_ORIGIN, AgentBrowser, hidden_fields, make_agent, text_of
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from jpki.agent.guards import GuardError, PageTokens, check_fetch_metadata, check_host, check_origin
from jpki.agent.service import BoundedHttpJson, ProviderError
from jpki.agent.trust import TRUST_FILE, TrustedProviders, TrustStoreError, check_issuer
from jpki.errors import UsageError
from jpki.serving import serve_in_thread


def opened(agent_browser, served_idp, scope: str = "openid") -> tuple[str, Any]:
    _, pending = served_idp.begin(scope)
    page = agent_browser.open(served_idp.issuer, pending)
    assert page.status_code == 200
    return pending, page


# --------------------------------------------------------------------------- Host (DNS rebinding)


@pytest.mark.parametrize("host", ["evil.example:24780", "evil.example", "127.0.0.1:8600", "127.0.0.1",
                                  "localhost.evil.example:24780", "127.0.0.2:24780", ""])
def test_a_request_for_another_host_is_refused_before_routing(agent_browser, served_idp, host):
    pending, page = opened(agent_browser, served_idp)
    for method, path in (("GET", "/"), ("GET", f"/authorize?issuer={served_idp.issuer}&pending={pending}"),
                         ("POST", "/authorize"), ("POST", "/trust"), ("GET", "/nowhere")):
        answer = agent_browser.client.request(method, path, headers={**SAME_ORIGIN, "Host": host},
                                              data=hidden_fields(page.text) if method == "POST" else None)
        assert answer.status_code == 421, (method, path, answer.text)
        assert "DNS rebinding" in answer.text
    assert served_idp.state(pending)["state"] == "pending"


def test_the_agents_own_names_are_taken():
    assert check_host("127.0.0.1:24780", 24780) == "127.0.0.1:24780"
    assert check_host("LOCALHOST:24780", 24780) == "localhost:24780"
    assert check_host("[::1]:24780", 24780) == "[::1]:24780"
    with pytest.raises(GuardError):
        check_host(None, 24780)


# --------------------------------------------------------------------------- Origin, Sec-Fetch-Site


@pytest.mark.parametrize("headers", [
    {"Origin": None},                                                   # none at all
    {"Origin": "null"},                                                 # sandboxed frame, data: URL
    {"Origin": "http://evil.example"},
    {"Origin": "http://127.0.0.1:8600"},                                # same site, another port
    {"Origin": "https://127.0.0.1:24780"},
    {"Sec-Fetch-Site": "cross-site"},                                   # right Origin, wrong site
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "none"},
])
def test_a_form_not_from_the_agents_page_is_refused(agent_browser, served_idp, headers):
    pending, page = opened(agent_browser, served_idp)
    sent = {k: v for k, v in {**SAME_ORIGIN, **headers}.items() if v is not None}
    for path in ("/authorize", "/trust"):
        answer = agent_browser.client.post(path, data={**hidden_fields(page.text), "do": "answer", "pin": "1234"},
                                           headers=sent)
        assert answer.status_code == 403, answer.text
    assert served_idp.state(pending)["state"] == "pending"
    # the page still works from its own origin: the token was not spent by the refused requests
    assert agent_browser.submit(page, do="answer", pin="1234").status_code == 303


def test_origin_must_be_the_host_asked():
    check_origin("http://127.0.0.1:24780", "127.0.0.1:24780")
    check_origin("http://localhost:24780", "localhost:24780")
    with pytest.raises(GuardError) as caught:
        check_origin("http://localhost:24780", "127.0.0.1:24780")
    assert caught.value.reason == "bad-origin"


# --------------------------------------------------------------------------- the page token (CSRF)


def test_the_form_needs_the_token_of_its_own_page(agent_browser, served_idp):
    pending, page = opened(agent_browser, served_idp)
    _, other = opened(agent_browser, served_idp)
    fields = hidden_fields(page.text)
    for token in (None, "", "x" * 43, hidden_fields(other.text)["token"]):   # none, forged, another page's
        data = {**fields, "do": "answer", "pin": "1234"}
        if token is None:
            del data["token"]
        else:
            data["token"] = token
        answer = agent_browser.client.post("/authorize", data=data, headers={**SAME_ORIGIN, "Accept-Language": "en"})
        assert answer.status_code == 403 and "This page has expired or was already sent" in text_of(answer)
    assert served_idp.state(pending)["state"] == "pending"
    assert agent_browser.submit(page, do="answer", pin="1234").status_code == 303
    assert agent_browser.submit(page, do="answer", pin="1234").status_code == 403   # used once


def test_a_trust_token_is_no_authorize_token_and_tokens_expire(served_idp):
    agent = make_agent(served_idp.home, served_idp.clock)
    browser = AgentBrowser(agent)
    try:
        _, pending = served_idp.begin("openid")
        ask = browser.open(served_idp.issuer, pending)
        assert "Trust this provider?" in ask.text
        assert browser.submit(ask, do="answer", pin="1234").status_code == 403   # a trust page's token
        assert not agent.is_trusted(served_idp.issuer)
        ask = browser.open(served_idp.issuer, pending)
        served_idp.clock.advance(minutes=11)
        assert browser.submit(ask, path="/trust").status_code == 403
        assert not agent.is_trusted(served_idp.issuer)
    finally:
        browser.close()


def test_page_tokens_are_bounded():
    tokens = PageTokens(max_tokens=3)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = tokens.issue("a", now)
    for _ in range(3):
        tokens.issue("b", now)
    assert len(tokens) == 3
    with pytest.raises(GuardError):
        tokens.take(first, "a", now)   # the oldest went


# --------------------------------------------------------------------------- fetch metadata, framing


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Dest": "iframe"}, {"Sec-Fetch-Dest": "image"}, {"Sec-Fetch-Mode": "no-cors"},
    {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
])
def test_the_pages_open_as_top_level_navigations_only(agent_browser, served_idp, headers):
    _, pending = served_idp.begin("openid")
    for path in ("/", f"/authorize?issuer={served_idp.issuer}&pending={pending}"):
        answer = agent_browser.client.get(path, headers={"Sec-Fetch-Site": "cross-site", **headers})
        assert answer.status_code == 403 and "browser window only" in answer.text


def test_a_cross_site_navigation_opens_the_page_and_it_cannot_be_framed(agent_browser, served_idp):
    _, pending = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, pending, headers={"Sec-Fetch-Site": "cross-site"})
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "script" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    # not no-referrer: Chromium then sends "Origin: null" with the page's own form (test_browser_e2e)
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert "<script" not in page.text


# --------------------------------------------------------------------------- bodies


def test_a_form_body_only(agent_browser, served_idp):
    _, page = opened(agent_browser, served_idp)
    answer = agent_browser.client.post("/authorize", content=json.dumps(hidden_fields(page.text)),
                                       headers={**SAME_ORIGIN, "Content-Type": "application/json"})
    assert answer.status_code == 415


def test_a_large_body_is_refused(agent_browser, served_idp):
    pending, page = opened(agent_browser, served_idp)
    answer = agent_browser.client.post("/authorize", data={**hidden_fields(page.text), "pin": "1" * 9000},
                                       headers=SAME_ORIGIN)
    assert answer.status_code == 413
    assert served_idp.state(pending)["state"] == "pending"


def test_a_slow_body_is_cut_off(served_idp):
    agent = make_agent(served_idp.home, served_idp.clock, trust=(served_idp.issuer,))
    from jpki.agent.app import create_app

    with serve_in_thread(create_app(agent, body_timeout=0.3)) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(f"POST /authorize HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                     f"Origin: http://127.0.0.1:{server.port}\r\nContent-Type: application/x-www-form-urlencoded"
                     "\r\nContent-Length: 100\r\n\r\ntoken=abc".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]


# --------------------------------------------------------------------------- the provider's answers


def _provider_app() -> Starlette:
    async def big(request: Any) -> Any:
        return JSONResponse({"x": "y" * 4000})

    async def slow(request: Any) -> Any:
        async def trickle() -> AsyncIterator[bytes]:
            yield b'{"x": "'
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield b"y"
            yield b'"}'

        return StreamingResponse(trickle(), media_type="application/json")

    async def plain(request: Any) -> Any:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/big", big), Route("/slow", slow), Route("/ok", plain)])


def test_answers_from_the_provider_are_bounded_in_size_and_time():
    with serve_in_thread(_provider_app()) as server:
        http = BoundedHttpJson(timeout=0.5, max_bytes=1024)
        try:
            assert http("GET", server.url + "/ok") == (200, {"ok": True})
            with pytest.raises(ProviderError) as caught:
                http("GET", server.url + "/big")
            assert caught.value.reason == "too-large"
            with pytest.raises(ProviderError) as caught:
                http("GET", server.url + "/slow")
            assert caught.value.reason == "timeout"
        finally:
            http.close()
    with pytest.raises(ProviderError) as caught:
        BoundedHttpJson(timeout=2)("GET", server.url + "/ok")   # stopped: nobody listens
    assert caught.value.reason == "unreachable"


# --------------------------------------------------------------------------- approved providers


def test_issuers_are_compared_exactly(home, clock):
    trusted = TrustedProviders(home)
    trusted.add("http://127.0.0.1:8600", now=clock.now())
    assert trusted.is_trusted("http://127.0.0.1:8600")
    for other in ("http://localhost:8600", "http://127.0.0.1:8601", "http://127.0.0.1:8600/x",
                  "https://127.0.0.1:8600", "HTTP://127.0.0.1:8600"):
        assert not trusted.is_trusted(other), other
    assert trusted.add("http://127.0.0.1:8600", now=clock.now()).added_at == clock.now()   # once
    assert len(trusted.list()) == 1


@pytest.mark.parametrize("issuer", ["http://idp.example.jp", "ftp://idp.example.jp", "https://", "https://a/b/",
                                    "https://a?b", "https://a#b", "https://u:p@a", "https://a:99999", "https://a b",
                                    "https://" + "a" * 600, 42, None])
def test_what_cannot_be_an_issuer(issuer):
    with pytest.raises(UsageError):
        check_issuer(issuer)


def test_https_and_loopback_http_issuers(home, clock):
    for issuer in ("https://idp.example.jp", "https://idp.example.jp:8443/realm", "http://127.0.0.1:8600",
                   "http://localhost:8600", "http://[::1]:8600"):
        assert check_issuer(issuer) == issuer


def test_a_link_to_an_unsafe_issuer_is_refused_without_contact(agent_browser):
    page = agent_browser.open("http://evil.example", "p" * 32)
    assert page.status_code == 400 and "The link is not valid" in text_of(page)


def test_a_damaged_trust_list_says_what_to_do(agent_browser, served_idp):
    path = served_idp.home / TRUST_FILE
    path.write_text("{not json")
    with pytest.raises(TrustStoreError, match="jpki agent --trust"):
        TrustedProviders(served_idp.home).list()
    _, pending = served_idp.begin("openid")
    answer = agent_browser.open(served_idp.issuer, pending)
    assert answer.status_code == 500 and "is damaged" in answer.text and "Traceback" not in answer.text


def test_a_browser_without_fetch_metadata_is_not_refused_for_it(agent_browser, served_idp):
    check_fetch_metadata(None, None, None, navigation=False)
    check_fetch_metadata(None, None, None, navigation=True)
    _, page = opened(agent_browser, served_idp)
    answer = agent_browser.client.post("/authorize", data={**hidden_fields(page.text), "do": "answer", "pin": "1234"},
                                       headers={"Origin": AGENT})   # Origin, no Sec-Fetch-*
    assert answer.status_code == 303
