"""The unlearning check (``membershield audit --forgotten FORGOTTEN.csv``): a model retrained (or
unlearned) after removing some records must treat them as records it never saw.

The forgotten records are audited against the holdout with the same attacks, the same target and
reference models trained the same way (on random halves of forgotten, holdout and population records):
a membership attack that tells them apart, its AUC interval above 0.5, shows that the model still
carries them. The original model, audited with the same command, is the counter-example: it trained
on the forgotten records, so they are members and the check fails.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from membershield.attacks import AttackInputs
from membershield.audit.measure import MeasureSettings, ProgressCallback, run_attacks
from membershield.audit.model_outputs import live_queries, reference_outputs, target_logits
from membershield.audit.prepare import PreparedAudit, prepare_audit
from membershield.config import AuditConfig
from membershield.data.encode import numeric_matrix
from membershield.data.io import load_table
from membershield.data.overlap import row_hashes
from membershield.errors import InputDataError

DISTINGUISHABLE = "forgotten records are still distinguishable"


def _expected_columns(config: AuditConfig, prepared: PreparedAudit) -> list[str]:
    """The columns a record of the training data has: the model's features and what is not a feature."""
    named = [config.label_column, *config.ignore_columns, config.id_column, config.user_column, config.slice_column]
    columns = [str(c) for c in prepared.pool.features.columns]
    return columns + [c for c in named if c and c not in columns]


def _check_columns(config: AuditConfig, prepared: PreparedAudit) -> None:
    forgotten = load_table(str(config.forgotten))
    expected = _expected_columns(config, prepared)
    missing = [c for c in expected if c not in forgotten.columns]
    extra = [c for c in forgotten.columns if c not in expected]
    if missing or extra:
        raise InputDataError(
            f"{config.forgotten}: the forgotten records' columns differ from the training data's"
            f" (missing: {', '.join(missing[:8]) or '-'}; not in {config.train}: {', '.join(extra[:8]) or '-'});"
            " give the removed records with the columns of --train"
        )


def _check_removed(config: AuditConfig, prepared: PreparedAudit, forgotten: PreparedAudit) -> None:
    """A forgotten record still in --train was not removed: the check would measure nothing."""
    kept = row_hashes(prepared.pool.features[prepared.pool.is_member])
    removed = forgotten.pool.features[forgotten.pool.is_member]
    still = np.flatnonzero(np.isin(row_hashes(removed), kept))
    if still.size:
        rows = forgotten.pool.source_row[forgotten.pool.is_member][still]
        shown = ", ".join(str(int(r)) for r in rows[:5]) + (", ..." if still.size > 5 else "")
        raise InputDataError(
            f"{still.size} of the forgotten records in {config.forgotten} (rows {shown}) are also in {config.train}:"
            " --train must be what the retrained model trained on, without the forgotten records"
        )


def _stage(report: ProgressCallback) -> ProgressCallback:
    def forward(stage: str, done: int, total: int) -> None:
        report("unlearning check: " + ("attacks" if stage.startswith("attack") else stage), done, total)

    return forward


def _attack_entry(attack: Any) -> dict[str, Any]:
    return {
        "name": attack.name,
        "auc": attack.auc,
        "auc_ci_low": attack.auc_ci_low,
        "auc_ci_high": attack.auc_ci_high,
        "distinguishable": attack.auc_ci_low is not None and attack.auc_ci_low > 0.5,
        "tpr_at_fpr": attack.tpr_at_fpr,
    }


def _warning(check: dict[str, Any]) -> str | None:
    found = [a for a in check["attacks"] if a["distinguishable"]]
    if not found:
        return None
    worst = max(found, key=lambda a: a["auc"])
    return (
        f"{DISTINGUISHABLE}: {worst['name']} tells the {check['n_forgotten']} forgotten records from the"
        f" {check['n_holdout']} holdout records with AUC {worst['auc']:.3f} (95% CI {worst['auc_ci_low']:.3f}–"
        f"{worst['auc_ci_high']:.3f}), above chance ({len(found)} of {len(check['attacks'])} attacks); the model"
        " still carries them: retrain without them, or unlearn again, and re-audit"
    )


def prepare_forgotten(config: AuditConfig, prepared: PreparedAudit) -> PreparedAudit:
    """Load and check the forgotten records (their columns, that they left --train, that none is in the
    holdout) and plan their reference models; before anything trains, so bad input fails at once."""
    _check_columns(config, prepared)
    # One decision per record: the forgotten records' users need not be on one side of any split.
    forgotten_config = replace(config, train=str(config.forgotten), forgotten=None, user_column=None)
    forgotten = prepare_audit(forgotten_config, prepared.loaded)
    _check_removed(config, prepared, forgotten)
    return forgotten


def check_unlearning(
    forgotten: PreparedAudit,
    prepared: PreparedAudit,
    config: AuditConfig,
    cache: Any,
    backend: Any,
    progress: ProgressCallback,
    warnings: list[str],
) -> dict[str, Any]:
    """Audit the forgotten records against the holdout; returns the audit.json ``unlearning`` entry, adds
    its fingerprint to the audit's and a warning when any attack tells them apart."""
    report = _stage(progress)
    logits = target_logits(forgotten, cache, backend)
    reference_logits, training = reference_outputs(forgotten, cache, backend, report)
    features = numeric_matrix(forgotten.features) if any(a.needs_features for a in forgotten.attacks) else None
    inputs = AttackInputs(
        forgotten.labels,
        logits,
        reference_logits,
        forgotten.keep,
        forgotten.n_audit,
        config.seed,
        live_queries(forgotten),
        features,
    )
    pool = forgotten.pool
    attacks, _ = run_attacks(
        forgotten.attacks,
        inputs,
        pool.is_member,
        MeasureSettings.of(config),
        slices={},
        origin=lambda i: {"source": "forgotten" if pool.is_member[i] else "nonmembers", "row": int(pool.source_row[i])},
        progress=report,
    )
    dropped = pool.dropped_overlap.member_rows.size if pool.dropped_overlap else 0
    check = {
        "forgotten": str(config.forgotten),
        "fingerprint": pool.fingerprints["members"],
        "n_rows": pool.n_members + int(dropped),
        "n_forgotten": pool.n_members,
        "n_holdout": pool.n_nonmembers,
        "references": {
            "count": forgotten.n_references,
            "trained": training.trained,
            "loaded_from_cache": training.loaded,
        },
        "attacks": [_attack_entry(a) for a in attacks],
    }
    check["forgotten_distinguishable"] = any(a["distinguishable"] for a in check["attacks"])
    prepared.fingerprints["forgotten"] = check["fingerprint"]
    if (warning := _warning(check)) is not None:
        warnings.append(warning)
    return check
