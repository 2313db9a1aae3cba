"""The audit run: plan, train what is missing, query once, attack, measure.

Data flow (see DESIGN.md): pool + target + recipe -> reference plan -> reference logits (cached) ->
target logits -> each attack's scores -> metrics -> :class:`AuditResult` (+ per-record scores).
Logits of the target and of every reference are computed once and shared by all attacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from membershield import metrics
from membershield.attacks import AttackInputs, create_attack
from membershield.config import AuditConfig
from membershield.data.pool import Pool, build_pool, load_population
from membershield.errors import InputDataError, MembershieldError
from membershield.result import AttackResult, AuditResult
from membershield.split_check import blind_split_check
from membershield.targets import LoadedModel, Target, load_model
from membershield.training import LogitCache, ReferenceJob, membership_plan, train_or_load
from membershield.training.cache import cache_key

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``; ``total`` is 0 for a stage without countable steps."""


@dataclass
class AuditRun:
    result: AuditResult
    scores: pd.DataFrame


def _class_indices(values: np.ndarray, classes: np.ndarray, where: str, label_column: str) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes.tolist())}
    unseen = sorted({v for v in values.tolist() if v not in position}, key=str)
    if unseen:
        shown = ", ".join(repr(v) for v in unseen[:5])
        raise InputDataError(
            f"{where}: column '{label_column}' has label(s) {shown} that the model never saw"
            f" (it knows {', '.join(repr(c) for c in classes.tolist()[:10])});"
            " drop those rows or use the right label column"
        )
    return np.array([position[v] for v in values.tolist()], dtype=np.int64)


def _normalise_label_types(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Read labels as the model's class type: a CSV gives ints where a model may hold floats or strings."""
    kind = np.asarray(classes).dtype.kind
    try:
        if kind in "iu":
            as_float = values.astype(np.float64)
            if np.all(as_float == np.round(as_float)):
                return as_float.astype(np.int64)
        elif kind == "f":
            return values.astype(np.float64)
        elif kind in "UO":
            return values.astype(str).astype(object) if all(isinstance(c, str) for c in classes.tolist()) else values
    except (TypeError, ValueError):
        pass
    return values


def _slices(pool: Pool, labels_text: np.ndarray) -> dict[str, np.ndarray]:
    slices = {"class": labels_text}
    if pool.slice_column is not None and pool.slice_values is not None:
        slices[pool.slice_column] = pool.slice_values.astype(str)
    return slices


def _attack_metrics(
    scores: np.ndarray, is_member: np.ndarray, config: AuditConfig, slices: dict[str, np.ndarray], pool: Pool
) -> dict[str, object]:
    auc, interval = metrics.auc_with_ci(scores, is_member)
    rates = [metrics.tpr_at_fpr(scores, is_member, f) for f in config.fprs]
    bound = metrics.empirical_epsilon_lower_bound(scores, is_member, delta=config.delta, seed=config.seed)
    headline = next((r for r in rates if r.fpr == 0.01), rates[0])
    ppv = {
        "prior": config.prior,
        "fpr": headline.fpr,
        "value": metrics.ppv_at_prior(headline.tpr, headline.achieved_fpr or 0.0, config.prior)
        if headline.measurable and headline.tpr is not None
        else None,
    }
    slice_rows = []
    for by, values in slices.items():
        for row in metrics.slice_metrics(scores, is_member, values, fprs=(0.01,)):
            slice_rows.append({"by": by, **row})
    exposed = metrics.top_exposed(scores, is_member, k=config.top_k)
    for item in exposed:
        i = item["index"]
        item["source"] = str(pool.source[i])
        item["row"] = int(pool.source_row[i])
    return {
        "auc": auc,
        "auc_ci_low": interval.low,
        "auc_ci_high": interval.high,
        "advantage": metrics.membership_advantage(scores, is_member),
        "epsilon_lower_bound": bound.epsilon,
        "epsilon_detail": asdict(bound),
        "tpr_at_fpr": [r.to_dict() for r in rates],
        "ppv": ppv,
        "slices": slice_rows,
        "top_exposed": exposed,
    }


def run_audit(config: AuditConfig, progress: ProgressCallback | None = None) -> AuditRun:
    """Run a model audit and write ``audit.json`` and ``scores.csv`` into ``config.out``."""
    config.validate()
    attacks = [create_attack(name) for name in config.attacks]
    n_references = config.references if any(a.min_references for a in attacks) else 0
    for attack in attacks:
        attack.check(n_references)
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    report("loading model and data", 0, 0)
    loaded: LoadedModel = load_model(config.model)
    pool = build_pool(
        config.train, config.holdout, config.label_column, config.slice_column, tuple(config.ignore_columns)
    )
    features = pool.features
    raw_labels = pool.labels
    fingerprints = dict(pool.fingerprints)
    n_audit = len(pool)
    if config.population:
        pop_features, pop_labels, fingerprints["population"] = load_population(
            config.population, config.label_column, list(features.columns)
        )
        features = pd.concat([features, pop_features], ignore_index=True)
        raw_labels = np.concatenate([raw_labels, pop_labels])
    data_fingerprint = cache_key(*[f"{k}={v}" for k, v in sorted(fingerprints.items())])
    cache = LogitCache(config.cache) if config.cache else None
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    target: Target
    if loaded.target is not None:
        target = loaded.target
        classes = np.asarray(target.classes)
    else:
        member_labels = raw_labels[:n_audit][pool.is_member]
        classes = np.array(sorted(set(member_labels.tolist()), key=lambda v: (str(type(v)), v)))
    raw_labels = _normalise_label_types(raw_labels, classes)
    sources = {"members": config.train, "nonmembers": config.holdout}
    for source, path in sources.items():
        rows = np.flatnonzero(pool.source == source)
        _class_indices(raw_labels[rows], classes, path, config.label_column)
    labels = _class_indices(raw_labels, classes, config.population or config.train, config.label_column)

    target_train_mask = np.zeros(len(labels), dtype=bool)
    target_train_mask[:n_audit] = pool.is_member
    if loaded.target is None:
        report("training the target from its recipe", 0, 1)
        target_logits, _ = train_or_load(
            loaded.recipe,
            features,
            raw_labels,
            classes,
            [ReferenceJob("target", target_train_mask, config.seed)],
            data_fingerprint,
            cache,
        )
        target_logits = target_logits[0]
        report("training the target from its recipe", 1, 1)
    else:
        try:
            target_logits = np.asarray(target.logits(features), dtype=np.float32)
        except MembershieldError:
            raise
        except Exception as exc:  # the user's model failed on the user's data: say where
            raise InputDataError(
                f"the model failed to score the data from {config.train}: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
    if not np.isfinite(target_logits).all():
        raise InputDataError("the model returned NaN or infinite outputs on the audit data; check the model")
    timings["target"] = time.perf_counter() - clock

    clock = time.perf_counter()
    in_fraction = pool.n_members / len(labels)
    keep = membership_plan(len(labels), n_references, in_fraction, config.seed)
    jobs = [ReferenceJob(f"reference-{k}", keep[k], config.seed * 100_003 + k + 1) for k in range(n_references)]
    done = {"count": 0}

    def on_done(_k: int, _cached: bool) -> None:
        done["count"] += 1
        report("reference models", done["count"], n_references)

    if n_references:
        report("reference models", 0, n_references)
    reference_logits, training = train_or_load(
        loaded.recipe, features, raw_labels, classes, jobs, data_fingerprint, cache, on_done
    )
    timings["references"] = time.perf_counter() - clock

    inputs = AttackInputs(labels, target_logits, reference_logits, keep, n_audit, config.seed)
    is_member = pool.is_member
    labels_text = raw_labels[:n_audit].astype(str)
    slices = _slices(pool, labels_text)
    attack_results: list[AttackResult] = []
    score_columns: dict[str, np.ndarray] = {}
    for i, attack in enumerate(attacks):
        report(f"attack: {attack.name}", i, len(attacks))
        start = time.perf_counter()
        scores = np.asarray(attack.score(inputs), dtype=np.float64)[:n_audit]
        seconds = time.perf_counter() - start
        score_columns[attack.name] = scores
        measured = _attack_metrics(scores, is_member, config, slices, pool)
        attack_results.append(
            AttackResult(
                name=attack.name,
                title=attack.title,
                citation=attack.citation,
                access=attack.access,
                params=attack.params(),
                seconds=seconds,
                **measured,  # type: ignore[arg-type]
            )
        )
    report("attacks", len(attacks), len(attacks))
    timings["attacks"] = sum(r.seconds for r in attack_results)

    predictions = np.argmax(target_logits[:n_audit], axis=1)
    correct = predictions == labels[:n_audit]
    utility = {
        "train_accuracy": float(correct[is_member].mean()),
        "holdout_accuracy": float(correct[~is_member].mean()),
    }
    utility["accuracy_gap"] = utility["train_accuracy"] - utility["holdout_accuracy"]

    split = None
    warnings: list[str] = []
    if config.split_check:
        report("split check", 0, 0)
        clock = time.perf_counter()
        split = blind_split_check(pool.features, raw_labels[:n_audit], is_member, seed=config.seed)
        timings["split_check"] = time.perf_counter() - clock
        if not split.ok:
            warnings.append(
                "SPLIT CHECK FAILED: a classifier that never queries the model tells members from non-members"
                f" with AUC {split.blind_auc:.3f} ({100 * split.confidence:g}% CI"
                f" {split.ci_low:.3f}-{split.ci_high:.3f}); membership is confounded with a distribution shift,"
                " so attack numbers overstate memorisation."
            )
    result = AuditResult(
        target={
            "kind": loaded.kind,
            "spec": loaded.spec,
            "sha256": loaded.sha256,
            "access": getattr(target, "access", "white-box") if loaded.target is not None else "white-box",
            "classes": [str(c) for c in classes.tolist()],
            "recipe": loaded.recipe.identity(),
        },
        data={
            "fingerprints": fingerprints,
            "n_members": pool.n_members,
            "n_nonmembers": pool.n_nonmembers,
            "n_population": len(labels) - n_audit,
            "label_column": config.label_column,
            "slice_column": config.slice_column,
            "n_features": int(pool.features.shape[1]),
        },
        utility=utility,
        split_check=split.to_dict() if split else None,
        references={
            "count": n_references,
            "trained": training.trained,
            "loaded_from_cache": training.loaded,
            "in_fraction": in_fraction,
            "seconds_training": training.seconds_training,
        },
        attacks=attack_results,
        config=asdict(config),
        timings=timings,
        warnings=warnings,
    )
    scores_frame = pd.DataFrame(
        {
            "index": np.arange(n_audit),
            "source": pool.source,
            "row": pool.source_row,
            "is_member": is_member,
            "label": raw_labels[:n_audit],
            **score_columns,
        }
    )
    write_outputs(AuditRun(result, scores_frame), config.out)
    return AuditRun(result, scores_frame)


def write_outputs(run: AuditRun, out: str | Path) -> None:
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        run.result.write_json(directory / "audit.json")
        run.scores.to_csv(directory / "scores.csv", index=False)
    except OSError as exc:
        raise MembershieldError(f"cannot write results to {directory}: {exc.strerror} (pass --out DIR)") from exc
