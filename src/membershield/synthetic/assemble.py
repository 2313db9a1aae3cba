"""The synthetic-data audit's result: the common :class:`~membershield.result.AuditResult` (its ``attacks``
shaped as a model audit's, so ``report``, ``gate`` and ``history`` read it unchanged) with ``mode:
"synthetic"`` and two sections of its own, ``synthetic`` (the DCR risk, verbatim copies, the generator)
and ``anonymeter``; and the per-record scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from membershield.result import AttackResult, AuditResult
from membershield.synthetic.attacks import SyntheticAttackInputs
from membershield.synthetic.dcr_risk import DcrRisk


@dataclass
class SyntheticAuditResult(AuditResult):
    """An audit result with the synthetic-data sections (loaded back, they stay in the document)."""

    synthetic: dict[str, Any] | None = None
    anonymeter: dict[str, Any] | None = None


def origin(inputs: SyntheticAttackInputs, i: int) -> dict[str, Any]:
    """Where audit record ``i`` came from: its file and row (from 0, as in the file)."""
    n = inputs.n_members
    side, row = ("train", i) if i < n else ("holdout", i - n)
    return {"source": side, "row": int(inputs.tables.rows[side][row]), "file": inputs.tables.paths[side]}


def scores_frame(inputs: SyntheticAttackInputs, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """``scores.csv``: one row per audit record, its origin, membership and every attack's score."""
    origins = [origin(inputs, i) for i in range(inputs.n_audit)]
    is_member = np.arange(inputs.n_audit) < inputs.n_members
    return pd.DataFrame(
        {
            "index": np.arange(inputs.n_audit),
            "source": [o["source"] for o in origins],
            "row": [o["row"] for o in origins],
            "is_member": is_member,
            "dcr": inputs.synthetic_neighbours(1)[:, 0],
            **columns,
        }
    )


def utility_section(inputs: SyntheticAttackInputs, attacks: list[AttackResult]) -> dict[str, Any]:
    """How close the synthetic records are to members and to non-members, and, where the classifier attack
    ran, how the model trained on them fits each side (its accuracy gap is the gate's ``max_accuracy_gap``)."""
    distances = inputs.synthetic_neighbours(1)[:, 0]
    n = inputs.n_members
    utility: dict[str, Any] = {
        "member_median_dcr": float(np.median(distances[:n])),
        "nonmember_median_dcr": float(np.median(distances[n:])),
    }
    fitted = next((a.params for a in attacks if a.name == "synthetic-classifier"), None)
    if fitted and fitted.get("task") == "classification":
        utility.update(
            model=f"random forest trained on the synthetic records to predict '{inputs.label_column}'",
            train_accuracy=fitted["member_accuracy"],
            holdout_accuracy=fitted["nonmember_accuracy"],
            accuracy_gap=fitted["member_accuracy"] - fitted["nonmember_accuracy"],
        )
    elif fitted:
        utility.update(
            model=f"random forest regressor trained on the synthetic records to predict '{inputs.label_column}'",
            member_r2=fitted["member_r2"],
            nonmember_r2=fitted["nonmember_r2"],
        )
    return utility


def synthetic_section(inputs: SyntheticAttackInputs, risk: DcrRisk) -> dict[str, Any]:
    tables = inputs.tables
    return {
        "dcr_risk": risk.to_dict(),
        "exact_copies": tables.copies.to_dict(),
        "finding": tables.copies.finding(),
        "n_synthetic": len(tables.synthetic),
        "generator": inputs.generator.describe() if inputs.generator is not None else None,
    }


def data_section(inputs: SyntheticAttackInputs) -> dict[str, Any]:
    tables = inputs.tables
    missing = {c: int(tables.real[c].isna().sum()) for c in tables.columns}
    return {
        "fingerprints": tables.fingerprints,
        "n_members": len(tables.train),
        "n_nonmembers": len(tables.holdout),
        "n_population": len(tables.population),
        "n_synthetic": len(tables.synthetic),
        "columns": {"numeric": list(tables.numeric), "categorical": list(tables.categorical)},
        "missing_values": {c: n for c, n in missing.items() if n},
        "label_column": inputs.label_column,
        "overlap_dropped": tables.overlap_dropped,
    }


def target_section(inputs: SyntheticAttackInputs) -> dict[str, Any]:
    tables = inputs.tables
    access = "synthetic records" + (" + the generator" if inputs.generator is not None else "")
    return {
        "kind": "synthetic-table",
        "spec": tables.paths["synthetic"],
        "sha256": tables.fingerprints["synthetic"],
        "access": access,
        "generator": inputs.generator.spec if inputs.generator is not None else None,
    }


def synthetic_result(
    inputs: SyntheticAttackInputs,
    config: Any,
    attacks: list[AttackResult],
    risk: DcrRisk,
    anonymeter: dict[str, Any] | None,
    split: dict[str, Any] | None,
    timings: dict[str, float],
    warnings: list[str],
) -> SyntheticAuditResult:
    shadow = next((a for a in attacks if a.name == "shadow-generators"), None)
    references = {"count": int(shadow.params["shadows"]) if shadow else 0, "kind": "shadow generators"}
    return SyntheticAuditResult(
        target=target_section(inputs),
        data=data_section(inputs),
        utility=utility_section(inputs, attacks),
        split_check=split,
        references=references,
        attacks=attacks,
        config=asdict(config),
        timings=timings,
        warnings=warnings,
        mode="synthetic",
        synthetic=synthetic_section(inputs, risk),
        anonymeter=anonymeter,
    )
