"""OpenID Provider benchmark: `jpki idp serve` next to Node's certified ``oidc-provider``.

Sections (run both, or pick with ``--section``):

``token``
    Token-endpoint exchanges per second: ``authorization_code`` with PKCE, the client
    authenticated by ``private_key_jwt`` (ES256, a fresh ``jti`` each, ``aud`` the token
    endpoint), 20 keep-alive clients. ``jpki idp serve --workers 2 --store redis://…`` (a private
    ``redis-server`` started here) next to ``oidc-provider`` (npm; installed on demand into a
    cache folder, never into the repository) configured the same way: a ``private_key_jwt``
    ES256 client, ES256 ID tokens with a pairwise ``sub``, PKCE S256 required, 2 processes (Node's
    cluster) sharing the same Redis server through a small adapter (``op:`` keys, database 1),
    the same lifetimes (code 60 s, access and ID token 300 s). For both, N codes are made before
    the clock starts — for jpki through the real flow (authorization page, the test-card JSON
    API with the in-process card signing, the browser back with the code), for oidc-provider
    with its own models (``Grant`` and ``AuthorizationCode`` saved through the adapter, as its
    interaction would) — and the client assertions are signed beforehand; then one load
    generator (Python asyncio + httpx) sends the same requests to both, in the same run. Goal:
    jpki >= 1.0x oidc-provider.

``flows``
    Complete code flows per second against ``jpki idp serve --workers 3 --test-cards``
    (``--flow-workers``: the provider calls Redis synchronously, and while a worker waits for a
    reply a third one uses the core; ``--flow-workers 2`` for the figure with two) with the
    Redis store: authorization page, test-card authentication (the emulated card signs for real
    in the provider's process, the provider verifies it: signature, certificate path, cached
    OCSP), the browser back with the code, the token request (``private_key_jwt``), userinfo;
    20 concurrent clients, each a browser with its cookie. Reports flows/s with p50/p99 of a
    whole flow. Goal >= 300 flows/s on a 2-core machine (load generator and Redis included).

The machine's other load shows in the figures: measure on a quiet machine for numbers to
quote, and use ``--quick`` (a few seconds each) while developing.

Usage::

    python benchmarks/oidc.py                         # both sections
    python benchmarks/oidc.py --quick                 # short runs
    python benchmarks/oidc.py --section token -n 2000 --rounds 3
    python benchmarks/oidc.py --section flows -n 3000
    python benchmarks/oidc.py --no-baseline           # jpki only (no Node)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey
from login import free_port, redis_server, test_home

REALM = "/api/realms/main/protocol/openid-connect"
REDIRECT = "https://shop.example.jp/callback"
CONCURRENCY = 20
NODE_PACKAGES = ("oidc-provider@9", "ioredis@5")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def percentile(ordered: Sequence[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclasses.dataclass
class Run:
    """What one timed load gave: count, seconds, latencies (ms), failures, server CPU seconds."""

    n: int
    seconds: float
    latencies: list[float]
    failures: list[str]
    server_cpu: float
    client_cpu: float
    busy: list[float]   # CPU seconds of each server process that worked (how the load spread)

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def summary(self, unit: str) -> str:
        ordered = sorted(self.latencies)
        return (f"{self.n} {unit} in {self.seconds:.2f} s: {self.rate:,.0f} {unit}/s, "
                f"p50 {percentile(ordered, 50):.1f} ms, p99 {percentile(ordered, 99):.1f} ms; CPU: server "
                f"{self.server_cpu:.1f} s ({self.server_cpu / self.n * 1e3:.2f} ms each; by process "
                f"{' + '.join(f'{cpu:.1f}' for cpu in self.busy)}), load generator {self.client_cpu:.1f} s")


# --------------------------------------------------------------------------- the load generator


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]   # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpxClient:
    """One client of the load on httpx: one keep-alive HTTP/1.1 connection, its own cookies."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                      timeout=60)

    async def request(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      ) -> Answer:
        response = await self.http.request(method, url, content=body or None, headers=headers)
        return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)

    async def close(self) -> None:
        await self.http.aclose()


class RawClient:
    """One client of the load on a bare asyncio stream: HTTP/1.1 with keep-alive, answers with a
    Content-Length (what uvicorn and Node send), cookies kept by name — about a tenth of httpx's
    CPU per request, so that the generator leaves the cores to the server it measures."""

    def __init__(self) -> None:
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      ) -> Answer:
        parts = urllib.parse.urlsplit(url)
        if self.streams is None:
            self.streams = await asyncio.open_connection(parts.hostname, parts.port)
        reader, writer = self.streams
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        found: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, val = cookie.partition("=")
                self.cookies[key.strip()] = val.strip()
            elif name:
                found[name] = value
        content = await reader.readexactly(int(found.get("content-length", "0")))
        if found.get("connection", "").lower() == "close":   # the server's last answer on this one
            writer.close()
            self.streams = None
        return Answer(int(head[0].split(" ", 2)[1]), found, content)

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


Client = HttpxClient | RawClient
CLIENTS: dict[str, Callable[[], Client]] = {"httpx": HttpxClient, "raw": RawClient}


async def load(items: Sequence[Any], job: Callable[[Client, Any], Awaitable[str | None]], kind: str,
               concurrency: int = CONCURRENCY) -> tuple[float, list[float], list[str]]:
    """Run ``job(client, item)`` for every item on ``concurrency`` clients of ``kind``; a job
    returns None when the answers were right, else what was wrong. Returns (seconds, latencies
    in ms, failures)."""
    queue = iter(items)
    latencies: list[float] = []
    failures: list[str] = []
    clock = time.perf_counter

    async def client_loop(client: Client) -> None:
        try:
            for item in queue:
                t = clock()
                try:
                    wrong = await job(client, item)
                except (OSError, httpx.HTTPError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                    wrong = f"{type(exc).__name__}: {exc}"
                latencies.append((clock() - t) * 1e3)
                if wrong is not None:
                    failures.append(wrong)
        finally:
            await client.close()

    clients = [CLIENTS[kind]() for _ in range(concurrency)]   # made before the clock starts (httpx: TLS setup)
    start = clock()
    await asyncio.gather(*(client_loop(client) for client in clients))
    return clock() - start, latencies, failures


def run_loop(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def process_cpu(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a live process and of each of its children (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    found = {}
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            found[p] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def timed(pid: int, items: Sequence[Any], job: Callable[[Client, Any], Awaitable[str | None]], kind: str) -> Run:
    server0, client0 = process_cpu(pid), time.process_time()
    seconds, latencies, failures = run_loop(load(items, job, kind))
    server = {p: cpu - server0.get(p, 0.0) for p, cpu in process_cpu(pid).items()}
    busy = sorted((cpu for cpu in server.values() if cpu >= 0.05), reverse=True)
    return Run(len(items), seconds, latencies, failures, sum(server.values()), time.process_time() - client0, busy)


# --------------------------------------------------------------------------- what both servers are sent


@dataclasses.dataclass(frozen=True)
class ClientKey:
    client_id: str
    key: ECKey

    def assertions(self, audience: str, n: int, lifetime: int = 240) -> list[str]:
        """``n`` client assertions signed now (ES256, fresh jti, ``exp`` ``lifetime`` s ahead)."""
        now = int(time.time())
        header = {"alg": "ES256", "kid": self.key.kid}
        return [jwt.encode(header, {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now,
                                    "exp": now + lifetime, "jti": secrets.token_urlsafe(16)}, self.key)
                for _ in range(n)]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def exchange_body(code: str, verifier: str, assertion: str) -> bytes:
    return urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                   "code_verifier": verifier, "client_assertion_type": JWT_BEARER,
                                   "client_assertion": assertion}).encode()


def exchange_job(token_url: str) -> Callable[[Client, bytes], Awaitable[str | None]]:
    async def job(client: Client, body: bytes) -> str | None:
        answer = await client.request("POST", token_url, body, FORM)
        if answer.status != 200 or b'"id_token"' not in answer.body:
            return f"{answer.status} {answer.body[:200]!r}"
        return None

    return job


# --------------------------------------------------------------------------- jpki idp serve


@contextlib.contextmanager
def jpki_provider(home: Path, redis_url: str, workers: int) -> Iterator[tuple[str, int, ClientKey]]:
    """``jpki idp serve --test-cards --workers N --store REDIS`` of ``home`` with a registered
    private_key_jwt client; yields (issuer, server pid, the client's key)."""
    key = ECKey.generate_key("P-256", auto_kid=True)
    jwks = home / "bench-client.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    added = subprocess.run([sys.executable, "-m", "jpki", "--home", str(home), "--json", "idp", "client", "add",
                            "Benchmark shop", "--redirect-uri", REDIRECT, "--jwks", str(jwks)],
                           capture_output=True, text=True, env=env, check=True)
    client = ClientKey(json.loads(added.stdout)["client_id"], key)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    log = home / "idp-serve.log"
    with open(log, "wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "jpki", "--home", str(home), "idp", "serve", "--test-cards",
                                   "--store", redis_url + "?prefix=jpki:", "--workers", str(workers), "--port",
                                   str(port), "--log-level", "warning"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_for_port(port, server, "jpki idp serve", log)
        yield issuer, server.pid, client
    finally:
        stop(server)


async def jpki_code(client: Client, issuer: str, client_id: str, challenge: str) -> str:
    """One authorization through the page and the test-card API: the code the browser brings back."""
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": "openid",
        "state": secrets.token_urlsafe(12), "nonce": secrets.token_urlsafe(12), "code_challenge": challenge,
        "code_challenge_method": "S256"})
    page = await client.request("GET", f"{issuer}{REALM}/auth?{query}")
    if page.status != 200:
        raise ValueError(f"authorization page: {page.status} {page.body[:200]!r}")
    answer = await client.request("POST", issuer + "/api/test-cards/authenticate", json.dumps(
        {"pending": page.headers["x-jpki-pending"], "card": "alice", "outcome": "success"}).encode(),
        {"Content-Type": "application/json"})
    if answer.status != 200 or answer.json()["state"] != "approved":
        raise ValueError(f"test card: {answer.status} {answer.body[:200]!r}")
    back = await client.request("GET", answer.json()["redirect"])
    location = back.headers.get("location", "")
    if back.status != 302 or "code=" not in location:
        raise ValueError(f"resume: {back.status} {location[:200]}")
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]


def jpki_codes(issuer: str, client: ClientKey, n: int, kind: str) -> list[tuple[str, str]]:
    """``n`` (code, verifier) pairs made through the real flow, 20 browsers at a time."""
    pairs = [pkce() for _ in range(n)]
    codes: list[tuple[str, str]] = []

    async def job(http: Client, pair: tuple[str, str]) -> str | None:
        codes.append((await jpki_code(http, issuer, client.client_id, pair[1]), pair[0]))
        return None

    _, _, failures = run_loop(load(pairs, job, kind))
    if failures:
        raise SystemExit(f"jpki: {len(failures)} codes could not be made: {failures[0]}")
    return codes


# --------------------------------------------------------------------------- oidc-provider (Node)

NODE_CONFIG = r"""
// oidc-provider configured like `jpki idp serve` (written by jpki's benchmarks/oidc.py).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Redis from 'ioredis';
import Provider from 'oidc-provider';

export const settings = JSON.parse(readFileSync(process.env.BENCH_SETTINGS, 'utf8'));
const redis = new Redis(settings.redis);
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);

// A small Redis adapter: a model is a JSON string under op:MODEL:ID, its consumption a key beside it.
class RedisAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `op:${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const multi = redis.multi();
    const ttl = expiresIn ? ['EX', expiresIn] : [];
    multi.set(this.key(id), JSON.stringify(payload), ...ttl);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grant = `op:grant:${payload.grantId}`;
      multi.rpush(grant, this.key(id));
      if (expiresIn) multi.expire(grant, expiresIn, 'GT');
    }
    if (payload.uid) multi.set(`op:uid:${payload.uid}`, id, ...ttl);
    await multi.exec();
  }
  async find(id) {
    const [data, consumed] = await redis.mget(this.key(id), `${this.key(id)}:consumed`);
    if (!data) return undefined;
    const payload = JSON.parse(data);
    if (consumed) payload.consumed = Number(consumed);
    return payload;
  }
  async findByUid(uid) { const id = await redis.get(`op:uid:${uid}`); return id ? this.find(id) : undefined; }
  async findByUserCode() { return undefined; }
  async consume(id) { await redis.set(`${this.key(id)}:consumed`, Math.floor(Date.now() / 1000), 'EX', 600); }
  async destroy(id) { await redis.del(this.key(id)); }
  async revokeByGrantId(grantId) {
    const grant = `op:grant:${grantId}`;
    const keys = await redis.lrange(grant, 0, -1);
    await redis.del(...keys, grant);
  }
}

export function makeProvider() {
  return new Provider(settings.issuer, {
    adapter: RedisAdapter,
    clients: [{
      client_id: settings.client_id, redirect_uris: [settings.redirect_uri], grant_types: ['authorization_code'],
      response_types: ['code'], token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256', id_token_signed_response_alg: 'ES256', subject_type: 'pairwise',
      jwks: settings.client_jwks,
    }],
    jwks: { keys: [settings.signing_key] },
    findAccount: async (ctx, sub) => ({ accountId: sub, async claims() { return { sub }; } }),
    pairwiseIdentifier: async (ctx, accountId, client) => createHash('sha256')
      .update(`${client.sectorIdentifier}\0${accountId}\0${settings.salt}`).digest('base64url'),
    subjectTypes: ['public', 'pairwise'],
    clientAuthMethods: ['private_key_jwt'],
    enabledJWA: { clientAuthSigningAlgValues: ['ES256', 'RS256'], idTokenSigningAlgValues: ['ES256'] },
    responseTypes: ['code'],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    ttl: { AuthorizationCode: 60, AccessToken: 300, IdToken: 300, Grant: 600, Session: 600, Interaction: 600 },
    cookies: { keys: [settings.cookie_key] },
    clockTolerance: 30,
  });
}
"""

NODE_SERVER = r"""
// The server: Node's cluster, settings.workers processes on one port.
import cluster from 'node:cluster';
import { makeProvider, settings } from './bench-config.mjs';

if (cluster.isPrimary) {
  for (let i = 0; i < settings.workers; i += 1) cluster.fork();
  cluster.on('exit', (worker, code) => { if (code) process.exit(code); });
} else {
  makeProvider().listen(settings.port, '127.0.0.1');
}
"""

NODE_MINT = r"""
// Codes made with oidc-provider's own models, as its interaction would: one Grant and one
// AuthorizationCode per PKCE challenge read from stdin; the codes on stdout (JSON).
import { readFileSync } from 'node:fs';
import { makeProvider, settings } from './bench-config.mjs';

const challenges = JSON.parse(readFileSync(0, 'utf8'));
const provider = makeProvider();
const client = await provider.Client.find(settings.client_id);
const codes = [];
for (const [i, challenge] of challenges.entries()) {
  const accountId = `account-${i % 1000}`;
  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  grant.addOIDCScope('openid');
  const grantId = await grant.save();
  const code = new provider.AuthorizationCode({
    accountId, client, grantId, scope: 'openid', redirectUri: settings.redirect_uri, codeChallenge: challenge,
    codeChallengeMethod: 'S256', nonce: `n${i}`, authTime: Math.floor(Date.now() / 1000), acr: 'aal3',
    amr: ['hwk', 'pin', 'sc'],
  });
  codes.push(await code.save());
}
process.stdout.write(JSON.stringify(codes), () => process.exit(0));   // exit once written (a pipe)
"""


def node_dir(requested: str | None) -> Path:
    if requested:
        return Path(requested).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "jpki-bench" / "oidc-provider"


def ensure_oidc_provider(directory: Path) -> str:
    """oidc-provider and ioredis in ``directory`` (npm install on first use); returns the version."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the baseline (apt-get install nodejs npm), or --no-baseline")
    package = directory / "node_modules" / "oidc-provider" / "package.json"
    if not package.exists() or not (directory / "node_modules" / "ioredis").exists():
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "package.json").exists():
            (directory / "package.json").write_text('{"private": true, "type": "module"}\n')
        print(f"   installing {' '.join(NODE_PACKAGES)} into {directory} with npm (once; outside the repository)")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel", "error", *NODE_PACKAGES],
                       cwd=directory, check=True)
    for name, text in (("bench-config.mjs", NODE_CONFIG), ("bench-server.mjs", NODE_SERVER),
                       ("bench-mint.mjs", NODE_MINT)):
        (directory / name).write_text(text)
    return str(json.loads(package.read_text())["version"])


@contextlib.contextmanager
def node_provider(directory: Path, redis_url: str, workers: int) -> Iterator[tuple[str, int, ClientKey, Path]]:
    """oidc-provider under Node's cluster; yields (issuer, primary pid, the client's key, settings file)."""
    key = ECKey.generate_key("P-256", auto_kid=True)
    signing = ECKey.generate_key("P-256", auto_kid=True)
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    client = ClientKey("bench-shop", key)
    redis = urllib.parse.urlsplit(redis_url)
    with tempfile.TemporaryDirectory(prefix="jpki-bench-node-") as tmp:
        settings = Path(tmp) / "settings.json"
        settings.write_text(json.dumps({
            "issuer": issuer, "port": port, "workers": workers, "client_id": client.client_id,
            "redirect_uri": REDIRECT, "client_jwks": {"keys": [key.as_dict(private=False)]},
            "signing_key": {**signing.as_dict(private=True), "use": "sig", "alg": "ES256"},
            "salt": secrets.token_hex(16), "cookie_key": secrets.token_hex(16),
            "redis": f"redis://{redis.hostname}:{redis.port}/1"}))
        env = {**os.environ, "BENCH_SETTINGS": str(settings), "NODE_ENV": "production"}
        log = Path(tmp) / "node.log"
        with open(log, "wb") as err:
            server = subprocess.Popen(["node", "bench-server.mjs"], cwd=directory, env=env, stdout=subprocess.DEVNULL,
                                      stderr=err, start_new_session=True)
        try:
            wait_for_port(port, server, "oidc-provider", log)
            yield issuer, server.pid, client, settings
        finally:
            stop(server)


def node_codes(directory: Path, settings: Path, n: int) -> list[tuple[str, str]]:
    pairs = [pkce() for _ in range(n)]
    minted = subprocess.run(["node", "bench-mint.mjs"], cwd=directory, input=json.dumps([c for _, c in pairs]),
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "BENCH_SETTINGS": str(settings), "NODE_ENV": "production"})
    if minted.returncode != 0:
        raise SystemExit(f"oidc-provider: codes could not be made: {minted.stderr[-2000:]}")
    return [(code, verifier) for code, (verifier, _) in zip(json.loads(minted.stdout), pairs, strict=True)]


# --------------------------------------------------------------------------- processes


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --------------------------------------------------------------------------- the sections


def measure_exchanges(name: str, token_url: str, pid: int, client: ClientKey, codes: list[tuple[str, str]],
                      warm: int, kind: str) -> Run:
    """Warm up on the first ``warm`` codes, then time the rest; every exchange must succeed."""
    assertions = client.assertions(token_url, len(codes))
    bodies = [exchange_body(code, verifier, a) for (code, verifier), a in zip(codes, assertions, strict=True)]
    job = exchange_job(token_url)
    _, _, failures = run_loop(load(bodies[:warm], job, kind))
    if failures:
        raise SystemExit(f"{name}: warm-up exchanges failed: {failures[0]}")
    run = timed(pid, bodies[warm:], job, kind)
    if run.failures:
        raise SystemExit(f"{name}: {len(run.failures)} exchanges failed: {run.failures[0]} (codes live 60 s: "
                         "if making them took longer, measure fewer with -n)")
    print(f"   {name}: {run.summary('exchanges')}")
    return run


def token_section(n: int, rounds: int, workers: int, baseline: bool, directory: Path, kind: str) -> None:
    print(f"== token: authorization_code + PKCE + private_key_jwt (ES256), {CONCURRENCY} keep-alive clients "
          f"({kind}), {workers} workers each, Redis store; {n} exchanges x {rounds} round(s) each, taking turns, "
          "the best counts")
    version = ensure_oidc_provider(directory) if baseline else None
    warm = min(200, n // 5)
    runs: dict[str, list[Run]] = {"jpki": [], "node": []}
    with contextlib.ExitStack() as stack:
        home, _ca = stack.enter_context(test_home())
        redis_url = stack.enter_context(redis_server())
        issuer, pid, client = stack.enter_context(jpki_provider(home, redis_url, workers))
        node = stack.enter_context(node_provider(directory, redis_url, workers)) if version is not None else None
        for _ in range(rounds):
            t0 = time.perf_counter()
            codes = jpki_codes(issuer, client, n + warm, "raw")
            print(f"   jpki: {n + warm} codes made through the flow (test cards) in {time.perf_counter() - t0:.1f} s")
            runs["jpki"].append(measure_exchanges("jpki idp serve", issuer + REALM + "/token", pid, client, codes,
                                                  warm, kind))
            if node is not None:
                node_issuer, node_pid, node_client, settings = node
                codes = node_codes(directory, settings, n + warm)
                runs["node"].append(measure_exchanges(f"oidc-provider {version}", node_issuer + "/token", node_pid,
                                                      node_client, codes, warm, kind))
    rate = {name: max(r.rate for r in found) for name, found in runs.items() if found}
    cpu = {name: min(r.server_cpu / r.n for r in found) * 1e3 for name, found in runs.items() if found}
    line = f"   best: jpki {rate['jpki']:,.0f} exchanges/s ({cpu['jpki']:.2f} ms server CPU each)"
    if "node" in rate:
        ratio = rate["jpki"] / rate["node"]
        line += (f", oidc-provider {rate['node']:,.0f}/s ({cpu['node']:.2f} ms each): {ratio:.2f}x "
                 f"(goal >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'}); CPU per exchange "
                 f"{cpu['node'] / cpu['jpki']:.2f}x less")
    print(line)


def flows_section(n: int, workers: int, kind: str) -> None:
    print(f"== flows: authorize + test card (the card signs in process, the provider verifies) + token "
          f"(private_key_jwt) + userinfo; jpki idp serve --workers {workers}, Redis store, {CONCURRENCY} browsers "
          f"({kind})")
    warm = min(200, n // 5)
    with test_home() as (home, _ca), redis_server() as redis_url, \
            jpki_provider(home, redis_url, workers) as (issuer, pid, client):
        token_url, userinfo_url = issuer + REALM + "/token", issuer + REALM + "/userinfo"
        assertions = client.assertions(token_url, n + warm)
        items = [(pkce(), a) for a in assertions]

        async def flow(http: Client, item: tuple[tuple[str, str], str]) -> str | None:
            (verifier, challenge), assertion = item
            code = await jpki_code(http, issuer, client.client_id, challenge)
            tokens = await http.request("POST", token_url, exchange_body(code, verifier, assertion), FORM)
            if tokens.status != 200:
                return f"token: {tokens.status} {tokens.body[:200]!r}"
            info = await http.request("GET", userinfo_url,
                                      headers={"Authorization": "Bearer " + tokens.json()["access_token"]})
            if info.status != 200 or "sub" not in info.json():
                return f"userinfo: {info.status} {info.body[:200]!r}"
            return None

        _, _, failures = run_loop(load(items[:warm], flow, kind))
        if failures:
            raise SystemExit(f"warm-up flows failed: {failures[0]}")
        calls0 = redis_calls(redis_url)
        run = timed(pid, items[warm:], flow, kind)
        if run.failures:
            raise SystemExit(f"{len(run.failures)} flows failed: {run.failures[0]}")
        calls = {name: n - calls0.get(name, 0) for name, n in redis_calls(redis_url).items()}
        print(f"   {run.summary('flows')} (goal >= 300 flows/s: {'met' if run.rate >= 300 else 'NOT met'})")
        print(f"   Redis commands per flow: {sum(calls.values()) / run.n:.1f} ("
              + ", ".join(f"{name} {n / run.n:.1f}" for name, n in sorted(calls.items(), key=lambda kv: -kv[1])
                          if n >= run.n / 10) + ")")


def redis_calls(url: str) -> dict[str, int]:
    """Calls of each Redis command so far (``INFO commandstats``), without the INFO itself."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
            if name != "cmdstat_info"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=["token", "flows", "all"], default="all")
    parser.add_argument("-n", type=int, default=None, help="exchanges or flows timed (token 3,000; flows 3,000)")
    parser.add_argument("--rounds", type=int, default=None, help="token rounds per server, the best counts (3)")
    parser.add_argument("--workers", type=int, default=2, help="server processes of the token section (as many "
                        "for oidc-provider)")
    parser.add_argument("--flow-workers", type=int, default=3,
                        help="server processes of the flows section [3: on 2 cores a third process works while "
                             "the others wait on Redis]")
    parser.add_argument("--quick", action="store_true", help="short runs while developing (n 600, 1 round)")
    parser.add_argument("--no-baseline", action="store_true", help="leave oidc-provider out")
    parser.add_argument("--node-dir", help="where oidc-provider is installed [~/.cache/jpki-bench/oidc-provider]")
    parser.add_argument("--token-client", choices=list(CLIENTS), default="httpx",
                        help="the load generator's HTTP client for the token section [httpx]")
    parser.add_argument("--flows-client", choices=list(CLIENTS), default="raw",
                        help="the load generator's HTTP client for the flows section [raw]")
    args = parser.parse_args()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {model}, load average "
          f"{os.getloadavg()[0]:.2f} (figures to quote: a quiet machine)")
    if args.section in ("token", "all"):
        token_section(args.n or (600 if args.quick else 3000), args.rounds or (1 if args.quick else 3), args.workers,
                      not args.no_baseline, node_dir(args.node_dir), args.token_client)
    if args.section in ("flows", "all"):
        flows_section(args.n or (600 if args.quick else 3000), args.flow_workers, args.flows_client)


if __name__ == "__main__":
    main()
