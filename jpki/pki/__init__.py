"""The emulator's test PKI: two JPKI-shaped roots, certificate profiles and the issuance DB.

```python
from jpki.pki import TestCA
ca = TestCA.init(path, clock=clock)            # or TestCA.open(path)
cert = ca.issue_sign_cert(pub, persona, card_id="alice", card_expiry=expiry)
```
"""

from jpki.pki.ca import CAExistsError, CANotFoundError, TestCA, free_port
from jpki.pki.db import (
    CertificateDB,
    CertificateStatusError,
    CertRecord,
    UnknownCertificateError,
    reason_value,
    serial_hex,
)
from jpki.pki.profiles import (
    CA_KINDS,
    CaKind,
    birthday_in,
    ca_name,
    card_expiry_for,
    end_of_day_jst,
    leaf_not_after,
    nth_birthday_after,
)

__all__ = [
    "CA_KINDS",
    "CAExistsError",
    "CANotFoundError",
    "CaKind",
    "CertRecord",
    "CertificateDB",
    "CertificateStatusError",
    "TestCA",
    "UnknownCertificateError",
    "birthday_in",
    "ca_name",
    "card_expiry_for",
    "end_of_day_jst",
    "free_port",
    "leaf_not_after",
    "nth_birthday_after",
    "reason_value",
    "serial_hex",
]
