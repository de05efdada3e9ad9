"""``jpki tsa init|serve|show``: the TSA made on first use, served by worker processes that
share the serial counter, and the errors a user can meet."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time

import httpx
import pytest
from asn1crypto import tsp
from fixed import FIXED_NOW

from jpki.pki import free_port
from jpki.tsa.protocol import QUERY_TYPE, REPLY_TYPE, TSA_POLICY, make_query


def test_show_without_a_tsa_says_how_to_make_one(cli):
    r = cli("--json", "tsa", "show")
    assert r.exit_code == 1 and r.json()["error"] == "no_tsa", r
    assert "jpki tsa init" in r.stderr and "Traceback" not in r.output


def test_init_makes_the_tsa_once(cli, home):
    port = free_port()
    r = cli("--json", "tsa", "init", "--port", str(port), "--key-type", "ec")
    assert r.exit_code == 0, r
    made = r.json()
    assert made["url"] == f"http://127.0.0.1:{port}/" and made["key_type"] == "ec"
    assert made["policy"] == TSA_POLICY and made["last_serial"] == 0
    assert made["certificate"]["file"] == str(home / "tsa" / "tsa.pem")
    again = cli("--json", "tsa", "init")
    assert again.exit_code == 2 and again.json()["error"] == "tsa_exists", again
    shown = cli("tsa", "show")
    assert shown.exit_code == 0 and f"http://127.0.0.1:{port}/" in shown.stdout and "ec key" in shown.stdout


def test_init_without_a_ca_is_a_usage_error(cli, tmp_path):
    r = cli("tsa", "init", home=tmp_path / "empty")
    assert r.exit_code == 2 and "jpki ca init" in r.stderr, r


def _wait_up(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"jpki tsa serve exited: {process.communicate()}")
        try:
            if httpx.get(url + "healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("jpki tsa serve did not come up")


def test_serve_with_two_workers_makes_the_tsa_and_numbers_tokens_in_order(cli, home):
    """The first `jpki tsa serve` makes the TSA (port kept in the home); two worker processes
    answer over keep-alive connections, serials increase whichever answers; `tsa show` agrees."""
    port = free_port()
    process = cli.spawn("tsa", "serve", "--port", str(port), "--workers", "2", "--rate-limit", "0",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_up(url, process)
        serials, nonces = [], []
        with httpx.Client(timeout=10) as a, httpx.Client(timeout=10) as b:
            for i in range(12):
                client = (a, b)[i % 2]
                query = make_query(hashlib.sha256(str(i).encode()).digest(), nonce=1000 + i)
                answer = client.post(url, content=query, headers={"Content-Type": QUERY_TYPE})
                assert answer.status_code == 200 and answer.headers["content-type"] == REPLY_TYPE
                resp = tsp.TimeStampResp.load(answer.content)
                tst = resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
                serials.append(tst["serial_number"].native)
                nonces.append(tst["nonce"].native)
                assert abs((tst["gen_time"].native - FIXED_NOW).total_seconds()) < 120  # $JPKI_NOW's clock
        assert serials == sorted(serials) and len(set(serials)) == 12 and serials[0] == 1
        assert nonces == [1000 + i for i in range(12)]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            _, err = process.communicate()
    assert "made the TSA" in err and f"serving the test TSA on {url}, 2 workers" in err, err
    shown = cli("--json", "tsa", "show")
    assert shown.json()["last_serial"] == 12 and shown.json()["url"] == url


@pytest.mark.parametrize("option", [("--rate-limit", "-1"), ("--workers", "0")])
def test_bad_serve_options_are_usage_errors(cli, option):
    r = cli("tsa", "serve", *option)
    assert r.exit_code == 2, r
