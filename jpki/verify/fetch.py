"""HTTP for revocation checks: the ``Fetch`` protocol and the default fetcher.

The validator never opens sockets itself: it calls a ``fetch(url, data=None, content_type=None)``
that returns the response body or raises. A GET when ``data`` is None (CRLs), a POST of
``data`` with ``content_type`` otherwise (OCSP). Any exception counts as "this source could not
be reached" (``revocation-unavailable`` when nothing else answers). Tests inject a fetch that
calls the revocation server's ASGI app in process; servers may inject one with their own proxy,
pool or retry settings.

:class:`HttpFetcher` is the default: httpx when it is installed (the ``server`` extra), else the
standard library's urllib, with short timeouts (a validation should not hang on a dead
responder), no redirects, http/https only, a 200 status required and a size limit.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Any, Protocol

from jpki.errors import JpkiError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TIMEOUT",
    "Fetch",
    "FetchError",
    "HttpFetcher",
]

#: Seconds to wait for a connection, and for the whole answer.
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_TIMEOUT = 5.0
#: Largest body accepted: a J-LIS-sized CRL (about a million entries) is some 40 MiB.
DEFAULT_MAX_SIZE = 128 * 1024 * 1024

_USER_AGENT = "jpki-verify"


class FetchError(JpkiError):
    """A revocation source answered with something other than a usable HTTP 200."""


class Fetch(Protocol):
    """GET ``url`` (``data`` None) or POST ``data`` to it; return the body or raise."""

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        """The response body of a 200 answer; any exception means the source is unavailable."""
        ...


class HttpFetcher:
    """The default :class:`Fetch`: httpx (or urllib) with short timeouts and a size limit.

    Thread-safe; the httpx client (one connection pool) is made on first use. ``close()`` frees
    it; the fetcher can be used again afterwards.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_size = max_size
        self._client: Any = None
        self._lock = threading.Lock()

    def _httpx_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                    follow_redirects=False,
                    headers={"User-Agent": _USER_AGENT},
                )
            return self._client

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {url!r}")
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            client = self._httpx_client()
        except ImportError:
            return self._urllib(url, data, headers)
        method = "GET" if data is None else "POST"
        with client.stream(method, url, content=data, headers=headers) as response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} from {url}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_size:
                raise FetchError(f"{url}: answer of {declared} bytes is over the limit")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_size:
                    raise FetchError(f"{url}: answer over the limit of {self.max_size} bytes")
            return bytes(body)

    def _urllib(self, url: str, data: bytes | None, headers: dict[str, str]) -> bytes:
        request = urllib.request.Request(url, data=data, headers={"User-Agent": _USER_AGENT, **headers})
        opener = urllib.request.build_opener(_NoRedirect())
        with opener.open(request, timeout=self.timeout) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} from {url}")
            body = response.read(self.max_size + 1)
        if len(body) > self.max_size:
            raise FetchError(f"{url}: answer over the limit of {self.max_size} bytes")
        return bytes(body)

    def close(self) -> None:
        """Close the connection pool (if one was opened)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
