"""Cost of a new test card with its certificates: keys from the pool, next to keys generated per card.

Prints the median and p90 of ``make_card()`` (jpki.testing.CardFactory: two certificates from
the test CA, the card's files, the holder record) with keys from a warm key pool, then with two
RSA-2048 keys generated for each card, in the same run, and the ratio.

Target (issue 12): <= 10 ms median with the pool.

    python benchmarks/card_factory.py [--cards 300] [--fresh 30] [--keypool DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jpki.clock import FixedClock
from jpki.home import Home
from jpki.testing import START, CardFactory, FreshKeys, KeyPool, KeySource, new_test_ca


def timings(keys: KeySource, pool: KeyPool, count: int, base: Path, label: str) -> list[float]:
    """Seconds per card for ``count`` cards made with ``keys`` (the CA's keys from ``pool``)."""
    clock = FixedClock(START)
    home = base / label
    ca = new_test_ca(home, clock, pool)
    make_card = CardFactory(Home(home, clock), ca, keys, clock)
    make_card()  # warm up: first imports, first statements of the CA database
    spent = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            make_card()
            spent.append(time.perf_counter() - t0)
    finally:
        ca.close()
    return spent


def describe(label: str, spent: list[float]) -> str:
    ordered = sorted(spent)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median = statistics.median(spent)
    return f"{label:<28} {len(spent):>5} cards  median {median * 1e3:7.2f} ms  p90 {p90 * 1e3:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", type=int, default=300, help="cards made with pool keys (default 300)")
    ap.add_argument("--fresh", type=int, default=30, help="cards made with generated keys (default 30)")
    ap.add_argument("--keypool", type=Path, default=None, help="pool directory (default: $JPKI_KEYPOOL, "
                    "~/.cache/jpki/keypool)")
    args = ap.parse_args()

    pool = KeyPool(args.keypool)
    need = 2 * (args.cards + 1) + 4 + 2  # the pooled cards and the warm-up, both CAs
    t0 = time.perf_counter()
    made = pool.fill(need)
    print(f"key pool {pool.directory}: {need} keys ready ({made} generated now, {time.perf_counter() - t0:.1f} s)")
    with tempfile.TemporaryDirectory(prefix="jpki-card-bench-") as tmp:
        pooled = timings(pool, pool, args.cards, Path(tmp), "pool")
        fresh = timings(FreshKeys(), pool, args.fresh, Path(tmp), "fresh")
    print(describe("keys from the pool", pooled))
    print(describe("keys generated per card", fresh))
    ratio = statistics.median(fresh) / statistics.median(pooled)
    verdict = "met" if statistics.median(pooled) <= 0.010 else "NOT met"
    print(f"generated / pool (median)    {ratio:.1f}x;  target <= 10 ms median with the pool: {verdict}")


if __name__ == "__main__":
    main()
