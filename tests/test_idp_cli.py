"""``jpki idp client add|list|remove`` (through the ``cli`` fixture: one JSON document,
one-line errors with a code) and ``jpki idp serve`` as a real process: two uvicorn workers on a
SQLite store, test cards, a whole code flow over HTTP, a refresh token and a client assertion
replayed to the workers."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from auth_support import assert_no_personal_data
from joserfc import jwt
from joserfc.jwk import ECKey

from jpki.clock import clock_from_environment
from jpki.pki import free_port


def test_client_add_list_remove(cli, home, tmp_path):
    key = ECKey.generate_key("P-256", auto_kid=True)
    jwks = tmp_path / "shop.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    r = cli("--json", "idp", "client", "add", "Example shop", "--redirect-uri",
            "https://shop.example.jp/callback", "--redirect-uri", "https://shop.example.jp/cb2", "--jwks", str(jwks))
    assert r.exit_code == 0, r
    added = r.json()
    assert added["auth_methods"] == ["private_key_jwt"] and added["sector"] == "shop.example.jp"
    assert "client_secret" not in added and added["keys"] == 1
    r = cli("idp", "client", "add", "CI", "--redirect-uri", f"http://127.0.0.1:{free_port()}/callback", "--secret")
    assert r.exit_code == 0 and "client_secret:" in r.stdout and "shown once" in r.stdout
    secret = r.stdout.split("client_secret:")[1].split()[0]
    r = cli("--json", "idp", "client", "list")
    listed = r.json()
    assert [c["name"] for c in listed] == ["Example shop", "CI"]
    assert secret not in r.output and "secret_hash" not in r.output
    r = cli("--json", "idp", "client", "remove", added["client_id"])
    assert r.exit_code == 0 and r.json()["removed"]["client_id"] == added["client_id"]
    r = cli("idp", "client", "list")
    assert "Example shop" not in r.stdout and "CI" in r.stdout
    assert oct((home / "idp" / "clients.db").stat().st_mode & 0o777) == "0o600"


def test_a_served_registry_sees_a_client_removed_by_the_cli_at_once(tmp_path):
    # The provider keeps the clients it read; a commit by another connection (the CLI) drops them.
    from fixed import FIXED_NOW

    from jpki.idp.clients import ClientRegistry

    now = FIXED_NOW
    served, cli_side = ClientRegistry(tmp_path), ClientRegistry(tmp_path)
    try:
        shop, _ = cli_side.add("Shop", ["https://shop.example.jp/cb"], now=now, secret=True)
        other, _ = cli_side.add("Other", ["https://other.example.jp/cb"], now=now, secret=True)
        assert served.get(shop.client_id) == shop and served.get(shop.client_id) is served.get(shop.client_id)
        assert served.get(other.client_id) == other
        cli_side.remove(shop.client_id)
        assert served.get(shop.client_id) is None and served.get(other.client_id) == other
        served.remove(other.client_id)   # its own write
        assert served.get(other.client_id) is None and cli_side.get(other.client_id) is None
    finally:
        served.close()
        cli_side.close()


def test_client_add_errors_are_one_line_with_a_code(cli, tmp_path):
    private = tmp_path / "private.json"
    private.write_text(json.dumps(ECKey.generate_key("P-256").as_dict(private=True)))
    notjson = tmp_path / "not.json"
    notjson.write_text("{")
    cases = [
        (["Shop", "--redirect-uri", "http://shop.example.jp/cb", "--secret"], "plain http"),
        (["Shop", "--redirect-uri", "https://shop.example.jp/cb#frag", "--secret"], "fragment"),
        (["Shop", "--redirect-uri", "https://shop.example.jp/cb"], "must be able to authenticate"),
        (["Shop", "--redirect-uri", "https://shop.example.jp/cb", "--jwks", str(private)], "private parts"),
        (["Shop", "--redirect-uri", "https://shop.example.jp/cb", "--jwks", str(notjson)], "not JSON"),
        (["Shop", "--redirect-uri", "https://a.example/cb", "--redirect-uri", "https://b.example/cb", "--secret"],
         "--sector"),
        (["", "--redirect-uri", "https://shop.example.jp/cb", "--secret"], "client name"),
    ]
    for args, words in cases:
        r = cli("--json", "idp", "client", "add", *args)
        assert r.exit_code == 2, r
        document = r.json()
        assert document["ok"] is False and document["error"] == "usage" and words in document["message"]
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = cli("--json", "idp", "client", "remove", "no-such-client")
    assert r.exit_code == 2 and r.json()["error"] == "unknown_client"
    r = cli("idp", "client", "add", "Shop", "--redirect-uri", "https://a.example/cb", "--jwks", "/nonexistent")
    assert r.exit_code == 2


def test_serve_refuses_bad_settings(cli):
    r = cli("idp", "serve", "--workers", "2")
    assert r.exit_code == 2 and "shared store" in r.stderr
    r = cli("idp", "serve", "--host", "0.0.0.0")
    assert r.exit_code == 2 and "--issuer" in r.stderr
    r = cli("idp", "serve", "--store", "bogus:x", "--port", str(free_port()))
    assert r.exit_code == 2 and "unknown store" in r.stderr
    r = cli("idp", "serve", "--issuer", "ftp://idp.example.jp")
    assert r.exit_code == 2 and "issuer" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("--json", "idp", "serve", "--port", str(port))
    assert r.exit_code == 1 and f"port {port} is in use" in r.stderr
    assert r.json()["error"] == "port_in_use"


def _assertion(client_id: str, key: ECKey, audience: str, jti: str) -> str:
    now = int(clock_from_environment().now().timestamp())   # the server's clock ($JPKI_NOW)
    return jwt.encode({"alg": "ES256", "kid": key.kid}, {"iss": client_id, "sub": client_id, "aud": audience,
                                                         "iat": now, "exp": now + 60, "jti": jti}, key)


@pytest.mark.slow
def test_serve_as_a_process_with_two_workers_and_test_cards(cli, live_home, tmp_path):
    key = ECKey.generate_key("P-256", auto_kid=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    redirect = f"http://127.0.0.1:{free_port()}/callback"   # never called: the test reads the code
    cli = cli.bind(home=live_home, card=None)
    r = cli("--json", "idp", "client", "add", "Example shop", "--redirect-uri", redirect,
            "--jwks", str(jwks), "--secret")
    client = r.json()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    process = cli.spawn("idp", "serve", "--port", str(port), "--workers", "2", "--store",
                        f"sqlite:{tmp_path / 'idp.db'}", "--test-cards", "--revocation-max-age", "0",
                        "--refresh-token-idle", "3600", "--max-pending", "8", "--rate-limit", "50",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "jpki idp serve did not come up"
                time.sleep(0.1)
        doc = httpx.get(f"{issuer}/api/realms/main/.well-known/openid-configuration").json()
        assert doc["issuer"] == issuer and doc["jpki_test_cards"] is True
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        for scope in ("openid", "openid name gender"):
            with httpx.Client(base_url=issuer) as browser:
                page = browser.get(doc["authorization_endpoint"], params={
                    "response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect,
                    "scope": scope, "state": "s1", "nonce": "n1", "code_challenge": challenge,
                    "code_challenge_method": "S256"})
                assert page.status_code == 200 and "テストカードモード" in page.text
                pending = page.headers["x-jpki-pending"]
                answer = browser.post("/api/test-cards/authenticate",
                                      json={"pending": pending, "card": "alice", "outcome": "success"})
                back = browser.get(answer.json()["redirect"])
                params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back.headers["location"]).query))
            tokens = httpx.post(doc["token_endpoint"], data={
                "grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect,
                "code_verifier": verifier}, auth=(client["client_id"], client["client_secret"]))
            assert tokens.status_code == 200, tokens.text
            info = httpx.get(doc["userinfo_endpoint"],
                             headers={"Authorization": f"Bearer {tokens.json()['access_token']}"}).json()
            assert ("name" in info) == (scope != "openid")
            refreshed = []
            for refresh_token in (tokens.json()["refresh_token"],) * 2:   # fresh connections: any worker
                with httpx.Client() as fresh:
                    refreshed.append(fresh.post(doc["token_endpoint"], data={
                        "grant_type": "refresh_token", "refresh_token": refresh_token},
                        auth=(client["client_id"], client["client_secret"])))
            assert refreshed[0].status_code == 200 and refreshed[0].json()["refresh_expires_in"] == 3600
            assert refreshed[1].status_code == 400 and refreshed[1].json()["error"] == "invalid_grant"   # reused
        assertion = _assertion(client["client_id"], key, doc["token_endpoint"], "one-jti")
        statuses = []
        for _ in range(6):   # fresh connections: both workers see it; only the first use passes
            with httpx.Client() as fresh:
                statuses.append(fresh.post(doc["token_endpoint"], data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": assertion}).status_code)
        assert statuses == [200] + [401] * 5
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert "TEST-CARD MODE" in err and "OpenID Provider " + issuer in err
    assert "authorization approved: client=" in err and "code issued" in err
    assert "jti replayed" in err and "refresh token used again" in err
    assert_no_personal_data(err, live_home)
    assert Path(tmp_path / "idp.db").exists()


def test_a_client_id_never_looks_like_an_option(monkeypatch):
    # One id in 64 started with "-": `jpki idp client remove -X…` was then a usage error.
    import secrets as _secrets

    from jpki.idp import clients

    drawn = iter(["-XaBcDeFgHiJkLmNoPqRsT", "_YaBcDeFgHiJkLmNoPqRsT"])
    monkeypatch.setattr(_secrets, "token_urlsafe", lambda n: next(drawn))
    assert clients.new_client_id() == "_YaBcDeFgHiJkLmNoPqRsT"
