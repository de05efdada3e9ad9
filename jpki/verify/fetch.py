"""HTTP for revocation checks: the ``Fetch`` protocol and the default fetcher.

The validator never opens sockets itself: it calls a ``fetch(url, data=None, content_type=None)``
that returns the response body or raises. A GET when ``data`` is None (CRLs), a POST of
``data`` with ``content_type`` otherwise (OCSP). Any exception counts as "this source could not
be reached" (``revocation-unavailable`` when nothing else answers). Tests inject a fetch that
calls the revocation server's ASGI app in process; servers may inject one with their own proxy,
pool or retry settings.

:class:`HttpFetcher` is the default: httpcore (the connection pool under httpx, a core
dependency). No redirects, http/https only, a 200 status required, a size limit, and an
**overall deadline** per fetch.

Why a deadline and not only timeouts: a timeout bounds one socket operation, so a responder that
sends one byte every few seconds never trips it and holds the caller for minutes (a slow OCSP
responder once made one verification take 120 s and froze every worker thread of the relying
party). Here every connect, write and read of a fetch is given the time left until the fetch's
deadline (``time.monotonic``) as its timeout, in the network layer itself, so that the status
line, the headers and the body are all covered and a fetch never lasts much longer than
``deadline`` seconds, however the bytes trickle.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, Protocol

import httpcore

from jpki.errors import JpkiError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TIMEOUT",
    "Fetch",
    "FetchError",
    "FetchTimeoutError",
    "HttpFetcher",
]

#: Seconds to wait for a connection, and for any one read or write.
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_TIMEOUT = 5.0
#: Seconds a whole fetch may take, from the connection to the last byte of the body. Enough for
#: an OCSP answer or a CRL of the test CA; a J-LIS-sized CRL over a slow link may need more.
DEFAULT_DEADLINE = 5.0
#: Largest body accepted: a J-LIS-sized CRL (about a million entries) is some 40 MiB.
DEFAULT_MAX_SIZE = 128 * 1024 * 1024

_USER_AGENT = "jpki-verify"


class FetchError(JpkiError):
    """A revocation source answered with something other than a usable HTTP 200."""


class FetchTimeoutError(FetchError, TimeoutError):
    """A fetch did not finish within its overall deadline."""


class Fetch(Protocol):
    """GET ``url`` (``data`` None) or POST ``data`` to it; return the body or raise."""

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        """The response body of a 200 answer; any exception means the source is unavailable."""
        ...


# --------------------------------------------------------------------------- the deadline

# The deadline of the fetch running in this thread (monotonic seconds), read by the network
# layer below. Thread-local because the fetcher is shared by the validator's threads and the
# sync connection pool does each request's I/O in the thread that made it.
_current = threading.local()


def _time_left(cap: float | None) -> float | None:
    """The timeout for the next socket operation: the time left until this thread's deadline
    (``cap`` at most); :class:`FetchTimeoutError` once it has passed."""
    deadline: float | None = getattr(_current, "deadline", None)
    if deadline is None:
        return cap
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchTimeoutError("the revocation source did not answer within the deadline")
    return left if cap is None else min(cap, left)


class _DeadlineStream(httpcore.NetworkStream):
    """An httpcore network stream whose every read and write ends by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> _DeadlineStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend with :class:`_DeadlineStream` streams."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> _DeadlineStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _time_left(timeout), local_address,
                                                       socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> _DeadlineStream:  # pragma: no cover - no uds
        return _DeadlineStream(self._inner.connect_unix_socket(path, _time_left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover - no retries configured
        self._inner.sleep(seconds)


# --------------------------------------------------------------------------- the fetcher


class HttpFetcher:
    """The default :class:`Fetch`: httpcore with timeouts, an overall
    ``deadline`` per fetch (seconds; see the module docstring) and a size limit.

    ``timeout`` bounds each read or write and ``connect_timeout`` the connection, within the
    deadline. Proxies named by the usual environment variables (``http_proxy``, ``no_proxy``…)
    are honoured for plain-http URLs. Thread-safe; the connection pool is made on first use.
    ``close()`` frees it; the fetcher can be used again afterwards.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if deadline <= 0:
            raise ValueError("deadline must be positive")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.max_size = max_size
        self._client: Any = None
        self._proxies: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _httpx_client(self) -> Any:
        """The connection pool of httpx's transport layer (httpcore), made on first use."""
        with self._lock:
            if self._client is None:
                import httpcore

                self._client = httpcore.ConnectionPool(
                    ssl_context=httpcore.default_ssl_context(), max_connections=100,
                    max_keepalive_connections=20, keepalive_expiry=5.0,
                    network_backend=_DeadlineBackend())
            return self._client

    def _pool_for(self, url: str) -> Any:
        """The direct pool, or one through the environment's proxy for ``url`` (plain http)."""
        pool = self._httpx_client()
        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get("http") if parts.scheme == "http" else None
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return pool
        with self._lock:
            if proxy not in self._proxies:
                import httpcore

                self._proxies[proxy] = httpcore.HTTPProxy(proxy_url=proxy, network_backend=_DeadlineBackend())
            return self._proxies[proxy]

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {url!r}")
        headers = {"User-Agent": _USER_AGENT, **({"Content-Type": content_type} if content_type else {})}
        _current.deadline = time.monotonic() + self.deadline
        try:
            return self._collect(url, self._httpcore(self._pool_for(url), url, data, headers))
        except FetchError as exc:
            if isinstance(exc, FetchTimeoutError):
                raise FetchTimeoutError(f"{url}: no complete answer within {self.deadline:g} s") from None
            raise
        except Exception as exc:
            # A timeout of the pool or the socket is the deadline's doing when the deadline has
            # passed (each operation was given the time left): say so.
            if time.monotonic() >= _current.deadline:
                raise FetchTimeoutError(f"{url}: no complete answer within {self.deadline:g} s") from exc
            raise
        finally:
            _current.deadline = None

    def _collect(self, url: str, chunks: Iterator[bytes]) -> bytes:
        body = bytearray()
        for chunk in chunks:
            body += chunk
            if len(body) > self.max_size:
                raise FetchError(f"{url}: answer over the limit of {self.max_size} bytes")
        return bytes(body)

    def _check_head(self, url: str, status: int, declared: str | None) -> None:
        if status != 200:
            raise FetchError(f"HTTP {status} from {url}")
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            raise FetchError(f"{url}: answer of {declared} bytes is over the limit")

    def _httpcore(self, pool: Any, url: str, data: bytes | None, headers: dict[str, str]) -> Iterator[bytes]:
        timeouts = {"connect": self.connect_timeout, "read": self.timeout, "write": self.timeout,
                    "pool": min(self.timeout, self.deadline)}
        with pool.stream("GET" if data is None else "POST", url, headers=list(headers.items()),
                         content=data, extensions={"timeout": timeouts}) as response:
            declared = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"content-length"), None)
            self._check_head(url, response.status, declared)
            for chunk in response.iter_stream():
                yield chunk
                _time_left(None)  # a body that never ends still ends at the deadline

    def close(self) -> None:
        """Close the connection pools (if any were opened)."""
        with self._lock:
            pools = [self._client, *self._proxies.values()]
            self._client, self._proxies = None, {}
        for pool in pools:
            if pool is not None:
                pool.close()
