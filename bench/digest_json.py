"""Microseconds per document of ``checkpoints.digest.canonical_json_text`` on three kinds of JSON.

    .venv/bin/python bench/digest_json.py [--docs 2000] [--rounds 5] [--seed 7] [--against OLD_DIGEST_PY]

``orm``: bench/shapes.py's ORM settings/line-items objects (~470 bytes, a few prices and a ratio,
~3 % of them with a price like ``12.0`` that takes the float_hook path); ``hex``: objects of UUIDs
and SHA-256 hex digests (a digit then ``e`` is common inside their strings); ``floats``: an array
of 1536 embedding floats (a few of them tiny). ``PYTHONPATH=DIR`` times another version's code
(``git archive <commit> checkpoints | tar -x -C DIR``); on a busy machine, where runs minutes apart
differ by 30 %, ``--against FILE`` (``git show <commit>:checkpoints/digest.py > FILE``) times that
file's function too, round for round with this tree's (its imports resolve to this tree's package),
after checking both give the same texts. Prints the median of ``--rounds`` rounds of this process's
CPU time, per document.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
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


Canonical = Callable[[str], str]


def load(path: str) -> Canonical:
    """``canonical_json_text`` of another version's digest.py."""
    spec = importlib.util.spec_from_file_location("other_digest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Canonical = module.canonical_json_text
    return function


def per_doc_us(functions: list[Canonical], docs: list[str], rounds: int) -> list[float]:
    """Median CPU microseconds per document of each function, their rounds interleaved."""
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(rounds):
        for function, spent in zip(functions, times, strict=True):
            start = time.process_time()
            for doc in docs:
                function(doc)
            spent.append(time.process_time() - start)
    return [statistics.median(spent) / len(docs) * 1e6 for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000, help="documents per kind (floats: a tenth)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--against", metavar="FILE", help="another version's checkpoints/digest.py, timed alongside")
    args = parser.parse_args()
    functions: list[Canonical] = [canonical_json_text]
    if args.against:
        functions.insert(0, load(args.against))
        print(f"{'':22} {'against':>9} {'this tree':>15}")
    for kind, make in KINDS.items():
        rnd = random.Random(args.seed)
        docs = [make(rnd) for _ in range(max(1, args.docs // 10 if kind == "floats" else args.docs))]
        if args.against:
            assert [functions[0](d) for d in docs] == [functions[1](d) for d in docs], "the versions' texts differ"
        size = statistics.mean(len(d.encode()) for d in docs)
        spent = "  ".join(f"{us:9.2f} us/doc" for us in per_doc_us(functions, docs, args.rounds))
        print(f"{kind:7} {size:8.0f} bytes  {spent}", flush=True)


if __name__ == "__main__":
    main()
