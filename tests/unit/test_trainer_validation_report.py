"""The validation report shows data, metrics, parity and the gate, as JSON and as one safe HTML page."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from services.trainer.evaluation import evaluate
from services.trainer.onnx_export import ParityReport
from services.trainer.pipeline import train
from services.trainer.profile import reference_profile
from services.trainer.report import GateDecision, validation_report
from tests.trainer_data import credit_risk_frame, spec_for

MALICIOUS = '<script>alert("owned")</script>'
PARITY = ParityReport(max_abs_diff=6.6e-8, tolerance=1e-4, passed=True, label_agreement=1.0, rows=80)
GATE = GateDecision(
    metric="roc_auc",
    challenger=0.8123,
    champion=0.7911,
    champion_version=3,
    margin=0.01,
    promoted=True,
    promote_to="production",
    reason="roc_auc 0.8123 vs 0.7911 (v3): better by the margin 0.01",
)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    frame = credit_risk_frame().rename(columns={"region": MALICIOUS})
    spec = spec_for("logistic_regression", feature_columns=["income", "age", "debt_ratio", MALICIOUS])
    trained = train(spec, frame)
    return {
        "profile": reference_profile(frame, spec, trained.holdout_predictions, trained.holdout_probabilities),
        "metrics": evaluate(
            "classification",
            trained.holdout_target,
            trained.holdout_predictions,
            trained.holdout_probabilities,
        ),
        "parity": PARITY,
        "request": spec.model_dump(mode="json"),
    }


def test_a_malicious_column_name_is_escaped(inputs: dict[str, Any]) -> None:
    page, _ = validation_report(**inputs, gate=GATE)

    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in page


def test_the_page_needs_nothing_from_elsewhere(inputs: dict[str, Any]) -> None:
    page, _ = validation_report(**inputs, gate=GATE)

    assert page.startswith("<!DOCTYPE html>")
    assert not any(asset in page for asset in ("<link", "src=", "http://", "https://", "@import"))


def test_both_models_figures_and_the_decision_are_shown(inputs: dict[str, Any]) -> None:
    page, report = validation_report(**inputs, gate=GATE)

    assert "promoted to production" in page
    assert "0.8123" in page
    assert "0.7911 (v3)" in page
    assert report["gate"] == asdict(GATE)


def test_without_a_policy_the_report_says_so(inputs: dict[str, Any]) -> None:
    page, report = validation_report(**inputs, gate=None)

    assert "No promotion policy" in page
    assert report["gate"] is None


def test_the_json_report_holds_the_metrics_parity_and_data_summary(inputs: dict[str, Any]) -> None:
    _, report = validation_report(**inputs, gate=GATE)

    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["report_version"] == 1
    assert report["model_name"] == "credit-risk"
    assert report["metrics"] == inputs["metrics"]
    assert report["parity"]["passed"] is True
    assert report["data"]["row_count"] == 400
    assert report["data"]["features"][MALICIOUS]["kind"] == "categorical"
    assert "sample" not in report["data"]


def test_every_metric_and_parity_figure_is_on_the_page(inputs: dict[str, Any]) -> None:
    page, _ = validation_report(**inputs, gate=GATE)

    assert all(f"<td>{name}</td>" in page for name in inputs["metrics"])
    assert 'ONNX parity: <span class="passed">passed</span>' in page
    assert "<td>6.6e-08</td>" in page
