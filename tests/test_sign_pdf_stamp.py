"""The visible stamp of a PDF signature (issue 13, part 5): the holder's name in Japanese, the
reason, the place and the signing time, in a Japanese font embedded as a subset. Checked with
poppler as a reader would see it: ``pdftoppm`` renders the page (the stamp is drawn), ``pdftotext``
gives the text back as Unicode, ``pdffonts`` shows the font embedded as a subset.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pyhanko")

from fontTools import subset, ttLib
from pyhanko.pdf_utils.reader import PdfFileReader
from sign_support import ALICE, SIGNED_AT, card_signer, make_pdf, validator

from jpki.clock import FixedClock
from jpki.sign.pdf import parse_visible, sign_pdf, verify_pdf
from jpki.sign.stamp import StampFontError, find_font, stamp_lines

BOX = "1,300,40,560,150"
POPPLER = ("pdftoppm", "pdftotext", "pdffonts")


@pytest.fixture(scope="module")
def font() -> Path:
    try:
        return find_font()
    except StampFontError:
        pytest.skip("no Japanese font (.ci/setup installs fonts-ipafont-gothic)")


@pytest.fixture(scope="module")
def poppler() -> None:
    missing = [tool for tool in POPPLER if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"poppler-utils not installed ({', '.join(missing)})")


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done


def _dark_pixels(pgm: bytes, box: tuple[int, int, int, int]) -> int:
    """Pixels darker than mid-grey inside ``box`` (x1, y1, x2, y2 from the top left) of a binary
    PGM (what ``pdftoppm -gray`` writes)."""
    magic, width, height, maxval, pixels = re.match(
        rb"(P5)\s+(\d+)\s+(\d+)\s+(\d+)\s(.*)", pgm, re.DOTALL).groups()  # type: ignore[union-attr]
    w, h, top = int(width), int(height), int(maxval)
    assert magic == b"P5" and top == 255 and len(pixels) == w * h
    x1, y1, x2, y2 = box
    return sum(1 for y in range(y1, y2) for x in range(x1, x2) if pixels[y * w + x] < 128)


@pytest.fixture(scope="module")
def stamped(template_home, tmp_path_factory, font) -> tuple[Path, Path]:
    """A PDF signed by alice's card with a visible stamp (reason, place), at SIGNED_AT."""
    folder = tmp_path_factory.mktemp("stamp")
    home = folder / "home"
    shutil.copytree(template_home, home)
    src = folder / "contract.pdf"
    src.write_bytes(make_pdf())
    out = folder / "signed.pdf"
    with card_signer(home) as signer:
        sign_pdf(src, out, signer, visible=parse_visible(BOX), reason="承認",
                 location="東京都千代田区", clock=FixedClock(SIGNED_AT))
    return home, out


def test_the_stamp_text_reads_back_as_unicode(stamped, poppler):
    home, out = stamped
    text = _run("pdftotext", "-enc", "UTF-8", str(out), "-").stdout.decode("utf-8")
    # SIGNED_AT is 04:00 UTC: 13:00 in Japan
    for expected in ("電子署名", f"署名者：{ALICE.name}", "理由：承認", "場所：東京都千代田区",
                     "日時：2026年11月27日 13:00 JST", "2026-11-27T13:00:00+09:00"):
        assert expected in text, (expected, text)
    assert "þÿ" not in text and "Digitally" not in text
    assert verify_pdf(out, validator=validator(home)).ok


def test_the_font_is_embedded_as_a_subset(stamped, poppler):
    _, out = stamped
    listing = _run("pdffonts", str(out)).stdout.decode("utf-8").splitlines()
    (row,) = [line for line in listing if "CID TrueType" in line]
    name, *_ = row.split()
    assert re.fullmatch(r"[A-Z]{6}\+\S+", name), name  # a subset's tag
    assert re.search(r"Identity-H\s+yes\s+yes\s+yes\s", row), row  # emb, sub, uni
    with open(out, "rb") as fh:
        reader = PdfFileReader(fh)
        widget = reader.root["/AcroForm"]["/Fields"][0].get_object()
        font = widget["/AP"]["/N"]["/Resources"]["/Font"]["/F1"]
        program = font["/DescendantFonts"][0]["/FontDescriptor"]["/FontFile2"]
        # a few kilobytes of glyphs, not the 6 MB of IPA Gothic
        assert len(program.data) < 40_000, len(program.data)
        # widths in thousandths of an em: a full-width glyph is 1000 wide, an ASCII one 500
        widths = [w for item in font["/DescendantFonts"][0]["/W"] if isinstance(item, list)
                  for w in item]
        assert set(widths) <= {500, 1000}, widths


def test_the_page_renders_with_the_stamp_drawn(stamped, poppler, tmp_path):
    _, out = stamped
    done = _run("pdftoppm", "-r", "72", "-gray", "-f", "1", "-l", "1", str(out))
    assert done.stderr == b""  # no font or syntax complaint
    # at 72 dpi a point is a pixel; the page is 842 high, the box 300..560 x 40..150 from below
    inside = _dark_pixels(done.stdout, (300, 842 - 150, 560, 842 - 40))
    beside = _dark_pixels(done.stdout, (40, 842 - 150, 290, 842 - 40))
    assert inside > 800 and beside == 0, (inside, beside)


def test_the_cli_draws_the_stamp(cli, tmp_path, font, poppler):
    src = tmp_path / "contract.pdf"
    src.write_bytes(make_pdf())
    out = tmp_path / "signed.pdf"
    r = cli("sign", "--pdf", str(src), "-o", str(out), "--visible", BOX, "--reason", "承認",
            input="ABC123\n")
    assert r.exit_code == 0, r.stderr
    text = _run("pdftotext", "-enc", "UTF-8", str(out), "-").stdout.decode("utf-8")
    assert ALICE.name in text and "理由：承認" in text and "2026年11月27日" in text


def test_a_missing_font_is_a_clear_error_before_the_pin(cli, tmp_path):
    src = tmp_path / "contract.pdf"
    src.write_bytes(make_pdf())
    out = tmp_path / "signed.pdf"
    r = cli("sign", "--pdf", str(src), "-o", str(out), "--visible", BOX,
            "--stamp-font", str(tmp_path / "none.ttf"))  # no PIN given: none is asked
    assert r.exit_code == 1 and not out.exists()
    assert "stamp font" in r.stderr and "no such file" in r.stderr
    assert "apt install fonts-ipafont-gothic" in r.stderr and r.stderr.count("\n") == 1
    with pytest.raises(StampFontError, match="no Japanese font"):
        find_font(candidates=(str(tmp_path / "nowhere.ttf"),))


def test_a_font_without_the_glyphs_is_refused(home, tmp_path, font):
    """A font that cannot draw the holder's name: refused with the characters it lacks."""
    latin = ttLib.TTFont(str(font), lazy=True)
    cut = subset.Subsetter(subset.Options())
    cut.populate(unicodes=range(0x20, 0x7F))
    cut.subset(latin)
    buffer = io.BytesIO()
    latin.save(buffer)
    ascii_font = tmp_path / "ascii.ttf"
    ascii_font.write_bytes(buffer.getvalue())
    src = tmp_path / "contract.pdf"
    src.write_bytes(make_pdf())
    with card_signer(home) as signer, pytest.raises(StampFontError) as info:
        sign_pdf(src, tmp_path / "out.pdf", signer, visible=parse_visible(BOX),
                 clock=FixedClock(SIGNED_AT), stamp_font=ascii_font)
    assert "電" in info.value.missing and "山" in info.value.missing
    assert "has no glyph for" in str(info.value) and not (tmp_path / "out.pdf").exists()


def test_stamp_lines_keep_each_value_on_one_line(home):
    with card_signer(home) as signer:
        lines = stamp_lines(signer.certificate, reason="承認\n(第2版)", location=None,
                            when=SIGNED_AT)
    assert lines == ["電子署名", f"署名者：{ALICE.name}", "理由：承認 (第2版)",
                     "日時：2026年11月27日 13:00 JST", "\u3000\u3000\u30002026-11-27T13:00:00+09:00"]
