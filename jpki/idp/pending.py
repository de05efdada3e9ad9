"""A pending authorization: one authorization request waiting for the card, as a state machine.

::

                 complete (the card's answer verified)
    PENDING ──────────────────────────────────────────▶ APPROVED ──┐
       │   complete (refused) / cancel / test-card outcome           │ resume (the browser is
       └──────────────────────────────────────────────▶ REFUSED ───┤ back, cookie checked):
                                                                     │ taken from the store
    any state ── its lifetime passes ──▶ gone (expired)              ▼ → redirect to the client

Each record lives in the provider's store under ``pending:ID`` as JSON text
(:meth:`PendingAuthorization.encode`). A transition out of ``pending`` is a compare-and-set on
the stored text (:meth:`jpki.idp.kv.KV.swap`), so of two answers arriving at once (two
workers, an agent and a test-card request) exactly one decides. ``resume`` *takes* the record
(atomic get-and-delete): a finished authorization gives at most one code. :data:`TRANSITIONS`
lists the allowed moves; :meth:`PendingAuthorization.moved` refuses any other.

What the card must do is the record's ``action``: ``login`` (user-authentication key and PIN,
no personal data), ``ekyc`` (signing key and password, the basic 4 info) or an action a plug-in
registers (``sign``: see :class:`jpki.idp.provider.CardAction`). ``data`` is the action's own
public part (for login and eKYC the :class:`jpki.auth.store.Challenge` as a dict) shown to the
agent; ``result`` is filled on approval (the pairwise ``sub``, the granted claims, ``auth_time``,
``amr``) and holds personal data only for the claims the client was granted.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import enum
import json
from collections.abc import Mapping
from typing import Any, Final

from jpki.errors import JpkiError

__all__ = ["TRANSITIONS", "PendingAuthorization", "PendingState", "StateError"]


class PendingState(enum.StrEnum):
    """Where a pending authorization stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"


#: The moves a pending authorization may make (``resume`` takes it from the store in the
#: two end states; expiry drops it from any).
TRANSITIONS: Final[dict[PendingState, frozenset[PendingState]]] = {
    PendingState.PENDING: frozenset({PendingState.APPROVED, PendingState.REFUSED}),
    PendingState.APPROVED: frozenset(),
    PendingState.REFUSED: frozenset(),
}


class StateError(JpkiError):
    """A transition :data:`TRANSITIONS` does not allow (the authorization already finished)."""

    code = "not_pending"

    def __init__(self, current: PendingState, wanted: PendingState) -> None:
        self.state = str(current)
        super().__init__(f"the authorization is {current}, it cannot become {wanted}")


@dataclasses.dataclass(frozen=True)
class PendingAuthorization:
    """One authorization request and where it stands (see the module docstring)."""

    id: str
    client_id: str
    client_name: str
    redirect_uri: str
    state: str
    nonce: str
    code_challenge: str
    scopes: tuple[str, ...]
    claims: tuple[str, ...]
    action: str
    data: dict[str, Any]
    browser: str                   # SHA-256 (hex) of the browser's binding cookie
    created_at: _dt.datetime
    expires_at: _dt.datetime
    status: PendingState = PendingState.PENDING
    acr_values: tuple[str, ...] = ()
    ui_locales: tuple[str, ...] = ()
    params: dict[str, str] = dataclasses.field(default_factory=dict)   # action-specific request parameters
    reason: str | None = None      # REFUSED: a reason code (jpki.auth's, or cancelled / wrong-pin / …)
    message: str | None = None     # REFUSED: for the log and error_description (no personal data)
    result: dict[str, Any] | None = None   # APPROVED: sub, claims, auth_time, amr, acr

    def moved(self, to: PendingState, **changes: Any) -> PendingAuthorization:
        """This authorization in state ``to`` (with ``changes``); :class:`StateError` if the
        move is not allowed."""
        if to not in TRANSITIONS[self.status]:
            raise StateError(self.status, to)
        return dataclasses.replace(self, status=to, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes in ISO 8601). Built field by field: ``dataclasses.asdict``
        deep-copies every value and was a tenth of the provider's CPU per login (it runs at each
        store write and compare-and-set)."""
        data = {name: getattr(self, name) for name in _FIELDS}
        for name in ("data", "params", "result"):
            if data[name] is not None:
                data[name] = copy.deepcopy(data[name]) if _nested(data[name]) else dict(data[name])
        data["created_at"] = self.created_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        data["status"] = str(self.status)
        return data

    def encode(self) -> str:
        """The stored form: compact JSON text of :meth:`to_json`, keys sorted (compare-and-set
        compares this text); :meth:`from_json` reads it back."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> PendingAuthorization:
        """What :meth:`to_json` gave (the dict, or its text as :meth:`encode` writes it): a
        record this provider stored, hence trusted."""
        fields = dict(json.loads(data) if isinstance(data, str) else data)
        fields["created_at"] = _dt.datetime.fromisoformat(fields["created_at"])
        fields["expires_at"] = _dt.datetime.fromisoformat(fields["expires_at"])
        fields["status"] = PendingState(fields["status"])
        for name in ("scopes", "claims", "acr_values", "ui_locales"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(PendingAuthorization))


def _nested(value: Mapping[str, Any]) -> bool:
    """Whether a dict holds containers (then it is copied deeply, as ``asdict`` did)."""
    return any(isinstance(v, (dict, list, tuple)) for v in value.values())
