"""The in-process emulated card (``emu:NAME``). The one module of jpki that imports card_emulator.

Faults (``card_emulator.faults``, docs/faults.md): every emulated card of a folder has one
fault plan in this process, :func:`card_faults`, shared by every :class:`EmulatorTransport`
opened on it (``transport.faults``). The transport carries it out and raises what the PC/SC
transport raises for the same event: ``CardRemovedError`` once the card left (until
:meth:`EmulatorTransport.reconnect` after ``faults.insert()``), ``NoCardError`` when opening a card
that is out, a reader error with its PC/SC code (:func:`jpki.transport.pcsc.transmit_error`).
Each fault that fires goes to the transport's listeners (:meth:`EmulatorTransport.add_listener`;
the tracing wrapper prints it). A served card's plan is reached with :func:`served_faults`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..errors import CardRemovedError, CardStateError, FaultControlError, NoCardError, UsageError
from .base import TransportBase

if TYPE_CHECKING:
    from card_emulator import CardFiles, MyNumberCard
    from card_emulator.faults import Fault, ServedFaults
    from card_emulator.faults import FaultPlan as FaultPlan  # re-exported for jpki.testing's annotations

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: PINs that ``jpki card reset-pin`` can reset (and so repair).
_RESETTABLE_PINS = ("auth", "sign", "card")


@contextlib.contextmanager
def card_files(directory: Path) -> Iterator[None]:
    """Turn the emulator's "damaged card file" into a one-line jpki error that says what to do."""
    from card_emulator.state import CardStateError as Damaged

    try:
        yield
    except Damaged as exc:
        directory = Path(directory)
        name = directory.name
        if exc.path.name == "state.json" and exc.pin in _RESETTABLE_PINS:
            advice = (f"restore it from a backup, or reset that PIN with "
                      f"'jpki card reset-pin {name} {exc.pin} --new-pin NEW'")
        elif exc.path.name == "state.json":
            advice = "restore it from a backup; until then the card does not open"
        else:
            advice = (f"restore the card directory {directory} from a backup, or move it away and "
                      f"create the card again with 'jpki card create {name}'")
        raise CardStateError(str(exc.path), exc.reason,
                             f"damaged card file {exc.path} ({CardStateError.code}): {exc.reason}; "
                             f"{advice}", exc.pin) from None


def cards_dir(home: Path) -> Path:
    return Path(home) / "cards"


def card_path(home: Path, name: str) -> Path:
    """Where the emulated card NAME lives under a jpki home (a path is taken as it is)."""
    if "/" in name or name.startswith("."):
        return Path(name)
    return cards_dir(home) / name


#: The fault plan of each emulated card folder in this process (see :func:`card_faults`).
_PLANS: dict[str, FaultPlan] = {}
_PLANS_LOCK = threading.Lock()


def card_faults(directory: str | os.PathLike[str]) -> FaultPlan:
    """The fault plan of the emulated card in ``directory`` for this process: set faults on it
    (``remove_on_signature()``, ``status_word(0x6A82, match="read-binary")``, ``insert()``…)
    and every :class:`EmulatorTransport` of that card, open or opened later, carries them out."""
    key = os.path.abspath(directory)
    plan = _PLANS.get(key)
    if plan is None:
        from card_emulator.faults import FaultPlan

        with _PLANS_LOCK:
            plan = _PLANS.setdefault(key, FaultPlan())
    return plan


def forget_card_faults(directory: str | os.PathLike[str]) -> None:
    """Clear and drop the fault plan of the card in ``directory`` (a test's teardown)."""
    with _PLANS_LOCK:
        plan = _PLANS.pop(os.path.abspath(directory), None)
    if plan is not None:
        plan.clear()


class EmulatorTransport(TransportBase):
    """Transmit straight into a software card in this process: the card of ``directory``, or
    ``card`` (a copy in memory of that directory's card, see :class:`CardCopies`)."""

    def __init__(self, directory: str | os.PathLike[str], *, card: MyNumberCard | None = None) -> None:
        from card_emulator import MyNumberCard

        directory = Path(directory)
        self.directory = directory
        self._faults = card_faults(directory)
        if not self._faults.present:
            raise NoCardError(self._out_of_reader())
        self._removals = self._faults.removals
        self._listeners: list[Callable[[str], None]] = []
        if card is None:
            if not (directory / "card.json").is_file():
                raise NoCardError(f"no emulated card at {directory} (create one with 'jpki card create')")
            with card_files(directory):
                card = MyNumberCard.open(directory)
        self.card = card
        self.card.power_on()

    @property
    def faults(self) -> FaultPlan:
        """This card's fault plan (:func:`card_faults`)."""
        return self._faults

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with one line for each fault that fires here (the trace)."""
        self._listeners.append(listener)

    def transmit(self, apdu: bytes) -> bytes:
        faults = self._faults
        if faults.armed or faults.removals != self._removals:  # no fault set: straight through
            return self._transmit_with_faults(apdu)
        return self.card.transmit(apdu)

    def _emit(self, line: str) -> None:
        for listener in self._listeners:
            listener(line)

    def _out_of_reader(self) -> str:
        why = self._faults.removed_by
        return (f"no card in the reader of {self.description}"
                + (f" ({why})" if why else "") + ": faults.insert() puts it back")

    def _transmit_with_faults(self, apdu: bytes) -> bytes:
        from card_emulator.faults import CardLeft, LinkBroken

        from .pcsc import PCSC_ERRORS, transmit_error

        faults = self._faults
        if faults.removals != self._removals:
            if faults.removed_by:
                self._emit(f"card out of the reader: {faults.removed_by}")
            raise CardRemovedError(f"the card was removed from the reader of {self.description}")
        try:
            outcome = faults.run(self.card, apdu, self._emit)
        except CardLeft:
            self._removals = -1  # this connection is over, whatever happens next
            raise CardRemovedError(f"the card was removed from the reader of {self.description}") from None
        except LinkBroken as broken:
            raise transmit_error(PCSC_ERRORS[broken.code][0], self.description) from None
        if outcome.leave_after:
            self.card.power_off()
        return outcome.rapdu

    def reconnect(self, *, reset: bool = True, wait: float = 0) -> None:
        """Connect again after the card left (as ``PcscTransport.reconnect``): the card powers
        up with a clear security state; ``NoCardError`` while it is out of its reader. ``reset``
        and ``wait`` are accepted for the PC/SC transport's signature (an emulated card is back
        the moment ``faults.insert()`` puts it back)."""
        if not self._faults.present:
            raise NoCardError(self._out_of_reader())
        self._removals = self._faults.removals
        self.card.power_on()

    @property
    def atr(self) -> bytes:
        return self.card.atr

    @property
    def description(self) -> str:
        return f"emulated card {self.directory.name}"

    def close(self) -> None:
        self.card.close()  # clears the security state, like a power-off, and lets go of its files


def _files_version(directory: Path) -> tuple[tuple[int, int, int], ...]:
    """What changes when a card directory's files do: each file's (mtime, size, inode) — the
    files are replaced whole, so a rewrite always moves one of them."""
    found = []
    for folder in (directory, directory / "keys"):
        with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and not entry.name.startswith("."):
                    st = entry.stat()
                    found.append((entry.name, (st.st_mtime_ns, st.st_size, st.st_ino)))
    return tuple(version for _, version in sorted(found))


class CardCopies:
    """Private copies in memory of emulated cards (the test cards of ``jpki idp serve``).

    :meth:`open` gives a transport to a new card that is the directory's card as it is now —
    same keys, certificates and PIN tries — but whose PIN tries and signatures never reach the
    directory. The files are read once and again only when they change (a renewal, a lost card's
    new state, a PIN reset), so a copy costs no disk work: no folder copied, nothing fsynced.
    Thread-safe."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[tuple[tuple[int, int, int], ...], CardFiles]] = {}
        self._lock = threading.Lock()

    def open(self, directory: str | os.PathLike[str]) -> EmulatorTransport:
        """A fresh in-memory copy of the card of ``directory``; :class:`NoCardError` when there
        is none, :class:`CardStateError` when its files are damaged."""
        from card_emulator import MyNumberCard

        directory = Path(directory)
        if not (directory / "card.json").is_file():
            raise NoCardError(f"no emulated card at {directory} (create one with 'jpki card create')")
        version = _files_version(directory)
        with self._lock:
            cached = self._files.get(directory)
        if cached is None or cached[0] != version:
            with card_files(directory):
                cached = (version, MyNumberCard.read_files(directory))
            with self._lock:
                self._files[directory] = cached
        with card_files(directory):
            card = cached[1].card()
        return EmulatorTransport(directory, card=card)


# --- card factory (used by provisioning and the CLI's admin commands) -------------------------

def card_profile_names() -> list[str]:
    """The built-in card profiles (card_emulator.profile.PROFILES), for ``--profile``."""
    from card_emulator.profile import PROFILES

    return list(PROFILES)


def card_profile(profile: str | dict[str, Any] | None) -> dict[str, Any]:
    """The settings of a card profile given by name (a built-in one) or as settings; UsageError
    if there is no such profile or a setting is wrong."""
    from card_emulator.profile import CardProfile, profile_named

    try:
        if profile is None or isinstance(profile, str):
            return profile_named(profile or "card").to_json()
        return CardProfile.from_json(profile).to_json()
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def create_emulated_card(directory: Path, *, durable: bool = True, **card_data: Any) -> Path:
    """Write a new emulated card; ``card_data`` are the fields of card_emulator's CardData
    (``pin_iterations`` among them), and ``profile``: a built-in profile's name or a profile's
    settings (default: the plastic card); ``durable=False``: no fsync (a throwaway test card)."""
    from card_emulator.profile import CardProfile
    from card_emulator.provision import CardData, create_card

    profile = CardProfile.from_json(card_profile(card_data.pop("profile", None)))
    return create_card(directory, CardData(**card_data), profile, durable=durable)


def reset_emulated_pin(directory: Path, pin: str, value: str | None = None) -> None:
    from card_emulator.provision import reset_pin

    with card_files(directory):
        reset_pin(directory, pin, value)


def replace_emulated_credentials(directory: Path, new: dict[str, tuple[Any, bytes]]) -> None:
    """New keys and certificates on an emulated card: ``{"sign"|"auth": (key, cert DER)}``."""
    from card_emulator.provision import replace_credentials

    with card_files(directory):
        replace_credentials(directory, new)


def emulated_card_info(directory: Path) -> dict[str, Any]:
    """Admin view of an emulated card: serial, profile, PIN tries (no secrets)."""
    from card_emulator import MyNumberCard

    with card_files(directory):
        card = MyNumberCard.open(directory)
    try:
        return {"serial": card.serial, "atr": card.atr.hex().upper(),
                "profile": card.profile.to_json(), "pins": card.pin_status()}
    finally:
        card.close()


# --- serving emulated cards through pcscd + vpcd ---------------------------------------------

VPCD_DEFAULT_HOST = "127.0.0.1"
VPCD_DEFAULT_PORT = 35963


def serve_emulated_cards(directories: list[Path], host: str = VPCD_DEFAULT_HOST,
                         port: int = VPCD_DEFAULT_PORT, *, ready: Any = None) -> None:
    """Serve cards on consecutive vpcd slots (port, port+1, …) until SIGINT/SIGTERM.

    SIGUSR1 pulls the cards out, SIGUSR2 inserts them again, SIGHUP applies the fault plans of
    their folders (``faults.json``, see :func:`served_faults`). ``ready`` is called once the
    cards are open and the signals are handled (before the first connection attempt).
    """
    from card_emulator import MyNumberCard
    from card_emulator.faults import FaultPlan, watching
    from card_emulator.vpcd import serve, serve_many

    cards = []
    for directory in directories:
        if not (Path(directory) / "card.json").is_file():
            raise NoCardError(f"no emulated card at {directory}")
        with card_files(directory):
            cards.append(MyNumberCard.open(directory))
    plans = [FaultPlan() for _ in cards]
    try:
        with watching(list(zip(plans, map(Path, directories), strict=True))) as watcher, \
                _on_signal(signal.SIGHUP, watcher.request):
            if ready is not None:
                ready()
            if len(cards) == 1:
                serve(cards[0], host, port, faults=plans[0])
            else:
                serve_many([(card, port + i) for i, card in enumerate(cards)], host, faults=plans)
    finally:
        for card in cards:
            card.close()


@contextlib.contextmanager
def _on_signal(signum: int, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` on ``signum`` (main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, lambda _signum, _frame: action())
    try:
        yield
    finally:
        signal.signal(signum, previous)


def served_faults(directory: str | os.PathLike[str], pid: int, *, timeout: float = 5.0) -> ServedCardFaults:
    """The fault verbs of the card of ``directory`` served by process ``pid`` (``jpki emulator
    serve``): the same verbs as :func:`card_faults`; each returns once that process applied it.
    Errors are jpki's: ``UsageError`` for a fault that cannot be set, ``FaultControlError``
    when the process does not take it."""
    from card_emulator.faults import ServedFaults

    def notify() -> None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise FaultControlError(f"the serving process {pid} is gone") from None

    return ServedCardFaults(ServedFaults(directory, notify, timeout=timeout))


class ServedCardFaults:
    """The fault verbs of a served card (:func:`served_faults`), with jpki's errors."""

    def __init__(self, inner: ServedFaults) -> None:
        self._inner = inner

    def _call(self, verb: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        from card_emulator.faults import FaultControlError as Unapplied
        from card_emulator.faults import FaultSpecError

        try:
            return verb(*args, **kwargs)
        except FaultSpecError as exc:
            raise UsageError(exc.reason) from None
        except Unapplied as exc:
            raise FaultControlError(str(exc)) from None
        except OSError as exc:
            raise FaultControlError(f"cannot write the fault plan: {exc}") from None

    def remove_after(self, n: int) -> Fault:
        return self._call(self._inner.remove_after, n)

    def remove_on_signature(self) -> Fault:
        return self._call(self._inner.remove_on_signature)

    def status_word(self, sw: int | str, match: str | int | None = None, times: int | None = 1) -> Fault:
        return self._call(self._inner.status_word, sw, match, times)

    def latency(self, ms: float | None = None, *, profile: str | None = None,
                bit_rate: int | None = None) -> Fault:
        return self._call(self._inner.latency, ms, profile=profile, bit_rate=bit_rate)

    def tear(self, during: str, *, after_write: bool = True) -> Fault:
        return self._call(self._inner.tear, during, after_write=after_write)

    def reader_error(self, code: str | None = None, *, match: str | int | None = None,
                     times: int | None = 1) -> Fault:
        return self._call(self._inner.reader_error, code, match=match, times=times)

    def clear(self) -> None:
        self._call(self._inner.clear)

    def describe(self) -> dict[str, Any]:
        return self._call(self._inner.describe)


def update_emulated_basic_info(directory: Path, **fields: Any) -> None:
    """Rewrite the card-info AP's basic 4 info (name, address, birth_date, sex_code, issuer_key)."""
    from card_emulator.provision import update_basic_info

    with card_files(directory):
        update_basic_info(directory, **fields)


class VpcdCardServer:
    """An emulated card plugged into one vpcd slot from a thread of this process (test
    fixtures): ``swap`` puts another card into the same slot without reconnecting — pcscd keeps
    seeing a card, and the new one starts powered on with a clear security state, as after a
    reset (a reconnection and pcscd noticing it cost ~0.8 s). ``stop`` pulls the card out and
    closes it."""

    def __init__(self, transport: EmulatorTransport, host: str = VPCD_DEFAULT_HOST,
                 port: int = VPCD_DEFAULT_PORT) -> None:
        from card_emulator.vpcd import VpcdBridge

        self.transport = transport
        self._bridge = VpcdBridge(transport.card, host, port)
        self._thread = self._bridge.start()

    @property
    def connected(self) -> bool:
        """True while the bridge holds its connection to vpcd."""
        return self._bridge.connected

    def swap(self, transport: EmulatorTransport) -> None:
        """Serve ``transport``'s card from now on; the previous card is closed."""
        old, self.transport = self.transport, transport
        self._bridge.card = transport.card
        old.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._bridge.stop()
        self._thread.join(timeout)
        self._bridge.close()
        self.transport.close()
