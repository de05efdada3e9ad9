"""Sign documents with the card and verify signed documents: CMS (CAdES) and PDF (PAdES), at the
ETSI baseline levels B, T, LT and LTA.

```python
from jpki.sign import CardSigner, sign_file, verify_cms
with open_transport("emu:alice", home=home) as t:
    signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: "ABC123")
    sign_file("contract.txt", None, signer)                 # contract.txt.p7s, detached
report = verify_cms("contract.txt.p7s", data="contract.txt", validator=validator)
report.ok, report.reason, report.summary(), report.to_json()

from jpki.sign.pdf import sign_pdf, verify_pdf                # imports pyHanko
sign_pdf("in.pdf", "out.pdf", signer, reason="承認")
verify_pdf("out.pdf", validator=validator)

from jpki.tsa import HttpTimestamper                          # any RFC 3161 TSA
from jpki.sign.levels import ValidatorSource                  # validation data for B-LT
sign_file("contract.txt", None, signer, level="LT", timestamper=HttpTimestamper(url),
          source=ValidatorSource(validator))
extend_cms("contract.txt.p7s", "LTA", data="contract.txt", timestamper=HttpTimestamper(url))
```

Modules: :mod:`.signer` (the card-backed signer), :mod:`.cms` (CMS sign/verify/extend,
streaming), :mod:`.pdf` (pyHanko with the card as its ``Signer``; sign/verify/extend),
:mod:`.pdf_checks` (what a signed PDF must look like before its CMS is checked: the
hostile-document defences, for signatures and document timestamps), :mod:`.stamp` (the visible
stamp in Japanese), :mod:`.levels` (the CAdES levels, the archive timestamp, the validation
data; timestamps come from any :class:`jpki.tsa.Timestamper`, the RFC 3161 client being
:mod:`jpki.tsa.client`), :mod:`.report` (the frozen reports, the reason codes,
and :func:`check_certificate`, where the path/revocation validator plugs in). See
docs/signing.md.
The verification modules import no card library.
"""

from .cms import SignOutcome, sign_file, verify_cms
from .report import (
                     REASONS,
                     CertificateCheck,
                     CertificateValidator,
                     SignatureReport,
                     VerificationReport,
                     check_certificate,
)
from .signer import CardSigner, SignerMismatchError

__all__ = [
    "REASONS",
    "CardSigner",
    "CertificateCheck",
    "CertificateValidator",
    "SignOutcome",
    "SignatureReport",
    "SignerMismatchError",
    "VerificationReport",
    "check_certificate",
    "sign_file",
    "verify_cms",
]
