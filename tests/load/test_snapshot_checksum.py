"""The snapshot's checksum: checkpoints.digest's encoding exactly, however it is computed."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import uuid
from typing import Any

import msgspec
import pytest
from psycopg.types.json import Jsonb

from checkpoints import digest
from checkpoints.digest import JsonText, RowEncoder
from replicator.load import snapshot
from replicator.values.targettype import TargetType, parse_type

TYPES = [
    "bigint",
    "integer",
    "double precision",
    "real",
    "text",
    "varchar(10)",
    "char(4)",
    "bytea",
    "timestamp",
    "timestamptz",
    "numeric(10,2)",
    "boolean",
    "jsonb",
    "uuid",
    "date",
    "time",
]


def _value(rnd: random.Random, name: str) -> Any:
    """A converted value of that column, or now and then one of another Python type (the fallback)."""
    if rnd.random() < 0.1:
        return None
    if rnd.random() < 0.05 and name not in ("real", "char", "jsonb"):  # those pass the finisher first
        return rnd.choice([1.5, 7, "x", b"y", dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))])
    choices: dict[str, list[Any]] = {
        "bigint": [0, -1, 2**63 - 1, -(2**63), rnd.randrange(-(10**12), 10**12)],
        "double precision": [0.1, -0.0, 1e300, float("inf"), float("nan"), 5e-324, rnd.random()],
        "text": ["", "é🎉", "plain", "x" * 300],
        "bytea": [b"", b"\x00\xff", rnd.randbytes(40)],
        "timestamp": [dt.datetime(1, 1, 1), dt.datetime(1960, 5, 5, 1, 2, 3, 4), dt.datetime(9999, 12, 31, 23, 59)],
        "timestamptz": [dt.datetime(1950, 1, 1, tzinfo=dt.UTC), dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)],
        "numeric": [decimal.Decimal("1.50"), decimal.Decimal("-0.00")],
        "boolean": [True, False],
        "jsonb": [Jsonb('{"b": 1, "a": [1, 2.5, null]}', lambda t: t)],
        "uuid": [uuid.UUID(int=rnd.getrandbits(128))],
        "date": [dt.date(2020, 1, 2)],
        "time": [dt.time(1, 2, 3, 4)],
    }
    choices["real"] = [0.1, 0.5, -0.0, 3.4e38, float("inf")]  # values a real (float4) column holds
    base = {"integer": "bigint", "varchar": "text", "char": "text"}.get(name, name)
    return rnd.choice(choices[base])


@pytest.mark.parametrize("seed", range(5))
def test_one_call_fast_path_is_byte_identical_to_the_value_mapping(seed: int) -> None:
    """Rows of native values take msgspec's one C call; any other value maps the row value by value:
    both must give the bytes the module docstring defines for every value the snapshot produces."""
    types = [parse_type(t) for t in TYPES]
    rnd = random.Random(seed)
    finish = snapshot.digest_finisher(types)
    assert finish is not None
    encode = RowEncoder(snapshot.digest_kinds(types)).encode
    json_at = [i for i, t in enumerate(types) if t.name == "jsonb"]
    for _ in range(3_000):
        row = finish(tuple(_value(rnd, t.name) for t in types))
        mapped = [
            digest.canonical_json_py(json.loads(v.text)) if i in json_at and v is not None else digest._mapped(v)
            for i, v in enumerate(row)
        ]
        assert encode(row) == msgspec.msgpack.encode(mapped), row


def test_finisher_brings_values_to_what_postgresql_returns() -> None:
    types = [TargetType("real"), TargetType("char", length=4), TargetType("json"), TargetType("text")]
    finish = snapshot.digest_finisher(types)
    assert finish is not None
    row = finish((0.1, "ab", Jsonb('{"k": [1.0]}', lambda t: t), "ab  "))
    assert row[0] == 0.10000000149011612  # float4, as psycopg reads it back
    assert row[1] == "ab"  # char(n) compared without its padding
    assert isinstance(row[2], JsonText)  # the document's text, digested as the document psycopg parses
    assert RowEncoder(["json"]).encode([row[2]]) == RowEncoder(["json"]).encode([{"k": [1]}])
    assert row[3] == "ab  "  # text keeps its spaces
    assert snapshot.digest_finisher([TargetType("bigint")]) is None
