"""RFC 3161 on the wire: reading a TimeStampReq, writing a refusal, making a query.

Pure functions over bytes (asn1crypto's ``tsp`` structures): no keys, no clock, no HTTP. The
authority (:mod:`jpki.tsa.authority`) signs what a request asks for; the client
(:mod:`jpki.tsa.client`) makes queries and reads answers.

What a request must be to be granted (anything else is answered with a ``rejection`` and the
RFC 3161 §2.4.2 failure bit that says why; never an exception, never an HTTP error):

* a DER/BER ``TimeStampReq`` and nothing after it, at most :data:`MAX_REQUEST_SIZE` bytes —
  else ``badDataFormat``;
* ``version`` 1 — else ``badRequest``;
* a ``messageImprint`` hashed with SHA-256, SHA-384 or SHA-512 (:data:`HASH_ALGORITHMS`; the
  AlgorithmIdentifier's parameters absent or NULL) — else ``badAlg``; a hashed message of that
  algorithm's length — else ``badDataFormat``;
* a ``reqPolicy``, when there is one, that is :data:`TSA_POLICY` — else ``unacceptedPolicy``;
* a ``nonce`` of at most :data:`MAX_NONCE_BYTES` octets — else ``badRequest``;
* no ``extensions`` (RFC 3161 §2.4.2: an extension the TSA does not know, critical or not,
  is refused) — else ``unacceptedExtension``.

The policy OID is on the project's own arc, :data:`PROJECT_ARC`: ``2.25.`` followed by a UUID
as an integer (ITU-T X.667 / RFC 4122 §4: an OID anyone may make without registering it; the
UUID 5fdc3b7a-0ea0-42b1-837f-84492ea3dab1 was drawn once for jpki). Under it, ``.1`` is
time-stamping and ``.1.1`` the test TSA's policy: no assurance of any kind (an emulator).
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from typing import ClassVar, Final

from asn1crypto import algos, cms, tsp

from jpki.errors import UsageError

__all__ = [
    "HASH_ALGORITHMS",
    "MAX_NONCE_BYTES",
    "MAX_REQUEST_SIZE",
    "PROJECT_ARC",
    "QUERY_TYPE",
    "REPLY_TYPE",
    "TSA_POLICY",
    "FailInfo",
    "RejectedRequest",
    "TimeStampResp",
    "TimestampRequest",
    "make_query",
    "new_nonce",
    "parse_request",
    "rejection",
    "rfc_name",
]

#: jpki's OID arc: ``2.25.<UUID 5fdc3b7a-0ea0-42b1-837f-84492ea3dab1 as an integer>`` (X.667).
PROJECT_ARC: Final = "2.25.127420171240973645412316758883384416945"
#: The test TSA's policy (TSTInfo.policy): PROJECT_ARC . 1 (time-stamping) . 1 (test, no assurance).
TSA_POLICY: Final = PROJECT_ARC + ".1.1"

#: Content types of RFC 3161 §3.4 (time-stamp protocol via HTTP).
QUERY_TYPE: Final = "application/timestamp-query"
REPLY_TYPE: Final = "application/timestamp-reply"

#: Imprint hash algorithms a request may use: name (asn1crypto, hashlib) -> digest length.
HASH_ALGORITHMS: Final = {"sha256": 32, "sha384": 48, "sha512": 64}
_HASH_OIDS: Final = {"2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384",
                     "2.16.840.1.101.3.4.2.3": "sha512"}

#: Largest request accepted (bytes). A TimeStampReq with a SHA-512 imprint, a policy and a 256-bit
#: nonce is under 200 bytes; the margin is for clients that add what they should not.
MAX_REQUEST_SIZE: Final = 4096
#: Longest nonce echoed (octets of the INTEGER's contents): openssl and pyHanko send 8.
MAX_NONCE_BYTES: Final = 32

#: What asn1crypto raises on bytes that are not the structure asked for.
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)


class TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc] # asn1crypto has no types
    """RFC 3161's TimeStampResp: asn1crypto 1.5 makes ``timeStampToken`` mandatory, but a
    refusal carries none (``timeStampToken TimeStampToken OPTIONAL``)."""

    _fields: ClassVar = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class FailInfo(enum.Enum):
    """The PKIFailureInfo bits of RFC 3161 §2.4.2 this TSA answers with (asn1crypto's names)."""

    BAD_ALG = "bad_alg"
    BAD_REQUEST = "bad_request"
    BAD_DATA_FORMAT = "bad_data_format"
    TIME_NOT_AVAILABLE = "time_not_available"
    UNACCEPTED_POLICY = "unaccepted_policy"
    UNACCEPTED_EXTENSION = "unaccepted_extension"
    SYSTEM_FAILURE = "system_failure"

    @property
    def rfc_name(self) -> str:
        """The name RFC 3161 gives the bit (``badAlg``, ``unacceptedPolicy``…)."""
        return rfc_name(self.value)


def rfc_name(bit: str) -> str:
    """RFC 3161's name of a PKIFailureInfo bit from asn1crypto's (``bad_alg`` → ``badAlg``)."""
    head, *rest = bit.split("_")
    return head + "".join(word.capitalize() for word in rest)


class RejectedRequest(Exception):
    """A request this TSA will not grant: the failure bit and a one-line reason (the
    ``statusString`` of the answer). Internal to :func:`parse_request`'s callers: the authority
    turns it into a ``rejection`` answer, never into an HTTP error."""

    def __init__(self, fail: FailInfo, text: str) -> None:
        super().__init__(text)
        self.fail = fail
        self.text = text


@dataclasses.dataclass(frozen=True, slots=True)
class TimestampRequest:
    """A TimeStampReq that passed every check of the module docstring."""

    hash_algorithm: str          # sha256 | sha384 | sha512
    message_imprint: tsp.MessageImprint  # echoed as sent
    nonce: int | None
    cert_req: bool
    policy: str | None           # the reqPolicy asked for, if any


def parse_request(der: bytes) -> TimestampRequest:
    """Read and check a TimeStampReq (see the module docstring); :class:`RejectedRequest`
    says why one is refused."""
    if len(der) > MAX_REQUEST_SIZE:
        raise RejectedRequest(FailInfo.BAD_DATA_FORMAT, f"the request is larger than {MAX_REQUEST_SIZE} bytes")
    try:
        req = tsp.TimeStampReq.load(der, strict=True)
        version = req["version"].native
        imprint = req["message_imprint"]
        algorithm = imprint["hash_algorithm"]
        oid = algorithm["algorithm"].dotted
        hashed = imprint["hashed_message"].native
        policy = req["req_policy"].dotted if req["req_policy"].native is not None else None
        nonce_field = req["nonce"]
        nonce = nonce_field.native
        nonce_size = len(nonce_field.contents) if nonce is not None else 0
        cert_req = bool(req["cert_req"].native)
        extensions = req["extensions"]
        has_extensions = extensions.native is not None
    except _DECODE_ERRORS:
        raise RejectedRequest(FailInfo.BAD_DATA_FORMAT, "the body is not a DER TimeStampReq") from None
    if version != "v1":
        raise RejectedRequest(FailInfo.BAD_REQUEST, f"unsupported TimeStampReq version {version}")
    name = _HASH_OIDS.get(oid)
    if name is None:
        raise RejectedRequest(FailInfo.BAD_ALG,
                              f"unsupported hash algorithm {oid} (use SHA-256, SHA-384 or SHA-512)")
    try:
        parameters = algorithm["parameters"].native  # absent (Void) or NULL: None
    except _DECODE_ERRORS:
        parameters = "unreadable"
    if parameters is not None:
        raise RejectedRequest(FailInfo.BAD_ALG, "the hash algorithm has parameters (must be absent or NULL)")
    if not isinstance(hashed, bytes) or len(hashed) != HASH_ALGORITHMS[name]:
        size = len(hashed) if isinstance(hashed, bytes) else 0
        raise RejectedRequest(FailInfo.BAD_DATA_FORMAT,
                              f"a {name} imprint is {HASH_ALGORITHMS[name]} bytes, not {size}")
    if policy is not None and policy != TSA_POLICY:
        raise RejectedRequest(FailInfo.UNACCEPTED_POLICY, f"policy {policy} is not this TSA's ({TSA_POLICY})")
    if nonce_size > MAX_NONCE_BYTES:
        raise RejectedRequest(FailInfo.BAD_REQUEST, f"the nonce is longer than {MAX_NONCE_BYTES} bytes")
    if has_extensions:
        raise RejectedRequest(FailInfo.UNACCEPTED_EXTENSION, "request extensions are not supported")
    return TimestampRequest(name, imprint, nonce, cert_req, policy)


def rejection(fail: FailInfo, text: str) -> bytes:
    """A TimeStampResp with status ``rejection``, ``text`` as its statusString and the bit of
    ``fail`` in its failInfo (RFC 3161 §2.4.2)."""
    status = tsp.PKIStatusInfo({"status": "rejection", "status_string": [text[:200]],
                                "fail_info": tsp.PKIFailureInfo({fail.value})})
    return bytes(TimeStampResp({"status": status}).dump())


def new_nonce() -> int:
    """A random positive 64-bit nonce (the width openssl and pyHanko use)."""
    return secrets.randbits(63) | (1 << 62)


def make_query(digest: bytes, hash_algorithm: str = "sha256", *, nonce: int | None = None,
               cert_req: bool = True, policy: str | None = None) -> bytes:
    """A DER TimeStampReq for ``digest`` (of ``hash_algorithm``: sha256, sha384 or sha512)."""
    if hash_algorithm not in HASH_ALGORITHMS:
        raise UsageError(f"unsupported hash algorithm {hash_algorithm!r}: use one of {', '.join(HASH_ALGORITHMS)}")
    if len(digest) != HASH_ALGORITHMS[hash_algorithm]:
        raise UsageError(f"a {hash_algorithm} digest is {HASH_ALGORITHMS[hash_algorithm]} bytes, not {len(digest)}")
    fields: dict[str, object] = {
        "version": "v1",
        "message_imprint": tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_algorithm}),
                                               "hashed_message": digest}),
        "cert_req": cert_req,
    }
    if policy is not None:
        fields["req_policy"] = policy
    if nonce is not None:
        fields["nonce"] = nonce
    return bytes(tsp.TimeStampReq(fields).dump())
