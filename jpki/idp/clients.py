"""The relying parties the provider knows: ``HOME/idp/clients.db`` (SQLite, mode 0600).

A client has a random ``client_id``, a ``name`` shown to the card holder, the exact redirect
URIs it may use, how it authenticates at the token endpoint — its public keys (an inline JWKS
or a ``jwks_uri``) for ``private_key_jwt``, and/or a secret for ``client_secret_basic`` — and
a ``sector`` (a host name) for its pairwise ``sub``.

Rules, checked when a client is added:

- a redirect URI is an absolute ``https`` URI, or ``http`` on a loopback host (``127.0.0.1``,
  ``[::1]``, ``localhost``) for development; no fragment; compared by exact string match;
- the keys are public EC P-256 or RSA (at least 2048 bits) keys: a JWKS holding a private
  part is refused (someone pasted the wrong file);
- the secret is made here (256 random bits), shown once and stored as its SHA-256 only (a
  random secret needs no slow hash);
- without ``sector``, every redirect URI must have the same host, which is the sector (as
  OpenID Connect's pairwise identifiers define it); clients of one sector get the same ``sub``.

The registry reads the database at every look-up, so that ``jpki idp client add`` takes effect
in a running provider without a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import unicodedata
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from jpki.errors import JpkiError, UsageError
from jpki.idp.keys import idp_dir

__all__ = [
    "CLIENTS_FILE",
    "Client",
    "ClientRegistry",
    "ClientRegistryError",
    "UnknownClientError",
    "check_jwks",
    "check_redirect_uri",
]

CLIENTS_FILE: Final = "clients.db"
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_NAME: Final = 100
MAX_REDIRECT_URIS: Final = 20
_CLIENT_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")


class ClientRegistryError(JpkiError):
    """The client database cannot be opened or holds something unreadable."""

    code = "client_registry"


class UnknownClientError(UsageError):
    """No client with that id."""

    code = "unknown_client"

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        super().__init__(f"no client {client_id!r} (see 'jpki idp client list')")


def _is_loopback(host: str | None) -> bool:
    return (host or "").lower() in _LOOPBACK


def check_redirect_uri(uri: object) -> str:
    """``uri`` if it may be a redirect URI (see the module docstring), else :class:`UsageError`."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        raise UsageError("a redirect URI is a non-empty URL of at most 2000 characters")
    if any(unicodedata.category(ch)[0] in "CZ" and ch != " " for ch in uri) or " " in uri:
        raise UsageError(f"the redirect URI {uri!r} holds spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UsageError(f"the redirect URI {uri!r} is not a URL: {exc}") from None
    if parts.fragment or uri.endswith("#"):
        raise UsageError(f"the redirect URI {uri!r} has a fragment (not allowed by OAuth 2.0)")
    if not parts.hostname:
        raise UsageError(f"the redirect URI {uri!r} has no host")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return uri
    if parts.scheme == "http":
        raise UsageError(f"the redirect URI {uri!r} is plain http on a host that is not loopback: "
                         "use https (http is for 127.0.0.1, [::1] or localhost)")
    raise UsageError(f"the redirect URI {uri!r} is not an http(s) URL")


def check_jwks_uri(uri: object) -> str:
    """A JWKS URL: https, or http on loopback."""
    if not isinstance(uri, str):
        raise UsageError("the JWKS URI must be a URL")
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as exc:
        raise UsageError(f"the JWKS URI {uri!r} is not a URL: {exc}") from None
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname))):
        raise UsageError(f"the JWKS URI {uri!r} must be https (or http on a loopback host)")
    return uri


def check_jwks(document: object) -> dict[str, Any]:
    """A client's public keys as a JWKS (a single JWK is wrapped), checked: EC P-256 or RSA of
    at least 2048 bits, no private members, parseable by joserfc. :class:`UsageError` otherwise."""
    if isinstance(document, Mapping) and "keys" not in document and "kty" in document:
        document = {"keys": [document]}
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list) or not document["keys"]:
        raise UsageError("the JWKS must be a JSON object with a non-empty \"keys\" list (or one JWK)")
    keys = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            raise UsageError(f"key {index} of the JWKS is not a JSON object")
        private = sorted(_PRIVATE_MEMBERS & set(jwk))
        if private:
            raise UsageError(f"key {index} of the JWKS holds private parts ({', '.join(private)}): give the "
                             "public keys only")
        try:
            if jwk.get("kty") == "EC":
                if jwk.get("crv") != "P-256":
                    raise UsageError(f"key {index}: only the P-256 curve is accepted (ES256)")
                ECKey.import_key(dict(jwk))
            elif jwk.get("kty") == "RSA":
                rsa_key = RSAKey.import_key(dict(jwk))
                if rsa_key.raw_value.key_size < 2048:
                    raise UsageError(f"key {index}: RSA keys need at least 2048 bits")
            else:
                raise UsageError(f"key {index}: kty must be EC or RSA, not {jwk.get('kty')!r}")
        except (JoseError, ValueError, TypeError) as exc:
            raise UsageError(f"key {index} of the JWKS is not a valid key: {exc}") from None
        if jwk.get("use") not in (None, "sig", "enc"):
            raise UsageError(f"key {index}: use must be sig or enc")
        keys.append(dict(jwk))
    return {"keys": keys}


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Client:
    """A registered relying party (see the module docstring)."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    sector: str
    created_at: _dt.datetime
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    secret_hash: str | None = dataclasses.field(default=None, repr=False)

    @property
    def auth_methods(self) -> tuple[str, ...]:
        """The token-endpoint authentication methods it can use."""
        methods = []
        if self.jwks is not None or self.jwks_uri is not None:
            methods.append("private_key_jwt")
        if self.secret_hash is not None:
            methods.append("client_secret_basic")
        return tuple(methods)

    def check_secret(self, secret: str) -> bool:
        """Constant-time comparison of ``secret`` with the stored hash."""
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(_hash_secret(secret), self.secret_hash)

    def signing_keys(self) -> KeySet | None:
        """The inline JWKS's signature keys (None for a ``jwks_uri`` client)."""
        if self.jwks is None:
            return None
        return KeySet.import_key_set({"keys": [k for k in self.jwks["keys"] if k.get("use") in (None, "sig")]})

    def to_json(self) -> dict[str, Any]:
        """What ``client list`` shows, JSON-ready (no secret, not even its hash)."""
        return {"client_id": self.client_id, "name": self.name, "redirect_uris": list(self.redirect_uris),
                "sector": self.sector, "auth_methods": list(self.auth_methods),
                "jwks_uri": self.jwks_uri, "keys": len(self.jwks["keys"]) if self.jwks else 0,
                "created_at": self.created_at.isoformat()}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise UsageError(f"a client name is 1-{MAX_NAME} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise UsageError("a client name holds no control characters")
    return name.strip()


def _sector_of(redirect_uris: Sequence[str], sector: str | None) -> str:
    if sector is not None:
        if not isinstance(sector, str) or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,253}", sector):
            raise UsageError(f"the sector {sector!r} is not a host name")
        return sector.lower()
    hosts = {(urllib.parse.urlsplit(u).hostname or "").lower() for u in redirect_uris}
    if len(hosts) != 1:
        raise UsageError(f"the redirect URIs have different hosts ({', '.join(sorted(hosts))}): give "
                         "--sector HOST, the one sector their pairwise sub is computed for")
    return hosts.pop()


def new_client_id() -> str:
    """A fresh client_id: 16 random bytes, base64url, never starting with ``-`` (which a command
    line would take for an option: ``jpki idp client remove -X…``)."""
    while True:
        candidate = secrets.token_urlsafe(16)
        if not candidate.startswith("-"):
            return candidate


#: Client records a registry keeps in memory at most (each a few hundred bytes).
_KNOWN_CLIENTS = 1024


class ClientRegistry:
    """The clients of ``HOME/idp/clients.db``. Thread-safe; closed by :meth:`close`."""

    def __init__(self, home: Path | str, *, path: Path | None = None) -> None:
        self.path = path if path is not None else idp_dir(Path(home)) / CLIENTS_FILE
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        # Clients read, valid while SQLite's data_version (other connections' commits) stays the
        # same; this connection's own writes clear it.
        self._known: dict[str, Client] = {}
        self._version: int | None = None

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                try:
                    os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
                    conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, name TEXT NOT "
                                 "NULL, redirect_uris TEXT NOT NULL, sector TEXT NOT NULL, jwks TEXT, jwks_uri "
                                 "TEXT, secret_hash TEXT, created_at TEXT NOT NULL)")
                except (OSError, sqlite3.Error) as exc:
                    raise ClientRegistryError(f"cannot open the client database {self.path}: {exc}") from None
                self._conn, self._pid = conn, os.getpid()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise ClientRegistryError(f"client database {self.path}: {exc}") from None

    @staticmethod
    def _row(row: Sequence[Any]) -> Client:
        try:
            return Client(client_id=row[0], name=row[1], redirect_uris=tuple(json.loads(row[2])), sector=row[3],
                          jwks=json.loads(row[4]) if row[4] else None, jwks_uri=row[5], secret_hash=row[6],
                          created_at=_dt.datetime.fromisoformat(row[7]))
        except (ValueError, TypeError) as exc:
            raise ClientRegistryError(f"unreadable client record {row[0]!r}: {exc}") from None

    def add(self, name: str, redirect_uris: Sequence[str], *, now: _dt.datetime,
            jwks: Mapping[str, Any] | None = None, jwks_uri: str | None = None, secret: bool = False,
            sector: str | None = None) -> tuple[Client, str | None]:
        """Register a client; returns it and its secret (shown once; None without ``secret``)."""
        name = _check_name(name)
        if isinstance(redirect_uris, str) or not redirect_uris:
            raise UsageError("a client needs at least one redirect URI (--redirect-uri)")
        if len(redirect_uris) > MAX_REDIRECT_URIS:
            raise UsageError(f"at most {MAX_REDIRECT_URIS} redirect URIs")
        uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
        if jwks is not None and jwks_uri is not None:
            raise UsageError("give the keys inline (--jwks) or by URL (--jwks-uri), not both")
        keys = check_jwks(jwks) if jwks is not None else None
        uri = check_jwks_uri(jwks_uri) if jwks_uri is not None else None
        if keys is None and uri is None and not secret:
            raise UsageError("a client must be able to authenticate: give --jwks FILE, --jwks-uri URL "
                             "(private_key_jwt) or --secret (client_secret_basic)")
        plain = secrets.token_urlsafe(32) if secret else None
        client = Client(client_id=new_client_id(), name=name, redirect_uris=uris,
                        sector=_sector_of(uris, sector), created_at=now.astimezone(_dt.UTC).replace(microsecond=0),
                        jwks=keys, jwks_uri=uri, secret_hash=_hash_secret(plain) if plain else None)
        with self._db() as conn:
            conn.execute("INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (client.client_id, client.name, json.dumps(list(client.redirect_uris)), client.sector,
                          json.dumps(keys) if keys else None, uri, client.secret_hash,
                          client.created_at.isoformat()))
        return client, plain

    def get(self, client_id: str) -> Client | None:
        """The client, or None (also for an id that cannot be one)."""
        if not isinstance(client_id, str) or not _CLIENT_ID_RE.fullmatch(client_id):
            return None
        with self._db() as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._known.clear()
                self._version = version
            known = self._known.get(client_id)
            if known is not None:
                return known
            row = conn.execute("SELECT * FROM clients WHERE client_id = ?", (client_id,)).fetchone()
            if row is None:
                return None
            client = self._row(row)
            if len(self._known) >= _KNOWN_CLIENTS:
                self._known.clear()
            self._known[client_id] = client
            return client

    def list(self) -> list[Client]:
        """Every client, oldest first."""
        with self._db() as conn:
            rows = conn.execute("SELECT * FROM clients ORDER BY created_at, rowid").fetchall()
        return [self._row(r) for r in rows]

    def remove(self, client_id: str) -> Client:
        """Forget a client (its tokens die with it: they are checked against the registry)."""
        client = self.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        with self._db() as conn:
            conn.execute("DELETE FROM clients WHERE client_id = ?", (client_id,))
            self._known.pop(client_id, None)
        return client

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None
