"""Sign transactions: the card's *signing* key signs a hash a relying party sends, with the
card holder's consent — the Digital Authentication App's 署名トランザクション, self-hosted.

::

    client                           provider                          card holder (agent)
    ── client_credentials token (scope sign) ─▶
    ── POST /api/sign-transactions {hash | digest_info, display_text} ─▶  201 {id, expires_at}
    ── browser → auth?scope=openid sign&sign_transaction_id=ID ─▶  pending authorization
                                                   ◀── GET /api/pending/{pid}: display_text, hash
                                                   ◀── POST …/complete {sign_transaction_id,
                                                        signature, certificate}
    ◀─ redirect with a code (or access_denied) ──
    ── GET /api/sign-transactions/{id}/result ─▶  application/jose: a JWE to the client's
                                                  "use": "enc" key holding the signature and
                                                  the signing certificate

:class:`SignTransactions` is both the service behind the two endpoints (no HTTP here: see
:mod:`jpki.idp.app`) and the provider's ``sign`` card action (:class:`~jpki.idp.provider.
CardAction`; registering it offers the ``sign`` scope). A transaction is a record in the
provider's shared store under ``signtx:ID``, a small state machine like a pending authorization:

    pending ── the card's signature verified ──▶ signed
       └──── refused / cancelled / wrong password / blocked / revoked… ──▶ refused
    any state ── expires_at passes ──▶ gone (the store drops it; ``signtx-expired:ID``
                                       remembers for a day that it expired, for a 410)

Each move is a compare-and-set on the stored text, so one decision wins across workers. A
refused authorization refuses its transaction (the client makes a new one to try again).

What the provider checks of the card's answer, in order: the answer names this
authorization's transaction; the transaction is still pending, the client's, unexpired; the
certificate parses and holds an RSA key; the signature is RSA PKCS#1 v1.5 over exactly the
transaction's DigestInfo with that key; the certificate validates as a **signing**
certificate through the relying party's validator (path, validity, revocation no older than
its ``revocation_max_age``) — a user-authentication certificate is ``wrong-key-kind``, so the
authentication key can never sign a transaction; the certificate maps to an account (the
pairwise ``sub``). Only then is the transaction signed.

The card signs a hash, so nothing the provider chose is in the signature: an answer that
reproduces an earlier signature over the same hash is indistinguishable from a fresh one (RSA
PKCS#1 v1.5 is deterministic). It can only repeat a signature that already exists, for the
same client, which received it encrypted.

Logging (logger ``jpki.idp``): the client id, the first characters of the transaction id and
a reason code; never the display text, the hash or the certificate.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import enum
import hmac
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from jpki.auth.result import AuthReason, CertRef, VerifiedIdentity, reason_from_validation
from jpki.auth.store import ChallengeStoreError
from jpki.certinfo import signing_identity
from jpki.errors import JpkiError, VerificationError
from jpki.idp.accounts import signing_account
from jpki.idp.clients import Client
from jpki.idp.pending import PendingAuthorization, PendingState
from jpki.idp.provider import (
    Completion,
    MalformedAnswerError,
    OAuthError,
    ProviderUnavailableError,
)

if TYPE_CHECKING:
    from jpki.auth.rp import RelyingParty
    from jpki.idp.provider import Provider

__all__ = [
    "CONTENT_ENCRYPTION",
    "DEFAULT_TTL",
    "DIGEST_INFO_PREFIXES",
    "KEY_ENCRYPTION",
    "MAX_DISPLAY_TEXT",
    "SignTransaction",
    "SignTransactionError",
    "SignTransactionState",
    "SignTransactions",
    "check_display_text",
    "parse_digest_info",
]

log = logging.getLogger("jpki.idp")

#: DER DigestInfo prefixes (AlgorithmIdentifier with NULL parameters, RFC 8017 §9.2 note 1) of
#: the digests a transaction may carry, by their names in the API.
DIGEST_INFO_PREFIXES: Final = {
    "SHA-256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA-384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA-512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASHES: Final[dict[str, hashes.HashAlgorithm]] = {
    "SHA-256": hashes.SHA256(), "SHA-384": hashes.SHA384(), "SHA-512": hashes.SHA512()}
#: Longest display text (characters): the card holder reads all of it before signing.
MAX_DISPLAY_TEXT: Final = 1000
#: Lifetime of a transaction when the client gives no ``expires_in``, and its bounds (seconds).
DEFAULT_TTL: Final = 600
MIN_TTL: Final = 60
MAX_TTL: Final = 3600
#: How long an expired transaction is still known as expired (410) rather than unknown (404).
EXPIRED_MEMORY: Final = _dt.timedelta(days=1)
#: The JWE key management algorithm for each kind of client key, and the content encryption.
KEY_ENCRYPTION: Final = {"EC": "ECDH-ES+A256KW", "RSA": "RSA-OAEP-256"}
CONTENT_ENCRYPTION: Final = "A256GCM"
#: The authorization-request parameter naming the transaction.
PARAM: Final = "sign_transaction_id"

_FIELDS: Final = frozenset({"hash", "digest_info", "display_text", "expires_in"})
_ANSWER_FIELDS: Final = frozenset({PARAM, "signature", "certificate"})
_ID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_B64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")
# Characters that reorder what a person reads (bidirectional embeddings, overrides, isolates).
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MAX_SIGNATURE: Final = 1024
_MAX_CERTIFICATE: Final = 16 * 1024
_BEARER: Final = 'Bearer realm="jpki-idp"'


class SignTransactionError(OAuthError):
    """A refusal of the sign-transaction API: an RFC 6749/6750-style error document with, for
    a transaction that is not signed, its ``state`` and (refused) ``reason``."""

    code = "sign_transaction"

    def __init__(self, error: str, description: str, *, status: int = 400,
                 headers: Mapping[str, str] | None = None, **extra: str | None) -> None:
        super().__init__(error, description, status=status, headers=headers)
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def to_json(self) -> dict[str, str]:
        return {**super().to_json(), **self.extra}


class SignTransactionState(enum.StrEnum):
    """Where a transaction stands (an expired one is gone from the store)."""

    PENDING = "pending"
    SIGNED = "signed"
    REFUSED = "refused"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    """Base64 (standard or URL-safe alphabet, padding optional), else :class:`ValueError`."""
    if not isinstance(value, str) or not _B64_RE.fullmatch(value):
        raise ValueError(f"{what} must be a base64 string")
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


def parse_digest_info(der: bytes) -> tuple[str, bytes]:
    """``(hash algorithm, digest)`` of a DER DigestInfo of SHA-256, SHA-384 or SHA-512, else
    :class:`ValueError`. Each is fully determined by its algorithm and digest length, so the
    bytes must equal the canonical encoding (NULL parameters) followed by the digest."""
    for name, prefix in DIGEST_INFO_PREFIXES.items():
        if der.startswith(prefix) and len(der) == len(prefix) + _HASHES[name].digest_size:
            return name, der[len(prefix):]
    raise ValueError("digest_info must be a DER DigestInfo of SHA-256, SHA-384 or SHA-512 "
                     "(AlgorithmIdentifier with NULL parameters, then the digest)")


def check_display_text(text: object) -> str:
    """The text the card holder is shown before signing: 1-:data:`MAX_DISPLAY_TEXT`
    characters, not only spaces, no control characters but newline and tab, no bidirectional
    overrides (which can make a text read otherwise than it is). :class:`ValueError` else."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("display_text is required: the text the card holder reads before signing")
    if len(text) > MAX_DISPLAY_TEXT:
        raise ValueError(f"display_text is longer than {MAX_DISPLAY_TEXT} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" for ch in text):
        raise ValueError("display_text holds control characters")
    if any(ch in _BIDI_CONTROLS for ch in text):
        raise ValueError("display_text holds bidirectional override characters")
    return text


@dataclasses.dataclass(frozen=True)
class SignTransaction:
    """One transaction (see the module docstring)."""

    id: str
    client_id: str
    hash_algorithm: str
    digest_info: bytes
    display_text: str
    created_at: _dt.datetime
    expires_at: _dt.datetime
    state: SignTransactionState = SignTransactionState.PENDING
    reason: str | None = None          # refused: a reason code (wrong-pin, revoked, cancelled, …)
    message: str | None = None         # refused: a one-line explanation (no personal data)
    signature: bytes | None = None     # signed: the card's RSA PKCS#1 v1.5 signature
    certificate: bytes | None = None   # signed: the DER signing certificate that verified it
    decided_at: _dt.datetime | None = None

    @property
    def digest(self) -> bytes:
        """The hash the DigestInfo carries."""
        return self.digest_info[len(DIGEST_INFO_PREFIXES[self.hash_algorithm]):]

    def public(self) -> dict[str, Any]:
        """What the card holder's side is shown (the pending authorization's ``data``)."""
        return {"sign_transaction_id": self.id, "display_text": self.display_text,
                "hash_algorithm": self.hash_algorithm, "hash": _b64(self.digest),
                "digest_info": _b64(self.digest_info), "expires_at": self.expires_at.isoformat()}

    def encode(self) -> str:
        """The stored form (compact JSON, keys sorted: compare-and-set compares this text)."""
        data = dataclasses.asdict(self)
        for name in ("digest_info", "signature", "certificate"):
            data[name] = None if data[name] is None else _b64(data[name])
        for name in ("created_at", "expires_at", "decided_at"):
            data[name] = None if data[name] is None else data[name].isoformat()
        data["state"] = str(self.state)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> SignTransaction:
        """What :meth:`encode` stored (a record of this provider, hence trusted)."""
        data = json.loads(text)
        for name in ("digest_info", "signature", "certificate"):
            data[name] = None if data[name] is None else base64.b64decode(data[name])
        for name in ("created_at", "expires_at", "decided_at"):
            data[name] = None if data[name] is None else _dt.datetime.fromisoformat(data[name])
        data["state"] = SignTransactionState(data["state"])
        return cls(**data)


class SignTransactions:
    """The ``sign`` card action of a provider and the service of its transaction API.

    ``default_ttl`` is a transaction's lifetime when the client gives none (seconds).
    Register it with :meth:`jpki.idp.provider.Provider.register_action` (``build_provider``
    does), then :meth:`create` and :meth:`result` serve ``POST /api/sign-transactions`` and
    ``GET /api/sign-transactions/{id}/result``.
    """

    name = "sign"
    pin = "sign"
    params: frozenset[str] = frozenset({PARAM})

    def __init__(self, provider: Provider, *, default_ttl: int = DEFAULT_TTL) -> None:
        if not MIN_TTL <= default_ttl <= MAX_TTL:
            raise ValueError(f"default_ttl must be {MIN_TTL}-{MAX_TTL} seconds")
        self.provider = provider
        self.default_ttl = default_ttl

    # ------------------------------------------------------------------ the store

    @staticmethod
    def _key(tx_id: str) -> str:
        return "signtx:" + tx_id

    @staticmethod
    def _expired_key(tx_id: str) -> str:
        return "signtx-expired:" + tx_id

    def _now(self) -> _dt.datetime:
        return self.provider._now()

    def load(self, tx_id: object) -> SignTransaction | None:
        """The live transaction, or None (unknown, expired, or not an id)."""
        if not isinstance(tx_id, str) or not _ID_RE.fullmatch(tx_id):
            return None
        try:
            text = self.provider.kv.get(self._key(tx_id), now=self._now())
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        return None if text is None else SignTransaction.decode(text)

    def _expired_for(self, tx_id: str, client_id: str) -> bool:
        """Whether ``tx_id`` was ``client_id``'s transaction and has expired."""
        if not _ID_RE.fullmatch(tx_id):
            return False
        try:
            owner = self.provider.kv.get(self._expired_key(tx_id), now=self._now())
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        return owner is not None and hmac.compare_digest(owner.encode(), client_id.encode())

    def _swap(self, old: SignTransaction, new: SignTransaction) -> bool:
        """Compare-and-set ``old`` → ``new``: True if this caller moved it."""
        try:
            return self.provider.kv.swap(self._key(old.id), old.encode(), new.encode(), now=self._now(),
                                         expires_at=old.expires_at)
        except ChallengeStoreError as exc:
            raise ProviderUnavailableError(str(exc)) from exc

    # ------------------------------------------------------------------ the client's API

    def _client_token(self, authorization: str | None, *, creating: bool) -> Client:
        """The client of a Bearer token with the ``sign`` scope: its ``client_credentials``
        token (to create), or also an access token of a sign authorization (to read results,
        as the real service's examples do)."""
        record = self.provider.access_token(authorization)
        kinds = ("client",) if creating else ("client", "user")
        if "sign" not in record.get("scopes", ()) or record.get("kind") not in kinds:
            what = "a client_credentials token with scope sign" if creating else "a token with scope sign"
            raise SignTransactionError("insufficient_scope", f"this endpoint needs {what}", status=403,
                                       headers={"WWW-Authenticate": _BEARER + ', error="insufficient_scope", '
                                                                              'scope="sign"'})
        client = self.provider.clients.get(record["client_id"])
        if client is None:   # removed meanwhile (access_token checked it a moment ago)
            raise SignTransactionError("invalid_token", "the access token is invalid, expired or revoked",
                                       status=401, headers={"WWW-Authenticate": _BEARER + ', error="invalid_token"'})
        return client

    def encryption_key(self, client: Client) -> tuple[ECKey | RSAKey, str]:
        """The client's first usable ``"use": "enc"`` key and the JWE ``alg`` for it
        (``ECDH-ES+A256KW`` for EC P-256, ``RSA-OAEP-256`` for RSA; a key whose own ``alg``
        names another is passed over). :class:`SignTransactionError` when there is none."""
        for jwk in self.provider.client_encryption_keys(client):
            alg = KEY_ENCRYPTION.get(str(jwk.get("kty")))
            if alg is None or jwk.get("alg", alg) != alg:
                continue
            try:
                key: ECKey | RSAKey = ECKey.import_key(jwk) if jwk["kty"] == "EC" else RSAKey.import_key(jwk)
            except (JoseError, ValueError, TypeError):
                continue
            return key, alg
        raise SignTransactionError(
            "invalid_client_metadata",
            "the client has no encryption key: sign results are encrypted to a key of its JWKS with "
            "use=enc (EC P-256 for ECDH-ES+A256KW, or RSA for RSA-OAEP-256); register the client with one "
            "(jpki idp client add NAME --jwks FILE) before creating sign transactions")

    def create(self, authorization: str | None, body: Mapping[str, Any] | bytes | str) -> dict[str, Any]:
        """``POST /api/sign-transactions``: check the token and the request, store a pending
        transaction; ``{"id", "expires_at", "expires_in"}``. :class:`SignTransactionError`
        (400 ``invalid_request``, 400 ``invalid_client_metadata`` without an encryption key,
        401/403 for the token, 503 ``temporarily_unavailable``)."""
        client = self._client_token(authorization, creating=True)
        self.encryption_key(client)   # fail now, not when the result is fetched
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise SignTransactionError("invalid_request", "the body must be a JSON object") from None
        if not isinstance(body, Mapping):
            raise SignTransactionError("invalid_request", "the body must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise SignTransactionError("invalid_request", f"unknown field(s): {', '.join(unknown)[:100]} "
                                       f"(expected {', '.join(sorted(_FIELDS))})")
        try:
            algorithm, digest_info = self._digest_info(body)
            text = check_display_text(body.get("display_text"))
        except ValueError as exc:
            raise SignTransactionError("invalid_request", str(exc)) from None
        ttl = body.get("expires_in", self.default_ttl)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
            raise SignTransactionError("invalid_request", f"expires_in must be an integer of {MIN_TTL}-{MAX_TTL} "
                                       "seconds")
        now = self._now()
        tx = SignTransaction(id=str(uuid.uuid4()), client_id=client.client_id, hash_algorithm=algorithm,
                             digest_info=digest_info, display_text=text, created_at=now,
                             expires_at=now + _dt.timedelta(seconds=ttl))
        try:
            self.provider.kv.put(self._key(tx.id), tx.encode(), now=now, expires_at=tx.expires_at)
            self.provider.kv.put(self._expired_key(tx.id), client.client_id, now=now,
                                 expires_at=tx.expires_at + EXPIRED_MEMORY)
        except ChallengeStoreError as exc:
            log.warning("sign transaction not stored: %s", exc)
            raise SignTransactionError("temporarily_unavailable", "the store is unavailable: try again shortly",
                                       status=503) from None
        log.info("sign transaction created: client=%s tx=%s alg=%s ttl=%d", client.client_id, tx.id[:8],
                 algorithm, ttl)
        return {"id": tx.id, "expires_at": tx.expires_at.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z"),
                "expires_in": ttl}

    @staticmethod
    def _digest_info(body: Mapping[str, Any]) -> tuple[str, bytes]:
        if ("hash" in body) == ("digest_info" in body):
            raise ValueError("give exactly one of hash (base64 SHA-256) and digest_info (base64 DER DigestInfo)")
        if "hash" in body:
            digest = _unb64(body["hash"], "hash")
            if len(digest) != 32:
                raise ValueError(f"hash must be a SHA-256 digest (32 bytes), not {len(digest)} bytes; "
                                 "for SHA-384 or SHA-512 send a digest_info")
            return "SHA-256", DIGEST_INFO_PREFIXES["SHA-256"] + digest
        der = _unb64(body["digest_info"], "digest_info")
        return parse_digest_info(der)[0], der

    def result(self, authorization: str | None, tx_id: str) -> str:
        """``GET /api/sign-transactions/{id}/result``: the JWE (compact) of a signed transaction
        of the token's client. :class:`SignTransactionError`: 404 ``not_found`` (unknown, or
        another client's), 409 ``authorization_pending``, 403 ``access_denied`` (refused, with
        ``reason``), 410 ``expired_token`` (expired: the result is gone with it)."""
        client = self._client_token(authorization, creating=False)
        tx = self.load(tx_id)
        if tx is None or not hmac.compare_digest(tx.client_id.encode(), client.client_id.encode()):
            if tx is None and self._expired_for(tx_id, client.client_id):
                raise SignTransactionError("expired_token", "the sign transaction has expired: create a new one",
                                           status=410, state="expired")
            raise SignTransactionError("not_found", "no such sign transaction for this client", status=404)
        if tx.state is SignTransactionState.PENDING:
            raise SignTransactionError("authorization_pending", "the card holder has not signed yet: ask again "
                                       "after the authorization comes back", status=409, state="pending")
        if tx.state is SignTransactionState.REFUSED:
            raise SignTransactionError("access_denied", f"{tx.reason}: {tx.message or ''}".rstrip(": "),
                                       status=403, state="refused", reason=tx.reason)
        assert tx.signature is not None and tx.certificate is not None
        key, alg = self.encryption_key(client)
        payload = json.dumps({"id": tx.id, "signature": _b64(tx.signature), "certificate": _b64(tx.certificate),
                              "hash_algorithm": tx.hash_algorithm, "digest_info": _b64(tx.digest_info)})
        header: dict[str, Any] = {"alg": alg, "enc": CONTENT_ENCRYPTION, "cty": "json"}
        if key.kid:
            header["kid"] = key.kid
        log.info("sign result fetched: client=%s tx=%s", client.client_id, tx.id[:8])
        return jwe.encrypt_compact(header, payload.encode("utf-8"), key, algorithms=[alg, CONTENT_ENCRYPTION])

    # ------------------------------------------------------------------ the card action

    def begin(self, provider: Provider, client: Client, scopes: tuple[str, ...],
              params: Mapping[str, str]) -> dict[str, Any]:
        """The authorization names a pending transaction of this client: its public data."""
        tx_id = params.get(PARAM)
        if not tx_id:
            raise OAuthError("invalid_request", f"{PARAM} is required with the sign scope")
        try:
            tx = self.load(tx_id)
            expired = tx is None and self._expired_for(tx_id, client.client_id)
        except ProviderUnavailableError:
            raise OAuthError("temporarily_unavailable", "the store is unavailable: try again shortly") from None
        if expired:
            raise OAuthError("invalid_request", "the sign transaction has expired")
        if tx is None or not hmac.compare_digest(tx.client_id.encode(), client.client_id.encode()):
            log.info("authorization names an unknown sign transaction: client=%s", client.client_id)
            raise OAuthError("invalid_request", "no such sign transaction for this client")
        if tx.state is not SignTransactionState.PENDING:
            raise OAuthError("invalid_request", f"the sign transaction is already {tx.state}")
        return tx.public()

    def complete(self, provider: Provider, pending: PendingAuthorization, answer: Mapping[str, Any],
                 relying_party: RelyingParty) -> Completion:
        """Check the card's answer (see the module docstring) and sign the transaction."""
        if set(answer) != _ANSWER_FIELDS:
            raise MalformedAnswerError('a sign answer is {"sign_transaction_id": ID, "signature": BASE64, '
                                       '"certificate": BASE64}')
        tx_id = answer[PARAM]
        if not isinstance(tx_id, str) or not hmac.compare_digest(tx_id.encode(),
                                                                 pending.params.get(PARAM, "").encode()):
            raise MalformedAnswerError("the answer is for another sign transaction than this authorization's")
        try:
            signature = _unb64(answer["signature"], "signature")
            der = _unb64(answer["certificate"], "certificate")
        except ValueError as exc:
            raise MalformedAnswerError(str(exc)) from None
        if not 0 < len(signature) <= _MAX_SIGNATURE or not 0 < len(der) <= _MAX_CERTIFICATE:
            raise MalformedAnswerError("the signature or the certificate has an impossible length")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise MalformedAnswerError("the certificate is not DER X.509") from None
        tx = self.load(tx_id)
        now = self._now()
        if tx is None or now >= tx.expires_at:
            return Completion(False, str(AuthReason.EXPIRED), "the sign transaction expired", checked_at=now)
        if tx.client_id != pending.client_id:   # begin checked it: fail closed all the same
            return Completion(False, "wrong-client", "the sign transaction belongs to another client", checked_at=now)
        if tx.state is not SignTransactionState.PENDING:
            return Completion(False, str(AuthReason.REPLAYED), f"the sign transaction is already {tx.state}",
                              checked_at=now)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return Completion(False, str(AuthReason.BAD_SIGNATURE), "the certificate's key is not RSA", checked_at=now)
        try:
            key.verify(signature, tx.digest, padding.PKCS1v15(), Prehashed(_HASHES[tx.hash_algorithm]))
        except (InvalidSignature, ValueError):
            return Completion(False, str(AuthReason.BAD_SIGNATURE),
                              "the signature does not verify over the transaction's hash with the certificate's key",
                              checked_at=now)
        ref = CertRef.of(cert)
        try:
            validation = relying_party.validate_certificate(der, "sign")
        except Exception as exc:  # fail closed, whatever happened
            log.exception("sign transaction: the certificate check failed unexpectedly")
            return Completion(False, str(AuthReason.INTERNAL_ERROR), f"the certificate check failed: "
                              f"{type(exc).__name__}", checked_at=now)
        if not validation.ok:
            return Completion(False, str(reason_from_validation(validation.reason)),
                              f"certificate refused: {validation.reason}", checked_at=now)
        try:
            account = signing_account(provider.linkage, ref)
        except JpkiError as exc:
            return Completion(False, str(AuthReason.ACCOUNT_UNAVAILABLE), str(exc), checked_at=now)
        identity = None
        if pending.claims:   # "openid sign name …": the verified signing certificate is their source
            try:
                identity = VerifiedIdentity.from_signing_identity(signing_identity(cert))
            except VerificationError as exc:
                return Completion(False, str(AuthReason.IDENTITY_UNREADABLE),
                                  f"the basic 4 info cannot be read ({exc.reason})", checked_at=now)
        signed = dataclasses.replace(tx, state=SignTransactionState.SIGNED, signature=signature, certificate=der,
                                     decided_at=now)
        if not self._swap(tx, signed):
            return Completion(False, str(AuthReason.REPLAYED), "the sign transaction was decided meanwhile",
                              checked_at=now)
        log.info("sign transaction signed: client=%s tx=%s serial=%x", tx.client_id, tx.id[:8], ref.serial)
        return Completion(True, account=account, identity=identity, checked_at=now, extra={PARAM: tx.id})

    def decided(self, provider: Provider, pending: PendingAuthorization) -> None:
        """A refused or cancelled authorization refuses its transaction (if still pending)."""
        if pending.status is not PendingState.REFUSED:
            return
        tx = self.load(pending.params.get(PARAM, ""))
        if tx is None or tx.state is not SignTransactionState.PENDING or tx.client_id != pending.client_id:
            return
        refused = dataclasses.replace(tx, state=SignTransactionState.REFUSED, reason=pending.reason or "refused",
                                      message=pending.message, decided_at=self._now())
        if self._swap(tx, refused):
            log.info("sign transaction refused: client=%s tx=%s reason=%s", tx.client_id, tx.id[:8], refused.reason)
