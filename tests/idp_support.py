"""Helpers of the OpenID Provider tests, and their ``idp`` fixture (conftest.py imports it).
Not a test module.

The provider runs in process (its ASGI app through ``httpx.ASGITransport``; built by the plugin's
``jpki.testing.idp``) on the ``home`` fixture (test CA, alice and bob), the ``clock`` fixture's
fixed time, and the test CA's revocation server in process (``net``). Relying parties are driven by Authlib's
``AsyncOAuth2Client`` (a standard OAuth 2.0 / OIDC client) with ``private_key_jwt`` through
``authlib.oauth2.rfc7523.PrivateKeyJWT`` or ``client_secret_basic``; ID tokens are checked
with joserfc against the provider's JWKS.
"""

from __future__ import annotations

import dataclasses
import secrets
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

with warnings.catch_warnings():  # Authlib 1.9 prefers httpx2 and warns when on httpx
    warnings.filterwarnings("ignore", message=".*httpx module is deprecated.*")
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from jpki.clock import FixedClock
from jpki.idp.clients import Client
from jpki.testing.idp import ISSUER, TestProvider, build_test_provider

OIDC = ISSUER + "/api/realms/main/protocol/openid-connect"
AUTH = OIDC + "/auth"
TOKEN = OIDC + "/token"
USERINFO = OIDC + "/userinfo"
CERTS = OIDC + "/certs"
SHOP = "https://shop.example.jp/callback"
BANK = "https://bank.example.jp/cb"


#: The provider under test (the plugin's): its app, the service object, the test cards, the clock.
Idp = TestProvider


def make_idp(home: Path, clock: FixedClock, fetch: Any, **config: Any) -> Idp:
    """The provider of ``home`` in test-card mode (jpki.testing.idp); ``config`` overrides settings."""
    return build_test_provider(home, clock, fetch, **config)


@pytest.fixture
def idp(home: Path, clock: FixedClock, net: Any) -> Iterator[Idp]:
    """The provider of ``home`` in test-card mode (memory store, OCSP asked at every check)."""
    found = make_idp(home, clock, net)
    yield found
    found.app.state.close()


# --------------------------------------------------------------------------- clients


@dataclasses.dataclass
class Registered:
    """A registered client and what it authenticates with."""

    client: Client
    key: ECKey | RSAKey | None = None
    secret: str | None = None
    enc_key: ECKey | RSAKey | None = None   # the private half of its "use": "enc" key, if any

    @property
    def id(self) -> str:
        return self.client.client_id


def register(idp: Idp, *, name: str = "Example Shop", redirect: str = SHOP, alg: str | None = "ES256",
             secret: bool = False, sector: str | None = None, enc: str | None = None) -> Registered:
    """A client: an ES256 or RS256 key (inline JWKS) unless ``alg`` is None, a secret if asked,
    and with ``enc`` (``EC`` or ``RSA``) also an encryption key (``"use": "enc"``: sign results)."""
    key: ECKey | RSAKey | None = None
    keys = []
    if alg == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=True)
    elif alg == "RS256":
        key = RSAKey.generate_key(2048, auto_kid=True)
    if key is not None:
        keys.append(key.as_dict(private=False))
    enc_key: ECKey | RSAKey | None = None
    if enc is not None:
        enc_key = (ECKey.generate_key("P-256", auto_kid=True) if enc == "EC"
                   else RSAKey.generate_key(2048, auto_kid=True))
        keys.append({**enc_key.as_dict(private=False), "use": "enc"})
    client, plain = idp.provider.clients.add(name, [redirect], now=idp.clock.now(),
                                             jwks={"keys": keys} if keys else None, secret=secret, sector=sector)
    return Registered(client, key, plain, enc_key)


class ClockedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's PrivateKeyJWT with ``iat``/``exp`` from the test clock (Authlib reads the
    system time) and a fresh ``jti`` per assertion; ``audience`` replaces the token endpoint."""

    def __init__(self, clock: FixedClock, alg: str, *, audience: str | None = None, lifetime: int = 120,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(token_endpoint=audience, alg=alg)
        self.clock = clock
        self.lifetime = lifetime
        self.extra = extra or {}
        self.signed: list[str] = []

    def sign(self, auth: Any, token_endpoint: str) -> str:
        now = int(self.clock.now().timestamp())
        claims = {"iat": now, "exp": now + self.lifetime, "jti": secrets.token_urlsafe(16), **self.extra}
        assertion = private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                         claims=claims, alg=self.alg)
        self.signed.append(assertion)
        return assertion


def oauth_client(idp: Idp, reg: Registered, *, scope: str = "openid", redirect: str = SHOP,
                 audience: str | None = None, lifetime: int = 120, extra: dict[str, Any] | None = None
                 ) -> AsyncOAuth2Client:
    """Authlib's client for ``reg``: private_key_jwt with its key, else client_secret_basic."""
    common = {"scope": scope, "redirect_uri": redirect, "code_challenge_method": "S256",
              "transport": httpx.ASGITransport(app=idp.app), "base_url": ISSUER}
    if reg.key is not None:
        client = AsyncOAuth2Client(reg.id, reg.key, token_endpoint_auth_method="private_key_jwt", **common)
        alg = "ES256" if isinstance(reg.key, ECKey) else "RS256"
        client.register_client_auth_method(ClockedPrivateKeyJWT(idp.clock, alg, audience=audience,
                                                                lifetime=lifetime, extra=extra))
        return client
    return AsyncOAuth2Client(reg.id, reg.secret, token_endpoint_auth_method="client_secret_basic", **common)


# --------------------------------------------------------------------------- the flow


@dataclasses.dataclass
class Started:
    """An authorization the provider is waiting on: the browser (a cookie jar) that opened the
    page, the page's response and the values the client sent."""

    browser: httpx.AsyncClient
    page: httpx.Response
    pending: str
    state: str
    nonce: str
    verifier: str


async def start(idp: Idp, client: AsyncOAuth2Client, **extra: str) -> Started:
    """The client makes the authorization URL; a new browser opens it (the page must come)."""
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(12)
    url, state = client.create_authorization_url(AUTH, code_verifier=verifier, nonce=nonce, **extra)
    browser = idp.http()
    page = await browser.get(url)
    assert page.status_code == 200, page.text
    return Started(browser, page, page.headers["x-jpki-pending"], state, nonce, verifier)


async def test_card(http: httpx.AsyncClient, pending: str, card: str = "alice", outcome: str = "success",
                    **extra: str) -> httpx.Response:
    """POST /api/test-cards/authenticate."""
    return await http.post("/api/test-cards/authenticate",
                           json={"pending": pending, "card": card, "outcome": outcome, **extra})


test_card.__test__ = False  # type: ignore[attr-defined]


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


async def code_for(started: Started, card: str = "alice") -> str:
    """Authenticate with a test card and follow the browser back: the code the client receives."""
    answer = await test_card(started.browser, started.pending, card)
    assert answer.status_code == 200 and answer.json()["state"] == "approved", answer.text
    back = await started.browser.get(answer.json()["redirect"])
    assert back.status_code == 302, back.text
    params = query(back.headers["location"])
    assert params["state"] == started.state and params["iss"] == ISSUER
    return params["code"]


async def tokens(client: AsyncOAuth2Client, code: str, verifier: str, **extra: Any) -> dict[str, Any]:
    return dict(await client.fetch_token(TOKEN, code=code, code_verifier=verifier, **extra))


async def login(idp: Idp, client: AsyncOAuth2Client, card: str = "alice",
                **extra: str) -> tuple[Started, dict[str, Any]]:
    """The whole flow: authorize, test card, code, tokens."""
    started = await start(idp, client, **extra)
    try:
        code = await code_for(started, card)
    finally:
        await started.browser.aclose()
    return started, await tokens(client, code, started.verifier)


async def verified_id_token(http: httpx.AsyncClient, id_token: str, clock: FixedClock, client_id: str,
                            nonce: str) -> dict[str, Any]:
    """The ID token's claims, its signature checked with the provider's JWKS and its claims with
    joserfc's registry at the test clock's time."""
    keys = KeySet.import_key_set((await http.get(CERTS)).json())
    token = jwt.decode(id_token, keys, algorithms=["ES256"])
    assert token.header["alg"] == "ES256" and token.header["kid"]
    registry = jwt.JWTClaimsRegistry(now=int(clock.now().timestamp()), iss={"essential": True, "value": ISSUER},
                                     aud={"essential": True, "value": client_id},
                                     nonce={"essential": True, "value": nonce}, sub={"essential": True},
                                     auth_time={"essential": True})
    registry.validate(token.claims)
    return dict(token.claims)
