"""Issue 20, the rollback window in the auditor's files: a chain exported after a real cutover and its window.

After a real migration and cutover, the rollback window's records (two reverse batches and the rollback) are
appended to the cut-over target's chain with ``checkpoints.store.append``, as the reverse writer does, and
the chain exported again. ``replicator audit`` and the independent verifier written from docs/audit.md must
both pass those files, still adding the figures up at the cutover, and both fail each tampering of the
window's records; only a cut-off tail of the window passes both, which the cutover certificate cannot see.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from checkpoints import ledger, store
from checkpoints.digest import table_digest
from checkpoints.exportfile import read_file
from checkpoints.model import Kind, TableChange, next_checkpoint
from replicator.cutover import auditor
from tests.support import independent_audit as mine
from tests.support.migrated import (
    Migration,
    audit,
    check_line,
    copy_of,
    edit_certificate,
    edit_chain,
    migrate,
    read_chain,
    rebody,
    relink,
    run_cli,
    verdict,
)
from tests.support.pgserver import fresh_database

pytestmark = pytest.mark.e2e

#: The window after the cutover (#7): the app's changes in PostgreSQL written back into SQLite. #8 reverse 1..2
#: (parent 7 inserted, parent 4 updated), #9 reverse 3..3 (child 12 deleted), #10 the rollback's drain 4..4.
WINDOW: tuple[tuple[Kind, int, dict[str, TableChange]], ...] = (
    (
        Kind.REVERSE,
        2,
        {"parent": TableChange.of(table_digest([(7, "g", 7.5), (4, "D", 4.0)]), None, table_digest([(4, "d", 4.0)]))},
    ),
    (
        Kind.REVERSE,
        3,
        {"child": TableChange.of(table_digest([]), table_digest([(12,)]), table_digest([(12, 2, "z", "c12")]))},
    ),
    (Kind.ROLLBACK, 4, {"pair": TableChange.of(table_digest([("n", 1, "neu")]))}),
)


@pytest.fixture(scope="module")
def windowed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migration]:
    """A real migration, its window appended to the cut-over target's chain, the chain exported again."""
    with fresh_database(pg_server) as dsn:
        m = migrate(tmp_path_factory.mktemp("windowed"), dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            head = store.latest(conn)
            assert head is not None
            assert head.kind is Kind.CUTOVER
            for kind, seq_to, tables in WINDOW:
                head = next_checkpoint(head, seq_to=seq_to, tables=tables, kind=kind)
                with conn.transaction():
                    store.append(conn, head)
        chain = m.chain.with_name("window.jsonl")
        exported = run_cli("checkpoints", "export", str(chain), "--target", dsn, "--log-format", "json", "-q")
        assert exported.exit_code == 0, exported.output
        yield msgspec.structs.replace(m, chain=chain)


def both(m: Migration) -> tuple[str, str, list[str]]:
    """The tool's verdict and the independent one on the same files, with the independent one's problems."""
    tool = audit(m)
    assert tool.exit_code in (0, 3), tool.output
    independent, problems = mine.audit(m.certificate, m.chain)
    assert (independent == "PASS") == (problems == []), problems
    return verdict(tool), independent, problems


def test_the_window_after_a_real_cutover_passes_both(windowed: Migration, tmp_path: Path) -> None:
    files = copy_of(windowed, tmp_path)
    records, head = read_chain(files.chain)
    cert = json.loads(files.certificate.read_text())
    assert [r["parsed"]["kind"] for r in records[6:]] == ["cutover", "reverse", "reverse", "rollback"]
    assert [(r["parsed"]["seq_from"], r["parsed"]["seq_to"]) for r in records[7:]] == [(1, 2), (3, 3), (4, 4)]
    assert (cert["chain_head"], head["number"]) == (7, 10)
    assert both(files)[:2] == ("PASS", "PASS")
    result = audit(files)
    assert check_line(result, "chain integrity").startswith("ran")
    line = check_line(result, "chain head")
    assert line.startswith("ran")
    assert "followed by 3 record(s) of the rollback window" in line
    assert "2 reverse batch(es)" in result.stdout
    assert "closed by a rollback to SQLite at checkpoint 10" in result.stdout
    assert "does not vouch for them" in result.stdout
    assert check_line(result, "figures").startswith("ran")


def test_the_figures_are_added_up_at_the_cutover_not_at_the_end(windowed: Migration) -> None:
    """The window changes parent, child and pair: added up to the end, the chain no longer gives the
    certificate's figures, so the audit passes only because both auditors stop at the cutover."""
    cert = json.loads(windowed.certificate.read_text())
    certified = {t["table"]: (t["pg_rows"], t["pg_digest"]) for t in cert["tables"]}
    records, _, _ = read_file(windowed.chain)
    at_cut, at_end = ledger.at_cutover(records), ledger.at_end(records)
    assert at_cut is not None
    assert at_cut.head == 7
    assert {n: (f.rows, f.digest) for n, f in at_cut.tables.items()} == certified
    ended = {n: (f.rows, f.digest) for n, f in at_end.tables.items()}
    assert {n for n in certified if ended[n] != certified[n]} == {"parent", "child", "pair"}
    assert (ended["parent"][0], ended["child"][0], ended["pair"][0]) == (
        certified["parent"][0] + 1,
        certified["child"][0] - 1,
        certified["pair"][0] + 1,
    )
    result = auditor.audit(windowed.certificate, windowed.chain)
    assert {n: (f.rows, f.digest) for n, f in result.figures.items()} == certified
    theirs, _, _ = mine.ledger(mine.read_chain(windowed.chain)[0])
    assert theirs != certified  # the independent ledger over the whole file: the window moved it
    assert mine.audit(windowed.certificate, windowed.chain)[0] == "PASS"


# --- tampering with the window: every one fails both ---------------------------------------------------------


def _edit(index: int, **changes: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Record ``index``'s body fields changed, it and every record after it rehashed and relinked: every hash
    agrees, and the certificate's cutover (#7, index 6) is untouched when ``index`` is after it."""

    def change(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rebody(records[index], {**records[index]["parsed"], **changes})
        relink(records, index + 1)
        return records

    return change


def _after_the_rollback(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = records[-1]["parsed"]
    forged = {**last, "number": last["number"] + 1, "kind": "reverse", "seq_from": 5, "seq_to": 5}
    forged["prev_hash"] = records[-1]["hash"]
    record: dict[str, Any] = {"number": forged["number"]}
    rebody(record, forged)
    return [*records, record]


def _point_at_the_cutover(m: Migration) -> None:
    """The certificate resealed to name checkpoint #7 as the (tampered) chain now holds it."""
    records, _ = read_chain(m.chain)

    def change(cert: dict[str, Any]) -> None:
        cert["chain_head_hash"] = next(r["hash"] for r in records if r["number"] == cert["chain_head"])

    edit_certificate(m.certificate, change)


def _reverse_before_the_cutover(m: Migration) -> None:
    """Batch #6 relabelled ``reverse`` (its range and figures unchanged), #7 onward relinked and the certificate
    resealed to name the new #7: only the kinds' order is left to catch."""
    edit_chain(m.chain, _edit(5, kind="reverse"))
    _point_at_the_cutover(m)


def _continuing_sqlite(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first reverse batch numbered on from the cutover's SQLite position, as if one journal went on."""
    stop = records[6]["parsed"]["seq_to"]
    return _edit(7, seq_from=stop + 1, seq_to=stop + 2)(records)


def _edit_body_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records[8]["body"] = records[8]["body"].replace('"seq_to":3', '"seq_to":4')
    return records


def _certify_a_reverse_record(m: Migration) -> None:
    """A certificate resealed to name reverse batch #8 as the migration's end, its stop point and every table's
    figures made to agree with the chain through #8: only the kind of the record it names is left to catch."""
    records, _ = read_chain(m.chain)
    figures, _, _ = mine.ledger(records[:8])

    def change(cert: dict[str, Any]) -> None:
        cert["chain_head"], cert["chain_head_hash"] = 8, records[7]["hash"]
        cert["stop_seq"] = records[7]["parsed"]["seq_to"]
        for t in cert["tables"]:
            t["pg_rows"], t["pg_digest"] = t["sqlite_rows"], t["sqlite_digest"] = figures[t["table"]]

    edit_certificate(m.certificate, change)


def _move_the_stop_point(cert: dict[str, Any]) -> None:
    cert["stop_seq"] -= 1


TAMPERING: dict[str, Callable[[Migration], None]] = {
    "a gap opening the reverse journal": lambda m: edit_chain(m.chain, _edit(7, seq_from=2)),
    "the reverse journal continuing SQLite's": lambda m: edit_chain(m.chain, _continuing_sqlite),
    "a gap in the reverse journal": lambda m: edit_chain(m.chain, _edit(8, seq_from=4, seq_to=4)),
    "an overlap in the reverse journal": lambda m: edit_chain(m.chain, _edit(8, seq_from=2)),
    "a reverse batch passed off as a batch": lambda m: edit_chain(m.chain, _edit(8, kind="batch")),
    "a second cutover in the window": lambda m: edit_chain(m.chain, _edit(8, kind="cutover")),
    "a record after the rollback": lambda m: edit_chain(m.chain, _after_the_rollback),
    "a finalize before the rollback": lambda m: edit_chain(m.chain, _edit(8, kind="finalize")),
    "a reverse record before the cutover": _reverse_before_the_cutover,
    "a reverse body edited": lambda m: edit_chain(m.chain, _edit_body_only),
    "a reverse record certified as the cutover": _certify_a_reverse_record,
    "the certificate's stop point moved": lambda m: edit_certificate(m.certificate, _move_the_stop_point),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_every_tampering_of_the_window_fails_both(how: str, windowed: Migration, tmp_path: Path) -> None:
    files = copy_of(windowed, tmp_path)
    TAMPERING[how](files)
    tool, independent, problems = both(files)
    assert (tool, independent) == ("FAIL", "FAIL"), problems


def test_the_tool_names_each_breach_of_the_window_in_words(windowed: Migration, tmp_path: Path) -> None:
    words = {
        "a record after the rollback": ("after_end", "after the rollback window had closed"),
        "a reverse batch passed off as a batch": ("after_cutover", "after the cutover"),
        "a reverse record before the cutover": ("before_cutover", "before any cutover"),
        "a gap opening the reverse journal": ("seq_gap", "reverse journal entries 1..1 are in no checkpoint"),
    }
    for how, (problem, said) in words.items():
        files = copy_of(windowed, tmp_path / how.replace(" ", "-"))
        TAMPERING[how](files)
        result = audit(files)
        assert check_line(result, "chain integrity").startswith("FAIL"), how
        assert f"({problem}: " in result.stdout, (how, result.stdout)
        assert said in result.stdout, (how, result.stdout)
    stray = copy_of(windowed, tmp_path / "stray")
    TAMPERING["a reverse batch passed off as a batch"](stray)
    result = audit(stray)
    assert check_line(result, "chain head").startswith("FAIL")
    assert "follow the cutover checkpoint 7: checkpoint(s) 9 (batch)" in result.stdout
    assert "records other than the rollback window's follow the cutover" in both(stray)[2]
    named = copy_of(windowed, tmp_path / "named")
    TAMPERING["a reverse record certified as the cutover"](named)
    result = audit(named)
    assert [check_line(result, c)[:4] for c in ("integrity", "chain head", "proofs", "figures")] == [
        "ran ",
        "FAIL",
        "ran ",
        "ran ",
    ]
    assert "the checkpoint #8 the certificate names is a reverse, not the cutover checkpoint" in result.stdout
    assert both(named)[2] == ["the certificate's head is not the cutover at the stop point"]
    moved = copy_of(windowed, tmp_path / "moved")
    TAMPERING["the certificate's stop point moved"](moved)
    assert "the certificate's stop point is" in check_line(audit(moved), "chain head") + audit(moved).stdout
    assert both(moved)[2] == ["the certificate's head is not the cutover at the stop point"]


def test_a_window_cut_short_passes_both_the_certificate_cannot_see_it(windowed: Migration, tmp_path: Path) -> None:
    """The rollback and the last reverse batch dropped: the chain still holds the certified cutover and a window
    that is merely open, so both pass. Only an anchor kept elsewhere (or a rollback's own proof) can tell."""
    files = copy_of(windowed, tmp_path)
    edit_chain(files.chain, lambda records: records[:-2])
    assert both(files)[:2] == ("PASS", "PASS")
    assert "still open when the chain was exported" in audit(files).stdout
    edit_chain(files.chain, lambda records: records[:-1])  # down to the cutover: the chain as it ended then
    assert both(files)[:2] == ("PASS", "PASS")
    assert "and ends there" in check_line(audit(files), "chain head")


def test_the_page_names_the_window_and_keeps_the_timeline_to_the_migration(windowed: Migration, tmp_path: Path) -> None:
    """The HTML report lists the window apart, as what the certificate does not vouch for, and its timeline
    ends at the cutover however long the window lasted (here its records are dated a day later)."""
    from replicator.cutover import audit_html

    files = copy_of(windowed, tmp_path)
    result = auditor.audit(files.certificate, files.chain)
    page = audit_html.render(result)
    assert "the rollback window (not vouched for by this certificate)" in page
    assert "2 reverse, 1 rollback" in page
    late = [msgspec.structs.replace(p, at=p.at.replace(p.at[:10], "2099-01-01")) for p in result.points[7:]]
    later = msgspec.structs.replace(result, points=(*result.points[:7], *late))
    ticks = re.findall(r">(\d\d:\d\d:\d\d[.\d]*)</text>", audit_html.render(later))
    assert len(ticks) == 6
    assert ticks == re.findall(r">(\d\d:\d\d:\d\d[.\d]*)</text>", page)  # the same axis: the window is off it
