"""Revocation: CRLs at JPKI scale (build, sign, load, look up).

```python
from jpki.revocation import build_crl, LoadedCRL, RevokedEntry, CRLError
der = build_crl(ca_cert, ca_key, entries, crl_number=n, this_update=t0, next_update=t1)
crl = LoadedCRL.from_der(der, ca_cert, now=now)     # CRLError(reason) when rejected
crl.lookup(serial)                                   # RevokedEntry | None
```

This package imports no card layer (``jpki.session``, ``jpki.transport``, ``jpki.apdu``): a
server checks revocation without any card library installed.
"""

from jpki.revocation.crl import (
    CRL_EXPIRED,
    CRL_ISSUER_MISMATCH,
    CRL_MALFORMED,
    CRL_NOT_YET_VALID,
    CRL_REASONS,
    CRL_SIGNATURE_INVALID,
    CRL_UNSUPPORTED_EXTENSION,
    MAX_CRL_NUMBER,
    MAX_SERIAL,
    REASON_CODES,
    CRLError,
    LoadedCRL,
    RevokedEntry,
    build_crl,
)

__all__ = [
    "CRL_EXPIRED",
    "CRL_ISSUER_MISMATCH",
    "CRL_MALFORMED",
    "CRL_NOT_YET_VALID",
    "CRL_REASONS",
    "CRL_SIGNATURE_INVALID",
    "CRL_UNSUPPORTED_EXTENSION",
    "MAX_CRL_NUMBER",
    "MAX_SERIAL",
    "REASON_CODES",
    "CRLError",
    "LoadedCRL",
    "RevokedEntry",
    "build_crl",
]
