"""The local agent as a service object: no HTTP here (:mod:`jpki.agent.app` serves it).

```python
agent = Agent(AgentConfig(home=home, card="emu:alice"), clock=clock)
request = agent.fetch("http://127.0.0.1:8600", pending_id)   # who asks, what, which PIN
agent.card_status(request.pin)                               # CardStatus(ok, tries_left, problem)
outcome = agent.answer(request, pin)                          # the card signs; the provider decides
outcome.state, outcome.reason, outcome.resume                 # where the browser goes next
```

The agent is the card holder's side of the provider's pending-authorization API
(``docs/oidc.md``): it reads ``GET ISSUER/api/pending/ID`` (only for a provider the card
holder approved: :mod:`jpki.agent.trust`), checks what it is asked to sign — the document is
about this pending authorization of this issuer, a login or eKYC challenge is meant for the
issuer (its ``rp_id``), has that purpose and has not expired (:func:`jpki.auth.client.check_challenge`);
a sign transaction's DigestInfo is the one of the hash shown (:meth:`jpki.auth.client.SignRequest.from_pending`)
—, has the card answer with the PIN the card holder typed (:func:`jpki.auth.client.answer_login`,
:func:`~jpki.auth.client.answer_ekyc`, :func:`~jpki.auth.client.answer_sign_transaction`, or a
plug-in's answer), posts the answer to
``…/complete`` and says where the browser goes next (the provider's ``resume`` URL, which must be
under the issuer: the agent is no open redirect).

The PIN goes to the card and nowhere else: it is not logged, not kept, not sent to the
provider; its format is checked before the card is touched (no try spent on a typo). A wrong
PIN with tries left is the caller's to show (:class:`jpki.errors.PinIncorrectError` with
``tries_left``): the authorization stays pending and the card holder may try again. A blocked
PIN, or one that the last wrong try blocked, is reported to the provider as ``pin-blocked``.

One card operation runs at a time (a second one waits up to ``card_timeout`` seconds, then
:class:`CardBusyError`). Requests to the provider are bounded in time (``provider_timeout``
seconds for the whole answer) and size (:data:`MAX_PROVIDER_ANSWER` bytes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Self

import httpx

from jpki.agent.trust import TrustedProviders, check_issuer, is_loopback_host
from jpki.auth.client import (
    DEFAULT_CLOCK_SKEW,
    ChallengeRefusedError,
    HttpJson,
    SignRequest,
    answer_ekyc,
    answer_login,
    answer_sign_transaction,
    check_challenge,
)
from jpki.auth.protocol import MalformedMessageError, parse_challenge
from jpki.auth.store import Challenge
from jpki.clock import Clock, SystemClock
from jpki.errors import (
    CardError,
    JpkiError,
    NoCardError,
    NoReaderError,
    PinBlockedError,
    PinIncorrectError,
    ProtocolError,
    TransportError,
    UsageError,
)
from jpki.session import JpkiSession, KeyKind, normalise_pin
from jpki.transport import Transport, open_transport

__all__ = [
    "DEFAULT_PORT",
    "MAX_PROVIDER_ANSWER",
    "Agent",
    "AgentConfig",
    "AgentError",
    "BoundedHttpJson",
    "CardAction",
    "CardBusyError",
    "CardStatus",
    "Outcome",
    "PendingRequest",
    "PinFormatError",
    "ProviderError",
    "RequestDecidedError",
    "RequestGoneError",
    "UntrustedProviderError",
]

log = logging.getLogger("jpki.agent")

#: Where ``jpki agent`` listens (beside the German eID client's 24727); the provider's default
#: ``--agent-url`` names it.
DEFAULT_PORT: Final = 24780
#: Largest answer read from a provider, in bytes (a pending document is about 1 KiB).
MAX_PROVIDER_ANSWER: Final = 256 * 1024
#: Seconds a request to the provider may take in all.
DEFAULT_PROVIDER_TIMEOUT: Final = 10.0
#: Seconds a card operation waits for the one before it.
DEFAULT_CARD_TIMEOUT: Final = 30.0

_PENDING_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")

Answerer = Callable[[JpkiSession, "PendingRequest", str, Clock], Mapping[str, Any]]


# --------------------------------------------------------------------------- errors


class AgentError(JpkiError):
    """Base of the agent's own errors."""

    code = "agent"


class UntrustedProviderError(AgentError):
    """The card holder has not approved this provider (``issuer``): the agent did not contact it."""

    code = "untrusted_provider"

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        super().__init__(f"the provider {issuer} is not approved (jpki agent --trust {issuer})")


class ProviderError(AgentError):
    """The provider could not be reached, or answered what the agent cannot use: ``status``
    (HTTP, None when unreachable) and ``reason`` (``unreachable``, ``malformed``, the
    provider's refusal reason…)."""

    code = "provider"

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


class RequestGoneError(AgentError):
    """The pending authorization is unknown to the provider: finished, expired or never made."""

    code = "request_gone"


class RequestDecidedError(AgentError):
    """The pending authorization is decided already (``state``: approved or refused, with the
    provider's ``reason``); the browser may go on to ``resume``."""

    code = "request_decided"

    def __init__(self, state: str, resume: str, reason: str | None = None) -> None:
        self.state = state
        self.resume = resume
        self.reason = reason
        super().__init__(f"the authorization is {state} already" + (f" ({reason})" if reason else ""))


class CardBusyError(AgentError):
    """Another card operation of the agent is still running."""

    code = "card_busy"


class PinFormatError(AgentError, UsageError):
    """What was typed cannot be the PIN (``rule`` says its form): the card was not asked."""

    code = "pin_format"

    def __init__(self, kind: str, rule: str) -> None:
        self.kind = kind
        self.rule = rule
        super().__init__(rule)


# --------------------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """How ``jpki agent`` runs: the ``home`` (approved providers; ``emu:`` cards), the card URI
    (``emu:NAME``, ``pcsc``, ``pcsc:READER``) and the limits."""

    home: Path
    card: str = "pcsc"
    provider_timeout: float = DEFAULT_PROVIDER_TIMEOUT
    card_timeout: float = DEFAULT_CARD_TIMEOUT

    def __post_init__(self) -> None:
        if not (self.card.startswith("emu:") or self.card == "pcsc" or self.card.startswith("pcsc:")):
            raise UsageError(f"unknown card URI {self.card!r}: use emu:NAME, pcsc or pcsc:READER")
        if not self.provider_timeout > 0 or not self.card_timeout > 0:
            raise UsageError("the agent's timeouts must be positive")

    def to_json(self) -> dict[str, Any]:
        return {"home": str(self.home), "card": self.card, "provider_timeout": self.provider_timeout,
                "card_timeout": self.card_timeout}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentConfig:
        try:
            return cls(home=Path(str(data["home"])), card=str(data.get("card", "pcsc")),
                       provider_timeout=float(data.get("provider_timeout", DEFAULT_PROVIDER_TIMEOUT)),
                       card_timeout=float(data.get("card_timeout", DEFAULT_CARD_TIMEOUT)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"not an agent configuration: {exc}") from None


@dataclasses.dataclass(frozen=True)
class PendingRequest:
    """A pending authorization as the agent shows it and answers it (from the provider's
    ``GET /api/pending/{id}``, checked)."""

    issuer: str
    id: str
    action: str
    #: the PIN the card needs: ``auth`` (4 digits) or ``sign`` (the signature password)
    pin: KeyKind
    client_name: str
    claims: tuple[str, ...]
    data: Mapping[str, Any]
    complete_url: str
    resume_url: str
    expires_at: _dt.datetime | None
    test_cards: bool
    #: the provider's pending document as read (a sign transaction's answer reads it again)
    document: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    challenge: Challenge | None = None
    #: a sign transaction's text and hash, checked (:meth:`jpki.auth.client.SignRequest.from_pending`)
    sign: SignRequest | None = None


@dataclasses.dataclass(frozen=True)
class CardStatus:
    """The card as the agent finds it before asking for a PIN: ``ok`` with the PIN's
    ``tries_left``, or a ``problem`` (``no-reader``, ``no-card``, ``card-error``) and its message."""

    ok: bool
    tries_left: int | None = None
    problem: str | None = None
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The provider's decision: ``approved``, or ``refused`` with its ``reason`` (``revoked``,
    ``pin-blocked``, ``cancelled``…) and message; ``resume`` is where the browser goes."""

    state: Literal["approved", "refused"]
    resume: str
    reason: str | None = None
    message: str | None = None


@dataclasses.dataclass(frozen=True)
class CardAction:
    """How the card answers one kind of pending authorization: which PIN, and the answer
    (session, request, PIN, clock) → the JSON document posted to ``…/complete``."""

    pin: KeyKind
    answer: Answerer
    #: reads and checks what the action needs from the pending document (``data``, the request,
    #: now); raises ValueError, or :class:`jpki.auth.client.ChallengeRefusedError`
    parse: Callable[[Mapping[str, Any], PendingRequest, _dt.datetime], PendingRequest] | None = None


# --------------------------------------------------------------------------- HTTP to the provider


class BoundedHttpJson:
    """The agent's :class:`jpki.auth.client.HttpJson`: httpx with no redirects, no proxy for a
    loopback provider, and a bound on each exchange: ``timeout`` seconds in all (a provider that
    trickles its answer is cut off) and ``max_bytes`` of answer."""

    def __init__(self, timeout: float = DEFAULT_PROVIDER_TIMEOUT, max_bytes: int = MAX_PROVIDER_ANSWER) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clients: dict[bool, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, host: str) -> httpx.Client:
        direct = is_loopback_host(host)
        with self._lock:
            client = self._clients.get(direct)
            if client is None:
                client = self._clients[direct] = httpx.Client(
                    timeout=self.timeout, trust_env=not direct, follow_redirects=False,
                    headers={"Accept": "application/json", "User-Agent": "jpki-agent"})
        return client

    def __call__(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        deadline = time.monotonic() + self.timeout
        try:
            client = self._client(urllib.parse.urlsplit(url).hostname or "")
            with client.stream(method, url, content=data, headers=headers) as answer:
                chunks: list[bytes] = []
                size = 0
                for chunk in answer.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ProviderError("too-large", f"{url} answered more than {self.max_bytes} bytes",
                                            answer.status_code)
                    if time.monotonic() > deadline:
                        raise ProviderError("timeout", f"{url} did not answer within {self.timeout:g} s",
                                            answer.status_code)
                    chunks.append(chunk)
                status = answer.status_code
        except httpx.HTTPError as exc:
            raise ProviderError("unreachable", f"cannot reach {url}: {exc or type(exc).__name__}") from None
        try:
            return status, json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ProviderError("malformed", f"{url} answered HTTP {status} without a JSON document", status) from None

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


# --------------------------------------------------------------------------- the card actions


def _answer_login(session: JpkiSession, request: PendingRequest, pin: str, clock: Clock) -> Mapping[str, Any]:
    assert request.challenge is not None
    return answer_login(request.challenge, session, pin=lambda: pin).to_json()


def _answer_ekyc(session: JpkiSession, request: PendingRequest, pin: str, clock: Clock) -> Mapping[str, Any]:
    assert request.challenge is not None
    return answer_ekyc(request.challenge, session, pin=lambda: pin, clock=clock).to_json()


def _answer_sign(session: JpkiSession, request: PendingRequest, pin: str, clock: Clock) -> Mapping[str, Any]:
    """A sign transaction: :func:`jpki.auth.client.answer_sign_transaction` reads the pending
    document again (the DigestInfo checked against the hash shown, not expired), has the signing
    key sign the DigestInfo and gives ``{"sign_transaction_id", "signature", "certificate"}``."""
    return answer_sign_transaction(session, request.document, pin, clock=clock)


def _with_sign(data: Mapping[str, Any], request: PendingRequest, now: _dt.datetime) -> PendingRequest:
    """The checked :class:`jpki.auth.client.SignRequest` of the document (what the page shows is
    what the card signs); an expired transaction is refused before a password is asked."""
    sign = SignRequest.from_pending(request.document)
    if now - DEFAULT_CLOCK_SKEW >= sign.expires_at:
        raise ChallengeRefusedError("expired", "the sign transaction has expired")
    expires = sign.expires_at if request.expires_at is None else min(request.expires_at, sign.expires_at)
    return dataclasses.replace(request, sign=sign, expires_at=expires)


#: The card actions the agent knows: login (auth key, PIN), eKYC (signing key, password), and
#: sign transactions (signing key, password).
ACTIONS: Final[Mapping[str, CardAction]] = {
    "login": CardAction("auth", _answer_login),
    "ekyc": CardAction("sign", _answer_ekyc),
    "sign": CardAction("sign", _answer_sign, _with_sign),
}


# --------------------------------------------------------------------------- the agent


def _text(value: object, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{what} is not a text of 1-{limit} characters")
    return value


def _under(url: object, issuer: str, what: str) -> str:
    """``url`` if it is a URL of the provider (under the issuer), else ValueError."""
    if not isinstance(url, str) or len(url) > 2048 or not url.startswith(issuer + "/") \
            or any(ord(c) < 0x21 for c in url):
        raise ValueError(f"{what} is not a URL of the provider {issuer}")
    return url


class Agent:
    """The card holder's side of a provider's pending authorizations (see the module docstring)."""

    def __init__(self, config: AgentConfig, *, clock: Clock | None = None, http: HttpJson | None = None,
                 trusted: TrustedProviders | None = None,
                 open_card: Callable[[], Transport] | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._own_http = http is None
        self.http: HttpJson = http if http is not None else BoundedHttpJson(config.provider_timeout)
        self.trusted = trusted if trusted is not None else TrustedProviders(config.home)
        self._open_card = open_card or (lambda: open_transport(config.card, home=config.home))
        self._card_lock = threading.Lock()
        self.actions: dict[str, CardAction] = dict(ACTIONS)

    def close(self) -> None:
        if self._own_http and isinstance(self.http, BoundedHttpJson):
            self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ providers

    def is_trusted(self, issuer: str) -> bool:
        return self.trusted.is_trusted(issuer)

    def trust(self, issuer: str) -> None:
        """Approve ``issuer`` (the card holder said so on the agent's page)."""
        added = self.trusted.add(issuer, now=self.clock.now())
        log.info("provider approved: %s", added.issuer)

    # ------------------------------------------------------------------ the request

    def fetch(self, issuer: str, pending_id: str) -> PendingRequest:
        """The pending authorization ``pending_id`` of the provider ``issuer``, checked.

        :class:`UsageError` (a malformed issuer or id), :class:`UntrustedProviderError` (not
        contacted), :class:`ProviderError`, :class:`RequestGoneError`,
        :class:`RequestDecidedError`, :class:`jpki.auth.client.ChallengeRefusedError` (a
        challenge for another relying party or purpose, or expired)."""
        issuer = check_issuer(issuer)
        if not isinstance(pending_id, str) or not _PENDING_ID.fullmatch(pending_id):
            raise UsageError("the link names no pending authorization")
        if not self.is_trusted(issuer):
            raise UntrustedProviderError(issuer)
        url = f"{issuer}/api/pending/{urllib.parse.quote(pending_id, safe='')}"
        status, document = self.http("GET", url)
        if status == 404:
            raise RequestGoneError("the provider no longer knows this authorization (finished or expired)")
        if status != 200 or not isinstance(document, Mapping):
            reason = document.get("reason") if isinstance(document, Mapping) else None
            raise ProviderError(str(reason or "malformed"), f"the provider answered HTTP {status}", status)
        try:
            return self._read(issuer, pending_id, document)
        except (ValueError, TypeError, KeyError, MalformedMessageError) as exc:
            raise ProviderError("malformed", f"the provider's pending document does not make sense: {exc}",
                                status) from None

    def _read(self, issuer: str, pending_id: str, doc: Mapping[str, Any]) -> PendingRequest:
        if doc.get("issuer") != issuer or doc.get("id") != pending_id:
            raise ValueError("it is about another provider or authorization")
        resume = _under(doc.get("resume"), issuer, "resume")
        state = doc.get("state")
        if state != "pending":
            reason = doc.get("reason")
            raise RequestDecidedError(str(state), resume, str(reason) if isinstance(reason, str) else None)
        name = doc.get("action")
        action = self.actions.get(name) if isinstance(name, str) else None
        if action is None:
            raise ValueError(f"the agent cannot do a {name!r} action")
        if doc.get("pin") not in (None, action.pin):
            raise ValueError(f"a {name} needs the {action.pin} PIN, not {doc.get('pin')!r}")
        client = doc.get("client")
        claims = doc.get("claims", [])
        if not isinstance(client, Mapping) or not isinstance(claims, list) or len(claims) > 16:
            raise ValueError("client or claims missing")
        data = doc.get("data")
        if not isinstance(data, Mapping):
            raise ValueError("no data")
        expires: _dt.datetime | None = None
        if isinstance(doc.get("expires_at"), str):
            expires = _dt.datetime.fromisoformat(doc["expires_at"])
        request = PendingRequest(
            issuer=issuer, id=pending_id, action=str(name), pin=action.pin,
            client_name=_text(client.get("name"), "the client's name"),
            claims=tuple(_text(c, "a claim", 64) for c in claims), data=data,
            complete_url=_under(doc.get("complete"), issuer, "complete"), resume_url=resume,
            expires_at=expires, test_cards=doc.get("test_cards") is True, document=doc)
        if name in ("login", "ekyc"):
            challenge = parse_challenge(doc.get("challenge", data))
            check_challenge(challenge, purpose="login" if name == "login" else "ekyc", expected_rp_id=issuer,
                            now=self.clock.now())
            request = dataclasses.replace(request, challenge=challenge, expires_at=challenge.expires_at)
        if action.parse is not None:
            request = action.parse(data, request, self.clock.now())
        return request

    # ------------------------------------------------------------------ the card

    @contextlib.contextmanager
    def _session(self) -> Iterator[JpkiSession]:
        if not self._card_lock.acquire(timeout=self.config.card_timeout):
            raise CardBusyError("the card is busy with another request: try again in a moment")
        try:
            with self._open_card() as transport:
                yield JpkiSession(transport)
        finally:
            self._card_lock.release()

    def card_status(self, pin: KeyKind) -> CardStatus:
        """Whether the card is there and how many tries its ``pin`` has left (none spent)."""
        try:
            with self._session() as session:
                return CardStatus(True, tries_left=session.tries_left(pin))
        except NoReaderError as exc:
            return CardStatus(False, problem="no-reader", message=str(exc))
        except (NoCardError, TransportError) as exc:
            return CardStatus(False, problem="no-card", message=str(exc))
        except (CardError, ProtocolError) as exc:
            return CardStatus(False, problem="card-error", message=str(exc))

    @staticmethod
    def check_pin(kind: KeyKind, pin: str) -> None:
        """:class:`PinFormatError` unless ``pin`` has the form of the ``kind`` PIN (checked before
        the card is touched: a typo costs no try)."""
        try:
            normalise_pin(kind, pin)
        except UsageError as exc:
            raise PinFormatError(kind, str(exc)) from None

    def answer(self, request: PendingRequest, pin: str) -> Outcome:
        """Have the card answer ``request`` with ``pin`` and hand the answer to the provider.

        Raises, with nothing sent to the provider: :class:`PinFormatError` (no try spent),
        :class:`PinIncorrectError` (wrong, ``tries_left`` > 0), a
        :class:`TransportError` (no reader, no card, card removed), :class:`CardError` or
        :class:`ProtocolError` (the card could not do it), :class:`CardBusyError`. A blocked PIN
        is reported to the provider (``pin-blocked``) and returned as its refusal."""
        action = self.actions[request.action]
        self.check_pin(action.pin, pin)
        blocked = False
        with self._session() as session:
            try:
                document = action.answer(session, request, pin, self.clock)
            except PinBlockedError:
                blocked = True
            except PinIncorrectError as exc:
                if exc.tries_left > 0:
                    log.info("wrong PIN: pending=%s tries_left=%d", request.id[:8], exc.tries_left)
                    raise
                blocked = True
        if blocked:
            log.info("PIN blocked: pending=%s", request.id[:8])
            return self.cancel(request, "pin-blocked")
        return self._complete(request, document)

    def cancel(self, request: PendingRequest, reason: str = "cancelled") -> Outcome:
        """Tell the provider the card holder stopped (``cancelled``, ``pin-blocked``,
        ``card-unavailable``)."""
        return self._complete(request, {"cancel": True, "reason": reason})

    def _complete(self, request: PendingRequest, body: Mapping[str, Any]) -> Outcome:
        status, doc = self.http("POST", request.complete_url, body)
        if not isinstance(doc, Mapping):
            raise ProviderError("malformed", f"the provider answered HTTP {status} without a JSON object", status)
        reason = doc.get("reason")
        reason = str(reason) if reason is not None else None
        if status == 404:
            raise RequestGoneError("the provider no longer knows this authorization (finished or expired)")
        if status == 409:
            raise RequestDecidedError("decided", request.resume_url, reason)
        if status not in (200, 403):
            raise ProviderError(reason or "error", f"the provider answered HTTP {status} ({reason})", status)
        try:
            resume = _under(doc.get("resume", request.resume_url), request.issuer, "resume")
        except ValueError:
            resume = request.resume_url
        message = doc.get("message")
        outcome = Outcome("approved" if status == 200 and doc.get("ok") is True else "refused", resume,
                          reason, str(message)[:300] if isinstance(message, str) else None)
        log.info("authorization %s: pending=%s issuer=%s%s", outcome.state, request.id[:8], request.issuer,
                 f" reason={reason}" if reason else "")
        return outcome
