"""Sign transactions (``scope=sign``): a standard client (Authlib, ``private_key_jwt``) gets a
``client_credentials`` token, creates a transaction with a hash or a DigestInfo and a display
text, sends the browser to authorize it, and reads the result as a JWE it decrypts with its
own key (joserfc), then verifies the card's RSA PKCS#1 v1.5 signature with the signing
certificate inside (cryptography). The emulated card signs for real, through the test cards
and through the agent's helper (:func:`jpki.auth.client.answer_sign_transaction`). Every
refusal: the token, another client's transaction, expiry, bad hashes and DigestInfos, a client
without an encryption key, a replayed or confused (authentication-key) answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from auth_support import assert_no_personal_data, card_session, credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from idp_support import (
    AUTH,
    BANK,
    ISSUER,
    SHOP,
    TOKEN,
    USERINFO,
    Idp,
    Registered,
    code_for,
    login,
    make_idp,
    oauth_client,
    query,
    register,
    start,
    test_card,
    tokens,
    verified_id_token,
)
from joserfc import jwe
from joserfc.jwk import ECKey, RSAKey

from jpki.auth.client import ChallengeRefusedError, SignRequest, answer_sign_transaction
from jpki.certinfo import cert_kind
from jpki.idp.signtx import DIGEST_INFO_PREFIXES, MAX_DISPLAY_TEXT, check_display_text, parse_digest_info
from jpki.provision import Home, read_holder

SIGN_API = ISSUER + "/api/sign-transactions"
TEXT = "売買契約書（第12号）に同意します。"
DOCUMENT = "契約書の本文".encode()
HASHES = {"SHA-256": hashlib.sha256, "SHA-384": hashlib.sha384, "SHA-512": hashlib.sha512}
CRYPTO = {"SHA-256": hashes.SHA256(), "SHA-384": hashes.SHA384(), "SHA-512": hashes.SHA512()}
ALGS = {"EC": "ECDH-ES+A256KW", "RSA": "RSA-OAEP-256"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256_body(text: str = TEXT, **extra: Any) -> dict[str, Any]:
    return {"hash": b64(hashlib.sha256(DOCUMENT).digest()), "display_text": text, **extra}


@contextlib.asynccontextmanager
async def api_client(idp: Idp, reg: Registered) -> AsyncIterator[Any]:
    """Authlib's client holding a client_credentials token with scope sign."""
    async with oauth_client(idp, reg, scope="sign") as client:
        token = await client.fetch_token(TOKEN, grant_type="client_credentials")
        assert token["scope"] == "sign"
        yield client


async def create(idp: Idp, reg: Registered, body: dict[str, Any] | None = None) -> str:
    async with api_client(idp, reg) as api:
        answer = await api.post(SIGN_API, json=body or sha256_body())
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def decrypt(reg: Registered, token: bytes, alg: str) -> dict[str, Any]:
    assert reg.enc_key is not None
    plain = jwe.decrypt_compact(token, reg.enc_key, algorithms=[alg, "A256GCM"])
    assert plain.protected["alg"] == alg and plain.protected["enc"] == "A256GCM"
    assert plain.protected["kid"] == reg.enc_key.kid
    return dict(json.loads(plain.plaintext))


def verify_signature(payload: dict[str, Any], digest: bytes, algorithm: str) -> x509.Certificate:
    """The card's signature over ``digest`` with the certificate's key (raises if it fails)."""
    cert = x509.load_der_x509_certificate(base64.b64decode(payload["certificate"]))
    cert.public_key().verify(base64.b64decode(payload["signature"]), digest, padding.PKCS1v15(),
                             Prehashed(CRYPTO[algorithm]))
    return cert


# --------------------------------------------------------------------------- the whole flow


@pytest.mark.parametrize(("enc", "sig", "algorithm", "form"), [
    ("EC", "ES256", "SHA-256", "hash"),
    ("RSA", "RS256", "SHA-384", "digest_info"),
    ("EC", "RS256", "SHA-512", "digest_info"),
])
def test_a_standard_client_gets_the_cards_signature_as_a_jwe(idp, enc, sig, algorithm, form):
    reg = register(idp, alg=sig, enc=enc)
    digest = HASHES[algorithm](DOCUMENT).digest()
    body = {"hash": b64(digest)} if form == "hash" else \
        {"digest_info": b64(DIGEST_INFO_PREFIXES[algorithm] + digest)}

    async def go() -> None:
        async with api_client(idp, reg) as api:
            created = await api.post(SIGN_API, json={**body, "display_text": TEXT})
            assert created.status_code == 201, created.text
            assert created.headers["cache-control"] == "no-store"
            tx = created.json()
            assert set(tx) == {"id", "expires_at", "expires_in"} and tx["expires_in"] == 600
            assert tx["expires_at"] == "2026-11-27T03:10:00Z"
            pending = await api.get(f"{SIGN_API}/{tx['id']}/result")
            assert pending.status_code == 409 and pending.headers["content-type"] == "application/json"
            assert pending.json()["error"] == "authorization_pending" and pending.json()["state"] == "pending"

            async with oauth_client(idp, reg, scope="openid sign") as rp:
                started = await start(idp, rp, sign_transaction_id=tx["id"])
                shown = (await started.browser.get(f"/api/pending/{started.pending}")).json()
                assert shown["action"] == "sign" and shown["pin"] == "sign" and "challenge" not in shown
                assert shown["data"]["display_text"] == TEXT
                assert shown["data"]["hash"] == b64(digest) and shown["data"]["hash_algorithm"] == algorithm
                assert shown["data"]["sign_transaction_id"] == tx["id"]
                code = await code_for(started)
                await started.browser.aclose()
                token = await tokens(rp, code, started.verifier)
                assert token["scope"] == "openid sign"
                claims = await verified_id_token(api, token["id_token"], idp.clock, reg.id, started.nonce)
                by_user = await rp.get(f"{SIGN_API}/{tx['id']}/result")   # the code flow's token reads it too
                assert by_user.status_code == 200

            result = await api.get(f"{SIGN_API}/{tx['id']}/result")
            assert result.status_code == 200 and result.headers["content-type"] == "application/jose"
            assert result.content.count(b".") == 4   # JWE compact: five parts
            payload = decrypt(reg, result.content, ALGS[enc])
            assert set(payload) == {"id", "signature", "certificate", "hash_algorithm", "digest_info"}
            assert payload["id"] == tx["id"] and payload["hash_algorithm"] == algorithm
            assert base64.b64decode(payload["digest_info"]) == DIGEST_INFO_PREFIXES[algorithm] + digest
            cert = verify_signature(payload, digest, algorithm)
            assert cert_kind(cert) == "sign"
            assert base64.b64decode(payload["certificate"]) == credentials(idp.home, "alice", "sign")[1]
            again = await api.get(f"{SIGN_API}/{tx['id']}/result")   # readable until it expires
            assert decrypt(reg, again.content, ALGS[enc]) == payload
            return claims["sub"]

    sub = run(go())

    async def login_sub() -> str:
        async with oauth_client(idp, reg) as rp:
            started, token = await login(idp, rp)
            async with idp.http() as http:
                return (await verified_id_token(http, token["id_token"], idp.clock, reg.id, started.nonce))["sub"]

    assert run(login_sub()) == sub   # the signer is the same pairwise subject as at login


def test_sign_with_basic_4_info_scopes_gives_the_claims_of_the_signing_certificate(idp):
    reg = register(idp, enc="EC")

    async def go() -> dict[str, Any]:
        tx = await create(idp, reg)
        async with oauth_client(idp, reg, scope="openid sign name") as rp:
            started = await start(idp, rp, sign_transaction_id=tx)
            assert (await started.browser.get(f"/api/pending/{started.pending}")).json()["claims"] == ["name"]
            code = await code_for(started)
            await started.browser.aclose()
            await tokens(rp, code, started.verifier)
            return dict((await rp.get(USERINFO)).json())

    info = run(go())
    assert set(info) == {"sub", "name"} and info["name"] == read_holder(Home(idp.home), "alice").persona.name


def test_the_result_expires_with_the_transaction_then_is_forgotten(idp):
    reg = register(idp, enc="EC")

    async def go() -> None:
        tx = await create(idp, reg, sha256_body(expires_in=120))
        async with oauth_client(idp, reg, scope="openid sign") as rp:
            started = await start(idp, rp, sign_transaction_id=tx)
            await code_for(started)
            await started.browser.aclose()
        idp.clock.advance(seconds=119)
        async with api_client(idp, reg) as api:
            assert (await api.get(f"{SIGN_API}/{tx}/result")).status_code == 200
            idp.clock.advance(seconds=1)
            gone = await api.get(f"{SIGN_API}/{tx}/result")
            assert gone.status_code == 410
            assert gone.json()["error"] == "expired_token" and gone.json()["state"] == "expired"
        idp.clock.advance(days=1)
        async with api_client(idp, reg) as api:   # a fresh token: the first one has expired too
            forgotten = await api.get(f"{SIGN_API}/{tx}/result")
            assert forgotten.status_code == 404 and forgotten.json()["error"] == "not_found"

    run(go())


def test_the_flow_over_a_sqlite_store_and_a_jwks_uri(home, clock, net, tmp_path):
    enc_key = RSAKey.generate_key(2048, auto_kid=True)
    sig_key = ECKey.generate_key("P-256", auto_kid=True)
    published = {"keys": [sig_key.as_dict(private=False), {**enc_key.as_dict(private=False), "use": "enc"}]}

    def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        if url == "https://shop.example.jp/jwks.json":
            return json.dumps(published).encode()
        return net(url, data, content_type)

    idp = make_idp(home, clock, fetch, store=f"sqlite:{tmp_path / 'idp.db'}")
    try:
        client, _ = idp.provider.clients.add("Shop", [SHOP], now=clock.now(),
                                             jwks_uri="https://shop.example.jp/jwks.json")
        reg = Registered(client, sig_key, enc_key=enc_key)

        async def go() -> None:
            tx = await create(idp, reg)
            async with oauth_client(idp, reg, scope="openid sign") as rp:
                started = await start(idp, rp, sign_transaction_id=tx)
                await code_for(started)
                await started.browser.aclose()
            async with api_client(idp, reg) as api:
                result = await api.get(f"{SIGN_API}/{tx}/result")
            verify_signature(decrypt(reg, result.content, "RSA-OAEP-256"), hashlib.sha256(DOCUMENT).digest(),
                             "SHA-256")

        run(go())
    finally:
        idp.app.state.close()


# --------------------------------------------------------------------------- the agent's side


async def _pending_document(idp: Idp, reg: Registered, tx: str) -> tuple[Any, dict[str, Any]]:
    rp = oauth_client(idp, reg, scope="openid sign")
    started = await start(idp, rp, sign_transaction_id=tx)
    await rp.aclose()
    document = (await started.browser.get(f"/api/pending/{started.pending}")).json()
    return started, document


def test_the_agent_helper_signs_with_the_signing_key_and_a_replay_is_refused(idp, caplog):
    reg = register(idp, enc="EC")
    caplog.set_level(logging.INFO, logger="jpki")

    async def go() -> None:
        tx = await create(idp, reg)
        started, document = await _pending_document(idp, reg, tx)
        assert document["complete"] == f"{ISSUER}/api/pending/{started.pending}/complete"
        with card_session(idp.home) as session:
            request = SignRequest.from_pending(document)
            assert request.display_text == TEXT and request.hash == hashlib.sha256(DOCUMENT).digest()
            asked: list[tuple[str, int]] = []
            answer = answer_sign_transaction(session, document, "ABC123", clock=idp.clock,
                                             confirm=lambda kind, left: asked.append((kind, left)))
            assert asked == [("sign", 5)] and session.tries_left("auth") == 3
        assert set(answer) == {"sign_transaction_id", "signature", "certificate"}
        done = await started.browser.post(document["complete"], json=answer)
        assert done.status_code == 200 and done.json()["state"] == "approved", done.text
        replay = await started.browser.post(document["complete"], json=answer)
        assert replay.status_code == 409 and replay.json()["reason"] == "not-pending"
        back = await started.browser.get(done.json()["resume"])
        assert back.status_code == 302 and "code" in query(back.headers["location"])
        # A second authorization of a signed transaction is refused back to the client.
        async with oauth_client(idp, reg, scope="openid sign") as rp, idp.http() as browser:
            url, _ = rp.create_authorization_url(AUTH, code_verifier="v" * 43, nonce="n", sign_transaction_id=tx)
            again = await browser.get(url)
            assert again.status_code == 302
            params = query(again.headers["location"])
            assert params["error"] == "invalid_request" and "already signed" in params["error_description"]
        await started.browser.aclose()

    run(go())
    assert_no_personal_data(caplog.text, idp.home)
    assert TEXT not in caplog.text


def test_the_agent_helper_refuses_a_digest_info_that_is_not_the_hash_shown(idp):
    reg = register(idp, enc="EC")

    async def go() -> dict[str, Any]:
        tx = await create(idp, reg)
        started, document = await _pending_document(idp, reg, tx)
        await started.browser.aclose()
        return document

    document = run(go())
    tampered = {**document, "data": {**document["data"],
                                     "digest_info": b64(DIGEST_INFO_PREFIXES["SHA-256"] + bytes(32))}}
    expired = {**document, "data": {**document["data"], "expires_at": "2026-11-27T02:00:00+00:00"}}
    login_doc = {**document, "action": "login"}
    with card_session(idp.home) as session:
        for doc, reason in ((tampered, "malformed"), (expired, "expired"), (login_doc, "wrong-purpose")):
            with pytest.raises(ChallengeRefusedError) as caught:
                answer_sign_transaction(session, doc, "ABC123", clock=idp.clock)
            assert caught.value.reason == reason
        assert session.tries_left("sign") == 5   # refused before a password try was spent


def test_an_authentication_key_signature_is_refused_sign_auth_confusion(idp):
    reg = register(idp, enc="EC")
    auth_key, auth_cert = credentials(idp.home, "alice", "auth")
    digest = hashlib.sha256(DOCUMENT).digest()

    async def go() -> None:
        tx = await create(idp, reg)
        started, document = await _pending_document(idp, reg, tx)
        forged = {"sign_transaction_id": tx, "certificate": b64(auth_cert),
                  "signature": b64(auth_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())))}
        refused = await started.browser.post(document["complete"], json=forged)
        assert refused.status_code == 403 and refused.json()["reason"] == "wrong-key-kind", refused.text
        async with api_client(idp, reg) as api:
            result = await api.get(f"{SIGN_API}/{tx}/result")
        assert result.status_code == 403
        assert result.json()["error"] == "access_denied" and result.json()["reason"] == "wrong-key-kind"
        assert result.json()["state"] == "refused"
        await started.browser.aclose()

    run(go())


def test_a_signature_over_another_hash_is_refused(idp):
    reg = register(idp, enc="EC")
    key, cert = credentials(idp.home, "alice", "sign")

    async def go() -> None:
        tx = await create(idp, reg)
        started, document = await _pending_document(idp, reg, tx)
        other = hashlib.sha256(b"another document").digest()
        forged = {"sign_transaction_id": tx, "certificate": b64(cert),
                  "signature": b64(key.sign(other, padding.PKCS1v15(), Prehashed(hashes.SHA256())))}
        refused = await started.browser.post(document["complete"], json=forged)
        assert refused.status_code == 403 and refused.json()["reason"] == "bad-signature"
        await started.browser.aclose()

    run(go())


def test_unreadable_answers_keep_the_authorization_pending(idp):
    reg = register(idp, enc="EC")
    key, cert = credentials(idp.home, "alice", "sign")
    digest = hashlib.sha256(DOCUMENT).digest()

    async def go() -> None:
        tx = await create(idp, reg)
        other_tx = await create(idp, reg)
        started, document = await _pending_document(idp, reg, tx)
        good = {"sign_transaction_id": tx, "certificate": b64(cert),
                "signature": b64(key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())))}
        for bad in ({"challenge_id": "x", "client_data": "", "certificate": "", "signature": ""},   # a login answer
                    {**good, "sign_transaction_id": other_tx},                                     # another tx's
                    {**good, "signature": "not base64!"},
                    {**good, "certificate": b64(b"not a certificate")},
                    {**good, "extra": 1}):
            answer = await started.browser.post(document["complete"], json=bad)
            assert answer.status_code == 400 and answer.json()["reason"] == "malformed", (bad, answer.text)
        still = (await started.browser.get(f"/api/pending/{started.pending}")).json()
        assert still["state"] == "pending"
        done = await started.browser.post(document["complete"], json=good)
        assert done.status_code == 200 and done.json()["state"] == "approved"
        await started.browser.aclose()

    run(go())


def test_a_transaction_that_expires_while_the_card_holder_signs_is_refused(idp):
    reg = register(idp, enc="EC")

    async def go() -> None:
        tx = await create(idp, reg, sha256_body(expires_in=60))
        started, document = await _pending_document(idp, reg, tx)
        with card_session(idp.home) as session:
            answer = answer_sign_transaction(session, document, "ABC123", clock=idp.clock)
        idp.clock.advance(seconds=61)
        refused = await started.browser.post(document["complete"], json=answer)
        assert refused.status_code == 403 and refused.json()["reason"] == "expired"
        async with api_client(idp, reg) as api:
            result = await api.get(f"{SIGN_API}/{tx}/result")
            assert result.status_code == 410 and result.json()["error"] == "expired_token"
        async with oauth_client(idp, reg, scope="openid sign") as rp, idp.http() as browser:
            url, _ = rp.create_authorization_url(AUTH, code_verifier="v" * 43, nonce="n", sign_transaction_id=tx)
            again = await browser.get(url)
            assert query(again.headers["location"])["error_description"] == "the sign transaction has expired"
        await started.browser.aclose()

    run(go())


# --------------------------------------------------------------------------- test cards


@pytest.mark.parametrize(("outcome", "reason"), [
    ("wrong_pin", "wrong-pin"), ("blocked_pin", "pin-blocked"), ("revoked", "revoked"),
    ("expired", "expired-certificate"), ("cancel", "cancelled")])
def test_each_refusing_test_card_outcome_refuses_the_transaction(idp, outcome, reason):
    reg = register(idp, enc="EC")

    async def go() -> None:
        tx = await create(idp, reg)
        async with oauth_client(idp, reg, scope="openid sign") as rp:
            started = await start(idp, rp, sign_transaction_id=tx)
            answer = await test_card(started.browser, started.pending, "alice", outcome)
            assert answer.status_code == 200, answer.text
            assert answer.json()["state"] == "refused" and answer.json()["reason"] == reason
            params = query(answer.json()["redirect"])
            assert params["error"] == "access_denied" and params["error_description"].startswith(reason)
            await started.browser.aclose()
        async with api_client(idp, reg) as api:
            result = await api.get(f"{SIGN_API}/{tx}/result")
        assert result.status_code == 403
        assert result.json()["error"] == "access_denied" and result.json()["reason"] == reason
        assert result.json()["error_description"].startswith(reason)

    run(go())
    with card_session(idp.home) as session:      # the home's card was never touched
        assert session.tries_left("sign") == 5


def test_the_page_shows_the_text_and_the_hash_escaped(idp):
    reg = register(idp, enc="EC")
    text = "<script>alert(1)</script>\n第2条に同意します"

    async def go() -> None:
        tx = await create(idp, reg, sha256_body(text))
        async with oauth_client(idp, reg, scope="openid sign") as rp:
            started = await start(idp, rp, sign_transaction_id=tx, ui_locales="en")
            page = started.page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
            hex_digest = hashlib.sha256(DOCUMENT).hexdigest()   # in hex, as the agent shows it
            assert "asks you to sign" in page and f'<code id="sign-hash">{hex_digest[:4]} {hex_digest[4:8]}' in page
            assert "<title>Sign with My Number Card</title>" in page and "your signing certificate" in page
            assert "No personal information" not in page      # the signing certificate holds the 4 info
            assert "TEST-CARD MODE" in page
            await started.browser.aclose()
        async with idp.http() as http:
            assert "sign" in (await http.get("/.well-known/openid-configuration")).json()["scopes_supported"]

    run(go())


# --------------------------------------------------------------------------- refusals


def test_the_token_must_be_a_client_credentials_token_with_scope_sign(idp):
    reg = register(idp, enc="EC")

    async def go() -> None:
        async with idp.http() as http:
            none = await http.post(SIGN_API, json=sha256_body())
            assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
            wrong = await http.post(SIGN_API, json=sha256_body(), headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_token"
            result = await http.get(f"{SIGN_API}/00000000-0000-4000-8000-000000000000/result",
                                    headers={"Authorization": "Bearer nope"})
            assert result.status_code == 401
        async with oauth_client(idp, reg) as rp:   # a login's token (scope openid)
            await login(idp, rp)
            refused = await rp.post(SIGN_API, json=sha256_body())
            assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
            assert 'scope="sign"' in refused.headers["www-authenticate"]
            tx = await create(idp, reg)
            assert (await rp.get(f"{SIGN_API}/{tx}/result")).status_code == 403
        async with oauth_client(idp, reg, scope="openid sign") as rp:   # a sign authorization's token
            started = await start(idp, rp, sign_transaction_id=tx)
            await tokens(rp, await code_for(started), started.verifier)
            await started.browser.aclose()
            cannot_create = await rp.post(SIGN_API, json=sha256_body())
            assert cannot_create.status_code == 403 and cannot_create.json()["error"] == "insufficient_scope"

    run(go())


def test_another_clients_transaction_is_refused(idp):
    shop = register(idp, enc="EC")
    bank = register(idp, name="Bank", redirect=BANK, enc="EC")

    async def go() -> None:
        tx = await create(idp, shop)
        async with oauth_client(idp, bank, scope="openid sign", redirect=BANK) as rp, idp.http() as browser:
            url, _ = rp.create_authorization_url(AUTH, code_verifier="v" * 43, nonce="n", sign_transaction_id=tx)
            answer = await browser.get(url)
            assert answer.status_code == 302 and answer.headers["location"].startswith(BANK + "?")
            params = query(answer.headers["location"])
            assert params["error"] == "invalid_request"
            assert params["error_description"] == "no such sign transaction for this client"
        async with api_client(idp, bank) as api:
            other = await api.get(f"{SIGN_API}/{tx}/result")
            assert other.status_code == 404 and other.json()["error"] == "not_found"
        async with api_client(idp, shop) as api:
            assert (await api.get(f"{SIGN_API}/{tx}/result")).status_code == 409   # untouched
            assert (await api.get(f"{SIGN_API}/not-an-id/result")).status_code == 404

    run(go())


def test_the_sign_scope_needs_a_transaction(idp):
    reg = register(idp, enc="EC")

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid sign") as rp, idp.http() as browser:
            for extra in ({}, {"sign_transaction_id": "00000000-0000-4000-8000-000000000000"}):
                url, _ = rp.create_authorization_url(AUTH, code_verifier="v" * 43, nonce="n", **extra)
                answer = await browser.get(url)
                assert answer.status_code == 302
                assert query(answer.headers["location"])["error"] == "invalid_request"

    run(go())


def test_a_client_without_an_encryption_key_cannot_create_transactions(idp):
    reg = register(idp)   # a signature key only

    async def go() -> None:
        async with api_client(idp, reg) as api:
            answer = await api.post(SIGN_API, json=sha256_body())
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_client_metadata"
        assert "no encryption key" in answer.json()["error_description"] and "use=enc" in answer.json()[
        "error_description"]

    run(go())


SHA256 = DIGEST_INFO_PREFIXES["SHA-256"]
SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
NO_NULL_SHA256 = bytes.fromhex("302f300b0609608648016503040201") + bytes.fromhex("0420")


@pytest.mark.parametrize(("body", "needle"), [
    ({"hash": b64(bytes(31)), "display_text": TEXT}, "32 bytes"),
    ({"hash": b64(bytes(48)), "display_text": TEXT}, "32 bytes"),
    ({"hash": "not base64!", "display_text": TEXT}, "base64"),
    ({"hash": 12, "display_text": TEXT}, "base64"),
    ({"digest_info": b64(SHA1_PREFIX + bytes(20)), "display_text": TEXT}, "DigestInfo"),
    ({"digest_info": b64(SHA256 + bytes(31)), "display_text": TEXT}, "DigestInfo"),
    ({"digest_info": b64(SHA256 + bytes(33)), "display_text": TEXT}, "DigestInfo"),
    ({"digest_info": b64(NO_NULL_SHA256 + bytes(32)), "display_text": TEXT}, "NULL"),
    ({"digest_info": b64(b"\x30\x00"), "display_text": TEXT}, "DigestInfo"),
    ({"hash": b64(bytes(32)), "digest_info": b64(SHA256 + bytes(32)), "display_text": TEXT}, "exactly one"),
    ({"display_text": TEXT}, "exactly one"),
    ({"hash": b64(bytes(32))}, "display_text is required"),
    ({"hash": b64(bytes(32)), "display_text": "   "}, "display_text is required"),
    ({"hash": b64(bytes(32)), "display_text": "x" * (MAX_DISPLAY_TEXT + 1)}, "longer than"),
    ({"hash": b64(bytes(32)), "display_text": "a\x00b"}, "control"),
    ({"hash": b64(bytes(32)), "display_text": "pay \u202e001 yen"}, "bidirectional"),
    ({"hash": b64(bytes(32)), "display_text": TEXT, "expires_in": 30}, "expires_in"),
    ({"hash": b64(bytes(32)), "display_text": TEXT, "expires_in": 7200}, "expires_in"),
    ({"hash": b64(bytes(32)), "display_text": TEXT, "expires_in": "600"}, "expires_in"),
    ({"hash": b64(bytes(32)), "display_text": TEXT, "expires_in": True}, "expires_in"),
    ({"hash": b64(bytes(32)), "display_text": TEXT, "sign_type": "x"}, "unknown field"),
    ([1, 2], "JSON object"),
])
def test_bad_requests_are_refused_with_a_reason(idp, body, needle):
    reg = register(idp, enc="EC")

    async def go() -> httpx.Response:
        async with api_client(idp, reg) as api:
            return await api.post(SIGN_API, json=body)

    answer = run(go())
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request", answer.text
    assert needle in answer.json()["error_description"]


def test_a_body_that_is_not_json_is_refused(idp):
    reg = register(idp, enc="EC")

    async def go() -> None:
        async with api_client(idp, reg) as api:
            form = await api.post(SIGN_API, data={"hash": b64(bytes(32)), "display_text": TEXT})
            assert form.status_code == 400 and "application/json" in form.json()["error_description"]
            broken = await api.post(SIGN_API, content=b"{", headers={"Content-Type": "application/json"})
            assert broken.status_code == 400 and broken.json()["error"] == "invalid_request"
            url_safe = await api.post(SIGN_API, json={"hash": base64.urlsafe_b64encode(b"\xfb" * 32).decode()
                                                      .rstrip("="), "display_text": TEXT})
            assert url_safe.status_code == 201   # base64url without padding is read too

    run(go())


# --------------------------------------------------------------------------- units


def test_parse_digest_info_reads_the_three_digests_and_nothing_else():
    for name, prefix in DIGEST_INFO_PREFIXES.items():
        digest = HASHES[name](b"x").digest()
        assert parse_digest_info(prefix + digest) == (name, digest)
        with pytest.raises(ValueError):
            parse_digest_info(prefix + digest + b"\x00")
    with pytest.raises(ValueError):
        parse_digest_info(SHA1_PREFIX + hashlib.sha1(b"x").digest())


def test_check_display_text_keeps_newlines_and_japanese():
    assert check_display_text("第1条\n\t同意します") == "第1条\n\t同意します"
    assert check_display_text("x" * MAX_DISPLAY_TEXT)
    for bad in ("", None, 5, "a\rb", "\u2066x\u2069"):
        with pytest.raises(ValueError):
            check_display_text(bad)
