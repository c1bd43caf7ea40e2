"""The command line's tables: a header row over aligned columns, numbers to the right, one line per row."""

from __future__ import annotations

import pytest

from flywheel.tables import format_cell, format_fields, format_table, format_timestamp


def test_columns_are_as_wide_as_their_widest_cell_with_a_header_row() -> None:
    table = format_table(["name", "status"], [("a-long-run-name", "finished"), ("short", "failed")])

    assert table.splitlines() == [
        "name             status",
        "a-long-run-name  finished",
        "short            failed",
    ]


def test_numeric_columns_are_right_aligned_and_missing_values_show_as_a_dash() -> None:
    table = format_table(["run", "auc"], [("a", 0.9), ("b", None), ("c", 12)])

    assert table.splitlines() == [
        "run  auc",
        "a    0.9",
        "b      -",
        "c     12",
    ]


def test_a_table_without_rows_is_its_header_alone() -> None:
    assert format_table(["version", "status"], []) == "version  status"


def test_lines_carry_no_trailing_spaces() -> None:
    table = format_table(["name", "description"], [("a", ""), ("bb", "x")])

    assert all(line == line.rstrip() for line in table.splitlines())


def test_a_row_with_the_wrong_number_of_cells_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        format_table(["a", "b", "c"], [(1, 2)])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (True, "true"),
        (0.123456789, "0.123457"),
        (3, "3"),
        ({"production": 2, "staging": 3}, "production=2, staging=3"),
        ({}, "-"),
        (["a", "b"], "a, b"),
        ("two\nlines", "two lines"),
    ],
)
def test_each_value_is_shown_on_one_line(value: object, shown: str) -> None:
    assert format_cell(value) == shown


def test_booleans_do_not_make_a_column_numeric() -> None:
    assert format_table(["flag"], [(True,), (False,)]).splitlines() == ["flag", "true", "false"]


def test_a_record_is_a_field_and_value_table() -> None:
    assert format_fields([("name", "credit-risk"), ("latest_version", 3)]).splitlines() == [
        "field           value",
        "name            credit-risk",
        "latest_version  3",
    ]


def test_timestamps_are_shown_in_utc_to_the_second() -> None:
    assert format_timestamp("2024-05-01T14:34:56.789+02:00") == "2024-05-01 12:34:56Z"
    assert format_timestamp(None) is None
