"""Commands that drive the test CA and the emulated cards (the municipality's side)."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography import x509

from ..errors import UsageError
from ..fileio import write_atomic
from ..home import DEFAULT_AUTH_PIN, DEFAULT_SIGN_PIN
from ..identity import SAMPLE_PERSONAS, Persona, Sex, mask_mynumber
from ..transport import emu
from ._common import CARD_NAME, INSTANT, CliFail, Ctx, pass_ctx
from ._fail import EXIT_NO_CARD, EXIT_USAGE

if TYPE_CHECKING:
    from ..lifecycle import LifeEvent
    from ..pki import CaKind


def existing_card(obj: Ctx, name: str) -> str:
    """``name`` if HOME holds an emulated card of that name, else a clear "no card" (exit 5)
    that says how to make one."""
    if not obj.jhome.has_card(name):
        how = (f"jpki card create {name}" if name in SAMPLE_PERSONAS else
               f"jpki card create {name} --name … --address … --birth … --sex …")
        raise CliFail(f"no card named {name} in {obj.home}", code="no_card", exit_code=EXIT_NO_CARD,
                      hint=f"{how} (or 'jpki card list' for the cards there are)",
                      data={"card": name})
    return name


def warn_unknown_locality(obj: Ctx, persona: Persona) -> None:
    """The signing certificate names the holder's municipality and prefecture (L=…, L=…), in
    romaji; an address jpki cannot romanise gives ``L=Unknown``: say so, and how to fix it."""
    missing = [option for option, value in (("--municipality", persona.municipality),
                                            ("--prefecture", persona.prefecture))
               if value == "Unknown"]
    if missing:
        obj.warn(f"the signing certificate says L=Unknown: give {' and '.join(missing)} "
                 "(in romaji, e.g. --municipality Kita-ku --prefecture Osaka) to name the locality")


@click.group()
def ca() -> None:
    """The test CA (JPKI-shaped, visibly TEST): init, list, revoke, crl, serve.

    \b
    Examples:
      jpki ca init
      jpki ca init --base-url http://127.0.0.1:8470  # else a port free now, kept in the home
      JPKI_NOW=2022-04-01T09:00:00+09:00 jpki ca init --generation 2015   # roots dated like J-LIS's 2015 roots
      jpki ca list --revoked
      jpki ca list --holder alice                # one card's certificates
      jpki ca revoke 4E3F --reason keyCompromise # a serial, or a unique start of one
      jpki ca crl --kind auth -o auth.crl
      jpki ca serve                         # OCSP and CRLs at the CA's base URL
      jpki ca serve --responder-key ec      # ECDSA P-256 OCSP responders (faster signing)
    """


@ca.command("init")
@click.option("--base-url",
              help="where the CRLs and the OCSP responder will be served (named in certificates)"
                   " [default: http://127.0.0.1:PORT with a port free now, kept in the home]")
@click.option("--generation", type=click.Choice(["2015", "2023"]),
              help="date the roots like that generation of the J-LIS roots (2015: valid until "
                   "2025-10-19, 2023: until 2033-07-15) instead of from now; for cards of profile "
                   "card-2015 / card-2023")
@pass_ctx
def ca_init(obj: Ctx, base_url: str | None, generation: str | None) -> None:
    """Create the signing and user-authentication root CAs in HOME/ca."""
    from ..pki import TestCA

    obj.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    test_ca = TestCA.init(obj.jhome.ca_dir, base_url=base_url, clock=obj.clock, generation=generation)
    try:
        data = {"directory": str(obj.jhome.ca_dir), "base_url": test_ca.base_url,
                "sign_ca": test_ca.sign_ca_cert.subject.rfc4514_string(),
                "auth_ca": test_ca.auth_ca_cert.subject.rfc4514_string()}
    finally:
        test_ca.close()
    obj.emit(data, lambda: f"test CA created in {data['directory']}\n  sign: {data['sign_ca']}\n"
             f"  auth: {data['auth_ca']}\n  CRLs and OCSP at {data['base_url']} (jpki ca serve)")


@click.group()
def card() -> None:
    """Emulated cards: create, list, show, reset a PIN, and the life events move, lost, renew.

    \b
    Card names are 1-64 letters, digits, '-' or '_' (starting with a letter or digit).

    \b
    Examples:
      jpki card create alice                      # a sample persona
      jpki card create bob --profile smartphone-android   # Android smartphone JPKI
      jpki card create taro --name "佐藤　太郎" --address "大阪府大阪市北区梅田１－１" \\
          --birth 1990-04-01 --sex male --municipality Kita-ku --auth-pin 4321 --sign-pin SECRET42
      jpki card list
      jpki card show alice                        # holder, certificates, PIN tries
      jpki card reset-pin alice auth
      jpki card move alice --address "大阪府大阪市北区梅田１－１" --municipality Kita-ku
      jpki card lost alice                        # both certificates revoked
      jpki card renew bob                         # new keys and certificates
    """


@card.command("create")
@click.argument("name", type=CARD_NAME)
@click.option("--name", "holder_name", help="family and given name, separated by a full-width space")
@click.option("--address", help="address (digits become full-width)")
@click.option("--birth", help="birth date YYYY-MM-DD")
@click.option("--sex", type=click.Choice(["male", "female", "unknown"]))
@click.option("--my-number", help="12 digits with a valid check digit (generated if omitted)")
@click.option("--prefecture", help="romanised prefecture for the certificate (from the address)")
@click.option("--municipality", help="romanised municipality for the certificate")
@click.option("--auth-pin", default=DEFAULT_AUTH_PIN, show_default=True)
@click.option("--sign-pin", default=DEFAULT_SIGN_PIN, show_default=True)
@click.option("--card-pin", help="card-info PIN [default: the auth PIN]")
@click.option("--security-code", help="the 4-digit code printed on the card (random if omitted)")
@click.option("--profile", type=click.Choice(emu.card_profile_names()), default="card", show_default=True,
              help="the kind of card: card (plastic), card-2015 / card-2023 (with roots of that "
                   "generation: needs a CA made with --generation), smartphone-android")
@pass_ctx
def card_create(obj: Ctx, name: str, holder_name: str | None, address: str | None, birth: str | None,
                sex: str | None, my_number: str | None, prefecture: str | None,
                municipality: str | None, auth_pin: str, sign_pin: str, card_pin: str | None,
                security_code: str | None, profile: str) -> None:
    """Issue an emulated card NAME with fresh keys and certificates from the test CA.

    NAME may be a sample persona (alice, bob, carol, dave): its data are used unless overridden.
    """
    from ..provision import create_card, romanised_prefecture, sample_persona

    base = sample_persona(name)
    if base is None and not (holder_name and address and birth and sex):
        raise UsageError(f"{name!r} is not a sample persona: give --name, --address, --birth and --sex")
    try:
        birth_date = _dt.date.fromisoformat(birth) if birth else base.birth_date  # type: ignore[union-attr]
    except ValueError:
        raise UsageError(f"--birth must be YYYY-MM-DD, not {birth!r}") from None
    addr = address or base.address  # type: ignore[union-attr]
    try:
        persona = Persona(
            name=holder_name or base.name,  # type: ignore[union-attr]
            address=addr, birth_date=birth_date,
            sex=Sex.parse(sex) if sex else base.sex,  # type: ignore[union-attr]
            prefecture=prefecture or (base.prefecture if base and not address else romanised_prefecture(addr)),
            municipality=municipality or (base.municipality if base and not address else "Unknown"),
            my_number=my_number or (base.my_number if base else None),
            name_kana=base.name_kana if base and not holder_name else None)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    holder = create_card(obj.jhome, name, persona, auth_pin=auth_pin, sign_pin=sign_pin,
                         card_pin=card_pin, security_code=security_code, profile=profile)
    warn_unknown_locality(obj, holder.persona)
    data = {"card": name, "uri": f"emu:{name}", "holder": persona.name,
            "my_number": mask_mynumber(holder.persona.my_number or ""),
            "card_expiry": holder.card_expiry.isoformat(),
            "auth_serial": f"{holder.auth_serial:X}", "sign_serial": f"{holder.sign_serial:X}",
            "profile": profile}
    obj.emit(data, lambda: f"created card {name} ({profile}) for {persona.name} (expires {data['card_expiry']})\n"
             f"use it with: jpki --card emu:{name} info")


@card.command("list")
@pass_ctx
def card_list(obj: Ctx) -> None:
    """The emulated cards in HOME."""
    names = obj.jhome.card_names()
    obj.emit(names, lambda: "\n".join(names) if names else "(no cards)")


@card.command("show")
@click.argument("name", type=CARD_NAME)
@click.option("--reveal", is_flag=True, help="show the whole My Number")
@pass_ctx
def card_show(obj: Ctx, name: str, reveal: bool) -> None:
    """The holder, certificates and PIN tries of an emulated card (no secrets)."""
    from ..provision import read_holder

    existing_card(obj, name)
    holder = read_holder(obj.jhome, name)
    info = emu.emulated_card_info(obj.jhome.card_dir(name))
    p = holder.persona
    data = {"card": name, "serial": info["serial"], "atr": info["atr"],
            "holder": {"name": p.name, "address": p.address, "birth_date": p.birth_date.isoformat(),
                       "sex": p.sex.name.lower(),
                       "my_number": p.my_number if reveal else mask_mynumber(p.my_number or "")},
            "security_code": holder.security_code, "card_expiry": holder.card_expiry.isoformat(),
            "auth_serial": f"{holder.auth_serial:X}", "sign_serial": f"{holder.sign_serial:X}",
            "pins": {k: {"tries_left": v[0], "max": v[1]} for k, v in info["pins"].items()},
            "profile": info["profile"]}

    def human() -> str:
        lines = [f"card          {name} (serial {data['serial']})"]
        lines += [f"{k:<13} {v}" for k, v in data["holder"].items()]
        lines += [f"card expiry   {data['card_expiry']}", f"security code {data['security_code']}",
                  f"auth cert     {data['auth_serial']}", f"sign cert     {data['sign_serial']}"]
        lines += [f"PIN {k:<9} {v['tries_left']}/{v['max']}" for k, v in data["pins"].items()]
        return "\n".join(lines)
    obj.emit(data, human)


@card.command("reset-pin")
@click.argument("name", type=CARD_NAME)
@click.argument("kind", type=click.Choice(["auth", "sign", "card"]))
@click.option("--new-pin", help="also set a new value")
@pass_ctx
def card_reset_pin(obj: Ctx, name: str, kind: str, new_pin: str | None) -> None:
    """The municipal office's unblock: restore a PIN's tries (optionally with a new value)."""
    directory = obj.jhome.card_dir(existing_card(obj, name))
    if new_pin is not None:
        from ..session import normalise_pin

        new_pin = normalise_pin(kind, new_pin).decode()
    emu.reset_emulated_pin(directory, kind, new_pin)
    obj.emit({"card": name, "pin": kind, "reset": True, "new_value": new_pin is not None},
             f"{kind} PIN of {name} reset")


REASONS = click.Choice([r.value for r in x509.ReasonFlags if r.value not in ("removeFromCRL",)])


@ca.command("list")
@click.option("--revoked", is_flag=True, help="only revoked certificates")
@click.option("--kind", type=click.Choice(["sign", "auth"]))
@click.option("--holder", "card_name", type=CARD_NAME, metavar="NAME",
              help="only the certificates of the card NAME (as given to 'jpki card create')")
@click.option("--card", "old_card_name", type=CARD_NAME, hidden=True)  # the old spelling of --holder
@pass_ctx
def ca_list(obj: Ctx, revoked: bool, kind: str | None, card_name: str | None,
            old_card_name: str | None) -> None:
    """The certificates the test CA issued, with their status.

    Rows are printed as they are read (a CA with a million revoked certificates lists in
    seconds); with stdout redirected, a counter on the terminal shows how far it got.
    """
    if card_name and old_card_name and card_name != old_card_name:
        raise UsageError("give the card once: --holder NAME")
    card_name = card_name or old_card_name
    status = "revoked" if revoked else None
    # on a terminal the rows themselves show progress: a counter only when stdout is redirected
    with obj.jhome.open_ca() as test_ca, \
            obj.progress("listing certificates", shown=not sys.stdout.isatty()) as progress:
        db = test_ca.db
        if progress.visible:
            progress.update(0, db.count(kind=kind, card=card_name, status=status))  # type: ignore[arg-type]
        rows = db.iter_listing(kind=kind, card=card_name, status=status)  # type: ignore[arg-type]
        written = _stream_listing(obj, rows, progress)
    if written == 0 and not obj.json:
        click.echo("(no certificates)")
    obj.emitted = True


def _stream_listing(obj: Ctx, rows: Any, progress: Any, chunk: int = 2000) -> int:
    """Print the rows (JSON: one array, as ``Ctx.emit`` would) in chunks; returns how many."""
    out: list[str] = []
    count = 0

    def flush() -> None:
        if out:
            click.echo("".join(out), nl=False)
            out.clear()
        progress.update(count)

    js = json.JSONEncoder(ensure_ascii=False).encode  # a str or None, as json.dumps would
    if obj.json:
        out.append("[")
    for r in rows:
        if obj.json:  # the layout of json.dumps(rows, indent=2), a row at a time
            out.append(f'{"," if count else ""}\n  {{\n    "serial": {js(r.serial)},\n'
                       f'    "kind": {js(r.kind)},\n    "card": {js(r.card)},\n'
                       f'    "status": {js(r.status)},\n    "not_after": {js(r.not_after)},\n'
                       f'    "revoked_at": {js(r.revoked_at)},\n    "reason": {js(r.reason)}\n  }}')
        else:
            tail = f"{r.reason} {r.revoked_at}" if r.revoked_at else f"until {r.not_after}"
            out.append(f"{r.serial:<42} {r.kind:<4} {r.card:<12} {r.status:<10} {tail}\n")
        count += 1
        if count % chunk == 0:
            flush()
    if obj.json:
        out.append("\n]\n" if count else "]\n")
    flush()
    return count


@ca.command("revoke")
@click.argument("serial")
@click.option("--reason", type=REASONS, default="unspecified", show_default=True)
@click.option("--invalidity-date", type=INSTANT,
              help="when the key was (or may have been) compromised (ISO 8601)")
@pass_ctx
def ca_revoke(obj: Ctx, serial: str, reason: str, invalidity_date: _dt.datetime | None) -> None:
    """Revoke a certificate by its serial number (hex), or by a start of it that only one
    serial has (as 'jpki card create' and 'jpki ca list' show them)."""
    with obj.jhome.open_ca() as test_ca:
        number = _resolve_serial(test_ca.db, serial)
        row = test_ca.revoke(number, reason, invalidity_date=invalidity_date)
    obj.emit({"serial": row.serial, "status": row.status, "reason": row.reason,
              "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None},
             f"revoked {row.serial} ({row.reason})")


def _resolve_serial(db: Any, text: str) -> int:
    """The serial ``text`` names: itself if the CA issued it, else the one serial that starts
    with it. None or several: a usage error that lists what there is."""
    from ..pki.db import serial_hex

    if db.get(serial_hex(text)) is not None:  # serial_hex: UsageError if not hex
        return int(serial_hex(text), 16)
    candidates = db.serials_with_prefix(text, limit=11)
    if len(candidates) == 1:
        return int(candidates[0], 16)
    if not candidates:
        raise CliFail(f"no certificate of this CA has a serial starting with {text}",
                      code="unknown_serial", exit_code=EXIT_USAGE,
                      hint="'jpki ca list' shows the serials", data={"candidates": []})
    shown = ", ".join(c.upper() for c in candidates[:10]) + (", …" if len(candidates) > 10 else "")
    raise CliFail(f"{text} starts several serials: {shown}", code="ambiguous_serial",
                  exit_code=EXIT_USAGE, hint="give more digits of the serial",
                  data={"candidates": [c.upper() for c in candidates[:10]]})


@ca.command("crl")
@click.option("--kind", type=click.Choice(["sign", "auth"]), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--next-update-hours", type=float, default=24, show_default=True)
@pass_ctx
def ca_crl(obj: Ctx, kind: CaKind, output: Path, next_update_hours: float) -> None:
    """Write the CA's current CRL (DER), signed now."""
    with obj.jhome.open_ca() as test_ca, obj.progress(f"{kind} CRL entries") as progress:
        der = test_ca.crl(kind, next_update_in=_dt.timedelta(hours=next_update_hours),
                          progress=progress.update)
    write_atomic(output, der)
    crl = x509.load_der_x509_crl(der)
    obj.emit({"kind": kind, "file": str(output), "entries": len(crl), "bytes": len(der)},
             f"wrote the {kind} CRL ({len(crl)} entries) to {output}")


@ca.command("serve")
@click.option("--host", help="address to listen on [default: the host of the CA's base URL if it is"
                             " a loopback address, else 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535),
              help="port to listen on [default: the port of the CA's base URL]")
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--responder-key", "responder_key", type=click.Choice(["rsa", "ec"]), default="rsa",
              show_default=True,
              help="key type of the delegated OCSP responders: rsa (RSA-2048, like JPKI) or ec"
                   " (ECDSA P-256, certified by the RSA root; signs responses ~20x faster)."
                   " A responder of the other type is re-issued at start")
@pass_ctx
def ca_serve(obj: Ctx, host: str | None, port: int | None, workers: int, responder_key: str) -> None:
    """Serve OCSP (/ocsp/sign, /ocsp/auth) and the CRLs (/crl/sign.crl, /crl/auth.crl) over HTTP,
    by default at the base URL the CA's certificates name."""
    import urllib.parse

    from ..pki.responder import check_key_type
    from ..pki.server import serve

    with obj.jhome.open_ca() as test_ca:  # a clear error when there is no CA
        base = urllib.parse.urlsplit(test_ca.base_url)
    if host is None:
        host = base.hostname if base.hostname in ("127.0.0.1", "::1", "localhost") else "127.0.0.1"
    if port is None:
        port = base.port or (443 if base.scheme == "https" else 80)
    # serve() checks the port, builds the CRLs, then says "serving …" (all on stderr).
    serve(obj.jhome.ca_dir, host, port, workers=workers, log_level="warning",
          clock=obj.clock if workers == 1 else None,
          responder_key=check_key_type(responder_key), progress=obj.note)


def _event(obj: Ctx, result: LifeEvent) -> None:
    d = result.to_json()
    obj.emit(d, lambda: "\n".join(
        [f"{d['card']}: {d['event']}"]
        + [f"  revoked {r['serial']} ({r['reason']})" for r in d["revoked"]]
        + [f"  issued  {i['serial']} ({i['kind']})" for i in d["issued"]]))


@card.command("move")
@click.argument("name", type=CARD_NAME)
@click.option("--address", help="the new address")
@click.option("--name", "holder_name", help="the new name (marriage…)")
@click.option("--prefecture", help="romanised prefecture for the new certificate")
@click.option("--municipality", help="romanised municipality for the new certificate")
@pass_ctx
def card_move(obj: Ctx, name: str, address: str | None, holder_name: str | None,
              prefecture: str | None, municipality: str | None) -> None:
    """A change of address or name: new signing certificate (old one revoked), card updated."""
    from .. import lifecycle
    from ..provision import read_holder

    existing_card(obj, name)
    _event(obj, lifecycle.move(obj.jhome, name, address=address, holder_name=holder_name,
                               prefecture=prefecture, municipality=municipality))
    warn_unknown_locality(obj, read_holder(obj.jhome, name).persona)


@card.command("lost")
@click.argument("name", type=CARD_NAME)
@pass_ctx
def card_lost(obj: Ctx, name: str) -> None:
    """The card is reported lost: both certificates are revoked (keyCompromise)."""
    from .. import lifecycle

    existing_card(obj, name)
    _event(obj, lifecycle.lost(obj.jhome, name))


@card.command("renew")
@click.argument("name", type=CARD_NAME)
@pass_ctx
def card_renew(obj: Ctx, name: str) -> None:
    """New keys and certificates; the old ones superseded and linked to the new ones."""
    from .. import lifecycle

    existing_card(obj, name)
    _event(obj, lifecycle.renew(obj.jhome, name))
