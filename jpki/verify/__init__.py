"""Certificate validation for relying parties: is this card certificate good, now or at a time?

```python
from jpki.verify import TrustStore, Validator
trust = TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca")
validator = Validator(trust, clock=clock)                  # revocation='ocsp', hard-fail
result = validator.validate(der, kind="auth")              # or at=datetime, nonce=False
result.ok, result.reason, result.summary(), result.to_json()
```

No card library is imported here (a server verifies without pyscard or the emulator;
``tests/test_layering.py`` checks it), and nothing global is used: trust anchors, the clock and
the HTTP fetcher are inputs.

Modules: :mod:`~jpki.verify.anchors` (:class:`TrustStore`), :mod:`~jpki.verify.path` (the
time-independent path checks), :mod:`~jpki.verify.evidence` (:class:`RevocationEvidence`:
OCSP responses and CRLs embedded in a document or given), :mod:`~jpki.verify.revocation_check` (OCSP client, CRL check,
caches), :mod:`~jpki.verify.fetch` (HTTP), :mod:`~jpki.verify.timestamp` (RFC 3161 timestamp
tokens: the one place that checks one, for the TSA client and CMS/PDF verification),
:mod:`~jpki.verify.validator` (:class:`Validator`:
the order of the checks, revocation modes, hard/soft fail, caching, the maximum age of revocation
answers), :mod:`~jpki.verify.cache` (:class:`LruCache`, bounded by count and bytes),
:mod:`~jpki.verify.result` (:class:`ValidationResult`, :class:`Reason`).

Path validation library: ``cryptography.x509.verification``
-----------------------------------------------------------
Both candidates were run on the test CA's certificates and on certificates of the real J-LIS
shape (a root with the real roots' extensions, leaves per spec §8: no EKU, no OCSP URL, a
DirName CRL DP, the user-authentication certificate without a subjectAltName).

* ``cryptography.x509.verification`` (Rust; cryptography is already a core dependency) is an
  RFC 5280 path validator with a strict Web PKI profile. Its default client profile **rejects**
  JPKI certificates: a leaf without subjectAltName ("missing required extension" — every
  user-authentication certificate), a critical SAN under a non-empty subject, a leaf without
  authority key identifier, an EKU without clientAuth. Since cryptography 45 the profile is
  configurable: with ``ExtensionPolicy.permit_all()`` for the leaf (plus "a leaf is no CA") and
  the Web PKI CA profile for the root, it accepts every JPKI shape, and still refuses unknown
  critical extensions, bad signatures, expired roots and non-CA issuers. Limits found: it does
  not compare the leaf's authority key identifier with the root's (we do), and it cannot be told
  to accept a *critical* certificatePolicies, issuerAltName or CRL distribution points extension
  (``may_be_present`` refuses those types) — such a leaf is refused (``path-rejected``). The
  real J-LIS roots mark only keyUsage and basicConstraints critical, and the spec knows of no
  critical leaf extension other than keyUsage. It needs the ``ExtensionPolicy`` API
  (cryptography 45 and later).
* ``pyhanko-certvalidator`` 0.33 accepts every JPKI shape as is (it does not ask for a SAN,
  it processes policies, it checks the authority key identifier) but is asyncio-only, works on
  asn1crypto objects in pure Python, and manages about 1,500 plain path validations per second
  on one core (``benchmarks/revocation.py --section validation``); its revocation machinery
  would read a J-LIS-sized CRL (about a million entries) with asn1crypto, and its failures are
  exception classes and messages rather than the reason codes below (it is installed with
  jpki, as pyHanko's validator, but this package does not use it).

Decision: ``cryptography.x509.verification`` (JPKI leaf profile as above) as the RFC 5280
second opinion on the one-step path, run once per certificate and cached; jpki's own checks
come first because they give the precise reason codes the library cannot (wrong kind, an
untrusted issuer, a key identifier that names another root generation, a bad signature, each
validity period); revocation is jpki's own (OCSP client below, CRLs through
:class:`jpki.revocation.LoadedCRL`). pyhanko-certvalidator stays as the baseline in the
benchmark and as an interoperability check in the tests. The first validation of a
certificate (parse, kind, signature, library path check) costs about half a millisecond, a bit
faster than pyhanko's plain validation; later ones, with the OCSP answer cached, cost a few
microseconds (over 100,000/s on one core from DER bytes; target 5,000/s).

Reason codes (``ValidationResult.reason``, a :class:`Reason`)
-------------------------------------------------------------
Certificate and path, in the order they are checked:

``malformed-certificate``
    not a DER/PEM X.509 certificate, an extension does not decode, or the serial number is not
    positive or longer than 20 octets.
``wrong-kind``
    not a certificate of the kind asked for: a signing certificate presented as a
    user-authentication one or the reverse, a CA certificate, or no JPKI policy and key usage
    (:func:`jpki.certinfo.cert_kind`; ``detected_kind`` says what it is).
``unsupported-critical-extension``
    a critical extension JPKI certificates do not use.
``untrusted-issuer``
    no trust anchor of that kind has the issuer's name (and, when the certificate has one, its
    authority key identifier).
``bad-signature``
    the certificate's signature does not verify with the anchor's key.
``path-rejected``
    ``cryptography.x509.verification`` refused a path the checks above accepted (message has
    its words).
``not-yet-valid`` / ``expired``
    the validation time is outside the certificate's validity, or the root's (the message
    says which).

Revocation:

``revoked``
    a verified OCSP response or CRL says revoked at or before the validation time
    (``revocation_reason`` gives the CRLReason; a certificate on hold counts as revoked).
``revocation-unavailable``
    no source could be reached or would answer (hard-fail; soft-fail turns this into a warning).
``ocsp-unknown``
    the responder signed an ``unknown`` for a certificate its CA signed.
``ocsp-malformed``, ``ocsp-certid-mismatch``, ``ocsp-unauthorised-responder``,
``ocsp-bad-signature``, ``ocsp-nonce-mismatch``, ``ocsp-not-yet-valid``, ``ocsp-stale``
    an OCSP response arrived and failed that check (see :mod:`jpki.verify.revocation_check`).
``crl-malformed``, ``crl-issuer-mismatch``, ``crl-signature-invalid``,
``crl-unsupported-extension``, ``crl-not-yet-valid``, ``crl-expired``
    a CRL arrived and failed that check (the :class:`jpki.revocation.CRLError` reasons).

These revocation failures are the result only when no other source gave a verified answer:
an OCSP failure followed by a good CRL answer is ok with a warning.

``internal-error``
    anything unexpected: validation fails closed, never ok.
"""

from jpki.verify.anchors import Anchor, TrustStore
from jpki.verify.cache import LruCache
from jpki.verify.evidence import RevocationEvidence
from jpki.verify.fetch import Fetch, FetchError, HttpFetcher
from jpki.verify.path import crl_url, ocsp_url
from jpki.verify.result import KINDS, Kind, Reason, RevocationInfo, ValidationResult
from jpki.verify.revocation_check import CrlCache, OcspCache
from jpki.verify.validator import Gathered, RevocationMode, Validator

__all__ = [
    "KINDS",
    "Anchor",
    "CrlCache",
    "Fetch",
    "FetchError",
    "Gathered",
    "HttpFetcher",
    "Kind",
    "LruCache",
    "OcspCache",
    "Reason",
    "RevocationEvidence",
    "RevocationInfo",
    "RevocationMode",
    "TrustStore",
    "ValidationResult",
    "Validator",
    "crl_url",
    "ocsp_url",
]
