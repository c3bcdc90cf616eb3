"""``replicator audit --html FILE``: the audit as one page a person who is not an engineer can read.

One self-contained file: inline CSS and SVG, no script, no font, no image, nothing fetched, so it opens the
same offline, attached to a ticket or archived with the certificate. Top to bottom: the verdict in a coloured
banner (the words say it too), what happened in one paragraph, each check in plain words, the proof per
table, the chain in numbers, and two timelines drawn from the files alone: the whole migration (the
snapshot, each batch of changes copied, how many changes were waiting, the cutover) and the cutover second
by second (its steps, and the write outage when the application could not write).
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Final

from replicator.cutover.auditor import Audit, Check, not_created
from replicator.cutover.certificate import STEP_ORDER

PASS_COLOUR: Final = "#1a7f37"
FAIL_COLOUR: Final = "#cf222e"
OUTAGE_COLOUR: Final = "#d1242f"
WIDTH: Final = 880
_PRE_FREEZE: Final = ("preflight", "backup", "prepass", "catchup")
_IN_OUTAGE: Final = ("freeze", "drain", "verify", "copy", "finish_pg", "fence", "commit")

_CSS = f"""
body {{ font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
  background: #f6f8fa; }}
main {{ max-width: {WIDTH + 40}px; margin: 0 auto; padding: 0 20px 40px; background: #fff; }}
#verdict {{ color: #fff; padding: 28px 24px; margin: 0 -20px 20px; }}
#verdict.pass {{ background: {PASS_COLOUR}; }} #verdict.fail {{ background: {FAIL_COLOUR}; }}
#verdict h1 {{ margin: 0; font-size: 40px; letter-spacing: .02em; }} #verdict p {{ margin: 4px 0 0; font-size: 18px; }}
h2 {{ font-size: 20px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ text-align: left; padding: 6px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: {PASS_COLOUR}; font-weight: 600; }} .bad {{ color: {FAIL_COLOUR}; font-weight: 600; }}
.skip {{ color: #9a6700; font-weight: 600; }} .muted {{ color: #57606a; font-size: 13px; }}
ul.f {{ margin: 4px 0 0; padding-left: 18px; }} code {{ font-size: 12px; word-break: break-all; }}
figure {{ margin: 8px 0 0; }} figcaption {{ color: #57606a; font-size: 14px; }}
"""


def render(result: Audit) -> str:
    """The whole page."""
    body = "\n".join(
        (
            _banner(result),
            _story(result),
            _section("The checks", _checks(result.checks)),
            _section("Each table, on both sides", _tables(result)),
            _section("What PostgreSQL does not have", _not_created(result)),
            _section("The migration, start to end", _timeline(result)),
            _section("The cutover, second by second", _cutover(result)),
            _section("The chain of checkpoints", _chain(result)),
        )
    )
    title = f"Migration audit: {result.verdict}"
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def _section(title: str, inner: str) -> str:
    return f"<section><h2>{escape(title)}</h2>\n{inner}\n</section>"


def _banner(result: Audit) -> str:
    failed = [c for c in result.checks if c.status == "fail"]
    skipped = [c for c in result.checks if c.status == "not run"]
    if failed:
        line = f"{len(failed)} check(s) failed: the files do not prove this migration. See below."
    else:
        line = "Every check that could run passed: the files prove the migration as the certificate states it."
    if skipped:
        line += f" Not checked: {', '.join(c.name for c in skipped)}."
    css = "pass" if result.passed else "fail"
    return (
        f'<header id="verdict" class="{css}" data-verdict="{result.verdict}"><h1>{result.verdict}</h1>'
        f"<p>{escape(line)}</p></header>"
    )


def _story(result: Audit) -> str:
    cert = result.certificate
    rows = sum(t.pg_rows for t in cert.tables)
    started = result.points[0].at if result.points else None
    when = f" It started with a snapshot at {escape(_clock(started))} UTC." if started else ""
    return (
        f"<p>The application's data moved from the SQLite file <code>{escape(cert.source_path)}</code> to the "
        f"PostgreSQL database <code>{escape(cert.target)}</code>: {len(cert.tables)} table(s), {rows:,} rows at the "
        f"end.{when} The switch (the <em>cutover</em>) happened at {escape(_clock(cert.fenced_at))} UTC on "
        f"{escape(cert.fenced_at[:10])}; the application could not write for "
        f"<strong>{cert.write_outage_s:.3f} seconds</strong>. Operator: {escape(cert.operator)}.</p>"
    )


def _checks(checks: tuple[Check, ...]) -> str:
    mark = {"pass": ('<span class="ok">✔ passed</span>'), "fail": '<span class="bad">✘ FAILED</span>'}
    rows = []
    for c in checks:
        status = mark.get(c.status, '<span class="skip">– not run</span>')
        details = "".join(f"<li>{escape(f)}</li>" for f in c.findings)
        details += "".join(f'<li class="muted">{escape(n)}</li>' for n in c.notes)
        extra = f'<ul class="f">{details}</ul>' if details else ""
        rows.append(f"<tr><td>{escape(c.name)}</td><td>{status}</td><td>{escape(c.summary)}{extra}</td></tr>")
    return "<table><tr><th>check</th><th>result</th><th>what it means</th></tr>" + "".join(rows) + "</table>"


def _tables(result: Audit) -> str:
    rows = []
    for t in result.certificate.tables:
        same = t.equal
        f = result.figures.get(t.table)
        adds = f is not None and (f.rows, f.digest) == (t.pg_rows, t.pg_digest)
        independent = t.independent.status if t.independent is not None else "not run"
        rows.append(
            f"<tr><td>{escape(t.table)}</td><td class='n'>{t.sqlite_rows:,}</td><td class='n'>{t.pg_rows:,}</td>"
            f"<td>{_yes(same, 'identical', 'DIFFERENT')}</td><td>{escape(independent)}</td>"
            f"<td>{_yes(adds, 'yes', 'no')}</td><td><code>{escape(t.pg_digest[:16])}…</code></td></tr>"
        )
    head = (
        "<tr><th>table</th><th>rows in SQLite</th><th>rows in PostgreSQL</th><th>contents</th>"
        "<th>second reading</th><th>chain adds up</th><th>checksum</th></tr>"
    )
    note = (
        '<p class="muted">Contents are compared by a checksum of every row on each side; the second reading '
        "compares the two sides again in a way the copy itself cannot influence.</p>"
    )
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _not_created(result: Audit) -> str:
    """The schema objects of SQLite's the certificate says PostgreSQL lacks: the app runs without them."""
    missing = not_created(result.certificate)
    if result.certificate.format < 5:
        return (
            f"<p>This certificate (format {result.certificate.format}) was written before certificates recorded "
            "the indexes and rules of the SQLite schema that PostgreSQL lacks: it does not say.</p>"
        )
    if not missing:
        return "<p>Every index and rule of the SQLite schema that the certificate covers exists in PostgreSQL.</p>"
    accepted = (
        "The operator accepted this at the cutover (<code>--accept-missing-constraints</code>)."
        if result.certificate.accept_missing_constraints
        else '<span class="bad">The certificate does not record that anyone accepted this.</span>'
    )
    items = "".join(
        f'<li data-not-created="{escape(n.name)}">{escape(m)}</li>'
        for n, m in zip(result.certificate.not_created, missing, strict=True)
    )
    return (
        f"<p>After the cutover the application runs on PostgreSQL without these {len(missing)} part(s) of its "
        f'SQLite schema. {accepted}</p><ul class="f">{items}</ul>'
    )


def _yes(ok: bool, good: str, bad: str) -> str:
    return f'<span class="ok">{good}</span>' if ok else f'<span class="bad">{bad}</span>'


def _chain(result: Audit) -> str:
    cert, points = result.certificate, result.points
    batches = [p for p in points if p.kind == "batch"]
    rows = [
        ("checkpoints", f"{len(points):,}"),
        ("batches of changes copied", f"{len(batches):,}"),
        ("changes copied after the snapshot", f"{cert.stop_seq - (points[0].seq_to if points else 0):,}"),
        ("rows written or deleted by those batches", f"{sum(p.rows for p in batches):,}"),
        ("the cutover checkpoint", f"#{cert.chain_head} <code>{escape(cert.chain_head_hash)}</code>"),
        ("certificate seal (SHA-256)", f"<code>{escape(cert.sha256)}</code>"),
    ]
    window = [p for p in points if p.number > cert.chain_head]
    if window:
        kinds = ", ".join(f"{sum(p.kind == k for p in window)} {k}" for k in dict.fromkeys(p.kind for p in window))
        rows.append(("after the cutover: the rollback window (not vouched for by this certificate)", escape(kinds)))
    if cert.signature is not None:
        rows.append(("signed by key", f"<code>{escape(cert.signature.key_id)}</code>"))
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


# --- the two timelines -----------------------------------------------------------------------------------


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _clock(text: str | None) -> str:
    return _time(text).strftime("%H:%M:%S") if text else "?"


class _Axis:
    """Seconds since ``start`` → x pixels, with tick labels at round steps."""

    def __init__(self, start: dt.datetime, end: dt.datetime, left: int, right: int) -> None:
        self.start, self.left, self.right = start, left, right
        self.span = max((end - start).total_seconds(), 1e-3)

    def x(self, moment: dt.datetime) -> float:
        return self.left + (moment - self.start).total_seconds() / self.span * (self.right - self.left)

    def ticks(self, y: int, *, seconds: bool = False) -> str:
        out = []
        for i in range(6):
            offset = self.span * i / 5
            at = self.start + dt.timedelta(seconds=offset)
            if seconds:
                label = f"+{offset:.2f} s" if self.span < 2 else f"+{offset:.1f} s"
            else:
                label = at.strftime("%H:%M:%S.%f")[:-5] if self.span < 60 else at.strftime("%H:%M:%S")
            x = self.x(at)
            anchor = "start" if i == 0 else "end" if i == 5 else "middle"
            out.append(
                f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 5}" stroke="#57606a"/>'
                f'<text x="{x:.1f}" y="{y + 19}" font-size="12" text-anchor="{anchor}" fill="#57606a">{label}</text>'
            )
        return "".join(out)


def _svg(height: int, inner: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="{escape(label)}" font-family="system-ui, sans-serif">{inner}</svg>'
    )


def _timeline(result: Audit) -> str:
    cert, points = result.certificate, result.points
    if not points:
        return "<p>The chain could not be read, so there is no timeline.</p>"
    # The migration's timeline ends at the cutover: a rollback window after it may last hours or days.
    migrated = [p for p in points if p.number <= cert.chain_head] or points
    start, end = _time(points[0].at), max(_time(cert.fenced_at), _time(migrated[-1].at))
    axis = _Axis(start, end + (end - start) * 0.03, 60, WIDTH - 20)
    top, base = 30, 190
    batches = [p for p in points if p.kind == "batch"]
    waiting = [(p, p.journal_head - p.seq_to) for p in batches if p.journal_head is not None]
    scale = max([p.seq_to - p.seq_from + 1 for p in batches] + [w for _, w in waiting] + [1])
    parts = [f'<line x1="60" y1="{base}" x2="{WIDTH - 20}" y2="{base}" stroke="#57606a"/>', axis.ticks(base)]
    for p in batches:
        h = (p.seq_to - p.seq_from + 1) / scale * (base - top)
        parts.append(
            f'<rect x="{axis.x(_time(p.at)) - 3:.1f}" y="{base - h:.1f}" width="6" height="{h:.1f}" fill="#0969da">'
            f"<title>batch #{p.number}: {p.seq_to - p.seq_from + 1} change(s)</title></rect>"
        )
    if waiting:
        path = " ".join(f"{axis.x(_time(p.at)):.1f},{base - w / scale * (base - top):.1f}" for p, w in waiting)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#bf8700" stroke-width="2.5"/>')
    snap = axis.x(start)
    cut0, cut1 = axis.x(_time(cert.frozen_at)), axis.x(_time(cert.fenced_at))
    parts += [
        f'<line x1="{snap:.1f}" y1="{top - 10}" x2="{snap:.1f}" y2="{base}" stroke="#8250df" stroke-width="3"/>',
        f'<text x="{snap + 6:.1f}" y="{top - 12}" font-size="13" fill="#8250df">snapshot</text>',
        f'<rect x="{cut0 - 2:.1f}" y="{top - 10}" width="{max(cut1 - cut0, 0) + 4:.1f}" height="{base - top + 10}" '
        f'fill="{OUTAGE_COLOUR}" opacity="0.85"/>',
        f'<text x="{cut0 - 6:.1f}" y="{top - 12}" font-size="13" text-anchor="end" '
        f'fill="{OUTAGE_COLOUR}">cutover</text>',
        f'<text x="52" y="{top + 4}" font-size="12" text-anchor="end" fill="#57606a">{scale:,}</text>',
        f'<text x="52" y="{base}" font-size="12" text-anchor="end" fill="#57606a">0</text>',
        f'<text x="8" y="{(top + base) // 2}" font-size="12" fill="#57606a">changes</text>',
    ]
    legend = (
        '<span style="color:#0969da">■</span> changes copied in each batch &nbsp; '
        '<span style="color:#bf8700">━</span> changes still waiting to be copied (the lag) &nbsp; '
        f'<span style="color:{OUTAGE_COLOUR}">■</span> cutover'
    )
    lag = "" if waiting else " This chain does not record how many changes were waiting (older format)."
    caption = (
        f"<figcaption>{legend}<br>Time runs left to right, in UTC. The snapshot copied the existing data; each "
        f"blue bar is a batch of the application's later changes copied across; the line shows how far the copy "
        f"was behind.{lag}</figcaption>"
    )
    return f"<figure>{_svg(base + 30, ''.join(parts), 'timeline of the migration')}{caption}</figure>"


def _cutover(result: Audit) -> str:
    cert = result.certificate
    steps = sorted(cert.steps.items(), key=lambda kv: STEP_ORDER.index(kv[0]) if kv[0] in STEP_ORDER else 99)
    if not steps:
        return "<p>The certificate records no steps.</p>"
    frozen = _time(cert.frozen_at)
    start = frozen - dt.timedelta(seconds=sum(s for name, s in steps if name in _PRE_FREEZE))
    end = start + dt.timedelta(seconds=sum(s for _, s in steps))
    axis = _Axis(start, max(end, _time(cert.fenced_at)), 150, WIDTH - 80)
    row, top = 22, 10
    base = top + row * len(steps) + 8
    parts = [
        f'<rect x="{axis.x(frozen):.1f}" y="0" width="{max(axis.x(_time(cert.fenced_at)) - axis.x(frozen), 2):.1f}" '
        f'height="{base}" fill="{OUTAGE_COLOUR}" opacity="0.15"/>'
    ]
    at = start
    for i, (name, seconds) in enumerate(steps):
        x0, x1 = axis.x(at), axis.x(at + dt.timedelta(seconds=seconds))
        y = top + i * row
        colour = OUTAGE_COLOUR if name in _IN_OUTAGE else "#0969da"
        parts.append(
            f'<text x="140" y="{y + 15}" font-size="13" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1.5):.1f}" height="{row - 6}" fill="{colour}"/>'
            f'<text x="{max(x1, x0 + 1.5) + 4:.1f}" y="{y + 15}" font-size="12" fill="#57606a">{seconds:.3f} s</text>'
        )
        at += dt.timedelta(seconds=seconds)
    parts += [
        f'<line x1="150" y1="{base}" x2="{WIDTH - 20}" y2="{base}" stroke="#57606a"/>',
        axis.ticks(base, seconds=True),
    ]
    caption = (
        f'<figcaption><span style="color:{OUTAGE_COLOUR}">■</span> the write outage: from the freeze to the '
        f"commit the application could not write, {cert.write_outage_s:.3f} s in all (from "
        f"{escape(_clock(cert.frozen_at))} UTC). <span style='color:#0969da'>■</span> steps while the "
        "application kept working. Seconds from the start of the cutover.</figcaption>"
    )
    return f"<figure>{_svg(base + 30, ''.join(parts), 'steps of the cutover')}{caption}</figure>"
