"""``jpki visual``: the card-surface AP (券面事項確認AP), like jpki/myna's ``visual`` commands.

The face of the card as the chip holds it: the name and address as PNG images, the photo as
JPEG 2000, the birth date and sex as text. The AP opens with 照合番号A, which is the My Number:
it is read from the card-info AP with the card-info PIN (the holder's consent, as for
``jpki attrs``), used on the card and never shown. The name and address are only ever written
to the files the holder names.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..fileio import write_atomic
from ..session import CardInfoSession, SurfaceEntries, SurfaceSession
from ._common import Ctx, pass_ctx, pin_option
from .host import verify_pin

OUTPUT = click.Path(dir_okay=False, allow_dash=True, path_type=Path)


def read_entries(obj: Ctx, pin_value: str | None) -> SurfaceEntries:
    """The card-surface EF, opened by 照合番号A (the My Number read with the card-info PIN)."""
    with obj.card() as t:
        text = CardInfoSession(t)
        verify_pin(obj, text, "card", pin_value)
        number = text.read_my_number()
        surface = SurfaceSession(text.protocol)
        obj.confirm_try("Verifying the card-surface 照合番号A", surface.tries_left("surface_a"))
        surface.verify("surface_a", number)
        del number
        return surface.read_entries()


def write_output(obj: Ctx, data: bytes, output: Path, what: str) -> dict[str, str | int]:
    """``data`` to the file ``output`` (``-``: stdout, as raw bytes)."""
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        obj.emitted = True
        return {"what": what, "file": "-", "bytes": len(data)}
    write_atomic(output, data)
    return {"what": what, "file": str(output), "bytes": len(data)}


@click.group()
def visual() -> None:
    """The card-surface AP: the card's face as images (name, address, photo), birth date, sex.

    The card-info PIN opens it (the card reads its My Number, which is 照合番号A here; the number
    is never shown). Images go only to the files you name (``-o -``: stdout).

    \b
    Examples:
      jpki visual basic-info                 # AP id, version, issuing municipality (no PIN)
      jpki visual name -o name.png           # the name as printed on the card (PNG)
      jpki visual addr -o address.png
      jpki visual photo -o face.jp2          # JPEG 2000 (opj_decompress -i face.jp2 -o face.png)
      jpki visual birth
      echo 1234 | jpki visual sex            # the PIN from stdin (or --pin, or $JPKI_CARD_PIN)
      jpki visual read --name name.png --addr address.png --photo face.jp2   # all, one PIN
    """


@visual.command("basic-info")
@pass_ctx
def basic_info(obj: Ctx) -> None:
    """The AP's basic info (EF 0003, read without a PIN)."""
    with obj.card() as t:
        info = SurfaceSession(t).basic_info()
    d = info.to_json()
    obj.emit(d, lambda: f"AP id    {d['ap_id']}\nversion  {d['version']}\ncity     {d['city']}")


def _image_command(name: str, attribute: str, what: str, help_text: str) -> None:
    @visual.command(name, help=help_text)
    @click.option("-o", "--output", type=OUTPUT, required=True, help="the file to write ('-': stdout)")
    @pin_option("card")
    @pass_ctx
    def command(obj: Ctx, output: Path, pin_value: str | None) -> None:
        entries = read_entries(obj, pin_value)
        result = write_output(obj, getattr(entries, attribute), output, what)
        if result["file"] != "-":
            obj.emit(result, f"wrote the {what} ({result['bytes']} bytes) to {output}")


_image_command("name", "name_png", "name image", "The name as printed on the card (PNG).")
_image_command("addr", "address_png", "address image", "The address as printed on the card (PNG).")
_image_command("photo", "photo_jp2", "photo", "The face photo (JPEG 2000).")


@visual.command("birth")
@pin_option("card")
@pass_ctx
def birth(obj: Ctx, pin_value: str | None) -> None:
    """The birth date on the card's face."""
    entries = read_entries(obj, pin_value)
    obj.emit({"birth_date": entries.birth_date.isoformat()}, entries.birth_date.isoformat())


@visual.command("sex")
@pin_option("card")
@pass_ctx
def sex(obj: Ctx, pin_value: str | None) -> None:
    """The sex on the card's face."""
    entries = read_entries(obj, pin_value)
    value = entries.sex.name.lower()
    obj.emit({"sex": value}, value)


@visual.command("read")
@click.option("--name", "name_file", type=OUTPUT, help="write the name image (PNG) here")
@click.option("--addr", "address_file", type=OUTPUT, help="write the address image (PNG) here")
@click.option("--photo", "photo_file", type=OUTPUT, help="write the photo (JPEG 2000) here")
@pin_option("card")
@pass_ctx
def read(obj: Ctx, name_file: Path | None, address_file: Path | None, photo_file: Path | None,
         pin_value: str | None) -> None:
    """Everything at once (one PIN): the birth date, the sex, and the images you name files for."""
    if "-" in {str(f) for f in (name_file, address_file, photo_file) if f is not None}:
        raise click.UsageError("'visual read' writes files; use 'visual name|addr|photo -o -' for stdout")
    entries = read_entries(obj, pin_value)
    files = []
    for path, data, what in ((name_file, entries.name_png, "name image"),
                             (address_file, entries.address_png, "address image"),
                             (photo_file, entries.photo_jp2, "photo")):
        if path is not None:
            files.append(write_output(obj, data, path, what))
    d = {"birth_date": entries.birth_date.isoformat(), "sex": entries.sex.name.lower(),
         "card_expiry": entries.card_expiry.isoformat() if entries.card_expiry else None, "files": files}
    obj.emit(d, lambda: "\n".join([f"birth date   {d['birth_date']}", f"sex          {d['sex']}",
                                   f"card expiry  {d['card_expiry']}",
                                   *(f"wrote the {f['what']} ({f['bytes']} bytes) to {f['file']}" for f in files)]))


__all__ = ["visual"]
