"""A tracing wrapper: logs every APDU as ``C> …`` / ``R< …`` with secrets and personal data redacted.

Redacted: the data of VERIFY and CHANGE REFERENCE DATA (PINs); READ BINARY answers from the
card-info and card-surface APs (My Number, basic 4 info) and from JPKI EF 0001 (the signing
certificate names the holder); any run of 12 ASCII digits anywhere (a My Number).
"""

from __future__ import annotations

import re
from typing import Callable

from .base import TransportBase, Transport

_JPKI_AID = bytes.fromhex("D392F000260100000001")
_PRIVATE_AIDS = {bytes.fromhex("D3921000310001010408"), bytes.fromhex("D3921000310001010402")}
_TWELVE_DIGITS = re.compile(rb"(?<![0-9])[0-9]{12}(?![0-9])")


def _hex(b: bytes) -> str:
    return b.hex(" ").upper()


class TracingTransport(TransportBase):
    def __init__(self, inner: Transport, sink: Callable[[str], None]) -> None:
        self.inner = inner
        self.sink = sink
        self._aid: bytes | None = None
        self._fid: int | None = None
        self._redacting = False  # the last READ BINARY was private: so is its GET RESPONSE chain

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def description(self) -> str:
        return self.inner.description

    def close(self) -> None:
        self.inner.close()

    def transmit(self, apdu: bytes) -> bytes:
        self.sink("C> " + self.redact_command(apdu))
        rapdu = self.inner.transmit(apdu)
        self.sink("R< " + self.redact_response(apdu, rapdu))
        return rapdu

    def redact_command(self, apdu: bytes) -> str:
        if len(apdu) >= 5 and apdu[1] in (0x20, 0x24) and len(apdu) > 5:
            return f"{_hex(apdu[:5])} <{len(apdu) - 5} bytes redacted>"
        if len(apdu) >= 5 and apdu[1] == 0xA4:
            data = apdu[5:5 + apdu[4]]
            if apdu[2] == 0x04:
                self._aid, self._fid = data, None
            elif apdu[2] == 0x02 and len(data) == 2:
                self._fid = int.from_bytes(data, "big")
        return _hex(_TWELVE_DIGITS.sub(lambda m: b"*" * 12, apdu))

    def redact_response(self, apdu: bytes, rapdu: bytes) -> str:
        data, sw = rapdu[:-2], rapdu[-2:]
        ins = apdu[1] if len(apdu) >= 4 else None
        if ins == 0xB0:
            fid = (apdu[2] & 0x1F) if apdu[2] & 0x80 else self._fid
            self._redacting = self._aid in _PRIVATE_AIDS or (self._aid == _JPKI_AID and fid == 0x0001)
        elif ins != 0xC0:  # GET RESPONSE continues the previous command's answer
            self._redacting = False
        if self._redacting and data:
            return f"<{len(data)} bytes redacted> {_hex(sw)}"
        return _hex(_TWELVE_DIGITS.sub(lambda m: b"*" * 12, data) + sw)
