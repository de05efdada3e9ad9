"""Commands that talk to a card (real or emulated) through the host library."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..apdu import ApduProtocol
from ..certinfo import cert_kind, signing_identity
from ..errors import FileNotFoundOnCardError, UsageError, VerificationError
from ..fileio import write_atomic
from ..identity import mask_mynumber
from ..pins import PINS, USER_PINS
from ..session import CardInfoSession, CertKind, JpkiSession, KeyKind, SurfaceSession
from ._common import INSTANT, PIN_KINDS, CliFail, Ctx, pass_ctx, pin_name, pin_option, revocation_options
from ._fail import EXIT_INVALID

if TYPE_CHECKING:
    from ..transport import Transport


def _session_for(t: Transport, kind: str) -> CardInfoSession | JpkiSession:
    return CardInfoSession(t) if kind == "card" else JpkiSession(t)


def card_info_tries(t: Transport) -> int | None:
    """Tries left of the card-info PIN; None when the card has no card-info AP (a smartphone's
    JPKI has only the JPKI AP)."""
    try:
        return CardInfoSession(t).tries_left("card")
    except FileNotFoundOnCardError:
        return None


def verify_pin(obj: Ctx, session: CardInfoSession | JpkiSession | SurfaceSession, kind: str,
               given: str | None) -> None:
    """Verify a PIN with the usual sources and the real-reader confirmation."""
    value = obj.pin(kind, given)
    obj.confirm_try(f"Verifying the {pin_name(kind)}", session.tries_left(kind))
    session.verify(kind, value)


@click.command()
@pass_ctx
def readers(obj: Ctx) -> None:
    """The PC/SC readers pcscd knows (the emulator appears as "Virtual PCD 00 00")."""
    from ..transport.pcsc import list_readers

    names = list_readers()
    obj.emit(names, lambda: "\n".join(names) if names else "(no readers)")


@click.command()
@pass_ctx
def info(obj: Ctx) -> None:
    """Card type, ATR and the tries left of every PIN (spends none)."""
    with obj.card() as t:
        j = JpkiSession(t)
        data: dict[str, Any] = {"reader": t.description, "atr": t.atr.hex().upper(), "card_type": j.card_type(),
                                "token_label": j.token_label(),
                                "pins": {"auth": j.tries_left("auth"), "sign": j.tries_left("sign")}}
        card_pin = card_info_tries(t)
        if card_pin is not None:
            data["pins"]["card"] = card_pin
    obj.emit(data, lambda: "\n".join([
        f"Reader:      {data['reader']}", f"ATR:         {data['atr']}",
        f"Card type:   {data['card_type']} ({data['token_label']})",
        *(f"{pin_name(k) + ':':<30} {v} tries left" for k, v in data["pins"].items())]))


@click.group()
def pin() -> None:
    """PIN status, verification and change.

    \b
    Examples:
      jpki pin status
      jpki pin verify auth            # prompts, or reads $JPKI_AUTH_PIN / stdin
      echo ABC123 | jpki pin verify sign
      jpki pin change card --new-pin 5678
    """


@pin.command("status")
@pass_ctx
def pin_status(obj: Ctx) -> None:
    """Tries left for each PIN (of its maximum), spending none."""
    with obj.card() as t:
        j = JpkiSession(t)
        status = {"auth": j.tries_left("auth"), "sign": j.tries_left("sign")}
        card_pin = card_info_tries(t)
        if card_pin is not None:
            status["card"] = card_pin
    # a card tells the tries left, not the maximum: that is the spec's (jpki.pins)
    obj.emit({k: {"tries_left": v, "blocked": v == 0} for k, v in status.items()},
             lambda: "\n".join(f"{pin_name(k) + ':':<30} {v}/{PINS[k].max_tries}"
                               + ("  BLOCKED" if v == 0 else "") for k, v in status.items()))


@pin.command("verify")
@click.argument("kind", type=PIN_KINDS)
@pin_option(*USER_PINS, chosen_by="KIND")
@pass_ctx
def pin_verify(obj: Ctx, kind: str, pin_value: str | None) -> None:
    """Verify a PIN (a wrong one costs a try)."""
    with obj.card() as t:
        verify_pin(obj, _session_for(t, kind), kind, pin_value)
    obj.emit({"pin": kind, "verified": True}, f"{pin_name(kind)}: verified")


@pin.command("change")
@click.argument("kind", type=PIN_KINDS)
@pin_option(*USER_PINS, chosen_by="KIND", note="the current one")
@click.option("--new-pin", help="the new PIN (else stdin or a prompt; never the environment)")
@pass_ctx
def pin_change(obj: Ctx, kind: str, pin_value: str | None, new_pin: str | None) -> None:
    """Change a PIN (verifies the current one first)."""
    old = obj.pin(kind, pin_value, f"Current {pin_name(kind)}")
    new = new_pin or obj.pin(kind, None, f"New {pin_name(kind)}", env=False)
    if new_pin is None and sys.stdin.isatty():
        again = click.prompt(f"Repeat the new {pin_name(kind)}", hide_input=True, err=True)
        if again != new:
            raise UsageError("the two new PINs differ")
    with obj.card() as t:
        session = _session_for(t, kind)
        obj.confirm_try(f"Changing the {pin_name(kind)}", session.tries_left(kind))
        session.change_pin(kind, old, new)
    obj.emit({"pin": kind, "changed": True}, f"{pin_name(kind)}: changed")


CERT_KINDS = click.Choice(["auth", "sign", "auth-ca", "sign-ca"])


def read_cert(obj: Ctx, kind: CertKind, pin_value: str | None = None) -> bytes:
    """A certificate of the card: the signing one after the signature password; on a
    smartphone's JPKI the user-authentication one after the auth PIN (jpki/myna does the same)."""
    with obj.card() as t:
        j = JpkiSession(t)
        if kind == "sign":
            verify_pin(obj, j, "sign", pin_value)
        elif kind == "auth" and j.card_type() == "smartphone":
            verify_pin(obj, j, "auth", pin_value)
        return j.read_certificate(kind)


@click.group()
def cert() -> None:
    """The card's certificates: read (to a file or stdout), show (decoded), verify (validate).

    \b
    Examples:
      jpki cert read auth -o auth.der
      echo ABC123 | jpki cert read sign --pem > sign.pem   # the signing certificate needs the password
      jpki cert show auth-ca
      jpki cert verify --from-card auth                     # path, validity, revocation (jpki ca serve)
      jpki cert verify sign.der --revocation crl
    """


@cert.command("read")
@click.argument("kind", type=CERT_KINDS)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--der", "fmt", flag_value="der", help="DER (default when writing a file)")
@click.option("--pem", "fmt", flag_value="pem", help="PEM (default on stdout)")
@pin_option("sign", note="for the signing certificate (a smartphone's auth certificate: the auth PIN)")
@pass_ctx
def cert_read(obj: Ctx, kind: CertKind, output: Path | None, fmt: str | None, pin_value: str | None) -> None:
    """Write a certificate from the card to a file or stdout."""
    der = read_cert(obj, kind, pin_value)
    fmt = fmt or ("der" if output else "pem")
    blob = der if fmt == "der" else x509.load_der_x509_certificate(der).public_bytes(
        serialization.Encoding.PEM)
    if output:
        write_atomic(output, blob)
        obj.emit({"kind": kind, "file": str(output), "bytes": len(blob), "format": fmt},
                 f"wrote {kind} certificate ({len(der)} bytes DER) to {output}")
    elif obj.json:
        obj.emit({"kind": kind, "format": fmt, "der_base64": base64.b64encode(der).decode()}
                 if fmt == "der" else {"kind": kind, "format": fmt, "pem": blob.decode()})
    elif fmt == "der":
        sys.stdout.buffer.write(blob)
    else:
        click.echo(blob.decode().rstrip())


def describe_certificate(der: bytes) -> dict[str, Any]:
    c = x509.load_der_x509_certificate(der)
    out: dict[str, Any] = {"kind": cert_kind(c), "subject": c.subject.rfc4514_string(),
                           "issuer": c.issuer.rfc4514_string(), "serial": f"{c.serial_number:X}",
                           "not_before": c.not_valid_before_utc.isoformat(),
                           "not_after": c.not_valid_after_utc.isoformat(),
                           "sha256_fingerprint": c.fingerprint(hashes.SHA256()).hex()}
    if out["kind"] == "sign":
        ident = signing_identity(c)
        out["holder"] = {"name": ident.name, "address": ident.address,
                         "birth_date": ident.birth_date.isoformat() if ident.birth_date else None,
                         "sex": ident.sex.name.lower()}
    return out


@cert.command("show")
@click.argument("kind", type=CERT_KINDS)
@pin_option("sign", note="for the signing certificate")
@pass_ctx
def cert_show(obj: Ctx, kind: CertKind, pin_value: str | None) -> None:
    """Decode a certificate from the card (the signing certificate shows the holder)."""
    d = describe_certificate(read_cert(obj, kind, pin_value))

    def human() -> str:
        lines = [f"{k:<19} {d[k]}" for k in ("kind", "subject", "issuer", "serial", "not_before",
                                              "not_after", "sha256_fingerprint")]
        for k, v in d.get("holder", {}).items():
            lines.append(f"holder {k:<12} {v}")
        return "\n".join(lines)
    obj.emit(d, human)


@click.command()
@click.option("--reveal", is_flag=True, help="show the whole number (it is specific personal information)")
@pin_option("card")
@pass_ctx
def mynumber(obj: Ctx, reveal: bool, pin_value: str | None) -> None:
    """The My Number from the card-info AP, masked unless --reveal."""
    with obj.card() as t:
        s = CardInfoSession(t)
        verify_pin(obj, s, "card", pin_value)
        number = s.read_my_number()
    shown = number if reveal else mask_mynumber(number)
    obj.emit({"my_number": shown, "masked": not reveal, "check_digit_valid": True}, shown)
    if not reveal and not obj.json:
        obj.note("(masked: --reveal shows the whole number; it is specific personal information)")


@click.command()
@pin_option("card")
@pass_ctx
def attrs(obj: Ctx, pin_value: str | None) -> None:
    """The basic 4 info (name, address, birth date, sex) from the card-info AP."""
    with obj.card() as t:
        s = CardInfoSession(t)
        verify_pin(obj, s, "card", pin_value)
        info_ = s.read_basic_info()
    d = info_.to_json()
    obj.emit(d, lambda: "\n".join(f"{k:<11} {v}" for k, v in d.items()))


@click.group()
def pkey() -> None:
    """Raw signatures by the card's keys.

    \b
    Examples:
      jpki pkey sign auth message.txt --digest sha256 -o message.sig
      openssl dgst -sha256 -verify <(jpki cert read auth --pem | openssl x509 -pubkey -noout) \\
          -signature message.sig message.txt
    """


@pkey.command("sign")
@click.argument("key", type=click.Choice(["auth", "sign"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--digest", type=click.Choice(["sha1", "sha256", "sha384", "sha512"]), default="sha256",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pin_option("auth", "sign", chosen_by="KEY")
@pass_ctx
def pkey_sign(obj: Ctx, key: KeyKind, file: Path, digest: str, output: Path, pin_value: str | None) -> None:
    """A PKCS#1 v1.5 signature over FILE's hash, made by the card."""
    h = hashlib.new(digest)
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    with obj.card() as t:
        j = JpkiSession(t)
        verify_pin(obj, j, key, pin_value)
        signature = j.sign_digest(key, digest, h.digest())
    write_atomic(output, signature)
    obj.emit({"key": key, "digest": digest, "file": str(file), "signature": str(output),
              "bytes": len(signature)}, f"signed {file} ({digest}) with the {key} key: {output}")


@click.command()
@click.argument("apdus", nargs=-1)
@click.option("--script", "script_file", metavar="FILE",
              help="run an APDU script (docs/scripts.md): exit 3 at the first answer that differs")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="a script variable: NAME=TEXT (its UTF-8 bytes, e.g. a PIN) or NAME=hex:HEX")
@pass_ctx
def apdu(obj: Ctx, apdus: tuple[str, ...], script_file: str | None, variables: tuple[str, ...]) -> None:
    """Send raw APDUs (hex) in one card session and print each response, or run a script.

    \b
    Examples:
      jpki apdu 00A4040C0AD392F000260100000001 00A4020C02000A 00B0000004
      jpki --json apdu "00 A4 04 0C 0A D3 92 F0 00 26 01 00 00 00 01"
      jpki apdu --script jpki_ap.apdu --var AUTH_PIN=1234
      jpki --record info.apdu info && jpki apdu --script info.apdu
    """
    if script_file is not None:
        if apdus:
            raise UsageError("give APDUS or --script FILE, not both")
        run_apdu_script(obj, script_file, variables)
        return
    if variables:
        raise UsageError("--var is for --script")
    if not apdus:
        raise UsageError("give the APDUs to send (hex), or --script FILE")
    commands = []
    for text in apdus:
        try:
            commands.append(bytes.fromhex(text.replace(" ", "").replace(":", "")))
        except ValueError:
            raise UsageError(f"not hex: {text!r}") from None
    results = []
    with obj.card() as t:
        proto = ApduProtocol(t)
        for command in commands:
            r = proto.send_raw(command)
            results.append({"command": command.hex().upper(), "response": r.data.hex().upper(),
                            "sw": f"{r.sw:04X}"})
    obj.emit(results, lambda: "\n".join(
        f"C> {r['command']}\nR< {r['response'] + ' ' if r['response'] else ''}{r['sw']}" for r in results))


def script_variables(given: tuple[str, ...]) -> dict[str, bytes]:
    """``--var`` values (as given: a test may send what no command would), over the PINs'
    environment variables (``AUTH_PIN`` from ``$JPKI_AUTH_PIN``…, the names a recording gives
    PINs), which are read as every command reads them (NFKC, the password upper-cased)."""
    from ..scripts.syntax import NAME
    from ..session import normalise_pin

    values: dict[str, bytes] = {}
    for kind, spec in PINS.items():
        if spec.env and os.environ.get(spec.env):
            given_pin = os.environ[spec.env]
            try:
                values[f"{kind.upper()}_PIN"] = normalise_pin(kind, given_pin)
            except UsageError:  # not of the PIN's form: sent as it is (the card will say)
                values[f"{kind.upper()}_PIN"] = given_pin.encode("utf-8")
    for item in given:
        name, eq, value = item.partition("=")
        if not eq or not re.fullmatch(NAME, name):
            raise UsageError(f"--var {item.split('=')[0]}=…: write NAME=VALUE, NAME letters, digits and _")
        if value.startswith("hex:"):
            try:
                values[name] = bytes.fromhex(value[4:])
            except ValueError:
                raise UsageError(f"--var {name}=hex:…: not hex") from None
        else:
            values[name] = value.encode("utf-8")
    return values


def run_apdu_script(obj: Ctx, script_file: str, given: tuple[str, ...]) -> None:
    """``jpki apdu --script``: parse (errors exit 2, with the line), check the variables, then
    run over the card; the first answer that differs ends it (exit 3), naming the line."""
    from ..scripts import ScriptMismatchError, StepResult, load_script, parse_script, run_script

    script = parse_script(sys.stdin.read(), "<stdin>") if script_file == "-" else load_script(script_file)
    values = script_variables(given)
    script.check(frozenset(values))  # before the card is even opened
    if not script.commands:
        raise UsageError(f"{script.name}: no commands")
    if obj.is_real_reader and not obj.force and any(c.spends_pin_try for c in script.commands):
        what = f"{script.name} verifies PINs on a card in a reader (a wrong one costs a try)"
        if not sys.stdin.isatty() or script_file == "-":
            raise UsageError(f"{what}: pass --force to go on without asking")
        click.confirm(f"{what}. Go on?", err=True, abort=True)

    def human(results: tuple[StepResult, ...], tail: str) -> str:
        """One line a command: ok/FAIL, where, the command and the answer as the trace shows them."""
        out, label = [], None
        width = max(len(str(r.where)) for r in results)
        for r in results:
            if r.label != label and r.label is not None:
                out.append(f"== {r.label}")
            label = r.label
            data = r.response[:-5].strip()
            size = "" if not data else f" ({data})" if data.startswith("<") else f" ({data.count(' ') + 1} bytes)"
            out.append(f"{'ok  ' if r.ok else 'FAIL'} {r.where!s:<{width}}  {r.command}  => {r.sw:04X}{size}")
        return "\n".join([*out, tail])

    try:
        with obj.card() as t:
            results = run_script(script, t, variables=values).results
    except ScriptMismatchError as exc:
        r, done = exc.result, exc.results
        doc = {"ok": False, "script": script.name, "commands": len(done), "steps": [x.to_json() for x in done]}
        obj.fail(CliFail(f"{r.where}: {r.command}: expected {r.expected}, got {r.got} ({r.problem})",
                         code="script_mismatch", exit_code=EXIT_INVALID,
                         data={"path": r.where.file, "line": r.where.line, "expected": r.expected,
                               "got": r.got, "reason": r.problem}),
                 doc, lambda: human(done, f"{script.name}: stopped at line {r.where.line}"))
    obj.emit({"ok": True, "script": script.name, "commands": len(results), "steps": [r.to_json() for r in results]},
             lambda: human(results, f"{script.name}: {len(results)} commands answered as expected"))


__all__ = ["apdu", "attrs", "cert", "info", "mynumber", "pin", "pkey"]


@cert.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--from-card", "from_card", type=click.Choice(["auth", "sign"]),
              help="verify the card's own certificate instead of a FILE")
@click.option("--kind", type=click.Choice(["auth", "sign"]),
              help="what the certificate must be (default: what it says it is)")
@click.option("--at", type=INSTANT, help="validate at this time (ISO 8601; default: now)")
@revocation_options()
@pin_option("sign", note="for --from-card sign")
@pass_ctx
def cert_verify(obj: Ctx, file: Path | None, from_card: KeyKind | None, kind: str | None,
                at: _dt.datetime | None, revocation: Literal["ocsp", "crl", "none"], soft_fail: bool,
                pin_value: str | None) -> None:
    """Validate a certificate: path to the trust anchors, validity, kind, revocation. Exit 3 if not valid.

    \b
    Examples:
      jpki cert verify --from-card auth
      jpki cert verify sign.der --at 2027-01-01T00:00:00+09:00 --revocation crl
    """
    from ..verify import TrustStore, Validator

    if file is not None and from_card is None:
        data = file.read_bytes()
    elif file is None and from_card is not None:
        data = read_cert(obj, from_card, pin_value)
    else:
        raise UsageError("give a certificate FILE or --from-card auth|sign")
    if kind is None:
        kind = from_card
    if kind is None:
        try:
            c = x509.load_der_x509_certificate(data) if data[:1] == b"\x30" else x509.load_pem_x509_certificate(data)
        except ValueError:
            raise VerificationError("malformed-certificate",
                                    "malformed-certificate: not an X.509 certificate") from None
        kind = cert_kind(c)
        if kind not in ("auth", "sign"):
            raise VerificationError("wrong-kind", "wrong-kind: not a JPKI signing or user-authentication certificate")
    validator = Validator(TrustStore.for_home(obj.home), clock=obj.clock, revocation=revocation,
                          soft_fail=soft_fail)
    result = validator.validate(data, kind=kind, at=at)
    if result.ok:
        obj.emit(result.to_json(), result.summary())
        return
    reason = str(result.reason)
    if reason == "revocation-unavailable":
        obj.fail(CliFail("the certificate's revocation could not be checked (revocation-unavailable)",
                         code="verification_failed", exit_code=EXIT_INVALID,
                         hint=revocation_hint(obj), data={"reason": reason}),
                 result.to_json(), result.summary())
    obj.fail(CliFail(f"the certificate is not valid ({reason})", code="verification_failed",
                     exit_code=EXIT_INVALID, data={"reason": reason}),
             result.to_json(), result.summary())


def revocation_hint(obj: Ctx) -> str:
    """How to get revocation checked: the home's test CA serves it, or accept not knowing."""
    serve = ("start the test CA's OCSP/CRL server in another terminal: jpki ca serve"
             if (obj.jhome.ca_dir / "ca.json").exists() else
             "make sure the OCSP/CRL addresses in the certificate can be reached")
    return (f"{serve}; or accept an unchecked revocation status with --soft-fail "
            "(--revocation none skips the check)")
