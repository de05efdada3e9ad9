"""The 券面事項確認AP (card surface): 照合番号A/B, EF 0002's layout and images, EF 0003."""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
import zlib

import pytest
from card_support import alice_card_data, transport

from card_emulator import MyNumberCard, images
from card_emulator.content import SurfaceImages, municipality_of, surface_basic_info, surface_ef
from card_emulator.provision import create_card
from jpki.identity import Sex
from jpki.session import SurfaceSession
from jpki.testing.pcsc import unavailable

SEL_SURFACE = bytes.fromhex("00A4040C0AD3921000310001010402")
ALICE_NAME, ALICE_ADDRESS = "山田　花子", "東京都千代田区神田神保町３丁目２番地１"


def _tlvs(value: bytes) -> list[tuple[bytes, int, bytes]]:
    """(tag, offset in ``value``, value) for each TLV inside FF20."""
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


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """(width, height, greyscale pixels) of a PNG, decoded by Pillow."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        grey = im.convert("L")
        return grey.width, grey.height, grey.tobytes()


def _need_font() -> None:
    if images.cjk_font_path() is None:
        unavailable("no Japanese font (.ci/setup installs fonts-ipafont-gothic)")


# ----------------------------------------------------------------------------- layout
def test_surface_ef_layout_offsets_and_filler():
    imgs = images.placeholder_images()
    ef = surface_ef("19900415", "2", "20360415", bytes(256), b"\x90\x03\x01\x00\x01", imgs)
    assert ef[:2] == b"\xff\x20" and ef[2] == 0x82
    total = 5 + int.from_bytes(ef[3:5], "big")
    assert len(ef) % 256 == 0 and len(ef) >= total and set(ef[total:]) <= {0xFF}
    items = _tlvs(ef[5:total])
    assert [t for t, _, _ in items] == [bytes([0xDF, n]) for n in range(0x21, 0x2B)]
    offsets = items[0][2]
    # the offsets are absolute positions in the EF (the header is 5 bytes)
    assert [int.from_bytes(offsets[i:i + 2], "big") for i in range(0, len(offsets), 2)] == \
        [5 + start for _, start, _ in items[1:]]
    values = {t: v for t, _, v in items}
    assert values[b"\xdf\x22"] == b"19900415" and values[b"\xdf\x23"] == b"2"
    assert values[b"\xdf\x29"] == b"20360415"
    assert values[b"\xdf\x25"] == imgs.name_png and values[b"\xdf\x27"] == imgs.photo_jp2
    for tag in (b"\xdf\x25", b"\xdf\x26", b"\xdf\x2a"):
        png = values[tag]
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8])


def test_surface_ef_must_fit_short_read_binary_offsets():
    big = SurfaceImages(b"x" * 20000, b"y" * 13000, b"", b"")
    with pytest.raises(ValueError, match="over 32767"):
        surface_ef("19900415", "2", "20360415", bytes(256), b"", big)


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


# ----------------------------------------------------------------------------- EF 0003
def test_basic_info_ef_0003_is_free_and_names_the_municipality(emu_card):
    """What jpki/myna's ``visual basic-info`` reads (src/visual_ap.rs VisualAP::basic_info):
    the 4-byte AP id, a TLV it skips, a 1-byte version, the city as UTF-8."""
    t = emu_card.transmit
    assert t(SEL_SURFACE) == b"\x90\x00"
    assert t(bytes.fromhex("00A4020C020003")) == b"\x90\x00"
    r = t(bytes.fromhex("00B0000000"))
    assert r[-2:] == b"\x90\x00"
    city = "千代田区".encode()
    key_id = r[13:29]
    assert r[:-2] == (bytes.fromhex("FF402D DF410400010000 DF4210") + key_id + bytes.fromhex("DF430101 DF440C")
                      + city)
    assert r[:-2] == surface_basic_info(key_id, "千代田区")
    info = SurfaceSession(transport(emu_card)).basic_info()
    assert info.to_json() == {"ap_id": "00010000", "version": 1, "city": "千代田区"}


@pytest.mark.parametrize("address, city", [
    (ALICE_ADDRESS, "千代田区"), ("大阪府大阪市北区梅田２丁目４番９号", "大阪市"),
    ("北海道虻田郡倶知安町北１条東", "虻田郡倶知安町"), ("神奈川県横浜市中区", "横浜市"),
    ("どこでもない", "どこでもない"),
])
def test_municipality_of(address, city):
    assert municipality_of(address) == city


# ----------------------------------------------------------------------------- images
def test_name_and_address_images_render_the_holders_text():
    _need_font()
    w, h, pixels = _png_pixels(images.render_text_png(ALICE_NAME, images.NAME_SIZE))
    assert (w, h) == images.NAME_SIZE
    assert min(pixels) < 64 and max(pixels) == 255  # black text on white
    # different characters give different glyphs (a font without Japanese draws the same box)
    assert images.render_text_png("山田", (128, 48)) != images.render_text_png("川田", (128, 48))
    # a longer address is wrapped onto the second line, not cut
    _, _, addr = _png_pixels(images.render_text_png(ALICE_ADDRESS, images.ADDRESS_SIZE, lines=2))
    width = images.ADDRESS_SIZE[0]
    lower_half = addr[len(addr) // 2:]
    assert min(lower_half) < 64 and len(lower_half) == width * images.ADDRESS_SIZE[1] // 2


def test_card_surface_images_are_the_holders(emu_card):
    """Read through APDUs: the name and address PNGs show alice's text (they are what the renderer
    makes of it), the photo is a JPEG 2000 file, the security code a PNG."""
    _need_font()
    session = SurfaceSession(transport(emu_card))
    session.unlock_with_card_pin("1234")
    entries = session.read_entries()
    assert entries.birth_date.isoformat() == "1990-04-15" and entries.sex is Sex.FEMALE
    assert entries.name_png == images.render_text_png(ALICE_NAME, images.NAME_SIZE)
    assert entries.address_png == images.render_text_png(ALICE_ADDRESS, images.ADDRESS_SIZE, lines=2)
    assert entries.security_code_png == images.render_text_png("1357", images.CODE_SIZE)
    assert entries.photo_jp2.startswith(bytes.fromhex("0000000C6A5020200D0A870A"))
    assert "山田" not in repr(entries)


def _opj_decode(jp2: bytes, tmp_path) -> tuple[int, int]:
    """Decode with OpenJPEG's opj_decompress (Debian libopenjp2-tools); (width, height)."""
    tool = shutil.which("opj_decompress")
    if tool is None:
        unavailable("opj_decompress is not installed (.ci/setup installs libopenjp2-tools)")
    src, out = tmp_path / "photo.jp2", tmp_path / "photo.png"
    src.write_bytes(jp2)
    done = subprocess.run([tool, "-i", str(src), "-o", str(out)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0 and out.is_file(), done.stdout + done.stderr
    w, h, _ = _png_pixels(out.read_bytes())
    return w, h


def test_photo_is_a_synthetic_face_that_openjpeg_decodes(tmp_path):
    jp2 = images.render_photo_jp2(b"alice", "2")
    assert _opj_decode(jp2, tmp_path) == images.PHOTO_SIZE
    assert jp2 == images.render_photo_jp2(b"alice", "2")  # the same holder, the same face
    assert jp2 != images.render_photo_jp2(b"bob", "1")
    assert 1000 < len(jp2) < 12000


def test_placeholders_without_pillow_or_font_are_valid_images(monkeypatch, tmp_path, caplog):
    """No font, no Pillow: the card still answers, with blank images that decode."""
    def missing() -> None:
        raise images.ImagesUnavailable("Pillow is not installed")

    images.surface_images.cache_clear()
    monkeypatch.setattr(images, "_pillow", missing)
    try:
        got = images.surface_images("名前", "住所", "1234", "1", b"seed")
    finally:
        images.surface_images.cache_clear()
    assert got == images.placeholder_images()
    assert "blank placeholders: Pillow is not installed" in caplog.text
    assert _opj_decode(got.photo_jp2, tmp_path) == (8, 8)
    assert _png_pixels(got.name_png)[:2] == images.NAME_SIZE


# ----------------------------------------------------------------------------- laziness
def test_images_are_rendered_when_first_read_and_once_per_holder(home, tmp_path, monkeypatch):
    """Creating or opening a card renders nothing (card creation stays cheap); the first read
    of EF 0002 renders the holder's images, and another card of the same holder reuses them."""
    calls = []
    real = images.surface_images.__wrapped__

    def counting(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(images, "surface_images", functools.lru_cache(maxsize=8)(counting))
    create_card(tmp_path / "again", alice_card_data(home), None)
    cards = [MyNumberCard.open(home / "cards" / "alice"), MyNumberCard.open(tmp_path / "again")]
    assert calls == []
    for card in cards:
        session = SurfaceSession(transport(card))
        session.unlock_with_card_pin("1234")
        assert session.read_entries().sex is Sex.FEMALE
        card.close()
    assert calls == [ALICE_NAME]
