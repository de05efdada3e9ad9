"""What every HTTP server of jpki shares under uvicorn: connection deadlines and the port check.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but only once
a response has been sent on it: a client that connects and sends nothing, or half a request
line, or its headers one byte at a time, holds a connection (and a file descriptor) for as long
as it likes. The protocol classes here (``http="jpki.serving:HttpToolsProtocol"`` or
``"jpki.serving:H11Protocol"``, see :func:`uvicorn_options`) give every connection
``idle_timeout`` seconds, from its opening and again after each response, to deliver complete
request headers; otherwise it is closed. The *body* is the app's to time out (it answers 408:
see ``body_timeout`` in :mod:`jpki.auth.service` and :mod:`jpki.revocation.server`).

:func:`check_port` tells, before a server prepares anything, whether it can listen at all, and
:func:`listen` binds the socket the server is then given, *before* it says "serving":
:class:`PortInUseError` (exit 1: "port N is in use (hint: --port)") rather than uvicorn's own
exit (status 3, the code for "verification failed") after the announcement.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import socket
from typing import Any, Final

from jpki.errors import JpkiError, UsageError

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "PortInUseError",
    "check_port",
    "listen",
    "uvicorn_options",
]

#: Seconds a connection may stay without a complete request's headers (new or kept alive).
DEFAULT_IDLE_TIMEOUT: Final = 10.0
#: Seconds an app waits for a whole request body before answering 408.
DEFAULT_BODY_TIMEOUT: Final = 10.0


class PortInUseError(JpkiError):
    """The address to listen on is taken by another program (or not available here)."""

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(f"port {port} is in use (hint: --port)" if detail == "in use"
                         else f"cannot listen on {host}:{port}: {detail} (hint: --host, --port)")
        self.host = host
        self.port = port
        self.reason = "port_in_use" if detail == "in use" else "cannot_listen"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound like uvicorn binds (SO_REUSEADDR, so a port
    in TIME_WAIT is not refused), for ``uvicorn.Server.run(sockets=[…])``; or
    :class:`PortInUseError`."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except socket.gaierror as exc:
        sock.close()
        raise PortInUseError(host, port, f"unknown host ({exc.strerror})") from None
    except OSError as exc:
        sock.close()
        detail = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise PortInUseError(host, port, detail) from None
    sock.set_inheritable(True)
    return sock


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` unless a server could listen on ``host:port`` now."""
    listen(host, port).close()


def _protocol_name() -> str:
    """The protocol class uvicorn's ``http="auto"`` would pick, with the idle deadline."""
    if importlib.util.find_spec("httptools") is not None:
        return f"{__name__}:HttpToolsProtocol"
    return f"{__name__}:H11Protocol"


def uvicorn_options(*, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` shared by the servers: the
    idle deadline (``timeout_keep_alive`` and the header deadline of the protocol classes),
    no access log, the lifespan on, a deep backlog."""
    if not idle_timeout > 0:
        raise UsageError("the idle timeout must be positive")
    return {"http": _protocol_name(), "timeout_keep_alive": idle_timeout, "access_log": False,
            "lifespan": "on", "backlog": 2048}


class _HeaderDeadline:
    """Mixin for uvicorn's HTTP protocols: close a connection that has not completed a request's
    headers within ``timeout_keep_alive`` seconds of opening or of its last response.

    A new request is noticed by uvicorn replacing ``self.cycle`` once the headers are parsed;
    the timer fires harmlessly when that happened."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    timeout_keep_alive: float
    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.timeout_keep_alive, self._header_deadline_passed,
                                                  self.cycle)

    def _header_deadline_passed(self, cycle: Any) -> None:
        self._header_timer = None
        if self.cycle is cycle and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self.transport is not None and not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]


def __getattr__(name: str) -> Any:
    # The protocol classes are made on first use (uvicorn imports them by name, also in worker
    # processes), so that importing this module does not import uvicorn.
    if name == "H11Protocol":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    elif name == "HttpToolsProtocol":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = type(name, (_HeaderDeadline, base), {"__module__": __name__,
                                                "__doc__": f"uvicorn's {name} with the header deadline."})
    globals()[name] = cls
    return cls
