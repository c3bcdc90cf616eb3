"""Foreign keys and the quarantine: the descendants of a quarantined row are quarantined with it.

A row the load or the apply quarantines (``--on-bad-value quarantine``) is not in PostgreSQL. A row
whose foreign key references it would be an orphan there, although SQLite holds none: existing
mode's COPY fails on the app's enforced key, and cutover's VALIDATE fails (create mode creates the
keys ``NOT VALID``; the apply writes with them off). So such a row is quarantined as well, with the
reason ``parent <table> key <k> quarantined``, and so are the rows that reference it, transitively
(children, grandchildren, a tree's subtree).

The quarantine records each such row's parent (``parent_table``, ``parent_key``) and, for a row that
others reference, the values they reference (``refs``): the apply keeps new children of a quarantined
row out, and once the row is fixed in SQLite it releases every dependent in the same batch
(:class:`replicator.apply.writer.Writer`).

Matching. A row references a quarantined parent when its foreign-key columns, none NULL (``MATCH
SIMPLE``), equal the parent's referenced columns as SQLite holds them, or as PostgreSQL compares them
(each side converted by its column's type: ``'0A1B…'`` and ``'0a1b…'`` are one uuid). Only the
quarantined rows' values are held in memory, never a table.

Which keys are followed (:func:`with_foreign_keys`): existing mode, the foreign keys PostgreSQL has
between planned tables (the app's migrations made them: they are what fails); create mode, the ones
SQLite declares, which the load creates. One over a column the plan does not load is not followed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from replicator.plan.schemaplan import ForeignKey, SchemaPlan, TablePlan
from replicator.state.store import StateStore
from replicator.values import convert, quarantine, targettype
from replicator.values.refusal import RowRefused
from triggers.schema import Schema

Key = dict[str, Any]
"""A row's key as the quarantine records it (JSON-safe SQLite values by column)."""


# --- which foreign keys -----------------------------------------------------------------------------


def with_foreign_keys(
    plan: SchemaPlan, conn: psycopg.Connection[Any] | None, schema: Schema, state_store: StateStore | None = None
) -> SchemaPlan:
    """The plan with the foreign keys the quarantine follows, and (existing mode) parents first by them.
    ``state_store``: also the app's keys the apply parked there (they come back at cutover)."""
    if plan.mode == "existing" and conn is not None:
        fks = existing_foreign_keys(conn, plan)
        if state_store is not None:
            fks += tuple(fk for fk in parked_foreign_keys(state_store, plan) if fk not in fks)
        return msgspec.structs.replace(plan, foreign_keys=fks, order=parents_first(plan.order, fks))
    return msgspec.structs.replace(plan, foreign_keys=declared_foreign_keys(schema, plan))


def adopted(plan: SchemaPlan, conn: psycopg.Connection[Any], schema: Schema, table: str) -> SchemaPlan:
    """A table joined the plan (created in SQLite while streaming): add the foreign keys it takes part in."""
    found = with_foreign_keys(plan, conn, schema).foreign_keys
    new = tuple(fk for fk in found if table in (fk.child, fk.parent) and fk not in plan.foreign_keys)
    return msgspec.structs.replace(plan, foreign_keys=plan.foreign_keys + new)


_CATALOG = """
SELECT c.conname, cl.relname,
       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),
       pf.relname,
       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint c
JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
JOIN pg_class pf ON pf.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pf.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0 AND n.nspname = %s AND pn.nspname = %s
ORDER BY 2, 1
"""


def existing_foreign_keys(conn: psycopg.Connection[Any], plan: SchemaPlan) -> tuple[ForeignKey, ...]:
    """PostgreSQL's foreign keys between planned tables, in SQLite names."""
    by_target = {t.name: t for t in plan.tables}
    out: list[ForeignKey] = []
    for name, child_name, columns, parent_name, ref_columns in conn.execute(_CATALOG, (plan.schema, plan.schema)):
        child, parent = by_target.get(child_name), by_target.get(parent_name)
        if child is None or parent is None:
            continue
        cols, refs = _sources(child, columns), _sources(parent, ref_columns)
        if cols is not None and refs is not None:
            out.append(ForeignKey(str(name), child.source, cols, parent.source, refs))
    return tuple(out)


_IDENT = r'"(?:[^"]|"")*"|[^\s,()."]+'
_PARKED = re.compile(
    rf"FOREIGN KEY \((?P<cols>[^)]*)\) REFERENCES (?:(?:{_IDENT})\.)?(?P<table>{_IDENT})\((?P<refs>[^)]*)\)"
)


def _names(text: str) -> list[str]:
    return [m[1:-1].replace('""', '"') if m.startswith('"') else m for m in re.findall(_IDENT, text)]


def parked_foreign_keys(state_store: StateStore, plan: SchemaPlan) -> tuple[ForeignKey, ...]:
    """The app's foreign keys the apply parked (dropped until cutover: no privilege for the replica role)."""
    if not state_store.has_table("parked_foreign_keys"):
        return ()
    by_target = {t.name: t for t in plan.tables}
    out: list[ForeignKey] = []
    rows = state_store.execute(
        "SELECT table_name, constraint_name, definition FROM {schema}.parked_foreign_keys ORDER BY 1, 2"
    )
    for child_name, name, definition in rows:
        parsed = _PARKED.match(str(definition))
        child = by_target.get(str(child_name))
        parent = by_target.get(_names(parsed["table"])[0]) if parsed else None
        if parsed is None or child is None or parent is None:
            continue
        cols, refs = _sources(child, _names(parsed["cols"])), _sources(parent, _names(parsed["refs"]))
        if cols is not None and refs is not None:
            out.append(ForeignKey(str(name), child.source, cols, parent.source, refs))
    return tuple(out)


def _sources(table: TablePlan, targets: Sequence[str]) -> tuple[str, ...] | None:
    """The SQLite columns loaded into these PostgreSQL columns; None if one is not loaded."""
    by_target = {c.name: c.source for c in table.load_columns}
    found = [by_target.get(t) for t in targets]
    return None if any(f is None for f in found) else tuple(str(f) for f in found)


def declared_foreign_keys(schema: Schema, plan: SchemaPlan) -> tuple[ForeignKey, ...]:
    """The foreign keys SQLite declares between planned tables (create mode creates them after the load)."""
    planned = {t.source.lower(): t for t in plan.tables}
    tables = {t.name.lower(): t for t in schema.tables}
    out: list[ForeignKey] = []
    for table in schema.tables:
        child = planned.get(table.name.lower())
        if child is None:
            continue
        for fk in table.foreign_keys:
            parent, parent_table = planned.get(fk.ref_table.lower()), tables.get(fk.ref_table.lower())
            if parent is None or parent_table is None:
                continue
            cols = _loaded(child, fk.columns)
            refs = _loaded(parent, fk.ref_columns or parent_table.primary_key)
            if cols is not None and refs is not None and len(cols) == len(refs):
                name = f"{child.name}_{'_'.join(cols)}_fkey"
                out.append(ForeignKey(name, child.source, cols, parent.source, refs))
    return tuple(out)


def _loaded(table: TablePlan, names: Sequence[str]) -> tuple[str, ...] | None:
    by_lower = {c.source.lower(): c.source for c in table.load_columns if c.source is not None}
    found = [by_lower.get(n.lower()) for n in names]
    return None if not found or any(f is None for f in found) else tuple(str(f) for f in found)


def parents_first(order: Sequence[str], fks: Iterable[ForeignKey]) -> tuple[str, ...]:
    """``order`` changed only where a child comes before its parent (a cycle keeps its order)."""
    parents: dict[str, set[str]] = {name: set() for name in order}
    for fk in fks:
        if fk.child != fk.parent and fk.child in parents and fk.parent in parents:
            parents[fk.child].add(fk.parent)
    placed: list[str] = []
    left = list(order)
    while left:
        ready = next((n for n in left if not parents[n] - set(placed)), left[0])
        placed.append(ready)
        left.remove(ready)
    return tuple(placed)


# --- what is held --------------------------------------------------------------------------------


class Blocked(msgspec.Struct, frozen=True):
    """A row references a quarantined row through ``fk``."""

    fk: ForeignKey
    parent_key: Key
    value: tuple[Any, ...]
    """The row's foreign-key values, as SQLite holds them."""


class _Edge:
    """One foreign key resolved against the plan: where its columns sit in each side's rows."""

    __slots__ = ("child_convert", "child_pos", "fk", "parent_convert", "parent_pos", "values")

    def __init__(self, fk: ForeignKey, plan: SchemaPlan) -> None:
        child, parent = plan.table(fk.child), plan.table(fk.parent)
        self.fk = fk
        self.child_pos, child_types = _positions(child, fk.columns)
        self.parent_pos, parent_types = _positions(parent, fk.ref_columns)
        self.child_convert = convert.row_converter(fk.child, fk.columns, child_types)
        self.parent_convert = convert.row_converter(fk.parent, fk.ref_columns, parent_types)
        self.values: dict[Hashable, Key] = {}
        """``("sqlite", values)`` and ``("pg", converted values)`` of each quarantined parent → its key."""


def _positions(table: TablePlan, names: Sequence[str]) -> tuple[tuple[int, ...], list[targettype.TargetType]]:
    """Where ``names`` sit among the table's load columns (the rows of the load and the apply start with them)."""
    loaded = table.load_columns
    sources = [c.source for c in loaded]
    positions = tuple(sources.index(n) for n in names)
    return positions, [loaded[p].type for p in positions]


def _converted(conv: convert.RowConverter, values: Sequence[Any]) -> Hashable | None:
    try:
        out = conv(values)
        hash(out)
    except (RowRefused, TypeError):
        return None
    return ("pg", out)


def shown(key: Key) -> str:
    """A key as messages show it: ``id=2``, ``a='x', b=1``."""
    return ", ".join(f"{k}={v!r}" for k, v in key.items())


class Held:
    """The quarantined rows that other rows reference, per foreign key; one load or one apply writer.

    Rows are the load's and the apply's: the table's load columns first, in plan order.
    """

    def __init__(self, plan: SchemaPlan, *, track_fresh: bool = True) -> None:
        """``track_fresh``: remember what each table's pass held (:meth:`fresh`; a load, not the apply)."""
        planned = {t.source: t for t in plan.tables}
        self._into: dict[str, list[_Edge]] = {}
        self._from: dict[str, list[_Edge]] = {}
        for fk in plan.foreign_keys:
            child, parent = planned.get(fk.child), planned.get(fk.parent)
            if child is None or parent is None or _loaded(child, fk.columns) != fk.columns:
                continue  # a table or a column the plan no longer loads (skipped, dropped): nothing to compare
            if _loaded(parent, fk.ref_columns) != fk.ref_columns:
                continue
            edge = _Edge(fk, plan)
            self._into.setdefault(fk.child, []).append(edge)
            self._from.setdefault(fk.parent, []).append(edge)
        self._by_key: dict[tuple[str, str], list[tuple[_Edge, Hashable]]] = {}
        self._widths = {t.source: len(t.load_columns) for t in plan.tables}
        self._fresh: dict[str, list[tuple[_Edge, Hashable]]] | None = {} if track_fresh else None
        self.holding: set[str] = set()
        """Tables a row of which was ever held (the apply skips the bookkeeping of the others)."""

    def referenced(self, table: str) -> bool:
        """Rows of ``table`` are referenced by some followed foreign key."""
        return table in self._from

    def watching(self, table: str) -> bool:
        """Rows of ``table`` may reference a held row (a parent holds one, or the table references itself)."""
        return any(e.values or e.fk.parent == table for e in self._into.get(table, ()))

    def hooks(self, table: str) -> tuple[Any, Any]:
        """For a load of ``table``: :meth:`check` if its rows may reference a held row, :meth:`quarantined`
        if others reference its rows (each None when not: the load then pays nothing)."""
        return (self.check if self.watching(table) else None, self.quarantined if self.referenced(table) else None)

    def into(self, table: str) -> list[ForeignKey]:
        """The followed foreign keys of ``table`` (to its parents)."""
        return [e.fk for e in self._into.get(table, ())]

    def out_of(self, table: str) -> list[ForeignKey]:
        """The followed foreign keys that reference ``table``."""
        return [e.fk for e in self._from.get(table, ())]

    def check(self, table: str, row: Sequence[Any], out: Sequence[Any] | None = None) -> Blocked | None:
        """The held parent ``row`` references, if any. ``out``: the row converted (saves converting again)."""
        for edge in self._into.get(table, ()):
            if not edge.values:
                continue
            raw = tuple([row[p] for p in edge.child_pos])
            if None in raw:
                continue
            parent = edge.values.get(("sqlite", raw))
            if parent is None:
                pg: Hashable | None = ("pg", tuple([out[p] for p in edge.child_pos])) if out is not None else None
                if pg is None or not _hashable(pg):
                    pg = _converted(edge.child_convert, raw)
                parent = edge.values.get(pg) if pg is not None else None
            if parent is not None:
                return Blocked(edge.fk, parent, raw)
        return None

    def hold(self, table: str, row: Sequence[Any], key: Key) -> bool:
        """Hold a quarantined row's referenced values; True if one was not held yet."""
        new = False
        for edge in self._from.get(table, ()):
            raw = tuple([row[p] for p in edge.parent_pos])
            if None in raw:
                continue
            for form in (("sqlite", raw), _converted(edge.parent_convert, raw)):
                if form is None or edge.values.get(form) == key:
                    continue
                edge.values[form] = key
                self.holding.add(table)
                self._by_key.setdefault((table, _ident(key)), []).append((edge, form))
                if self._fresh is not None:
                    self._fresh.setdefault(table, []).append((edge, form))
                new = True
        return new

    def hold_recorded(self, table: str, key: Key, refs: Key | None) -> None:
        """Hold a row the quarantine records (its ``refs``, else its key: most keys reference the key)."""
        if table not in self._from:
            return
        values = {k: quarantine.from_json_safe(v) for k, v in (refs or key).items()}
        row: list[Any] = [None] * self._widths[table]
        for edge in self._from[table]:
            for name, p in zip(edge.fk.ref_columns, edge.parent_pos, strict=True):
                row[p] = values.get(name)
        self.hold(table, row, key)

    def release(self, table: str, key: Key) -> None:
        """Forget a row's held values (the apply re-evaluates it: fixed, deleted, or quarantined again)."""
        for edge, form in self._by_key.pop((table, _ident(key)), []):
            if edge.values.get(form) == key:
                del edge.values[form]

    def refs(self, table: str, row: Sequence[Any]) -> Key | None:
        """The row's values that foreign keys reference, to record with its quarantine entry."""
        edges = self._from.get(table)
        if not edges:
            return None
        return quarantine.json_safe_dict(
            {name: row[p] for e in edges for name, p in zip(e.fk.ref_columns, e.parent_pos, strict=True)}
        )

    def quarantined(self, table: str, row: Sequence[Any], refusal: quarantine.Refusal) -> quarantine.Refusal:
        """Record a quarantined row: its values are held, and its entry keeps them (``refs``)."""
        if table not in self._from:
            return refusal
        self.hold(table, row, refusal.key)
        return msgspec.structs.replace(refusal, refs=self.refs(table, row))

    def fresh(self, table: str) -> list[tuple[ForeignKey, tuple[Any, ...]]]:
        """The converted values held since the last call, for the table's foreign keys to itself."""
        found = self._fresh.pop(table, []) if self._fresh is not None else []
        return [(e.fk, form[1]) for e, form in found if e.fk.child == table and form[0] == "pg"]  # type: ignore[index]

    def pg_values(self, fk: ForeignKey) -> list[tuple[Any, ...]]:
        """The held values of ``fk``'s parent, converted (what PostgreSQL children would hold)."""
        for edge in self._into.get(fk.child, ()):
            if edge.fk == fk:
                return [form[1] for form in edge.values if form[0] == "pg"]  # type: ignore[index]
        return []


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _ident(key: Key) -> str:
    return json.dumps(key, sort_keys=True)


def blocked_refusal(table: str, key: dict[str, Any], blocked: Blocked) -> quarantine.Refusal:
    """The quarantine entry of a row whose parent is quarantined (its key as SQLite holds it)."""
    fk = blocked.fk
    value = blocked.value[0] if len(blocked.value) == 1 else json.dumps(list(blocked.value), default=str)
    refusal = quarantine.make(
        table, key, ", ".join(fk.columns), value, f"parent {fk.parent} key {shown(blocked.parent_key)} quarantined"
    )
    return msgspec.structs.replace(refusal, parent=fk.parent, parent_key=blocked.parent_key)


def seed(held: Held, state_store: StateStore, tables: Iterable[str] | None = None) -> Held:
    """Hold what the quarantine records (of ``tables``, or all); read in the caller's transaction."""
    if not state_store.has_table("quarantine"):
        return held
    where = sql.SQL("") if tables is None else sql.SQL(" WHERE table_name = ANY(%s)")
    params = None if tables is None else (list(tables),)
    query = state_store.query("SELECT table_name, key, refs FROM {schema}.quarantine") + where
    for table, key, refs in state_store.conn.execute(query, params):
        held.hold_recorded(str(table), key, refs)
    return held


def seeded(plan: SchemaPlan, policy: str, state_store: StateStore, reloaded: Iterable[str]) -> Held | None:
    """For a reload of some tables: the rows the quarantine records for every other table, held."""
    if policy != "quarantine" or not plan.foreign_keys:
        return None
    skip = set(reloaded)
    return seed(Held(plan), state_store, [t.source for t in plan.tables if t.source not in skip])


# --- children in PostgreSQL ---------------------------------------------------------------------


def referencing(
    conn: psycopg.Connection[Any],
    plan: SchemaPlan,
    fk: ForeignKey,
    values: Sequence[tuple[Any, ...]],
    *,
    limit: int | None = None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Keys (PostgreSQL form; ``returning``'s columns, else the plan's key) of the child rows in PostgreSQL
    whose ``fk`` columns hold one of ``values``."""
    if not values:
        return []
    child = plan.table(fk.child)
    by_source = {c.source: c.name for c in child.load_columns}
    cols = [by_source[c] for c in fk.columns]
    keys = list(returning) or [by_source[k] for k in child.key_source if k in by_source] or cols
    ident = sql.Identifier(plan.schema, child.name)
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = ANY(%s)",
            (ident.as_string(conn), cols),
        ).fetchall()
    )
    arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(types[c])) for c in cols)
    query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT * FROM unnest({})){}").format(
        sql.SQL(", ").join(map(sql.Identifier, keys)),
        ident,
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        arrays,
        sql.SQL(f" LIMIT {int(limit)}" if limit is not None else ""),
    )
    params = [[v[i] for v in values] for i in range(len(cols))]
    return [tuple(r) for r in conn.execute(query, params).fetchall()]


# --- the apply ---------------------------------------------------------------------------------------


class Follow:
    """The apply's view of the quarantine: held rows, and the rows waiting for each (their dependents).

    Read from the quarantine once per writer (the apply is its only writer while streaming) and kept
    in step by the writer's batches; dropped (read again) when a batch fails or a reload wrote it.
    """

    def __init__(self, plan: SchemaPlan, state_store: StateStore) -> None:
        self.plan = plan
        self.held = Held(plan, track_fresh=False)
        self._children: dict[tuple[str, str], dict[tuple[str, str], Key]] = {}
        self._parent: dict[tuple[str, str], tuple[str, str]] = {}
        self._waiting: set[str] = set()
        """Tables with a row waiting for a parent, or with a row others wait for (only ever grows)."""
        query = "SELECT table_name, key, refs, parent_table, parent_key FROM {schema}.quarantine"
        for table, key, refs, parent, parent_key in state_store.execute(query):
            self.held.hold_recorded(str(table), key, refs)
            if parent is not None and parent_key is not None:
                self._wait(str(table), key, str(parent), parent_key)

    def _wait(self, table: str, key: Key, parent: str, parent_key: Key) -> None:
        child, up = (table, _ident(key)), (parent, _ident(parent_key))
        self._waiting.update((table, parent))
        self._forget(child)
        self._children.setdefault(up, {})[child] = key
        self._parent[child] = up

    def _forget(self, child: tuple[str, str]) -> None:
        up = self._parent.pop(child, None)
        if up is not None:
            self._children.get(up, {}).pop(child, None)

    def involved(self, table: str) -> bool:
        """Some row of ``table`` is held or waiting, or others wait for one: a batch naming its rows must
        :meth:`release` them."""
        return table in self.held.holding or table in self._waiting

    def release(self, table: str, keys: Iterable[Key]) -> list[tuple[str, Key]]:
        """The batch re-evaluates these rows of ``table``: forget what was held for them; returns the rows
        waiting for them (to re-evaluate too: released if the row is fixed, quarantined again if not)."""
        waiting: list[tuple[str, Key]] = []
        for key in keys:
            self.held.release(table, key)
            self._forget((table, _ident(key)))
            waiting.extend((child, k) for (child, _i), k in self._children.pop((table, _ident(key)), {}).items())
        return waiting

    def block(
        self, table: str, key_of: Any, good: list[tuple[Any, Any]], refusals: list[quarantine.Refusal]
    ) -> list[tuple[Any, Any]]:
        """``good`` (row, converted) without the rows whose parent is held; theirs join ``refusals``.
        Repeated while the table references itself and a pass quarantined a row."""
        while True:
            kept: list[tuple[Any, Any]] = []
            for row, values in good:
                blocked = self.held.check(table, row, values)
                if blocked is None:
                    kept.append((row, values))
                    continue
                refusals.append(self.held.quarantined(table, row, blocked_refusal(table, key_of(row), blocked)))
            if len(kept) == len(good) or not any(fk.parent == table for fk in self.held.into(table)):
                return kept
            good = kept

    def settle(self, refusals: Iterable[quarantine.Refusal]) -> None:
        """The batch quarantines these rows: the ones waiting for a parent are listed under it."""
        for r in refusals:
            if r.parent is not None and r.parent_key is not None:
                self._wait(r.table, r.key, r.parent, r.parent_key)

    def captured(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        rows: Sequence[Sequence[Any]],
        key_columns: Any,
    ) -> dict[str, list[tuple[Any, ...]]]:
        """Child rows in PostgreSQL (their keys there, ``key_columns(child)``) that reference these rows of
        ``table``, which the batch quarantines: read before the batch deletes them, so each child is
        re-evaluated with them."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for edge in self.held._from.get(table, ()):
            returning = key_columns(edge.fk.child)
            if returning is None:
                continue
            values = []
            for row in rows:
                form = _converted(edge.parent_convert, [row[p] for p in edge.parent_pos])
                if form is not None and None not in form[1]:  # type: ignore[index]
                    values.append(form[1])  # type: ignore[index]
            found = referencing(conn, self.plan, edge.fk, values, returning=returning)
            if found:
                out.setdefault(edge.fk.child, []).extend(found)
        return out
