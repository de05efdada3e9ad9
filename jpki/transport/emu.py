"""The in-process emulated card (``emu:NAME``). The one module of jpki that imports card_emulator."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CardStateError, NoCardError
from .base import TransportBase

if TYPE_CHECKING:
    from card_emulator import CardFiles, MyNumberCard

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


class EmulatorTransport(TransportBase):
    """Transmit straight into a software card in this process: the card of ``directory``, or
    ``card`` (a copy in memory of that directory's card, see :class:`CardCopies`)."""

    def __init__(self, directory: str | os.PathLike[str], *, card: MyNumberCard | None = None) -> None:
        from card_emulator import MyNumberCard

        directory = Path(directory)
        self.directory = directory
        if card is None:
            if not (directory / "card.json").is_file():
                raise NoCardError(f"no emulated card at {directory} (create one with 'jpki card create')")
            with card_files(directory):
                card = MyNumberCard.open(directory)
        self.card = card
        self.card.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)

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

def create_emulated_card(directory: Path, *, durable: bool = True, **card_data: Any) -> Path:
    """Write a new emulated card; ``card_data`` are the fields of card_emulator's CardData
    (``pin_iterations`` among them); ``durable=False``: no fsync (a throwaway test card)."""
    from card_emulator.profile import CardProfile
    from card_emulator.provision import CardData, create_card

    profile = card_data.pop("profile", None)
    if isinstance(profile, dict):
        profile = CardProfile.from_json(profile)
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

    SIGUSR1 pulls the cards out, SIGUSR2 inserts them again. ``ready`` is called once the
    cards are open (before the first connection attempt).
    """
    from card_emulator import MyNumberCard
    from card_emulator.vpcd import serve, serve_many

    cards = []
    for directory in directories:
        if not (Path(directory) / "card.json").is_file():
            raise NoCardError(f"no emulated card at {directory}")
        with card_files(directory):
            cards.append(MyNumberCard.open(directory))
    try:
        if ready is not None:
            ready()
        if len(cards) == 1:
            serve(cards[0], host, port)
        else:
            serve_many([(card, port + i) for i, card in enumerate(cards)], host)
    finally:
        for card in cards:
            card.close()


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
