"""Every refusal of the OpenID Provider, each with its OAuth error code: the authorization
request (unknown client, wrong redirect URI, missing or plain PKCE, missing state or nonce…),
the card's answer (revoked or lost card, sign/auth confusion, an answer for another
authorization), the token endpoint (wrong verifier, reused or expired code, a code of another
client, replayed / wrong-audience / expired client assertions, bad secrets) and userinfo."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_support import AUTH_PIN, credentials, forged_login
from authlib.integrations.base_client.errors import OAuthError as ClientOAuthError
from idp_support import (
    AUTH,
    BANK,
    ISSUER,
    SHOP,
    TOKEN,
    USERINFO,
    code_for,
    login,
    make_idp,
    oauth_client,
    query,
    register,
    start,
    test_card,
    tokens,
)
from redis_env import redis_url  # noqa: F401  (session fixture)

from jpki.auth.client import answer_ekyc
from jpki.auth.protocol import ClientData, EkycResponse
from jpki.auth.store import Challenge
from jpki.idp.app import create_app
from jpki.idp.kv import KVError
from jpki.lifecycle import lost
from jpki.provision import Home
from jpki.sign import CardSigner, sign_file


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def auth_query(reg, **params: str | None) -> dict[str, str]:
    base = {"response_type": "code", "client_id": reg.id, "redirect_uri": SHOP, "scope": "openid",
            "state": "st", "nonce": "nn", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"}
    base.update(params)
    return {k: v for k, v in base.items() if v is not None}


# --------------------------------------------------------------------------- the authorization request


def test_unknown_client_and_wrong_redirect_uri_get_a_page_not_a_redirect(idp):
    reg = register(idp)

    async def go() -> None:
        async with idp.http() as browser:
            for params in (auth_query(reg, client_id="no-such-client-id"),
                           auth_query(reg, redirect_uri="https://evil.example/callback"),
                           auth_query(reg, redirect_uri=SHOP + "/"),            # exact match only
                           auth_query(reg, redirect_uri=None)):
                page = await browser.get(AUTH, params=params, headers={"Accept-Language": "en"})
                assert page.status_code == 400 and "location" not in page.headers
                assert "This request cannot be processed" in page.text and "evil" not in page.text

    run(go())


@pytest.mark.parametrize(("change", "error"), [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),   # missing PKCE
    ({"code_challenge_method": "plain", "code_challenge": "x" * 43}, "invalid_request"),  # plain PKCE
    ({"code_challenge_method": None}, "invalid_request"),                        # plain by default
    ({"code_challenge": "short"}, "invalid_request"),
    ({"state": None}, "invalid_request"),
    ({"nonce": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
    ({"scope": "name"}, "invalid_scope"),                                         # no openid
    ({"scope": "openid profile"}, "invalid_scope"),
    ({"scope": "openid sign"}, "invalid_request"),                                # no sign_transaction_id
    ({"scope": "sign"}, "invalid_scope"),                                         # no openid
    ({"prompt": "none"}, "login_required"),
    ({"request": "eyJ..."}, "request_not_supported"),
    ({"response_mode": "fragment"}, "invalid_request"),
])
def test_bad_authorization_requests_are_sent_back_with_an_error(idp, change, error):
    reg = register(idp)

    async def go() -> None:
        async with idp.http() as browser:
            answer = await browser.get(AUTH, params=auth_query(reg, **change))
            assert answer.status_code == 302, answer.text
            location = answer.headers["location"]
            assert location.startswith(SHOP + "?")
            params = query(location)
            assert params["error"] == error and params["iss"] == ISSUER
            assert params.get("state") == (None if change.get("state", "st") is None else "st")

    run(go())


def test_a_parameter_given_twice_is_refused(idp):
    reg = register(idp)

    async def go() -> None:
        async with idp.http() as browser:
            url = AUTH + "?" + "&".join(f"{k}={v}" for k, v in auth_query(reg).items()) + "&scope=openid+name"
            answer = await browser.get(url)
            assert answer.status_code == 400 and "location" not in answer.headers

    run(go())


# --------------------------------------------------------------------------- the card


def test_a_lost_card_is_refused_as_revoked(idp):
    reg = register(idp)
    lost(Home(idp.home), "alice", clock=idp.clock)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            answer = await test_card(started.browser, started.pending, "alice", "success")
            assert answer.json()["state"] == "refused" and answer.json()["reason"] == "revoked"
            params = query(answer.json()["redirect"])
            assert params["error"] == "access_denied" and params["state"] == started.state
            assert params["error_description"].startswith("revoked")
            await started.browser.aclose()

    run(go())


def _complete(idp, pending: str, body: Any):
    async def go():
        async with idp.http() as http:
            return await http.post(f"/api/pending/{pending}/complete", json=body)

    return run(go())


def _started(idp, reg, scope: str = "openid"):
    async def go():
        async with oauth_client(idp, reg, scope=scope) as client:
            return await start(idp, client)

    return run(go())


def test_sign_auth_confusion_is_refused(idp):
    """A login answered with the signing key, an eKYC answered with the authentication key, and
    a login answered with an eKYC document."""
    reg = register(idp)
    started = _started(idp, reg)
    challenge = Challenge.from_json(idp.provider.pending(started.pending).data)
    key, der = credentials(idp.home, "alice", "sign")
    answer = _complete(idp, started.pending, forged_login(challenge, key, der).to_json())
    assert answer.status_code == 403 and answer.json()["reason"] == "wrong-key-kind"

    started = _started(idp, reg, "openid name")
    challenge = Challenge.from_json(idp.provider.pending(started.pending).data)
    data = ClientData.for_challenge(challenge).encode()
    from auth_support import card_session

    with card_session(idp.home) as session, tempfile.TemporaryDirectory() as folder:
        signer = CardSigner.from_session(session, "auth", pin=lambda: AUTH_PIN)
        path = Path(folder) / "d"
        path.write_bytes(data)
        cms = sign_file(path, None, signer).output.read_bytes()
    answer = _complete(idp, started.pending, EkycResponse(challenge.id, data, cms).to_json())
    assert answer.status_code == 403 and answer.json()["reason"] == "wrong-key-kind"

    started = _started(idp, reg)                     # a login: an eKYC document does not parse
    with card_session(idp.home) as session:
        ekyc_challenge = idp.provider.rp.begin_ekyc()
        document = answer_ekyc(ekyc_challenge, session, pin=lambda: "ABC123", clock=idp.clock).to_json()
    answer = _complete(idp, started.pending, document)
    assert answer.status_code == 400 and answer.json()["reason"] == "malformed"
    assert idp.provider.pending(started.pending).status == "pending"   # still waiting for a good one


def test_an_answer_for_another_authorization_does_not_complete_this_one(idp):
    reg = register(idp)
    first, second = _started(idp, reg), _started(idp, reg)
    challenge = Challenge.from_json(idp.provider.pending(second.pending).data)
    key, der = credentials(idp.home, "alice", "auth")
    answer = _complete(idp, first.pending, forged_login(challenge, key, der).to_json())
    assert answer.status_code == 400 and "another challenge" in answer.json()["message"]
    assert idp.provider.pending(first.pending).status == "pending"
    assert _complete(idp, second.pending, forged_login(challenge, key, der).to_json()).status_code == 200
    again = _complete(idp, second.pending, {"cancel": True})
    assert again.status_code == 409 and again.json()["reason"] == "not-pending"
    assert _complete(idp, "x" * 32, {"cancel": True}).status_code == 404


def test_resume_needs_the_browser_that_started(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            redirect = (await test_card(started.browser, started.pending)).json()["redirect"]
            async with idp.http() as other:
                page = await other.get(redirect, headers={"Accept-Language": "en"})
                assert page.status_code == 403 and "another browser" in page.text
            back = await started.browser.get(redirect)
            assert back.status_code == 302 and "code" in query(back.headers["location"])
            gone = await started.browser.get(redirect)
            assert gone.status_code == 400 and "no longer valid" not in gone.text  # Japanese by default
            await started.browser.aclose()

    run(go())


# --------------------------------------------------------------------------- the token endpoint


async def _token_error(client, **params: Any) -> str:
    with pytest.raises(ClientOAuthError) as caught:
        await client.fetch_token(TOKEN, **params)
    return caught.value.error


def test_wrong_verifier_reused_code_and_wrong_redirect_uri(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            code = await code_for(started)
            assert await _token_error(client, code=code, code_verifier=secrets.token_urlsafe(48)) == "invalid_grant"
            # the code was spent by the failed attempt: it never works again
            assert await _token_error(client, code=code, code_verifier=started.verifier) == "invalid_grant"

            started = await start(idp, client)
            code = await code_for(started)
            token = await tokens(client, code, started.verifier)
            assert (await client.get(USERINFO)).status_code == 200
            assert await _token_error(client, code=code, code_verifier=started.verifier) == "invalid_grant"
            revoked = await client.get(USERINFO, headers={"Authorization": f"Bearer {token['access_token']}"})
            assert revoked.status_code == 401    # the code's second use revoked its access token

            started = await start(idp, client)
            code = await code_for(started)
            assert await _token_error(client, code=code, code_verifier=started.verifier,
                                      redirect_uri=SHOP + "/other") == "invalid_grant"

            started = await start(idp, client)
            code = await code_for(started)
            assert await _token_error(client, code=code) == "invalid_grant"        # no verifier at all

    run(go())


def test_an_expired_code_is_refused(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            code = await code_for(started)
            idp.clock.advance(seconds=61)
            assert await _token_error(client, code=code, code_verifier=started.verifier) == "invalid_grant"

    run(go())


def test_a_code_of_another_client_is_refused(idp):
    shop, bank = register(idp), register(idp, name="Bank", redirect=SHOP)

    async def go() -> None:
        async with oauth_client(idp, shop) as client, oauth_client(idp, bank) as other:
            started = await start(idp, client)
            code = await code_for(started)
            assert await _token_error(other, code=code, code_verifier=started.verifier) == "invalid_grant"
            assert await _token_error(client, code=code, code_verifier=started.verifier) == "invalid_grant"

    run(go())


def test_client_assertions_replayed_wrong_audience_expired_or_too_long(idp):
    reg = register(idp)
    other = register(idp, name="Other", redirect=BANK)

    async def attempt(**settings: Any) -> str | None:
        async with oauth_client(idp, reg, **settings) as client:
            try:
                await login(idp, client)
            except ClientOAuthError as exc:
                return exc.error
            return None

    async def go() -> None:
        assert await attempt(extra={"jti": "same-jti"}) is None
        codes = {k for k in idp.provider.kv._items if k.startswith("code:")}   # type: ignore[attr-defined]
        assert await attempt(extra={"jti": "same-jti"}) == "invalid_client"        # replayed jti
        # the jti is checked in the step that would take the code: a replay leaves the code in place
        assert len({k for k in idp.provider.kv._items if k.startswith("code:")} - codes) == 1  # type: ignore[attr-defined]
        assert await attempt(audience="https://elsewhere.example/token") == "invalid_client"
        assert await attempt(lifetime=-60) == "invalid_client"                      # expired
        assert await attempt(lifetime=3600) == "invalid_client"                     # exp too far ahead
        assert await attempt(extra={"iss": other.id}) == "invalid_client"           # iss is not sub
        assert await attempt(extra={"sub": other.id, "iss": other.id}) == "invalid_client"  # other's id, our key

    run(go())


def test_an_assertion_sent_without_a_code_is_spent_all_the_same(idp):
    # The jti is recorded with taking the code; a request that never gets there records it anyway.
    reg = register(idp)

    from joserfc import jwt

    now = int(idp.clock.now().timestamp())
    assertion = jwt.encode({"alg": "ES256", "kid": reg.key.kid},
                           {"iss": reg.id, "sub": reg.id, "aud": TOKEN, "iat": now, "exp": now + 120,
                            "jti": "spent-without-a-code"}, reg.key)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            code = await code_for(started)
        form = {"grant_type": "authorization_code", "redirect_uri": SHOP, "code_verifier": started.verifier,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion}
        async with idp.http() as http:
            missing = await http.post(TOKEN, data=form)
            assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
            again = await http.post(TOKEN, data={**form, "code": code})
            assert again.status_code == 401 and "replayed" in again.json()["error_description"]

    run(go())


def test_client_secret_problems(idp):
    reg = register(idp, alg=None, secret=True)

    async def go() -> None:
        async with idp.http() as http:
            form = {"grant_type": "client_credentials", "scope": "sign"}
            wrong = await http.post(TOKEN, data=form, auth=(reg.id, "not-the-secret"))
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
            assert wrong.headers["www-authenticate"].startswith("Basic")
            post = await http.post(TOKEN, data={**form, "client_id": reg.id, "client_secret": reg.secret})
            assert post.status_code == 401 and post.json()["error"] == "invalid_client"
            none = await http.post(TOKEN, data=form)
            assert none.status_code == 401
            ok = await http.post(TOKEN, data=form, auth=(reg.id, reg.secret))
            assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
            bad_grant = await http.post(TOKEN, data={"grant_type": "password"}, auth=(reg.id, reg.secret))
            assert bad_grant.json()["error"] == "unsupported_grant_type"
            bad_scope = await http.post(TOKEN, data={**form, "scope": "openid"}, auth=(reg.id, reg.secret))
            assert bad_scope.json()["error"] == "invalid_scope"
            json_body = await http.post(TOKEN, json=form, auth=(reg.id, reg.secret))
            assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"

    run(go())


def test_userinfo_with_a_bad_missing_or_expired_token(idp):
    reg = register(idp)

    async def go() -> None:
        async with idp.http() as http:
            missing = await http.get(USERINFO)
            assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
            bad = await http.get(USERINFO, headers={"Authorization": "Bearer " + secrets.token_urlsafe(32)})
            assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        async with oauth_client(idp, reg) as client:
            await login(idp, client)
            assert (await client.get(USERINFO)).status_code == 200
            idp.clock.advance(seconds=301)
            assert (await client.get(USERINFO)).status_code == 401
        idp.clock.advance(seconds=-301)
        async with oauth_client(idp, reg) as client:
            await login(idp, client)
            idp.provider.clients.remove(reg.id)        # a removed client's tokens die with it
            assert (await client.get(USERINFO)).status_code == 401

    run(go())


# --------------------------------------------------------------------------- jti across workers and restarts


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_jti_is_refused_after_a_restart_and_by_another_worker(home, clock, net, tmp_path, backend, request):
    store = f"sqlite:{tmp_path / 'idp.db'}" if backend == "sqlite" else \
        request.getfixturevalue("redis_url") + f"?prefix=t{secrets.token_hex(4)}:"
    first, second = make_idp(home, clock, net, store=store), make_idp(home, clock, net, store=store)
    reg = register(first)

    async def use(idp, jti: str) -> str | None:
        async with oauth_client(idp, reg, extra={"jti": jti}) as client:
            try:
                await client.fetch_token(TOKEN, grant_type="client_credentials", scope="sign")
            except ClientOAuthError as exc:
                return exc.error
            return None

    try:
        assert run(use(first, "j-1")) is None
        assert run(use(second, "j-1")) == "invalid_client"     # another worker on the same store
        first.app.state.close()
        restarted = make_idp(home, clock, net, store=store)
        try:
            assert run(use(restarted, "j-1")) == "invalid_client"
            assert run(use(restarted, "j-2")) is None
        finally:
            restarted.app.state.close()
    finally:
        first.app.state.close()
        second.app.state.close()


def test_of_answers_arriving_at_once_exactly_one_decides(idp):
    import concurrent.futures

    from jpki.idp.pending import PendingState, StateError

    reg = register(idp)
    started = _started(idp, reg)

    def cancel(_: int) -> str:
        try:
            return str(idp.provider.cancel(started.pending, "cancelled").status)
        except StateError as exc:
            return f"refused: {exc.code}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(cancel, range(16)))
    assert outcomes.count("refused") == 1 and outcomes.count("refused: not_pending") == 15
    pending = idp.provider.pending(started.pending)
    assert pending.status is PendingState.REFUSED
    with pytest.raises(StateError):
        pending.moved(PendingState.APPROVED)          # no way out of an end state


# --------------------------------------------------------------------------- error shapes, bodies, store failures


def _rfc6749(answer: Any, status: int, error: str) -> None:
    """An RFC 6749 §5.2 error document: exactly ``error`` and ``error_description``, not cached."""
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "error_description"} and answer.json()["error"] == error
    assert answer.headers["cache-control"] == "no-store"


def test_each_endpoint_keeps_its_error_shape_for_bodies_too_large(idp):
    """The token endpoint answers RFC 6749 JSON, the agent's API jpki's refusal document, the
    authorization page HTML, whether the endpoint refused or the body limit (jpki.serving) did."""
    reg = register(idp, alg=None, secret=True)
    big = "x" * (65 * 1024)

    async def go() -> None:
        async with idp.http() as http:
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            _rfc6749(await http.post(TOKEN, content=f"grant_type={big}", headers=form), 413, "invalid_request")
            _rfc6749(await http.post(TOKEN, json={"grant_type": "client_credentials"}), 400, "invalid_request")
            _rfc6749(await http.post(TOKEN, data={"grant_type": "client_credentials"}), 401, "invalid_client")
            _rfc6749(await http.post(TOKEN, data={"grant_type": "password"}, auth=(reg.id, reg.secret)), 400,
                     "unsupported_grant_type")
            _rfc6749(await http.get(USERINFO, headers={"Authorization": "Bearer nope"}), 401, "invalid_token")

            pending = (await http.get(AUTH, params=auth_query(reg))).headers["x-jpki-pending"]
            too_large = await http.post(f"/api/pending/{pending}/complete", content=big)
            assert too_large.status_code == 413
            assert too_large.json() == {"ok": False, "reason": "too-large",
                                        "message": "the body is larger than 65536 bytes"}
            assert (await http.get(f"/api/pending/{pending}")).json()["state"] == "pending"   # still
            unknown = await http.get("/api/pending/" + "A" * 32)
            assert unknown.status_code == 404 and unknown.json()["reason"] == "not-found"
            assert unknown.json()["ok"] is False
            malformed = await http.post(f"/api/pending/{pending}/complete", content=b"[1]")
            assert malformed.status_code == 400 and malformed.json()["reason"] == "malformed"

            page = await http.post(AUTH, content=big, headers={**form, "Accept-Language": "en"})
            assert page.status_code == 413 and page.headers["content-type"].startswith("text/html")
            assert "This request cannot be processed" in page.text and "too-large" in page.text

    run(go())


class _BrokenStore:
    """The provider's store, failing (a Redis server gone, a SQLite file unwritable)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("close", "purge_expired"):
            return getattr(self.inner, name)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise KVError("the store is gone")

        return fail


def test_a_failing_store_is_503_in_each_endpoints_shape(idp):
    reg = register(idp, alg=None, secret=True)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            code = await code_for(started)
        idp.provider.kv = _BrokenStore(idp.provider.kv)
        async with idp.http() as http:
            _rfc6749(await http.post(TOKEN, data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": SHOP, "code_verifier": started.verifier},
                                     auth=(reg.id, reg.secret)), 503, "temporarily_unavailable")
            _rfc6749(await http.get(USERINFO, headers={"Authorization": "Bearer " + "t" * 43}), 503,
                     "temporarily_unavailable")
            pending = await http.get(f"/api/pending/{started.pending}")
            assert pending.status_code == 503 and pending.json()["reason"] == "store-unavailable"
            assert pending.headers["retry-after"] == "1"
            answer = await test_card(http, started.pending)
            assert answer.status_code == 503 and answer.json()["reason"] == "store-unavailable"
            page = await http.get(AUTH, params=auth_query(reg), headers={"Accept-Language": "en"})
            assert page.status_code == 302 and query(page.headers["location"])["error"] == "temporarily_unavailable"

    run(go())


def test_a_stalled_body_is_408_and_closes_the_connection_in_each_shape(idp):
    app = create_app(idp.provider, body_timeout=0.2)   # the same provider, a short body deadline
    stalled = asyncio.Event()   # never set: the client sends a first chunk and then nothing

    async def body() -> Any:
        yield b"grant_type="
        await stalled.wait()

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as http:
            form = {"Content-Type": "application/x-www-form-urlencoded", "Accept-Language": "en"}
            token = await http.post(TOKEN, content=body(), headers=form)
            _rfc6749(token, 408, "invalid_request")
            assert token.headers["connection"] == "close"
            page = await http.post(AUTH, content=body(), headers=form)
            assert page.status_code == 408 and page.headers["connection"] == "close"
            assert "This request cannot be processed" in page.text

    run(go())
