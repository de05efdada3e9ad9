"""A tracing wrapper: logs every APDU as ``C> …`` / ``R< …`` with secrets and personal data redacted.

Redacted: the data of every PIN command (VERIFY, CHANGE / RESET RETRY COUNTER: the PINs); any run
of 12 ASCII digits anywhere (a My Number); and every answer to a read command except READ BINARY
of a JPKI AP file other than EF 0001 (the signing certificate names the holder). The card-info
and card-surface APs (My Number, basic 4 info), the 住基 AP and anything unknown are redacted.

The tracer's idea of the current application and EF follows what the card *did*, never what the
host asked for: a SELECT counts only once the card has answered it with success (9000/61xx); a
SELECT that failed with a checking error (67xx-6Exx) changed nothing; any other outcome, or a
command the tracer cannot parse or follow (other class byte, logical channel, chaining, selection
by path or "next occurrence"), leaves it not knowing where the card is, and then it redacts until
a SELECT it can follow succeeds. A wrong guess can only redact too much, never show too much.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import TransportError
from .base import Transport, TransportBase

_JPKI_AID = bytes.fromhex("D392F000260100000001")
_SIGN_CERT_FID = 0x0001
_TWELVE_DIGITS = re.compile(rb"(?<![0-9])[0-9]{12}(?![0-9])")
#: INS whose data field holds PINs: VERIFY (both forms), CHANGE REFERENCE DATA, RESET RETRY COUNTER.
_PIN_INS = {0x20, 0x21, 0x24, 0x2C}
#: INS that read files: READ BINARY (both forms), READ RECORD(S).
_READ_INS = {0xB0, 0xB1, 0xB2, 0xB3}
_GET_RESPONSE = 0xC0


class _Unknown:
    """Where the card is when the tracer cannot tell (a distinct value, never equal to an AID)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class _Command(NamedTuple):
    cla: int
    ins: int
    p1: int
    p2: int
    header_len: int  # bytes before the data field (4, 5 or 7)
    data: bytes


def parse_command(apdu: bytes) -> _Command | None:
    """Split a command APDU of any ISO 7816-4 case (1, 2S/2E, 3S/3E, 4S/4E); None if malformed."""
    n = len(apdu)
    if n < 4:
        return None
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n <= 5:  # case 1, case 2S
        return _Command(cla, ins, p1, p2, n, b"")
    if apdu[4]:  # short Lc: case 3S or 4S
        lc = apdu[4]
        if n in (5 + lc, 6 + lc):
            return _Command(cla, ins, p1, p2, 5, bytes(apdu[5:5 + lc]))
        return None
    if n == 7:  # case 2E
        return _Command(cla, ins, p1, p2, 7, b"")
    lc = int.from_bytes(apdu[5:7], "big")
    if lc and n in (7 + lc, 9 + lc):  # case 3E or 4E
        return _Command(cla, ins, p1, p2, 7, bytes(apdu[7:7 + lc]))
    return None


def _hex(b: bytes) -> str:
    return b.hex(" ").upper()


def _mask(b: bytes) -> bytes:
    return _TWELVE_DIGITS.sub(lambda m: b"*" * 12, b)


class TracingTransport(TransportBase):
    def __init__(self, inner: Transport, sink: Callable[[str], None]) -> None:
        self.inner = inner
        self.sink = sink
        #: the card's current application (AID) and EF (FID) as far as the card's answers show;
        #: None = none selected; UNKNOWN = cannot tell (redact).
        self._aid: bytes | _Unknown | None = None
        self._fid: int | _Unknown | None = None
        self._redacting = False  # the last read was private: so is its GET RESPONSE chain
        add_listener = getattr(inner, "add_listener", None)
        if callable(add_listener):  # an emulated card's faults
            add_listener(lambda event: self.sink("!! " + event))

    def __getattr__(self, name: str) -> Any:
        """What the traced transport has beyond the protocol (``reconnect``, ``faults``…)."""
        if name == "inner":  # not set yet (during __init__): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def description(self) -> str:
        return self.inner.description

    def close(self) -> None:
        self.inner.close()

    @property
    def position(self) -> tuple[bytes | _Unknown | None, int | _Unknown | None]:
        """(AID, FID) where the card is as far as its answers show: None = nothing selected,
        UNKNOWN = cannot tell (a recorder names a VERIFY's PIN from it)."""
        return self._aid, self._fid

    def transmit(self, apdu: bytes) -> bytes:
        self.sink("C> " + self.redact_command(apdu))
        try:
            rapdu = self.inner.transmit(apdu)
        except TransportError as exc:
            self.sink(f"R! {exc.code}: {exc}")
            raise
        self.sink("R< " + self.redact_response(apdu, rapdu))
        return rapdu

    def redact_command(self, apdu: bytes) -> str:
        """The command as traced. Pure: the tracer's state changes only with the card's answer."""
        apdu = bytes(apdu)
        if len(apdu) >= 2 and apdu[1] in _PIN_INS:
            cmd = parse_command(apdu)
            # unparseable: hide everything after the header, whatever it is
            head = cmd.header_len if cmd is not None else min(len(apdu), 5)
            if len(apdu) > head:
                return f"{_hex(apdu[:head])} <{len(apdu) - head} bytes redacted>"
        return _hex(_mask(apdu))

    def redact_response(self, apdu: bytes, rapdu: bytes) -> str:
        """The response as traced; also moves the tracer to where the card now is."""
        apdu, rapdu = bytes(apdu), bytes(rapdu)
        data, sw = rapdu[:-2], rapdu[-2:]
        cmd = parse_command(apdu)
        ins = apdu[1] if len(apdu) >= 2 else None
        if ins in _READ_INS:
            self._redacting = not self._shows_read(cmd)
            self._follow_read(cmd, sw)
        elif ins != _GET_RESPONSE:  # GET RESPONSE continues the previous command's answer
            self._redacting = False
        if ins == 0xA4:
            self._follow_select(cmd, sw)
        if self._redacting and data:
            return f"<{len(data)} bytes redacted> {_hex(sw)}"
        return _hex(_mask(data) + sw)

    # ------------------------------------------------------------------ following the card
    def _shows_read(self, cmd: _Command | None) -> bool:
        """True only for READ BINARY, on the basic channel, of a JPKI AP EF known not to be 0001."""
        if cmd is None or cmd.cla != 0x00 or cmd.ins != 0xB0 or self._aid != _JPKI_AID:
            return False
        if cmd.p1 & 0x80:  # short EF identifier: the EF is named in the command (FID 00xx)
            return not cmd.p1 & 0x60 and (cmd.p1 & 0x1F) != _SIGN_CERT_FID
        return isinstance(self._fid, int) and self._fid != _SIGN_CERT_FID

    def _follow_read(self, cmd: _Command | None, sw: bytes) -> None:
        """READ BINARY by short EF identifier makes that EF the current one (when it exists)."""
        if cmd is None or cmd.ins != 0xB0 or not cmd.p1 & 0x80:
            return
        if cmd.cla != 0x00:
            self._fid = UNKNOWN
        elif _success(sw) or sw in (b"\x62\x82", b"\x6b\x00", b"\x69\x82"):
            self._fid = cmd.p1 & 0x1F  # the card found the EF (then refused or read it)
        elif not _checking_error(sw):
            self._fid = UNKNOWN

    def _follow_select(self, cmd: _Command | None, sw: bytes) -> None:
        if cmd is not None and _checking_error(sw):
            return  # refused before anything was selected
        if cmd is None or cmd.cla != 0x00 or not _success(sw):
            # a SELECT the tracer cannot parse, on another channel or with SM, or one the card
            # answered with a warning or an internal error: the card may be anywhere now
            self._aid = self._fid = UNKNOWN
        elif cmd.p1 == 0x04 and cmd.p2 & 0x03 == 0x00 and cmd.data:  # first/only occurrence by AID
            self._aid, self._fid = cmd.data, None
        elif cmd.p1 == 0x02 and len(cmd.data) == 2 and self._aid is not UNKNOWN:  # EF under the DF
            self._fid = int.from_bytes(cmd.data, "big")
        else:  # MF, path, parent, next occurrence…: somewhere the tracer does not follow
            self._aid = self._fid = UNKNOWN


def _success(sw: bytes) -> bool:
    return sw == b"\x90\x00" or (len(sw) == 2 and sw[0] == 0x61)


def _checking_error(sw: bytes) -> bool:
    """67xx-6Exx: the card refused the command without executing it (ISO 7816-4 §5.6)."""
    return len(sw) == 2 and 0x67 <= sw[0] <= 0x6E
