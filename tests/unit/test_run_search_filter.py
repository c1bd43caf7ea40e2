"""The run-search filter language: what it parses to, the SQL it compiles to, and how it refuses mistakes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.registry.search import (
    And,
    Comparison,
    FilterSyntaxError,
    Or,
    OrderBy,
    compile_search,
    parse_filter,
    parse_order_by,
)

AUC_ABOVE = Comparison("metric", "auc", ">", 0.8)
MODEL_RF = Comparison("param", "model", "=", "rf")
TEAM_RISK = Comparison("tag", "team", "=", "risk")
DEFAULT_ORDER = "r.start_time DESC, r.id ASC"


def placeholders(sql: str) -> list[int]:
    return [int(number) for number in re.findall(r"\$(\d+)", sql)]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_filter_has_no_condition(text: str) -> None:
    assert parse_filter(text) is None
    assert compile_search(text, []) == compile_search("", [])
    assert compile_search(text, []).where == "TRUE"


def test_and_binds_tighter_than_or() -> None:
    parsed = parse_filter("metrics.auc > 0.8 and params.model = 'rf' or tags.team = 'risk'")
    assert parsed == Or((And((AUC_ABOVE, MODEL_RF)), TEAM_RISK))


def test_parentheses_group_before_and() -> None:
    parsed = parse_filter("metrics.auc > 0.8 and (params.model = 'rf' or tags.team = 'risk')")
    assert parsed == And((AUC_ABOVE, Or((MODEL_RF, TEAM_RISK))))


def test_chains_of_the_same_operator_flatten_into_one_node() -> None:
    assert parse_filter("((metrics.auc > 0.8)) and params.model = 'rf' and tags.team = 'risk'") == And(
        (AUC_ABOVE, MODEL_RF, TEAM_RISK)
    )


def test_keywords_are_case_insensitive() -> None:
    parsed = parse_filter("params.model iN ('rf') AnD (tags.team like 'r%' oR tags.team Not In ('x'))")
    assert parsed == And(
        (
            Comparison("param", "model", "IN", ("rf",)),
            Or((Comparison("tag", "team", "LIKE", "r%"), Comparison("tag", "team", "NOT IN", ("x",)))),
        )
    )


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("metrics.k = 1", "metric"),
        ("metric.k = 1", "metric"),
        ("params.k = 'v'", "param"),
        ("param.k = 'v'", "param"),
        ("parameters.k = 'v'", "param"),
        ("tags.k = 'v'", "tag"),
        ("tag.k = 'v'", "tag"),
    ],
)
def test_entity_aliases_name_the_same_entity(text: str, entity: str) -> None:
    parsed = parse_filter(text)
    assert isinstance(parsed, Comparison)
    assert (parsed.entity, parsed.key) == (entity, "k")


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("status = 'finished'", "status"),
        ("attributes.status = 'finished'", "status"),
        ("attribute.status = 'finished'", "status"),
        ("attr.status = 'finished'", "status"),
        ("run.status = 'finished'", "status"),
        ("run_id = 'finished'", "id"),
        ("id = 'finished'", "id"),
        ("run_name = 'finished'", "name"),
        ("experiment_id = 'finished'", "experiment_id"),
        ("dataset_fingerprint = 'finished'", "dataset_fingerprint"),
        ("code_version = 'finished'", "code_version"),
    ],
)
def test_attributes_may_be_named_bare_or_with_an_entity_and_resolve_to_their_column(
    text: str, column: str
) -> None:
    assert parse_filter(text) == Comparison("attribute", column, "=", "finished")


def test_the_first_dot_ends_the_entity_and_the_rest_is_the_key() -> None:
    assert parse_filter("metrics.val.auc >= 0.5") == Comparison("metric", "val.auc", ">=", 0.5)
    assert parse_filter("tags.mlflow.user = 'ana'") == Comparison("tag", "mlflow.user", "=", "ana")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("metrics.`f1 score` > 0", "f1 score"),
        ('metrics."f1 score" > 0', "f1 score"),
        ("metrics.`a``b` > 0", "a`b"),
        ("metrics.`and` > 0", "and"),
    ],
)
def test_keys_can_be_quoted_in_backticks_or_double_quotes(text: str, key: str) -> None:
    assert parse_filter(text) == Comparison("metric", key, ">", 0.0)


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("'rf'", "rf"),
        ('"rf"', "rf"),
        ("'it''s'", "it's"),
        ('"a ""b"" c"', 'a "b" c'),
        ("'say \"hi\"'", 'say "hi"'),
        ("'50\\%'", "50\\%"),
        ("''", ""),
        ("'  spaced and or  '", "  spaced and or  "),
    ],
)
def test_strings_take_either_quote_and_escape_a_quote_by_doubling_it(written: str, value: str) -> None:
    assert parse_filter(f"params.model = {written}") == Comparison("param", "model", "=", value)


@pytest.mark.parametrize(
    ("written", "value"),
    [("3", 3.0), ("0.25", 0.25), (".5", 0.5), ("-2", -2.0), ("1e-3", 0.001), ("-1.5E2", -150.0)],
)
def test_metrics_compare_with_any_number(written: str, value: float) -> None:
    assert parse_filter(f"metrics.loss<{written}") == Comparison("metric", "loss", "<", value)


def test_start_and_end_time_take_epoch_milliseconds_or_iso_times() -> None:
    new_year = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_filter("start_time >= 1704067200000") == Comparison(
        "attribute", "start_time", ">=", new_year
    )
    assert parse_filter("end_time < '2024-01-01T00:00:00Z'") == Comparison(
        "attribute", "end_time", "<", new_year
    )
    assert parse_filter("start_time = '2024-01-01'") == Comparison("attribute", "start_time", "=", new_year)
    plus_two = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert parse_filter("start_time != '2024-01-01T02:00+02:00'") == Comparison(
        "attribute", "start_time", "!=", plus_two
    )


def test_in_lists_keep_their_values_in_order() -> None:
    assert parse_filter("status NOT IN ('failed', \"killed\")") == Comparison(
        "attribute", "status", "NOT IN", ("failed", "killed")
    )


def test_order_by_clauses_default_to_ascending() -> None:
    assert parse_order_by(["metrics.auc DESC", "params.`learning rate` asc", "tags.team", "start_time"]) == [
        OrderBy("metric", "auc", descending=True),
        OrderBy("param", "learning rate", descending=False),
        OrderBy("tag", "team", descending=False),
        OrderBy("attribute", "start_time", descending=False),
    ]


# ------------------------------------------------------------------ compilation


def test_metric_comparisons_compile_to_exists_on_latest_metrics() -> None:
    compiled = compile_search("metrics.auc > 0.8", [])
    assert compiled.where == (
        "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_id = r.id AND m.key = $1 AND m.value > $2)"
    )
    assert compiled.args == ["auc", 0.8]


def test_param_comparisons_compile_to_exists_on_params() -> None:
    compiled = compile_search("params.model != 'rf'", [])
    assert (
        compiled.where
        == "EXISTS (SELECT 1 FROM params p WHERE p.run_id = r.id AND p.key = $1 AND p.value <> $2)"
    )
    assert compiled.args == ["model", "rf"]


def test_within_experiments_metric_and_param_comparisons_read_the_runs_copies() -> None:
    compiled = compile_search(
        "metrics.auc > 0.8 and params.model IN ('rf', 'gb')", [], within_experiments=True
    )
    assert compiled.where == (
        "((r.metrics ->> $1::text)::float8 > $2 AND (r.params ->> $3::text) = ANY($4::text[]))"
    )
    assert compiled.args == ["auc", 0.8, "model", ["rf", "gb"]]


def test_tag_comparisons_read_the_tags_object_so_a_missing_key_is_null() -> None:
    compiled = compile_search("tags.team ILIKE 'Risk%'", [])
    assert compiled.where == "(r.tags ->> $1::text) ILIKE $2"
    assert compiled.args == ["team", "Risk%"]


def test_in_and_not_in_compile_to_array_quantifiers() -> None:
    compiled = compile_search("status IN ('failed', 'killed') and tags.team NOT IN ('risk')", [])
    assert compiled.where == "(r.status = ANY($1::text[]) AND (r.tags ->> $2::text) <> ALL($3::text[]))"
    assert compiled.args == [["failed", "killed"], "team", ["risk"]]


def test_attribute_comparisons_read_run_columns() -> None:
    compiled = compile_search("run_name LIKE 'rf-%' or start_time > 0", [])
    assert compiled.where == "(r.name LIKE $1 OR r.start_time > $2)"
    assert compiled.args == ["rf-%", datetime(1970, 1, 1, tzinfo=UTC)]


def test_nested_groups_compile_with_explicit_parentheses() -> None:
    compiled = compile_search("status = 'a' or (status = 'b' and (name = 'c' or name = 'd'))", [])
    assert compiled.where == "(r.status = $1 OR (r.status = $2 AND (r.name = $3 OR r.name = $4)))"


def test_placeholders_start_at_first_placeholder_and_args_follow_them_in_order() -> None:
    compiled = compile_search(
        "(metrics.auc > 0.8 or params.model IN ('rf', 'gb')) and tags.team = 'risk'",
        ["metrics.auc DESC", "tags.owner"],
        first_placeholder=4,
    )
    numbers = placeholders(compiled.where) + placeholders(compiled.order_by)
    assert numbers == list(range(4, 4 + len(compiled.args)))
    assert compiled.args == ["auc", 0.8, "model", ["rf", "gb"], "team", "risk", "auc", "owner"]


def test_user_text_never_appears_in_the_sql() -> None:
    hostile = "x'); DROP TABLE runs; --"
    filter_text = (
        f"params.`{hostile}` = '{hostile.replace(chr(39), chr(39) * 2)}' "
        f'or tags."{hostile}" LIKE "{hostile}" or metrics.`{hostile}` > 1'
    )
    compiled = compile_search(filter_text, [f"tags.`{hostile}` DESC"])
    sql = compiled.where + compiled.order_by
    assert "DROP" not in sql
    assert "--" not in sql
    assert compiled.args.count(hostile) == 6


def test_order_by_reads_the_runs_copies_nulls_last_then_the_tiebreakers() -> None:
    compiled = compile_search("", ["metrics.auc DESC", "params.model", "tags.team desc", "end_time"])
    assert compiled.order_by == (
        "(r.metrics ->> $1::text)::float8 DESC NULLS LAST, "
        "(r.params ->> $2::text) ASC NULLS LAST, "
        "(r.tags ->> $3::text) DESC NULLS LAST, "
        f"r.end_time ASC NULLS LAST, {DEFAULT_ORDER}"
    )
    assert compiled.args == ["auc", "model", "team"]


def test_without_order_by_runs_come_newest_first_with_id_as_tiebreaker() -> None:
    assert compile_search("", []).order_by == DEFAULT_ORDER


def test_order_by_placeholders_follow_the_filters() -> None:
    compiled = compile_search("tags.team = 'risk'", ["metrics.auc"], first_placeholder=3)
    assert compiled.where == "(r.tags ->> $3::text) = $4"
    assert compiled.order_by.startswith("(r.metrics ->> $5::text)")
    assert compiled.args == ["team", "risk", "auc"]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "position", "token", "message"),
    [
        (
            "metrics.auc == 0.8",
            12,
            "==",
            "expected a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN) after",
        ),
        ("metrics.auc > high", 14, "high", "metrics compare with numbers, got 'high' at position 14"),
        ("metrics.auc LIKE '0.9%'", 12, "LIKE", "metrics compare with =, !=, <, <=, >, >=, got 'LIKE'"),
        ("metrics.auc >", 13, "", "metrics compare with numbers, got end of input at position 13"),
        ("metricz.auc > 1", 0, "metricz.auc", "unknown entity 'metricz' at position 0 (expected metrics,"),
        ("metrics. > 1", 0, "metrics.", "missing key after 'metrics.'"),
        ("params.model = 'rf", 15, "'rf", "unterminated string at position 15"),
        ("params.`learning rate = 'x'", 7, "`learning rate = 'x'", "unterminated string at position 7"),
        ("params.model = 0.5", 15, "0.5", "params compare with quoted strings, got '0.5'"),
        ("params.model < 'rf'", 13, "<", "params compare with =, !=, LIKE, ILIKE, IN, NOT IN, got '<'"),
        ("params.model NOT LIKE 'x'", 17, "LIKE", "expected IN after NOT at position 17"),
        ("params.model IN 'rf'", 16, "'rf'", "expected '(' to open the IN list"),
        ("params.model IN ()", 17, ")", "params compare with quoted strings, got ')'"),
        ("params.model IN ('rf' 'gb')", 22, "'gb'", "expected ',' or ')' in the IN list at position 22"),
        ("colour = 'red'", 0, "colour", "unknown attribute 'colour' at position 0"),
        ("attributes.colour = 'red'", 0, "attributes.colour", "unknown attribute 'colour'"),
        ("start_time > 'yesterday'", 13, "'yesterday'", "start_time compares with epoch milliseconds or"),
        ("status > 'a'", 7, ">", "status compares with =, !=, LIKE, ILIKE, IN, NOT IN, got '>'"),
        ("metrics.a > 1 and and metrics.b > 2", 18, "and", "expected an identifier such as metrics.auc"),
        (
            "metrics.a > 1 metrics.b > 2",
            14,
            "metrics.b",
            "unexpected 'metrics.b' at position 14 (expected AND, OR",
        ),
        ("metrics.a > 1)", 13, ")", "unexpected ')' at position 13"),
        (
            "(metrics.a > 1 or metrics.b > 2",
            31,
            "",
            "missing ')' for the '(' at position 0: got end of input",
        ),
        (
            "metrics.a > 1 or",
            16,
            "",
            "expected an identifier such as metrics.auc, params.model or status at position 16",
        ),
        ("status = 'x'; drop", 12, ";", "unexpected character ';' at position 12"),
        ("`status` = 'x'", 0, "`", "unexpected character '`' at position 0"),
    ],
)
def test_malformed_filters_name_the_position_and_token_of_the_mistake(
    text: str, position: int, token: str, message: str
) -> None:
    with pytest.raises(FilterSyntaxError) as raised:
        compile_search(text, [])
    assert (raised.value.position, raised.value.token) == (position, token)
    assert message in str(raised.value)
    assert text[position : position + len(token)] == token


@pytest.mark.parametrize(
    ("clauses", "position", "token", "message"),
    [
        (
            ["metrics.auc DOWN"],
            12,
            "DOWN",
            "order_by[0] 'metrics.auc DOWN': unexpected 'DOWN' at position 12",
        ),
        (["metrics.auc", "experiment_id"], 0, "experiment_id", "order_by[1] 'experiment_id': cannot sort by"),
        (["tagz.team"], 0, "tagz.team", "order_by[0] 'tagz.team': unknown entity 'tagz'"),
        ([""], 0, "", "order_by[0] '': expected an identifier"),
        (["metrics.auc DESC ASC"], 17, "ASC", "unexpected 'ASC' at position 17"),
    ],
)
def test_malformed_order_by_clauses_name_the_clause_position_and_token(
    clauses: list[str], position: int, token: str, message: str
) -> None:
    with pytest.raises(FilterSyntaxError) as raised:
        compile_search("", clauses)
    assert (raised.value.position, raised.value.token) == (position, token)
    assert message in str(raised.value)


def test_filter_syntax_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unterminated string"):
        parse_filter("tags.team = 'risk")
