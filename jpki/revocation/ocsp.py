"""An OCSP responder core (RFC 6960, RFC 5019 profile): request bytes in, response bytes out.

No HTTP here (see :mod:`jpki.pki.server`), no files: the certificate statuses come from an
injected look-up, the time from an injected clock, and the signing keys are given.

```python
from jpki.revocation.ocsp import OcspResponder, SqliteStatusLookup
responder = OcspResponder(
    SqliteStatusLookup(ca_dir / "certs.db"),            # or CertificateDB.get
    {"auth": (auth_ca_cert, responder_cert, responder_key),
     "sign": (sign_ca_cert, responder_cert2, responder_key2)},
    clock,
)
der = responder.respond(request_der)                    # never raises
responder.invalidate(serial)                            # after a revocation
```

What it answers:

* each CertID of the request (SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 issuer hashes) gets a
  SingleResponse that echoes the CertID byte for byte: ``good``; ``revoked`` with the revocation
  time and reason (the reason is left out when it is ``unspecified``, as RFC 5280 §5.3.1 asks of
  CRLs) and, when recorded, the invalidity date as a singleExtension; or ``unknown`` when the
  serial is not in the database, or is there for the other CA;
* thisUpdate = now, nextUpdate = thisUpdate + freshness, producedAt = now (whole seconds);
* the nonce extension is echoed (RFC 9654: a nonce of 0 or more than 128 octets is a
  ``malformedRequest``);
* the response is signed by the delegated responder certificate of the CA named by the CertIDs,
  identified byKey, and that certificate is included in ``certs``.

Status mapping from the database: ``revoked`` is revoked; ``superseded`` is revoked (reason
``superseded`` unless another is stored) only when the database holds a revocation time for it,
otherwise it is answered ``good`` — a superseded certificate without a revocation time has not
been revoked, and a CRL could not list it either.

Errors are OCSP responses, never exceptions: ``malformedRequest`` for anything that is not a
DER OCSPRequest as ``cryptography`` reads it (trailing bytes, BER lengths, an encoded DEFAULT
such as an explicit v1 version or ``critical FALSE``, a non-minimal INTEGER), a wrong version,
no CertID, a critical request extension we do not know, a bad nonce, for requests larger than
``max_request_size`` bytes or naming more than ``max_certids`` CertIDs; ``unauthorized`` when
a CertID names an issuer this responder does not serve (another CA, even one with the same DN,
an unknown hash algorithm, a CertID of the other kind on a kind-specific endpoint, CertIDs of two
different CAs in one request); ``tryLater`` when the database is busy or unavailable;
``internalError`` for anything unexpected.

Caching (RFC 5019 §2.1.1, §6): a response to a request without a nonce is kept per list of
CertIDs (usually one) and returned again, byte for byte and without signing, until its
nextUpdate (at most ``cache_size`` responses, least recently used dropped first). A cached
response is never stale with respect to the database: before it is returned, the responder asks
the look-up for its ``snapshot_token()`` (:class:`SqliteStatusLookup`: SQLite's
``PRAGMA data_version``, which moves on any commit by any process); if the database changed since
the answer was known right, each serial's status is read again (an indexed look-up) and the entry
dropped if an answer changed. A look-up without ``snapshot_token`` (``CertificateDB.get``) is
simply asked every time. So a revocation made by another process (``jpki card lost`` while the
server runs) is seen at once, not after the freshness window. :meth:`OcspResponder.invalidate`
(or :meth:`OcspResponder.status_changed`, its listener form) drops a serial's entries eagerly.
Repeated request bytes (up to 1 KiB) are remembered, so a cache hit skips parsing as well:
about 17 µs per cached answer against ~0.7-1 ms for a signed one (RSA-2048).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import keys as _asn1_keys
from asn1crypto import ocsp as _asn1_ocsp
from asn1crypto import x509 as _asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp as _x509_ocsp
from cryptography.x509.oid import OCSPExtensionOID

from jpki.clock import Clock
from jpki.der import DerError as _DerError
from jpki.der import encode_integer as _integer
from jpki.der import encode_oid as _oid
from jpki.der import generalized_time as _gtime
from jpki.der import read_header as _tlv_at
from jpki.der import seq as _seq
from jpki.der import tlv as _tlv
from jpki.errors import UsageError

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_FRESHNESS",
    "DEFAULT_MAX_CERTIDS",
    "MAX_NONCE_LENGTH",
    "MAX_REQUEST_SIZE",
    "CertAnswer",
    "OcspResponder",
    "OcspResult",
    "ResponseStatus",
    "SqliteStatusLookup",
    "StatusLookup",
    "StatusRecord",
    "StatusRow",
    "unsuccessful_response",
]

_log = logging.getLogger(__name__)

DEFAULT_FRESHNESS = _dt.timedelta(minutes=15)
#: Cached responses kept (each about 2 KB: the response includes the responder certificate).
DEFAULT_CACHE_SIZE = 20_000
#: Requests up to this size are remembered byte for byte, so that a repeat skips parsing.
_MEMO_MAX_REQUEST = 1024
#: Requests larger than this many bytes are refused (malformedRequest).
MAX_REQUEST_SIZE = 64 * 1024
DEFAULT_MAX_CERTIDS = 64
#: RFC 9654: a nonce has 1 to 128 octets.
MAX_NONCE_LENGTH = 128

#: CertID hash algorithms we answer for: hashlib name → OID. A CertID of any other algorithm
#: names no issuer served here (``unauthorized``).
_HASH_ALGORITHMS = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
_HASH_BY_OID = {oid: name for name, oid in _HASH_ALGORITHMS.items()}

#: CRLReason codes (RFC 5280 §5.3.1) by the database's reason text (x509.ReasonFlags values).
_REASON_CODES = {
    "unspecified": 0,
    "keyCompromise": 1,
    "cACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "certificateHold": 6,
    "removeFromCRL": 8,
    "privilegeWithdrawn": 9,
    "aACompromise": 10,
}


class ResponseStatus(enum.IntEnum):
    """OCSPResponseStatus (RFC 6960 §4.2.1)."""

    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    SIG_REQUIRED = 5
    UNAUTHORIZED = 6


def unsuccessful_response(status: ResponseStatus) -> bytes:
    """The DER of an OCSPResponse carrying only an error ``status`` (no responseBytes)."""
    if status is ResponseStatus.SUCCESSFUL:
        raise UsageError("a successful response needs responseBytes")
    return bytes([0x30, 0x03, 0x0A, 0x01, int(status)])


# --------------------------------------------------------------------------- DER
# Requests are read by cryptography (strict DER, about 2 µs for the usual one-CertID request),
# and by asn1crypto for the shapes cryptography does not expose (several CertIDs, single request
# extensions, hash parameters left out, a bare nonce). Responses are written with jpki.der:
# cryptography's builder takes one SingleResponse, no singleExtensions and the system clock.

_DER_NULL = b"\x05\x00"
_OID_NONCE = OCSPExtensionOID.NONCE.dotted_string
_DER_OID_NONCE = _oid(_OID_NONCE)
_DER_OID_INVALIDITY_DATE = _oid("2.5.29.24")
_OID_SERVICE_LOCATOR = "1.3.6.1.5.5.7.48.1.7"
#: Request extensions we understand (a critical one we do not is a malformedRequest): nonce,
#: acceptable responses (we only make basic responses), preferred signature algorithms.
_KNOWN_REQUEST_EXTENSIONS = {_OID_NONCE, "1.3.6.1.5.5.7.48.1.4", "1.3.6.1.5.5.7.48.1.8"}
_DER_OID_OCSP_BASIC = _oid("1.3.6.1.5.5.7.48.1.1")
_DER_SHA256_RSA = _seq(_oid("1.2.840.113549.1.1.11"), _DER_NULL)
_DER_ECDSA_SHA256 = _seq(_oid("1.2.840.10045.4.3.2"))
_DER_STATUS_GOOD = b"\x80\x00"
_DER_STATUS_UNKNOWN = b"\x82\x00"
#: The AlgorithmIdentifier of each CertID hash as OpenSSL, cryptography and Go write it (NULL
#: parameters): the usual request is checked against its re-encoding with these.
_DER_HASH_IDS = {name: _seq(_oid(oid), _DER_NULL) for name, oid in _HASH_ALGORITHMS.items()}
_HASH_BY_SIZE = {hashlib.new(name).digest_size: name for name in _HASH_ALGORITHMS}


def _raw_extensions(extensions: Any) -> list[tuple[str, bool, bytes]]:
    """(OID, critical, extnValue octets) of each Extension of an asn1crypto Extensions value
    (a falsy Void when the field is absent).

    Each is read again as asn1crypto's X.509 Extension, which leaves the value of an extension
    it does not know (the nonce among them) as octets: the OCSP module's own would decode a
    nonce's extnValue as an OCTET STRING, and refuse the bare nonce of old clients."""
    found = []
    for ext in extensions or ():
        raw = _asn1_x509.Extension.load(ext.dump(), strict=True)
        found.append((raw["extn_id"].dotted, bool(raw["critical"].native), bytes(raw["extn_value"].contents)))
    return found


# --------------------------------------------------------------------------- statuses


class StatusRecord(Protocol):
    """What the responder needs to know about a certificate (``CertRecord`` fits)."""

    @property
    def kind(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def revoked_at(self) -> _dt.datetime | None: ...

    @property
    def reason(self) -> str | None: ...


#: ``serial -> record or None``. Must be safe to call from several threads.
StatusLookup = Callable[[int], "StatusRecord | None"]


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRow:
    """A certificate's status as read by :class:`SqliteStatusLookup`."""

    kind: str
    status: str
    revoked_at: _dt.datetime | None
    reason: str | None
    invalidity_date: _dt.datetime | None = None


class SqliteStatusLookup:
    """Reads statuses from the test CA's ``certs.db`` through read-only connections.

    One connection per thread (SQLite connections are not shared), opened with ``mode=ro``: the
    responder cannot change the database whatever it is sent. The look-up is by the primary key
    (``serial``), so it stays a B-tree probe at millions of rows. A busy or missing database
    raises ``sqlite3.OperationalError``, which the responder turns into ``tryLater``.
    """

    def __init__(self, db_path: Path | str, *, timeout: float = 2.0) -> None:
        self.path = Path(db_path)
        if not self.path.is_file():
            raise UsageError(f"no certificate database at {self.path}")
        self._timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._select = ""

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise sqlite3.OperationalError("status look-up closed")
                conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=self._timeout,
                    check_same_thread=False,
                )
                self._connections.append(conn)
                if not self._select:
                    # Databases made before invalidity dates were recorded lack the column.
                    columns = {r[1] for r in conn.execute("PRAGMA table_info(certificates)")}
                    invalid = "invalidity_date" if "invalidity_date" in columns else "NULL"
                    self._select = (
                        f"SELECT kind, status, revoked_at, reason, {invalid}"
                        " FROM certificates WHERE serial = ?"
                    )
            self._local.conn = conn
        return conn

    def __call__(self, serial: int) -> StatusRow | None:
        """The status of ``serial``, or None if the CA never issued it."""
        if serial <= 0:
            return None
        conn = self._connection()
        row = conn.execute(self._select, (format(serial, "x"),)).fetchone()
        if row is None:
            return None
        kind, status, revoked_at, reason, invalid = row
        if revoked_at is None:
            return StatusRow(kind, status, None, reason)
        return StatusRow(
            kind,
            status,
            _dt.datetime.fromisoformat(revoked_at),
            reason,
            None if invalid is None else _dt.datetime.fromisoformat(invalid),
        )

    def snapshot_token(self) -> tuple[int, int]:
        """A value that changes whenever the database changes (this thread's connection and
        its ``PRAGMA data_version``, which moves on every commit by any other connection, in any
        process). The responder uses it to skip re-reading statuses for cached responses."""
        conn = self._connection()
        return id(conn), conn.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        """Close every connection (those of other threads too)."""
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class CertAnswer:
    """The status given for one CertID: ``good``, ``revoked`` or ``unknown``."""

    status: str
    revoked_at: _dt.datetime | None = None
    reason: str | None = None
    #: When the key is known or suspected to have been compromised (sent as the CRL entry
    #: extension invalidityDate among the singleExtensions, as the CRL does).
    invalidity_date: _dt.datetime | None = None

    def der(self) -> bytes:
        """The DER of the CertStatus CHOICE."""
        if self.status == "good":
            return _DER_STATUS_GOOD
        if self.status == "unknown":
            return _DER_STATUS_UNKNOWN
        assert self.revoked_at is not None
        body = _gtime(self.revoked_at)
        code = _REASON_CODES.get(self.reason or "unspecified", 0)
        if code:
            body += _tlv(0xA0, bytes([0x0A, 0x01, code]))
        return _tlv(0xA1, body)

    def extensions_der(self) -> bytes:
        """The DER of ``singleExtensions`` ([1] EXPLICIT), or nothing."""
        if self.invalidity_date is None:
            return b""
        return _tlv(0xA1, _seq(_seq(_DER_OID_INVALIDITY_DATE, _tlv(0x04, _gtime(self.invalidity_date)))))


_GOOD = CertAnswer("good")
_UNKNOWN = CertAnswer("unknown")


def _answer(record: StatusRecord | None, kind: str) -> CertAnswer:
    if record is None or record.kind != kind:
        return _UNKNOWN
    if record.status == "revoked" or (record.status == "superseded" and record.revoked_at is not None):
        if record.revoked_at is None:  # a revoked row always has a time; be safe anyway
            return _UNKNOWN
        reason = record.reason
        if reason is None and record.status == "superseded":
            reason = "superseded"
        return CertAnswer("revoked", record.revoked_at, reason, getattr(record, "invalidity_date", None))
    return _GOOD


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class OcspResult:
    """What :meth:`OcspResponder.process` did: the DER to send, and why.

    ``detail`` says in words why an unsuccessful status was given (for logs; never sent).
    """

    der: bytes
    status: ResponseStatus
    kind: str | None = None
    this_update: _dt.datetime | None = None
    next_update: _dt.datetime | None = None
    answers: tuple[CertAnswer, ...] = ()
    nonce: bool = False
    cached: bool = False
    detail: str = ""


class _Refused(Exception):
    def __init__(self, status: ResponseStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class _CertId:
    der: bytes  # as received, echoed in the response
    algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Request:
    cert_ids: tuple[_CertId, ...]
    nonce_ext: bytes | None  # the DER of the whole nonce Extension to echo


@dataclasses.dataclass(slots=True)
class _Signer:
    kind: str
    issuer: x509.Certificate
    cert: x509.Certificate
    cert_der: bytes
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    responder_id: bytes  # DER of ResponderID byKey
    sig_alg: bytes


@dataclasses.dataclass(slots=True)
class _CacheEntry:
    der: bytes
    kind: str
    this_update: _dt.datetime
    next_update: _dt.datetime
    answers: tuple[CertAnswer, ...]
    serials: tuple[int, ...]  # one per CertID, in order
    token: object  # the lookup's snapshot token when ``answers`` were last known right


def _spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING value (without the unused-bits octet): what CertID's
    issuerKeyHash and ResponderID's byKey hash."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes(_asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])


# --------------------------------------------------------------------------- the responder


class OcspResponder:
    """Answers OCSP requests for the CAs in ``issuers``; thread-safe.

    ``issuers`` maps a CA kind (``'sign'``, ``'auth'``) to ``(issuer_cert, responder_cert,
    responder_key)``: the CA certificate, the delegated responder certificate it issued (with
    id-kp-OCSPSigning), and that certificate's private key (RSA, or EC). ``lookup`` gives a
    serial's status (:class:`SqliteStatusLookup`, or ``CertificateDB.get``). ``freshness`` is
    nextUpdate − thisUpdate and the cache lifetime; ``cache_size`` bounds the cached responses
    (least recently used go first; 0 disables the cache).
    """

    def __init__(
        self,
        lookup: StatusLookup,
        issuers: Mapping[
            str,
            tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
        ],
        clock: Clock,
        *,
        freshness: _dt.timedelta = DEFAULT_FRESHNESS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_request_size: int = MAX_REQUEST_SIZE,
        max_certids: int = DEFAULT_MAX_CERTIDS,
    ) -> None:
        if freshness <= _dt.timedelta(0):
            raise UsageError("freshness must be positive")
        if cache_size < 0 or max_request_size <= 0 or max_certids <= 0:
            raise UsageError("cache_size must be >= 0, max_request_size and max_certids > 0")
        if not issuers:
            raise UsageError("an OCSP responder needs at least one issuer")
        self._lookup = lookup
        self._clock = clock
        self.freshness = freshness
        self.cache_size = cache_size
        self.max_request_size = max_request_size
        self.max_certids = max_certids
        self._signers: dict[str, _Signer] = {}
        self._issuer_index: dict[tuple[str, bytes, bytes], str] = {}
        self._cache: OrderedDict[tuple[str, tuple[bytes, ...]], _CacheEntry] = OrderedDict()
        #: request bytes (and the kind asked for) → cache key: a repeated request skips parsing.
        self._memo: dict[tuple[str | None, bytes], tuple[str, tuple[bytes, ...]]] = {}
        self._token: Callable[[], object] | None = getattr(lookup, "snapshot_token", None)
        self._by_serial: dict[int, set[tuple[str, tuple[bytes, ...]]]] = {}
        self._lock = threading.Lock()
        #: Counters: responses signed, answered from the cache, refused (any error status).
        self.stats = {"signed": 0, "cache_hits": 0, "errors": 0}
        self._stats_lock = threading.Lock()
        for kind, (issuer, cert, key) in issuers.items():
            self.set_signer(kind, issuer, cert, key)

    def _bump(self, counter: str) -> None:
        with self._stats_lock:
            self.stats[counter] += 1

    # -- configuration

    def set_signer(
        self,
        kind: str,
        issuer: x509.Certificate,
        responder_cert: x509.Certificate,
        responder_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    ) -> None:
        """Serve ``kind`` (again) with this CA and responder; drops that kind's cached responses.

        Used at start and when the responder certificate is renewed.
        """
        if isinstance(responder_key, rsa.RSAPrivateKey):
            sig_alg = _DER_SHA256_RSA
        elif isinstance(responder_key, ec.EllipticCurvePrivateKey):
            sig_alg = _DER_ECDSA_SHA256
        else:
            raise UsageError("the responder key must be RSA or EC")
        pub = responder_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_pub = responder_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pub != key_pub:
            raise UsageError(f"{kind}: the responder key does not match the responder certificate")
        if responder_cert.issuer != issuer.subject:
            raise UsageError(f"{kind}: the responder certificate was not issued by the CA")
        signer = _Signer(
            kind=kind,
            issuer=issuer,
            cert=responder_cert,
            cert_der=responder_cert.public_bytes(serialization.Encoding.DER),
            key=responder_key,
            responder_id=_tlv(0xA2, _tlv(0x04, hashlib.sha1(_spki_bits(responder_cert)).digest())),
            sig_alg=sig_alg,
        )
        name_der = issuer.subject.public_bytes()
        key_bits = _spki_bits(issuer)
        with self._lock:
            self._issuer_index = {k: v for k, v in self._issuer_index.items() if v != kind}
            for algorithm in _HASH_ALGORITHMS:
                index_key = (
                    algorithm,
                    hashlib.new(algorithm, name_der).digest(),
                    hashlib.new(algorithm, key_bits).digest(),
                )
                self._issuer_index[index_key] = kind
            self._signers[kind] = signer
            self._memo.clear()
            for key in [k for k in self._cache if k[0] == kind]:
                self._drop(key)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._signers)

    def responder_cert(self, kind: str) -> x509.Certificate:
        """The responder certificate that signs ``kind``'s responses."""
        return self._signers[kind].cert

    # -- cache

    def _drop(self, key: tuple[str, tuple[bytes, ...]]) -> None:
        entry = self._cache.pop(key, None)
        if entry is None:
            return
        for serial in set(entry.serials):
            keys = self._by_serial.get(serial)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_serial[serial]

    def invalidate(self, serial: int | str) -> int:
        """Drop the cached responses that mention ``serial`` (int or hex text); returns how many.

        This is the hook to call when a certificate's status changes in this process; changes
        made elsewhere are caught anyway when a cached response is revalidated.
        """
        value = int(serial.replace(":", ""), 16) if isinstance(serial, str) else int(serial)
        with self._lock:
            keys = list(self._by_serial.get(value, ()))
            for key in keys:
                self._drop(key)
        return len(keys)

    def status_changed(self, serial: int | str, *_: object, **__: object) -> None:
        """Listener form of :meth:`invalidate` (accepts and ignores extra arguments)."""
        self.invalidate(serial)

    def invalidate_all(self) -> None:
        """Empty the cache."""
        with self._lock:
            self._cache.clear()
            self._by_serial.clear()
            self._memo.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    # -- answering

    def respond(self, request_der: bytes, *, kind: str | None = None) -> bytes:
        """The DER OCSPResponse for ``request_der``; never raises.

        ``kind`` restricts the answer to that CA (a kind-specific URL such as ``/ocsp/auth``);
        CertIDs of any other issuer are then ``unauthorized``.
        """
        return self.process(request_der, kind=kind).der

    def respond_cached(self, request_der: bytes, *, kind: str | None = None) -> OcspResult | None:
        """Answer without signing, or None when a new response must be signed.

        Answers malformed and unauthorized requests and those a cached response fits; an async
        server calls this on its event loop and sends only the rest (:meth:`process`) to a
        thread.
        """
        return self._process(request_der, kind, sign=False)

    def process(self, request_der: bytes, *, kind: str | None = None) -> OcspResult:
        """Like :meth:`respond`, with what was done (:class:`OcspResult`)."""
        result = self._process(request_der, kind, sign=True)
        assert result is not None
        return result

    def _process(self, request_der: bytes, kind: str | None, *, sign: bool) -> OcspResult | None:
        try:
            memo = self.cache_size and type(request_der) is bytes and len(request_der) <= _MEMO_MAX_REQUEST
            if memo:
                known = self._memo.get((kind, request_der))
                if known is not None:
                    now = self._clock.now().astimezone(_dt.UTC).replace(microsecond=0)
                    hit = self._cached(known, now)
                    if hit is not None:
                        return hit
            request = self._parse(request_der)
            signer = self._signer_for(request, kind)
            now = self._clock.now().astimezone(_dt.UTC).replace(microsecond=0)
            cache_key = None
            if request.nonce_ext is None and self.cache_size:
                cache_key = (signer.kind, tuple(c.der for c in request.cert_ids))
                if memo:
                    with self._lock:
                        if len(self._memo) >= self.cache_size:
                            self._memo.clear()
                        self._memo[(kind, request_der)] = cache_key
                hit = self._cached(cache_key, now)
                if hit is not None:
                    return hit
            if not sign:
                return None
            return self._build(request, signer, now, cache_key)
        except _Refused as refused:
            self._bump("errors")
            return OcspResult(
                unsuccessful_response(refused.status), refused.status, detail=refused.detail
            )
        except sqlite3.OperationalError as exc:
            self._bump("errors")
            _log.warning("OCSP: certificate database unavailable: %s", exc)
            return OcspResult(
                unsuccessful_response(ResponseStatus.TRY_LATER),
                ResponseStatus.TRY_LATER,
                detail=f"database unavailable: {exc}",
            )
        except Exception as exc:  # noqa: BLE001 - the responder must keep serving, whatever happens
            self._bump("errors")
            _log.exception("OCSP: internal error")
            return OcspResult(
                unsuccessful_response(ResponseStatus.INTERNAL_ERROR),
                ResponseStatus.INTERNAL_ERROR,
                detail=f"internal error: {type(exc).__name__}: {exc}",
            )

    def _parse(self, der: bytes) -> _Request:
        malformed = ResponseStatus.MALFORMED_REQUEST
        if not isinstance(der, (bytes, bytearray, memoryview)):
            raise _Refused(malformed, "the request is not bytes")
        der = bytes(der)
        if len(der) > self.max_request_size:
            raise _Refused(malformed, f"request of {len(der)} bytes (limit {self.max_request_size})")
        if not der:
            raise _Refused(malformed, "empty request")
        return self._parse_der(der)

    def _parse_der(self, der: bytes) -> _Request:
        """Read an OCSPRequest (RFC 6960 §4.1.1); raises _Refused.

        cryptography reads it (strict DER: definite minimal lengths, every byte accounted for)
        and refuses a request list of other than one Request with NotImplementedError, after
        reading all of it. A request that is exactly the encoding of what cryptography read
        (one CertID with NULL hash parameters, at most a nonce) is answered from that; any
        other well-formed request is read again with asn1crypto."""
        malformed = ResponseStatus.MALFORMED_REQUEST
        try:
            request = _x509_ocsp.load_der_ocsp_request(der)
        except NotImplementedError:  # no Request, or several
            return self._parse_general(der)
        except ValueError as exc:
            raise _Refused(malformed, f"not an OCSPRequest: {exc}") from None
        plain = self._parse_plain(request, der)
        return plain if plain is not None else self._parse_general(der)

    def _parse_plain(self, request: _x509_ocsp.OCSPRequest, der: bytes) -> _Request | None:
        """The request if ``der`` is the plain encoding of what cryptography read, else None."""
        try:
            extensions = request.extensions
        except (ValueError, x509.DuplicateExtension):
            return None
        name_hash, key_hash, serial = request.issuer_name_hash, request.issuer_key_hash, request.serial_number
        # The algorithm that makes hashes of this size; the comparison below checks the OID.
        algorithm = _HASH_BY_SIZE.get(len(name_hash))
        if algorithm is None:
            return None
        nonce_ext = None
        request_extensions = b""
        if len(extensions):
            nonce = extensions[0].value
            if len(extensions) != 1 or extensions[0].critical or not isinstance(nonce, x509.OCSPNonce):
                return None
            nonce_ext = _seq(_DER_OID_NONCE, _tlv(0x04, _tlv(0x04, nonce.nonce)))
            request_extensions = _tlv(0xA2, _seq(nonce_ext))
        cert_id = _tlv(
            0x30, _DER_HASH_IDS[algorithm] + _tlv(0x04, name_hash) + _tlv(0x04, key_hash) + _integer(serial)
        )
        # OCSPRequest { TBSRequest { requestList { Request { CertID } } [, requestExtensions] } }
        if der != _tlv(0x30, _tlv(0x30, _tlv(0x30, _tlv(0x30, cert_id)) + request_extensions)):
            return None
        if nonce_ext is not None and not 1 <= len(nonce.nonce) <= MAX_NONCE_LENGTH:
            raise _Refused(
                ResponseStatus.MALFORMED_REQUEST,
                f"nonce of {len(nonce.nonce)} octets (1..{MAX_NONCE_LENGTH})",
            )
        return _Request((_CertId(cert_id, algorithm, name_hash, key_hash, serial),), nonce_ext)

    def _parse_general(self, der: bytes) -> _Request:
        """Read with asn1crypto a request that cryptography found well formed (strict DER) but
        does not fully expose: several CertIDs, singleRequestExtensions, a CertID without hash
        parameters (echoed as sent), a bare nonce, other request extensions."""
        malformed = ResponseStatus.MALFORMED_REQUEST
        try:
            tbs = _asn1_ocsp.OCSPRequest.load(der, strict=True)["tbs_request"]
            if tbs["version"].native != "v1":
                raise _Refused(malformed, "unsupported request version")
            nonce_ext = self._request_extensions(tbs["request_extensions"])
            cert_ids: list[_CertId] = []
            for request in tbs["request_list"]:
                if len(cert_ids) >= self.max_certids:
                    raise _Refused(malformed, f"more than {self.max_certids} CertIDs in one request")
                for oid, critical, _ in _raw_extensions(request["single_request_extensions"]):
                    if critical and oid != _OID_SERVICE_LOCATOR:
                        raise _Refused(malformed, f"critical single extension {oid}")
                cid = request["req_cert"]
                hash_algorithm = cid["hash_algorithm"]
                if hash_algorithm["parameters"].dump() not in (b"", _DER_NULL):
                    raise _Refused(malformed, "hash algorithm with parameters")
                oid = hash_algorithm["algorithm"].dotted
                cert_ids.append(
                    _CertId(
                        der=cid.dump(),  # as received: asn1crypto keeps the bytes it parsed
                        algorithm=_HASH_BY_OID.get(oid, oid),
                        name_hash=cid["issuer_name_hash"].native,
                        key_hash=cid["issuer_key_hash"].native,
                        serial=cid["serial_number"].native,
                    )
                )
        except ValueError as exc:
            raise _Refused(malformed, f"not an OCSPRequest: {exc}") from None
        if not cert_ids:
            raise _Refused(malformed, "the request names no certificate")
        return _Request(tuple(cert_ids), nonce_ext)

    def _request_extensions(self, extensions: Any) -> bytes | None:
        """Check the requestExtensions; the nonce Extension to echo (DER), if any."""
        malformed = ResponseStatus.MALFORMED_REQUEST
        nonce_ext = None
        seen: set[str] = set()
        for oid, critical, raw in _raw_extensions(extensions):
            if oid in seen:
                raise _Refused(malformed, f"duplicate request extension {oid}")
            seen.add(oid)
            if oid == _OID_NONCE:
                # extnValue holds the DER of Nonce ::= OCTET STRING; some old clients put the
                # bare nonce there instead. Either way the extension is echoed as received.
                nonce_len = len(raw)
                try:
                    tag, npos, nend = _tlv_at(raw, 0, len(raw))
                    if tag == 0x04 and nend == len(raw):
                        nonce_len = nend - npos
                except _DerError:
                    pass
                if not 1 <= nonce_len <= MAX_NONCE_LENGTH:
                    raise _Refused(malformed, f"nonce of {nonce_len} octets (1..{MAX_NONCE_LENGTH})")
                nonce_ext = _seq(_DER_OID_NONCE, _tlv(0x04, raw))
            elif critical and oid not in _KNOWN_REQUEST_EXTENSIONS:
                raise _Refused(malformed, f"critical request extension {oid} not understood")
        return nonce_ext

    def _signer_for(self, request: _Request, kind: str | None) -> _Signer:
        unauthorized = ResponseStatus.UNAUTHORIZED
        if kind is not None and kind not in self._signers:
            raise _Refused(unauthorized, f"no responder for {kind!r}")
        index = self._issuer_index
        found: str | None = None
        for cid in request.cert_ids:
            issuer_kind = index.get((cid.algorithm, cid.name_hash, cid.key_hash))
            if issuer_kind is None:
                raise _Refused(unauthorized, f"CertID of serial {cid.serial:x}: issuer not served here")
            if kind is not None and issuer_kind != kind:
                raise _Refused(unauthorized, f"CertID of the {issuer_kind} CA sent to the {kind} responder")
            if found is not None and issuer_kind != found:
                raise _Refused(unauthorized, "CertIDs of different CAs in one request")
            found = issuer_kind
        assert found is not None
        return self._signers[found]

    def _answers(self, serials: tuple[int, ...], kind: str) -> tuple[CertAnswer, ...]:
        lookup = self._lookup
        return tuple(_answer(lookup(serial) if serial > 0 else None, kind) for serial in serials)

    def _cached(self, key: tuple[str, tuple[bytes, ...]], now: _dt.datetime) -> OcspResult | None:
        with self._lock:
            entry = self._cache.get(key)
        if entry is None:
            return None
        fresh = entry.this_update <= now < entry.next_update
        if fresh:
            # Statuses are re-read unless the database provably has not changed since they were
            # (the token is read first: a change landing during the look-ups moves it).
            token = self._token() if self._token is not None else None
            if token is None or token != entry.token:
                fresh = self._answers(entry.serials, key[0]) == entry.answers
                if fresh:
                    entry.token = token
        if not fresh:
            with self._lock:
                if self._cache.get(key) is entry:
                    self._drop(key)
            return None
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
        self._bump("cache_hits")
        return OcspResult(
            entry.der,
            ResponseStatus.SUCCESSFUL,
            kind=entry.kind,
            this_update=entry.this_update,
            next_update=entry.next_update,
            answers=entry.answers,
            cached=True,
        )

    def _build(
        self,
        request: _Request,
        signer: _Signer,
        now: _dt.datetime,
        cache_key: tuple[str, tuple[bytes, ...]] | None,
    ) -> OcspResult:
        token = self._token() if self._token is not None else None
        serials = tuple(cid.serial for cid in request.cert_ids)
        answers = self._answers(serials, signer.kind)
        this_update = now
        next_update = now + self.freshness
        times = _gtime(this_update) + _tlv(0xA0, _gtime(next_update))
        singles = b"".join(
            _seq(cid.der, answer.der(), times, answer.extensions_der())
            for cid, answer in zip(request.cert_ids, answers, strict=True)
        )
        tbs = _seq(
            signer.responder_id,
            _gtime(now),
            _seq(singles),
            _tlv(0xA1, _seq(request.nonce_ext)) if request.nonce_ext is not None else b"",
        )
        if isinstance(signer.key, rsa.RSAPrivateKey):
            signature = signer.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = signer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
        basic = _seq(
            tbs,
            signer.sig_alg,
            _tlv(0x03, b"\x00" + signature),
            _tlv(0xA0, _seq(signer.cert_der)),
        )
        der = _seq(
            b"\x0a\x01\x00",
            _tlv(0xA0, _seq(_DER_OID_OCSP_BASIC, _tlv(0x04, basic))),
        )
        self._bump("signed")
        if cache_key is not None:
            entry = _CacheEntry(der, signer.kind, this_update, next_update, answers, serials, token)
            with self._lock:
                if self._signers.get(signer.kind) is signer:  # not replaced meanwhile
                    self._drop(cache_key)
                    self._cache[cache_key] = entry
                    for serial in set(serials):
                        self._by_serial.setdefault(serial, set()).add(cache_key)
                    while len(self._cache) > self.cache_size:
                        self._drop(next(iter(self._cache)))
        return OcspResult(
            der,
            ResponseStatus.SUCCESSFUL,
            kind=signer.kind,
            this_update=this_update,
            next_update=next_update,
            answers=answers,
            nonce=request.nonce_ext is not None,
        )
