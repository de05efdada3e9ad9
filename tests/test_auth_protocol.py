"""The login/eKYC wire protocol (jpki.auth.protocol): the signed encoding and the documents."""

from __future__ import annotations

import datetime as dt
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jpki.auth.protocol import (
    MAGIC,
    MAX_CLIENT_DATA_SIZE,
    ClientData,
    EkycResponse,
    LoginResponse,
    MalformedMessageError,
    b64url_decode,
    b64url_encode,
    parse_challenge,
    parse_json_object,
)
from jpki.auth.store import Challenge

T0 = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)


def challenge(purpose: str = "login", text: str | None = None) -> Challenge:
    return Challenge.create(rp_id="https://rp.example.jp", purpose=purpose,  # type: ignore[arg-type]
                            now=T0, ttl=dt.timedelta(minutes=3), transaction_text=text)


def field(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


def test_the_encoding_is_the_documented_layout():
    c = challenge("ekyc", "送金 1円")
    data = ClientData.for_challenge(c)
    micros = (c.expires_at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    expected = (MAGIC + b"\x01" + field(1, b"ekyc") + field(2, b"https://rp.example.jp")
                + field(3, c.id.encode()) + field(4, c.nonce) + field(5, struct.pack(">q", micros))
                + field(6, "送金 1円".encode()))
    assert data.encode() == expected
    assert ClientData.decode(expected) == data


def test_login_has_no_text_field_and_an_empty_text_is_kept():
    assert b"\x06\x00\x00\x00" not in ClientData.for_challenge(challenge()).encode()[-5:]
    empty = ClientData.for_challenge(challenge("ekyc", ""))
    assert ClientData.decode(empty.encode()).transaction_text == ""
    assert ClientData.decode(ClientData.for_challenge(challenge("ekyc")).encode()).transaction_text is None


@settings(max_examples=200, deadline=None)
@given(rp_id=st.text(min_size=1, max_size=80),
       text=st.one_of(st.none(), st.text(max_size=200)),
       nonce=st.binary(min_size=32, max_size=32),
       micros=st.integers(min_value=0, max_value=4_000_000_000_000_000))
def test_round_trip(rp_id, text, nonce, micros):
    try:
        rp_id.encode("utf-8")
        if text is not None:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return
    data = ClientData(purpose="ekyc", rp_id=rp_id, challenge_id="A" * 32, nonce=nonce,
                      expires_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros),
                      transaction_text=text)
    assert ClientData.decode(data.encode()) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_garbage_only_ever_raises_malformed(blob):
    for candidate in (blob, MAGIC + b"\x01" + blob):
        try:
            ClientData.decode(candidate)
        except MalformedMessageError as exc:
            assert exc.reason == "malformed"


def good() -> bytes:
    return ClientData.for_challenge(challenge()).encode()


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"JPKI-AUTX\x00" + b[10:], "magic"),
    (lambda b: b[:10] + b"\x02" + b[11:], "version"),
    (lambda b: b + b"\x00", "truncated"),
    (lambda b: b + field(1, b"login"), "misplaced"),
    (lambda b: b + field(9, b""), "misplaced"),
    (lambda b: b[:-3], "longer than"),
    (lambda b: b + field(6, b"text"), "no transaction text"),
    (lambda b: b[:11] + field(1, b"LOGIN") + b[11 + 5 + 5:], "purpose"),
    (lambda b: b[:11] + b[11 + 10:], "missing"),
    (lambda b: b + b"\x00" * MAX_CLIENT_DATA_SIZE, "larger"),
])
def test_strict_decoding(mutate, message):
    with pytest.raises(MalformedMessageError, match=message):
        ClientData.decode(mutate(good()))


def test_a_short_nonce_or_bad_utf8_is_refused():
    c = challenge()
    data = ClientData.for_challenge(c).encode()
    start = data.index(c.nonce) - 5
    short = data[:start] + field(4, c.nonce[:31]) + data[start + 5 + 32:]
    with pytest.raises(MalformedMessageError, match="nonce"):
        ClientData.decode(short)
    rp_start = data.index(b"https://")
    bad = data[:rp_start - 5] + field(2, b"\xff\xfe") + data[rp_start + len("https://rp.example.jp"):]
    with pytest.raises(MalformedMessageError, match="UTF-8"):
        ClientData.decode(bad)


def test_b64url_is_strict():
    assert b64url_decode(b64url_encode(b"\x00\xff\x10"), "f", max_size=10) == b"\x00\xff\x10"
    for bad in ("AA==", "A", "A B", "+/AA", "AB", 5, None):
        with pytest.raises(MalformedMessageError):
            b64url_decode(bad, "f", max_size=10)
    with pytest.raises(MalformedMessageError, match="larger"):
        b64url_decode("A" * 100, "f", max_size=10)


def test_json_parsing_is_strict():
    assert parse_json_object(b'{"a": 1}', "x") == {"a": 1}
    for bad in (b'{"a":1,"a":2}', b"[1]", b"NaN", b'{"a": Infinity}', b"\xff", b"{" * 100000, 12):
        with pytest.raises(MalformedMessageError):
            parse_json_object(bad, "x")  # type: ignore[arg-type]


def test_documents_round_trip():
    login = LoginResponse("A" * 32, good(), b"\x30\x00", b"\x01" * 256)
    assert LoginResponse.from_json(json.dumps(login.to_json())) == login
    assert LoginResponse.from_json(login.to_json()) == login
    ekyc = EkycResponse("B" * 32, good(), b"\x30\x00")
    assert EkycResponse.from_json(json.dumps(ekyc.to_json()).encode()) == ekyc
    c = challenge("ekyc", "x")
    assert parse_challenge(c.to_json()) == c
    with pytest.raises(MalformedMessageError):
        parse_challenge({"v": 1})


def test_documents_refuse_unknown_missing_and_oversized_fields():
    doc = LoginResponse("A" * 32, good(), b"\x30\x00", b"\x01").to_json()
    with pytest.raises(MalformedMessageError, match="unknown"):
        LoginResponse.from_json({**doc, "extra": 1})
    with pytest.raises(MalformedMessageError, match="missing"):
        LoginResponse.from_json({k: v for k, v in doc.items() if k != "signature"})
    with pytest.raises(MalformedMessageError, match="version"):
        LoginResponse.from_json({**doc, "v": 2})
    with pytest.raises(MalformedMessageError, match="challenge_id"):
        LoginResponse.from_json({**doc, "challenge_id": "short"})
    with pytest.raises(MalformedMessageError, match="signature is larger"):
        LoginResponse.from_json({**doc, "signature": b64url_encode(b"\x00" * 2000)})
