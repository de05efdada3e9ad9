"""The end-to-end demo: a throw-away home, a test CA, an emulated card, and everything it can do.

Grows with each capability. Every step checks its result; the report says what passed.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .certinfo import signing_identity
from .clock import Clock, SystemClock
from .home import DEFAULT_AUTH_PIN, DEFAULT_SIGN_PIN, Home
from .identity import mask_mynumber, mask_text
from .lifecycle import lost
from .pki import TestCA, free_port
from .pki.server import serve_in_thread
from .provision import create_card, sample_persona
from .session import CardInfoSession, JpkiSession
from .transport import open_transport
from .verify import TrustStore, Validator

if TYPE_CHECKING:
    from .sign.report import VerificationReport
    from .tsa import HttpTimestamper


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


@dataclass
class DemoReport:
    home: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "home": self.home,
                "steps": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps]}

    def summary(self) -> str:
        lines = [f"{'PASS' if s.ok else 'FAIL'}  {s.name}: {s.detail}" for s in self.steps]
        lines.append(f"demo {'passed' if self.ok else 'FAILED'}: "
                     f"{sum(s.ok for s in self.steps)}/{len(self.steps)} steps (home {self.home})")
        return "\n".join(lines)


def _verifies(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):  # JPKI keys are RSA
        return False
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def run_demo(home_path: Path, *, card_name: str = "alice", clock: Clock | None = None,
             progress: Callable[[Step], None] | None = None) -> DemoReport:
    """Run the demo in ``home_path`` (which must not hold a CA yet)."""
    clock = clock or SystemClock()
    home = Home(home_path, clock=clock)
    report = DemoReport(str(home_path))

    def step(name: str, ok: bool, detail: str) -> None:
        s = Step(name, bool(ok), detail)
        report.steps.append(s)
        if progress:
            progress(s)

    home_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    port = free_port()
    ca = TestCA.init(home.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{port}")
    ca.close()
    step("test CA", True, f"created in {home.ca_dir}")

    persona = sample_persona(card_name)
    assert persona is not None
    holder = create_card(home, card_name, persona, clock=clock)
    step("emulated card", True, f"{card_name}: {mask_text(persona.name)}, card expires {holder.card_expiry}")

    message = b"jpki demo: " + clock.now().isoformat().encode()
    with open_transport(f"emu:{card_name}", home=home_path) as t:
        j = JpkiSession(t)
        step("card type", j.card_type() == "my-number-card",
             f"{j.card_type()}; tries left auth {j.tries_left('auth')}, sign {j.tries_left('sign')}")
        auth = x509.load_der_x509_certificate(j.read_certificate("auth"))
        auth_ca = x509.load_der_x509_certificate(j.read_certificate("auth-ca"))
        sign_ca = x509.load_der_x509_certificate(j.read_certificate("sign-ca"))
        step("read certificates", _issued_by(auth, auth_ca),
             f"auth {auth.serial_number:X} issued by {auth_ca.subject.rfc4514_string()}")

        j.verify("auth", DEFAULT_AUTH_PIN)
        sig = j.sign_digest("auth", "sha256", hashlib.sha256(message).digest())
        step("sign with the auth key", _verifies(auth, sig, message),
             f"PIN verified, {len(sig)}-byte signature checked against the certificate")

        j.verify("sign", DEFAULT_SIGN_PIN)
        sign = x509.load_der_x509_certificate(j.read_certificate("sign"))
        ident = signing_identity(sign)
        sig = j.sign_digest("sign", "sha256", hashlib.sha256(message).digest())
        step("sign with the sign key", _verifies(sign, sig, message) and _issued_by(sign, sign_ca),
             f"password verified, signature checked; certificate names {mask_text(ident.name)}, "
             f"born {ident.birth_date}")

        info = CardInfoSession(t)
        info.verify("card", DEFAULT_AUTH_PIN)
        number = info.read_my_number()
        basic = info.read_basic_info()
        same = (basic.name == ident.name and basic.address == ident.address
                and basic.birth_date == ident.birth_date and basic.sex == ident.sex)
        step("card-info AP", same and number == holder.persona.my_number,
             f"My Number {mask_mynumber(number)} (check digit valid); basic 4 info matches "
             "the signing certificate" if same else "basic 4 info differs from the certificate")

    with serve_in_thread(home.ca_dir, "127.0.0.1", port, clock=clock):
        validator = Validator(TrustStore.jlis() + TrustStore.from_ca_dir(home.ca_dir), clock=clock)
        for kind, cert in (("auth", auth), ("sign", sign)):
            result = validator.validate(cert, kind=kind)
            step(f"validate the {kind} certificate", result.ok, result.summary())

        _sign_documents(home_path, card_name, validator, clock, step)
        confused = validator.validate(sign, kind="auth")
        step("a signing certificate is no login certificate", confused.reason == "wrong-kind",
             f"refused: {confused.reason}")
        _openid_connect(home_path, card_name, clock, step)
        _online_identity(home_path, card_name, clock, step,
                         before_loss=lambda: _long_term(home_path, card_name, clock, step))
        validator.clear_caches()
        result = validator.validate(auth, kind="auth")
        evidence = "?" if result.revocation is None else result.revocation.method.upper()
        step("lost card: the auth certificate is refused", result.reason == "revoked",
             result.summary() if result.reason != "revoked" else
             f"refused: revoked ({result.revocation_reason}) per {evidence}")
        crl_only = Validator(TrustStore.from_ca_dir(home.ca_dir), clock=clock, revocation="crl")
        result = crl_only.validate(auth, kind="auth")
        step("lost card: the CRL says so too", result.reason == "revoked",
             f"refused: revoked ({result.revocation_reason}) per the CRL")
    return report




def _sign_documents(home_path: Path, card_name: str, validator: Validator, clock: Clock,
                    step: Callable[[str, bool, str], None]) -> None:
    """Sign a text file (CMS, CAdES-BES) and a PDF (PAdES B-B) with the card; verify both."""
    from .sign import CardSigner, sign_file, verify_cms
    from .sign.pdf import sign_pdf, simple_pdf, verify_pdf

    docs = home_path / "documents"
    docs.mkdir(mode=0o700, exist_ok=True)
    text = docs / "contract.txt"
    text.write_text("契約書: jpki demo\n", encoding="utf-8")
    pdf_in, pdf_out = docs / "contract.pdf", docs / "contract-signed.pdf"
    pdf_in.write_bytes(simple_pdf("jpki demo: a contract"))
    with open_transport(f"emu:{card_name}", home=home_path) as t:
        signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: DEFAULT_SIGN_PIN)
        outcome = sign_file(text, None, signer, clock=clock)
        sign_pdf(pdf_in, pdf_out, signer, reason="jpki demo", clock=clock)
    report = verify_cms(outcome.output, data=text, validator=validator, clock=clock)
    step("sign a document (CMS, CAdES-BES)", report.ok, _verdict(report))
    text.write_text("契約書: jpki demo (altered)\n", encoding="utf-8")
    altered = verify_cms(outcome.output, data=text, validator=validator, clock=clock)
    step("an altered document is refused", not altered.ok and altered.reason == "wrong-data",
         f"refused: {altered.reason}")
    report = verify_pdf(pdf_out, validator=validator, clock=clock)
    step("sign a PDF (PAdES B-B)", report.ok, _verdict(report))
    _pulled_mid_signature(home_path, card_name, text, step)


def _pulled_mid_signature(home_path: Path, card_name: str, text: Path,
                          step: Callable[[str, bool, str], None]) -> None:
    """A tester's fault (jpki.transport.emu.card_faults): the card leaves the reader as it starts
    to sign; the signer gets a clean error and writes nothing, and signs once the card is back."""
    from .errors import CardRemovedError
    from .sign import CardSigner, sign_file
    from .transport.emu import card_faults, forget_card_faults

    directory = Home(home_path).card_dir(card_name)
    faults = card_faults(directory)
    out = text.with_name("pulled.p7s")
    try:
        faults.remove_on_signature()
        try:
            with open_transport(f"emu:{card_name}", home=home_path) as t:
                signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: DEFAULT_SIGN_PIN)
                sign_file(text, out, signer)
            error = None
        except CardRemovedError as exc:
            error = exc
        faults.insert()
        with open_transport(f"emu:{card_name}", home=home_path) as t:
            signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: DEFAULT_SIGN_PIN)
            again = signer.sign_data("sha256", b"jpki demo")
    finally:
        forget_card_faults(directory)
    ok = error is not None and not out.exists() and len(again) == 256
    step("a card pulled out mid-signature (fault injection)", ok,
         f"{error.code if error else 'no error'}: {error}; nothing written; back in the reader, it signs again"
         if error else "the fault did not fire")


class _Later:
    """``clock`` one second ahead: the card moves in a later second than the one its document
    was timestamped in (revocation times are whole seconds), without the demo sleeping."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> datetime.datetime:
        return self.clock.now() + datetime.timedelta(seconds=1)


@contextlib.contextmanager
def served_tsa(home: Home, clock: Clock) -> Iterator[HttpTimestamper]:
    """The home's test time-stamping authority (:mod:`jpki.tsa`, what ``jpki tsa serve`` runs:
    made on first use in ``HOME/tsa``, its certificate from the test CA's signing root with the
    critical id-kp-timeStamping EKU, recorded in the CA database so that the CA's OCSP responder
    answers for it), served over HTTP on a free loopback port in a thread with ``clock``; and
    an RFC 3161 client of it (:class:`jpki.tsa.HttpTimestamper`, what ``jpki sign --tsa``
    uses)."""
    from .tsa import HttpTimestamper
    from .tsa.app import serve_in_thread as serve_tsa_in_thread
    from .tsa.credentials import ensure_tsa

    with home.open_ca(clock) as ca:
        ensure_tsa(home.path, ca=ca)
    with serve_tsa_in_thread(home.path, clock=clock) as server:
        stamper = HttpTimestamper(server.url + "/")
        try:
            yield stamper
        finally:
            stamper.close()


def _long_term(home_path: Path, card_name: str, clock: Clock,
               step: Callable[[str, bool, str], None]) -> None:
    """A document signed with a timestamp and its validation data (CAdES-LT), another without;
    the card moves (its signing certificate revoked, affiliationChanged: the new one starts a
    second later, so nothing after this step signs with it); the first stays valid (online and
    offline), the second is refused."""
    from . import lifecycle
    from .sign import CardSigner, sign_file, verify_cms
    from .sign.levels import ValidatorSource

    home = Home(home_path, clock=clock)
    docs = home_path / "documents"
    text = docs / "lease.txt"
    text.write_text("賃貸借契約書: jpki demo\n", encoding="utf-8")
    trust = TrustStore.jlis() + TrustStore.from_ca_dir(home.ca_dir)
    with open_transport(f"emu:{card_name}", home=home_path) as t:
        signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: DEFAULT_SIGN_PIN)
        with served_tsa(home, clock) as tsa:
            lt = sign_file(text, docs / "lease-lt.p7s", signer, clock=clock, level="LT", timestamper=tsa,
                           source=ValidatorSource(Validator(trust, clock=clock)))
        plain = sign_file(text, docs / "lease.p7s", signer, clock=clock)
    step("sign with a timestamp (CAdES-LT)", lt.extension is not None and lt.level == "LT",
         f"timestamped {lt.extension.timestamp_time if lt.extension else '?'} by the test TSA; "
         f"embedded: {'; '.join(lt.extension.validation) if lt.extension else 'nothing'}")
    event = lifecycle.move(home, card_name, address="大阪府大阪市北区梅田１－１", municipality="Kita-ku",
                           clock=_Later(clock))
    step("the card moves: its signing certificate is revoked", event.revoked[0][1] == "affiliationChanged",
         f"revoked {event.revoked[0][0]:X} ({event.revoked[0][1]}), new signing certificate "
         f"{event.issued[0][1]:X}")
    online = Validator(trust, clock=clock)
    report = verify_cms(lt.output, data=text, validator=online, clock=clock)
    sig = report.signatures[0] if report.signatures else None
    step("after the move, the timestamped document is still valid",
         report.ok and sig is not None and "after the signature time" in sig.message,
         _verdict(report))
    offline = verify_cms(lt.output, data=text, validator=Validator(trust, clock=clock, offline=True),
                         clock=clock)
    step("…offline too, from its embedded validation data", offline.ok, _verdict(offline))
    refused = verify_cms(plain.output, data=text, validator=online, clock=clock)
    step("after the move, a document without a timestamp is refused",
         not refused.ok and refused.reason == "revoked", f"refused: {refused.reason}")


def _online_identity(home_path: Path, card_name: str, clock: Clock,
                     step: Callable[[str, bool, str], None],
                     before_loss: Callable[[], None] | None = None) -> None:
    """Log in and run an eKYC against an in-process relying-party service; (``before_loss``;)
    then the card is reported lost and the same login is refused."""
    from .auth.client import ekyc, login
    from .auth.service import running_service

    with running_service(home_path, clock=clock, revocation_max_age=0) as service:
        with open_transport(f"emu:{card_name}", home=home_path) as t:
            session = JpkiSession(t)
            answer = login(service.url, session, pin=lambda: DEFAULT_AUTH_PIN, clock=clock)
            account = (answer.document or {}).get("account", {}).get("key", "")
            step("log in with the card (auth key, challenge-response)", answer.ok,
                 f"account {account[:24]}…" if answer.ok else f"refused: {answer.reason}")
            answer = ekyc(service.url, session, pin=lambda: DEFAULT_SIGN_PIN,
                          transaction_text="jpki demo: open an account", clock=clock)
            who = (answer.document or {}).get("identity", {})
            step("identity proofing (eKYC, sign key)", answer.ok,
                 f"verified {mask_text(who.get('name', ''))}, born {who.get('birth_date')}, "
                 f"{who.get('sex')}" if answer.ok else f"refused: {answer.reason}")
        if before_loss is not None:
            before_loss()
        lost(Home(home_path), card_name, clock=clock)
        with open_transport(f"emu:{card_name}", home=home_path) as t:
            answer = login(service.url, JpkiSession(t), pin=lambda: DEFAULT_AUTH_PIN, clock=clock)
        step("lost card: the login is refused", not answer.ok and answer.reason == "revoked",
             f"refused: {answer.reason}")


def _openid_connect(home_path: Path, card_name: str, clock: Clock,
                    step: Callable[[str, bool, str], None]) -> None:
    """A relying party logs in through the OpenID Provider (test-card mode): the code flow with
    PKCE S256 and client_secret_basic over plain HTTP, the ID token checked against the JWKS
    (joserfc), the basic 4 info from userinfo. (The standard clients, Authlib and Node's
    openid-client, are in the tests and examples/oidc_login.)"""
    import base64
    import secrets
    import urllib.parse

    import httpx
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from .idp.app import create_app as idp_app
    from .idp.provider import ProviderConfig, build_provider
    from .idp.testcards import TestCards
    from .serving import serve_in_thread as serve_app

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    provider = build_provider(ProviderConfig(home=home_path, issuer=issuer, test_cards=True,
                                             revocation_max_age=0.0), clock=clock)
    app = idp_app(provider, test_cards=TestCards(provider, home_path))
    shop = "http://127.0.0.1/callback"
    client, secret = provider.clients.add("jpki demo shop", [shop], now=clock.now(), secret=True)
    oidc = f"{issuer}/api/realms/main/protocol/openid-connect"
    verifier, nonce, state = (secrets.token_urlsafe(48), secrets.token_urlsafe(12),
                              secrets.token_urlsafe(12))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": shop,
        "scope": "openid name address birthdate gender", "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    try:
        with serve_app(app, port=port), httpx.Client(timeout=30) as browser:
            pending = browser.get(f"{oidc}/auth?{query}").headers["x-jpki-pending"]
            answer = browser.post(f"{issuer}/api/test-cards/authenticate",
                                  json={"pending": pending, "card": card_name, "outcome": "success"}).json()
            back = urllib.parse.parse_qs(urllib.parse.urlsplit(
                browser.get(answer["redirect"]).headers["location"]).query)
            token = browser.post(f"{oidc}/token", auth=(client.client_id, secret or ""), data={
                "grant_type": "authorization_code", "code": back["code"][0], "redirect_uri": shop,
                "code_verifier": verifier}).json()
            keys = KeySet.import_key_set(browser.get(f"{oidc}/certs").json())
            claims = jwt.decode(token["id_token"], keys).claims
            info = browser.get(f"{oidc}/userinfo",
                               headers={"Authorization": f"Bearer {token['access_token']}"}).json()
        ok = (back["state"] == [state] and claims["iss"] == issuer and claims["aud"] == client.client_id
              and claims["nonce"] == nonce and info["sub"] == claims["sub"] and bool(info.get("name")))
        step("log in through OpenID Connect (code flow + PKCE, test card)", ok,
             f"ID token ES256 verified, pairwise sub {str(claims['sub'])[:10]}…, userinfo name "
             f"{mask_text(str(info.get('name', '')))}, born {info.get('birthdate')}")
    finally:
        app.state.close()


def _verdict(report: VerificationReport) -> str:
    """The verdict line of a verification report (the holder's details stay out of the demo)."""
    lines = report.summary().splitlines()
    return next((line for line in lines if line.startswith(("VALID", "INVALID"))), lines[0])


