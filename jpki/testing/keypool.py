"""RSA-2048 keys for test cards: generated once per machine, cached, each handed out once per run.

Generating an RSA-2048 key takes 50-200 ms, a hundred times what the rest of a new card costs
(two certificates, the card files). So test cards take their keys from a pool on disk, filled
lazily: a key missing from the pool is generated when a card first needs it and kept for the
next runs.

Where: ``$JPKI_KEYPOOL``, else ``$XDG_CACHE_HOME/jpki/keypool``, else ``~/.cache/jpki/keypool``
(outside any repository; the directory also holds a ``.gitignore`` of ``*`` and a
``CACHEDIR.TAG``, so it is never committed nor backed up even when pointed inside a tree)::

    keypool/                 0700
      claims.lock            byte i locked by a live process = key i is that process's
      rsa2048/000000.key     0600: magic, SHA-256 of the DER, PKCS#8 DER of the key

**Once per run, reused across runs.** Within a process a key is handed out once. Processes
that run at the same time (pytest-xdist workers, two test runs) claim keys with POSIX record
locks on ``claims.lock`` (byte i = key i), held until the process exits — the kernel releases
them even after a crash, so no claim goes stale. Two cards of one run therefore never share a
key, while the next run takes the same keys again: fine for test cards, whose keys protect
nothing (their PINs are public, their CA is a test CA), and it is what makes the pool fast.

**Damage is repaired, not reported.** A key file that is missing, truncated, of another
format or whose checksum does not match is generated again and rewritten (temporary file, then
rename). The checksum is what allows loading keys with ``unsafe_skip_rsa_key_validation``
(OpenSSL's consistency check costs ~30 ms per key): a flipped bit would otherwise give a key
that loads and signs wrongly. Files are written without fsync: a torn write is a damaged file,
regenerated at the next use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jpki.errors import JpkiError

__all__ = ["ENV_KEYPOOL", "KEY_SIZE", "KeyPool", "KeyPoolError", "KeyPoolStats", "default_directory"]

#: Environment variable naming the pool directory.
ENV_KEYPOOL: Final = "JPKI_KEYPOOL"
#: The size of every key of the pool (JPKI card keys and the test CA's).
KEY_SIZE: Final = 2048
_MAGIC: Final = b"JPKI-KEYPOOL-1\n"
_DIGEST: Final = 32
_KEY_DIR: Final = f"rsa{KEY_SIZE}"
_CLAIMS: Final = "claims.lock"
_GITIGNORE: Final = "# the jpki key pool: test keys cached per machine, never committed\n*\n"
_CACHEDIR_TAG: Final = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                        "# the jpki test-key pool (jpki.testing.keypool); regenerated when deleted\n")


class KeyPoolError(JpkiError):
    """The pool directory cannot be used (not a directory, not writable…): ``path`` and the
    ``reason`` say which."""

    code = "keypool_unusable"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"key pool {path}: {reason} (set ${ENV_KEYPOOL} to another directory)")


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """``$JPKI_KEYPOOL``, else ``$XDG_CACHE_HOME/jpki/keypool``, else ``~/.cache/jpki/keypool``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_KEYPOOL, "").strip():
        return Path(env[ENV_KEYPOOL]).expanduser()
    cache = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "jpki" / "keypool"


@dataclass
class KeyPoolStats:
    """What a pool object did: keys handed out, read from disk, generated, repaired."""

    handed: int = 0
    loaded: int = 0
    generated: int = 0
    repaired: int = 0
    #: the pool indices handed out, in order (which files the keys came from)
    indices: list[int] = field(default_factory=list)


class _Claims:
    """This process's claims on one pool: the lock file (opened once and never closed while the
    process lives: closing any descriptor of it would drop every POSIX lock of the process on
    it) and the indices taken."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.taken: set[int] = set()
        self.next = 0
        self.lock = threading.Lock()

    def try_claim(self, index: int) -> bool:
        """Lock byte ``index`` (never blocks); False when another process holds it.
        KeyPoolError when the file system cannot lock at all (else every key would look taken)."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):  # held by another process
                return False
            raise KeyPoolError(self.path.parent, f"cannot lock {self.path.name}: {exc.strerror or exc}") from None
        return True

    def release(self, index: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, index)


_registry: dict[Path, _Claims] = {}
_registry_lock = threading.Lock()


def _claims_for(directory: Path) -> _Claims:
    """The process-wide claims on ``directory`` (every KeyPool object of a process shares them,
    e.g. the session's and that of a test run inside the test run by ``pytester``)."""
    with _registry_lock:
        claims = _registry.get(directory)
        if claims is None or claims.pid != os.getpid():  # a forked child inherits no locks
            claims = _registry[directory] = _Claims(directory / _CLAIMS)
        return claims


def _generate() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


class KeyPool:
    """The key pool in ``directory`` (default: :func:`default_directory`). Thread-safe.

    ``key()`` hands out a key no card of this run has had; ``fill(n)`` makes sure the first
    ``n`` keys exist (a CI job can warm the pool before the tests).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 generate: Callable[[], rsa.RSAPrivateKey] = _generate) -> None:
        self.directory = Path(directory) if directory is not None else default_directory()
        self._generate = generate
        self.stats = KeyPoolStats()
        self._stats_lock = threading.Lock()
        self._prepare()
        self.directory = self.directory.resolve()
        try:
            self._claims = _claims_for(self.directory)
        except OSError as exc:
            raise KeyPoolError(self.directory, f"cannot open {_CLAIMS}: {exc.strerror or exc}") from None

    # -- the directory

    def _prepare(self) -> None:
        root = self.directory
        if root.exists() and not root.is_dir():
            raise KeyPoolError(root, "not a directory")
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = root.stat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                root.chmod(0o700)
            (root / _KEY_DIR).mkdir(mode=0o700, exist_ok=True)
            for name, text in ((".gitignore", _GITIGNORE), ("CACHEDIR.TAG", _CACHEDIR_TAG)):
                if not (root / name).exists():
                    self._write(root / name, text.encode(), 0o644)
        except OSError as exc:
            raise KeyPoolError(root, exc.strerror or type(exc).__name__) from None

    def path(self, index: int) -> Path:
        """The file of key ``index``."""
        return self.directory / _KEY_DIR / f"{index:06d}.key"

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        """Write ``path`` whole or not at all (no fsync: see the module docstring)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    # -- keys

    @staticmethod
    def _encode(key: rsa.RSAPrivateKey) -> bytes:
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return _MAGIC + hashlib.sha256(der).digest() + der

    @staticmethod
    def _decode(data: bytes) -> rsa.RSAPrivateKey | None:
        """The key in a pool file, or None when the file is damaged or not one of ours."""
        head = len(_MAGIC) + _DIGEST
        if len(data) <= head or not data.startswith(_MAGIC):
            return None
        der = data[head:]
        if hashlib.sha256(der).digest() != data[len(_MAGIC):head]:
            return None
        try:
            # The checksum above shows these are the bytes this module wrote from a key that
            # cryptography generated: OpenSSL's RSA consistency check (~30 ms) would add nothing.
            key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_SIZE:
            return None
        return key

    def _load_or_make(self, index: int) -> tuple[rsa.RSAPrivateKey, bool]:
        """Key ``index`` from its file, or a new one written there (then True). Caller holds its claim."""
        path = self.path(index)
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError:  # unreadable, or not a file: damaged like any other
            data = b""
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
        if data is not None:
            key = self._decode(data)
            if key is not None:
                self._count("loaded")
                return key, False
            self._count("repaired")
        key = self._generate()
        try:
            self._write(path, self._encode(key), 0o600)
        except OSError as exc:
            raise KeyPoolError(self.directory, f"cannot write {path.name}: {exc.strerror or exc}") from None
        self._count("generated")
        return key, True

    def _count(self, what: str, index: int | None = None) -> None:
        with self._stats_lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)
            if index is not None:
                self.stats.indices.append(index)

    def key(self) -> rsa.RSAPrivateKey:
        """A key that no other card of this run has had (see the module docstring)."""
        claims = self._claims
        with claims.lock:
            index = claims.next
            while index in claims.taken or not claims.try_claim(index):
                index += 1
            claims.taken.add(index)
            claims.next = index + 1
        key, _ = self._load_or_make(index)
        self._count("handed", index)
        return key

    def keys(self, count: int) -> list[rsa.RSAPrivateKey]:
        """``count`` keys of :meth:`key`."""
        return [self.key() for _ in range(count)]

    def fill(self, count: int, progress: Callable[[int, int], None] | None = None) -> int:
        """Make sure keys ``0 … count-1`` exist and are sound, generating what is missing;
        returns how many were generated. Keys that other processes hold right now are theirs
        to write and are skipped; nothing is handed out (``progress(done, count)`` after each)."""
        made = 0
        claims = self._claims
        for index in range(count):
            with claims.lock:
                mine = index not in claims.taken and claims.try_claim(index)
                if mine:
                    claims.taken.add(index)  # kept from key() while it is being written
            if mine:
                try:
                    made += self._load_or_make(index)[1]
                finally:
                    with claims.lock:
                        claims.taken.discard(index)
                        claims.release(index)
            if progress is not None:
                progress(index + 1, count)
        return made

    def size(self) -> int:
        """How many key files the pool holds (sound or not)."""
        return sum(1 for p in (self.directory / _KEY_DIR).glob("*.key"))
