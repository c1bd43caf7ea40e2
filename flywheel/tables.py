"""Plain-text tables for the command line: a header row over aligned columns, numbers to the right."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

COLUMN_GAP = "  "
MISSING = "-"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """`rows` under `headers`, each column as wide as its widest cell. A column whose values are all
    numbers is right-aligned; None shows as "-"; a table without rows is its header alone."""
    values = [list(row) for row in rows]
    for row in values:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {row!r}")
    cells = [[format_cell(value) for value in row] for row in values]
    widths = [
        max([len(header), *(len(row[column]) for row in cells)]) for column, header in enumerate(headers)
    ]
    numeric = [_is_numeric_column([row[column] for row in values]) for column in range(len(headers))]

    def line(texts: Sequence[str]) -> str:
        aligned = (
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(texts, widths, numeric, strict=True)
        )
        return COLUMN_GAP.join(aligned).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def format_fields(fields: Iterable[tuple[str, object]]) -> str:
    """One record as a two-column table of field and value."""
    return format_table(["field", "value"], fields)


def format_cell(value: object) -> str:
    """One value on one line: floats to 6 significant digits, mappings as `k=v, ...`, lists joined."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={format_cell(item)}" for key, item in value.items()) or MISSING
    if isinstance(value, list | tuple):
        return ", ".join(format_cell(item) for item in value) or MISSING
    return " ".join(str(value).splitlines())


def format_timestamp(value: str | None) -> str | None:
    """An ISO 8601 timestamp from the server as `2024-05-01 12:34:56Z` (UTC, to the second)."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _is_numeric_column(values: list[object]) -> bool:
    present = [value for value in values if value is not None]
    return bool(present) and all(
        isinstance(value, int | float) and not isinstance(value, bool) for value in present
    )
