"""Read the pieces of SQLite DDL that no PRAGMA reports, and translate small SQLite expressions.

No PRAGMA gives a CHECK constraint, the expression of a generated column or the key expressions of an
expression index, so these come from the ``sql`` text SQLite keeps. We tokenize that text (never
regex-split it: strings and quoted identifiers may hold commas and parentheses) and translate an
expression token by token into PostgreSQL, composed with ``psycopg.sql`` so every identifier is
quoted. Anything we do not understand raises :class:`Untranslatable` with the reason: the caller
drops that object with a warning rather than guessing, because a wrong CHECK or index is worse than
a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import msgspec
from psycopg import sql


class Untranslatable(Exception):
    """An expression uses SQLite syntax or functions with no exact PostgreSQL equivalent."""


class Token(msgspec.Struct, frozen=True):
    kind: str
    """``word``, ``ident`` (quoted name), ``string``, ``number``, ``blob``, ``op``, ``param``."""
    text: str
    value: str = ""
    """Unquoted content for ``ident`` and ``string``; the text otherwise."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
  | (?P<blob>[xX]'(?:[0-9A-Fa-f]{2})*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<dq>"(?:[^"]|"")*")
  | (?P<br>\[[^\]]*\])
  | (?P<bt>`(?:[^`]|``)*`)
  | (?P<number>0[xX][0-9A-Fa-f]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)
  | (?P<param>[?:@$][A-Za-z0-9_]*)
  | (?P<op>\|\||<<|>>|<=|>=|==|!=|<>|[-+*/%<>=~&|(),.;])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text: str) -> list[Token]:
    """SQLite tokens without whitespace and comments; raises Untranslatable on a stray character."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise Untranslatable(f"cannot read SQL near {text[pos : pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        raw = match.group()
        if kind in ("ws", "comment"):
            continue
        if kind == "string":
            tokens.append(Token("string", raw, raw[1:-1].replace("''", "'")))
        elif kind == "dq":
            tokens.append(Token("ident", raw, raw[1:-1].replace('""', '"')))
        elif kind == "bt":
            tokens.append(Token("ident", raw, raw[1:-1].replace("``", "`")))
        elif kind == "br":
            tokens.append(Token("ident", raw, raw[1:-1]))
        else:
            tokens.append(Token(kind, raw, raw))
    return tokens


def is_word(token: Token | None, *words: str) -> bool:
    return token is not None and token.kind == "word" and token.text.upper() in words


def split_top(tokens: Sequence[Token], sep: str = ",") -> list[list[Token]]:
    """Split at ``sep`` outside parentheses."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == "op" and token.text == "(":
            depth += 1
        elif token.kind == "op" and token.text == ")":
            depth -= 1
        if depth == 0 and token.kind == "op" and token.text == sep:
            parts.append([])
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def group_end(tokens: Sequence[Token], start: int) -> int:
    """Index just past the parenthesised group opening at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].kind == "op" and tokens[i].text == "(":
            depth += 1
        elif tokens[i].kind == "op" and tokens[i].text == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise Untranslatable("unbalanced parentheses")


class TableDDL(msgspec.Struct, frozen=True):
    """What ``CREATE TABLE`` text says beyond the PRAGMAs."""

    checks: tuple[tuple[str | None, tuple[Token, ...]], ...]
    """(constraint name, expression tokens) for table and column CHECKs, in source order."""
    generated: dict[str, tuple[Token, ...]]
    """Generated column name → expression tokens."""
    collations: dict[str, str]
    """Column name → collation named in its definition (upper case), e.g. NOCASE."""


_COLUMN_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "NOT", "NULL", "UNIQUE", "CHECK", "DEFAULT", "COLLATE")
_COLUMN_CONSTRAINT_WORDS2 = ("REFERENCES", "GENERATED", "AS")
_TABLE_CONSTRAINT_WORDS = ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN")


def _name(token: Token) -> str:
    return token.value if token.kind in ("ident", "string") else token.text


def parse_create_table(text: str) -> TableDDL:
    """CHECKs, generated expressions and collations from a ``CREATE TABLE`` statement."""
    tokens = tokenize(text)
    start = next((i for i, t in enumerate(tokens) if t.kind == "op" and t.text == "("), None)
    if start is None:
        return TableDDL(checks=(), generated={}, collations={})
    body = tokens[start + 1 : group_end(tokens, start) - 1]
    checks: list[tuple[str | None, tuple[Token, ...]]] = []
    generated: dict[str, tuple[Token, ...]] = {}
    collations: dict[str, str] = {}
    for item in split_top(body):
        if is_word(item[0], *_TABLE_CONSTRAINT_WORDS):
            checks.extend(_checks_in(item))
            continue
        column = _name(item[0])
        checks.extend(_checks_in(item[1:]))
        i = 1
        while i < len(item):
            token = item[i]
            if is_word(token, "AS") and i + 1 < len(item) and item[i + 1].text == "(":
                end = group_end(item, i + 1)
                generated[column] = tuple(item[i + 2 : end - 1])
                i = end
                continue
            if is_word(token, "COLLATE") and i + 1 < len(item):
                collations[column] = _name(item[i + 1]).upper()
            if token.kind == "op" and token.text == "(":
                i = group_end(item, i)
                continue
            i += 1
    return TableDDL(checks=tuple(checks), generated=generated, collations=collations)


def _checks_in(item: Sequence[Token]) -> list[tuple[str | None, tuple[Token, ...]]]:
    found: list[tuple[str | None, tuple[Token, ...]]] = []
    name: str | None = None
    i = 0
    while i < len(item):
        token = item[i]
        if is_word(token, "CONSTRAINT") and i + 1 < len(item):
            name = _name(item[i + 1])
            i += 2
            continue
        if is_word(token, "CHECK") and i + 1 < len(item) and item[i + 1].text == "(":
            end = group_end(item, i + 1)
            found.append((name, tuple(item[i + 2 : end - 1])))
            name = None
            i = end
            continue
        if token.kind == "op" and token.text == "(":
            i = group_end(item, i)
            continue
        i += 1
    return found


class IndexDDL(msgspec.Struct, frozen=True):
    keys: tuple[tuple[Token, ...], ...]
    """Each key term: an expression, possibly followed by COLLATE x and ASC/DESC."""
    where: tuple[Token, ...]


def parse_create_index(text: str) -> IndexDDL:
    """Key terms and the WHERE clause of a ``CREATE INDEX`` statement."""
    tokens = tokenize(text)
    on = next((i for i, t in enumerate(tokens) if is_word(t, "ON")), None)
    if on is None:
        raise Untranslatable("CREATE INDEX without ON")
    start = next(i for i in range(on, len(tokens)) if tokens[i].kind == "op" and tokens[i].text == "(")
    end = group_end(tokens, start)
    keys = tuple(tuple(p) for p in split_top(tokens[start + 1 : end - 1]))
    rest = tokens[end:]
    where: tuple[Token, ...] = ()
    if rest and is_word(rest[0], "WHERE"):
        where = tuple(t for t in rest[1:] if not (t.kind == "op" and t.text == ";"))
    return IndexDDL(keys=keys, where=where)


#: SQLite functions with the same meaning in PostgreSQL (name → PG name).
_FUNCTIONS = {
    "LOWER": "lower",
    "UPPER": "upper",
    "LENGTH": "length",
    "ABS": "abs",
    "COALESCE": "coalesce",
    "IFNULL": "coalesce",
    "NULLIF": "nullif",
    "TRIM": "btrim",
    "LTRIM": "ltrim",
    "RTRIM": "rtrim",
    "SUBSTR": "substr",
    "SUBSTRING": "substr",
    "REPLACE": "replace",
    "INSTR": "strpos",
}
#: Multi-argument min/max are scalar in SQLite: greatest/least in PostgreSQL.
_SCALAR_MINMAX = {"MAX": "greatest", "MIN": "least"}
_KEYWORDS = {
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IN",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "TRUE",
    "FALSE",
    "ESCAPE",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "ASC",
    "DESC",
}


def translate(tokens: Sequence[Token], columns: Mapping[str, str]) -> sql.Composable:
    """Translate a SQLite expression to PostgreSQL; ``columns`` maps source → target column names.

    Column references are matched case-insensitively (SQLite identifiers are) and emitted with
    ``sql.Identifier``. ``LIKE`` becomes ``ILIKE`` (SQLite's LIKE ignores ASCII case), ``==`` becomes
    ``=``, ``IS``/``IS NOT`` between values become ``IS NOT DISTINCT FROM``/``IS DISTINCT FROM``.
    """
    folded = {name.lower(): target for name, target in columns.items()}
    out: list[sql.Composable] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        upper = token.text.upper()
        if token.kind == "word" and nxt is not None and nxt.text == "(" and upper not in ("IN", "NOT", "AND", "OR"):
            end = group_end(tokens, i + 1)
            out.append(_function(upper, tokens[i + 2 : end - 1], columns))
            i = end
            continue
        if token.kind in ("word", "ident") and token.value.lower() in folded and upper not in _KEYWORDS:
            out.append(sql.Identifier(folded[token.value.lower()]))
        elif token.kind in ("ident", "string"):  # SQLite reads an unknown "double-quoted" word as a string
            out.append(sql.Literal(token.value))
        elif token.kind == "number":
            out.append(sql.SQL(str(int(token.text, 16)) if token.text[:2].lower() == "0x" else token.text))
        elif token.kind == "word" and upper == "LIKE":
            out.append(sql.SQL("ILIKE"))
        elif token.kind == "word" and upper == "IS":
            negate = is_word(nxt, "NOT")
            after = tokens[i + 2] if negate and i + 2 < len(tokens) else nxt
            if is_word(after, "NULL", "TRUE", "FALSE"):
                out.append(sql.SQL("IS NOT" if negate else "IS"))
            else:
                out.append(sql.SQL("IS DISTINCT FROM" if negate else "IS NOT DISTINCT FROM"))
            i += 2 if negate else 1
            continue
        elif token.kind == "word" and upper in _KEYWORDS:
            out.append(sql.SQL(upper))
        elif token.kind == "op" and token.text in ("(", ")", ","):
            out.append(sql.SQL(token.text))
        elif token.kind == "op" and token.text in ("==",):
            out.append(sql.SQL("="))
        elif token.kind == "op" and token.text in ("+", "-", "*", "/", "%", "<", ">", "<=", ">=", "=", "!=", "<>"):
            out.append(sql.SQL(token.text))
        elif token.kind == "op" and token.text == "||":
            out.append(sql.SQL("||"))
        else:
            raise Untranslatable(f"{token.text!r} has no PostgreSQL translation")
        i += 1
    if not out:
        raise Untranslatable("empty expression")
    return sql.SQL(" ").join(out)


def _function(name: str, args: Sequence[Token], columns: Mapping[str, str]) -> sql.Composable:
    parts = split_top(args) if args else []
    translated = [translate(p, columns) for p in parts]
    if name in _SCALAR_MINMAX and len(parts) > 1:
        pg_name = _SCALAR_MINMAX[name]
    elif name in _FUNCTIONS:
        pg_name = _FUNCTIONS[name]
    elif name == "CAST":
        raise Untranslatable("CAST uses SQLite type names")
    else:
        raise Untranslatable(f"function {name.lower()}() has no PostgreSQL equivalent here")
    return sql.SQL("{}({})").format(sql.SQL(pg_name), sql.SQL(", ").join(translated))


def column_names_in(tokens: Sequence[Token], columns: Sequence[str]) -> set[str]:
    """The source columns an expression mentions (for dependency checks)."""
    folded = {c.lower(): c for c in columns}
    return {folded[t.value.lower()] for t in tokens if t.kind in ("word", "ident") and t.value.lower() in folded}
