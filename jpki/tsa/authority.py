"""The time-stamping authority itself: a TimeStampReq in, a signed TimeStampResp out. No HTTP.

::

    tsa = TimeStampAuthority.open(home, clock=clock)      # HOME/tsa, made by ensure_tsa
    answer = tsa.respond(request_der)                     # never raises for what a client sent
    answer.der, answer.granted, answer.serial, answer.fail, answer.detail
    tsa.close()

A granted answer holds a TimeStampToken (RFC 3161 §2.4.2, RFC 5652 SignedData):

* TSTInfo: version 1; policy :data:`~jpki.tsa.protocol.TSA_POLICY`; the request's
  messageImprint as sent; a serial number from :class:`~jpki.tsa.serials.SerialCounter`
  (unique and increasing across workers and restarts); genTime from the injected clock, in
  whole seconds (UTC); accuracy ``accuracy`` (1 s by default: the second is cut, not
  rounded); ordering false; the request's nonce when it had one; ``tsa`` the TSA's name;
* SignedData version 3, eContentType id-ct-TSTInfo, one SignerInfo (issuerAndSerialNumber)
  whose signed attributes are content-type, message-digest and signingCertificateV2 (RFC 5035:
  the SHA-256 of the TSA's certificate and its issuer and serial), signed with SHA-256 and
  RSA PKCS#1 v1.5 (or ECDSA for a P-256 key);
* the TSA's certificate in ``certificates`` when the request set certReq (RFC 3161 §2.4.1),
  none otherwise. The root is not sent: a verifier has it as its trust anchor.

Refusals (``granted`` false) are a TimeStampResp with status ``rejection`` and a failInfo bit:
see :mod:`jpki.tsa.protocol` for what a request must be. The authority also refuses
(``systemFailure``) while its certificate is not valid at the clock's now (restart the server:
the certificate is renewed at start), and when the serial counter cannot be moved on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Final

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from jpki.clock import Clock, SystemClock
from jpki.errors import UsageError
from jpki.pki import TestCA
from jpki.pki.responder import ResponderKey
from jpki.tsa.credentials import ISSUER_KIND, TsaCredentials, load_tsa, tsa_dir
from jpki.tsa.protocol import TSA_POLICY, FailInfo, RejectedRequest, TimeStampResp, parse_request, rejection
from jpki.tsa.serials import SerialCounter, SerialStoreError

__all__ = ["DEFAULT_ACCURACY", "TimeStampAuthority", "TsaAnswer"]

_log = logging.getLogger(__name__)

#: The accuracy a token states (genTime is the clock's second, cut).
DEFAULT_ACCURACY: Final = _dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class _Parts:
    """DER of the parts every token of one TSA shares."""

    cert: bytes
    digest_algorithm: bytes
    signature_algorithm: bytes
    sid: bytes
    content_type_attr: bytes
    ess_attr: bytes
    tsa_name: bytes
    accuracy: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class TsaAnswer:
    """What :meth:`TimeStampAuthority.respond` answered: the DER TimeStampResp, whether it was
    granted, the token's serial (granted) or the failure bit (refused), and a one-line
    ``detail`` for the log (never the imprint)."""

    der: bytes
    granted: bool
    serial: int | None = None
    fail: FailInfo | None = None
    detail: str = "granted"


class TimeStampAuthority:
    """Signs timestamp tokens with ``key`` under ``cert``, serials from ``serials``, time from
    ``clock`` (see the module docstring). Thread-safe."""

    def __init__(self, key: ResponderKey, cert: x509.Certificate, *, serials: SerialCounter,
                 clock: Clock | None = None, accuracy: _dt.timedelta = DEFAULT_ACCURACY,
                 policy: str = TSA_POLICY) -> None:
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise UsageError("the TSA key must be an RSA or ECDSA private key")
        if not _dt.timedelta(microseconds=1) <= accuracy <= _dt.timedelta(days=1):
            raise UsageError("the accuracy must be between a microsecond and a day")
        self.key = key
        self.cert = cert
        self.serials = serials
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.policy = policy
        self.accuracy = accuracy
        #: answers given by this process, by outcome (granted, bad_alg, …)
        self.stats: Counter[str] = Counter()
        self._said_invalid = False
        der = cert.public_bytes(serialization.Encoding.DER)
        issuer_cert = asn1_x509.Certificate.load(der)
        self._not_before = cert.not_valid_before_utc
        self._not_after = cert.not_valid_after_utc
        # The parts that never change, kept as DER and loaded again for each token: asn1crypto
        # encodes a value built from Python objects again at every dump (1.6 ms for the ESS
        # attribute alone), a loaded one never.
        signature_algorithm = "rsassa_pkcs1v15" if isinstance(key, rsa.RSAPrivateKey) else "sha256_ecdsa"
        # RFC 5035 ESSCertIDv2: hashAlgorithm left out (its default, SHA-256, is never encoded).
        ess = tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2({
            "cert_hash": hashlib.sha256(der).digest(),
            "issuer_serial": tsp.IssuerSerial({
                "issuer": [asn1_x509.GeneralName({"directory_name": issuer_cert.issuer})],
                "serial_number": issuer_cert.serial_number})})]})
        micros = accuracy // _dt.timedelta(microseconds=1)
        seconds, rest = divmod(micros, 1_000_000)
        millis, micros = divmod(rest, 1000)
        self._der = _Parts(
            cert=der,
            digest_algorithm=algos.DigestAlgorithm({"algorithm": "sha256"}).dump(),
            signature_algorithm=algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}).dump(),
            sid=cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": issuer_cert.issuer, "serial_number": issuer_cert.serial_number})}).dump(),
            content_type_attr=cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump(),
            ess_attr=cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}).dump(),
            tsa_name=asn1_x509.GeneralName({"directory_name": issuer_cert.subject}).dump(),
            accuracy=tsp.Accuracy({**({"seconds": seconds} if seconds else {}),
                                   **({"millis": millis} if millis else {}),
                                   **({"micros": micros} if micros else {})}).dump(),
        )

    @classmethod
    def open(cls, home: Path | str, *, clock: Clock | None = None,
             accuracy: _dt.timedelta = DEFAULT_ACCURACY) -> TimeStampAuthority:
        """The TSA of ``home`` as :func:`~jpki.tsa.credentials.ensure_tsa` left it (nothing is
        made here: worker processes only load). :class:`~jpki.tsa.credentials.TsaNotFoundError`
        when there is none, or it does not belong to the home's CA."""
        creds = load_credentials(home)
        serials = SerialCounter(creds.serials_path)
        return cls(creds.key, creds.cert, serials=serials, clock=clock, accuracy=accuracy)

    # ------------------------------------------------------------------ answering

    def respond(self, der: bytes) -> TsaAnswer:
        """The TimeStampResp for the request ``der``: a token, or a refusal saying why. Never
        raises for what the client sent; an unexpected failure is logged and answered
        ``systemFailure``."""
        try:
            answer = self._respond(der)
        except Exception:  # noqa: BLE001 - the client gets an answer, the log the traceback
            _log.exception("the TSA could not answer a request")
            answer = self._refuse(FailInfo.SYSTEM_FAILURE, "internal error")
        self.stats["granted" if answer.granted else answer.fail.value if answer.fail else "refused"] += 1
        return answer

    def _refuse(self, fail: FailInfo, text: str) -> TsaAnswer:
        return TsaAnswer(rejection(fail, text), False, fail=fail, detail=f"{fail.rfc_name}: {text}")

    def _respond(self, der: bytes) -> TsaAnswer:
        try:
            request = parse_request(der)
        except RejectedRequest as exc:
            return self._refuse(exc.fail, exc.text)
        now = self.clock.now()
        if not self._not_before <= now < self._not_after:
            if not self._said_invalid:  # once, not once per request
                self._said_invalid = True
                _log.error("the TSA certificate is not valid at %s (%s .. %s): restart the server to renew it",
                           now.isoformat(), self._not_before.isoformat(), self._not_after.isoformat())
            return self._refuse(FailInfo.SYSTEM_FAILURE, "the TSA certificate is not valid now")
        try:
            serial = self.serials.next()
        except SerialStoreError as exc:
            _log.error("%s", exc)
            return self._refuse(FailInfo.SYSTEM_FAILURE, "the serial number could not be allocated")
        token = self.token(request.message_imprint, serial=serial, gen_time=now, nonce=request.nonce,
                           with_certificate=request.cert_req)
        status = tsp.PKIStatusInfo({"status": "granted"})
        resp = TimeStampResp({"status": status, "time_stamp_token": token})
        return TsaAnswer(bytes(resp.dump()), True, serial=serial)

    def token(self, message_imprint: tsp.MessageImprint, *, serial: int, gen_time: _dt.datetime,
              nonce: int | None = None, with_certificate: bool = True) -> cms.ContentInfo:
        """A TimeStampToken (ContentInfo of a SignedData) for ``message_imprint``."""
        parts = self._der
        fields: dict[str, object] = {
            "version": "v1",
            "policy": self.policy,
            "message_imprint": message_imprint,
            "serial_number": serial,
            "gen_time": gen_time.astimezone(_dt.UTC).replace(microsecond=0),
            "accuracy": tsp.Accuracy.load(parts.accuracy),
            "tsa": asn1_x509.GeneralName.load(parts.tsa_name),
        }
        if nonce is not None:
            fields["nonce"] = nonce
        tst_der = tsp.TSTInfo(fields).dump()
        signed_attrs = cms.CMSAttributes([
            cms.CMSAttribute.load(parts.content_type_attr),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]}),
            cms.CMSAttribute.load(parts.ess_attr),
        ])
        to_sign = signed_attrs.dump()  # the SET OF (tag 0x31), as RFC 5652 §5.4 signs it
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = self.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        digest_algorithm = algos.DigestAlgorithm.load(parts.digest_algorithm)
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier.load(parts.sid),
            "digest_algorithm": digest_algorithm,
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm.load(parts.signature_algorithm),
            "signature": signature,
        })
        signed_data: dict[str, object] = {
            "version": "v3",
            "digest_algorithms": [digest_algorithm],
            "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(tst_der)},
            "signer_infos": [signer_info],
        }
        if with_certificate:
            signed_data["certificates"] = [asn1_x509.Certificate.load(parts.cert)]
        return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)})

    # ------------------------------------------------------------------ state

    def status(self) -> dict[str, object]:
        """What ``/healthz`` shows: the policy, the certificate, the last serial, the answers."""
        return {"policy": self.policy, "accuracy_seconds": self.accuracy.total_seconds(),
                "certificate": {"serial": format(self.cert.serial_number, "x"),
                                "subject": self.cert.subject.rfc4514_string(),
                                "not_after": self._not_after.isoformat()},
                "last_serial": self.serials.last(), "answers": dict(self.stats)}

    def close(self) -> None:
        """Close the serial counter."""
        self.serials.close()


def load_credentials(home: Path | str) -> TsaCredentials:
    """The TSA of ``home``, checked against the home's CA (its signing root)."""
    with TestCA.open(Path(home).expanduser() / "ca") as ca:
        issuer = ca.ca_cert(ISSUER_KIND)
    return load_tsa(tsa_dir(home), issuer)
