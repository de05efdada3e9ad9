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
