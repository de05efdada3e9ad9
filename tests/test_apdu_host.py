"""jpki.apdu: command encoding, status word -> exception, GET RESPONSE / Le retry over a fake transport."""

from __future__ import annotations

import pytest

from jpki.apdu import SW_OK, ApduProtocol, Response, encode, raise_for_sw
from jpki.cli._fail import fail_for
from jpki.errors import (
    CardError,
    ConditionsNotSatisfiedError,
    FileNotFoundOnCardError,
    IncorrectParametersError,
    JpkiError,
    NotSupportedError,
    PinBlockedError,
    PinError,
    PinIncorrectError,
    ProtocolError,
    SecurityStatusError,
    WrongLengthError,
)
from jpki.transport.base import Transport, TransportBase

# --------------------------------------------------------------------------- encode

@pytest.mark.parametrize("args, expected", [
    # case 1: header only
    ((0x00, 0xA4, 0x00, 0x0C), "00A4000C"),
    # case 2S: Le 1..256 (256 is encoded 00)
    ((0x00, 0xB0, 0x00, 0x00, b"", 0x11), "00B0000011"),
    ((0x00, 0xB0, 0x01, 0x02, b"", 255), "00B00102FF"),
    ((0x00, 0xB0, 0x00, 0x00, b"", 256), "00B0000000"),
    # case 3S: Lc 1..255
    ((0x00, 0xA4, 0x02, 0x0C, b"\x00\x0a"), "00A4020C02000A"),
    ((0x00, 0x20, 0x00, 0x80, b"1234"), "002000800431323334"),
    ((0x00, 0xD6, 0x00, 0x00, b"\xaa" * 255), "00D60000FF" + "AA" * 255),
    # case 4S
    ((0x80, 0x2A, 0x00, 0x80, b"\x01\x02\x03", 256), "802A008003010203" + "00"),
    ((0x80, 0x2A, 0x00, 0x80, b"\x01", 0x10), "802A00800101" + "10"),
    # case 2E: Le 257..65536 (65536 is encoded 0000), one 00 byte then two Le bytes
    ((0x00, 0xB0, 0x00, 0x00, b"", 257), "00B00000" + "000101"),
    ((0x00, 0xB0, 0x00, 0x00, b"", 0x1234), "00B00000" + "001234"),
    ((0x00, 0xB0, 0x00, 0x00, b"", 65536), "00B00000" + "000000"),
    # case 3E: Lc 256..65535: 00 then two Lc bytes, no Le
    ((0x00, 0xD6, 0x00, 0x00, b"\xbb" * 256), "00D60000" + "000100" + "BB" * 256),
    ((0x00, 0xD6, 0x00, 0x00, b"\xcc" * 65535), "00D60000" + "00FFFF" + "CC" * 65535),
    # case 4E: long data or long Le makes both fields extended; Le has no leading 00
    ((0x80, 0x2A, 0x00, 0x80, b"\xdd" * 300, 256), "802A0080" + "00012C" + "DD" * 300 + "0100"),
    ((0x80, 0x2A, 0x00, 0x80, b"\x01\x02\x03", 257), "802A0080" + "000003" + "010203" + "0101"),
    ((0x80, 0x2A, 0x00, 0x80, b"\x01", 65536), "802A0080" + "000001" + "01" + "0000"),
])
def test_encode_every_case(args, expected):
    assert encode(*args) == bytes.fromhex(expected)


def test_encode_picks_short_form_at_the_boundaries():
    assert len(encode(0, 0xD6, 0, 0, b"x" * 255, 256)) == 4 + 1 + 255 + 1
    assert len(encode(0, 0xD6, 0, 0, b"x" * 256)) == 4 + 3 + 256
    assert len(encode(0, 0xB0, 0, 0, le=256)) == 5
    assert len(encode(0, 0xB0, 0, 0, le=257)) == 7


@pytest.mark.parametrize("data, le", [
    (b"x" * 65536, None),
    (b"", -1),
    (b"", 65537),
    (b"abc", 70000),
])
def test_encode_rejects_out_of_range_lengths(data, le):
    with pytest.raises(ValueError):
        encode(0x00, 0xB0, 0, 0, data, le)


# --------------------------------------------------------------------------- raise_for_sw

def test_9000_raises_nothing():
    assert SW_OK == 0x9000
    assert raise_for_sw(0x9000) is None


@pytest.mark.parametrize("tries", range(1, 16))
def test_63Cx_is_a_wrong_pin_with_the_tries_left(tries):
    sw = 0x63C0 | tries
    with pytest.raises(PinIncorrectError) as exc:
        raise_for_sw(sw)
    assert exc.value.tries_left == tries
    assert exc.value.sw == sw
    assert isinstance(exc.value, PinError) and fail_for(exc.value).exit_code == 4  # the CLI's PIN exit
    assert str(tries) in str(exc.value)


def test_63C0_is_a_wrong_pin_with_no_tries_left():
    with pytest.raises(PinIncorrectError) as exc:
        raise_for_sw(0x63C0)
    assert exc.value.tries_left == 0
    assert exc.value.sw == 0x63C0
    assert "blocked" in str(exc.value)


@pytest.mark.parametrize("sw, cls", [
    (0x6984, PinBlockedError),
    (0x6983, PinBlockedError),
    (0x6982, SecurityStatusError),
    (0x6A82, FileNotFoundOnCardError),
    (0x6A88, FileNotFoundOnCardError),
    (0x6700, WrongLengthError),
    (0x6A86, IncorrectParametersError),
    (0x6B00, IncorrectParametersError),
    (0x6985, ConditionsNotSatisfiedError),
    (0x6986, ConditionsNotSatisfiedError),
    (0x6D00, NotSupportedError),
    (0x6E00, NotSupportedError),
])
def test_status_words_map_to_typed_exceptions(sw, cls):
    with pytest.raises(cls) as exc:
        raise_for_sw(sw)
    assert type(exc.value) is cls
    assert exc.value.sw == sw
    assert f"{sw:04X}" in str(exc.value)
    assert isinstance(exc.value, CardError) and isinstance(exc.value, JpkiError)


def test_pin_related_errors_exit_with_the_pin_exit_code_through_the_cli():
    for sw in (0x6984, 0x6982, 0x63C1):
        with pytest.raises(JpkiError) as exc:
            raise_for_sw(sw)
        assert fail_for(exc.value).exit_code == 4
        assert not hasattr(exc.value, "exit_code")  # the library carries data, the CLI decides


@pytest.mark.parametrize("sw", [0x6F00, 0x6A80, 0x6581, 0x6300, 0x6400, 0x6882, 0x69FC, 0x6C10, 0x6110])
def test_unknown_status_words_are_a_plain_card_error_with_the_sw(sw):
    with pytest.raises(CardError) as exc:
        raise_for_sw(sw)
    assert type(exc.value) is CardError
    assert exc.value.sw == sw
    assert f"{sw:04X}" in str(exc.value)


# --------------------------------------------------------------------------- ApduProtocol

class ScriptedTransport(TransportBase):
    """A fake card: answers each transmit with the next scripted response, records every APDU."""

    def __init__(self, *responses: bytes | str) -> None:
        self.responses = [bytes.fromhex(r) if isinstance(r, str) else r for r in responses]
        self.sent: list[bytes] = []
        self.closed = False

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        if not self.responses:
            raise AssertionError(f"unexpected APDU {apdu.hex()}")
        return self.responses.pop(0)

    def close(self) -> None:
        self.closed = True

    @property
    def atr(self) -> bytes:
        return b"\x3b\x00"

    @property
    def description(self) -> str:
        return "scripted"


class EndlessTransport(ScriptedTransport):
    """Always answers the same thing; gives up (AssertionError) after ``limit`` commands."""

    def __init__(self, answer: str, limit: int = 500) -> None:
        super().__init__()
        self.answer = bytes.fromhex(answer)
        self.limit = limit

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        if len(self.sent) > self.limit:
            raise AssertionError("the host keeps sending: no bound on 61xx / 6Cxx handling")
        return self.answer


def test_fake_transport_satisfies_the_transport_protocol():
    assert isinstance(ScriptedTransport(), Transport)


def test_a_transport_is_a_context_manager_that_closes_on_exit():
    class NoContext:  # transmit/close/atr/description only: not a Transport any more
        def transmit(self, apdu: bytes) -> bytes:
            return b"\x90\x00"

        def close(self) -> None:
            pass

        atr = b"\x3b\x00"
        description = "no context"

    assert not isinstance(NoContext(), Transport)
    t = ScriptedTransport()
    with pytest.raises(RuntimeError), t as entered:
        assert entered is t
        raise RuntimeError("boom")
    assert t.closed


def test_send_returns_the_data_of_a_9000_answer():
    t = ScriptedTransport("0102039000")
    assert ApduProtocol(t).send(0x00, 0xB0, 0x00, 0x00, le=3) == b"\x01\x02\x03"
    assert t.sent == [bytes.fromhex("00B0000003")]


def test_send_raw_returns_data_and_sw_without_raising():
    t = ScriptedTransport("AABB6A82")
    r = ApduProtocol(t).send_raw(bytes.fromhex("00A4040C02FFFF"))
    assert r == Response(b"\xaa\xbb", 0x6A82)


def test_send_raises_the_typed_exception():
    t = ScriptedTransport("63C1")
    with pytest.raises(PinIncorrectError) as exc:
        ApduProtocol(t).send(0x00, 0x20, 0x00, 0x80, b"0000")
    assert exc.value.tries_left == 1


def test_61xx_is_followed_by_get_response_until_the_last_chunk():
    t = ScriptedTransport("AAAA6110", "BB" * 16 + "6105", "CC" * 5 + "9000")
    data = ApduProtocol(t).send(0x00, 0xB0, 0x00, 0x00, le=0)
    assert data == b"\xaa\xaa" + b"\xbb" * 16 + b"\xcc" * 5
    assert t.sent == [bytes.fromhex("00B0000000"), bytes.fromhex("00C0000010"),
                      bytes.fromhex("00C0000005")]


def test_61_00_asks_for_256_bytes():
    t = ScriptedTransport("6100", "DD" * 256 + "9000")
    assert ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=1) == b"\xdd" * 256
    assert t.sent[1] == bytes.fromhex("00C0000000")


def test_get_response_chain_ending_in_an_error_raises_it():
    t = ScriptedTransport("6102", "AABB6982")
    proto = ApduProtocol(t)
    with pytest.raises(SecurityStatusError) as exc:
        proto.send(0x00, 0xB0, 0, 0, le=2)
    assert exc.value.sw == 0x6982


def test_get_response_of_a_case_4_command():
    t = ScriptedTransport("6104", "01020304" + "9000")
    data = ApduProtocol(t).send(0x00, 0x88, 0x00, 0x00, b"\x11\x22", le=256)
    assert data == bytes.fromhex("01020304")
    assert t.sent == [bytes.fromhex("0088000002112200"), bytes.fromhex("00C0000004")]


def test_6Cxx_resends_with_the_exact_le():
    t = ScriptedTransport("6C11", "EE" * 0x11 + "9000")
    data = ApduProtocol(t).send(0x00, 0xB0, 0x00, 0x00, le=256)
    assert data == b"\xee" * 0x11
    assert t.sent == [bytes.fromhex("00B0000000"), bytes.fromhex("00B0000011")]


def test_6Cxx_then_61xx():
    t = ScriptedTransport("6C04", "0102" + "6102", "0304" + "9000")
    assert ApduProtocol(t).send(0x00, 0xCA, 0x01, 0x02, le=1) == bytes.fromhex("01020304")
    assert t.sent == [bytes.fromhex("00CA010201"), bytes.fromhex("00CA010204"),
                      bytes.fromhex("00C0000002")]


def test_6Cxx_to_a_command_with_data_is_not_retried():
    t = ScriptedTransport("6C10")
    with pytest.raises(CardError) as exc:
        ApduProtocol(t).send(0x00, 0x88, 0x00, 0x00, b"\x01", le=1)
    assert exc.value.sw == 0x6C10
    assert len(t.sent) == 1


@pytest.mark.parametrize("answer", ["", "90"])
def test_a_response_without_a_status_word_is_a_protocol_error(answer):
    t = ScriptedTransport(answer)
    with pytest.raises(ProtocolError):
        ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=1)


@pytest.mark.parametrize("answer", ["", "61"])
def test_a_get_response_answer_without_a_status_word_is_a_protocol_error(answer):
    t = ScriptedTransport("AA6110", answer)
    with pytest.raises(ProtocolError):
        ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=1)


def test_get_response_on_the_basic_channel_uses_cla_00():
    t = ScriptedTransport("6102", "AABB9000")
    ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=2)
    assert t.sent[1][0] == 0x00


@pytest.mark.parametrize("cla, expected_cla", [
    (0x80, 0x00),
    (0x01, 0x01),
])
def test_get_response_keeps_the_channel_and_is_inter_industry(cla, expected_cla):
    t = ScriptedTransport("6102", "AABB9000")
    ApduProtocol(t).send(cla, 0x2A, 0x00, 0x80, b"\x01", le=256)
    assert t.sent[1] == bytes((expected_cla, 0xC0, 0x00, 0x00, 0x02))


def test_a_card_that_keeps_answering_6Cxx_is_a_protocol_error():
    t = EndlessTransport("6C10", limit=10_000)
    with pytest.raises(ProtocolError):
        ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=0x10)


def test_a_card_that_keeps_answering_61xx_is_a_protocol_error():
    t = EndlessTransport("AA6101", limit=500)
    with pytest.raises(ProtocolError):
        ApduProtocol(t).send(0x00, 0xB0, 0, 0, le=1)
