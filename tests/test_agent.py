"""The local agent (``jpki agent``): the card holder's side of the provider's pending
authorizations, through its pages, against the provider served for real (``served_idp``).

Every state a card holder meets: the request (login and eKYC, ja/en), a wrong PIN with the tries
left, a PIN of the wrong form (no try spent), a blocked PIN, the card missing or removed, the
provider refusing (a revoked card), cancel, a request gone or decided, a provider not yet
approved, and a sign transaction's text and hash. The guards are in test_agent_guards.py, the
browser in test_browser_e2e.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import stat
import subprocess
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from agent_support import REDIRECT, AgentBrowser, make_agent, query, text_of
from auth_support import credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from joserfc import jwe
from joserfc.jwk import ECKey

with warnings.catch_warnings():  # Authlib 1.9 prefers httpx2 and warns when on httpx
    warnings.filterwarnings("ignore", message=".*httpx module is deprecated.*")
    from authlib.integrations.httpx_client import OAuth2Client

from jpki.agent.app import check_loopback, serve
from jpki.agent.service import (
    Agent,
    AgentConfig,
    ProviderError,
    RequestDecidedError,
    RequestGoneError,
    UntrustedProviderError,
)
from jpki.agent.trust import TRUST_FILE, TrustedProviders
from jpki.auth.client import ChallengeRefusedError
from jpki.errors import NoCardError, NoReaderError, UsageError
from jpki.home import Home
from jpki.lifecycle import lost


def approve(agent_browser: AgentBrowser, served_idp: Any, pin: str, scope: str = "openid") -> tuple[Any, str, Any]:
    browser, pending = served_idp.begin(scope)
    page = agent_browser.open(served_idp.issuer, pending)
    assert page.status_code == 200, page.text
    return browser, pending, agent_browser.submit(page, do="answer", pin=pin)


# --------------------------------------------------------------------------- the flows


def test_login_through_the_agent_reaches_the_client(agent_browser, served_idp):
    browser, pending = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, pending)
    assert page.status_code == 200
    text = text_of(page)
    assert "Example Shop asks you, through " + served_idp.issuer in text
    assert "No personal information" in text
    assert "User-authentication PIN (4 digits)" in text and "3 tries left" in text
    assert 'type="password" id="pin" name="pin" autocomplete="off"' in page.text
    done = agent_browser.submit(page, do="answer", pin="1234")
    assert done.status_code == 303
    assert done.headers["location"] == f"{served_idp.oidc}/auth/resume?pending={pending}"
    assert served_idp.state(pending)["state"] == "approved"
    back = browser.get(done.headers["location"])          # the browser, with its cookie
    assert back.status_code == 302 and back.headers["location"].startswith(REDIRECT + "?code=")
    assert query(back.headers["location"])["iss"] == served_idp.issuer


def test_ekyc_lists_the_claims_in_the_card_holders_language_and_takes_the_password(agent_browser, served_idp):
    _, pending = served_idp.begin("openid name address")
    ja = agent_browser.open(served_idp.issuer, pending, lang="ja,en;q=0.5")
    assert '<html lang="ja">' in ja.text
    assert "Example Shop が、" in text_of(ja) and "氏名" in ja.text and "住所" in ja.text
    assert "署名用電子証明書の暗証番号（英数字6〜16文字）" in ja.text and "残り 5 回" in ja.text
    en = agent_browser.open(served_idp.issuer, pending, lang="en-GB,ja;q=0.1")
    assert '<html lang="en">' in en.text and "<li>Name</li><li>Address</li>" in en.text
    assert "Signature password" in en.text
    done = agent_browser.submit(en, do="answer", pin="abc123")   # the card takes it upper-cased
    assert done.status_code == 303, text_of(done)
    assert served_idp.state(pending)["state"] == "approved"


def test_a_wrong_pin_says_the_tries_left_and_the_request_stays_open(agent_browser, served_idp):
    _, pending = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, pending)
    wrong = agent_browser.submit(page, do="answer", pin="9999")
    assert wrong.status_code == 200
    assert "The PIN was wrong." in text_of(wrong) and "2 tries left" in text_of(wrong)
    assert served_idp.state(pending)["state"] == "pending"
    again = agent_browser.submit(wrong, do="answer", pin="9998")
    assert "1 try left" in text_of(again) and "One more wrong try blocks it" in text_of(again)
    assert agent_browser.submit(page, do="answer", pin="1234").status_code == 403   # the old page's token
    done = agent_browser.submit(again, do="answer", pin="1234")
    assert done.status_code == 303 and served_idp.state(pending)["state"] == "approved"


def test_a_pin_of_the_wrong_form_spends_no_try(agent_browser, served_idp):
    _, pending = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, pending)
    for typo in ("12a4", "12345", "", "１２３"):
        page = agent_browser.submit(page, do="answer", pin=typo)
        assert "That is not the form of this PIN (4 digits)" in text_of(page), typo
        assert "3 tries left" in text_of(page)
    assert agent_browser.submit(page, do="answer", pin="１２３４").status_code == 303   # full-width: NFKC


def test_the_last_wrong_try_blocks_and_the_provider_hears_pin_blocked(agent_browser, served_idp):
    browser, pending = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, pending)
    for pin in ("9999", "9998"):
        page = agent_browser.submit(page, do="answer", pin=pin)
    blocked = agent_browser.submit(page, do="answer", pin="9997")
    assert blocked.status_code == 200
    assert "The PIN is blocked. Your municipal office can reset it." in text_of(blocked)
    back = hidden_link(blocked.text, "back")
    assert back == f"{served_idp.oidc}/auth/resume?pending={pending}"
    # the provider shows the refusal and sends the browser back to the client with the reason
    refused = browser.get(back)
    assert refused.status_code == 200 and "blocked" in refused.text
    assert "error=access_denied" in hidden_link(refused.text, "back").replace("&amp;", "&")
    # a new request on the blocked card: no PIN field, one button that tells the provider
    _, second = served_idp.begin("openid")
    page = agent_browser.open(served_idp.issuer, second)
    assert 'id="pin"' not in page.text and "This card's PIN is blocked" in text_of(page)
    told = agent_browser.submit(page, do="blocked")
    assert told.status_code == 303 and served_idp.state(second)["reason"] == "pin-blocked"


def hidden_link(text: str, element_id: str) -> str:
    import re

    found = re.search(rf'id="{element_id}" href="([^"]+)"', text) \
        or re.search(rf'href="([^"]+)"[^>]*id="{element_id}"', text)
    assert found, f"no link #{element_id}"
    return found.group(1).replace("&amp;", "&")


def test_a_missing_card_is_said_and_the_request_waits(served_idp):
    agent = make_agent(served_idp.home, served_idp.clock, card="emu:nobody", trust=(served_idp.issuer,))
    browser = AgentBrowser(agent)
    try:
        _, pending = served_idp.begin("openid")
        page = browser.open(served_idp.issuer, pending)
        assert page.status_code == 200
        assert "The card cannot be read. Put the card on the reader" in text_of(page)
        assert 'id="pin"' not in page.text and 'value="retry"' in page.text
        retry = browser.submit(page, do="retry")
        assert retry.status_code == 303 and retry.headers["location"].startswith("/authorize?issuer=")
        assert served_idp.state(pending)["state"] == "pending"
    finally:
        browser.close()


def test_no_reader_and_a_card_removed_before_the_pin(served_idp, home):
    from jpki.transport import open_transport

    present = {"reader": False, "card": True}

    def open_card() -> Any:
        if not present["reader"]:
            raise NoReaderError("no PC/SC reader")
        if not present["card"]:
            raise NoCardError("no card in the reader")
        return open_transport("emu:alice", home=home)

    agent = make_agent(home, served_idp.clock, trust=(served_idp.issuer,), open_card=open_card)
    browser = AgentBrowser(agent)
    try:
        _, pending = served_idp.begin("openid")
        page = browser.open(served_idp.issuer, pending)
        assert "No card reader found" in text_of(page)
        present["reader"] = True
        page = browser.open(served_idp.issuer, pending)
        assert "3 tries left" in text_of(page)
        present["card"] = False   # taken off the reader while the page was open
        gone = browser.submit(page, do="answer", pin="1234")
        assert gone.status_code == 200 and "The card cannot be read" in text_of(gone)
        assert served_idp.state(pending)["state"] == "pending"
        present["card"] = True
        assert browser.submit(gone, do="retry").status_code == 303
    finally:
        browser.close()


def test_the_provider_refusing_a_revoked_card_is_explained(agent_browser, served_idp, home, clock):
    lost(Home(home, clock=clock), "alice", clock=clock)
    browser, pending, refused = approve(agent_browser, served_idp, "1234")
    assert refused.status_code == 200
    assert "The card's certificate has been revoked" in text_of(refused)
    assert served_idp.state(pending)["reason"] == "revoked"
    assert browser.get(hidden_link(refused.text, "back")).status_code == 200   # the provider's own page


def test_cancel_tells_the_provider_and_goes_back(agent_browser, served_idp):
    browser, pending = served_idp.begin("openid name")
    page = agent_browser.open(served_idp.issuer, pending)
    done = agent_browser.submit(page, do="cancel")
    assert done.status_code == 303 and served_idp.state(pending)["reason"] == "cancelled"
    assert "error=access_denied" in hidden_link(browser.get(done.headers["location"]).text, "back")


def test_a_request_gone_or_decided(agent_browser, served_idp):
    gone = agent_browser.open(served_idp.issuer, "x" * 32)
    assert gone.status_code == 410 and "expired or was already used" in text_of(gone)
    _, pending, done = approve(agent_browser, served_idp, "1234")
    decided = agent_browser.open(served_idp.issuer, pending)
    assert decided.status_code == 200 and "handled already" in text_of(decided)
    assert hidden_link(decided.text, "next") == done.headers["location"]
    bad = agent_browser.open(served_idp.issuer, "no/such id")
    assert bad.status_code == 400 and "The link is not valid" in text_of(bad)


def test_a_provider_not_approved_is_asked_about_before_any_contact(served_idp):
    calls: list[str] = []
    agent = make_agent(served_idp.home, served_idp.clock)
    real = agent.http

    def spy(method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        calls.append(url)
        return real(method, url, body)

    agent.http = spy
    browser = AgentBrowser(agent)
    try:
        _, pending = served_idp.begin("openid")
        ask = browser.open(served_idp.issuer, pending)
        assert ask.status_code == 200 and "Trust this provider?" in ask.text
        assert served_idp.issuer in text_of(ask) and calls == []
        with pytest.raises(UntrustedProviderError):
            agent.fetch(served_idp.issuer, pending)
        assert calls == []
        trusted = browser.submit(ask, path="/trust")
        assert trusted.status_code == 303 and trusted.headers["location"].startswith("/authorize?")
        path = served_idp.home / TRUST_FILE
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert [p["issuer"] for p in json.loads(path.read_text())["providers"]] == [served_idp.issuer]
        page = browser.client.get(trusted.headers["location"], headers={"Sec-Fetch-Site": "same-origin",
                                                                       "Accept-Language": "en"})
        assert "User-authentication PIN" in page.text and calls == [f"{served_idp.issuer}/api/pending/{pending}"]
    finally:
        browser.close()


def test_status_page_names_the_card_and_the_approved_providers(agent_browser, served_idp):
    page = agent_browser.client.get("/", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Card: emu:alice" in text_of(page) and served_idp.issuer in page.text


def test_the_pin_is_never_logged_nor_echoed_nor_sent(agent_browser, served_idp, caplog):
    caplog.set_level(logging.DEBUG)
    wrong, right = "ZQXW9731", "ABC123"
    sent: list[str] = []
    real = agent_browser.agent.http

    def spy(method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        sent.append(url + json.dumps(body))
        return real(method, url, body)

    agent_browser.agent.http = spy
    _, pending = served_idp.begin("openid name")
    page = agent_browser.open(served_idp.issuer, pending)
    answers = [agent_browser.submit(page, do="answer", pin=wrong)]
    answers.append(agent_browser.submit(answers[-1], do="answer", pin=right))
    assert answers[-1].status_code == 303
    assert any(r.name == "jpki.agent" for r in caplog.records)
    for record in caplog.records:
        assert wrong not in record.getMessage() and right not in record.getMessage()
    for answer in answers:
        assert wrong not in answer.text and right not in answer.text and right not in str(answer.headers)
    assert any("/complete{" in request for request in sent)
    for request in sent:   # to the provider: the card's signature, never the PIN
        assert wrong not in request and right not in request and right.lower() not in request


# --------------------------------------------------------------------------- what the provider sends


class FakeProvider:
    """An HttpJson answering the pending API with a given document (no server)."""

    def __init__(self, document: dict[str, Any], status: int = 200) -> None:
        self.document = document
        self.status = status
        self.posted: list[Mapping[str, Any]] = []

    def __call__(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        if method == "POST":
            assert body is not None
            self.posted.append(body)
            return 200, {"ok": True, "state": "approved", "resume": self.document["resume"]}
        return self.status, self.document


ISSUER = "https://idp.example.jp"
PENDING = "p" * 32


def pending_document(**changes: Any) -> dict[str, Any]:
    doc = {"id": PENDING, "issuer": ISSUER, "state": "pending", "action": "login", "pin": "auth",
           "client": {"id": "c", "name": "Bank"}, "scopes": ["openid"], "claims": [],
           "expires_at": "2026-11-27T03:10:00+00:00", "complete": f"{ISSUER}/api/pending/{PENDING}/complete",
           "resume": f"{ISSUER}/api/realms/main/protocol/openid-connect/auth/resume?pending={PENDING}",
           "test_cards": False, "data": {}}
    doc.update(changes)
    return doc


def challenge_for(rp_id: str, purpose: str, clock: Any) -> dict[str, Any]:
    from jpki.auth.store import Challenge

    return Challenge.create(rp_id=rp_id, purpose=purpose, now=clock.now(), ttl=dt.timedelta(minutes=3)).to_json()


def fake_agent(home: Any, clock: Any, document: dict[str, Any], status: int = 200) -> tuple[Agent, FakeProvider]:
    fake = FakeProvider(document, status)
    agent = Agent(AgentConfig(home=home, card="emu:alice"), clock=clock, http=fake)
    agent.trust(ISSUER)
    return agent, fake


@pytest.mark.parametrize(("rp_id", "purpose", "reason"), [
    ("https://other.example.jp", "login", "wrong-rp"),
    (ISSUER, "ekyc", "wrong-purpose"),
])
def test_a_challenge_for_another_relying_party_or_purpose_is_not_signed(home, clock, rp_id, purpose, reason):
    challenge = challenge_for(rp_id, purpose, clock)
    agent, fake = fake_agent(home, clock, pending_document(challenge=challenge, data=challenge))
    with pytest.raises(ChallengeRefusedError) as caught:
        agent.fetch(ISSUER, PENDING)
    assert caught.value.reason == reason
    browser = AgentBrowser(agent)
    page = browser.open(ISSUER, PENDING)
    assert page.status_code == 400 and f"will not sign this request ({reason})" in text_of(page)
    assert fake.posted == []


def test_an_expired_challenge_is_not_signed(home, clock):
    challenge = challenge_for(ISSUER, "login", clock)
    agent, _ = fake_agent(home, clock, pending_document(challenge=challenge, data=challenge))
    clock.advance(minutes=6)   # 3-minute challenge, 2 minutes of allowed skew
    with pytest.raises(ChallengeRefusedError, match="expired"):
        agent.fetch(ISSUER, PENDING)


@pytest.mark.parametrize("changes", [
    {"resume": "https://evil.example/steal"},                       # the agent is no open redirect
    {"complete": "https://evil.example/api/pending/x/complete"},     # nor posts answers elsewhere
    {"issuer": "https://other.example.jp"},
    {"id": "q" * 32},
    {"action": "format-card"},
    {"action": "login", "pin": "sign"},
    {"client": "Bank"},
])
def test_a_pending_document_that_does_not_make_sense_is_refused(home, clock, changes):
    challenge = challenge_for(ISSUER, "login", clock)
    agent, _ = fake_agent(home, clock, pending_document(challenge=challenge, data=challenge, **changes))
    with pytest.raises(ProviderError) as caught:
        agent.fetch(ISSUER, PENDING)
    assert caught.value.reason == "malformed"


def test_provider_answers_gone_and_decided(home, clock):
    agent, _ = fake_agent(home, clock, {"ok": False, "reason": "not-found"}, status=404)
    with pytest.raises(RequestGoneError):
        agent.fetch(ISSUER, PENDING)
    decided = pending_document(state="refused", reason="revoked")
    agent, _ = fake_agent(home, clock, decided)
    with pytest.raises(RequestDecidedError) as caught:
        agent.fetch(ISSUER, PENDING)
    assert caught.value.resume == decided["resume"] and caught.value.reason == "revoked"


def sign_document(digest: bytes, clock: Any, **data: Any) -> dict[str, Any]:
    """A sign transaction's pending document in the provider's format (docs/oidc.md)."""
    fields = {"sign_transaction_id": "t" * 36, "display_text": "契約書に署名します\n<b>not bold</b>",
              "hash_algorithm": "SHA-256", "hash": base64.b64encode(digest).decode(),
              "digest_info": base64.b64encode(SHA256_PREFIX + digest).decode(),
              "expires_at": (clock.now() + dt.timedelta(minutes=10)).isoformat(), **data}
    return pending_document(action="sign", pin="sign", scopes=["openid", "sign"], data=fields)


SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def test_a_sign_transaction_shows_the_checked_text_and_hash(home, clock):
    digest = hashlib.sha256(b"the contract").digest()
    agent, fake = fake_agent(home, clock, sign_document(digest, clock))
    browser = AgentBrowser(agent)
    page = browser.open(ISSUER, PENDING, lang="ja")
    assert "電子署名を求めています" in text_of(page)
    assert '<div class="signed" id="sign-text">契約書に署名します\n&lt;b&gt;not bold&lt;/b&gt;</div>' in page.text
    groups = [digest.hex()[i:i + 4] for i in range(0, 64, 4)]
    rows = " ".join(groups[:8]) + "<br>" + " ".join(groups[8:])
    assert f'ハッシュ値（SHA-256）：<br><span class="hash" id="sign-hash">{rows}</span>' in page.text
    assert "署名用電子証明書の暗証番号" in page.text and "カードで署名する" in page.text
    done = browser.submit(page, do="answer", pin="ABC123")
    assert done.status_code == 303 and done.headers["location"] == pending_document()["resume"]
    (answer,) = fake.posted
    assert answer["sign_transaction_id"] == "t" * 36
    certificate = x509.load_der_x509_certificate(base64.b64decode(answer["certificate"]))
    key = certificate.public_key()
    key.verify(base64.b64decode(answer["signature"]), digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    sign_key = serialization.load_pem_private_key((home / "cards" / "alice" / "keys" / "sign.pem").read_bytes(), None)
    assert key.public_numbers() == sign_key.public_key().public_numbers()   # alice's signing key


@pytest.mark.parametrize(("data", "reason"), [
    # the card would sign another hash than the one shown
    ({"digest_info": base64.b64encode(SHA256_PREFIX + hashlib.sha256(b"other").digest()).decode()}, "malformed"),
    ({"hash_algorithm": "SHA-1"}, "malformed"),
    ({"display_text": None}, "malformed"),
    ({"expires_at": "2026-11-27T02:57:59+00:00"}, "expired"),   # 2 minutes of skew allowed
])
def test_a_sign_transaction_that_does_not_check_is_not_signed(home, clock, data, reason):
    digest = hashlib.sha256(b"the contract").digest()
    document = sign_document(digest, clock)
    document["data"] = {k: v for k, v in {**document["data"], **data}.items() if v is not None}
    agent, fake = fake_agent(home, clock, document)
    with pytest.raises(ChallengeRefusedError) as caught:
        agent.fetch(ISSUER, PENDING)
    assert caught.value.reason == reason
    page = AgentBrowser(agent).open(ISSUER, PENDING)
    assert page.status_code == 400 and f"will not sign this request ({reason})" in text_of(page)
    assert 'id="pin"' not in page.text and fake.posted == []


def test_a_sign_transaction_end_to_end_through_the_agent(agent_browser, served_idp, clock):
    """A relying party's sign transaction against the real provider: a client_credentials token
    (Authlib, client_secret_basic), the transaction, the browser sent to authorize it, the
    agent (a wrong password, then the right one) and the emulated card, and the result: a JWE
    the client decrypts with its own key (joserfc), holding alice's signing certificate and
    its signature over the hash."""
    enc = ECKey.generate_key("P-256", auto_kid=True)
    client, secret = served_idp.provider.clients.add(
        "Example Bank", [REDIRECT], now=clock.now(), secret=True,
        jwks={"keys": [{**enc.as_dict(private=False), "use": "enc"}]})
    digest = hashlib.sha256("住宅ローン契約書".encode()).digest()
    text = "住宅ローン契約書（契約番号 2026-117）に署名します。"
    with OAuth2Client(client.client_id, secret, token_endpoint_auth_method="client_secret_basic", scope="sign",
                      trust_env=False) as api:
        api.fetch_token(served_idp.oidc + "/token", grant_type="client_credentials")
        created = api.post(served_idp.issuer + "/api/sign-transactions",
                           json={"hash": base64.b64encode(digest).decode(), "display_text": text})
        assert created.status_code == 201, created.text
        tx = created.json()["id"]
        result_url = f"{served_idp.issuer}/api/sign-transactions/{tx}/result"
        assert api.get(result_url).status_code == 409    # authorization_pending

        browser, pending = served_idp.begin("openid sign", client_id=client.client_id, sign_transaction_id=tx)
        page = agent_browser.open(served_idp.issuer, pending)
        assert page.status_code == 200, text_of(page)
        assert f"Example Bank asks you, through {served_idp.issuer} , to sign with" in text_of(page)
        assert f'<div class="signed" id="sign-text">{text}</div>' in page.text
        assert digest.hex()[:4] + " " + digest.hex()[4:8] in page.text and "Hash (SHA-256):" in page.text
        assert "Example Bank will receive the signature and your signing certificate" in text_of(page)
        assert "Signature password" in page.text and "5 tries left" in text_of(page)
        wrong = agent_browser.submit(page, do="answer", pin="WRONG999")
        assert "The password was wrong." in text_of(wrong) and "4 tries left" in text_of(wrong)
        assert served_idp.state(pending)["state"] == "pending"
        done = agent_browser.submit(wrong, do="answer", pin="abc123")
        assert done.status_code == 303, text_of(done)
        back = browser.get(done.headers["location"])
        assert back.status_code == 302 and back.headers["location"].startswith(REDIRECT + "?code=")

        result = api.get(result_url)
    assert result.status_code == 200 and result.headers["content-type"] == "application/jose"
    plain = jwe.decrypt_compact(result.content, enc, algorithms=["ECDH-ES+A256KW", "A256GCM"])
    assert plain.protected["kid"] == enc.kid
    payload = json.loads(plain.plaintext)
    assert payload["id"] == tx and payload["hash_algorithm"] == "SHA-256"
    assert base64.b64decode(payload["digest_info"]) == SHA256_PREFIX + digest
    certificate = x509.load_der_x509_certificate(base64.b64decode(payload["certificate"]))
    certificate.public_key().verify(base64.b64decode(payload["signature"]), digest, padding.PKCS1v15(),
                                    utils.Prehashed(hashes.SHA256()))
    assert certificate.public_bytes(serialization.Encoding.DER) == credentials(served_idp.home, "alice", "sign")[1]


# --------------------------------------------------------------------------- command line and serving


def test_agent_trust_forget_and_list(cli, home):
    done = cli("--json", "agent", "--trust", "http://127.0.0.1:8600", "--trust", "https://idp.example.jp",
               "--trusted")
    assert done.exit_code == 0, done.output
    assert [p["issuer"] for p in json.loads(done.stdout)] == ["http://127.0.0.1:8600", "https://idp.example.jp"]
    assert "provider approved: https://idp.example.jp" in done.stderr
    done = cli("agent", "--forget", "http://127.0.0.1:8600", "--trusted")
    assert done.exit_code == 0 and done.stdout.strip().startswith("https://idp.example.jp  (approved 2026-11-27")
    assert TrustedProviders(home).is_trusted("https://idp.example.jp")


@pytest.mark.parametrize(("issuer", "why"), [
    ("http://idp.example.jp", "plain http"),
    ("https://idp.example.jp/", "does not end with '/'"),
    ("https://idp.example.jp?x=1", "no query"),
    ("https://user@idp.example.jp", "user name"),
    ("idp.example.jp", "http(s) URL"),
])
def test_agent_trust_refuses_what_is_not_a_safe_issuer(cli, issuer, why):
    done = cli("agent", "--trust", issuer, "--trusted")
    assert done.exit_code == 2 and why in done.stderr and "Traceback" not in done.output


def test_the_agent_listens_on_loopback_only(home):
    assert check_loopback("127.0.0.1") == "127.0.0.1" and check_loopback("::1") == "::1"
    for host in ("0.0.0.0", "::", "192.168.1.10", "localhost.evil", ""):
        with pytest.raises(UsageError, match="loopback address only"):
            check_loopback(host)
    with pytest.raises(UsageError):
        serve(AgentConfig(home=home, card="emu:alice"), 24780, host="0.0.0.0")


def test_jpki_agent_serves_its_pages_and_refuses_other_hosts(cli, home):
    import httpx

    from jpki.pki import free_port

    port = free_port()
    process = cli.spawn("agent", "--port", str(port), "--card", "emu:alice", stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"jpki agent on http://127.0.0.1:{port} (card emu:alice)" in line, line
        with httpx.Client(trust_env=False) as http:
            page = http.get(f"http://127.0.0.1:{port}/", headers={"Accept-Language": "en"})
            assert page.status_code == 200 and "The agent is running" in page.text
            assert http.get(f"http://localhost:{port}/").status_code == 200
            rebound = http.get(f"http://127.0.0.1:{port}/", headers={"Host": f"evil.example:{port}"})
            assert rebound.status_code == 421 and "DNS rebinding" in rebound.text
    finally:
        process.terminate()
        process.wait(10)


def test_a_provider_that_cannot_be_reached_is_said_with_a_way_to_try_again(home, clock):
    from jpki.pki import free_port

    issuer = f"http://127.0.0.1:{free_port()}"    # nothing listens there
    browser = AgentBrowser(make_agent(home, clock, trust=(issuer,)))
    try:
        page = browser.open(issuer, PENDING)
        assert page.status_code == 502 and "did not answer as expected (unreachable)" in text_of(page)
        assert hidden_link(page.text, "next").startswith("/authorize?issuer=http%3A%2F%2F127.0.0.1%3A")
    finally:
        browser.close()


def test_a_provider_failing_the_answer_keeps_the_form(home, clock):
    challenge = challenge_for(ISSUER, "login", clock)
    agent, fake = fake_agent(home, clock, pending_document(challenge=challenge, data=challenge))

    def down(method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        if method == "POST":
            return 503, {"ok": False, "reason": "store-unavailable", "message": "try again shortly"}
        return fake(method, url, body)

    agent.http = down
    browser = AgentBrowser(agent)
    page = browser.submit(browser.open(ISSUER, PENDING), do="answer", pin="1234")
    assert page.status_code == 200 and "The provider could not be reached" in text_of(page)
    assert 'id="pin"' in page.text   # the card holder may send it again
