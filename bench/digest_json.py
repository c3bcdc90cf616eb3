"""Microseconds per document of ``checkpoints.digest.canonical_json_text`` on three kinds of JSON.

    .venv/bin/python bench/digest_json.py [--docs 2000] [--rounds 5] [--seed 7]

``orm``: bench/shapes.py's ORM settings/line-items objects (~470 bytes, a few prices and a ratio,
~3 % of them with a price like ``12.0`` that takes the float_hook path); ``hex``: objects of UUIDs
and SHA-256 hex digests (a digit then ``e`` is common inside their strings); ``floats``: an array
of 1536 embedding floats (a few of them tiny). ``PYTHONPATH=DIR`` times another version's code
(``git archive <commit> checkpoints | tar -x -C DIR``). Prints the median of ``--rounds`` rounds of
this process's CPU time, per document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable

from shapes import metadata_doc  # bench/ is on sys.path when this file runs as a script

from checkpoints.digest import canonical_json_text


def hex_doc(rnd: random.Random) -> str:
    """An object of identifiers and content hashes, as an event log or an asset table holds them."""
    ids = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(4)]
    return json.dumps(
        {
            "id": ids[0],
            "parent": ids[1],
            "sha256": hashlib.sha256(ids[0].encode()).hexdigest(),
            "etag": hashlib.md5(ids[1].encode()).hexdigest(),
            "refs": ids[2:],
            "size": rnd.randrange(10**9),
            "kind": rnd.choice(("image", "video", "note")),
        }
    )


def float_doc(rnd: random.Random) -> str:
    """An embedding: 1536 float32 values as a Python client writes them (json.dumps)."""
    return json.dumps([float(f"{rnd.gauss(0, 0.05):.9g}") for _ in range(1536)])


KINDS: dict[str, Callable[[random.Random], str]] = {
    "orm": lambda rnd: metadata_doc(rnd, 400),
    "hex": hex_doc,
    "floats": float_doc,
}


def per_doc_us(docs: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for doc in docs:
            canonical_json_text(doc)
        times.append(time.process_time() - start)
    return statistics.median(times) / len(docs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000, help="documents per kind (floats: a tenth)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for kind, make in KINDS.items():
        rnd = random.Random(args.seed)
        docs = [make(rnd) for _ in range(max(1, args.docs // 10 if kind == "floats" else args.docs))]
        size = statistics.mean(len(d.encode()) for d in docs)
        print(f"{kind:7} {size:8.0f} bytes  {per_doc_us(docs, args.rounds):9.2f} us/doc", flush=True)


if __name__ == "__main__":
    main()
