"""The servers under attack and on a busy machine (issue 9, items 4 and 10): slow verifications
must not starve ``begin``; half-sent requests are cut off; a client leaving mid-body costs no
traceback; a busy port is said before "serving"; ``ca serve`` answers CRLs at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_auth_support import AUTH_PIN, alice, net  # noqa: F401  (fixtures)

from jpki.auth.client import answer_login
from jpki.auth.protocol import parse_challenge
from jpki.auth.service import ServiceConfig, create_service, serve_in_thread
from jpki.cli._fail import fail_for
from jpki.revocation.server import RevocationService
from jpki.serving import PortInUseError, check_port

BASE = "http://testserver"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- slow verifications


class SlowResponder:
    """The validator's fetch, held until released: an OCSP responder that does not answer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        self.entered.set()
        if not self.release.wait(30):
            raise TimeoutError("never released")
        return self.inner(url, data, content_type)


def test_begin_answers_while_slow_verifications_fill_their_pool(home, clock, net, alice):
    slow = SlowResponder(net)
    config = ServiceConfig(home=home, rp_id=BASE, verify_threads=2, rate_limit=0)
    app = create_service(config, clock=clock, fetch=slow)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            answers = []
            for _ in range(5):
                challenge = parse_challenge((await client.post("/api/login/begin")).content)
                answers.append(answer_login(challenge, alice, pin=lambda: AUTH_PIN).to_dict())
            # four completes: two verifying (stuck on the responder), two queued behind them
            stuck = [asyncio.create_task(client.post("/api/login/complete", json=a)) for a in answers[:4]]
            await asyncio.get_running_loop().run_in_executor(None, slow.entered.wait, 10)
            for _ in range(1000):  # until all four are admitted (a condition, not a guess)
                stats = (await client.get("/api/stats")).json()
                if stats["verifications"]["in_flight"] == 4:
                    break
                await asyncio.sleep(0.005)
            assert stats["verifications"] == {"in_flight": 4, "capacity": 4, "threads": 2}
            # begin does not wait for them
            begun = await asyncio.wait_for(client.post("/api/login/begin"), 5)
            assert begun.status_code == 200
            assert (await asyncio.wait_for(client.post("/api/ekyc/begin"), 5)).status_code == 200
            # a fifth verification is refused at once rather than queued without end
            busy = await asyncio.wait_for(client.post("/api/login/complete", json=answers[4]), 5)
            assert (busy.status_code, busy.json()["reason"]) == (503, "busy")
            assert busy.headers["retry-after"] == "1"
            assert not any(task.done() for task in stuck)
            slow.release.set()
            done = await asyncio.gather(*stuck)
            assert [d.status_code for d in done] == [200] * 4
            stats = (await client.get("/api/stats")).json()
            assert stats["verifications"]["in_flight"] == 0 and stats["refused"] == {"busy": 1}

    try:
        asyncio.run(scenario())
    finally:
        slow.release.set()
        app.state.close()


# --------------------------------------------------------------------------- half-sent requests


@contextlib.contextmanager
def served(home: Path, clock, fetch, **config: Any) -> Iterator[Any]:
    app = create_service(ServiceConfig(home=home, rp_id="http://127.0.0.1", **config), clock=clock, fetch=fetch)
    try:
        with serve_in_thread(app, idle_timeout=0.5) as server:
            yield server
    finally:
        app.state.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (at most 10 s)."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_half_sent_body_gets_408_and_the_connection_closed(home, clock, net):
    with served(home, clock, net, body_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /api/login/complete HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"v\": 1, ")
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["reason"] == "timeout"
        assert httpx.get(f"{server.url}/api/stats").json()["refused"] == {}  # a timeout is not a limit


@pytest.mark.parametrize("sent", [b"", b"POST /api/login/begin HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "half-the-headers"])
def test_an_idle_or_half_sent_connection_is_closed(home, clock, net, sent):
    with served(home, clock, net) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(sent)
            assert read_all(sock) == b""  # closed by the server (before the fix: blocked for ever)
        # a kept-alive connection is closed after the same idle time, and requests still work
        with httpx.Client() as client:
            assert client.get(f"{server.url}/api/info").status_code == 200


def test_the_revocation_server_times_out_a_half_sent_ocsp_body(home, clock):
    from jpki.revocation.server import ServerThread, create_app

    app = create_app(home / "ca", clock=clock, body_timeout=0.5)
    with ServerThread(app, "127.0.0.1", 0, idle_timeout=5).start() as server, \
            socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /ocsp/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
                     b"Content-Length: 500\r\n\r\n0\x82")
        assert read_all(sock).startswith(b"HTTP/1.1 408 ")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_leaving_mid_body_logs_no_traceback(home, clock, net):
    records = Records()
    with served(home, clock, net) as server:
        watched = [logging.getLogger(name) for name in ("uvicorn.error", "jpki.auth")]
        for logger in watched:  # after uvicorn configured its logging
            logger.addHandler(records)
        try:
            for path in ("/api/login/complete", "/api/login/begin"):
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode())
                # the server is still well, and has noticed both disconnections by now
                for _ in range(3):
                    assert httpx.get(f"{server.url}/api/info").status_code == 200
        finally:
            for logger in watched:
                logger.removeHandler(records)
    assert not [r for r in records.records if r.levelno >= logging.WARNING or r.exc_info], \
        [r.getMessage() for r in records.records]


# --------------------------------------------------------------------------- ports


def test_check_port_says_which_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} is in use \\(hint: --port\\)") as raised:
            check_port("127.0.0.1", port)
        assert fail_for(raised.value).exit_code == 1
    check_port("127.0.0.1", port)  # free again


def jpki(home: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "jpki", "--home", str(home), *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False, **kwargs)


@pytest.mark.parametrize("command", [["ca", "serve"], ["rp", "serve"]])
def test_serve_on_a_busy_port_exits_1_before_saying_serving(home, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = jpki(home, *command, "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert f"error: port {port} is in use (hint: --port)" in done.stderr
    assert "serving" not in done.stderr and "relying party" not in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- CRLs at start


def test_the_crls_are_built_before_serving_and_reused_at_the_next_start(home, clock):
    lines: list[str] = []
    service = RevocationService(home / "ca", clock=clock)
    try:
        service.prepare_crls(lines.append)
        assert service.crl_builds == {"sign": 1, "auth": 1}
        assert any(line.startswith("building the auth CRL (0 revoked)") for line in lines)
        assert service.crl("auth") is not None
        assert service.crl_builds == {"sign": 1, "auth": 1}  # the first request builds nothing
    finally:
        service.close()
    lines.clear()
    again = RevocationService(home / "ca", clock=clock)  # a restart, or a worker process
    try:
        again.prepare_crls(lines.append)
        assert not again.crl_builds and len(lines) == 2 and lines[0].startswith("loaded the sign CRL")
        assert again.crl_state()["auth"]["built_at"] == clock.now().isoformat()
    finally:
        again.close()


def test_a_revocation_since_the_last_build_means_a_new_build_at_start(home, clock):
    from jpki.lifecycle import lost
    from jpki.provision import Home

    first = RevocationService(home / "ca", clock=clock)
    try:
        first.prepare_crls()
    finally:
        first.close()
    lost(Home(home), "alice", clock=clock)
    second = RevocationService(home / "ca", clock=clock)
    try:
        second.prepare_crls()
        assert second.crl_builds == {"sign": 1, "auth": 1}
    finally:
        second.close()


def test_ca_serve_answers_the_crl_at_once(home):
    """The real command: "serving" comes after the CRLs are built, and the first CRL request
    is served from that build (the server counts its builds in /healthz)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "jpki", "--home", str(home), "ca", "serve", "--port", str(port)],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stderr is not None
        said = []
        for line in process.stderr:
            said.append(line)
            if line.startswith("serving"):
                break
        assert said and said[-1].startswith("serving"), said
        assert any("built the sign CRL" in line for line in said)
        assert any("built the auth CRL" in line for line in said)
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            assert json.load(answer)["crls"]["auth"]["builds"] == 1
        with urllib.request.urlopen(f"{url}/crl/auth.crl", timeout=10) as answer:
            assert answer.status == 200 and answer.read()[:1] == b"\x30"
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            assert json.load(answer)["crls"]["auth"]["builds"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
