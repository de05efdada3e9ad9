"""pcscd + vpcd for tests: find or start pcscd, hand out vpcd slots, serve a card in a slot,
skip/fail with a reason.

The pytest plugin (:mod:`jpki.testing.plugin`) builds its ``jpki_pcscd``, ``jpki_vpcd_slot`` and
``jpki_reader`` fixtures from this module; :func:`pcscd_fixture` is the body of the first.
It yields a :class:`PcscdEnv`. It

* checks that ``pcscd``, the vpcd driver config (``/etc/reader.conf.d/vpcd``) and pyscard are
  there;
* reuses a running pcscd, or starts ``pcscd --foreground`` (own session, so a Ctrl-C of pytest
  does not hit it), removing stale ``/run/pcscd/pcscd.comm``/``pcscd.pid`` left by a SIGKILL,
  and waits until the vpcd slot port accepts TCP connections and PC/SC lists the reader;
* at the end stops pcscd only if this process started it **and** no other test session using
  this module still holds it (shared ``flock`` on ``/tmp/jpki-pcscd.users.lock``);
* when pcscd cannot be had (not root, package missing), calls ``pytest.fail(reason)`` when
  ``CI=true`` and ``pytest.skip(reason)`` otherwise: a CI machine that should test the reader
  path never passes by skipping it.

``vpcd_slot()`` locks one vpcd port (35963 or 35964) across processes that use this module so
that two test sessions never plug a card into the same slot: vpcd accepts one card per port
and silently queues any second one. :class:`VpcdSlot` serves emulated cards in a locked slot
(``jpki.transport.emu.VpcdCardServer``), swapping cards without reconnecting.

The lock files (``$JPKI_TEST_LOCK_DIR``, default ``/tmp``: ``jpki-pcscd.*.lock``,
``jpki-vpcd-PORT.lock``) are shared by every test session of the machine, whichever project runs
it: they are what lets them share the one pcscd.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from jpki.transport.emu import EmulatorTransport, VpcdCardServer

VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
PCSCD_RUN_DIR = Path("/run/pcscd")
VPCD_PORTS = (35963, 35964)
LOCK_DIR = Path(os.environ.get("JPKI_TEST_LOCK_DIR", "/tmp"))
START_TIMEOUT = 10.0


def reader_name(port: int) -> str:
    """The PC/SC reader name pcscd gives the vpcd slot listening on ``port``."""
    return f"Virtual PCD 00 {port - VPCD_PORTS[0]:02d}"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """``pytest.fail`` in CI (env CI=true), ``pytest.skip`` elsewhere."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass
class PcscdEnv:
    """A usable pcscd. ``started`` is True when this process started it."""

    pid: int | None
    started: bool
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


# -- discovery ------------------------------------------------------------------------------


def pcscd_pids() -> list[int]:
    """Pids of running pcscd processes (any owner), from /proc."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == "pcscd" and state != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def pcscd_path() -> str | None:
    """The pcscd binary (PATH, then /usr/sbin), or None when not installed."""
    found = shutil.which("pcscd")
    if found:
        return found
    return "/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None


def missing_reason() -> str | None:
    """Why pcscd + vpcd cannot be used here, or None when everything needed is installed."""
    if pcscd_path() is None:
        return "pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)"
    if not VPCD_CONF.exists():
        return f"vpcd driver config {VPCD_CONF} missing (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (pip install 'jpki[pcsc]')"
    return None


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """True when something listens on ``host:port``.

    The probe connection is closed at once; vpcd, if it accepts it, sees a card that vanished
    and reports the slot empty again at its next poll.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pcsc_readers() -> list[str] | None:
    """Reader names known to pcscd, or None when pcscd cannot be reached."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return None
    try:
        hr, readers = scard.SCardListReaders(ctx, [])
        if hr != scard.SCARD_S_SUCCESS:
            return []
        return list(readers)
    finally:
        scard.SCardReleaseContext(ctx)


def wait_ready(
    timeout: float = START_TIMEOUT, port: int = VPCD_PORTS[0], *, probe_tcp: bool = True
) -> bool:
    """Poll until PC/SC lists the vpcd reader and (``probe_tcp``) its port accepts TCP.

    Do not probe a pcscd that others may be using: vpcd listens with a backlog of one, so
    while a card is connected a probe may find the queue full and wait for nothing.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readers = pcsc_readers() or []  # None while pcscd is still starting
        if any(r.startswith(reader_name(port)) for r in readers) and (not probe_tcp or port_accepts(port)):
            return True
        time.sleep(0.05)
    return False


# -- locks ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout: float | None = None) -> Iterator[bool]:
    """Hold ``flock(mode)`` on ``path``; yields False if not obtained within ``timeout``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        got = False
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None else 0))
                got = True
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        try:
            yield got
        finally:
            if got:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_START_LOCK = LOCK_DIR / "jpki-pcscd.start.lock"
_USERS_LOCK = LOCK_DIR / "jpki-pcscd.users.lock"
#: The pid of a pcscd a session of this module started (the last session out stops it).
_STARTED_FILE = LOCK_DIR / "jpki-pcscd.started"
#: Users of pcscd in this process (a session run inside another, as pytester does, is one more):
#: /proc/locks names processes, not sessions.
_LOCAL_USERS = 0


# -- start / stop ---------------------------------------------------------------------------


def _remove_stale_run_files() -> None:
    for name in ("pcscd.comm", "pcscd.pid"):
        with contextlib.suppress(FileNotFoundError):
            (PCSCD_RUN_DIR / name).unlink()


def start_pcscd(timeout: float = START_TIMEOUT) -> subprocess.Popen[bytes]:
    """Start ``pcscd --foreground``; wait until it serves the vpcd slot. Caller: none may run."""
    _remove_stale_run_files()
    proc = subprocess.Popen(
        [pcscd_path() or "pcscd", "--foreground"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if not wait_ready(timeout):
        stop_pcscd(proc)
        raise RuntimeError(f"pcscd did not serve {reader_name(VPCD_PORTS[0])} within {timeout} s")
    return proc


def stop_pcscd(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a pcscd this process started (SIGTERM, then SIGKILL + stale-file cleanup)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _remove_stale_run_files()


@contextlib.contextmanager
def pcscd_running(timeout: float = START_TIMEOUT) -> Iterator[PcscdEnv | str]:
    """Yield a :class:`PcscdEnv`, or a string saying why pcscd cannot be had.

    Reuses a running pcscd; otherwise starts one and, at exit, stops it unless another
    session of this module still uses it.
    """
    reason = missing_reason()
    if reason:
        yield reason
        return
    with _flock(_USERS_LOCK, fcntl.LOCK_SH) as _:
        proc: subprocess.Popen[bytes] | None = None
        with _flock(_START_LOCK, fcntl.LOCK_EX):
            pids = pcscd_pids()
            if pids:
                if not wait_ready(timeout, probe_tcp=False):
                    yield f"a pcscd is running (pid {pids[0]}) but does not serve the vpcd reader"
                    return
                env = PcscdEnv(pid=pids[0], started=False)
            else:
                if os.geteuid() != 0:
                    yield "pcscd is not running and only root can start it here"
                    return
                try:
                    proc = start_pcscd(timeout)
                except (OSError, RuntimeError) as exc:
                    yield f"cannot start pcscd: {exc}"
                    return
                _STARTED_FILE.write_text(str(proc.pid))
                env = PcscdEnv(pid=proc.pid, started=True, process=proc)
        global _LOCAL_USERS
        _LOCAL_USERS += 1
        try:
            yield env
        finally:
            _LOCAL_USERS -= 1
            _release(proc)


def _release(proc: subprocess.Popen[bytes] | None) -> None:
    """The last session of this module out (no other users-lock holder) stops the pcscd a
    session of this module started — its own (``proc``) or another's (named in the started
    file) —, never one that was running before."""
    with _flock(_START_LOCK, fcntl.LOCK_EX):
        if _LOCAL_USERS or _other_lock_holders(_USERS_LOCK):
            return  # leave it running for them (here: a pytest session run inside another)
        if proc is not None:
            stop_pcscd(proc)
        else:
            try:
                pid = int(_STARTED_FILE.read_text())
            except (OSError, ValueError):
                return
            if pid in pcscd_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while pid in pcscd_pids() and time.monotonic() < deadline:
                    time.sleep(0.05)
        with contextlib.suppress(OSError):
            _STARTED_FILE.unlink()


def _other_lock_holders(path: Path) -> set[int]:
    """Pids (other than ours) holding a flock on ``path``, read from /proc/locks."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return set()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders: set[int] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            # "1: FLOCK  ADVISORY  READ 1234 08:01:5678 0 EOF" ("->" lines are waiters)
            if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
                continue
            if parts[5] == dev and parts[4].isdigit():
                holders.add(int(parts[4]))
    holders.discard(os.getpid())
    return {pid for pid in holders if Path(f"/proc/{pid}").exists()}


def pcscd_fixture() -> Iterator[PcscdEnv]:
    """The body of a session-scoped fixture (the plugin's ``jpki_pcscd``)::

        pcscd = pytest.fixture(scope="session", name="pcscd")(pcscd_fixture)
    """
    with pcscd_running() as env:
        if isinstance(env, str):
            unavailable(env)
        yield env


# -- vpcd slots -----------------------------------------------------------------------------


def reader_has_card(reader: str) -> bool:
    """True when pcscd reports a card in the reader named ``reader`` (exact name)."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return False
    try:
        hr, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hr != scard.SCARD_S_SUCCESS:
            return False
        return any(state & scard.SCARD_STATE_PRESENT for _, state, _ in states)
    finally:
        scard.SCardReleaseContext(ctx)


_TCP_LISTEN, _TCP_TIME_WAIT, _TCP_CLOSE = 0x0A, 0x06, 0x07


def vpcd_port_busy(port: int) -> bool:
    """True when a TCP connection to ``port`` exists: a card is plugged into (or queued for)
    that vpcd slot, possibly by a process that does not use this module's locks.

    Read from /proc/net/tcp{,6}; TIME_WAIT and closed sockets do not count.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4:
                continue
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            state = int(parts[3], 16)
            if state in (_TCP_LISTEN, _TCP_TIME_WAIT, _TCP_CLOSE):
                continue
            if port in (local_port, remote_port):
                return True
    return False


def slot_free(port: int) -> bool:
    return not vpcd_port_busy(port) and not reader_has_card(reader_name(port))


@contextlib.contextmanager
def vpcd_slot(timeout: float = 60.0) -> Iterator[int]:
    """Lock a free vpcd port across test processes and yield it.

    Tries 35963 ("Virtual PCD 00 00") first, then 35964. A slot with a card in it or a TCP
    connection to its port (a card served by someone not using this module) is passed over
    after a short grace period.
    """
    deadline = time.monotonic() + timeout
    while True:
        for port in VPCD_PORTS:
            with _flock(LOCK_DIR / f"jpki-vpcd-{port}.lock", fcntl.LOCK_EX, timeout=0) as got:
                if got and wait_for(functools.partial(slot_free, port), timeout=1.5):
                    yield port
                    return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no vpcd slot free within {timeout} s")
        time.sleep(0.1)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- a served card --------------------------------------------------------------------------


class VpcdSlot:
    """One vpcd slot (a locked port) where emulated cards are served, one at a time.

    Starting the bridge and waiting for pcscd to see the card (and to see it gone) costs about
    0.8 s; putting another card into the running slot costs nothing, so a test module keeps one
    slot and each test :meth:`serve` s its own card. pcscd keeps seeing a card in the reader;
    the new card starts powered on with a clear security state, as after a reset.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = reader_name(port)
        self._server: VpcdCardServer | None = None

    def serve(self, card: EmulatorTransport) -> str:
        """Put ``card`` (an open in-process transport; the slot closes it) into the reader and
        return the reader's name (``pcsc:NAME`` reaches it)."""
        from jpki.transport.emu import VpcdCardServer

        if self._server is None:
            self._server = VpcdCardServer(card, "127.0.0.1", self.port)
            if not wait_for(lambda: reader_has_card(self.reader), timeout=15):
                raise TimeoutError(f"{self.reader} shows no card")
        else:
            self._server.swap(card)
        return self.reader

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            wait_for(lambda: not reader_has_card(self.reader), timeout=5)
