"""PC/SC transport: talk to a card in a real reader (or the emulator behind pcscd + vpcd).

Usage::

    from jpki.transport.pcsc import PcscTransport, list_readers

    list_readers()                          # ['Virtual PCD 00 00', 'Virtual PCD 00 01', ...]
    with PcscTransport() as t:              # first reader that holds a card
        rapdu = t.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))
    with PcscTransport("Virtual PCD 00 01", wait=5, exclusive=True) as t:
        ...                                 # reader by (case-insensitive) substring; wait
                                            # up to 5 s for a card; no other program may share it

Reader selection: with ``reader=None`` the first reader holding a card; otherwise an exact
name match, else the first reader whose name contains ``reader`` (case-insensitive). With
``wait > 0`` the constructor waits that long for a matching reader and a card (readers may
be plugged in, cards inserted); then ``NoReaderError`` (no (matching) reader) or
``NoCardError`` (readers, but no card).

Protocol: T=1 (the My Number Card is T=1); if the reader refuses a T=1-only connect
(``SCARD_E_PROTO_MISMATCH``) the transport retries with T=0|T=1 and uses what the reader
negotiated. Sharing: shared by default, ``exclusive=True`` for ``SCARD_SHARE_EXCLUSIVE``.

Errors: every PC/SC failure becomes a :class:`jpki.errors.TransportError` subclass:
``NoReaderError`` (pcscd not running, no reader, no matching reader, reader gone),
``NoCardError`` (no card after waiting, no card on reconnect), ``CardRemovedError`` (the card
left during the session), ``ReaderBusyError`` (sharing violation), plain ``TransportError``
otherwise. ``SCARD_W_RESET_CARD`` (another program reset the card) is handled by reconnecting
without a further reset and retrying the command once; ``card_resets`` counts these, since the
card's security state (verified PINs, selected application) is gone after a reset.

Closing: ``close()`` resets the card by default (``reset_on_close=True``) so that a verified
PIN does not outlive the session for the next PC/SC client (pcscd itself only powers the card
down ~0.5 s after its last client leaves). Pass ``reset_on_close=False`` to leave it as is.

pyscard is optional (``pip install 'jpki[pcsc]'``) and imported on first use only.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from jpki.errors import (
    CardRemovedError,
    NoCardError,
    NoReaderError,
    ReaderBusyError,
    TransportError,
)
from jpki.transport.base import TransportBase

__all__ = ["PCSC_ERRORS", "PcscTransport", "list_readers", "pcsc_error", "transmit_error"]

_PYSCARD_MISSING = "pcsc card URIs need pyscard: pip install 'jpki[pcsc]'"
_PNP_NOTIFICATION = "\\\\?PnP?\\Notification"
# Time allowed to pcscd to notice that a card which stopped answering has gone (vpcd polls
# presence every ~400 ms; USB readers report removal at once).
_REMOVAL_GRACE = 1.0

_scard: ModuleType | None = None


def _load() -> ModuleType:
    """Import ``smartcard.scard`` on first use."""
    global _scard
    if _scard is None:
        try:
            from smartcard import scard
        except ImportError as exc:
            raise TransportError(_PYSCARD_MISSING) from exc
        _scard = scard
    return _scard


def _code(hresult: int) -> int:
    return hresult & 0xFFFFFFFF


#: The PC/SC result codes jpki tells apart, by their winscard.h names: the value (the same in
#: pcsc-lite, Windows and macOS) and pcsc-lite's wording (``SCardGetErrorMessage``). The errors
#: below are built from these alone, so that an emulated reader error (``jpki.transport.emu``)
#: raises exactly what a real reader's does.
PCSC_ERRORS: dict[str, tuple[int, str]] = {
    "SCARD_F_INTERNAL_ERROR": (0x80100001, "Internal error."),
    "SCARD_E_INVALID_HANDLE": (0x80100003, "Invalid handle."),
    "SCARD_E_UNKNOWN_READER": (0x80100009, "Unknown reader specified."),
    "SCARD_E_TIMEOUT": (0x8010000A, "Command timeout."),
    "SCARD_E_SHARING_VIOLATION": (0x8010000B, "Sharing violation."),
    "SCARD_E_NO_SMARTCARD": (0x8010000C, "No smart card inserted."),
    "SCARD_E_PROTO_MISMATCH": (0x8010000F, "Card protocol mismatch."),
    "SCARD_F_COMM_ERROR": (0x80100013, "RPC transport error."),
    "SCARD_E_NOT_TRANSACTED": (0x80100016, "Transaction failed."),
    "SCARD_E_READER_UNAVAILABLE": (0x80100017, "Reader is unavailable."),
    "SCARD_E_NO_SERVICE": (0x8010001D, "Service not available."),
    "SCARD_E_SERVICE_STOPPED": (0x8010001E, "Service was stopped."),
    "SCARD_E_NO_READERS_AVAILABLE": (0x8010002E, "Cannot find a smart card reader."),
    "SCARD_W_UNRESPONSIVE_CARD": (0x80100066, "Card is unresponsive."),
    "SCARD_W_UNPOWERED_CARD": (0x80100067, "Card is unpowered."),
    "SCARD_W_RESET_CARD": (0x80100068, "Card was reset."),
    "SCARD_W_REMOVED_CARD": (0x80100069, "Card was removed."),
}
_C = {name: value for name, (value, _) in PCSC_ERRORS.items()}
_TEXTS = {value: text for value, text in PCSC_ERRORS.values()}
#: Transmit failures that mean "the card left" when the reader then shows no card (or another).
_MAYBE_REMOVED = {_C["SCARD_E_NOT_TRANSACTED"], _C["SCARD_F_COMM_ERROR"], _C["SCARD_W_UNRESPONSIVE_CARD"]}


def _describe(code: int, text: str | None = None) -> str:
    """``Transaction failed (0x80100016)``: the wording of a PC/SC code, with the code."""
    return f"{(text or _TEXTS.get(code) or 'PC/SC error').rstrip('. ')} (0x{code:08X})"


def _text(sc: ModuleType, hresult: int) -> str | None:
    try:
        return str(sc.SCardGetErrorMessage(hresult))
    except Exception:  # noqa: BLE001  # pragma: no cover - pyscard always has it; only the wording is lost
        return None


def _message(sc: ModuleType, hresult: int) -> str:
    return _describe(_code(hresult), _text(sc, hresult))


def _coded(exc: TransportError, code: int) -> TransportError:
    exc.pcsc_code = code
    return exc


def service_error(code: int, text: str | None = None) -> TransportError | None:
    """The error for a PC/SC code that means "no PC/SC service or reader at all", else None."""
    if code in (_C["SCARD_E_NO_SERVICE"], _C["SCARD_E_SERVICE_STOPPED"]):
        return _coded(NoReaderError(
            f"PC/SC service not available: {_describe(code, text)}; is pcscd running?"), code)
    if code == _C["SCARD_E_NO_READERS_AVAILABLE"]:
        return _coded(NoReaderError("no PC/SC reader found"), code)
    return None


def pcsc_error(code: int, reader: str, action: str, *, exclusive: bool = False,
               text: str | None = None) -> TransportError:
    """The jpki error for PC/SC code ``code`` when trying to ``action`` the card in ``reader``
    (``pcsc_code`` holds the code)."""
    service = service_error(code, text)
    if service is not None:
        return service
    msg = _describe(code, text)
    exc: TransportError
    if code == _C["SCARD_E_SHARING_VIOLATION"]:
        exc = ReaderBusyError(f"reader {reader!r} is in use by another program"
                              + (" (exclusive access requested)" if exclusive else ""))
    elif code == _C["SCARD_E_NO_SMARTCARD"]:
        exc = NoCardError(f"no card in {reader!r}")
    elif code == _C["SCARD_W_REMOVED_CARD"]:
        exc = CardRemovedError(f"the card was removed from {reader!r}")
    elif code in (_C["SCARD_E_UNKNOWN_READER"], _C["SCARD_E_READER_UNAVAILABLE"]):
        exc = NoReaderError(f"reader {reader!r} is not available: {msg}")
    elif code == _C["SCARD_W_UNRESPONSIVE_CARD"]:
        exc = TransportError(f"the card in {reader!r} does not respond: {msg}")
    elif code == _C["SCARD_W_UNPOWERED_CARD"]:
        exc = TransportError(f"the card in {reader!r} is not powered: {msg}")
    elif code == _C["SCARD_E_INVALID_HANDLE"]:
        exc = TransportError(f"the connection to {reader!r} is closed")
    else:
        exc = TransportError(f"cannot {action} the card in {reader!r}: {msg}")
    return _coded(exc, code)


def transmit_error(code: int, reader: str, *, card_left: bool = False, exclusive: bool = False,
                   text: str | None = None) -> TransportError:
    """The jpki error for a failed SCardTransmit: ``card_left`` says whether the reader showed
    no card (or another one) right after it."""
    if (card_left and code in _MAYBE_REMOVED) or code == _C["SCARD_E_NO_SMARTCARD"]:
        return _coded(CardRemovedError(f"the card was removed from {reader!r}"), code)
    return pcsc_error(code, reader, "talk to", exclusive=exclusive, text=text)


def _service_error(sc: ModuleType, hresult: int) -> TransportError | None:
    return service_error(_code(hresult), _text(sc, hresult))


class _Context:
    """An SCARDCONTEXT, released on close."""

    def __init__(self, sc: ModuleType) -> None:
        self.sc = sc
        hr, ctx = sc.SCardEstablishContext(sc.SCARD_SCOPE_USER)
        if hr != sc.SCARD_S_SUCCESS:
            raise _service_error(sc, hr) or TransportError(
                f"cannot establish a PC/SC context: {_message(sc, hr)}"
            )
        self.handle: Any = ctx

    def readers(self) -> list[str]:
        sc = self.sc
        hr, readers = sc.SCardListReaders(self.handle, [])
        if _code(hr) == _code(sc.SCARD_E_NO_READERS_AVAILABLE):
            return []
        if hr != sc.SCARD_S_SUCCESS:
            raise _service_error(sc, hr) or TransportError(
                f"cannot list PC/SC readers: {_message(sc, hr)}"
            )
        return list(readers)

    def states(self, readers: list[str], timeout: float) -> list[tuple[str, int, list[int]]]:
        """SCardGetStatusChange on ``readers`` from an unaware state (returns at once)."""
        sc = self.sc
        hr, states = sc.SCardGetStatusChange(
            self.handle, int(timeout * 1000), [(r, sc.SCARD_STATE_UNAWARE) for r in readers]
        )
        if hr != sc.SCARD_S_SUCCESS:
            if _code(hr) == _code(sc.SCARD_E_TIMEOUT):
                return []
            raise _service_error(sc, hr) or TransportError(
                f"cannot read the reader state: {_message(sc, hr)}"
            )
        return list(states)

    def wait_change(self, states: list[tuple[str, int]], timeout: float) -> None:
        """Block up to ``timeout`` seconds until one of ``states`` changes (or a reader appears)."""
        sc = self.sc
        if timeout <= 0:
            return
        hr, _ = sc.SCardGetStatusChange(self.handle, max(1, int(timeout * 1000)), states)
        if hr != sc.SCARD_S_SUCCESS and _code(hr) != _code(sc.SCARD_E_TIMEOUT):
            # Some pcsc-lite builds refuse the PnP pseudo reader; fall back to sleeping.
            service = _service_error(sc, hr)
            if service is not None and _code(hr) != _code(sc.SCARD_E_NO_READERS_AVAILABLE):
                raise service
            time.sleep(min(timeout, 0.1))

    def close(self) -> None:
        if self.handle is not None:
            try:
                self.sc.SCardReleaseContext(self.handle)
            finally:
                self.handle = None


def _match(readers: list[str], wanted: str | None) -> list[str]:
    if wanted is None:
        return list(readers)
    exact = [r for r in readers if r == wanted]
    if exact:
        return exact
    needle = wanted.casefold()
    return [r for r in readers if needle in r.casefold()]


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows (empty list when there are none).

    Raises ``NoReaderError`` when the PC/SC service is not available (pcscd not running) and
    ``TransportError`` when pyscard is missing.
    """
    ctx = _Context(_load())
    try:
        return ctx.readers()
    finally:
        ctx.close()


class PcscTransport(TransportBase):
    """A connection to the card in one PC/SC reader; see the module docstring."""

    def __init__(
        self,
        reader: str | None = None,
        *,
        wait: float = 0,
        exclusive: bool = False,
        reset_on_close: bool = True,
    ) -> None:
        self._sc = sc = _load()
        self._share = sc.SCARD_SHARE_EXCLUSIVE if exclusive else sc.SCARD_SHARE_SHARED
        self._exclusive = exclusive
        self._reset_on_close = reset_on_close
        self._hcard: Any = None
        self._closed = False
        self._protocol: int = 0
        self._atr = b""
        self._answered = False   # whether an exchange on this connection succeeded yet
        self.card_resets = 0
        """How often the card was found reset by another program (and reconnected)."""
        self._ctx = _Context(sc)
        try:
            self._reader = self._find_reader(reader, max(0.0, float(wait)))
            self._connect()
        except BaseException:
            self._ctx.close()
            raise

    # -- reader selection and connection ------------------------------------------------------

    def _find_reader(self, wanted: str | None, wait: float) -> str:
        sc = self._sc
        deadline = time.monotonic() + wait
        while True:
            readers = self._ctx.readers()
            candidates = _match(readers, wanted)
            states: list[tuple[str, int, list[int]]] = []
            if candidates:
                states = self._ctx.states(candidates, 0)
                for name, state, _atr in states:
                    if state & sc.SCARD_STATE_PRESENT and not state & sc.SCARD_STATE_MUTE:
                        return name
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Sleep until a reader's state changes or a reader is added, then look again.
            watch = [(name, state) for name, state, _ in states]
            watch.append((_PNP_NOTIFICATION, sc.SCARD_STATE_UNAWARE))
            self._ctx.wait_change(watch, min(remaining, 1.0))
        if not readers:
            raise NoReaderError("no PC/SC reader found" + (f" within {wait:g} s" if wait else ""))
        if not candidates:
            raise NoReaderError(
                f"no PC/SC reader matching {wanted!r}; readers: {', '.join(readers)}"
            )
        where = candidates[0] if len(candidates) == 1 else ", ".join(candidates)
        raise NoCardError(f"no card in {where}" + (f" after waiting {wait:g} s" if wait else ""))

    def _connect(self) -> None:
        sc = self._sc
        hr, hcard, protocol = sc.SCardConnect(
            self._ctx.handle, self._reader, self._share, sc.SCARD_PROTOCOL_T1
        )
        if _code(hr) == _code(sc.SCARD_E_PROTO_MISMATCH):
            hr, hcard, protocol = sc.SCardConnect(
                self._ctx.handle,
                self._reader,
                self._share,
                sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1,
            )
        if hr != sc.SCARD_S_SUCCESS:
            raise self._error(hr, "connect to")
        self._hcard = hcard
        self._protocol = protocol
        self._answered = False
        self._read_atr()

    def _read_atr(self) -> None:
        sc = self._sc
        hr, _name, _state, _proto, atr = sc.SCardStatus(self._hcard)
        if hr != sc.SCARD_S_SUCCESS:
            raise self._error(hr, "read the status of")
        self._atr = bytes(atr)

    def _error(self, hr: int, action: str) -> TransportError:
        """Map a PC/SC error code to a jpki TransportError."""
        return pcsc_error(_code(hr), getattr(self, "_reader", "?"), action,
                          exclusive=self._exclusive, text=_text(self._sc, hr))

    # -- public API ---------------------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def reader(self) -> str:
        return self._reader

    @property
    def protocol(self) -> str:
        """``"T=1"`` or ``"T=0"``: the protocol in use."""
        return "T=1" if self._protocol == self._sc.SCARD_PROTOCOL_T1 else "T=0"

    @property
    def description(self) -> str:
        mode = "exclusive" if self._exclusive else "shared"
        return f"PC/SC reader {self._reader!r} ({self.protocol}, {mode})"

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU, return the response APDU (data + SW1 SW2)."""
        if self._hcard is None:
            if self._closed:
                raise TransportError("the PC/SC transport is closed")
            raise CardRemovedError(
                f"no connection to the card in {self._reader!r}: call reconnect() once a card is in"
            )
        sc = self._sc
        hr, response = sc.SCardTransmit(self._hcard, self._protocol, list(apdu))
        if _code(hr) == _code(sc.SCARD_W_RESET_CARD):
            self.card_resets += 1
            self._reconnect(sc.SCARD_LEAVE_CARD)
            hr, response = sc.SCardTransmit(self._hcard, self._protocol, list(apdu))
        elif (_code(hr) == _code(sc.SCARD_E_NOT_TRANSACTED) and not self._answered
              and apdu[1:2] == b"\xa4" and not self._card_left(0)):
            # Right after a card is inserted, pcscd may still be powering it up and the first
            # exchange fails. Nothing has reached the card through this connection yet and a
            # SELECT changes nothing but the selection, so: reset it and send the SELECT again.
            self._reconnect(sc.SCARD_RESET_CARD)
            hr, response = sc.SCardTransmit(self._hcard, self._protocol, list(apdu))
        if hr == sc.SCARD_S_SUCCESS:
            self._answered = True
            if len(response) >= 2:
                return bytes(response)
            # vpcd answers "success, 0 bytes" when the card hung up mid-command.
            if self._card_left(_REMOVAL_GRACE):
                raise CardRemovedError(f"the card was removed from {self._reader!r}")
            raise TransportError(
                f"the card in {self._reader!r} answered {len(response)} bytes, no status word"
            )
        raise self._transmit_error(hr)

    def _transmit_error(self, hr: int) -> TransportError:
        code = _code(hr)
        left = code in _MAYBE_REMOVED and self._card_left(_REMOVAL_GRACE)
        return transmit_error(code, self._reader, card_left=left, exclusive=self._exclusive,
                              text=_text(self._sc, hr))

    def _card_left(self, grace: float) -> bool:
        """True when the reader shows no card, or another card, within ``grace`` seconds.

        pcsc-lite keeps a card event counter in the upper 16 bits of the reader state.
        """
        sc = self._sc
        deadline = time.monotonic() + grace
        try:
            states = self._ctx.states([self._reader], 0)
            if not states:
                return False
            first = states[0][1]
            while True:
                state = states[0][1]
                if not state & sc.SCARD_STATE_PRESENT or (state >> 16) != (first >> 16):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._ctx.wait_change([(self._reader, state)], remaining)
                states = self._ctx.states([self._reader], 0)
                if not states:
                    return False
        except TransportError:
            return False

    def reconnect(self, *, reset: bool = True, wait: float = 0) -> None:
        """Re-establish the connection; ``reset=True`` resets the card (clearing PIN state).

        Also the way back after ``CardRemovedError``: with ``wait > 0`` it waits that long
        for a card in the same reader; ``NoCardError`` when there is none.
        """
        if self._closed:
            raise TransportError("the PC/SC transport is closed")
        sc = self._sc
        disposition = sc.SCARD_RESET_CARD if reset else sc.SCARD_LEAVE_CARD
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                self._reconnect(disposition)
                return
            except NoCardError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                states = self._ctx.states([self._reader], 0)
                if states and states[0][1] & sc.SCARD_STATE_PRESENT:
                    time.sleep(min(remaining, 0.05))  # present but not ready yet
                else:
                    watch = [(self._reader, states[0][1] if states else sc.SCARD_STATE_UNAWARE)]
                    self._ctx.wait_change(watch, min(remaining, 1.0))

    def _reconnect(self, disposition: int) -> None:
        sc = self._sc
        if self._hcard is not None:
            hr, protocol = sc.SCardReconnect(
                self._hcard, self._share, sc.SCARD_PROTOCOL_T1, disposition
            )
            if _code(hr) == _code(sc.SCARD_E_PROTO_MISMATCH):
                hr, protocol = sc.SCardReconnect(
                    self._hcard,
                    self._share,
                    sc.SCARD_PROTOCOL_T0 | sc.SCARD_PROTOCOL_T1,
                    disposition,
                )
            if hr == sc.SCARD_S_SUCCESS:
                self._protocol = protocol
                self._answered = False
                self._read_atr()
                return
            if _code(hr) not in (
                _code(sc.SCARD_W_REMOVED_CARD),
                _code(sc.SCARD_E_NO_SMARTCARD),
                _code(sc.SCARD_E_INVALID_HANDLE),
                _code(sc.SCARD_E_READER_UNAVAILABLE),
            ):
                raise self._error(hr, "reconnect to")
            # The handle died with the card: drop it and connect afresh.
            sc.SCardDisconnect(self._hcard, sc.SCARD_LEAVE_CARD)
            self._hcard = None
        self._connect()

    def close(self) -> None:
        """Disconnect (resetting the card unless ``reset_on_close=False``) and release pcscd."""
        sc = self._sc
        self._closed = True
        try:
            if self._hcard is not None:
                hcard, self._hcard = self._hcard, None
                disposition = sc.SCARD_RESET_CARD if self._reset_on_close else sc.SCARD_LEAVE_CARD
                sc.SCardDisconnect(hcard, disposition)
        finally:
            self._ctx.close()

    def __repr__(self) -> str:
        state = "closed" if self._hcard is None else self.protocol
        return f"<PcscTransport {getattr(self, '_reader', '?')!r} {state}>"
