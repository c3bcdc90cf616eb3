"""SQL is composed from identifiers and parameters, never by string formatting (issue 9, item 5).

An AST check over ``replicator/``, ``triggers/`` and ``checkpoints/``: the first argument of every
``execute`` / ``executemany`` / ``executescript`` / ``copy`` call and of every ``sql.SQL(...)`` is
traced back (through local assignments in the same function) to the strings it is built from. Any
f-string, ``%`` formatting, ``str.format`` or ``+`` concatenation that puts a non-constant value into
such a string is a finding, unless the value is

* ``quote_ident(...)`` (SQLite has no ``psycopg.sql``; ``quote_ident`` doubles quotes), or a join of
  ``quote_ident(...)`` results, or a local name assigned from one of those;
* integer formatting: ``int(...)``, ``len(...)`` or a ``:d`` format spec;
* listed in :data:`ALLOWLIST` below, each entry with the reason it is safe.

psycopg's own composition (``sql.SQL(...).format(sql.Identifier(...))``, ``sql.SQL(...) + where``)
is never a finding: those are Composables, not strings.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.paths import ROOT

PACKAGES = ("replicator", "triggers", "checkpoints")
SINKS = {"execute", "executemany", "executescript", "copy"}
SAFE_CALLS = {"quote_ident", "int", "len"}

#: (file, function, interpolated expression) -> why it is safe. Keep each reason specific.
ALLOWLIST: dict[tuple[str, str, str], str] = {
    # SQLite: journal.key_predicate returns '"col" = ?' / '"col" IS ?' terms built with quote_ident,
    # values as parameters (a tuple-unpacked name the checker cannot follow).
    ("replicator/apply/lookup.py", "_current_rows", "where"): "quote_ident terms from journal.key_predicate",
    ("replicator/cutover/prepass.py", "_rows_by_key", "where"): "quote_ident terms from journal.key_predicate",
    ("replicator/inspect/verify_sqlite.py", "sqlite_by_key", "where"): "quote_ident terms from journal.key_predicate",
    ("replicator/reverse/writer.py", "Writer._delete", "where"): "quote_ident terms from journal.key_predicate",
    ("replicator/reverse/writer.py", "Writer._update", "where"): "quote_ident terms from journal.key_predicate",
    # SQLite: verify's key-range predicate and key order, quote_ident(column) terms with ? placeholders and
    # COLLATE BINARY, built by _sqlite_where / _sqlite_key_expr in the same module.
    ("replicator/inspect/verify_sqlite.py", "boundary_keys", "order"): "quote_ident terms from _sqlite_key_expr",
    ("replicator/inspect/verify_sqlite.py", "boundary_keys", "where"): "quote_ident terms and ? from _sqlite_where",
    # The demo app's own tables: t iterates the module constant TABLES (literal names, no quotes in them).
    ("replicator/demo/seed.py", "create", "t"): "constant table names",
    # PostgreSQL type modifiers: mods holds the TargetType's int precision/scale/length.
    ("replicator/values/targettype.py", "type_sql", "','.join((str(m) for m in mods))"): "ints only",
    # verify-export's scratch table: each column is quote_ident(name) + an affinity keyword looked up in
    # the constant verifier._AFFINITY_SQL (never the manifest's declared-type text).
    ("replicator/load/offline/verifier.py", "_scan_table", "defs"): "quote_ident names + constant affinity keywords",
    # ASC / DESC only: the token is popped only after sqlexpr.is_word(token, "ASC", "DESC").
    ("replicator/plan/constraints.py", "_index_key", "tokens.pop().text.upper()"): "ASC or DESC",
    # SQLite: rowid is rowid_name(table): the literal rowid/_rowid_/oid or quote_ident(alias).
    ("replicator/plan/chunkscan.py", "_chunks", "rowid"): "literal rowid name or quote_ident(alias)",
    ("replicator/plan/chunkscan.py", "first_rows", "rowid"): "literal rowid name or quote_ident(alias)",
    ("replicator/load/share.py", "ranges_of", "rowid"): "literal rowid name or quote_ident(alias)",
    # SQLite: exprs are constant templates from _EXACT with @c replaced by quote_ident(column).
    ("replicator/plan/chunkscan.py", "finish_profile", "', '.join(exprs)"): "constant templates + quote_ident",
    # The plan's own CREATE UNIQUE INDEX statement (built with sql.Identifier), re-run without UNIQUE to find
    # the two rows that kept it out (after its build failed).
    ("replicator/plan/refusals.py", "unique_collision", "stmt.sql.removeprefix('CREATE UNIQUE INDEX ')"): (
        "the planner's own statement"
    ),
    # In these branches chosen.name is one of the literals the if just tested (varchar/char/time...).
    ("replicator/plan/typemap.py", "render", "chosen.name"): "a fixed type name tested by the if",
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    function: str
    expression: str
    how: str

    def key(self) -> tuple[str, str, str]:
        return (self.file, self.function, self.expression)

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}: {self.how} interpolates {self.expression!r}"


def _is_str_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return None


def _is_count(node: ast.AST) -> bool:
    """The repeat count of a ``*``: an int constant, a name, ``len(...)`` or arithmetic on those."""
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.Name) or _call_name(node) in ("len", "int"):
        return True
    return isinstance(node, ast.BinOp) and _is_count(node.left) and _is_count(node.right)


class _Scope:
    """Assignments to local names inside one function (all of them: a name assigned twice is checked twice)."""

    def __init__(self, func: ast.AST) -> None:
        self.assigned: dict[str, list[ast.expr]] = {}
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assigned.setdefault(target.id, []).append(node.value)
            elif (
                isinstance(node, ast.AnnAssign | ast.AugAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                self.assigned.setdefault(node.target.id, []).append(node.value)


class Checker:
    def __init__(self, file: str, tree: ast.Module) -> None:
        self.file = file
        self.tree = tree
        self.findings: list[Finding] = []
        #: module-level ``NAME = <int>`` constants
        self.int_constants = {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and type(node.value.value) is int
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        }
        #: this module's functions whose every ``return`` is itself safe (``_scratch_name`` -> quote_ident)
        self.safe_calls = set(SAFE_CALLS)
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        changed = True
        while changed:
            changed = False
            for func in functions:
                if func.name in self.safe_calls:
                    continue
                returns = [n.value for n in ast.walk(func) if isinstance(n, ast.Return)]
                scope = _Scope(func)
                if returns and all(r is not None and self._safe_expr(r, scope, set()) for r in returns):
                    self.safe_calls.add(func.name)
                    changed = True

    def run(self) -> list[Finding]:
        self._visit(self.tree, "<module>", _Scope(self.tree))
        return self.findings

    def _visit(self, node: ast.AST, function: str, scope: _Scope) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name if function == "<module>" else f"{function}.{child.name}"
                self._visit(child, name, _Scope(child))
                continue
            if isinstance(child, ast.ClassDef):
                self._visit(child, child.name if function == "<module>" else f"{function}.{child.name}", scope)
                continue
            if isinstance(child, ast.Call) and child.args and self._is_sink(child):
                self._check(child.args[0], function, scope, set(), child.lineno)
            self._visit(child, function, scope)

    @staticmethod
    def _is_sink(call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in SINKS:
            return True
        # sql.SQL("...") / SQL("...")
        return (isinstance(func, ast.Attribute) and func.attr == "SQL") or (
            isinstance(func, ast.Name) and func.id == "SQL"
        )

    def _check(self, node: ast.AST, function: str, scope: _Scope, seen: set[str], line: int) -> None:
        """Follow ``node`` to the strings it is made of; report unsafe interpolation."""
        if isinstance(node, ast.Name):
            if node.id in seen:
                return
            for value in scope.assigned.get(node.id, []):
                self._check(value, function, scope, {*seen, node.id}, line)
            return
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.FormattedValue) and not self._safe_value(part, scope, seen):
                    self._report(line, function, part.value, "f-string")
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and self._stringish(node.left, scope, seen):
            values = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            for value in values:
                if not self._safe_expr(value, scope, seen):
                    self._report(line, function, value, "% formatting")
            self._check(node.left, function, scope, seen, line)
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if self._stringish(node.left, scope, seen) or self._stringish(node.right, scope, seen):
                for side in (node.left, node.right):
                    if self._stringish(side, scope, seen):
                        self._check(side, function, scope, seen, line)
                    elif not self._safe_expr(side, scope, seen):
                        self._report(line, function, side, "+ concatenation")
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            if self._stringish(node.func.value, scope, seen):
                for value in [*node.args, *(k.value for k in node.keywords)]:
                    if not self._safe_expr(value, scope, seen):
                        self._report(line, function, value, "str.format")
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
            for arg in node.args:
                self._check_join(arg, function, scope, seen, line)
            return
        if isinstance(node, ast.IfExp):
            self._check(node.body, function, scope, seen, line)
            self._check(node.orelse, function, scope, seen, line)

    def _check_join(self, node: ast.AST, function: str, scope: _Scope, seen: set[str], line: int) -> None:
        if isinstance(node, ast.GeneratorExp | ast.ListComp):
            self._check(node.elt, function, scope, seen, line)
        elif isinstance(node, ast.List | ast.Tuple):
            for elt in node.elts:
                self._check(elt, function, scope, seen, line)
        else:
            self._check(node, function, scope, seen, line)

    def _stringish(self, node: ast.AST, scope: _Scope, seen: set[str]) -> bool:
        """A str constant, an f-string, or a local name bound to one of those (best effort)."""
        if _is_str_constant(node) or isinstance(node, ast.JoinedStr):
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            return self._stringish(node.left, scope, seen) or self._stringish(node.right, scope, seen)
        if isinstance(node, ast.Name) and node.id not in seen:
            return any(self._stringish(v, scope, {*seen, node.id}) for v in scope.assigned.get(node.id, []))
        return False

    def _safe_value(self, part: ast.FormattedValue, scope: _Scope, seen: set[str]) -> bool:
        spec = part.format_spec
        if spec is not None and any(_is_str_constant(v) and str(v.value).endswith("d") for v in ast.walk(spec)):  # type: ignore[attr-defined]
            return True
        return self._safe_expr(part.value, scope, seen)

    def _safe_expr(self, node: ast.AST, scope: _Scope, seen: set[str]) -> bool:
        """quote_ident(...), int(...), len(...), constants, joins of those, local names bound to those."""
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name) and node.id in self.int_constants:
            return True
        name = _call_name(node)
        if name in self.safe_calls:
            return True
        if isinstance(node, ast.BoolOp):
            return all(self._safe_expr(v, scope, seen) for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):  # "?" * n, [one] * len(chunk)
            return any(self._safe_expr(side, scope, seen) for side in (node.left, node.right) if not _is_count(side))
        if isinstance(node, ast.List | ast.Tuple):
            return all(self._safe_expr(e, scope, seen) for e in node.elts)
        if name == "join" and isinstance(node, ast.Call):
            return all(self._safe_join_arg(arg, scope, seen) for arg in node.args)
        if isinstance(node, ast.JoinedStr):
            return all(self._safe_value(p, scope, seen) for p in node.values if isinstance(p, ast.FormattedValue))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._safe_expr(node.left, scope, seen) and self._safe_expr(node.right, scope, seen)
        if isinstance(node, ast.IfExp):
            return self._safe_expr(node.body, scope, seen) and self._safe_expr(node.orelse, scope, seen)
        if isinstance(node, ast.Name) and node.id not in seen:
            values = scope.assigned.get(node.id, [])
            return bool(values) and all(self._safe_expr(v, scope, {*seen, node.id}) for v in values)
        return False

    def _safe_join_arg(self, node: ast.AST, scope: _Scope, seen: set[str]) -> bool:
        if isinstance(node, ast.GeneratorExp | ast.ListComp):
            return self._safe_expr(node.elt, scope, seen)
        if isinstance(node, ast.List | ast.Tuple):
            return all(self._safe_expr(e, scope, seen) for e in node.elts)
        return self._safe_expr(node, scope, seen)

    def _report(self, line: int, function: str, value: ast.AST, how: str) -> None:
        self.findings.append(Finding(self.file, line, function, ast.unparse(value), how))


def findings() -> Iterator[Finding]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            yield from Checker(rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)).run()


def test_no_sql_built_by_string_formatting() -> None:
    found = [f for f in findings() if f.key() not in ALLOWLIST]
    assert not found, "SQL built by string formatting (use psycopg.sql / parameters, or quote_ident for SQLite):\n" + (
        "\n".join(str(f) for f in found)
    )


def test_allowlist_has_no_stale_entries() -> None:
    keys = {f.key() for f in findings()}
    assert [k for k in ALLOWLIST if k not in keys] == []


def _check_source(code: str) -> list[str]:
    return [f.expression for f in Checker("t.py", ast.parse(code)).run()]


def test_the_checker_flags_what_it_should() -> None:
    assert _check_source("def f(c, t):\n    c.execute(f'SELECT * FROM {t}')") == ["t"]
    assert _check_source("def f(c, v):\n    c.execute('SELECT %s' % v)") == ["v"]
    assert _check_source("def f(c, v):\n    c.execute('SELECT {}'.format(v))") == ["v"]
    assert _check_source("def f(c, v):\n    q = 'SELECT ' + v\n    c.execute(q)") == ["v"]
    assert _check_source("def f(v):\n    return sql.SQL(f'SELECT {v}')") == ["v"]
    assert _check_source("def f(c, v):\n    c.executescript(f'DROP TABLE {v}')") == ["v"]


def test_the_checker_allows_what_it_should() -> None:
    assert _check_source("def f(c, t):\n    c.execute(f'SELECT * FROM {quote_ident(t)}')") == []
    assert (
        _check_source("def f(c, cs):\n    c.execute(f'SELECT {\", \".join(quote_ident(x) for x in cs)} FROM t')") == []
    )
    assert _check_source("def f(c, n):\n    c.execute(f'PRAGMA busy_timeout = {int(n)}')") == []
    assert _check_source("def f(c, n):\n    c.execute(f'SELECT {n:d}')") == []
    assert _check_source("def f(c, t):\n    q = quote_ident(t)\n    c.execute(f'SELECT * FROM {q}')") == []
    assert (
        _check_source("def f(c, t):\n    c.execute(sql.SQL('SELECT * FROM {}').format(sql.Identifier(t)), (1,))") == []
    )
    assert _check_source("def f(c, w):\n    c.execute(sql.SQL('SELECT 1') + w)") == []
    assert _check_source("def f(c, t):\n    c.execute('SELECT * FROM t WHERE a = %s', (t,))") == []
