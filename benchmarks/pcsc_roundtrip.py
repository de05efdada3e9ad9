"""APDU round trips through pyscard → pcscd → vpcd → the emulated card, against a minimal card.

The minimal card (``python -m card_emulator.vpcd``) answers 9000 to everything: it is the floor
this path allows. Both cards run in their own process, on vpcd slots 00 and 01 at once, and the
client alternates short bursts between them; the client uses pyscard's low-level SCardTransmit.
Also reports the time to read both certificates and make one signature over PC/SC with the jpki
host library.

Target (issue 3): the emulator reaches at least 75% of the minimal card's rate.

Needs pcscd with the vsmartcard-vpcd driver (root starts it if it is not running):

    python benchmarks/pcsc_roundtrip.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smartcard import scard

from jpki.clock import FixedClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.provision import Home, create_card
from jpki.session import JpkiSession
from jpki.transport import open_transport

PORT = 35963          # the emulated card: reader "Virtual PCD 00 00"
MIN_PORT = 35964      # the minimal card:  reader "Virtual PCD 00 01"
READER = "Virtual PCD 00 00"
MIN_READER = "Virtual PCD 00 01"
SELECT_AP = bytes.fromhex("00A4040C0AD392F000260100000001")
SELECT_EF = bytes.fromhex("00A4020C02000A")
READ_256 = bytes.fromhex("00B0000000")


def ensure_pcscd() -> subprocess.Popen | None:
    if subprocess.run(["pgrep", "-x", "pcscd"], capture_output=True).returncode == 0:
        return None
    if shutil.which("pcscd") is None:
        sys.exit("pcscd is not installed (apt-get install pcscd vsmartcard-vpcd)")
    for stale in ("/run/pcscd/pcscd.comm", "/run/pcscd/pcscd.pid"):
        if os.path.exists(stale):
            os.unlink(stale)
    proc = subprocess.Popen(["pcscd", "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def wait_card(reader: str = READER, timeout: float = 15.0) -> None:
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hr, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
            if hr == scard.SCARD_S_SUCCESS and states[0][1] & scard.SCARD_STATE_PRESENT:
                return
            time.sleep(0.05)
    finally:
        scard.SCardReleaseContext(ctx)
    sys.exit(f"no card appeared in {reader}")


def wait_empty(reader: str = READER, timeout: float = 10.0) -> None:
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hr, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
            if hr == scard.SCARD_S_SUCCESS and not states[0][1] & scard.SCARD_STATE_PRESENT:
                return
            time.sleep(0.05)
    finally:
        scard.SCardReleaseContext(ctx)


def measure(apdu: bytes, seconds: float, setup: list[bytes], reader: str = READER) -> list[float]:
    """Per-APDU latencies (s) of ``apdu`` over PC/SC for about ``seconds``."""
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    hr, card, proto = scard.SCardConnect(ctx, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1)
    if hr != scard.SCARD_S_SUCCESS:
        sys.exit(f"SCardConnect failed: {scard.SCardGetErrorMessage(hr)}")
    try:
        hr, _ = scard.SCardTransmit(card, proto, list(SELECT_AP))
        if hr == scard.SCARD_W_RESET_CARD:  # pcscd powered the card up again for us
            hr, proto = scard.SCardReconnect(card, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1,
                                             scard.SCARD_LEAVE_CARD)
        for cmd in setup:
            scard.SCardTransmit(card, proto, list(cmd))
        lat = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            hr, _resp = scard.SCardTransmit(card, proto, list(apdu))
            lat.append(time.perf_counter() - t0)
            if hr != scard.SCARD_S_SUCCESS:
                sys.exit(f"SCardTransmit failed: {scard.SCardGetErrorMessage(hr)}")
        return lat
    finally:
        scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)
        scard.SCardReleaseContext(ctx)


def serve(cmd: list[str], env: dict[str, str], reader: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_card(reader)
    return proc


def stop(proc: subprocess.Popen, reader: str) -> None:
    proc.terminate()
    proc.wait(10)
    wait_empty(reader)


def compare(apdu: bytes, setup: list[bytes], seconds: float, rounds: int = 6) -> dict[str, list[float]]:
    """Alternate short bursts on the two readers so that machine noise hits both alike."""
    lat: dict[str, list[float]] = {"emulator": [], "minimal": []}
    for _ in range(rounds):
        lat["emulator"] += measure(apdu, seconds / rounds, setup, READER)
        lat["minimal"] += measure(apdu, seconds / rounds, setup, MIN_READER)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    pcscd = ensure_pcscd()
    # the same slot lock as the tests (tests/pcsc_env.py), so that a test run never shares the slot
    # (held until the process ends, which closes the descriptors)
    locks = [os.open(f"/tmp/jpki-vpcd-{port}.lock", os.O_CREAT | os.O_RDWR, 0o666) for port in (PORT, MIN_PORT)]
    for lock in locks:
        fcntl.flock(lock, fcntl.LOCK_EX)
    tmp = Path(tempfile.mkdtemp(prefix="jpki-bench-"))
    try:
        home = Home(tmp)
        clock = FixedClock(dt.datetime(2026, 11, 27, tzinfo=dt.UTC))
        TestCA.init(home.ca_dir, clock=clock).close()
        create_card(home, "bench", SAMPLE_PERSONAS["alice"], clock=clock)
        env = {**os.environ, "JPKI_HOME": str(tmp)}

        jpki_bin = [sys.executable, "-c", "import sys; from jpki.cli import main; sys.exit(main())"]
        emulated = serve([*jpki_bin, "emulator", "serve", "bench", "--vpcd", f"127.0.0.1:{PORT}"], env, READER)
        minimal = serve([sys.executable, "-m", "card_emulator.vpcd", "--port", str(MIN_PORT)], env, MIN_READER)
        try:
            results = {"SELECT": compare(SELECT_AP, [], args.seconds),
                       "READ": compare(READ_256, [SELECT_AP, SELECT_EF], args.seconds)}
        finally:
            stop(minimal, MIN_READER)
        # The same minimal card, answering READ BINARY with 256 bytes (our response's wire size).
        minimal = serve([sys.executable, "-m", "card_emulator.vpcd", "--port", str(MIN_PORT), "--fill-le"],
                        env, MIN_READER)
        try:
            results["READ-FILLED"] = compare(READ_256, [SELECT_AP, SELECT_EF], args.seconds)
        finally:
            stop(minimal, MIN_READER)
        try:
            t0 = time.perf_counter()
            with open_transport(f"pcsc:{READER}") as t:
                j = JpkiSession(t)
                auth = j.read_certificate("auth")
                j.verify("sign", "ABC123")
                sign = j.read_certificate("sign")
                t1 = time.perf_counter()
                j.verify("auth", "1234")
                sig = j.sign_digest("auth", "sha256", bytes(32))
                t2 = time.perf_counter()
            assert len(sig) == 256 and auth[0] == 0x30 and sign[0] == 0x30
        finally:
            stop(emulated, READER)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pcscd is not None:
            pcscd.terminate()
            pcscd.wait(10)

    print("pyscard -> pcscd -> vpcd -> card (each card in its own process, bursts interleaved):")
    labels = {"SELECT": "SELECT AP", "READ": "READ BINARY 256 bytes",
              "READ-FILLED": "READ BINARY 256 vs a minimal card returning 256 bytes"}
    for what, lat in results.items():
        e, m = lat["emulator"], lat["minimal"]
        e_rate, m_rate = len(e) / sum(e), len(m) / sum(m)
        ratio = e_rate / m_rate
        print(f"  {labels[what]}:\n    emulator {e_rate:>7,.0f} APDU/s (median {statistics.median(e) * 1000:.3f} ms)"
              f"   minimal card {m_rate:>7,.0f} APDU/s (median {statistics.median(m) * 1000:.3f} ms)"
              f"   ratio {ratio:.0%} (target >= 75%: {'met' if ratio >= 0.75 else 'MISSED'})")
    print(f"  read both certificates (incl. password VERIFY): {(t1 - t0) * 1000:.1f} ms")
    print(f"  one signature (PIN VERIFY + COMPUTE DIGITAL SIGNATURE): {(t2 - t1) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
