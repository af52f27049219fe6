"""The package's layers (GitHub issues #16, #26): every module imports on its own, the module-level import graph has
no cycle, imports go only in the allowed directions, and imports inside function bodies only defer an optional
dependency.

Every top-level package and module of spikeyolo (a *unit*: ``nn``, ``config``, ``models``, ``api``, ``errors``, ...,
and ``spikeyolo`` for the package's own ``__init__``) has a rule: :data:`MAY_IMPORT` lists the units it imports
directly, and a unit may import those and, through them, whatever they may import (the closure). Everything else is
forbidden, siblings included (evaluation does not import deploy, deploy does not import energy, nn does not import
config: nn builds from what it is given and composes no configs). Inside a unit, :data:`SUBLAYERS` keeps a part
below the rest (``data.events``, the event files and the camera catalog, imports nothing else of ``data``).

docs/architecture.md draws the same arrows (the block under "The package: layers"); the test reads them from the
page, so the picture cannot drift from the code: each arrow it draws is used by some import, and every import is
covered by its arrows. The checker itself is checked on a copy of the package with violations planted in it.

The graph is read from the source with ``ast`` (``if TYPE_CHECKING:`` blocks are left out), so it covers every
module, imported or not.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import spikeyolo

PACKAGE_DIR = Path(spikeyolo.__file__).parent
ARCHITECTURE = PACKAGE_DIR.parent / "docs" / "architecture.md"

# unit -> the units it imports directly (bottom up). A unit may import these and whatever they may import.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # the bottom: plain modules every layer may use
    "version": (),
    "errors": (),
    "structures": (),
    "io": (),
    "torchfile": ("errors",),
    "_ultralytics": ("errors",),
    "plots": ("io",),
    "losses": ("_ultralytics",),
    "config": ("io", "errors"),                 # composing Hydra configs: the edge, below models, beside nn
    # the network and the data
    "nn": ("losses",),                          # network code only: reads no files
    "data": ("_ultralytics", "io"),
    # on nn
    "conversion": ("nn",),
    "checkpoints": ("nn", "torchfile"),         # foreign checkpoint files (reference, ultralytics) onto nn's modules
    "deploy": ("conversion", "io", "torchfile"), # torchfile: reading NIR bundles back
    "energy": ("deploy", "config", "plots"),
    "evaluation": ("data", "nn", "structures"),
    "models": ("config", "conversion"),          # names -> models (config, nn, conversion)
    # the loops, the public API, the commands
    "engine": ("models", "evaluation", "checkpoints", "version", "plots"),
    "api": ("engine", "deploy"),
    "cli": ("api", "energy"),
    "spikeyolo": ("api", "version"),
}

# dotted package -> the parts of its unit it may import (besides its own modules)
SUBLAYERS: dict[str, tuple[str, ...]] = {
    "spikeyolo.data.events": (),                # .dat, boxes, representations, the camera catalog: data's bottom
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


def package_modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package (inside folders with an ``__init__.py``): dotted name -> file."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if not all((root.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts))):
            continue   # scripts beside the package data (assets/)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_imports(name: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
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
                             if f"{module}.{alias.name}" in modules)
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [item for item in found if item.target == "spikeyolo" or item.target.startswith("spikeyolo.")]


def read_imports(modules: Mapping[str, Path]) -> dict[str, list[Import]]:
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


MODULES = package_modules()
IMPORTS = read_imports(MODULES)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def unit_of(module: str) -> str:
    """The top-level unit of a dotted module: ``spikeyolo.nn.layers`` -> ``nn``; ``spikeyolo`` -> ``spikeyolo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "spikeyolo"


def units(modules: Iterable[str]) -> set[str]:
    return {unit_of(name) for name in modules}


def allowed_closure(rules: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """unit -> every unit it may import (its arrows, followed). Raises on a cycle among the rules."""
    closure: dict[str, set[str]] = {}

    def reach(unit: str, path: tuple[str, ...]) -> set[str]:
        if unit in path:
            raise AssertionError("the layer rules have a cycle: " + " -> ".join(path[path.index(unit):] + (unit,)))
        if unit not in closure:
            found: set[str] = set()
            for other in rules.get(unit, ()):
                found |= {other} | reach(other, path + (unit,))
            closure[unit] = found
        return closure[unit]

    for unit in rules:
        reach(unit, ())
    return closure


def violations(imports: Mapping[str, list[Import]], rules: Mapping[str, Iterable[str]] = MAY_IMPORT,
               sublayers: Mapping[str, Iterable[str]] = SUBLAYERS,
               defers: Mapping[tuple[str, str], str] = DEFERS_OPTIONAL) -> set[tuple[str, str, str]]:
    """Every break of the rules, as (rule, module, imported module): ``unit`` (a module whose unit has no rule),
    ``direction`` (an import its unit may not make), ``sublayer`` (a part of a unit importing the rest of it),
    ``function`` (a spikeyolo import inside a function body)."""
    closure = allowed_closure(rules)
    found: set[tuple[str, str, str]] = set()
    for name, items in imports.items():
        unit = unit_of(name)
        if unit not in rules:
            found.add(("unit", name, ""))
            continue
        for item in items:
            if item.in_function and (name, item.target) not in defers:
                found.add(("function", name, item.target))
            target = unit_of(item.target)
            if target != unit and target not in closure[unit]:
                found.add(("direction", name, item.target))
            for part, may in sublayers.items():
                if (_within(name, part) and unit_of(part) == target and not _within(item.target, part)
                        and not any(_within(item.target, other) for other in may)
                        and not _within(part, item.target)):   # a module's enclosing packages are running already
                    found.add(("sublayer", name, item.target))
    return found


def drawn_arrows(text: str) -> dict[str, tuple[str, ...]]:
    """The arrows of docs/architecture.md's layer block: lines ``unit -> a, b   what it holds`` (``-> nothing``
    for a unit that imports no other); ``cli/`` and ``api.py`` name units, ``spikeyolo`` the package itself."""
    block = text.split("<!-- layers: checked by tests/test_layers.py -->", 1)[1].split("```", 2)[1]
    arrows: dict[str, tuple[str, ...]] = {}
    for line in block.splitlines():
        match = re.match(r"^\s*(\S+?)(?:/|\.py)?\s+->\s+(nothing|[\w]+(?:, [\w]+)*)(?:\s{2,}.*)?$", line)
        if match:
            assert match[1] not in arrows, f"docs/architecture.md draws {match[1]} twice"
            arrows[match[1]] = () if match[2] == "nothing" else tuple(match[2].split(", "))
    return arrows


def unit_edges(imports: Mapping[str, list[Import]]) -> set[tuple[str, str]]:
    """(unit, imported unit) of every import between two units."""
    return {(unit_of(name), unit_of(item.target)) for name, items in imports.items() for item in items
            if unit_of(name) != unit_of(item.target)}


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


def test_every_unit_has_a_rule_and_the_rules_are_layers():
    """A rule for every top-level package and module, none for what is not there; the rules form layers (no
    cycle), and the arrows issue #26 names stay forbidden."""
    assert units(MODULES) == set(MAY_IMPORT), (f"units without a rule: {sorted(units(MODULES) - set(MAY_IMPORT))}; "
                                               f"rules without a unit: {sorted(set(MAY_IMPORT) - units(MODULES))}")
    assert all(set(targets) <= set(MAY_IMPORT) for targets in MAY_IMPORT.values())
    closure = allowed_closure(MAY_IMPORT)
    forbidden = {("nn", "config"), ("nn", "data"), ("nn", "models"), ("data", "nn"), ("evaluation", "deploy"),
                 ("evaluation", "engine"), ("conversion", "deploy"), ("deploy", "energy"), ("config", "nn"),
                 ("config", "models"), ("models", "engine"), ("engine", "cli"), ("engine", "api"), ("api", "cli"),
                 ("losses", "nn"), ("errors", "io"), ("nn", "spikeyolo"), ("engine", "spikeyolo")}
    assert not {(unit, other) for unit, other in forbidden if other in closure[unit]}
    assert {"nn", "conversion", "data", "config", "errors"} <= closure["engine"]


def test_imports_go_only_in_the_allowed_directions():
    new = {entry for entry in violations(IMPORTS) if entry[0] in ("unit", "direction", "sublayer")} - KNOWN_VIOLATIONS
    assert not new, f"imports against the layers (tests/test_layers.py MAY_IMPORT, SUBLAYERS): {sorted(new)}"


def test_function_body_imports_only_defer_optional_dependencies():
    new = {entry for entry in violations(IMPORTS) if entry[0] == "function"} - KNOWN_VIOLATIONS
    assert not new, f"spikeyolo imports inside function bodies (import at module top, or add the pair to " \
                    f"DEFERS_OPTIONAL with the optional dependency it defers): {sorted(new)}"


def test_known_violations_still_occur():
    """The list only shrinks: an entry fixed elsewhere must be taken off it."""
    gone = KNOWN_VIOLATIONS - violations(IMPORTS)
    assert not gone, f"no longer occur: remove from KNOWN_VIOLATIONS in tests/test_layers.py: {sorted(gone)}"


def test_the_architecture_page_draws_the_import_graph():
    """docs/architecture.md's arrows are the rules, each is used by an import, and they cover every import."""
    drawn = drawn_arrows(ARCHITECTURE.read_text(encoding="utf-8"))
    assert drawn == MAY_IMPORT, "docs/architecture.md's layer block differs from MAY_IMPORT: " + "; ".join(
        f"{unit}: page {drawn.get(unit)} vs test {MAY_IMPORT.get(unit)}"
        for unit in sorted(set(drawn) | set(MAY_IMPORT)) if drawn.get(unit) != MAY_IMPORT.get(unit))
    edges = unit_edges(IMPORTS)
    unused = {(unit, other) for unit, targets in drawn.items() for other in targets if (unit, other) not in edges}
    assert not unused, f"arrows the page draws that no import takes (remove them): {sorted(unused)}"
    closure = allowed_closure(drawn)
    uncovered = {(unit, other) for unit, other in edges if other not in closure.get(unit, set())}
    assert not uncovered, f"imports the page's arrows do not cover: {sorted(uncovered)}"


def _plant(root: Path, module: str, line: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")


def test_the_checker_finds_violations_planted_in_a_copy(tmp_path):
    """A copy of the package with one break of each kind planted: the checker reports exactly those."""
    copy = tmp_path / "spikeyolo"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "assets", "configs"))
    _plant(tmp_path, "spikeyolo.nn.layers", "from spikeyolo.config import compose")                   # nn -> config
    _plant(tmp_path, "spikeyolo.evaluation.coco", "import spikeyolo.deploy.fold")                     # a sibling
    _plant(tmp_path, "spikeyolo.conversion.normalize", "from spikeyolo.deploy import DEPLOY_PATHS")    # upwards
    _plant(tmp_path, "spikeyolo.data.events.boxes", "from spikeyolo.data.sources import get_source")   # sublayer
    _plant(tmp_path, "spikeyolo.energy.report", "def late():\n    from spikeyolo.energy import counting")
    (copy / "newunit.py").write_text("from spikeyolo.nn import layers\n", encoding="utf-8")           # no rule
    modules = package_modules(copy)
    planted = violations(read_imports(modules)) - violations(IMPORTS)
    assert planted == {("direction", "spikeyolo.nn.layers", "spikeyolo.config"),
                       ("direction", "spikeyolo.evaluation.coco", "spikeyolo.deploy.fold"),
                       ("direction", "spikeyolo.conversion.normalize", "spikeyolo.deploy"),
                       ("sublayer", "spikeyolo.data.events.boxes", "spikeyolo.data.sources"),
                       ("function", "spikeyolo.energy.report", "spikeyolo.energy"),
                       ("function", "spikeyolo.energy.report", "spikeyolo.energy.counting"),
                       ("unit", "spikeyolo.newunit", "")}


def test_the_checker_on_a_synthetic_graph():
    """The closure: allowed through a chain, forbidden to a sibling or upwards, and a cycle among rules refused."""
    rules = {"base": (), "low": ("base",), "mid": ("low",), "side": ("low",), "top": ("mid", "side")}
    graph = {"spikeyolo.mid.a": [Import("spikeyolo.base.x", 1, False)],         # through low: allowed
             "spikeyolo.side.b": [Import("spikeyolo.mid.a", 2, False)],          # a sibling: forbidden
             "spikeyolo.low.c": [Import("spikeyolo.top", 3, False)],             # upwards: forbidden
             "spikeyolo.top": [Import("spikeyolo.side.b", 4, True)]}             # allowed unit, in a function
    assert violations(graph, rules, {}, {}) == {("direction", "spikeyolo.side.b", "spikeyolo.mid.a"),
                                                ("direction", "spikeyolo.low.c", "spikeyolo.top"),
                                                ("function", "spikeyolo.top", "spikeyolo.side.b")}
    try:
        allowed_closure({"a": ("b",), "b": ("a",)})
    except AssertionError as error:
        assert "a -> b -> a" in str(error)
    else:
        raise AssertionError("a cycle among the rules was accepted")
    text = "<!-- layers: checked by tests/test_layers.py -->\n```\nnn/  -> losses, torchfile   network\n" \
           "errors.py  -> nothing\n```\n"
    assert drawn_arrows(text) == {"nn": ("losses", "torchfile"), "errors": ()}
