"""Time-stamping (RFC 3161): the test TSA beside the test CA, and the client side for signers.

For signing code (CAdES-T, PAdES B-T, archive timestamps)::

    from jpki.tsa import HttpTimestamper, request_timestamp, verify_token
    token = request_timestamp(url, data=signature_value)          # jpki.tsa.client
    check = verify_token(token, data=signature_value, trust=TrustStore.for_home(home))

The client side, the one of the project (every RFC 3161 request goes through it)::

    jpki.tsa.client        HttpTimestamper (the Timestamper signers take), request_timestamp,
                           check_response: build the query, post it, check the reply
    jpki.verify.timestamp  reading and checking tokens (check_token, verify_token; re-exported here)

The authority (it issues; it sits above :mod:`jpki.pki`, whose signing root certifies it)::

    jpki.tsa.protocol      reading TimeStampReq, writing refusals, making queries (no keys, no HTTP)
    jpki.tsa.credentials   HOME/tsa: the key, the certificate from the test CA, the URL (ensure_tsa)
    jpki.tsa.serials       the serial counter shared by worker processes (SQLite, fsync per serial)
    jpki.tsa.authority     TimeStampAuthority.respond(request) -> a signed TimeStampResp (no HTTP)
    jpki.tsa.app           the Starlette app and ``jpki tsa serve`` (through jpki.serving)

Importing this package imports the client side only (no CA, no server). See docs/tsa.md.
"""

from jpki.tsa.client import (
    HttpTimestamper,
    Timestamper,
    TimestampError,
    TimestampRefusedError,
    check_response,
    request_timestamp,
)
from jpki.tsa.protocol import PROJECT_ARC, QUERY_TYPE, REPLY_TYPE, TSA_POLICY
from jpki.verify.timestamp import TimestampToken, TokenCheck, TokenReason, verify_token

__all__ = [
    "PROJECT_ARC",
    "QUERY_TYPE",
    "REPLY_TYPE",
    "TSA_POLICY",
    "HttpTimestamper",
    "TimestampError",
    "TimestampRefusedError",
    "TimestampToken",
    "Timestamper",
    "TokenCheck",
    "TokenReason",
    "check_response",
    "request_timestamp",
    "verify_token",
]
