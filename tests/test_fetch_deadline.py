"""The revocation fetcher's overall deadline (issue 9, item 4): a responder that trickles its
answer one byte at a time never trips a per-read timeout, so only a deadline on the whole fetch
stops it. The fetch must fail soon after the deadline and the verification fail closed."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from auth_support import CA_BASE, credentials

from jpki.verify import HttpFetcher, TrustStore, Validator
from jpki.verify.fetch import FetchTimeoutError
from jpki.verify.result import Reason

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 100000\r\n\r\n"


@contextlib.contextmanager
def trickling_server(*, in_headers: bool, interval: float = 0.5) -> Iterator[str]:
    """A responder on a free loopback port that reads the request, then sends one byte every
    ``interval`` seconds: of the status line and headers (``in_headers``) or, after complete
    headers, of a body that would take hours. Yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                if not in_headers:
                    conn.sendall(HEAD)
                data = HEAD if in_headers else b"x" * 100000
                for byte in data:
                    if stop.wait(interval):
                        return
                    conn.sendall(bytes([byte]))

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    """The default fetcher (httpcore, under httpx) with a 1 s deadline."""
    fetch = HttpFetcher(timeout=5, connect_timeout=2, deadline=1.0)
    yield fetch
    fetch.close()


@pytest.mark.parametrize("in_headers", [True, False], ids=["headers", "body"])
def test_a_trickling_responder_is_cut_at_the_deadline(fetcher, in_headers):
    with trickling_server(in_headers=in_headers) as url:
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError, match="within 1 s"):
            fetcher(f"{url}/ocsp/auth", b"request", "application/ocsp-request")
        elapsed = time.monotonic() - started
    # Without the deadline this takes minutes (each byte comes well within the 5 s read timeout).
    assert elapsed < 3.0, elapsed


def test_verification_against_a_trickling_responder_fails_closed(fetcher, home, clock):
    _, der = credentials(home, "alice", "auth")
    trust = TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca")
    with trickling_server(in_headers=True) as url:
        def fetch(target: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
            return fetcher(target.replace(CA_BASE, url), data, content_type)

        started = time.monotonic()
        result = Validator(trust, clock=clock, fetch=fetch).validate(der, kind="auth")
        elapsed = time.monotonic() - started
    assert not result.ok and result.reason == Reason.REVOCATION_UNAVAILABLE
    assert "within 1 s" in result.message
    assert elapsed < 5.0, elapsed  # OCSP, then the CRL: two deadlines, not minutes


def test_the_deadline_leaves_a_prompt_answer_alone(home, clock):
    """A responder answering at once is not affected; the same fetcher serves many fetches."""
    from jpki.pki.server import serve_in_thread

    fetcher = HttpFetcher(deadline=1.0)
    try:
        with serve_in_thread(home / "ca", clock=clock) as server:
            for _ in range(3):
                assert fetcher(f"{server.url}/crl/auth.crl")[:1] == b"\x30"
    finally:
        fetcher.close()
