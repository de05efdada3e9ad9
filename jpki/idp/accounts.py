"""Which card holder answered: one stable account key for the login and the eKYC flows.

A login (openid alone) is answered with the user-authentication certificate, and
:mod:`jpki.auth` gives its :class:`~jpki.auth.result.Account` (renewal links followed back to
the card holder's first certificate). An eKYC (any of the basic 4 info) is answered with the
*signing* certificate. For the pairwise ``sub`` to be the same in both flows — a relying party
that first logs a user in and later asks for the address must see the same ``sub`` — the
provider maps a signing certificate to the user-authentication certificate of the same card,
as the platform operators do with J-LIS's certificate linkage data (a user id that stays the
same across both certificates and across renewals; see shared/real-world-integration.md).

The test CA's database is that linkage here: it records which card each certificate was issued
to. :class:`CardLinkage` finds the card of a signing certificate, the card's latest
user-authentication certificate, and then its account through the renewal links. A signing
certificate the test CA does not know (a real card, without J-LIS linkage data) keeps an
account of its own, named by the first signing certificate of its renewal chain: its ``sub``
is stable across renewals but differs from the same person's login ``sub``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cryptography import x509

from jpki.auth.links import (
    AccountResolver,
    FollowPredecessors,
    LinkError,
    NoLinks,
    TestCALinks,
)
from jpki.auth.result import Account, CertRef
from jpki.pki.ca import DB_FILE
from jpki.pki.db import CertificateDB

__all__ = ["CardLinkage", "signing_account"]


class CardLinkage:
    """Signing certificate → the same card's login account, from a test CA directory.

    ``login_accounts`` is the resolver the relying party uses for login certificates (renewal
    links), so that both flows end at the same :class:`Account`.
    """

    def __init__(self, ca_dir: Path, links: TestCALinks, login_accounts: AccountResolver) -> None:
        self.directory = Path(ca_dir)
        self._links = links
        self._login_accounts = login_accounts
        self._sign_accounts = FollowPredecessors(links.predecessor)
        self._auth_issuer = x509.load_pem_x509_certificate(
            (self.directory / "auth_ca.pem").read_bytes()).subject.rfc4514_string()
        self._sign_issuer = x509.load_pem_x509_certificate(
            (self.directory / "sign_ca.pem").read_bytes()).subject.rfc4514_string()
        self._db: CertificateDB | None = None
        self._lock = threading.Lock()

    def _database(self) -> CertificateDB:
        with self._lock:
            if self._db is None:
                self._db = CertificateDB(self.directory / DB_FILE)
            return self._db

    def account_for_signing(self, ref: CertRef) -> Account:
        """The login account of the card that holds the signing certificate ``ref``; else the
        signing certificate's own account (renewal links followed). :class:`LinkError` when the
        database fails."""
        if ref.issuer == self._sign_issuer:
            try:
                db = self._database()
                record = db.get(ref.serial)
                if record is not None and record.kind == "sign":
                    auth = db.list(kind="auth", card=record.card)
                    if auth:
                        latest = auth[-1]
                        return self._login_accounts.account_for(CertRef(self._auth_issuer, latest.serial_number))
            except LinkError:
                raise
            except Exception as exc:  # the database failed: no guess
                raise LinkError(f"the certificate linkage failed: {type(exc).__name__}: {exc}") from exc
        return self._sign_accounts.account_for(ref)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def signing_account(linkage: CardLinkage | None, ref: CertRef) -> Account:
    """The account for a signing certificate: through ``linkage`` when there is one, else the
    certificate's own (no links)."""
    if linkage is None:
        return NoLinks().account_for(ref)
    return linkage.account_for_signing(ref)
