"""Human output of ``replicator analyze``: a summary, tables in load order, columns, findings.

Separate from the report so that ``--json -`` never imports rich, and so the text layout can
change without touching what scripts read. On a pipe the same tables print as plain text at a fixed
width, so the output can be grepped and diffed.
"""

from __future__ import annotations

import io
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from replicator.plan.analyze_report import ColumnReport, Finding, Report, TableReport
from replicator.plan.profile import TEMPORAL_FORMATS

PIPE_WIDTH = 160
#: Formats shown in the columns table even for a single value (all counts are in --json).
ALWAYS_SHOWN = frozenset({"nul_text", "invalid_utf8", *TEMPORAL_FORMATS})
_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def render(report: Report, stream: TextIO) -> None:
    """Rich output on a terminal; on a pipe the same layout as plain text without trailing blanks."""
    if stream.isatty():
        _render(Console(file=stream, highlight=False), report)
        return
    buffer = io.StringIO()
    _render(Console(file=buffer, width=PIPE_WIDTH, highlight=False, color_system=None), report)
    stream.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def _render(console: Console, report: Report) -> None:
    _summary(console, report)
    if report.tables:
        console.print(_tables(report))
        console.print(_columns(report))
    _findings(console, report)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _summary(console: Console, report: Report) -> None:
    s = report.source
    rows = sum(t.rows for t in report.tables)
    triggers = sum(len(t.triggers) for t in report.tables)
    console.print(Text(f"source {s.path}", style="bold"))
    console.print(
        f"  {_size(s.bytes)}, {s.page_count} pages of {s.page_size} B ({s.freelist_count} free), "
        f"journal {s.journal_mode}, {s.encoding}, schema version {s.schema_version}, "
        f"user_version {s.user_version}, filesystem {s.filesystem or 'unknown'}"
    )
    counts = [
        _plural(len(report.tables), "table"),
        _plural(rows, "row"),
        _plural(len(report.views), "view"),
        _plural(triggers, "app trigger"),
        _plural(len(report.virtual_tables), "virtual table"),
    ]
    console.print(f"  {', '.join(counts)}; read in {report.seconds:.2f} s")
    for label, items in _listed(report):
        line = Text(f"  {label}: ", style="bold")
        line.append(", ".join(items))
        console.print(line)


def _listed(report: Report) -> list[tuple[str, list[str]]]:
    """What holds no rows to copy, or is easy to miss, named one by one (empty lists are left out)."""
    modules = report.virtual_table_modules
    virtual = [f"{name} ({modules[name]})" if modules.get(name) else name for name in report.virtual_tables]
    listed = [
        ("views (not copied)", list(report.views)),
        ("virtual tables (not copied)", virtual),
        ("shadow tables of virtual tables", list(report.shadow_tables)),
        ("self-referencing tables", list(report.self_references)),
        ("FK cycles", [" ↔ ".join(cycle) for cycle in report.fk_cycles]),
        ("sqlite_sequence", [f"{name} = {seq}" for name, seq in report.sequences.items()]),
    ]
    return [(label, items) for label, items in listed if items]


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _key(table: TableReport) -> str:
    if not table.primary_key:
        return "none"
    key = ", ".join(table.primary_key)
    return f"{key} (rowid)" if table.rowid_alias else key


def _notes(table: TableReport) -> str:
    notes = []
    if table.without_rowid:
        notes.append("WITHOUT ROWID")
    if table.strict:
        notes.append("STRICT")
    if table.autoincrement:
        notes.append(f"AUTOINCREMENT (seq {table.sequence})" if table.sequence is not None else "AUTOINCREMENT")
    if table.triggers:
        notes.append(f"{len(table.triggers)} triggers")
    if table.null_key_rows:
        notes.append(f"{table.null_key_rows} NULL keys")
    return ", ".join(notes)


def _tables(report: Report) -> RichTable:
    out = RichTable(title="Tables, in load order", box=box.SIMPLE, title_justify="left")
    for header, justify in (("#", "right"), ("table", "left"), ("rows", "right"), ("primary key", "left")):
        out.add_column(header, justify=justify)  # type: ignore[arg-type]
    out.add_column("cols", justify="right")
    out.add_column("references", overflow="fold")
    out.add_column("notes", overflow="fold")
    by_name = {t.name: t for t in report.tables}
    for i, name in enumerate(report.load_order, 1):
        t = by_name[name]
        refs = ", ".join(sorted({fk.ref_table for fk in t.foreign_keys if fk.ref_table != name}))
        if any(fk.ref_table == name for fk in t.foreign_keys):
            refs = ", ".join(filter(None, [refs, "itself"]))
        key = Text(_key(t), style="red" if not t.primary_key else "")
        out.add_row(str(i), t.name, f"{t.rows:,}", key, str(len(t.columns)), refs, _notes(t))
    return out


def _values(col: ColumnReport) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in col.storage.items() if k != "null") or "-"


def _range(col: ColumnReport) -> str:
    parts = []
    if col.min_integer is not None:
        parts.append(f"{col.min_integer}..{col.max_integer}")
    if col.max_text_bytes is not None:
        parts.append(f"text ≤{col.max_text_bytes} B")
    if col.max_blob_bytes is not None:
        parts.append(f"blob ≤{col.max_blob_bytes} B")
    return ", ".join(parts)


def _formats(col: ColumnReport) -> str:
    """The formats that say what the column is (at least half its values) and the ones that will bite."""
    non_null = sum(n for k, n in col.storage.items() if k != "null")
    shown = {k: v for k, v in col.formats.items() if v * 2 >= non_null or k in ALWAYS_SHOWN}
    return ", ".join(f"{k} {v:,}" for k, v in sorted(shown.items(), key=lambda kv: -kv[1]))


def _columns(report: Report) -> RichTable:
    out = RichTable(title="Columns: what the values are", box=box.SIMPLE, title_justify="left")
    out.add_column("table")
    out.add_column("column")
    out.add_column("declared → affinity")
    out.add_column("nulls", justify="right")
    out.add_column("values (storage class)", overflow="fold")
    out.add_column("formats (≥ half the values)", overflow="fold")
    out.add_column("range", overflow="fold")
    for t in report.tables:
        for i, col in enumerate(t.columns):
            declared = f"{col.declared_type or '(none)'} → {col.affinity.value.lower()}"
            if col.generated.value != "no":
                declared += f", generated {col.generated.value}"
            formats = _formats(col)
            nulls = col.storage.get("null", 0)
            out.add_row(
                t.name if i == 0 else "",
                col.name,
                declared,
                f"{nulls:,}" if nulls else "",
                _values(col),
                formats,
                _range(col),
            )
        out.add_section()
    return out


def _where(f: Finding) -> str:
    if f.table and f.column:
        return f"{f.table}.{f.column}"
    return f.table or "database"


def _findings(console: Console, report: Report) -> None:
    if not report.findings:
        console.print(Text("No findings: nothing in this file is known to stop a migration.", style="green"))
        return
    grid = RichTable.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for f in report.findings:
        body = Text()
        body.append(f"{f.code}  {_where(f)}", style="bold")
        body.append(f"\n{f.message}")
        if f.hint:
            body.append(f"\n→ {f.hint}", style="dim")
        grid.add_row(Text(f.severity, style=_STYLE[f.severity]), body)
    console.print(Text("Findings", style="bold"))
    console.print(grid)
    counts = f"{_plural(report.count('error'), 'error')}, {_plural(report.count('warning'), 'warning')}"
    console.print(Text(f"{counts}, {report.count('info')} info", style="bold"))
