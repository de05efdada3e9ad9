"""Test-card mode: every outcome through the JSON API and through the page's form, each made
real (the card signs, the CA revoked the twin, the validator sees the certificate expired, the
card counts the wrong PINs on a copy), the banner on every page, the pages in Japanese and
English without account keys or serials, the agent link and the pending-authorization API."""

from __future__ import annotations

import asyncio
import html
import re
import urllib.parse
from typing import Any

import pytest
from auth_support import card_session
from idp_support import (
    ISSUER,
    SHOP,
    USERINFO,
    make_idp,
    oauth_client,
    query,
    register,
    start,
    test_card,
    tokens,
)

from jpki.auth.result import Account, CertRef
from jpki.provision import Home, read_holder


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("scope", ["openid", "openid name"])
@pytest.mark.parametrize(("outcome", "reason"), [
    ("wrong_pin", "wrong-pin"), ("blocked_pin", "pin-blocked"), ("revoked", "revoked"),
    ("expired", "expired-certificate"), ("cancel", "cancelled")])
def test_each_refusing_outcome_reaches_the_client_as_access_denied(idp, scope, outcome, reason):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg, scope=scope) as client:
            started = await start(idp, client)
            answer = await test_card(started.browser, started.pending, "alice", outcome)
            assert answer.status_code == 200, answer.text
            assert answer.json()["state"] == "refused" and answer.json()["reason"] == reason
            params = query(answer.json()["redirect"])
            assert answer.json()["redirect"].startswith(SHOP + "?")
            assert params["error"] == "access_denied" and params["state"] == started.state
            assert params["error_description"].startswith(reason)
            await started.browser.aclose()

    run(go())
    kind = "auth" if scope == "openid" else "sign"
    with card_session(idp.home) as session:      # the home's card was never touched
        assert session.tries_left(kind) == (3 if kind == "auth" else 5)


def test_revoked_is_a_twin_the_test_ca_revoked(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            for _ in range(2):   # the twin is made once
                started = await start(idp, client)
                answer = await test_card(started.browser, started.pending, "alice", "revoked")
                assert answer.json()["reason"] == "revoked"
                await started.browser.aclose()

    run(go())
    with Home(idp.home).open_ca() as ca:
        twins = ca.db.list(card="alice-revoked")
    assert len(twins) == 2 and {r.kind for r in twins} == {"auth", "sign"}
    assert all(r.status == "revoked" and r.reason == "keyCompromise" for r in twins)
    assert "alice-revoked" not in Home(idp.home).card_names()


def test_revoked_needs_revocation_checking(home, clock, net):
    idp = make_idp(home, clock, net, revocation="none")
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            answer = await test_card(started.browser, started.pending, "alice", "revoked")
            assert answer.status_code == 400 and "revocation" in answer.json()["message"]
            assert idp.provider.pending(started.pending).status == "pending"
            await started.browser.aclose()

    try:
        run(go())
    finally:
        idp.app.state.close()


def test_unknown_card_outcome_or_pending_are_refused(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            for card, outcome in (("nobody", "success"), ("alice", "explode"), ("../alice", "success")):
                answer = await test_card(started.browser, started.pending, card, outcome)
                assert answer.status_code == 400, answer.text
            assert (await test_card(started.browser, "y" * 32)).status_code == 404
            bad = await started.browser.post("/api/test-cards/authenticate", json={"pending": started.pending})
            assert bad.status_code == 400
            listed = (await started.browser.get("/api/test-cards")).json()
            assert listed == {"cards": ["alice", "bob"], "outcomes": ["success", "wrong_pin", "blocked_pin",
                                                                     "revoked", "expired", "cancel"]}
            assert (await test_card(started.browser, started.pending, "bob")).json()["state"] == "approved"
            again = await test_card(started.browser, started.pending, "bob")
            assert again.status_code == 409
            await started.browser.aclose()

    run(go())


def _banner(text: str) -> bool:
    return 'class="banner"' in text and ("TEST-CARD MODE" in text or "テストカードモード" in text)


def test_the_page_form_and_the_banner_on_every_page(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid name") as client:
            started = await start(idp, client)
            page = started.page
            assert _banner(page.text) and 'id="test-card-form"' in page.text
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert page.headers["x-frame-options"] == "DENY"
            cookie = page.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
            browser = started.browser
            resume = idp.provider.resume_url(started.pending)
            waiting = await browser.get(resume)
            assert waiting.status_code == 200 and _banner(waiting.text)
            async with idp.http() as other:              # the form of another browser is refused
                refused = await other.post("/api/realms/main/protocol/openid-connect/auth/test-card",
                                           data={"pending": started.pending, "card": "alice", "outcome": "success"})
                assert refused.status_code == 403 and _banner(refused.text)
            sent = await browser.post("/api/realms/main/protocol/openid-connect/auth/test-card",
                                      data={"pending": started.pending, "card": "alice", "outcome": "success"})
            assert sent.status_code == 303 and sent.headers["location"] == resume
            back = await browser.get(resume)
            assert back.status_code == 302
            token = await tokens(client, query(back.headers["location"])["code"], started.verifier)
            assert (await client.get(USERINFO)).json()["name"] == "山田　花子"
            assert token["scope"] == "openid name"
            gone = await browser.get(resume)
            assert gone.status_code == 400 and _banner(gone.text)
            index = await browser.get("/")
            assert _banner(index.text)
            error = await browser.get("/api/realms/main/protocol/openid-connect/auth?client_id=nobody-at-all")
            assert error.status_code == 400 and _banner(error.text)

            started = await start(idp, client)          # a refusal through the form: the refused page
            await started.browser.post("/api/realms/main/protocol/openid-connect/auth/test-card",
                                       data={"pending": started.pending, "card": "alice", "outcome": "revoked"})
            page = await started.browser.get(resume.replace(resume.split("=")[-1], started.pending),
                                             headers={"Accept-Language": "en-US,en;q=0.9,ja;q=0.5"})
            assert page.status_code == 200 and _banner(page.text)
            assert "has been revoked" in page.text and "Return to Example Shop" in page.text
            back_url = html.unescape(re.search(r'id="back" href="([^"]+)"', page.text).group(1))
            assert query(back_url)["error"] == "access_denied" and back_url.startswith(SHOP)
            await started.browser.aclose()
            await browser.aclose()

    run(go())


def test_no_banner_and_no_test_card_routes_without_the_mode(home, clock, net):
    idp = make_idp(home, clock, net, test_cards=False)
    from jpki.idp.app import create_app

    app = create_app(idp.provider)  # no plug-in
    idp.app = app
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            assert not _banner(started.page.text) and "test-card-form" not in started.page.text
            assert (await test_card(started.browser, started.pending)).status_code == 404
            doc = (await started.browser.get("/.well-known/openid-configuration")).json()
            assert "jpki_test_cards" not in doc
            await started.browser.aclose()

    try:
        run(go())
    finally:
        app.state.close()


def test_the_page_in_both_languages_names_the_claims_and_hides_keys_and_serials(idp):
    reg = register(idp, name="Example <Shop>")

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid name address") as client:
            for headers, extra, words in (
                    ({"Accept-Language": "en"}, {}, ["<strong>Example &lt;Shop&gt;</strong> will receive", "Name",
                                                     "Address", "signature password",
                                                     "Use the card on this computer"]),
                    ({"Accept-Language": "ja,en;q=0.8"}, {}, ["氏名", "住所", "署名用電子証明書の暗証番号",
                                                              "このコンピューターのカードを使う"]),
                    ({"Accept-Language": "en"}, {"ui_locales": "ja"}, ["氏名"])):
                verifier = "v" * 43
                url, _ = client.create_authorization_url(
                    "/api/realms/main/protocol/openid-connect/auth", code_verifier=verifier, nonce="n", **extra)
                async with idp.http() as browser:
                    page = await browser.get(url, headers=headers)
                for word in words:
                    assert word in page.text, word
                assert "<Shop>" not in page.text
                holder = read_holder(Home(idp.home), "alice")
                for serial in (holder.auth_serial, holder.sign_serial):
                    assert format(serial, "X") not in page.text and format(serial, "x") not in page.text
                assert "jpki1:" not in page.text
                link = re.search(r'id="use-card" href="([^"]+)"', page.text).group(1)
                parts = urllib.parse.urlsplit(html.unescape(link))
                assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://127.0.0.1:24780/authorize"
                assert query(html.unescape(link)) == {"issuer": ISSUER, "pending": page.headers["x-jpki-pending"]}

    run(go())


def test_the_pending_api_for_the_agent(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg, scope="openid birthdate") as client:
            started = await start(idp, client)
            doc = (await started.browser.get(f"/api/pending/{started.pending}")).json()
            assert doc["state"] == "pending" and doc["action"] == "ekyc" and doc["pin"] == "sign"
            assert doc["client"] == {"id": reg.id, "name": "Example Shop"} and doc["claims"] == ["birthdate"]
            assert doc["challenge"]["rp_id"] == ISSUER and doc["challenge"]["purpose"] == "ekyc"
            assert doc["challenge"]["transaction_text"] == "Example Shop: birthdate"
            assert doc["complete"] == f"{ISSUER}/api/pending/{started.pending}/complete"
            assert doc["resume"] == idp.provider.resume_url(started.pending)
            await test_card(started.browser, started.pending)
            done = (await started.browser.get(f"/api/pending/{started.pending}")).json()
            assert done["state"] == "approved" and "challenge" not in done
            assert "1990" not in str(done) and "sub" not in str(done)
            missing = await started.browser.get("/api/pending/" + "z" * 32)
            assert missing.status_code == 404 and missing.json()["reason"] == "not-found"
            await started.browser.aclose()

    run(go())


def test_the_cancel_button_refuses_and_shows_why(idp):
    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            async with idp.http() as other:
                stranger = await other.post("/api/realms/main/protocol/openid-connect/auth/cancel",
                                            data={"pending": started.pending})
                assert stranger.status_code == 403
            cancelled = await started.browser.post("/api/realms/main/protocol/openid-connect/auth/cancel",
                                                   data={"pending": started.pending})
            assert cancelled.status_code == 303
            page = await started.browser.get(cancelled.headers["location"], headers={"Accept-Language": "en"})
            assert "You cancelled" in page.text
            back = html.unescape(re.search(r'id="back" href="([^"]+)"', page.text).group(1))
            assert query(back)["error"] == "access_denied"
            await started.browser.aclose()

    run(go())


def test_a_renewed_test_card_keeps_its_account(idp):
    """The login result's account is the first certificate of the renewal chain (what sub is made of)."""
    from jpki.lifecycle import renew

    first = read_holder(Home(idp.home), "alice").auth_serial
    renew(Home(idp.home), "alice", clock=idp.clock)
    issuer = idp.provider.linkage._auth_issuer
    renewed = read_holder(Home(idp.home), "alice").auth_serial
    account = idp.provider.rp.account_resolver.account_for(CertRef(issuer, renewed))
    assert account == Account(CertRef(issuer, first), renewals=1)


def test_the_page_has_no_form_inside_a_paragraph(idp):
    """A <form> closes an open <p> (HTML's parser), which put Cancel on a line of its own and left
    an empty paragraph: the choices are in one <div>, the forms outside any <p>."""
    from html.parser import HTMLParser

    class Nesting(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.forms_in_p = 0

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag == "form" and "p" in self.open:
                self.forms_in_p += 1
            if tag not in ("input", "br", "meta", "option"):
                self.open.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if tag in self.open:
                del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    reg = register(idp)

    async def go() -> None:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            await started.browser.aclose()
        nesting = Nesting()
        nesting.feed(started.page.text)
        assert nesting.forms_in_p == 0
        choices = re.search(r'<div class="choices" id="choices">(.*?)</div>', started.page.text)
        assert choices is not None and 'id="continue"' in choices.group(1) and 'id="cancel"' in choices.group(1)

    run(go())


def test_an_answer_to_an_authorization_decided_meanwhile_does_not_apply(idp):
    """The test cards hand the provider the authorization they read (no second read of the store);
    if it was decided in between, the compare-and-set refuses the late answer."""
    from jpki.auth.client import answer_login
    from jpki.auth.store import Challenge
    from jpki.idp.pending import PendingState, StateError

    reg = register(idp)

    async def go() -> str:
        async with oauth_client(idp, reg) as client:
            started = await start(idp, client)
            await started.browser.aclose()
            return started.pending

    pending_id = run(go())
    stale = idp.provider.pending(pending_id)
    idp.provider.cancel(pending_id, "cancelled")              # decided meanwhile
    with card_session(idp.home) as session:
        answer = answer_login(Challenge.from_json(stale.data), session, pin=lambda: "1234").to_json()
    with pytest.raises(StateError):
        idp.provider.complete(pending_id, answer, loaded=stale)
    assert idp.provider.pending(pending_id).status is PendingState.REFUSED


def test_the_card_list_follows_cards_added_and_removed(idp):
    # Listed on every authorization page, the cards are read again only when their folder changed.
    import shutil

    before = idp.cards.cards()
    assert before == ["alice", "bob"] and idp.cards.cards() == before
    cards_dir = idp.cards.home.cards_dir
    shutil.copytree(cards_dir / "alice", cards_dir / "carol")
    try:
        assert idp.cards.cards() == ["alice", "bob", "carol"]
    finally:
        shutil.rmtree(cards_dir / "carol")
    assert idp.cards.cards() == ["alice", "bob"]
