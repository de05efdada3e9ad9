"""Settings dataclasses of the services, to and from JSON: how a served app's configuration
goes to its worker processes (``jpki.serving.AppSpec``) and back. One place for both
directions, so that every service reads its settings with the same checks."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import UsageError

__all__ = ["settings_from_json", "settings_to_json"]

T = TypeVar("T")


def settings_to_json(settings: Any) -> dict[str, Any]:
    """A settings dataclass as a JSON-ready dict (its ``home`` path as text)."""
    data: dict[str, Any] = dataclasses.asdict(settings)
    if isinstance(data.get("home"), Path):
        data["home"] = str(data["home"])
    return data


def settings_from_json(cls: type[T], data: Mapping[str, Any] | str, *, what: str,
                       required: tuple[str, ...]) -> T:
    """``cls`` from :func:`settings_to_json`'s output (the dict, or its JSON text).

    :class:`UsageError` naming ``what`` for text that is not a JSON object, an unknown or
    missing field, or values the dataclass refuses."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise UsageError(f"bad {what} settings: not JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"bad {what} settings: not a JSON object")
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - fields
    missing = [name for name in required if name not in data]
    if unknown or missing:
        raise UsageError(f"bad {what} settings: unknown {sorted(unknown)} or no "
                         f"{' / '.join(required)}")
    values = dict(data)
    if "home" in values:
        values["home"] = Path(values["home"])
    try:
        return cls(**values)
    except TypeError as exc:
        raise UsageError(f"bad {what} settings: {exc}") from None
