"""Per-client limits of the OpenID Provider: token buckets per client address at the
authorization page, the test-card API and the token/revocation endpoints, per OAuth client at
the token endpoint (spent only once the client has authenticated), each refusal 429 with
Retry-After in its endpoint's shape; a cap on unfinished authorizations per address kept in the
shared store; refusals counted and summarised; defaults that let the loopback benchmark through."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import click
import httpx
import pytest
from idp_support import AUTH, ISSUER, SHOP, TOKEN, Idp, code_for, make_idp, oauth_client, query, register, start
from redis_env import redis_url  # noqa: F401  (session fixture)

from jpki.cli.idp import idp as idp_group
from jpki.errors import UsageError
from jpki.idp.limits import ProviderLimits, Throttle
from jpki.idp.provider import ProviderConfig

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def from_address(idp: Idp, address: str) -> httpx.AsyncClient:
    """A client of the provider's app that comes from ``address``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app, client=(address, 40000)), base_url=ISSUER)


def auth_params(reg: Any) -> dict[str, str]:
    return {"response_type": "code", "client_id": reg.id, "redirect_uri": SHOP, "scope": "openid", "state": "st",
            "nonce": "nn", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"}


@pytest.fixture
def tight(home, clock, net):
    """A provider with small limits: 1 request/s after 2 at once, everywhere; 2 unfinished
    authorizations per address."""
    found = make_idp(home, clock, net, rate_limit=1.0, rate_burst=2, token_rate_limit=1.0, token_rate_burst=2,
                     max_pending=2)
    yield found
    found.app.state.close()


def test_the_authorization_page_per_address_a_page_in_both_languages(tight):
    reg = register(tight)

    async def go() -> None:
        async with from_address(tight, "203.0.113.7") as browser, from_address(tight, "203.0.113.8") as neighbour:
            for _ in range(2):
                assert (await browser.get(AUTH, params=auth_params(reg))).status_code == 200
            for language, words in (("en", "Too many requests"), ("ja", "要求が多すぎます")):
                page = await browser.get(AUTH, params=auth_params(reg), headers={"Accept-Language": language})
                assert page.status_code == 429 and words in page.text and page.headers["retry-after"] == "1"
                assert "location" not in page.headers and "frame-ancestors 'none'" in \
                    page.headers["content-security-policy"]
            # the page's own forms count in the same bucket
            cancel = await browser.post(AUTH + "/cancel", data={"pending": "x" * 32})
            assert cancel.status_code == 429
            # another address is not concerned; a second later the first may come again
            assert (await neighbour.get(AUTH, params=auth_params(reg))).status_code == 200
            tight.clock.advance(seconds=1)
            assert (await browser.get(AUTH, params=auth_params(reg))).status_code == 302   # the pending cap (below)

    run(go())
    assert tight.provider.throttle.refusals.counts["auth-rate-limited"] == 3


def test_the_test_card_api_per_address_as_a_refusal_document(tight):
    async def go() -> None:
        async with from_address(tight, "198.51.100.1") as ci:
            for _ in range(2):
                assert (await ci.get("/api/test-cards")).status_code == 200
            refused = await ci.post("/api/test-cards/authenticate",
                                    json={"pending": "x" * 32, "card": "alice", "outcome": "success"})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json() == {"ok": False, "reason": "rate-limited",
                                      "message": "too many requests from 198.51.100.1: retry in 1 s"}

    run(go())


def test_the_token_endpoint_per_address_and_per_client(tight):
    shop = register(tight, alg=None, secret=True)
    bank = register(tight, name="Bank", alg=None, secret=True)
    grant = {"grant_type": "client_credentials", "scope": "sign"}

    async def go() -> None:
        async with from_address(tight, "192.0.2.1") as a, from_address(tight, "192.0.2.2") as b, \
                from_address(tight, "192.0.2.3") as c:
            # unauthenticated junk claiming to be the shop: refused by the address's bucket, and it
            # never spends the shop's own
            for _ in range(2):
                assert (await c.post(TOKEN, data=grant, auth=(shop.id, "wrong"))).status_code == 401
            junk = await c.post(TOKEN, data=grant, auth=(shop.id, "wrong"))
            assert junk.status_code == 429 and junk.json()["error"] == "temporarily_unavailable"
            assert set(junk.json()) == {"error", "error_description"} and junk.headers["retry-after"] == "1"
            assert "address" in junk.json()["error_description"]
            # the shop from two addresses: its own bucket empties at its third request
            for http in (a, a):
                assert (await http.post(TOKEN, data=grant, auth=(shop.id, shop.secret))).status_code == 200
            refused = await b.post(TOKEN, data=grant, auth=(shop.id, shop.secret))
            assert refused.status_code == 429 and "this client" in refused.json()["error_description"]
            assert refused.headers["cache-control"] == "no-store" and refused.headers["retry-after"] == "1"
            # the bank from that address is served: its bucket and the address's are not empty
            assert (await b.post(TOKEN, data=grant, auth=(bank.id, bank.secret))).status_code == 200
            # the revocation endpoint shares the token endpoint's buckets
            revoked = await a.post(OIDC_REVOKE, data={"token": "x"}, auth=(bank.id, bank.secret))
            assert revoked.status_code == 429

    run(go())
    counts = tight.provider.throttle.refusals.counts
    assert counts["token-rate-limited"] == 2 and counts["client-rate-limited"] == 1


OIDC_REVOKE = AUTH.rsplit("/", 1)[0] + "/revoke"


def test_unfinished_authorizations_per_address_across_the_store(tight):
    reg = register(tight)

    async def go() -> None:
        async with oauth_client(tight, reg) as client:
            first = await start(tight, client)      # the ASGI client's address: 127.0.0.1
            await start(tight, client)
            tight.clock.advance(seconds=5)          # the buckets are full again: only the cap speaks
            async with tight.http() as browser:
                third = await browser.get(AUTH, params=auth_params(reg))
            assert third.status_code == 302
            error = query(third.headers["location"])
            assert error["error"] == "temporarily_unavailable" and "unfinished" in error["error_description"]
            async with from_address(tight, "203.0.113.9") as elsewhere:
                assert (await elsewhere.get(AUTH, params=auth_params(reg))).status_code == 200
            await code_for(first)                   # one finished (the browser back, the code issued)
            tight.clock.advance(seconds=5)
            again = await start(tight, client)
            assert again.page.status_code == 200

    run(go())
    assert tight.provider.throttle.refusals.counts["too-many-pending"] == 1


def test_two_workers_on_one_redis_store_share_the_pending_cap(home, clock, net, request):
    store = request.getfixturevalue("redis_url") + f"?prefix=l{secrets.token_hex(4)}:"
    workers = [make_idp(home, clock, net, store=store, max_pending=3) for _ in range(2)]
    reg = register(workers[0])

    async def go() -> list[int]:
        statuses = []
        for i in range(4):
            async with from_address(workers[i % 2], "203.0.113.77") as browser:
                statuses.append((await browser.get(AUTH, params=auth_params(reg))).status_code)
        return statuses

    try:
        assert run(go()) == [200, 200, 200, 302]
    finally:
        for worker in workers:
            worker.app.state.close()


def test_refusals_are_summarised_not_logged_one_by_one(tight, caplog):
    caplog.set_level(logging.WARNING, logger="jpki.idp")
    reg = register(tight)

    async def go() -> None:
        async with from_address(tight, "203.0.113.50") as flood:
            statuses = [(await flood.get(AUTH, params=auth_params(reg))).status_code for _ in range(30)]
        assert statuses.count(429) == 28

    run(go())
    lines = [r.getMessage() for r in caplog.records if "refus" in r.getMessage()]
    assert len(lines) == 1 and "203.0.113.50" in lines[0]
    tight.app.state.close()     # at shutdown the rest is summarised
    lines = [r.getMessage() for r in caplog.records if "refus" in r.getMessage()]
    assert len(lines) == 2 and "auth-rate-limited=27" in lines[1]


def test_the_defaults_let_the_loopback_benchmark_through_on_one_worker():
    """300 complete flows per second and then 2,000 token requests per second, all from
    127.0.0.1 and one client, on a single worker (the worst spread of two): nothing refused."""
    now = [0.0]
    throttle = Throttle(ProviderLimits(), timer=lambda: now[0])
    for _ in range(3000):      # 10 s of flows
        now[0] += 1 / 300
        assert not any(throttle.admit(endpoint, key) for endpoint, key in
                       (("auth", "127.0.0.1"), ("test-cards", "127.0.0.1"), ("token", "127.0.0.1"),
                        ("client", "shop")))
    for _ in range(30_000):    # token exchanges at 1,900/s for 16 s (more than one core can serve)
        now[0] += 1 / 1900
        assert not throttle.admit("token", "127.0.0.1") and not throttle.admit("client", "shop")
    assert not throttle.refusals.counts
    # and they are limits: a flood is cut to the rate once the burst is spent
    flood = [throttle.admit("auth", "192.0.2.99") for _ in range(1500)]
    assert flood.count(0.0) == 1000 and all(flood[1000:])


def test_limit_settings_and_cli_defaults_agree():
    config = ProviderConfig(home=".", issuer=ISSUER)
    assert config.limits == ProviderLimits()
    serve = idp_group.commands["serve"]
    defaults = {p.name: p.default for p in serve.params if isinstance(p, click.Option)}
    for option in ("rate_limit", "rate_burst", "token_rate_limit", "token_rate_burst", "max_pending",
                   "refresh_token_ttl", "refresh_token_idle"):
        assert defaults[option] == getattr(config, option), option
    for bad in ({"rate_limit": -1.0}, {"rate_limit": float("inf")}, {"rate_burst": 0}, {"max_pending": -1},
                {"token_rate_burst": 0}, {"refresh_token_ttl": -1.0}, {"refresh_token_idle": 0.0}):
        with pytest.raises(UsageError):
            ProviderConfig(home=".", issuer=ISSUER, **bad)
    off = ProviderLimits(rate=0, burst=0, token_rate=0, token_burst=0, max_pending=0)
    assert Throttle(off, timer=lambda: 0.0).admit("auth", "x") == 0.0
