"""Interoperability: the OpenID Provider (``jpki idp serve --test-cards``, a real process) and a
relying party nobody here wrote, Node's ``openid-client`` (v6, npm; tests/node/oidc_rp.mjs).

openid-client does the relying party's whole job: discovery, the authorization URL (PKCE S256,
state, nonce), the authorization response checks, ``private_key_jwt`` (ES256, RS256) or
``client_secret_basic``, the ID token checks (ES256 signature from the JWKS, iss, aud, nonce,
exp) and userinfo with the expected ``sub``. This test plays only the browser: it opens the URL,
approves with the test-card JSON API and hands the callback URL back. Its refusals come back as
openid-client's own error classes and codes.

One provider process serves the module (one worker, memory store, the test CA's revocation
server in a thread); openid-client is installed on demand outside the repository
(tests/node_support.py). Without Node 20+ or the package: skipped, or failed with ``CI=true``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import Cli
from fixed import FIXED_NOW
from joserfc.jwk import ECKey, RSAKey
from node_support import NodeRp, missing_reason

from jpki.clock import clock_from_environment
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA, free_port
from jpki.pki.server import serve_in_thread
from jpki.provision import Home, create_card
from jpki.testing.pcsc import unavailable

pytestmark = pytest.mark.node

REDIRECT = "http://127.0.0.1:9/callback"   # never fetched: the test reads the redirect's Location
FOUR_INFO = "openid name address birthdate gender"
SUB = re.compile(r"[A-Za-z0-9_-]{43}")      # base64url of a SHA-256
#: How long the provider may take to come up (imports, the home's keys).
START_TIMEOUT = 30.0


@dataclasses.dataclass
class Served:
    """The provider process: its issuer, its home, the clients registered with the CLI (the
    settings openid-client gets for each) and the seconds its clock is ahead of the real one."""

    issuer: str
    home: Path
    clients: dict[str, dict[str, Any]]
    clock_skew: int
    log: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, key_pool: list[Any]) -> Iterator[Served]:
    reason = missing_reason()
    if reason is not None:
        unavailable(reason)
    base = tmp_path_factory.mktemp("oidc-node")
    (base / "userhome").mkdir()
    # Module scope comes before conftest's per-test environment: the processes get their own.
    anchor = time.time()
    env: dict[str, str | None] = {"HOME": str(base / "userhome"), "JPKI_NOW": FIXED_NOW.isoformat(),
                                  "JPKI_NOW_ANCHOR": repr(anchor), "JPKI_HOME": None, "JPKI_CARD": None}
    clock = clock_from_environment({k: v for k, v in env.items() if v is not None})
    path = base / "home"
    path.mkdir(mode=0o700)
    home = Home(path)
    ca_port = free_port()
    TestCA.init(home.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{ca_port}",
                keys={"sign": key_pool[0], "auth": key_pool[1]}).close()
    create_card(home, "alice", SAMPLE_PERSONAS["alice"], clock=clock, keys=(key_pool[2], key_pool[3]))
    cli = Cli(path, card=None)
    clients: dict[str, dict[str, Any]] = {}
    for name, alg, sector in (("shop-es256", "ES256", "shop.example.jp"), ("bank-rs256", "RS256", "bank.example.jp"),
                              ("shop-secret", None, "shop.example.jp")):
        args = ["--json", "idp", "client", "add", name, "--redirect-uri", REDIRECT, "--sector", sector]
        key: ECKey | RSAKey | None = None
        if alg is not None:
            key = ECKey.generate_key("P-256", auto_kid=True) if alg == "ES256" else RSAKey.generate_key(2048,
                                                                                                     auto_kid=True)
            jwks = base / f"{name}.jwks.json"
            jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
            args += ["--jwks", str(jwks)]
        else:
            args.append("--secret")
        added = cli(*args, env=env)
        assert added.exit_code == 0, added
        document = added.json()
        clients[name] = {"client_id": document["client_id"], "alg": alg,
                         **({"auth": "private_key_jwt", "key": key.as_dict(private=True)} if key is not None
                            else {"auth": "client_secret_basic", "secret": document["client_secret"]})}
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    log: list[str] = []
    up = threading.Event()
    with serve_in_thread(home.ca_dir, "127.0.0.1", ca_port, clock=clock):
        process = cli.spawn("idp", "serve", "--port", str(port), "--test-cards", "--revocation-max-age", "0",
                            "--log-level", "warning", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def read_log() -> None:   # drains stderr; "OpenID Provider …" is said once it listens
            assert process.stderr is not None
            for line in process.stderr:
                log.append(line)
                if line.startswith("OpenID Provider "):
                    up.set()
            up.set()              # ended: the test sees the process gone

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        try:
            assert up.wait(START_TIMEOUT) and process.poll() is None, "".join(log)
            yield Served(issuer, path, clients, round(FIXED_NOW.timestamp() - anchor), log)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(10)


@pytest.fixture
def rp(served: Served) -> Iterator[Any]:
    """Start openid-client as ``name``'s relying party (settings overridden by ``changes``)."""
    started: list[NodeRp] = []

    def start(name: str, scope: str = FOUR_INFO, **changes: Any) -> NodeRp:
        settings = {**served.clients[name], "issuer": served.issuer, "redirect_uri": REDIRECT, "scope": scope,
                    "clock_skew": served.clock_skew, **changes}
        node = NodeRp(settings)
        started.append(node)
        assert node.configured == {"ok": True, "issuer": served.issuer}, node.configured   # discovery
        return node

    yield start
    for node in started:
        node.close()


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def browse(served: Served, url: str, outcome: str = "success", card: str = "alice") -> str:
    """The browser: open the authorization URL, let the test card answer, follow the provider
    back; the URL the relying party's callback receives."""
    with httpx.Client(trust_env=False, timeout=30) as browser:
        page = browser.get(url)
        assert page.status_code == 200 and "テストカードモード" in page.text, page.text
        answer = browser.post(f"{served.issuer}/api/test-cards/authenticate",
                              json={"pending": page.headers["x-jpki-pending"], "card": card, "outcome": outcome})
        assert answer.status_code == 200, answer.text
        redirect = answer.json()["redirect"]
        if redirect.startswith(REDIRECT + "?"):      # refused: straight back to the client
            return str(redirect)
        back = browser.get(redirect)
        assert back.status_code == 302, back.text
        location = back.headers["location"]
        assert location.startswith(REDIRECT + "?")
        return str(location)


def log_in(served: Served, node: NodeRp, scope: str | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """One code flow: openid-client's authorization URL's parameters and its verified result."""
    url = node.ask({"op": "authorize", **({"scope": scope} if scope else {})})["url"]
    result = node.ask({"op": "callback", "url": browse(served, url)})
    assert result["ok"] is True, result
    return query(url), result


@pytest.mark.parametrize("name", ["shop-es256", "bank-rs256", "shop-secret"])
def test_openid_client_logs_in_and_reads_the_4_info(served, rp, name):
    node = rp(name)
    url = node.ask({"op": "authorize"})["url"]
    assert url.startswith(served.issuer + "/api/realms/main/protocol/openid-connect/auth?")
    params = query(url)
    assert params["response_type"] == "code" and params["client_id"] == served.clients[name]["client_id"]
    assert params["redirect_uri"] == REDIRECT and params["scope"] == FOUR_INFO
    assert params["code_challenge_method"] == "S256" and re.fullmatch(SUB, params["code_challenge"])
    assert params["state"] and params["nonce"]
    result = node.ask({"op": "callback", "url": browse(served, url)})
    assert result["ok"] is True, result
    # openid-client checked the ES256 signature with a key of the provider's JWKS
    kids = {key["kid"] for key in httpx.get(f"{served.issuer}/api/realms/main/protocol/openid-connect/certs",
                                            trust_env=False).json()["keys"]}
    assert result["id_token_header"]["alg"] == "ES256" and result["id_token_header"]["kid"] in kids
    claims = result["claims"]
    assert claims["iss"] == served.issuer and claims["nonce"] == params["nonce"]
    assert claims["aud"] in (served.clients[name]["client_id"], [served.clients[name]["client_id"]])
    assert claims["acr"] == "aal3" and claims["amr"] == ["hwk", "pin", "sc"]
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= claims["iat"] < claims["exp"]
    assert abs(claims["iat"] - FIXED_NOW.timestamp()) < 600     # the provider's clock, not the real one
    assert re.fullmatch(SUB, claims["sub"])
    assert "name" not in claims                                 # the 4 info come from userinfo
    persona = SAMPLE_PERSONAS["alice"]
    assert result["userinfo"] == {"sub": claims["sub"], "name": persona.name,
                                  "address": {"formatted": persona.address},
                                  "birthdate": persona.birth_date.isoformat(), "gender": "female"}
    assert result["token"]["token_type"].lower() == "bearer" and result["token"]["expires_in"] > 0


def test_pairwise_sub_seen_by_openid_client(served, rp):
    shop = rp("shop-es256", scope="openid")
    _, login = log_in(served, shop)
    sub = login["claims"]["sub"]
    assert login["userinfo"] == {"sub": sub}            # login alone: no personal data
    _, ekyc = log_in(served, shop, scope=FOUR_INFO)     # the signing certificate, the same person
    assert ekyc["claims"]["sub"] == sub and ekyc["userinfo"]["name"] == SAMPLE_PERSONAS["alice"].name
    _, same_sector = log_in(served, rp("shop-secret", scope="openid"))
    assert same_sector["claims"]["sub"] == sub
    _, other_sector = log_in(served, rp("bank-rs256", scope="openid"))
    assert re.fullmatch(SUB, other_sector["claims"]["sub"]) and other_sector["claims"]["sub"] != sub


def test_refusals_seen_through_openid_client(served, rp):
    node = rp("shop-es256", scope="openid")
    url = node.ask({"op": "authorize"})["url"]
    callback = browse(served, url)
    params = query(callback)
    assert params["iss"] == served.issuer and params["state"] == query(url)["state"]
    tampered = callback.replace(f"state={params['state']}", "state=tampered")
    refused = node.ask({"op": "callback", "url": tampered})   # checked before the code is spent
    assert refused["ok"] is False and refused["name"] == "ClientError", refused
    assert refused["code"] == "OAUTH_INVALID_RESPONSE" and '"state"' in refused["cause"]
    assert node.ask({"op": "callback", "url": callback})["ok"] is True
    reused = node.ask({"op": "callback", "url": callback})
    assert (reused["name"], reused["error"], reused["status"]) == ("ResponseBodyError", "invalid_grant", 400), reused
    # the card holder cancels: the provider's access_denied, as openid-client reports it
    url = node.ask({"op": "authorize"})["url"]
    cancelled = node.ask({"op": "callback", "url": browse(served, url, outcome="cancel")})
    assert (cancelled["name"], cancelled["error"]) == ("AuthorizationResponseError", "access_denied"), cancelled


def test_a_client_assertion_signed_with_another_key_is_refused(served, rp):
    stranger = ECKey.generate_key("P-256", auto_kid=True).as_dict(private=True)
    node = rp("shop-es256", scope="openid", key=stranger)
    url = node.ask({"op": "authorize"})["url"]
    refused = node.ask({"op": "callback", "url": browse(served, url)})
    assert (refused["name"], refused["error"], refused["status"]) == ("ResponseBodyError", "invalid_client", 401), \
        refused
