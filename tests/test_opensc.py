"""OpenSC (Debian's 0.23) against the emulated card served through pcscd + vpcd."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from jpki.session import JpkiSession
from jpki.transport import open_transport

pytestmark = pytest.mark.pcsc

PKCS11_CANDIDATES = ["/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
                     "/usr/lib/opensc-pkcs11.so"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        from jpki.testing.pcsc import unavailable

        unavailable(f"{name} is not installed (apt-get install opensc)")
    return path  # type: ignore[return-value]


@pytest.fixture
def pkcs11_module() -> str:
    for candidate in PKCS11_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    from jpki.testing.pcsc import unavailable

    unavailable("opensc-pkcs11.so not found (apt-get install opensc-pkcs11)")
    return ""


def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, input=input)


def reader_index(reader: str) -> str:
    out = run(_tool("opensc-tool"), "--list-readers").stdout
    for line in out.splitlines():
        if reader in line:
            return line.split()[0]
    raise AssertionError(f"{reader} not in opensc-tool --list-readers:\n{out}")


def card_certs(home: Path, reader: str) -> dict[str, bytes]:
    with open_transport(f"pcsc:{reader}") as t:
        j = JpkiSession(t)
        certs = {k: j.read_certificate(k) for k in ("auth", "auth-ca", "sign-ca")}
        j.verify("sign", "ABC123")
        certs["sign"] = j.read_certificate("sign")
    return certs


def test_opensc_names_the_jpki_driver(served_card):
    r = run(_tool("opensc-tool"), "-r", reader_index(served_card), "-n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "jpki"


def test_pkcs15_dump_lists_certificates_and_pins(served_card, home):
    from jpki.provision import Home

    r = run(_tool("pkcs15-tool"), "--reader", reader_index(served_card), "-D")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "PKCS#15 Card [JPKI]" in out
    for label in ("User Authentication Certificate", "User Authentication Certificate CA",
                  "Digital Signature Certificate", "Digital Signature Certificate CA"):
        assert f"X.509 Certificate [{label}]" in out
    blocks = out.split("PIN [")
    auth_block = next(b for b in blocks if b.startswith("User Authentication PIN]"))
    sign_block = next(b for b in blocks if b.startswith("Digital Signature PIN]"))
    assert "Tries left     : 3" in auth_block
    assert "Tries left     : 5" in sign_block
    assert Home(home).card_names()  # the card the reader serves is ours


def test_pkcs15_read_certificate_is_byte_exact(served_card, home, tmp_path):
    certs = card_certs(home, served_card)
    idx = reader_index(served_card)
    # pkcs15-jpki IDs: 01 auth, 02 sign, 03 auth CA, 04 sign CA
    for cert_id, kind in (("01", "auth"), ("03", "auth-ca"), ("04", "sign-ca")):
        r = run(_tool("pkcs15-tool"), "--reader", idx, "--read-certificate", cert_id)
        assert r.returncode == 0, r.stderr
        pem = r.stdout[r.stdout.index("-----BEGIN"):].encode()
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        assert der == certs[kind], kind
    ca_pem = (home / "ca").glob("*.pem")
    assert any(ca_pem)


def test_pkcs11_lists_token_and_objects(served_card, pkcs11_module):
    r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "-L")
    assert r.returncode == 0, r.stderr
    assert "JPKI (User Authentication PIN)" in r.stdout
    assert "JPKI (Digital Signature PIN)" in r.stdout
    slot = _slot_for(pkcs11_module, "User Authentication PIN", served_card)
    r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "--slot", slot, "-O")
    assert r.returncode == 0, r.stderr
    assert "User Authentication Certificate" in r.stdout
    assert "subject:    DN: C=JP, CN=JPKI-TEST-" in r.stdout


def _slot_for(pkcs11_module: str, label: str, reader: str) -> str:
    """The PKCS#11 slot id of the token ``label`` in ``reader`` (other readers may hold cards)."""
    r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "-L")
    slot = None
    for line in r.stdout.splitlines():
        if line.startswith("Slot "):
            slot = line.split("(")[1].split(")")[0] if reader in line else None
        if slot is not None and "token label" in line and label in line:
            return slot
    raise AssertionError(f"no token labelled {label} in {reader}:\n{r.stdout}")


@pytest.mark.parametrize("key, label, pin, cert_kind", [
    ("01", "User Authentication PIN", "1234", "auth"),
    ("02", "Digital Signature PIN", "ABC123", "sign"),
])
@pytest.mark.parametrize("mechanism", ["RSA-PKCS", "SHA256-RSA-PKCS"])
def test_pkcs11_sign_verifies_with_openssl(served_card, home, pkcs11_module, tmp_path, key, label, pin,
                                           cert_kind, mechanism):
    data = tmp_path / "data.txt"
    data.write_bytes(b"signed through OpenSC by the emulated My Number Card\n")
    if mechanism == "RSA-PKCS":  # the caller supplies the DigestInfo
        to_sign = tmp_path / "digestinfo.bin"
        to_sign.write_bytes(bytes.fromhex("3031300d060960864801650304020105000420")
                            + hashlib.sha256(data.read_bytes()).digest())
    else:
        to_sign = data
    sig = tmp_path / "sig.bin"
    slot = _slot_for(pkcs11_module, label, served_card)
    r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "--slot", slot, "--sign", "-m", mechanism,
            "--id", key, "--pin", pin, "-i", str(to_sign), "-o", str(sig))
    assert r.returncode == 0, r.stderr + r.stdout
    cert = x509.load_der_x509_certificate(card_certs(home, served_card)[cert_kind])
    cert.public_key().verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(cert.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    v = run("openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(sig), str(data))
    assert v.returncode == 0 and "Verified OK" in v.stdout, v.stdout + v.stderr


def test_wrong_pins_through_pkcs11_show_in_pin_status_and_lock(cli, served_card, pkcs11_module, home):
    slot = _slot_for(pkcs11_module, "User Authentication PIN", served_card)

    def status() -> int:
        with open_transport(f"pcsc:{served_card}") as t:
            return JpkiSession(t).tries_left("auth")

    assert status() == 3
    for expected in (2, 1, 0):
        r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "--slot", slot, "--login",
                "--pin", "9999", "-O")
        assert r.returncode != 0
        assert status() == expected
    r = run(_tool("pkcs11-tool"), "--module", pkcs11_module, "--slot", slot, "--login", "--pin", "1234", "-O")
    assert r.returncode != 0, "a blocked PIN must not log in, even with the right value"
    assert status() == 0
    # and the CLI sees the same, through PC/SC
    status = cli.process("--json", "pin", "status", home=None, card=f"pcsc:{served_card}",
                         env={"JPKI_HOME": str(home)})
    assert status.exit_code == 0, status.stderr
    assert '"blocked": true' in status.stdout
