"""The packages' import rules and size limits (docs/design.md, "The parts"), read from
the source.

Every import statement counts, at module level or inside a function, since either
ties one package to another. Each rule is also checked against a source that breaks
it, so a parser that found no imports at all could not pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> modules it must never import (a name, or a name and everything below it)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "sml": ("store", "engine", "service", "worker", "smlrec", "bench"),
    "store": ("engine", "service", "worker", "smlrec.cli", "smlrec.app", "bench"),
    "engine": ("service", "worker", "smlrec.cli", "smlrec.app", "bench", "fastapi",
               "starlette", "uvicorn"),
    "worker": ("engine", "service", "smlrec.cli", "smlrec.app", "bench"),
    "service": ("worker", "smlrec.cli", "smlrec.app", "bench"),
}
# modules every package may use: they import nothing of the project themselves but the
# method (sml, the bottom layer: the settings check a hyper file with its reader, so a
# bad file stops start-up)
LEAVES = ("smlrec.settings", "smlrec.logs", "smlrec.background")


def imported(source: str, package: str) -> set[str]:
    """Every module a source imports, relative imports resolved inside ``package``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def breaks(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in forbidden)


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imported(path.read_text(), package)):
            if breaks(name, FORBIDDEN[package]):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == []


@pytest.mark.parametrize("leaf", LEAVES)
def test_the_settings_and_logging_modules_import_nothing_above_the_method(leaf: str) -> None:
    path = ROOT / Path(*leaf.split(".")).with_suffix(".py")
    project = ("store", "engine", "service", "worker", "smlrec", "bench")
    assert [n for n in imported(path.read_text(), "smlrec") if breaks(n, project)] == []


def test_the_rules_see_imports_inside_functions_and_relative_ones() -> None:
    source = (
        "import os\n"
        "from . import holder\n"
        "def later():\n"
        "    from worker.runner import Runner\n"
        "    import smlrec.cli\n"
    )
    names = imported(source, "service")
    assert {"os", "service.holder", "worker.runner", "smlrec.cli"} <= names
    assert [n for n in sorted(names) if breaks(n, FORBIDDEN["service"])] == [
        "smlrec.cli", "worker.runner", "worker.runner.Runner"]
    # a name that merely starts like a forbidden package is not it
    assert not breaks("workers", FORBIDDEN["service"])
    assert not breaks("smlrec.settings", FORBIDDEN["store"])


def test_the_client_library_imports_nothing_of_the_service() -> None:
    """Applications run ``smlrec.client`` beside their own code: it needs httpx, not
    the method, the store or the web layer."""
    project = ("sml", "store", "engine", "service", "worker", "smlrec", "bench")
    found = []
    for path in sorted((ROOT / "smlrec" / "client").rglob("*.py")):
        found += [f"{path.relative_to(ROOT)} imports {name}"
                  for name in sorted(imported(path.read_text(), "smlrec.client"))
                  if breaks(name, project) and not breaks(name, ("smlrec.client",))]
    assert (ROOT / "smlrec" / "client" / "__init__.py").is_file()
    assert found == []


PRODUCT = ("sml", "store", "engine", "service", "worker", "smlrec")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(source: str, name: str) -> list[str]:
    """What breaks the size limits in one source file: the file itself, its functions and
    methods (nested ones too), and a missing module docstring."""
    tree = ast.parse(source)
    found = []
    if len(source.splitlines()) > MAX_FILE_LINES:
        found.append(f"{name}: {len(source.splitlines())} lines")
    if not ast.get_docstring(tree):
        found.append(f"{name}: no module docstring")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_product_file_or_function_is_too_long() -> None:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += oversized(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_size_rule_sees_long_functions_methods_and_files() -> None:
    body = "".join(f"    x{n} = {n}\n" for n in range(MAX_FUNCTION_LINES))
    source = f'"""Doc."""\n\nclass A:\n    async def long(self):\n{body}'.replace(
        "\n    x", "\n        x")
    assert oversized(source, "m.py") == [f"m.py:4 long: {MAX_FUNCTION_LINES + 1} lines"]
    assert oversized("x = 1\n" * (MAX_FILE_LINES + 1), "f.py") == [
        f"f.py: {MAX_FILE_LINES + 1} lines", "f.py: no module docstring"]
    assert oversized('"""Doc."""\n', "ok.py") == []
