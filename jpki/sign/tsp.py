"""RFC 3161 timestamps for signatures: a client for any timestamp authority (TSA) over HTTP.

A :class:`Timestamper` turns a digest into a TimeStampToken (the DER of a CMS ContentInfo
holding a SignedData over a TSTInfo). :class:`HttpTimestamper` asks any RFC 3161 TSA by URL —
``jpki tsa serve``, or a commercial one — the way RFC 3161 §3.4 says: a ``TimeStampReq``
(version 1, the message imprint, a random 64-bit nonce, ``certReq`` TRUE so that the token
carries the TSA's certificate) POSTed as ``application/timestamp-query``; the answer must be a
``TimeStampResp`` whose status is ``granted`` or ``grantedWithMods`` and whose token is a
SignedData over a TSTInfo with the same imprint and the same nonce. The token's signature and
the TSA's certificate are checked at verification time (:mod:`jpki.sign.cms`,
:mod:`jpki.verify`), where they must be, not here.

The HTTP goes through :class:`jpki.verify.fetch.HttpFetcher` (an overall deadline per request),
or any :class:`jpki.verify.fetch.Fetch` given (tests call an app in process). What goes wrong
is the same error as :func:`jpki.tsa.request_timestamp`'s (one code for a program to rely on):
:class:`~jpki.tsa.TimestampError` (``reason`` ``unreachable`` or ``bad-reply``), or
:class:`~jpki.tsa.TimestampRefusedError` for a refusal (its PKIStatus and failInfo).

```python
stamper = HttpTimestamper("http://127.0.0.1:8318/tsr")
token_der = stamper.stamp("sha256", hashlib.sha256(signature_value).digest())
```
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol

from asn1crypto import algos, cms, tsp

from .. import der
from ..errors import UsageError
from ..tsa.client import TimestampError, TimestampRefusedError
from ..tsa.protocol import rfc_name
from ..verify.fetch import Fetch, HttpFetcher

__all__ = ["TIMESTAMP_QUERY_TYPE", "HttpTimestamper", "TimestampError", "TimestampRefusedError",
           "Timestamper", "check_response", "tst_info_of"]

TIMESTAMP_QUERY_TYPE = "application/timestamp-query"
#: Digests a timestamp imprint may use.
IMPRINT_DIGESTS = ("sha256", "sha384", "sha512")


class Timestamper(Protocol):
    """What makes signature and archive timestamps: :class:`HttpTimestamper`, or anything
    else with ``name`` (shown in reports and errors) and ``stamp``."""

    name: str

    def stamp(self, algorithm: str, digest: bytes) -> bytes:
        """The DER TimeStampToken (a ContentInfo) over ``digest``, made with ``algorithm``."""
        ...


def tst_info_of(token: cms.ContentInfo) -> tsp.TSTInfo:
    """The TSTInfo inside a TimeStampToken (ValueError when it is not one)."""
    if token["content_type"].native != "signed_data":
        raise ValueError("the token is not a SignedData")
    eci = token["content"]["encap_content_info"]
    if eci["content_type"].native != "tst_info":
        raise ValueError("the token does not hold a TSTInfo")
    info = tsp.TSTInfo.load(eci["content"].contents)
    return info


class HttpTimestamper:
    """An RFC 3161 client of the TSA at ``url`` (http or https).

    ``fetch`` does the HTTP (default: a :class:`~jpki.verify.fetch.HttpFetcher` with a
    ``deadline`` of 10 s); ``nonce`` sends a random nonce, which the answer must echo.
    """

    def __init__(self, url: str, *, fetch: Fetch | None = None, nonce: bool = True,
                 deadline: float = 10.0) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise UsageError(f"--tsa wants an http(s) URL, not {url!r}")
        self.url = url
        self.name = url
        self._own_fetcher = fetch is None
        self.fetch: Fetch = fetch if fetch is not None else HttpFetcher(deadline=deadline)
        self.nonce = nonce
        #: How many tokens this client obtained.
        self.tokens = 0

    def close(self) -> None:
        """Close the connection pool of the default fetcher."""
        close = getattr(self.fetch, "close", None)
        if self._own_fetcher and callable(close):
            close()

    def request(self, algorithm: str, digest: bytes) -> tuple[bytes, int | None]:
        """The DER TimeStampReq for ``digest`` and the nonce it carries."""
        if algorithm not in IMPRINT_DIGESTS:
            raise UsageError(f"unsupported timestamp digest {algorithm!r}: use one of {IMPRINT_DIGESTS}")
        if len(digest) != hashlib.new(algorithm).digest_size:
            raise UsageError(f"a {algorithm} digest has {hashlib.new(algorithm).digest_size} bytes, "
                             f"not {len(digest)}")
        nonce = secrets.randbits(63) | 1 << 62 if self.nonce else None  # positive, 8 bytes of DER
        req: dict[str, object] = {
            "version": "v1",
            "message_imprint": {"hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
                                "hashed_message": digest},
            "cert_req": True,
        }
        if nonce is not None:
            req["nonce"] = nonce
        return tsp.TimeStampReq(req).dump(), nonce

    def stamp(self, algorithm: str, digest: bytes) -> bytes:
        """Ask the TSA for a token over ``digest``; TimestampError when it cannot give one."""
        body, nonce = self.request(algorithm, digest)
        try:
            answer = bytes(self.fetch(self.url, body, TIMESTAMP_QUERY_TYPE))
        except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same error
            raise TimestampError(self.url, "unreachable", f"{type(exc).__name__}: {exc}") from None
        token = check_response(answer, algorithm, digest, nonce, url=self.url)
        self.tokens += 1
        return token


def check_response(answer: bytes, algorithm: str, digest: bytes, nonce: int | None, *,
                   url: str | None = None) -> bytes:
    """The token of a TimeStampResp after the RFC 3161 §2.4.2 client checks (status, imprint,
    nonce); TimestampRefusedError for a refusal, TimestampError (``bad-reply``) otherwise."""
    where = url or "(no URL given)"
    try:
        # TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken OPTIONAL }, read by
        # hand: asn1crypto cannot parse one without its token (every refusal)
        _, start, stop = der.read_header(answer, 0, len(answer))
        _, _, status_end = der.read_header(answer, start, stop)
        status_info = tsp.PKIStatusInfo.load(answer[start:status_end])
        status = status_info["status"].native
        if status not in ("granted", "granted_with_mods"):
            text = "; ".join(status_info["status_string"].native or [])
            fail = sorted(rfc_name(b) for b in (status_info["fail_info"].native or ()))
            raise TimestampRefusedError(where, str(status), fail, text[:300])
        if status_end == stop:
            raise TimestampError(where, "bad-reply", f"status {status} but no token")
        token = cms.ContentInfo.load(answer[status_end:stop])
        info = tst_info_of(token)
        imprint = info["message_imprint"]
        got_algorithm = imprint["hash_algorithm"]["algorithm"].native
        got_digest = imprint["hashed_message"].native
        got_nonce = info["nonce"].native
        token_der: bytes = token.dump()
    except TimestampError:
        raise
    except (ValueError, TypeError, LookupError) as exc:  # (der.DerError is a ValueError)
        raise TimestampError(where, "bad-reply", "the answer is not an RFC 3161 response: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None
    if got_algorithm != algorithm or not hmac.compare_digest(got_digest, digest):
        raise TimestampError(where, "bad-reply", "the token stamps another imprint than the one asked for")
    if nonce is not None and got_nonce != nonce:
        raise TimestampError(where, "bad-reply", "the token does not echo the nonce")
    return token_der
