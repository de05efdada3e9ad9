"""The software My Number Card: file system, PINs, keys and the APDU command set.

``MyNumberCard.transmit(apdu) -> rapdu`` never raises. Handlers raise ``CardStatus(sw)``; any other
exception becomes ``6F00`` and a log line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from .apdu import SW, CardStatus, Command, parse_class, parse_command
from .profile import CardProfile
from .storage import locked, read_json, write_json

log = logging.getLogger("card_emulator")

CARD_FILE = "card.json"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1
PIN_ITERATIONS = 2000

#: PIN value rules (spec §7), by format name.
PIN_FORMATS: dict[str, re.Pattern[bytes]] = {
    "digits4": re.compile(rb"[0-9]{4}"),
    "password": re.compile(rb"[A-Z0-9]{6,16}"),
    "digits12": re.compile(rb"[0-9]{12}"),
    "digits14": re.compile(rb"[0-9]{14}"),
}

_DIGEST_INFO_PREFIXES: dict[bytes, hashes.HashAlgorithm] = {
    bytes.fromhex("3021300906052b0e03021a05000414"): hashes.SHA1(),
    bytes.fromhex("302d300d06096086480165030402040500041c"): hashes.SHA224(),
    bytes.fromhex("3031300d060960864801650304020105000420"): hashes.SHA256(),
    bytes.fromhex("3041300d060960864801650304020205000430"): hashes.SHA384(),
    bytes.fromhex("3051300d060960864801650304020305000440"): hashes.SHA512(),
}

# INS whose data field holds secrets or personal data: never traced.
_SECRET_INS = {0x20, 0x24}


def hash_pin(value: bytes, salt: bytes, iterations: int = PIN_ITERATIONS) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", value, salt, iterations)


def new_pin_record(value: str, fmt: str, max_tries: int) -> dict[str, Any]:
    raw = value.encode("ascii")
    if not PIN_FORMATS[fmt].fullmatch(raw):
        raise ValueError(f"PIN does not match the {fmt} rule")
    salt = os.urandom(16)
    return {"format": fmt, "max": max_tries, "remaining": max_tries,
            "salt": salt.hex(), "hash": hash_pin(raw, salt).hex(), "iterations": PIN_ITERATIONS}


@dataclass
class EF:
    fid: int
    kind: str  # "binary" | "key" | "pin"
    data: bytes = b""
    read: tuple[str, ...] = ()  # PIN names any one of which opens the EF; () = free
    key: str | None = None  # key EF: the key's name
    pin: str | None = None  # key EF: PIN that enables it; PIN EF: the PIN's name


@dataclass
class Application:
    name: str
    aid: bytes
    files: dict[int, EF] = field(default_factory=dict)

    def by_sfi(self, sfi: int) -> EF | None:
        return self.files.get(sfi)  # every FID here is 00xx, so the SFI is the FID's low byte


class _MemoryStore:
    """PIN state held in memory (cards built in tests without a directory)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self._lock = threading.Lock()

    def lock(self):
        return self._lock

    def read(self) -> dict[str, Any]:
        return self._state

    def write(self, state: dict[str, Any]) -> None:
        self._state = state

    def content_version(self) -> None:
        return None

    def load_content(self):  # pragma: no cover - never called: the version never changes
        raise NotImplementedError


class _DirectoryStore:
    """PIN state in ``state.json``, re-read under an inter-process lock on every change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def lock(self):
        return locked(self.directory / LOCK_FILE)

    def read(self) -> dict[str, Any]:
        return read_json(self.directory / STATE_FILE)

    def write(self, state: dict[str, Any]) -> None:
        write_json(self.directory / STATE_FILE, state)

    def remove_stale_temporaries(self, older_than: float = 60.0) -> None:
        """Delete temporary files a killed writer left behind (never a live writer's)."""
        limit = time.time() - older_than
        with self.lock():
            for folder in (self.directory, self.directory / "keys"):
                for tmp in folder.glob(".*.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        if tmp.stat().st_mtime < limit:
                            tmp.unlink()

    def content_version(self) -> tuple[int, int, int]:
        st = os.stat(self.directory / CARD_FILE)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load_content(self) -> tuple[dict[str, Any], dict[str, rsa.RSAPrivateKey]]:
        content = read_json(self.directory / CARD_FILE)
        keys = {}
        for key_name, rel in content.get("keys", {}).items():
            pem = (self.directory / rel).read_bytes()
            # The card wrote these keys itself (0600): skip OpenSSL's slow RSA consistency check,
            # which otherwise dominates opening a card (~50 ms a key).
            keys[key_name] = serialization.load_pem_private_key(
                pem, password=None, unsafe_skip_rsa_key_validation=True)
        return content, keys


class MyNumberCard:
    """A software My Number Card. Open one from a card directory with :meth:`open`."""

    def __init__(self, content: dict[str, Any], state: dict[str, Any],
                 keys: dict[str, rsa.RSAPrivateKey], store: Any = None) -> None:
        self._load_content(content, keys)
        self._store = store if store is not None else _MemoryStore(state)
        self._content_version = self._store.content_version()
        self._lock = threading.RLock()
        self._handlers: dict[int, tuple[bool, Callable[[Command], bytes]]] = {
            0xA4: (False, self._select),
            0xB0: (False, self._read_binary),
            0x20: (False, self._verify),
            0x24: (False, self._change_reference_data),
            0x84: (False, self._get_challenge),
            0x2A: (True, self._compute_digital_signature),
        }
        self._reset_security()

    def _load_content(self, content: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]) -> None:
        if content.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported card format {content.get('format')!r}")
        self.profile = CardProfile.from_json(content.get("profile"))
        apps: dict[bytes, Application] = {}
        for app_name, app in content["applications"].items():
            files = {}
            for fid_hex, f in app.get("files", {}).items():
                fid = int(fid_hex, 16)
                files[fid] = EF(fid=fid, kind=f["kind"],
                                data=base64.b64decode(f.get("data", "")),
                                read=tuple(f.get("read", ())), key=f.get("key"), pin=f.get("pin"))
            aid = bytes.fromhex(app["aid"])
            apps[aid] = Application(app_name, aid, files)
        self.apps = apps
        self._keys = keys

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> "MyNumberCard":
        store = _DirectoryStore(Path(directory))
        store.remove_stale_temporaries()
        content, keys = store.load_content()
        return cls(content, store.read(), keys, store)

    def _reload_if_changed(self) -> None:
        """Pick up what the issuer rewrote while the card was out (e.g. a new signing key)."""
        version = self._store.content_version()
        if version != self._content_version:
            content, keys = self._store.load_content()
            self._load_content(content, keys)
            self._content_version = version

    @property
    def atr(self) -> bytes:
        return self.profile.atr

    def power_on(self) -> None:
        with self._lock:
            self._reload_if_changed()
            self._reset_security()

    def power_off(self) -> None:
        with self._lock:
            self._reset_security()

    def reset(self) -> None:
        with self._lock:
            self._reload_if_changed()
            self._reset_security()

    def close(self) -> None:
        with self._lock:
            self._reset_security()

    def __enter__(self) -> "MyNumberCard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset_security(self) -> None:
        self._app: Application | None = None
        self._ef: EF | None = None
        self._verified: set[str] = set()

    # ----------------------------------------------------------------- dispatch
    def transmit(self, apdu: bytes) -> bytes:
        """Process one command APDU; return response data + SW1 SW2. Never raises."""
        with self._lock:
            ins = None
            size = 0
            try:
                apdu = bytes(apdu)
                size = len(apdu)
                ins = apdu[1] if size > 1 else None
                data = self._process(apdu)
                sw = SW.OK
            except CardStatus as status:
                data, sw = status.data, status.sw
            except Exception:  # the card never crashes
                log.exception("internal error processing INS %s", f"{ins:02X}" if ins is not None else "?")
                data, sw = b"", SW.NO_PRECISE_DIAGNOSIS
            if log.isEnabledFor(logging.DEBUG):
                log.debug("C> INS=%s Lc=%s R< %d bytes SW=%04X",
                          f"{ins:02X}" if ins is not None else "--",
                          "-" if ins in _SECRET_INS else max(0, size - 5), len(data), sw)
            return data + int(sw).to_bytes(2, "big")

    def _process(self, apdu: bytes) -> bytes:
        cmd = parse_command(apdu)
        cls = parse_class(cmd.cla)
        if cls is None:
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        if cls.channel != 0:
            raise CardStatus(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        entry = self._handlers.get(cmd.ins)
        if entry is None:
            raise CardStatus(SW.INS_NOT_SUPPORTED)
        proprietary, handler = entry
        if proprietary != cls.proprietary:
            raise CardStatus(SW.CLA_NOT_SUPPORTED)
        if cls.secure_messaging:
            raise CardStatus(self.profile.sm_select_sw if cmd.ins == 0xA4 else self.profile.sm_other_sw)
        if cls.chaining:
            raise CardStatus(SW.CHAINING_NOT_SUPPORTED)
        return handler(cmd)

    # ----------------------------------------------------------------- SELECT
    def _select(self, cmd: Command) -> bytes:
        if cmd.p2 not in (0x00, 0x0C):
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.p1 == 0x04:  # DF by name (AID)
            if not cmd.data:
                raise CardStatus(SW.WRONG_LENGTH)
            app = self.apps.get(cmd.data)
            if app is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            self._reset_security()
            self._app = app
            return b""
        if cmd.p1 == 0x02:  # EF under the current DF
            if len(cmd.data) != 2:
                raise CardStatus(SW.WRONG_LENGTH)
            if self._app is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            ef = self._app.files.get(int.from_bytes(cmd.data, "big"))
            if ef is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            self._ef = ef
            return b""
        if cmd.p1 == 0x00:  # MF
            if cmd.data not in (b"", b"\x3f\x00"):
                raise CardStatus(SW.FILE_NOT_FOUND)
            self._reset_security()
            return b""
        raise CardStatus(SW.INCORRECT_P1P2)

    # ----------------------------------------------------------------- READ BINARY
    def _read_binary(self, cmd: Command) -> bytes:
        if cmd.le is None or cmd.data:
            raise CardStatus(SW.WRONG_LENGTH)
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                raise CardStatus(SW.INCORRECT_P1P2)
            if self._app is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            ef = self._app.by_sfi(cmd.p1 & 0x1F)
            if ef is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            self._ef = ef
            offset = cmd.p2
        else:
            ef = self._ef
            if ef is None:
                raise CardStatus(SW.NO_CURRENT_EF)
            offset = cmd.p1p2 & 0x7FFF
        if ef.kind != "binary":
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        if ef.read and not self._verified.intersection(ef.read):
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        if offset >= len(ef.data):
            raise CardStatus(SW.WRONG_P1P2_OFFSET)
        out = ef.data[offset:offset + cmd.le]
        if len(out) < cmd.le and self.profile.short_read_sw != SW.OK:
            raise CardStatus(self.profile.short_read_sw, out)
        return out

    # ----------------------------------------------------------------- PINs
    def _reference(self, p2: int, kind: str) -> EF:
        """The EF a VERIFY / CHANGE / SIGN refers to: the current EF (P2 80) or 80|SFI."""
        if p2 == 0x80:
            ef = self._ef
            if ef is None:
                raise CardStatus(SW.NO_CURRENT_EF)
            if ef.kind != kind:
                raise CardStatus(SW.COMMAND_INCOMPATIBLE)
            return ef
        if not p2 & 0x80 or p2 & 0x60:
            raise CardStatus(SW.INCORRECT_P1P2)
        ef = self._app.by_sfi(p2 & 0x1F) if self._app is not None else None
        if ef is None or ef.kind != kind:
            raise CardStatus(SW.REFERENCE_DATA_NOT_FOUND)
        return ef

    def _verify(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.le is not None:
            raise CardStatus(SW.WRONG_LENGTH)
        name = self._reference(cmd.p2, "pin").pin
        assert name is not None
        with self._store.lock():
            state = self._store.read()
            rec = state["pins"][name]
            if not cmd.data:  # tries left, spending none
                if rec["remaining"] == 0:
                    raise CardStatus(self.profile.blocked_query_sw)
                raise CardStatus(SW.tries_left(rec["remaining"]))
            if rec["remaining"] == 0:
                raise CardStatus(SW.REFERENCE_DATA_NOT_USABLE)
            # Spend the try on disk before comparing: killing the card can never give it back.
            rec["remaining"] -= 1
            self._store.write(state)
            good = hmac.compare_digest(
                hash_pin(cmd.data, bytes.fromhex(rec["salt"]), rec["iterations"]),
                bytes.fromhex(rec["hash"]))
            if not good:
                self._verified.discard(name)
                raise CardStatus(SW.tries_left(rec["remaining"]))
            rec["remaining"] = rec["max"]
            self._store.write(state)
        self._verified.add(name)
        return b""

    def _change_reference_data(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x01:
            raise CardStatus(SW.INCORRECT_P1P2)
        if not cmd.data or cmd.le is not None:
            raise CardStatus(SW.WRONG_LENGTH)
        name = self._reference(cmd.p2, "pin").pin
        assert name is not None
        with self._store.lock():
            state = self._store.read()
            rec = state["pins"][name]
            if rec["remaining"] == 0:
                raise CardStatus(SW.REFERENCE_DATA_NOT_USABLE)
            if name not in self._verified:
                raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
            if not PIN_FORMATS[rec["format"]].fullmatch(cmd.data):
                raise CardStatus(SW.WRONG_DATA)
            salt = os.urandom(16)
            rec.update(salt=salt.hex(), hash=hash_pin(cmd.data, salt, rec["iterations"]).hex(),
                       remaining=rec["max"])
            self._store.write(state)
        return b""

    # ----------------------------------------------------------------- signing
    def _compute_digital_signature(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        ef = self._reference(cmd.p2, "key")
        if not 1 <= len(cmd.data) <= 245:
            raise CardStatus(SW.WRONG_LENGTH)
        if ef.pin not in self._verified:
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        key = self._keys.get(ef.key or "")
        if key is None:
            raise CardStatus(SW.CONDITIONS_NOT_SATISFIED)
        signature = pkcs1v15_sign_raw(key, cmd.data)
        if self.profile.one_signature_per_verify and ef.key == "sign":
            self._verified.discard(ef.pin)
        return signature

    def _get_challenge(self, cmd: Command) -> bytes:
        if cmd.p1p2 != 0:
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.le is None or cmd.data or cmd.le > 256:
            raise CardStatus(SW.WRONG_LENGTH)
        return os.urandom(cmd.le)

    # ----------------------------------------------------------------- introspection (no secrets)
    def pin_status(self) -> dict[str, tuple[int, int]]:
        """PIN name -> (tries left, maximum), read from the persisted state."""
        with self._store.lock():
            pins = self._store.read()["pins"]
        return {name: (rec["remaining"], rec["max"]) for name, rec in pins.items()}


def pkcs1v15_sign_raw(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """RSA PKCS#1 v1.5 type-1 signature over ``data`` as given (the card's view: no hashing).

    When ``data`` is a standard DigestInfo the result is computed by OpenSSL (identical bytes,
    PKCS#1 v1.5 is deterministic); anything else goes through CRT arithmetic here.
    """
    for prefix, algorithm in _DIGEST_INFO_PREFIXES.items():
        if data.startswith(prefix) and len(data) == len(prefix) + algorithm.digest_size:
            return key.sign(data[len(prefix):], padding.PKCS1v15(), utils.Prehashed(algorithm))
    k = (key.key_size + 7) // 8
    if len(data) > k - 11:
        raise CardStatus(SW.WRONG_LENGTH)
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    priv = key.private_numbers()
    m = int.from_bytes(em, "big")
    s1 = pow(m, priv.dmp1, priv.p)
    s2 = pow(m, priv.dmq1, priv.q)
    h = (priv.iqmp * (s1 - s2)) % priv.p
    s = s2 + h * priv.q
    # Check the result before it leaves the card (guards against fault-induced key leaks).
    if pow(s, priv.public_numbers.e, priv.public_numbers.n) != m:
        raise RuntimeError("RSA self-check failed")
    return s.to_bytes(k, "big")
