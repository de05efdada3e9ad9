"""Layering rules, checked by reading the import statements (ast) of every module.

- ``card_emulator`` imports nothing from ``jpki``.
- Only ``jpki/transport/emu.py`` imports ``card_emulator``.
- The verification side (``jpki.verify``, ``jpki.revocation``, ``jpki.pki``, ``jpki.identity``,
  ``jpki.certinfo``, ``jpki.clock``, ``jpki.errors``, the relying-party modules of
  ``jpki.auth``, the OpenID Provider ``jpki.idp`` and the TSA ``jpki.tsa``) imports none of ``jpki.session``,
  ``jpki.transport``, ``jpki.apdu``, ``jpki.cli`` — neither directly nor through another jpki
  module — so that a server can verify with no card library installed.
- ``jpki.idp.testcards`` (the provider's test-card mode, which drives emulated cards) is the one
  exception in ``jpki.idp``: only ``jpki.idp.app`` imports it, inside a function (lazily, when
  that mode is on), and the scan of the provider stops at that import.
- No library module (outside ``jpki/cli`` and the ``__main__`` entry points) calls ``print(``,
  ``sys.exit(`` or ``logging.basicConfig(``.
- ``jpki.der``, the one module of hand-written DER, and ``jpki.i18n``, the page language and
  style shared by the provider's and the agent's pages (which must not import each other),
  import the standard library only (every layer may use them).
- The packages of ``jpki`` import one another without cycles; in particular ``jpki.revocation``
  (the CRL codec, the OCSP responder core) sits below ``jpki.pki`` (the CA, which builds CRLs
  with that codec, and its server, which serves both).
- One way to serve: only ``jpki.serving`` imports uvicorn; Starlette is imported only there and
  in the HTTP app modules (``APP_MODULES``), which only the CLI and the demo import.
- The local agent (``jpki.agent``, the one HTTP app that talks to a card) is on the card side:
  the verification side never reaches it; and it knows the OpenID Provider by its HTTP API only
  (no ``jpki.idp`` import), so it can face any provider that speaks that API.

Imports inside functions count too (a lazy import is still an import); so do
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jpki", "card_emulator")

VERIFY_SIDE = ("jpki.verify", "jpki.revocation", "jpki.pki", "jpki.identity", "jpki.certinfo",
               "jpki.clock", "jpki.errors", "jpki.idp", "jpki.tsa")
#: Card-driving plug-ins of verification-side packages, imported lazily by one module each.
PLUGINS = {"jpki.idp.testcards": "jpki.idp.app"}
CARD_SIDE = ("jpki.session", "jpki.transport", "jpki.apdu", "jpki.cli", "jpki.agent", "jpki.scripts")
#: Modules of a ``jpki.auth`` package that form the relying party's side (the server that checks a
#: login); the card-holder side (signing a challenge with the card) may use the session.
#: The card-holder side of jpki.auth (it drives a card); every other jpki.auth module is the
#: relying party's and must stand without any card library.
AUTH_CLIENT_NAMES = {"client"}
#: The HTTP apps (a Starlette app over a service object that knows no HTTP), run by jpki.serving.
APP_MODULES = ("jpki.pki.server", "jpki.auth.service", "jpki.idp.app", "jpki.agent.app", "jpki.tsa.app")
#: What runs the apps; no other module imports an app module (nor another app's pieces).
APP_RUNNERS = ("jpki.cli", "jpki.demo", "jpki.testing")
#: Packages of the verification side that ``jpki.revocation`` must not import: it is below them.
ABOVE_REVOCATION = ("jpki.pki", "jpki.verify", "jpki.auth", "jpki.sign", "jpki.serving")
#: Entry points allowed to print and exit.
ENTRY_POINTS = ("jpki.cli", "jpki.__main__", "card_emulator.__main__")
FORBIDDEN_CALLS = {("print",), ("sys", "exit"), ("logging", "basicConfig"), ("exit",), ("quit",),
                   ("os", "_exit")}


@dataclass(frozen=True)
class Import:
    module: str   # importing module
    target: str   # absolute name of what is imported
    line: int

    def __str__(self) -> str:
        return f"{module_path(self.module)}:{self.line}: imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> str:
    for candidate in (REPO / Path(*name.split(".")).with_suffix(".py"),
                      REPO / Path(*name.split(".")) / "__init__.py"):
        if candidate.is_file():
            return str(candidate.relative_to(REPO))
    return name


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


MODULES = all_modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
         for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports_of(name: str) -> list[Import]:
    """Every import of module ``name`` as absolute names (``from a import b`` gives a and a.b)."""
    out: list[Import] = []
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append(Import(name, base, node.lineno))
            for alias in node.names:
                if alias.name != "*":
                    out.append(Import(name, f"{base}.{alias.name}", node.lineno))
        elif isinstance(node, ast.Call):
            func = node.func
            called = (func.attr if isinstance(func, ast.Attribute) else
                      func.id if isinstance(func, ast.Name) else None)
            if called in ("import_module", "__import__") and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.append(Import(name, node.args[0].value, node.lineno))
    return out


def under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def report(offenders: list[str], rule: str) -> None:
    if offenders:
        pytest.fail(f"{rule}: {len(offenders)} offender(s)\n  " + "\n  ".join(offenders), pytrace=False)


def verify_side_modules() -> list[str]:
    mods = [m for m in MODULES if any(under(m, v) for v in VERIFY_SIDE) and m not in PLUGINS]
    auth = [m for m in MODULES if under(m, "jpki.auth")]
    if "jpki.auth" in MODULES and not _is_package("jpki.auth"):
        mods.append("jpki.auth")  # a single module: it is (also) the relying party
    else:
        mods += [m for m in auth if m.rpartition(".")[2] not in AUTH_CLIENT_NAMES]
    return sorted(set(mods))


# --------------------------------------------------------------------------- sanity of the scanner

def test_the_scanner_sees_the_tree():
    assert {"jpki.session", "jpki.apdu", "jpki.transport.emu", "jpki.cli", "card_emulator"} <= set(MODULES)
    targets = {i.target for i in imports_of("jpki.session")}
    assert {"jpki.apdu", "jpki.errors", "jpki.transport.base", "jpki.identity"} <= targets
    assert "card_emulator" in {i.target for i in imports_of("jpki.transport.emu")}
    assert {"jpki.session", "jpki.session.CardInfoSession"} <= {i.target for i in imports_of("jpki.cli.host")}


def test_the_scanner_resolves_relative_lazy_and_dynamic_imports(tmp_path, monkeypatch):
    src = textwrap.dedent("""
        from . import apdu
        from ..transport import emu as e
        def later():
            import card_emulator.card
            from .session import JpkiSession
            importlib.import_module("jpki.cli")
    """)
    monkeypatch.setitem(TREES, "jpki.pki.fake", ast.parse(src))
    monkeypatch.setitem(MODULES, "jpki.pki.fake", REPO / "jpki" / "pki" / "fake.py")
    targets = {i.target for i in imports_of("jpki.pki.fake")}
    assert {"jpki.pki.apdu", "jpki.transport.emu", "card_emulator.card", "jpki.pki.session",
            "jpki.cli"} <= targets


# --------------------------------------------------------------------------- the rules

def test_card_emulator_imports_nothing_from_jpki():
    offenders = [str(i) for m in MODULES if under(m, "card_emulator")
                 for i in imports_of(m) if under(i.target, "jpki")]
    report(offenders, "card_emulator must not import jpki (the wire bytes are the only contract)")


def test_only_the_emu_transport_imports_card_emulator():
    offenders = [str(i) for m in MODULES if under(m, "jpki") and m != "jpki.transport.emu"
                 for i in imports_of(m) if under(i.target, "card_emulator")]
    report(offenders, "only jpki/transport/emu.py may import card_emulator")


def _closure(start: str) -> dict[str, list[str]]:
    """jpki modules reachable from ``start`` by imports, with one import chain to each."""
    chains = {start: [start]}
    queue = [start]
    while queue:  # breadth first: the shortest chain to each module
        mod = queue.pop(0)
        if any(under(mod, c) for c in CARD_SIDE) or mod in PLUGINS:
            continue  # one offending chain is enough; plug-ins are checked on their own
        for imp in imports_of(mod):
            # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            parts = imp.target.split(".")
            for k in range(1, len(parts) + 1):
                target = ".".join(parts[:k])
                if target in MODULES and target not in chains and under(target, "jpki"):
                    chains[target] = chains[mod] + [f"{target} (line {imp.line} of {module_path(mod)})"]
                    queue.append(target)
    return chains


def test_the_verification_side_imports_no_card_layer():
    mods = verify_side_modules()
    assert {"jpki.pki", "jpki.identity", "jpki.certinfo", "jpki.clock", "jpki.errors"} <= set(mods)
    direct = [str(i) for m in mods for i in imports_of(m)
              if any(under(i.target, c) for c in CARD_SIDE) or under(i.target, "card_emulator")]
    report(direct, "the verification side must not import session/transport/apdu/cli")
    indirect = []
    for m in mods:
        for target, chain in _closure(m).items():
            if any(under(target, c) for c in CARD_SIDE):
                indirect.append(" -> ".join(chain))
    report(indirect, "the verification side reaches the card layers through another module")


def _in_function(name: str, target: str) -> bool:
    """Whether every import of ``target`` by module ``name`` sits inside a function."""
    found = []

    def visit(node: ast.AST, inside: bool) -> None:
        if isinstance(node, ast.ImportFrom) and node.module == target:
            found.append(inside)
        for child in ast.iter_child_nodes(node):
            visit(child, inside or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(TREES[name], False)
    return bool(found) and all(found)


def test_card_plugins_are_imported_by_one_module_lazily():
    assert set(PLUGINS) <= set(MODULES)
    assert "jpki.idp.provider" in verify_side_modules() and "jpki.idp.testcards" not in verify_side_modules()
    for plugin, importer in PLUGINS.items():
        importers = sorted({m for m in MODULES for i in imports_of(m)
                            if under(i.target, plugin) and m != plugin
                            and not under(m, "jpki.demo") and not under(m, "jpki.testing")})  # they run all
        assert importers == [importer], f"{plugin} may only be imported by {importer}, not {importers}"
        assert _in_function(importer, plugin), f"{importer} must import {plugin} inside a function (lazily)"


def test_auth_relying_party_side_is_checked():
    """Every jpki.auth module but the card-holder client is on the verification side."""
    auth = [m for m in MODULES if under(m, "jpki.auth")]
    assert auth, "jpki.auth is missing"
    checked = set(verify_side_modules())
    for m in auth:
        assert (m in checked) == (m.rpartition(".")[2] not in AUTH_CLIENT_NAMES), m


def test_the_verification_side_imports_with_no_card_library():
    """Import every verification-side module in a fresh interpreter in which the card layers,
    card_emulator and pyscard cannot be imported at all."""
    mods = [m for m in verify_side_modules()]
    blocked = [*CARD_SIDE, "card_emulator", "smartcard"]
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked for the layering test: " + name)
                return None
        sys.meta_path.insert(0, Block())
        failed = []
        for mod in {mods!r}:
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                failed.append(f"{{mod}}: {{exc}}")
        print("\\n".join(failed))
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    report([line for line in p.stdout.splitlines() if line.strip()],
           "verification-side modules that cannot be imported without the card layers")


#: Leaf modules that import the standard library only.
STDLIB_LEAVES = ("jpki.der", "jpki.i18n")


@pytest.mark.parametrize("leaf", STDLIB_LEAVES)
def test_the_standard_library_leaves_import_nothing_else(leaf):
    assert leaf in MODULES
    offenders = [str(i) for i in imports_of(leaf)
                 if i.target.partition(".")[0] not in sys.stdlib_module_names]
    report(offenders, f"{leaf} is a leaf: the standard library only")


def _call_name(func: ast.expr) -> tuple[str, ...] | None:
    if isinstance(func, ast.Name):
        return (func.id,)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return (func.value.id, func.attr)
    return None


def _main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def forbidden_calls(name: str) -> list[str]:
    """print( / sys.exit( / logging.basicConfig( calls of a module, outside an
    ``if __name__ == "__main__":`` block (which only runs when the file is a script)."""
    found = []

    def visit(node: ast.AST) -> None:
        if _main_guard(node):
            return
        if isinstance(node, ast.Call):
            called = _call_name(node.func)
            if called in FORBIDDEN_CALLS:
                found.append(f"{module_path(name)}:{node.lineno}: {'.'.join(called)}(")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(TREES[name])
    return found


#: Reviewed exceptions: (module, call). A forked child must leave with os._exit (never running
#: the parent's atexit handlers or flushing its buffers twice).
ALLOWED_CALLS = {("jpki.hashing", "os._exit(")}


def test_no_print_exit_or_logging_config_in_library_code():
    offenders = [hit for m in MODULES if not any(under(m, e) for e in ENTRY_POINTS)
                 for hit in forbidden_calls(m)
                 if (m, hit.split(": ")[-1]) not in ALLOWED_CALLS]
    report(offenders, "library code must not print, exit or configure logging")


def test_the_forbidden_call_scanner_finds_them(monkeypatch):
    src = textwrap.dedent("""
        import sys, logging
        def f():
            print("x")
            sys.exit(1)
            logging.basicConfig()
        if __name__ == "__main__":
            print("allowed")
    """)
    monkeypatch.setitem(TREES, "jpki.fake", ast.parse(src))
    monkeypatch.setitem(MODULES, "jpki.fake", REPO / "jpki" / "fake.py")
    hits = forbidden_calls("jpki.fake")
    assert [h.split(": ")[1] for h in hits] == ["print(", "sys.exit(", "logging.basicConfig("]


# --------------------------------------------------------------------------- packages and serving


def unit_of(module: str) -> str:
    """The layer a module belongs to: its package under jpki (``jpki.pki``), or the module."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, dict[str, list[Import]]]:
    """unit -> unit it imports -> the imports that make that edge (jpki modules only)."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for m in MODULES:
        if not under(m, "jpki") or m == "jpki":
            continue
        for imp in imports_of(m):
            parts = imp.target.split(".")
            known = next((".".join(parts[:k]) for k in range(len(parts), 0, -1)
                          if ".".join(parts[:k]) in MODULES), None)
            if known is None or known == "jpki" or not under(known, "jpki"):
                continue
            a, b = unit_of(m), unit_of(known)
            if a != b:
                graph.setdefault(a, {}).setdefault(b, []).append(imp)
    return graph


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    a = Import("jpki.a.x", "jpki.b.y", 1)
    b = Import("jpki.b.y", "jpki.a.x", 2)
    assert cycles({"jpki.a": {"jpki.b": [a]}, "jpki.b": {"jpki.a": [b]}, "jpki.c": {"jpki.a": [a]}}) \
        == [["jpki.a", "jpki.b"]]
    assert cycles({"jpki.a": {"jpki.b": [a]}}) == []


#: RFC 3161, one place each (docs/design.md): a TimeStampReq is built by jpki.tsa.protocol
#: (``make_query``, which the one client, jpki.tsa.client, sends) and a token's TSTInfo is read
#: by jpki.verify.timestamp (``check_token``: the client's reply checks, CMS/PDF verification,
#: ``verify_token``). Building a TSTInfo (the authority) or reading a request (``parse_request``)
#: is the TSA's own side.
RFC3161_PLACES = {"TimeStampReq": "jpki.tsa.protocol", "TSTInfo.load": "jpki.verify.timestamp"}


def rfc3161_uses(name: str) -> list[tuple[str, int]]:
    """``….TimeStampReq(…)`` calls (a request built) and ``….TSTInfo.load(…)`` calls (a token
    read) of a module."""
    found = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr == "TimeStampReq":
                found.append(("TimeStampReq", node.lineno))
            elif func.attr == "load" and isinstance(func.value, ast.Attribute) and func.value.attr == "TSTInfo":
                found.append(("TSTInfo.load", node.lineno))
    return found


def test_rfc3161_has_one_client_and_one_token_checker():
    uses = {m: rfc3161_uses(m) for m in MODULES}
    offenders = [f"{module_path(m)}:{line}: {what}(…) (only in {RFC3161_PLACES[what]})"
                 for m, hits in uses.items() for what, line in hits if RFC3161_PLACES[what] != m]
    report(offenders, "one RFC 3161 client (jpki.tsa.client over jpki.tsa.protocol) and one token "
                      "checker (jpki.verify.timestamp)")
    for what, place in RFC3161_PLACES.items():
        assert what in {w for w, _ in uses[place]}, f"the scanner no longer sees {what} in {place}"


def test_jpki_packages_import_one_another_without_cycles():
    graph = package_graph()
    assert "jpki.revocation" in graph["jpki.pki"], "the CA builds its CRLs with jpki.revocation"
    offenders = [f"{' <-> '.join(c)}: " + "; ".join(str(i) for a in c for b in c if b in graph.get(a, {})
                                                   for i in graph[a][b][:2])
                 for c in cycles(graph)]
    report(offenders, "packages that import each other (pick a direction; see docs/design.md)")


def test_the_agent_talks_to_the_provider_over_http_only():
    """jpki.agent drives the card (session, transport, the client side of jpki.auth) and reads
    the provider's pending API over HTTP: it imports nothing of jpki.idp, and jpki.idp nothing
    of it (the provider's test cards answer through jpki.auth.client, not through the agent)."""
    agent = [m for m in MODULES if under(m, "jpki.agent")]
    assert {"jpki.agent.app", "jpki.agent.service"} <= set(agent)
    offenders = [str(i) for m in agent for i in imports_of(m) if under(i.target, "jpki.idp")]
    offenders += [str(i) for m in MODULES if under(m, "jpki.idp")
                  for i in imports_of(m) if under(i.target, "jpki.agent")]
    report(offenders, "the agent and the provider meet over HTTP only")
    assert "jpki.session" in {i.target for m in agent for i in imports_of(m)}, "the agent drives the card"


def test_revocation_sits_below_the_ca_and_the_validator():
    offenders = [str(i) for m in MODULES if under(m, "jpki.revocation")
                 for i in imports_of(m) if any(under(i.target, p) for p in ABOVE_REVOCATION)]
    report(offenders, "jpki.revocation (CRL codec, OCSP core) must not import what uses it")


def test_only_the_serving_module_runs_uvicorn_and_only_apps_use_starlette():
    offenders = []
    for m in MODULES:
        for i in imports_of(m):
            if under(i.target, "uvicorn") and m != "jpki.serving":
                offenders.append(f"{i} (uvicorn: only jpki.serving)")
            elif under(i.target, "starlette") and m != "jpki.serving" and m not in APP_MODULES:
                offenders.append(f"{i} (starlette: jpki.serving and {', '.join(APP_MODULES)})")
    report(offenders, "one way to serve")


def test_app_modules_are_run_by_the_cli_and_the_demo_only():
    assert set(APP_MODULES) <= set(MODULES)
    offenders = [str(i) for m in MODULES if not any(under(m, r) for r in APP_RUNNERS)
                 for i in imports_of(m) for app in APP_MODULES
                 if under(i.target, app) and m != app]
    report(offenders, "an app module is run (jpki.serving), not imported by another module")


def test_the_serving_module_imports_no_application():
    allowed = ("jpki.serving", "jpki.errors", "jpki.clock")
    offenders = [str(i) for i in imports_of("jpki.serving")
                 if under(i.target, "jpki") and not any(under(i.target, a) for a in allowed)]
    report(offenders, "jpki.serving is shared by every app and imports none")


def test_no_test_module_imports_another():
    """Shared fixtures live in conftest.py, shared helpers in the support modules (``fixed``,
    ``auth_support``, ``sign_support``, ``idp_support``, ``cli_support``,
    ``redis_env``): a test module imports neither another test module nor conftest."""
    import ast

    offenders = []
    for path in sorted((REPO / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("test_")
                          or n.split(".")[0] == "conftest"]
    assert not offenders, offenders


def _runs_the_cli(tree: ast.AST) -> list[str]:
    """How a module runs ``jpki`` itself: click's CliRunner, ``jpki.cli.main``, ``-m jpki``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module == "click.testing":
                found.append(f"line {node.lineno}: imports click.testing")
            if node.module == "jpki.cli" and any(a.name == "main" for a in node.names):
                found.append(f"line {node.lineno}: imports jpki.cli.main")
        elif isinstance(node, ast.Import) and any(a.name == "click.testing" for a in node.names):
            found.append(f"line {node.lineno}: imports click.testing")
        elif isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            if any(words[i] == "-m" and words[i + 1] == "jpki" for i in range(len(words) - 1)):
                found.append(f"line {node.lineno}: runs -m jpki")
    return found


def test_the_tests_run_the_cli_one_way():
    """Every test runs ``jpki`` through tests/cli_support.py (the ``cli`` fixture): in process
    through ``jpki.cli.main`` or as ``python -m jpki``, one result type, the exception kept.
    (A child that runs ``main()`` from a ``-c`` script to measure itself is not a runner.)"""
    offenders = []
    for path in sorted((REPO / "tests").glob("*.py")):
        if path.name != "cli_support.py":
            offenders += [f"{path.name}: {what}"
                          for what in _runs_the_cli(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, offenders
