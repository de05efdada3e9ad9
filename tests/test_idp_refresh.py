"""Refresh tokens and their revocation at the OpenID Provider: issued with every code exchange,
refreshed through Authlib's client (by hand and by itself when the access token has expired),
rotated at each use with reuse detection (RFC 9700 §4.14.2: a token used again ends the whole
grant, also when two requests race with one token), bound to the client, narrower scopes only,
idle and absolute lifetimes, the ID token of a refresh (OIDC Core §12.2), the claims kept
encrypted in the store, a grant that survives a restart on SQLite, and RFC 7009 revocation."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import pytest
from authlib.integrations.base_client.errors import OAuthError as ClientOAuthError
from idp_support import (
    ISSUER,
    OIDC,
    TOKEN,
    USERINFO,
    Idp,
    Registered,
    code_for,
    login,
    make_idp,
    oauth_client,
    register,
    start,
)
from joserfc import jwt
from joserfc.jwk import KeySet
from redis_env import redis_url  # noqa: F401  (session fixture)

from jpki.identity import SAMPLE_PERSONAS

REVOKE = OIDC + "/revoke"
DAY = 86400


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def id_claims(http: Any, id_token: str) -> dict[str, Any]:
    """The claims of an ID token whose signature verifies with the provider's JWKS."""
    keys = KeySet.import_key_set((await http.get(OIDC + "/certs")).json())
    return dict(jwt.decode(id_token, keys, algorithms=["ES256"]).claims)


async def refresh(idp: Idp, reg: Registered, token: str, **extra: str) -> tuple[int, dict[str, Any]]:
    """A refresh request as any client sends it (client_secret_basic): the status and the JSON."""
    async with idp.http() as http:
        answer = await http.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token, **extra},
                                 auth=(reg.id, reg.secret or ""))
    return answer.status_code, answer.json()


async def userinfo(idp: Idp, access_token: str) -> int:
    async with idp.http() as http:
        return (await http.get(USERINFO, headers={"Authorization": f"Bearer {access_token}"})).status_code


async def secret_login(idp: Idp, reg: Registered, scope: str = "openid") -> dict[str, Any]:
    async with oauth_client(idp, reg, scope=scope) as client:
        return (await login(idp, client))[1]


def test_authlib_refreshes_by_hand_and_by_itself_with_rotation_and_the_same_claims(idp):
    persona = SAMPLE_PERSONAS["alice"]
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid name birthdate") as client:
            started, first = await login(idp, client)
            assert first["refresh_token"] and first["refresh_expires_in"] == 7 * DAY
            original = await id_claims(client, first["id_token"])
            before = (await client.get(USERINFO)).json()
            assert before == {"sub": original["sub"], "name": persona.name,
                              "birthdate": persona.birth_date.isoformat()}
            idp.clock.advance(minutes=10)   # the access token has expired
            assert await userinfo(idp, first["access_token"]) == 401
            second = dict(await client.refresh_token(TOKEN, refresh_token=first["refresh_token"]))
            assert second["refresh_token"] != first["refresh_token"]        # rotated
            assert second["access_token"] != first["access_token"] and second["scope"] == "openid name birthdate"
            assert (await client.get(USERINFO)).json() == before             # the original grant's claims
            renewed = await id_claims(client, second["id_token"])
            assert {k: renewed[k] for k in ("iss", "sub", "aud", "auth_time", "acr", "amr")} == \
                {k: original[k] for k in ("iss", "sub", "aud", "auth_time", "acr", "amr")}
            assert renewed["iss"] == ISSUER and renewed["aud"] == reg.id
            assert renewed["iat"] == original["iat"] + 600 and "nonce" not in renewed and started.nonce
            # Authlib refreshes by itself once it holds the access token for expired (it reads the
            # system time: the test says so) and knows the token endpoint
            client.metadata["token_endpoint"] = TOKEN
            client.token["expires_at"] = int(time.time()) - 1
            idp.clock.advance(minutes=10)
            assert (await client.get(USERINFO)).json() == before
            assert client.token["refresh_token"] not in (first["refresh_token"], second["refresh_token"])

    run(go())


def test_a_refresh_token_used_again_ends_the_whole_grant(idp):
    reg = register(idp, alg=None, secret=True)

    async def go() -> None:
        first = await secret_login(idp, reg, "openid name")
        status, second = await refresh(idp, reg, first["refresh_token"])
        assert status == 200
        status, third = await refresh(idp, reg, second["refresh_token"])
        assert status == 200 and await userinfo(idp, third["access_token"]) == 200
        # the first token again (stolen, or replayed): refused, and everything of the grant ends
        status, error = await refresh(idp, reg, first["refresh_token"])
        assert status == 400 and error["error"] == "invalid_grant" and "already used" in error["error_description"]
        assert set(error) == {"error", "error_description"}
        assert (await refresh(idp, reg, third["refresh_token"]))[1]["error"] == "invalid_grant"
        assert await userinfo(idp, third["access_token"]) == 401
        assert await userinfo(idp, second["access_token"]) == 401

    run(go())


def test_two_refreshes_racing_with_one_token_end_the_grant(idp):
    """Two workers read the same current token; one rotates it first. The other's
    compare-and-set then fails: it withdraws its access token and ends the grant."""
    reg = register(idp, alg=None, secret=True)
    first = run(secret_login(idp, reg))
    family_key = "refresh:" + first["refresh_token"].partition(".")[0]
    stale = idp.provider.kv.get(family_key, now=idp.clock.now())
    status, winner = run(refresh(idp, reg, first["refresh_token"]))
    assert status == 200
    real_get = idp.provider.kv.get
    idp.provider.kv.get = lambda key, *, now: stale if key == family_key else real_get(key, now=now)  # type: ignore
    try:
        status, error = run(refresh(idp, reg, first["refresh_token"]))   # read before the winner's rotation
    finally:
        idp.provider.kv.get = real_get  # type: ignore[method-assign]
    assert status == 400 and error["error"] == "invalid_grant"
    assert run(refresh(idp, reg, winner["refresh_token"]))[1]["error"] == "invalid_grant"
    assert run(userinfo(idp, winner["access_token"])) == 401 and run(userinfo(idp, first["access_token"])) == 401
    # every access token of the grant has ended, the loser's own (never sent) included
    assert not [k for k in idp.provider.kv._items if k.startswith("token:")]   # type: ignore[attr-defined]


def test_refresh_refusals(idp):
    shop = register(idp, alg=None, secret=True)
    other = register(idp, name="Other shop", alg=None, secret=True)

    async def go() -> None:
        first = await secret_login(idp, shop, "openid name")
        token = first["refresh_token"]
        # another client's token: refused, and it stays its owner's
        status, error = await refresh(idp, other, token)
        assert status == 400 and error["error"] == "invalid_grant" and "another client" in error["error_description"]
        # a wider scope than granted, an empty one
        for scope in ("openid name address", ""):
            status, error = await refresh(idp, shop, token, scope=scope)
            assert status == 400 and error["error"] == "invalid_scope"
        # shapes that are no refresh token of this provider
        for bad in ("", "x" * 43, "A" * 22 + "." + "B" * 43, token + "x", token.replace(".", "-")):
            status, error = await refresh(idp, shop, bad)
            assert status == 400 and error["error"] == ("invalid_request" if not bad else "invalid_grant"), bad
        # no client authentication at all
        async with idp.http() as http:
            answer = await http.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token})
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
        # none of that spent the token
        status, narrowed = await refresh(idp, shop, token, scope="name")    # narrower: no openid, no ID token
        assert status == 200 and narrowed["scope"] == "name" and "id_token" not in narrowed
        async with idp.http() as http:
            info = await http.get(USERINFO, headers={"Authorization": f"Bearer {narrowed['access_token']}"})
        assert info.status_code == 403 and info.json()["error"] == "insufficient_scope"
        status, again = await refresh(idp, shop, narrowed["refresh_token"])  # the grant keeps its scope
        assert status == 200 and again["scope"] == "openid name" and again["id_token"]

    run(go())


def test_a_removed_client_and_a_reused_code_end_their_grants(idp):
    reg = register(idp, alg=None, secret=True)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            code = await code_for(started)
            await started.browser.aclose()
            first = dict(await client.fetch_token(TOKEN, code=code, code_verifier=started.verifier))
            with pytest.raises(ClientOAuthError, match="invalid_grant"):
                await client.fetch_token(TOKEN, code=code, code_verifier=started.verifier)
        status, error = await refresh(idp, reg, first["refresh_token"])
        assert status == 400 and error["error"] == "invalid_grant"    # the code's second use ended it
        second = await secret_login(idp, reg)
        idp.provider.clients.remove(reg.id)
        status, error = await refresh(idp, reg, second["refresh_token"])
        assert status == 401 and error["error"] == "invalid_client"
        assert await userinfo(idp, second["access_token"]) == 401

    run(go())


def test_idle_and_absolute_lifetimes(home, clock, net):
    found = make_idp(home, clock, net, refresh_token_ttl=10 * DAY, refresh_token_idle=4 * DAY)
    reg = register(found, alg=None, secret=True)
    try:
        async def go() -> None:
            first = await secret_login(found, reg)
            assert first["refresh_expires_in"] == 4 * DAY
            clock.advance(days=3)
            status, second = await refresh(found, reg, first["refresh_token"])
            assert status == 200 and second["refresh_expires_in"] == 4 * DAY   # idle: from each use
            clock.advance(days=4, seconds=1)
            status, error = await refresh(found, reg, second["refresh_token"])
            assert status == 400 and error["error"] == "invalid_grant"         # unused for too long
            third = await secret_login(found, reg)
            for _ in range(3):
                clock.advance(days=3)
                status, third = await refresh(found, reg, third["refresh_token"])
                assert status == 200
            assert third["refresh_expires_in"] == 1 * DAY                       # the absolute end is near
            clock.advance(days=1)
            assert (await refresh(found, reg, third["refresh_token"]))[0] == 400

        run(go())
    finally:
        found.app.state.close()


def test_no_refresh_tokens_when_turned_off(home, clock, net):
    found = make_idp(home, clock, net, refresh_token_ttl=0)
    reg = register(found, alg=None, secret=True)
    try:
        async def go() -> None:
            first = await secret_login(found, reg)
            assert "refresh_token" not in first
            status, error = await refresh(found, reg, "A" * 22 + "." + "B" * 43)
            assert status == 400 and error["error"] == "unsupported_grant_type"
            async with found.http() as http:
                doc = (await http.get("/.well-known/openid-configuration")).json()
            assert "refresh_token" not in doc["grant_types_supported"]

        run(go())
    finally:
        found.app.state.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_store_holds_no_claim_and_no_token_and_a_restart_keeps_the_grant(home, clock, net, tmp_path, backend,
                                                                              request):
    persona = SAMPLE_PERSONAS["alice"]
    store = f"sqlite:{tmp_path / 'idp.db'}" if backend == "sqlite" else \
        request.getfixturevalue("redis_url") + f"?prefix=r{secrets.token_hex(4)}:"
    found = make_idp(home, clock, net, store=store)
    reg = register(found, alg=None, secret=True)
    try:
        first = run(secret_login(found, reg, "openid name address"))
        family = first["refresh_token"].partition(".")[0]
        record = found.provider.kv.get("refresh:" + family, now=clock.now())
        assert record is not None
        grant = json.loads(record)
        assert persona.name not in record and persona.address not in record
        assert first["refresh_token"].partition(".")[2] not in record and grant["claims"]
    finally:
        found.app.state.close()
    again = make_idp(home, clock, net, store=store)    # a restart (or another worker) on the same file
    try:
        status, second = run(refresh(again, reg, first["refresh_token"]))
        assert status == 200
        async def info() -> dict[str, Any]:
            async with again.http() as http:
                return (await http.get(USERINFO, headers={"Authorization": f"Bearer {second['access_token']}"})).json()
        assert run(info())["name"] == persona.name
    finally:
        again.app.state.close()


def test_discovery_and_revocation_through_authlib(idp):
    keyed = register(idp)
    other = register(idp, name="Other shop", alg=None, secret=True)

    async def go() -> None:
        async with idp.http() as http:
            doc = (await http.get("/.well-known/openid-configuration")).json()
        assert doc["grant_types_supported"] == ["authorization_code", "refresh_token", "client_credentials"]
        assert doc["revocation_endpoint"] == REVOKE
        assert set(doc["revocation_endpoint_auth_methods_supported"]) == {"private_key_jwt", "client_secret_basic"}
        async with oauth_client(idp, keyed, scope="openid name") as client:
            _, token = await login(idp, client)
            # another client may not revoke it (RFC 7009 §2.1): refused, and it stays
            async with idp.http() as http:
                refused = await http.post(REVOKE, data={"token": token["refresh_token"]},
                                          auth=(other.id, other.secret or ""))
                assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
                unknown = await http.post(REVOKE, data={"token": "no-such-token"}, auth=(other.id, other.secret or ""))
                assert unknown.status_code == 200                          # unknown: no error (§2.2)
                anonymous = await http.post(REVOKE, data={"token": token["access_token"]})
                assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
                missing = await http.post(REVOKE, data={}, auth=(other.id, other.secret or ""))
                assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
            assert await userinfo(idp, token["access_token"]) == 200
            # the access token alone: the grant stays (private_key_jwt, aud the revocation endpoint:
            # Authlib must be told, it revokes with client_secret_basic by default)
            client.revocation_endpoint_auth_method = "private_key_jwt"
            answer = await client.revoke_token(REVOKE, token=token["access_token"], token_type_hint="access_token")
            assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
            assert await userinfo(idp, token["access_token"]) == 401
            fresh = dict(await client.refresh_token(TOKEN, refresh_token=token["refresh_token"]))
            assert await userinfo(idp, fresh["access_token"]) == 200
            # the refresh token: the grant ends with the access tokens it gave
            answer = await client.revoke_token(REVOKE, token=fresh["refresh_token"], token_type_hint="refresh_token")
            assert answer.status_code == 200
            assert await userinfo(idp, fresh["access_token"]) == 401
            with pytest.raises(ClientOAuthError, match="invalid_grant"):
                await client.refresh_token(TOKEN, refresh_token=fresh["refresh_token"])
            again = await client.revoke_token(REVOKE, token=fresh["refresh_token"])
            assert again.status_code == 200                                 # already revoked: no error
        # an assertion made for the revocation endpoint is no good at the token endpoint
        async with oauth_client(idp, keyed, audience=REVOKE) as client:
            with pytest.raises(ClientOAuthError, match="invalid_client"):
                await client.fetch_token(TOKEN, grant_type="client_credentials", scope="sign")

    run(go())
