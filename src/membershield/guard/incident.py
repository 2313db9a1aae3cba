"""What a probing key learnt: its queried records matched against a recorded audit of the same model.

The audit is read again from its ``audit.json``, its data and its model file, and its reference models'
outputs come from its logit cache: nothing trains (a reference model missing from the cache is an error),
and the data and model must be those the audit recorded (same fingerprints). Each record the key sent is
matched to the audit's records (members, then non-members): *exactly* (the same values) or *near* (within
the detector's ``near_distance``, a perturbed copy). For the records it asked exactly, the audit's attacks
are run with the answers the guard actually gave, hardened as they were: the key's answers on those rows,
the guard's output policy applied to the target's outputs on the others and to every reference model's (an
attacker who knows the policy, as ``compare`` assumes). A record is *confirmable* when the attack flags it
at 1% FPR: at the threshold that flags at most 1% of the audit's non-members, ties never split in the
attack's favour (:func:`membershield.metrics.record_exposure`'s rule). The headline attack is the one with
the highest TPR at 1% FPR over the whole audit under those answers, chosen before the key's records are
looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from membershield import metrics
from membershield.attacks import Attack, AttackInputs
from membershield.defenses.output import OutputPolicy, harden
from membershield.errors import InputDataError, MembershieldError
from membershield.guard.detector import relative_l2
from membershield.guard.query_log import QueryHistory
from membershield.result import AuditResult
from membershield.store import AuditRecord, Store

FPR = 0.01
LOG_FLOOR = np.log(1e-30)  # zeroed classes get the floor a hardened target gives them (defenses.output)
_CHUNK = 2048


@dataclass
class AuditContext:
    """A recorded audit read back: its records as the guard sees them, its outputs and its attacks."""

    record: AuditRecord | None  # None for an audit named by path, not recorded in the store
    path: Path
    rows: np.ndarray  # (n_audit, d): the audit records as the guard's detector reads records
    is_member: np.ndarray  # (n_audit,)
    labels: np.ndarray  # (n,) class indices, audit rows then population rows
    target_proba: np.ndarray  # (n, C)
    reference_proba: np.ndarray  # (K, n, C)
    keep: np.ndarray  # (K, n)
    attacks: list[Attack]
    features: np.ndarray | None
    seed: int
    skipped_attacks: list[str]

    @property
    def n_audit(self) -> int:
        return int(self.is_member.shape[0])

    def describe(self) -> dict[str, Any]:
        record = self.record
        return {
            "id": record.id if record else None,
            "model": record.model_name if record else None,
            "version": record.model_version if record else None,
            "created_at": record.created_at.isoformat(timespec="seconds") if record else None,
            "path": str(self.path),
            "n_members": int(self.is_member.sum()),
            "n_nonmembers": int((~self.is_member).sum()),
            "n_references": int(self.reference_proba.shape[0]),
            "attacks": [a.name for a in self.attacks],
            "skipped_attacks": self.skipped_attacks,
        }


def audit_file_of(store: Store, model_name: str) -> tuple[AuditRecord, Path]:
    """The newest recorded model audit of ``model_name`` whose ``audit.json`` is still where it was written."""
    from membershield.result import load_document

    records = store.history(model_name=model_name)
    for record in reversed(records):
        path = Path(record.report_path or Path(record.out_dir or "") / "audit.json")
        if path.is_file():
            try:
                if load_document(path).get("mode", "model") == "model":
                    return record, path
            except MembershieldError:
                continue
    seen = f" ({len(records)} recorded, none a model audit whose audit.json still exists)" if records else ""
    raise InputDataError(
        f"no usable audit of model '{model_name}' in history store {store.display}{seen}: audit it with"
        f" `membershield audit ... --model-name {model_name} --store {store.display}`, or pass --audit audit.json"
    )


def guard_view(loaded: Any, frame: pd.DataFrame) -> np.ndarray:
    """The audit records as the guard's detector reads a request's records (its column order, numbers as
    sent, strings as codes), so that a queried record and an audit record compare value for value."""
    from membershield.data.encode import numeric_matrix
    from membershield.guard.columns import input_schema

    target = loaded.target
    estimator = getattr(target, "estimator", None)
    if estimator is None:
        return numeric_matrix(frame)
    columns = getattr(target, "columns", None)
    schema = input_schema(estimator, list(columns) if columns else None)
    if len(schema.columns) != frame.shape[1]:
        raise InputDataError(
            f"the audit's records have {frame.shape[1]} columns and its model takes {len(schema.columns)}:"
            " re-run the audit"
        )
    table = frame[schema.names] if schema.named else frame.set_axis(schema.names, axis=1)
    if schema.numeric:
        return table.to_numpy(dtype=np.float64)
    return schema.numeric_view(table)


class _CacheOnly:
    """A backend that trains nothing: a reference model missing from the cache is an error."""

    def __init__(self, inner: Any, cache: str) -> None:
        self.inner, self.cache, self.name = inner, cache, "cache-only"

    def model_tag(self, recipe: Any) -> str:
        return self.inner.model_tag(recipe) if self.inner is not None else ""

    def parallelism(self) -> int:
        return 1

    def run(self, recipe, features, labels, classes, tasks):  # type: ignore[no-untyped-def]
        if tasks:
            raise InputDataError(
                f"{len(tasks)} of the audit's models are not in its cache {self.cache}: an incident uses the"
                " audit's own reference models and never trains; run the audit again with the same --cache"
            )
        yield from ()


def load_context(path: Path, record: AuditRecord | None = None) -> AuditContext:
    """Read an audit back: its model and data (checked against what it recorded) and its cached outputs."""
    from membershield.audit.model_outputs import target_logits
    from membershield.audit.prepare import prepare_audit
    from membershield.config import AuditConfig
    from membershield.data.encode import numeric_matrix
    from membershield.result import load
    from membershield.training import LogitCache, train_or_load
    from membershield.training.backends import create_backend

    result = load(path)
    if result.mode != "model":
        raise InputDataError(f"{path} is a {result.mode} audit: an incident needs a model audit of the guarded model")
    known = {f.name for f in fields(AuditConfig)}
    config = AuditConfig(**{k: v for k, v in result.config.items() if k in known})
    if not config.cache:
        raise InputDataError(f"{path} ran without a cache: its reference models' outputs were not kept")
    prepared = prepare_audit(config)
    _check_same(result, prepared, path)
    cache = LogitCache(config.cache)
    backend = _CacheOnly(
        create_backend(config.backend) if config.backend in ("local", "processes") else None, config.cache
    )
    logits = target_logits(prepared, cache, backend)
    references = train_or_load(
        prepared.loaded.recipe, prepared.features, prepared.raw_labels, prepared.classes, prepared.jobs,
        prepared.data_fingerprint, cache, backend=backend,
    )[0] if prepared.jobs else np.zeros((0, *logits.shape), dtype=np.float32)  # fmt: skip
    attacks = [a for a in prepared.attacks if not a.needs_queries]
    n = prepared.n_audit
    return AuditContext(
        record=record,
        path=path,
        rows=guard_view(prepared.loaded, prepared.features.iloc[:n]),
        is_member=np.asarray(prepared.pool.is_member, dtype=bool),
        labels=prepared.labels,
        target_proba=softmax(np.asarray(logits, dtype=np.float64), axis=1),
        reference_proba=softmax(np.asarray(references, dtype=np.float64), axis=2),
        keep=prepared.keep,
        attacks=attacks,
        features=numeric_matrix(prepared.features) if any(a.needs_features for a in attacks) else None,
        seed=config.seed,
        skipped_attacks=[a.name for a in prepared.attacks if a.needs_queries],
    )


def _check_same(result: AuditResult, prepared: Any, path: Path) -> None:
    recorded = result.data.get("fingerprints") or {}
    changed = sorted(name for name, digest in prepared.fingerprints.items() if recorded.get(name) != digest)
    if changed:
        raise InputDataError(
            f"the data of {path} changed since it was audited ({', '.join(changed)}): its records and cached"
            " reference models no longer match; audit the model again"
        )
    if result.target.get("sha256") and prepared.loaded.sha256 != result.target["sha256"]:
        raise InputDataError(f"the model {prepared.loaded.spec} changed since {path} audited it: audit it again")


def match_records(queried: np.ndarray, rows: np.ndarray, near_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per queried record, the audit row it equals (-1: none) and, failing that, the nearest audit row within
    ``near_distance`` (relative L2, as the detector measures; -1: none).

    >>> rows = np.array([[1.0, 2.0], [5.0, 5.0]])
    >>> exact, near = match_records(np.array([[5.0, 5.0], [1.0, 2.02], [9.0, -9.0]]), rows, 0.1)
    >>> exact.tolist(), near.tolist()
    ([1, -1, -1], [-1, 0, -1])
    """
    index = {row.tobytes(): i for i, row in reversed(list(enumerate(np.ascontiguousarray(rows))))}
    queried = np.ascontiguousarray(queried, dtype=np.float64)
    exact = np.array([index.get(q.tobytes(), -1) for q in queried], dtype=np.int64)
    near = np.full(len(queried), -1, dtype=np.int64)
    if not len(rows):
        return exact, near
    for i in np.flatnonzero(exact < 0):
        with np.errstate(all="ignore"):
            distances = relative_l2(rows, queried[i])
        best = int(np.nanargmin(distances)) if np.isfinite(distances).any() else -1
        if best >= 0 and distances[best] <= near_distance:
            near[i] = best
    return exact, near


def flagged_at(scores: np.ndarray, is_member: np.ndarray, fpr: float = FPR) -> np.ndarray:
    """Which records an attacker confirms at ``fpr``: scores above the threshold that flags at most
    ``floor(fpr * non-members)`` non-members (ties never split in the attacker's favour).

    >>> scores, member = np.array([0.9, 0.5, 0.8, 0.1, 0.2]), np.array([True, True, False, False, False])
    >>> flagged_at(scores, member, 0.34).tolist()  # one of the three non-members may be flagged: 0.8
    [True, True, True, False, False]
    >>> flagged_at(scores, member, 0.1).tolist()  # none may: only scores above 0.8
    [True, False, False, False, False]
    """
    exposure = metrics.record_exposure(scores[None, :], is_member[None, :], fpr=fpr)
    return (exposure.n_exposed + exposure.n_flagged_out) > 0


def _as_logits(proba: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(proba), LOG_FLOOR).astype(np.float32)


@dataclass(frozen=True)
class Matched:
    """The audit rows a key reached: asked exactly (with the mean answer it got) or only near."""

    exact: np.ndarray  # (n_audit,) bool
    near_only: np.ndarray  # (n_audit,) bool
    answers: np.ndarray  # (n_audit, C): the mean answer the key got for the row; NaN where none is known
    n_unknown: int  # queried records that are no audit record, nor near one
    n_exact_queries: int
    n_near_queries: int


def match_history(context: AuditContext, history: QueryHistory, near_distance: float) -> Matched:
    n, width = context.n_audit, context.target_proba.shape[1]
    if history.n_records and history.records.shape[1] != context.rows.shape[1]:
        raise InputDataError(
            f"the key's records have {history.records.shape[1]} values and the audit's {context.rows.shape[1]}:"
            " the audit is not of the model this guard serves"
        )
    exact, near = match_records(history.records, context.rows, near_distance)
    answers = np.full((n, width), np.nan)
    asked = exact >= 0
    if asked.any() and history.answers.shape[1] == width:
        known = asked & np.isfinite(history.answers).all(axis=1)
        total = np.zeros((n, width))
        count = np.zeros(n)
        np.add.at(total, exact[known], history.answers[known])
        np.add.at(count, exact[known], 1)
        seen = count > 0
        answers[seen] = total[seen] / count[seen, None]
    exact_rows = np.zeros(n, dtype=bool)
    exact_rows[exact[asked]] = True
    near_rows = np.zeros(n, dtype=bool)
    near_rows[near[near >= 0]] = True
    return Matched(
        exact=exact_rows,
        near_only=near_rows & ~exact_rows,
        answers=answers,
        n_unknown=int(((exact < 0) & (near < 0)).sum()),
        n_exact_queries=int(asked.sum()),
        n_near_queries=int((near >= 0).sum()),
    )


def attack_scores(context: AuditContext, matched: Matched, policy: OutputPolicy) -> dict[str, np.ndarray]:
    """Each attack's scores on every row under the guard's answers: the key's own where it asked the row,
    the policy applied to the target's (and every reference model's) outputs elsewhere."""
    rng = np.random.default_rng(context.seed)
    target = np.array(harden(context.target_proba, policy, rng), dtype=np.float64)  # a copy: the context is shared
    given = np.isfinite(matched.answers).all(axis=1)
    target[: context.n_audit][given] = matched.answers[given]
    references = np.stack([harden(p, policy, rng) for p in context.reference_proba]) if len(
        context.reference_proba
    ) else context.reference_proba  # fmt: skip
    inputs = AttackInputs(
        context.labels, _as_logits(target), _as_logits(references), context.keep, context.n_audit, context.seed,
        None, context.features,
    )  # fmt: skip
    return {
        attack.name: np.asarray(attack.score(inputs), dtype=np.float64)[: context.n_audit] for attack in context.attacks
    }


def _rate(successes: int, trials: int) -> dict[str, Any]:
    if trials == 0:
        return {"count": 0, "of": 0, "rate": None, "ci_low": None, "ci_high": None}
    interval = metrics.clopper_pearson(successes, trials)
    return {
        "count": successes,
        "of": trials,
        "rate": successes / trials,
        "ci_low": interval.low,
        "ci_high": interval.high,
    }


def what_it_learnt(
    context: AuditContext, history: QueryHistory, policy: OutputPolicy, near_distance: float, alert_time: datetime
) -> dict[str, Any]:
    """The incident's figures: what the key asked, how much of it the audit knows, and what it can confirm."""
    matched = match_history(context, history, near_distance)
    member, asked = context.is_member, matched.exact
    scores = attack_scores(context, matched, policy)
    needed = metrics.nonmembers_needed(FPR)
    measurable = int((~member).sum()) >= needed
    by_attack = {}
    for name, s in scores.items():
        flagged = flagged_at(s, member)
        rate = metrics.tpr_at_fpr(s, member, FPR)
        by_attack[name] = {
            "confirmed_members": int((flagged & asked & member).sum()),
            "flagged_nonmembers": int((flagged & asked & ~member).sum()),
            "audit_tpr_at_fpr": rate.to_dict(),
        }
    ranked = sorted(by_attack, key=lambda a: -(by_attack[a]["audit_tpr_at_fpr"]["tpr"] or 0.0))
    best = ranked[0] if ranked else None
    first, last = history.first_and_last()
    after = int((history.times > np.datetime64(alert_time.astimezone(UTC).replace(tzinfo=None), "us")).sum())
    confirmed = by_attack[best]["confirmed_members"] if best and measurable else None
    n_asked_members = int((asked & member).sum())
    return {
        "fpr": FPR,
        "queried": {
            "records": history.n_records,
            "requests": history.n_requests,
            "after_alert": after,
            "first": first.isoformat(timespec="seconds") if first else None,
            "last": last.isoformat(timespec="seconds") if last else None,
            "other_width": history.n_skipped,
        },
        "matched": {
            "records": int(asked.sum()),
            "members": n_asked_members,
            "nonmembers": int((asked & ~member).sum()),
            "queries": matched.n_exact_queries,
            "answers_known": int(np.isfinite(matched.answers).all(axis=1).sum()),
        },
        "near": {
            "records": int(matched.near_only.sum()),
            "members": int((matched.near_only & member).sum()),
            "queries": matched.n_near_queries,
        },
        "unknown_records": matched.n_unknown,
        "confirmable": {
            "attack": best,
            "measurable": measurable,
            "nonmembers_needed": needed,
            "members": _rate(confirmed, n_asked_members) if confirmed is not None else None,
            "flagged_nonmembers": by_attack[best]["flagged_nonmembers"] if best and measurable else None,
        },
        "by_attack": by_attack,
        "output_policy": policy.to_dict(),
    }


def output_policy_of(alert: dict[str, Any], fallback: OutputPolicy | None = None) -> OutputPolicy:
    """The output policy the guard ran under when the alert was raised (recorded with it), else ``fallback``."""
    recorded = (alert.get("policy") or {}).get("output")
    if recorded:
        known = {f.name for f in fields(OutputPolicy)}
        return OutputPolicy(**{k: v for k, v in recorded.items() if k in known})
    return fallback or OutputPolicy()


def near_distance_of(alert: dict[str, Any], fallback: float = 0.1) -> float:
    return float((alert.get("policy") or {}).get("detector", {}).get("near_distance", fallback))
