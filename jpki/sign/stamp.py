"""The visible signature stamp of a PDF signed with the card: what a Japanese reader expects.

pyHanko's default stamp writes its text in Courier, a PDF base font with no Japanese glyphs and
no Unicode encoding: a name from the signing certificate came out as ``þÿ`` and spaced bytes.
This stamp draws, in a font embedded as a subset (a few kilobytes: the glyphs of its text)::

    電子署名
    署名者：山田　花子
    理由：承認
    場所：東京都千代田区
    日時：2026年11月27日 12:00 JST
    　　　2026-11-27T12:00:00+09:00

The name is the holder's name from the signing certificate (JPKI puts it in the subject
alternative name; :func:`jpki.certinfo.signing_identity`), the time is the signing time (the
``/M`` of the signature), in Japan time and in ISO 8601. The text is extractable (a ToUnicode
map): ``pdftotext`` gives it back.

The font: ``font=`` (a TrueType/OpenType file, or a collection: its first face), else the first
of :data:`FONT_CANDIDATES` that exists (Debian's ``fonts-ipafont-gothic`` first). Without one,
or when the font lacks a glyph of the text, :class:`StampFontError` says what to install or
pass; nothing is signed. Before pyHanko sees it, the font is cut down to the stamp's characters
and scaled to 1000 units per em with fontTools: pyHanko writes glyph widths in font units
where PDF wants thousandths of an em, which spreads the glyphs of a 2048-unit font (IPA Gothic)
twice as wide as they are. The cut also keeps signing fast (the 6 MB font is never parsed whole).
"""

from __future__ import annotations

import datetime as _dt
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from fontTools import subset, ttLib
from fontTools.ttLib.scaleUpem import scale_upem
from pyhanko.pdf_utils import layout
from pyhanko.pdf_utils.font.api import FontEngineFactory
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStampStyle

from ..errors import JpkiError
from .report import identity_of

__all__ = ["FONT_CANDIDATES", "JST", "StampFontError", "find_font", "stamp_lines", "stamp_style"]

JST = _dt.timezone(_dt.timedelta(hours=9), "JST")

#: Where a Japanese font usually is, tried in order when no font is given: Debian/Ubuntu's
#: fonts-ipafont-gothic (what .ci/setup installs), its alternatives link, Fedora's IPA Gothic,
#: Noto Sans CJK (Debian fonts-noto-cjk), and macOS's Hiragino.
FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/ipa-gothic/ipag.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/ヒラギノ角ゴシック W3.ttc",
)

FONT_HINT = ("install a Japanese font (Debian/Ubuntu: apt install fonts-ipafont-gothic) or name "
             "a TrueType/OpenType font with Japanese glyphs (--stamp-font FILE, or $JPKI_STAMP_FONT)")

#: The stamp's look: a vermilion (朱色) frame, black text, 10 pt, shrunk to fit a small box.
BORDER_COLOR = (0.85, 0.2, 0.15)
FONT_SIZE = 10


class StampFontError(JpkiError):
    """No usable font for the visible stamp: none found, unreadable, or missing a glyph."""

    code = "stamp_font"

    def __init__(self, message: str, *, path: str | None = None,
                 missing: Sequence[str] = ()) -> None:
        self.path = path
        self.missing = tuple(missing)
        super().__init__(f"{message}: {FONT_HINT}")


def find_font(font: str | os.PathLike[str] | None = None,
              candidates: Sequence[str] = FONT_CANDIDATES) -> Path:
    """The stamp font: ``font`` if given (it must exist), else the first candidate that does."""
    if font is not None:
        path = Path(font)
        if not path.is_file():
            raise StampFontError(f"stamp font {path}: no such file", path=str(path))
        return path
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise StampFontError("no Japanese font for the visible stamp (looked for "
                         f"{', '.join(candidates)})")


def _holder(cert: x509.Certificate) -> str:
    """The signer's name: the JPKI holder's name, else the subject's common name."""
    ident = identity_of(cert)
    if ident is not None and ident.get("name"):
        return str(ident["name"])
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def stamp_lines(cert: x509.Certificate, *, reason: str | None, location: str | None,
                when: _dt.datetime) -> list[str]:
    """The stamp's text, one item per line (reason and location only when given)."""
    at = when.astimezone(JST)
    lines = ["電子署名", f"署名者：{_one_line(_holder(cert))}"]
    if reason:
        lines.append(f"理由：{_one_line(reason)}")
    if location:
        lines.append(f"場所：{_one_line(location)}")
    lines.append(f"日時：{at.year}年{at.month}月{at.day}日 {at:%H:%M} JST")
    lines.append(f"\u3000\u3000\u3000{at.isoformat(timespec='seconds')}")
    return lines


def _one_line(text: str) -> str:
    """A value on one line of the stamp (a line break in a reason would start a line of its own)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _subset_font(path: Path, text: str) -> bytes:
    """The font cut down to the glyphs of ``text`` and scaled to 1000 units per em."""
    try:
        font = ttLib.TTFont(str(path), lazy=True, fontNumber=0)
        cmap = font.getBestCmap() or {}
    except Exception as exc:  # noqa: BLE001 - fontTools raises many kinds for a bad file
        raise StampFontError(f"stamp font {path} cannot be read ({type(exc).__name__}: {exc})",
                             path=str(path)) from None
    wanted = sorted({ord(c) for c in text if c not in "\n"})
    missing = [chr(c) for c in wanted if c not in cmap]
    if missing:
        shown = " ".join(f"{c} (U+{ord(c):04X})" for c in missing[:8])
        raise StampFontError(f"stamp font {path} has no glyph for {shown}", path=str(path),
                             missing=missing)
    options = subset.Options()
    options.hinting = False          # instructions would not survive the scaling
    options.layout_features = ["*"]  # keep what HarfBuzz shapes with
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted)
    try:
        subsetter.subset(font)
        if font["head"].unitsPerEm != 1000:
            scale_upem(font, 1000)
        out = io.BytesIO()
        font.save(out)
    except Exception as exc:  # noqa: BLE001 - a font fontTools cannot cut or scale
        raise StampFontError(f"stamp font {path} cannot be subset ({type(exc).__name__}: {exc})",
                             path=str(path)) from None
    return out.getvalue()


class _SubsetFont(FontEngineFactory):
    """pyHanko's OpenType engine over a font already cut down (in memory, no open file left)."""

    def __init__(self, data: bytes, font_size: int) -> None:
        self.data = data
        self.font_size = font_size

    def create_font_engine(self, writer: Any, obj_stream: Any = None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs:
            obj_stream = writer.prepare_object_stream()
        return GlyphAccumulator(writer=writer, font_handle=io.BytesIO(self.data),
                                font_size=self.font_size, obj_stream=obj_stream)


def stamp_style(cert: x509.Certificate, *, reason: str | None = None,
                location: str | None = None, when: _dt.datetime,
                font: str | os.PathLike[str] | None = None) -> TextStampStyle:
    """The pyHanko stamp style of a visible signature by ``cert`` at ``when`` (see the module
    docstring). Raises :class:`StampFontError` when no font can draw the text."""
    lines = stamp_lines(cert, reason=reason, location=location, when=when)
    text = "\n".join(lines)
    data = _subset_font(find_font(font), text)
    engine = _SubsetFont(data, FONT_SIZE)
    return TextStampStyle(
        stamp_text=text.replace("%", "%%"),  # pyHanko interpolates %(name)s in the text
        text_box_style=TextBoxStyle(font=engine, font_size=FONT_SIZE, leading=FONT_SIZE + 3),
        border_width=2, border_color=BORDER_COLOR, background=None,
        inner_content_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MIN, y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins.uniform(6),
            inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT))
