"""Optional MLflow logging of an audit: its headline metrics, and its files as artifacts.

Logs into the active MLflow run when there is one (an audit inside a training script), else into a new
run under the tracking URI MLflow is configured with (``MLFLOW_TRACKING_URI``). MLflow is an optional
extra: ``pip install 'membershield[mlflow]'``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from membershield.errors import ConfigError, MembershieldError

ARTIFACTS = ("audit.json", "scores.csv", "report.html")


def audit_metrics(audit: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metric names and values of an ``audit.json`` document; unmeasurable rates are left out."""
    metrics: dict[str, float] = {}
    for key, value in audit.get("utility", {}).items():
        if isinstance(value, int | float):
            metrics[f"utility.{key}"] = float(value)
    for attack in audit.get("attacks", []):
        name = re.sub(r"[^0-9A-Za-z_.-]", "_", attack["name"])
        for key in ("auc", "auc_ci_low", "auc_ci_high", "advantage", "epsilon_lower_bound"):
            if attack.get(key) is not None:
                metrics[f"{name}.{key}"] = float(attack[key])
        for rate in attack.get("tpr_at_fpr", []):
            if rate.get("measurable") and rate.get("tpr") is not None:
                label = f"{name}.tpr_at_fpr_{rate['fpr']:g}"
                metrics[label] = float(rate["tpr"])
                metrics[f"{label}.ci_low"] = float(rate["ci_low"])
                metrics[f"{label}.ci_high"] = float(rate["ci_high"])
    split = audit.get("split_check")
    if split:
        metrics["split_check.blind_auc"] = float(split["blind_auc"])
    return metrics


def audit_params(audit: dict[str, Any]) -> dict[str, str]:
    config = audit.get("config", {})
    data = audit.get("data", {})
    return {
        "membershield.model": str(audit.get("target", {}).get("spec", "")),
        "membershield.model_sha256": str(audit.get("target", {}).get("sha256", "")),
        "membershield.attacks": ",".join(config.get("attacks", [])),
        "membershield.references": str(config.get("references", "")),
        "membershield.seed": str(config.get("seed", "")),
        "membershield.n_members": str(data.get("n_members", "")),
        "membershield.n_nonmembers": str(data.get("n_nonmembers", "")),
    }


def log_audit(audit: dict[str, Any], out_dir: str | Path) -> str:
    """Log an audit to MLflow; returns the run id."""
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError("--mlflow needs MLflow: pip install 'membershield[mlflow]'") from exc
    directory = Path(out_dir)
    try:
        active = mlflow.active_run()
        run = active or mlflow.start_run(run_name=f"membershield-audit-{Path(audit['target']['spec']).stem}")
        try:
            mlflow.log_params(audit_params(audit))
            mlflow.log_metrics(audit_metrics(audit))
            for name in ARTIFACTS:
                if (directory / name).is_file():
                    mlflow.log_artifact(str(directory / name), artifact_path="membershield")
        finally:
            if active is None:
                mlflow.end_run()
    except MembershieldError:
        raise
    except Exception as exc:  # MLflow raises its own and backend errors; the audit files are already written
        raise MembershieldError(
            f"cannot log the audit to MLflow ({mlflow.get_tracking_uri()}): {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    return run.info.run_id
