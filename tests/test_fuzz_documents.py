"""Fuzzing the signed-document readers (jpki.sign.cms, jpki.sign.pdf, the eKYC CMS check): every
malformed input is a refusal with a reason code, never another exception (issue 9, item 5).

A deterministic mutation fuzzer (seeded: the same cases on every run) works on a detached and
an attached CMS and a signed PDF made by the emulated card: bit flips, byte and length-byte
edits, truncations, deletions, insertions, splices, BER indefinite lengths and nesting bombs;
in a PDF it mutates the file, its syntax around the signature, or the CMS in /Contents. Each
outcome must be a report that is valid or carries a reason of ``REASONS``, and must render as
JSON and as text (what the CLI prints). 2,000 CMS, 250 PDF and 250 eKYC cases take 3 to 7 s on
this 2-core machine (by its load); ``JPKI_FUZZ_CASES=40000`` runs more CMS cases (PDF and eKYC
cases scale with it) and ``JPKI_FUZZ_SEED=N`` other ones.

The regression cases are inputs that escaped as exceptions before: 13 KB of nested
indefinite lengths (RecursionError), and one each of ValueError, UnicodeDecodeError,
UnsupportedAlgorithm and InvalidVersion (the classes the review found), plus PDFs with broken
cross-references, cycles and deep nesting in the object graph, a huge /Length, a /M that is
not a date. They go through the API, the CLI (in process, and once as a real process: exit 3,
one JSON document, no traceback on stderr) and the relying party's eKYC endpoint (HTTP 400,
reason ``malformed``).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("pyhanko")

from asn1crypto import cms
from auth_support import SIGN_PIN, make_service, request
from hypothesis import given, settings
from hypothesis import strategies as st
from pyhanko.pdf_utils import generic
from sign_support import SIGNED_AT, card_signer, make_pdf, validator

from jpki.auth.client import answer_ekyc
from jpki.auth.protocol import ClientData, EkycResponse, parse_challenge
from jpki.clock import FixedClock
from jpki.errors import UsageError, VerificationError
from jpki.sign import REASONS, VerificationReport, sign_file, verify_cms
from jpki.sign.cms import MAX_NESTING, check_nesting, read_cms
from jpki.sign.pdf import sign_pdf, verify_pdf
from jpki.verify import Validator

SEED = int(os.environ.get("JPKI_FUZZ_SEED", "20261127"))
CMS_CASES = int(os.environ.get("JPKI_FUZZ_CASES", "2000"))
PDF_CASES = max(CMS_CASES // 8, 50)
EKYC_CASES = max(CMS_CASES // 8, 50)


# --------------------------------------------------------------------------- samples

@dataclasses.dataclass(frozen=True)
class Samples:
    """Valid signatures made once per module by alice's emulated card."""

    home: Path
    folder: Path
    doc: Path
    p7s: bytes
    p7m: bytes
    pdf: bytes
    validator: Validator


@pytest.fixture(scope="module")
def samples(template_home, tmp_path_factory) -> Samples:
    folder = tmp_path_factory.mktemp("fuzz")
    home = folder / "home"
    shutil.copytree(template_home, home)
    doc = folder / "doc.txt"
    doc.write_bytes(b"contract: 1 yen\n")
    plain = folder / "plain.pdf"
    plain.write_bytes(make_pdf(pages=1))
    with card_signer(home) as signer:
        p7s = sign_file(doc, folder / "doc.p7s", signer, clock=FixedClock(SIGNED_AT)).output
        p7m = sign_file(doc, folder / "doc.p7m", signer, attached=True,
                        clock=FixedClock(SIGNED_AT)).output
        sign_pdf(plain, folder / "signed.pdf", signer, clock=FixedClock(SIGNED_AT))
    samples = Samples(home, folder, doc, p7s.read_bytes(), p7m.read_bytes(),
                      (folder / "signed.pdf").read_bytes(), validator(home))
    assert verify_cms(p7s, data=doc, validator=samples.validator).ok
    assert verify_cms(p7m, validator=samples.validator).ok
    assert verify_pdf(folder / "signed.pdf", validator=samples.validator).ok
    return samples


# --------------------------------------------------------------------------- the mutator

#: Bytes that mean something in DER: tags, short and long length forms, EOC.
INTERESTING = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x17, 0x18, 0x1F, 0x24,
               0x30, 0x31, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x89, 0xA0, 0xA1, 0xA3, 0xFF)


@dataclasses.dataclass(frozen=True)
class Tlv:
    start: int        # the tag byte
    length_at: int    # the first length byte
    length_size: int  # bytes in the length field
    end: int          # one past the value
    constructed: bool


def der_value(data: bytes, pos: int = 0) -> Tlv:
    """The DER value at ``pos`` (low tag numbers, definite lengths: what the seeds hold)."""
    first = data[pos + 1]
    size = 1 + (first & 0x7F if first & 0x80 else 0)
    length = first if size == 1 else int.from_bytes(data[pos + 2:pos + 1 + size], "big")
    return Tlv(pos, pos + 1, size, pos + 1 + size + length, bool(data[pos] & 0x20))


def der_values(data: bytes) -> list[Tlv]:
    """Every value of a DER encoding, walked into constructed values (not into OCTET STRINGs)."""
    out: list[Tlv] = []
    todo = [(0, len(data))]
    while todo:
        pos, end = todo.pop()
        while pos < end:
            value = der_value(data, pos)
            out.append(value)
            if value.constructed:
                todo.append((value.length_at + value.length_size, value.end))
            pos = value.end
    return out


def der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(body))) + body


def indefinite_bomb(levels: int) -> bytes:
    """``levels`` SEQUENCEs nested with indefinite lengths: 4 bytes a level."""
    return b"\x30\x80" * levels + b"\x00\x00" * levels


def definite_bomb(levels: int) -> bytes:
    """``levels`` SEQUENCEs nested with definite lengths."""
    inner = b""
    for _ in range(levels):
        inner = der_header(0x30, len(inner)) + inner
    return inner


BOMBS = (indefinite_bomb(70), indefinite_bomb(3300), definite_bomb(70), definite_bomb(1500))


class Mutator:
    """Seeded mutations of DER seeds: half the cases start with a mutation that uses the seed's
    structure (length fields, value boundaries, BER forms, bombs); the rest work on bytes."""

    def __init__(self, seeds: list[bytes]) -> None:
        self.seeds = seeds
        self.values = [der_values(s) for s in seeds]

    def __call__(self, rng: random.Random, index: int) -> bytes:
        data = bytearray(self.seeds[index])
        if rng.randrange(2):
            self._structural(rng, data, self.values[index])
            extra = rng.choice((0, 0, 1))
        else:
            extra = rng.choice((1, 1, 1, 2, 3))
        for _ in range(extra):
            byte_mutation(rng, data)
        return bytes(data)

    def _structural(self, rng: random.Random, data: bytearray, values: list[Tlv]) -> None:
        v = rng.choice(values)
        op = rng.randrange(8)
        if op == 0:  # a length byte set to something else
            data[v.length_at] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x85, 0xFF,
                                            (data[v.length_at] + 1) & 0xFF,
                                            (data[v.length_at] - 1) & 0xFF))
        elif op == 1 and v.constructed:  # BER: the same value with an indefinite length
            data[v.end:v.end] = b"\x00\x00"
            data[v.length_at:v.length_at + v.length_size] = b"\x80"
        elif op == 2:  # a nesting bomb inside, or in place of, a value
            bomb = rng.choice(BOMBS)
            if rng.randrange(2):
                data[v.start:v.end] = bomb
            else:
                data[v.start:v.start] = bomb
        elif op == 3:  # a value dropped
            del data[v.start:v.end]
        elif op == 4:  # a value repeated
            data[v.end:v.end] = data[v.start:v.end]
        elif op == 5:  # a value replaced by one of another seed
            w_seed = rng.randrange(len(self.seeds))
            w = rng.choice(self.values[w_seed])
            data[v.start:v.end] = self.seeds[w_seed][w.start:w.end]
        elif op == 6:  # the tag changed
            data[v.start] = rng.choice(INTERESTING)
        else:
            byte_mutation(rng, data)



def byte_mutation(rng: random.Random, data: bytearray) -> None:
    """One mutation of ``data`` that knows nothing of its format."""
    if not data:
        data += b"\x30"
    i = rng.randrange(len(data))
    op = rng.randrange(6)
    if op == 0:  # a bit flipped
        data[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # a byte that means something in DER
        data[i] = rng.choice(INTERESTING)
    elif op == 2:  # truncated
        del data[i:]
    elif op == 3:
        del data[i:i + rng.randrange(1, 64)]
    elif op == 4:
        data[i:i] = rng.randbytes(rng.randrange(1, 16))
    else:  # spliced from elsewhere
        j = rng.randrange(len(data))
        data[i:i] = data[j:j + rng.randrange(1, 256)]


def checked(run: Callable[[], VerificationReport]) -> str:
    """Run a verification; assert it gave a report (valid, or a refusal with a known reason)
    that renders as the CLI renders it. Returns the outcome's name."""
    try:
        report = run()
    except UsageError as exc:  # an attached CMS mutated into a detached one: no data to check
        assert "detached signature" in str(exc), exc
        return "usage"
    assert isinstance(report, VerificationReport)
    assert report.ok or report.reason in REASONS, report
    for signature in report.signatures:
        assert signature.ok or signature.reason in REASONS, signature
    json.dumps(report.to_json(), ensure_ascii=False, default=str)
    assert report.summary()
    return "ok" if report.ok else report.reason or "?"


# --------------------------------------------------------------------------- fuzzing

def test_fuzzed_cms_files_are_refused_with_a_reason(samples, tmp_path):
    mutate = Mutator([samples.p7s, samples.p7m])
    rng = random.Random(SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    case = tmp_path / "case.p7s"
    for _ in range(CMS_CASES):
        index = rng.randrange(2)
        case.write_bytes(mutate(rng, index))
        data = samples.doc if index == 0 else None
        outcomes[checked(lambda d=data: verify_cms(case, data=d, validator=samples.validator))] += 1
    # the fuzzer reaches past the parser: signatures, digests and certificates get checked
    assert outcomes["malformed"] < 0.95 * CMS_CASES, outcomes  # ~10% reach past it (seed, CA port)
    assert {"tampered", "wrong-data"} <= set(outcomes), outcomes


def test_fuzzed_pdfs_are_refused_with_a_reason(samples, tmp_path):
    pdf = samples.pdf
    hex_at = re.search(rb"/Contents <([0-9a-fA-F]+)>", pdf)
    assert hex_at is not None
    lo, hi = hex_at.span(1)
    der = bytes.fromhex(hex_at.group(1).decode())
    der = der[:der_value(der).end]  # without the zeros that pad the slot
    mutate_cms = Mutator([der])
    rng = random.Random(SEED + 1)
    outcomes: collections.Counter[str] = collections.Counter()
    case = tmp_path / "case.pdf"
    for _ in range(PDF_CASES):
        mode = rng.randrange(3)
        data = bytearray(pdf)
        if mode == 0:  # the CMS in /Contents, written back into its slot
            new = mutate_cms(rng, 0).hex().encode()[:hi - lo]
            data[lo:hi] = new + b"0" * (hi - lo - len(new))
        elif mode == 1:  # the PDF syntax around the signature value
            for _ in range(rng.choice((1, 1, 2, 3))):
                i = rng.choice((rng.randrange(lo), rng.randrange(hi, len(data))))
                data[i:i + 1] = rng.choice((bytes((data[i] ^ (1 << rng.randrange(8)),)), b"",
                                            b"(", b"<<", b"[", b"R", b"0", b"9", b" ", b"\n",
                                            rng.randbytes(4)))
        else:
            for _ in range(rng.choice((1, 2))):
                byte_mutation(rng, data)
        case.write_bytes(bytes(data))
        outcomes[checked(lambda: verify_pdf(case, validator=samples.validator))] += 1
    assert {"malformed", "tampered"} <= set(outcomes), outcomes


def test_fuzzed_ekyc_cms_is_refused_never_an_internal_error(rp, alice):
    """The relying party's eKYC check over mutated CMS: every answer a refusal with a reason,
    never ``internal-error`` (which the service answers with 500)."""
    challenge = rp.begin_ekyc("fuzz")
    good = answer_ekyc(challenge, alice, pin=lambda: SIGN_PIN)
    assert rp.complete_ekyc(good).ok
    mutate = Mutator([good.cms])
    rng = random.Random(SEED + 2)
    reasons: collections.Counter[str] = collections.Counter()
    for _ in range(EKYC_CASES):
        challenge = rp.begin_ekyc("fuzz")
        # the client data of a new challenge: the CMS signed another one, so a CMS that
        # parses is refused as bad-signature; the parse is what is fuzzed here
        client_data = ClientData.for_challenge(challenge).encode()
        response = EkycResponse(challenge.id, client_data, mutate(rng, 0))
        result = rp.complete_ekyc(response)
        assert not result.ok
        reasons[str(result.reason)] += 1
    assert "internal-error" not in reasons, reasons
    assert "malformed" in reasons, reasons


# --------------------------------------------------------------------------- regressions

def _in_certificate(der: bytes, old: bytes, new: bytes) -> bytes:
    """``der`` with the first ``old`` inside its first certificate replaced by ``new``."""
    cert = cms.ContentInfo.load(der)["content"]["certificates"][0].chosen.dump()
    start = der.index(cert)
    at = der.index(old, start)
    assert at + len(old) <= start + len(cert)
    return der[:at] + new + der[at + len(old):]


def nesting_bomb(levels: int = 3300) -> bytes:
    """A CMS SignedData whose certificate set is ``levels`` SEQUENCEs nested with indefinite
    lengths (13 KB at 3,300 levels): the shape that exhausted Python's stack."""
    signed_data = (b"\x30\x80" + bytes.fromhex("020101" "3100" "300b06092a864886f70d010701")
                   + b"\xa0\x80" + indefinite_bomb(levels) + b"\x00\x00" + b"\x31\x00" + b"\x00\x00")
    return (b"\x30\x80" + bytes.fromhex("06092a864886f70d010702") + b"\xa0\x80" + signed_data
            + b"\x00\x00\x00\x00")


#: Inputs that escaped as exceptions before the fix: (name, make from a valid CMS, what escaped).
ESCAPED: list[tuple[str, Callable[[bytes], bytes]]] = [
    # 13 KB of nested indefinite lengths: RecursionError in the walker and in asn1crypto
    ("RecursionError", lambda der: nesting_bomb()),
    # the message-digest attribute's OCTET STRING tagged NULL: asn1crypto's ValueError, lazily
    ("ValueError", lambda der: der.replace(bytes.fromhex("06092a864886f70d01090431220420"),
                                           bytes.fromhex("06092a864886f70d01090431220520"), 1)),
    # an issuer name that is not UTF-8: asn1crypto's name comparison decodes it
    ("UnicodeDecodeError", lambda der: _in_certificate(der, b"JPKI-TEST", b"\xffPKI-TEST")),
    # the certificate's key of an unknown algorithm: cryptography's UnsupportedAlgorithm
    ("UnsupportedAlgorithm", lambda der: _in_certificate(
        der, bytes.fromhex("06092a864886f70d0101010500"), bytes.fromhex("06092a864886f70d0101640500"))),
    # certificate version 5: cryptography's InvalidVersion (not a ValueError)
    ("InvalidVersion", lambda der: _in_certificate(der, bytes.fromhex("a003020102"),
                                                   bytes.fromhex("a003020105"))),
]


@pytest.mark.parametrize(("name", "make"), ESCAPED, ids=[name for name, _ in ESCAPED])
def test_inputs_that_escaped_are_malformed(cli, samples, tmp_path, name, make):
    bad = tmp_path / "bad.p7s"
    bad.write_bytes(make(samples.p7s))
    report = verify_cms(bad, data=samples.doc, validator=samples.validator)
    assert (report.ok, report.reason) == (False, "malformed"), report.message
    assert "\n" not in report.message
    r = cli("--json", "verify", str(bad), "--data", str(samples.doc),
            "--revocation", "none", home=samples.home)
    doc = r.json()  # exactly one JSON document
    assert (r.exit_code, doc["reason"]) == (3, "malformed")
    assert "Traceback" not in r.stderr


def test_the_nesting_bomb_is_refused_before_any_decoder(samples, tmp_path):
    bomb = nesting_bomb()
    assert 13_000 <= len(bomb) <= 14_000
    bad = tmp_path / "bomb.p7s"
    bad.write_bytes(bomb)
    report = verify_cms(bad, data=samples.doc)
    assert report.reason == "malformed" and "nests more than" in report.message
    # just over the limit is refused, what real signatures need is not
    with pytest.raises(VerificationError, match="nests more than"):
        check_nesting(indefinite_bomb(MAX_NESTING + 1))
    check_nesting(indefinite_bomb(MAX_NESTING))
    check_nesting(definite_bomb(MAX_NESTING))
    with pytest.raises(VerificationError, match="nests more than"):
        check_nesting(definite_bomb(MAX_NESTING + 1))
    # DER inside an OCTET STRING (an extension, an eContent) counts too
    wrapped = der_header(0x04, len(definite_bomb(MAX_NESTING))) + definite_bomb(MAX_NESTING)
    with pytest.raises(VerificationError, match="nests more than"):
        check_nesting(wrapped)
    chain = b"\x05\x00"  # OCTET STRINGs in OCTET STRINGs: bounded without recursing 5,000 deep
    for _ in range(5000):
        chain = der_header(0x04, len(chain)) + chain
    with pytest.raises(VerificationError, match="nests more than"):
        check_nesting(chain)
    # the signatures made here nest far less deep
    for der in (samples.p7s, samples.p7m):
        check_nesting(der, MAX_NESTING // 2)
        read_cms(io.BytesIO(der))


@st.composite
def nested(draw) -> tuple[bytes, int]:
    """A BER encoding and its true nesting depth: a spine of constructed values (definite or
    indefinite lengths) or OCTET STRINGs holding DER, with primitive values beside them."""
    depth = draw(st.integers(1, MAX_NESTING + 8))
    primitive = st.sampled_from([b"\x05\x00", b"\x02\x01\x07", b"\x04\x03abc", b"\x04\x01\x30"])
    inner = b""
    levels = 0
    for _ in range(depth):
        before = b"".join(draw(st.lists(primitive, max_size=2)))
        after = b"".join(draw(st.lists(primitive, max_size=2)))
        body = before + inner + after
        form = draw(st.sampled_from(["definite", "indefinite", "octets"]))
        if form == "indefinite" or (form == "octets" and not inner):
            inner = b"\x30\x80" + body + b"\x00\x00"
        elif form == "octets":  # DER inside an OCTET STRING (nothing beside it: it must parse)
            inner = der_header(0x04, len(inner)) + inner
        else:
            inner = der_header(0x30, len(body)) + body
        levels += 1
    return inner, levels


@settings(max_examples=80, deadline=None, derandomize=True)
@given(nested())
def test_the_nesting_scan_counts_every_level(case):
    data, depth = case
    if depth > MAX_NESTING:
        with pytest.raises(VerificationError, match="nests more than"):
            check_nesting(data)
    else:
        check_nesting(data)


@pytest.mark.parametrize(("kind", "reason"), [("cms-nesting-bomb", "malformed"),
                                            ("pdf-changed-after-signing", "tampered")])
def test_the_cli_as_a_process_gives_one_json_document_and_no_traceback(cli, samples, tmp_path, kind,
                                                                        reason):
    """As a user runs it: no logging set up, so a traceback anyone logs would reach stderr."""
    if kind == "cms-nesting-bomb":
        target = tmp_path / "bomb.p7s"
        target.write_bytes(nesting_bomb())
        args = ["--data", str(samples.doc)]
    else:  # pyHanko logs a traceback while it compares the revisions
        target = tmp_path / "changed.pdf"
        target.write_bytes(_pdf_attacks(samples.pdf)["catalog without its extensions"][0])
        args = []
    done = cli.process("--json", "verify", str(target), *args, "--revocation", "none",
                       home=samples.home, card=None)
    assert done.exit_code == 3, done.stderr
    assert done.json()["reason"] == reason  # exactly one JSON document
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # the one-line error


def test_ekyc_endpoint_answers_400_malformed(home, clock, net, alice):
    app = make_service(home, clock, net)
    try:
        for name, make in ESCAPED:
            begun = request(app, "POST", "/api/ekyc/begin", json={"transaction_text": "口座開設"})
            good = answer_ekyc(parse_challenge(begun.content), alice, pin=lambda: SIGN_PIN)
            bad = dataclasses.replace(good, cms=make(good.cms))
            done = request(app, "POST", "/api/ekyc/complete", json=bad.to_json())
            assert (done.status_code, done.json()["reason"]) == (400, "malformed"), (name, done.text)
    finally:
        app.state.close()


# --------------------------------------------------------------------------- PDF regressions

def _update(pdf: bytes, objects: dict[int, bytes], *, prev: int | None = None) -> bytes:
    """``pdf`` with an incremental update that (re)defines ``objects``."""
    start = int(re.findall(rb"startxref\s+(\d+)", pdf)[-1]) if prev is None else prev
    out = bytearray(pdf)
    offsets = {}
    for num, body in objects.items():
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n" + b"".join(b"%d 1\n%010d 00000 n \n" % (n, offsets[n]) for n in sorted(offsets))
    size = max(max(offsets) + 1, _free_number(pdf))
    out += b"trailer\n<< /Size %d /Root 1 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        size, start, xref)
    return bytes(out)


def _free_number(pdf: bytes) -> int:
    """The first object number the PDF does not use (its trailer's /Size)."""
    return int(re.findall(rb"/Size (\d+)", pdf)[-1])


def _object(pdf: bytes, pattern: bytes) -> tuple[int, bytes]:
    """The number and dictionary of the last object whose dictionary starts with ``pattern``."""
    found = re.findall(rb"\n(\d+) 0 obj\n(<<\s*" + pattern + rb".*?>>)\nendobj", pdf, re.DOTALL)
    assert found, pattern
    return int(found[-1][0]), found[-1][1]


def _pdf_attacks(pdf: bytes) -> dict[str, tuple[bytes, str]]:
    """Broken variants of a signed PDF and the reason each must get."""
    form, _ = _object(pdf, rb"/Fields \[")
    field, field_dict = _object(pdf, rb"/FT /Sig")
    free = _free_number(pdf)
    catalog = b"<< /Type /Catalog /Pages 2 0 R /AcroForm %d 0 R " % form
    chain: dict[int, bytes] = {free + i: b"%d 0 R" % (free + i + 1) for i in range(3000)}
    chain[free + 3000] = b"<< /Fields [%d 0 R] /SigFlags 3 >>" % field
    contents = re.search(rb"/Contents <([0-9a-fA-F]+)>", pdf)
    assert contents is not None
    slot = len(contents.group(1))
    bomb_hex = indefinite_bomb(slot // 8).hex().encode()
    return {
        "deep array": (_update(pdf, {field: field_dict[:-2] + b"/X " + b"[" * 20000
                                     + b"]" * 20000 + b">>"}), "malformed"),
        "deep dictionary": (_update(pdf, {1: catalog + b"/X " + b"<< /A " * 20000
                                          + b">>" * 20001}), "malformed"),
        "field is its own kid": (_update(pdf, {form: b"<< /Fields [%d 0 R] /SigFlags 3 >>" % free,
                                               free: b"<< /T (a) /Kids [%d 0 R] >>" % free}),
                                 "malformed"),
        "kids cycle": (_update(pdf, {form: b"<< /Fields [%d 0 R] /SigFlags 3 >>" % free,
                                     free: b"<< /Kids [%d 0 R] /T (a) >>" % (free + 1),
                                     free + 1: b"<< /Kids [%d 0 R] /Parent %d 0 R /T (b) >>"
                                     % (free, free)}), "malformed"),
        "reference chain": (_update(pdf, {1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm %d 0 R >>"
                                          % free, **chain}), "malformed"),
        # pyHanko asks for 100 TB to read the stream: MemoryError
        "huge length": (_update(pdf, {free: b"<< /Length 99999999999999 >>\nstream\nabc\nendstream",
                                      1: catalog + b"/Metadata %d 0 R >>" % free}), "malformed"),
        # pyHanko's difference analysis fails on the catalog that lost /Extensions, and logs
        # a traceback: a change after signing, and nothing on stderr
        "catalog without its extensions": (_update(pdf, {1: catalog + b">>"}), "tampered"),
        "startxref past the end": (re.sub(rb"startxref\n\d+\n%%EOF\n$",
                                          b"startxref\n99999999\n%%EOF\n", pdf), "malformed"),
        "startxref not a number": (re.sub(rb"startxref\n\d+\n%%EOF\n$", b"startxref\nabc\n%%EOF\n",
                                          pdf), "malformed"),
        "xref loop": (_update(pdf, {free: b"<< >>"}, prev=len(pdf)), "malformed"),
        "nesting bomb in /Contents": (pdf[:contents.start(1)] + bomb_hex + b"0" * (slot - len(bomb_hex))
                                      + pdf[contents.end(1):], "malformed"),
        "signature value not a dictionary": (_update(pdf, {field: re.sub(
            rb"/V \d+ 0 R", b"/V 42", field_dict)}), "malformed"),
    }


def test_broken_pdfs_are_malformed_never_an_exception(cli, samples, tmp_path):
    for name, (body, reason) in _pdf_attacks(samples.pdf).items():
        case = tmp_path / f"{name.replace(' ', '-').replace('/', '')}.pdf"
        case.write_bytes(body)
        assert checked(lambda c=case: verify_pdf(c, validator=samples.validator)) == reason, name
        r = cli("--json", "verify", str(case), "--revocation", "none", home=samples.home)
        assert r.exit_code == 3 and r.json()["reason"] == reason, (name, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)


@pytest.mark.parametrize(("when", "reason"), [
    ("D:20261127040000", None),     # no time zone: read as UTC
    ("D:2026991399", "malformed"),  # not a date
])
def test_a_pdf_signing_time_without_zone_or_not_a_date(samples, tmp_path, monkeypatch, when, reason):
    """The /M entry is the signing time PAdES gives; what another tool may write there."""
    import pyhanko.sign.signers.pdf_byterange as byterange

    monkeypatch.setattr(byterange, "pdf_date", lambda _: generic.TextStringObject(when))
    src = tmp_path / "plain.pdf"
    src.write_bytes(make_pdf())
    out = tmp_path / "signed.pdf"
    with card_signer(samples.home) as signer:
        sign_pdf(src, out, signer, clock=FixedClock(SIGNED_AT))
    assert when[2:].encode() + b")" in out.read_bytes()  # (written as D\\072...)
    report = verify_pdf(out, validator=samples.validator)
    assert report.reason == reason, report.message
    if reason is None:
        assert "read as UTC" in report.signatures[0].time_source
