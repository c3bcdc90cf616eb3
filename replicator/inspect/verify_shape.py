"""How verify reads one table on both sides: its :class:`Shape` and the rows it yields.

Two readings. The **independent reading** (``shape_of(..., independent=True)``: verify, cutover's
preflight and ``certificate --live``) brings each SQLite value as ``sqlite3`` returns it and each PostgreSQL
value as psycopg returns it to one canonical form with :mod:`replicator.inspect.proof`: no converter of the
load path is called, so a conversion mistake shows as a difference instead of being repeated on both sides.

The **load-path reading** (``independent=False``: each SQLite row converted by the table's
``row_converter``, exactly what the snapshot and the apply write) remains for the digests that must equal
the ones the load keeps: cutover's pre-pass and stop point against the apply's running digests, and the
certificate's per-side records. There, with the snapshot's own normalisation
(:mod:`replicator.values.readback`), ``real`` (float4) values are rounded to float4 on the SQLite side,
``char(n)`` is compared without its padding, enums as text, and JSON columns as the documents they hold
(kind ``json``: the converted text, ``JsonText``, against psycopg's parsed value).

A source row whose key the load quarantined is left out of either reading and counted apart (``refused``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, TypeAlias

import msgspec

from checkpoints.digest import Kind
from replicator.inspect import proof
from replicator.plan import schemaplan
from replicator.plan.shape import TableShape, table_shape
from replicator.state.store import StateStore
from replicator.values import convert, quarantine, readback, refusal
from replicator.values.fastpath import Converter

FETCH_ROWS: Final = 5_000
_ORDERED_TYPES: Final = frozenset({"smallint", "integer", "bigint", "text", "varchar"})
TEXT_TYPES: Final = frozenset({"text", "varchar"})
OnRows: TypeAlias = Callable[[int], None]
"""Told the size of each batch a side fetched (progress)."""
Key: TypeAlias = tuple[Any, ...]
Bound: TypeAlias = Key | None


class Shape(TableShape, frozen=True):
    """How verify reads one table on both sides: the shared table model (:class:`TableShape`: names,
    columns, types, key) and verify's own reading options; built once from its TablePlan."""

    ordered: bool
    """Key ranges mean the same rows on both sides (integer/text key columns)."""
    independent: bool = False
    """Read for the independent comparison (:mod:`replicator.inspect.proof`), not through the load's converters."""
    quarantined: frozenset[str] = frozenset()
    """The keys the load quarantined (:func:`_quarantine_ident`): left out, counted as refused. The
    load-path reading leaves out the rows its converter refuses anyway; the set adds the rows
    quarantined because their parent is (:mod:`replicator.apply.dependents`)."""

    @property
    def kinds(self) -> list[Kind]:
        if self.independent:  # canonical rows hold only plain values
            return ["native"] * len(self.types)
        return readback.digest_kinds(self.types)


def shape_of(
    table: schemaplan.TablePlan, schema_name: str, *, computed: bool = False, independent: bool = False
) -> Shape:
    """The read shape of a planned table: ``shape_of(plan.table(name), plan.schema)``.

    ``computed``: also the columns PostgreSQL generates, read on both sides (SQLite computes its own
    value): verify compares them. Without it, the loaded columns the running digests cover (cutover's
    stop point and the certificate compare with those). ``independent``: for the comparison the load
    path cannot bias (verify, cutover's preflight, ``certificate --live``). Keyed by the plan's key; a
    key column not read leaves the table keyless (whole rows compared)."""
    table_model = table_shape(table, schema_name, computed=computed)
    key_types = [t.name for t in table_model.key_types]
    return Shape(
        **msgspec.structs.asdict(table_model),
        ordered=bool(key_types) and all(t in _ORDERED_TYPES for t in key_types),
        independent=independent,
    )


def source_rows(shape: Shape) -> Callable[[Iterable[Sequence[Any]]], Iterator[tuple[Any, ...] | None]]:
    """SQLite rows → canonical Python rows (converted as loaded, or read independently); refused rows become None."""
    if shape.independent:
        return _independent_source_rows(shape)
    convert_row = convert.row_converter(shape.source, shape.source_columns, shape.types)
    finish = readback.digest_finisher(shape.types)  # the snapshot's and the apply's normalisation
    skip, positions = shape.quarantined, shape.key_positions

    def rows(raw: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...] | None]:
        for row in raw:
            if skip and _quarantine_ident([row[p] for p in positions]) in skip:
                yield None  # a row the converter takes whose parent is quarantined (replicator.apply.dependents)
                continue
            try:
                values = convert_row(row)
            except refusal.RowRefused:
                yield None
                continue
            yield finish(values) if finish is not None else values

    return rows


def _independent_source_rows(shape: Shape) -> Callable[[Iterable[Sequence[Any]]], Iterator[tuple[Any, ...] | None]]:
    """SQLite rows → canonical rows (:func:`replicator.inspect.proof.source_row`); quarantined keys become None."""
    read = proof.source_row(shape.types)
    skip, positions = shape.quarantined, shape.key_positions

    def rows(raw: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...] | None]:
        for row in raw:
            if skip and _quarantine_ident([row[p] for p in positions]) in skip:
                yield None
                continue
            yield read(row)

    return rows


def target_rows(shape: Shape, rows: Iterable[tuple[Any, ...]]) -> Iterable[tuple[Any, ...]]:
    """PostgreSQL rows as the shape compares them: canonical (independent), or as psycopg returns them."""
    if not shape.independent:
        return rows
    return map(proof.target_row(shape.types), rows)


def _quarantine_ident(key: Sequence[Any]) -> str:
    """A raw SQLite key as the quarantine records it (``quarantine.make``'s JSON-safe values), as one string."""
    return json.dumps(list(quarantine.make("", {str(i): v for i, v in enumerate(key)}, "", None, "").key.values()))


def _quarantined(state_store: StateStore, table: schemaplan.TablePlan) -> frozenset[str]:
    """The keys of ``table`` the load quarantined (read in the caller's transaction).

    Only keyed tables: a keyless table's quarantine names rowids, which verify does not read, so its
    quarantined rows count as missing in PostgreSQL (they are)."""
    if not table.key_source:
        return frozenset()
    return quarantined_keys(state_store, [table]).get(table.source, frozenset())


def quarantined_keys(state_store: StateStore, tables: Sequence[schemaplan.TablePlan]) -> dict[str, frozenset[str]]:
    """Per keyed table, the keys the quarantine holds (as :func:`_quarantine_ident` spells them)."""
    if not state_store.has_table("quarantine"):
        return {}
    keyed = {t.source: t.key_source for t in tables if t.key_source}
    out: dict[str, set[str]] = {}
    query = "SELECT table_name, key FROM {schema}.quarantine WHERE table_name = ANY(%s)"
    for name, k in state_store.execute(query, (list(keyed),)).fetchall():
        columns = keyed[str(name)]
        if all(c in k for c in columns):
            out.setdefault(str(name), set()).add(json.dumps([k[c] for c in columns]))
    return {name: frozenset(keys) for name, keys in out.items()}


def independent_shape(state_store: StateStore, plan: schemaplan.SchemaPlan, name: str) -> Shape:
    """The shape verify compares ``name`` with: the independent reading, without the quarantined keys."""
    table = plan.table(name)
    shape = shape_of(table, plan.schema, computed=True, independent=True)
    return msgspec.structs.replace(shape, quarantined=_quarantined(state_store, table))


def key_converters(shape: Shape) -> list[Converter]:
    """Raw SQLite key values → the values rows are compared by (raise ValueRefused / proof.Unreadable)."""
    if shape.independent:
        return [proof.key_value(shape.types[p]) for p in shape.key_positions]
    return [convert.value_converter(shape.types[p]) for p in shape.key_positions]
