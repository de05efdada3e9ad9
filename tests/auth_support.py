"""Shared fixtures and helpers of the jpki.auth tests (login and eKYC). Not a test module.

``conftest.py`` makes the fixtures (``net``, ``links``, ``rp``, ``alice``, ``live_home``)
available to every test; test modules import the helpers from here. Revocation is answered by the
test CA's revocation server: in process through its ASGI app (``net``), or under uvicorn on a
free port with the CA's base URL rewritten to it (``served_revocation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fixed import TEMPLATE_BASE_URL

from jpki.auth import (
    FollowPredecessors,
    MemoryStore,
    RelyingParty,
    TestCALinks,
)
from jpki.auth.protocol import ClientData, LoginResponse
from jpki.auth.service import ServiceConfig, create_service
from jpki.auth.store import Challenge
from jpki.clock import clock_from_environment
from jpki.identity import SAMPLE_PERSONAS
from jpki.pki import TestCA, free_port
from jpki.pki.server import create_app as revocation_app
from jpki.pki.server import serve_in_thread
from jpki.provision import Home, create_card, read_holder
from jpki.serving import ServerThread
from jpki.session import JpkiSession
from jpki.transport import open_transport
from jpki.verify import HttpFetcher, TrustStore, Validator

RP_ID = "https://rp.example.jp"
AUTH_PIN = "1234"
SIGN_PIN = "ABC123"
CA_BASE = TEMPLATE_BASE_URL  # what the template CA's certificates name


# --------------------------------------------------------------------------- revocation


class InProcessFetch:
    """The validator's fetch, answered by the revocation server's ASGI app in this process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    def __call__(self, url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
        self.calls += 1

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app)) as client:
                if data is None:
                    return await client.get(url)
                return await client.post(url, content=data, headers={"Content-Type": content_type or ""})

        response = asyncio.run(go())
        response.raise_for_status()
        return response.content


@pytest.fixture
def net(home: Path, clock) -> Iterator[InProcessFetch]:
    """OCSP and CRLs of the home's test CA, served in process."""
    app = revocation_app(home / "ca", clock=clock)
    yield InProcessFetch(app)
    app.state.service.close()


@pytest.fixture
def live_home(tmp_path: Path, key_pool: list[rsa.RSAPrivateKey]) -> Iterator[Path]:
    """A home whose test CA names a free port, where its revocation server runs (the clock of
    $JPKI_NOW, as the CLI has): what a person gets with `jpki ca init --base-url …` and `jpki ca serve`.
    For the tests that run servers (`jpki rp serve`, `jpki idp serve`) as processes."""
    port = free_port()
    path = tmp_path / "live"
    path.mkdir(mode=0o700)
    home = Home(path)
    clock = clock_from_environment()
    TestCA.init(home.ca_dir, clock=clock, base_url=f"http://127.0.0.1:{port}",
                keys={"sign": key_pool[0], "auth": key_pool[1]}).close()
    create_card(home, "alice", SAMPLE_PERSONAS["alice"], clock=clock, keys=(key_pool[2], key_pool[3]))
    with serve_in_thread(home.ca_dir, "127.0.0.1", port, clock=clock):
        yield path


@contextlib.contextmanager
def served_revocation(home: Path, clock) -> Iterator[Callable[..., bytes]]:
    """The revocation server under uvicorn (``serve_in_thread``) and an HTTP fetch that sends
    the CA's URLs to it."""
    fetcher = HttpFetcher(timeout=5, connect_timeout=2)
    with serve_in_thread(home / "ca", clock=clock) as server:
        def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
            return fetcher(url.replace(CA_BASE, server.url), data, content_type)

        try:
            yield fetch
        finally:
            fetcher.close()


class OcspOutage:
    """An ASGI wrapper of the revocation server: while ``status`` is set, every OCSP request is
    answered with that HTTP status (e.g. 503) and a text body; CRLs are served as usual."""

    def __init__(self, app: Any, status: int | None = None) -> None:
        self.app = app
        self.status = status
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.status is not None and scope["path"].startswith("/ocsp/"):
            self.refused += 1
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"responder unavailable\n"})
            return
        await self.app(scope, receive, send)


@contextlib.contextmanager
def served_revocation_with_outage(home: Path, clock) -> Iterator[tuple[Callable[..., bytes], OcspOutage]]:
    """Like :func:`served_revocation`, behind an :class:`OcspOutage` (set its ``status`` to make
    the OCSP responder fail over real HTTP)."""
    app = revocation_app(home / "ca", clock=clock)
    outage = OcspOutage(app)
    fetcher = HttpFetcher(timeout=5, connect_timeout=2)
    try:
        server = ServerThread(outage, "127.0.0.1", 0).start()  # type: ignore[arg-type]
    except BaseException:
        app.state.service.close()
        raise
    with server:
        def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
            return fetcher(url.replace(CA_BASE, server.url), data, content_type)

        try:
            yield fetch, outage
        finally:
            fetcher.close()


def make_validator(home: Path, clock, fetch) -> Validator:
    """The service's trust: the J-LIS roots and the home's test CA."""
    return Validator(TrustStore.jlis() + TrustStore.from_ca_dir(home / "ca"), clock=clock, fetch=fetch)


@pytest.fixture
def links(home: Path) -> Iterator[TestCALinks]:
    found = TestCALinks(home / "ca")
    yield found
    found.close()


@pytest.fixture
def rp(home: Path, clock, net, links) -> RelyingParty:
    """A relying party for RP_ID: memory store, the home's CA trusted, renewal links followed."""
    return RelyingParty(RP_ID, make_validator(home, clock, net), MemoryStore(), clock,
                        account_resolver=FollowPredecessors(links.predecessor))


# --------------------------------------------------------------------------- cards


@contextlib.contextmanager
def card_session(home: Path, name: str = "alice", uri: str | None = None) -> Iterator[JpkiSession]:
    """A JPKI session on a card: ``emu:NAME`` in process unless ``uri`` says otherwise."""
    with open_transport(uri or f"emu:{name}", home=home) as transport:
        yield JpkiSession(transport)


@pytest.fixture
def alice(home: Path) -> Iterator[JpkiSession]:
    with card_session(home, "alice") as session:
        yield session


def credentials(home: Path, name: str, kind: str) -> tuple[rsa.RSAPrivateKey, bytes]:
    """The private key (from the card directory) and certificate DER of a card's key ``kind``."""
    directory = Home(home).card_dir(name)
    card = json.loads((directory / "card.json").read_text())
    key = serialization.load_pem_private_key((directory / card["keys"][kind]).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    holder = read_holder(Home(home), name)
    serial = holder.auth_serial if kind == "auth" else holder.sign_serial
    with Home(home).open_ca() as ca:
        record = ca.db.get(serial)
    assert record is not None
    return key, record.der


def sign_with_key(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """What the card's COMPUTE DIGITAL SIGNATURE over DigestInfo(SHA-256(data)) gives."""
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def forged_login(challenge: Challenge, key: rsa.RSAPrivateKey, cert_der: bytes, **changes: Any) -> LoginResponse:
    """A login response signed with ``key`` over the challenge's client data, optionally with
    changed client-data fields (``rp_id=…``, ``purpose=…``, ``nonce=…``)."""
    data = ClientData.for_challenge(challenge)
    if changes:
        fields = {f: getattr(data, f) for f in ClientData.__dataclass_fields__}
        fields.update(changes)
        data = ClientData(**fields)
    encoded = data.encode()
    return LoginResponse(challenge.id, encoded, cert_der, sign_with_key(key, encoded))


PERSONAL = ("山田", "花子", "東京都", "千代田", "神保町", "1990-04-15")


def assert_no_personal_data(text: str, home: Path | None = None) -> None:
    """No name, address, birth date or My Number of the sample cards in ``text``."""
    for word in PERSONAL:
        assert word not in text, f"personal data {word!r} in {text!r}"
    if home is not None:
        for name in Home(home).card_names():
            holder = read_holder(Home(home), name)
            persona = holder.persona
            for value in (persona.name, persona.address, persona.my_number, persona.birth_date.isoformat()):
                assert str(value) not in text, f"{name}'s personal data in the log"


# --------------------------------------------------------------------------- the service in process

BASE = "http://testserver"


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(go())


def make_service(home: Path, clock, fetch, store: str = "memory", rp_id: str = BASE, **kw: Any) -> Any:
    return create_service(ServiceConfig(home=home, rp_id=rp_id, store=store, **kw), clock=clock, fetch=fetch)
