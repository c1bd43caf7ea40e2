"""The run-search filter language and its compilation to PostgreSQL with asyncpg placeholders.

MLflow's search syntax, with OR and parentheses added:

    metrics.auc > 0.8 and (params.model = 'rf' or tags.team IN ('risk', "fraud"))

- An identifier is `<entity>.<key>` (metrics, params, tags or attributes, or an alias of one). The first
  dot ends the entity and the rest is the key; a key with spaces or quotes is written in backticks or
  double quotes: metrics.`f1 score`, params."learning rate". Run attributes may also be named bare.
- Strings are in single or double quotes; a quote inside is written twice ('it''s', "a ""b"" c").
  Backslashes are kept as written, so a LIKE pattern escapes % and _ with them ('50\\%').
- start_time and end_time compare with epoch milliseconds or a quoted ISO-8601 time (UTC if no offset).
- A metric, param or tag comparison matches only runs that have that key, as in MLflow.
Every value and key becomes a bind parameter: user text never enters the SQL string.

Metric and param values are in two places: the key-value tables (`latest_metrics`, `params`), indexed by
key and value, and each run's own copies (`runs.metrics`, `runs.params`, written by the same statement,
migration 0007). A search within named experiments tests the copies of those experiments' runs, which
their index finds, where the tables' indexes would first find the key in every experiment (the benchmark's
search over 300 runs: 0.5 against 1.5 ms; one experiment of 2,000 runs among 200,000: 5 against 280 ms).
A search across every experiment keeps to the tables, whose indexes find a selective key and value
without reading every run (2 against 50 ms among 200,000). Sorting always reads the copies: no index
serves it, and a probe per run cost more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Entity = Literal["metric", "param", "tag", "attribute"]
ComparisonValue = float | str | datetime | tuple[str, ...]

_ENTITIES: dict[str, Entity] = {
    **dict.fromkeys(("metrics", "metric"), "metric"),
    **dict.fromkeys(("params", "param", "parameters"), "param"),
    **dict.fromkeys(("tags", "tag"), "tag"),
    **dict.fromkeys(("attributes", "attribute", "attr", "run"), "attribute"),
}
_TEXT_ATTRIBUTES = ("id", "experiment_id", "name", "status", "dataset_fingerprint", "code_version")
_TIME_ATTRIBUTES = ("start_time", "end_time")
# The names a filter may use for run attributes, and the column of `runs` each one reads.
_ATTRIBUTE_COLUMNS = {column: column for column in (*_TEXT_ATTRIBUTES, *_TIME_ATTRIBUTES)} | {
    "run_id": "id",
    "run_name": "name",
}
_SORTABLE_ATTRIBUTES = ("start_time", "end_time", "name", "status")
_KEYWORDS = frozenset({"AND", "OR", "LIKE", "ILIKE", "IN", "NOT"})
_ORDERING_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
_STRING_COMPARATORS = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
_SQL_OPERATORS = {"!=": "<>"}  # the others are written the same in SQL
_LIST_QUANTIFIERS = {"IN": "= ANY", "NOT IN": "<> ALL"}
# Metrics and params live in tables of their own: (table, alias) holding each run's value per key.
_KEY_VALUE_TABLES = {"metric": ("latest_metrics", "m"), "param": ("params", "p")}
# The same values in the run's own copies: a metric is a jsonb number, or a string for NaN and +-Infinity,
# which float8 reads back exactly as the table holds it.
_RUN_COPIES = {"metric": "(r.metrics ->> {key}::text)::float8", "param": "(r.params ->> {key}::text)"}
_TIEBREAKERS = "r.start_time DESC, r.id ASC"

_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_\-./:]*)
      | (?P<operator>[=!<>]+)
      | (?P<punctuation>[(),])""",
    re.VERBOSE,
)


class FilterSyntaxError(ValueError):
    """A filter or order-by clause that cannot be parsed: where (0-based) and on what text."""

    def __init__(self, message: str, position: int, token: str) -> None:
        super().__init__(message)
        self.position = position
        self.token = token


@dataclass(frozen=True)
class Comparison:
    entity: Entity
    key: str  # for attributes, the column of `runs` (run_id is stored as id)
    comparator: str  # one of _ORDERING_COMPARATORS or _STRING_COMPARATORS
    value: ComparisonValue


@dataclass(frozen=True)
class And:
    operands: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[FilterNode, ...]


FilterNode = Comparison | And | Or


@dataclass(frozen=True)
class OrderBy:
    entity: Entity
    key: str
    descending: bool


@dataclass(frozen=True)
class CompiledQuery:
    where: str  # SQL boolean expression over the run table aliased `r`
    order_by: str  # SQL ORDER BY list, without the keywords
    args: list[object]  # values for $first_placeholder, $first_placeholder + 1, ...


@dataclass(frozen=True)
class _Token:
    kind: str  # a _TOKEN group name, "string", "(", ")", "," or "end"
    text: str  # as written, for error messages
    position: int
    value: str = ""  # a string's content, a name with its quoted key unquoted


def _shown(token: _Token) -> str:
    return "end of input" if token.kind == "end" else repr(token.text)


def _error(message: str, token: _Token) -> FilterSyntaxError:
    return FilterSyntaxError(message, token.position, token.text)


def _unexpected(token: _Token, expected: str) -> FilterSyntaxError:
    return _error(f"expected {expected} at position {token.position}, got {_shown(token)}", token)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The content of the quoted text opening at `start` and the index just past its closing quote."""
    quote = text[start]
    parts: list[str] = []
    position = start + 1
    while (end := text.find(quote, position)) != -1:
        parts.append(text[position:end])
        if not text.startswith(quote, end + 1):
            return "".join(parts), end + 1
        parts.append(quote)  # a doubled quote stands for one quote
        position = end + 2
    raise FilterSyntaxError(f"unterminated string at position {start}", start, text[start:])


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if text[position] in "'\"":
            value, end = _read_quoted(text, position)
            tokens.append(_Token("string", text[position:end], position, value))
            position = end
            continue
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            raise FilterSyntaxError(f"unexpected character {char!r} at position {position}", position, char)
        kind, value, end = match.lastgroup or "", match.group(), match.end()
        if kind == "name" and value.endswith(".") and text[end : end + 1] in ("`", '"'):
            key, end = _read_quoted(text, end)  # params."learning rate", metrics.`f1 score`
            value += key
        if kind == "punctuation":
            kind = value
        if kind != "space":
            tokens.append(_Token(kind, text[position:end], position, value))
        position = end
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _compares_by_order(entity: Entity, key: str) -> bool:
    return entity == "metric" or (entity == "attribute" and key in _TIME_ATTRIBUTES)


def _wrong_value(entity: Entity, key: str, expected: str, token: _Token) -> FilterSyntaxError:
    subject = f"{key} compares" if entity == "attribute" else f"{entity}s compare"
    return _error(f"{subject} with {expected}, got {_shown(token)} at position {token.position}", token)


def _timestamp(token: _Token, key: str) -> datetime:
    try:
        if token.kind == "number":
            return datetime.fromtimestamp(float(token.text) / 1000, tz=UTC)
        if token.kind == "string":
            parsed = datetime.fromisoformat(token.value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass  # reported below, like any other value that is not a time
    raise _wrong_value("attribute", key, "epoch milliseconds or a quoted ISO-8601 time", token)


class _Parser:
    """Recursive descent over the tokens of one filter or order-by clause."""

    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0

    def peek(self) -> _Token:
        return self._tokens[self._index]

    def advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index = min(self._index + 1, len(self._tokens) - 1)
        return token

    def accept_keyword(self, keyword: str) -> bool:
        token = self.peek()
        if token.kind == "name" and token.text.upper() == keyword:
            self.advance()
            return True
        return False

    def expect_end(self, expected: str) -> None:
        token = self.peek()
        if token.kind != "end":
            raise _error(
                f"unexpected {token.text!r} at position {token.position} (expected {expected})", token
            )

    def expression(self) -> FilterNode:
        operands = [self.term()]
        while self.accept_keyword("OR"):
            operands.append(self.term())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def term(self) -> FilterNode:
        operands = [self.factor()]
        while self.accept_keyword("AND"):
            operands.append(self.factor())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def factor(self) -> FilterNode:
        if self.peek().kind != "(":
            return self.comparison()
        opening = self.advance()
        inner = self.expression()
        closing = self.advance()
        if closing.kind != ")":
            unclosed = f"the '(' at position {opening.position}"
            raise _error(
                f"missing ')' for {unclosed}: got {_shown(closing)} at position {closing.position}", closing
            )
        return inner

    def identifier(self) -> tuple[Entity, str, _Token]:
        token = self.advance()
        if token.kind != "name" or token.text.upper() in _KEYWORDS:
            raise _unexpected(token, "an identifier such as metrics.auc, params.model or status")
        prefix, dot, key = token.value.partition(".")
        if not dot:
            return "attribute", self._attribute_column(prefix, token), token
        entity = _ENTITIES.get(prefix)
        if entity is None:
            known = "metrics, params, tags or attributes"
            raise _error(f"unknown entity {prefix!r} at position {token.position} (expected {known})", token)
        if not key:
            raise _error(f"missing key after {token.text!r} at position {token.position}", token)
        if entity == "attribute":
            key = self._attribute_column(key, token)
        return entity, key, token

    @staticmethod
    def _attribute_column(name: str, token: _Token) -> str:
        if name not in _ATTRIBUTE_COLUMNS:
            known = ", ".join(_ATTRIBUTE_COLUMNS)
            raise _error(f"unknown attribute {name!r} at position {token.position} (expected {known})", token)
        return _ATTRIBUTE_COLUMNS[name]

    def comparison(self) -> Comparison:
        entity, key, identifier = self.identifier()
        token = self.advance()
        comparator = token.text.upper() if token.kind in ("name", "operator") else ""
        if comparator == "NOT":
            if not self.accept_keyword("IN"):
                raise _unexpected(self.peek(), "IN after NOT")
            comparator = "NOT IN"
        if comparator not in (*_ORDERING_COMPARATORS, *_STRING_COMPARATORS):
            raise _unexpected(
                token, f"a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN) after {identifier.text}"
            )
        allowed = _ORDERING_COMPARATORS if _compares_by_order(entity, key) else _STRING_COMPARATORS
        if comparator not in allowed:
            raise _wrong_value(entity, key, ", ".join(allowed), token)
        return Comparison(entity, key, comparator, self.value(entity, key, comparator))

    def value(self, entity: Entity, key: str, comparator: str) -> ComparisonValue:
        if comparator in ("IN", "NOT IN"):
            return self.string_list(entity, key)
        token = self.advance()
        if entity == "attribute" and key in _TIME_ATTRIBUTES:
            return _timestamp(token, key)
        if entity == "metric":
            if token.kind != "number":
                raise _wrong_value(entity, key, "numbers", token)
            return float(token.text)
        if token.kind != "string":
            raise _wrong_value(entity, key, "quoted strings", token)
        return token.value

    def string_list(self, entity: Entity, key: str) -> tuple[str, ...]:
        if (opening := self.advance()).kind != "(":
            raise _unexpected(opening, "'(' to open the IN list")
        values: list[str] = []
        while True:
            token = self.advance()
            if token.kind != "string":
                raise _wrong_value(entity, key, "quoted strings", token)
            values.append(token.value)
            separator = self.advance()
            if separator.kind == ")":
                return tuple(values)
            if separator.kind != ",":
                raise _unexpected(separator, "',' or ')' in the IN list")


def parse_filter(text: str) -> FilterNode | None:
    """The filter's syntax tree, or None for an empty filter (no condition)."""
    parser = _Parser(text)
    if parser.peek().kind == "end":
        return None
    node = parser.expression()
    parser.expect_end("AND, OR or the end of the filter")
    return node


def _parse_order_clause(index: int, clause: str) -> OrderBy:
    try:
        parser = _Parser(clause)
        entity, key, token = parser.identifier()
        if entity == "attribute" and key not in _SORTABLE_ATTRIBUTES:
            sortable = ", ".join(_SORTABLE_ATTRIBUTES)
            raise _error(
                f"cannot sort by {token.text!r} at position {token.position} (sortable: {sortable})", token
            )
        descending = parser.accept_keyword("DESC")
        if not descending:
            parser.accept_keyword("ASC")
        parser.expect_end("ASC, DESC or the end of the clause")
    except FilterSyntaxError as error:
        raise FilterSyntaxError(
            f"order_by[{index}] {clause!r}: {error}", error.position, error.token
        ) from None
    return OrderBy(entity, key, descending)


def parse_order_by(clauses: list[str]) -> list[OrderBy]:
    """Each `<identifier> [ASC|DESC]` clause parsed; errors name the clause by its index."""
    return [_parse_order_clause(index, clause) for index, clause in enumerate(clauses)]


class _SqlBuilder:
    """SQL text with every value bound as the next placeholder, in the order the text uses them."""

    def __init__(self, first_placeholder: int, within_experiments: bool) -> None:
        self.args: list[object] = []
        self._first_placeholder = first_placeholder
        self._within_experiments = within_experiments

    def bind(self, value: object) -> str:
        self.args.append(value)
        return f"${self._first_placeholder + len(self.args) - 1}"

    def condition(self, node: FilterNode) -> str:
        if isinstance(node, And | Or):
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(self.condition(operand) for operand in node.operands) + ")"
        if node.entity == "attribute":
            return self.predicate(f"r.{node.key}", node)
        if node.entity == "tag":
            return self.predicate(f"(r.tags ->> {self.bind(node.key)}::text)", node)
        if self._within_experiments:  # a run without the key reads NULL, which no comparison matches
            return self.predicate(_RUN_COPIES[node.entity].format(key=self.bind(node.key)), node)
        table, alias = _KEY_VALUE_TABLES[node.entity]
        key_placeholder = self.bind(node.key)
        return (
            f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.run_id = r.id "
            f"AND {alias}.key = {key_placeholder} AND {self.predicate(f'{alias}.value', node)})"
        )

    def predicate(self, column: str, comparison: Comparison) -> str:
        if isinstance(comparison.value, tuple):
            quantifier = _LIST_QUANTIFIERS[comparison.comparator]
            return f"{column} {quantifier}({self.bind(list(comparison.value))}::text[])"
        operator = _SQL_OPERATORS.get(comparison.comparator, comparison.comparator)
        return f"{column} {operator} {self.bind(comparison.value)}"

    def sort_key(self, order: OrderBy) -> str:
        if order.entity == "attribute":
            column = f"r.{order.key}"
        elif order.entity == "tag":
            column = f"(r.tags ->> {self.bind(order.key)}::text)"
        else:
            column = _RUN_COPIES[order.entity].format(key=self.bind(order.key))
        return f"{column} {'DESC' if order.descending else 'ASC'} NULLS LAST"


def compile_search(
    filter_text: str, order_by: list[str], *, first_placeholder: int = 1, within_experiments: bool = False
) -> CompiledQuery:
    """The filter as a WHERE expression and the clauses as an ORDER BY list over runs aliased `r`.

    Placeholders start at `first_placeholder` so the caller can bind its own before them. The order
    always ends with r.start_time DESC, r.id ASC, which keeps pagination stable. `within_experiments`:
    the caller limits the runs to named experiments, so metric and param comparisons test each run's
    copies rather than probe the key-value tables (same runs, same order). Raises FilterSyntaxError for a
    malformed filter or order-by clause.
    """
    node = parse_filter(filter_text)
    orders = parse_order_by(order_by)
    builder = _SqlBuilder(first_placeholder, within_experiments)
    where = "TRUE" if node is None else builder.condition(node)
    sort_keys = [builder.sort_key(order) for order in orders]
    return CompiledQuery(where=where, order_by=", ".join([*sort_keys, _TIEBREAKERS]), args=builder.args)
