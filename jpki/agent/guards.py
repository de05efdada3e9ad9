"""What the agent checks on every request before it does anything: no HTTP framework here, only
header values in and a :class:`GuardError` (status, reason code) out.

A local service with a card behind it is reachable by every page the browser opens. The
attacks, and the check that stops each:

DNS rebinding
    a page on ``evil.example`` re-points its name at 127.0.0.1 and then talks to the agent as
    a same-origin page of ``evil.example``. Its requests carry ``Host: evil.example:24780``:
    :func:`check_host` takes only ``127.0.0.1:PORT``, ``localhost:PORT`` (and ``[::1]:PORT``),
    PORT being the one the agent listens on.
Cross-site request forgery
    a page posts a form to the agent (a PIN it guessed, a "trust this provider" click). Every
    state-changing request must come from the agent's own page: ``Origin`` present and equal to
    the agent's origin (:func:`check_origin`; a browser always sends it on a POST),
    ``Sec-Fetch-Site: same-origin`` where the browser sends fetch metadata
    (:func:`check_fetch_metadata`), and a token bound to the page the form came from
    (:class:`PageTokens`: random, bound to what the page was about, used once, short-lived).
Drive-by and framing
    ``GET /authorize`` is the one cross-site entry (the provider's page links to it): it must be
    a top-level navigation (``Sec-Fetch-Mode: navigate``, ``Sec-Fetch-Dest: document`` when
    sent), not an ``<img>``, a ``fetch()`` or a frame; the pages forbid framing besides
    (``frame-ancestors 'none'``), so a page cannot overlay them to steer a click.
Other providers
    :mod:`jpki.agent.trust`: the agent talks only to providers the card holder approved.

Bodies are bounded by :mod:`jpki.serving` (size and time); the agent listens on loopback only
(:func:`jpki.agent.app.serve`).
"""

from __future__ import annotations

import datetime as _dt
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final

from jpki.errors import JpkiError

__all__ = ["GuardError", "PageTokens", "allowed_hosts", "check_fetch_metadata", "check_host", "check_origin"]

#: How long a page's token stays usable (the provider's challenge lives 3 minutes).
TOKEN_TTL: Final = _dt.timedelta(minutes=10)
#: Tokens kept at most (the oldest go first): pages nobody submitted must not pile up.
MAX_TOKENS: Final = 1000


class GuardError(JpkiError):
    """A request the agent refuses before reading it: HTTP ``status`` and a ``reason`` code
    (``bad-host``, ``bad-origin``, ``cross-site``, ``not-navigation``, ``bad-token``)."""

    code = "agent_guard"

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


def allowed_hosts(port: int) -> frozenset[str]:
    """The ``Host`` values the agent answers on ``port``."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def check_host(host: str | None, port: int) -> str:
    """``host`` (lower-cased) when it is one of :func:`allowed_hosts`, else 421 ``bad-host``."""
    value = (host or "").strip().lower()
    if value not in allowed_hosts(port):
        raise GuardError(421, "bad-host", f"the agent answers only http://127.0.0.1:{port} and "
                                          f"http://localhost:{port} (DNS rebinding?)")
    return value


def check_origin(origin: str | None, host: str) -> None:
    """A state-changing request must come from the agent's own page: ``Origin`` is
    ``http://HOST`` exactly (``host`` already checked). Missing or ``null``: refused."""
    if origin is None:
        raise GuardError(403, "bad-origin", "a form of the agent's page carries an Origin: this request has none")
    if not hmac.compare_digest(origin.strip().lower().encode(), f"http://{host}".encode()):
        raise GuardError(403, "bad-origin", "the request does not come from the agent's page")


def check_fetch_metadata(site: str | None, mode: str | None, dest: str | None, *, navigation: bool) -> None:
    """Fetch metadata, when the browser sends it (``Sec-Fetch-*``; older browsers do not).

    ``navigation``: the request may come from any site but must open a page (mode ``navigate``,
    destination ``document``). Otherwise it must come from the agent's own pages
    (``same-origin``)."""
    if navigation:
        if mode not in (None, "navigate") or dest not in (None, "document"):
            raise GuardError(403, "not-navigation", "the agent's pages open in the browser window only "
                                                    "(not in a frame, an image or a script)")
        return
    if site is not None and site != "same-origin":
        raise GuardError(403, "cross-site", f"a {site} request to the agent is refused")


class PageTokens:
    """Tokens that bind a form to the page the agent rendered it on (CSRF).

    :meth:`issue` makes one for ``binding`` (what the page is about: the form, the provider, the
    pending authorization); :meth:`take` accepts it once, for the same binding, within
    :data:`TOKEN_TTL`. Kept in memory (the agent is one process); at most ``max_tokens``."""

    def __init__(self, *, ttl: _dt.timedelta = TOKEN_TTL, max_tokens: int = MAX_TOKENS) -> None:
        self.ttl = ttl
        self.max_tokens = max_tokens
        self._tokens: OrderedDict[str, tuple[Hashable, _dt.datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, binding: Hashable, now: _dt.datetime) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (binding, now + self.ttl)
            while len(self._tokens) > self.max_tokens:
                self._tokens.popitem(last=False)
        return token

    def take(self, token: str | None, binding: Hashable, now: _dt.datetime) -> None:
        """Use ``token`` for ``binding``, or 403 ``bad-token`` (unknown, used, expired or made
        for another page). A token offered for the wrong page is spent all the same."""
        with self._lock:
            found = self._tokens.pop(token, None) if isinstance(token, str) else None
        if found is None or found[0] != binding or now >= found[1]:
            raise GuardError(403, "bad-token", "this page has expired or was already used: open it again "
                                               "from the site")

    def __len__(self) -> int:
        return len(self._tokens)
