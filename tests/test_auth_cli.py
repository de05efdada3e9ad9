"""The CLI of card login and eKYC: ``jpki rp serve`` (a real process, uvicorn workers) and
``jpki login`` / ``jpki ekyc`` (in process and as real processes, by the ``cli`` fixture), with
revocation answered for real by the test CA's revocation server over HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from auth_support import AUTH_PIN, SIGN_PIN, assert_no_personal_data

from jpki.auth.client import HttpxJson, ServiceError
from jpki.auth.service import ServiceConfig, create_service
from jpki.clock import clock_from_environment
from jpki.lifecycle import lost
from jpki.pki import free_port
from jpki.provision import Home, read_holder
from jpki.serving import serve_in_thread


@pytest.fixture
def service_url(live_home) -> Iterator[str]:
    """The relying-party service of live_home under uvicorn in this process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_service(ServiceConfig(home=live_home, rp_id=url), clock=clock_from_environment())
    with serve_in_thread(app, port=port):
        yield url
    app.state.close()


def test_the_client_speaks_httpx_and_goes_direct_to_loopback(service_url, monkeypatch):
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, dead_proxy)  # a proxy nobody answers: loopback must not use it
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with HttpxJson(timeout=10) as http:
        status, doc = http("POST", f"{service_url}/api/login/begin", {})
        assert status == 200 and doc["purpose"] == "login"
        status, doc = http("POST", f"{service_url}/api/login/complete", {"v": 1})
        assert (status, doc["reason"]) == (400, "malformed")  # a refusal is an answer, not an error
        with pytest.raises(ServiceError, match="without a JSON document"):
            http("GET", f"{service_url}/")  # the service's HTML page
        with pytest.raises(ServiceError, match="cannot reach"):
            http("GET", f"http://127.0.0.1:{free_port()}/api/info")


def test_login_and_ekyc_commands(cli, live_home, service_url):
    cli = cli.bind(home=live_home)
    r = cli("login", service_url, "--pin", AUTH_PIN)
    assert r.exit_code == 0, r.stdout
    assert r.stdout.startswith(f"Logged in to {service_url}: account jpki1:")
    r = cli("--json", "login", service_url, env={"JPKI_AUTH_PIN": AUTH_PIN})
    doc = r.json()
    assert doc["ok"] is True and doc["validation"]["revocation"]["method"] == "ocsp"
    r = cli("ekyc", service_url, "--text", "口座開設", input=SIGN_PIN + "\n")
    assert r.exit_code == 0, r.stdout
    persona = read_holder(Home(live_home), "alice").persona
    assert persona.name in r.stdout and persona.birth_date.isoformat() in r.stdout
    assert "signed text: 口座開設" in r.stdout


def test_a_lost_card_is_refused_with_exit_3(cli, live_home, service_url):
    cli = cli.bind(home=live_home)
    lost(Home(live_home), "alice", clock=clock_from_environment())
    r = cli("login", service_url, "--pin", AUTH_PIN)
    assert r.exit_code == 3
    assert "refused by the service (HTTP 403): revoked" in r.stdout
    r = cli("--json", "ekyc", service_url, "--pin", SIGN_PIN)
    assert r.exit_code == 3 and r.json()["reason"] == "revoked"


def test_a_challenge_for_another_relying_party_is_refused_before_the_pin(cli, live_home):
    cli = cli.bind(home=live_home)
    port = free_port()
    app = create_service(ServiceConfig(home=live_home, rp_id="https://bank.example.jp"), clock=clock_from_environment())
    try:
        with serve_in_thread(app, port=port):
            url = f"http://127.0.0.1:{port}"
            r = cli("login", url)  # no PIN given: none asked
            assert r.exit_code == 3 and "meant for 'https://bank.example.jp'" in r.stderr
            r = cli("login", url, "--rp-id", "https://bank.example.jp",
                    "--pin", AUTH_PIN)
            assert r.exit_code == 0, r.stdout
    finally:
        app.state.close()


def test_a_wrong_pin_is_exit_4(cli, live_home, service_url):
    r = cli("login", service_url, "--pin", "9999", home=live_home)
    assert r.exit_code == 4


def test_serve_usage_errors(cli, live_home):
    cli = cli.bind(home=live_home)
    r = cli("rp", "serve", "--workers", "2")
    assert r.exit_code == 2 and "shared challenge store" in r.stderr
    r = cli("rp", "serve", "--host", "0.0.0.0")
    assert r.exit_code == 2 and "--rp-id" in r.stderr
    r = cli("rp", "serve", "--store", "bogus:x")
    assert r.exit_code == 2 and "unknown challenge store" in r.stderr


def wait_up(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"jpki rp serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/api/info", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("jpki rp serve did not come up")


@pytest.mark.slow
def test_rp_serve_as_a_process_with_two_workers(cli, live_home, tmp_path):
    """`jpki rp serve --workers 2 --store sqlite:…`, then `jpki login` / `jpki ekyc` as processes."""
    cli = cli.bind(home=live_home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = cli.spawn("rp", "serve", "--port", str(port), "--workers", "2",
                        "--store", f"sqlite:{tmp_path / 'challenges.db'}", "--log-level", "info",
                        card=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_up(url, process)
        assert httpx.get(f"{url}/openapi.json").json()["openapi"] == "3.1.0"
        seen = set()
        for _ in range(4):  # several logins: both workers answer, the store is shared
            r = cli.process("--json", "login", url, env={"JPKI_AUTH_PIN": AUTH_PIN})
            assert r.exit_code == 0, r.stderr
            seen.add(r.json()["account"]["key"])
        assert len(seen) == 1
        r = cli.process("ekyc", url, "--text", "process", env={"JPKI_SIGN_PIN": SIGN_PIN})
        assert r.exit_code == 0, r.stderr
        assert read_holder(Home(live_home), "alice").persona.address in r.stdout
    finally:
        process.terminate()
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
    assert "login ok: challenge=" in err and "eKYC ok: challenge=" in err  # jpki.auth's lines
    assert_no_personal_data(err, live_home)
