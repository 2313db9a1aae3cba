"""The risk register (``membershield risk --audit audit.json --scan scan.json``): which training records to
protect first (a tighter privacy budget, removal), from how exposed the audit found each one and how
rare the data scan found it.

Exposure is per record and per attack: the share of the holdout (non-members) that scores at least as
high as the record, i.e. the lowest false-positive rate at which the attack flags it, with the count and
an exact 95% interval. A record is *exposed* when that rate is at most ``fpr`` (1% by default). Rarity
comes from the scan's ``low_k`` rows: records whose quasi-identifier combination is seen fewer than k
times in the training table. The register ranks exposed and rare records first, then exposed ones, then
rare ones, then the rest; within each group by exposure (lowest flagging rate first), then rarity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import InputDataError
from membershield.metrics import clopper_pearson
from membershield.result import HEADLINE_FPR, AuditResult, audit_json_path, load

TIERS = ("public", "internal", "personal", "protected")  # least to most sensitive, as the data scan writes
PRIORITIES = ("exposed and rare", "exposed", "rare", "-")


def _scan_problems(document: Any) -> list[str]:
    if not isinstance(document, Mapping):
        return [f"it is a JSON {type(document).__name__}, not an object"]
    problems = []
    columns = document.get("columns")
    if not isinstance(columns, list) or not all(
        isinstance(c, Mapping) and isinstance(c.get("name"), str) and c.get("tier") in TIERS for c in columns
    ):
        problems.append(f"'columns' must be a list of objects with a 'name' and a 'tier' ({', '.join(TIERS)})")
    low_k = document.get("low_k")
    if not isinstance(low_k, Mapping):
        return [*problems, "it has no 'low_k' object"]
    if not isinstance(low_k.get("k"), int) or isinstance(low_k.get("k"), bool):
        problems.append("'low_k.k' must be a whole number")
    if not isinstance(low_k.get("quasi_identifiers"), list):
        problems.append("'low_k.quasi_identifiers' must be a list of column names")
    rows = low_k.get("rows")
    if not isinstance(rows, list) or not all(
        isinstance(r, Mapping) and _whole(r.get("row")) and _whole(r.get("count")) for r in rows
    ):
        problems.append("'low_k.rows' must be a list of objects with a whole 'row' and 'count'")
    return problems


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_scan(path: str | Path) -> dict[str, Any]:
    """A validated ``scan.json`` (written by ``membershield data scan``); one error naming every problem."""
    p = Path(path)
    hint = "pass the scan.json that `membershield data scan` wrote"
    if not p.is_file():
        raise InputDataError(f"{p}: file not found; {hint}")
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno}); {hint}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{p}: cannot be read ({exc}); check the file and its permissions") from exc
    problems = _scan_problems(document)
    if problems:
        raise InputDataError(f"{p}: not a data scan membershield can read: {'; '.join(problems)} ({hint})")
    return document


def scan_summary(scan: Mapping[str, Any]) -> dict[str, Any]:
    """What the history store keeps of a scan with its dataset: sizes, tiers, personal columns, rarity."""
    columns = scan.get("columns") or []
    low_k = scan.get("low_k") or {}
    duplicates = scan.get("duplicates") or {}
    return {
        "file": scan.get("file"),
        "scanned_at": scan.get("scanned_at"),
        "n_rows": scan.get("n_rows"),
        "n_columns": scan.get("n_columns", len(columns)),
        "tiers": {tier: sum(1 for c in columns if c.get("tier") == tier) for tier in TIERS},
        "personal_columns": [c["name"] for c in columns if c.get("tier") in ("personal", "protected")],
        "low_k": {key: low_k.get(key) for key in ("k", "quasi_identifiers", "records", "combinations")},
        "duplicates": {
            kind: (duplicates.get(kind) or {}).get("records") if isinstance(duplicates.get(kind), Mapping) else None
            for kind in ("exact", "near")
        },
        "passed": scan.get("passed"),
    }


def _highest_tier(columns: list[Mapping[str, Any]], names: list[str] | None = None) -> str:
    tiers = [c["tier"] for c in columns if names is None or c["name"] in names]
    return max(tiers, key=TIERS.index) if tiers else "internal"


def _audit_scores(audit_file: Path, result: AuditResult, attack: str | None) -> tuple[pd.DataFrame, str]:
    """The audit's per-record scores and the attack to rank by (the headline attack unless named)."""
    if result.mode != "model":
        raise InputDataError(
            f"{audit_file}: a recipe audit's per-record exposure is its exposure.csv; risk reads an audit of one"
            " model (`membershield audit --model ... --train ...`)"
        )
    names = [a.name for a in result.attacks]
    chosen = attack or result.headline().attack.name
    if chosen not in names:
        raise InputDataError(f"the audit ran no attack '{chosen}'; it ran {', '.join(names)} (set --attack)")
    path = audit_file.parent / "scores.csv"
    if not path.is_file():
        raise InputDataError(f"{path}: file not found; risk reads the scores.csv `membershield audit` wrote")
    try:
        scores = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot be read ({type(exc).__name__}); re-run the audit") from exc
    needed = ["source", "row", "is_member", chosen]
    missing = [c for c in needed if c not in scores.columns]
    expected = result.data["n_members"] + result.data["n_nonmembers"]
    if missing or len(scores) != expected:
        problem = f"lacks column(s) {', '.join(missing)}" if missing else f"has {len(scores)} rows, not {expected}"
        raise InputDataError(f"{path} {problem}: it is not the scores of {audit_file}; re-run the audit")
    return scores, chosen


def _training_rows(result: AuditResult) -> int:
    dropped = (result.data.get("overlap_dropped") or {}).get("n_members") or 0
    return int(result.data["n_members"]) + int(dropped)


@dataclass(frozen=True)
class RiskRegister:
    """The ranked training records (one row each) and what they were ranked by."""

    records: pd.DataFrame
    attack: str
    fpr: float
    n_members: int
    n_nonmembers: int
    k: int
    table_tier: str
    train_file: str
    scan_file: str
    path: Path | None = None

    @property
    def n_exposed(self) -> int:
        return int(self.records["exposed"].sum())

    @property
    def n_rare(self) -> int:
        return int(self.records["rare"].sum())

    @property
    def n_exposed_and_rare(self) -> int:
        return int((self.records["exposed"] & self.records["rare"]).sum())


def _flag_rates(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> pd.DataFrame:
    """For each member: how many non-members score at least as high, the share, and its exact interval."""
    ordered = np.sort(nonmember_scores)
    above = len(ordered) - np.searchsorted(ordered, member_scores, side="left")
    intervals = {int(c): clopper_pearson(int(c), len(ordered)) for c in np.unique(above)}
    return pd.DataFrame(
        {
            "nonmembers_at_or_above": above.astype(np.int64),
            "n_nonmembers": len(ordered),
            "flag_fpr": above / len(ordered),
            "flag_fpr_ci_low": [intervals[int(c)].low for c in above],
            "flag_fpr_ci_high": [intervals[int(c)].high for c in above],
        }
    )


def _rarity(scan: Mapping[str, Any], rows: np.ndarray) -> pd.DataFrame:
    """Each training row's combination count when the scan found it rare (fewer than k), and its values."""
    found = {int(r["row"]): r for r in scan["low_k"]["rows"]}
    counts = [found[int(r)]["count"] if int(r) in found else None for r in rows]
    values = [
        ", ".join(f"{k}={v}" for k, v in (found[int(r)].get("values") or {}).items()) if int(r) in found else ""
        for r in rows
    ]
    return pd.DataFrame(
        {"rare": [c is not None for c in counts], "combination_count": counts, "quasi_identifier_values": values}
    )


def _rank(frame: pd.DataFrame) -> pd.DataFrame:
    exposed, rare = frame["exposed"].to_numpy(), frame["rare"].to_numpy()
    group = np.where(exposed & rare, 0, np.where(exposed, 1, np.where(rare, 2, 3)))
    frame = frame.assign(priority=[PRIORITIES[g] for g in group], _group=group)
    frame["_count"] = frame["combination_count"].fillna(np.inf).astype(float)
    frame = frame.sort_values(
        ["_group", "flag_fpr", "_count", "score", "row"], ascending=[True, True, True, False, True]
    )
    frame = frame.drop(columns=["_group", "_count"]).reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def build_register(
    audit_file: str | Path, scan_file: str | Path, *, attack: str | None = None, fpr: float = HEADLINE_FPR
) -> RiskRegister:
    """Join an audit's per-record exposure with a scan of its training data into a ranked register."""
    if not 0 < fpr < 1:
        raise InputDataError(f"--fpr must be strictly between 0 and 1, got {fpr}")
    path = audit_json_path(audit_file)
    result = load(path)
    scan = load_scan(scan_file)
    scores, chosen = _audit_scores(path, result, attack)
    train_file = str(result.config.get("train") or "members")
    rows_in_table = _training_rows(result)
    if isinstance(scan.get("n_rows"), int) and scan["n_rows"] != rows_in_table:
        raise InputDataError(
            f"{scan_file} describes a table of {scan['n_rows']} rows but the audit's training data ({train_file}) has"
            f" {rows_in_table}: scan the --train file of the audit"
        )
    is_member = scores["is_member"].astype(bool).to_numpy()
    members = scores[is_member].reset_index(drop=True)
    values = scores[chosen].to_numpy(dtype=np.float64)
    flags = _flag_rates(values[is_member], values[~is_member])
    columns = scan["columns"]
    frame = pd.concat(
        [
            pd.DataFrame({"row": members["row"].astype(np.int64), "label": members.get("label")}),
            _rarity(scan, members["row"].to_numpy()),
            pd.DataFrame(
                {"k": scan["low_k"]["k"], "tier": _highest_tier(columns), "attack": chosen}, index=members.index
            ),
            pd.DataFrame({"score": values[is_member]}),
            flags,
        ],
        axis=1,
    )
    frame["exposed"] = frame["flag_fpr"] <= fpr
    return RiskRegister(
        records=_rank(frame),
        attack=chosen,
        fpr=fpr,
        n_members=int(is_member.sum()),
        n_nonmembers=int((~is_member).sum()),
        k=int(scan["low_k"]["k"]),
        table_tier=_highest_tier(columns),
        train_file=train_file,
        scan_file=str(scan_file),
    )


def write_register(register: RiskRegister, out: str | Path) -> RiskRegister:
    """Write ``risk.csv``; returns the register with its path."""
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        register.records.to_csv(path, index=False)
    except OSError as exc:
        raise InputDataError(f"cannot write {path}: {exc.strerror} (pass --out PATH)") from exc
    return replace(register, path=path)
