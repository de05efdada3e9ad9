"""The exception tree of jpki. Every error the library raises derives from JpkiError."""

from __future__ import annotations


class JpkiError(Exception):
    """Base of every jpki error."""

    exit_code = 1


class UsageError(JpkiError):
    """Bad arguments given to a library call or the CLI."""

    exit_code = 2


class TransportError(JpkiError):
    """The reader, the card connection or the emulator could not be reached."""

    exit_code = 5


class NoReaderError(TransportError):
    """No PC/SC reader (or no reader matching the name) is present."""


class NoCardError(TransportError):
    """A reader is present but holds no card (or the named emulated card does not exist)."""


class CardRemovedError(TransportError):
    """The card was removed or reset during a session."""


class ReaderBusyError(TransportError):
    """Another program holds the reader exclusively."""


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


class CardError(JpkiError):
    """The card answered a status word other than 9000."""

    def __init__(self, sw: int, message: str | None = None) -> None:
        self.sw = sw
        super().__init__(message or f"card returned status word {sw:04X}")


class PinError(CardError):
    exit_code = 4


class PinIncorrectError(PinError):
    """Wrong PIN; ``tries_left`` tries remain (0 means the PIN is now blocked)."""

    def __init__(self, sw: int, tries_left: int, message: str | None = None) -> None:
        self.tries_left = tries_left
        super().__init__(sw, message or f"wrong PIN, {tries_left} tries left")


class PinBlockedError(PinError):
    """The PIN is blocked; only the municipal office (``jpki card reset-pin``) can reset it."""

    def __init__(self, sw: int = 0x6984, message: str | None = None) -> None:
        super().__init__(sw, message or "PIN is blocked")


class SecurityStatusError(CardError):
    """The operation needs a PIN that has not been verified (6982)."""

    exit_code = 4


class FileNotFoundOnCardError(CardError):
    """No such application or file on the card (6A82)."""


class WrongLengthError(CardError):
    """The card refused the command length (6700)."""


class IncorrectParametersError(CardError):
    """Wrong P1/P2 (6A86) or offset (6B00)."""


class ConditionsNotSatisfiedError(CardError):
    """Conditions of use not satisfied (6985/6986)."""


class NotSupportedError(CardError):
    """INS or CLA not supported (6D00/6E00)."""


class VerificationError(JpkiError):
    """A signature, certificate, CRL or OCSP response failed verification."""

    exit_code = 3

    def __init__(self, reason: str, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message or reason)
