"""The search language (close to notmuch's) compiled to one SQL condition over ``messages m``.

Grammar, loosest binding first::

    query := or            (an empty query matches every message)
    or    := and ("OR" and)*
    and   := not (["AND"] not)*      adjacent terms are ANDed
    not   := "NOT" not | "(" or ")" | term
    term  := word | "a phrase" | word* | field:value | field:"a phrase"

Fields: ``from:`` ``to:`` (To and Cc) ``subject:`` ``attachment:`` (file names) - searched in the
text index like words; ``folder:`` (exact, ``*`` and ``?`` as wildcards) ``account:``
``id:`` (Message-ID) ``signer:`` ``date:A..B`` (``2026-01-31``, ``2026-01``, ``2026``, ``today``,
``yesterday``, ``now``, relative ``90min`` ``12h`` ``7d`` ``2w`` ``3mo`` ``1y``; either side may be
empty; a single date means that whole day, month or year, a single relative one "since then")
``is:encrypted|signed|decrypted|unopened|unread|read|flagged|answered`` ``sig:STATUS``
``dec:STATUS`` ``has:attachment`` ``scan:clean|infected|error|pending``.

What Gmail and notmuch users type works too: ``-word`` (NOT word), ``older_than:7d``
(``date:..7d``), ``newer_than:2w`` (``date:2w..``; Gmail's ``3m`` is three months),
``filename:`` (``attachment:``), ``larger:5M`` and ``smaller:100K`` (the raw message's size),
``in:`` (a folder, case-insensitive; ``in:anywhere`` is every folder).

Words are compared in their :func:`~smime_companion.core.normalise.search_form`, the same
normalisation the index applies: accents and case do not matter, ``strasse`` finds ``Straße``,
and a word in Japanese, Chinese, Korean or Thai text is found as the phrase of its character
pairs.

User text never reaches SQL: every value is a bound parameter, and text-index terms are quoted
as FTS5 strings (with ``"`` doubled). A malformed query raises :class:`UsageError` naming the
column where it goes wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from smime_companion.core.normalise import is_unspaced, search_form
from smime_companion.core.verdicts import Decryption, SignatureStatus
from smime_companion.errors import UsageError

# Columns of the FTS5 table ``message_text`` that a field searches.
_TEXT_FIELDS = {
    "from": "sender",
    "to": "recipients",
    "subject": "subject",
    "attachment": "attachments",
    "filename": "attachments",  # Gmail's name for it
}
_SQL_FIELDS = frozenset({"folder", "account", "id", "signer", "date", "is", "sig", "dec", "has"})
_SQL_FIELDS = _SQL_FIELDS | {"scan", "in", "larger", "smaller", "older_than", "newer_than"}
_ALL_FIELDS = sorted(set(_TEXT_FIELDS) | _SQL_FIELDS)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

_IS_VALUES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "encrypted": ("m.decryption != 'none'", ()),
    "signed": ("m.signature != 'none'", ()),
    "decrypted": ("m.decryption = 'ok'", ()),
    "unopened": ("m.reopen = 1", ()),
    "unread": ("instr(m.flags, ' \\Seen ') = 0", ()),
    "read": ("instr(m.flags, ' \\Seen ') > 0", ()),
    "flagged": ("instr(m.flags, ' \\Flagged ') > 0", ()),
    "answered": ("instr(m.flags, ' \\Answered ') > 0", ()),
}
_SCAN_VALUES = {
    "clean": "m.scan = 'clean'",
    # A range, not LIKE (which ignores case, so no index can answer it): ";" follows ":".
    "infected": "m.scan >= 'infected:' AND m.scan < 'infected;'",
    "error": "m.scan = 'error'",
    "pending": "m.scan IS NULL",
}
_HAS_VALUES = {
    "attachment": "EXISTS (SELECT 1 FROM attachments a WHERE a.message = m.id AND NOT a.inline)",
}


# -- tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "AND", "OR", "NOT", "term"
    column: int  # 1-based position in the query, for messages
    field: str | None = None  # "from", "date", ... for field:value terms
    value: str = ""
    phrase: bool = False  # the value was quoted
    prefix: bool = False  # word* (prefix search)


def _error(column: int, problem: str) -> UsageError:
    return UsageError(f"malformed query at column {column}: {problem}")


def _read_quoted(query: str, start: int) -> tuple[str, int]:
    """The text of the quoted string opening at ``start`` and the index after its close."""
    end = query.find('"', start + 1)
    if end < 0:
        raise _error(start + 1, "this quote is never closed")
    return query[start + 1 : end], end + 1


def tokenize(query: str) -> list[_Token]:
    """Split ``query`` into tokens. Raises :class:`UsageError` for an unclosed quote."""
    tokens: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c in "()":
            tokens.append(_Token(c, i + 1))
            i += 1
            continue
        if c == '"':
            text, i_next = _read_quoted(query, i)
            tokens.append(_Token("term", i + 1, value=text, phrase=True))
            i = i_next
            continue
        if c == "-" and i + 1 < n and not query[i + 1].isspace() and query[i + 1] not in "-)":
            tokens.append(_Token("NOT", i + 1))  # Gmail's and notmuch's -word
            i += 1
            continue
        start = i
        while i < n and not query[i].isspace() and query[i] not in '()"':
            i += 1
        word = query[start:i]
        if word in ("AND", "OR", "NOT"):
            tokens.append(_Token(word, start + 1))
            continue
        name, colon, value = word.partition(":")
        if colon and re.fullmatch(r"[A-Za-z_]+", name):
            field = name.lower()
            if field not in _ALL_FIELDS:
                raise _error(
                    start + 1,
                    f"unknown field {name + ':'!r} "
                    f"(known: {', '.join(f + ':' for f in _ALL_FIELDS)})",
                )
            if not value and i < n and query[i] == '"':
                value, i = _read_quoted(query, i)
                tokens.append(_Token("term", start + 1, field=field, value=value, phrase=True))
                continue
            if not value:
                raise _error(start + 1, f"{name}: needs a value")
            tokens.append(_Token("term", start + 1, field=field, value=value))
            continue
        prefix = word.endswith("*") and len(word) > 1
        tokens.append(_Token("term", start + 1, value=word.rstrip("*") if prefix else word,
                             prefix=prefix))  # fmt: skip
    return tokens


# -- syntax tree -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A text-index condition, already in FTS5 syntax."""

    fts: str


@dataclass(frozen=True)
class Sql:
    """A condition on the messages row ``m``, with its parameters. A ``date:`` condition also
    keeps its bounds (epoch seconds, ``[low, high)``) so a search can use them as a range."""

    sql: str
    params: tuple[Any, ...]
    low: int | None = None
    high: int | None = None
    is_date: bool = False


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Text | Sql | And | Or | Not


class _Parser:
    def __init__(self, tokens: list[_Token], now: datetime, length: int) -> None:
        self.tokens = tokens
        self.pos = 0
        self.now = now
        self.end_column = length + 1

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.parse_or()
        token = self.peek()
        if token is not None:
            if token.kind == ")":
                raise _error(token.column, "this ')' has no matching '('")
            raise _error(token.column, f"unexpected {token.kind}")  # pragma: no cover
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while (token := self.peek()) is not None and token.kind == "OR":
            self.take()
            children.append(self.parse_and(after=token))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self, after: _Token | None = None) -> Node:
        children = [self.parse_not(after)]
        while (token := self.peek()) is not None and token.kind not in ("OR", ")"):
            if token.kind == "AND":
                self.take()
                children.append(self.parse_not(after=token))
            else:
                children.append(self.parse_not())
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_not(self, after: _Token | None = None) -> Node:
        token = self.peek()
        if token is None or token.kind in ("OR", "AND", ")"):
            column = token.column if token else self.end_column
            if after is not None:
                raise _error(after.column, f"{after.kind} needs a search term after it")
            if token is not None and token.kind == ")":
                raise _error(column, "empty parentheses or a ')' without a term before it")
            if token is not None:
                raise _error(column, f"{token.kind} needs a search term before it")
            raise _error(column, "a search term is missing")  # pragma: no cover
        self.take()
        if token.kind == "NOT":
            return Not(self.parse_not(after=token))
        if token.kind == "(":
            inner = self.parse_or()
            close = self.peek()
            if close is None or close.kind != ")":
                raise _error(token.column, "this '(' is never closed")
            self.take()
            return inner
        return self.term(token)

    def term(self, token: _Token) -> Node:
        if token.field is None:
            return Text(_fts_string(token, None))
        if token.field in _TEXT_FIELDS:
            return Text(_fts_string(token, _TEXT_FIELDS[token.field]))
        return _sql_term(token, self.now)


def _fts_string(token: _Token, column: str | None) -> str:
    words = search_form(token.value).strip()
    if not re.search(r"\w", words):
        raise _error(token.column, f"{token.value!r} has no word to search for")
    quoted = '"' + words.replace('"', '""') + '"'
    if token.prefix or is_unspaced(words):
        # One character of a script without spaces is indexed only inside its pairs.
        quoted += " *"
    return f"{{{column}}} : ({quoted})" if column else quoted


def _sql_term(token: _Token, now: datetime) -> Node:
    field, value = token.field, token.value
    if field in ("older_than", "newer_than"):
        if re.fullmatch(r"\d+m", value):  # Gmail's months
            value += "o"
        if not _RELATIVE.match(value):
            raise _error(token.column, f"{field}:{value} needs a time like 7d, 2w, 3m or 1y")
        bounds = f"..{value}" if field == "older_than" else f"{value}.."
        return _date_term(_Token("term", token.column, "date", bounds), now)
    if field in ("larger", "smaller"):
        size = _SIZE.match(value)
        if size is None:
            raise _error(token.column, f"{field}:{value} needs a size like 500K, 5M or 20000")
        limit = int(float(size.group(1)) * _SIZE_UNITS[size.group(2).lower()])
        # raw_size: the raw message itself is stored compressed (store.compression).
        return Sql(f"m.raw_size {'>' if field == 'larger' else '<'} ?", (limit,))
    if field == "in":
        if value.lower() == "anywhere":
            return Sql("1", ())
        if "*" in value or "?" in value:
            return Sql("lower(m.folder) GLOB ?", (_glob(value.lower()),))
        return Sql("m.folder = ? COLLATE NOCASE", (value,))
    if field == "folder":
        if "*" in value or "?" in value:
            return Sql("m.folder GLOB ?", (_glob(value),))
        return Sql("m.folder = ?", (value,))
    if field == "account":
        return Sql("m.account = ?", (value,))
    if field == "id":
        return Sql("m.message_id = ?", ("<" + value.strip().strip("<>") + ">",))
    if field == "signer":
        return Sql("lower(m.signer) = ?", (value.lower(),))
    if field == "date":
        return _date_term(token, now)
    lowered = value.lower()
    if field == "is":
        if lowered not in _IS_VALUES:
            raise _error(token.column, f"is:{value} is unknown (use {_names(_IS_VALUES)})")
        sql, params = _IS_VALUES[lowered]
        return Sql(sql, params)
    if field == "sig":
        statuses = {s.value for s in SignatureStatus}
        if lowered not in statuses:
            raise _error(token.column, f"sig:{value} is unknown (use {_names(statuses)})")
        return Sql("m.signature = ?", (lowered,))
    if field == "dec":
        statuses = {s.value for s in Decryption}
        if lowered not in statuses:
            raise _error(token.column, f"dec:{value} is unknown (use {_names(statuses)})")
        return Sql("m.decryption = ?", (lowered,))
    if field == "has":
        if lowered not in _HAS_VALUES:
            raise _error(token.column, f"has:{value} is unknown (use {_names(_HAS_VALUES)})")
        return Sql(_HAS_VALUES[lowered], ())
    if field == "scan":
        if lowered.startswith("infected:"):
            return Sql("m.scan = ?", ("infected:" + value.partition(":")[2],))
        if lowered not in _SCAN_VALUES:
            raise _error(token.column, f"scan:{value} is unknown (use {_names(_SCAN_VALUES)})")
        return Sql(_SCAN_VALUES[lowered], ())
    raise _error(token.column, f"unknown field {field}:")  # pragma: no cover


def _names(values: Any) -> str:
    return "|".join(sorted(values))


def _glob(pattern: str) -> str:
    # SQLite GLOB has no escape character: a literal '[' is written '[[]'.
    return pattern.replace("[", "[[]")


# -- dates -----------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d{1,6})(min|h|d|w|mo|y)$")
_UNITS = {"min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}


def _date_term(token: _Token, now: datetime) -> Node:
    value = token.value
    if ".." in value:
        low_text, _, high_text = value.partition("..")
        if not low_text and not high_text:
            raise _error(token.column, "date:.. needs at least one end")
        low = _moment(low_text, token, now)[0] if low_text else None
        high = _moment(high_text, token, now)[1] if high_text else None
    elif _RELATIVE.match(value):
        low, high = _moment(value, token, now)[0], None  # date:2w means the last two weeks
    else:
        low, high = _moment(value, token, now)
    if low is not None and high is not None and low >= high:
        raise _error(token.column, f"date:{value} is an empty range (its start is after its end)")
    parts, params = [], []
    low_epoch = int(low.timestamp()) if low is not None else None
    high_epoch = int(high.timestamp()) if high is not None else None
    if low_epoch is not None:
        parts.append("m.date >= ?")
        params.append(low_epoch)
    if high_epoch is not None:
        parts.append("m.date < ?")
        params.append(high_epoch)
    return Sql(" AND ".join(parts), tuple(params), low_epoch, high_epoch, is_date=True)


def _moment(text: str, token: _Token, now: datetime) -> tuple[datetime, datetime]:
    """The instant range [start, end) that ``text`` names (a day, month, year or instant)."""
    now = now.astimezone(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "now":
        return now, now + timedelta(seconds=1)
    if text == "today":
        return today, today + timedelta(days=1)
    if text == "yesterday":
        return today - timedelta(days=1), today
    relative = _RELATIVE.match(text)
    if relative:
        moment = now - timedelta(seconds=int(relative.group(1)) * _UNITS[relative.group(2)])
        return moment, moment
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            start = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
            following = (start + timedelta(days=32)).replace(day=1)
            return start, following
        if re.fullmatch(r"\d{4}", text):
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            return start, start.replace(year=start.year + 1)
    except ValueError:
        pass
    raise _error(
        token.column,
        f"{text!r} is not a date "
        "(use 2026-01-31, 2026-01, 2026, today, yesterday, 7d, 2w, 3mo, 1y)",
    )


# -- compiling to SQL ------------------------------------------------------------------------------


def _as_fts(node: Node) -> str | None:
    """The whole subtree as one FTS5 expression, or None when part of it is not text."""
    if isinstance(node, Text):
        return node.fts
    if isinstance(node, Or):
        parts = [_as_fts(c) for c in node.children]
        if any(p is None for p in parts):
            return None
        return " OR ".join(f"({p})" for p in parts)
    if isinstance(node, And):
        positive = [_as_fts(c) for c in node.children if not isinstance(c, Not)]
        negative = [_as_fts(c.child) for c in node.children if isinstance(c, Not)]
        if not positive or any(p is None for p in positive + negative):
            return None  # FTS5's NOT is binary: "a NOT b" needs a positive side
        expr = " AND ".join(f"({p})" for p in positive)
        if negative:
            expr = f"({expr}) NOT ({' OR '.join(f'({n})' for n in negative)})"
        return expr
    return None


# The text index rowid is the negated sort key (cache_schema.text_rowid).
_MATCH = "m.sort_key IN (SELECT -rowid FROM message_text WHERE message_text MATCH ?)"


def _to_sql(node: Node) -> tuple[str, list[Any]]:
    fts = _as_fts(node)
    if fts is not None:
        return _MATCH, [fts]
    if isinstance(node, Sql):
        return f"({node.sql})", list(node.params)
    if isinstance(node, Not):
        inner_sql, inner_params = _to_sql(node.child)
        return f"(NOT {inner_sql})", inner_params
    if isinstance(node, Or):
        parts = [_to_sql(c) for c in node.children]
        return "(" + " OR ".join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    assert isinstance(node, And)
    # Put every text condition into one MATCH (the index does the AND/NOT itself, fast); the
    # rest are row conditions.
    text_children = [
        c
        for c in node.children
        if _as_fts(c) is not None or (isinstance(c, Not) and _as_fts(c.child) is not None)
    ]
    others = [c for c in node.children if c not in text_children]
    sql_parts: list[str] = []
    params: list[Any] = []
    combined = _as_fts(And(tuple(text_children))) if text_children else None
    if combined is not None:
        sql_parts.append(_MATCH)
        params.append(combined)
    else:
        others = list(node.children)
    for child in others:
        sql, child_params = _to_sql(child)
        sql_parts.append(sql)
        params.extend(child_params)
    return "(" + " AND ".join(sql_parts) + ")", params


def parse_query(query: str, *, now: datetime) -> Node | None:
    """The syntax tree of ``query`` (None for an empty query). Raises :class:`UsageError`."""
    tokens = tokenize(query)
    if not tokens:
        return None
    return _Parser(tokens, now, len(query)).parse()


@dataclass(frozen=True)
class Compiled:
    """A query ready to run: an FTS5 expression that can drive the search (or None), date bounds
    in epoch seconds that apply to the whole query (``[low, high)``), and the remaining SQL
    condition over the messages row ``m`` with its parameters."""

    match: str | None
    low: int | None
    high: int | None
    where: str
    params: list[Any]


def compile_query(query: str, *, now: datetime) -> Compiled:
    """``query`` compiled for :meth:`Cache.search <smime_companion.store.cache.Cache.search>`.

    ``now`` anchors relative dates. Raises :class:`UsageError` (``malformed query at column N:
    ...``) for a malformed query.
    """
    node = parse_query(query, now=now)
    if node is None:
        return Compiled(None, None, None, "1", [])
    whole = _as_fts(node)
    if whole is not None:
        return Compiled(whole, None, None, "1", [])
    if isinstance(node, Sql) and node.is_date:
        return Compiled(None, node.low, node.high, "1", [])
    if not isinstance(node, And):
        where, where_params = _to_sql(node)
        return Compiled(None, None, None, where, where_params)
    # A top-level AND: its text part drives the search, its dates bound it, the rest filters.
    low: int | None = None
    high: int | None = None
    rest: list[Node] = []
    for child in node.children:
        if isinstance(child, Sql) and child.is_date:
            if child.low is not None:
                low = child.low if low is None else max(low, child.low)
            if child.high is not None:
                high = child.high if high is None else min(high, child.high)
        else:
            rest.append(child)
    text = [
        c
        for c in rest
        if _as_fts(c) is not None or (isinstance(c, Not) and _as_fts(c.child) is not None)
    ]
    match = _as_fts(And(tuple(text))) if text else None
    if match is not None:
        rest = [c for c in rest if c not in text]
    where_parts: list[str] = []
    params: list[Any] = []
    for child in rest:
        sql, child_params = _to_sql(child)
        where_parts.append(sql)
        params.extend(child_params)
    return Compiled(match, low, high, " AND ".join(where_parts) or "1", params)
