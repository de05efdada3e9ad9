"""APDU encoding and the one place where status words become exceptions."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import (
    CardError,
    ConditionsNotSatisfiedError,
    FileNotFoundOnCardError,
    IncorrectParametersError,
    NotSupportedError,
    PinBlockedError,
    PinIncorrectError,
    ProtocolError,
    SecurityStatusError,
    WrongLengthError,
)
from .transport.base import Transport

SW_OK = 0x9000

_SW_ERRORS: dict[int, tuple[type[CardError], str]] = {
    0x6700: (WrongLengthError, "wrong length"),
    0x6982: (SecurityStatusError, "security status not satisfied (PIN not verified)"),
    0x6983: (PinBlockedError, "authentication method blocked"),
    0x6984: (PinBlockedError, "PIN is blocked"),
    0x6985: (ConditionsNotSatisfiedError, "conditions of use not satisfied"),
    0x6986: (ConditionsNotSatisfiedError, "no current EF"),
    0x6A82: (FileNotFoundOnCardError, "file or application not found"),
    0x6A86: (IncorrectParametersError, "incorrect P1/P2"),
    0x6A88: (FileNotFoundOnCardError, "referenced data not found"),
    0x6B00: (IncorrectParametersError, "offset outside the EF"),
    0x6D00: (NotSupportedError, "instruction not supported"),
    0x6E00: (NotSupportedError, "class not supported"),
}


def encode(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """Build a command APDU, short form when it fits, extended otherwise."""
    if len(data) > 65535 or (le is not None and not 0 <= le <= 65536):
        raise ValueError("APDU data or Le out of range")
    extended = len(data) > 255 or (le is not None and le > 256)
    out = bytearray((cla, ins, p1, p2))
    if extended:
        if data:
            out += b"\x00" + len(data).to_bytes(2, "big") + data
        if le is not None:
            out += (b"" if data else b"\x00") + (le % 65536).to_bytes(2, "big")
    else:
        if data:
            out += bytes([len(data)]) + data
        if le is not None:
            out += bytes([le % 256])
    return bytes(out)


def raise_for_sw(sw: int) -> None:
    """Raise the typed exception for a status word other than 9000."""
    if sw == SW_OK:
        return
    if sw & 0xFFF0 == 0x63C0:
        tries = sw & 0x0F
        if tries == 0:
            raise PinIncorrectError(sw, 0, "wrong PIN: the PIN is now blocked")
        raise PinIncorrectError(sw, tries)
    cls, message = _SW_ERRORS.get(sw, (CardError, f"card returned status word {sw:04X}"))
    raise cls(sw, f"{message} ({sw:04X})")


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw: int


class ApduProtocol:
    """Sends APDUs over a Transport: GET RESPONSE chaining (61xx), Le retry (6Cxx), SW checks."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    #: GET RESPONSE rounds before a card that keeps answering 61xx is called broken (64 KiB).
    MAX_GET_RESPONSE = 256

    def _exchange(self, apdu: bytes) -> tuple[bytes, int]:
        rapdu = self.transport.transmit(apdu)
        if len(rapdu) < 2:
            raise ProtocolError(f"response of {len(rapdu)} bytes has no status word")
        return rapdu[:-2], int.from_bytes(rapdu[-2:], "big")

    def send_raw(self, apdu: bytes) -> Response:
        """Send and return data + SW without raising on the SW (after 61xx/6Cxx handling)."""
        data, sw = self._exchange(apdu)
        if sw >> 8 == 0x6C and len(apdu) == 5:  # wrong Le: resend once with the exact one
            data, sw = self._exchange(apdu[:4] + bytes([sw & 0xFF]))
            if sw >> 8 == 0x6C:
                raise ProtocolError("the card asked for another Le twice (6Cxx)")
        chunks = [data]
        rounds = 0
        while sw >> 8 == 0x61:
            rounds += 1
            if rounds > self.MAX_GET_RESPONSE:
                raise ProtocolError("the card keeps answering 61xx (GET RESPONSE without end)")
            # GET RESPONSE is inter-industry: CLA 0x with the command's logical channel.
            data, sw = self._exchange(bytes((apdu[0] & 0x03, 0xC0, 0, 0, sw & 0xFF)))
            chunks.append(data)
        return Response(b"".join(chunks), sw)

    def send(self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
             le: int | None = None) -> bytes:
        """Send one command; return its data or raise the SW's exception."""
        response = self.send_raw(encode(cla, ins, p1, p2, data, le))
        raise_for_sw(response.sw)
        return response.data
