"""Read the pieces of SQLite DDL that no PRAGMA reports, and translate small SQLite expressions.

No PRAGMA gives a CHECK constraint, the expression of a generated column or the key expressions of an
expression index, so these come from the ``sql`` text SQLite keeps. We tokenize that text (never
regex-split it: strings and quoted identifiers may hold commas and parentheses) and translate an
expression into PostgreSQL, composed with ``psycopg.sql`` so every identifier is quoted, only where
it is proved to compute the same value on every row (the allow-list below :func:`translate`).
Anything else raises :class:`Untranslatable` with the reason: the caller makes a generated column a
plain column loaded with SQLite's values, and drops a CHECK or an expression index with a warning,
because a CHECK or index with other semantics is worse than a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Final, NamedTuple

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


# --- the proved allow-list ---------------------------------------------------------------------
#
# An expression is translated only when PostgreSQL computes the same value as SQLite for every row
# the load can write. Each operand's kind says what its values are on *both* sides (``Operand``): an
# INT column is SQLite INTEGER affinity planned as bigint (every value the load accepts is stored by
# SQLite as that 64-bit INTEGER: the affinity converts '12' and 3.0, the load refuses the rest), a
# TEXT column is TEXT affinity planned as text or varchar without strip_nul or replace_bad_utf8 (the
# load writes exactly SQLite's text, or a BLOB's UTF-8 text). On those domains:
#
# * INT: ``+ - *`` and unary ``-`` (not both operands constant: PostgreSQL would compute two literals
#   in 32 bits), ``< <= > >= = == != <> IS [NOT] IN (...)``, ``abs``. One difference remains, always
#   loud: where a step leaves 64 bits SQLite goes on in floating point, PostgreSQL raises "bigint out
#   of range", so the row is refused (the snapshot or the apply stops and names the table), never
#   stored with another value.
# * TEXT: ``||``, ``upper``/``lower`` as ASCII-only folding (SQLite's, without ICU) via translate().
#   Operations that read a BLOB differently from its text are left out: length(), substr(), and text
#   comparisons (a BLOB never equals a TEXT in SQLite), except ``= <> IS IN`` in a CHECK under
#   BINARY collation (``text_equality``: there a BLOB can only make PostgreSQL refuse a row, loudly).
# * ``coalesce``/``ifnull`` over one kind; ``IS [NOT] NULL`` on any column; ``AND OR NOT`` on booleans.
#
# Everything else raises Untranslatable with the reason, named after what differs: scalar max/min
# (NULL in SQLite, greatest/least skip NULLs), substr (negative starts count from the end in SQLite),
# LIKE (ASCII-only case folding in SQLite), division (NULL for a zero divisor in SQLite), real
# literals (double in SQLite, numeric in PostgreSQL). tests/plan/test_schema_sqlexpr.py runs every entry
# in both databases on NULL, negative, extreme and non-ASCII inputs.


class Kind(StrEnum):
    INT = "integer"
    TEXT = "text"
    BOOL = "boolean"
    OTHER = "other"


class Operand(msgspec.Struct, frozen=True):
    """A column an expression may read: its PostgreSQL name and what its values are on both sides."""

    name: str
    kind: Kind
    why: str = ""
    """For OTHER: why its values cannot feed a proved expression (read in IS NULL only)."""
    collation: str = "BINARY"
    """The column's SQLite collation: SQLite compares text under it, PostgreSQL byte for byte."""


class _Typed(NamedTuple):
    sql: sql.Composable
    kind: Kind
    const: bool = False
    why: str = ""
    collation: str = "BINARY"


_INT64_MAX: Final = (1 << 63) - 1
_ASCII_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_REFUSED_FUNCTIONS: Final = {
    "MAX": "scalar max() is NULL when any argument is NULL in SQLite; greatest() skips NULLs",
    "MIN": "scalar min() is NULL when any argument is NULL in SQLite; least() skips NULLs",
    "SUBSTR": "substr() counts a negative start from the end, and a BLOB in bytes, in SQLite",
    "SUBSTRING": "substring() counts a negative start from the end, and a BLOB in bytes, in SQLite",
    "LENGTH": "length() counts a BLOB's bytes and stops at a NUL in SQLite",
    "CAST": "CAST uses SQLite type names and conversions",
}
_REFUSED_WORDS: Final = {
    "LIKE": "LIKE folds ASCII case only in SQLite; ILIKE folds every letter",
    "GLOB": "GLOB has no PostgreSQL equivalent",
    "BETWEEN": "BETWEEN is not on the proved list",
    "CASE": "CASE is not on the proved list",
    "COLLATE": "COLLATE names a SQLite collation",
}


def translate(
    tokens: Sequence[Token], columns: Mapping[str, Operand], want: Collection[Kind], *, text_equality: bool = False
) -> sql.Composable:
    """The PostgreSQL form of a SQLite expression proved to compute the same value (see above).

    ``columns`` maps source column names (matched ignoring case, as SQLite does) to operands;
    ``want`` is the kinds the caller can use (a CHECK or WHERE needs BOOL, a generated column its own
    kind). ``text_equality`` (for a CHECK) also admits ``= <> IS IN`` between text values under
    BINARY collation: equal on text, and a BLOB in a TEXT column (never equal to text in SQLite, its
    text in PostgreSQL) can only make PostgreSQL refuse a row SQLite kept, loudly; a CHECK changes no
    data. Raises Untranslatable naming what is not proved.
    """
    folded = {name.lower(): op for name, op in columns.items()}
    typed = _Parser(tokens, folded, text_equality).whole()
    if typed.kind not in want:
        raise Untranslatable(f"the expression is {_kind_name(typed)}, not {' or '.join(sorted(want))}")
    return typed.sql


def _kind_name(typed: _Typed) -> str:
    return typed.why or typed.kind.value


class _Parser:
    """Recursive descent in SQLite's operator precedence; each operation is rendered parenthesised,
    so PostgreSQL's different precedence (``||`` below ``+`` there) cannot regroup it."""

    def __init__(self, tokens: Sequence[Token], columns: Mapping[str, Operand], text_equality: bool) -> None:
        self.tokens = list(tokens)
        self.columns = columns
        self.text_equality = text_equality
        self.pos = 0

    def _sub(self, tokens: Sequence[Token]) -> _Typed:
        return _Parser(tokens, self.columns, self.text_equality).whole()

    def whole(self) -> _Typed:
        if not self.tokens:
            raise Untranslatable("empty expression")
        typed = self._or()
        if self.pos < len(self.tokens):
            raise Untranslatable(f"{self.tokens[self.pos].text!r} is not on the proved list")
        return typed

    # token helpers

    def _peek(self, offset: int = 0) -> Token | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def _op(self, *ops: str) -> str | None:
        token = self._peek()
        if token is not None and token.kind == "op" and token.text in ops:
            self.pos += 1
            return token.text
        return None

    def _word(self, *words: str) -> bool:
        if is_word(self._peek(), *words):
            self.pos += 1
            return True
        return False

    # precedence levels, loosest first

    def _or(self) -> _Typed:
        left = self._and()
        while self._word("OR"):
            left = _logic("OR", left, self._and())
        return left

    def _and(self) -> _Typed:
        left = self._not()
        while self._word("AND"):
            left = _logic("AND", left, self._not())
        return left

    def _not(self) -> _Typed:
        if self._word("NOT"):
            operand = self._not()
            _need(operand, Kind.BOOL, "NOT")
            return _Typed(sql.SQL("(NOT {})").format(operand.sql), Kind.BOOL)
        return self._equality()

    def _equality(self) -> _Typed:
        left = self._comparison()
        while True:
            token = self._peek()
            if token is None:
                return left
            if is_word(token, *_REFUSED_WORDS) or (is_word(token, "NOT") and is_word(self._peek(1), *_REFUSED_WORDS)):
                word = token.text.upper() if not is_word(token, "NOT") else (self._peek(1) or token).text.upper()
                raise Untranslatable(_REFUSED_WORDS[word])
            if op := self._op("=", "==", "!=", "<>"):
                left = self._equal("<>" if op in ("!=", "<>") else "=", left, self._comparison())
            elif self._word("ISNULL"):
                left = _null_test(left, negate=False)
            elif self._word("NOTNULL"):
                left = _null_test(left, negate=True)
            elif is_word(token, "NOT") and is_word(self._peek(1), "NULL"):
                self.pos += 2
                left = _null_test(left, negate=True)
            elif self._word("IS"):
                negate = self._word("NOT")
                if self._word("NULL"):
                    left = _null_test(left, negate=negate)
                elif is_word(self._peek(), "DISTINCT", "TRUE", "FALSE"):
                    raise Untranslatable(f"IS {self.tokens[self.pos].text.upper()} is not on the proved list")
                else:
                    op = "IS DISTINCT FROM" if negate else "IS NOT DISTINCT FROM"
                    left = self._equal(op, left, self._comparison())
            elif is_word(token, "IN") or (is_word(token, "NOT") and is_word(self._peek(1), "IN")):
                negate = self._word("NOT")
                self.pos += 1
                left = self._in_list(left, negate)
            else:
                return left

    def _in_list(self, left: _Typed, negate: bool) -> _Typed:
        start = self.pos
        token = self._peek()
        if token is None or token.text != "(":
            raise Untranslatable("IN needs a parenthesised list")
        end = group_end(self.tokens, start)
        inner = self.tokens[start + 1 : end - 1]
        if not inner or is_word(inner[0], "SELECT"):
            raise Untranslatable("IN needs a non-empty list of values (no subquery)")
        items = [self._sub(part) for part in split_top(inner)]
        self.pos = end
        kind = self._equality_kind("IN", left, *items)
        for item in items:
            _need(item, kind, "IN")
        listed = sql.SQL(", ").join(item.sql for item in items)
        op = sql.SQL("NOT IN" if negate else "IN")
        return _Typed(sql.SQL("({} {} ({}))").format(left.sql, op, listed), Kind.BOOL)

    def _equal(self, op: str, left: _Typed, right: _Typed) -> _Typed:
        kind = self._equality_kind(op, left, right)
        _need(right, kind, op)
        return _Typed(sql.SQL("({} {} {})").format(left.sql, sql.SQL(op), right.sql), Kind.BOOL)

    def _equality_kind(self, op: str, *operands: _Typed) -> Kind:
        """INT, or TEXT where ``text_equality`` admits it and no operand carries a SQLite collation."""
        if not (self.text_equality and operands[0].kind is Kind.TEXT):
            _need(operands[0], Kind.INT, op)
            return Kind.INT
        collated = next((o.collation for o in operands if o.collation != "BINARY"), None)
        if collated is not None:
            raise Untranslatable(f"{op} compares under COLLATE {collated} in SQLite, byte for byte in PostgreSQL")
        return Kind.TEXT

    def _comparison(self) -> _Typed:
        left = self._bitwise()
        while op := self._op("<", "<=", ">", ">="):
            left = _integers(op, left, self._bitwise())
        return left

    def _bitwise(self) -> _Typed:
        left = self._additive()
        if self._op("&", "|", "<<", ">>", "~"):
            raise Untranslatable("bitwise operators are not on the proved list")
        return left

    def _additive(self) -> _Typed:
        left = self._multiplicative()
        while op := self._op("+", "-"):
            left = _arithmetic(op, left, self._multiplicative())
        return left

    def _multiplicative(self) -> _Typed:
        left = self._concat()
        while op := self._op("*", "/", "%"):
            if op != "*":
                raise Untranslatable(f"{op!r}: SQLite returns NULL for a zero divisor, PostgreSQL raises")
            left = _arithmetic(op, left, self._concat())
        return left

    def _concat(self) -> _Typed:
        left = self._unary()
        while self._op("||"):
            right = self._unary()
            _need(left, Kind.TEXT, "||")
            _need(right, Kind.TEXT, "||")
            left = _Typed(sql.SQL("({} || {})").format(left.sql, right.sql), Kind.TEXT, left.const and right.const)
        return left

    def _unary(self) -> _Typed:
        if self._op("-"):
            operand = self._unary()
            _need(operand, Kind.INT, "unary -")
            return _Typed(sql.SQL("(- {})").format(operand.sql), Kind.INT, operand.const)
        if self._op("+", "~"):
            raise Untranslatable("unary + and ~ are not on the proved list")
        typed = self._primary()
        if is_word(self._peek(), "COLLATE"):
            raise Untranslatable(_REFUSED_WORDS["COLLATE"])
        return typed

    def _primary(self) -> _Typed:
        token = self._peek()
        if token is None:
            raise Untranslatable("the expression ends too early")
        nxt = self._peek(1)
        if token.kind == "op" and token.text == "(":
            end = group_end(self.tokens, self.pos)
            inner = self.tokens[self.pos + 1 : end - 1]
            if len(split_top(inner)) > 1:
                raise Untranslatable("row values are not on the proved list")
            self.pos = end
            return self._sub(inner)
        if token.kind == "word" and nxt is not None and nxt.kind == "op" and nxt.text == "(":
            end = group_end(self.tokens, self.pos + 1)
            args = self.tokens[self.pos + 2 : end - 1]
            self.pos = end
            return self._function(token.text.upper(), args)
        self.pos += 1
        if token.kind == "number":
            return _integer_literal(token.text)
        if token.kind == "string":
            return _Typed(sql.Literal(token.value), Kind.TEXT, const=True)
        if token.kind in ("word", "ident") and token.value.lower() in self.columns:
            op = self.columns[token.value.lower()]
            return _Typed(sql.Identifier(op.name), op.kind, why=op.why, collation=op.collation)
        if token.kind == "ident" and token.text.startswith('"'):  # SQLite reads an unknown "word" as a string
            return _Typed(sql.Literal(token.value), Kind.TEXT, const=True)
        if token.kind in ("word", "ident") and token.text.upper() not in ("NULL", "TRUE", "FALSE", "CASE", "CAST"):
            raise Untranslatable(f"{token.text!r} is not a column of the table (skipped?)")
        raise Untranslatable(_REFUSED_WORDS.get(token.text.upper(), f"{token.text!r} is not on the proved list"))

    def _function(self, name: str, args: Sequence[Token]) -> _Typed:
        if name in _REFUSED_FUNCTIONS and not (name in ("MAX", "MIN") and len(split_top(args)) < 2):
            raise Untranslatable(_REFUSED_FUNCTIONS[name])
        if args and (is_word(args[0], "DISTINCT", "ALL") or args[0].text == "*"):
            raise Untranslatable(f"{name.lower()}({args[0].text} ...) is not on the proved list")
        parsed = [self._sub(part) for part in split_top(args)]
        if name == "ABS" and len(parsed) == 1:
            _need(parsed[0], Kind.INT, "abs()")
            return _Typed(sql.SQL("abs({})").format(parsed[0].sql), Kind.INT, parsed[0].const)
        if name in ("UPPER", "LOWER") and len(parsed) == 1:
            _need(parsed[0], Kind.TEXT, f"{name.lower()}()")
            pair = (_ASCII_LOWER, _ASCII_LOWER.upper()) if name == "UPPER" else (_ASCII_LOWER.upper(), _ASCII_LOWER)
            folded = sql.SQL("translate({}, {}, {})").format(parsed[0].sql, *map(sql.Literal, pair))
            return _Typed(folded, Kind.TEXT, parsed[0].const)
        if (name == "COALESCE" and len(parsed) >= 2) or (name == "IFNULL" and len(parsed) == 2):
            kind = parsed[0].kind if parsed[0].kind in (Kind.INT, Kind.TEXT) else Kind.INT
            for arg in parsed:
                _need(arg, kind, f"{name.lower()}()")
            joined = sql.SQL(", ").join(arg.sql for arg in parsed)
            return _Typed(sql.SQL("coalesce({})").format(joined), kind, all(arg.const for arg in parsed))
        raise Untranslatable(f"function {name.lower()}() with {len(parsed)} argument(s) is not on the proved list")


def _need(typed: _Typed, kind: Kind, what: str) -> None:
    if typed.kind is not kind:
        raise Untranslatable(f"{what} is proved on {kind.value} values only, not {_kind_name(typed)}")


def _logic(op: str, left: _Typed, right: _Typed) -> _Typed:
    _need(left, Kind.BOOL, op)
    _need(right, Kind.BOOL, op)
    return _Typed(sql.SQL("({} {} {})").format(left.sql, sql.SQL(op), right.sql), Kind.BOOL)


def _integers(op: str, left: _Typed, right: _Typed) -> _Typed:
    """An ordering: integers only (SQLite orders text by its collation, PostgreSQL by the database's)."""
    _need(left, Kind.INT, op)
    _need(right, Kind.INT, op)
    return _Typed(sql.SQL("({} {} {})").format(left.sql, sql.SQL(op), right.sql), Kind.BOOL)


def _arithmetic(op: str, left: _Typed, right: _Typed) -> _Typed:
    _need(left, Kind.INT, op)
    _need(right, Kind.INT, op)
    if left.const and right.const:
        raise Untranslatable(f"{op!r} between two constants: PostgreSQL computes it in 32 bits")
    return _Typed(sql.SQL("({} {} {})").format(left.sql, sql.SQL(op), right.sql), Kind.INT)


def _null_test(operand: _Typed, *, negate: bool) -> _Typed:
    """NULL stays NULL and a value stays a value through the load, whatever the column's type."""
    return _Typed(sql.SQL("({} IS NOT NULL)" if negate else "({} IS NULL)").format(operand.sql), Kind.BOOL)


def _integer_literal(text: str) -> _Typed:
    """A 64-bit integer literal; SQLite reads a longer one, or one with a point, as a REAL."""
    try:
        value = int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        raise Untranslatable(f"{text}: a REAL literal (double in SQLite, numeric in PostgreSQL)") from None
    if value > _INT64_MAX:
        raise Untranslatable(f"{text} does not fit 64 bits (SQLite reads it as a REAL or wraps it)")
    return _Typed(sql.SQL(str(value)), Kind.INT, const=True)
