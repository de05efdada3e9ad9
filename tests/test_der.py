"""jpki.der, the one module of hand-written DER: encoders checked against asn1crypto, the three
readers (strict DER, card BER-TLV, streamed BER) on good and bad input."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from asn1crypto import core
from hypothesis import given
from hypothesis import strategies as st

from jpki import der
from jpki.der import DerError

UTC = dt.UTC


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 24])
def test_lengths_and_tlvs_match_asn1crypto(n):
    content = b"x" * n
    assert der.tlv(0x04, content) == core.OctetString(content).dump()
    assert der.encode_header(0x04, n) + content == core.OctetString(content).dump()
    assert der.encode_length(n) == core.OctetString(content).dump()[1 : -n or None]


def test_negative_length_is_refused():
    with pytest.raises(ValueError):
        der.encode_length(-1)


@given(st.integers(min_value=-(1 << 200), max_value=1 << 200))
def test_integers_match_asn1crypto_and_read_back(value):
    encoded = der.encode_integer(value)
    assert encoded == core.Integer(value).dump()
    tag, start, stop = der.read_header(encoded, 0, len(encoded))
    assert tag == 0x02 and der.decode_integer(encoded, start, stop) == value


@pytest.mark.parametrize("dotted", ["1.3.14.3.2.26", "2.5.29.35", "1.2.840.113549.1.1.11",
                                    "2.16.840.1.101.3.4.2.1", "0.9.2342.19200300.100.1.1",
                                    "2.999.3", "1.3.6.1.4.1.311.60.2.1.3",
                                    "2.25.329800735698586629295641978511506172918"])
def test_oids_match_asn1crypto_both_ways(dotted):
    encoded = der.encode_oid(dotted)
    assert encoded == core.ObjectIdentifier(dotted).dump()
    assert der.read_oid(encoded) == dotted
    assert der.decode_oid(der.oid_content(dotted)) == dotted


@pytest.mark.parametrize("dotted", ["", "1", "3.1", "1.40", "1.2.x", "1.-2"])
def test_bad_dotted_oids_are_refused(dotted):
    with pytest.raises(ValueError):
        der.encode_oid(dotted)


@pytest.mark.parametrize("encoding, why", [
    (b"\x06\x00", "empty"),
    (b"\x06\x02\x2a\x86", "last arc unfinished"),
    (b"\x06\x03\x2a\x80\x01", "non-minimal arc"),
    (b"\x04\x01\x2a", "not an OID"),
    (b"\x06\x01\x2a\x00", "trailing byte"),
    (b"\x06\x02\x2a", "truncated"),
])
def test_bad_oids_are_refused(encoding, why):
    with pytest.raises(DerError):
        der.read_oid(encoding)


def test_read_oid_takes_a_ber_length():
    """A streamed (BER) CMS may write an OID's length in long form; the arcs are what count."""
    assert der.read_oid(b"\x06\x81\x09" + bytes.fromhex("2a864886f70d010702")) == "1.2.840.113549.1.7.2"


def test_generalized_time_is_utc_whole_seconds():
    when = dt.datetime(2026, 11, 27, 12, 0, 5, 999, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert der.generalized_time(when) == b"\x18\x0f20261127030005Z"
    assert der.read_time(der.generalized_time(when), 0, 17) == (when.replace(microsecond=0), 17)


def test_seq_concatenates_parts():
    assert der.seq(b"\x05\x00", b"\x02\x01\x01") == b"\x30\x05\x05\x00\x02\x01\x01"


# --------------------------------------------------------------------------- strict DER


@pytest.mark.parametrize("encoding, message", [
    (b"\x30", "truncated header"),
    (b"\x1f\x81\x00", "high tag number"),
    (b"\x30\x80\x00\x00", "indefinite"),
    (b"\x30\x89" + bytes(9), "oversized"),
    (b"\x04\x82\x00", "truncated length"),
    (b"\x04\x81\x05" + bytes(5), "non-minimal length"),
    (b"\x04\x82\x00\x90" + bytes(0x90), "non-minimal length"),
    (b"\x04\x03\x00", "runs past"),
])
def test_read_header_is_strict(encoding, message):
    with pytest.raises(DerError, match=message):
        der.read_header(encoding, 0, len(encoding))


def test_read_header_stays_inside_its_container():
    buf = b"\x30\x03\x04\x02ab" + b"cd"
    assert der.read_header(buf, 0, len(buf)) == (0x30, 2, 5)
    with pytest.raises(DerError):
        der.read_header(buf, 2, 5)  # the OCTET STRING runs past the SEQUENCE


def test_expect_names_what_was_expected():
    assert der.expect(b"\x02\x01\x05", 0, 3, 0x02, "serial") == (2, 3)
    with pytest.raises(DerError, match="serial: expected tag 0x02, found 0x04"):
        der.expect(b"\x04\x01\x05", 0, 3, 0x02, "serial")


@pytest.mark.parametrize("content", [b"", b"\x00\x05", b"\xff\x80"])
def test_non_minimal_integers_are_refused(content):
    with pytest.raises(DerError):
        der.decode_integer(content, 0, len(content))


@pytest.mark.parametrize("tag, text, expected", [
    (0x17, b"491231235959Z", dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
    (0x17, b"500101000000Z", dt.datetime(1950, 1, 1, tzinfo=UTC)),
    (0x18, b"20500101000000Z", dt.datetime(2050, 1, 1, tzinfo=UTC)),
    (0x18, b"20500101000000.5Z", dt.datetime(2050, 1, 1, tzinfo=UTC)),
])
def test_times(tag, text, expected):
    assert der.decode_time(tag, text) == expected


@pytest.mark.parametrize("tag, text", [
    (0x17, b"4912312359Z"), (0x17, b"491231235959+0900"), (0x18, b"20501301000000Z"),
    (0x18, b"20500101000000.50Z"), (0x18, b"20500101000000.Z"), (0x04, b"20500101000000Z"),
])
def test_bad_times_are_refused(tag, text):
    with pytest.raises(DerError, match="bad time"):
        der.decode_time(tag, text)


# --------------------------------------------------------------------------- card BER-TLV


def test_read_tlv_takes_two_byte_tags_and_long_lengths_minimal_or_not():
    buf = b"\xff\x20\x82\x00\x05" + b"\xdf\x22\x81\x01A" + b"rest"
    tag, start, stop = der.read_tlv(buf, 0, len(buf))
    assert (tag, buf[start:stop]) == (b"\xff\x20", b"\xdf\x22\x81\x01A")
    assert der.read_tlv(buf, start, stop) == (b"\xdf\x22", 9, 10)
    assert der.tlv_size(buf[:5]) == 10


@pytest.mark.parametrize("buf", [
    b"", b"\xff", b"\xff\x20", b"\xff\x20\x81", b"\xff\x20\x82\x01",
    b"\xff\x20\x83\x00\x00\x01\x00",   # three length octets: more than a card uses
    b"\xff\x20\x80\x00\x00",           # indefinite
    b"\xff\x20\x05abc",                # value shorter than its length
    b"\x1f\x81\x81\x01\x00",           # a tag of four octets
])
def test_read_tlv_refuses_malformed_card_data(buf):
    with pytest.raises(DerError):
        der.read_tlv(buf, 0, len(buf))


def test_tlv_size_needs_only_the_header():
    assert der.tlv_size(b"\x30\x82\x04\xd2") == 4 + 0x4D2
    assert der.tlv_size(b"\x30\x03\x02\x01") == 5
    with pytest.raises(DerError):
        der.tlv_size(b"\x30\x82\x04")
    assert der.tlv_size(b"\x30\x83\x01\x00\x00", max_length_octets=3) == 5 + 0x10000


# --------------------------------------------------------------------------- streamed BER


def _walk(stream: der.ByteStream, header: der.StreamHeader, out: list[tuple[int, bytes]]) -> None:
    """Collect (tag, primitive contents) of every leaf under ``header``, in order."""
    if not header.constructed:
        assert header.length is not None
        out.append((header.tag, stream.read(header.length)))
        return
    while der.has_more(stream, header):
        _walk(stream, der.read_stream_header(stream), out)


def test_stream_walks_indefinite_and_definite_lengths():
    # SEQUENCE (indefinite) { OID, [0] (indefinite) { OCTET STRING (constructed, indefinite)
    # { "ab", "c" } }, SET (definite) { INTEGER 5 } }
    ber = bytes.fromhex("3080" "06092a864886f70d010701" "a080" "2480" "04026162" "040163" "0000"
                        "0000" "3103020105" "0000")
    parsed = core.Sequence.load(ber)  # asn1crypto reads the same BER
    assert parsed.contents
    stream = der.ByteStream(io.BytesIO(ber + b"tail"))
    top = der.read_stream_header(stream)
    assert (top.tag, top.length, top.end, top.header) == (0x30, None, None, b"\x30\x80")
    leaves: list[tuple[int, bytes]] = []
    _walk(stream, top, leaves)
    assert leaves == [(0x06, bytes.fromhex("2a864886f70d010701")), (0x04, b"ab"), (0x04, b"c"),
                      (0x02, b"\x05")]
    assert stream.pos == len(ber) and stream.peek(10) == b"tail"


def test_stream_header_records_its_bytes_and_end():
    stream = der.ByteStream(io.BytesIO(b"\x00" + b"\x04\x82\x01\x00" + bytes(256)))
    stream.read(1)
    header = der.read_stream_header(stream)
    assert (header.tag, header.length, header.header, header.end) == (0x04, 256, b"\x04\x82\x01\x00", 5 + 256)
    assert not header.constructed


def test_stream_skips_high_tag_numbers():
    stream = der.ByteStream(io.BytesIO(b"\xbf\x81\x01\x01\x00"))
    header = der.read_stream_header(stream)
    assert (header.tag, header.length, header.header) == (0xBF, 1, b"\xbf\x81\x01\x01")


@pytest.mark.parametrize("ber, message", [
    (b"", "truncated"),
    (b"\x30", "truncated"),
    (b"\x04\x80", "indefinite length on a primitive value"),
    (b"\x04\x85" + bytes(5), "length field too long"),
    (b"\x9f\x81\x81\x81\x81\x81\x01", "tag number too long"),
    (b"\x04\x82\x01", "truncated"),
])
def test_bad_stream_headers(ber, message):
    with pytest.raises(DerError, match=message):
        der.read_stream_header(der.ByteStream(io.BytesIO(ber)))


def test_has_more_catches_overruns_and_missing_end_of_contents():
    stream = der.ByteStream(io.BytesIO(b"\x30\x02\x04\x02ab"))
    outer = der.read_stream_header(stream)
    inner = der.read_stream_header(stream)
    stream.read(inner.length)
    with pytest.raises(DerError, match="overruns"):
        der.has_more(stream, outer)
    stream = der.ByteStream(io.BytesIO(b"\x30\x80\x05\x00"))
    outer = der.read_stream_header(stream)
    assert der.has_more(stream, outer)
    der.read_stream_header(stream)
    with pytest.raises(DerError, match="missing end of contents"):
        der.has_more(stream, outer)
