"""The OpenID Providers the card holder has approved: the agent talks to no other.

A page anywhere on the web can send the browser to ``http://127.0.0.1:24780/authorize?issuer=…``;
without this list the agent would contact whatever provider that link names and show its
request on a page that looks like the card holder's own. So the first time a provider appears
the agent asks "trust this provider?" on its own page (a form guarded like the PIN form), or the
card holder approves it beforehand with ``jpki agent --trust ISSUER``. The list lives in the
home, ``HOME/agent/trusted-providers.json`` (0600, written atomically)::

    {"providers": [{"issuer": "https://idp.example.jp", "added_at": "2026-11-27T03:00:00+00:00"}]}

An issuer is compared exactly, as OpenID Connect compares ``iss``: the scheme, host, port and
path of the URL the provider's documents name. Only ``https`` issuers are accepted, or ``http``
on a loopback host (``127.0.0.1``, ``[::1]``, ``localhost``): over plain http elsewhere anyone
on the way could swap the challenge the card signs.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jpki.errors import JpkiError, UsageError
from jpki.fileio import write_atomic

__all__ = ["TRUST_FILE", "TrustStoreError", "TrustedProvider", "TrustedProviders", "check_issuer", "is_loopback_host"]

#: Where the approved providers live, under the home.
TRUST_FILE: Final = Path("agent") / "trusted-providers.json"
#: Longest issuer URL taken (a URL longer than this is not a provider's).
MAX_ISSUER: Final = 512
#: Most providers kept (a list that grows without end is a sign of something wrong).
MAX_PROVIDERS: Final = 256


class TrustStoreError(JpkiError):
    """The list of approved providers cannot be read or written (``path``, and what is wrong)."""

    code = "agent_trust_store"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"the agent's trusted providers ({path}): {problem}")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); brackets allowed."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer(issuer: object) -> str:
    """``issuer`` if it is a provider's issuer URL the agent may talk to, else :class:`UsageError`
    saying why: an absolute ``https`` URL (``http`` only on a loopback host) with no query,
    fragment or user name, no trailing slash, at most :data:`MAX_ISSUER` characters."""
    if not isinstance(issuer, str) or not issuer:
        raise UsageError("no provider (issuer) given")
    if len(issuer) > MAX_ISSUER or any(ord(c) < 0x21 or ord(c) == 0x7F for c in issuer):
        raise UsageError("the provider's issuer is not a URL")
    try:
        parts = urllib.parse.urlsplit(issuer)
        _ = parts.port  # a port that is not a number in 0..65535 raises here
    except ValueError:
        raise UsageError(f"the provider's issuer is not a URL: {issuer[:80]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the provider's issuer must be an http(s) URL, not {issuer[:80]!r}")
    if parts.query or parts.fragment or "?" in issuer or "#" in issuer or parts.username is not None:
        raise UsageError("the provider's issuer has no query, fragment or user name")
    if issuer.endswith("/"):
        raise UsageError("the provider's issuer does not end with '/'")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise UsageError(f"the provider {issuer} uses plain http: only https providers are trusted "
                         "(http only on 127.0.0.1 or localhost)")
    return issuer


@dataclass(frozen=True)
class TrustedProvider:
    """One approved provider and when it was approved."""

    issuer: str
    added_at: _dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "added_at": self.added_at.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustedProvider:
        added = _dt.datetime.fromisoformat(str(data["added_at"]))
        if added.tzinfo is None:
            raise ValueError("added_at has no time zone")
        return cls(check_issuer(data["issuer"]), added)


class TrustedProviders:
    """The approved providers of a home (see the module docstring). Each call reads the file, so
    ``jpki agent --trust`` in another process is seen by a running agent at once."""

    def __init__(self, home: Path | str) -> None:
        self.path = Path(home).expanduser() / TRUST_FILE
        self._lock = threading.Lock()

    def _read(self) -> list[TrustedProvider]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustStoreError(self.path, f"cannot be read: {exc}") from None
        try:
            data = json.loads(text)
            return [TrustedProvider.from_json(item) for item in data["providers"]]
        except (ValueError, TypeError, KeyError, UsageError) as exc:
            raise TrustStoreError(self.path, f"is damaged ({exc}): fix or delete it, then approve "
                                             "the providers again with 'jpki agent --trust ISSUER'") from None

    def _write(self, providers: list[TrustedProvider]) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            text = json.dumps({"providers": [p.to_json() for p in providers]}, indent=2) + "\n"
            write_atomic(self.path, text.encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise TrustStoreError(self.path, f"cannot be written: {exc}") from None

    def list(self) -> list[TrustedProvider]:
        """The approved providers, oldest first."""
        return self._read()

    def is_trusted(self, issuer: str) -> bool:
        """Whether ``issuer`` (compared exactly) has been approved."""
        return any(p.issuer == issuer for p in self._read())

    def add(self, issuer: str, *, now: _dt.datetime) -> TrustedProvider:
        """Approve ``issuer`` (checked by :func:`check_issuer`); approving it again changes nothing."""
        issuer = check_issuer(issuer)
        with self._lock:
            providers = self._read()
            for known in providers:
                if known.issuer == issuer:
                    return known
            if len(providers) >= MAX_PROVIDERS:
                raise UsageError(f"{MAX_PROVIDERS} providers are approved already: forget some first "
                                 "(jpki agent --forget ISSUER)")
            added = TrustedProvider(issuer, now)
            self._write([*providers, added])
            return added

    def remove(self, issuer: str) -> bool:
        """Forget ``issuer``; False when it was not approved."""
        with self._lock:
            providers = self._read()
            kept = [p for p in providers if p.issuer != issuer]
            if len(kept) == len(providers):
                return False
            self._write(kept)
            return True
