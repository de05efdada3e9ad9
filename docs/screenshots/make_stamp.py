"""The visible signature stamp of a PDF signed with the card, as ``stamp.png`` in this folder.

    python docs/screenshots/make_stamp.py [--out DIR]

Builds a throw-away home (test CA, alice's emulated card) at a fixed time (2026-11-27 12:00 in
Japan), signs a one-page PDF with ``jpki sign --pdf … --visible 1,300,40,560,150 --reason 承認
--location 東京都千代田区`` (through the library, the same code), and renders the stamp's corner
of the page with poppler's ``pdftoppm`` at 150 dpi. Needs poppler-utils and a Japanese font
(``fonts-ipafont-gothic``), as the stamp itself does (docs/signing.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO)]

from jpki.clock import FixedClock  # noqa: E402
from jpki.home import Home  # noqa: E402
from jpki.identity import SAMPLE_PERSONAS  # noqa: E402
from jpki.pki import TestCA  # noqa: E402
from jpki.provision import create_card  # noqa: E402
from jpki.session import JpkiSession  # noqa: E402
from jpki.sign import CardSigner  # noqa: E402
from jpki.sign.pdf import parse_visible, sign_pdf, simple_pdf  # noqa: E402
from jpki.transport import open_transport  # noqa: E402

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
BOX = (300, 40, 560, 150)  # points from the lower-left corner of an A4 page (595 x 842)
DPI = 150
MARGIN = 12  # points of page around the stamp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = Home(folder / "home")
        home.path.mkdir(mode=0o700)
        clock = FixedClock(NOW)
        TestCA.init(home.ca_dir, clock=clock, base_url="http://127.0.0.1:9").close()
        create_card(home, "alice", SAMPLE_PERSONAS["alice"], clock=clock)
        src = folder / "contract.pdf"
        src.write_bytes(simple_pdf("Purchase agreement"))
        signed = folder / "signed.pdf"
        with open_transport("emu:alice", home=home.path) as t:
            signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: "ABC123")
            sign_pdf(src, signed, signer, visible=parse_visible("1," + ",".join(map(str, BOX))),
                     reason="承認", location="東京都千代田区", clock=clock)
        x1, y1, x2, y2 = BOX
        scale = DPI / 72
        crop = [round((x1 - MARGIN) * scale), round((842 - y2 - MARGIN) * scale),
                round((x2 - x1 + 2 * MARGIN) * scale), round((y2 - y1 + 2 * MARGIN) * scale)]
        subprocess.run(["pdftoppm", "-png", "-singlefile", "-r", str(DPI), "-f", "1", "-l", "1",
                        "-x", str(crop[0]), "-y", str(crop[1]), "-W", str(crop[2]),
                        "-H", str(crop[3]), str(signed), str(out / "stamp")], check=True)
    print(f"  {out / 'stamp.png'}")


if __name__ == "__main__":
    main()
