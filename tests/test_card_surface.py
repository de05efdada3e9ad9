"""The 券面事項確認AP (card surface): 照合番号A/B and EF 0002's layout."""

from __future__ import annotations

import json
import zlib

from card_emulator.content import surface_ef

SEL_SURFACE = bytes.fromhex("00A4040C0AD3921000310001010402")


def _tlvs(value: bytes) -> list[tuple[bytes, int, bytes]]:
    """(tag, absolute offset in the EF, value) for each TLV inside FF20 (value starts at ``base``)."""
    out, pos = [], 0
    while pos < len(value):
        start = pos
        tag = value[pos:pos + 2]
        pos += 2
        first = value[pos]
        pos += 1
        if first == 0x82:
            length = int.from_bytes(value[pos:pos + 2], "big")
            pos += 2
        elif first == 0x81:
            length = value[pos]
            pos += 1
        else:
            length = first
        out.append((tag, start, value[pos:pos + length]))
        pos += length
    return out


def test_surface_ef_layout_and_offsets():
    ef = surface_ef("19900415", "2", "20360415", bytes(256), bytes(16))
    assert ef[:2] == b"\xff\x20" and ef[2] == 0x82
    base = 5
    items = _tlvs(ef[base:])
    tags = [t for t, _, _ in items]
    assert tags == [bytes([0xDF, n]) for n in range(0x21, 0x2B)]
    offsets = items[0][2]
    assert [int.from_bytes(offsets[i:i + 2], "big") for i in range(0, len(offsets), 2)] == \
        [base + start for _, start, _ in items[1:]]
    values = {t: v for t, _, v in items}
    assert values[b"\xdf\x22"] == b"19900415" and values[b"\xdf\x23"] == b"2"
    assert values[b"\xdf\x29"] == b"20360415"
    for tag in (b"\xdf\x25", b"\xdf\x26", b"\xdf\x2a"):
        png = values[tag]
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
        assert zlib.decompress(idat)  # a well-formed image stream
    assert values[b"\xdf\x27"].startswith(bytes.fromhex("0000000C6A5020200D0A870A"))


def test_surface_read_needs_verification_number_a_or_b(emu_card, home):
    holder = json.loads((home / "holders" / "alice.json").read_text())
    my_number = holder["persona"]["my_number"].encode()
    t = emu_card.transmit
    assert t(SEL_SURFACE) == b"\x90\x00"
    assert t(bytes.fromhex("00A4020C020002")) == b"\x90\x00"
    assert t(bytes.fromhex("00B0000002")) == b"\x69\x82"
    assert t(bytes.fromhex("002000930C") + my_number) == b"\x90\x00"
    assert t(bytes.fromhex("00B0000002")) == b"\xff\x20\x90\x00"
    t(SEL_SURFACE)  # re-selecting logs out
    assert t(bytes.fromhex("00B0820002")) == b"\x69\x82"
