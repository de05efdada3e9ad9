"""Make a software card appear in pcscd as a real reader, through vsmartcard's vpcd driver.

pcscd's vpcd driver (``/etc/reader.conf.d/vpcd``) **listens** on TCP port 35963 (reader
"Virtual PCD 00 00") and 35964 ("Virtual PCD 00 01"); the card is the TCP *client*. Every
message, both ways, is a 2-byte big-endian length followed by the payload. A payload of one
byte is a control byte (``00`` power off, ``01`` power on, ``02`` reset: no reply; ``04`` get
ATR: reply the ATR); anything else is a command APDU, answered with the response APDU.

Usage::

    from card_emulator.vpcd import VpcdBridge, MinimalCard, serve, serve_many

    bridge = VpcdBridge(card)                 # card: atr, power_on/off, reset, transmit
    thread = bridge.start()                   # or bridge.serve_forever() in this thread
    ...                                       # pcsc_scan / pkcs15-tool / jpki see the card
    bridge.remove_card()                      # "pull the card out": pcscd reports no card
    bridge.insert_card()                      # "insert it again": reconnects to vpcd
    bridge.stop(); thread.join(); bridge.close()

    serve(card, port=35963)                   # blocking; SIGUSR1 removes, SIGUSR2 inserts,
                                              # SIGINT/SIGTERM stop (when in the main thread)
    serve_many([(card_a, 35963), (card_b, 35964)])   # two slots, one thread per bridge

    python -m card_emulator.vpcd --port 35963 # a MinimalCard (answers 9000) for benchmarks

Card removal: ``remove_card()`` closes the TCP connection to vpcd and keeps it closed; the
card is powered off (its security state is lost, as with a real card pulled from a reader).
pcscd notices at its next presence poll (about every 400 ms) and reports the reader empty;
open PC/SC handles then fail with ``SCARD_W_REMOVED_CARD``. ``insert_card()`` reconnects;
pcscd accepts the connection at its next poll, reads the ATR and reports a card again.

Faults (``card_emulator.faults``): a bridge given a ``FaultPlan`` (``faults=``, or set
``bridge.faults`` later) carries it out on every APDU while a fault is set — a card that leaves
(``remove_on_signature``, ``remove_after``, a tear) is removed as by ``remove_card()``, without an
answer when it left mid-command; a reader error resets the TCP connection mid-command (vpcd then
fails that exchange and takes the card back at its next poll). Each fault that fires is logged
at WARNING (``fault status_word#2: answered 6A82 …``; a latency, which fires on every APDU, at
INFO). With no fault set, the cost is one attribute test per APDU.

From another process: ``serve()``/``serve_many()`` install ``SIGUSR1`` = remove,
``SIGUSR2`` = insert (every bridge they serve) and ``SIGINT``/``SIGTERM`` = stop when called in
the main thread with ``install_signals=True``, e.g. ``kill -USR1 <pid>``.

One card per slot: vpcd accepts one connection per port; a second bridge on a busy port
connects (the kernel queues it) but is not served until the first card leaves.

Robustness: when pcscd is not listening (not started, restarting) the bridge retries with an
exponential back-off (0.1 s doubling to 2 s by default). A zero-length frame, a frame cut
short or a peer that disconnects mid-APDU is logged and answered by a reconnect; the bridge
never crashes on wire input. A card whose ``transmit`` raises (it should not) answers ``6F00``.

The socket sets ``TCP_NODELAY`` and, before every ``recv()``, ``TCP_QUICKACK``: vpcd may write
the length and the payload in two segments, and without quick ACKs each APDU stalls ~40 ms on
delayed-ACK/Nagle interplay.

Logging (logger ``card_emulator.vpcd`` unless one is given): connection events at INFO,
wire trouble at WARNING, one line per APDU at DEBUG. APDU traces never contain command data
(PINs travel in VERIFY / CHANGE REFERENCE DATA) nor response data (READ BINARY returns
personal data): only the header, the lengths and the status word; SELECT shows its AID.

Threading: ``stop()``, ``remove_card()`` and ``insert_card()`` may be called from any thread
and from signal handlers: they set a flag and write one byte to a self-pipe (a socket pair)
the serving loop waits on; they take no locks.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from .faults import CardLeft, FaultPlan, LinkBroken

__all__ = [
    "DEFAULT_ATR",
    "VPCD_PORT",
    "VPCD_PORTS",
    "Card",
    "MinimalCard",
    "VpcdBridge",
    "describe_command",
    "describe_response",
    "main",
    "serve",
    "serve_many",
    "signal_control",
    "start_many",
]

VPCD_PORT = 35963
"""Port of the first vpcd slot (reader "Virtual PCD 00 00"); slot n listens on 35963 + n."""
VPCD_PORTS = (35963, 35964)
DEFAULT_ATR = bytes.fromhex("3BE000FF8131FE4514")

CTRL_POWER_OFF = 0x00
CTRL_POWER_ON = 0x01
CTRL_RESET = 0x02
CTRL_GET_ATR = 0x04

_LEN = struct.Struct(">H")
_SW_INTERNAL_ERROR = b"\x6f\x00"
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

_INS_SELECT = 0xA4
_INS_NAMES = {
    0xA4: "SELECT",
    0xB0: "READ BINARY",
    0x20: "VERIFY",
    0x24: "CHANGE REFERENCE DATA",
    0x2C: "RESET RETRY COUNTER",
    0x2A: "PSO/COMPUTE SIGNATURE",
    0x84: "GET CHALLENGE",
    0xC0: "GET RESPONSE",
    0xCA: "GET DATA",
}


class Card(Protocol):
    """What the bridge needs from a card (``card_emulator.MyNumberCard`` satisfies it)."""

    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def transmit(self, apdu: bytes) -> bytes: ...


class MinimalCard:
    """The cheapest possible card: answers ``9000`` to every APDU (benchmark floor).

    With ``fill_le=True`` a command that ends in a short Le (case 2, 5 bytes) is answered with
    Le zero bytes before the ``9000``: the floor for a READ BINARY of the same size.
    """

    def __init__(self, atr: bytes = DEFAULT_ATR, *, fill_le: bool = False) -> None:
        self._atr = bytes(atr)
        self._fill_le = fill_le

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> None:
        pass

    def power_off(self) -> None:
        pass

    def reset(self) -> None:
        pass

    def transmit(self, apdu: bytes) -> bytes:
        if self._fill_le and len(apdu) == 5:
            return bytes(apdu[4] or 256) + b"\x90\x00"
        return b"\x90\x00"

    def close(self) -> None:
        pass


class _Interrupted(Exception):
    """stop() or remove_card() was requested while waiting for the peer."""


class _WireError(Exception):
    """The vpcd peer broke the framing or went away; reconnect."""


class _PeerClosed(_WireError):
    """vpcd closed the connection cleanly between two frames (pcscd stopping, card ejected)."""


class _LinkFault(Exception):
    """A reader-error fault: reset the connection in the middle of the command, then reconnect."""


def describe_command(apdu: bytes) -> str:
    """A log-safe description of a command APDU: header and length only (AID for SELECT)."""
    if len(apdu) < 4:
        return f"C> malformed ({len(apdu)} bytes)"
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    name = _INS_NAMES.get(ins, "")
    text = (
        f"C> {cla:02X} {ins:02X} {p1:02X} {p2:02X}{' ' + name if name else ''} ({len(apdu)} bytes)"
    )
    if ins == _INS_SELECT and len(apdu) > 5 and len(apdu) >= 5 + apdu[4] and apdu[4]:
        text += f" id={apdu[5 : 5 + apdu[4]].hex().upper()}"
    return text


def describe_response(rapdu: bytes) -> str:
    """A log-safe description of a response APDU: data length and status word, no data."""
    if len(rapdu) < 2:
        return f"R< malformed ({len(rapdu)} bytes)"
    return f"R< {len(rapdu) - 2} data bytes SW={rapdu[-2]:02X}{rapdu[-1]:02X}"


class VpcdBridge:
    """Connects one card to one vpcd slot and serves pcscd's requests until stopped.

    ``backoff_initial``/``backoff_max`` bound the reconnect delay (doubling after every failed
    attempt, reset by a successful connection); ``connect_timeout`` bounds one TCP connect.
    """

    def __init__(
        self,
        card: Card,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        *,
        logger: logging.Logger | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        connect_timeout: float = 5.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.card = card
        self.host = host
        self.port = port
        self.log = logger or logging.getLogger(__name__)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.faults = faults
        """The card's fault plan (``card_emulator.faults``), or None."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop_requested = False
        self._present = True
        self._serving = False
        self._connected = False
        self._closed = False
        self.connections = 0
        """Number of TCP connections established to vpcd so far."""
        self.apdus = 0
        """Number of command APDUs answered so far."""

    # -- control (any thread, signal-safe) --------------------------------------------------

    def stop(self) -> None:
        """Ask ``serve_forever`` to return (disconnects from vpcd). Thread- and signal-safe."""
        self._stop_requested = True
        self._wake()

    def remove_card(self) -> None:
        """Pull the card out: disconnect from vpcd and stay disconnected until ``insert_card``."""
        self._present = False
        if self.faults is not None and self.faults.present:
            self.faults.remove()  # lock-free
        self._wake()

    def insert_card(self) -> None:
        """Insert the card again: the bridge reconnects to vpcd."""
        self._present = True
        if self.faults is not None:
            self.faults.insert()  # lock-free
        self._wake()

    @property
    def card_present(self) -> bool:
        """False between ``remove_card()`` and ``insert_card()``."""
        return self._present

    @property
    def connected(self) -> bool:
        """True while a TCP connection to vpcd is open (pcscd may not have polled it yet)."""
        return self._connected

    @property
    def stopped(self) -> bool:
        return self._stop_requested

    def close(self) -> None:
        """Release the self-pipe. Call after ``serve_forever`` has returned."""
        self._stop_requested = True
        if not self._closed:
            self._closed = True
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> VpcdBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def start(self, *, daemon: bool = True, name: str | None = None) -> threading.Thread:
        """Run ``serve_forever`` in a new thread and return the (started) thread."""
        thread = threading.Thread(
            target=self.serve_forever, name=name or f"vpcd-{self.port}", daemon=daemon
        )
        thread.start()
        return thread

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\x00")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full of wake-ups already
        except OSError:
            pass  # closed: nothing is waiting any more

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _wait(self, timeout: float | None) -> None:
        """Sleep up to ``timeout`` seconds (forever if None) or until a control call."""
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            if sel.select(timeout):
                self._drain_wake()

    # -- serving loop ---------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Connect to vpcd and answer it until ``stop()``; reconnect on any wire failure."""
        if self._serving:
            raise RuntimeError("this bridge is already serving")
        if self._closed:
            raise RuntimeError("this bridge is closed")
        self._serving = True
        delay = 0.0
        failures = 0
        try:
            while not self._stop_requested:
                if not self._present:
                    self._wait(None)
                    delay = 0.0
                    continue
                if delay:
                    self._wait(delay)
                    if self._stop_requested or not self._present:
                        continue
                sock = self._connect(failures)
                if sock is None:
                    failures += 1
                    delay = min(max(delay * 2, self.backoff_initial), self.backoff_max)
                    continue
                failures = 0
                delay = self._run_connection(sock)
        finally:
            self._serving = False
            self._connected = False

    def _connect(self, failures: int) -> socket.socket | None:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._log_connect_failure(failures, exc)
            return None
        last: OSError | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                err = sock.connect_ex(addr)
                if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                    with selectors.DefaultSelector() as sel:
                        sel.register(sock, selectors.EVENT_WRITE)
                        sel.register(self._wake_r, selectors.EVENT_READ)
                        deadline = time.monotonic() + self.connect_timeout
                        while True:
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                raise TimeoutError("connect timed out")
                            events = sel.select(remaining)
                            if any(key.fileobj is self._wake_r for key, _ in events):
                                self._drain_wake()
                                if self._stop_requested or not self._present:
                                    sock.close()
                                    return None
                            if any(key.fileobj is sock for key, _ in events):
                                break
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, errno.errorcode.get(err, str(err)))
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        if last is not None:
            self._log_connect_failure(failures, last)
        return None

    def _log_connect_failure(self, failures: int, exc: BaseException) -> None:
        level = logging.INFO if failures == 0 else logging.DEBUG
        self.log.log(
            level,
            "vpcd at %s:%d not reachable (%s); retrying with back-off up to %.1f s",
            self.host,
            self.port,
            exc,
            self.backoff_max,
        )

    def _run_connection(self, sock: socket.socket) -> float:
        """Serve one connection; return the delay before the next connect attempt."""
        self._connected = True
        self.connections += 1
        self.log.info("connected to vpcd at %s:%d", self.host, self.port)
        delay = self.backoff_initial
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_READ)
                sel.register(self._wake_r, selectors.EVENT_READ)
                while True:
                    if self._stop_requested or not self._present:
                        raise _Interrupted
                    header = self._recv_exact(sock, sel, 2, frame_start=True)
                    (length,) = _LEN.unpack(header)
                    if length == 0:
                        raise _WireError("zero-length frame from vpcd")
                    payload = self._recv_exact(sock, sel, length, frame_start=False)
                    reply = self._handle(payload)
                    if reply is not None:
                        sock.sendall(_LEN.pack(len(reply)) + reply)
        except _Interrupted:
            delay = 0.0
            if self._stop_requested:
                self.log.info("stopping: disconnecting from vpcd at %s:%d", self.host, self.port)
            else:
                self.log.info("card removed: disconnected from vpcd at %s:%d", self.host, self.port)
        except _LinkFault:
            # SO_LINGER 0: close() sends a reset, and vpcd fails the exchange it is waiting on
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            delay = 0.0
        except _PeerClosed as exc:
            self.log.info("vpcd %s:%d: %s; reconnecting", self.host, self.port, exc)
        except _WireError as exc:
            self.log.warning("vpcd %s:%d: %s; reconnecting", self.host, self.port, exc)
        except OSError as exc:
            self.log.warning(
                "vpcd %s:%d: connection error: %s; reconnecting", self.host, self.port, exc
            )
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self._card_call("power_off")
            self._connected = False
        return delay

    def _recv_exact(
        self, sock: socket.socket, sel: selectors.BaseSelector, size: int, *, frame_start: bool
    ) -> bytes:
        buf = bytearray()
        while len(buf) < size:
            if _TCP_QUICKACK is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            if _MSG_DONTWAIT:
                try:
                    chunk = sock.recv(size - len(buf), _MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    self._wait_readable(sock, sel)
                    continue
            else:
                self._wait_readable(sock, sel)
                chunk = sock.recv(size - len(buf))
            if not chunk:
                if frame_start and not buf:
                    raise _PeerClosed("vpcd closed the connection")
                raise _WireError(f"connection closed mid-frame ({len(buf)} of {size} bytes)")
            buf += chunk
        return bytes(buf)

    def _wait_readable(self, sock: socket.socket, sel: selectors.BaseSelector) -> None:
        """Block until ``sock`` is readable; raise _Interrupted on stop()/remove_card()."""
        while True:
            readable = False
            for key, _ in sel.select():
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                    if self._stop_requested or not self._present:
                        raise _Interrupted
                elif key.fileobj is sock:
                    readable = True
            if readable:
                return

    def _handle(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            ctrl = payload[0]
            if ctrl == CTRL_GET_ATR:
                atr = self._card_atr()
                return atr
            if ctrl == CTRL_POWER_ON:
                self.log.debug("power on")
                self._card_call("power_on")
            elif ctrl == CTRL_POWER_OFF:
                self.log.debug("power off")
                self._card_call("power_off")
            elif ctrl == CTRL_RESET:
                self.log.debug("reset")
                self._card_call("reset")
            else:
                self.log.warning("unknown vpcd control byte %02X ignored", ctrl)
            return None
        faults = self.faults
        if faults is not None and faults.armed:
            return self._handle_with_faults(payload, faults)
        debug = self.log.isEnabledFor(logging.DEBUG)
        if debug:
            self.log.debug("%s", describe_command(payload))
        try:
            rapdu = self.card.transmit(payload)
            if not isinstance(rapdu, (bytes, bytearray, memoryview)):
                raise TypeError(f"card.transmit returned {type(rapdu).__name__}, not bytes")
            rapdu = bytes(rapdu)
            if not 2 <= len(rapdu) <= 0xFFFF:
                raise ValueError(f"card.transmit returned {len(rapdu)} bytes")
        except Exception:
            self.log.exception("card failed on an APDU; answering 6F00")
            rapdu = _SW_INTERNAL_ERROR
        self.apdus += 1
        if debug:
            self.log.debug("%s", describe_response(rapdu))
        return rapdu

    def _handle_with_faults(self, payload: bytes, faults: FaultPlan) -> bytes:
        """An APDU while a fault is set: the plan decides; the card may leave or the link break."""
        self.log.debug("%s", describe_command(payload))
        try:
            outcome = faults.run(self.card, payload, self._log_fault)
        except CardLeft:
            self.remove_card()
            raise _Interrupted from None  # closes the connection: no answer, the reader is empty
        except LinkBroken:
            raise _LinkFault from None
        except Exception:
            self.log.exception("card failed on an APDU; answering 6F00")
            return _SW_INTERNAL_ERROR
        self.apdus += 1
        self.log.debug("%s", describe_response(outcome.rapdu))
        if outcome.leave_after:
            self.remove_card()  # the answer goes out first: the loop then closes the connection
        return outcome.rapdu

    def _log_fault(self, line: str) -> None:
        # a latency fires on every APDU: shown with -v; the others always
        self.log.log(logging.INFO if line.startswith("fault latency#") else logging.WARNING, "%s", line)

    def _card_atr(self) -> bytes:
        try:
            atr = bytes(self.card.atr)
            if 2 <= len(atr) <= 33:
                return atr
            self.log.error("card ATR has %d bytes; sending the default ATR", len(atr))
        except Exception:
            self.log.exception("card failed to give its ATR; sending the default ATR")
        return DEFAULT_ATR

    def _card_call(self, name: str) -> None:
        try:
            getattr(self.card, name)()
        except Exception:
            self.log.exception("card.%s() failed", name)


# -- serving helpers -------------------------------------------------------------------------


@contextlib.contextmanager
def signal_control(bridges: Sequence[VpcdBridge]) -> Iterator[bool]:
    """Install SIGUSR1 = remove, SIGUSR2 = insert, SIGINT/SIGTERM = stop for ``bridges``.

    Only possible in the main thread; elsewhere nothing is installed and the context yields
    False. The previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def on_remove(signum: int, frame: object) -> None:
        for b in bridges:
            b.remove_card()

    def on_insert(signum: int, frame: object) -> None:
        for b in bridges:
            b.insert_card()

    def on_stop(signum: int, frame: object) -> None:
        for b in bridges:
            b.stop()

    wanted = {
        signal.SIGUSR1: on_remove,
        signal.SIGUSR2: on_insert,
        signal.SIGINT: on_stop,
        signal.SIGTERM: on_stop,
    }
    previous = {}
    try:
        for signum, handler in wanted.items():
            previous[signum] = signal.signal(signum, handler)
        yield True
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def serve(
    card: Card,
    host: str = "127.0.0.1",
    port: int = VPCD_PORT,
    *,
    install_signals: bool = True,
    logger: logging.Logger | None = None,
    faults: FaultPlan | None = None,
) -> None:
    """Serve ``card`` on one vpcd slot until SIGINT/SIGTERM (blocking; does not close the card),
    carrying out the fault plan ``faults`` when given."""
    bridge = VpcdBridge(card, host, port, logger=logger, faults=faults)
    try:
        with signal_control([bridge]) if install_signals else contextlib.nullcontext():
            bridge.serve_forever()
    finally:
        bridge.close()


def start_many(
    cards: Iterable[tuple[Card, int]],
    host: str = "127.0.0.1",
    *,
    logger: logging.Logger | None = None,
) -> list[tuple[VpcdBridge, threading.Thread]]:
    """Start one bridge thread per ``(card, port)``; stop each bridge, join, close when done."""
    started: list[tuple[VpcdBridge, threading.Thread]] = []
    for card, port in cards:
        bridge = VpcdBridge(card, host, port, logger=logger)
        started.append((bridge, bridge.start()))
    return started


def serve_many(
    cards: Iterable[tuple[Card, int]],
    host: str = "127.0.0.1",
    *,
    install_signals: bool = True,
    logger: logging.Logger | None = None,
    faults: Sequence[FaultPlan | None] = (),
) -> None:
    """Serve several cards (one per vpcd slot, one thread each) until SIGINT/SIGTERM; the
    n-th card carries out the n-th fault plan of ``faults`` when there is one.

    The signals act on every bridge (SIGUSR1 removes all cards, SIGUSR2 inserts them).
    """
    # Every bridge exists before the signal handlers do: a signal that comes early still
    # reaches all of them.
    plans = list(faults)
    bridges = [VpcdBridge(card, host, port, logger=logger, faults=plans[i] if i < len(plans) else None)
               for i, (card, port) in enumerate(cards)]
    threads: list[threading.Thread] = []
    try:
        with signal_control(bridges) if install_signals else contextlib.nullcontext():
            threads = [bridge.start() for bridge in bridges]
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.25)
    finally:
        for bridge in bridges:
            bridge.stop()
        for thread in threads:
            thread.join()
        for bridge in bridges:
            bridge.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m card_emulator.vpcd``: serve MinimalCards (answer 9000) on vpcd slots."""
    parser = argparse.ArgumentParser(
        prog="python -m card_emulator.vpcd",
        description="Serve a minimal software card (every APDU answers 9000) through vpcd. "
        "SIGUSR1 removes the card, SIGUSR2 inserts it, SIGINT/SIGTERM stop.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, action="append", help=f"vpcd port (repeatable; default {VPCD_PORT})"
    )
    parser.add_argument("--atr", default=DEFAULT_ATR.hex(), help="ATR in hex")
    parser.add_argument("--fill-le", action="store_true",
                        help="answer a case-2 command with Le zero bytes (READ BINARY floor)")
    args = parser.parse_args(argv)
    ports = args.port or [VPCD_PORT]
    atr = bytes.fromhex(args.atr)
    if len(ports) == 1:
        serve(MinimalCard(atr, fill_le=args.fill_le), args.host, ports[0])
    else:
        serve_many([(MinimalCard(atr, fill_le=args.fill_le), p) for p in ports], args.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
