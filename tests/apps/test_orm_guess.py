"""An SQLAlchemy app's JSON, Boolean and DateTime columns, planned from a sample in create mode.

The app writes through its ORM as a web app does: a session (and a connection) per request, naive
``DateTime`` values with microseconds, ``JSON`` documents with non-ASCII text and floats, ``Boolean``
as SQLAlchemy stores it in SQLite (0/1). The table is planned from its first 1,000 rows and checked on
every row while both processes load it by rowid ranges; then every row, read back through SQLAlchemy
from both databases, must give the same Python values. A second app, otherwise alike, stored one
boolean as the text ``'true'`` late in the table (a hand-written UPDATE in the ``sqlite3`` shell): the
guess cannot account for it, so the table is profiled in full and reloaded, with the same result.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from replicator import config
from replicator.load import snapshot
from tests.support.compare import assert_same

ROWS = 3_000


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    meta: Mapped[Any] = mapped_column(sa.JSON)
    public: Mapped[bool] = mapped_column(sa.Boolean)
    archived: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    due: Mapped[dt.date | None] = mapped_column(sa.Date, nullable=True)


def _write(path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)  # a connection per request
    Base.metadata.create_all(engine)
    start = dt.datetime(2024, 3, 1, 9, 30, 0, 123456)
    for batch in range(0, ROWS, 100):  # a request writes 100 documents
        with Session(engine) as session, session.begin():
            for i in range(batch, batch + 100):
                session.add(
                    Document(
                        title=f"Bericht {i} – café",
                        meta={"tags": ["naïve", i % 7], "score": i / 8, "owner": {"id": i, "name": "Zoë"}},
                        public=i % 2 == 0,
                        archived=None if i % 3 else i % 5 == 0,
                        created=start + dt.timedelta(minutes=i, microseconds=i),
                        due=None if i % 4 else dt.date(2024, 4, 1) + dt.timedelta(days=i % 90),
                    )
                )
    engine.dispose()


def _read(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with Session(engine) as session:
            return [
                (d.id, d.title, d.meta, d.public, d.archived, d.created, d.due)
                for d in session.scalars(sa.select(Document).order_by(Document.id))
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("late_word", [False, True], ids=["as-written", "a-boolean-word-late"])
def test_an_orm_table_planned_from_its_sample_reads_back_the_same_through_the_orm(
    tmp_path: Path, pg_dsn: str, pg: Any, late_word: bool
) -> None:
    path = tmp_path / "app.db"
    _write(path)
    if late_word:  # beyond the sample: the full profile still says boolean, so the types are the same
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE documents SET archived = 'true' WHERE id = ?", (ROWS - 10,))
        conn.close()
    cfg = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0, "split_rows": 1_000}}, environ={})
    conn = snapshot.open_source(path, cfg)
    try:
        assert snapshot.read_source(conn, cfg).guessed == {"documents"}  # JSON and BOOLEAN columns included
    finally:
        conn.close()
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    assert result.plan is not None
    types = {c.name: c.type.name for c in result.plan.table("documents").columns}
    assert types["meta"] == "json"
    assert types["public"] == types["archived"] == "boolean"
    assert types["created"] == "timestamp"
    assert types["due"] == "date"
    assert assert_same(path, pg, result.plan) == {"documents": ROWS}
    on_sqlite = _read(f"sqlite:///{path}")
    on_pg = _read(sa.engine.make_url(pg_dsn).set(drivername="postgresql+psycopg").render_as_string(False))
    if late_word:  # SQLite holds the word; PostgreSQL the boolean it means, as the ORM reads both
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT archived FROM documents WHERE id = ?", (ROWS - 10,)).fetchone() == ("true",)
        conn.close()
        assert on_pg[ROWS - 10 - 1][4] is True
    assert len(on_pg) == ROWS
    assert on_pg == on_sqlite
