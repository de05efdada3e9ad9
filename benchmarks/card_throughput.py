"""In-process throughput of the emulated card, against plain `cryptography` in the same run.

Prints APDUs per second for SELECT, READ BINARY (256 bytes) and COMPUTE DIGITAL SIGNATURE, and
the signature latency through the card next to a plain RSA-2048 PKCS#1 v1.5 signature.

Targets (issue 2): >= 20,000 READ BINARY APDUs/s; card signature <= 1.15x the plain one.

    python benchmarks/card_throughput.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from card_emulator import MyNumberCard
from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.provision import Home, create_card

SELECT_AP = bytes.fromhex("00A4040C0AD392F000260100000001")
SELECT_EF = bytes.fromhex("00A4020C02000A")
READ_256 = bytes.fromhex("00B0000000")
VERIFY = bytes.fromhex("0020008004") + b"1234"
SELECT_KEY = bytes.fromhex("00A4020C020017")


def rate(fn, seconds: float) -> tuple[float, list[float]]:
    """Calls per second of ``fn`` over ~``seconds``, and per-call latencies (s)."""
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(100):
            fn()
        lat.append((time.perf_counter() - t0) / 100)
    return 1 / statistics.mean(lat), lat


def sig_latency(fn, seconds: float) -> list[float]:
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        clock = FixedClock(dt.datetime(2026, 11, 27, tzinfo=dt.UTC))
        TestCA.init(home.ca_dir, clock=clock).close()
        create_card(home, "bench", SAMPLE_PERSONAS["alice"], clock=clock)
        card = MyNumberCard.open(home.card_dir("bench"))
        card.power_on()

        t = card.transmit
        sel_rate, _ = rate(lambda: t(SELECT_AP), args.seconds)
        t(SELECT_AP)
        t(SELECT_EF)
        assert len(t(READ_256)) == 258
        read_rate, _ = rate(lambda: t(READ_256), args.seconds)

        t(SELECT_AP)
        t(bytes.fromhex("00A4020C020018"))
        assert t(VERIFY) == b"\x90\x00"
        t(SELECT_KEY)
        digest = hashlib.sha256(b"benchmark").digest()
        di = bytes.fromhex("3031300d060960864801650304020105000420") + digest
        sign_apdu = bytes.fromhex("802A0080") + bytes([len(di)]) + di + b"\x00"
        assert len(t(sign_apdu)) == 258

        plain_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def plain():
            plain_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

        # Interleave the two so that machine noise hits both alike.
        card_lat: list[float] = []
        plain_lat: list[float] = []
        for _ in range(5):
            card_lat += sig_latency(lambda: t(sign_apdu), args.seconds / 5)
            plain_lat += sig_latency(plain, args.seconds / 5)
        card.close()

    card_ms = statistics.median(card_lat) * 1000
    plain_ms = statistics.median(plain_lat) * 1000
    print("In-process emulated card (one core):")
    print(f"  SELECT AP                     {sel_rate:>10,.0f} APDU/s")
    print(f"  READ BINARY 256 bytes         {read_rate:>10,.0f} APDU/s   (target >= 20,000: "
          f"{'met' if read_rate >= 20000 else 'MISSED'})")
    print(f"  COMPUTE DIGITAL SIGNATURE     {1000 / card_ms:>10,.0f} APDU/s")
    print(f"  signature median latency      card {card_ms:.3f} ms   plain cryptography {plain_ms:.3f} ms")
    ratio = card_ms / plain_ms
    print(f"  ratio card / plain            {ratio:.3f}x   (target <= 1.15x: {'met' if ratio <= 1.15 else 'MISSED'})")


if __name__ == "__main__":
    main()
