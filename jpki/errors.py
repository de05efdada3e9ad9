"""The exception tree of jpki. Every error the library raises derives from JpkiError.

Exceptions carry data (``sw``, ``tries_left``, ``pin``, ``reason``) and a stable snake_case
``code`` (``pin_blocked``, ``no_card``, ``verification_failed``…): a program may rely on the
code, never on the class name or the message. A subclass that does not declare a code gets one
made from its class name (``StoreFullError`` → ``store_full``). Exceptions carry no exit code and
no wording for a terminal: the CLI prints the code (``--json``) and maps it to an exit code and
its own wording (``jpki.cli._fail``).
"""

from __future__ import annotations

import re
from typing import Any

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def code_from_class_name(name: str) -> str:
    """``PinBlockedError`` → ``pin_blocked``, ``CAExistsError`` → ``ca_exists``."""
    if name.endswith("Error") and name != "Error":
        name = name[:-len("Error")]
    return _WORD_BOUNDARY.sub("_", name).lower()


class JpkiError(Exception):
    """Base of every jpki error."""

    #: stable machine-readable code (snake_case); every subclass has its own
    code = "error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = code_from_class_name(cls.__name__)


class UsageError(JpkiError):
    """Bad arguments given to a library call or the CLI."""

    code = "usage"


class InvalidNameError(UsageError):
    """A card name that is not 1-64 letters, digits, '-' or '_' (a path, ``..``, a space…)."""

    code = "invalid_name"

    def __init__(self, name: str, message: str | None = None) -> None:
        self.name = name
        super().__init__(message or f"{name!r} is not a card name: use 1-64 letters, digits, "
                                    "'-' or '_', starting with a letter or digit")


class TransportError(JpkiError):
    """The reader, the card connection or the emulator could not be reached. ``pcsc_code`` is
    the PC/SC result code (``0x80100016``…) when a reader's error says what happened."""

    code = "transport"
    pcsc_code: int | None = None


class NoReaderError(TransportError):
    """No PC/SC reader (or no reader matching the name) is present."""

    code = "no_reader"


class NoCardError(TransportError):
    """A reader is present but holds no card (or the named emulated card does not exist)."""

    code = "no_card"


class CardRemovedError(TransportError):
    """The card was removed or reset during a session."""

    code = "card_removed"


class ReaderBusyError(TransportError):
    """Another program holds the reader exclusively."""

    code = "reader_busy"


class FaultControlError(JpkiError):
    """A served emulated card's fault plan could not be set: the serving process did not take
    it (``jpki emulator fault``)."""

    code = "fault_control"


class CardStateError(JpkiError):
    """An emulated card's files are damaged: the card does not open (it never answers as fresh).

    ``path`` is the damaged file, ``problem`` what is wrong with it (prose, not a reason code),
    ``pin`` the PIN whose record is damaged when it is only one.
    """

    code = "card_state_corrupt"

    def __init__(self, path: str, problem: str, message: str, pin: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.pin = pin
        super().__init__(message)


class ProtocolError(JpkiError):
    """The card answered with data the host cannot make sense of."""

    code = "protocol"


class CardError(JpkiError):
    """The card answered a status word other than 9000."""

    code = "card_error"

    def __init__(self, sw: int, message: str | None = None) -> None:
        self.sw = sw
        super().__init__(message or f"card returned status word {sw:04X}")


class PinError(CardError):
    """A PIN was refused. ``pin`` names it (``auth``, ``sign``, ``card``…) when the session
    knows which PIN it was verifying (``jpki.session`` fills it in)."""

    code = "pin"
    pin: str | None = None


class PinIncorrectError(PinError):
    """Wrong PIN; ``tries_left`` tries remain (0 means the PIN is now blocked)."""

    code = "pin_incorrect"

    def __init__(self, sw: int, tries_left: int, message: str | None = None) -> None:
        self.tries_left = tries_left
        super().__init__(sw, message or f"wrong PIN, {tries_left} tries left")


class PinBlockedError(PinError):
    """The PIN is blocked; only the municipal office (``jpki card reset-pin``) can reset it."""

    code = "pin_blocked"

    def __init__(self, sw: int = 0x6984, message: str | None = None) -> None:
        super().__init__(sw, message or "PIN is blocked")


class SecurityStatusError(CardError):
    """The operation needs a PIN that has not been verified (6982); ``pin`` names it when known."""

    code = "pin_not_verified"
    pin: str | None = None


class FileNotFoundOnCardError(CardError):
    """No such application or file on the card (6A82)."""

    code = "not_found_on_card"


class WrongLengthError(CardError):
    """The card refused the command length (6700)."""

    code = "wrong_length"


class IncorrectParametersError(CardError):
    """Wrong P1/P2 (6A86) or offset (6B00)."""

    code = "incorrect_parameters"


class ConditionsNotSatisfiedError(CardError):
    """Conditions of use not satisfied (6985/6986)."""

    code = "conditions_not_satisfied"


class NotSupportedError(CardError):
    """INS or CLA not supported (6D00/6E00)."""

    code = "not_supported"


class VerificationError(JpkiError):
    """A signature, certificate, CRL or OCSP response failed verification."""

    code = "verification_failed"

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or reason)
