"""Card-login benchmark: how many login answers the relying party verifies per second.

Sections (run both, or pick with ``--section``):

``library``
    :meth:`jpki.auth.RelyingParty.complete_login` in this process, pinned to one core, memory
    challenge store, with a warm revocation cache (the test CA's revocation server answered
    OCSP once, over HTTP, before the clock starts). The login answers are signed beforehand
    with the card's user-authentication key loaded from the card directory — exactly what the
    card's COMPUTE DIGITAL SIGNATURE returns (one answer is made by the emulated card itself and
    checked first), so that the measured thing is the relying party's verification: JSON and
    base64url decoding, the signed client data, the atomic single-use ``take``, the RSA
    signature, the certificate validation (cached path, validity, cached OCSP) and the account.
    Target >= 3,000/s. Also: the bare RSA-2048 verification rate on the same core (the floor
    of what a login costs) and eKYC verifications/s (CMS) for comparison.

``http``
    ``jpki rp serve --workers 2 --store redis://…`` (a private ``redis-server`` started here)
    in a subprocess; challenges issued into the same Redis by a :class:`RelyingParty` in this
    process (what ``POST /api/login/begin`` does), answers signed beforehand; then a load
    generator (asyncio, uvloop when installed, keep-alive HTTP/1.1 connections, ``-c``
    concurrent) POSTs them to ``/api/login/complete``. Every answer must come back 200 with
    ``"ok": true``. Reports completions/s with p50/p95/p99 latency, and the CPU each process
    used. Target >= 1,000/s on a 2-core machine (the load generator and Redis share it).

Usage::

    python benchmarks/login.py                          # both sections
    python benchmarks/login.py --section library -n 20000
    python benchmarks/login.py --section http -n 30000 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jpki.auth import MemoryStore, RedisStore, RelyingParty
from jpki.auth.client import answer_ekyc, answer_login
from jpki.auth.protocol import ClientData, LoginResponse
from jpki.clock import SystemClock
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA
from jpki.pki.server import serve_in_thread
from jpki.provision import Home, create_card, read_holder
from jpki.session import JpkiSession
from jpki.transport import open_transport
from jpki.verify import TrustStore, Validator

RP_ID = "http://127.0.0.1:8480"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1e3

    return f"p50 {pct(50):.0f} µs, p95 {pct(95):.0f} µs, p99 {pct(99):.0f} µs, max {ordered[-1] / 1e3:.0f} µs"


# --------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def test_home() -> Iterator[tuple[Path, str]]:
    """A temporary home with a test CA (naming a free port) whose revocation server runs in a
    thread here, and alice's card. Yields (home, CA base URL)."""
    with tempfile.TemporaryDirectory(prefix="jpki-login-bench-") as tmp:
        path = Path(tmp) / "home"
        path.mkdir(mode=0o700)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        clock = SystemClock()
        TestCA.init(path / "ca", clock=clock, base_url=base).close()
        create_card(Home(path), "alice", SAMPLE_PERSONAS["alice"], clock=clock)
        with serve_in_thread(path / "ca", "127.0.0.1", port):
            yield path, base


def card_key(home: Path, name: str = "alice") -> tuple[rsa.RSAPrivateKey, bytes]:
    """The card's user-authentication private key (from its directory) and certificate."""
    directory = Home(home).card_dir(name)
    card = json.loads((directory / "card.json").read_text())
    key = serialization.load_pem_private_key((directory / card["keys"]["auth"]).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    with Home(home).open_ca() as ca:
        record = ca.db.get(read_holder(Home(home), name).auth_serial)
    assert record is not None
    return key, record.der


def presign(rp: RelyingParty, key: rsa.RSAPrivateKey, cert: bytes, n: int) -> list[bytes]:
    """``n`` login answers (JSON bodies) to fresh challenges of ``rp``."""
    bodies = []
    for _ in range(n):
        challenge = rp.begin_login()
        data = ClientData.for_challenge(challenge).encode()
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        bodies.append(json.dumps(LoginResponse(challenge.id, data, cert, signature).to_json()).encode())
    return bodies


def check_with_the_card(rp: RelyingParty, home: Path, key: rsa.RSAPrivateKey) -> None:
    """One answer made by the emulated card: the same bytes as the key's signature."""
    challenge = rp.begin_login()
    with open_transport("emu:alice", home=home) as t:
        answer = answer_login(challenge, JpkiSession(t), pin=lambda: "1234")
    expected = key.sign(answer.client_data, padding.PKCS1v15(), hashes.SHA256())
    assert answer.signature == expected, "the card's signature differs from the key's"
    result = rp.complete_login(answer)
    assert result.ok, result.summary()


# --------------------------------------------------------------------------- library


def library(n: int, ekyc_n: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"== library: RelyingParty.complete_login, one core (cpu {min(os.sched_getaffinity(0))}), "
          "memory store, warm revocation cache")
    with test_home() as (home, _base):
        validator = Validator(TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca"), clock=SystemClock())
        rp = RelyingParty(RP_ID, validator, MemoryStore(), SystemClock(),
                          challenge_ttl=dt.timedelta(minutes=30))
        key, cert = card_key(home)
        check_with_the_card(rp, home, key)           # also warms the OCSP cache over HTTP
        t0 = time.perf_counter()
        bodies = presign(rp, key, cert, n + 200)
        print(f"   {n + 200} answers signed beforehand in {time.perf_counter() - t0:.1f} s")
        for body in bodies[:200]:                     # warm-up (and a fresh OCSP answer)
            assert rp.complete_login(body).ok
        bodies = bodies[200:]
        samples: list[int] = []
        clock = time.perf_counter_ns
        cpu0 = time.process_time()
        start = clock()
        for body in bodies:
            t = clock()
            result = rp.complete_login(body)
            samples.append(clock() - t)
            if not result.ok:
                raise SystemExit(f"login refused: {result.summary()}")
        elapsed = (clock() - start) / 1e9
        cpu = time.process_time() - cpu0
        rate = n / elapsed
        print(f"   {n} logins verified in {elapsed:.2f} s: {rate:,.0f} logins/s "
              f"(target >= 3,000/s: {'met' if rate >= 3000 else 'NOT met'}); CPU {cpu:.2f} s")
        print(f"   latency {percentiles(samples)}")
        again = rp.complete_login(bodies[0])
        assert again.reason == "replayed"
        # the floor: one RSA-2048 signature verification
        public = key.public_key()
        data = ClientData.for_challenge(rp.begin_login()).encode()
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        rounds = 20000
        start = clock()
        for _ in range(rounds):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        floor = rounds / ((clock() - start) / 1e9)
        print(f"   baseline: RSA-2048 PKCS#1 v1.5 verify alone {floor:,.0f}/s "
              f"(a login costs {floor / rate:.1f}x one signature check)")
        # eKYC: CMS verification with the basic 4 info, for comparison
        if ekyc_n:
            with open_transport("emu:alice", home=home) as t:
                session = JpkiSession(t)
                answers = [answer_ekyc(rp.begin_ekyc("bench"), session, pin=lambda: "ABC123")
                           for _ in range(ekyc_n)]
            assert rp.complete_ekyc(answers[0]).ok
            start = clock()
            for answer in answers[1:]:
                assert rp.complete_ekyc(answer).ok
            erate = (ekyc_n - 1) / ((clock() - start) / 1e9)
            print(f"   eKYC (CMS + basic 4 info) verified: {erate:,.0f}/s "
                  f"({ekyc_n - 1} answers signed by the emulated card)")


# --------------------------------------------------------------------------- http


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="jpki-bench-redis-") as tmp:
        port = free_port()
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", tmp, "--daemonize", "no"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its children (from /proc)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[list[int], dict[int, int], int, int]:
    """POST every body to /api/login/complete over ``concurrency`` keep-alive connections;
    returns latencies (ns), statuses, answers refused, and 503 busy answers sent again."""
    queue = iter(bodies)
    samples: list[int] = []
    statuses: dict[int, int] = {}
    refused = busy = 0
    head = (b"POST /api/login/complete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: ")
    clock = time.perf_counter_ns

    async def connection() -> None:
        nonlocal refused, busy
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in queue:
                t = clock()
                while True:   # a 503 "busy" (every verification slot taken) is sent again, as a client would
                    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                    header = await reader.readuntil(b"\r\n\r\n")
                    status = int(header[9:12])
                    length, close = 0, False
                    for line in header.split(b"\r\n")[1:]:
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                        elif line.lower().replace(b" ", b"") == b"connection:close":
                            close = True
                    answer = await reader.readexactly(length)
                    if close:   # the server's last answer on this connection (every 20 requests)
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    if status != 503 or b'"busy"' not in answer:
                        break
                    busy += 1
                    await asyncio.sleep(0.002)
                samples.append(clock() - t)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200 or b'"ok":true' not in answer.replace(b" ", b""):
                    refused += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return samples, statuses, refused, busy


def http(n: int, concurrency: int, workers: int) -> None:
    print(f"== http: jpki rp serve --workers {workers} --store redis://… (private redis-server), "
          f"{concurrency} concurrent keep-alive clients, POST /api/login/complete")
    with test_home() as (home, _base), redis_server() as redis_url:
        port = free_port()
        rp_id = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "jpki", "--home", str(home), "rp", "serve", "--store", redis_url,
             "--workers", str(workers), "--port", str(port), "--rp-id", rp_id, "--log-level", "warning",
             # one load generator is one client address: lift the per-client limits
             "--rate-limit", "0", "--max-pending", "0"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    break
                if server.poll() is not None or time.monotonic() > deadline:
                    why = server.stderr.read().decode() if server.stderr else ""
                    raise SystemExit(f"jpki rp serve did not start: {why}")
                time.sleep(0.1)
            # Challenges go into the shared Redis exactly as the service's begin endpoint puts them.
            issuer = RelyingParty(rp_id, Validator(TrustStore.jlis()), RedisStore(redis_url), SystemClock(),
                                  challenge_ttl=dt.timedelta(minutes=30))
            key, cert = card_key(home)
            t0 = time.perf_counter()
            warm = presign(issuer, key, cert, 400)
            bodies = presign(issuer, key, cert, n)
            print(f"   {n + 400} challenges issued into Redis and answered beforehand in "
                  f"{time.perf_counter() - t0:.1f} s")
            runner = asyncio.run
            with contextlib.suppress(ImportError):
                import uvloop

                runner = uvloop.run  # type: ignore[assignment]
            _, statuses, refused, _ = runner(load(port, warm, concurrency))   # both workers warm
            if refused:
                raise SystemExit(f"warm-up refused {refused} answers: {statuses}")
            cpu_server0 = cpu_seconds(server.pid)
            cpu_self0 = time.process_time()
            start = time.perf_counter()
            samples, statuses, refused, busy = runner(load(port, bodies, concurrency))
            elapsed = time.perf_counter() - start
            cpu_server = cpu_seconds(server.pid) - cpu_server0
            cpu_self = time.process_time() - cpu_self0
            rate = n / elapsed
            print(f"   {n} logins verified in {elapsed:.2f} s: {rate:,.0f} logins/s "
                  f"(target >= 1,000/s: {'met' if rate >= 1000 else 'NOT met'}); statuses {statuses}, "
                  f"refused {refused}; 503 busy answers sent again: {busy}")
            print(f"   latency {percentiles(samples)}")
            print(f"   CPU: server workers {cpu_server:.1f} s, load generator {cpu_self:.1f} s "
                  f"(of {elapsed * os.cpu_count():.1f} s available on {os.cpu_count()} cores)")
            again = runner(load(port, bodies[:1], 1))
            assert again[2] == 1, "a replayed answer was accepted"
            issuer.store.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=["library", "http", "all"], default="all")
    parser.add_argument("-n", type=int, default=None, help="logins measured (library 10,000; http 20,000)")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="concurrent HTTP connections")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--ekyc", type=int, default=101, help="eKYC answers to verify (0: skip)")
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo")
    model = (cpuinfo.read_text().split("model name")[1].split(":")[1].splitlines()[0].strip()
             if cpuinfo.exists() else "?")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {model}")
    if args.section in ("library", "all"):
        library(args.n or 10_000, args.ekyc)
    if args.section in ("http", "all"):
        if args.section == "all":
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        http(args.n or 20_000, args.concurrency, args.workers)
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
