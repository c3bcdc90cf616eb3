"""``python -m checkpoints verify EXPORT [--against OLDER]``: the auditor's tool, without the replicator.

It needs neither a database nor the ``replicator`` package, only this one. Exit codes match the
replicator's: 0 the export verifies, 2 bad usage or unreadable file, 3 findings (each printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checkpoints.audit import report_file
from checkpoints.errors import ChainBroken, CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m checkpoints", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify an export made by 'replicator checkpoints export'")
    verify.add_argument("export", type=Path)
    verify.add_argument("--against", type=Path, default=None, help="an earlier export that must still be contained")
    args = parser.parse_args(argv)
    try:
        result = report_file(args.export, against=args.against)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for finding in result.findings:
        print(finding)
    if result.findings:
        print(f"error: {len(result.findings)} finding(s): the chain does not verify", file=sys.stderr)
        return ChainBroken.exit_code
    print(f"ok: {result.count} checkpoint(s) verify, head {result.head} {result.head_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
