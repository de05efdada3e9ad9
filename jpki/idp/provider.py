"""The OpenID Provider as a service object: no HTTP here (see :mod:`jpki.idp.app` for that).

```python
provider = build_provider(ProviderConfig(home=home, issuer="http://127.0.0.1:8600"), clock=clock)
pending, cookie = provider.authorize(query_pairs, browser_cookie)     # the auth endpoint
provider.complete(pending.id, login_response_dict)                    # the card's answer (agent)
outcome = provider.resume(pending.id, cookie)                         # the browser is back
provider.token(form_pairs, authorization_header)                      # the token endpoint
provider.revoke(form_pairs, authorization_header)                     # the revocation endpoint
provider.userinfo(authorization_header)                               # the userinfo endpoint
```

It is a relying party of the card (a :class:`jpki.auth.RelyingParty` whose ``rp_id`` is the
issuer): every card answer goes through jpki.auth's checks (signature, certificate path,
validity, revocation, renewal links, reason codes). Around them it adds OAuth 2.0 and OpenID
Connect as the Digital Authentication App (デジタル認証アプリ) does them:

- authorization code flow only; ``state``, ``nonce`` and PKCE ``code_challenge`` (S256;
  ``plain`` refused) required; the redirect URI compared exactly with a registered one;
- scopes ``openid`` (required) and ``name``, ``address``, ``birthdate``, ``gender``: with any of
  the four the card must sign an eKYC challenge with its *signing* key (the signature password)
  and the verified basic 4 info is the source of the claims; ``openid`` alone is a login with
  the user-authentication key (the PIN) and gives no personal data;
- codes used once (atomic take), 60 s, bound to the client, the redirect URI and the PKCE
  challenge; a code used twice revokes the access token it gave;
- client authentication ``private_key_jwt`` (ES256 or RS256; ``aud`` the issuer or the token
  endpoint; ``exp`` at most :attr:`ProviderConfig.max_assertion_age` ahead; ``jti`` used once,
  remembered in the shared store until the assertion expires, so a replay is refused by every
  worker and after a restart with a SQLite or Redis store) or ``client_secret_basic``;
- ID tokens signed ES256 with a pairwise ``sub`` (:meth:`Provider.pairwise_sub`), ``acr``,
  ``amr`` (RFC 8176: ``hwk``, ``pin``, ``sc``), ``auth_time`` and ``nonce``; opaque access
  tokens (stored as their SHA-256) that give userinfo only the claims that were granted;
- a refresh token with every code exchange (as Keycloak gives them): rotated at each use, a
  token used again ending its whole grant (RFC 9700 §4.14.2), bound to the client, an idle
  and an absolute lifetime, the grant's claims kept encrypted under the token; RFC 7009
  revocation (:meth:`Provider.revoke`);
- per-client limits (:mod:`jpki.idp.limits`): :attr:`Provider.throttle` holds this worker's
  token buckets (the app takes one per client address and endpoint, :meth:`Provider.token` one
  per authenticated client), and :meth:`Provider.authorize` counts the unfinished
  authorizations of an address in the shared store.

Card actions are plug-ins (:class:`CardAction`): ``login`` and ``ekyc`` are built in; the
``sign`` scope (sign transactions) is offered once an action named ``sign`` is registered with
:meth:`Provider.register_action` (:func:`build_provider` registers
:class:`jpki.idp.signtx.SignTransactions`). Errors are typed: :class:`OAuthError` (RFC 6749 codes; the app
turns them into JSON or redirects), :class:`PendingNotFoundError`, :class:`MalformedAnswerError`,
:class:`jpki.idp.pending.StateError`.

Logging (logger ``jpki.idp``): one line per outcome with the client id, the first characters of
the pending id and a reason code — never a name, address, birth date, sex, code or token.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import dataclasses
import datetime as _dt
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from jpki.auth.links import AccountResolver, FollowPredecessors, NoLinks, TestCALinks
from jpki.auth.protocol import (
    EkycResponse,
    LoginResponse,
    MalformedMessageError,
    parse_json_object,
)
from jpki.auth.result import (
    Account,
    AuthReason,
    AuthResult,
    EkycResult,
    LoginResult,
    VerifiedIdentity,
)
from jpki.auth.rp import DEFAULT_CHALLENGE_TTL, DEFAULT_REVOCATION_MAX_AGE, RelyingParty
from jpki.auth.store import (
    ChallengeStore,
    ChallengeStoreError,
    MemoryStore,
    RedisStore,
    SqliteStore,
)
from jpki.clock import Clock, SystemClock
from jpki.errors import JpkiError, UsageError
from jpki.idp.accounts import CardLinkage, signing_account
from jpki.idp.clients import Client, ClientRegistry, check_jwks
from jpki.idp.keys import ProviderKey, load_salt
from jpki.idp.kv import KV, MemoryKV, RedisKV, open_kv, split_redis_prefix
from jpki.idp.limits import ProviderLimits, Throttle
from jpki.idp.pending import PendingAuthorization, PendingState, StateError
from jpki.settings import settings_from_json, settings_to_json
from jpki.verify import Fetch, HttpFetcher, RevocationMode, TrustStore, Validator
from jpki.verify.fetch import DEFAULT_DEADLINE

__all__ = [
    "ACR",
    "AMR",
    "CLAIM_SCOPES",
    "DEFAULT_AGENT_URL",
    "CardAction",
    "Completion",
    "MalformedAnswerError",
    "OAuthError",
    "PendingNotFoundError",
    "Provider",
    "ProviderConfig",
    "Resume",
    "build_provider",
]

log = logging.getLogger("jpki.idp")

#: The basic 4 info scopes, in the order claims are listed; each gives the claim of its name.
CLAIM_SCOPES: Final = ("name", "address", "birthdate", "gender")
#: Authentication context of every card authentication: a hardware key and a PIN (AAL3).
ACR: Final = "aal3"
#: RFC 8176 methods: a hardware-protected key (hwk) unlocked by a PIN (pin) on a smart card (sc).
AMR: Final = ("hwk", "pin", "sc")
#: Where ``jpki agent`` listens (the German eID client uses 127.0.0.1:24727; this is 24780).
DEFAULT_AGENT_URL: Final = "http://127.0.0.1:24780"
#: The realm path of the endpoints (Keycloak's, like the Digital Authentication App's).
REALM_PATH: Final = "/api/realms/main"
JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How long a grant may be refreshed after the card authentication (30 days), and how long a
#: refresh token lives unused (7 days): then the card is needed again.
DEFAULT_REFRESH_TOKEN_TTL: Final = 30 * 86400.0
DEFAULT_REFRESH_TOKEN_IDLE: Final = 7 * 86400.0
ASSERTION_ALGS: Final = ("ES256", "RS256")
#: One signature registry per assertion algorithm (made once: building one per request costs).
_ASSERTION_REGISTRIES: Final = {alg: jws.JWSRegistry(algorithms=[alg]) for alg in ASSERTION_ALGS}
#: Reasons a card holder's side may give when it stops (POST …/complete ``{"cancel": true}``).
CANCEL_REASONS: Final = frozenset({"cancelled", "wrong-pin", "pin-blocked", "card-unavailable"})

_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{32}")
_COOKIE_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CHALLENGE_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER_RE: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_MAX_PARAM: Final = 4096
# Error descriptions travel in URLs and JSON: RFC 6749 allows %x20-21 / %x23-5B / %x5D-7E only.
_DESCRIPTION_BAD: Final = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


# --------------------------------------------------------------------------- errors


class OAuthError(JpkiError):
    """An OAuth 2.0 refusal: ``error`` (RFC 6749 / OIDC code), ``description``, the HTTP
    ``status``; for the auth endpoint, ``redirect`` says whether it may go back to the client
    (the client and the redirect URI were valid) and ``headers`` carry WWW-Authenticate."""

    code = "oauth_error"

    def __init__(self, error: str, description: str, *, status: int = 400, redirect: bool = False,
                 headers: Mapping[str, str] | None = None) -> None:
        self.error = error
        self.description = _DESCRIPTION_BAD.sub("?", description)[:400]
        self.status = status
        self.redirect = redirect
        self.headers = dict(headers or {})
        self.redirect_uri: str | None = None
        self.state: str | None = None
        self.ui_locales: tuple[str, ...] = ()
        super().__init__(f"{error}: {self.description}")

    def to_json(self) -> dict[str, str]:
        """The JSON body of the token and userinfo endpoints (RFC 6749 §5.2)."""
        return {"error": self.error, "error_description": self.description}


class PendingNotFoundError(JpkiError):
    """No such pending authorization: never issued, already finished, or expired."""

    code = "pending_not_found"


class MalformedAnswerError(JpkiError):
    """The card's answer cannot be read (the authorization stays pending: send a good one)."""

    code = "malformed_answer"



@dataclasses.dataclass(frozen=True)
class _Jti:
    """A client assertion's ``jti`` as the store keeps it, until the assertion's expiry."""

    key: str
    until: _dt.datetime

class ProviderUnavailableError(JpkiError):
    """A store or the relying party's checks failed: try again (HTTP 503); nothing was decided."""

    code = "provider_unavailable"


class WouldBlockError(JpkiError):
    """The call needs the network (a client's ``jwks_uri``) inside :func:`network_forbidden` (the
    app runs it on the event loop). Raised before anything changed: run the call again where it
    may wait (a thread)."""

    code = "would_block"


_NETWORK: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar("jpki_idp_network", default=True)


@contextlib.contextmanager
def network_forbidden() -> Iterator[None]:
    """Within the block, a provider call that would fetch from the network raises
    :class:`WouldBlockError` instead (before changing anything)."""
    token = _NETWORK.set(False)
    try:
        yield
    finally:
        _NETWORK.reset(token)


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """Settings of :func:`build_provider` (and of ``jpki idp serve``).

    ``home`` holds the test CA trusted beside the J-LIS roots (with its renewal and card
    linkage), the clients and the provider's key. ``issuer`` is the provider's identifier
    (``iss``) and base URL: the endpoints are under ``ISSUER/api/realms/main/…``. ``store`` is
    ``memory``, ``sqlite:PATH`` or ``redis://…``. Lifetimes are seconds.
    ``max_assertion_age``: how far ahead a client assertion's ``exp`` may be.
    ``clock_skew``: the leeway granted to the clocks of clients. ``agent_url``: the local
    agent the auth page hands the card work to. ``test_cards``: the test-card mode
    (:mod:`jpki.idp.testcards`), never the default. ``refresh_token_ttl``: how long a grant
    may be refreshed after the card authentication, at most (0: no refresh tokens);
    ``refresh_token_idle``: how long a refresh token lives unused. ``rate_limit`` …
    ``max_pending``: the per-client limits (:class:`jpki.idp.limits.ProviderLimits`).
    """

    home: Path
    issuer: str
    store: str = "memory"
    revocation: RevocationMode = "ocsp"
    revocation_max_age: float = DEFAULT_REVOCATION_MAX_AGE.total_seconds()
    fetch_deadline: float = DEFAULT_DEADLINE
    test_cards: bool = False
    agent_url: str = DEFAULT_AGENT_URL
    authorization_ttl: float = 600.0
    challenge_ttl: float = DEFAULT_CHALLENGE_TTL.total_seconds()
    code_ttl: float = 60.0
    access_token_ttl: float = 300.0
    id_token_ttl: float = 300.0
    max_assertion_age: float = 300.0
    clock_skew: float = 30.0
    refresh_token_ttl: float = DEFAULT_REFRESH_TOKEN_TTL
    refresh_token_idle: float = DEFAULT_REFRESH_TOKEN_IDLE
    rate_limit: float = ProviderLimits.rate
    rate_burst: int = ProviderLimits.burst
    token_rate_limit: float = ProviderLimits.token_rate
    token_rate_burst: int = ProviderLimits.token_burst
    max_pending: int = ProviderLimits.max_pending

    def __post_init__(self) -> None:
        object.__setattr__(self, "issuer", check_issuer(self.issuer))
        if self.revocation not in ("ocsp", "crl", "none"):
            raise UsageError(f"revocation must be ocsp, crl or none, not {self.revocation!r}")
        for name in ("authorization_ttl", "challenge_ttl", "code_ttl", "access_token_ttl", "id_token_ttl",
                     "max_assertion_age", "fetch_deadline", "refresh_token_idle"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive")
        if self.clock_skew < 0 or self.revocation_max_age < 0 or self.refresh_token_ttl < 0:
            raise UsageError("clock_skew, revocation_max_age and refresh_token_ttl must not be negative")
        if self.challenge_ttl > self.authorization_ttl:
            raise UsageError("challenge_ttl must not exceed authorization_ttl")
        _ = self.limits   # checked now, not at the first request

    @property
    def limits(self) -> ProviderLimits:
        """The per-client limits these settings name."""
        return ProviderLimits(rate=self.rate_limit, burst=self.rate_burst, token_rate=self.token_rate_limit,
                              token_burst=self.token_rate_burst, max_pending=self.max_pending)

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (how :func:`jpki.idp.app.serve` hands it to
        worker processes)."""
        return settings_to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> ProviderConfig:
        """Read :meth:`to_json`'s output (the dict, or its JSON text); :class:`UsageError`
        for anything else."""
        return settings_from_json(cls, data, what="provider", required=("home", "issuer"))


def check_issuer(issuer: object) -> str:
    """The issuer URL without a trailing slash: http(s), a host, no query, no fragment."""
    if not isinstance(issuer, str):
        raise UsageError("the issuer must be a URL")
    try:
        parts = urllib.parse.urlsplit(issuer.strip())
    except ValueError as exc:
        raise UsageError(f"the issuer {issuer!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or "@" in parts.netloc:
        raise UsageError(f"the issuer {issuer!r} must be an http(s) URL with a host and no query, "
                         "fragment or user (e.g. https://idp.example.jp)")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/")))


# --------------------------------------------------------------------------- card actions


@dataclasses.dataclass(frozen=True)
class Completion:
    """What a card action concluded from an answer: ``ok`` with the ``account`` (the pairwise
    ``sub`` is derived from its key) and, for eKYC, the ``identity``; or a ``reason`` code and a
    ``message`` (no personal data). ``extra`` is kept in the approved record for the action."""

    ok: bool
    reason: str | None = None
    message: str = ""
    account: Account | None = None
    identity: VerifiedIdentity | None = None
    checked_at: _dt.datetime | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


class CardAction(Protocol):
    """What the card is asked to do for an authorization: a plug-in of the provider.

    ``name`` is stored in the pending authorization; ``pin`` is the PIN the card holder's side
    asks for (``auth``: the 4-digit PIN, ``sign``: the signature password); ``params`` the extra
    authorization-request parameters the action reads (e.g. ``sign_transaction_id``).
    :meth:`begin` returns the action's public data for the agent (and may raise
    :class:`OAuthError` with ``redirect=True``); :meth:`complete` checks an answer
    (:class:`MalformedAnswerError` keeps the authorization pending). An action may also have a
    ``decided(provider, pending)`` method: it is called once the authorization has moved to
    approved or refused, whoever decided it (the card's answer, a cancellation, a test card).
    """

    name: str
    pin: str
    params: frozenset[str]

    def begin(self, provider: Provider, client: Client, scopes: tuple[str, ...],
              params: Mapping[str, str]) -> dict[str, Any]: ...

    def complete(self, provider: Provider, pending: PendingAuthorization, answer: Mapping[str, Any],
                 relying_party: RelyingParty) -> Completion: ...


def _completion(result: AuthResult, account: Account | None, identity: VerifiedIdentity | None) -> Completion:
    if not result.ok:
        return Completion(False, str(result.reason), result.message, checked_at=result.checked_at)
    return Completion(True, account=account, identity=identity, checked_at=result.checked_at)


def _challenge_id(data: Mapping[str, Any], answer_id: str) -> None:
    """The answer must name this authorization's challenge: an answer to another challenge of
    this provider (also signed for the issuer) must not complete it."""
    if not hmac.compare_digest(str(data.get("id", "")).encode(), answer_id.encode()):
        raise MalformedAnswerError("the answer is for another challenge than this authorization's")


class LoginAction:
    """``openid`` alone: the user-authentication key signs a login challenge (PIN)."""

    name = "login"
    pin = "auth"
    params: frozenset[str] = frozenset()

    def begin(self, provider: Provider, client: Client, scopes: tuple[str, ...],
              params: Mapping[str, str]) -> dict[str, Any]:
        return provider.rp.begin_login().to_json()

    def complete(self, provider: Provider, pending: PendingAuthorization, answer: Mapping[str, Any],
                 relying_party: RelyingParty) -> Completion:
        try:
            response = LoginResponse.from_json(answer)
        except MalformedMessageError as exc:
            raise MalformedAnswerError(f"not a login response: {exc}") from None
        _challenge_id(pending.data, response.challenge_id)
        result: LoginResult = relying_party.complete_login(response)
        return _completion(result, result.account, None)


class EkycAction:
    """Any of the basic 4 info: the signing key signs an eKYC challenge (signature password);
    the verified identity gives the claims and the card linkage the account."""

    name = "ekyc"
    pin = "sign"
    params: frozenset[str] = frozenset()

    def begin(self, provider: Provider, client: Client, scopes: tuple[str, ...],
              params: Mapping[str, str]) -> dict[str, Any]:
        claims = [s for s in CLAIM_SCOPES if s in scopes]
        text = f"{client.name}: {' '.join(claims)}"
        return provider.rp.begin_ekyc(text).to_json()

    def complete(self, provider: Provider, pending: PendingAuthorization, answer: Mapping[str, Any],
                 relying_party: RelyingParty) -> Completion:
        try:
            response = EkycResponse.from_json(answer)
        except MalformedMessageError as exc:
            raise MalformedAnswerError(f"not an eKYC response: {exc}") from None
        _challenge_id(pending.data, response.challenge_id)
        result: EkycResult = relying_party.complete_ekyc(response)
        if not result.ok or result.certificate is None:
            return _completion(result, None, None)
        try:
            account = signing_account(provider.linkage, result.certificate)
        except JpkiError as exc:
            return Completion(False, str(AuthReason.ACCOUNT_UNAVAILABLE), str(exc), checked_at=result.checked_at)
        return _completion(result, account, result.identity)


# --------------------------------------------------------------------------- helpers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_FAMILY_RE: Final = re.compile(r"[A-Za-z0-9_-]{22}")
_SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_CLAIMS_INFO: Final = b"jpki idp: the claims of a refresh grant"
#: Live access tokens a refresh grant keeps track of (so that revoking it ends them all); a
#: refresh beyond that many within an access token's lifetime ends the oldest.
_MAX_LIVE_ACCESS: Final = 16


def _refresh_token(family: str) -> str:
    """A refresh token of the grant ``family``: ``FAMILY.SECRET``, 256 random bits of secret.
    The family part lets a token no longer current be recognised as this grant's (reuse)."""
    return f"{family}.{secrets.token_urlsafe(32)}"


def _token_family(token: str) -> str | None:
    """The grant a refresh token names; None for anything not shaped like one."""
    family, dot, secret = token.partition(".")
    if not dot or not _FAMILY_RE.fullmatch(family) or not _SECRET_RE.fullmatch(secret):
        return None
    return family


def _claims_cipher(token: str) -> AESGCM:
    """AES-256-GCM under a key derived (HKDF-SHA-256) from the refresh token, which the store
    never holds (only the token's SHA-256)."""
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CLAIMS_INFO).derive(token.encode()))


def _seal_claims(claims: Mapping[str, Any], token: str, family: str) -> str:
    """The claims encrypted for the grant's record ("" when there are none: a login)."""
    if not claims:
        return ""
    nonce = secrets.token_bytes(12)
    sealed = _claims_cipher(token).encrypt(nonce, json.dumps(claims, ensure_ascii=False).encode(), family.encode())
    return _b64url(nonce + sealed)


def _open_claims(sealed: str, token: str, family: str) -> dict[str, Any]:
    """:func:`_seal_claims` undone with the presented token (:class:`InvalidTag` if it was not
    the one that sealed them)."""
    if not sealed:
        return {}
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    claims = json.loads(_claims_cipher(token).decrypt(raw[:12], raw[12:], family.encode()))
    if not isinstance(claims, dict):
        raise ValueError("the sealed claims are not an object")
    return claims


def _single(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, str]:
    """Parameters as a dict; a parameter given twice (RFC 6749 §3.1) or too long is refused."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise OAuthError("invalid_request", f"the parameter {name} is given more than once")
        if len(value) > _MAX_PARAM:
            raise OAuthError("invalid_request", f"the parameter {name} is too long")
        out[name] = value
    return out


def claims_of(identity: VerifiedIdentity, granted: Iterable[str]) -> dict[str, Any]:
    """The OpenID Connect standard claims of the basic 4 info, for the granted scopes only:
    ``name``, ``address`` (``formatted``), ``birthdate`` (ISO 8601; absent when the certificate
    says unknown) and ``gender`` (``male``, ``female``, ``unknown``)."""
    out: dict[str, Any] = {}
    for scope in granted:
        if scope == "name":
            out["name"] = identity.name
        elif scope == "address":
            out["address"] = {"formatted": identity.address}
        elif scope == "birthdate" and identity.birth_date is not None:
            out["birthdate"] = identity.birth_date.isoformat()
        elif scope == "gender":
            out["gender"] = identity.sex
    return out


@dataclasses.dataclass(frozen=True)
class Resume:
    """What ``resume`` found: ``redirect`` (to ``url``: a code, or an error for a refusal whose
    ``pending`` says why), ``waiting`` (the card has not answered yet), ``wrong-browser`` (the
    cookie does not match), ``gone`` (unknown, used or expired)."""

    kind: str
    pending: PendingAuthorization | None = None
    url: str | None = None


# --------------------------------------------------------------------------- the provider


class Provider:
    """The OpenID Provider (see the module docstring). Build it with :func:`build_provider`."""

    def __init__(self, *, issuer: str, rp: RelyingParty, kv: KV, clients: ClientRegistry, key: ProviderKey,
                 salt: bytes, clock: Clock, linkage: CardLinkage | None = None, fetch: Fetch | None = None,
                 config: ProviderConfig | None = None,
                 on_close: Sequence[Callable[[], None]] = ()) -> None:
        self.issuer = check_issuer(issuer)
        if rp.rp_id != self.issuer:
            raise UsageError("the relying party's rp_id must be the issuer (the card signs for it)")
        self.config = config if config is not None else ProviderConfig(home=Path("."), issuer=self.issuer)
        self.rp = rp
        self.kv = kv
        self.clients = clients
        self.key = key
        self._salt = salt
        self.clock = clock
        self.linkage = linkage
        self._fetch = fetch
        self._on_close = list(on_close)
        self.actions: dict[str, CardAction] = {}
        for action in (LoginAction(), EkycAction()):
            self.register_action(action)
        # client_id -> (fetched at, its signature keys, the whole checked JWKS document)
        self._jwks_cache: dict[str, tuple[_dt.datetime, KeySet, dict[str, Any]]] = {}
        self._inline_keys: dict[str, tuple[dict[str, Any], KeySet]] = {}
        self._jwks_lock = threading.Lock()
        self._next_purge: _dt.datetime | None = None
        base = self.issuer + REALM_PATH + "/protocol/openid-connect"
        self.authorization_endpoint = base + "/auth"
        self.token_endpoint = base + "/token"
        self.userinfo_endpoint = base + "/userinfo"
        self.jwks_uri = base + "/certs"
        self.resume_endpoint = base + "/auth/resume"
        self.revocation_endpoint = base + "/revoke"
        self.throttle = Throttle(self.config.limits, timer=lambda: self.clock.now().timestamp(), logger=log)

    # ------------------------------------------------------------------ plumbing

    def register_action(self, action: CardAction) -> None:
        """Offer a card action (``sign`` adds the ``sign`` scope; see :class:`CardAction`)."""
        if not isinstance(action.name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", action.name):
            raise UsageError("an action name is a short lower-case word")
        self.actions[action.name] = action

    @property
    def fast_store(self) -> bool:
        """Whether every store operation is a memory access or a Redis round trip (no SQLite
        write waiting on the disk): the app then runs the store-only endpoints on the event loop."""
        return isinstance(self.kv, (MemoryKV, RedisKV)) and isinstance(self.rp.store, (MemoryStore, RedisStore))

    @property
    def refreshing(self) -> bool:
        """Whether code exchanges give refresh tokens (``refresh_token_ttl`` > 0)."""
        return self.config.refresh_token_ttl > 0

    @property
    def scopes_supported(self) -> tuple[str, ...]:
        return ("openid", *CLAIM_SCOPES, *(("sign",) if "sign" in self.actions else ()))

    def _now(self) -> _dt.datetime:
        now = self.clock.now()
        if now.tzinfo is None or now.utcoffset() is None:
            raise UsageError("the clock must return timezone-aware datetimes")
        return now

    def _purge(self, now: _dt.datetime) -> None:
        if self._next_purge is not None and now < self._next_purge:
            return
        self._next_purge = now + _dt.timedelta(minutes=1)
        try:
            self.kv.purge_expired(now)
            if not isinstance(self.rp.store, RedisStore):
                self.rp.store.purge_expired(now)
        except ChallengeStoreError as exc:
            log.warning("purge failed: %s", exc)

    def close(self) -> None:
        """Release the stores, the databases and the HTTP client."""
        for step in [self.throttle.close, self.kv.close, self.rp.store.close, self.clients.close, *self._on_close]:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - closing: report and go on
                log.warning("close step failed: %s", exc)

    def pairwise_sub(self, sector: str, account_key: str) -> str:
        """The ``sub`` of an account for a sector: base64url(SHA-256(sector ‖ 0 ‖ account key
        ‖ 0 ‖ salt)). The account key is jpki.auth's (stable across renewals); the provider's
        secret salt keeps anyone who knows a certificate from computing the ``sub`` another
        relying party sees."""
        return _b64url(hashlib.sha256(sector.encode("utf-8") + b"\0" + account_key.encode("utf-8") + b"\0"
                                      + self._salt).digest())

    # ------------------------------------------------------------------ discovery

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (``/.well-known/openid-configuration``)."""
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "userinfo_endpoint": self.userinfo_endpoint,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", *(["refresh_token"] if self.refreshing else []),
                                      "client_credentials"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": list(self.scopes_supported),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr",
                                 "name", "address", "birthdate", "gender"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "revocation_endpoint": self.revocation_endpoint,
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "code_challenge_methods_supported": ["S256"],
            "acr_values_supported": [ACR],
            "ui_locales_supported": ["ja", "en"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        }
        if self.config.test_cards:
            doc["jpki_test_cards"] = True
        return doc

    # ------------------------------------------------------------------ authorization

    def authorize(self, pairs: Iterable[tuple[str, str]], browser: str | None, *,
                  address: str | None = None) -> tuple[PendingAuthorization, str]:
        """Check an authorization request and make its pending authorization.

        ``browser`` is the browser's binding cookie (None or malformed: a new one is made).
        ``address`` is the client address's key (:func:`jpki.auth.limits.client_key`): it may
        hold at most ``max_pending`` unfinished authorizations (None: not counted).
        Returns the pending authorization and the cookie value to set. Raises
        :class:`OAuthError`: with ``redirect`` False (no known client, no exact redirect URI)
        the error is shown to the person, never sent to an unverified redirect URI.
        """
        params = _single(pairs, "authorization request")
        client_id = params.get("client_id", "")
        client = self.clients.get(client_id) if client_id else None
        if client is None:
            raise OAuthError("invalid_client" if client_id else "invalid_request",
                             "unknown client" if client_id else "client_id is missing")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None or not any(hmac.compare_digest(redirect_uri.encode(), u.encode())
                                           for u in client.redirect_uris):
            raise OAuthError("invalid_request", "redirect_uri is missing or not registered for this client")
        try:
            pending = self._authorize(client, redirect_uri, params, browser, address)
        except OAuthError as exc:
            exc.redirect, exc.redirect_uri, exc.state = True, redirect_uri, params.get("state")
            exc.ui_locales = tuple(params.get("ui_locales", "").split())
            log.info("authorization refused: client=%s error=%s", client.client_id, exc.error)
            raise
        return pending

    def _authorize(self, client: Client, redirect_uri: str, params: Mapping[str, str],
                   browser: str | None, address: str | None) -> tuple[PendingAuthorization, str]:
        if "request" in params:
            raise OAuthError("request_not_supported", "request objects are not supported")
        if "request_uri" in params:
            raise OAuthError("request_uri_not_supported", "request_uri is not supported")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code (the code flow) is supported")
        if params.get("response_mode", "query") != "query":
            raise OAuthError("invalid_request", "only response_mode=query is supported")
        scopes = tuple(dict.fromkeys(params.get("scope", "").split()))
        if "openid" not in scopes:
            raise OAuthError("invalid_scope", "the openid scope is required")
        unknown = [s for s in scopes if s not in self.scopes_supported]
        if unknown:
            raise OAuthError("invalid_scope", f"unknown scope(s): {' '.join(unknown)[:100]}")
        state, nonce = params.get("state", ""), params.get("nonce", "")
        if not state:
            raise OAuthError("invalid_request", "state is required")
        if not nonce:
            raise OAuthError("invalid_request", "nonce is required")
        challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
        if not challenge:
            raise OAuthError("invalid_request", "code_challenge is required (PKCE with S256)")
        if method != "S256":
            raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is not supported)")
        if not _CHALLENGE_RE.fullmatch(challenge):
            raise OAuthError("invalid_request", "code_challenge is not a base64url SHA-256 (43 characters)")
        if "none" in params.get("prompt", "").split():
            raise OAuthError("login_required", "the card is needed for every authorization (prompt=none)")
        if "sign" in scopes:
            action_name = "sign"
        elif any(s in CLAIM_SCOPES for s in scopes):
            action_name = "ekyc"
        else:
            action_name = "login"
        action = self.actions[action_name]
        now = self._now()
        self._purge(now)
        try:
            data = action.begin(self, client, scopes, params)
        except ChallengeStoreError as exc:
            log.warning("authorization not started: %s", exc)
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly") from None
        cookie = browser if isinstance(browser, str) and _COOKIE_RE.fullmatch(browser) else secrets.token_urlsafe(32)
        pending = PendingAuthorization(
            id=secrets.token_urlsafe(24), client_id=client.client_id, client_name=client.name,
            redirect_uri=redirect_uri, state=state, nonce=nonce, code_challenge=challenge, scopes=scopes,
            claims=tuple(s for s in CLAIM_SCOPES if s in scopes), action=action_name, data=data,
            browser=_digest(cookie), created_at=now,
            expires_at=now + _dt.timedelta(seconds=self.config.authorization_ttl),
            acr_values=tuple(params.get("acr_values", "").split())[:8],
            ui_locales=tuple(params.get("ui_locales", "").split())[:8],
            params={k: params[k] for k in action.params if k in params})
        cap = self.config.max_pending
        try:
            if address is None or not cap:
                self.kv.put(self._pending_key(pending.id), pending.encode(), now=now, expires_at=pending.expires_at)
            elif not self.kv.put_capped(self._pending_key(pending.id), pending.encode(),
                                        group=self._address_group(address), cap=cap, now=now,
                                        expires_at=pending.expires_at):
                self.throttle.refused("too-many-pending", address)
                raise OAuthError("temporarily_unavailable", f"{cap} authorizations from this address are unfinished: "
                                 "finish them or let them expire, then try again")
        except ChallengeStoreError as exc:
            log.warning("authorization not stored: %s", exc)
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly") from None
        log.info("authorization pending: client=%s pending=%s action=%s", client.client_id, pending.id[:8],
                 action_name)
        return pending, cookie

    @staticmethod
    def _pending_key(pending_id: str) -> str:
        return "pending:" + pending_id

    def _address_group(self, address: str) -> str:
        """The store's group of an address's pending authorizations: a keyed hash, so that the
        store holds no client addresses (an unkeyed hash of an IPv4 address is easily undone)."""
        return "pending-by:" + hmac.new(self._salt, address.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def pending(self, pending_id: str) -> PendingAuthorization | None:
        """The pending authorization (any state) while it lives; None otherwise."""
        found = self._pending_read(pending_id)
        return None if found is None else found[1]

    def _pending_read(self, pending_id: str) -> tuple[str, PendingAuthorization] | None:
        """The stored text of a pending authorization and what it says."""
        if not isinstance(pending_id, str) or not _ID_RE.fullmatch(pending_id):
            return None
        try:
            text = self.kv.get(self._pending_key(pending_id), now=self._now())
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        return None if text is None else (text, PendingAuthorization.from_json(text))

    def pending_document(self, pending: PendingAuthorization) -> dict[str, Any]:
        """What ``GET /api/pending/{id}`` shows the card holder's side: who asks, for what, which
        PIN, and (while pending) the challenge to sign. No personal data, no account."""
        action = self.actions.get(pending.action)
        doc: dict[str, Any] = {
            "id": pending.id,
            "issuer": self.issuer,
            "state": str(pending.status),
            "action": pending.action,
            "pin": action.pin if action is not None else None,
            "client": {"id": pending.client_id, "name": pending.client_name},
            "scopes": list(pending.scopes),
            "claims": list(pending.claims),
            "expires_at": pending.expires_at.isoformat(),
            "complete": f"{self.issuer}/api/pending/{pending.id}/complete",
            "resume": self.resume_url(pending.id),
            "test_cards": self.config.test_cards,
        }
        if pending.status is PendingState.PENDING:
            doc["data"] = pending.data
            if pending.action in ("login", "ekyc"):
                doc["challenge"] = pending.data
        elif pending.status is PendingState.REFUSED:
            doc["reason"] = pending.reason
            doc["message"] = pending.message
        return doc

    def resume_url(self, pending_id: str) -> str:
        return f"{self.resume_endpoint}?{urllib.parse.urlencode({'pending': pending_id})}"

    def agent_link(self, pending_id: str) -> str:
        """The "use the card on this computer" link: the local agent's authorize page."""
        query = urllib.parse.urlencode({"issuer": self.issuer, "pending": pending_id})
        return f"{self.config.agent_url.rstrip('/')}/authorize?{query}"

    # ------------------------------------------------------------------ the card's answer

    def _load_pending(self, pending_id: str) -> PendingAuthorization:
        pending = self.pending(pending_id)
        if pending is None:
            raise PendingNotFoundError("no such pending authorization (unknown, finished or expired)")
        return pending

    def _move(self, pending: PendingAuthorization, new: PendingAuthorization) -> PendingAuthorization:
        """Compare-and-set ``pending`` → ``new`` in the store: exactly one mover wins."""
        try:
            moved = self.kv.swap(self._pending_key(pending.id), pending.encode(), new.encode(), now=self._now(),
                                 expires_at=pending.expires_at)
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        if not moved:
            current = self._load_pending(pending.id)
            raise StateError(current.status, new.status)
        return new

    def complete(self, pending_id: str, answer: Mapping[str, Any] | bytes | str, *,
                 relying_party: RelyingParty | None = None,
                 loaded: PendingAuthorization | None = None) -> PendingAuthorization:
        """Decide a pending authorization with the card's answer (jpki.auth's login or eKYC
        response document, as the action needs), or ``{"cancel": true, "reason": …}``.

        Returns the authorization, now approved or refused. Raises
        :class:`PendingNotFoundError`, :class:`StateError` (already decided),
        :class:`MalformedAnswerError` (unreadable, or for another challenge: it stays pending),
        :class:`ProviderUnavailableError`. ``relying_party`` replaces the provider's own for this
        check (the test cards' "expired" outcome validates after the certificate's end); the
        HTTP API never passes it. ``loaded``: the authorization as the caller just read it (the
        test cards), saving a read of the store; if it changed since, the compare-and-set that
        decides it fails (:class:`StateError`), as for any answer arriving second.
        """
        pending = loaded if loaded is not None and loaded.id == pending_id else self._load_pending(pending_id)
        if pending.status is not PendingState.PENDING:
            raise StateError(pending.status, PendingState.APPROVED)
        if isinstance(answer, (bytes, str)):
            try:
                answer = parse_json_object(answer, "answer")
            except MalformedMessageError as exc:
                raise MalformedAnswerError(str(exc)) from None
        if not isinstance(answer, Mapping):
            raise MalformedAnswerError("the answer must be a JSON object")
        if answer.get("cancel") is not None:
            if answer.get("cancel") is not True or set(answer) - {"cancel", "reason"}:
                raise MalformedAnswerError('a cancellation is {"cancel": true, "reason": …}')
            return self.cancel(pending_id, str(answer.get("reason", "cancelled")))
        action = self.actions.get(pending.action)
        if action is None:
            raise ProviderUnavailableError(f"the {pending.action} action is not offered by this provider now")
        completion = action.complete(self, pending, answer, relying_party or self.rp)
        return self._decide(pending, completion)

    def _decide(self, pending: PendingAuthorization, completion: Completion) -> PendingAuthorization:
        account = completion.account
        if completion.ok and account is not None:
            client = self.clients.get(pending.client_id)
            if client is None:
                completion = Completion(False, "unknown-client", "the client was removed meanwhile")
            else:
                claims = claims_of(completion.identity, pending.claims) if completion.identity is not None else {}
                auth_time = int((completion.checked_at or self._now()).timestamp())
                result = {"sub": self.pairwise_sub(client.sector, account.key), "claims": claims,
                          "auth_time": auth_time, "acr": ACR, "amr": list(AMR), "extra": completion.extra}
                new = self._move(pending, pending.moved(PendingState.APPROVED, result=result))
                log.info("authorization approved: client=%s pending=%s action=%s", pending.client_id,
                         pending.id[:8], pending.action)
                self._decided(new)
                return new
        reason = completion.reason or "refused"
        if reason in (str(AuthReason.MALFORMED),):
            raise MalformedAnswerError(completion.message or "the answer is malformed")
        if reason in (str(AuthReason.STORE_UNAVAILABLE), str(AuthReason.INTERNAL_ERROR)):
            raise ProviderUnavailableError(completion.message or reason)
        new = self._move(pending, pending.moved(PendingState.REFUSED, reason=reason,
                                                message=_DESCRIPTION_BAD.sub("?", completion.message)[:300]))
        log.info("authorization refused: client=%s pending=%s reason=%s", pending.client_id, pending.id[:8], reason)
        self._decided(new)
        return new

    def _decided(self, pending: PendingAuthorization) -> None:
        """Tell the card action of a decided authorization (its optional ``decided`` hook: a sign
        transaction learns that its authorization was refused or cancelled). The decision stands
        whatever the hook does; a failing hook is logged."""
        hook = getattr(self.actions.get(pending.action), "decided", None)
        if hook is None:
            return
        try:
            hook(self, pending)
        except Exception as exc:  # noqa: BLE001 - the authorization is decided already
            log.warning("the %s action's decided hook failed: pending=%s: %s", pending.action, pending.id[:8], exc)

    def cancel(self, pending_id: str, reason: str = "cancelled", message: str | None = None) -> PendingAuthorization:
        """Refuse a pending authorization for a reason of the card holder's side
        (:data:`CANCEL_REASONS`: cancelled, wrong-pin, pin-blocked, card-unavailable)."""
        if reason not in CANCEL_REASONS:
            raise MalformedAnswerError(f"a cancellation reason is one of {', '.join(sorted(CANCEL_REASONS))}")
        pending = self._load_pending(pending_id)
        if pending.status is not PendingState.PENDING:
            raise StateError(pending.status, PendingState.REFUSED)
        return self._decide(pending, Completion(False, reason, message or _CANCEL_MESSAGES[reason]))

    # ------------------------------------------------------------------ back to the client

    def _redirect(self, pending: PendingAuthorization, **params: str) -> str:
        query = urllib.parse.urlencode({**params, "state": pending.state, "iss": self.issuer})
        return pending.redirect_uri + ("&" if "?" in pending.redirect_uri else "?") + query

    def error_redirect(self, error: OAuthError) -> str:
        """The client's redirect URI with ``error`` (for errors whose ``redirect`` is True)."""
        assert error.redirect_uri is not None
        params = {"error": error.error, "error_description": error.description}
        if error.state:
            params["state"] = error.state
        params["iss"] = self.issuer
        uri = error.redirect_uri
        return uri + ("&" if "?" in uri else "?") + urllib.parse.urlencode(params)

    @staticmethod
    def browser_matches(pending: PendingAuthorization, browser: str | None) -> bool:
        """Whether ``browser`` (the binding cookie) is the one that started ``pending``."""
        return isinstance(browser, str) and hmac.compare_digest(_digest(browser), pending.browser)

    def resume(self, pending_id: str, browser: str | None) -> Resume:
        """The browser is back: redirect it to the client with a code (approved) or an error
        (refused), once. The cookie set at the auth endpoint must come back."""
        found = self._pending_read(pending_id)
        if found is None:
            return Resume("gone")
        text, pending = found
        if not self.browser_matches(pending, browser):
            log.info("resume refused: pending=%s (another browser)", pending.id[:8])
            return Resume("wrong-browser", pending)
        if pending.status is PendingState.PENDING:
            return Resume("waiting", pending)
        return self._finish(pending, text)

    def refusal_redirect(self, pending_id: str) -> str | None:
        """For a refused authorization, the client's error redirect (taken once, no cookie: it
        carries no code); None if it is not refused. For the test-card API."""
        pending = self.pending(pending_id)
        if pending is None or pending.status is not PendingState.REFUSED:
            return None
        return self._finish(pending).url

    def _finish(self, pending: PendingAuthorization, read: str | None = None) -> Resume:
        """Take the decided ``pending`` (``read``: its stored text as just read; unchanged since,
        it need not be decoded again) and redirect the browser with a code or the refusal."""
        try:
            taken = self.kv.take(self._pending_key(pending.id), now=self._now())
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        if taken is None:
            return Resume("gone")
        if taken != read:
            pending = PendingAuthorization.from_json(taken)
        if pending.status is PendingState.REFUSED:
            description = f"{pending.reason}: {pending.message or ''}".rstrip(": ")
            url = self._redirect(pending, error="access_denied",
                                 error_description=_DESCRIPTION_BAD.sub("?", description)[:300])
            return Resume("redirect", pending, url)
        code = self._issue_code(pending)
        log.info("code issued: client=%s pending=%s", pending.client_id, pending.id[:8])
        return Resume("redirect", pending, self._redirect(pending, code=code))

    def _issue_code(self, pending: PendingAuthorization) -> str:
        assert pending.result is not None
        now = self._now()
        code = secrets.token_urlsafe(32)
        record = {"client_id": pending.client_id, "redirect_uri": pending.redirect_uri,
                  "code_challenge": pending.code_challenge, "nonce": pending.nonce, "scopes": list(pending.scopes),
                  **pending.result}
        try:
            self.kv.put("code:" + _digest(code), json.dumps(record, ensure_ascii=False), now=now,
                        expires_at=now + _dt.timedelta(seconds=self.config.code_ttl))
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        return code

    # ------------------------------------------------------------------ the token endpoint

    def token(self, pairs: Iterable[tuple[str, str]], authorization: str | None) -> dict[str, Any]:
        """The token endpoint: the response document, or :class:`OAuthError`."""
        params = _single(pairs, "token request")
        now = self._now()
        deferred: list[_Jti] = []   # an assertion's jti, recorded in the same step as the code is taken
        client = self._authenticate(params, authorization, now, defer=deferred)
        self._admit(client)
        grant = params.get("grant_type")
        jti = deferred[0] if deferred else None
        try:
            if grant == "authorization_code":
                return self._code_grant(client, params, now, jti)
            if jti is not None:
                self._record_jti(client, jti, now)
            if grant == "refresh_token" and self.refreshing:
                return self._refresh_grant(client, params, now)
            if grant == "client_credentials":
                return self._client_credentials(client, params, now)
        except ChallengeStoreError as exc:
            log.warning("token request failed: %s", exc)
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly",
                             status=503) from None
        raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code, "
                         f"{'refresh_token, ' if self.refreshing else ''}or client_credentials")

    def _admit(self, client: Client) -> None:
        """The authenticated client's own token bucket (per worker): 429 when it is empty."""
        wait = self.throttle.admit("client", client.client_id)
        if wait:
            raise OAuthError("temporarily_unavailable", f"too many token requests from this client: retry in "
                             f"{math.ceil(wait)} s", status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def _authenticate(self, params: Mapping[str, str], authorization: str | None, now: _dt.datetime, *,
                      endpoint: str | None = None, defer: list[_Jti] | None = None) -> Client:
        """The client authenticated by the request (``endpoint``: the URL an assertion may name
        as ``aud`` beside the issuer; default the token endpoint; ``defer``: see
        :meth:`_private_key_jwt`)."""
        basic = authorization is not None and authorization[:6].lower() == "basic "
        assertion = params.get("client_assertion")
        assertion_type = params.get("client_assertion_type")
        if "client_secret" in params:
            raise OAuthError("invalid_client", "client_secret_post is not supported: use private_key_jwt or "
                             "client_secret_basic", status=401)
        if basic and (assertion is not None or assertion_type is not None):
            raise OAuthError("invalid_request", "more than one client authentication method")
        if assertion is not None or assertion_type is not None:
            if assertion_type != JWT_BEARER or not assertion:
                raise OAuthError("invalid_client", f"client_assertion_type must be {JWT_BEARER}", status=401)
            return self._private_key_jwt(assertion, params.get("client_id"), now, endpoint or self.token_endpoint,
                                         defer)
        if basic:
            assert authorization is not None
            return self._client_secret_basic(authorization[6:].strip(), params.get("client_id"))
        raise OAuthError("invalid_client", "no client authentication (use private_key_jwt or client_secret_basic)",
                         status=401)

    def _client_secret_basic(self, credentials: str, form_client_id: str | None) -> Client:
        challenge = {"WWW-Authenticate": 'Basic realm="jpki-idp"'}
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_client", "the Basic credentials are not base64", status=401,
                             headers=challenge) from None
        client_id, colon, secret = decoded.partition(":")
        client_id, secret = urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
        client = self.clients.get(client_id) if colon else None
        if client is None or not client.check_secret(secret):
            log.info("client authentication failed: client=%s method=client_secret_basic", client_id[:32])
            raise OAuthError("invalid_client", "client authentication failed", status=401, headers=challenge)
        if form_client_id is not None and form_client_id != client.client_id:
            raise OAuthError("invalid_client", "client_id differs from the authenticated client", status=401)
        return client

    def _client_keys(self, client: Client, kid: str | None, now: _dt.datetime, *,
                     refresh: bool = False) -> KeySet | None:
        """The client's signature keys: inline, or from its ``jwks_uri`` (cached 5 minutes;
        fetched again sooner for an unknown ``kid`` or when ``refresh``, but at most every 10
        seconds). None when a refresh is asked for and not due."""
        if client.jwks is not None:
            if refresh:
                return None
            with self._jwks_lock:
                known = self._inline_keys.get(client.client_id)
            if known is None or known[0] != client.jwks:  # parsed once per client and key set
                known = (client.jwks, client.signing_keys() or KeySet([]))
                with self._jwks_lock:
                    if len(self._inline_keys) >= 10_000:
                        self._inline_keys.clear()
                    self._inline_keys[client.client_id] = known
            return known[1]
        assert client.jwks_uri is not None
        with self._jwks_lock:
            cached = self._jwks_cache.get(client.client_id)
        if cached is not None:
            age = now - cached[0]
            kid_known = kid is None or any(k.kid == kid for k in cached[1].keys)
            if age < _dt.timedelta(seconds=10):
                return None if refresh else cached[1]  # fetched a moment ago: not again
            if age < _dt.timedelta(minutes=5) and kid_known and not refresh:
                return cached[1]
        return self._fetch_jwks(client, now)[0]

    def _fetch_jwks(self, client: Client, now: _dt.datetime) -> tuple[KeySet, dict[str, Any]]:
        """Fetch and check the client's ``jwks_uri``; cache its signature keys and the document.
        :class:`WouldBlockError` on the event loop (the caller runs it again in a thread)."""
        assert client.jwks_uri is not None
        if not _NETWORK.get():
            raise WouldBlockError(f"client {client.client_id}: its keys are to be fetched from its jwks_uri")
        fetch = self._fetch if self._fetch is not None else HttpFetcher()
        try:
            document = check_jwks(json.loads(fetch(client.jwks_uri)))
        except Exception as exc:  # noqa: BLE001 - any failure of the client's key URL
            log.warning("client %s: JWKS at its jwks_uri unusable: %s", client.client_id, exc)
            raise OAuthError("invalid_client", "the client's jwks_uri gave no usable keys", status=401) from None
        keys = KeySet.import_key_set({"keys": [k for k in document["keys"] if k.get("use") in (None, "sig")]})
        with self._jwks_lock:
            self._jwks_cache[client.client_id] = (now, keys, document)
        return keys, document

    def client_encryption_keys(self, client: Client) -> list[dict[str, Any]]:
        """The client's public keys marked ``"use": "enc"`` (checked: EC P-256 or RSA of 2048
        bits or more), inline or from its ``jwks_uri`` (the cached document while it is under 5
        minutes old, as for its signature keys); ``[]`` when it has none. :class:`OAuthError`
        ``invalid_client`` when its ``jwks_uri`` gives no usable keys. For results encrypted to
        the client (sign transactions)."""
        if client.jwks is not None:
            document = client.jwks
        elif client.jwks_uri is not None:
            now = self._now()
            with self._jwks_lock:
                cached = self._jwks_cache.get(client.client_id)
            if cached is not None and now - cached[0] < _dt.timedelta(minutes=5):
                document = cached[2]
            else:
                document = self._fetch_jwks(client, now)[1]
        else:
            return []
        return [dict(k) for k in document["keys"] if k.get("use") == "enc"]

    @staticmethod
    def _verified(compact: jws.CompactSignature, alg: str, kid: str | None, keys: KeySet) -> bool:
        """Whether the assertion (already parsed) is signed by one of ``keys`` with ``alg``."""
        kty = "EC" if alg == "ES256" else "RSA"
        for key in keys.keys:
            if key.key_type != kty or (kid is not None and key.kid != kid):
                continue
            try:
                if jws.validate_compact(compact, key, registry=_ASSERTION_REGISTRIES[alg]):
                    return True
            except (JoseError, ValueError):
                continue
        return False

    @staticmethod
    def _assertion_refused(why: str, client_id: str = "-") -> OAuthError:
        log.info("client authentication failed: client=%s method=private_key_jwt: %s", client_id[:32], why)
        return OAuthError("invalid_client", f"client assertion refused: {why}", status=401)

    def _private_key_jwt(self, assertion: str, form_client_id: str | None, now: _dt.datetime,
                         endpoint: str, defer: list[_Jti] | None = None) -> Client:
        """The client a verified assertion authenticates; its ``jti`` is recorded in the shared
        store now, or (``defer``) appended there for the caller to record with its own step."""
        refuse = self._assertion_refused

        try:
            compact = jws.extract_compact(assertion.encode("ascii"))
            header = compact.headers()
            unverified = json.loads(compact.payload)
        except (JoseError, ValueError, UnicodeError):
            raise refuse("not a compact JWS") from None
        if not isinstance(unverified, dict):
            raise refuse("the payload is not a JSON object")
        alg = header.get("alg")
        if alg not in ASSERTION_ALGS:
            raise refuse(f"alg must be ES256 or RS256, not {str(alg)[:16]}")
        client_id = unverified.get("sub")
        if not isinstance(client_id, str) or unverified.get("iss") != client_id:
            raise refuse("iss and sub must both be the client_id")
        if form_client_id is not None and form_client_id != client_id:
            raise refuse("client_id differs from the assertion's", client_id)
        client = self.clients.get(client_id)
        if client is None or "private_key_jwt" not in client.auth_methods:
            raise refuse("unknown client, or one without keys", client_id)
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        keys = self._client_keys(client, kid, now)
        assert keys is not None
        verified = self._verified(compact, alg, kid, keys)
        if not verified:  # the client may have rotated its keys: look at its jwks_uri again
            fresh = self._client_keys(client, kid, now, refresh=True)
            verified = fresh is not None and self._verified(compact, alg, kid, fresh)
        if not verified:
            raise refuse("the signature does not verify with the client's keys", client_id)
        claims = unverified   # verified now: the payload parsed above is the signed one
        skew = self.config.clock_skew
        now_s = now.timestamp()
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if not any(a in (self.issuer, endpoint) for a in audiences if isinstance(a, str)):
            what = "token" if endpoint == self.token_endpoint else "revocation"
            raise refuse(f"aud must be the issuer or the {what} endpoint", client_id)
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise refuse("exp is missing", client_id)
        if exp <= now_s - skew:
            raise refuse("the assertion has expired", client_id)
        if exp > now_s + self.config.max_assertion_age + skew:
            raise refuse(f"exp is more than {int(self.config.max_assertion_age)} s ahead", client_id)
        for name in ("iat", "nbf"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, (int, float)) or value > now_s + skew):
                raise refuse(f"{name} is in the future", client_id)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise refuse("jti is missing", client_id)
        record = _Jti(f"jti:{client.client_id}:{_digest(jti)}", _dt.datetime.fromtimestamp(exp + skew, _dt.UTC))
        if defer is not None:
            defer.append(record)
        else:
            self._record_jti(client, record, now)
        return client

    def _record_jti(self, client: Client, record: _Jti, now: _dt.datetime) -> None:
        """Record an assertion's ``jti`` in the shared store: a replay (already there) is refused."""
        try:
            first = self.kv.add(record.key, "1", now=now, expires_at=record.until)
        except ChallengeStoreError as exc:
            log.warning("jti not recorded: %s", exc)
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly",
                             status=503) from None
        if not first:
            raise self._assertion_refused("the assertion was already used (jti replayed)", client.client_id)

    def _code_grant(self, client: Client, params: Mapping[str, str], now: _dt.datetime,
                    jti: _Jti | None = None) -> dict[str, Any]:
        """The authorization-code grant; ``jti``: the client assertion's, recorded in the store in
        one step with taking the code (one round trip; a replayed one leaves the code)."""
        code, redirect_uri, verifier = params.get("code"), params.get("redirect_uri"), params.get("code_verifier")
        if not code or not redirect_uri:
            if jti is not None:
                self._record_jti(client, jti, now)   # the assertion is spent all the same
            raise OAuthError("invalid_request", "code is missing" if not code else "redirect_uri is missing")
        code_key = _digest(code)
        if jti is None:
            text = self.kv.take("code:" + code_key, now=now)
        else:
            first, text = self.kv.add_then_take(jti.key, "1", take="code:" + code_key, now=now,
                                                expires_at=jti.until)
            if not first:
                raise self._assertion_refused("the assertion was already used (jti replayed)", client.client_id)
        if text is None:
            used = self.kv.get("used:" + code_key, now=now)
            if used is not None:  # a second use: revoke what the first one gave (RFC 6749 §4.1.2)
                token_key, _, family = used.partition(" ")
                self.kv.delete("token:" + token_key)
                if family:
                    self._revoke_family(family, now)
                log.warning("code used twice: client=%s; its tokens are revoked", client.client_id)
            raise OAuthError("invalid_grant", "the code is invalid, expired or already used")
        record = json.loads(text)
        if record["client_id"] != client.client_id:
            log.warning("code of client %s presented by client %s", record["client_id"], client.client_id)
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if record["redirect_uri"] != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        if not verifier:
            raise OAuthError("invalid_grant", "code_verifier is missing (PKCE)")
        if not _VERIFIER_RE.fullmatch(verifier):
            raise OAuthError("invalid_grant", "code_verifier must be 43-128 unreserved characters")
        expected = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        if not hmac.compare_digest(expected, record["code_challenge"]):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        access_token = secrets.token_urlsafe(32)
        token_key = _digest(access_token)
        ttl = _dt.timedelta(seconds=self.config.access_token_ttl)
        records = {
            "token:" + token_key: json.dumps({
                "kind": "user", "client_id": client.client_id, "scopes": record["scopes"], "sub": record["sub"],
                "claims": record["claims"]}, ensure_ascii=False),
            "used:" + code_key: token_key,
        }
        expiries: dict[str, _dt.datetime] = {}
        refresh: dict[str, Any] = {}
        if self.refreshing:   # in the same round trip: a refresh token costs no extra store call
            family = secrets.token_urlsafe(16)
            refresh_token, grant, until = self._new_grant(client, record, family, token_key, now)
            records[self._family_key(family)] = json.dumps(grant, ensure_ascii=False)
            records["used:" + code_key] = f"{token_key} {family}"
            expiries[self._family_key(family)] = until
            refresh = {"refresh_token": refresh_token, "refresh_expires_in": int((until - now).total_seconds())}
        self.kv.put_many(records, now=now, expires_at=now + ttl, expiries=expiries)
        iat = int(now.timestamp())
        id_token = self.key.sign({
            "iss": self.issuer, "aud": client.client_id, "sub": record["sub"], "iat": iat,
            "exp": iat + int(self.config.id_token_ttl), "auth_time": record["auth_time"], "nonce": record["nonce"],
            "acr": record["acr"], "amr": record["amr"]})
        log.info("tokens issued: client=%s grant=authorization_code", client.client_id)
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": int(ttl.total_seconds()),
                "id_token": id_token, "scope": " ".join(record["scopes"]), **refresh}

    # ------------------------------------------------------------------ refresh tokens

    @staticmethod
    def _family_key(family: str) -> str:
        return "refresh:" + family

    def _new_grant(self, client: Client, record: Mapping[str, Any], family: str, token_key: str,
                   now: _dt.datetime) -> tuple[str, dict[str, Any], _dt.datetime]:
        """A grant that refresh tokens carry on (the family of ``family``): its first refresh
        token, its stored record and when that record expires (unused for ``refresh_token_idle``,
        or at the end of ``refresh_token_ttl``, whichever comes first).

        The record holds what the code gave — ``sub``, the scopes, ``auth_time``, ``acr``,
        ``amr`` — the SHA-256 of the current refresh token (never the token) and the granted
        claims (the basic 4 info) **encrypted with a key derived from the refresh token**: a
        copy of the store alone reads no one's name or address, for all the grant's life."""
        token = _refresh_token(family)
        end = now + _dt.timedelta(seconds=self.config.refresh_token_ttl)
        grant = {"client_id": client.client_id, "sub": record["sub"], "scopes": list(record["scopes"]),
                 "auth_time": record["auth_time"], "acr": record["acr"], "amr": list(record["amr"]),
                 "claims": _seal_claims(record["claims"], token, family), "current": _digest(token),
                 "end": end.isoformat(), "access": [[token_key, int(now.timestamp() + self.config.access_token_ttl)]]}
        return token, grant, self._grant_expiry(end, now)

    def _grant_expiry(self, end: _dt.datetime, now: _dt.datetime) -> _dt.datetime:
        return min(end, now + _dt.timedelta(seconds=self.config.refresh_token_idle))

    def _refresh_grant(self, client: Client, params: Mapping[str, str], now: _dt.datetime) -> dict[str, Any]:
        """RFC 6749 §6 with rotation (RFC 9700 §4.14.2): the token is used once; each use gives a
        new one. Presenting a token of the grant that is no longer the current one (it was
        stolen, or the client replayed it) revokes the whole grant: every refresh token and the
        access tokens it gave. Two requests racing with the same current token count as that
        too: exactly one compare-and-set wins, the other revokes."""
        presented = params.get("refresh_token")
        if not presented:
            raise OAuthError("invalid_request", "refresh_token is missing")
        invalid = OAuthError("invalid_grant", "the refresh token is invalid, expired or revoked")
        family = _token_family(presented)
        if family is None:
            raise invalid
        key = self._family_key(family)
        text = self.kv.get(key, now=now)
        if text is None:
            raise invalid
        grant: dict[str, Any] = json.loads(text)
        if grant["client_id"] != client.client_id:
            log.warning("refresh token of client %s presented by client %s", grant["client_id"], client.client_id)
            raise OAuthError("invalid_grant", "the refresh token was issued to another client")
        if not hmac.compare_digest(_digest(presented), grant["current"]):
            self._revoke_family(family, now)
            log.warning("refresh token used again: client=%s; the grant is revoked", client.client_id)
            raise OAuthError("invalid_grant", "the refresh token was already used: the grant is revoked, "
                             "authenticate with the card again")
        granted = grant["scopes"]
        scopes = granted
        if "scope" in params:
            scopes = list(dict.fromkeys(params["scope"].split()))
            wider = [s for s in scopes if s not in granted]
            if not scopes or wider:
                raise OAuthError("invalid_scope", "the scope must be the granted one or narrower"
                                 + (f" (not granted: {' '.join(wider)[:100]})" if wider else ""))
        try:
            claims = _open_claims(grant["claims"], presented, family)
        except (ValueError, InvalidTag):
            log.warning("refresh grant of client %s: its claims cannot be read", client.client_id)
            raise invalid from None
        access_token, token = secrets.token_urlsafe(32), _refresh_token(family)
        token_key = _digest(access_token)
        ttl = _dt.timedelta(seconds=self.config.access_token_ttl)
        now_s = now.timestamp()
        access = [a for a in grant["access"] if a[1] > now_s]
        excess = max(0, len(access) + 1 - _MAX_LIVE_ACCESS)
        for older, _ in access[:excess]:   # more than a client needs at once: the oldest end
            self.kv.delete("token:" + older)
        access = [*access[excess:], [token_key, int(now_s + ttl.total_seconds())]]
        rotated = {**grant, "current": _digest(token), "claims": _seal_claims(claims, token, family), "access": access}
        until = self._grant_expiry(_dt.datetime.fromisoformat(grant["end"]), now)
        # The access token first, then the rotation: a revocation racing this request then
        # finds it in the grant's list (or the rotation fails and it is withdrawn here).
        self.kv.put("token:" + token_key, json.dumps({
            "kind": "user", "client_id": client.client_id, "scopes": scopes, "sub": grant["sub"],
            "claims": {k: v for k, v in claims.items() if k in scopes}}, ensure_ascii=False),
            now=now, expires_at=now + ttl)
        if not self.kv.swap(key, text, json.dumps(rotated, ensure_ascii=False), now=now, expires_at=until):
            self.kv.delete("token:" + token_key)
            self._revoke_family(family, now)
            log.warning("refresh token used twice at once: client=%s; the grant is revoked", client.client_id)
            raise OAuthError("invalid_grant", "the refresh token was already used: the grant is revoked, "
                             "authenticate with the card again")
        document: dict[str, Any] = {
            "access_token": access_token, "token_type": "Bearer", "expires_in": int(ttl.total_seconds()),
            "refresh_token": token, "refresh_expires_in": int((until - now).total_seconds()),
            "scope": " ".join(scopes)}
        if "openid" in scopes:   # OIDC Core §12.2: the same iss, sub, aud; the first auth_time; no nonce
            iat = int(now_s)
            document["id_token"] = self.key.sign({
                "iss": self.issuer, "aud": client.client_id, "sub": grant["sub"], "iat": iat,
                "exp": iat + int(self.config.id_token_ttl), "auth_time": grant["auth_time"], "acr": grant["acr"],
                "amr": grant["amr"]})
        log.info("tokens issued: client=%s grant=refresh_token", client.client_id)
        return document

    def _revoke_family(self, family: str, now: _dt.datetime) -> bool:
        """End a grant: its refresh tokens and the access tokens it gave stop working. True if
        there was one."""
        text = self.kv.take(self._family_key(family), now=now)
        if text is None:
            return False
        for token_key, _ in json.loads(text).get("access", []):
            self.kv.delete("token:" + token_key)
        return True

    # ------------------------------------------------------------------ revocation (RFC 7009)

    def revoke(self, pairs: Iterable[tuple[str, str]], authorization: str | None) -> None:
        """The revocation endpoint: the client (authenticated as at the token endpoint; an
        assertion's ``aud`` may also be this endpoint) ends one of its tokens. A refresh token
        ends its grant with every access token it gave; an access token ends alone. An unknown,
        expired or already revoked token is no error (RFC 7009 §2.2); another client's token is
        ``invalid_grant`` and stays."""
        params = _single(pairs, "revocation request")
        now = self._now()
        client = self._authenticate(params, authorization, now, endpoint=self.revocation_endpoint)
        self._admit(client)
        token = params.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is missing")
        try:
            family = _token_family(token)
            if family is not None:
                text = self.kv.get(self._family_key(family), now=now)
                if text is not None:
                    self._check_owner(json.loads(text), client, "refresh")
                    self._revoke_family(family, now)
                    log.info("refresh token revoked: client=%s", client.client_id)
                return
            key = "token:" + _digest(token)
            text = self.kv.get(key, now=now)
            if text is not None:
                self._check_owner(json.loads(text), client, "access")
                self.kv.delete(key)
                log.info("access token revoked: client=%s", client.client_id)
        except ChallengeStoreError as exc:
            log.warning("revocation failed: %s", exc)
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly",
                             status=503) from None

    @staticmethod
    def _check_owner(record: Mapping[str, Any], client: Client, kind: str) -> None:
        if record.get("client_id") != client.client_id:
            log.warning("%s token of client %s presented for revocation by client %s", kind, record.get("client_id"),
                        client.client_id)
            raise OAuthError("invalid_grant", f"the {kind} token was issued to another client")

    def _client_credentials(self, client: Client, params: Mapping[str, str], now: _dt.datetime) -> dict[str, Any]:
        scopes = tuple(dict.fromkeys(params.get("scope", "sign").split()))
        if not scopes or any(s != "sign" for s in scopes):
            raise OAuthError("invalid_scope", "client_credentials tokens are for the sign scope only")
        access_token = secrets.token_urlsafe(32)
        ttl = _dt.timedelta(seconds=self.config.access_token_ttl)
        self.kv.put("token:" + _digest(access_token), json.dumps({
            "kind": "client", "client_id": client.client_id, "scopes": list(scopes)}),
            now=now, expires_at=now + ttl)
        log.info("token issued: client=%s grant=client_credentials", client.client_id)
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": int(ttl.total_seconds()),
                "scope": " ".join(scopes)}

    def access_token(self, authorization: str | None) -> dict[str, Any]:
        """The record of a Bearer access token (``kind`` user or client, ``client_id``,
        ``scopes``…), for userinfo and for plug-ins (sign transactions); :class:`OAuthError`
        (401 ``invalid_token``) when absent, expired, revoked or of a removed client."""
        realm = 'Bearer realm="jpki-idp"'
        if authorization is None or authorization[:7].lower() != "bearer " or not authorization[7:].strip():
            raise OAuthError("invalid_request", "a Bearer access token is required", status=401,
                             headers={"WWW-Authenticate": realm})
        token = authorization[7:].strip()
        try:
            text = self.kv.get("token:" + _digest(token), now=self._now())
        except ChallengeStoreError as exc:
            raise OAuthError("temporarily_unavailable", f"the store is unavailable: {exc}", status=503) from None
        record: dict[str, Any] | None = json.loads(text) if text is not None else None
        if record is None or self.clients.get(record["client_id"]) is None:
            raise OAuthError("invalid_token", "the access token is invalid, expired or revoked", status=401,
                             headers={"WWW-Authenticate": realm + ', error="invalid_token"'})
        return record

    def userinfo(self, authorization: str | None) -> dict[str, Any]:
        """The userinfo endpoint: ``sub`` and the granted claims only."""
        record = self.access_token(authorization)
        if record.get("kind") != "user" or "openid" not in record.get("scopes", ()):
            raise OAuthError("insufficient_scope", "this access token is not for userinfo (no openid scope)",
                             status=403,
                             headers={"WWW-Authenticate": 'Bearer realm="jpki-idp", error="insufficient_scope"'})
        granted, claims = set(record["scopes"]), record["claims"]
        return {"sub": record["sub"], **{k: claims[k] for k in CLAIM_SCOPES if k in granted and k in claims}}


_CANCEL_MESSAGES: Final = {
    "cancelled": "the card holder cancelled",
    "wrong-pin": "the PIN was wrong",
    "pin-blocked": "the PIN is blocked",
    "card-unavailable": "the card could not be used",
}


# --------------------------------------------------------------------------- building one


def open_challenge_store(spec: str) -> ChallengeStore:
    """The relying party's challenge store for a provider store spec: a memory store, the
    same SQLite file (its own table), or the same Redis server under ``PREFIX + challenge:``."""
    spec = spec.strip()
    if spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:") and spec[len("sqlite:"):]:
        return SqliteStore(spec[len("sqlite:"):])
    if spec.partition(":")[0].lower() in ("redis", "rediss"):
        url, prefix = split_redis_prefix(spec)
        return RedisStore(url, prefix=(prefix if prefix is not None else RedisKV.DEFAULT_PREFIX) + "challenge:")
    open_kv(spec)  # raises the usage error naming the accepted forms
    raise UsageError(f"unknown store {spec!r}")  # pragma: no cover


def build_provider(config: ProviderConfig, *, clock: Clock | None = None, fetch: Fetch | None = None,
                   kv: KV | None = None, key: ProviderKey | None = None) -> Provider:
    """The provider for ``config``: trust = J-LIS roots + the home's test CA (renewal links and
    card linkage from its database), revocation as configured, the stores the spec names, the
    clients and key of the home, and the ``sign`` action (:mod:`jpki.idp.signtx`). ``clock``,
    ``fetch`` (revocation and client JWKS URLs) and ``kv`` are injectable for tests."""
    clock = clock if clock is not None else SystemClock()
    home = Path(config.home).expanduser()
    trust = TrustStore.for_home(home)  # the J-LIS roots and the home's test CA, as the relying party's
    own_fetch = fetch is None
    fetch = fetch if fetch is not None else HttpFetcher(deadline=config.fetch_deadline)
    # Closed by Provider.close beside its stores and clients (all of them, in reverse, if
    # building fails).
    closers: list[Callable[[], None]] = []
    opened: list[Callable[[], None]] = []
    if own_fetch:
        closers.append(getattr(fetch, "close", lambda: None))
    try:
        resolver: AccountResolver = NoLinks()
        linkage: CardLinkage | None = None
        ca_dir = home / "ca"
        if (ca_dir / "auth_ca.pem").is_file():
            links = TestCALinks(ca_dir)
            closers.append(links.close)
            resolver = FollowPredecessors(links.predecessor)
            linkage = CardLinkage(ca_dir, links, resolver)
            closers.append(linkage.close)
        validator = Validator(trust, clock=clock, fetch=fetch, revocation=config.revocation)
        if kv is None:
            kv = open_kv(config.store)
            opened.append(kv.close)
        store = open_challenge_store(config.store)
        opened.append(store.close)
        rp = RelyingParty(config.issuer, validator, store, clock,
                          challenge_ttl=_dt.timedelta(seconds=config.challenge_ttl), account_resolver=resolver,
                          revocation_max_age=_dt.timedelta(seconds=config.revocation_max_age))
        clients = ClientRegistry(home)
        opened.append(clients.close)
        provider = Provider(issuer=config.issuer, rp=rp, kv=kv, clients=clients,
                            key=key if key is not None else ProviderKey.load_or_create(home),
                            salt=load_salt(home), clock=clock, linkage=linkage, fetch=fetch, config=config,
                            on_close=closers)
        # Sign transactions are a card action built on this module's types (hence imported here).
        from jpki.idp.signtx import SignTransactions

        provider.register_action(SignTransactions(provider))
    except BaseException:
        for close in reversed(closers + opened):
            close()
        raise
    return provider
