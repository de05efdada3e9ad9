"""``jpki cert verify`` against the home's test CA, its revocation server and the J-LIS roots."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from jpki import lifecycle
from jpki.cli import main
from jpki.pki import TestCA
from jpki.pki.server import serve_in_thread
from jpki.provision import Home, read_holder


def run(home, *args):
    with CliRunner().isolation() as (out, err, _):
        code = main(["--home", str(home), "--card", "emu:alice", *args])
    return code, out.getvalue().decode(), err.getvalue().decode()


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


def test_good_then_revoked(home, cert_files, server, clock):
    code, out, _ = run(home, "--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "crl")
    doc = json.loads(out)
    # the CLI validates at $JPKI_NOW (conftest's FIXED_NOW), whatever today's date is
    assert code == 0 and doc["ok"] is True and doc["kind"] == "auth", out
    lifecycle.lost(Home(home), "alice", clock=clock)
    code, out, err = run(home, "--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "crl")
    doc = json.loads(out)
    assert code == 3 and doc["reason"] == "revoked" and doc["revocation_reason"] == "keyCompromise"
    assert "not valid (revoked)" in err


def test_kind_is_checked(home, cert_files):
    code, out, _ = run(home, "--json", "cert", "verify", str(cert_files["sign"]), "--kind", "auth",
                       "--revocation", "none", "--at", "2027-01-01T00:00:00+09:00")
    assert code == 3 and json.loads(out)["reason"] == "wrong-kind"


def test_at_time_before_issuance(home, cert_files):
    code, out, _ = run(home, "--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none",
                       "--at", "2020-01-01T00:00:00Z")
    assert code == 3 and json.loads(out)["reason"] == "not-yet-valid"


def test_from_card_without_server_hard_fails_and_soft_fails(home):
    at = "2027-01-01T00:00:00+09:00"
    code, out, _ = run(home, "--json", "cert", "verify", "--from-card", "auth", "--at", at)
    assert code == 3 and json.loads(out)["reason"] == "revocation-unavailable"
    code, out, _ = run(home, "--json", "cert", "verify", "--from-card", "auth", "--at", at, "--soft-fail")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["warnings"]


def test_untrusted_issuer_without_the_test_ca(home, cert_files, tmp_path):
    empty_home = tmp_path / "empty"
    empty_home.mkdir()
    code, out, _ = run(empty_home, "--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none",
                       "--at", "2027-01-01T00:00:00+09:00")
    assert code == 3 and json.loads(out)["reason"] == "untrusted-issuer"


def test_usage_errors(home, cert_files, tmp_path):
    assert run(home, "cert", "verify")[0] == 2
    assert run(home, "cert", "verify", str(cert_files["auth"]), "--at", "yesterday")[0] == 2
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    code, _, err = run(home, "cert", "verify", str(garbage))
    assert code == 3 and "malformed" in err
    assert read_holder(Home(home), "alice").status == "active"


def test_at_is_one_date_time_type_with_a_clear_usage_error(home, cert_files):
    code, out, err = run(home, "--json", "cert", "verify", str(cert_files["auth"]), "--at", "yesterday")
    doc = json.loads(out)
    assert code == 2 and doc["error"] == "usage"
    assert "'--at'" in doc["message"] and "'yesterday' is not an ISO 8601 date-time" in doc["message"]
    assert "Traceback" not in err
    # a date alone, or a time without an offset, is UTC (jpki.clock.parse_instant)
    for at in ("2027-01-01", "2027-01-01T00:00:00"):
        code, out, _ = run(home, "--json", "cert", "verify", str(cert_files["auth"]),
                           "--revocation", "none", "--at", at)
        assert code == 0 and json.loads(out)["checked_at"] == "2027-01-01T00:00:00+00:00", out


@pytest.mark.parametrize("kept", ["sign_ca.pem", "auth_ca.pem"])
def test_one_trust_rule_for_cert_verify_verify_and_the_relying_party(home, cert_files, tmp_path, kept):
    """The three build a home's trust store with one rule (TrustStore.for_home): a test CA
    folder that lost one of its roots is the same usage error for all three (before, each
    looked for another file, and two of them went on trusting less without a word)."""
    from jpki.auth.service import ServiceConfig, build_relying_party
    from jpki.errors import UsageError

    document = tmp_path / "doc.txt"
    document.write_text("signed before the CA was damaged\n")
    with CliRunner().isolation():
        assert main(["--home", str(home), "--card", "emu:alice", "sign", str(document),
                     "--pin", "ABC123"]) == 0
    lost = "auth_ca.pem" if kept == "sign_ca.pem" else "sign_ca.pem"
    (home / "ca" / lost).unlink()
    code, out, _ = run(home, "--json", "cert", "verify", str(cert_files["auth"]), "--revocation", "none")
    assert code == 2 and json.loads(out)["error"] == "usage" and lost in json.loads(out)["message"]
    code, out, _ = run(home, "--json", "verify", f"{document}.p7s", "--revocation", "none")
    assert code == 2 and json.loads(out)["error"] == "usage" and lost in json.loads(out)["message"]
    with pytest.raises(UsageError, match=lost):
        build_relying_party(ServiceConfig(home=home, rp_id="http://127.0.0.1:8480"))
