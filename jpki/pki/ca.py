"""The test CA: two self-signed roots (signing, user authentication) kept in a directory.

Layout of a CA directory (made by :meth:`TestCA.init`)::

    ca.json          format version, base URL (public)
    sign_ca.pem      signing root certificate (0644)
    sign_ca.key      its private key, unencrypted PKCS#8 PEM (0600, created with that mode)
    auth_ca.pem      user-authentication root certificate (0644)
    auth_ca.key      its private key (0600)
    certs.db         CertificateDB of every certificate issued, their revocations and the
                     last CRL number of each CA (0600)

The keys are unencrypted: this is an emulator CA, never a real one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jpki.clock import JST, Clock, SystemClock
from jpki.errors import JpkiError, UsageError
from jpki.identity import Persona
from jpki.pki import profiles
from jpki.pki.db import CertificateDB, CertRecord
from jpki.pki.profiles import CA_KINDS, CaKind
from jpki.revocation.crl import RevokedEntry, build_crl

__all__ = ["CAExistsError", "CANotFoundError", "TestCA", "free_port"]

FORMAT_VERSION = 1
#: Host of the base URL ``TestCA.init`` gives a CA when none is given: loopback, on a port that
#: was free when the CA was made (each home its own, so two homes never answer for each other).
DEFAULT_HOST = "127.0.0.1"
CONFIG_FILE = "ca.json"
DB_FILE = "certs.db"


class CAExistsError(UsageError):
    """``TestCA.init`` was asked to create a CA where one (or part of one) already exists."""


class CANotFoundError(JpkiError):
    """``TestCA.open`` found no complete CA in the directory."""


def _reporting(entries: Iterable[RevokedEntry], progress: Callable[[int, int | None], None],
               expected: int | None, every: int = 4096) -> Iterator[RevokedEntry]:
    """``entries`` passed on, with ``progress(done, expected)`` every ``every`` and at the end."""
    done = 0
    progress(0, expected)
    for entry in entries:
        yield entry
        done += 1
        if done % every == 0:
            progress(done, expected)
    progress(done, expected)


def _cert_file(kind: CaKind) -> str:
    return f"{kind}_ca.pem"


def _key_file(kind: CaKind) -> str:
    return f"{kind}_ca.key"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (O_EXCL: never overwrite), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TestCA:
    """An emulator CA issuing JPKI-shaped signing and user-authentication certificates.

    Every certificate it issues is recorded in :attr:`db`. Time comes from the injected clock.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        directory: Path,
        *,
        base_url: str,
        clock: Clock,
        certs: dict[CaKind, x509.Certificate],
        keys: dict[CaKind, rsa.RSAPrivateKey],
        db: CertificateDB,
    ) -> None:
        """Use :meth:`init` or :meth:`open`."""
        self.directory = directory
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self._certs = certs
        self._keys = keys
        self.db = db

    # -- construction

    @classmethod
    def init(
        cls,
        directory: Path | str,
        *,
        base_url: str | None = None,
        clock: Clock,
        key_size: int = 2048,
        keys: dict[CaKind, rsa.RSAPrivateKey] | None = None,
        generation: str | None = None,
        durable: bool = True,
    ) -> TestCA:
        """Create both roots in ``directory`` (created 0700 if missing; must hold no CA).

        ``generation`` (``"2015"`` or ``"2023"``) dates the roots like that generation of the
        J-LIS roots (valid 2015-10-20..2025-10-19 or 2023-07-16..2033-07-15) instead of from now:
        the CA of the cards with 2015-era or 2023-era roots (card profiles ``card-2015`` and
        ``card-2023``). It issues only while its roots are valid (a clock in that window).

        ``base_url`` is where the CRLs and OCSP will be served (it is named in every
        certificate); by default ``http://127.0.0.1:PORT`` with a port free now, kept in the CA's
        configuration for ``jpki ca serve``.
        ``keys`` supplies pre-generated CA keys (tests reuse them; generation is slow);
        otherwise RSA keys of ``key_size`` bits are generated. ``durable=False``: the database
        does not wait for the disk at each commit (see :class:`CertificateDB`; test fixtures).
        """
        directory = Path(directory)
        if base_url is None:
            base_url = f"http://{DEFAULT_HOST}:{free_port(DEFAULT_HOST)}"
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"base_url must be an http(s) URL, not {base_url!r}")
        if key_size < 2048:
            raise UsageError("CA keys must have at least 2048 bits")
        if generation is not None and generation not in profiles.ROOT_GENERATION_START:
            raise UsageError(f"root generation must be one of {', '.join(profiles.ROOT_GENERATION_START)}, "
                             f"not {generation!r}")
        ours = [CONFIG_FILE, DB_FILE] + [f(k) for k in CA_KINDS for f in (_cert_file, _key_file)]
        if directory.exists():
            if not directory.is_dir():
                raise CAExistsError(f"{directory} exists and is not a directory")
            present = [name for name in ours if (directory / name).exists()]
            if present:
                raise CAExistsError(
                    f"{directory} already holds a CA ({', '.join(present)}); refusing to overwrite"
                )
        else:
            directory.mkdir(mode=0o700, parents=True)
        now = clock.now()
        roots_from = profiles.ROOT_GENERATION_START[generation] if generation else now
        certs: dict[CaKind, x509.Certificate] = {}
        ca_keys: dict[CaKind, rsa.RSAPrivateKey] = {}
        for kind in CA_KINDS:
            key = (keys or {}).get(kind) or rsa.generate_private_key(65537, key_size)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise UsageError("CA keys must be RSA private keys")
            ca_keys[kind] = key
            certs[kind] = profiles.build_ca_certificate(kind, key, not_before=roots_from)
        # Keys first (the secret part, 0600 from creation), then certificates, then the config
        # that marks the CA complete.
        for kind in CA_KINDS:
            pem = ca_keys[kind].private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_new(directory / _key_file(kind), pem, 0o600)
        for kind in CA_KINDS:
            pem = certs[kind].public_bytes(serialization.Encoding.PEM)
            _write_new(directory / _cert_file(kind), pem, 0o644)
        db = CertificateDB(directory / DB_FILE, durable=durable)
        config = {
            "format": FORMAT_VERSION,
            "base_url": base_url.rstrip("/"),
            "created_at": now.astimezone(_dt.UTC).isoformat(timespec="seconds"),
        }
        _write_new(
            directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode(), 0o644
        )
        _fsync_dir(directory)
        return cls(
            directory, base_url=base_url, clock=clock, certs=certs, keys=ca_keys, db=db
        )

    @classmethod
    def open(cls, directory: Path | str, *, clock: Clock | None = None, durable: bool = True) -> TestCA:
        """Open a CA made by :meth:`init`. ``clock`` defaults to the system clock; ``durable``
        as in :meth:`init`."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise CANotFoundError(f"no test CA in {directory} (missing {CONFIG_FILE})")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CANotFoundError(f"unreadable {config_path}: {exc}") from None
        if config.get("format") != FORMAT_VERSION:
            raise CANotFoundError(f"{config_path}: unsupported format {config.get('format')!r}")
        certs: dict[CaKind, x509.Certificate] = {}
        keys: dict[CaKind, rsa.RSAPrivateKey] = {}
        for kind in CA_KINDS:
            try:
                certs[kind] = x509.load_pem_x509_certificate(
                    (directory / _cert_file(kind)).read_bytes()
                )
                # The CA wrote this key itself (0600, in its own directory): OpenSSL's RSA
                # consistency check would cost ~30 ms per key at every open.
                key = serialization.load_pem_private_key(
                    (directory / _key_file(kind)).read_bytes(), password=None,
                    unsafe_skip_rsa_key_validation=True,
                )
            except (OSError, ValueError) as exc:
                raise CANotFoundError(f"incomplete test CA in {directory}: {exc}") from None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise CANotFoundError(f"{_key_file(kind)} is not an RSA key")
            cert_key = certs[kind].public_key()
            if not isinstance(cert_key, rsa.RSAPublicKey) \
                    or key.public_key().public_numbers() != cert_key.public_numbers():
                raise CANotFoundError(f"{_key_file(kind)} does not match {_cert_file(kind)}")
            keys[kind] = key
        return cls(
            directory,
            base_url=str(config["base_url"]),
            clock=clock if clock is not None else SystemClock(),
            certs=certs,
            keys=keys,
            db=CertificateDB(directory / DB_FILE, durable=durable),
        )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> TestCA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the roots

    @property
    def sign_ca_cert(self) -> x509.Certificate:
        return self._certs["sign"]

    @property
    def auth_ca_cert(self) -> x509.Certificate:
        return self._certs["auth"]

    @property
    def sign_ca_key(self) -> rsa.RSAPrivateKey:
        return self._keys["sign"]

    @property
    def auth_ca_key(self) -> rsa.RSAPrivateKey:
        return self._keys["auth"]

    def ca_cert(self, kind: CaKind) -> x509.Certificate:
        """The root certificate for ``'sign'`` or ``'auth'``."""
        return self._certs[profiles._check_kind(kind)]

    def ca_key(self, kind: CaKind) -> rsa.RSAPrivateKey:
        """The root's private key (for CRL and OCSP signing)."""
        return self._keys[profiles._check_kind(kind)]

    def ca_cert_path(self, kind: CaKind) -> Path:
        """Path of the root certificate PEM (for ``openssl verify -CAfile``)."""
        return self.directory / _cert_file(profiles._check_kind(kind))

    def crl_url(self, kind: CaKind) -> str:
        return profiles.crl_url(self.base_url, kind)

    def ocsp_url(self, kind: CaKind) -> str:
        return profiles.ocsp_url(self.base_url, kind)

    # -- issuance

    def _issued_at(self, issued_at: _dt.datetime | None) -> _dt.datetime:
        when = issued_at if issued_at is not None else self.clock.now()
        if when.tzinfo is None or when.utcoffset() is None:
            raise UsageError("issued_at must be timezone-aware")
        return when.astimezone(_dt.UTC).replace(microsecond=0)

    def _check_window(self, kind: CaKind, issued_at: _dt.datetime) -> _dt.datetime:
        ca = self.ca_cert(kind)
        if not ca.not_valid_before_utc <= issued_at < ca.not_valid_after_utc:
            raise UsageError(
                f"{kind} CA is not valid at {issued_at.isoformat()} "
                f"({ca.not_valid_before_utc.isoformat()} .. {ca.not_valid_after_utc.isoformat()})"
            )
        return ca.not_valid_after_utc

    def _new_serial(self) -> int:
        while True:
            serial = profiles.new_serial()
            if self.db.get(serial) is None:
                return serial

    def issue_sign_cert(
        self,
        public_key: rsa.RSAPublicKey,
        persona: Persona,
        *,
        card_id: str,
        issued_at: _dt.datetime | None = None,
        card_expiry: _dt.date,
    ) -> x509.Certificate:
        """Issue and record a signing certificate for ``persona``'s key on card ``card_id``.

        Valid from ``issued_at`` (default: now) to 23:59:59 JST of the 5th birthday after
        issuance, capped at the end of ``card_expiry`` (JST) and at the CA's end.
        """
        if not card_id:
            raise UsageError("card_id must not be empty")
        when = self._issued_at(issued_at)
        ca_end = self._check_window("sign", when)
        not_after = profiles.leaf_not_after(persona.birth_date, when, card_expiry, ca_end)
        cert = profiles.build_sign_certificate(
            public_key,
            persona,
            issuer_cert=self.sign_ca_cert,
            issuer_key=self.sign_ca_key,
            issuance_id=profiles.new_issuance_id(),
            serial=self._new_serial(),
            not_before=when,
            not_after=not_after,
            base_url=self.base_url,
        )
        self.db.record(cert, "sign", card_id, issued_at=when)
        return cert

    def issue_auth_cert(
        self,
        public_key: rsa.RSAPublicKey,
        *,
        card_id: str,
        issued_at: _dt.datetime | None = None,
        card_expiry: _dt.date,
        birth_date: _dt.date | None = None,
    ) -> x509.Certificate:
        """Issue and record a user-authentication certificate for card ``card_id``.

        The certificate holds no personal data, so the holder's ``birth_date`` is a separate
        argument: with it, validity ends at the 5th birthday after issuance like the signing
        certificate; without it, at the end of ``card_expiry`` (JST). Both are capped by the CA.
        """
        if not card_id:
            raise UsageError("card_id must not be empty")
        when = self._issued_at(issued_at)
        ca_end = self._check_window("auth", when)
        not_after = profiles.leaf_not_after(birth_date, when, card_expiry, ca_end)
        cert = profiles.build_auth_certificate(
            public_key,
            issuer_cert=self.auth_ca_cert,
            issuer_key=self.auth_ca_key,
            issuance_id=profiles.new_issuance_id(),
            serial=self._new_serial(),
            not_before=when,
            not_after=not_after,
            base_url=self.base_url,
        )
        self.db.record(cert, "auth", card_id, issued_at=when)
        return cert

    def card_expiry_for(self, persona: Persona, issued_on: _dt.date | None = None) -> _dt.date:
        """Card expiry for ``persona`` issued on ``issued_on`` (default: today in JST)."""
        day = issued_on if issued_on is not None else self.clock.now().astimezone(JST).date()
        return profiles.card_expiry_for(persona.birth_date, day)

    # -- revocation

    def revoke(
        self,
        serial: int,
        reason: x509.ReasonFlags | str,
        *,
        revoked_at: _dt.datetime | None = None,
        invalidity_date: _dt.datetime | None = None,
    ) -> CertRecord:
        """Revoke the certificate ``serial`` for ``reason`` and return its new record.

        ``revoked_at`` defaults to the clock's now (whole seconds); ``invalidity_date`` (when
        the key is known or suspected to have been compromised) is optional. Both go on the CRL.
        Raises ``jpki.pki.db.UnknownCertificateError`` for a serial this CA never issued and
        ``jpki.pki.db.AlreadyRevokedError`` for one already revoked (a ``certificateHold`` may
        be made permanent with another reason); UsageError for a bad reason or a naive time.
        """
        def utc(when: _dt.datetime, what: str) -> _dt.datetime:
            if not isinstance(when, _dt.datetime) or when.tzinfo is None or when.utcoffset() is None:
                raise UsageError(f"{what} must be a timezone-aware datetime")
            return when.astimezone(_dt.UTC).replace(microsecond=0)

        when = utc(revoked_at if revoked_at is not None else self.clock.now(), "revoked_at")
        invalid = None if invalidity_date is None else utc(invalidity_date, "invalidity_date")
        return self.db.revoke(serial, revoked_at=when, reason=reason, invalidity_date=invalid)

    def crl(self, kind: CaKind, *, next_update_in: _dt.timedelta = _dt.timedelta(days=1),
            progress: Callable[[int, int | None], None] | None = None) -> bytes:
        """The current CRL (DER) of the ``kind`` CA: every revoked certificate of that kind.

        thisUpdate is the clock's now, nextUpdate ``next_update_in`` later. Each call allocates
        the next CRL number (1, 2, …), persisted in the CA database, so numbers only increase.
        ``progress(entries_done, entries_expected)`` is called every few thousand entries and at
        the end (a million entries take seconds: the CLI shows it on a terminal).
        """
        kind = profiles._check_kind(kind)
        if not isinstance(next_update_in, _dt.timedelta) or next_update_in < _dt.timedelta(seconds=1):
            raise UsageError("next_update_in must be a timedelta of at least one second")
        now = self._issued_at(None)
        # The number first, then the rows: a higher number never reflects an older read.
        number = self.db.next_crl_number(kind, this_update=now)
        flags = {flag.value: flag for flag in x509.ReasonFlags}
        entries: Iterable[RevokedEntry] = (
            RevokedEntry(row.serial, row.revoked_at, flags[row.reason], row.invalidity_date)
            for row in self.db.iter_revoked(kind)
        )
        if progress is not None:
            entries = _reporting(entries, progress, self.db.count_revoked(kind))
        return build_crl(
            self.ca_cert(kind),
            self.ca_key(kind),
            entries,
            crl_number=number,
            this_update=now,
            next_update=now + next_update_in,
        )


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on at ``host`` now (the kernel's choice)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
