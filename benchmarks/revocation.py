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

``validation``
    * :class:`jpki.verify.Validator` on a good user-authentication certificate with a warm
      revocation cache (OCSP answered once, in process), one core (target >= 5,000/s); the cold
      path (every cache cleared, no revocation) too;
    * next to pyhanko-certvalidator's plain path validation (no revocation) in the same process.

``ocsp``
    * a CA whose database holds 1M revoked and 1M good user-authentication certificates (20k +
      20k with ``--quick``), each kind inserted in one transaction (timed);
    * ``jpki.pki.server.serve(ca_dir, "127.0.0.1", port, workers=2, responder_key=K)``
      in a subprocess, and a load generator in another (``benchmarks/_ocsp_load.py``: 20
      concurrent keep-alive connections POSTing pre-built DER requests over loopback, 10 s per
      workload): (a) a hot working set of 2,000 certificates without nonces (cached RFC 5019
      responses), (b) every request a distinct certificate (every response signed); responses/s,
      p50/p95/p99 latency, errors, CPU per process, each response's status checked against the
      row inserted and a sample verified in full against the database; target >= 1,500
      responses/s. Run once per responder key type K (``--responder-key rsa|ec|both``, default
      both: RSA-2048 first, then ECDSA P-256 on the same CA directory, which re-issues the
      responder certificates), then the two side by side.

``codec``
    the hand-written DER that jpki keeps (``jpki.der``) next to ``cryptography`` doing the same
    job, in the same process, with the ratio (a few seconds; sizes fixed, ``--quick`` changes
    nothing): OCSP requests parsed per second (``OcspResponder``'s reader: cryptography plus the
    check that the request is the plain encoding of what it read; asn1crypto for two CertIDs),
    OCSP responses built and signed per second (jpki's builder against ``OCSPResponseBuilder``,
    RSA-2048 and ECDSA P-256, with and without the signature's own time), CRL build, load and
    look-up at 2,000 and 20,000 entries (``cryptography``'s builder is quadratic).

Every measurement runs in its own child process (``--child TASK``), so that its peak memory
(``ru_maxrss``) is its own; ``base`` is the child's peak before the measured step (interpreter,
key, input entries), ``peak`` after it. More sections (OCSP, validation) register themselves
with :func:`section` and their child tasks with :func:`child_task`, above the ``main`` block at the
end of this file; per-call figures are the best of three rounds.

Usage::

    python benchmarks/revocation.py                      # every section
    python benchmarks/revocation.py --section crl --quick   # 10k/100k instead of 100k/1M, no baseline
    python benchmarks/revocation.py --section ocsp [--quick] # OCSP responses/s, 2M-row database
    python benchmarks/revocation.py --section ocsp --responder-key ec   # one responder key type
    python benchmarks/revocation.py --section validation    # validations per second, one core
    python benchmarks/revocation.py --section codec         # jpki.der against cryptography, ~5 s
"""

from __future__ import annotations

import argparse
import contextlib
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jpki.clock import FixedClock
from jpki.revocation import LoadedCRL, RevokedEntry, build_crl

NOW = dt.datetime(2026, 11, 27, 3, 0, 0, tzinfo=dt.UTC)
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


def cryptography_crl(cert: x509.Certificate, key: rsa.RSAPrivateKey, entries: list[RevokedEntry]) -> bytes:
    """The CRL build_crl makes, built with cryptography's CertificateRevocationListBuilder."""
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
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@child_task("crl-build-cryptography")
def _crl_build_cryptography(p: dict) -> dict:
    cert, key = load_issuer(Path(p["workdir"]))
    entries = make_entries(p["n"])
    base = peak_rss_mb()
    start = time.perf_counter()
    der = cryptography_crl(cert, key, entries)
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


# --------------------------------------------------------------------------- validation section


def _rate(fn: Callable[[], object], calls: int, rounds: int = 3) -> float:
    """Calls per second of ``fn``: the best of ``rounds`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - start)
    return calls / best


@child_task("validation")
def _validation(p: dict) -> dict:
    """jpki.verify.Validator on a good user-authentication certificate, pinned to one core,
    next to pyhanko-certvalidator's plain path validation (no revocation)."""
    import asyncio

    import httpx
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext

    from jpki.pki import TestCA
    from jpki.pki.server import create_app
    from jpki.verify import TrustStore, Validator

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    clock = FixedClock(NOW)
    ca_dir = Path(p["workdir"]) / "validation-ca"
    ca = TestCA.init(ca_dir, clock=clock)
    cert = ca.issue_auth_cert(rsa.generate_private_key(65537, 2048).public_key(), card_id="bench",
                              card_expiry=(NOW + dt.timedelta(days=5 * 365)).date())
    root = ca.auth_ca_cert
    ca.close()
    app = create_app(ca_dir, clock=clock)
    fetched: list[str] = []

    def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        """The revocation server's ASGI app, in process (the cost of HTTP is not measured)."""
        fetched.append(url)

        async def go() -> bytes:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
                if data is None:
                    response = await client.get(url)
                else:
                    response = await client.post(url, content=data, headers={"Content-Type": content_type or ""})
                response.raise_for_status()
                return response.content

        return asyncio.run(go())

    calls = p["calls"]
    der = cert.public_bytes(serialization.Encoding.DER)
    validator = Validator(TrustStore.from_ca_dir(ca_dir), clock=clock, fetch=fetch)
    first_start = time.perf_counter()
    first = validator.validate(der, kind="auth")
    first_seconds = time.perf_counter() - first_start
    assert first.ok and first.revocation is not None and first.revocation.method == "ocsp", first.summary()
    warm_bytes = _rate(lambda: validator.validate(der, kind="auth"), calls)
    warm_object = _rate(lambda: validator.validate(cert, kind="auth"), calls)
    assert len(fetched) == 1, fetched  # every timed validation was answered from the cache
    result = validator.validate(der, kind="auth")
    assert result.ok and result.revocation is not None and result.revocation.cached

    cold = Validator(TrustStore.from_ca_dir(ca_dir), clock=clock, revocation="none")

    def cold_path() -> None:
        cold.clear_caches()
        assert cold.validate(der, kind="auth").ok

    cold_rate = _rate(cold_path, max(calls // 50, 50))

    roots = [asn1_x509.Certificate.load(root.public_bytes(serialization.Encoding.DER))]
    leaf = asn1_x509.Certificate.load(der)
    context = ValidationContext(trust_roots=roots, moment=NOW, allow_fetching=False, revocation_mode="soft-fail")

    async def pyhanko(n: int, fresh_context: bool) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                ctx = context if not fresh_context else ValidationContext(
                    trust_roots=roots, moment=NOW, allow_fetching=False, revocation_mode="soft-fail")
                await CertificateValidator(leaf, validation_context=ctx).async_validate_usage({"digital_signature"})
            best = min(best, time.perf_counter() - start)
        return n / best

    py_calls = max(calls // 100, 100)
    pyhanko_shared = asyncio.run(pyhanko(py_calls, False))
    pyhanko_fresh = asyncio.run(pyhanko(py_calls, True))
    app.state.service.close()
    return {
        "first_seconds": first_seconds,
        "warm_bytes": warm_bytes,
        "warm_object": warm_object,
        "cold_path": cold_rate,
        "pyhanko_shared": pyhanko_shared,
        "pyhanko_fresh": pyhanko_fresh,
        "cpu": sorted(os.sched_getaffinity(0)),
    }


@section("validation")
def validation_section(args: argparse.Namespace, workdir: Path) -> None:
    calls = 20_000 if args.quick else 100_000
    print(f"== validation (Python {sys.version.split()[0]}, one core)")
    r = run_child("validation", workdir=str(workdir), calls=calls)
    print("jpki.verify.Validator, good user-authentication certificate, revocation='ocsp', hard-fail")
    print(f"  first validation (path, signatures, OCSP round trip in process)  {fmt_seconds(r['first_seconds'])}")
    print(f"  warm revocation cache, DER bytes in          {r['warm_bytes']:>10,.0f} /s  (target >= 5,000/s)")
    print(f"  warm revocation cache, x509.Certificate in   {r['warm_object']:>10,.0f} /s")
    print(f"  cold path, caches cleared, revocation='none' {r['cold_path']:>10,.0f} /s"
          "  (parse, kind, signature, cryptography.x509.verification)")
    print("pyhanko-certvalidator 0.33, plain path validation (no revocation), same certificate")
    print(f"  one ValidationContext reused                 {r['pyhanko_shared']:>10,.0f} /s")
    print(f"  a new ValidationContext per validation       {r['pyhanko_fresh']:>10,.0f} /s")
    print(f"  -> warm jpki is {r['warm_bytes'] / r['pyhanko_shared']:,.0f}x pyhanko's plain validation;"
          f" jpki's cold path is {r['cold_path'] / r['pyhanko_shared']:.1f}x")


# --------------------------------------------------------------------------- OCSP
# The responder as deployed: ``jpki.pki.server.serve(..., workers=2)`` in its own process
# group, a CA database of JPKI size, and a load generator (benchmarks/_ocsp_load.py) in another
# process. Issue 4 §5 target: >= 1,500 responses/s with 20 concurrent clients on this 2-core box.

OCSP_TARGET = 1_500
OCSP_CLIENTS = 20
OCSP_WORKERS = 2
OCSP_HOT = 2_000  # certificates in the hot working set, half of them revoked
OCSP_SECONDS = 10.0  # each timed phase
OCSP_DISTINCT = 60_000  # pre-built distinct requests: bounds workload (b) in count
OCSP_HOT_MAX = 500_000  # bounds workload (a) in count
OCSP_VERIFY = 200  # responses per workload fully checked against the database
#: Gap between the load generator's connects: the workers share one listening socket, and a
#: burst of connects is accepted mostly by one of them (e.g. 15/5); independent clients spread.
OCSP_CONNECT_GAP = 0.02
_OCSP_SERVE = (
    "import sys\n"
    "from jpki.pki.server import serve\n"
    "serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]), workers=int(sys.argv[3]), log_level='info',"
    " responder_key=sys.argv[4])\n"
)
#: Responder key types, as ``serve(responder_key=…)`` takes them, and how they are printed.
OCSP_KEY_LABELS = {"rsa": "RSA-2048", "ec": "ECDSA P-256"}


@child_task("ocsp-db")
def _ocsp_db(p: dict) -> dict:
    """A CA (system clock) in ``workdir/ocsp-ca`` whose database holds ``n`` revoked and ``n``
    good auth certificates (rows only), each kind inserted in one transaction; writes the
    serials the load generator asks about (``hot.txt``, ``distinct.txt``: ``hex status``)."""
    import sqlite3

    from jpki.clock import SystemClock
    from jpki.pki import TestCA
    from jpki.pki.db import RevokedRow

    workdir, n = Path(p["workdir"]), p["n"]
    start = time.perf_counter()
    ca = TestCA.init(workdir / "ocsp-ca", clock=SystemClock())
    init_seconds = time.perf_counter() - start
    rnd = random.Random(p["seed"])
    serials: set[int] = set()
    while len(serials) < 2 * n:
        serials.add(rnd.getrandbits(159) or 1)
    ordered = list(serials)
    rnd.shuffle(ordered)
    revoked_serials, good_serials = ordered[:n], ordered[n:]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    five_years = 5 * 365 * 86400
    # Input in serial order (hex text, the primary key), as a dump would give it: SQLite then
    # appends to its index instead of inserting at random places.
    revoked_serials.sort(key=lambda s: format(s, "x"))
    good_serials.sort(key=lambda s: format(s, "x"))
    revoked_rows = []
    for i, serial in enumerate(revoked_serials):
        when = now - dt.timedelta(seconds=rnd.randrange(60, five_years))
        invalid = when - dt.timedelta(hours=1 + i % 72) if i % 3 == 0 else None
        revoked_rows.append(RevokedRow(serial, "auth", when, REASONS[i % len(REASONS)].value, invalid))
    good_rows = []
    for serial in good_serials:
        issued = now - dt.timedelta(seconds=rnd.randrange(60, five_years))
        begin = issued.isoformat(timespec="seconds")
        end = (issued + dt.timedelta(days=5 * 365)).isoformat(timespec="seconds")
        good_rows.append((format(serial, "x"), begin, end, begin))
    base = peak_rss_mb()

    start = time.perf_counter()
    inserted = ca.db.bulk_insert_revoked(revoked_rows, card="bench-revoked",
                                         not_after=now + dt.timedelta(days=365))
    revoked_seconds = time.perf_counter() - start
    assert inserted == n
    # No helper inserts good rows in bulk: one transaction of plain INSERTs, the columns
    # CertificateDB.record writes (no certificate DER, as bulk_insert_revoked).
    conn = sqlite3.connect(ca.db.path, isolation_level=None, timeout=10.0)
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO certificates (serial, kind, card, subject, not_before, not_after, status,"
        " der, issued_at) VALUES (?, 'auth', 'bench-good', '', ?, ?, 'good', x'', ?)",
        good_rows,
    )
    conn.execute("COMMIT")
    good_seconds = time.perf_counter() - start
    start = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint_seconds = time.perf_counter() - start
    counts = dict(conn.execute(
        "SELECT status, count(*) FROM certificates WHERE kind = 'auth' GROUP BY status").fetchall())
    conn.close()
    ca.close()

    status = {s: "revoked" for s in revoked_serials}
    status.update((s, "good") for s in good_serials)
    half = p["hot"] // 2
    hot = rnd.sample(revoked_serials, half) + rnd.sample(good_serials, p["hot"] - half)
    rnd.shuffle(hot)
    taken = set(hot)
    distinct = [s for s in rnd.sample(ordered, min(2 * n, p["distinct"] + len(hot)))
                if s not in taken][: p["distinct"]]
    for name, chosen in (("hot.txt", hot), ("distinct.txt", distinct)):
        (workdir / name).write_text("".join(f"{s:x} {status[s]}\n" for s in chosen))
    return {
        "init_seconds": init_seconds,
        "revoked_seconds": revoked_seconds,
        "good_seconds": good_seconds,
        "checkpoint_seconds": checkpoint_seconds,
        "db_bytes": (workdir / "ocsp-ca" / "certs.db").stat().st_size,
        "counts": counts,
        "base_mb": base,
        "peak_mb": peak_rss_mb(),
        "hot_revoked": sum(status[s] == "revoked" for s in hot),
        "distinct": len(distinct),
        "distinct_revoked": sum(status[s] == "revoked" for s in distinct),
    }


@child_task("ocsp-load")
def _ocsp_load(p: dict) -> dict:
    """One workload of the load generator (benchmarks/_ocsp_load.py), in its own process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _ocsp_load

    return _ocsp_load.run(p)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _OcspServer:
    """``serve(ca_dir, "127.0.0.1", port, workers=N, responder_key=K)`` in a subprocess, in its
    own session: a Ctrl-C reaches only us, and we stop it (:meth:`stop`, in a ``finally``)."""

    def __init__(self, ca_dir: Path, log_path: Path, workers: int, responder_key: str = "rsa") -> None:
        self.ca_dir, self.log_path, self.workers = ca_dir, log_path, workers
        self.responder_key = responder_key
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers_pids: list[int] = []

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until /healthz answers and every worker has started; seconds taken."""
        import urllib.error
        import urllib.request

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        start = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _OCSP_SERVE, str(self.ca_dir), str(self.port), str(self.workers),
                 self.responder_key],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        url = f"http://127.0.0.1:{self.port}/healthz"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OCSP server exited ({self.proc.returncode}):\n{self.log()}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"the OCSP server did not start in {timeout:.0f} s:\n{self.log()}")
            ready = self.log().count("Application startup complete.") >= self.workers
            if ready:
                try:
                    with opener.open(url, timeout=2) as resp:
                        health = json.load(resp)
                        if resp.status == 200 and health["status"] == "ok":
                            if health.get("responder_key") != self.responder_key:
                                raise RuntimeError(f"the server signs with {health.get('responder_key')}"
                                                   f" responders, not {self.responder_key}")
                            break
                except (urllib.error.URLError, OSError, ValueError):
                    pass
            time.sleep(0.1)
        self.workers_pids = [pid for pid in _descendants(self.proc.pid) if b"spawn_main" in _cmdline(pid)]
        return time.perf_counter() - start

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to uvicorn's supervisor (it stops its workers); SIGKILL to the process group
        if anything of it is left after 15 s."""
        import signal

        proc = self.proc
        if proc is None:
            return
        pids = [proc.pid, *self.workers_pids, *_descendants(proc.pid)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids[1:]):
            time.sleep(0.1)
        if proc.poll() is None or any(_alive(pid) for pid in pids[1:]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group we created (start_new_session)
            proc.wait(5)
        self.proc = None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _versions(*names: str) -> str:
    from importlib import metadata

    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def _print_ocsp_workload(label: str, r: dict, workers: list[int]) -> int:
    """Print one workload's figures; returns its error count (errors and failed checks)."""
    seconds = r["seconds"]
    errors = sum(r["errors"].values()) + sum(r["warmup"]["errors"].values())
    problems = sum(r["verify_problems"].values())
    print(f"  {label}")
    print(f"    requests pre-built: {r['distinct']:,} in {r['build_seconds']:.1f} s;"
          f" warm-up (untimed): {r['warmup']['count']:,} responses in"
          f" {r['warmup']['seconds']:.1f} s")
    print(f"    {r['count']:,} responses in {seconds:.2f} s = {r['rate']:,.0f} responses/s"
          f"   latency p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms,"
          f" p99 {r['p99_ms']:.2f} ms (max {r['max_ms']:.1f} ms)")
    print(f"    errors: {errors}" + (f" {r['errors']} warm-up {r['warmup']['errors']}" if errors else
                                     "  (every response: HTTP 200, successful, CertStatus of the"
                                     " CertID sent = the status inserted)"))
    sampled = r["statuses"]
    print(f"    verified against certs.db: {r['verified']} sampled responses"
          f" ({sampled.get('revoked', 0)} revoked, {sampled.get('good', 0)} good) - signature,"
          f" responder certificate, serial, status, revocation time and reason:"
          f" {problems} mismatches" + (f" {r['verify_problems']}" if problems else ""))
    conns = r["connections_per_process"]
    server_cpu = sum(r["server_cpu"].values()) / seconds
    per_worker = ", ".join(
        f"{r['server_cpu'].get(str(pid), 0.0) / seconds:.2f} ({conns.get(str(pid), 0)} conns)"
        for pid in workers)
    machine = {k: v / seconds for k, v in r["machine"].items()}
    other = max(0.0, machine["processes"] - server_cpu - r["client_cpu"] / seconds)
    print(f"    CPU (cores): server {server_cpu:.2f} [workers: {per_worker}],"
          f" load generator {r['client_cpu'] / seconds:.2f}, other processes {other:.2f},"
          f" interrupts {machine['interrupts']:.2f}, steal {machine['steal']:.2f},"
          f" idle {machine['idle']:.2f}; server CPU per response"
          f" {sum(r['server_cpu'].values()) / max(1, r['count']) * 1e6:.0f} µs")
    print(f"    -> {r['rate'] / OCSP_TARGET:.2f}x the {OCSP_TARGET:,}/s target"
          f" ({'met' if r['rate'] >= OCSP_TARGET else 'NOT met'})")
    return errors + problems


@section("ocsp")
def ocsp_section(args: argparse.Namespace, workdir: Path) -> None:
    import signal

    n = 20_000 if args.quick else 1_000_000
    distinct_n = min(OCSP_DISTINCT, 2 * n - OCSP_HOT)
    print(f"== OCSP responder (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
          f" {_versions('uvicorn', 'httptools', 'uvloop', 'starlette', 'cryptography')};"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start)")
    r = run_child("ocsp-db", workdir=str(workdir), n=n, hot=OCSP_HOT, distinct=distinct_n, seed=3)
    print(f"database: {r['counts'].get('revoked', 0):,} revoked + {r['counts'].get('good', 0):,}"
          f" good auth certificates, {r['db_bytes'] / 2**20:.0f} MiB"
          f" (TestCA.init {r['init_seconds']:.1f} s)")
    print(f"  CertificateDB.bulk_insert_revoked {n:>9,} rows, one transaction"
          f" {fmt_seconds(r['revoked_seconds'])}  ({n / r['revoked_seconds']:,.0f} rows/s)")
    print(f"  good rows: executemany INSERT     {n:>9,} rows, one transaction"
          f" {fmt_seconds(r['good_seconds'])}  ({n / r['good_seconds']:,.0f} rows/s)")
    print(f"  WAL checkpoint {fmt_seconds(r['checkpoint_seconds']).strip()};"
          f" peak RSS of the loader {r['peak_mb']:.0f} MiB (rows pre-built: {r['base_mb']:.0f})")

    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the server's stop()

    signal.signal(signal.SIGTERM, terminate)
    key_types = ["rsa", "ec"] if args.responder_key == "both" else [args.responder_key]
    failures = 0
    results: dict[str, tuple[dict, dict]] = {}
    try:
        for key_type in key_types:
            hot, fresh, errors = _ocsp_run(workdir, r, key_type, n, distinct_n)
            results[key_type] = (hot, fresh)
            failures += errors
    finally:
        signal.signal(signal.SIGTERM, previous)
    if len(results) > 1:
        print("summary: responses/s by responder key (target >= "
              f"{OCSP_TARGET:,}/s; server CPU per response in brackets)")
        for key_type, (hot, fresh) in results.items():
            per = {w: sum(x["server_cpu"].values()) / max(1, x["count"]) * 1e6 for w, x in
                   (("a", hot), ("b", fresh))}
            print(f"  {OCSP_KEY_LABELS[key_type]:<12} (a) cached {hot['rate']:>8,.0f}/s [{per['a']:4.0f} µs]"
                  f"   (b) every response signed {fresh['rate']:>8,.0f}/s [{per['b']:4.0f} µs]"
                  f"  {'met' if fresh['rate'] >= OCSP_TARGET else 'NOT met'}")
        rsa_b, ec_b = results["rsa"][1]["rate"], results["ec"][1]["rate"]
        print(f"  -> (b) with ECDSA P-256 responders: {ec_b / rsa_b:.1f}x the RSA-2048 rate")
    if failures:
        raise RuntimeError(f"OCSP benchmark: {failures} errors or failed checks (see above)")


def _ocsp_run(workdir: Path, db: dict, key_type: str, n: int, distinct_n: int) -> tuple[dict, dict, int]:
    """Workloads (a) and (b) against a server whose responders have ``key_type`` keys; the two
    results and the count of errors and failed checks."""
    label = OCSP_KEY_LABELS[key_type]
    failures = 0
    server = _OcspServer(workdir / "ocsp-ca", workdir / f"ocsp-server-{key_type}.log", OCSP_WORKERS,
                         key_type)
    try:
        ready = server.start()
        workers = server.workers_pids
        print(f"-- responder key {key_type} ({label})")
        print(f"server: jpki.pki.server.serve(ca_dir, '127.0.0.1', {server.port},"
              f" workers={OCSP_WORKERS}, responder_key={key_type!r}) in a subprocess (uvicorn"
              f" supervisor + {len(workers)} worker processes {workers}), /healthz ok after {ready:.1f} s")
        print(f"load: one process, {OCSP_CLIENTS} concurrent HTTP/1.1 keep-alive connections"
              f" (opened {OCSP_CONNECT_GAP * 1e3:.0f} ms apart), one request in flight each,"
              " POST /ocsp/auth of pre-built DER requests (SHA-1 CertID, no nonce), loopback;"
              f" each timed phase {OCSP_SECONDS:.0f} s or its request bound")
        common = {"ca_dir": str(workdir / "ocsp-ca"), "port": server.port,
                  "clients": OCSP_CLIENTS, "seconds": OCSP_SECONDS, "verify": OCSP_VERIFY,
                  "server_pids": workers, "warmup_seconds": 60.0,
                  "connect_gap": OCSP_CONNECT_GAP}
        hot = run_child("ocsp-load", serials=str(workdir / "hot.txt"), mode="hot",
                        max_requests=OCSP_HOT_MAX, warmup_passes=2, **common)
        failures += _print_ocsp_workload(
            f"(a) [{label}] hot working set: {OCSP_HOT:,} distinct certificates"
            f" ({db['hot_revoked']:,} revoked), cycled; no nonce, so RFC 5019 cached responses are"
            " served (re-validated against the database) - the steady state of a relying-party"
            " population", hot, workers)
        fresh = run_child("ocsp-load", serials=str(workdir / "distinct.txt"), mode="distinct",
                          max_requests=distinct_n, warmup=500, **common)
        failures += _print_ocsp_workload(
            f"(b) [{label}] every request a distinct certificate: {db['distinct']:,} drawn from"
            f" the {2 * n:,}"
            f" ({db['distinct_revoked']:,} revoked), each response freshly signed ({label})",
            fresh, workers)
        if server.proc is None or server.proc.poll() is not None:
            failures += 1
            print("  the server exited during the run:\n" + server.log())
    finally:
        server.stop()
    return hot, fresh, failures


# --------------------------------------------------------------------------- codec section
# Hand-written DER (jpki.der) is kept only where it beats, or does what, the library cannot:
# each figure here is jpki next to the library doing the same job, in the same process.

CODEC_FRESHNESS = dt.timedelta(minutes=15)


def _best_per_call(fn: Callable[[], object], calls: int, rounds: int = 3) -> float:
    """Seconds per call of ``fn``: the best of ``rounds`` rounds of ``calls`` calls."""
    return 1 / _rate(fn, calls, rounds)


def _codec_responders(workdir: Path) -> tuple[x509.Certificate, dict[str, tuple]]:
    """The sign CA, and responder (certificate, key) pairs it issued: RSA-2048 and ECDSA P-256."""
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_cert, ca_key = load_issuer(workdir)
    out = {}
    for label, key in (("RSA-2048", rsa.generate_private_key(65537, 2048)),
                       ("ECDSA P-256", ec.generate_private_key(ec.SECP256R1()))):
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"OCSP {label}")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .sign(ca_key, hashes.SHA256())
        )
        out[label] = (cert, key)
    return ca_cert, out


def _verdict(ours: float, theirs: float) -> str:
    """``jpki 2.5x faster`` / ``jpki 1.3x slower`` from two times per operation."""
    return f"jpki {theirs / ours:.1f}x faster" if ours <= theirs else f"jpki {ours / theirs:.1f}x slower"


@child_task("codec-ocsp")
def _codec_ocsp(p: dict) -> dict:
    """OCSP requests parsed and responses built per second: jpki's responder next to
    cryptography (parse; OCSPResponseBuilder) on the same requests and keys."""
    import hashlib
    import itertools
    from functools import partial

    from asn1crypto import keys as asn1_keys
    from asn1crypto import ocsp as asn1_ocsp
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.x509 import ocsp

    from jpki.revocation.ocsp import OcspResponder, StatusRow

    ca_cert, responders = _codec_responders(Path(p["workdir"]))
    name_der = ca_cert.subject.public_bytes()
    spki = ca_cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    key_bits = bytes(asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])
    rnd = random.Random(11)
    serials = [rnd.getrandbits(159) | 1 << 150 for _ in range(p["requests"])]
    statuses = {s: StatusRow("sign", "good", None, None) for s in serials}

    def request(serial: int, nonce: bool) -> bytes:
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            hashlib.sha1(name_der).digest(), hashlib.sha1(key_bits).digest(), serial, hashes.SHA1())
        if nonce:
            builder = builder.add_extension(x509.OCSPNonce(rnd.randbytes(16)), critical=False)
        return builder.build().public_bytes(serialization.Encoding.DER)

    def multi(serial: int) -> bytes:
        cids = [asn1_ocsp.CertId({"hash_algorithm": {"algorithm": "sha1"},
                                  "issuer_name_hash": hashlib.sha1(name_der).digest(),
                                  "issuer_key_hash": hashlib.sha1(key_bits).digest(),
                                  "serial_number": s}) for s in (serial, serial + 2)]
        return asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": c} for c in cids]}}).dump()

    plain = [request(s, False) for s in serials]
    nonced = [request(s, True) for s in serials]
    several = [multi(s) for s in serials[: max(10, len(serials) // 20)]]

    def per_call(fn: Callable[[bytes], object], items: list[bytes], calls: int, rounds: int = 3) -> float:
        """Seconds per ``fn(request)``, the requests taken in turn."""
        it = itertools.cycle(items)
        return _best_per_call(lambda: fn(next(it)), calls, rounds)

    figures: dict[str, float] = {}
    n = len(serials)

    def crypto_parse(der: bytes) -> object:
        req = ocsp.load_der_ocsp_request(der)
        return (req.hash_algorithm, req.issuer_name_hash, req.issuer_key_hash, req.serial_number,
                [e.value for e in req.extensions])

    responder = OcspResponder(statuses.get, {"sign": (ca_cert, *responders["ECDSA P-256"])},
                              FixedClock(NOW), freshness=CODEC_FRESHNESS, cache_size=0)
    for label, items in (("plain", plain), ("nonce", nonced)):
        figures[f"parse_crypto_{label}"] = per_call(crypto_parse, items, n)
        figures[f"parse_jpki_{label}"] = per_call(responder._parse, items, n)
    figures["parse_jpki_several"] = per_call(responder._parse, several, len(several))

    def sign(tbs: bytes, key: object) -> bytes:
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.sign(tbs, ec.ECDSA(hashes.SHA256()))

    def crypto_respond(der: bytes, cert: x509.Certificate, key: object) -> bytes:
        req = ocsp.load_der_ocsp_request(der)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(req.issuer_name_hash, req.issuer_key_hash, req.serial_number,
                                  req.hash_algorithm, ocsp.OCSPCertStatus.GOOD, NOW,
                                  NOW + CODEC_FRESHNESS, None, None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
            .certificates([cert])
        )
        for ext in req.extensions:
            builder = builder.add_extension(ext.value, critical=ext.critical)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]

    for label, (cert, key) in responders.items():
        responder = OcspResponder(statuses.get, {"sign": (ca_cert, cert, key)}, FixedClock(NOW),
                                  freshness=CODEC_FRESHNESS, cache_size=0)
        calls = n if label.startswith("EC") else max(20, n // 10)
        assert ocsp.load_der_ocsp_response(responder.respond(nonced[0])).certificate_status \
            is ocsp.OCSPCertStatus.GOOD
        assert ocsp.load_der_ocsp_response(crypto_respond(nonced[0], cert, key)).certificate_status \
            is ocsp.OCSPCertStatus.GOOD
        # Interleaved rounds (the signature dominates, and a shared machine drifts): best of 5.
        jobs = {"build_jpki": (responder.respond, nonced),
                "build_crypto": (partial(crypto_respond, cert=cert, key=key), nonced),
                "sign": (partial(sign, key=key), [b"\x30" * 200])}
        for _ in range(5):
            for name, (fn, items) in jobs.items():
                took = per_call(fn, items, calls, rounds=1)
                figures[f"{name}_{label}"] = min(figures.get(f"{name}_{label}", took), took)
    return figures


@child_task("codec-crl")
def _codec_crl(p: dict) -> dict:
    """CRL build, load and look-up: jpki (jpki.der) next to cryptography at the same sizes."""
    cert, key = load_issuer(Path(p["workdir"]))
    figures: dict[str, float] = {}
    for n in p["sizes"]:
        entries = make_entries(n, seed=n)
        start = time.perf_counter()
        der = build_crl(cert, key, entries, crl_number=1, this_update=NOW, next_update=NEXT)
        figures[f"build_jpki_{n}"] = time.perf_counter() - start
        start = time.perf_counter()
        cryptography_crl(cert, key, entries)
        figures[f"build_crypto_{n}"] = time.perf_counter() - start
        start = time.perf_counter()
        crl = LoadedCRL.from_der(der, cert, now=NOW)
        figures[f"load_jpki_{n}"] = time.perf_counter() - start
        start = time.perf_counter()
        theirs = x509.load_der_x509_crl(der)
        assert theirs.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
        figures[f"load_crypto_{n}"] = time.perf_counter() - start
        targets = [e.serial for e in entries[:: max(1, n // 200)]]
        figures[f"lookup_jpki_{n}"] = min(_per_call(crl.lookup, targets) for _ in range(3))
        figures[f"lookup_crypto_{n}"] = _per_call(theirs.get_revoked_certificate_by_serial_number,
                                                  targets[:50])
    return figures


@section("codec")
def codec_section(args: argparse.Namespace, workdir: Path) -> None:
    import cryptography

    print(f"== DER codecs: jpki next to the library, same process (Python {sys.version.split()[0]},"
          f" cryptography {cryptography.__version__}; load average"
          f" {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    r = run_child("codec-ocsp", workdir=str(workdir), requests=2_000)

    def row(label: str, ours: float, theirs: float, what: str = "") -> None:
        print(f"  {label:<46} jpki {ours * 1e6:8.2f} µs ({1 / ours:>9,.0f}/s)"
              f"   cryptography {theirs * 1e6:8.2f} µs ({1 / theirs:>9,.0f}/s)"
              f"   {_verdict(ours, theirs)}{what}")

    print("OCSP requests parsed (one CertID, SHA-1; jpki: OcspResponder's reader, cryptography:"
          " load_der_ocsp_request + the fields read)")
    row("no nonce", r["parse_jpki_plain"], r["parse_crypto_plain"])
    row("16-octet nonce", r["parse_jpki_nonce"], r["parse_crypto_nonce"])
    print(f"  {'two CertIDs (asn1crypto; cryptography refuses)':<46} jpki"
          f" {r['parse_jpki_several'] * 1e6:8.2f} µs ({1 / r['parse_jpki_several']:>9,.0f}/s)")
    print("OCSP responses built and signed (request in, DER out; one CertID, nonce echoed;"
          " cryptography: OCSPResponseBuilder.add_response_by_hash)")
    for label in ("RSA-2048", "ECDSA P-256"):
        ours, theirs, sign = (r[f"build_jpki_{label}"], r[f"build_crypto_{label}"], r[f"sign_{label}"])
        row(label, ours, theirs,
            f"   (less the signature, {sign * 1e6:.0f} µs: jpki {(ours - sign) * 1e6:.1f} µs,"
            f" cryptography {(theirs - sign) * 1e6:.1f} µs)")
    sizes = [2_000, 20_000]
    r = run_child("codec-crl", workdir=str(workdir), sizes=sizes)
    print("CRLs (build_crl and LoadedCRL on jpki.der; cryptography's builder, load_der_x509_crl +"
          " is_signature_valid, get_revoked_certificate_by_serial_number)")
    for n in sizes:
        for what in ("build", "load", "lookup"):
            ours, theirs = r[f"{what}_jpki_{n}"], r[f"{what}_crypto_{n}"]
            print(f"  {what + ' ' + format(n, ',') + ' entries':<28} jpki {fmt_seconds(ours)}"
                  f"   cryptography {fmt_seconds(theirs)}   {_verdict(ours, theirs)}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes, no slow baselines")
    parser.add_argument("--no-db", action="store_true", help="skip the CA database measurement")
    parser.add_argument("--responder-key", choices=["rsa", "ec", "both"], default="both",
                        help="ocsp: the responder key type(s) to measure (default: both)")
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
