"""An auditor's own verifier, written from docs/audit.md alone: the Python standard library, nothing of the tool.

It imports neither ``replicator`` nor ``checkpoints`` (a test checks that), so where it agrees with
``replicator audit`` the document was precise enough, and where the tool's code and its document part
ways the tests that run both say so.
"""

from __future__ import annotations

import json
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
