"""The page language, style and pieces shared by jpki's web pages (a leaf: standard library only).

The OpenID Provider (:mod:`jpki.idp.pages`) and the local agent (:mod:`jpki.agent.pages`) must
not import each other (they meet over HTTP only: ``tests/test_layering.py``), yet they must
choose a language the same way and look like one product — and show a hash to be signed the
same way, so that a person can compare the two pages: both take these from here.

```python
choose_language("en-GB,ja;q=0.5")                   # "en"
choose_language("en", ui_locales=("ja",))           # "ja": the client's ui_locales come first
```
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["BASE_STYLE", "DEFAULT_LANGUAGE", "LANGUAGES", "choose_language", "hash_rows"]

#: The languages of jpki's pages.
LANGUAGES: Final = ("ja", "en")
#: The language when nothing asked names one of :data:`LANGUAGES` (the card is Japanese).
DEFAULT_LANGUAGE: Final = "ja"
#: Tags of ``Accept-Language`` read; a header is not a place to spend time on.
_MAX_TAGS: Final = 20
_QUALITY: Final = re.compile(r"\bq=([^;,\s]*)")

#: The CSS every page shares: the Japanese-capable font stack, buttons, the secondary button,
#: notes. Each page adds its own layout after it.
BASE_STYLE: Final = """
body{font-family:system-ui,"Hiragino Sans","Noto Sans JP",sans-serif;color:#222;line-height:1.6}
.button{display:inline-block;background:#0a5ad4;color:#fff;padding:.6rem 1.2rem;border-radius:4px;
text-decoration:none;border:0;font-size:1rem;font-family:inherit;line-height:1.4;cursor:pointer}
.secondary{background:#666}
.note{color:#555;font-size:.9rem}
"""


def _base(tag: str) -> str:
    return tag.strip().split("-")[0].lower()


def choose_language(accept_language: str | None, ui_locales: Sequence[str] = ()) -> str:
    """One of :data:`LANGUAGES`: the first of ``ui_locales`` (OpenID Connect's, the client's
    wish) that is one, else the highest-weighted of them in ``Accept-Language`` (the first
    named wins a tie; ``q=0`` means "not this one", an unreadable weight counts as 0), else :data:`DEFAULT_LANGUAGE`."""
    for tag in ui_locales:
        if _base(tag) in LANGUAGES:
            return _base(tag)
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for index, item in enumerate((accept_language or "").split(",")[:_MAX_TAGS]):
        tag, _, params = item.strip().partition(";")
        match = _QUALITY.search(params)
        try:
            q = float(match.group(1)) if match else 1.0
        except ValueError:
            q = 0.0
        if not 0.0 <= q <= 1.0:   # inf, nan, out of range: unreadable
            q = 0.0
        base = _base(tag)
        if base in LANGUAGES and q > 0 and q - index * 1e-6 > best_q:
            best, best_q = base, q - index * 1e-6
    return best


def hash_rows(digest: bytes) -> str:
    """A hash for a person to compare, as HTML: hex in groups of four digits, 16 bytes a row."""
    text = digest.hex()
    groups = [text[i:i + 4] for i in range(0, len(text), 4)]
    return "<br>".join(" ".join(groups[i:i + 8]) for i in range(0, len(groups), 8))
