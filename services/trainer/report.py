"""The validation report of a training run: data, metrics, ONNX parity and the promotion decision.

Written twice from the same content: a JSON document for programs, and a single self-contained HTML
page for people (no scripts, styles inline, every value escaped: column names come from user data).
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from typing import Any

from services.trainer.onnx_export import ParityReport

REPORT_VERSION = 1
TOP_CATEGORIES_SHOWN = 5


@dataclass(frozen=True)
class GateDecision:
    """Champion/challenger on one holdout: promote when the challenger beats the champion by `margin`.

    `champion` and `champion_version` are None when there was no champion to beat.
    """

    metric: str
    challenger: float
    champion: float | None
    champion_version: int | None
    margin: float
    promoted: bool
    promote_to: str
    reason: str


def validation_report(
    *,
    profile: dict[str, Any],
    metrics: dict[str, float],
    parity: ParityReport,
    gate: GateDecision | None,
    request: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The report as (HTML page, JSON document); `request` is the job's spec as JSON."""
    report = {
        "report_version": REPORT_VERSION,
        "model_name": request.get("model_name"),
        "request": request,
        "metrics": metrics,
        "parity": asdict(parity),
        "gate": asdict(gate) if gate else None,
        "data": data_summary(profile),
    }
    return _html_page(report), report


def data_summary(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile without sample or histograms: per feature its kind, missing rate, range or top values."""
    features: dict[str, Any] = {}
    for column, summary in profile["features"].items():
        brief = {"kind": summary["kind"], "missing_rate": summary["missing_rate"]}
        if summary["kind"] == "numeric":
            brief |= {key: summary[key] for key in ("min", "max", "mean", "std")}
        else:
            brief |= {
                "distinct": summary["distinct"],
                "top": dict(list(summary["frequencies"].items())[:TOP_CATEGORIES_SHOWN]),
            }
        features[column] = brief
    return {
        "row_count": profile["row_count"],
        "task": profile["task"],
        "target": profile["target"],
        "target_distribution": profile["target_distribution"],
        "features": features,
    }


def _html_page(report: dict[str, Any]) -> str:
    title = f"Validation report: {report['model_name']}"
    sections = [
        f"<h1>{_escape(title)}</h1>",
        _gate_section(report["gate"]),
        "<h2>Holdout metrics</h2>",
        _table(["metric", "value"], [[name, value] for name, value in report["metrics"].items()]),
        _parity_section(report["parity"]),
        _data_section(report["data"]),
        "<h2>Training request</h2>",
        _table(["field", "value"], [[name, value] for name, value in report["request"].items()]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
    "th{background:#f3f3f3}.passed{color:#176f2c}.failed{color:#b3261e}"
)


def _gate_section(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return (
            "<h2>Promotion</h2><p>No promotion policy: the model is registered without moving an alias.</p>"
        )
    verdict = f"promoted to {gate['promote_to']}" if gate["promoted"] else "not promoted"
    champion = (
        "none" if gate["champion"] is None else f"{_cell(gate['champion'])} (v{gate['champion_version']})"
    )
    return (
        f'<h2>Promotion: <span class="{"passed" if gate["promoted"] else "failed"}">'
        f"{_escape(verdict)}</span></h2>"
        + _table(
            ["metric", "challenger", "champion", "required margin", "reason"],
            [[gate["metric"], gate["challenger"], champion, gate["margin"], gate["reason"]]],
        )
    )


def _parity_section(parity: dict[str, Any]) -> str:
    verdict = "passed" if parity["passed"] else "failed"
    rows = [
        ["holdout rows", parity["rows"]],
        ["max |ONNX - scikit-learn|", parity["max_abs_diff"]],
        ["tolerance", parity["tolerance"]],
    ]
    if parity["label_agreement"] is not None:
        rows.append(["label agreement", parity["label_agreement"]])
    return f'<h2>ONNX parity: <span class="{verdict}">{verdict}</span></h2>' + _table(
        ["figure", "value"], rows
    )


def _data_section(data: dict[str, Any]) -> str:
    rows = []
    for column, summary in data["features"].items():
        if summary["kind"] == "numeric":
            values = (
                f"min {_cell(summary['min'])}, mean {_cell(summary['mean'])}, max {_cell(summary['max'])}"
            )
        else:
            top = ", ".join(f"{category} {share:.1%}" for category, share in summary["top"].items())
            values = f"{summary['distinct']} distinct; {top}"
        rows.append([column, summary["kind"], f"{summary['missing_rate']:.1%}", values])
    heading = (
        f"<h2>Training data: {data['row_count']} rows, "
        f"target {_escape(data['target'])} ({_escape(data['task'])})</h2>"
    )
    return heading + _table(["column", "kind", "missing", "values"], rows)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_escape(header)}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(_cell(value))}</td>" for value in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
