"""``jpki cert verify`` against the home's test CA, its revocation server and the J-LIS roots."""

from __future__ import annotations

import pytest

from jpki import lifecycle
from jpki.pki import TestCA
from jpki.pki.server import serve_in_thread
from jpki.provision import Home, read_holder


@pytest.fixture
def cert_files(home, tmp_path):
    files = {}
    with TestCA.open(home / "ca") as ca:
        for row in ca.db.list(card="alice"):
            path = tmp_path / f"{row.kind}.der"
            path.write_bytes(row.der)
            files[row.kind] = path
    return files


@pytest.fixture
def server(home, clock):
    """The revocation server on the port the certificates name (the CA's base URL)."""
    with TestCA.open(home / "ca") as ca:
        port = int(ca.base_url.rsplit(":", 1)[1])
    with serve_in_thread(home / "ca", "127.0.0.1", port, clock=clock) as srv:
        yield srv


def test_good_then_revoked(cli, home, cert_files, server, clock):
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "crl")
    doc = r.json()
    # the CLI validates at $JPKI_NOW (conftest's FIXED_NOW), whatever today's date is
    assert r.exit_code == 0 and doc["ok"] is True and doc["kind"] == "auth", r
    lifecycle.lost(Home(home), "alice", clock=clock)
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "crl")
    doc = r.json()
    assert r.exit_code == 3 and doc["reason"] == "revoked" and doc["revocation_reason"] == "keyCompromise"
    assert "not valid (revoked)" in r.stderr


def test_kind_is_checked(cli, cert_files):
    r = cli("--json", "cert", "verify", str(cert_files["sign"]), "--kind", "auth",
            "--revocation", "none", "--at", "2027-01-01T00:00:00+09:00")
    assert r.exit_code == 3 and r.json()["reason"] == "wrong-kind"


def test_at_time_before_issuance(cli, cert_files):
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none",
            "--at", "2020-01-01T00:00:00Z")
    assert r.exit_code == 3 and r.json()["reason"] == "not-yet-valid"


def test_from_card_without_server_hard_fails_and_soft_fails(cli):
    at = "2027-01-01T00:00:00+09:00"
    r = cli("--json", "cert", "verify", "--from-card", "auth", "--at", at)
    assert r.exit_code == 3 and r.json()["reason"] == "revocation-unavailable"
    r = cli("--json", "cert", "verify", "--from-card", "auth", "--at", at, "--soft-fail")
    doc = r.json()
    assert r.exit_code == 0 and doc["ok"] is True and doc["warnings"]


def test_untrusted_issuer_without_the_test_ca(cli, home, cert_files, tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none",
            "--at", "2027-01-01T00:00:00+09:00", home=empty_home)
    assert r.exit_code == 3 and r.json()["reason"] == "untrusted-issuer"


def test_usage_errors(cli, home, cert_files, tmp_path):
    assert cli("cert", "verify").exit_code == 2
    assert cli("cert", "verify", str(cert_files["auth"]), "--at", "yesterday").exit_code == 2
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    r = cli("cert", "verify", str(garbage))
    assert r.exit_code == 3 and "malformed" in r.stderr
    assert read_holder(Home(home), "alice").status == "active"


def test_at_is_one_date_time_type_with_a_clear_usage_error(cli, cert_files):
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--at", "yesterday")
    doc = r.json()
    assert r.exit_code == 2 and doc["error"] == "usage"
    assert "'--at'" in doc["message"] and "'yesterday' is not an ISO 8601 date-time" in doc["message"]
    assert "Traceback" not in r.stderr
    # a date alone, or a time without an offset, is UTC (jpki.clock.parse_instant)
    for at in ("2027-01-01", "2027-01-01T00:00:00"):
        r = cli("--json", "cert", "verify", str(cert_files["auth"]),
                "--revocation", "none", "--at", at)
        assert r.exit_code == 0 and r.json()["checked_at"] == "2027-01-01T00:00:00+00:00", r


@pytest.mark.parametrize("kept", ["sign_ca.pem", "auth_ca.pem"])
def test_one_trust_rule_for_cert_verify_verify_and_the_relying_party(cli, home, cert_files, tmp_path, kept):
    """The three build a home's trust store with one rule (TrustStore.for_home): a test CA
    folder that lost one of its roots is the same usage error for all three (before, each
    looked for another file, and two of them went on trusting less without a word)."""
    from jpki.auth.service import ServiceConfig, build_relying_party
    from jpki.errors import UsageError

    document = tmp_path / "doc.txt"
    document.write_text("signed before the CA was damaged\n")
    assert cli("sign", str(document), "--pin", "ABC123").exit_code == 0
    lost = "auth_ca.pem" if kept == "sign_ca.pem" else "sign_ca.pem"
    (home / "ca" / lost).unlink()
    r = cli("--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none")
    assert r.exit_code == 2 and r.json()["error"] == "usage" and lost in r.json()["message"]
    r = cli("--json", "verify", f"{document}.p7s", "--revocation", "none")
    assert r.exit_code == 2 and r.json()["error"] == "usage" and lost in r.json()["message"]
    with pytest.raises(UsageError, match=lost):
        build_relying_party(ServiceConfig(home=home, rp_id="http://127.0.0.1:8480"))
