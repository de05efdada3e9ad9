"""Renewal links: which account a user-authentication certificate belongs to.

A renewed card has new keys and a new user-authentication certificate; the old certificate is
revoked (``superseded``). A relying party keeps the card holder's account by following the
renewal links the certificate authority publishes (the JPKI platform's linkage service). The
account is named by the **first** certificate of the chain (:class:`~jpki.auth.result.Account`),
so the account key never changes however many times the card is renewed.

The link source is pluggable. An :class:`AccountResolver` maps a certificate to its account;
three are provided:

:class:`NoLinks`
    every certificate is its own account (no link source).
:class:`FollowPredecessors`
    a **new → old** source: ``predecessor(ref) -> CertRef | None``. The resolver walks back to
    the first certificate. Stateless, any number of server processes.
:class:`FollowSuccessors`
    an **old → new** source: ``successors(ref) -> iterable of CertRef`` (the shape of the
    J-LIS linkage answer: "what replaced this certificate?"). Since the relying party cannot ask
    "what did this replace?", it remembers the certificates of the accounts it has seen (an
    alias map, in memory by default; give it a shared mutable mapping for several processes)
    and, when an unknown certificate logs in, walks forward from every remembered account
    (:meth:`FollowSuccessors.sync` does it in bulk, e.g. from a nightly job).

:class:`TestCALinks` reads the links of a test CA directory (``jpki.pki``'s ``links`` table) and
offers both directions: ``FollowPredecessors(TestCALinks(ca_dir).predecessor)`` or
``FollowSuccessors(TestCALinks(ca_dir).successors)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509

from jpki.auth.result import Account, CertRef
from jpki.errors import JpkiError, UsageError
from jpki.pki.ca import DB_FILE
from jpki.pki.db import CertificateDB
from jpki.verify.cache import LruCache

__all__ = [
    "AccountResolver",
    "FollowPredecessors",
    "FollowSuccessors",
    "LinkError",
    "NoLinks",
    "TestCALinks",
]

#: Longest renewal chain followed (a card is renewed about every five years).
MAX_HOPS = 64
#: What a kept account is reckoned to weigh besides its issuer names (two CertRefs, an Account).
_ACCOUNT_ENTRY_BYTES = 512


def _account_weight(ref: CertRef, account: Account) -> int:
    return _ACCOUNT_ENTRY_BYTES + len(ref.issuer) + len(account.origin.issuer)


class LinkError(JpkiError):
    """The renewal-link source failed or gave an impossible answer (a cycle, too long a chain)."""


@runtime_checkable
class AccountResolver(Protocol):
    """Maps the certificate that logged in to the card holder's stable account."""

    def account_for(self, ref: CertRef) -> Account:
        """The account of ``ref``; :class:`LinkError` when the link source fails."""
        ...


class NoLinks:
    """No renewal links: every certificate is its own account (a renewed card gets a new one)."""

    def account_for(self, ref: CertRef) -> Account:
        """``Account(ref)``."""
        return Account(ref)


class FollowPredecessors:
    """Follows a new → old link source back to the first certificate of the chain.

    ``predecessor(ref)`` returns the certificate ``ref`` renewed, or None. Exceptions it raises
    become :class:`LinkError`. The accounts found are kept (at most ``cache_size`` of them
    weighing at most ``cache_bytes``, least recently used dropped): what a certificate renewed
    is fixed when it is issued — the link is recorded before the new card can be used — so the
    answer for a certificate never changes.
    """

    def __init__(self, predecessor: Callable[[CertRef], CertRef | None], *, max_hops: int = MAX_HOPS,
                 cache_size: int = 100_000, cache_bytes: int | None = 32 * 1024 * 1024) -> None:
        if not callable(predecessor):
            raise UsageError("predecessor must be callable")
        self._predecessor = predecessor
        self.max_hops = max_hops
        try:
            self.cache: LruCache[CertRef, Account] = LruCache(cache_size, cache_bytes, size=_account_weight)
        except ValueError as exc:
            raise UsageError(f"account cache: {exc}") from None

    def account_for(self, ref: CertRef) -> Account:
        """Walk back from ``ref`` while a predecessor exists (or answer from the cache)."""
        found = self.cache.get(ref)
        if found is not None:
            return found
        account = self._walk(ref)
        self.cache.put(ref, account)
        return account

    def _walk(self, ref: CertRef) -> Account:
        seen = {ref}
        current = ref
        for hops in range(self.max_hops + 1):
            try:
                previous = self._predecessor(current)
            except Exception as exc:  # any failure of the source
                raise LinkError(f"the renewal-link source failed: {type(exc).__name__}: {exc}") from exc
            if previous is None:
                return Account(current, renewals=hops)
            if previous in seen:
                raise LinkError(f"renewal links form a cycle at certificate {previous.serial_hex}")
            seen.add(previous)
            current = previous
        raise LinkError(f"renewal chain longer than {self.max_hops} links")


class FollowSuccessors:
    """Resolves accounts with an old → new link source (see the module docstring).

    ``successors(ref)`` returns the certificates that renewed ``ref`` (usually none or one).
    ``aliases`` maps each certificate seen to its account's first certificate; by default a
    dict in this process. :meth:`account_for` answers from it, else walks forward from every
    account known (``O(accounts)`` link look-ups, once per new certificate), else makes the
    certificate a new account and remembers it.
    """

    def __init__(self, successors: Callable[[CertRef], Iterable[CertRef]], *,
                 aliases: MutableMapping[CertRef, CertRef] | None = None, max_hops: int = MAX_HOPS) -> None:
        if not callable(successors):
            raise UsageError("successors must be callable")
        self._successors = successors
        self.aliases: MutableMapping[CertRef, CertRef] = aliases if aliases is not None else {}
        self.max_hops = max_hops
        self._lock = threading.Lock()

    def _next(self, ref: CertRef) -> list[CertRef]:
        try:
            return list(self._successors(ref))
        except Exception as exc:
            raise LinkError(f"the renewal-link source failed: {type(exc).__name__}: {exc}") from exc

    def _walk(self, origin: CertRef, start: CertRef) -> None:
        frontier, hops = [start], 0
        while frontier:
            if hops > self.max_hops:
                raise LinkError(f"renewal chain longer than {self.max_hops} links")
            following: list[CertRef] = []
            for ref in frontier:
                for new in self._next(ref):
                    known = self.aliases.get(new)
                    if known is not None and known != origin:
                        continue  # already the alias of another account: keep the first claim
                    if known is None:
                        self.aliases[new] = origin
                        following.append(new)
            frontier, hops = following, hops + 1

    def sync(self) -> int:
        """Walk forward from every known certificate; return how many aliases were added."""
        with self._lock:
            before = len(self.aliases)
            for ref, origin in list(self.aliases.items()):
                self._walk(origin, ref)
            return len(self.aliases) - before

    def account_for(self, ref: CertRef) -> Account:
        """The account ``ref`` belongs to (learnt through the links), or a new one."""
        with self._lock:
            origin = self.aliases.get(ref)
            if origin is None:
                for known, first in list(self.aliases.items()):
                    self._walk(first, known)
                origin = self.aliases.get(ref)
            if origin is None:
                self.aliases[ref] = ref
                origin = ref
        return Account(origin, renewals=self._distance(origin, ref))

    def _distance(self, origin: CertRef, ref: CertRef) -> int:
        if origin == ref:
            return 0
        # Breadth-first from the origin along the links, bounded; only for the result's count.
        frontier, hops, seen = [origin], 0, {origin}
        while frontier and hops < self.max_hops:
            hops += 1
            following = []
            for current in frontier:
                for new in self._next(current):
                    if new == ref:
                        return hops
                    if new not in seen:
                        seen.add(new)
                        following.append(new)
            frontier = following
        return 0


class TestCALinks:
    """The renewal links of a test CA directory (``jpki.pki.TestCA``; ``jpki.lifecycle.renew``
    writes them): both roots' certificates and the ``links`` table of its database.

    Certificates of another issuer have no links here. The database is opened on first use and
    read through :class:`jpki.pki.CertificateDB` (thread-safe); :meth:`close` releases it.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, ca_dir: Path | str) -> None:
        self.directory = Path(ca_dir)
        self._db_path = self.directory / DB_FILE
        self._issuers: dict[str, str] = {}
        for kind in ("sign", "auth"):
            path = self.directory / f"{kind}_ca.pem"
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise UsageError(f"no test CA root in {self.directory}: {exc}") from None
            self._issuers[cert.subject.rfc4514_string()] = kind
        if not self._db_path.is_file():
            raise UsageError(f"no certificate database in {self.directory}")
        self._db: CertificateDB | None = None
        self._lock = threading.Lock()

    def _database(self) -> CertificateDB:
        with self._lock:
            if self._db is None:
                self._db = CertificateDB(self._db_path)
            return self._db

    def predecessor(self, ref: CertRef) -> CertRef | None:
        """The certificate ``ref`` renewed (the most recently linked one), or None."""
        if ref.issuer not in self._issuers:
            return None
        found = self._database().predecessors(ref.serial)
        return CertRef(ref.issuer, int(found[-1], 16)) if found else None

    def successors(self, ref: CertRef) -> list[CertRef]:
        """The certificates that renewed ``ref``."""
        if ref.issuer not in self._issuers:
            return []
        found = self._database().successors(ref.serial)
        return [CertRef(ref.issuer, int(serial, 16)) for serial in found]

    def close(self) -> None:
        """Close the database (it is opened again on the next look-up)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
