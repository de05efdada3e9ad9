"""The servers under attack and on a busy machine (issue 9, items 4 and 10): slow verifications
must not starve ``begin``; half-sent requests are cut off; a client leaving mid-body costs no
traceback; a busy port is said before "serving"; ``ca serve`` answers CRLs at once. And the one
serving module every app goes through (issue 10, item 2): refusals rendered by exception
handlers, body limits, app specs for worker processes, the server thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_support import AUTH_PIN
from fixed import FIXED_NOW
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jpki.auth.client import answer_login
from jpki.auth.protocol import parse_challenge
from jpki.auth.service import ServiceConfig, create_service
from jpki.cli._fail import fail_for
from jpki.clock import FixedClock
from jpki.errors import JpkiError, UsageError
from jpki.pki import free_port
from jpki.pki.server import RevocationService
from jpki.serving import (
    ENV_APP,
    AppSpec,
    PortInUseError,
    RateLimiter,
    Refusal,
    ServerThread,
    app_from_environment,
    check_port,
    http_app,
    json_refusal,
    serve,
    serve_in_thread,
    text_refusal,
)

BASE = "http://testserver"




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
                answers.append(answer_login(challenge, alice, pin=lambda: AUTH_PIN).to_json())
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
    from jpki.pki.server import create_app

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


@pytest.mark.parametrize("command", [["ca", "serve"], ["rp", "serve"]])
def test_serve_on_a_busy_port_exits_1_before_saying_serving(cli, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = cli.process(*command, "--port", str(port), card=None)
    assert done.exit_code == 1, done.stderr
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


def test_ca_serve_answers_the_crl_at_once(cli):
    """The real command: "serving" comes after the CRLs are built, and the first CRL request
    is served from that build (the server counts its builds in /healthz)."""
    port = free_port()
    process = cli.spawn("ca", "serve", "--port", str(port), card=None,
                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
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


# --------------------------------------------------------------------------- the one serving module
#
# jpki.serving builds and runs every HTTP app: these tests drive it with small apps of their own.

class StoreDown(JpkiError):
    """A library exception an endpoint lets through (its app maps it to a refusal)."""


def tiny_app(*, render=json_refusal, max_body: int = 100, body_timeout: float = 5.0, lifespan=None) -> Any:
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    async def limited(request: Request) -> Response:
        raise Refusal(429, "rate-limited", "slow down", retry_after=2.2)

    async def down(request: Request) -> Response:
        raise StoreDown("the store is down")

    async def head_only(request: Request) -> Response:  # never reads the body
        return Response(b"fine")

    routes = [Route("/echo", echo, methods=["POST"]), Route("/limited", limited, methods=["POST"]),
              Route("/down", down, methods=["GET"]), Route("/head-only", head_only, methods=["POST"])]
    return http_app(routes, max_body=max_body, body_timeout=body_timeout, render=render, lifespan=lifespan,
                    refusals={StoreDown: lambda exc: Refusal(503, "store-unavailable", str(exc))})


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


async def raw_call(app: Any, path: str, headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]],
                   ) -> list[dict[str, Any]]:
    """One request straight through ASGI: the messages are the body as the server would pass
    it; once they run out, receive() waits for ever (a client that stopped sending)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": headers, "http_version": "1.1", "scheme": "http", "server": ("testserver", 80),
             "client": ("127.0.0.1", 1), "root_path": ""}
    await app(scope, receive, send)
    return sent


def test_a_refusal_is_rendered_by_the_apps_handler_as_the_json_document():
    app = tiny_app()
    refused = call(app, "POST", "/limited")
    assert refused.status_code == 429
    # byte for byte the document the relying party has always sent
    assert refused.content == b'{"ok":false,"reason":"rate-limited","message":"slow down"}'
    assert refused.headers["cache-control"] == "no-store" and refused.headers["retry-after"] == "3"
    down = call(app, "GET", "/down")  # a library exception, mapped by the app
    assert (down.status_code, down.json()) == (503, {"ok": False, "reason": "store-unavailable",
                                                     "message": "the store is down"})


def test_a_refusal_as_text_for_clients_that_read_no_json():
    refused = call(tiny_app(render=text_refusal), "POST", "/limited")
    assert (refused.status_code, refused.text) == (429, "slow down\n")
    assert refused.headers["content-type"] == "text/plain; charset=utf-8"
    assert "cache-control" not in refused.headers


def test_body_limits_declared_counted_and_only_when_read():
    app = tiny_app(max_body=100)
    assert call(app, "POST", "/echo", content=b"x" * 100).content == b"x" * 100
    big = call(app, "POST", "/echo", content=b"x" * 101)  # declared
    assert (big.status_code, big.json()["reason"]) == (413, "too-large")
    assert big.json()["message"] == "the body is larger than 100 bytes"

    async def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"x" * 40

    assert call(app, "POST", "/echo", content=chunks()).status_code == 413
    # an endpoint that does not read the body is not refused for it
    assert call(app, "POST", "/head-only", content=b"x" * 1000).status_code == 200
    # a Content-Length that lies is counted all the same; one that is no number is refused
    lying = asyncio.run(raw_call(app, "/echo", [(b"content-length", b"10")],
                                 [{"type": "http.request", "body": b"x" * 60, "more_body": True},
                                  {"type": "http.request", "body": b"x" * 60, "more_body": False}]))
    assert lying[0]["status"] == 413
    garbled = asyncio.run(raw_call(app, "/echo", [(b"content-length", b"ten")],
                                   [{"type": "http.request", "body": b"x", "more_body": False}]))
    assert garbled[0]["status"] == 400


def test_a_body_that_stops_arriving_is_408_and_the_connection_closed():
    app = tiny_app(body_timeout=0.2)
    sent = asyncio.run(raw_call(app, "/echo", [(b"content-length", b"50")],
                                [{"type": "http.request", "body": b"x" * 10, "more_body": True}]))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["reason"] == "timeout"


def test_bad_limits_are_usage_errors():
    with pytest.raises(UsageError):
        tiny_app(body_timeout=0)
    with pytest.raises(UsageError):
        tiny_app(max_body=-1)


#: Calls of :func:`recording_factory` (it is named by import path in the AppSpecs below).
BUILT: list[dict[str, Any]] = []


def recording_factory(settings: dict[str, Any], *, clock: Any, progress: Any = None) -> Any:
    BUILT.append({"settings": settings, "clock": clock})
    return tiny_app()


def test_an_app_spec_goes_to_the_workers_as_json_in_one_variable(monkeypatch):
    spec = AppSpec("test_serving:recording_factory", {"name": "x", "limits": [1, 2]})
    assert AppSpec.from_json(spec.to_json()) == spec
    assert AppSpec.from_json(json.dumps(spec.to_json())) == spec
    monkeypatch.setenv(ENV_APP, json.dumps(spec.to_json()))
    BUILT.clear()
    assert call(app_from_environment(), "POST", "/echo", content=b"hi").content == b"hi"
    assert BUILT[0]["settings"] == {"name": "x", "limits": [1, 2]}
    # the clock of a worker is the one of $JPKI_NOW (conftest sets it to FIXED_NOW)
    assert abs((BUILT[0]["clock"].now() - FIXED_NOW).total_seconds()) < 60
    for bad in ("no-colon", "pkg.mod:", ":function", "pkg.mod:not an identifier"):
        with pytest.raises(UsageError):
            AppSpec(bad)
    with pytest.raises(UsageError, match="not JSON"):
        AppSpec("pkg.mod:f", {"when": FIXED_NOW}).to_json()
    with pytest.raises(UsageError, match="cannot import"):
        AppSpec("jpki.nothing_here:f").build(clock=FixedClock(FIXED_NOW))
    monkeypatch.delenv(ENV_APP)
    with pytest.raises(UsageError, match=ENV_APP):
        app_from_environment()


def test_serve_checks_its_arguments_and_the_port_before_building_anything():
    spec = AppSpec("test_serving:recording_factory")
    BUILT.clear()
    with pytest.raises(UsageError, match="at least 1"):
        serve(spec, "127.0.0.1", free_port(), workers=0)
    with pytest.raises(UsageError, match="AppSpec"):
        serve(tiny_app(), "127.0.0.1", free_port(), workers=2)
    with pytest.raises(UsageError, match="JPKI_NOW"):
        serve(spec, "127.0.0.1", free_port(), workers=2, clock=FixedClock(FIXED_NOW))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        said: list[str] = []
        with pytest.raises(PortInUseError):
            serve(spec, "127.0.0.1", port, progress=said.append, on_ready=lambda: said.append("serving"))
    assert BUILT == [] and said == []


def test_a_server_thread_takes_a_free_port_answers_and_stops_cleanly():
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("start")
        yield
        events.append("stop")

    with serve_in_thread(tiny_app(lifespan=lifespan)) as server:
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.post(f"{server.url}/echo", content=b"up").content == b"up"
        assert events == ["start"]
    assert events == ["start", "stop"] and not server._thread.is_alive()


def test_a_server_thread_on_a_busy_port_fails_at_once_with_the_port_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} is in use") as raised:
            ServerThread(tiny_app(), "127.0.0.1", port).start()
    assert isinstance(raised.value, UsageError) and fail_for(raised.value).exit_code == 1


def test_a_server_thread_whose_app_cannot_start_says_so():
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        raise RuntimeError("no database")
        yield

    with pytest.raises(UsageError, match="did not start"):
        serve_in_thread(tiny_app(lifespan=lifespan))


# --------------------------------------------------------------------------- connections


def _raw_request(sock: socket.socket, path: str = "/echo", body: bytes = b"hi") -> tuple[bytes, bytes]:
    """One request on an open keep-alive connection; returns (head, body) of the answer."""
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest


def test_a_response_head_and_body_leave_in_one_segment():
    # uvicorn writes the head and the body separately; joined, the client gets them in one read.
    with serve_in_thread(tiny_app()) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        for _ in range(3):
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\nhello"), first


def test_a_keep_alive_connection_is_closed_politely_after_its_last_request():
    from jpki.serving import KEEPALIVE_REQUESTS

    with serve_in_thread(tiny_app()) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        for i in range(1, KEEPALIVE_REQUESTS):
            head, body = _raw_request(sock, body=b"n%d" % i)
            assert body == b"n%d" % i and b"connection: close" not in head.lower()
        head, body = _raw_request(sock, body=b"last")
        assert body == b"last" and b"connection: close" in head.lower()
        sock.settimeout(5)
        assert sock.recv(1) == b""   # closed by the server after the answer
        # and a client that keeps its connections (httpx) goes on over a new one
        with httpx.Client(base_url=server.url) as client:
            answers = {client.post("/echo", content=b"x%d" % i).content for i in range(KEEPALIVE_REQUESTS + 5)}
        assert len(answers) == KEEPALIVE_REQUESTS + 5


def test_writes_of_one_turn_are_joined_and_close_sends_what_is_pending():
    from jpki.serving import _OneSendPerTick

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            assert not self.closed
            self.sent.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name: str) -> Any:
            return ("127.0.0.1", 1) if name == "peername" else None

    async def scenario() -> tuple[list[bytes], list[bytes], Recorder]:
        inner = Recorder()
        transport = _OneSendPerTick(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"head ")
        transport.write(b"body")
        assert inner.sent == [] and transport.get_write_buffer_size() == 9
        await asyncio.sleep(0)
        joined = list(inner.sent)
        transport.write(b"bye")
        transport.close()
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
        return joined, inner.sent, inner

    joined, sent, inner = asyncio.run(scenario())
    assert joined == [b"head body"] and sent == [b"head body", b"bye"] and inner.closed


def test_the_rate_limiter_lets_a_burst_through_then_the_rate():
    now = [100.0]
    limiter = RateLimiter(2.0, 3, timer=lambda: now[0], max_clients=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)   # empty: one token in half a second
    assert limiter.take("b") == 0.0                   # another client has its own bucket
    now[0] += 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") == pytest.approx(0.5)
    limiter.take("c")                                 # a third client: the least recent is forgotten
    assert limiter.take("b") == 0.0
    assert RateLimiter(0, 1).take("a") == 0.0         # rate 0: no limit
    with pytest.raises(UsageError):
        RateLimiter(-1, 1)
    with pytest.raises(UsageError):
        RateLimiter(1, 0)


def test_a_server_may_keep_its_connections_open_for_any_number_of_requests():
    # The OCSP responder's clients keep a connection to use a worker's cache: never closed.
    from jpki.serving import KEEPALIVE_REQUESTS

    with serve_in_thread(tiny_app(), keepalive_requests=None) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as sock:
        for i in range(KEEPALIVE_REQUESTS + 5):
            head, body = _raw_request(sock, body=b"n%d" % i)
            assert body == b"n%d" % i and b"connection: close" not in head.lower()
    with serve_in_thread(tiny_app(), keepalive_requests=3) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as sock:
        heads = [_raw_request(sock)[0].lower() for _ in range(3)]
        assert [b"connection: close" in h for h in heads] == [False, False, True]
    with pytest.raises(UsageError, match="at least one request"):
        serve_in_thread(tiny_app(), keepalive_requests=0)
