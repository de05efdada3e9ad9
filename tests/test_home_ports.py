"""Each home's test CA gets its own free port at ``jpki ca init``; ``jpki ca serve`` uses it."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.parse

import httpx


def test_two_homes_get_two_ports(cli, tmp_path):
    first = cli("--json", "ca", "init", home=tmp_path / "one", card=None)
    second = cli("--json", "ca", "init", home=tmp_path / "two", card=None)
    assert first.exit_code == second.exit_code == 0, (first, second)
    a, b = (urllib.parse.urlsplit(r.json()["base_url"]) for r in (first, second))
    assert a.hostname == b.hostname == "127.0.0.1"
    assert a.port and b.port and a.port != b.port


def test_ca_serve_answers_at_the_base_url_of_its_home(cli, tmp_path):
    cli = cli.bind(home=tmp_path / "home", card=None)
    init = cli("--json", "ca", "init")
    assert init.exit_code == 0, init
    base = init.json()["base_url"]
    proc = cli.spawn("ca", "serve", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ca serve did not come up at the CA's base URL"
            time.sleep(0.1)
        crl = httpx.get(f"{base}/crl/auth.crl", timeout=10)
        assert crl.status_code == 200 and crl.content[:1] == b"\x30"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert base.rsplit(":", 1)[1] in proc.stderr.read()
