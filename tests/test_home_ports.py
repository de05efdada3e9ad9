"""Each home's test CA gets its own free port at ``jpki ca init``; ``jpki ca serve`` uses it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse

import httpx
from click.testing import CliRunner

from jpki.cli import main


def ca_init(home) -> dict:
    with CliRunner().isolation() as (out, err, _):
        code = main(["--home", str(home), "--json", "ca", "init"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_two_homes_get_two_ports(tmp_path):
    first, second = ca_init(tmp_path / "one"), ca_init(tmp_path / "two")
    a, b = (urllib.parse.urlsplit(d["base_url"]) for d in (first, second))
    assert a.hostname == b.hostname == "127.0.0.1"
    assert a.port and b.port and a.port != b.port


def test_ca_serve_answers_at_the_base_url_of_its_home(tmp_path):
    home = tmp_path / "home"
    base = ca_init(home)["base_url"]
    proc = subprocess.Popen([sys.executable, "-m", "jpki", "--home", str(home), "ca", "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
