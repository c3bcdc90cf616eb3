"""The demo's application: a 12-table Prisma-style SQLite database and a writer that plays its backend.

The database is :mod:`replicator.demo.database`, built and filled by :mod:`replicator.demo.seed` from the
values of :mod:`replicator.demo.rows`; the backend is :mod:`replicator.demo.writer`. This module is the process.

Run as ``python -m replicator.demo.app DB --seconds N`` it is the live backend: small transactions
(sign-ups, AI usage logs, record edits, sync runs, upserts, deletes) at ``--rate`` per second, each
one retried on SQLITE_BUSY like an app's ORM would. When the file is fenced by a cutover its writes
fail with the fence message; the writer reports that and stops. Its last stdout line is a JSON
summary (``transactions``, ``fenced``, ``fence_message``...). ``--create --rows N`` builds the
database first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from replicator.demo.seed import create
from replicator.demo.writer import run_writer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replicator.demo.app", description="The replicator demo's live app: writes to DB."
    )
    parser.add_argument("db", type=Path, help="the app's SQLite file")
    parser.add_argument("--seconds", type=float, default=30.0, help="write for this long (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="transactions per second (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--create", action="store_true", help="create the database first (it must not exist)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows in total with --create (default 50000)")
    parser.add_argument("--keep-writing", action="store_true", help="keep trying after the file is fenced")
    args = parser.parse_args(argv)
    if args.create:
        if args.db.exists():
            print(f"error: {args.db} exists — pass a new path with --create", file=sys.stderr)
            return 2
        counts = create(args.db, args.rows)
        print(json.dumps({"event": "created", "rows": sum(counts.values()), "tables": counts}), flush=True)
    elif not args.db.is_file():
        print(f"error: {args.db} does not exist — pass --create to make it", file=sys.stderr)
        return 2
    if args.seconds > 0:
        summary = run_writer(args.db, args.seconds, args.rate, args.seed, stop_when_fenced=not args.keep_writing)
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
