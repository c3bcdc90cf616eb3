"""The findings of ``replicator analyze``: each check reads the report and says what will bite.

One small function per concern, each returning ``Finding``s with a stable ``code``, the table and
column, a message with the measured numbers, and a one-line hint. The checks only read the report
(pure functions), so they are tested on real files through ``analyze`` and cost nothing to run.
Where a check cites a trap (d1..d21) or a tool's issue, that is the reason it exists: see
shared/research/anchors-mission.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from replicator.plan import sqlexpr
from replicator.plan.analyze_report import SEVERITIES, ColumnReport, Finding, Report, TableReport
from replicator.plan.profile import TEMPORAL_FORMATS
from triggers.schema import Affinity, Generated, Index
from triggers.source import NETWORK_FILESYSTEMS

#: PostgreSQL keeps NAMEDATALEN - 1 bytes of an identifier and silently drops the rest.
PG_MAX_IDENTIFIER_BYTES = 63
_NUMERIC_WORDS = ("NUMERIC", "DECIMAL", "NUMBER", "MONEY")


def findings(report: Report) -> tuple[Finding, ...]:
    """Every finding, errors first, then by table and column (a stable order for diffs and tests)."""
    found = [*_source_checks(report), *_schema_checks(report), *_identifier_checks(report)]
    for table in report.tables:
        found.extend(_table_checks(table))
        for column in table.columns:
            found.extend(_column_checks(table, column))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return tuple(sorted(found, key=lambda f: (rank[f.severity], f.table or "", f.column or "", f.code)))


def _source_checks(report: Report) -> Iterator[Finding]:
    info = report.source
    if info.filesystem in NETWORK_FILESYSTEMS:
        yield Finding(
            "error",
            "network_filesystem",
            f"the source is on a network filesystem ({info.filesystem}): SQLite locking and WAL are unreliable there",
            hint="run replicator on the host that has the file on a local disk",
        )
    if info.journal_mode != "wal":
        yield Finding(
            "warning",
            "not_wal",
            f"journal mode is {info.journal_mode}: while replicator reads (snapshot, journal polls) the app "
            "cannot commit, and long reads make its writes wait or fail with 'database is locked'",
            hint="switch once to WAL: sqlite3 FILE 'PRAGMA journal_mode=WAL' (persistent; apps need no change)",
        )
    yield _deferred_transactions(report)
    if report.capture_installed:
        yield Finding(
            "info",
            "capture_installed",
            "replicator's capture triggers are already installed in this file",
            hint="`replicator status` shows the migration in progress",
        )


def _deferred_transactions(report: Report) -> Finding:
    """Apps that begin with a deferred ``BEGIN`` fail when another connection commits between their read
    and their write; the daemon commits too (journal pruning, only while the app is quiet), and so does
    the cutover's freeze. Django's default is deferred; Django 5.1+ has ``transaction_mode``."""
    django = any(t.name == "django_migrations" for t in report.tables)
    if django:
        return Finding(
            "warning",
            "deferred_transactions",
            "a Django app: Django begins transactions with a deferred BEGIN, which fails with 'database is locked' "
            "when any other connection commits between its read and its write (a second worker, cron, the tool)",
            hint='set "OPTIONS": {"transaction_mode": "IMMEDIATE"} in DATABASES (Django 5.1+); the daemon writes '
            "to the file only while the app is quiet (apply.prune_idle_s)",
        )
    return Finding(
        "info",
        "deferred_transactions",
        "apps whose transactions read before they write with a deferred BEGIN (Python's sqlite3 and many ORMs by "
        "default) fail with 'database is locked' when another connection commits in between",
        hint="prefer BEGIN IMMEDIATE for transactions that write; the daemon writes to the file only while the app "
        "is quiet (apply.prune_idle_s)",
    )


def _schema_checks(report: Report) -> Iterator[Finding]:
    for name in report.virtual_tables:
        yield Finding(
            "warning",
            "virtual_table",
            f"virtual table {name!r} cannot carry triggers (FTS, R*Tree...): its rows are neither copied nor captured",
            hint="rebuild it on PostgreSQL from its content table (e.g. a tsvector column for FTS)",
            table=name,
        )
    if report.views:
        yield Finding(
            "info",
            "views",
            f"{len(report.views)} view(s) ({_names(report.views)}): views hold no data and are not copied",
            hint="recreate them on PostgreSQL; SQLite view SQL often needs edits (e.g. || instead of +)",
        )
    with_triggers = [t for t in report.tables if t.triggers]
    if with_triggers:
        count = sum(len(t.triggers) for t in with_triggers)
        yield Finding(
            "info",
            "app_triggers",
            f"{count} trigger(s) of the app's own on {len(with_triggers)} table(s)"
            f" ({_names([t.name for t in with_triggers])}): the rows they write are captured like any other change;"
            " they are not recreated on PostgreSQL",
            hint="port them to PostgreSQL before cutover if the app still needs them there",
        )
    for name in report.self_references:
        yield Finding(
            "info",
            "fk_self_reference",
            f"table {name!r} references itself (a tree or a chain): it loads in one pass and its foreign keys"
            " are added after the load, so the order of its rows does not matter",
            hint="nothing to do; rows whose parent row is missing are counted in fk_orphans like any other",
            table=name,
        )
    for cycle in report.fk_cycles:
        yield Finding(
            "info",
            "fk_cycle",
            f"tables {_names(cycle)} reference each other: they load in name order, with foreign keys added after",
            hint="nothing to do unless you load the tables yourself",
        )


def _pg_name(name: str) -> str:
    """The identifier PostgreSQL keeps: at most 63 bytes, cut on a character boundary."""
    return name.encode()[:PG_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


def _collisions(names: list[str]) -> Iterator[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_pg_name(name), []).append(name)
    for kept, members in groups.items():
        if len(members) > 1:
            yield kept, members


def _identifier_checks(report: Report) -> Iterator[Finding]:
    """PostgreSQL truncates long names (pgloader#353): two names cut to the same 63 bytes collide.

    Tables and columns only: the schema translation gives long index names a hash suffix.
    """
    scopes: list[tuple[str | None, list[str]]] = [(None, [t.name for t in report.tables])]
    scopes += [(t.name, [c.name for c in t.columns]) for t in report.tables]
    for table, names in scopes:
        for kept, members in _collisions(names):
            yield Finding(
                "error",
                "identifier_collision",
                f"{_names(members)} are the same name once PostgreSQL truncates them to {kept!r}",
                hint="rename one in SQLite, or map it to a shorter name in the schema translation",
                table=table,
            )
        for name in names:
            if _pg_name(name) != name:
                yield Finding(
                    "warning",
                    "identifier_truncated",
                    f"{name!r} is longer than {PG_MAX_IDENTIFIER_BYTES} bytes; PostgreSQL keeps {_pg_name(name)!r}",
                    hint="queries that spell the full name still work (PostgreSQL truncates them the same way)",
                    table=table,
                    column=name if table else None,
                )


def _table_checks(table: TableReport) -> Iterator[Finding]:
    t = table.name
    if not table.primary_key:
        yield Finding(
            "error",
            "no_primary_key",
            f"table {t!r} has no primary key: captured changes cannot be addressed to a row"
            " (its rowid is renumbered by VACUUM)",
            hint=f'add a primary key, or set [capture.tables] "{t}" = "snapshot-only" (or "rowid")',
            table=t,
        )
    if table.null_key_rows:
        yield Finding(
            "error",
            "null_primary_key",
            f"{table.null_key_rows} row(s) of {t!r} have NULL in the primary key ({', '.join(table.primary_key)}):"
            " PostgreSQL cannot create that key",
            hint="give those rows key values or delete them",
            table=t,
        )
    generated = [c.name for c in table.columns if c.generated is not Generated.NO]
    if generated:
        yield Finding(
            "info",
            "generated_columns",
            f"{t!r} has generated column(s) {_names(generated)}: PostgreSQL computes one only when its "
            "expression is proved to give SQLite's value (a short allow-list); any other is a plain column "
            "holding SQLite's value, loaded by the snapshot and kept current by the apply. verify compares both",
            hint="`replicator schema --print` shows which: GENERATED ALWAYS AS ... STORED, or a warning naming "
            "what is not proved",
            table=t,
        )
    yield from _foreign_key_checks(table)
    for index in table.indexes:
        if index.unique:
            yield from _unique_checks(table, index)


#: What SQLite's collations treat as one value that PostgreSQL's (deterministic) equality keeps apart.
_FOLDED_BY = {"NOCASE": "'a' and 'A' (ASCII case)", "RTRIM": "'a' and 'a ' (trailing spaces)"}


def _unique_checks(table: TableReport, index: Index) -> Iterator[Finding]:
    """UNIQUE indexes whose equality differs between SQLite and PostgreSQL. Where PostgreSQL is coarser
    (an expression, a date-time conversion) two rows SQLite holds cannot both be applied: the apply
    stops naming both. Where it is finer (NOCASE, RTRIM) PostgreSQL accepts what SQLite refused."""
    t, name = table.name, index.name
    what = "primary key" if index.origin == "pk" else f"UNIQUE index {name!r}"
    if None in index.columns:
        terms = _index_terms(index)
        folds = any(w in terms.upper() for w in ("LOWER(", "UPPER("))
        yield Finding(
            "warning",
            "unique_expression",
            f"{what} is on {terms or 'an expression'}: PostgreSQL evaluates it by its own rules, so rows SQLite"
            " keeps distinct may be equal there"
            + (
                " (lower()/upper(): replicator builds it on SQLite's ASCII-only folding, so this concerns only an index"
                " the app's own migration created in PostgreSQL, whose lower()/upper() fold every letter: 'É' and 'é')"
                if folds
                else ""
            ),
            hint="check that no two rows collide as PostgreSQL computes it; if two do, the apply stops naming both"
            " (it never drops one): make them distinct in SQLite",
            table=t,
        )
    columns = {c.name: c for c in table.columns}
    for position, col_name in enumerate(index.columns):
        col = columns.get(col_name or "")
        if col is None:
            continue
        if _is_temporal(col) and col.storage.get("text", 0):
            yield Finding(
                "warning",
                "unique_datetime_text",
                f"{what} includes {col_name!r}, date-times stored as text: spellings of one instant"
                " ('2024-05-01 10:00:00', '2024-05-01T10:00:00') are distinct in SQLite but one timestamp in"
                " PostgreSQL",
                hint="keep one spelling in the app (if two meet, the apply stops naming both rows), or keep the"
                f" column as text: {_override(table, col)} type = 'text'",
                table=t,
                column=col_name,
            )
        collation = index.collations[position].upper() if position < len(index.collations) else "BINARY"
        if collation in _FOLDED_BY:
            yield Finding(
                "warning",
                "unique_collation",
                f"{what} compares {col_name!r} with COLLATE {collation}: SQLite treats {_FOLDED_BY[collation]} as"
                " one value, PostgreSQL's index does not, so after cutover it accepts rows SQLite refused",
                hint="enforce it in PostgreSQL after cutover, e.g. a unique index on lower(column) or a"
                " nondeterministic collation",
                table=t,
                column=col_name,
            )


def _index_terms(index: Index) -> str:
    """The key terms of a CREATE INDEX statement as written, or '' when they cannot be read."""
    if not index.sql:
        return ""
    try:
        keys = sqlexpr.parse_create_index(index.sql).keys
    except sqlexpr.Untranslatable:
        return ""
    return ", ".join(_spelled(term) for term in keys)


def _spelled(tokens: Sequence[sqlexpr.Token]) -> str:
    """Tokens as SQL text: ``lower(name)``, ``a || b``."""
    out = ""
    for i, token in enumerate(tokens):
        glued = token.text in (")", ",") or (i > 0 and tokens[i - 1].text == "(")
        call = token.text == "(" and i > 0 and tokens[i - 1].kind in ("word", "ident")
        out += ("" if i == 0 or glued or call else " ") + token.text
    return out


def _foreign_key_checks(table: TableReport) -> Iterator[Finding]:
    for fk in table.foreign_keys:
        ref = f"{fk.ref_table}({', '.join(fk.ref_columns)})"
        where = f"{table.name}({', '.join(fk.columns)}) → {ref}"
        if not fk.parent_exists:
            yield Finding(
                "error",
                "fk_missing_parent",
                f"foreign key {where} names a table that does not exist",
                hint="drop the constraint or create the parent table",
                table=table.name,
            )
        elif not fk.parent_key_unique:
            yield Finding(
                "error",
                "fk_parent_not_unique",
                f"foreign key {where}: the parent columns are not a primary key or unique, which PostgreSQL requires",
                hint="add a UNIQUE index on the parent columns, or drop the constraint",
                table=table.name,
            )
        elif fk.orphan_rows:
            yield Finding(
                "error",
                "fk_orphans",
                f"{fk.orphan_rows} row(s) of {table.name!r} break foreign key {where}"
                " (written while the app had foreign_keys off)",
                hint="fix or delete those rows; PostgreSQL cannot validate the constraint while they exist",
                table=table.name,
            )


def _column_checks(table: TableReport, col: ColumnReport) -> Iterator[Finding]:
    yield from _text_encoding_checks(table, col)
    yield from _storage_checks(table, col)
    yield from _temporal_checks(table, col)
    yield from _boolean_checks(table, col)


_BAD_ENCODINGS = (
    (
        "nul_text",
        "nul_in_text",
        "value(s) contain a NUL character, which PostgreSQL text cannot hold",
        "strip_nul = true in {override} to drop the NULs",
    ),
    (
        "invalid_utf8",
        "invalid_utf8",
        "text value(s) are not valid UTF-8; PostgreSQL refuses them",
        "replace_bad_utf8 = true in {override}",
    ),
)
"""Text PostgreSQL refuses, each with the type override's switch that repairs it: (the format counted, the
finding's code, what the values hold, the setting)."""


def _text_encoding_checks(table: TableReport, col: ColumnReport) -> Iterator[Finding]:
    override = _override(table, col)
    for counted, code, holds, setting in _BAD_ENCODINGS:
        if col.formats.get(counted):
            yield Finding(
                "error",
                code,
                f"{col.formats[counted]} {holds}",
                hint=f"fix those rows, or set {setting.format(override=override)}",
                table=table.name,
                column=col.name,
            )


def _declared_numeric(col: ColumnReport) -> bool:
    upper = col.declared_type.upper()
    return col.affinity in (Affinity.INTEGER, Affinity.REAL) or any(w in upper for w in _NUMERIC_WORDS)


def _storage_checks(table: TableReport, col: ColumnReport) -> Iterator[Finding]:
    """Values whose storage class contradicts the declared type (trap d9; pgloader#1622, #1250)."""
    s = col.storage
    where = {"table": table.name, "column": col.name}
    blobs, texts = s.get("blob", 0), s.get("text", 0)
    if blobs and col.affinity is not Affinity.BLOB:
        yield Finding(
            "warning",
            "blob_in_typed_column",
            f"{blobs} BLOB value(s) in a column declared {col.declared_type or '(no type)'} ({_histogram(s)})",
            hint=f"they need a bytea column, or a decision to decode them as text: set {_override(table, col)} type",
            **where,
        )
    if texts and col.affinity is Affinity.BLOB and col.declared_type.strip():
        yield Finding(
            "warning",
            "text_in_blob_column",
            f"{texts} TEXT value(s) in a column declared {col.declared_type} ({_histogram(s)}{_text_formats(col)})",
            hint=f"bytea stores them as their UTF-8 bytes; set {_override(table, col)} type = 'text' to keep text",
            **where,
        )
    non_numeric = texts - col.formats.get("decimal_text", 0)
    if non_numeric > 0 and _declared_numeric(col):
        yield Finding(
            "warning",
            "text_in_numeric_column",
            f"{non_numeric} non-numeric text value(s) in a column declared {col.declared_type}"
            f" ({_histogram(s)}{_text_formats(col)})",
            hint=f"fix those rows, or set {_override(table, col)} type = 'text' (or on_bad_value = 'quarantine')",
            **where,
        )
    reals = s.get("real", 0)
    if reals and any(w in col.declared_type.upper() for w in _NUMERIC_WORDS):
        yield Finding(
            "info",
            "decimal_as_real",
            f"{reals} value(s) of a column declared {col.declared_type} are binary doubles"
            " (0.99 is 0.98999999999999999…)",
            hint="they are converted through the shortest decimal that reads back the same double",
            **where,
        )


def _is_temporal(col: ColumnReport) -> bool:
    """Declared as a date or an instant (DATE, DATETIME, TIMESTAMP; not TIME), or mostly date-like text."""
    upper = col.declared_type.upper()
    if "DATE" in upper or "TIMESTAMP" in upper:
        return True
    text_temporal = sum(col.formats.get(f, 0) for f in TEMPORAL_FORMATS if not f.startswith("unix"))
    return text_temporal * 2 > _non_null(col)


def _temporal_checks(table: TableReport, col: ColumnReport) -> Iterator[Finding]:
    """Epoch integers and text forms mixed in one column (pgloader#1314: ms epochs read as years)."""
    if not _is_temporal(col) or not _non_null(col):
        return
    where = {"table": table.name, "column": col.name}
    present = {f: col.formats[f] for f in TEMPORAL_FORMATS if col.formats.get(f)}
    other = _non_null(col) - sum(present.values())
    if other > 0:
        yield Finding(
            "warning",
            "unrecognised_datetime",
            f"{other} of {_non_null(col)} value(s) match no date/time format ({_histogram(col.storage)};"
            f" recognised: {_histogram(present) or 'none'})",
            hint=f"set {_override(table, col)} type and format, or fix those rows",
            **where,
        )
    if len(present) > 1:
        yield Finding(
            "warning",
            "mixed_datetime_formats",
            f"one column, several date/time formats: {_histogram(present)}",
            hint="each value is converted by its own format; check that all of them mean UTC",
            **where,
        )


def _boolean_checks(table: TableReport, col: ColumnReport) -> Iterator[Finding]:
    if "BOOL" not in col.declared_type.upper() or not _non_null(col):
        return
    recognised = sum(col.formats.get(f, 0) for f in ("bool01", "bool_text", "bool01_text"))
    if recognised < _non_null(col):
        yield Finding(
            "warning",
            "unrecognised_boolean",
            f"{_non_null(col) - recognised} of {_non_null(col)} value(s) of a {col.declared_type} column are not"
            f" 0/1, '0'/'1' or t/f/true/false/yes/no ({_histogram(col.storage)}{_text_formats(col)})",
            hint=f"fix those rows, or set {_override(table, col)} type = 'text' or 'smallint'",
            table=table.name,
            column=col.name,
        )


def _override(table: TableReport, col: ColumnReport) -> str:
    """The config section that overrides this column's type (see replicator.example.toml)."""
    return f'[types."{table.name}"."{col.name}"]'


def _text_formats(col: ColumnReport) -> str:
    """'; text formats: bool_text 2' (what the stray text looks like), or nothing."""
    text_formats = {k: v for k, v in col.formats.items() if k not in ("unix_s", "unix_ms", "bool01")}
    return f"; text formats: {_histogram(text_formats)}" if text_formats else ""


def _non_null(col: ColumnReport) -> int:
    return sum(n for cls, n in col.storage.items() if cls != "null")


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _names(names: tuple[str, ...] | list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
