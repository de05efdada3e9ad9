"""The images of the card's face that the card-surface AP (券面事項確認AP) holds.

A real card keeps what is printed on its front as images: the name and the address as PNG, the
face photo as JPEG 2000, the security code as PNG (spec §4; AokiApp/jsapdu's
``schemaKenkakuEntries``). Clients write them to files (jpki/myna ``visual name|addr|photo``), so
the emulator renders the holder's actual text with a Japanese font found on the system
(``fonts-ipafont-gothic`` on Debian) and draws a synthetic face — an avatar, never a real
person's photo — that OpenJPEG decodes.

Rendering costs tens of milliseconds, so it is done lazily (when the card-surface EF is first
read, see ``card_emulator.card``) and cached per holder: a card that is never read this way costs
nothing, and a thousand cards of one persona render it once. Pillow is imported only here and
only then. Without Pillow or a CJK font the images are blank placeholders (valid PNG and JPEG
2000 still) and the log says why: the card itself never fails for want of a font.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import random
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from .content import SurfaceImages, blank_png

if TYPE_CHECKING:
    from PIL import ImageFont

log = logging.getLogger("card_emulator")

#: Where Debian and the usual distributions put a Japanese gothic font (checked in order;
#: fontconfig's ``fc-match :lang=ja`` is asked when none is there).
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
)

#: Canvas sizes (pixels, width × height) of the images; the real sizes are not public.
NAME_SIZE = (512, 48)
ADDRESS_SIZE = (512, 96)
CODE_SIZE = (96, 32)
PHOTO_SIZE = (192, 256)  # 3:4, like the photo on the card's face
#: JPEG 2000 compression ratio of the photo (lossy, ~4 KB for 192×256 RGB).
PHOTO_RATE = 36

#: The photo when Pillow is missing: an 8×8 grey JPEG 2000 (JP2 boxes + codestream) made once with
#: Pillow/OpenJPEG; OpenJPEG decodes it.
_GREY_JP2 = bytes.fromhex(
    "0000000c6a5020200d0a870a00000014667479706a703220000000006a7032200000002d6a70326800000016"
    "6968647200000008000000080001070700000000000f636f6c7201000000000011000000916a703263ff4fff"
    "510029000000000008000000080000000000000000000000080000000800000000000000000001070101ff52"
    "000c00000001000304040001ff5c000d4040484850484850484850ff64002500014372656174656420627920"
    "4f70656e4a5045472076657273696f6e20322e352e34ff90000a0000000000160001ff93cfb408044f808080"
    "ffd9"
)


class ImagesUnavailable(RuntimeError):
    """Pillow or a Japanese font is missing: the images cannot show the holder's text."""


@functools.cache
def cjk_font_path() -> str | None:
    """A font file with Japanese glyphs, or None: the candidates, then ``fc-match``."""
    for path in FONT_CANDIDATES:
        if os.path.isfile(path):
            return path
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        found = subprocess.run([fc_match, "-f", "%{file}", ":lang=ja"], capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found if found and os.path.isfile(found) else None


def _pillow() -> tuple[Any, Any, Any]:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImagesUnavailable("Pillow is not installed (pip install pillow)") from None
    return Image, ImageDraw, ImageFont


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    _, _, image_font = _pillow()
    path = cjk_font_path()
    if path is None:
        raise ImagesUnavailable("no Japanese font found (install fonts-ipafont-gothic)")
    # The basic layout engine: Japanese needs no shaping, and the result then does not depend
    # on whether libraqm is installed.
    font: ImageFont.FreeTypeFont = image_font.truetype(path, size, layout_engine=image_font.Layout.BASIC)
    return font


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, lines: int) -> list[str] | None:
    """``text`` broken into at most ``lines`` lines that fit ``width``; None if it cannot be."""
    out: list[str] = []
    rest = text
    while rest:
        if len(out) == lines:
            return None
        n = len(rest)
        while n > 1 and font.getlength(rest[:n]) > width:
            n -= 1
        if font.getlength(rest[:n]) > width:
            return None
        out.append(rest[:n])
        rest = rest[n:]
    return out


def render_text_png(text: str, size: tuple[int, int], *, lines: int = 1) -> bytes:
    """``text`` in black on white, greyscale PNG of ``size``, in the largest font size (at most
    what ``lines`` lines allow) that fits; :class:`ImagesUnavailable` without Pillow or a font."""
    image_mod, draw_mod, _ = _pillow()
    width, height = size
    margin = 4
    layout = None
    font_size = (height - 2 * margin) // lines
    while font_size >= 8:
        font = _font(font_size)
        layout = _wrap(text, font, width - 2 * margin, lines)
        if layout is not None:
            break
        font_size -= 2
    if layout is None:
        raise ImagesUnavailable(f"{len(text)} characters do not fit a {width}x{height} image")
    image = image_mod.new("L", size, 255)
    draw = draw_mod.Draw(image)
    line_height = (height - 2 * margin) // lines
    for i, line in enumerate(layout):
        draw.text((margin, margin + i * line_height + (line_height - font_size) // 2), line,
                  font=font, fill=0)
    return _png(image)


def render_photo_jp2(seed: bytes, sex_code: str = "9") -> bytes:
    """A drawn face (an avatar, not a photograph) in JPEG 2000, the same for the same seed."""
    image_mod, draw_mod, _ = _pillow()
    rng = random.Random(hashlib.sha256(seed).digest())
    width = PHOTO_SIZE[0]
    background = (rng.randrange(170, 235), rng.randrange(190, 240), rng.randrange(200, 250))
    skin = rng.choice([(241, 204, 177), (224, 182, 148), (198, 151, 116), (250, 220, 196)])
    hair = rng.choice([(30, 24, 20), (60, 40, 30), (95, 70, 50), (130, 130, 130)])
    clothes = (rng.randrange(20, 120), rng.randrange(30, 120), rng.randrange(60, 160))
    image = image_mod.new("RGB", PHOTO_SIZE, background)
    draw = draw_mod.Draw(image)
    cx = width // 2
    draw.ellipse((cx - 80, 190, cx + 80, 330), fill=clothes)  # shoulders
    draw.rectangle((cx - 16, 160, cx + 16, 200), fill=skin)  # neck
    long_hair = sex_code == "2" or (sex_code == "9" and rng.random() < 0.5)
    if long_hair:
        draw.rounded_rectangle((cx - 58, 50, cx + 58, 200), radius=40, fill=hair)
    draw.ellipse((cx - 48, 56, cx + 48, 176), fill=skin)  # face
    draw.chord((cx - 52, 44, cx + 52, 130), 180, 360, fill=hair)  # fringe
    eye_y = 112 + rng.randrange(-4, 5)
    for dx in (-20, 20):
        draw.ellipse((cx + dx - 5, eye_y - 4, cx + dx + 5, eye_y + 4), fill=(40, 30, 30))
    draw.arc((cx - 16, 132, cx + 16, 152), 20, 160, fill=(150, 70, 70), width=3)  # mouth
    out = io.BytesIO()
    image.save(out, "JPEG2000", quality_mode="rates", quality_layers=[PHOTO_RATE], irreversible=True)
    return out.getvalue()


@functools.lru_cache(maxsize=256)
def surface_images(name: str, address: str, security_code: str, sex_code: str,
                   photo_seed: bytes) -> SurfaceImages:
    """The four images of one holder's card face, rendered once per holder (cached)."""
    try:
        return SurfaceImages(
            name_png=render_text_png(name, NAME_SIZE),
            address_png=render_text_png(address, ADDRESS_SIZE, lines=2),
            photo_jp2=render_photo_jp2(photo_seed, sex_code),
            code_png=render_text_png(security_code, CODE_SIZE))
    except (ImagesUnavailable, OSError, ValueError) as exc:
        log.warning("card-surface images are blank placeholders: %s", exc)
        return placeholder_images()


def placeholder_images() -> SurfaceImages:
    """Blank images of the usual sizes (valid PNG and JPEG 2000), for when rendering cannot be done."""
    return SurfaceImages(name_png=blank_png(*NAME_SIZE), address_png=blank_png(*ADDRESS_SIZE),
                         photo_jp2=_GREY_JP2, code_png=blank_png(*CODE_SIZE))
