"""MLflow logging of a real audit into a local SQLite tracking store."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from membershield.mlflow_log import audit_metrics
from tests.test_cli import base_args, run_cli

needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None and os.environ.get("CI") != "true",
    reason="MLflow is not installed (pip install 'membershield[mlflow]')",
)


@needs_mlflow
def test_audit_with_mlflow_logs_metrics_and_files(digits_audit, tmp_path, monkeypatch, capsys) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("audits", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    code, _, err = run_cli(monkeypatch, capsys, *base_args(digits_audit, tmp_path), "--mlflow")
    assert code == 0, err
    runs = mlflow.search_runs(experiment_ids=[experiment], output_format="list")
    assert len(runs) == 1
    logged = runs[0].data.metrics
    audit = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert logged["loss.auc"] == pytest.approx(audit["attacks"][0]["auc"])
    assert "loss.tpr_at_fpr_0.01" in logged and "loss.tpr_at_fpr_0.001" not in logged  # 600 non-members
    files = {f.path for f in mlflow.artifacts.list_artifacts(run_id=runs[0].info.run_id, artifact_path="membershield")}
    assert {"membershield/audit.json", "membershield/scores.csv", "membershield/report.html"} <= files


def test_metric_names_leave_out_unmeasurable_rates() -> None:
    audit = {
        "utility": {"train_accuracy": 1.0},
        "attacks": [
            {
                "name": "lira",
                "auc": 0.7,
                "tpr_at_fpr": [
                    {"fpr": 0.001, "tpr": None, "measurable": False},
                    {"fpr": 0.01, "tpr": 0.1, "ci_low": 0.08, "ci_high": 0.12, "measurable": True},
                ],
            }
        ],
    }
    assert audit_metrics(audit) == {
        "utility.train_accuracy": 1.0,
        "lira.auc": 0.7,
        "lira.tpr_at_fpr_0.01": 0.1,
        "lira.tpr_at_fpr_0.01.ci_low": 0.08,
        "lira.tpr_at_fpr_0.01.ci_high": 0.12,
    }
