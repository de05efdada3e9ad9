"""What the card checks in its own files before it trusts them: ``card.json``, ``state.json``, keys.

A card directory is plain files that anyone with access can damage (a full disk, an editor, a bad
restore). The card must fail closed: a damaged file never makes a PIN look fresh, never grants
extra tries and never points the card at a file outside its directory. So every file is checked
against its schema when the card opens (:func:`check_content`, :func:`check_state`, and
:func:`key_file` for the key names), and every PIN record again each time the card reads it
(:func:`pin_record`), where a damaged record counts as a blocked PIN.

Errors name the file and what is wrong with it, never a PIN, a hash or a salt.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any, TypeGuard

from .profile import CardProfile

FORMAT_VERSION = 1

#: PIN value rules (spec §7), by format name.
PIN_FORMATS: dict[str, re.Pattern[bytes]] = {
    "digits4": re.compile(rb"[0-9]{4}"),
    "password": re.compile(rb"[A-Z0-9]{6,16}"),
    "digits12": re.compile(rb"[0-9]{12}"),
    "digits14": re.compile(rb"[0-9]{14}"),
}

#: ``63Cx`` can say at most 15 tries left: a larger maximum could not be reported.
MAX_TRIES = 15
#: Bounds on the PBKDF2 iteration count: a damaged count must not make one VERIFY take hours.
MAX_ITERATIONS = 1_000_000
HASH_BYTES = 32  # PBKDF2-HMAC-SHA256
SALT_BYTES = (8, 64)

_PIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_FID = re.compile(r"[0-9A-Fa-f]{4}")
_HEX_PATTERN = r"(?:[0-9A-Fa-f]{2}){1,1024}"
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_EF_KINDS = ("binary", "record", "key", "pin")
#: What card.json keeps of the card-surface EF, which the card builds when first read: field ->
#: pattern (hex fields as hex, the rest as text).
_SURFACE_FIELDS = {
    "birth": re.compile(r"[0-9]{8}"), "sex": re.compile(r"[129]"), "expiry": re.compile(r"[0-9]{8}"),
    "name": re.compile(r".{1,100}"), "address": re.compile(r".{1,200}"),
    "security_code": re.compile(r"[0-9]{4}"), "key": re.compile(_HEX_PATTERN),
    "signature": re.compile(_HEX_PATTERN), "photo_seed": re.compile(_HEX_PATTERN),
}


class CardStateError(ValueError):
    """A card file is missing, unreadable or fails its schema: the card does not trust it.

    ``path`` is the damaged file, ``reason`` what is wrong (one line, no secrets), ``pin`` the PIN
    whose record is damaged when it is only one.
    """

    code = "card_state_corrupt"

    def __init__(self, path: str | Path, reason: str, *, pin: str | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.pin = pin
        super().__init__(f"{self.path}: {reason}")


def _show(value: Any) -> str:
    """A short printable form of a bad value (for error messages about counters and names)."""
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # bool is an int subclass: true/false are not counters


def _is_base64(data: Any) -> bool:
    try:
        return isinstance(data, str) and base64.b64decode(data, validate=True) is not None
    except (ValueError, binascii.Error):
        return False


def load_json(path: Path) -> Any:
    """Parse a card file; :class:`CardStateError` (never a traceback) if it is missing or damaged."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CardStateError(path, "the file is missing") from None
    except OSError as exc:
        raise CardStateError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise CardStateError(path, "the file is empty")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise CardStateError(path, f"not valid JSON{where} (truncated or damaged)") from None


def load_state(path: Path) -> dict[str, Any]:
    """``state.json`` parsed; :class:`CardStateError` if it is not a JSON object (its records
    are checked by :func:`check_state` and :func:`pin_record`)."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise CardStateError(path, "no 'pins' object")  # what check_state says of it
    return data


# ------------------------------------------------------------------------------ state.json
def pin_record_problem(rec: Any) -> str | None:
    """What is wrong with one PIN record of ``state.json``, or None if the card may use it."""
    if not isinstance(rec, dict):
        return "the record is not a JSON object"
    fmt = rec.get("format")
    if not isinstance(fmt, str) or fmt not in PIN_FORMATS:
        return f"unknown format {_show(fmt)}"
    top = rec.get("max")
    if not _is_int(top) or not 1 <= top <= MAX_TRIES:
        return f"max {_show(top)} is not a whole number of tries in 1..{MAX_TRIES}"
    left = rec.get("remaining")
    if not _is_int(left) or not 0 <= left <= top:
        return f"remaining {_show(left)} is not a whole number of tries in 0..{top}"
    rounds = rec.get("iterations")
    if not _is_int(rounds) or not 1 <= rounds <= MAX_ITERATIONS:
        return f"iterations {_show(rounds)} is not in 1..{MAX_ITERATIONS}"
    salt = rec.get("salt")
    if not isinstance(salt, str) or not _HEX.fullmatch(salt) \
            or not SALT_BYTES[0] <= len(salt) // 2 <= SALT_BYTES[1]:
        return f"the salt is not {SALT_BYTES[0]}..{SALT_BYTES[1]} bytes of hex"
    digest = rec.get("hash")
    if not isinstance(digest, str) or not _HEX.fullmatch(digest) or len(digest) != 2 * HASH_BYTES:
        return f"the hash is not {HASH_BYTES} bytes of hex"
    generation = rec.get("generation", 0)
    if not _is_int(generation) or generation < 0:
        return f"generation {_show(generation)} is not a whole number >= 0"
    return None


def pin_record(state: Any, name: str) -> dict[str, Any] | None:
    """The record of PIN ``name`` if it is sound; None (the PIN counts as blocked) otherwise."""
    pins = state.get("pins") if isinstance(state, dict) else None
    rec = pins.get(name) if isinstance(pins, dict) else None
    return rec if rec is not None and pin_record_problem(rec) is None else None


def check_state(state: Any, path: Path, pin_names: set[str]) -> None:
    """``state.json`` as a whole: one sound record for each PIN the card has, and no other."""
    if not isinstance(state, dict) or not isinstance(state.get("pins"), dict):
        raise CardStateError(path, "no 'pins' object")
    pins = state["pins"]
    for name, rec in pins.items():
        if name not in pin_names:
            raise CardStateError(path, f"a record for {_show(name)}, a PIN this card does not have")
        problem = pin_record_problem(rec)
        if problem is not None:
            raise CardStateError(path, f"PIN {name!r}: {problem}", pin=name)
    missing = sorted(pin_names - set(pins))
    if missing:
        raise CardStateError(path, f"no record for PIN {missing[0]!r}", pin=missing[0])


# ------------------------------------------------------------------------------ card.json
def pin_names(content: dict[str, Any]) -> set[str]:
    """The PINs a (checked) card content defines: one per PIN EF."""
    return {f["pin"] for app in content["applications"].values()
            for f in app.get("files", {}).values() if f["kind"] == "pin"}


def check_content(content: Any, path: Path) -> dict[str, Any]:
    """``card.json``: format, profile, applications, files and key names, consistent together;
    returns ``content`` once checked."""
    def bad(reason: str) -> CardStateError:
        return CardStateError(path, reason)

    if not isinstance(content, dict):
        raise bad("not a JSON object")
    if content.get("format") != FORMAT_VERSION:
        raise bad(f"unsupported card format {_show(content.get('format'))}")
    if not isinstance(content.get("serial", ""), str):
        raise bad("the serial is not a string")
    try:
        CardProfile.from_json(content.get("profile"))
    except (ValueError, TypeError) as exc:
        raise bad(f"profile: {exc}") from None
    keys = content.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in keys.items()):
        raise bad("'keys' is not an object of key names to file names")
    apps = content.get("applications")
    if not isinstance(apps, dict) or not apps:
        raise bad("no 'applications' object")
    aids: set[bytes] = set()
    defined: set[str] = set()
    wanted: list[tuple[str, Any]] = []  # (where, PIN name as written) that must be a defined PIN
    for app_name, app in apps.items():
        if not isinstance(app, dict):
            raise bad(f"application {_show(app_name)} is not an object")
        aid = app.get("aid")
        if not isinstance(aid, str) or not _HEX.fullmatch(aid) or not 5 <= len(aid) // 2 <= 16:
            raise bad(f"application {app_name!r}: the AID is not 5..16 bytes of hex")
        if bytes.fromhex(aid) in aids:
            raise bad(f"application {app_name!r}: its AID is used twice")
        aids.add(bytes.fromhex(aid))
        files = app.get("files", {})
        if not isinstance(files, dict):
            raise bad(f"application {app_name!r}: 'files' is not an object")
        for fid, ef in files.items():
            where = f"application {app_name!r} EF {_show(fid)}"
            if not isinstance(fid, str) or not _FID.fullmatch(fid):
                raise bad(f"{where}: the FID is not 4 hex digits")
            if not isinstance(ef, dict) or ef.get("kind") not in _EF_KINDS:
                raise bad(f"{where}: kind is not one of {', '.join(_EF_KINDS)}")
            kind = ef["kind"]
            if kind in ("binary", "record"):
                if kind == "binary" and not _is_base64(ef.get("data", "")):
                    raise bad(f"{where}: the data is not base64")
                if kind == "binary" and "surface" in ef:
                    problem = _surface_problem(ef["surface"])
                    if problem is not None:
                        raise bad(f"{where}: surface: {problem}")
                records = ef.get("records", [])
                if kind == "record" and (not isinstance(records, list)
                                         or not all(_is_base64(r) and r for r in records)):
                    raise bad(f"{where}: 'records' is not a list of base64 records")
                read = ef.get("read", [])
                if not isinstance(read, list):
                    raise bad(f"{where}: 'read' is not a list of PIN names")
                wanted += [(where, name) for name in read]
            elif kind == "key":
                if ef.get("key") not in keys:
                    raise bad(f"{where}: names a key {_show(ef.get('key'))} that 'keys' lacks")
                wanted.append((where, ef.get("pin")))
            else:
                name = ef.get("pin")
                if not isinstance(name, str) or not _PIN_NAME.fullmatch(name):
                    raise bad(f"{where}: {_show(name)} is not a PIN name")
                defined.add(name)
    for where, name in wanted:
        if name not in defined:
            raise bad(f"{where}: needs PIN {_show(name)}, which no PIN EF defines")
    return content


def _surface_problem(recipe: Any) -> str | None:
    """What is wrong with the card-surface recipe of card.json, or None."""
    if not isinstance(recipe, dict):
        return "not a JSON object"
    for name, pattern in _SURFACE_FIELDS.items():
        value = recipe.get(name)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return f"{name} {_show(value)} is not valid"
    unknown = set(recipe) - set(_SURFACE_FIELDS)
    if unknown:
        return f"unknown field {_show(sorted(unknown)[0])}"
    return None


def key_file(directory: Path, name: str, rel: str) -> Path:
    """The file of key ``name``: a relative path that stays inside the card directory."""
    path = Path(directory) / "card.json"
    if not rel or "\x00" in rel or Path(rel).is_absolute():
        raise CardStateError(path, f"key {name!r}: {_show(rel)} is not a relative file name")
    root = Path(directory).resolve()
    target = (root / rel).resolve()
    if target == root or not target.is_relative_to(root):
        raise CardStateError(path, f"key {name!r}: {_show(rel)} leads outside the card directory")
    return target
