"""``jpki sign`` and ``jpki verify``: documents signed with the card (CMS/CAdES and PDF/PAdES)."""

from __future__ import annotations

import datetime
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from ..errors import UsageError
from ..hashing import BackgroundHash
from ._common import CliFail, Ctx, pass_ctx, pin_name, pin_option, revocation_options
from ._fail import EXIT_INVALID

# jpki.sign (asn1crypto's CMS modules), jpki.verify and pyHanko are imported by the commands
# that use them, so that every other jpki command starts without them.
if TYPE_CHECKING:
    from cryptography import x509

    from ..sign import CardSigner
    from ..sign.report import ValidatorAnswer
    from ..verify import Validator
    from ..verify.evidence import RevocationEvidence

KEYS = click.Choice(["sign", "auth"])
DIGESTS = click.Choice(["sha256", "sha384", "sha512"])
PDF_MAGIC = b"%PDF-"


def _check_input(path: Path, what: str) -> None:
    """A clear UsageError for a missing file or a folder, before any PIN is asked."""
    if not path.exists():
        raise UsageError(f"{what} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a directory, not a file")


def _is_pdf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return PDF_MAGIC in fh.read(1024)


LEVELS = click.Choice(["B", "T", "LT", "LTA"], case_sensitive=False)
EXTEND_LEVELS = click.Choice(["T", "LT", "LTA"], case_sensitive=False)


def validation_options(command: Any) -> Any:
    """``--crl FILE`` and ``--ocsp-response FILE`` (repeatable): revocation data given."""
    command = click.option("--ocsp-response", "ocsp_files", type=click.Path(path_type=Path),
                           multiple=True, metavar="FILE",
                           help="an OCSP response (DER) to use as revocation data (repeatable)")(command)
    return click.option("--crl", "crl_files", type=click.Path(path_type=Path), multiple=True,
                        metavar="FILE", help="a CRL (DER or PEM) to use as revocation data "
                        "(repeatable)")(command)


def _given(crl_files: tuple[Path, ...], ocsp_files: tuple[Path, ...]) -> RevocationEvidence | None:
    """The revocation data of --crl / --ocsp-response (None without any)."""
    if not crl_files and not ocsp_files:
        return None
    from ..verify.evidence import evidence_from_files

    return evidence_from_files(crl_files, ocsp_files)


@click.command("sign")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="where to write (default FILE.p7s; FILE.p7m with --attached; IN-signed.pdf; "
                   "with --extend: FILE itself)")
@click.option("--key", type=KEYS, default="sign", show_default=True,
              help="sign: a legal signature (署名用); auth: the user-authentication key")
@click.option("--digest", type=DIGESTS, default="sha256", show_default=True)
@click.option("--attached", is_flag=True, help="put the file inside the CMS (.p7m)")
@click.option("--pdf", "is_pdf", is_flag=True, help="FILE is a PDF: embed a PAdES signature")
@click.option("--field", help="PDF signature field name (default: the first free SignatureN)")
@click.option("--visible", metavar="PAGE,x1,y1,x2,y2",
              help="PDF: a visible stamp on PAGE (from 1) in this box (points)")
@click.option("--reason", help="PDF: the reason for signing")
@click.option("--location", help="PDF: where the document was signed")
@click.option("--stamp-font", type=click.Path(path_type=Path), envvar="JPKI_STAMP_FONT",
              help="PDF: the font of the --visible stamp (a TrueType/OpenType file with Japanese "
                   "glyphs; default: IPA Gothic or another installed Japanese font)")
@click.option("--level", type=LEVELS,
              help="B: the signature; T: + a signature timestamp; LT: + the certificates and "
                   "revocation data proving them at that time; LTA: + an archive timestamp "
                   "[default: T with --tsa, else B]")
@click.option("--tsa", metavar="URL", help="an RFC 3161 timestamp authority (levels T, LT, LTA)")
@click.option("--extend", "extend_to", type=EXTEND_LEVELS,
              help="upgrade the signature in FILE (.p7s/.p7m or PDF) to this level; no card needed")
@click.option("--data", type=click.Path(path_type=Path),
              help="--extend LTA of a detached .p7s: the signed file (the archive timestamp covers it)")
@validation_options
@revocation_options(soft_fail=False)
@pin_option("sign", "auth", chosen_by="--key")
@pass_ctx
def sign(obj: Ctx, file: Path, output: Path | None, key: str, digest: str, attached: bool,
         is_pdf: bool, field: str | None, visible: str | None, reason: str | None,
         location: str | None, stamp_font: Path | None, level: str | None, tsa: str | None,
         extend_to: str | None, data: Path | None, crl_files: tuple[Path, ...],
         ocsp_files: tuple[Path, ...], revocation: str, pin_value: str | None) -> None:
    """Sign FILE with the card: a CMS signature (CAdES), or a PDF signature (PAdES); or upgrade
    an existing signature (--extend).

    \b
    The signature password is asked once; the card verifies it right before it signs.
    Output is written to a temporary file and renamed: never a partial file.
    Levels (ETSI baseline): B; T adds an RFC 3161 signature timestamp (--tsa URL); LT adds the
    certificates and the OCSP responses or CRLs that prove them valid at that time, fetched
    from the certificates' own OCSP responder or CRL (or given: --crl, --ocsp-response); LTA
    adds an archive timestamp (CMS) or a document timestamp (PDF).

    \b
    Examples:
      jpki sign contract.txt                      # contract.txt.p7s (detached)
      jpki sign contract.txt --attached -o contract.p7m
      jpki sign contract.txt --level LT --tsa http://127.0.0.1:8318/tsr
      jpki sign --pdf report.pdf -o report-signed.pdf --reason 承認 --visible 1,360,40,560,100
      jpki sign --pdf report.pdf -o out.pdf --level LTA --tsa http://tsa.example/tsr
      jpki sign --extend LTA contract.txt.p7s --data contract.txt --tsa http://tsa.example/tsr
      jpki sign --extend LT out.pdf --tsa http://tsa.example/tsr
      echo ABC123 | jpki sign data.bin --digest sha512
    """
    if extend_to is not None:
        card_only = {"--attached": attached or None, "--field": field, "--visible": visible,
                     "--reason": reason, "--location": location, "--level": level}
        given = ", ".join(k for k, v in card_only.items() if v is not None)
        if given:
            raise UsageError(f"{given}: not with --extend (it upgrades an existing signature)")
        _check_input(file, "signature file")
        if data is not None:
            _check_input(data, "data file")
        _extend(obj, file, output, extend_to.upper(), tsa, data, crl_files, ocsp_files, revocation,
                digest)
        return
    if data is not None:
        raise UsageError("--data: only with --extend (the file to sign is FILE)")
    pdf_only = {"--field": field, "--visible": visible, "--reason": reason, "--location": location}
    if visible is None:
        stamp_font = None  # $JPKI_STAMP_FONT matters only for a visible stamp
    if not is_pdf and any(v is not None for v in pdf_only.values()):
        given = ", ".join(k for k, v in pdf_only.items() if v is not None)
        raise UsageError(f"{given}: only with --pdf")
    if is_pdf and attached:
        raise UsageError("--attached is for CMS signatures; a PDF signature is always embedded")
    chosen = (level or ("T" if tsa else "B")).upper()
    if chosen != "B" and tsa is None:
        raise UsageError(f"--level {chosen} needs a timestamp authority: --tsa URL")
    if chosen == "B" and tsa is not None:
        raise UsageError("--tsa with --level B: a B-level signature has no timestamp")
    if (crl_files or ocsp_files) and chosen not in ("LT", "LTA"):
        raise UsageError("--crl / --ocsp-response: only with --level LT or LTA (the data to embed)")
    _check_input(file, "file to sign")
    given_data = _given(crl_files, ocsp_files)  # a bad file is refused before any PIN is asked
    # Detached: hash from the start, beside the rest of jpki being imported, the PIN asked and
    # the card opened (jpki.hashing imports nothing heavy).
    hashed = None if is_pdf or attached else BackgroundHash(file, digest)
    try:
        _sign(obj, file, output, key, digest, attached, is_pdf, field, visible, reason, location,
              _Levels(chosen, tsa, given_data, revocation), pin_value, hashed, stamp_font)
    except BaseException:
        if hashed is not None:
            hashed.cancel()
        raise


class _Levels:
    """What the level asks for: the timestamp client, the validation data source."""

    def __init__(self, level: str, tsa: str | None, given: RevocationEvidence | None,
                 revocation: str) -> None:
        self.level, self.tsa, self.given, self.revocation = level, tsa, given, revocation
        self._stamper: Any = None

    def timestamper(self) -> Any:
        if self.tsa is None:
            return None
        if self._stamper is None:
            from ..tsa import HttpTimestamper

            self._stamper = HttpTimestamper(self.tsa)
        return self._stamper

    def source(self, obj: Ctx) -> Any:
        if self.level not in ("LT", "LTA"):
            return None
        from ..sign.levels import ValidatorSource
        from ..verify import TrustStore, Validator

        validator = Validator(TrustStore.for_home(obj.home), clock=obj.clock,
                              revocation=self.revocation)  # type: ignore[arg-type]
        return ValidatorSource(validator, given=self.given)

    def close(self) -> None:
        if self._stamper is not None:
            self._stamper.close()


def _extend(obj: Ctx, file: Path, output: Path | None, level: str, tsa: str | None,
            data: Path | None, crl_files: tuple[Path, ...], ocsp_files: tuple[Path, ...],
            revocation: str, digest: str) -> None:
    """``jpki sign --extend LEVEL FILE``: upgrade a CMS or PDF signature (no card)."""
    levels = _Levels(level, tsa, _given(crl_files, ocsp_files), revocation)
    try:
        if _is_pdf(file):
            if data is not None:
                raise UsageError("--data is for detached CMS signatures, not PDFs")
            from ..sign.pdf import extend_pdf

            done: Any = extend_pdf(file, level, output=output, timestamper=levels.timestamper(),
                                   source=levels.source(obj), digest=digest, clock=obj.clock)
        else:
            from ..sign.cms import extend_cms

            done = extend_cms(file, level, output=output, data=data,
                              timestamper=levels.timestamper(), source=levels.source(obj))
    finally:
        levels.close()
    doc = done.to_json()
    lines = [f"extended {file} from {done.before} to {done.level}: {done.output}"]
    lines += [f"  embedded: {line}" for line in done.validation]
    obj.emit(doc, "\n".join(lines))


def _sign(obj: Ctx, file: Path, output: Path | None, key: str, digest: str, attached: bool,
          is_pdf: bool, field: str | None, visible: str | None, reason: str | None,
          location: str | None, levels: _Levels, pin_value: str | None,
          hashed: BackgroundHash | None, stamp_font: Path | None = None) -> None:
    from ..sign.cms import check_output, default_output, sign_file, sign_hashed

    box = None
    if is_pdf:
        from ..sign.pdf import parse_visible  # imports pyHanko: for PDFs only

        box = parse_visible(visible) if visible is not None else None
        if box is not None:
            from ..sign.stamp import find_font

            find_font(stamp_font)  # no font for the stamp: say so before the PIN is asked
        if not _is_pdf(file):
            raise UsageError(f"{file} is not a PDF (no %PDF- header)")
        output = output or file.with_name(f"{file.stem}-signed{file.suffix or '.pdf'}")
    if key == "auth":
        obj.note("note: a signature by the user-authentication key is not a legal signature; "
                 "verify it with 'jpki verify --key auth'")
    level = levels.level
    try:
        if is_pdf or attached:
            value = obj.pin(key, pin_value)
            with obj.card() as t:
                signer = _card_signer(obj, t, key, value)
                if is_pdf:
                    from ..sign.pdf import sign_pdf

                    assert output is not None
                    outcome = sign_pdf(file, output, signer, field=field, visible=box, reason=reason,
                                       location=location, digest=digest, clock=obj.clock,
                                       level=level, timestamper=levels.timestamper(),
                                       source=levels.source(obj), stamp_font=stamp_font)
                    data = outcome.to_json()
                    human = (f"signed {file} ({outcome.profile}, field {outcome.field}) with the "
                             f"{key} key: {outcome.output}")
                    embedded = outcome.validation
                else:
                    done = sign_file(file, output, signer, digest=digest, attached=True,
                                     clock=obj.clock, level=level,
                                     timestamper=levels.timestamper(), source=levels.source(obj))
        else:
            assert hashed is not None
            out = output or default_output(file, False)
            check_output(file, out)
            value = obj.pin(key, pin_value)
            with obj.card() as t:
                signer = _card_signer(obj, t, key, value)
                done = sign_hashed(hashed.result(), out, signer, clock=obj.clock, level=level,
                                   timestamper=levels.timestamper(), source=levels.source(obj))
    finally:
        levels.close()
    if not is_pdf:
        data = done.to_json()
        human = (f"signed {file} ({done.size} bytes, {digest}, "
                 f"{'attached' if attached else 'detached'} {done.profile}) with the {key} key: "
                 f"{done.output}")
        embedded = () if done.extension is None else done.extension.validation
    if embedded:
        human += "".join(f"\n  embedded: {line}" for line in embedded)
    data["key"] = key
    obj.emit(data, human)


def _card_signer(obj: Ctx, transport: object, key: str, value: str) -> CardSigner:
    """The card's signer for ``key`` (confirming first on a card in a reader)."""
    from ..session import JpkiSession
    from ..sign import CardSigner

    session = JpkiSession(transport)  # type: ignore[arg-type]
    obj.confirm_try(f"Signing with the {pin_name(key)}", session.tries_left(key))
    return CardSigner.from_session(session, key, pin=lambda: value)  # type: ignore[arg-type]


def _validator(obj: Ctx, revocation: str, soft_fail: bool, trust: tuple[Path, ...],
               offline: bool = False) -> Validator:
    """The path/revocation validator: the shipped J-LIS roots, the home's test CA, --trust;
    ``offline``: no fetching at all (the embedded or given revocation data decides)."""
    from ..verify import TrustStore, Validator

    store = TrustStore.for_home(obj.home, extra_pem=trust)
    return Validator(store, clock=obj.clock, revocation=revocation, soft_fail=soft_fail,  # type: ignore[arg-type]
                     offline=offline)


class _ValidatorInBackground:
    """A validator being built in a thread (importing jpki.verify, loading the roots) while the
    data is hashed; ``validate`` waits for it."""

    def __init__(self, future: Future[Any]) -> None:
        self._future = future

    def validate(self, cert: x509.Certificate, *, kind: Literal["sign", "auth", "tsa"],
                 at: datetime.datetime, evidence: RevocationEvidence | None = None) -> ValidatorAnswer:
        """Wait for the validator, then validate ``cert`` as a ``kind`` certificate at ``at``."""
        answer: ValidatorAnswer = self._future.result().validate(cert, kind=kind, at=at,
                                                                 evidence=evidence)
        return answer


@click.command("verify")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="the signed file of a detached .p7s (default: FILE without .p7s, if present)")
@click.option("--key", "expected", type=KEYS, default="sign", show_default=True,
              help="sign: check a legal signature; auth: a user-authentication key signature")
@revocation_options()
@click.option("--trust", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="more trust anchors (PEM file or folder); the J-LIS roots and the home's "
                   "test CA are always trusted")
@click.option("--offline", is_flag=True,
              help="no network at all: revocation rests on the data embedded in the document "
                   "(B-LT and above) and --crl / --ocsp-response; fails when they do not suffice")
@validation_options
@pass_ctx
def verify(obj: Ctx, file: Path, data: Path | None, expected: str, revocation: str,
           soft_fail: bool, trust: tuple[Path, ...], offline: bool, crl_files: tuple[Path, ...],
           ocsp_files: tuple[Path, ...]) -> None:
    """Verify a signed file (.p7s/.p7m or PDF): signature, integrity, signer, path, revocation.

    \b
    Shows the signer's name, address, sex and birth date from the signing certificate.
    A signature timestamp (B-T and above) whose TSA certificate validates proves the signing
    time: the signer's certificate is checked at that time, so a certificate revoked later
    (a card moved, lost) leaves the signature valid, and the report says so. Without one, the
    signing time is a claim and a later revocation refuses the signature. The report gives
    the level found (B-B … B-LTA), the proven time, the TSA and where the revocation data came
    from (fetched, embedded, given).
    Exit code 0: valid; 3: invalid, with a reason code: tampered, wrong-data, untrusted,
    revoked, expired-at-signing-time, wrong-key-usage, malformed, no-signer, several-signers.

    \b
    Examples:
      jpki verify contract.txt.p7s                # data: contract.txt
      jpki verify sig.p7s --data contract.txt --revocation crl
      jpki --json verify report-signed.pdf
      jpki verify report-lt.pdf --offline          # the embedded validation data only
      jpki verify sig.p7s --offline --crl sign.crl
      jpki verify login.p7s --key auth --revocation none
    """
    _check_input(file, "signature file")
    if data is not None:
        _check_input(data, "data file")
    is_pdf = _is_pdf(file)
    if is_pdf and data is not None:
        raise UsageError("--data is for detached CMS signatures, not PDFs")
    if not is_pdf and data is None and file.suffix.lower() in (".p7s", ".sig"):
        guess = file.with_suffix("")
        if guess.is_file():
            data = guess
    given = _given(crl_files, ocsp_files)
    # Start hashing the data (the usual SHA-256) before anything heavy is imported.
    early = BackgroundHash(data, "sha256") if data is not None and not is_pdf else None
    try:
        report = _verify(obj, file, data, is_pdf, expected, revocation, soft_fail, trust, early,
                         offline, given)
    except BaseException:
        if early is not None:
            early.cancel()
        raise
    if report.ok:
        obj.emit(report.to_json(), report.summary)
        return
    reason = report.reason or "malformed"
    if _revocation_unavailable(report):
        from .host import revocation_hint

        if offline:
            message = "revocation could not be checked offline: the embedded or given data does not suffice"
            hint = ("verify without --offline, or give the revocation data with --crl FILE / "
                    "--ocsp-response FILE")
        else:
            message = "revocation could not be checked: no OCSP responder or CRL answered"
            hint = revocation_hint(obj)
        obj.fail(CliFail(message, code="verification_failed", exit_code=EXIT_INVALID, hint=hint,
                         data={"reason": reason, "detail": "revocation-unavailable"}),
                 report.to_json(), lambda: _unchecked_summary(report))
    obj.fail(CliFail(report.message, code="verification_failed", exit_code=EXIT_INVALID,
                     data={"reason": reason}),
             report.to_json(), report.summary)


def _unavailable(signature: Any) -> bool:
    check = signature.certificate
    return check is not None and (check.details or {}).get("reason") == "revocation-unavailable"


def _revocation_unavailable(report: Any) -> bool:
    """The report failed only because no revocation source answered (not a bad signature)."""
    bad = [s for s in report.signatures if not s.ok]
    return bool(bad) and all(_unavailable(s) for s in bad)


def _unchecked_summary(report: Any) -> str:
    """The report of a file whose signer's revocation status could not be learnt: the verdict
    says so once (the validator's long message is shown once, as the revocation line)."""
    several = len(report.signatures) > 1
    lines = [f"{report.file}: INVALID (untrusted): revocation could not be checked"]
    for i, sig in enumerate(report.signatures, 1):
        body = sig.lines()
        if _unavailable(sig):
            what = ", ".join(x for x in (sig.profile, sig.digest_algorithm) if x)
            body[0] = (f"signature {i}: " if several else "") + (
                f"signature and content intact{f' [{what}]' if what else ''}; "
                "revocation status unknown")
            detail = (sig.certificate.details or {}).get("message") or sig.certificate.message
            body = [f"  revocation:   unknown (revocation-unavailable): {detail}"
                    if line.startswith("  path:") else line
                    for line in body]
        elif several:
            body[0] = f"signature {i}: {body[0]}"
        lines += body
    return "\n".join(lines)


def _verify(obj: Ctx, file: Path, data: Path | None, is_pdf: bool, expected: str, revocation: str,
            soft_fail: bool, trust: tuple[Path, ...], early: BackgroundHash | None,
            offline: bool = False, given: RevocationEvidence | None = None) -> Any:
    from ..sign import verify_cms

    prehashed = None
    result: list[bytes] = []
    if early is not None:
        def sha256() -> bytes:
            if not result:
                result.append(early.result().digest)
            return result[0]
        prehashed = {"sha256": sha256}
    with ThreadPoolExecutor(max_workers=1) as pool:
        building = pool.submit(_validator, obj, revocation, soft_fail, trust, offline)
        validator = _ValidatorInBackground(building)
        if is_pdf:
            from ..sign.pdf import verify_pdf

            report = verify_pdf(file, validator=validator, expected=expected, clock=obj.clock,  # type: ignore[arg-type]
                                evidence=given)
        else:
            report = verify_cms(file, data=data, validator=validator, expected=expected,  # type: ignore[arg-type]
                                prehashed=prehashed, clock=obj.clock, evidence=given)
        building.result()  # a broken --trust is an error even when no certificate got that far
    if early is not None and not result:
        early.cancel()  # the signature named another digest: the early hash went unused
    return report


__all__ = ["sign", "verify"]
