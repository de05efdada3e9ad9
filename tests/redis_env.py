"""A private redis-server for the tests: started once per test session, stopped at its end.

Not a test module. Use it from a test module (or a conftest) with one line::

    from redis_env import redis_url  # noqa: F401  (the session fixture)

``redis_url`` yields ``redis://127.0.0.1:PORT/0`` of a ``redis-server`` that this session
started on a free loopback port, in a temporary directory, with persistence off
(``--save '' --appendonly no``). Nothing else uses that server, but tests sharing it within the
session should still keep their keys apart (a key prefix per test).

When it cannot be had (``redis-server`` or the ``redis`` Python client not installed, or the
server does not start) the fixture calls ``pytest.fail(reason)`` when ``CI=true`` and
``pytest.skip(reason)`` otherwise, so CI never silently skips the Redis tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jpki.pki import free_port

START_TIMEOUT = 10.0
START_ATTEMPTS = 3


def in_ci() -> bool:
    """True when env CI says so (``true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """``pytest.fail`` in CI (env CI=true), ``pytest.skip`` elsewhere."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def redis_server_path() -> str | None:
    """The redis-server binary (PATH, then /usr/bin and /usr/sbin), or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if Path(candidate).exists():
            return candidate
    return None


def missing_reason() -> str | None:
    """Why the Redis tests cannot run here, or None when everything needed is installed."""
    if redis_server_path() is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis Python client is not installed (pip install 'jpki[auth]')"
    return None




def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server on ``127.0.0.1:port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when pytest dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class RedisServer:
    """A redis-server this session started."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def log_path(directory: Path, port: int) -> Path:
        return directory / f"redis-{port}.log"

    @property
    def log(self) -> Path:
        return self.log_path(self.directory, self.port)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_redis(directory: Path, timeout: float = START_TIMEOUT) -> RedisServer:
    """Start redis-server on a free loopback port, persistence off, files in ``directory``.

    Retries on another port when the chosen one was taken meanwhile. Raises RuntimeError when
    no attempt comes up within ``timeout``.
    """
    binary = redis_server_path()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    errors = []
    for _ in range(START_ATTEMPTS):
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--daemonize", "no",
             "--protected-mode", "yes", "--logfile", str(RedisServer.log_path(directory, port))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,  # prctl only: safe between fork and exec
        )
        server = RedisServer(port, directory, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.process.poll() is None:
            if ping(port):
                return server
            time.sleep(0.05)
        stop_redis(server)
        errors.append(f"port {port}: {server.log_tail(5)}")
    raise RuntimeError("redis-server did not start:\n" + "\n".join(errors))


def stop_redis(server: RedisServer, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    proc = server.process
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_running(directory: Path) -> Iterator[RedisServer | str]:
    """Yield a started :class:`RedisServer`, or a string saying why there is none."""
    reason = missing_reason()
    if reason:
        yield reason
        return
    try:
        server = start_redis(directory)
    except (OSError, RuntimeError) as exc:
        yield f"cannot start redis-server: {exc}"
        return
    try:
        yield server
    finally:
        stop_redis(server)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a private redis-server running for this test session."""
    with redis_running(tmp_path_factory.mktemp("redis")) as server:
        if isinstance(server, str):
            unavailable(server)
            return
        yield server.url
