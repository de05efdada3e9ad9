"""The relying party: issue challenges, check the card's answers (login and eKYC).

```python
from jpki.auth import RelyingParty, open_store
from jpki.verify import TrustStore, Validator

rp = RelyingParty("https://shop.example.jp", Validator(TrustStore.jlis()), open_store("memory"))
challenge = rp.begin_login()                 # send challenge.to_json() to the client
result = rp.complete_login(response_json)    # the client's LoginResponse (JSON or object)
if result.ok:
    user = accounts.get_or_create(result.account.key)
else:
    refuse(result.reason)                    # an AuthReason: 'replayed', 'revoked', …
```

Like python-fido2's ``Fido2Server`` this imports no card library: the server needs only
cryptography (and asn1crypto for eKYC). Unlike it, a failed check is a typed result with a
reason code, not an exception. The clock, the challenge store, the certificate validator (trust
anchors, revocation) and the renewal-link source are all injected.

Order of the checks (the first failure is the reason): the response parses (``malformed``);
the signed client data names this purpose (``wrong-purpose``) and this relying party
(``wrong-rp``); the challenge is taken from the store, atomically and once (``replayed``,
``expired``, ``store-unavailable``); the stored challenge was issued by this relying party for
this purpose and equals the signed one — nonce, expiry, transaction text (``wrong-rp``,
``wrong-purpose``, ``challenge-mismatch``); the signature verifies with the certificate's key
(``bad-signature``); the certificate validates as the right kind, path, validity and revocation
(``wrong-key-kind``, ``untrusted``, ``expired-certificate``, ``revoked``, …); then the account
(login) or the basic 4 info (eKYC). A challenge is consumed by any answer that names it, right
or wrong. Comparisons of the relying-party id, nonce and text are constant-time.

Logging (logger ``jpki.auth``): one line per outcome, with the purpose, the reason code, the
first characters of the challenge id, and the certificate's serial number — never a name, an
address, a birth date, a sex or a My Number.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import hmac
import io
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.auth.links import AccountResolver, LinkError, NoLinks
from jpki.auth.protocol import (
    MAX_TRANSACTION_TEXT,
    ClientData,
    EkycResponse,
    LoginResponse,
    MalformedMessageError,
)
from jpki.auth.result import (
    AuthReason,
    CertRef,
    EkycResult,
    LoginResult,
    VerifiedIdentity,
    reason_from_validation,
)
from jpki.auth.store import (
    Challenge,
    ChallengeStore,
    ChallengeStoreError,
    MemoryStore,
    Purpose,
    RedisStore,
)
from jpki.certinfo import signing_identity
from jpki.clock import Clock
from jpki.errors import UsageError, VerificationError
from jpki.sign.cms import (
    OID_DATA,
    VERIFY_DIGESTS,
    SignerCheck,
    check_signer_info,
    read_cms,
)
from jpki.verify import ValidationResult, Validator
from jpki.verify.cache import LruCache

__all__ = ["DEFAULT_CHALLENGE_TTL", "DEFAULT_REVOCATION_MAX_AGE", "RelyingParty", "check_transaction_text"]

log = logging.getLogger("jpki.auth")

#: How long a challenge may be answered: long enough to type a PIN and tap the card.
DEFAULT_CHALLENGE_TTL: Final = _dt.timedelta(minutes=3)
#: Oldest cached revocation answer a check relies on, OCSP or CRL: a lost card is refused at most
#: this long after its revocation (the validator would otherwise keep a good OCSP answer until
#: its nextUpdate, a CRL for up to a day).
DEFAULT_REVOCATION_MAX_AGE: Final = _dt.timedelta(minutes=5)
#: Bounds of the parsed-certificate cache: a client may send 16 KiB certificates.
DEFAULT_CERTIFICATE_CACHE: Final = 10_000
DEFAULT_CERTIFICATE_CACHE_BYTES: Final = 32 * 1024 * 1024
#: What a parsed certificate and its CertRef are reckoned to weigh besides the DER (measured:
#: some 3.6 KiB); the DER counts twice, as the key and inside the parsed certificate.
_CERT_ENTRY_BYTES = 4096
#: How often (by the clock) begin_* purges expired challenges from a store that needs it.
DEFAULT_PURGE_INTERVAL: Final = _dt.timedelta(minutes=1)
_TAG_RE: Final = re.compile(r"[A-Za-z0-9]{1,16}")
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()


def _purpose(result_type: type[LoginResult | EkycResult]) -> Literal["login", "ekyc"]:
    return "login" if result_type is LoginResult else "ekyc"


def _short(challenge_id: str | None) -> str:
    return "-" if not challenge_id else challenge_id[:8] + "…"


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _check_rp_id(rp_id: object) -> str:
    if not isinstance(rp_id, str) or not rp_id or len(rp_id) > 512:
        raise UsageError("rp_id must be a non-empty string of at most 512 characters")
    try:
        rp_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("rp_id is not encodable as UTF-8") from None
    return rp_id


def check_transaction_text(text: object) -> str | None:
    """``text`` if it is acceptable as an eKYC transaction text, else :class:`UsageError`:
    a string of at most :data:`MAX_TRANSACTION_TEXT` characters, valid UTF-8, without control
    characters other than newline and tab."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise UsageError("the transaction text must be a string")
    if len(text) > MAX_TRANSACTION_TEXT:
        raise UsageError(f"the transaction text is longer than {MAX_TRANSACTION_TEXT} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the transaction text is not encodable as UTF-8") from None
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise UsageError("the transaction text holds control characters")
    return text


class _CertCache:
    """Parsed certificates and their :class:`CertRef` by DER bytes, bounded by count and bytes
    (least recently used out first), so that a card's login parses its certificate once. Only
    certificates that passed validation are kept (:meth:`keep`): anything else is what any
    client can send by the thousand."""

    def __init__(self, size: int, max_bytes: int | None) -> None:
        try:
            self.cache: LruCache[bytes, tuple[x509.Certificate, CertRef]] = LruCache(size, max_bytes)
        except ValueError as exc:
            raise UsageError(f"certificate cache: {exc}") from None

    def get(self, der: bytes) -> tuple[tuple[x509.Certificate, CertRef], bool]:
        """The parsed certificate and whether it came from the cache (else it is parsed now:
        ValueError when malformed)."""
        found = self.cache.get(der)
        if found is not None:
            return found, True
        cert = x509.load_der_x509_certificate(der)
        return (cert, CertRef.of(cert)), False

    def keep(self, der: bytes, parsed: tuple[x509.Certificate, CertRef]) -> None:
        """Remember a certificate that validated."""
        self.cache.put(der, parsed, weight=2 * len(der) + _CERT_ENTRY_BYTES)


def _check_cms(der: bytes, content: bytes) -> SignerCheck | tuple[AuthReason, str, x509.Certificate | None]:
    """Verify the eKYC CMS over ``content`` with :mod:`jpki.sign.cms`: one signer, content type
    data, detached (or attached with exactly ``content``), message digest and signature. The
    signer's check, or (reason, message, certificate if known)."""
    try:
        parsed = read_cms(io.BytesIO(der))
    except VerificationError as exc:
        return AuthReason.MALFORMED, f"the CMS is malformed: {exc}", None
    if len(parsed.signer_infos) != 1:
        return AuthReason.MALFORMED, f"the CMS must have one signer, not {len(parsed.signer_infos)}", None
    if parsed.content_type != OID_DATA:
        return AuthReason.MALFORMED, "the CMS content type is not data", None

    def digest_of(algorithm: str) -> bytes | None:
        if algorithm not in VERIFY_DIGESTS:
            return None
        return hashlib.new(algorithm, content).digest()

    if parsed.attached:
        for algorithm, value in parsed.content_digests.items():
            expected = digest_of(algorithm)
            if expected is None or not hmac.compare_digest(expected, value):
                return AuthReason.CHALLENGE_MISMATCH, "the CMS holds other content than the client data", None
    try:
        return check_signer_info(parsed.signer_infos[0], parsed.certificates, parsed.content_type,
                                 digest_of, mismatch_reason="wrong-data", data=content)
    except VerificationError as exc:
        if exc.reason in ("tampered", "wrong-data"):
            return AuthReason.BAD_SIGNATURE, f"the CMS signature does not verify ({exc.reason})", None
        return AuthReason.MALFORMED, f"the CMS signature cannot be checked: {exc}", None


#: How each flow is named in log lines and messages.
_FLOW_NAMES = {"login": "login", "ekyc": "eKYC"}

_Result = TypeVar("_Result", LoginResult, EkycResult)
_Response = TypeVar("_Response")


class RelyingParty:
    """Begin and complete card logins and eKYCs for the relying party ``rp_id``.

    ``rp_id`` names this relying party in every challenge and is what the card signs (use the
    service's origin, e.g. ``https://shop.example.jp``). ``validator`` checks the certificates
    (its trust store, revocation mode and caches; see :class:`jpki.verify.Validator`).
    ``store`` keeps the pending challenges (default: a new :class:`MemoryStore`, which is
    enough for one process; several server processes need a shared SQLite or Redis store).
    ``clock`` gives "now" for challenges and for validation (default: the validator's clock).
    ``challenge_ttl`` is how long a challenge may be answered. ``account_resolver`` maps a
    login certificate to the card holder's stable account (default :class:`NoLinks`; see
    :mod:`jpki.auth.links` for renewal links). ``revocation_max_age`` is the oldest cached
    revocation answer a check relies on, OCSP answer or CRL alike (older: the source is asked
    again; zero: every check asks; None: the validator's own ``revocation_max_age``, if any,
    else until its nextUpdate); a revoked answer from any source wins over a good one (see
    :class:`jpki.verify.Validator`). ``certificate_cache`` and ``certificate_cache_bytes``
    bound the parsed certificates kept (only those that validated). Thread-safe.
    """

    def __init__(
        self,
        rp_id: str,
        validator: Validator,
        store: ChallengeStore | None = None,
        clock: Clock | None = None,
        *,
        challenge_ttl: _dt.timedelta = DEFAULT_CHALLENGE_TTL,
        account_resolver: AccountResolver | None = None,
        revocation_max_age: _dt.timedelta | None = DEFAULT_REVOCATION_MAX_AGE,
        purge_interval: _dt.timedelta | None = DEFAULT_PURGE_INTERVAL,
        certificate_cache: int = DEFAULT_CERTIFICATE_CACHE,
        certificate_cache_bytes: int | None = DEFAULT_CERTIFICATE_CACHE_BYTES,
    ) -> None:
        self.rp_id = _check_rp_id(rp_id)
        self._rp_id_bytes = self.rp_id.encode("utf-8")
        if not isinstance(validator, Validator):
            raise UsageError("validator must be a jpki.verify.Validator")
        self.validator = validator
        self.store: ChallengeStore = store if store is not None else MemoryStore()
        self.clock: Clock = clock if clock is not None else validator.clock
        if not isinstance(challenge_ttl, _dt.timedelta) or challenge_ttl <= _dt.timedelta(0):
            raise UsageError("challenge_ttl must be a positive timedelta")
        self.challenge_ttl = challenge_ttl
        self.account_resolver: AccountResolver = account_resolver if account_resolver is not None else NoLinks()
        if revocation_max_age is not None and (not isinstance(revocation_max_age, _dt.timedelta)
                                               or revocation_max_age < _dt.timedelta(0)):
            raise UsageError("revocation_max_age must be a non-negative timedelta or None")
        self.revocation_max_age = revocation_max_age
        # Redis drops expired keys by itself; memory and SQLite stores are purged from begin_*.
        self._purge_interval = None if isinstance(self.store, RedisStore) else purge_interval
        self._next_purge: _dt.datetime | None = None
        self._purge_lock = threading.Lock()
        self._certs = _CertCache(certificate_cache, certificate_cache_bytes)

    @property
    def certificate_cache(self) -> LruCache[bytes, tuple[x509.Certificate, CertRef]]:
        """The parsed certificates kept (to watch its size; only certificates that validated)."""
        return self._certs.cache

    # ------------------------------------------------------------------ begin

    def _now(self) -> _dt.datetime:
        now = self.clock.now()
        if now.tzinfo is None or now.utcoffset() is None:
            raise UsageError("the clock must return timezone-aware datetimes")
        return now

    def _maybe_purge(self, now: _dt.datetime) -> None:
        if self._purge_interval is None:
            return
        with self._purge_lock:
            if self._next_purge is not None and now < self._next_purge:
                return
            self._next_purge = now + self._purge_interval
        try:
            purged = self.store.purge_expired(now)
        except ChallengeStoreError as exc:
            log.warning("challenge purge failed: %s", exc)
            return
        if purged:
            log.debug("purged %d expired challenge(s)", purged)

    def _begin(self, purpose: Purpose, text: str | None, tag: str | None) -> Challenge:
        now = self._now()
        self._maybe_purge(now)
        challenge = Challenge.create(rp_id=self.rp_id, purpose=purpose, now=now,
                                     ttl=self.challenge_ttl, transaction_text=text)
        if tag is not None:
            if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
                raise UsageError("a challenge tag is 1-16 letters or digits")
            challenge = dataclasses.replace(challenge, id=f"{tag}-{challenge.id}")
        self.store.put(challenge)
        log.debug("%s challenge issued: %s, expires %s", purpose, _short(challenge.id),
                  challenge.expires_at.isoformat())
        return challenge

    def begin_login(self, *, tag: str | None = None) -> Challenge:
        """Issue and store a login challenge; send ``challenge.to_json()`` to the client.

        ``tag`` (1-16 letters or digits) is put in front of the random id (``TAG-…``), so that
        the caller can tell its own kinds of challenges apart when they are answered without a
        look-up (the service tags the challenges its page displays). Raises
        :class:`~jpki.auth.store.ChallengeStoreError` if the store fails.
        """
        return self._begin("login", None, tag)

    def begin_ekyc(self, transaction_text: str | None = None, *, tag: str | None = None) -> Challenge:
        """Issue and store an eKYC challenge, optionally with a ``transaction_text`` the card
        holder signs along (e.g. "口座開設の本人確認"); :class:`UsageError` for an unacceptable
        text (see :func:`check_transaction_text`). ``tag`` as for :meth:`begin_login`."""
        return self._begin("ekyc", check_transaction_text(transaction_text), tag)

    # ------------------------------------------------------------------ shared checks

    def _challenge_checks(
        self, purpose: Purpose, response_id: str, data: ClientData, now: _dt.datetime
    ) -> tuple[AuthReason, str] | Challenge:
        """Purpose, relying party, single use and equality with the stored challenge."""
        if data.challenge_id != response_id:
            return AuthReason.CHALLENGE_MISMATCH, "the signed data names another challenge"
        if data.purpose != purpose:
            return AuthReason.WRONG_PURPOSE, f"the card signed an {data.purpose} challenge, not a {purpose} one"
        if not _same(data.rp_id.encode("utf-8"), self._rp_id_bytes):
            return AuthReason.WRONG_RP, "the card signed a challenge of another relying party"
        try:
            challenge = self.store.take(response_id, now=now)
        except ChallengeStoreError as exc:
            return AuthReason.STORE_UNAVAILABLE, f"the challenge store failed: {exc}"
        if challenge is None:
            if now >= data.expires_at:
                return AuthReason.EXPIRED, "the challenge expired"
            return AuthReason.REPLAYED, "the challenge is not pending (already used, or never issued here)"
        if not _same(challenge.rp_id.encode("utf-8"), self._rp_id_bytes):
            return AuthReason.WRONG_RP, "the challenge was issued by another relying party"
        if challenge.purpose != purpose:
            return AuthReason.WRONG_PURPOSE, f"the challenge was issued for {challenge.purpose}, not {purpose}"
        same_text = _same((challenge.transaction_text or "").encode("utf-8"),
                          (data.transaction_text or "").encode("utf-8")) \
            and (challenge.transaction_text is None) == (data.transaction_text is None)
        if not (_same(challenge.nonce, data.nonce) and challenge.expires_at == data.expires_at and same_text):
            return AuthReason.CHALLENGE_MISMATCH, "the signed data differs from the challenge issued"
        return challenge

    # ------------------------------------------------------------------ login

    def complete_login(self, response: LoginResponse | Mapping[str, Any] | bytes | str) -> LoginResult:
        """Check a client's answer to a login challenge (a :class:`LoginResponse`, or its JSON
        document as bytes, text or a parsed mapping). Never raises for a bad answer: the
        result says what failed. On success ``result.account`` is the stable account."""
        return self._fail_closed(LoginResult, self._complete_login, response)

    def _fail_closed(self, result_type: type[_Result], check: Callable[[_Response, _dt.datetime], _Result],
                     response: _Response) -> _Result:
        """Run ``check(response, now)``; any unexpected exception (the clock's included) is a
        refusal with ``internal-error``, never an acceptance."""
        flow = _FLOW_NAMES[_purpose(result_type)]
        try:
            now = self._now()
        except Exception as exc:  # noqa: BLE001 - fail closed
            return self._failed(result_type, _dt.datetime.now(_dt.UTC), AuthReason.INTERNAL_ERROR,
                                f"the clock failed: {exc}")
        try:
            return check(response, now)
        except Exception as exc:  # fail closed, whatever happened
            log.exception("%s check failed unexpectedly", flow)
            return self._failed(result_type, now, AuthReason.INTERNAL_ERROR,
                                f"the {flow} check failed unexpectedly: {type(exc).__name__}")

    def _failed(self, result_type: type[_Result], now: _dt.datetime, reason: AuthReason, message: str, *,
                challenge_id: str | None = None, cert: CertRef | None = None,
                validation: ValidationResult | None = None) -> _Result:
        """The refusal result of a flow, logged without personal data."""
        purpose = _purpose(result_type)
        log.info("%s refused: reason=%s challenge=%s serial=%s", _FLOW_NAMES[purpose], reason,
                 _short(challenge_id), "-" if cert is None else cert.serial_hex)
        return result_type(ok=False, reason=reason, message=message, purpose=purpose, checked_at=now,
                           challenge_id=challenge_id, certificate=cert, validation=validation)

    def _complete_login(self, response: LoginResponse | Mapping[str, Any] | bytes | str,
                        now: _dt.datetime) -> LoginResult:
        try:
            if not isinstance(response, LoginResponse):
                response = LoginResponse.from_json(response)
            data = ClientData.decode(response.client_data)
        except MalformedMessageError as exc:
            challenge_id = response.challenge_id if isinstance(response, LoginResponse) else None
            return self._failed(LoginResult, now, AuthReason.MALFORMED, str(exc), challenge_id=challenge_id)
        cid = response.challenge_id
        checked = self._challenge_checks("login", cid, data, now)
        if not isinstance(checked, Challenge):
            return self._failed(LoginResult, now, checked[0], checked[1], challenge_id=cid)
        try:
            parsed, known = self._certs.get(response.certificate)
        except ValueError:
            return self._failed(LoginResult, now, AuthReason.MALFORMED, "the certificate is not DER X.509",
                                challenge_id=cid)
        cert, ref = parsed
        if not self._signature_ok(cert, response.signature, response.client_data):
            return self._failed(LoginResult, now, AuthReason.BAD_SIGNATURE,
                                "the signature does not verify with the certificate's key",
                                challenge_id=cid, cert=ref)
        validation = self._validate(response.certificate, "auth", now)
        if not validation.ok:
            reason = reason_from_validation(validation.reason)
            return self._failed(LoginResult, now, reason, f"certificate refused: {validation.reason}",
                                challenge_id=cid, cert=ref, validation=validation)
        if not known:
            self._certs.keep(response.certificate, parsed)
        try:
            account = self.account_resolver.account_for(ref)
        except LinkError as exc:
            return self._failed(LoginResult, now, AuthReason.ACCOUNT_UNAVAILABLE, str(exc),
                                challenge_id=cid, cert=ref, validation=validation)
        log.info("login ok: challenge=%s serial=%s account=%s", _short(cid), ref.serial_hex, account.key)
        return LoginResult(ok=True, reason=None, message="logged in", purpose="login", checked_at=now,
                           challenge_id=cid, certificate=ref, validation=validation, account=account)

    # ------------------------------------------------------------------ eKYC

    def complete_ekyc(self, response: EkycResponse | Mapping[str, Any] | bytes | str) -> EkycResult:
        """Check a client's answer to an eKYC challenge (an :class:`EkycResponse`, or its JSON
        document). Never raises for a bad answer. On success ``result.identity`` is the
        verified basic 4 info of the signing certificate and ``result.transaction_text`` the
        text the card holder signed."""
        return self._fail_closed(EkycResult, self._complete_ekyc, response)

    def _complete_ekyc(self, response: EkycResponse | Mapping[str, Any] | bytes | str,
                       now: _dt.datetime) -> EkycResult:
        try:
            if not isinstance(response, EkycResponse):
                response = EkycResponse.from_json(response)
            data = ClientData.decode(response.client_data)
        except MalformedMessageError as exc:
            challenge_id = response.challenge_id if isinstance(response, EkycResponse) else None
            return self._failed(EkycResult, now, AuthReason.MALFORMED, str(exc), challenge_id=challenge_id)
        cid = response.challenge_id
        checked = self._challenge_checks("ekyc", cid, data, now)
        if not isinstance(checked, Challenge):
            return self._failed(EkycResult, now, checked[0], checked[1], challenge_id=cid)
        signed = _check_cms(response.cms, response.client_data)
        if isinstance(signed, tuple):
            reason, message, cert = signed
            return self._failed(EkycResult, now, reason, message, challenge_id=cid,
                                cert=None if cert is None else CertRef.of(cert))
        cert = signed.certificate
        ref = CertRef.of(cert)
        validation = self._validate(cert.public_bytes(Encoding.DER), "sign", now)
        if not validation.ok:
            reason = reason_from_validation(validation.reason)
            return self._failed(EkycResult, now, reason, f"certificate refused: {validation.reason}",
                                challenge_id=cid, cert=ref, validation=validation)
        try:
            identity = VerifiedIdentity.from_signing_identity(signing_identity(cert))
        except VerificationError as exc:
            return self._failed(EkycResult, now, AuthReason.IDENTITY_UNREADABLE,
                                f"the basic 4 info cannot be read ({exc.reason})",
                                challenge_id=cid, cert=ref, validation=validation)
        log.info("eKYC ok: challenge=%s serial=%s", _short(cid), ref.serial_hex)
        return EkycResult(ok=True, reason=None, message="identity verified", purpose="ekyc",
                          checked_at=now, challenge_id=cid, certificate=ref, validation=validation,
                          identity=identity, transaction_text=data.transaction_text,
                          signed_at=signed.signing_time)

    def validate_certificate(self, der: bytes, kind: str) -> ValidationResult:
        """The validator's answer for a certificate now, exactly as login and eKYC check theirs
        (kind, path, validity, revocation no older than ``revocation_max_age``): for answers
        this class does not parse itself, such as the OpenID Provider's sign transactions."""
        return self._validate(der, kind, self._now())

    def _validate(self, der: bytes, kind: str, now: _dt.datetime) -> ValidationResult:
        """The validator's answer for a certificate (given as its DER: the validator's cache key is
        the SHA-256 of the DER, cheaper from bytes), relying on no cached revocation answer —
        OCSP or CRL — older than ``revocation_max_age``."""
        return self.validator.validate(der, kind=kind, at=now, revocation_max_age=self.revocation_max_age)

    @staticmethod
    def _signature_ok(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        try:
            key.verify(signature, data, _PKCS1, _SHA256)
        except (InvalidSignature, ValueError):
            return False
        return True
