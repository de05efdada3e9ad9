"""Streaming file hashes, with nothing heavy imported: ``jpki sign`` starts hashing before it
loads the CMS, card and certificate code, so that start-up overlaps the work."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Protocol

from .errors import JpkiError, UsageError

#: Digests the card signs documents with (a DigestInfo prefix is known for each).
SIGN_DIGESTS = ("sha256", "sha384", "sha512")

#: Bytes read at a time when hashing. Small enough that a chunk the kernel copies in is still in
#: the CPU's L2 cache when SHA-256 reads it: on the benchmark machine (AMD EPYC, 1 MiB L2),
#: 64-128 KiB reads hash 1 GiB in 0.85 s, faster than ``openssl dgst``; 256 KiB to 1 MiB reads
#: take 1.3 s (the copy evicts the buffer before it is hashed). Memory stays flat either way.
CHUNK_SIZE = 64 << 10


class HashingCancelled(JpkiError):
    """Hashing was stopped through its ``cancel`` event (the signature was abandoned)."""


class BinarySource(Protocol):
    """A binary file read in chunks: ``open(…, "rb")``, ``io.BytesIO``."""

    def read(self, n: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def hash_stream(fh: BinarySource, algorithms: Iterable[str], *, sink: IO[bytes] | None = None,
                limit: int | None = None,
                cancel: threading.Event | None = None) -> tuple[dict[str, bytes], int]:
    """Hash ``fh`` (up to ``limit`` bytes, else to its end) in chunks with every algorithm;
    copy the bytes to ``sink`` on the way. Returns the digests by name and the byte count.
    Setting ``cancel`` (from another thread) stops it with :class:`HashingCancelled`."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    total = 0
    while limit is None or total < limit:
        if cancel is not None and cancel.is_set():
            raise HashingCancelled("hashing cancelled")
        want = CHUNK_SIZE if limit is None else min(CHUNK_SIZE, limit - total)
        n = fh.readinto(view[:want])
        if not n:
            break
        chunk = view[:n]
        for h in hashers.values():
            h.update(chunk)
        if sink is not None:
            sink.write(chunk)
        total += n
    return {name: h.digest() for name, h in hashers.items()}, total


def regular_file(path: Path, what: str) -> int:
    """The size of ``path``; UsageError unless it is an existing regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a directory, not a file")
    return st.st_size


def hash_file(path: str | os.PathLike[str], algorithm: str, *,
              cancel: threading.Event | None = None) -> tuple[bytes, int]:
    """The digest of a file (streamed) and its size; UsageError for a missing file or a folder."""
    path = Path(path)
    regular_file(path, "file")
    try:
        with open(path, "rb", buffering=0) as fh:
            digests, size = hash_stream(fh, [algorithm], cancel=cancel)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return digests[algorithm], size



@dataclasses.dataclass(frozen=True)
class HashedFile:
    """A file's digest, made ahead of the signature (see :func:`hash_for_signing`)."""

    path: Path
    size: int
    digest_algorithm: str
    digest: bytes


def hash_for_signing(path: str | os.PathLike[str], digest: str = "sha256", *,
                     cancel: threading.Event | None = None) -> HashedFile:
    """Hash a file for a detached signature (streamed, :data:`CHUNK_SIZE` at a time).

    The first half of :func:`sign_file` for detached signatures: a caller may run it in a
    thread while the card is opened and the PIN asked, then call :func:`sign_hashed`.
    """
    if digest not in SIGN_DIGESTS:
        raise UsageError(f"unsupported digest {digest!r}: use one of {', '.join(SIGN_DIGESTS)}")
    src = Path(path)
    size = regular_file(src, "file to sign")
    value, done = hash_file(src, digest, cancel=cancel)
    if done != size:
        raise UsageError(f"{src} changed size while it was being signed")
    return HashedFile(src, size, digest, value)


class BackgroundHash:
    """:func:`hash_for_signing` running beside the caller, started before anything heavy is
    imported so that start-up, the PIN prompt and the card overlap the hashing.

    In a process with a single thread it hashes in a forked child (its own interpreter lock:
    imports in the parent cannot slow it down); otherwise in a thread (forking beside other
    threads could inherit a lock they hold). :meth:`result` returns the :class:`HashedFile` or
    raises what hashing raised; :meth:`cancel` stops it.
    """

    def __init__(self, path: str | os.PathLike[str], digest: str = "sha256") -> None:
        self.path, self.digest = Path(path), digest
        self._cancel = threading.Event()
        self._pid: int | None = None
        self._thread_result: list[HashedFile | BaseException] = []
        self._thread: threading.Thread | None = None
        if hasattr(os, "fork") and threading.active_count() == 1:
            self._fork()
        else:
            self._thread = threading.Thread(target=self._run_in_thread, name="jpki-hash", daemon=True)
            self._thread.start()

    def _run_in_thread(self) -> None:
        try:
            self._thread_result.append(hash_for_signing(self.path, self.digest, cancel=self._cancel))
        except BaseException as exc:  # noqa: BLE001 - handed to result(), which raises it
            self._thread_result.append(exc)

    def _fork(self) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: hash, report, leave without running the parent's exit code
            code = 0
            try:
                os.close(read_end)
                try:
                    hashed = hash_for_signing(self.path, self.digest)
                    message = b"OK" + hashed.size.to_bytes(8, "big") + hashed.digest
                except JpkiError as exc:
                    message = b"ER" + str(exc).encode("utf-8", "replace")
                view = memoryview(message)
                while view:
                    view = view[os.write(write_end, view):]
            except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        self._pid, self._read_end = pid, read_end

    def result(self) -> HashedFile:
        if self._thread is not None:
            self._thread.join()
            value = self._thread_result[0]
            if isinstance(value, BaseException):
                raise value
            return value
        chunks = []
        while chunk := os.read(self._read_end, 65536):
            chunks.append(chunk)
        os.close(self._read_end)
        if self._pid is None:
            raise JpkiError(f"hashing {self.path}: the result was already taken, or hashing was cancelled")
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        message = b"".join(chunks)
        if message[:2] == b"ER":
            raise UsageError(message[2:].decode("utf-8", "replace"))
        if message[:2] != b"OK" or status != 0:
            raise JpkiError(f"hashing {self.path} failed in the helper process")
        size = int.from_bytes(message[2:10], "big")
        return HashedFile(self.path, size, self.digest, message[10:])

    def cancel(self) -> None:
        self._cancel.set()
        if self._pid is not None:
            import signal

            try:
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(self._read_end)
            self._pid = None
        elif self._thread is not None:
            self._thread.join()
