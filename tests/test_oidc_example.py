"""examples/oidc_login: a web shop that adds "log in with My Number Card" and "verify my identity"
with Authlib's Starlette client, against `jpki idp` in test-card mode — no browser.

The provider (test cards, the home's test CA) and the shop run under uvicorn in threads on
free ports, exactly as they talk in the walkthrough: discovery, the authorization redirect
(state, nonce, PKCE S256), the code for tokens with private_key_jwt, the ID token checked
against the JWKS, userinfo. A cookie-keeping httpx client is the browser and follows the
redirects; the card is chosen through the provider's test-card JSON API. Authlib and joserfc read
the system time, so they are given the test clock's (the provider's) for the assertion's
``iat``/``exp`` and the ID token's checks.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixed import FIXED_NOW
from idp_support import Idp, make_idp
from joserfc.jwk import ECKey

from jpki.clock import OffsetClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.lifecycle import lost, renew
from jpki.pki import free_port
from jpki.provision import Home
from jpki.serving import serve_in_thread

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "oidc_login" / "app.py"
WALKTHROUGH = REPO / "examples" / "oidc_login" / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+[^>]+?-->\s*$")
SUB = re.compile(r"<code id=sub>([A-Za-z0-9_-]{43})</code> \(login #(\d+)\)")


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("oidc_login_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example() -> Any:
    return load_example()


@pytest.fixture
def provider(home: Path, net: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Idp]:
    """`jpki idp serve --test-cards` of ``home`` under uvicorn on a free port, on a clock that
    starts at the fixtures' time and runs on; Authlib and joserfc read that clock too."""
    clock = OffsetClock(FIXED_NOW)
    shim = types.SimpleNamespace(time=lambda: clock.now().timestamp())
    import authlib.oauth2.rfc7523.assertion
    import joserfc._rfc7519.claims

    monkeypatch.setattr(authlib.oauth2.rfc7523.assertion, "time", shim)   # client assertions
    monkeypatch.setattr(joserfc._rfc7519.claims, "time", shim)            # ID token exp/iat
    port = free_port()
    idp = make_idp(home, clock, net, issuer=f"http://127.0.0.1:{port}")
    with serve_in_thread(idp.app, port=port):
        yield idp
    idp.app.state.close()


class Shop:
    """The example app under uvicorn, registered with the provider with the JWKS its keygen wrote."""

    def __init__(self, example: Any, provider: Idp, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        assert example.main(["keygen"]) == 0
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        added = cli("--json", "idp", "client", "add", "Example shop", "--redirect-uri", self.url + "/callback",
                    "--jwks", str(tmp_path / "client.jwks.json"))
        assert added.exit_code == 0, added.output
        self.client_id = added.json()["client_id"]
        key = ECKey.import_key(json.loads((tmp_path / "client-key.json").read_text()))
        self.issuer = provider.provider.issuer
        self.app = example.build_app(base_url=self.issuer, client_id=self.client_id, key=key, app_url=self.url)
        self.server = serve_in_thread(self.app, port=port)

    def browser(self) -> httpx.Client:
        return httpx.Client(follow_redirects=True, timeout=30)

    def sign_in(self, browser: httpx.Client, button: str = "/login", card: str = "alice",
                outcome: str = "success") -> httpx.Response:
        """Press a button of the shop; on the provider's page pick a test card and an outcome
        (the JSON API a relying party's CI uses); follow the browser back to the shop."""
        page = browser.get(self.url + button)
        assert page.status_code == 200 and str(page.url).startswith(self.issuer + "/api/realms/main/"), page.text
        assert "state=" in str(page.url) and "nonce=" in str(page.url) and "code_challenge_method=S256" in str(page.url)
        answer = httpx.post(self.issuer + "/api/test-cards/authenticate", timeout=30,
                            json={"pending": page.headers["x-jpki-pending"], "card": card, "outcome": outcome})
        assert answer.status_code == 200, answer.text
        back = browser.get(answer.json()["redirect"])
        assert str(back.url).startswith(self.url + "/"), back.url
        return back


@pytest.fixture
def shop(example: Any, provider: Idp, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    found = Shop(example, provider, cli, tmp_path, monkeypatch)
    with found.server:
        yield found


def shown_sub(page: httpx.Response) -> tuple[str, int]:
    found = SUB.search(page.text)
    assert found is not None, page.text
    return found.group(1), int(found.group(2))


def test_log_in_with_my_number_card_shows_the_pairwise_sub(shop: Shop) -> None:
    with shop.browser() as browser:
        assert "Not logged in." in browser.get(shop.url + "/").text
        page = shop.sign_in(browser)
        assert page.status_code == 200 and str(page.url) == shop.url + "/"
        sub, logins = shown_sub(page)
        assert logins == 1 and "Identity not verified yet." in page.text   # a login gives no personal data
        again = shop.sign_in(browser)   # a second exchange: a fresh assertion (jti), not a replay
        assert shown_sub(again) == (sub, 2)
        assert "Not logged in." in browser.get(shop.url + "/logout").text
    with shop.browser() as other:   # another browser is not logged in by that; bob is someone else
        assert "Not logged in." in other.get(shop.url + "/").text
        bob, _ = shown_sub(shop.sign_in(other, card="bob"))
        assert bob != sub


def test_verify_my_identity_shows_the_basic_4_info(shop: Shop) -> None:
    alice = SAMPLE_PERSONAS["alice"]
    with shop.browser() as browser:
        sub, _ = shown_sub(shop.sign_in(browser))
        page = shop.sign_in(browser, "/verify")
        assert shown_sub(page) == (sub, 2)   # the signing certificate maps to the same person's sub
        rows = dict(re.findall(r"<tr><th>(\w+)<td>([^<]*)", page.text))
        assert rows == {"name": alice.name, "address": alice.address, "birthdate": alice.birth_date.isoformat(),
                        "gender": alice.sex.value}


def test_the_client_assertions_are_short_lived_with_a_fresh_jti(shop: Shop, provider: Idp,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []
    token = provider.provider.token

    def recording(pairs: Any, authorization: str | None) -> dict[str, Any]:
        seen.append(dict(pairs))
        return token(list(seen[-1].items()), authorization)

    monkeypatch.setattr(provider.provider, "token", recording)
    with shop.browser() as browser:
        shop.sign_in(browser)
        shop.sign_in(browser, "/verify")
    assert len(seen) == 2
    claims = [json.loads(base64.urlsafe_b64decode(p["client_assertion"].split(".")[1] + "==")) for p in seen]
    for form, claim in zip(seen, claims, strict=True):
        assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        assert form["code_verifier"] and "client_secret" not in form
        assert claim["iss"] == claim["sub"] == shop.client_id and claim["aud"] == provider.provider.token_endpoint
        assert claim["exp"] - claim["iat"] == 60
    assert claims[0]["jti"] != claims[1]["jti"]


@pytest.mark.parametrize(("outcome", "reason"), [("wrong_pin", "wrong-pin"), ("cancel", "cancelled")])
def test_a_refusal_is_shown_and_nobody_is_logged_in(shop: Shop, outcome: str, reason: str) -> None:
    with shop.browser() as browser:
        page = shop.sign_in(browser, outcome=outcome)
        assert page.status_code == 403 and "access_denied" in page.text and reason in page.text
        assert "Not logged in." in browser.get(shop.url + "/").text


def test_a_renewed_card_keeps_the_sub_and_a_lost_one_is_refused(shop: Shop, provider: Idp, home: Path) -> None:
    with shop.browser() as browser:
        sub, _ = shown_sub(shop.sign_in(browser))
    renew(Home(home), "alice", clock=provider.clock)
    with shop.browser() as browser:
        assert shown_sub(shop.sign_in(browser)) == (sub, 2)
    lost(Home(home), "alice", clock=provider.clock)
    with shop.browser() as browser:
        page = shop.sign_in(browser)
        assert page.status_code == 403 and "revoked" in page.text


def test_a_callback_without_a_login_started_is_refused(shop: Shop) -> None:
    with shop.browser() as browser:
        page = browser.get(shop.url + "/callback?code=forged&state=forged")
        assert page.status_code == 403 and "mismatching_state" in page.text
        assert "Not logged in." in browser.get(shop.url + "/").text


def test_the_app_imports_nothing_from_jpki() -> None:
    tree = ast.parse(APP.read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules and not any(m == "jpki" or m.startswith(("jpki.", "card_emulator")) for m in modules)
    # and it loads with jpki unimportable, leaving no jpki module behind
    code = ("import importlib.util, sys; sys.modules['jpki'] = None; sys.modules['card_emulator'] = None\n"
            f"spec = importlib.util.spec_from_file_location('app', {str(APP)!r})\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('jpki', 'card_emulator')) and sys.modules[m]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_keygen_keeps_an_existing_key_and_the_app_says_what_it_needs(example: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OIDC_CLIENT_ID", raising=False)
    assert example.main(["keygen"]) == 0
    key = (tmp_path / "client-key.json").read_text()
    assert (tmp_path / "client-key.json").stat().st_mode & 0o077 == 0
    jwks = json.loads((tmp_path / "client.jwks.json").read_text())
    assert [k.get("d") for k in jwks["keys"]] == [None] and jwks["keys"][0]["crv"] == "P-256"
    assert example.main(["keygen"]) == 1 and (tmp_path / "client-key.json").read_text() == key
    assert example.main([]) == 2   # no OIDC_CLIENT_ID
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- the walkthrough, as written


def walkthrough_script() -> str:
    """The README's ```sh blocks (but those marked ``readme-test: skip``) as one bash script."""
    lines, parts, i = WALKTHROUGH.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            end = lines.index("```", i + 1)
            if not SKIP.search(before):
                parts += [f"echo '--- README.md line {i + 1}' >&2", *lines[i + 1:end]]
            i = end
        i += 1
    return "\n".join(["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT", *parts,
                      "echo '--- every block ran' >&2"]) + "\n"


def test_the_walkthrough_has_few_skipped_blocks() -> None:
    script = walkthrough_script()
    assert script.count("--- README.md line") >= 3
    assert "pip install" not in script and "THE-SERVICE-BASE-URL" not in script


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """On a fresh home, in a private network namespace (its own loopback: ports 8000 and 8600 as
    written, clashing with nothing), from a folder holding the repository's examples."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin")
    ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=30) if unshare and ip else None
    if probe is None or probe.returncode != 0:
        reason = "cannot make a private network namespace (unshare and ip, as root)"
        (pytest.fail if os.environ.get("CI", "").lower() in ("1", "true", "yes") else pytest.skip)(reason)
    assert unshare is not None and ip is not None
    (tmp_path / "user").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    (tmp_path / "walkthrough.sh").write_text(walkthrough_script(), encoding="utf-8")
    env = {"HOME": str(tmp_path / "user"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
           **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})}
    inner = f"{shlex.quote(ip)} link set lo up && exec bash {shlex.quote(str(tmp_path / 'walkthrough.sh'))}"
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        proc = subprocess.Popen([unshare, "--net", "bash", "-c", inner], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)   # whatever the walkthrough left running
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert proc.returncode == 0 and "every block ran" in stderr, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "Traceback" not in stdout + stderr, stderr
    assert re.search(r"Logged in as <code id=sub>[A-Za-z0-9_-]{43}", stdout), stdout
    assert "<tr><th>name<td>山田　花子" in stdout and "<tr><th>gender<td>female" in stdout
    assert "Not logged in: access_denied: wrong-pin" in stdout
