"""The test TSA (jpki.tsa): RFC 3161 requests and refusals, the tokens, the certificate, the
serial counter, the HTTP app, the client library, and interop with ``openssl ts`` and pyHanko.

One TSA home per module (a copy of conftest's ``tsa_template``) served in a thread on the fixed
clock, with the test CA's OCSP/CRL server on the port its certificates name; tests that change
the home (revocation, renewal) take their own ``tsa_home``. openssl verifies at ``-attime``
(the fixed clock), never today.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asn1crypto import algos, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from fixed import FIXED_NOW

from jpki.clock import FixedClock
from jpki.errors import VerificationError
from jpki.pki import TestCA, free_port
from jpki.pki.server import serve_in_thread as serve_ca_in_thread
from jpki.serving import ServerThread
from jpki.tsa import (
    TSA_POLICY,
    TimestampError,
    TimestampRefusedError,
    TimestampToken,
    TokenReason,
    request_timestamp,
    verify_token,
)
from jpki.tsa.app import TsaSettings, create_service
from jpki.tsa.app import serve_in_thread as serve_tsa_in_thread
from jpki.tsa.authority import TimeStampAuthority
from jpki.tsa.credentials import CERT_FILE, TSA_CARD_ID, TsaNotFoundError, ensure_tsa, load_tsa
from jpki.tsa.protocol import (
    MAX_REQUEST_SIZE,
    QUERY_TYPE,
    REPLY_TYPE,
    FailInfo,
    RejectedRequest,
    TimeStampResp,
    make_query,
    parse_request,
    rejection,
)
from jpki.tsa.serials import SerialCounter
from jpki.verify import TrustStore, Validator

CHECK_AT = str(int(FIXED_NOW.timestamp()) + 60)  # openssl -attime: a minute after the tokens
SHA256 = hashlib.sha256(b"a contract").digest()


@pytest.fixture(scope="module")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("openssl not installed")
    return path


@dataclasses.dataclass
class Served:
    home: Path
    url: str                  # http://127.0.0.1:PORT/
    root_pem: Path            # the CA's signing root (openssl -CAfile)
    tsa_pem: Path             # the TSA's certificate (openssl -untrusted)
    server: ServerThread

    @property
    def authority(self) -> TimeStampAuthority:
        authority: TimeStampAuthority = self.server.app.state.authority  # type: ignore[attr-defined]
        return authority

    def post(self, body: bytes, content_type: str = QUERY_TYPE) -> httpx.Response:
        return httpx.post(self.url, content=body, headers={"Content-Type": content_type}, timeout=10)

    def trust(self) -> TrustStore:
        return TrustStore.for_home(self.home)


@contextlib.contextmanager
def serving(home: Path, *, revocation: bool = False) -> Iterator[Served]:
    """The TSA of ``home`` on the fixed clock (no rate limit) and, with ``revocation``, its CA's
    OCSP/CRL server at the port the certificates name."""
    clock = FixedClock(FIXED_NOW)
    with contextlib.ExitStack() as stack:
        if revocation:
            with TestCA.open(home / "ca") as ca:
                port = int(ca.base_url.rsplit(":", 1)[1])
            stack.enter_context(serve_ca_in_thread(home / "ca", port=port, clock=clock))
        server = stack.enter_context(serve_tsa_in_thread(home, clock=clock, rate_limit=0))
        yield Served(home, server.url + "/", home / "ca" / "sign_ca.pem", home / "tsa" / "tsa.pem", server)


@pytest.fixture(scope="module")
def served(tsa_template, tmp_path_factory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("tsa") / "home"
    shutil.copytree(tsa_template, home)
    with serving(home) as s:
        yield s


def reply(der: bytes) -> tsp.TimeStampResp:
    return TimeStampResp.load(der)


def granted_token(der: bytes) -> tsp.TSTInfo:
    resp = reply(der)
    assert resp["status"]["status"].native == "granted", resp["status"].native
    return resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


def refusal(der: bytes) -> tuple[set[str], str]:
    status = reply(der)["status"]
    assert status["status"].native == "rejection" and reply(der)["time_stamp_token"].native is None
    return set(status["fail_info"].native), "; ".join(status["status_string"].native)


# --------------------------------------------------------------------------- requests (no server)


def _req(**fields: object) -> bytes:
    base: dict[str, object] = {"version": "v1", "message_imprint": tsp.MessageImprint(
        {"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}), "hashed_message": SHA256})}
    base.update(fields)
    return bytes(tsp.TimeStampReq(base).dump())


def _imprint(algorithm: str, digest: bytes) -> tsp.MessageImprint:
    return tsp.MessageImprint({"hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
                               "hashed_message": digest})


REFUSED = {
    "empty": (b"", FailInfo.BAD_DATA_FORMAT, "not a DER TimeStampReq"),
    "truncated": (b"\x30\x03\x02\x01", FailInfo.BAD_DATA_FORMAT, "not a DER TimeStampReq"),
    "trailing-bytes": (_req() + b"\x00", FailInfo.BAD_DATA_FORMAT, "not a DER TimeStampReq"),
    "deep-nesting": (b"\x30\x80" * 2000, FailInfo.BAD_DATA_FORMAT, "not a DER TimeStampReq"),
    "too-large": (b"\x30" * (MAX_REQUEST_SIZE + 1), FailInfo.BAD_DATA_FORMAT, "larger than"),
    "version-2": (_req(version=2), FailInfo.BAD_REQUEST, "version"),
    "sha1": (_req(message_imprint=_imprint("sha1", hashlib.sha1(b"x").digest())), FailInfo.BAD_ALG, "1.3.14.3.2.26"),
    "md5": (_req(message_imprint=_imprint("md5", hashlib.md5(b"x").digest())), FailInfo.BAD_ALG, "unsupported hash"),
    "sha224": (_req(message_imprint=_imprint("sha224", hashlib.sha224(b"x").digest())), FailInfo.BAD_ALG, "SHA-256"),
    "short-imprint": (_req(message_imprint=_imprint("sha256", b"short")), FailInfo.BAD_DATA_FORMAT, "32 bytes, not 5"),
    "hash-parameters": (_req().replace(b"\x05\x00\x04\x20", b"\x04\x00\x04\x20"), FailInfo.BAD_ALG, "parameters"),
    "other-policy": (_req(req_policy="1.2.3.4"), FailInfo.UNACCEPTED_POLICY, "1.2.3.4"),
    "huge-nonce": (_req(nonce=1 << 300), FailInfo.BAD_REQUEST, "nonce"),
    "extension": (_req(extensions=[{"extn_id": "1.2.3", "extn_value": b"x"}]), FailInfo.UNACCEPTED_EXTENSION,
                  "extensions"),
}


@pytest.mark.parametrize(("der", "fail", "words"), REFUSED.values(), ids=REFUSED.keys())
def test_requests_a_tsa_must_refuse_say_why(der, fail, words):
    with pytest.raises(RejectedRequest) as caught:
        parse_request(der)
    assert caught.value.fail is fail and words in caught.value.text


def test_a_good_request_is_read_as_sent():
    got = parse_request(_req(nonce=-5, cert_req=True, req_policy=TSA_POLICY))
    assert (got.hash_algorithm, got.nonce, got.cert_req, got.policy) == ("sha256", -5, True, TSA_POLICY)
    assert got.message_imprint["hashed_message"].native == SHA256
    for name, size in (("sha384", 48), ("sha512", 64)):
        assert parse_request(make_query(bytes(size), name, cert_req=False)).hash_algorithm == name
    assert parse_request(make_query(SHA256, nonce=None)).nonce is None


# --------------------------------------------------------------------------- the certificate


def test_the_tsa_certificate_is_a_time_stamping_certificate_of_the_test_ca(served, openssl):
    cert = x509.load_pem_x509_certificate(served.tsa_pem.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    assert not (ku.value.key_encipherment or ku.value.key_cert_sign)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with TestCA.open(served.home / "ca") as ca:
        assert cert.issuer == ca.sign_ca_cert.subject
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [d.access_location.value for d in aia] == [ca.ocsp_url("sign")]
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for n in dps[0].full_name] == [ca.crl_url("sign")]
        record = ca.db.get(cert.serial_number)
        assert record is not None and record.card == TSA_CARD_ID and record.kind == "sign"
    assert stat.S_IMODE((served.home / "tsa" / "tsa.key").stat().st_mode) == 0o600
    # OpenSSL's own idea of a TSA certificate (purpose timestampsign)
    ok = subprocess.run([openssl, "verify", "-purpose", "timestampsign", "-attime", CHECK_AT,
                         "-CAfile", str(served.root_pem), str(served.tsa_pem)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    card = served.home / "card.pem"  # a card's signing certificate is no TSA
    with TestCA.open(served.home / "ca") as ca:
        row = next(r for r in ca.db.list(card="alice") if r.kind == "sign")
    card.write_bytes(x509.load_der_x509_certificate(row.der).public_bytes(Encoding.PEM))
    no = subprocess.run([openssl, "verify", "-purpose", "timestampsign", "-attime", CHECK_AT,
                         "-CAfile", str(served.root_pem), str(card)], capture_output=True, text=True)
    assert no.returncode != 0


def test_ensure_tsa_keeps_a_tsa_and_renews_its_certificate_with_the_same_key(tsa_home):
    with TestCA.open(tsa_home / "ca", clock=FixedClock(FIXED_NOW)) as ca:
        before, made = ensure_tsa(tsa_home, ca=ca)
        assert not made
        renew_at = before.cert.not_valid_after_utc - dt.timedelta(days=10)
        after, made = ensure_tsa(tsa_home, ca=ca, at=renew_at)
        assert made and after.cert.serial_number != before.cert.serial_number
        assert after.cert.public_key() == before.cert.public_key() and after.url == before.url
        assert after.cert.not_valid_before_utc == renew_at.replace(microsecond=0)
        assert load_tsa(tsa_home / "tsa", ca.sign_ca_cert).cert == after.cert
        with pytest.raises(Exception, match="URL is kept"):
            ensure_tsa(tsa_home, ca=ca, url="http://127.0.0.1:1")


def test_a_stored_tsa_certificate_is_held_to_the_one_tsa_profile(tsa_home):
    """load_tsa checks HOME/tsa's certificate with the rule verify_token and the validator apply
    (jpki.verify.path.tsa_usage_problem): an id-kp-timeStamping EKU that is not critical fails."""
    path = tsa_home / "tsa" / CERT_FILE
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    with TestCA.open(tsa_home / "ca") as ca:
        builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
                   .public_key(cert.public_key()).serial_number(cert.serial_number)
                   .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
        for ext in cert.extensions:
            critical = ext.critical and ext.oid != ExtensionOID.EXTENDED_KEY_USAGE
            builder = builder.add_extension(ext.value, critical=critical)
        path.write_bytes(builder.sign(ca.sign_ca_key, hashes.SHA256()).public_bytes(Encoding.PEM))
        with pytest.raises(TsaNotFoundError, match=r"is not a time-stamping certificate: .* not marked critical"):
            load_tsa(tsa_home / "tsa", ca.sign_ca_cert)


# --------------------------------------------------------------------------- tokens and openssl


def openssl_query(openssl: str, data: Path, query: Path, *extra: str) -> bytes:
    subprocess.run([openssl, "ts", "-query", "-data", str(data), "-out", str(query), *extra], check=True,
                   capture_output=True)
    return query.read_bytes()


def openssl_verify(openssl: str, served: Served, response: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([openssl, "ts", "-verify", "-in", str(response), "-CAfile", str(served.root_pem),
                           "-attime", CHECK_AT, *extra], capture_output=True, text=True)


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_openssl_accepts_the_tokens(served, openssl, tmp_path, digest):
    data = tmp_path / "contract.txt"
    data.write_bytes("契約書 v1".encode())
    query = openssl_query(openssl, data, tmp_path / "q.tsq", f"-{digest}", "-cert")
    answer = served.post(query)
    assert answer.status_code == 200 and answer.headers["content-type"] == REPLY_TYPE
    (tmp_path / "r.tsr").write_bytes(answer.content)
    shown = subprocess.run([openssl, "ts", "-reply", "-in", str(tmp_path / "r.tsr"), "-text"],
                           capture_output=True, text=True, check=True).stdout
    assert "Status: Granted." in shown and f"Policy OID: {TSA_POLICY}" in shown
    assert f"Hash Algorithm: {digest}" in shown and "Accuracy: 0x01 seconds" in shown
    tst = granted_token(answer.content)
    assert tst["gen_time"].native == FIXED_NOW and tst["policy"].dotted == TSA_POLICY
    assert tst["nonce"].native == parse_request(query).nonce  # openssl's nonce, echoed
    checked = openssl_verify(openssl, served, tmp_path / "r.tsr", "-data", str(data))
    assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked.stderr
    checked = openssl_verify(openssl, served, tmp_path / "r.tsr", "-queryfile", str(tmp_path / "q.tsq"))
    assert checked.returncode == 0, checked.stderr
    other = tmp_path / "other.txt"
    other.write_bytes(b"another contract")
    refused = openssl_verify(openssl, served, tmp_path / "r.tsr", "-data", str(other))
    assert refused.returncode != 0 and "message imprint mismatch" in refused.stderr


def test_cert_req_decides_whether_the_certificate_is_sent(served, openssl, tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"x")
    query = openssl_query(openssl, data, tmp_path / "q.tsq", "-sha256")  # no -cert
    answer = served.post(query)
    assert reply(answer.content)["time_stamp_token"]["content"]["certificates"].native is None
    (tmp_path / "r.tsr").write_bytes(answer.content)
    without = openssl_verify(openssl, served, tmp_path / "r.tsr", "-data", str(data))
    assert without.returncode != 0  # openssl cannot find the signer
    with_cert = openssl_verify(openssl, served, tmp_path / "r.tsr", "-data", str(data),
                               "-untrusted", str(served.tsa_pem))
    assert with_cert.returncode == 0, with_cert.stderr
    answer = served.post(make_query(SHA256, cert_req=True))
    certs = reply(answer.content)["time_stamp_token"]["content"]["certificates"]
    assert [c.chosen.dump() for c in certs] == [
        x509.load_pem_x509_certificate(served.tsa_pem.read_bytes()).public_bytes(Encoding.DER)]


def test_openssl_sees_the_reason_of_a_refusal(served, openssl, tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"x")
    query = openssl_query(openssl, data, tmp_path / "q.tsq", "-sha1", "-cert")
    answer = served.post(query)
    assert answer.status_code == 200 and refusal(answer.content)[0] == {"bad_alg"}
    (tmp_path / "r.tsr").write_bytes(answer.content)
    shown = subprocess.run([openssl, "ts", "-reply", "-in", str(tmp_path / "r.tsr"), "-text"],
                           capture_output=True, text=True, check=True).stdout
    assert "Status: Rejected." in shown and "unsupported hash algorithm" in shown
    assert "unrecognized or unsupported algorithm identifier" in shown


def test_nonce_is_echoed_and_absent_when_not_asked(served):
    for nonce in (1, 2**63 + 5, -(2**40)):
        assert granted_token(served.post(make_query(SHA256, nonce=nonce)).content)["nonce"].native == nonce
    assert granted_token(served.post(make_query(SHA256)).content)["nonce"].native is None


# --------------------------------------------------------------------------- HTTP


def test_bad_bodies_are_refused_clearly(served):
    garbage = served.post(b"\x00garbage")
    assert garbage.status_code == 200 and garbage.headers["content-type"] == REPLY_TYPE
    assert refusal(garbage.content) == ({"bad_data_format"}, "the body is not a DER TimeStampReq")
    big = served.post(b"\x30" * (MAX_REQUEST_SIZE + 1))
    assert big.status_code == 413 and "larger than 4096 bytes" in big.text
    wrong_type = served.post(make_query(SHA256), content_type="application/octet-stream")
    assert wrong_type.status_code == 415 and QUERY_TYPE in wrong_type.text
    get = httpx.get(served.url, timeout=10)
    assert get.status_code == 405
    policy = served.post(_req(req_policy="1.2.3"))
    assert refusal(policy.content)[0] == {"unaccepted_policy"}
    health = httpx.get(served.url + "healthz", timeout=10).json()
    assert health["status"] == "ok" and health["policy"] == TSA_POLICY
    assert health["answers"]["bad_data_format"] >= 1 and health["refused"]["unsupported-media-type"] >= 1
    assert httpx.get(served.url + "tsa.pem", timeout=10).content == served.tsa_pem.read_bytes()


def test_a_client_over_its_rate_is_told_to_wait(tsa_home):
    app = create_service(TsaSettings(tsa_home, rate_limit=0.5, rate_burst=2), clock=FixedClock(FIXED_NOW))

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://tsa") as c:
            return [await c.post("/", content=make_query(SHA256), headers={"Content-Type": QUERY_TYPE})
                    for _ in range(3)]

    try:
        first, second, third = asyncio.run(run())
    finally:
        app.state.close()
    assert first.status_code == second.status_code == 200
    assert third.status_code == 429 and third.headers["retry-after"] == "2" and "too many requests" in third.text


def test_the_authority_refuses_outside_its_certificate(tsa_home):
    creds = load_tsa(tsa_home / "tsa", x509.load_pem_x509_certificate((tsa_home / "ca" / "sign_ca.pem").read_bytes()))
    late = FixedClock(creds.cert.not_valid_after_utc + dt.timedelta(seconds=1))
    authority = TimeStampAuthority.open(tsa_home, clock=late)
    try:
        answer = authority.respond(make_query(SHA256))
        assert not answer.granted and answer.fail is FailInfo.SYSTEM_FAILURE
        assert refusal(answer.der) == ({"system_failure"}, "the TSA certificate is not valid now")
        assert authority.serials.last() == 0  # no serial spent on a refusal
    finally:
        authority.close()


# --------------------------------------------------------------------------- serial numbers


def test_serials_increase_across_a_restart(tsa_home):
    first = TimeStampAuthority.open(tsa_home, clock=FixedClock(FIXED_NOW))
    serials = [first.respond(make_query(SHA256)).serial for _ in range(3)]
    first.close()
    again = TimeStampAuthority.open(tsa_home, clock=FixedClock(FIXED_NOW))
    try:
        later = again.respond(make_query(SHA256))
    finally:
        again.close()
    assert serials == [1, 2, 3] and later.serial == 4
    assert granted_token(later.der)["serial_number"].native == 4


_TAKER = textwrap.dedent("""
    import sys
    from jpki.tsa.serials import SerialCounter
    counter = SerialCounter(sys.argv[1])
    print(" ".join(str(counter.next()) for _ in range(int(sys.argv[2]))))
    counter.close()
""")


def test_serials_are_unique_and_increasing_across_processes(tmp_path):
    path = tmp_path / "serials.db"
    SerialCounter(path).close()
    takers = [subprocess.Popen([sys.executable, "-c", _TAKER, str(path), "150"], stdout=subprocess.PIPE, text=True,
                               env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])}) for _ in range(2)]
    taken = [[int(n) for n in p.communicate(timeout=60)[0].split()] for p in takers]
    assert all(p.returncode == 0 for p in takers)
    for mine in taken:
        assert mine == sorted(mine) and len(mine) == 150
    assert sorted(taken[0] + taken[1]) == list(range(1, 301))
    counter = SerialCounter(path)
    assert counter.last() == 300 and counter.next() == 301
    counter.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- the client library


def test_request_and_verify_a_token(served):
    signature = b"\x01" * 256  # what CAdES-T stamps: the signature value
    token = request_timestamp(served.url, signature)
    assert token.gen_time == FIXED_NOW and token.policy == TSA_POLICY and token.hash_algorithm == "sha256"
    assert token.accuracy == dt.timedelta(seconds=1) and len(token.certificates) == 1
    check = verify_token(token, data=signature, trust=served.trust(), policy=TSA_POLICY)
    assert check.ok and check.reason == "ok" and check.tsa_certificate == token.certificates[0], check
    assert check.summary().startswith("timestamp valid: 2026-11-27T03:00:00+00:00 by CN=Time-stamping authority")
    assert check.to_json()["token"]["serial"] == token.serial
    bad = verify_token(token.der, data=b"another signature", trust=served.trust())
    assert (bad.ok, bad.reason) == (False, TokenReason.IMPRINT_MISMATCH)
    bad = verify_token(token, digest=hashlib.sha256(signature).digest(), nonce=(token.nonce or 0) + 1,
                       trust=served.trust())
    assert bad.reason == TokenReason.NONCE_MISMATCH
    untrusted = verify_token(token, data=signature, trust=TrustStore.jlis())
    assert untrusted.reason == TokenReason.UNTRUSTED_TSA and "no trusted path" in untrusted.message
    sha512 = request_timestamp(served.url, signature, hash_algorithm="sha512", cert_req=False, nonce=False)
    assert sha512.nonce is None and sha512.certificates == () and sha512.serial > token.serial
    assert verify_token(sha512, data=signature, trust=served.trust()).reason == TokenReason.NO_TSA_CERTIFICATE
    tsa_cert = token.certificates[0]
    assert verify_token(sha512, data=signature, trust=served.trust(), certificates=[tsa_cert]).ok


def test_a_tampered_token_is_refused(served):
    token = request_timestamp(served.url, b"data")
    flipped = bytearray(token.der)
    at = token.der.index(token.digest)
    flipped[at] ^= 1  # the imprint inside the signed TSTInfo
    check = verify_token(bytes(flipped), digest=bytes(flipped[at:at + 32]), trust=served.trust())
    assert check.reason == TokenReason.BAD_SIGNATURE and "message-digest" in check.message
    assert verify_token(b"\x30\x03\x02\x01\x01", trust=served.trust()).reason == TokenReason.MALFORMED_TOKEN
    for junk in (b"\x30\x03\x02\x01\x01", b"", token.der[:-1], rejection(FailInfo.BAD_ALG, "no")):
        with pytest.raises(VerificationError) as caught:
            TimestampToken.from_der(junk)
        assert caught.value.reason == "malformed-token"
    assert TimestampToken.from_der(token.der) == token


def test_a_card_certificate_cannot_pass_for_a_tsa(served):
    """A token signed with alice's signing key verifies as a signature, but she is no TSA."""
    from cryptography.hazmat.primitives import serialization

    with TestCA.open(served.home / "ca") as ca:
        row = next(r for r in ca.db.list(card="alice") if r.kind == "sign")
    cert = x509.load_der_x509_certificate(row.der)
    key = serialization.load_pem_private_key((served.home / "cards" / "alice" / "keys" / "sign.pem").read_bytes(),
                                             password=None)
    forger = TimeStampAuthority(key, cert, serials=served.authority.serials, clock=FixedClock(FIXED_NOW))
    forged = forger.respond(make_query(SHA256))
    token_der = reply(forged.der)["time_stamp_token"].dump()
    check = verify_token(token_der, digest=SHA256, trust=served.trust())
    assert check.reason == TokenReason.NOT_A_TSA_CERTIFICATE and "timeStamping" in check.message


def test_the_tsa_profile_is_one_rule_for_verify_token_and_the_validator(served):
    """jpki.verify.path.tsa_usage_problem decides for both: the timeStamping EKU with a key
    usage that also allows key encipherment (OpenSSL's timestampsign purpose refuses it too) is
    no TSA's certificate, for verify_token and for the validator's kind='tsa' alike."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enciphering TSA")])
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(FIXED_NOW - dt.timedelta(days=1))
            .not_valid_after(FIXED_NOW + dt.timedelta(days=30)).add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(key, hashes.SHA256()))
    authority = TimeStampAuthority(key, cert, serials=served.authority.serials, clock=FixedClock(FIXED_NOW))
    token_der = reply(authority.respond(make_query(SHA256)).der)["time_stamp_token"].dump()
    check = verify_token(token_der, digest=SHA256, trust=served.trust())
    assert check.reason == TokenReason.NOT_A_TSA_CERTIFICATE and "more than digitalSignature" in check.message
    assert check.tsa_certificate == cert
    result = Validator(served.trust(), clock=FixedClock(FIXED_NOW), revocation="none").validate(cert, kind="tsa")
    assert (result.ok, result.reason) == (False, "wrong-kind") and "more than digitalSignature" in result.message


def test_a_refusal_reaches_the_caller_with_its_reason(served):
    with pytest.raises(TimestampRefusedError) as caught:
        request_timestamp(served.url, b"x", policy="1.2.3.4")
    assert caught.value.fail_info == ("unacceptedPolicy",) and caught.value.code == "timestamp_refused"
    assert "1.2.3.4" in caught.value.text
    with pytest.raises(TimestampError) as down:
        request_timestamp(f"http://127.0.0.1:{free_port()}/", b"x")  # nothing listens there
    assert down.value.reason == "unreachable"


# --------------------------------------------------------------------------- pyHanko, revocation


async def _pyhanko_validate(url: str, root_pem: Path, digest: bytes) -> dict[str, object]:
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend

    token = await HTTPTimeStamper(url).async_timestamp(digest, "sha256")
    root = asn1_x509.Certificate.load(x509.load_pem_x509_certificate(root_pem.read_bytes()).public_bytes(Encoding.DER))
    backend = AIOHttpFetcherBackend()
    try:
        context = ValidationContext(trust_roots=[root], allow_fetching=True, revocation_mode="hard-fail",
                                    moment=FIXED_NOW + dt.timedelta(minutes=1), fetcher_backend=backend)
        status: dict[str, object] = await validate_tst_signed_data(token["content"], context, lambda alg: digest)
        return status
    finally:
        await backend.close()


def test_pyhanko_timestamps_with_the_tsa_and_validates_it_until_it_is_revoked(tsa_home):
    """pyHanko's HTTPTimeStamper gets a token, and its validator checks it with OCSP (the TSA's AIA
    at the test CA) in hard-fail mode; jpki's verify_token does the same. Once the CA revokes the
    TSA's certificate (keyCompromise), both refuse."""
    with serving(tsa_home, revocation=True) as s:
        status = asyncio.run(_pyhanko_validate(s.url, s.root_pem, SHA256))
        assert status["intact"] and status["valid"] and status["trust_problem_indic"] is None, status
        assert status["timestamp"] == FIXED_NOW
        token = request_timestamp(s.url, digest=SHA256)
        good = verify_token(token, digest=SHA256, trust=s.trust(), revocation="ocsp", clock=FixedClock(FIXED_NOW))
        assert good.ok and good.revocation is not None and good.revocation.status == "good", good
        crl = verify_token(token, digest=SHA256, trust=s.trust(), revocation="crl", clock=FixedClock(FIXED_NOW))
        assert crl.ok and crl.revocation is not None and crl.revocation.method == "crl"
        with TestCA.open(tsa_home / "ca", clock=FixedClock(FIXED_NOW + dt.timedelta(seconds=30))) as ca:
            ca.revoke(token.certificates[0].serial_number, "keyCompromise")
        status = asyncio.run(_pyhanko_validate(s.url, s.root_pem, SHA256))
        assert status["trust_problem_indic"] is not None, status
        revoked = verify_token(token, digest=SHA256, trust=s.trust(), revocation="ocsp",
                               clock=FixedClock(FIXED_NOW + dt.timedelta(minutes=1)))
        assert revoked.reason == TokenReason.TSA_REVOKED and "keyCompromise" in revoked.message


def test_mutated_requests_get_an_rfc3161_answer_never_an_internal_error(tsa_home):
    """A seeded mutation fuzzer over good requests: every answer is a TimeStampResp, granted or
    refused for a stated reason; none is the 'internal error' of an exception that escaped."""
    import random

    rng = random.Random(3161)
    seeds = [make_query(SHA256, nonce=7, cert_req=True, policy=TSA_POLICY),
             make_query(hashlib.sha512(b"x").digest(), "sha512", cert_req=False)]
    authority = TimeStampAuthority.open(tsa_home, clock=FixedClock(FIXED_NOW))
    outcomes: set[str] = set()
    try:
        for _ in range(400):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[at] = rng.randrange(256)
                elif op == 1:
                    del data[at:at + rng.randint(1, 8)]
                else:
                    data[at:at] = rng.randbytes(rng.randint(1, 8))
            answer = authority.respond(bytes(data))
            status = reply(answer.der)["status"]
            assert status["status"].native in ("granted", "rejection")
            assert "internal error" not in (status["status_string"].native or []), bytes(data).hex()
            outcomes.add("granted" if answer.granted else answer.fail.value)  # type: ignore[union-attr]
    finally:
        authority.close()
    assert {"granted", "bad_data_format"} <= outcomes
