"""Revocation benchmarks. Prints figures and ratios against baselines run in the same session.

Sections (run all, or pick with ``--section``):

``crl``
    * build + sign a CRL with :func:`jpki.revocation.build_crl` at 100k and 1M entries: time
      and peak memory, next to ``cryptography``'s ``CertificateRevocationListBuilder`` at 100k
      (quadratic: expect about 25 s);
    * :meth:`jpki.pki.TestCA.crl` from a CA database holding 1M revoked certificates;
    * :meth:`jpki.revocation.LoadedCRL.from_der` (parse + verify) at 1M entries;
    * ``LoadedCRL.lookup`` per call at 1M entries (misses, first hits, repeated hits) against a
      linear scan over a 100k-entry list and ``cryptography``'s
      ``get_revoked_certificate_by_serial_number`` on a 100k-entry CRL.

Every measurement runs in its own child process (``--child TASK``), so that its peak memory
(``ru_maxrss``) is its own; ``base`` is the child's peak before the measured step (interpreter,
key, input entries), ``peak`` after it. More sections (OCSP, validation) register themselves
with :func:`section` and their child tasks with :func:`child_task`, above the ``main`` block at the
end of this file; per-call figures are the best of three rounds.

Usage::

    python benchmarks/revocation.py                      # every section
    python benchmarks/revocation.py --section crl --quick   # 10k/100k instead of 100k/1M, no baseline
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from jpki.clock import FixedClock  # noqa: E402
from jpki.revocation import LoadedCRL, RevokedEntry, build_crl  # noqa: E402

NOW = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=dt.timezone.utc)
NEXT = NOW + dt.timedelta(days=1)
REASONS = [flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl]

Section = Callable[[argparse.Namespace, Path], None]
ChildTask = Callable[[dict], dict]
SECTIONS: dict[str, Section] = {}
CHILD_TASKS: dict[str, ChildTask] = {}


def section(name: str) -> Callable[[Section], Section]:
    """Register a benchmark section ``name`` (run in order of registration)."""

    def register(fn: Section) -> Section:
        SECTIONS[name] = fn
        return fn

    return register


def child_task(name: str) -> Callable[[ChildTask], ChildTask]:
    """Register a measurement that runs in a child process: params dict in, figures dict out."""

    def register(fn: ChildTask) -> ChildTask:
        CHILD_TASKS[name] = fn
        return fn

    return register


# --------------------------------------------------------------------------- plumbing


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(task: str, **params: object) -> dict:
    """Run ``task`` in a fresh interpreter and return the figures it reports."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", task, "--params", json.dumps(params)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {task} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:8.2f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.2f} µs"


def write_issuer(workdir: Path) -> None:
    """A CA key and certificate for the children (generated once per run)."""
    from jpki.pki import TestCA

    ca = TestCA.init(workdir / "ca", clock=FixedClock(NOW))
    (workdir / "issuer.pem").write_bytes(ca.sign_ca_cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "issuer.key").write_bytes(
        ca.sign_ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca.close()


def load_issuer(workdir: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate((workdir / "issuer.pem").read_bytes())
    key = serialization.load_pem_private_key((workdir / "issuer.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key


def make_entries(n: int, seed: int = 1) -> list[RevokedEntry]:
    """``n`` entries like a real CRL's: random 159-bit serials, revocation times spread over
    five years, a reason on most, an invalidity date on a third."""
    rnd = random.Random(seed)
    start = NOW - dt.timedelta(days=5 * 365)
    span = 5 * 365 * 86400
    out = []
    for i in range(n):
        revoked = start + dt.timedelta(seconds=rnd.randrange(span))
        invalid = revoked - dt.timedelta(hours=1 + i % 72) if i % 3 == 0 else None
        out.append(RevokedEntry(rnd.getrandbits(159), revoked, REASONS[i % len(REASONS)], invalid))
    return out


# --------------------------------------------------------------------------- CRL child tasks


@child_task("crl-build")
def _crl_build(p: dict) -> dict:
    workdir = Path(p["workdir"])
    cert, key = load_issuer(workdir)
    entries = make_entries(p["n"])
    base = peak_rss_mb()
    start = time.perf_counter()
    der = build_crl(cert, key, entries, crl_number=1, this_update=NOW, next_update=NEXT)
    seconds = time.perf_counter() - start
    (workdir / f"crl-{p['n']}.der").write_bytes(der)
    return {"seconds": seconds, "base_mb": base, "peak_mb": peak_rss_mb(), "bytes": len(der)}


@child_task("crl-build-cryptography")
def _crl_build_cryptography(p: dict) -> dict:
    cert, key = load_issuer(Path(p["workdir"]))
    entries = make_entries(p["n"])
    base = peak_rss_mb()
    start = time.perf_counter()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW)
        .next_update(NEXT)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for e in entries:
        rb = x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at)
        if e.reason is not x509.ReasonFlags.unspecified:
            rb = rb.add_extension(x509.CRLReason(e.reason), critical=False)
        if e.invalidity_date is not None:
            rb = rb.add_extension(
                x509.InvalidityDate(e.invalidity_date.replace(tzinfo=None)), critical=False
            )
        builder = builder.add_revoked_certificate(rb.build())
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "base_mb": base, "peak_mb": peak_rss_mb(), "bytes": len(der)}


@child_task("crl-ca-db")
def _crl_ca_db(p: dict) -> dict:
    """TestCA.crl from a CA database of ``n`` revoked certificates (bulk-inserted first)."""
    from jpki.pki import TestCA
    from jpki.pki.db import RevokedRow

    ca = TestCA.open(Path(p["workdir"]) / "ca", clock=FixedClock(NOW))
    if ca.db.count_revoked("sign") < p["n"]:
        rows = (
            RevokedRow(e.serial or 1, "sign", e.revoked_at, e.reason.value, e.invalidity_date)
            for e in make_entries(p["n"], seed=99)
        )
        start = time.perf_counter()
        ca.db.bulk_insert_revoked(rows)
        insert = time.perf_counter() - start
    else:
        insert = 0.0
    base = peak_rss_mb()
    start = time.perf_counter()
    der = ca.crl("sign")
    seconds = time.perf_counter() - start
    ca.close()
    return {"seconds": seconds, "insert_seconds": insert, "base_mb": base, "peak_mb": peak_rss_mb(),
            "bytes": len(der)}


@child_task("crl-load")
def _crl_load(p: dict) -> dict:
    workdir = Path(p["workdir"])
    cert, _ = load_issuer(workdir)
    der = (workdir / f"crl-{p['n']}.der").read_bytes()
    base = peak_rss_mb()
    start = time.perf_counter()
    crl = LoadedCRL.from_der(der, cert, now=NOW, eager=p["eager"])
    seconds = time.perf_counter() - start
    assert len(crl) == p["n"]
    peak = peak_rss_mb()
    figures = {"seconds": seconds, "base_mb": base, "peak_mb": peak}
    if not p["eager"]:
        start = time.perf_counter()
        theirs = x509.load_der_x509_crl(der)
        assert theirs.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
        figures["crypto_seconds"] = time.perf_counter() - start
    return figures


def _per_call(fn: Callable[[int], object], serials: list[int]) -> float:
    start = time.perf_counter()
    for s in serials:
        fn(s)
    return (time.perf_counter() - start) / len(serials)


@child_task("crl-lookup")
def _crl_lookup(p: dict) -> dict:
    workdir = Path(p["workdir"])
    cert, _ = load_issuer(workdir)
    n, scan_n = p["n"], p["scan_n"]
    der = (workdir / f"crl-{n}.der").read_bytes()
    crl = LoadedCRL.from_der(der, cert, now=NOW)
    rnd = random.Random(5)
    listed = list(crl.serials())
    hits = rnd.sample(listed, min(len(listed), p["calls"]))
    misses = [rnd.getrandbits(159) for _ in range(p["calls"])]
    figures = {
        "miss": min(_per_call(crl.lookup, misses) for _ in range(3)),
        # Each first hit decodes its entry, so each round takes fresh serials; best of three.
        "first_hit": min(_per_call(crl.lookup, hits[i::3]) for i in range(3)),
        "cached_hit": min(_per_call(crl.lookup, hits) for _ in range(3)),
        "contains": min(_per_call(crl.__contains__, hits) for _ in range(3)),
    }
    del crl
    eager = LoadedCRL.from_der(der, cert, now=NOW, eager=True)
    figures["eager_hit"] = min(_per_call(eager.lookup, hits) for _ in range(3))
    figures["eager_miss"] = min(_per_call(eager.lookup, misses) for _ in range(3))
    del eager
    # Baselines: a linear scan over a list of scan_n entries, and cryptography's own lookup.
    entries = make_entries(scan_n, seed=7)
    targets = [e.serial for e in rnd.sample(entries, p["scan_calls"] // 2)]
    targets += [rnd.getrandbits(159) for _ in range(p["scan_calls"] - len(targets))]

    def scan(serial: int) -> RevokedEntry | None:
        for entry in entries:
            if entry.serial == serial:
                return entry
        return None

    figures["scan"] = _per_call(scan, targets)
    key = load_issuer(workdir)[1]
    small = build_crl(cert, key, entries, crl_number=1, this_update=NOW, next_update=NEXT)
    theirs = x509.load_der_x509_crl(small)
    figures["crypto_lookup"] = _per_call(
        theirs.get_revoked_certificate_by_serial_number, targets[: max(10, len(targets) // 4)]
    )
    return figures


# --------------------------------------------------------------------------- CRL section


@section("crl")
def crl_section(args: argparse.Namespace, workdir: Path) -> None:
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    big = sizes[-1]
    print(f"== CRL (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print("build + sign (DER, sha256WithRSAEncryption); peak RSS of the child process")
    built: dict[int, dict] = {}
    for n in sizes:
        r = built[n] = run_child("crl-build", workdir=str(workdir), n=n)
        print(f"  jpki build_crl        {n:>9,} entries {fmt_seconds(r['seconds'])}"
              f"  {r['bytes'] / 2**20:7.1f} MiB DER  peak {r['peak_mb']:7.0f} MiB"
              f" (+{r['peak_mb'] - r['base_mb']:.0f} over {r['base_mb']:.0f} with the input)")
    if not args.quick:
        n = sizes[0]
        r = run_child("crl-build-cryptography", workdir=str(workdir), n=n)
        print(f"  cryptography builder  {n:>9,} entries {fmt_seconds(r['seconds'])}"
              f"  {r['bytes'] / 2**20:7.1f} MiB DER  peak {r['peak_mb']:7.0f} MiB"
              f" (+{r['peak_mb'] - r['base_mb']:.0f} over {r['base_mb']:.0f} with the input)")
        print(f"  -> at {n:,}: jpki is {r['seconds'] / built[n]['seconds']:.0f}x faster;"
              f" jpki at {big:,} takes {built[big]['seconds']:.1f} s (target <= 20 s)")
    if not args.no_db:
        r = run_child("crl-ca-db", workdir=str(workdir), n=big)
        print(f"  TestCA.crl('sign')    {big:>9,} rows    {fmt_seconds(r['seconds'])}"
              f"  peak {r['peak_mb']:7.0f} MiB   (bulk insert of the rows: {r['insert_seconds']:.1f} s)")

    print("load (parse + verify signature + index)")
    r = run_child("crl-load", workdir=str(workdir), n=big, eager=False)
    print(f"  LoadedCRL.from_der             {big:>9,} entries {fmt_seconds(r['seconds'])}"
          f"  peak {r['peak_mb']:7.0f} MiB (+{r['peak_mb'] - r['base_mb']:.0f})"
          f"   [cryptography load + is_signature_valid: {fmt_seconds(r['crypto_seconds']).strip()},"
          " entries not indexed]")
    r = run_child("crl-load", workdir=str(workdir), n=big, eager=True)
    print(f"  LoadedCRL.from_der(eager=True) {big:>9,} entries {fmt_seconds(r['seconds'])}"
          f"  peak {r['peak_mb']:7.0f} MiB (+{r['peak_mb'] - r['base_mb']:.0f})")

    scan_n = 10_000 if args.quick else 100_000
    r = run_child("crl-lookup", workdir=str(workdir), n=big, calls=100_000, scan_n=scan_n,
                  scan_calls=200 if not args.quick else 100)
    print(f"lookup per call, CRL of {big:,} entries (target <= 5 µs)")
    print(f"  lazy:  not listed                 {fmt_seconds(r['miss'])}")
    print(f"  lazy:  listed, 1st time (decodes) {fmt_seconds(r['first_hit'])}")
    print(f"  lazy:  listed, again              {fmt_seconds(r['cached_hit'])}")
    print(f"  lazy:  serial in crl              {fmt_seconds(r['contains'])}")
    print(f"  eager: not listed                 {fmt_seconds(r['eager_miss'])}")
    print(f"  eager: listed                     {fmt_seconds(r['eager_hit'])}")
    print(f"  baseline: linear scan of a {scan_n:,}-entry list   {fmt_seconds(r['scan'])}")
    print(f"  baseline: cryptography get_revoked_certificate_by_serial_number,"
          f" {scan_n:,} entries {fmt_seconds(r['crypto_lookup'])}")
    worst = max(r["eager_miss"], r["eager_hit"])
    print(f"  -> eager lookups at {big:,}: worst {worst * 1e6:.2f} µs, {r['scan'] / worst:,.0f}x"
          f" faster than the scan over {big // scan_n}x fewer entries; lazy first hits"
          f" {r['first_hit'] * 1e6:.2f} µs")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes, no slow baselines")
    parser.add_argument("--no-db", action="store_true", help="skip the CA database measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILD_TASKS[args.child](json.loads(args.params or "{}"))))
        return 0
    with tempfile.TemporaryDirectory(prefix="jpki-bench-") as tmp:
        workdir = Path(tmp)
        write_issuer(workdir)
        for name in args.section or list(SECTIONS):
            SECTIONS[name](args, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
