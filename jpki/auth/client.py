"""The card holder's side of login and eKYC: answer a relying party's challenge with the card.

The one module of :mod:`jpki.auth` that drives a card (``tests/test_layering.py`` keeps every
other one free of card libraries). It takes a :class:`jpki.session.JpkiSession` (any transport:
``emu:NAME`` in process, ``pcsc`` for a real card or the emulator behind pcscd).

```python
with open_transport("emu:alice", home=home) as t:
    answer = login("http://127.0.0.1:8480", JpkiSession(t), pin=lambda: "1234")
answer.ok, answer.status, answer.document          # the service's JSON answer
```

Before the card signs, the client checks the challenge: its purpose, that it is meant for the
service it talks to (its ``rp_id`` must be the origin of the service URL, or the
``expected_rp_id`` given — so that a page relaying another service's challenge is refused), and
that it has not expired by the local clock (allowing ``clock_skew``). Only then is the PIN
asked (``confirm`` can stop before a try is spent) and verified.

For an OpenID Provider's sign transaction (:mod:`jpki.idp.signtx`) the card holder's side reads
the pending authorization document, shows :class:`SignRequest` (the text and the hash) and
calls :func:`answer_sign_transaction`: the signing key signs the transaction's DigestInfo.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import hashlib
import json
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, Self, cast

import httpx

from jpki.auth.protocol import (
    ClientData,
    EkycResponse,
    LoginResponse,
    MalformedMessageError,
    parse_challenge,
)
from jpki.auth.store import Challenge, Purpose
from jpki.clock import Clock, SystemClock
from jpki.errors import JpkiError, SecurityStatusError, UsageError
from jpki.session import JpkiSession, digest_info
from jpki.sign import CardSigner, sign_file
from jpki.sign.signer import CardKeySession

__all__ = [
    "ChallengeRefusedError",
    "HttpJson",
    "HttpxJson",
    "ServiceAnswer",
    "ServiceClient",
    "ServiceError",
    "ServiceRefusedError",
    "SignRequest",
    "answer_ekyc",
    "answer_login",
    "answer_sign_transaction",
    "check_challenge",
    "ekyc",
    "login",
    "origin_of",
]

#: How far the local clock may be behind the service's before an expired-looking challenge is
#: still answered.
DEFAULT_CLOCK_SKEW: Final = _dt.timedelta(minutes=2)
PinSource = Callable[[], str]
#: Called with (key kind, tries left) right before a PIN try is spent; raise to stop.
Confirm = Callable[[str, int], None]


class ChallengeRefusedError(JpkiError):
    """The client refused to have the card sign a challenge (``reason``: ``wrong-rp``,
    ``wrong-purpose``, ``expired``, or ``malformed`` for a sign transaction it cannot read)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ServiceError(JpkiError):
    """The service could not be reached or did not answer with a JSON document."""


class ServiceRefusedError(ServiceError):
    """The service answered a request with a refusal: ``status`` (HTTP) and its ``reason``
    (``not-found`` for an unknown or expired challenge, ``rate-limited``…)."""

    code = "refused"

    def __init__(self, status: int, reason: str | None, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the default port left out), lower-case."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    port = parts.port
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def check_challenge(challenge: Challenge, *, purpose: Purpose, expected_rp_id: str,
                    now: _dt.datetime, clock_skew: _dt.timedelta = DEFAULT_CLOCK_SKEW) -> None:
    """Refuse (:class:`ChallengeRefusedError`) a challenge of another purpose, another relying
    party, or one expired by more than ``clock_skew``."""
    if challenge.purpose != purpose:
        raise ChallengeRefusedError("wrong-purpose",
                                    f"the service sent an {challenge.purpose} challenge, not a {purpose} one")
    if challenge.rp_id != expected_rp_id:
        raise ChallengeRefusedError(
            "wrong-rp", f"the challenge is meant for {challenge.rp_id!r}, not for {expected_rp_id!r}"
            " (pass --rp-id if the service is known under another name)")
    if now - clock_skew >= challenge.expires_at:
        raise ChallengeRefusedError("expired", "the challenge has expired")


def _spend_pin(session: JpkiSession, kind: str, pin: PinSource, confirm: Confirm | None) -> None:
    if confirm is not None:
        confirm(kind, session.tries_left(kind))
    session.verify(kind, pin())


def answer_login(challenge: Challenge, session: JpkiSession, *, pin: PinSource,
                 confirm: Confirm | None = None) -> LoginResponse:
    """Have the card sign ``challenge`` with the user-authentication key.

    Verifies the 4-digit PIN (``pin()``; ``confirm(kind, tries_left)`` first), signs
    ``DigestInfo(SHA-256, SHA-256(client data))`` and returns the response with the card's
    user-authentication certificate. Check the challenge first (:func:`check_challenge`).
    """
    if challenge.purpose != "login":
        raise ChallengeRefusedError("wrong-purpose", "not a login challenge")
    client_data = ClientData.for_challenge(challenge).encode()
    try:
        certificate: bytes | None = session.read_certificate("auth")
    except SecurityStatusError:  # a smartphone's JPKI gives its certificate after the PIN only
        certificate = None
    _spend_pin(session, "auth", pin, confirm)
    if certificate is None:
        certificate = session.read_certificate("auth")
    signature = session.sign_digest("auth", "sha256", hashlib.sha256(client_data).digest())
    return LoginResponse(challenge_id=challenge.id, client_data=client_data,
                         certificate=certificate, signature=signature)


def answer_ekyc(challenge: Challenge, session: JpkiSession, *, pin: PinSource,
                confirm: Confirm | None = None, clock: Clock | None = None) -> EkycResponse:
    """Have the card sign ``challenge`` (and its transaction text) as a CMS with the signing key.

    Verifies the signature password (``pin()``, asked once; ``confirm(kind, tries_left)``
    first), reads the signing certificate, and signs a detached CAdES-BES SignedData over the
    client data with :func:`jpki.sign.sign_file` (through a private temporary folder: the
    client data holds nothing secret).
    """
    if challenge.purpose != "ekyc":
        raise ChallengeRefusedError("wrong-purpose", "not an eKYC challenge")
    client_data = ClientData.for_challenge(challenge).encode()
    value: list[str] = []

    def password() -> str:
        if not value:
            value.append(pin())
        return value[0]

    if confirm is not None:
        confirm("sign", session.tries_left("sign"))
    signer = CardSigner.from_session(cast(CardKeySession, session), "sign", pin=password)
    with tempfile.TemporaryDirectory(prefix="jpki-ekyc-") as folder:
        data_path = Path(folder) / "client-data.bin"
        data_path.write_bytes(client_data)
        outcome = sign_file(data_path, Path(folder) / "client-data.p7s", signer, clock=clock)
        cms = outcome.output.read_bytes()
    return EkycResponse(challenge_id=challenge.id, client_data=client_data, cms=cms)


# --------------------------------------------------------------------------- HTTP


class HttpJson(Protocol):
    """How the client talks to the service: one JSON request, the status and the JSON answer."""

    def __call__(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        """Send ``body`` (as JSON; None: no body) and return (status, parsed JSON answer)."""
        ...


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class HttpxJson:
    """The default :class:`HttpJson`: httpx, with a timeout, no proxy for loopback addresses
    (the environment's proxy settings apply to others), no redirects, and any status (4xx
    answers carry the refusal as JSON). ``close()`` (or ``with``) frees its connections."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._clients: dict[bool, httpx.Client] = {}

    def _client(self, host: str) -> httpx.Client:
        direct = host in _LOOPBACK
        client = self._clients.get(direct)
        if client is None:
            client = self._clients[direct] = httpx.Client(
                timeout=self.timeout, trust_env=not direct, follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": "jpki-auth-client"})
        return client

    def __call__(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            answer = self._client(urllib.parse.urlsplit(url).hostname or "").request(
                method, url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
        try:
            return answer.status_code, json.loads(answer.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServiceError(f"{url} answered HTTP {answer.status_code} without a JSON "
                               "document") from None

    def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ServiceAnswer:
    """What the service answered to a completed login or eKYC: the HTTP status and its JSON
    document (``ok``, ``reason``, and ``account`` or ``identity``)."""

    status: int
    document: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        """True when the service accepted the answer."""
        return self.status == 200 and self.document.get("ok") is True

    @property
    def reason(self) -> str | None:
        """The service's reason code when it refused."""
        value = self.document.get("reason")
        return None if value is None else str(value)


class ServiceClient:
    """The JSON endpoints of a :mod:`jpki.auth.service` (or any service speaking the protocol)
    at ``base_url``."""

    def __init__(self, base_url: str, *, http: HttpJson | None = None) -> None:
        origin_of(base_url)  # validates
        self.base_url = base_url.rstrip("/")
        self.http: HttpJson = http if http is not None else HttpxJson()

    def _challenge(self, status: int, document: Any, what: str) -> Challenge:
        if status != 200:
            reason = document.get("reason") if isinstance(document, Mapping) else None
            raise ServiceRefusedError(status, None if reason is None else str(reason),
                                      f"the service refused to {what} (HTTP {status}, {reason})")
        try:
            return parse_challenge(document)
        except MalformedMessageError as exc:
            raise ServiceError(f"the service sent no valid challenge: {exc}") from None

    def begin(self, purpose: Purpose, transaction_text: str | None = None) -> Challenge:
        """A new challenge from ``POST /api/{purpose}/begin``."""
        body = {"transaction_text": transaction_text} if transaction_text is not None else {}
        status, document = self.http("POST", f"{self.base_url}/api/{purpose}/begin", body)
        return self._challenge(status, document, f"begin a {purpose}")

    def pending(self, challenge_id: str) -> Challenge:
        """A pending challenge shown on the service's page (``GET /api/challenges/{id}``)."""
        quoted = urllib.parse.quote(challenge_id, safe="")
        status, document = self.http("GET", f"{self.base_url}/api/challenges/{quoted}")
        return self._challenge(status, document, "show the challenge")

    def complete(self, purpose: Purpose, response: LoginResponse | EkycResponse) -> ServiceAnswer:
        """``POST /api/{purpose}/complete`` with the card's response."""
        status, document = self.http("POST", f"{self.base_url}/api/{purpose}/complete", response.to_json())
        if not isinstance(document, Mapping):
            raise ServiceError(f"the service answered HTTP {status} without a JSON object")
        return ServiceAnswer(status, document)


def _run(purpose: Purpose, base_url: str, session: JpkiSession, *, pin: PinSource,
         confirm: Confirm | None, challenge_id: str | None, transaction_text: str | None,
         expected_rp_id: str | None, http: HttpJson | None, clock: Clock | None,
         clock_skew: _dt.timedelta) -> ServiceAnswer:
    with contextlib.ExitStack() as stack:
        if http is None:  # ours: closed when done
            http = stack.enter_context(HttpxJson())
        service = ServiceClient(base_url, http=http)
        challenge = (service.pending(challenge_id) if challenge_id is not None
                     else service.begin(purpose, transaction_text))
        check_challenge(challenge, purpose=purpose,
                        expected_rp_id=expected_rp_id or origin_of(base_url),
                        now=(clock or SystemClock()).now(), clock_skew=clock_skew)
        if purpose == "login":
            return service.complete("login", answer_login(challenge, session, pin=pin, confirm=confirm))
        return service.complete("ekyc", answer_ekyc(challenge, session, pin=pin, confirm=confirm,
                                                    clock=clock))


def login(base_url: str, session: JpkiSession, *, pin: PinSource, confirm: Confirm | None = None,
          challenge_id: str | None = None, expected_rp_id: str | None = None,
          http: HttpJson | None = None, clock: Clock | None = None,
          clock_skew: _dt.timedelta = DEFAULT_CLOCK_SKEW) -> ServiceAnswer:
    """Log in to the service at ``base_url`` with the card: begin (or, with ``challenge_id``,
    answer the pending challenge its page shows), check, sign with the auth key, complete."""
    return _run("login", base_url, session, pin=pin, confirm=confirm, challenge_id=challenge_id,
                transaction_text=None, expected_rp_id=expected_rp_id, http=http, clock=clock,
                clock_skew=clock_skew)


def ekyc(base_url: str, session: JpkiSession, *, pin: PinSource, confirm: Confirm | None = None,
         transaction_text: str | None = None, challenge_id: str | None = None,
         expected_rp_id: str | None = None, http: HttpJson | None = None, clock: Clock | None = None,
         clock_skew: _dt.timedelta = DEFAULT_CLOCK_SKEW) -> ServiceAnswer:
    """Prove the basic 4 info to the service at ``base_url``: begin an eKYC (with an optional
    ``transaction_text``), check, sign the CMS with the signing key, complete."""
    return _run("ekyc", base_url, session, pin=pin, confirm=confirm, challenge_id=challenge_id,
                transaction_text=transaction_text, expected_rp_id=expected_rp_id, http=http,
                clock=clock, clock_skew=clock_skew)


# --------------------------------------------------------------------------- sign transactions

#: Hash names of a sign transaction (jpki.idp.signtx) → the session's digest names.
_SIGN_HASHES: Final = {"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


@dataclass(frozen=True)
class SignRequest:
    """What an OpenID Provider's sign transaction asks the card to sign, read from its pending
    authorization document (``GET ISSUER/api/pending/{id}`` with ``"action": "sign"``) and
    checked: show ``display_text``, ``hash_algorithm`` and ``hash`` to the card holder before
    asking for the signature password."""

    transaction_id: str
    display_text: str
    hash_algorithm: str
    hash: bytes
    digest_info: bytes
    expires_at: _dt.datetime
    client_name: str
    issuer: str
    complete_url: str

    @classmethod
    def from_pending(cls, document: Mapping[str, Any]) -> SignRequest:
        """Read a pending document; :class:`ChallengeRefusedError` ``wrong-purpose`` for
        another action or a decided authorization, ``malformed`` for a document whose
        DigestInfo is not the DER DigestInfo of the hash it shows (the card must sign exactly
        what the person was shown)."""
        if not isinstance(document, Mapping) or document.get("action") != "sign":
            raise ChallengeRefusedError("wrong-purpose", "the authorization is not a sign transaction")
        if document.get("state") != "pending" or not isinstance(document.get("data"), Mapping):
            raise ChallengeRefusedError("wrong-purpose", "the authorization is no longer pending")
        data = document["data"]
        try:
            algorithm = str(data["hash_algorithm"])
            digest = base64.b64decode(str(data["hash"]), validate=True)
            der = base64.b64decode(str(data["digest_info"]), validate=True)
            expires_at = _dt.datetime.fromisoformat(str(data["expires_at"]))
            request = cls(transaction_id=str(data["sign_transaction_id"]), display_text=str(data["display_text"]),
                          hash_algorithm=algorithm, hash=digest, digest_info=der, expires_at=expires_at,
                          client_name=str(document["client"]["name"]), issuer=str(document["issuer"]),
                          complete_url=str(document["complete"]))
            expected = digest_info(_SIGN_HASHES[algorithm], digest)
        except (KeyError, TypeError, ValueError, binascii.Error, UsageError) as exc:
            raise ChallengeRefusedError("malformed", f"the sign transaction cannot be read: {exc}") from None
        if expires_at.tzinfo is None:
            raise ChallengeRefusedError("malformed", "the sign transaction's expires_at has no time zone")
        if expected != der:
            raise ChallengeRefusedError("malformed", "the DigestInfo to sign is not the one of the hash shown")
        return request


def answer_sign_transaction(session: JpkiSession, pending_document: Mapping[str, Any], password: str, *,
                            confirm: Confirm | None = None, clock: Clock | None = None,
                            clock_skew: _dt.timedelta = DEFAULT_CLOCK_SKEW) -> dict[str, str]:
    """Have the card sign a sign transaction of an OpenID Provider (:mod:`jpki.idp.signtx`)
    with its **signing** key; the answer document to POST to the document's ``complete`` URL.

    Reads and checks the request (:meth:`SignRequest.from_pending`; an expired one, by
    ``clock`` with ``clock_skew``, is refused before a password try is spent), then
    ``confirm("sign", tries_left)``, verifies the signature ``password``, reads the signing
    certificate and has the card sign the transaction's DigestInfo (RSA PKCS#1 v1.5). The
    user-authentication key is never used. Returns ``{"sign_transaction_id", "signature",
    "certificate"}`` (base64). Card errors (a wrong or blocked password) propagate: answer
    the provider with ``{"cancel": true, "reason": "wrong-pin" | "pin-blocked"}`` then.
    """
    request = SignRequest.from_pending(pending_document)
    if (clock or SystemClock()).now() - clock_skew >= request.expires_at:
        raise ChallengeRefusedError("expired", "the sign transaction has expired")
    if confirm is not None:
        confirm("sign", session.tries_left("sign"))
    session.verify("sign", password)
    certificate = session.read_certificate("sign")
    signature = session.sign("sign", request.digest_info)
    return {"sign_transaction_id": request.transaction_id,
            "signature": base64.b64encode(signature).decode("ascii"),
            "certificate": base64.b64encode(certificate).decode("ascii")}
