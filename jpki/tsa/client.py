"""Asking a TSA for a timestamp: the one RFC 3161 client (RFC 3161 §3.4, time-stamp protocol via HTTP).

::

    from jpki.tsa import HttpTimestamper, request_timestamp
    with HttpTimestamper("http://127.0.0.1:PORT/") as stamper:      # keeps its connections
        token_der = stamper.stamp("sha256", hashlib.sha256(signature_value).digest())
        token = stamper.timestamp("sha256", digest)                  # a TimestampToken
    token = request_timestamp("http://127.0.0.1:PORT/", data=signature_value)   # one request
    token.der, token.gen_time, token.serial, token.policy, token.certificates

A request is a ``TimeStampReq`` (:func:`jpki.tsa.protocol.make_query`: version 1, the message
imprint, a random 64-bit nonce, ``certReq`` TRUE so that the token carries the TSA's
certificate) POSTed as ``application/timestamp-query`` through a :class:`jpki.verify.Fetch`
(default :class:`~jpki.verify.fetch.HttpFetcher`: an overall deadline, a size limit). The answer
(:func:`check_response`) must be a ``TimeStampResp`` whose status is ``granted`` or
``grantedWithMods`` and whose token stamps the imprint asked for, echoes the nonce, holds the
TSA's certificate when certReq was set, and is signed by it with the content-type,
message-digest and ESS signingCertificate attributes RFC 3161 §2.4.1 asks for
(:func:`jpki.verify.timestamp.check_token`, the one place that checks tokens). Whether that
TSA is trusted — its certificate's profile, path and revocation at the token's time — is the
verifier's work (:func:`jpki.verify.timestamp.verify_token`, or CMS/PDF verification through
the validator), not the client's.

What goes wrong is one error for a program to rely on: :class:`TimestampRefusedError` (code
``timestamp_refused``: the TSA's PKIStatus, failInfo and statusString) or
:class:`TimestampError` (code ``timestamp_failed``; ``reason`` ``unreachable`` or
``bad-reply``). Signing code takes any :class:`Timestamper`; pyHanko gets this client through
:class:`jpki.sign.pdf.PyhankoTimestamper`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import TracebackType
from typing import Final, Protocol

from asn1crypto import core

from jpki.errors import JpkiError, UsageError, VerificationError
from jpki.tsa.protocol import (
    HASH_ALGORITHMS,
    QUERY_TYPE,
    TimeStampResp,
    make_query,
    new_nonce,
    rfc_name,
)
from jpki.verify.fetch import Fetch, HttpFetcher
from jpki.verify.timestamp import TimestampToken, TokenReason, check_token

__all__ = [
    "DEFAULT_DEADLINE",
    "MAX_REPLY_SIZE",
    "HttpTimestamper",
    "TimestampError",
    "TimestampRefusedError",
    "Timestamper",
    "check_response",
    "request_timestamp",
]

#: Largest TSA answer read (a token with a certificate chain is a few KiB).
MAX_REPLY_SIZE: Final = 256 * 1024
#: Seconds a whole request to a TSA may take.
DEFAULT_DEADLINE: Final = 10.0
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)
#: What the client says when a reply's token fails a check of :func:`check_token`.
_BAD_TOKEN: Final = {
    TokenReason.IMPRINT_MISMATCH: "the token stamps another imprint than the one asked for",
    TokenReason.NONCE_MISMATCH: "the token does not echo the nonce",
    TokenReason.NO_TSA_CERTIFICATE: "certReq was set but the token holds no certificate",
}


class TimestampError(JpkiError):
    """No token from the TSA at ``url``: ``reason`` is ``unreachable`` (no HTTP 200 answer),
    ``bad-reply`` (not a TimeStampResp, or a token for another imprint or nonce, or one its
    certificate did not sign) or ``refused`` (:class:`TimestampRefusedError`)."""

    code = "timestamp_failed"

    def __init__(self, url: str, reason: str, message: str) -> None:
        super().__init__(f"timestamp authority {url}: {message}")
        self.url = url
        self.reason = reason


class TimestampRefusedError(TimestampError):
    """The TSA answered but granted nothing: its PKIStatus (``status``), failInfo bits
    (``fail_info``, RFC 3161 names such as ``badAlg``) and statusString (``text``)."""

    code = "timestamp_refused"

    def __init__(self, url: str, status: str, fail_info: Sequence[str], text: str) -> None:
        detail = ", ".join(fail_info) or "no failInfo"
        super().__init__(url, "refused", f"refused ({status}: {detail})" + (f": {text}" if text else ""))
        self.status = status
        self.fail_info = tuple(fail_info)
        self.text = text


class Timestamper(Protocol):
    """What makes signature and archive timestamps: :class:`HttpTimestamper`, or anything
    else with ``name`` (shown in reports and errors) and ``stamp``."""

    name: str

    def stamp(self, algorithm: str, digest: bytes) -> bytes:
        """The DER TimeStampToken (a ContentInfo) over ``digest``, made with ``algorithm``."""
        ...


class HttpTimestamper:
    """An RFC 3161 client of the TSA at ``url`` (http or https): a :class:`Timestamper`.

    ``fetch`` does the HTTP (default: an :class:`~jpki.verify.fetch.HttpFetcher` with a
    ``deadline`` of 10 s and replies of at most :data:`MAX_REPLY_SIZE`, kept open until
    :meth:`close`); ``nonce`` sends a random nonce, which the answer must echo; ``cert_req``
    asks for the TSA's certificate in the token (which then must hold it); ``policy`` asks for
    a TSA policy.
    """

    def __init__(self, url: str, *, fetch: Fetch | None = None, nonce: bool = True, cert_req: bool = True,
                 policy: str | None = None, deadline: float = DEFAULT_DEADLINE) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise UsageError(f"a timestamp authority is asked at an http(s) URL, not {url!r}")
        self.url = url
        self.name = url
        self._own_fetcher = fetch is None
        self.fetch: Fetch = fetch if fetch is not None else HttpFetcher(deadline=deadline, max_size=MAX_REPLY_SIZE)
        self.nonce = nonce
        self.cert_req = cert_req
        self.policy = policy
        #: How many tokens this client obtained.
        self.tokens = 0

    def close(self) -> None:
        """Close the connection pool of the default fetcher."""
        close = getattr(self.fetch, "close", None)
        if self._own_fetcher and callable(close):
            close()

    def __enter__(self) -> HttpTimestamper:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, algorithm: str, digest: bytes) -> tuple[bytes, int | None]:
        """The DER TimeStampReq for ``digest`` (of ``algorithm``: sha256, sha384 or sha512)
        and the nonce it carries."""
        nonce = new_nonce() if self.nonce else None
        return make_query(digest, algorithm, nonce=nonce, cert_req=self.cert_req, policy=self.policy), nonce

    def timestamp(self, algorithm: str, digest: bytes) -> TimestampToken:
        """Ask the TSA for a token over ``digest``; TimestampError when it cannot give one."""
        body, nonce = self.request(algorithm, digest)
        try:
            answer = bytes(self.fetch(self.url, body, QUERY_TYPE))
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same error
            raise TimestampError(self.url, "unreachable", f"{type(exc).__name__}: {exc}") from None
        token = check_response(answer, algorithm, digest, nonce, url=self.url, cert_req=self.cert_req)
        self.tokens += 1
        return token

    def stamp(self, algorithm: str, digest: bytes) -> bytes:
        """The DER of :meth:`timestamp`'s token (what :class:`Timestamper` asks for)."""
        return self.timestamp(algorithm, digest).der


def check_response(answer: bytes, algorithm: str, digest: bytes, nonce: int | None, *,
                   url: str | None = None, cert_req: bool = True) -> TimestampToken:
    """The token of a TimeStampResp after the RFC 3161 §2.4.2 client checks (status, imprint,
    nonce, with ``cert_req`` the TSA's certificate in the token and its signature);
    TimestampRefusedError for a refusal, TimestampError (``bad-reply``) otherwise."""
    where = url or "(no URL given)"
    try:
        response = TimeStampResp.load(bytes(answer), strict=True)
        status_info = response["status"]
        status = str(status_info["status"].native)
        fail_info = sorted(rfc_name(b) for b in (status_info["fail_info"].native or ()))
        text = "; ".join(status_info["status_string"].native or [])
        granted = status in ("granted", "granted_with_mods")
        token_info = response["time_stamp_token"]
        token_der = token_info.dump() if granted and not isinstance(token_info, core.Void) else None
    except _DECODE_ERRORS as exc:
        detail = " ".join(str(exc).split())[:160]
        raise TimestampError(where, "bad-reply", "the answer is not an RFC 3161 response: "
                             f"{type(exc).__name__}: {detail}") from None
    if not granted:
        raise TimestampRefusedError(where, status, fail_info, text[:300])
    if token_der is None:
        raise TimestampError(where, "bad-reply", f"status {status} but no token")
    try:
        token, _ = check_token(token_der, imprint=lambda got: digest if got == algorithm else None,
                               nonce=nonce, signature=cert_req, profile=False)
    except VerificationError as exc:
        raise TimestampError(where, "bad-reply", _BAD_TOKEN.get(TokenReason(exc.reason), str(exc))) from None
    return token


def request_timestamp(url: str, data: bytes | None = None, *, digest: bytes | None = None,
                      hash_algorithm: str = "sha256", nonce: bool = True, cert_req: bool = True,
                      policy: str | None = None, fetch: Fetch | None = None) -> TimestampToken:
    """A timestamp token from the TSA at ``url`` for ``data`` (hashed here) or its ``digest``
    (of ``hash_algorithm``: sha256, sha384 or sha512), in one request of an
    :class:`HttpTimestamper`. See the module docstring."""
    if (data is None) == (digest is None):
        raise UsageError("give the data to timestamp or its digest, not both")
    if hash_algorithm not in HASH_ALGORITHMS:
        raise UsageError(f"unsupported hash algorithm {hash_algorithm!r}: use one of {', '.join(HASH_ALGORITHMS)}")
    imprint = hashlib.new(hash_algorithm, data).digest() if data is not None else bytes(digest or b"")
    with HttpTimestamper(url, fetch=fetch, nonce=nonce, cert_req=cert_req, policy=policy) as stamper:
        return stamper.timestamp(hash_algorithm, imprint)
