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
from membershield.attacks.label_only import NOISE_QUERIES, NOISE_SCALE
from membershield.config import AuditConfig
from membershield.data.overlap import row_hashes
from membershield.data.pool import Pool, build_pool, load_population
from membershield.errors import InputDataError, MembershieldError
from membershield.noise_queries import noisy_label_agreement
from membershield.result import AttackResult, AuditResult
from membershield.split_check import blind_split_check
from membershield.targets import LoadedModel, load_model
from membershield.targets.failures import first_failing_row, scores_finitely
from membershield.training import LogitCache, ReferenceJob, membership_plan, train_or_load
from membershield.training.backends import LocalBackend, create_backend
from membershield.training.cache import cache_key
from membershield.training.references import job_key

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
    ppv = metrics.headline_ppv(rates, config.prior)
    advantage = metrics.membership_advantage(scores, is_member, seed=config.seed)
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
        "advantage": advantage.value,
        "advantage_ci_low": advantage.ci_low,
        "advantage_ci_high": advantage.ci_high,
        "epsilon_lower_bound": bound.epsilon,
        "epsilon_detail": asdict(bound),
        "tpr_at_fpr": [r.to_dict() for r in rates],
        "ppv": ppv,
        "slices": slice_rows,
        "top_exposed": exposed,
    }


@dataclass
class PreparedAudit:
    """Everything loaded and checked before any model trains: shared by the audit and its ``--plan``."""

    loaded: LoadedModel
    pool: Pool
    features: pd.DataFrame  # audit records, then population records
    raw_labels: np.ndarray
    labels: np.ndarray  # class indices
    classes: np.ndarray
    fingerprints: dict[str, str]
    data_fingerprint: str
    n_references: int
    keep: np.ndarray
    jobs: list[ReferenceJob]
    target_job: ReferenceJob | None  # set when the target itself comes from a recipe
    warnings: list[str]  # about the data itself: dropped overlaps, near-duplicates, a population that is not new

    @property
    def n_audit(self) -> int:
        return len(self.pool)


def prepare_audit(config: AuditConfig, model: LoadedModel | None = None) -> PreparedAudit:
    """Load and validate the model and data, and decide which models must exist.

    ``model`` replaces loading ``config.model`` from disk, for callers that build a target or recipe in
    memory (a defended recipe in ``compare``, say); ``config.model`` then only names it.
    """
    config.validate()
    attacks = [create_attack(name) for name in config.attacks]
    n_references = config.references if any(a.min_references for a in attacks) else 0
    for attack in attacks:
        attack.check(n_references)
    loaded = model if model is not None else load_model(config.model)
    pool = build_pool(
        config.train,
        config.holdout,
        config.label_column,
        config.slice_column,
        tuple(config.ignore_columns),
        id_column=config.id_column,
        drop_overlap=config.drop_overlap,
    )
    features, raw_labels = pool.features, pool.labels
    fingerprints = dict(pool.fingerprints)
    warnings = pool.split_warnings()
    floor = metrics.smallest_resolvable_tpr(pool.n_members)
    if floor > 0.05:
        warnings.append(
            f"only {pool.n_members} members: a TPR below {100 * floor:.0f}% cannot be told from 0 (with no member"
            f" flagged, its 95% interval reaches {100 * floor:.0f}%) and every TPR moves in steps of"
            f" {100 / pool.n_members:.0f}%; give more members to resolve smaller rates"
        )
    if config.population:
        pop_features, pop_labels, fingerprints["population"] = load_population(
            config.population, config.label_column, list(features.columns)
        )
        seen = np.flatnonzero(np.isin(row_hashes(pop_features), row_hashes(features)))
        if seen.size:
            warnings.append(
                f"{seen.size} population record(s) of {config.population} are also members or non-members"
                f" (rows {', '.join(str(r) for r in seen[:5])}{', ...' if seen.size > 5 else ''}): population"
                " records must be unseen by the target; remove them"
            )
        features = pd.concat([features, pop_features], ignore_index=True)
        raw_labels = np.concatenate([raw_labels, pop_labels])
    if loaded.target is not None:
        classes = np.asarray(loaded.target.classes)
    else:
        member_labels = raw_labels[: len(pool)][pool.is_member]
        classes = np.array(sorted(set(member_labels.tolist()), key=lambda v: (str(type(v)), v)))
    raw_labels = _normalise_label_types(raw_labels, classes)
    for source, path in (("members", config.train), ("nonmembers", config.holdout)):
        _class_indices(raw_labels[np.flatnonzero(pool.source == source)], classes, path, config.label_column)
    labels = _class_indices(raw_labels, classes, config.population or config.train, config.label_column)

    keep = membership_plan(len(labels), n_references, pool.n_members / len(labels), config.seed)
    jobs = [ReferenceJob(f"reference-{k}", keep[k], config.seed * 100_003 + k + 1) for k in range(n_references)]
    target_job = None
    if loaded.target is None:
        target_mask = np.zeros(len(labels), dtype=bool)
        target_mask[: len(pool)] = pool.is_member
        target_job = ReferenceJob("target", target_mask, config.seed)
    return PreparedAudit(
        loaded=loaded,
        pool=pool,
        features=features,
        raw_labels=raw_labels,
        labels=labels,
        classes=classes,
        fingerprints=fingerprints,
        data_fingerprint=_data_fingerprint(fingerprints, config.label_column, list(features.columns)),
        n_references=n_references,
        keep=keep,
        jobs=jobs,
        target_job=target_job,
        warnings=warnings,
    )


def _data_fingerprint(file_digests: dict[str, str], label_column: str, feature_columns: list) -> str:
    """The cache key's data part: the files' contents and which of their columns the models learn from.

    Files alone are not enough: the same files with another ``--ignore-columns`` or ``--label-column``
    train other models.
    """
    return cache_key(
        *[f"{name}={digest}" for name, digest in sorted(file_digests.items())],
        f"label={label_column}",
        "features=" + "\x1f".join(str(column) for column in feature_columns),
    )


def _target_logits(prepared: PreparedAudit, cache: LogitCache | None, backend) -> np.ndarray:
    if prepared.target_job is not None:
        logits, _ = train_or_load(
            prepared.loaded.recipe,
            prepared.features,
            prepared.raw_labels,
            prepared.classes,
            [prepared.target_job],
            prepared.data_fingerprint,
            cache,
            backend=backend,
        )
        logits = logits[0]
    else:
        target = prepared.loaded.target
        assert target is not None
        try:
            with np.errstate(all="ignore"):  # judged below: an overflow shows as a non-finite output
                logits = np.asarray(target.logits(prepared.features), dtype=np.float32)
        except MembershieldError:
            raise
        except Exception as exc:  # the user's model failed on the user's data: say where
            problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise InputDataError(_unscorable(prepared, target, problem)) from exc
    if not np.isfinite(logits).all():
        bad = int(np.count_nonzero(~np.isfinite(logits).all(axis=1)))
        problem = f"it returned NaN or infinite outputs for {bad} record(s)"
        raise InputDataError(_unscorable(prepared, prepared.loaded.target, problem))
    return logits


def _unscorable(prepared: PreparedAudit, target, problem: str) -> str:
    """The error for audit data the model cannot score, naming the first record it fails on."""
    row = first_failing_row(prepared.features, scores_finitely(target.logits)) if target is not None else None
    if row is None:
        where = ""
    elif row < prepared.n_audit:
        where = f" (first: {prepared.pool.source[row]} row {int(prepared.pool.source_row[row])})"
    else:
        where = f" (first: population row {row - prepared.n_audit})"
    return (
        f"the model cannot score the audit data{where}: {problem}; values far outside the model's range"
        " overflow its arithmetic: check those records or the model"
    )


def run_audit(
    config: AuditConfig, progress: ProgressCallback | None = None, model: LoadedModel | None = None
) -> AuditRun:
    """Run a model audit and write ``audit.json`` and ``scores.csv`` into ``config.out``.

    ``model``: an already built target/recipe to audit instead of loading ``config.model``.
    """
    report = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading model and data", 0, 0)
    prepared = prepare_audit(config, model)
    attacks = [create_attack(name) for name in config.attacks]
    cache = LogitCache(config.cache) if config.cache else None
    backend = create_backend(config.backend, config.ray_address, config.n_jobs, config.trainer)
    pool, labels, classes, raw_labels = prepared.pool, prepared.labels, prepared.classes, prepared.raw_labels
    loaded, n_audit, n_references, keep = prepared.loaded, prepared.n_audit, prepared.n_references, prepared.keep
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if prepared.target_job is not None:
        report("training the target from its recipe", 0, 1)
    target_logits = _target_logits(prepared, cache, backend)
    timings["target"] = time.perf_counter() - clock

    clock = time.perf_counter()
    done = {"count": 0}

    def on_done(_k: int, _cached: bool) -> None:
        done["count"] += 1
        report("reference models", done["count"], n_references)

    if n_references:
        report("reference models", 0, n_references)
    reference_logits, training = train_or_load(
        loaded.recipe,
        prepared.features,
        raw_labels,
        classes,
        prepared.jobs,
        prepared.data_fingerprint,
        cache,
        backend=backend,
        on_done=on_done,
    )
    timings["references"] = time.perf_counter() - clock

    noisy_correct = None
    if any(a.needs_noise_queries for a in attacks):
        report("label-only queries on perturbed records", 0, 0)
        live_target = loaded.target
        if live_target is None:
            # A recipe target's outputs are cached, but perturbed queries need the model itself; the same
            # seed retrains the same model.
            assert prepared.target_job is not None
            mask = prepared.target_job.train_mask
            live_target = loaded.recipe.fit(
                prepared.features[mask], raw_labels[mask], classes, prepared.target_job.seed
            )
        noisy_correct = noisy_label_agreement(
            live_target, prepared.features, labels, NOISE_QUERIES, NOISE_SCALE, config.seed
        )
    inputs = AttackInputs(labels, target_logits, reference_logits, keep, n_audit, config.seed, noisy_correct)
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
    warnings = list(prepared.warnings)
    if config.split_check:
        report("split check", 0, 0)
        clock = time.perf_counter()
        split = blind_split_check(pool.features, raw_labels[:n_audit], is_member, seed=config.seed)
        timings["split_check"] = time.perf_counter() - clock
        if (warning := split.warning()) is not None:
            warnings.append(warning)
    result = AuditResult(
        target={
            "kind": loaded.kind,
            "spec": loaded.spec,
            "sha256": loaded.sha256,
            "access": loaded.target.access
            if loaded.target is not None
            else getattr(loaded.recipe, "target_access", "white-box"),
            "classes": [str(c) for c in classes.tolist()],
            "recipe": loaded.recipe.identity(),
            # A defended recipe (defenses.training) reports what it did, e.g. DP-SGD's privacy accounting.
            **({"defense": defense} if (defense := getattr(loaded.recipe, "defense_report", None)) else {}),
        },
        data={
            "fingerprints": prepared.fingerprints,
            "n_members": pool.n_members,
            "n_nonmembers": pool.n_nonmembers,
            "n_population": len(labels) - n_audit,
            "label_column": config.label_column,
            "slice_column": config.slice_column,
            "n_features": int(pool.features.shape[1]),
            "id_column": config.id_column,
            "overlap_dropped": pool.dropped_overlap.to_dict() if pool.dropped_overlap else None,
            "near_duplicates": pool.near_duplicates.to_dict() if pool.near_duplicates else None,
        },
        utility=utility,
        split_check=split.to_dict() if split else None,
        references={
            "backend": config.backend,
            "count": n_references,
            "trained": training.trained,
            "loaded_from_cache": training.loaded,
            "in_fraction": pool.n_members / len(labels),
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
            # The target's own prediction (argmax class and its softmax probability), for calibration.
            "predicted_label": classes[predictions],
            "predicted_confidence": 1.0
            / np.exp(target_logits[:n_audit] - target_logits[:n_audit].max(axis=1, keepdims=True))
            .astype(np.float64)
            .sum(axis=1),
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


@dataclass(frozen=True)
class AuditPlan:
    n_models: int
    n_cached: int
    n_to_train: int
    probe_seconds: float | None
    probe_cached: bool
    parallelism: int
    estimated_seconds: float

    def describe(self) -> str:
        if self.n_to_train == 0 and self.probe_seconds is None:
            return f"{self.n_models} models needed, all {self.n_cached} cached: the audit only queries and attacks."
        probe = ""
        if self.probe_seconds is not None:
            kept = "now cached" if self.probe_cached else "not kept: no cache"
            probe = f" one model trained in {self.probe_seconds:.1f} s ({kept});"
        return (
            f"{self.n_models} models needed: {self.n_cached} cached, {self.n_to_train} to train;{probe}"
            f" estimated training time {self.estimated_seconds:.0f} s with {self.parallelism} worker(s)"
        )


def plan_audit(config: AuditConfig) -> AuditPlan:
    """Count the models an audit needs and how many are cached; time one model to estimate the rest.

    The probe model is stored in the cache under the key the audit will look up, so planning costs
    nothing that the audit would not spend. Non-local backends train one model per worker with the
    recipe itself, so the probe trains so too, here.
    """
    prepared = prepare_audit(config)
    cache = LogitCache(config.cache) if config.cache else None
    recipe = prepared.loaded.recipe
    jobs = ([prepared.target_job] if prepared.target_job is not None else []) + prepared.jobs
    backend = create_backend(config.backend, config.ray_address, config.n_jobs, config.trainer)
    tag = backend.model_tag(recipe)
    missing = [
        j for j in jobs if cache is None or cache.load(job_key(recipe, prepared.data_fingerprint, j, tag)) is None
    ]
    parallelism = backend.parallelism() if missing else 1
    probe_seconds = None
    estimate = 0.0
    if missing:
        probe_backend = backend if isinstance(backend, LocalBackend) else LocalBackend("sequential")
        assert probe_backend.model_tag(recipe) == tag
        start = time.perf_counter()
        train_or_load(
            recipe,
            prepared.features,
            prepared.raw_labels,
            prepared.classes,
            missing[:1],
            prepared.data_fingerprint,
            cache,
            backend=probe_backend,
        )
        probe_seconds = time.perf_counter() - start
        estimate = probe_seconds * (len(missing) - 1) / parallelism
    n_to_train = len(missing) - (1 if missing and cache is not None else 0)
    return AuditPlan(
        n_models=len(jobs),
        n_cached=len(jobs) - len(missing),
        n_to_train=n_to_train,
        probe_seconds=probe_seconds,
        probe_cached=cache is not None,
        parallelism=parallelism,
        estimated_seconds=estimate,
    )
