"""House rules that no linter checks: one JSON form for every object, a typed package, lint in CI."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("jpki", "card_emulator") for p in (REPO / package).rglob("*.py"))


def _methods(path: Path) -> list[tuple[str, ast.FunctionDef]]:
    """(class name, method) for every method defined in a class of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.name, item) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            for item in node.body if isinstance(item, ast.FunctionDef)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_to_json_is_the_one_json_form_and_returns_a_dict(path: Path) -> None:
    """``to_json()`` returns a JSON-ready dict everywhere (text is ``json.dumps`` at the edge that
    needs it), and no second name (``as_dict``, ``to_dict``) says the same thing."""
    for cls, method in _methods(path):
        where = f"{path.relative_to(REPO)}: {cls}.{method.name}"
        assert method.name not in ("as_dict", "to_dict"), f"{where}: call it to_json"
        if method.name == "to_json":
            returns = ast.unparse(method.returns) if method.returns is not None else ""
            assert returns.startswith("dict["), f"{where} returns {returns or 'nothing declared'}, not a dict"


def test_the_package_is_typed_and_the_tools_are_configured() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert (REPO / "jpki" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["jpki"]
    mypy = project["tool"]["mypy"]
    assert mypy["strict"] is True and mypy["files"] == ["jpki", "card_emulator"]
    assert not any(o.get("ignore_errors") for o in mypy.get("overrides", []))
    assert {"E", "F", "W", "I", "B", "UP", "SIM", "RUF"} <= set(project["tool"]["ruff"]["lint"]["select"])
    test_extra = " ".join(project["project"]["optional-dependencies"]["test"])
    assert "ruff" in test_extra and "mypy" in test_extra  # so .ci/setup installs them


def test_ci_lints_and_type_checks_before_the_tests() -> None:
    run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ruff, mypy, pytest_ = run.find("ruff check"), run.find("mypy"), run.find("-m pytest")
    assert -1 < ruff < pytest_ and -1 < mypy < pytest_, "ruff and mypy run before pytest"
