"""The import rules and the failpoint names, read from the source with ``ast`` (nothing here imports the code
it checks, except the crash matrix's lists).

Why a test: the rules are what keeps the tree readable (ARCHITECTURE.md, "Inside replicator/"), and nobody
re-reads every import of every change. Each checker is a plain function over source text, so each has a
negative control: the same function run over a planted bad source must find the problem.

* ``triggers/`` and ``checkpoints/`` never import ``replicator`` (any import, function-level included): the
  capture and the chain stand on their own, an auditor runs ``python -m checkpoints`` without our code. Of
  our packages ``checkpoints`` imports none and ``triggers`` only ``checkpoints.errors`` (the one error base)
  (:data:`MAY_IMPORT`, :data:`MAY_IMPORT_MODULES`).
* Inside ``replicator/`` the packages are layers (:data:`LAYERS`, lowest first) and every import points to
  the same layer or a lower one; an exception would be listed in :data:`ALLOWED_BACK_EDGES`, with its reason.
* Failpoints (:mod:`replicator.faults`): every name is declared once and well formed, every call names a
  declared point with a literal, every declared point is called, and the crash matrix
  (``tests/reliability/crash.py``) kills at every point and only at declared ones.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, NamedTuple

from tests.support.paths import ROOT

LAYERS: Final = (
    "core",
    "values",
    "plan",
    "state",
    "apply",
    "load",
    "stream",
    "inspect",
    "reverse",
    "cutover",
    "demo",
    "cli",
)
"""Lowest first. ``core`` is the modules directly in ``replicator/`` (errors, config, log, pg, files, faults,
progress); every other name is a package of ``replicator/``. apply/ sits under load/ because the snapshot saves
the plan and the digests the apply reads through it, and the online re-load writes with its FK parking; stream/
(the daemon's loop) is above both."""

OUR_PACKAGES: Final = frozenset({"replicator", "triggers", "checkpoints"})
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    "triggers": frozenset({"checkpoints"}),
    "checkpoints": frozenset(),
}
"""What each package below ``replicator`` may import of ours: ``checkpoints`` nothing (an auditor runs ``python -m
checkpoints`` with ``checkpoints/`` alone), ``triggers`` only the modules :data:`MAY_IMPORT_MODULES` names."""

MAY_IMPORT_MODULES: Final[dict[str, frozenset[str]]] = {"triggers": frozenset({"checkpoints.errors"})}
"""Of a package it may import, the only modules: ``triggers`` takes the one error base from ``checkpoints.errors``."""

ENTRY_MODULES: Final = {"replicator.__main__": "cli"}
"""Top-level modules that are not core: ``python -m replicator`` runs the CLI."""

ALLOWED_BACK_EDGES: Final[dict[tuple[str, str], str]] = {}
"""(importer, imported) -> the names it needs; an upward import that must be removed, not copied."""

FAILPOINT_NAME: Final = re.compile(r"[a-z]+\.[a-z]+(?:_[a-z]+)*")
"""``stage.window``: the stage that owns the window, then where in it (``apply.after_commit``)."""

SHARED_WINDOWS: Final[dict[str, str]] = {
    "snapshot.copying": "the COPY of one table, by the main process (copyrows.py) or by both (share.py)",
    "snapshot.after_genesis": "the genesis checkpoint, written by the snapshot or by the daemon's first start",
}
"""Failpoints called at more than one place: one window reached by two code paths, on purpose."""

NOT_FAILPOINT_KINDS: Final = frozenset({"random", "random-reverse"})
"""Crash-matrix kill kinds that are not failpoints (a SIGKILL after a random delay: of the daemon, of the reverse
direction in the rollback window)."""

EXERCISED_ELSEWHERE: Final[dict[str, str]] = {
    "import.after_table": "tests/cutover/test_audit.py",
    "newtable.after_plan": "tests/stream/test_worker_new_tables.py",
}
"""Failpoints the crash matrix does not kill at (not a daemon window), and the test that arms each."""


class Edge(NamedTuple):
    importer: str
    imported: str
    line: int


# --- reading the source ---------------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(package: str, root: Path = ROOT) -> dict[str, str]:
    """Dotted module name -> source, for every ``.py`` file of ``package`` (subpackages included)."""
    return {module_name(p, root): p.read_text(encoding="utf-8") for p in sorted((root / package).rglob("*.py"))}


def packages_of(root: Path = ROOT, package: str = "replicator") -> set[str]:
    return {module_name(p.parent / "__init__.py", root) for p in (root / package).rglob("__init__.py")}


def imported_names(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[str, int]]:
    """Every name an ``import`` or ``from ... import`` anywhere in ``source`` (functions, ``TYPE_CHECKING``
    blocks included) brings in, absolute (relative imports resolved against ``module``), with its line."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


# --- (a) triggers/ and checkpoints/ stand alone -----------------------------------------------------


def replicator_imports(
    source: str, module: str, of: frozenset[str] = frozenset({"replicator"})
) -> list[tuple[str, int]]:
    """The imports of ``replicator`` (or of the packages ``of``, anything under them) in ``source``; also a
    literal ``importlib.import_module("replicator...")`` / ``__import__``."""
    found = [(name, line) for name, line in imported_names(source, module) if name.split(".")[0] in of]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            target = node.args[0].value
            if called in {"import_module", "__import__"} and str(target).split(".")[0] in of:
                found.append((str(target), node.lineno))
    return found


def test_triggers_and_checkpoints_never_import_replicator() -> None:
    modules = {**sources("triggers"), **sources("checkpoints")}
    assert len(modules) > 15, sorted(modules)  # the packages were read, not an empty glob
    found = {m: hits for m, src in modules.items() if (hits := replicator_imports(src, m))}
    assert found == {}


def test_negative_control_a_planted_replicator_import_is_found() -> None:
    planted = (
        "import os\n"
        "from triggers import names\n"
        "def f():\n"
        "    from replicator.stream import worker\n"
        "    import replicator.pg as pg\n"
        "    return importlib.import_module('replicator.errors')\n"
    )
    assert replicator_imports(planted, "triggers.planted") == [
        ("replicator.stream.worker", 4),
        ("replicator.pg", 5),
        ("replicator.errors", 6),
    ]
    assert replicator_imports("from checkpoints import digest\nimport msgspec\n", "checkpoints.planted") == []


def test_below_replicator_each_package_imports_only_what_it_may() -> None:
    for package, allowed in MAY_IMPORT.items():
        modules = sources(package)
        assert modules, package
        others = OUR_PACKAGES - allowed - {package}
        found = {m: hits for m, src in modules.items() if (hits := replicator_imports(src, m, of=others))}
        assert found == {}, f"{package} may import only {sorted(allowed)} of our packages"


def test_negative_control_a_planted_import_between_the_lower_packages_is_found() -> None:
    others = OUR_PACKAGES - MAY_IMPORT["checkpoints"] - {"checkpoints"}
    planted = "from checkpoints.errors import OperatorError\nfrom triggers.errors import CaptureError\n"
    assert replicator_imports(planted, "checkpoints.planted", of=others) == [("triggers.errors.CaptureError", 2)]
    planted = "from checkpoints.errors import OperatorError\nfrom checkpoints import digest\n"
    assert outside_allowed_modules(planted, "triggers.planted", "triggers") == [("checkpoints.digest", 2)]


def outside_allowed_modules(src: str, module: str, package: str) -> list[tuple[str, int]]:
    """Imports of the packages ``package`` may import that reach past the modules it may use of them."""
    allowed = MAY_IMPORT_MODULES.get(package, frozenset())
    hits = replicator_imports(src, module, of=MAY_IMPORT[package])
    return [(name, line) for name, line in hits if not any(name == m or name.startswith(m + ".") for m in allowed)]


def test_triggers_imports_only_the_error_base_of_checkpoints() -> None:
    found = {m: hits for m, src in sources("triggers").items() if (hits := outside_allowed_modules(src, m, "triggers"))}
    assert found == {}, f"triggers may import only {sorted(MAY_IMPORT_MODULES['triggers'])} of checkpoints"


# --- (b) the layers inside replicator/ point one way ------------------------------------------------


def resolve(name: str, modules: Iterable[str]) -> str | None:
    """The module an imported name lives in: its longest prefix that is a module of ours (``from
    replicator.load.snapshot import copy_rows`` -> ``replicator.load.snapshot``)."""
    known = set(modules)
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def layer_of(module: str, packages: set[str]) -> str:
    """``core`` for ``replicator`` itself and the modules directly in it, else the package's name."""
    if module in ENTRY_MODULES:
        return ENTRY_MODULES[module]
    parts = module.split(".")
    if len(parts) > 1 and ".".join(parts[:2]) in packages:
        return parts[1]
    return "core"


def upward_imports(modules: Mapping[str, str]) -> list[Edge]:
    """Every import from a ``replicator`` module to a module in a higher layer than its own."""
    packages = {m for m, src in modules.items() if m.count(".") == 1 and _is_package(m, modules)}
    rank = {name: i for i, name in enumerate(LAYERS)}
    edges: list[Edge] = []
    for module, source in modules.items():
        for name, line in imported_names(source, module, is_package=_is_package(module, modules)):
            target = resolve(name, modules)
            if target is None or target == module:
                continue
            if rank[layer_of(target, packages)] > rank[layer_of(module, packages)]:
                edges.append(Edge(module, target, line))
    return edges


def _is_package(module: str, modules: Mapping[str, str]) -> bool:
    return module == "replicator" or any(m.startswith(module + ".") for m in modules)


def test_every_package_has_a_layer() -> None:
    packages = {p.split(".")[1] for p in packages_of() if p != "replicator"}
    assert packages == set(LAYERS) - {"core"}


#: Test folders that are not one of our packages: the shared helpers, the reliability tier (crash matrix,
#: fuzz, outages), data files, whole-app runs through real ORMs (Django, SQLAlchemy, Optuna) that cross
#: every stage, and the modules directly in ``replicator/`` (errors, config, progress, …).
TEST_FOLDERS_BESIDE_PACKAGES: Final = frozenset({"support", "reliability", "fixtures", "apps", "core"})
#: Test modules that check the whole tree rather than one package.
WHOLE_TREE_TESTS: Final = frozenset({"test_architecture.py", "test_sql_lint.py"})


def misplaced_tests(tests: Path) -> list[str]:
    """What breaks the mirror: a package without a test folder, a folder that is no package of ours, a test
    module beside the folders, a folder without ``__init__.py`` (it would import as a top-level package)."""
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    packages = (set(LAYERS) - {"core"}) | {"triggers", "checkpoints"}
    found = [f"no tests/{name}/" for name in sorted(packages - folders)]
    found += [f"tests/{name}/ is no package" for name in sorted(folders - packages - TEST_FOLDERS_BESIDE_PACKAGES)]
    found += [f"tests/{p.name}" for p in sorted(tests.glob("test_*.py")) if p.name not in WHOLE_TREE_TESTS]
    found += [
        f"tests/{name}/__init__.py"
        for name in sorted(folders - {"fixtures"})
        if not (tests / name / "__init__.py").is_file()
    ]
    return found


def test_the_test_tree_mirrors_the_packages() -> None:
    """A test lives in the folder of the package it tests."""
    assert misplaced_tests(ROOT / "tests") == []


def test_negative_control_a_misplaced_test_is_found(tmp_path: Path) -> None:
    for name in ((set(LAYERS) - {"core"}) | {"triggers", "checkpoints"}) - {"demo"}:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").touch()
    (tmp_path / "misc").mkdir()  # no package, and no __init__.py
    (tmp_path / "test_loose.py").touch()
    assert misplaced_tests(tmp_path) == [
        "no tests/demo/",
        "tests/misc/ is no package",
        "tests/test_loose.py",
        "tests/misc/__init__.py",
    ]


def test_imports_inside_replicator_point_down_the_layers() -> None:
    modules = sources("replicator")
    assert len(modules) > 50, len(modules)
    edges = upward_imports(modules)
    unexpected = [e for e in edges if (e.importer, e.imported) not in ALLOWED_BACK_EDGES]
    assert unexpected == [], "an import points up the layers (ARCHITECTURE.md, Inside replicator/)"
    stale = set(ALLOWED_BACK_EDGES) - {(e.importer, e.imported) for e in edges}
    assert stale == set(), "this back-edge is gone: remove it from ALLOWED_BACK_EDGES"


def test_negative_control_a_planted_upward_import_is_found() -> None:
    modules = {
        "replicator": '"""package"""\n',
        "replicator.errors": "class ReplicatorError(Exception): ...\n",
        "replicator.plan": "",
        "replicator.plan.pgschema": (
            "from replicator.errors import ReplicatorError\n"  # down: fine
            "from . import typemap\n"  # same layer: fine
            "def f():\n"
            "    from replicator.stream.worker import take_lock\n"  # up, inside a function
            "    from ..cutover import window\n"  # up, relative
        ),
        "replicator.plan.typemap": "from replicator.plan import pgschema\n",
        "replicator.stream": "",
        "replicator.stream.worker": "from replicator.plan import pgschema\n",
        "replicator.cutover": "",
        "replicator.cutover.window": "from replicator import errors\n",
    }
    assert upward_imports(modules) == [
        Edge("replicator.plan.pgschema", "replicator.stream.worker", 4),
        Edge("replicator.plan.pgschema", "replicator.cutover.window", 5),
    ]


def test_the_entry_point_is_the_top_layer() -> None:
    packages = {"replicator.cli", "replicator.load"}
    assert layer_of("replicator.__main__", packages) == "cli"
    assert layer_of("replicator.errors", packages) == "core"
    assert layer_of("replicator", packages) == "core"
    assert layer_of("replicator.load.snapshot", packages) == "load"


# --- (c) failpoint names -----------------------------------------------------------------------------


def declared_failpoints(faults_source: str) -> list[str]:
    """The literal tuple ``NAMES = (...)`` in faults.py, in order (duplicates kept, to be found)."""
    for node in ast.walk(ast.parse(faults_source)):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_named(t, "NAMES") for t in targets):
                assert isinstance(node.value, ast.Tuple), "faults.NAMES must stay a literal tuple"
                return [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    raise AssertionError("faults.NAMES not found")


def failpoint_calls(source: str) -> list[tuple[str | None, int]]:
    """Every call of the hook in ``source``: ``faults.point(...)`` or a ``point`` imported from
    ``replicator.faults``; the name, or None when it is not a string literal."""
    tree = ast.parse(source)
    aliases = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "replicator.faults"
        for a in n.names
        if a.name == "point"
    }
    calls: list[tuple[str | None, int]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        hook = (isinstance(func, ast.Attribute) and func.attr == "point" and _named(func.value, "faults")) or (
            isinstance(func, ast.Name) and func.id in aliases
        )
        if hook:
            arg = node.args[0] if node.args else None
            literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            calls.append((literal, node.lineno))
    return sorted(calls, key=lambda c: c[1])


def _named(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def failpoint_problems(
    declared: list[str], calls: Mapping[str, list[tuple[str | None, int]]], matrix: Iterable[str]
) -> list[str]:
    """Everything wrong between the declaration, the calls (module -> calls) and the crash matrix's kinds."""
    problems = [f"declared twice: {n}" for n in sorted({n for n in declared if declared.count(n) > 1})]
    problems += [f"malformed name: {n!r}" for n in declared if not FAILPOINT_NAME.fullmatch(n)]
    sites: dict[str, list[str]] = {}
    for module, found in calls.items():
        for name, line in found:
            if name is None:
                problems.append(f"{module}:{line}: failpoint name is not a string literal")
            elif name not in declared:
                problems.append(f"{module}:{line}: failpoint {name!r} is not declared in faults.NAMES")
            else:
                sites.setdefault(name, []).append(f"{module}:{line}")
    problems += [f"declared, never called: {n}" for n in declared if n not in sites]
    problems += [
        f"called at {len(where)} places, not listed in SHARED_WINDOWS: {n} ({', '.join(where)})"
        for n, where in sorted(sites.items())
        if len(where) > 1 and n not in SHARED_WINDOWS
    ]
    killed = set(matrix) - NOT_FAILPOINT_KINDS
    problems += [f"the crash matrix kills at an undeclared failpoint: {n}" for n in sorted(killed - set(declared))]
    problems += [
        f"the crash matrix never kills at {n} (add it, or name its test in EXERCISED_ELSEWHERE)"
        for n in declared
        if n not in killed and n not in EXERCISED_ELSEWHERE
    ]
    return problems


def _code_calls() -> dict[str, list[tuple[str | None, int]]]:
    return {m: calls for m, src in sources("replicator").items() if (calls := failpoint_calls(src))}


def test_failpoints_declared_called_and_killed_at_agree() -> None:
    from tests.reliability import crash

    declared = declared_failpoints((ROOT / "replicator" / "faults.py").read_text(encoding="utf-8"))
    calls = _code_calls()
    assert len(declared) >= 15, declared  # read from faults.py, not an empty tuple
    assert len(calls) >= 5, calls
    matrix = [*crash.ALL_KINDS, *crash.KNOWN_BUGS, crash.FINISHING]
    assert failpoint_problems(declared, calls, matrix) == []
    assert set(SHARED_WINDOWS) <= set(declared)


def test_failpoints_exercised_elsewhere_are_armed_by_their_test() -> None:
    for name, test_file in EXERCISED_ELSEWHERE.items():
        strings = [
            n.value
            for n in ast.walk(ast.parse((ROOT / test_file).read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        assert any(name in s for s in strings), f"{test_file} no longer arms {name}"


def test_negative_control_planted_failpoint_mistakes_are_found() -> None:
    declared = ["apply.after_read", "apply.after_read", "Apply-Commit", "prune.after", "import.after_table"]
    code = {
        "replicator.stream.worker": failpoint_calls(
            "from replicator import faults\n"
            "def f(name):\n"
            "    faults.point('apply.after_read')\n"
            "    faults.point('apply.afterread')\n"  # a typo: undeclared
            "    faults.point(name)\n"  # not a literal
            "    faults.point('prune.after')\n"
        ),
        "replicator.load.share": failpoint_calls(
            "from replicator.faults import point as hook\nhook('prune.after')\n"  # a second site, not shared
        ),
    }
    assert code["replicator.stream.worker"] == [
        ("apply.after_read", 3),
        ("apply.afterread", 4),
        (None, 5),
        ("prune.after", 6),
    ]
    problems = failpoint_problems(declared, code, ["apply.after_read", "apply.after_rread", "random"])
    assert problems == [
        "declared twice: apply.after_read",
        "malformed name: 'Apply-Commit'",
        "replicator.stream.worker:4: failpoint 'apply.afterread' is not declared in faults.NAMES",
        "replicator.stream.worker:5: failpoint name is not a string literal",
        "declared, never called: Apply-Commit",
        "declared, never called: import.after_table",
        "called at 2 places, not listed in SHARED_WINDOWS: prune.after "
        "(replicator.stream.worker:6, replicator.load.share:2)",
        "the crash matrix kills at an undeclared failpoint: apply.after_rread",
        "the crash matrix never kills at Apply-Commit (add it, or name its test in EXERCISED_ELSEWHERE)",
        "the crash matrix never kills at prune.after (add it, or name its test in EXERCISED_ELSEWHERE)",
    ]


# --- (d) sizes: no function over 80 lines, no module over 600 --------------------------------------------

MAX_FUNCTION_LINES: Final = 80
MAX_MODULE_LINES: Final = 600


def long_functions(source: str, module: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(module.function, lines) for each function or method longer than ``limit`` lines."""
    return [
        (f"{module}.{node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def oversized(modules: Mapping[str, str]) -> dict[str, int]:
    """Modules over :data:`MAX_MODULE_LINES` lines."""
    lines = {m: src.count("\n") for m, src in modules.items()}
    return {m: n for m, n in lines.items() if n > MAX_MODULE_LINES}


def our_sources() -> dict[str, str]:
    return {**sources("replicator"), **sources("triggers"), **sources("checkpoints")}


def test_no_function_is_over_80_lines() -> None:
    found = [hit for m, src in our_sources().items() for hit in long_functions(src, m)]
    assert found == []


def test_no_module_is_over_600_lines() -> None:
    assert oversized(our_sources()) == {}


def test_negative_control_a_long_function_and_a_big_module_are_found() -> None:
    planted = "def f():\n" + "    x = 1\n" * 85
    assert long_functions(planted, "replicator.planted") == [("replicator.planted.f", 86)]
    assert oversized({"replicator.planted": "x = 1\n" * 601, "replicator.fits": "x = 1\n" * 600}) == {
        "replicator.planted": 601
    }
