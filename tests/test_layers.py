"""The package's layers (GitHub issue #16): every module imports on its own, the module-level import graph has no
cycle, imports go only in the allowed directions, and imports inside function bodies only defer an optional
dependency.

Layers, bottom up: the base modules (errors, io, structures, plots, the ultralytics adapter); nn; data; then
deploy, energy, conversion (on nn) and evaluation; engine; cli on top. The graph is read from the source with
``ast`` (``if TYPE_CHECKING:`` blocks are left out), so it covers every module, imported or not.

``KNOWN_VIOLATIONS`` lists what still breaks a rule in code outside the evaluation refactor; each entry names the
part of the issue that removes it. An entry that no longer occurs fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import spikeyolo

PACKAGE_DIR = Path(spikeyolo.__file__).parent

# layer -> the layers it must not import (any import, at module level or in a function)
FORBIDDEN = {
    "spikeyolo.nn": ("deploy", "energy", "conversion", "engine", "cli", "evaluation", "data"),
    "spikeyolo.data": ("nn", "deploy", "energy", "conversion", "evaluation", "engine", "cli"),
    "spikeyolo.evaluation": ("engine", "cli"),
    "spikeyolo.conversion": ("engine", "cli"),
    "spikeyolo.deploy": ("engine", "cli"),
    "spikeyolo.energy": ("engine", "cli"),
    "spikeyolo.engine": ("cli",),
    **{base: ("nn", "data", "deploy", "energy", "conversion", "evaluation", "engine", "cli")
       for base in ("spikeyolo.errors", "spikeyolo.io", "spikeyolo.structures", "spikeyolo.plots",
                    "spikeyolo._ultralytics")},
}

# (module, imported module) imports inside a function body that defer an optional dependency of the imported
# module (the extras: onnx, onnxruntime, nir, faster-coco-eval; wandb); none today: those modules defer their
# optional packages themselves, so importing them is cheap.
DEFERS_OPTIONAL: dict[tuple[str, str], str] = {}

# Breaks of the rules above still waiting for the change that removes them, each with a comment naming it:
# (rule, module, imported module). Empty: every rule holds; a new break must be fixed, not listed.
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


class Import(NamedTuple):
    target: str          # the imported module (a ``from M import name`` names M, and M.name when that is a module)
    line: int
    in_function: bool    # inside a function or lambda body (else module level, class bodies included)


def package_modules() -> dict[str, Path]:
    """Every module of the package (inside folders with an ``__init__.py``): dotted name -> file."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if not all((PACKAGE_DIR.parent.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            continue   # scripts beside the package data (assets/)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = package_modules()


def spikeyolo_imports(name: str, path: Path) -> list[Import]:
    """The spikeyolo imports of one module, outside ``if TYPE_CHECKING:`` blocks."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[:len(package) - child.level + 1] if child.level else []
                module = ".".join(base + ([child.module] if child.module else []))
                found.append(Import(module, child.lineno, nested))
                found.extend(Import(f"{module}.{alias.name}", child.lineno, nested) for alias in child.names
                             if f"{module}.{alias.name}" in MODULES)
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [item for item in found if item.target == "spikeyolo" or item.target.startswith("spikeyolo.")]


IMPORTS = {name: spikeyolo_imports(name, path) for name, path in MODULES.items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations() -> set[tuple[str, str, str]]:
    """Every break of the direction and function-body rules, as (rule, module, imported module)."""
    found = {("function", name, item.target) for name, imports in IMPORTS.items() for item in imports
             if item.in_function and (name, item.target) not in DEFERS_OPTIONAL}
    for name, imports in IMPORTS.items():
        for layer, forbidden in FORBIDDEN.items():
            if _within(name, layer):
                found |= {("direction", name, item.target) for item in imports
                          if any(_within(item.target, f"spikeyolo.{other}") for other in forbidden)}
    return found


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Each module imported first, with no spikeyolo module loaded before it (a cycle fails here when a name is
    used before its module has finished)."""
    script = (
        "import importlib, json, sys\n"
        "failures = {}\n"
        "for name in sys.argv[1:]:\n"
        "    for key in [k for k in sys.modules if k == 'spikeyolo' or k.startswith('spikeyolo.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failures[name] = f'{type(error).__name__}: {error}'\n"
        "print(json.dumps(failures))\n")
    result = subprocess.run([sys.executable, "-c", script, *MODULES], capture_output=True, text=True, timeout=600, check=False,
                            cwd=PACKAGE_DIR.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}
    assert len(MODULES) > 80 and "spikeyolo.engine.predict" in MODULES   # the walk found the package


def test_module_level_import_graph_has_no_cycle():
    """Module-level imports, with the packages a dotted import runs (``import a.b.c`` runs ``a/__init__`` and
    ``a/b/__init__``; a module's own enclosing packages are being imported already and are left out)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, imports in IMPORTS.items():
        for item in imports:
            if item.in_function:
                continue
            parts = item.target.split(".")
            for end in range(1, len(parts) + 1):
                target = ".".join(parts[:end])
                if target in MODULES and not _within(name, target):
                    graph[name].add(target)
    state: dict[str, int] = {}   # 1 on the path, 2 done
    path: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)
    # the cycle issue #16 names is gone: evaluation never reaches back into engine
    assert not any(_within(target, "spikeyolo.engine") for name in MODULES if _within(name, "spikeyolo.evaluation")
                   for target in graph[name])


def test_imports_go_only_in_the_allowed_directions():
    new = {entry for entry in _violations() if entry[0] == "direction"} - KNOWN_VIOLATIONS
    assert not new, f"imports against the layer order (nn <- deploy/energy/conversion; data; evaluation; engine; " \
                    f"cli on top): {sorted(new)}"


def test_function_body_imports_only_defer_optional_dependencies():
    new = {entry for entry in _violations() if entry[0] == "function"} - KNOWN_VIOLATIONS
    assert not new, f"spikeyolo imports inside function bodies (import at module top, or add the pair to " \
                    f"DEFERS_OPTIONAL with the optional dependency it defers): {sorted(new)}"
    # the refactored evaluation path holds none
    assert not any(_within(entry[1], area) for entry in KNOWN_VIOLATIONS
                   for area in ("spikeyolo.evaluation", "spikeyolo.engine.predict", "spikeyolo.engine.validate",
                                "spikeyolo.conversion.evaluation", "spikeyolo.cli.eval"))


def test_known_violations_still_occur():
    """The list only shrinks: an entry fixed elsewhere must be taken off it."""
    gone = KNOWN_VIOLATIONS - _violations()
    assert not gone, f"no longer occur: remove from KNOWN_VIOLATIONS in tests/test_layers.py: {sorted(gone)}"
