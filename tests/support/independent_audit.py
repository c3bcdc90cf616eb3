"""An auditor's own verifier, written from docs/audit.md alone: the Python standard library, nothing of the tool.

It imports neither ``replicator`` nor ``checkpoints`` (a test checks that), so where it agrees with
``replicator audit`` the document was precise enough, and where the tool's code and its document part
ways the tests that run both say so.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any


def number(value: float | int) -> str:
    """docs/audit.md, "Canonical JSON", numbers."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(int(value))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("a certificate holds no NaN or infinity")
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, _, exp_text = text.partition("e")
    exp = int(exp_text)
    if -5 <= exp < 16:  # plain notation: 1e-05 is written 0.00001
        sign = "-" if mantissa.startswith("-") else ""
        digits = mantissa.lstrip("-").replace(".", "")
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    return f"{mantissa}e{exp}"


def canonical(value: Any) -> str:
    """docs/audit.md, "Canonical JSON": keys sorted, no whitespace, strings as JSON writes them unescaped."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical(v) for k, v in items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


ZERO = "0" * 64
MODULUS = 1 << 256
_MESSAGE = "replicator cutover certificate seal "
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_LATER_FIELDS = {  # docs/audit.md, "Seal": fields each format added, absent from older certificates' seals
    5: ("not_created", "accept_missing_constraints"),
    4: ("signature",),
    2: ("skipped_tables", "skipped_columns", "accept_skipped_columns", "quarantine"),
}


def sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


# --- the chain export (docs/audit.md, "The chain export", "Chain rules") -----------------------------------


def read_chain(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """Checkpoint lines (with ``parsed``: the body decoded), the head line, and problems reading them."""
    records: list[dict[str, Any]] = []
    head: dict[str, Any] | None = None
    problems: list[str] = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for index, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except ValueError:
            problems.append(f"line {index} is not JSON")
            continue
        if head is not None:
            problems.append(f"line {index} follows the head line")
        elif isinstance(item, dict) and set(item) == {"head"}:
            head = item["head"]
        elif isinstance(item, dict) and set(item) == {"number", "hash", "body"}:
            try:
                item["parsed"] = json.loads(item["body"])
            except ValueError:
                problems.append(f"line {index}: its body is not JSON")
                continue
            records.append(item)
        else:
            problems.append(f"line {index} is neither a checkpoint nor the head line")
    if head is None:
        problems.append("no head line: the file was cut short")
    return records, head, problems


#: docs/audit.md, "Chain rules", rule 6: the kinds each kind may be followed by.
FOLLOWED_BY = {
    "genesis": ("batch", "cutover"),
    "batch": ("batch", "cutover"),
    "compaction": ("batch", "cutover"),
    "cutover": ("reverse", "rollback", "finalize"),
    "reverse": ("reverse", "rollback", "finalize"),
    "rollback": (),
    "finalize": (),
}
WINDOW = ("reverse", "rollback", "finalize")


def link_hash(body: dict[str, Any], own: str) -> str:
    if body["kind"] == "compaction" and body.get("compaction"):
        return str(body["compaction"]["head_hash"])
    return own


def chain_problems(records: list[dict[str, Any]], head: dict[str, Any] | None) -> list[str]:
    """Every chain rule broken (rules 1-7; the rollback window's records after the cutover included)."""
    out: list[str] = []
    for r in records:
        if sha256(r["body"]) != r["hash"]:
            out.append(f"checkpoint {r['number']}: its body does not hash to its hash")
        if r["parsed"].get("number") != r["number"]:
            out.append(f"checkpoint {r['number']}: its body says number {r['parsed'].get('number')}")
    if records:
        first = records[0]["parsed"]
        if first.get("prev_hash") != ZERO:
            out.append("the first record's prev_hash is not zero")
        if first.get("kind") == "genesis" and first.get("number") != 1:
            out.append("a genesis that is not number 1")
        elif first.get("kind") == "compaction":
            c = first.get("compaction") or {}
            if (c.get("first"), c.get("last"), c.get("count")) != (1, first.get("number"), first.get("number")):
                out.append("the compaction starting the chain does not stand for 1..its number")
        elif first.get("kind") != "genesis":
            out.append("the chain does not start with a genesis or a compaction")
    for before, after in itertools.pairwise(records):
        b, a = before["parsed"], after["parsed"]
        if after["number"] != before["number"] + 1:
            out.append(f"checkpoint {after['number']} follows {before['number']}")
        if a.get("kind") in ("genesis", "compaction"):
            out.append(f"checkpoint {after['number']}: a {a.get('kind')} inside the chain")
        if a.get("prev_hash") != link_hash(b, before["hash"]):
            out.append(f"checkpoint {after['number']} does not link to {before['number']}")
        start = 1 if b.get("kind") == "cutover" and a.get("kind") in WINDOW else b.get("seq_to", 0) + 1
        if a.get("seq_from") != start or a.get("seq_to", 0) < a.get("seq_from", 0) - 1:
            out.append(f"checkpoint {after['number']}: journal range does not follow {before['number']}'s")
        if a.get("kind") not in FOLLOWED_BY.get(b.get("kind"), ()):
            out.append(f"checkpoint {after['number']}: a {a.get('kind')} cannot follow a {b.get('kind')}")
    if (
        head is not None
        and records
        and (head.get("number"), head.get("hash"), head.get("count"))
        != (
            records[-1]["number"],
            records[-1]["hash"],
            len(records),
        )
    ):
        out.append("the head line does not describe the file")
    return out


def ledger(records: list[dict[str, Any]]) -> tuple[dict[str, tuple[int, str]], list[str], set[str]]:
    """docs/audit.md, "Figures": per table (rows, digest); breaks (a read restatement moving the count); tables
    that cannot be added up (format 1)."""
    sums: dict[str, list[int]] = {}
    breaks: list[str] = []
    unknown: set[str] = set()
    for index, r in enumerate(records):
        body = r["parsed"]
        for name, change in body.get("tables", {}).items():
            up, removed = change.get("upserted", 0), change.get("removed", 0)
            up_d = int(change.get("upserted_digest", ZERO), 16)
            rm_d = int(change.get("removed_digest", ZERO), 16)
            restated = change.get("restated", "")
            if index == 0 or restated or body["kind"] in ("genesis", "compaction"):
                if restated == "read" and name in sums and sums[name][0] != up:
                    breaks.append(f"{name}: read anew at {body['number']} with another count")
                sums[name] = [up - removed, up_d - rm_d]
                unknown.discard(name)
                if body["kind"] == "compaction" and body.get("format", 1) < 2:
                    unknown.add(name)
            elif name in sums:
                sums[name][0] += up - removed
                sums[name][1] += up_d - rm_d
                if body.get("format", 1) < 2 and (up or change.get("deleted", 0)):
                    unknown.add(name)
            else:
                unknown.add(name)
    return {n: (v[0], format(v[1] % MODULUS, "064x")) for n, v in sums.items()}, breaks, unknown


# --- the certificate (docs/audit.md, "Seal", "Signature") --------------------------------------------------


def seal(cert: dict[str, Any]) -> str:
    body = {**cert, "sha256": "", "signature": None}
    fmt = int(cert.get("format", 1))
    for added, names in _LATER_FIELDS.items():
        if fmt < added:
            for name in names:
                body.pop(name, None)
    if fmt < 3:
        body["tables"] = [{k: v for k, v in t.items() if k != "independent"} for t in body["tables"]]
    return sha256(canonical(body))


def public_key(pem: str) -> bytes:
    der = base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))
    if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise ValueError("not an Ed25519 public key")
    return der[12:]


def signature_ok(cert: dict[str, Any], key: bytes, seal_hex: str) -> bool:
    sig = cert.get("signature")
    if not sig or sig.get("algorithm") != "ed25519":
        return False
    return ed25519_verify(key, (_MESSAGE + seal_hex).encode("ascii"), bytes.fromhex(sig["value"]))


# --- Ed25519 verification, RFC 8032 section 5.1.7 (pure Python) --------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _add(p: _Point, q: _Point) -> _Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: _Point) -> _Point:
    q: _Point = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _decompress(data: bytes) -> _Point | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def _equal(p: _Point, q: _Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0) or 0
_G: _Point = (_GX, _GY, 1, _GX * _GY % _P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    a = _decompress(public)
    r = _decompress(signature[:32]) if len(signature) == 64 else None
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _L
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))


# --- the audit -------------------------------------------------------------------------------------------


def audit(
    certificate: Path, chain: Path, backup: Path | None = None, public_pem: Path | None = None
) -> tuple[str, list[str]]:
    """PASS or FAIL and every problem, by docs/audit.md's checks."""
    cert = json.loads(certificate.read_text(encoding="utf-8"))
    records, head, problems = read_chain(chain)
    problems += chain_problems(records, head)
    recomputed = seal(cert)
    if recomputed != cert.get("sha256"):
        problems.append("the certificate's seal does not match its fields")
    if public_pem is not None:
        key = public_key(public_pem.read_text())
        if not signature_ok(cert, key, recomputed) or cert["signature"]["key_id"] != sha256(key)[:16]:
            problems.append("the signature does not sign this certificate with this key")
    cut = next((i for i, r in enumerate(records) if r["number"] == cert["chain_head"]), None)
    if cut is None or records[cut]["hash"] != cert["chain_head_hash"]:
        problems.append("the chain does not hold the certificate's head")
    elif records[cut]["parsed"].get("kind") != "cutover" or records[cut]["parsed"].get("seq_to") != cert["stop_seq"]:
        problems.append("the certificate's head is not the cutover at the stop point")
    elif any(r["parsed"].get("kind") not in WINDOW for r in records[cut + 1 :]):
        problems.append("records other than the rollback window's follow the cutover")
    for t in cert["tables"]:
        independent = t.get("independent") or {}
        if (t["sqlite_rows"], t["sqlite_digest"]) != (t["pg_rows"], t["pg_digest"]):
            problems.append(f"{t['table']}: the sides differ")
        if independent.get("status") == "mismatch":
            problems.append(f"{t['table']}: the independent comparison differs")
    figures, breaks, unknown = ledger([r for r in records if r["number"] <= cert["chain_head"]])
    problems += breaks
    for t in cert["tables"]:
        if t["table"] not in unknown and figures.get(t["table"]) != (t["pg_rows"], t["pg_digest"]):
            problems.append(f"{t['table']}: the chain adds up to {figures.get(t['table'])}")
    if backup is not None and sha256(backup.read_bytes()) != cert.get("backup_sha256"):
        problems.append("the backup is not the one the certificate names")
    return ("FAIL" if problems else "PASS"), problems
