"""The last stage of a model audit: the result document and the per-record scores."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from membershield.audit.model_outputs import ModelOutputs
from membershield.audit.prepare import PreparedAudit
from membershield.config import AuditConfig
from membershield.endpoint.headers import recorded_headers
from membershield.result import AttackResult, AuditResult


def utility(prepared: PreparedAudit, logits: np.ndarray) -> dict[str, float]:
    """The target's accuracy on members and non-members (what the attacks are weighed against)."""
    n = prepared.n_audit
    correct = np.argmax(logits[:n], axis=1) == prepared.labels[:n]
    is_member = prepared.pool.is_member
    out = {"train_accuracy": float(correct[is_member].mean()), "holdout_accuracy": float(correct[~is_member].mean())}
    out["accuracy_gap"] = out["train_accuracy"] - out["holdout_accuracy"]
    return out


def target_entry(prepared: PreparedAudit) -> dict[str, Any]:
    loaded = prepared.loaded
    entry = {
        "kind": loaded.kind,
        "spec": loaded.spec,
        "sha256": loaded.sha256,
        "access": loaded.access,
        "classes": [str(c) for c in prepared.classes.tolist()],
        "recipe": loaded.recipe.identity() if loaded.recipe is not None else None,
    }
    # A model behind an API says how it was reached and what its answers held.
    describe = getattr(loaded.target, "describe", None)
    if describe is not None:
        entry["endpoint"] = describe()
    # A defended recipe (defenses.training) reports what it did, e.g. DP-SGD's privacy accounting.
    defense = getattr(loaded.recipe, "defense_report", None)
    return entry | ({"defense": defense} if defense else {})


def recorded_config(config: AuditConfig) -> dict[str, Any]:
    """The configuration as audit.json keeps it: a header's literal value is never written down."""
    return asdict(config) | {"headers": recorded_headers(config.headers)}


def data_entry(prepared: PreparedAudit, config: AuditConfig) -> dict[str, Any]:
    pool = prepared.pool
    return {
        "fingerprints": prepared.fingerprints,
        "n_members": pool.n_members,
        "n_nonmembers": pool.n_nonmembers,
        "n_population": len(prepared.labels) - prepared.n_audit,
        "label_column": config.label_column,
        "slice_column": config.slice_column,
        "n_features": int(pool.features.shape[1]),
        "id_column": config.id_column,
        "overlap_dropped": pool.dropped_overlap.to_dict() if pool.dropped_overlap else None,
        "near_duplicates": pool.near_duplicates.to_dict() if pool.near_duplicates else None,
        "user_column": pool.user_column,
        "rarity": prepared.rarity.to_dict(pool.is_member) if prepared.rarity is not None else None,
    }


def model_audit_result(
    prepared: PreparedAudit,
    config: AuditConfig,
    outputs: ModelOutputs,
    attacks: list[AttackResult],
    split: dict[str, Any] | None,
    timings: dict[str, float],
    warnings: list[str],
    *,
    user_level: dict[str, Any] | None = None,
) -> AuditResult:
    training = outputs.training
    return AuditResult(
        target=target_entry(prepared),
        data=data_entry(prepared, config),
        utility=utility(prepared, outputs.target_logits),
        split_check=split,
        references={
            "backend": config.backend,
            "count": prepared.n_references,
            "trained": training.trained,
            "loaded_from_cache": training.loaded,
            "in_fraction": prepared.pool.n_members / len(prepared.labels),
            "seconds_training": training.seconds_training,
        },
        attacks=attacks,
        config=recorded_config(config),
        timings=timings,
        warnings=warnings,
        user_level=user_level,
    )


def scores_frame(prepared: PreparedAudit, logits: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per audit record: where it came from, its truth and label, every attack's score, and the
    target's own prediction (argmax class and its softmax probability), for calibration."""
    n, pool = prepared.n_audit, prepared.pool
    own = logits[:n]
    # who each record is about and whether it is rare, so that user-level and rarity results can be redone
    subject = {"user": pool.user_values} if pool.user_values is not None else {}
    if prepared.rarity is not None:
        subject["rarity"] = prepared.rarity.labels(n)
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "source": pool.source,
            "row": pool.source_row,
            "is_member": pool.is_member,
            "label": prepared.raw_labels[:n],
            **subject,
            **columns,
            "predicted_label": prepared.classes[np.argmax(own, axis=1)],
            "predicted_confidence": 1.0 / np.exp(own - own.max(axis=1, keepdims=True)).astype(np.float64).sum(axis=1),
        }
    )
