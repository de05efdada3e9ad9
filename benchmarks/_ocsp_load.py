"""OCSP load generator for the ``ocsp`` section of ``benchmarks/revocation.py``.

Runs in its own process (``revocation.py`` starts it as the child task ``ocsp-load``; standalone:
``python benchmarks/_ocsp_load.py PARAMS_JSON``) and prints one JSON line of figures.

It keeps ``clients`` HTTP/1.1 keep-alive connections to ``127.0.0.1:port`` busy, one request in
flight on each: an asyncio ``Protocol`` per connection (uvloop when installed) writing
pre-built ``POST /ocsp/auth`` requests, so the client spends a few µs per response and the
server's cost dominates. Every request is built before the clock starts, with
``cryptography``'s ``OCSPRequestBuilder`` (SHA-1 CertID, no nonce).

Workloads (``mode``):

``hot``
    a fixed working set of certificates; request ``k`` always goes over connection
    ``k % clients`` (so over the same server worker), each connection cycling through its share.
    A warm-up of ``warmup_passes`` passes over the set runs first, untimed.
``distinct``
    every request names a certificate not asked about before (a shared counter over the list):
    no response can come from a cache, each is freshly signed. ``warmup`` requests from the
    front of the list open the connections and the server's threads first, untimed.

A phase ends after ``seconds`` or ``max_requests`` responses, whichever comes first.

Checks: every response must be HTTP 200 with an OCSPResponse of status successful whose
SingleResponse for the CertID sent (echoed byte for byte, RFC 6960) carries the CertStatus the
certificate was inserted with (``good``/``revoked``); a sample of ``verify`` responses is then
parsed with ``cryptography`` after the timed phase: the responder certificate must be issued by
the CA and carry id-kp-OCSPSigning, the signature must verify, the serial must be the one asked
about, thisUpdate/nextUpdate must bracket now, and status, revocation time and reason must match
the certificate's row read from ``certs.db`` (read-only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

#: CertStatus tags in a SingleResponse: good [0] IMPLICIT NULL, revoked [1], unknown [2].
STATUS_TAG = {"good": 0x80, "revoked": 0xA1, "unknown": 0x82}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- requests


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER TLV at ``buf[pos]``."""
    first = buf[pos + 1]
    if first < 0x80:
        return buf[pos], pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")
    return buf[pos], pos + 2 + n, pos + 2 + n + length


def cert_id_der(request_der: bytes) -> bytes:
    """The DER of the first CertID of an OCSPRequest (what the response must echo)."""
    _, pos, _ = _tlv(request_der, 0)  # OCSPRequest
    _, pos, _ = _tlv(request_der, pos)  # tbsRequest
    tag, inner, end = _tlv(request_der, pos)
    if tag == 0xA0:  # version, if written
        tag, inner, end = _tlv(request_der, end)
    _, inner, _ = _tlv(request_der, inner)  # requestList -> first Request
    _, _, cid_end = _tlv(request_der, inner)  # CertID
    return request_der[inner:cid_end]


def build_requests(
    issuer: x509.Certificate, serials: list[int], port: int, path: str
) -> tuple[list[bytes], list[bytes]]:
    """HTTP requests (head + DER body) for ``serials`` and the CertID DER of each."""
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(issuer.subject.public_bytes())
    name_digest = name_hash.finalize()
    key_digest = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest  # type: ignore[arg-type]
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/ocsp-request\r\nContent-Length: ").encode()
    requests, cert_ids = [], []
    for serial in serials:
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(name_digest, key_digest, serial, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        requests.append(head + str(len(der)).encode() + b"\r\n\r\n" + der)
        cert_ids.append(cert_id_der(der))
    return requests, cert_ids


# --------------------------------------------------------------------------- CPU accounting


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_cpu() -> dict[str, float]:
    """CPU seconds all cores spent so far (/proc/stat): running processes (user, nice, system),
    in interrupts (irq, softirq: loopback TCP is largely processed there), stolen by the
    hypervisor, idle (idle, iowait)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return {"processes": (user + nice + system) / CLK_TCK, "interrupts": (irq + softirq) / CLK_TCK,
            "steal": steal / CLK_TCK, "idle": (idle + iowait) / CLK_TCK}


def connections_per_process(pids: list[int], port: int, local_ports: set[int]) -> dict[int, int]:
    """How many of our connections (by local port) each server process accepted (/proc)."""
    owner: dict[int, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[int(link[8:-1])] = pid
    found: Counter[int] = Counter()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            f = line.split()
            local_port = int(f[1].rsplit(":", 1)[1], 16)
            remote_port = int(f[2].rsplit(":", 1)[1], 16)
            inode = int(f[9])
            if local_port == port and remote_port in local_ports and inode in owner:
                found[owner[inode]] += 1
    return dict(found)


# --------------------------------------------------------------------------- the client


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: _Load, number: int) -> None:
        self.load = load
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # total bytes of the response being read (head + body); -1: head unread
        self.body_at = 0
        self.http_ok = False
        self.index = -1  # request in flight, -1: idle
        self.sent_at = 0
        self.source: Iterator[int] = iter(())
        self.closed = False
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.opened.done():
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.index >= 0:
            self.load.failed(self, "connection closed by the server")

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.http_ok = head.startswith(b"http/1.1 200 ")
                at = head.find(b"\r\ncontent-length:")
                length = 0
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17 : stop if stop > 0 else len(head)])
                self.body_at = end + 4
                self.need = end + 4 + length
            if len(buf) < self.need:
                return
            body = bytes(buf[self.body_at : self.need])
            del buf[: self.need]
            self.need = -1
            self.load.answered(self, body)


class _Load:
    """The shared state of a phase: what to send, what came back, when to stop."""

    def __init__(self, requests: list[bytes], cert_ids: list[bytes], expected: list[str],
                 sample_size: int) -> None:
        self.requests = requests
        self.cert_ids = cert_ids
        self.expected_tag = [STATUS_TAG[s] for s in expected]
        self.sample_size = sample_size
        self.rnd = random.Random(0)
        self.conns: list[_Conn] = []
        self.reset(0.0, 0)

    def reset(self, seconds: float, limit: int) -> None:
        self.deadline = time.perf_counter_ns() + int(seconds * 1e9)
        self.limit = limit
        self.issued = 0
        self.count = 0
        self.latencies: list[int] = []
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[int, bytes]] = []
        self.busy = 0
        self.finished: asyncio.Future[None] | None = None

    def send_next(self, conn: _Conn) -> None:
        if conn.closed or self.issued >= self.limit or time.perf_counter_ns() >= self.deadline:
            self._idle(conn)
            return
        index = next(conn.source, -1)
        if index < 0:
            self._idle(conn)
            return
        self.issued += 1
        conn.index = index
        conn.sent_at = time.perf_counter_ns()
        assert conn.transport is not None
        conn.transport.write(self.requests[index])

    def _idle(self, conn: _Conn) -> None:
        if conn.index != -2:
            conn.index = -2
            self.busy -= 1
            if self.busy == 0 and self.finished is not None and not self.finished.done():
                self.finished.set_result(None)

    def answered(self, conn: _Conn, body: bytes) -> None:
        index = conn.index
        self.latencies.append(time.perf_counter_ns() - conn.sent_at)
        self.count += 1
        if not conn.http_ok:
            self.errors["HTTP status not 200"] += 1
        else:
            # OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, ... }: 0 is successful.
            head = 2 + (body[1] & 0x7F if len(body) > 1 and body[1] & 0x80 else 0)
            if body[head : head + 3] != b"\x0a\x01\x00":
                self.errors["OCSP status not successful"] += 1
            else:
                cid = self.cert_ids[index]
                at = body.find(cid)
                if at < 0:
                    self.errors["CertID not echoed"] += 1
                elif body[at + len(cid)] != self.expected_tag[index]:
                    self.errors["certificate status differs from the database row"] += 1
                elif len(self.samples) < self.sample_size:  # reservoir sample (Algorithm R)
                    self.samples.append((index, body))
                else:
                    j = self.rnd.randrange(self.count)
                    if j < self.sample_size:
                        self.samples[j] = (index, body)
        self.send_next(conn)

    def failed(self, conn: _Conn, why: str) -> None:
        self.errors[why] += 1
        conn.index = -1
        self._idle(conn)

    async def run(self, seconds: float, limit: int, sources: Callable[[int], Iterator[int]]) -> float:
        """Run a phase; returns its wall time in seconds."""
        self.reset(seconds, limit)
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        live = [c for c in self.conns if not c.closed]
        if not live:
            raise RuntimeError("no open connection")
        self.busy = len(live)
        start = time.perf_counter_ns()
        for conn in live:
            conn.index = -1
            conn.source = sources(conn.number)
            self.send_next(conn)
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), seconds + 30)
        except TimeoutError:
            stuck = sum(1 for c in live if c.index >= 0)
            self.errors["no answer within 30 s after the end of the phase"] += stuck
            for conn in live:
                if conn.index >= 0 and conn.transport is not None:
                    conn.transport.abort()
        return (time.perf_counter_ns() - start) / 1e9


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1e6


# --------------------------------------------------------------------------- verification


def verify_samples(samples: list[tuple[int, bytes]], serials: list[int], issuer: x509.Certificate,
                   db_path: Path) -> tuple[int, Counter[str]]:
    """Full check of sampled responses against the database rows; (checked, problems)."""
    problems: Counter[str] = Counter()
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    now = dt.datetime.now(dt.UTC)
    issuer_key = issuer.public_key()
    checked_responders: dict[bytes, bool] = {}
    try:
        for index, body in samples:
            serial = serials[index]
            row = conn.execute(
                "SELECT kind, status, revoked_at, reason FROM certificates WHERE serial = ?",
                (format(serial, "x"),),
            ).fetchone()
            if row is None:
                problems["serial not in the database"] += 1
                continue
            kind, status, revoked_at, reason = row
            try:
                resp = ocsp.load_der_ocsp_response(body)
            except ValueError:
                problems["response does not parse"] += 1
                continue
            if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                problems["response not successful"] += 1
                continue
            responder = resp.certificates[0] if resp.certificates else None
            if responder is None:
                problems["no responder certificate"] += 1
                continue
            der = responder.public_bytes(serialization.Encoding.DER)
            if der not in checked_responders:
                ok = True
                try:
                    responder.verify_directly_issued_by(issuer)
                    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                    ok = ExtendedKeyUsageOID.OCSP_SIGNING in eku
                except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
                    ok = False
                checked_responders[der] = ok
            if not checked_responders[der]:
                problems["responder certificate not authorised by the CA"] += 1
                continue
            key = responder.public_key()
            assert isinstance(issuer_key, rsa.RSAPublicKey)
            algorithm = resp.signature_hash_algorithm
            try:
                if isinstance(key, rsa.RSAPublicKey):
                    key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                               algorithm)  # type: ignore[arg-type]
                elif isinstance(key, ec.EllipticCurvePublicKey):  # responder_key="ec"
                    key.verify(resp.signature, resp.tbs_response_bytes,
                               ec.ECDSA(algorithm))  # type: ignore[arg-type]
                else:
                    problems[f"responder key {type(key).__name__}"] += 1
                    continue
            except InvalidSignature:
                problems["bad signature"] += 1
                continue
            if resp.serial_number != serial:
                problems["serial differs"] += 1
                continue
            next_update = resp.next_update_utc
            if not (resp.this_update_utc <= now and (next_update is None or now < next_update)):
                problems["thisUpdate/nextUpdate do not bracket now"] += 1
            want = "revoked" if status == "revoked" else "good"
            got = resp.certificate_status.name.lower()
            if kind != "auth" or got != want:
                problems[f"status {got}, database row {status}"] += 1
                continue
            if want == "revoked":
                if resp.revocation_time_utc != dt.datetime.fromisoformat(revoked_at):
                    problems["revocation time differs from the database row"] += 1
                expected_reason = None if reason in (None, "unspecified") else x509.ReasonFlags(reason)
                if resp.revocation_reason != expected_reason:
                    problems["revocation reason differs from the database row"] += 1
    finally:
        conn.close()
    return len(samples), problems


# --------------------------------------------------------------------------- main


def read_serials(path: Path) -> tuple[list[int], list[str]]:
    """``serial-hex status`` lines."""
    serials, statuses = [], []
    for line in path.read_text().splitlines():
        serial, status = line.split()
        serials.append(int(serial, 16))
        statuses.append(status)
    return serials, statuses


async def _main(p: dict) -> dict:
    ca_dir = Path(p["ca_dir"])
    issuer = x509.load_pem_x509_certificate((ca_dir / "auth_ca.pem").read_bytes())
    serials, statuses = read_serials(Path(p["serials"]))
    port, clients = p["port"], p["clients"]
    start = time.perf_counter()
    requests, cert_ids = build_requests(issuer, serials, port, "/ocsp/auth")
    build_seconds = time.perf_counter() - start

    hot = p["mode"] == "hot"
    n = len(requests)
    if hot:
        def sources(number: int) -> Iterator[int]:
            return itertools.cycle(range(number, n, clients))
        warm_limit, timed_limit = p["warmup_passes"] * n, p["max_requests"]
    else:
        shared = iter(range(n))

        def sources(number: int) -> Iterator[int]:
            return shared
        warm_limit = p["warmup"]
        timed_limit = min(p["max_requests"], n - warm_limit)
    load = _Load(requests, cert_ids, statuses, p["verify"])

    loop = asyncio.get_running_loop()
    for i in range(clients):
        # Independent clients do not connect in the same instant: a burst of connects is taken
        # whole by whichever worker process wakes first (they share one listening socket).
        if i:
            await asyncio.sleep(p.get("connect_gap", 0.0))
        conn = _Conn(load, i)
        await loop.create_connection(lambda c=conn: c, "127.0.0.1", port)  # type: ignore[misc]
        load.conns.append(conn)
    local_ports = {c.transport.get_extra_info("sockname")[1] for c in load.conns}  # type: ignore[union-attr]
    server_pids = p.get("server_pids", [])

    warm_seconds = await load.run(p["warmup_seconds"], warm_limit, sources)
    warm = {"count": load.count, "seconds": warm_seconds, "errors": dict(load.errors)}
    per_process = connections_per_process(server_pids, port, local_ports)  # all accepted by now

    cpu0 = {pid: _proc_cpu(pid) for pid in server_pids}
    self0 = time.process_time()
    machine0 = _machine_cpu()
    seconds = await load.run(p["seconds"], timed_limit, sources)
    machine = {k: v - machine0[k] for k, v in _machine_cpu().items()}
    own = time.process_time() - self0
    server_cpu = {pid: _proc_cpu(pid) - cpu0[pid] for pid in server_pids}
    for conn in load.conns:
        if conn.transport is not None:
            conn.transport.close()

    lat = sorted(load.latencies)
    checked, problems = verify_samples(load.samples, serials, issuer, ca_dir / "certs.db")
    return {
        "mode": p["mode"],
        "distinct": n,
        "build_seconds": build_seconds,
        "warmup": warm,
        "count": load.count,
        "seconds": seconds,
        "rate": load.count / seconds if seconds else 0.0,
        "p50_ms": _percentile(lat, 0.50),
        "p95_ms": _percentile(lat, 0.95),
        "p99_ms": _percentile(lat, 0.99),
        "max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "errors": dict(load.errors),
        "verified": checked,
        "verify_problems": dict(problems),
        "statuses": dict(Counter(statuses[i] for i, _ in load.samples)),
        "connections_per_process": {str(k): v for k, v in per_process.items()},
        "server_cpu": {str(k): v for k, v in server_cpu.items()},
        "client_cpu": own,
        "machine": machine,
        "event_loop": type(loop).__module__.split(".")[0],
    }


def run(p: dict) -> dict:
    """Run one workload (see the module docstring) and return its figures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(p))
    return uvloop.run(_main(p))


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
