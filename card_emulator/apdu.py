"""ISO 7816-4 command APDU parsing and status words, as the card sees them.

Every case (1, 2S/2E, 3S/3E, 4S/4E) is parsed; a malformed length raises ``CardStatus(6700)``
and never anything else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SW(enum.IntEnum):
    OK = 0x9000
    END_OF_FILE_WARNING = 0x6282
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    CHAINING_NOT_SUPPORTED = 0x6884
    COMMAND_INCOMPATIBLE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTHENTICATION_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    SM_DATA_OBJECTS_MISSING = 0x6987
    SM_NOT_SUPPORTED_69FC = 0x69FC
    WRONG_DATA = 0x6A80
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2_OFFSET = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00

    @staticmethod
    def tries_left(n: int) -> int:
        """``63Cx``: wrong PIN, x tries left."""
        return 0x63C0 | (n & 0x0F)


class CardStatus(Exception):
    """Raised by a command handler: the card answers this status word (with data only for
    warnings such as 6282)."""

    def __init__(self, sw: int, data: bytes = b"") -> None:
        super().__init__(f"{sw:04X}")
        self.sw = int(sw)
        self.data = data


@dataclass(frozen=True, slots=True)
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le field; otherwise the number of bytes expected (256/65536 for 00)
    extended: bool

    @property
    def p1p2(self) -> int:
        return (self.p1 << 8) | self.p2


def parse_command(apdu: bytes) -> Command:
    """Parse a command APDU of any ISO 7816-4 case; ``CardStatus(6700)`` if the length is malformed."""
    n = len(apdu)
    if n < 4:
        raise CardStatus(SW.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
    if n == 4:  # case 1
        return Command(cla, ins, p1, p2, b"", None, False)
    b5 = apdu[4]
    if n == 5:  # case 2S
        return Command(cla, ins, p1, p2, b"", b5 or 256, False)
    if b5 != 0:  # short Lc
        lc = b5
        if n == 5 + lc:  # case 3S
            return Command(cla, ins, p1, p2, bytes(apdu[5:]), None, False)
        if n == 6 + lc:  # case 4S
            return Command(cla, ins, p1, p2, bytes(apdu[5:5 + lc]), apdu[-1] or 256, False)
        raise CardStatus(SW.WRONG_LENGTH)
    # b5 == 0 and n >= 6: extended length
    if n == 7:  # case 2E
        le = (apdu[5] << 8) | apdu[6]
        return Command(cla, ins, p1, p2, b"", le or 65536, True)
    if n < 8:
        raise CardStatus(SW.WRONG_LENGTH)
    lc = (apdu[5] << 8) | apdu[6]
    if lc == 0:
        raise CardStatus(SW.WRONG_LENGTH)
    if n == 7 + lc:  # case 3E
        return Command(cla, ins, p1, p2, bytes(apdu[7:]), None, True)
    if n == 9 + lc:  # case 4E
        le = (apdu[-2] << 8) | apdu[-1]
        return Command(cla, ins, p1, p2, bytes(apdu[7:7 + lc]), le or 65536, True)
    raise CardStatus(SW.WRONG_LENGTH)


@dataclass(frozen=True, slots=True)
class ClassByte:
    proprietary: bool
    channel: int
    secure_messaging: bool
    chaining: bool


def parse_class(cla: int) -> ClassByte | None:
    """Decode CLA; None for a class this card does not speak (answer ``6E00``)."""
    if cla == 0xFF:
        return None
    top = cla & 0xE0
    if top in (0x00, 0x80):  # first interindustry / proprietary with the same layout
        return ClassByte(top == 0x80, cla & 0x03, bool(cla & 0x0C), bool(cla & 0x10))
    if top in (0x40, 0x60):  # further interindustry: channels 4-19, no SM beyond b6
        return ClassByte(False, 4 + (cla & 0x0F), bool(cla & 0x20), bool(cla & 0x10))
    return None
