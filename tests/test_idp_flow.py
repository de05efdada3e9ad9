"""The OpenID Provider's protocol with a standard client (Authlib's AsyncOAuth2Client) and
test cards signing for real: discovery, the code flow with PKCE, private_key_jwt (ES256 and
RS256, both audiences) and client_secret_basic, ID tokens checked with joserfc, userinfo with
only the granted claims, pairwise subjects per sector that survive a card renewal."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import httpx
import pytest
from auth_support import assert_no_personal_data
from idp_support import (
    AUTH,
    BANK,
    CERTS,
    ISSUER,
    SHOP,
    TOKEN,
    USERINFO,
    Registered,
    login,
    make_idp,
    oauth_client,
    query,
    register,
    start,
    test_card,
    verified_id_token,
)
from joserfc.jwk import ECKey, KeySet

from jpki.identity import SAMPLE_PERSONAS
from jpki.lifecycle import move, renew
from jpki.provision import Home
from jpki.serving import serve_in_thread


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_discovery_names_the_keycloak_style_endpoints(idp):
    async def go() -> None:
        async with idp.http() as http:
            for path in ("/.well-known/openid-configuration", "/api/realms/main/.well-known/openid-configuration"):
                doc = (await http.get(path)).json()
                assert doc["issuer"] == ISSUER
                assert doc["authorization_endpoint"] == AUTH and doc["token_endpoint"] == TOKEN
                assert doc["userinfo_endpoint"] == USERINFO and doc["jwks_uri"] == CERTS
                assert doc["code_challenge_methods_supported"] == ["S256"]
                assert doc["subject_types_supported"] == ["pairwise"]
                assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
                assert set(doc["token_endpoint_auth_methods_supported"]) == {"private_key_jwt", "client_secret_basic"}
                assert doc["scopes_supported"] == ["openid", "name", "address", "birthdate", "gender", "sign"]
            keys = KeySet.import_key_set((await http.get(CERTS)).json())
            assert [k.key_type for k in keys.keys] == ["EC"]
            assert all("d" not in k.as_dict(private=False) for k in keys.keys)

    run(go())


def test_login_only_gives_a_verified_id_token_and_no_personal_claims(idp, caplog):
    reg = register(idp)
    caplog.set_level(logging.INFO, logger="jpki")

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid") as client:
            started, token = await login(idp, client)
            assert token["token_type"] == "Bearer" and token["scope"] == "openid"
            claims = await verified_id_token(client, token["id_token"], idp.clock, reg.id, started.nonce)
            assert claims["acr"] == "aal3" and claims["amr"] == ["hwk", "pin", "sc"]
            assert claims["auth_time"] == int(idp.clock.now().timestamp())
            assert claims["exp"] - claims["iat"] == 300
            info = (await client.get(USERINFO)).json()
            assert info == {"sub": claims["sub"]}

    run(go())
    assert_no_personal_data(caplog.text, idp.home)


def test_the_basic_4_info_come_from_userinfo_only_when_granted(idp):
    persona = SAMPLE_PERSONAS["alice"]
    reg = register(idp, alg="RS256")

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid name address birthdate gender") as client:
            started, token = await login(idp, client)
            claims = await verified_id_token(client, token["id_token"], idp.clock, reg.id, started.nonce)
            assert "name" not in claims and "address" not in claims  # the 4 info are in userinfo
            info = (await client.get(USERINFO)).json()
            assert info == {"sub": claims["sub"], "name": persona.name, "address": {"formatted": persona.address},
                            "birthdate": persona.birth_date.isoformat(), "gender": persona.sex.name.lower()}
        async with oauth_client(idp, reg, scope="openid address") as client:
            _, token = await login(idp, client)
            info = (await client.get(USERINFO)).json()
            assert set(info) == {"sub", "address"}  # scope not granted → claim absent
            assert info["address"] == {"formatted": persona.address}

    run(go())


def test_client_secret_basic_and_both_assertion_audiences(idp):
    basic = register(idp, alg=None, secret=True)
    keyed = register(idp)

    async def go() -> None:
        async with oauth_client(idp, basic) as client:
            _, token = await login(idp, client)
            assert token["id_token"]
        for audience in (ISSUER, TOKEN):
            async with oauth_client(idp, keyed, audience=audience) as client:
                _, token = await login(idp, client)
                assert token["access_token"]

    run(go())


def _sub(idp, reg, scope: str = "openid", card: str = "alice") -> str:
    async def go() -> str:
        async with oauth_client(idp, reg, scope=scope, redirect=reg.client.redirect_uris[0]) as client:
            started, token = await login(idp, client, card)
            return (await verified_id_token(client, token["id_token"], idp.clock, reg.id, started.nonce))["sub"]

    return run(go())


def test_pairwise_sub_per_sector_same_for_login_and_4_info_and_across_renewal(idp):
    shop = register(idp)
    shop_again = register(idp, name="Example Shop (second client)")   # same sector: shop.example.jp
    bank = register(idp, name="Example Bank", redirect=BANK)
    alice = _sub(idp, shop)
    assert _sub(idp, shop_again) == alice
    assert _sub(idp, bank) != alice
    assert _sub(idp, shop, card="bob") != alice
    assert _sub(idp, shop, scope="openid name") == alice       # the signing certificate's card linkage
    renew(Home(idp.home), "alice", clock=idp.clock)             # new keys and certificates, old ones revoked
    assert _sub(idp, shop) == alice
    assert _sub(idp, shop, scope="openid address") == alice
    move(Home(idp.home), "alice", address="大阪府大阪市北区梅田１－１", prefecture="Osaka",
         municipality="Kita-ku", clock=idp.clock)             # a new signing certificate only
    assert _sub(idp, shop, scope="openid address") == alice


def test_client_credentials_gives_a_sign_token_without_userinfo(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg, scope="sign") as client:
            token = await client.fetch_token(TOKEN, grant_type="client_credentials")
            assert token["scope"] == "sign" and "id_token" not in token
            answer = await client.get(USERINFO)
            assert answer.status_code == 403 and answer.json()["error"] == "insufficient_scope"

    run(go())


def test_the_redirect_keeps_the_redirect_uri_query(idp):
    reg = register(idp, redirect="https://shop.example.jp/callback?tenant=7")

    async def go() -> None:
        async with oauth_client(idp, reg, redirect="https://shop.example.jp/callback?tenant=7") as client:
            _, token = await login(idp, client)
            assert token["id_token"]

    run(go())


def test_the_redirect_goes_to_the_registered_uri(idp):
    reg = register(idp, redirect=SHOP)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            answer = await test_card(started.browser, started.pending)
            back = await started.browser.get(answer.json()["redirect"])
            assert back.headers["location"].startswith(SHOP + "?code=")

    run(go())


def test_a_client_publishing_its_keys_at_a_jwks_uri_and_rotating_them(home, clock, net):
    published = {"keys": []}
    fetched = []

    def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        if url == "https://shop.example.jp/jwks.json":
            # never on the event loop (the token endpoint runs there with a memory store)
            assert threading.current_thread() is not threading.main_thread()
            fetched.append(url)
            return json.dumps(published).encode()
        return net(url, data, content_type)

    idp = make_idp(home, clock, fetch)
    try:
        first = ECKey.generate_key("P-256", auto_kid=True)
        published["keys"] = [first.as_dict(private=False)]
        client, _ = idp.provider.clients.add("Shop", [SHOP], now=clock.now(), jwks_uri="https://shop.example.jp/jwks.json")

        async def go(key) -> None:
            async with oauth_client(idp, Registered(client, key)) as oauth:
                await oauth.fetch_token(TOKEN, grant_type="client_credentials", scope="sign")

        run(go(first))
        run(go(first))
        assert len(fetched) == 1                       # cached
        second = ECKey.generate_key("P-256", auto_kid=True)
        published["keys"] = [second.as_dict(private=False)]
        clock.advance(seconds=11)                      # a new kid makes the provider look again
        run(go(second))
        assert len(fetched) == 2
    finally:
        idp.app.state.close()


def test_an_issuer_with_a_path_prefixes_every_route(home, clock, net):
    issuer = "http://idp.test/jpki/"
    idp = make_idp(home, clock, net, issuer=issuer)
    reg = register(idp, alg=None, secret=True)

    async def go() -> None:
        async with idp.http() as browser:
            assert (await browser.get("/.well-known/openid-configuration")).status_code == 404
            doc = (await browser.get("/jpki/.well-known/openid-configuration")).json()
            assert doc["issuer"] == "http://idp.test/jpki"
            assert doc["authorization_endpoint"] == "http://idp.test/jpki/api/realms/main/protocol/openid-connect/auth"
            page = await browser.get(doc["authorization_endpoint"], params={
                "response_type": "code", "client_id": reg.id, "redirect_uri": SHOP, "scope": "openid", "state": "s",
                "nonce": "n", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                "code_challenge_method": "S256"})
            assert page.status_code == 200 and "Path=/jpki" in page.headers["set-cookie"]
            pending = page.headers["x-jpki-pending"]
            assert (await browser.get(f"/jpki/api/pending/{pending}")).json()["complete"] == \
                f"http://idp.test/jpki/api/pending/{pending}/complete"
            answer = (await browser.post("/jpki/api/test-cards/authenticate",
                                         json={"pending": pending, "card": "alice", "outcome": "success"})).json()
            back = await browser.get(answer["redirect"])
            assert query(back.headers["location"])["iss"] == "http://idp.test/jpki"
            token = await browser.post(doc["token_endpoint"], auth=(reg.id, reg.secret), data={
                "grant_type": "authorization_code", "code": query(back.headers["location"])["code"],
                "redirect_uri": SHOP, "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"})
            assert token.status_code == 200, token.text

    try:
        run(go())
    finally:
        idp.app.state.close()


def test_served_in_a_thread_on_a_free_port(home, clock, net):
    idp = make_idp(home, clock, net)
    try:
        with serve_in_thread(idp.app) as server:
            assert server.port != 0
            doc = httpx.get(f"{server.url}/.well-known/openid-configuration").json()
            assert doc["issuer"] == ISSUER       # the issuer is configured, not taken from the request
            assert httpx.get(f"{server.url}/api/realms/main/protocol/openid-connect/certs").json()["keys"]
    finally:
        idp.app.state.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_store_only_endpoints_run_on_the_event_loop_with_a_fast_store(home, clock, net, tmp_path, store):
    """Memory (or Redis): authorize, resume, token and userinfo run on the event loop (a trip to
    the thread pool costs more than they do); SQLite (writes wait on the disk): in threads. The
    card's answer is checked in a thread either way (its checks may fetch OCSP responses)."""
    idp = make_idp(home, clock, net, store="memory" if store == "memory" else f"sqlite:{tmp_path / 'idp.db'}")
    seen: dict[str, bool] = {}

    def on_loop(name: str) -> None:
        method = getattr(idp.provider, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            seen[name] = threading.current_thread() is threading.main_thread()  # asyncio.run's loop is here
            return method(*args, **kwargs)

        setattr(idp.provider, name, recorded)

    for name in ("authorize", "resume", "token", "userinfo", "complete"):
        on_loop(name)
    try:
        reg = register(idp)

        async def go() -> None:
            async with oauth_client(idp, reg) as client:
                _, tokens = await login(idp, client)
                assert tokens["access_token"] and (await client.get(USERINFO)).status_code == 200

        run(go())
    finally:
        idp.app.state.close()
    fast = store == "memory"
    assert idp.provider.fast_store is fast
    assert seen == {"authorize": fast, "resume": fast, "token": fast, "userinfo": fast, "complete": False}
