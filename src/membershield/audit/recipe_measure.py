"""The measurement and the result of a recipe audit (:mod:`.recipe_game`).

Every attack's K × n trial scores are pooled; point estimates are those of the pooled trials and every
interval comes from the two-way clustered bootstrap over records and models
(:mod:`membershield.metrics.clustered`), never from a binomial model of K × n independent trials:

- AUC and TPR at each FPR: percentile intervals of the statistic recomputed on each resample (the
  threshold of a TPR re-chosen there). A TPR is measurable when the pooled non-member trials reach
  ``metrics.nonmembers_needed`` (about 4.4 / FPR), the rule of a model audit.
- advantage: cross-fitted over crossed blocks of records and models (a threshold is measured on trials
  that share no record and no model with those it was chosen on), with a bootstrap interval.
- ε lower bound: a rule chosen on one crossed block, measured on the opposite one, with Clopper-Pearson
  limits on trial counts shrunk by their bootstrap design effects.
- per class: the same clustered AUC and TPR at 1% FPR on that class's trials.

Per record: how many of the models that trained on it flag it at their own 1% FPR threshold (and how many
of the others do), most exposed first; ``exposure.csv`` has every record.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield import metrics
from membershield.audit.assemble import recorded_config
from membershield.audit.measure import SLICE_FPRS, MeasureSettings
from membershield.audit.recipe_game import PreparedGame
from membershield.config import AuditConfig
from membershield.errors import MembershieldError
from membershield.metrics import RecordExposure, TwoWayBootstrap
from membershield.metrics.clustered import METHOD
from membershield.metrics.rates import _unmeasurable
from membershield.result import AttackResult, AuditResult

EXPOSURE_FPR = 0.01
INTERVALS = {
    "method": METHOD,
    "clusters": ["records", "models"],
    "auc_and_tpr": "percentile interval of the statistic recomputed on each resample (a TPR's threshold re-chosen)",
    "advantage": "threshold chosen on a block of trials sharing no record and no model with the block it"
    " flags (four crossed blocks, pooled); percentile interval with the thresholds fixed",
    "epsilon": "rule chosen on one crossed block, measured on the opposite one; one-sided Clopper-Pearson"
    " limits on trial counts divided by their bootstrap design effect (Korn & Graubard 1998)",
}


def trial_ids(n_models: int, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    """The record and the model of each trial; trial ``k * n_records + i`` is model k on record i."""
    return np.tile(np.arange(n_records), n_models), np.repeat(np.arange(n_models), n_records)


def _trial_slices(prepared: PreparedGame) -> dict[str, np.ndarray]:
    per_record = {"class": prepared.raw_labels.astype(str)}
    if prepared.slice_column is not None and prepared.slice_values is not None:
        per_record[prepared.slice_column] = prepared.slice_values.astype(str)
    return {by: np.tile(values, prepared.n_models) for by, values in per_record.items()}


def _clustered_slices(
    scores: np.ndarray, is_member: np.ndarray, ids: tuple[np.ndarray, np.ndarray], slices: dict, boot: TwoWayBootstrap
) -> list[dict[str, Any]]:
    """Per slice value: AUC and TPR at 1% FPR of its trials, with clustered intervals."""
    record, model = ids
    rows = []
    for by, values in slices.items():
        for label in np.unique(values):
            mask = values == label
            m = is_member[mask]
            entry: dict[str, Any] = {"by": by, "slice": str(label), "n_members": int(m.sum())}
            entry["n_nonmembers"] = int((~m).sum())
            if m.any() and not m.all():
                roc = metrics.clustered_roc(scores[mask], m, record[mask], model[mask], SLICE_FPRS, boot)
                entry.update(auc=roc.auc, auc_ci_low=roc.auc_interval.low, auc_ci_high=roc.auc_interval.high)
                entry["tpr_at_fpr"] = [r.to_dict() for r in roc.rates]
            else:
                entry.update(auc=None, auc_ci_low=None, auc_ci_high=None)
                n_in, n_out = entry["n_members"], entry["n_nonmembers"]
                entry["tpr_at_fpr"] = [_unmeasurable(f, n_in, n_out).to_dict() for f in SLICE_FPRS]
            rows.append(entry)
    return rows


def _clustered(
    result: AttackResult,
    scores: np.ndarray,
    is_member: np.ndarray,
    ids: tuple[np.ndarray, np.ndarray],
    settings: MeasureSettings,
    boot: TwoWayBootstrap,
) -> AttackResult:
    """The attack's result with every number that has an interval measured on the clustered trials."""
    record, model = ids
    roc = metrics.clustered_roc(scores, is_member, record, model, settings.fprs, boot)
    advantage = metrics.clustered_advantage(scores, is_member, record, model, boot)
    eps = metrics.clustered_epsilon_lower_bound(scores, is_member, record, model, boot, delta=settings.delta)
    epsilon_detail = asdict(eps.bound) | {
        "measured_on": "crossed block: half the records under half the models, sharing none with the choice",
        "tp": eps.tp,
        "fp": eps.fp,
        "n_members": eps.n_members,
        "n_nonmembers": eps.n_nonmembers,
        "design_effect_tpr": eps.design_effect_tpr,
        "design_effect_fpr": eps.design_effect_fpr,
    }
    return replace(
        result,
        auc=roc.auc,
        auc_ci_low=roc.auc_interval.low,
        auc_ci_high=roc.auc_interval.high,
        tpr_at_fpr=[r.to_dict() for r in roc.rates],
        ppv=metrics.headline_ppv(roc.rates, settings.prior),
        advantage=advantage.value,
        advantage_ci_low=advantage.ci_low,
        advantage_ci_high=advantage.ci_high,
        epsilon_lower_bound=eps.bound.epsilon,
        epsilon_detail=epsilon_detail,
    )


def measure_game(
    prepared: PreparedGame,
    attacks: list[AttackResult],
    columns: dict[str, np.ndarray],
    settings: MeasureSettings,
    boot: TwoWayBootstrap,
) -> tuple[list[AttackResult], dict[str, RecordExposure]]:
    """Each attack's result measured on the clustered trials, and its per-record exposure."""
    ids = trial_ids(prepared.n_models, prepared.n_records)
    is_member = prepared.keep.reshape(-1)
    slices = _trial_slices(prepared)
    measured, exposures = [], {}
    for result in attacks:
        scores = columns[result.name]
        clustered = _clustered(result, scores, is_member, ids, settings, boot)
        measured.append(replace(clustered, slices=_clustered_slices(scores, is_member, ids, slices, boot)))
        grid = scores.reshape(prepared.n_models, prepared.n_records)
        exposures[result.name] = metrics.record_exposure(grid, prepared.keep, EXPOSURE_FPR)
    return measured, exposures


def _exposure_entry(prepared: PreparedGame, exposure: RecordExposure, top_k: int) -> dict[str, Any]:
    records = [
        exposure.entry(i) | {"source": "data", "row": int(prepared.source_row[i]), "label": str(prepared.raw_labels[i])}
        for i in exposure.ranking()[:top_k]
    ]
    return {
        "always_exposed": int(exposure.always_exposed().sum()),
        "exposed_by_half_or_more": int(((exposure.exposed_share >= 0.5) & (exposure.n_member_models >= 2)).sum()),
        "records": records,
    }


def _per_model(prepared: PreparedGame, logits: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each model's accuracy on its members and on its non-members; the utility over all trials."""
    correct = np.argmax(logits, axis=2) == prepared.labels[None, :]
    keep = prepared.keep
    per_model = [
        {
            "model": k,
            "seed": prepared.jobs[k].seed,
            "train_accuracy": float(correct[k, keep[k]].mean()),
            "holdout_accuracy": float(correct[k, ~keep[k]].mean()),
        }
        for k in range(prepared.n_models)
    ]
    train, holdout = float(correct[keep].mean()), float(correct[~keep].mean())
    return per_model, {"train_accuracy": train, "holdout_accuracy": holdout, "accuracy_gap": train - holdout}


def _game_entry(
    prepared: PreparedGame, logits: np.ndarray, exposures: dict[str, RecordExposure], boot: TwoWayBootstrap, top_k: int
) -> dict[str, Any]:
    n_models, n_records = prepared.keep.shape
    per_model, _ = _per_model(prepared, logits)
    return {
        "n_models": n_models,
        "n_records": n_records,
        "n_trials": n_models * n_records,
        "member_trials": int(prepared.keep.sum()),
        "nonmember_trials": int((~prepared.keep).sum()),
        "in_fraction": float(prepared.keep.mean()),
        "plan": "every record IN for each model with probability 1/2, independently (game_plan)",
        "targets": f"each model in turn the target; the other {n_models - 1} its reference models",
        "intervals": INTERVALS | {"resamples": boot.resamples, "confidence": boot.confidence, "seed": boot.seed},
        "queries": "attacks that query the target again retrain model k on its rows with its seed",
        "per_model": per_model,
        "exposure": {
            "fpr": EXPOSURE_FPR,
            "flagged_at": "each model's own threshold at this FPR on its non-members",
            "attack": None,  # the headline attack, set once the result exists
            "by_attack": {name: _exposure_entry(prepared, e, top_k) for name, e in exposures.items()},
        },
    }


def game_result(
    prepared: PreparedGame,
    config: AuditConfig,
    logits: np.ndarray,
    training: Any,
    attacks: list[AttackResult],
    exposures: dict[str, RecordExposure],
    boot: TwoWayBootstrap,
    timings: dict[str, float],
) -> AuditResult:
    """The audit document of a recipe audit (``mode: "recipe"``); its counts are trial counts."""
    _, utility = _per_model(prepared, logits)
    result = AuditResult(
        target=prepared.target,
        data={
            "fingerprints": {"data": prepared.fingerprint},
            "n_members": int(prepared.keep.sum()),  # member trials
            "n_nonmembers": int((~prepared.keep).sum()),
            "n_population": 0,
            "n_records": prepared.n_records,
            "label_column": config.label_column,
            "slice_column": config.slice_column,
            "n_features": int(prepared.features.shape[1]),
            "id_column": config.id_column,
            "overlap_dropped": None,
            "near_duplicates": None,
        },
        utility=utility,
        split_check=None,  # membership is drawn at random by the audit: there is no split to check
        references={
            "backend": config.backend,
            "count": prepared.n_models - 1,
            "models": prepared.n_models,
            "trained": training.trained,
            "loaded_from_cache": training.loaded,
            "in_fraction": float(prepared.keep.mean()),
            "seconds_training": training.seconds_training,
        },
        attacks=attacks,
        config=recorded_config(config),
        timings=timings,
        warnings=list(prepared.warnings),
        mode="recipe",
        game=_game_entry(prepared, logits, exposures, boot, config.top_k),
    )
    assert result.game is not None
    result.game["exposure"]["attack"] = result.headline(EXPOSURE_FPR).attack.name
    return result


def trials_frame(prepared: PreparedGame, logits: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """``scores.csv`` of a recipe audit: one row per (model, record) trial, in trial order."""
    record, model = trial_ids(prepared.n_models, prepared.n_records)
    flat = logits.reshape(-1, logits.shape[2])
    return pd.DataFrame(
        {
            "model": model,
            "index": record,
            "source": "data",
            "row": prepared.source_row[record],
            "is_member": prepared.keep.reshape(-1),
            "label": prepared.raw_labels[record],
            **columns,
            "predicted_label": prepared.classes[np.argmax(flat, axis=1)],
            "predicted_confidence": 1.0 / np.exp(flat - flat.max(axis=1, keepdims=True)).astype(np.float64).sum(axis=1),
        }
    )


def write_exposure(prepared: PreparedGame, exposures: dict[str, RecordExposure], out: Path) -> Path:
    """``exposure.csv``: per record, its models IN and OUT and, per attack, how many of each flagged it."""
    first = next(iter(exposures.values()))
    frame = pd.DataFrame(
        {
            "index": np.arange(prepared.n_records),
            "row": prepared.source_row,
            "label": prepared.raw_labels,
            "n_member_models": first.n_member_models,
            "n_nonmember_models": first.n_nonmember_models,
        }
    )
    for name, exposure in exposures.items():
        frame[f"{name}_exposed"] = exposure.n_exposed
        frame[f"{name}_flagged_out"] = exposure.n_flagged_out
    path = out / "exposure.csv"
    try:
        frame.to_csv(path, index=False)
    except OSError as exc:
        raise MembershieldError(f"cannot write {path}: {exc.strerror} (pass --out DIR)") from exc
    return path
