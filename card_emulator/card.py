"""The software My Number Card: file system, PINs, keys and the APDU command set.

``MyNumberCard.transmit(apdu) -> rapdu`` never raises. Handlers raise ``CardStatus(sw)``; any other
exception becomes ``6F00`` and a log line.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from . import content as C
from .apdu import SW, CardStatus, Command, parse_class, parse_command
from .profile import CardProfile
from .state import (
    FORMAT_VERSION,
    MAX_ITERATIONS,
    PIN_FORMATS,
    CardStateError,
    check_content,
    check_state,
    key_file,
    load_json,
    load_state,
    pin_names,
    pin_record,
)
from .storage import locked, write_json

log = logging.getLogger("card_emulator")

CARD_FILE = "card.json"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
PIN_ITERATIONS = 2000

__all__ = ["CARD_FILE", "FORMAT_VERSION", "LOCK_FILE", "PIN_FORMATS", "STATE_FILE", "CardStateError",
           "MyNumberCard", "hash_pin", "new_pin_record", "pkcs1v15_sign_raw"]

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


def new_pin_record(value: str, fmt: str, max_tries: int, iterations: int = PIN_ITERATIONS) -> dict[str, Any]:
    """A PIN record; ``iterations`` (PBKDF2 rounds, kept in the record) may be lowered for test
    cards, whose PINs are public anyway: seven records at the default cost ~4 ms per card."""
    raw = value.encode("ascii")
    if not PIN_FORMATS[fmt].fullmatch(raw):
        raise ValueError(f"PIN does not match the {fmt} rule")
    if type(iterations) is not int or not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in 1..{MAX_ITERATIONS}")
    salt = os.urandom(16)
    return {"format": fmt, "max": max_tries, "remaining": max_tries,
            "salt": salt.hex(), "hash": hash_pin(raw, salt, iterations).hex(), "iterations": iterations}


@dataclass
class EF:
    fid: int
    kind: str  # "binary" | "record" | "key" | "pin"
    data: bytes = b""
    read: tuple[str, ...] = ()  # PIN names any one of which opens the EF; () = free
    key: str | None = None  # key EF: the key's name
    pin: str | None = None  # key EF: PIN that enables it; PIN EF: the PIN's name
    records: tuple[bytes, ...] = ()  # record EF: its records, record 1 first
    #: binary EF whose content is made when first read (the card-surface images): see content()
    build: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def content(self) -> bytes:
        """The EF's bytes, made on first use for an EF that is built lazily (and kept: the EF is
        shared by every copy of the card, which then builds it once)."""
        build = self.build  # copies of the card in other threads may build it at the same time
        if build is not None:
            self.data = build()
            self.build = None
        return self.data


@dataclass
class Application:
    name: str
    aid: bytes
    files: dict[int, EF] = field(default_factory=dict)

    def by_sfi(self, sfi: int) -> EF | None:
        return self.files.get(sfi)  # every FID here is 00xx, so the SFI is the FID's low byte


#: What the card remembers of a PIN between two reads of the state: (generation, tries left).
PinMark = tuple[int, int]


class _MemoryStore:
    """PIN state held in memory (cards built in tests without a directory)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self._lock = threading.Lock()

    def lock(self) -> contextlib.AbstractContextManager[object]:
        return self._lock

    def path(self, name: str) -> Path:
        return Path("<memory>") / name

    def read(self) -> dict[str, Any]:
        return self._state

    def write(self, state: dict[str, Any]) -> None:
        self._state = state

    def pin_mark(self, name: str) -> PinMark | None:
        rec = pin_record(self._state, name)
        return None if rec is None else (rec.get("generation", 0), rec["remaining"])

    def forget(self) -> None:
        pass

    def content_version(self) -> None:
        return None

    def load_content(self) -> tuple[dict[str, Any], dict[str, rsa.RSAPrivateKey]]:  # pragma: no cover
        raise NotImplementedError("never called: the version of a card in memory never changes")


class _DirectoryStore:
    """PIN state in ``state.json``, re-read under an inter-process lock on every change.

    Several processes may open the same card directory; each writes ``state.json`` whole with
    ``os.replace`` (a new inode every time). :meth:`pin_mark` answers "is this PIN still as I
    verified it?" for every APDU that relies on a verified PIN, so it must be cheap: it keeps the
    state file it last parsed open, and re-parses only when ``stat`` shows another file at the path.
    Holding the old file open keeps its inode allocated, so a later file can never reuse the inode
    and pass for it. (A tool that rewrites the file in place, keeping its inode, is noticed
    through the size or the mtime; the card itself never does that.)
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._state_path = os.fspath(directory / STATE_FILE)  # a str: stat() per APDU, no Path
        self._seen: Any = None  # the open state.json that ``_marks`` was parsed from
        self._seen_id: tuple[int, int, int, int] | None = None
        self._marks: dict[str, PinMark] = {}

    def lock(self) -> contextlib.AbstractContextManager[object]:
        return locked(self.directory / LOCK_FILE)

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self) -> dict[str, Any]:
        return load_state(self.directory / STATE_FILE)

    def write(self, state: dict[str, Any]) -> None:
        write_json(self.directory / STATE_FILE, state)

    def pin_mark(self, name: str) -> PinMark | None:
        """(generation, tries left) of PIN ``name`` as persisted now; None if its record is damaged."""
        try:
            st = os.stat(self._state_path)
        except OSError:
            self.forget()
            return None
        if (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns) != self._seen_id:
            self._reparse()
        return self._marks.get(name)

    def _reparse(self) -> None:
        self.forget()
        try:
            fh = open(self._state_path, "rb")  # noqa: SIM115 - held open on purpose
        except OSError:
            return
        st = os.fstat(fh.fileno())
        try:
            state = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            state = None  # damaged: every PIN counts as blocked until the file changes again
        pins = state.get("pins") if isinstance(state, dict) else None
        for name in pins if isinstance(pins, dict) else ():
            rec = pin_record(state, name)
            if rec is not None:
                self._marks[name] = (rec.get("generation", 0), rec["remaining"])
        self._seen, self._seen_id = fh, (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def forget(self) -> None:
        """Drop the cached view of the state (and the file held open for it)."""
        if self._seen is not None:
            self._seen.close()
        self._seen, self._seen_id, self._marks = None, None, {}

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
        """card.json and its keys, checked (:class:`CardStateError` names the damaged file)."""
        content = check_content(load_json(self.directory / CARD_FILE), self.directory / CARD_FILE)
        keys = {}
        for key_name, rel in content.get("keys", {}).items():
            path = key_file(self.directory, key_name, rel)
            try:
                pem = path.read_bytes()
            except OSError as exc:
                raise CardStateError(path, f"key {key_name!r} cannot be read "
                                           f"({exc.strerror or exc})") from None
            try:
                # The card wrote these keys itself (0600): skip OpenSSL's slow RSA consistency
                # check, which otherwise dominates opening a card (~50 ms a key).
                key = serialization.load_pem_private_key(
                    pem, password=None, unsafe_skip_rsa_key_validation=True)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                key = None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise CardStateError(path, f"key {key_name!r} is not an unencrypted RSA private "
                                           "key in PEM")
            keys[key_name] = key
        return content, keys


class MyNumberCard:
    """A software My Number Card. Open one from a card directory with :meth:`open`."""

    def __init__(self, content: dict[str, Any], state: dict[str, Any],
                 keys: dict[str, rsa.RSAPrivateKey], store: _DirectoryStore | None = None) -> None:
        """A card from checked files: :class:`CardStateError` if ``content`` or ``state`` is
        damaged (a card never starts from a state it cannot trust)."""
        self._store: _MemoryStore | _DirectoryStore = store if store is not None else _MemoryStore(state)
        check_content(content, self._store.path(CARD_FILE))
        self._load_content(content, keys)
        check_state(state, self._store.path(STATE_FILE), self._pin_names)
        self._content_version = self._store.content_version()
        self._start()

    def _start(self) -> None:
        """What each card object has of its own: its lock, its command table (bound to it), a
        clear security state."""
        self._lock = threading.RLock()
        self._handlers: dict[int, tuple[bool, Callable[[Command], bytes]]] = {
            0xA4: (False, self._select),
            0xB0: (False, self._read_binary),
            0xB2: (False, self._read_record),
            0x20: (False, self._verify),
            0x24: (False, self._change_reference_data),
            0x84: (False, self._get_challenge),
            0x2A: (True, self._compute_digital_signature),
        }
        self._reset_security()

    def _load_content(self, content: dict[str, Any], keys: dict[str, rsa.RSAPrivateKey]) -> None:
        """Build the file system from a card.json that :func:`check_content` accepted."""
        self.profile = CardProfile.from_json(content.get("profile"))
        apps: dict[bytes, Application] = {}
        for app_name, app in content["applications"].items():
            files = {}
            for fid_hex, f in app.get("files", {}).items():
                fid = int(fid_hex, 16)
                surface = f.get("surface")
                files[fid] = EF(fid=fid, kind=f["kind"],
                                data=base64.b64decode(f.get("data", "")),
                                read=tuple(f.get("read", ())), key=f.get("key"), pin=f.get("pin"),
                                records=tuple(base64.b64decode(r) for r in f.get("records", ())),
                                build=None if surface is None else
                                functools.partial(build_surface_ef, surface, self.profile))
            aid = bytes.fromhex(app["aid"])
            apps[aid] = Application(app_name, aid, files)
        self.apps = apps
        self._keys = keys
        self._pin_names = pin_names(content)
        self.serial: str = content.get("serial", "")

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> MyNumberCard:
        """Open a card directory; :class:`CardStateError` names the file that is missing or damaged.

        Every file is checked first (card.json, state.json, the key files): a card whose state
        cannot be trusted does not open at all, rather than answer as a fresh card would.
        """
        directory = Path(directory)
        if not (directory / CARD_FILE).is_file():
            raise CardStateError(directory / CARD_FILE, "the file is missing (no card here)")
        store = _DirectoryStore(directory)
        store.remove_stale_temporaries()
        content, keys = store.load_content()
        return cls(content, store.read(), keys, store)

    @classmethod
    def read_files(cls, directory: str | os.PathLike[str]) -> CardFiles:
        """The files of a card directory, read and checked as :meth:`open` checks them, to make
        private copies of the card in memory from (:meth:`CardFiles.card`)."""
        directory = Path(directory)
        if not (directory / CARD_FILE).is_file():
            raise CardStateError(directory / CARD_FILE, "the file is missing (no card here)")
        store = _DirectoryStore(directory)
        content, keys = store.load_content()
        state = store.read()
        return CardFiles(content, state, keys, cls(content, copy.deepcopy(state), keys))

    def _copy_in_memory(self) -> MyNumberCard:
        """This card with PIN state of its own in memory, powered off. The file system and the
        keys are shared: no command changes them (only the issuer's tools rewrite a card's
        files, in its directory)."""
        clone = copy.copy(self)
        clone._store = _MemoryStore(copy.deepcopy(self._store.read()))
        clone._start()
        return clone

    def _reload_if_changed(self) -> None:
        """Pick up what the issuer rewrote while the card was out (e.g. a new signing key).

        A rewrite that is damaged is not taken: the card keeps the content it had, and says so
        in the log at every power-on until card.json is sound again.
        """
        try:
            version = self._store.content_version()
            if version == self._content_version:
                return
            content, keys = self._store.load_content()
        except (OSError, CardStateError) as exc:
            log.error("card.json changed but cannot be used, keeping the card as it was: %s", exc)
            return
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
            self._store.forget()

    def __enter__(self) -> MyNumberCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset_security(self) -> None:
        self._app: Application | None = None
        self._ef: EF | None = None
        #: verified PINs, each with the generation of its record when it was verified
        self._verified: dict[str, int] = {}

    # ----------------------------------------------------------------- dispatch
    def transmit(self, apdu: bytes) -> bytes:
        """Process one command APDU; return response data + SW1 SW2. Never raises."""
        with self._lock:
            ins = None
            size = 0
            sw: int
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
        if ef.kind == "record":
            raise CardStatus(SW.COMMAND_INCOMPATIBLE)  # READ BINARY of a record file
        if ef.kind != "binary":
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        if ef.read and not any(self._still_verified(name) for name in ef.read):
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        data = ef.content()
        if offset >= len(data):
            raise CardStatus(SW.WRONG_P1P2_OFFSET)
        out = data[offset:offset + cmd.le]
        if len(out) < cmd.le and self.profile.short_read_sw != SW.OK:
            raise CardStatus(self.profile.short_read_sw, out)
        return out

    # ----------------------------------------------------------------- READ RECORD
    def _read_record(self, cmd: Command) -> bytes:
        """READ RECORD ``00 B2 P1=record P2=(SFI<<3)|04 Le``: one record by its number, of the
        current EF (SFI 0) or of the EF the SFI names (the common AP's EF 0001 is read this way:
        ``00 B2 01 0C 00``). Only "the record numbered P1" (P2 b3..b1 = 100) is supported."""
        if cmd.le is None or cmd.data:
            raise CardStatus(SW.WRONG_LENGTH)
        if cmd.p2 & 0x07 != 0x04 or cmd.p1 in (0x00, 0xFF):
            raise CardStatus(SW.INCORRECT_P1P2)
        sfi = cmd.p2 >> 3
        if sfi == 0x1F:
            raise CardStatus(SW.INCORRECT_P1P2)
        if sfi:
            if self._app is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            ef = self._app.by_sfi(sfi)
            if ef is None:
                raise CardStatus(SW.FILE_NOT_FOUND)
            self._ef = ef
        else:
            ef = self._ef
            if ef is None:
                raise CardStatus(SW.NO_CURRENT_EF)
        if ef.kind != "record":
            raise CardStatus(SW.COMMAND_INCOMPATIBLE)
        if ef.read and not any(self._still_verified(name) for name in ef.read):
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        if cmd.p1 > len(ef.records):
            raise CardStatus(SW.RECORD_NOT_FOUND)
        return ef.records[cmd.p1 - 1][:cmd.le]

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

    def _still_verified(self, name: str) -> bool:
        """Is PIN ``name`` verified in this session, and still as it was when it was verified?

        Other processes share the card's state: one may block the PIN (wrong tries), change it
        or have it reset. Any of these ends the verified state here, as on a real card, so every
        operation that relies on a verified PIN asks this first. Cheap when nothing changed (one
        ``stat`` of state.json, see ``_DirectoryStore.pin_mark``).
        """
        generation = self._verified.get(name)
        if generation is None:
            return False
        mark = self._store.pin_mark(name)
        if mark is None or mark[0] != generation or mark[1] == 0:
            del self._verified[name]  # blocked, changed, reset, or its record is damaged
            return False
        return True

    def _locked_pin_record(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(state, PIN record) read under the store lock; None if the record or the whole file
        is damaged: the PIN then answers as blocked, never as fresh."""
        try:
            state = self._store.read()
        except CardStateError as exc:
            log.error("PIN %s answers as blocked: %s", name, exc)
            return None
        rec = pin_record(state, name)
        if rec is None:
            log.error("PIN %s answers as blocked: its record in %s is damaged", name,
                      self._store.path(STATE_FILE))
            return None
        return state, rec

    def _verify(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.le is not None:
            raise CardStatus(SW.WRONG_LENGTH)
        name = self._reference(cmd.p2, "pin").pin
        assert name is not None
        with self._store.lock():
            found = self._locked_pin_record(name)
            if found is None:
                self._verified.pop(name, None)
                raise CardStatus(SW.REFERENCE_DATA_NOT_USABLE if cmd.data
                                 else self.profile.blocked_query_sw)
            state, rec = found
            if not cmd.data:  # tries left, spending none
                if rec["remaining"] == 0:
                    raise CardStatus(self.profile.blocked_query_sw)
                raise CardStatus(SW.tries_left(rec["remaining"]))
            if rec["remaining"] == 0:
                self._verified.pop(name, None)
                raise CardStatus(SW.REFERENCE_DATA_NOT_USABLE)
            # Spend the try on disk before comparing: killing the card can never give it back.
            rec["remaining"] -= 1
            self._store.write(state)
            good = hmac.compare_digest(
                hash_pin(cmd.data, bytes.fromhex(rec["salt"]), rec["iterations"]),
                bytes.fromhex(rec["hash"]))
            if not good:
                self._verified.pop(name, None)
                raise CardStatus(SW.tries_left(rec["remaining"]))
            rec["remaining"] = rec["max"]
            self._store.write(state)
        self._verified[name] = rec.get("generation", 0)
        return b""

    def _change_reference_data(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x01:
            raise CardStatus(SW.INCORRECT_P1P2)
        if not cmd.data or cmd.le is not None:
            raise CardStatus(SW.WRONG_LENGTH)
        name = self._reference(cmd.p2, "pin").pin
        assert name is not None
        with self._store.lock():
            found = self._locked_pin_record(name)
            if found is None or found[1]["remaining"] == 0:
                self._verified.pop(name, None)
                raise CardStatus(SW.REFERENCE_DATA_NOT_USABLE)
            state, rec = found
            generation = rec.get("generation", 0)
            if self._verified.get(name) != generation:  # never verified, or changed/reset since
                self._verified.pop(name, None)
                raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
            if not PIN_FORMATS[rec["format"]].fullmatch(cmd.data):
                raise CardStatus(SW.WRONG_DATA)
            salt = os.urandom(16)
            # a new generation ends the verified state of this PIN in every other session
            rec.update(salt=salt.hex(), hash=hash_pin(cmd.data, salt, rec["iterations"]).hex(),
                       remaining=rec["max"], generation=generation + 1)
            self._store.write(state)
        self._verified[name] = generation + 1
        return b""

    # ----------------------------------------------------------------- signing
    def _compute_digital_signature(self, cmd: Command) -> bytes:
        if cmd.p1 != 0x00:
            raise CardStatus(SW.INCORRECT_P1P2)
        ef = self._reference(cmd.p2, "key")
        if not 1 <= len(cmd.data) <= 245:
            raise CardStatus(SW.WRONG_LENGTH)
        if ef.pin is None or not self._still_verified(ef.pin):
            raise CardStatus(SW.SECURITY_STATUS_NOT_SATISFIED)
        key = self._keys.get(ef.key or "")
        if key is None:
            raise CardStatus(SW.CONDITIONS_NOT_SATISFIED)
        signature = pkcs1v15_sign_raw(key, cmd.data)
        if self.profile.one_signature_per_verify and ef.key == "sign":
            self._verified.pop(ef.pin, None)
        return signature

    def _get_challenge(self, cmd: Command) -> bytes:
        if cmd.p1p2 != 0:
            raise CardStatus(SW.INCORRECT_P1P2)
        if cmd.le is None or cmd.data or cmd.le > 256:
            raise CardStatus(SW.WRONG_LENGTH)
        return os.urandom(cmd.le)

    # ----------------------------------------------------------------- introspection (no secrets)
    def pin_status(self) -> dict[str, tuple[int, int]]:
        """PIN name -> (tries left, maximum), read from the persisted state; a PIN whose record
        is damaged shows (0, 0): blocked."""
        with self._store.lock():
            try:
                state = self._store.read()
            except CardStateError:
                state = None
        out = {}
        for name in sorted(self._pin_names):
            rec = pin_record(state, name)
            out[name] = (rec["remaining"], rec["max"]) if rec is not None else (0, 0)
        return out


@dataclass(frozen=True)
class CardFiles:
    """A card directory's files (card.json, state.json, the keys), read and checked once by
    :meth:`MyNumberCard.read_files`. :meth:`card` makes a private copy of that card in memory,
    as often as needed and without touching a disk: each starts with the PIN tries the
    directory had, and nothing done on it (a wrong PIN, a signature) is written anywhere —
    what jpki's test cards sign with, so that the directory's card never moves."""

    content: dict[str, Any]
    state: dict[str, Any]
    keys: dict[str, rsa.RSAPrivateKey]
    template: MyNumberCard = field(repr=False, compare=False)   # built (and checked) once

    def card(self) -> MyNumberCard:
        """A new card in memory, powered off, with its own copy of the PIN state."""
        return self.template._copy_in_memory()


def build_surface_ef(recipe: dict[str, str], profile: CardProfile) -> bytes:
    """The card-surface EF 0002 from what card.json keeps of it (the holder's text, dates, key
    and signature): the images are rendered now (``card_emulator.images``, cached per holder)."""
    from .images import surface_images

    images = surface_images(recipe["name"], recipe["address"], recipe["security_code"],
                            recipe["sex"], bytes.fromhex(recipe["photo_seed"]))
    return C.surface_ef(recipe["birth"], recipe["sex"], recipe["expiry"],
                        bytes.fromhex(recipe["signature"]), bytes.fromhex(recipe["key"]), images,
                        profile.long_length_form, profile.filler)


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
