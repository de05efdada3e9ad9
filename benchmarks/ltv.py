"""Verification time of a PAdES B-LT PDF: jpki's verify path next to pyHanko's own validator.

Makes, in a temporary folder, a test CA (served on a loopback port, as its certificates say), an
emulated card and the home's test TSA (``jpki.tsa``, served in a thread: ``jpki.demo.served_tsa``); signs a one-page
PDF at B-LT with the card (signature timestamp, DSS with the OCSP answers for the signer and the
TSA). Then, days later by the clock and in the same run, interleaved, ``--repeat`` times each:

* ``jpki verify --offline`` (``jpki.sign.pdf.verify_pdf`` with a fresh offline
  ``jpki.verify.Validator``: what ``jpki verify FILE --offline`` does once it has started):
  integrity and difference analysis of every revision (pyHanko's reader), the CMS, the
  signature timestamp and its TSA's path and revocation at the token's time, the signer's path
  and revocation at that time from the DSS;
* pyHanko's validator, the way its ``validate_pdf_ltv_signature(PADES_LT)`` did it (pyHanko 0.38
  no longer has that function): a validation context from the DSS (no fetching, hard-fail
  revocation, ``retroactive_revinfo``) at the signature timestamp's time, then
  ``validate_pdf_signature`` (integrity, difference analysis, the timestamp, both paths).

Both work in this process, from a fresh reader of the file, with nothing fetched. Printed: the
median and best time of each, and the ratio jpki / pyHanko.

    python benchmarks/ltv.py [--repeat 30] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from jpki.clock import FixedClock
from jpki.demo import served_tsa
from jpki.home import Home
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA, free_port
from jpki.pki.server import serve_in_thread
from jpki.provision import create_card
from jpki.session import JpkiSession
from jpki.sign import CardSigner
from jpki.sign.levels import ValidatorSource
from jpki.sign.pdf import sign_pdf, simple_pdf, verify_pdf
from jpki.transport import open_transport
from jpki.verify import TrustStore, Validator

SIGNED_AT = dt.datetime(2026, 11, 27, 4, 0, 0, tzinfo=dt.UTC)
CHECKED = SIGNED_AT + dt.timedelta(days=3)


def make_b_lt(work: Path) -> tuple[Path, Home]:
    """A B-LT PDF signed by an emulated card, with the CA served for the validation data."""
    clock = FixedClock(SIGNED_AT - dt.timedelta(hours=1))
    home = Home(work / "home", clock=clock)
    home.path.mkdir(mode=0o700)
    port = free_port()
    TestCA.init(home.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{port}").close()
    create_card(home, "alice", SAMPLE_PERSONAS["alice"], clock=clock)
    clock.advance(hours=1)
    src, out = work / "in.pdf", work / "b-lt.pdf"
    src.write_bytes(simple_pdf("A contract"))
    trust = TrustStore.jlis() + TrustStore.from_ca_dir(home.ca_dir)
    with serve_in_thread(home.ca_dir, "127.0.0.1", port, clock=clock), served_tsa(home, clock) as tsa, \
            open_transport("emu:alice", home=home.path) as t:
        signer = CardSigner.from_session(JpkiSession(t), "sign", pin=lambda: "ABC123")
        done = sign_pdf(src, out, signer, clock=clock, level="LT", timestamper=tsa,
                        source=ValidatorSource(Validator(trust, clock=clock)))
    assert done.level == "B-LT", done
    return out, home


def jpki_verify(path: Path, trust: TrustStore) -> None:
    report = verify_pdf(path, validator=Validator(trust, clock=FixedClock(CHECKED), offline=True),
                        clock=FixedClock(CHECKED))
    if not report.ok or report.signatures[0].level != "B-LT":
        raise SystemExit(f"jpki: {report.summary()}")


def pyhanko_verify(path: Path, root: asn1_x509.Certificate, moment: dt.datetime) -> None:
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import DocumentSecurityStore, validate_pdf_signature

    with open(path, "rb") as fh:
        reader = PdfFileReader(fh)
        context = DocumentSecurityStore.read_dss(reader).as_validation_context(dict(
            trust_roots=[root], allow_fetching=False, moment=moment, retroactive_revinfo=True,
            revocation_mode="hard-fail"))
        status = validate_pdf_signature(reader.embedded_signatures[0], context)
    if not (status.bottom_line and status.trusted and status.timestamp_validity.trusted):
        raise SystemExit(f"pyHanko: {status.pretty_print_details()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="verifications of each (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 of each: a smoke run")
    opts = parser.parse_args()
    repeat = 5 if opts.quick else opts.repeat
    with tempfile.TemporaryDirectory(prefix="jpki-ltv-bench-") as tmp:
        path, home = make_b_lt(Path(tmp))
        trust = TrustStore.jlis() + TrustStore.from_ca_dir(home.ca_dir)
        with TestCA.open(home.ca_dir) as ca:
            root = asn1_x509.Certificate.load(ca.sign_ca_cert.public_bytes(Encoding.DER))
        jpki_verify(path, trust)  # warm-up (imports, caches of the interpreter)
        pyhanko_verify(path, root, SIGNED_AT)
        times: dict[str, list[float]] = {"jpki verify --offline": [], "pyHanko validate_pdf_signature": []}
        for _ in range(repeat):
            start = time.perf_counter()
            jpki_verify(path, trust)
            times["jpki verify --offline"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pyhanko_verify(path, root, SIGNED_AT)
            times["pyHanko validate_pdf_signature"].append(time.perf_counter() - start)
        size = path.stat().st_size
    print(f"B-LT PDF of {size} bytes (1 signature + timestamp, DSS: 2 OCSP answers); {repeat} runs each, "
          f"interleaved; python {sys.version.split()[0]}")
    print(f"{'verifier':<34}{'median ms':>11}{'best ms':>10}")
    for name, runs in times.items():
        print(f"{name:<34}{statistics.median(runs) * 1000:>11.1f}{min(runs) * 1000:>10.1f}")
    ours, theirs = (statistics.median(v) for v in times.values())
    print(f"ratio jpki / pyHanko (median): {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
