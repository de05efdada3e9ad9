"""Timestamp tokens per second: ``jpki tsa serve --workers 2`` next to ``openssl ts -reply``.

One throw-away home (a test CA and its TSA: RSA-2048, like JPKI) serves both sides, so they sign
with the same key and certificate, the same policy, SHA-256 and the same query files:

``jpki``
    ``python -m jpki tsa serve --workers 2 --rate-limit 0`` in its own process group; C
    keep-alive HTTP/1.1 connections (asyncio, uvloop when installed) each with one request in
    flight post pre-built TimeStampReqs (distinct SHA-256 imprints, a nonce, certReq) for
    ``--seconds`` after an untimed warm-up. Every answer must be HTTP 200 and granted, every
    serial distinct; afterwards a sample of tokens is checked with :func:`jpki.tsa.verify_token`
    and one with ``openssl ts -verify``. Each token costs a signature *and* a durable commit of
    its serial (SQLite, fsync), shared by the two workers.

``openssl ts -reply``
    OpenSSL's own TSA (``openssl ts -reply -config … -queryfile q.tsq -signer tsa.pem -inkey
    tsa.key``), the only way the openssl tool serves tokens: one process per token, so its
    figure includes starting a process and loading the key each time. Two lanes run at once
    (both cores, as the two workers). Each lane has its own serial file, because openssl reads
    and rewrites it with no lock and no fsync: two lanes sharing one would hand out the same
    serials; this is easier on openssl than jpki's shared, durable counter.

To say how much of openssl's figure is the process and not the TSA, the same lanes time
``openssl version`` (a process start and nothing else) and ``openssl pkey -in tsa.key -noout``
(a start and the key load): openssl's time per token minus the latter's is the cost of its TSA
code proper, given as "openssl ts, net of process start". ``openssl speed -multi 2 rsa2048``
gives the RSA-2048 signatures per second these two cores can make at all: the ceiling of any
TSA that signs each token with this key (not in ``--quick``).

The load generator runs on the same two cores as the server (as openssl's lane driver does):
numbers move with whatever else the machine does; the load average is printed first. Use
``--quick`` (3 s, few openssl runs) while others work.

Usage::

    python benchmarks/tsa.py --quick
    python benchmarks/tsa.py --seconds 20 --clients 16 --openssl-tokens 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asn1crypto import tsp

from jpki.clock import SystemClock
from jpki.pki import TestCA
from jpki.tsa import TSA_POLICY, verify_token
from jpki.tsa.credentials import ensure_tsa
from jpki.tsa.protocol import QUERY_TYPE, make_query, new_nonce
from jpki.verify import TrustStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_home(root: Path) -> Path:
    home = root / "home"
    home.mkdir(mode=0o700)
    with TestCA.init(home / "ca", clock=SystemClock()) as ca:
        ensure_tsa(home, ca=ca, key_type="rsa")
    return home


def queries(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (data digest, DER TimeStampReq) pairs: distinct SHA-256 imprints, nonce, certReq."""
    out = []
    for _ in range(n):
        digest = hashlib.sha256(secrets.token_bytes(32)).digest()
        out.append((digest, make_query(digest, "sha256", nonce=new_nonce(), cert_req=True)))
    return out


# --------------------------------------------------------------------------- jpki tsa serve


@contextlib.contextmanager
def jpki_server(home: Path, port: int, workers: int) -> Iterator[str]:
    log = home.parent / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("JPKI_NOW", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jpki", "--home", str(home), "tsa", "serve", "--port", str(port),
                                 "--workers", str(workers), "--rate-limit", "0", "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"jpki tsa serve exited:\n{log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
            if time.monotonic() > deadline:
                raise SystemExit("jpki tsa serve did not start")
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection: *close", re.IGNORECASE)


class _Connection:
    """One keep-alive client connection; opened again when the server closed the last one
    (``Connection: close``, as jpki's servers say every 20 requests)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, request: bytes) -> bytes:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"HTTP error from jpki: {head.splitlines()[0]!r}")
        length = _CONTENT_LENGTH.search(head)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        if _CLOSE.search(head):
            self.close()
        return body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def run_jpki(url: str, pairs: list[tuple[bytes, bytes]], clients: int, seconds: float,
             warmup: int) -> tuple[dict[str, float], dict[int, bytes]]:
    """Tokens per second over ``clients`` keep-alive connections, after ``warmup`` untimed
    requests on each; the timed answers by query index."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {QUERY_TYPE}\r\n"
            "Content-Length: {n}\r\n\r\n")
    requests = [head.format(n=len(der)).encode() + der for _, der in pairs]
    answers: dict[int, bytes] = {}
    order = iter(range(len(requests)))

    async def go() -> tuple[int, float]:
        connections = [_Connection(port) for _ in range(clients)]

        async def warm(connection: _Connection) -> None:
            for _ in range(warmup):
                await connection.exchange(requests[next(order)])

        async def timed(connection: _Connection, stop_at: float) -> int:
            done = 0
            while time.perf_counter() < stop_at:
                index = next(order, None)
                if index is None:
                    break
                answers[index] = await connection.exchange(requests[index])
                done += 1
            return done

        await asyncio.gather(*(warm(c) for c in connections))
        start = time.perf_counter()
        counts = await asyncio.gather(*(timed(c, start + seconds) for c in connections))
        elapsed = time.perf_counter() - start
        for connection in connections:
            connection.close()
        return sum(counts), elapsed

    try:
        import uvloop

        count, elapsed = uvloop.run(go())
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        count, elapsed = asyncio.run(go())
    serials = set()
    for body in answers.values():
        resp = tsp.TimeStampResp.load(body)
        if resp["status"]["status"].native != "granted":
            raise SystemExit(f"jpki refused a token: {resp['status'].native}")
        serials.add(resp["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed["serial_number"].native)
    if len(serials) != len(answers):
        raise SystemExit("jpki handed out a serial twice")
    return {"tokens": count, "seconds": elapsed, "rate": count / elapsed}, answers


def check_jpki_tokens(home: Path, pairs: list[tuple[bytes, bytes]], answers: dict[int, bytes], workdir: Path) -> str:
    trust = TrustStore.from_ca_dir(home / "ca")
    sample = list(answers.items())[:: max(1, len(answers) // 20)][:20]
    for index, body in sample:
        token = tsp.TimeStampResp.load(body)["time_stamp_token"].dump()
        check = verify_token(token, digest=pairs[index][0], trust=trust, policy=TSA_POLICY)
        if not check.ok:
            raise SystemExit(f"a jpki token does not verify: {check.summary()}")
    index, body = sample[0]
    (workdir / "jpki.tsr").write_bytes(body)
    (workdir / "jpki.tsq").write_bytes(pairs[index][1])
    done = subprocess.run(["openssl", "ts", "-verify", "-in", str(workdir / "jpki.tsr"), "-queryfile",
                           str(workdir / "jpki.tsq"), "-CAfile", str(home / "ca" / "sign_ca.pem")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"openssl ts -verify refused a jpki token: {done.stderr}")
    return f"{len(sample)} tokens verified by jpki.tsa.verify_token, one by openssl ts -verify"


# --------------------------------------------------------------------------- openssl


def openssl_config(workdir: Path, home: Path, lane: int) -> Path:
    serial = workdir / f"serial-{lane}"
    serial.write_text(f"{lane:02X}000000\n")
    config = workdir / f"openssl-tsa-{lane}.cnf"
    config.write_text(f"""[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
serial = {serial}
crypto_device = builtin
signer_cert = {home / "tsa" / "tsa.pem"}
signer_key = {home / "tsa" / "tsa.key"}
signer_digest = sha256
default_policy = {TSA_POLICY}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
""")
    return config


def run_lanes(commands: list[list[list[str]]]) -> float:
    """Run each lane's commands one after another, the lanes at once; the seconds it took."""
    def lane(cmds: list[list[str]]) -> None:
        for cmd in cmds:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(commands)) as pool:
        list(pool.map(lane, commands))
    return time.perf_counter() - start


def run_openssl(home: Path, pairs: list[tuple[bytes, bytes]], workdir: Path, tokens: int,
                lanes: int) -> dict[str, float]:
    qdir = workdir / "queries"
    qdir.mkdir()
    per_lane = tokens // lanes
    commands: list[list[list[str]]] = []
    for lane in range(lanes):
        config = openssl_config(workdir, home, lane)
        cmds = []
        for k in range(per_lane):
            index = lane * per_lane + k
            q = qdir / f"{index}.tsq"
            q.write_bytes(pairs[index][1])
            cmds.append(["openssl", "ts", "-reply", "-config", str(config), "-queryfile", str(q),
                         "-signer", str(home / "tsa" / "tsa.pem"), "-inkey", str(home / "tsa" / "tsa.key"),
                         "-out", str(qdir / f"{index}.tsr")])
        commands.append(cmds)
    run_lanes([c[:5] for c in commands])  # warm the page cache
    elapsed = run_lanes(commands)
    made = per_lane * lanes
    sample = qdir / "0.tsr"
    done = subprocess.run(["openssl", "ts", "-verify", "-in", str(sample), "-queryfile", str(qdir / "0.tsq"),
                           "-CAfile", str(home / "ca" / "sign_ca.pem")], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"openssl's own token does not verify: {done.stderr}")
    start_only = run_lanes([[["openssl", "version"]] * per_lane for _ in range(lanes)])
    key_load = run_lanes([[["openssl", "pkey", "-in", str(home / "tsa" / "tsa.key"), "-noout"]] * per_lane
                          for _ in range(lanes)])
    net = max(elapsed - key_load, 1e-9)
    return {"tokens": made, "seconds": elapsed, "rate": made / elapsed, "start_rate": made / start_only,
            "key_load_rate": made / key_load, "net_rate": made / net}


def rsa_ceiling() -> float | None:
    done = subprocess.run(["openssl", "speed", "-multi", "2", "-seconds", "2", "rsa2048"],
                          capture_output=True, text=True)
    match = re.search(r"^rsa 2048 bits .*? ([\d.]+)\s+[\d.]+\s*$", done.stdout, re.MULTILINE)
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s, 4 clients, 100 openssl tokens, no RSA ceiling")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--openssl-tokens", type=int, default=400)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.clients, args.openssl_tokens = 3.0, 4, 100
    lanes = 2
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{args.workers} jpki workers, {args.clients} clients, {args.seconds:g} s; openssl: {lanes} lanes")
    with tempfile.TemporaryDirectory(prefix="jpki-tsa-bench-") as tmp:
        workdir = Path(tmp)
        home = make_home(workdir)
        warmup = 10
        pairs = queries(max(int(args.seconds * 3000), 2000) + warmup * args.clients)
        with jpki_server(home, free_port(), args.workers) as url:
            ours, answers = run_jpki(url, pairs, args.clients, args.seconds, warmup)
        checked = check_jpki_tokens(home, pairs, answers, workdir)
        theirs = run_openssl(home, pairs, workdir, args.openssl_tokens, lanes)
        ceiling = None if args.quick else rsa_ceiling()
    print(f"jpki tsa serve:            {ours['rate']:8.0f} tokens/s  ({ours['tokens']} tokens in "
          f"{ours['seconds']:.1f} s, every serial distinct; {checked})")
    print(f"openssl ts -reply:         {theirs['rate']:8.0f} tokens/s  ({theirs['tokens']} processes in "
          f"{theirs['seconds']:.1f} s)")
    print(f"  openssl version alone:   {theirs['start_rate']:8.0f} /s   openssl pkey (start + key load): "
          f"{theirs['key_load_rate']:.0f} /s")
    print(f"  openssl ts, net of process start and key load: {theirs['net_rate']:8.0f} tokens/s (estimate)")
    if ceiling is not None:
        print(f"RSA-2048 signatures, openssl speed -multi 2: {ceiling:8.0f} /s (the ceiling of any TSA with this key)")
    print(f"ratio jpki / openssl ts -reply: {ours['rate'] / theirs['rate']:.1f}x; "
          f"jpki / openssl net of process start: {ours['rate'] / theirs['net_rate']:.2f}x")


if __name__ == "__main__":
    main()
