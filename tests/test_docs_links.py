"""Links in the project's Markdown point inside the repository, at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def test_relative_links_resolve_inside_the_repository():
    broken = []
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "examples").glob("*/README.md"))]
    for md in pages:
        for target in LINK.findall(md.read_text(encoding="utf-8")):
            path = (md.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{md.relative_to(REPO)}: {target}")
        if "../shared/" in md.read_text(encoding="utf-8"):  # the workplace's notes, not ours
            broken.append(f"{md.relative_to(REPO)}: ../shared/")
    assert not broken, broken
