"""A recipe audit, the privacy game: the auditor controls training, so this measures the pipeline.

``membershield audit --recipe R --data pool.csv --models K``: K models train with recipe R on random
halves of the pool (every record IN for each model with probability 1/2, independently: :func:`game_plan`),
each model in turn is the target and the other K - 1 are its references, and the scores of all K × n
(model, record) trials are pooled. With 1,800 records and 32 models that is 57,600 trials, about 28,800
of them non-member trials, enough to resolve a TPR at 0.1% FPR that one model's 900 non-members cannot.

Stages, as a model audit's (docs/ARCHITECTURE.md, "An audit kind"): :func:`prepare_recipe_audit` (the
pool, the recipe, the attacks, the plan; nothing trains) → :func:`game_logits` (every model's logits
on every record, trained where the cache has none, under the keys of reference models, so a rerun or an
interrupted run resumes) → every attack played K times through ``run_attacks`` (:class:`PooledAttack`)
→ clustered measurement and the result (:mod:`.recipe_measure`) → the usual outputs; :mod:`.recipe_run`
runs them.

Attacks that query the target again (``label-only-noise``) get model k retrained with its own seed, as a
model audit retrains a recipe's target.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.attacks import DEFAULT_ATTACKS, AttackInputs, create_attack
from membershield.attacks.base import Attack
from membershield.audit.measure import ProgressCallback
from membershield.audit.plan import AuditPlan, plan_jobs
from membershield.audit.prepare import _data_fingerprint, attack_settings
from membershield.config import AuditConfig
from membershield.data.encode import numeric_matrix
from membershield.data.io import load_table
from membershield.data.overlap import row_hashes
from membershield.data.pool import fingerprint_frame, split_features
from membershield.errors import ConfigError, InputDataError
from membershield.queries import LiveQueries
from membershield.targets.base import Recipe
from membershield.targets.kind import sha256_file
from membershield.targets.registry import recipe_from, resolve
from membershield.training import LogitCache, ReferenceJob, train_or_load
from membershield.whitebox_references import RetrainedWhiteBox


@dataclass
class PreparedGame:
    """Everything loaded and checked before any model trains."""

    recipe: Recipe
    target: dict[str, Any]  # the result's ``target`` entry: kind, spec, sha256, access, classes, recipe
    attacks: list[Attack]
    features: pd.DataFrame
    raw_labels: np.ndarray
    labels: np.ndarray  # class indices
    classes: np.ndarray
    source_row: np.ndarray  # each record's row in the data file
    slice_column: str | None
    slice_values: np.ndarray | None
    fingerprint: str  # of the data file
    data_fingerprint: str  # the cache key's data part
    keep: np.ndarray  # (K, n): whether model k trains on record i
    jobs: list[ReferenceJob]
    warnings: list[str]

    @property
    def n_models(self) -> int:
        return int(self.keep.shape[0])

    @property
    def n_records(self) -> int:
        return int(self.keep.shape[1])


def _recipe(spec: str, given: Recipe | None) -> tuple[Recipe, dict[str, Any]]:
    """The recipe (``given``, or read from ``spec``) and what the result says of it (its file's sha256, the
    access its models give)."""
    recipe = given if given is not None else recipe_from(spec)
    kind = resolve(spec)
    path = Path(spec.rpartition(":")[0] if ".py:" in spec else spec)
    sha256 = getattr(recipe, "source_sha256", None) or (sha256_file(path) if path.is_file() else None)
    access = str(getattr(recipe, "target_access", None) or kind.access)
    return recipe, {"kind": kind.name, "spec": spec, "sha256": sha256, "access": access, "recipe": recipe.identity()}


def _refused_options(config: AuditConfig) -> None:
    if config.population:
        raise ConfigError(
            "a recipe audit (--data) trains every model on the pool itself: --population does not apply"
            " (add those records to --data)"
        )


def _duplicates_warning(features: pd.DataFrame, path: str) -> list[str]:
    _, counts = np.unique(row_hashes(features), return_counts=True)
    copies = int(counts[counts > 1].sum())
    if not copies:
        return []
    return [
        f"{copies} records of {path} have an exact copy in it: a copy OUT of a model that trained on the"
        " other looks like a member; drop duplicates to measure memorisation alone"
    ]


def _game_attacks(config: AuditConfig, access: str, n_models: int) -> tuple[list[Attack], list[str]]:
    """The attacks, checked against the recipe's access and the K - 1 references each model has; from
    the default list one that cannot run is skipped (and said), one asked for by name is an error."""
    default = list(config.attacks) == list(DEFAULT_ATTACKS)
    attacks = [create_attack(name, attack_settings(config, name)) for name in config.attacks]
    problems = {}
    for attack in attacks:
        found = attack.requirement_problems(target_access=access, gives_recipe=True, queryable=True)
        if attack.min_references > n_models - 1:
            found.append(
                f"'{attack.name}' needs {attack.min_references} reference models and each model of this game"
                f" has {n_models - 1} (raise --models)"
            )
        problems[attack.name] = found
    if not default and any(problems.values()):
        raise ConfigError(f"{config.recipe}: " + "; ".join(p for a in attacks for p in problems[a.name]))
    skipped = [
        f"skipped '{a.name}': it " + " and ".join(p.removeprefix(f"'{a.name}' ") for p in problems[a.name])
        for a in attacks
        if problems[a.name]
    ]
    attacks = [a for a in attacks if not problems[a.name]]
    if not attacks:
        raise ConfigError(f"{config.recipe}: no attack of the default list can run: " + "; ".join(skipped))
    return attacks, skipped


def game_plan(n_records: int, n_models: int, seed: int) -> np.ndarray:
    """``keep[k, i]``: whether model k trains on record i, each a fair coin, independently.

    Not ``membership_plan``'s balanced counts (every record IN for exactly K/2 models): there a record's
    IN count among a target's references is K/2 - 1 when the target trained on it and K/2 when not, and
    LiRA's per-record Gaussian fits pick that up; on a pipeline that learns nothing about membership,
    8 models put online LiRA's AUC at 0.473 (95% interval 0.455-0.492) where independent coins give
    0.496 (0.477-0.514). Every model gets at least one member and one non-member.

    The draws go model by model, so the first K models of a larger game are those of a game of K: raising
    ``--models`` keeps every model already trained (the cache has them) and trains only the new ones.

    >>> keep = game_plan(1000, 4, seed=0)
    >>> keep.shape, bool(abs(keep.mean() - 0.5) < 0.03), bool((game_plan(1000, 3, seed=0) == keep[:3]).all())
    ((4, 1000), True, True)
    """
    keep = np.random.default_rng(seed).random((n_models, n_records)) < 0.5
    keep[keep.all(axis=1), 0] = False
    keep[~keep.any(axis=1), 0] = True
    return keep


def _sorted_classes(values: np.ndarray) -> np.ndarray:
    # as scikit-learn orders its probability columns, and a model audit orders a recipe's classes
    return np.array(sorted(set(values.tolist()), key=lambda v: (str(type(v)), v)))


def prepare_recipe_audit(config: AuditConfig, recipe: Recipe | None = None) -> PreparedGame:
    """Load and check the pool and the recipe, choose the attacks and plan the K models' training sets.

    ``recipe`` replaces reading ``config.recipe`` (which then only names it), for callers that hold one.
    """
    config.validate()
    if not config.data or not config.recipe:
        raise ConfigError("a recipe audit needs --recipe (the training pipeline) and --data (the pool)")
    _refused_options(config)
    path = Path(config.data)
    frame = load_table(path)
    not_features = tuple(config.ignore_columns)
    if config.id_column is not None:
        if config.id_column not in frame.columns:
            raise InputDataError(f"id column '{config.id_column}' not found in {path} (set --id-column)")
        not_features += (config.id_column,)
    features, raw_labels, slices = split_features(frame, path, config.label_column, config.slice_column, not_features)
    if len(features) < 4:
        raise InputDataError(f"{path}: {len(features)} records; a recipe audit needs at least 4 (2 per half)")
    recipe, target = _recipe(config.recipe, recipe)
    attacks, skipped = _game_attacks(config, target["access"], config.models)
    classes = _sorted_classes(raw_labels)
    position = {c: i for i, c in enumerate(classes.tolist())}
    keep = game_plan(len(features), config.models, config.seed)
    fingerprint = fingerprint_frame(frame)
    return PreparedGame(
        recipe=recipe,
        target=target | {"classes": [str(c) for c in classes.tolist()]},
        attacks=attacks,
        features=features,
        raw_labels=raw_labels,
        labels=np.array([position[v] for v in raw_labels.tolist()], dtype=np.int64),
        classes=classes,
        source_row=np.arange(len(features)),
        slice_column=config.slice_column,
        slice_values=slices,
        fingerprint=fingerprint,
        data_fingerprint=_data_fingerprint({"data": fingerprint}, config.label_column, list(features.columns)),
        keep=keep,
        # the seeds of a model audit's references: the same plan row and seed is the same cached model
        jobs=[ReferenceJob(f"reference-{k}", keep[k], config.seed * 100_003 + k + 1) for k in range(config.models)],
        warnings=_duplicates_warning(features, str(path)) + skipped,
    )


def game_logits(
    prepared: PreparedGame, cache: LogitCache | None, backend: Any, progress: ProgressCallback
) -> tuple[np.ndarray, Any]:
    """Every model's logits ``(K, n, C)`` on every record: read from the cache, or trained and stored as
    each finishes (an interrupted run keeps them), with progress per model."""
    done = {"count": 0}

    def on_done(_k: int, _cached: bool) -> None:
        done["count"] += 1
        progress("models", done["count"], prepared.n_models)

    progress("models", 0, prepared.n_models)
    logits, training = train_or_load(
        prepared.recipe,
        prepared.features,
        prepared.raw_labels,
        prepared.classes,
        prepared.jobs,
        prepared.data_fingerprint,
        cache,
        backend=backend,
        on_done=on_done,
    )
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=(1, 2)))
    if bad.size:
        raise InputDataError(
            f"model {int(bad[0])} of {prepared.target['spec']} gave NaN or infinite outputs on the pool"
            " (values far outside the recipe's range overflow its arithmetic: check the pool or the recipe)"
        )
    return logits, training


@dataclass(frozen=True)
class GameInputs:
    """What every attack of the game reads: each model's logits on every record and who trained on what."""

    labels: np.ndarray  # (n,)
    logits: np.ndarray  # (K, n, C)
    keep: np.ndarray  # (K, n)
    seed: int
    prepared: PreparedGame

    def for_target(self, k: int, queries: bool, features: bool = False) -> AttackInputs:
        """Model ``k`` as the target and the others as its references; ``features``: with the records as
        numbers, for attacks that read them."""
        others = np.arange(self.keep.shape[0]) != k
        live = self._live_queries(k) if queries else None
        n = self.keep.shape[1]
        numeric = self.numeric_features if features else None
        return AttackInputs(
            self.labels, self.logits[k], self.logits[others], self.keep[others], n, self.seed + k, live, numeric
        )

    @cached_property
    def numeric_features(self) -> np.ndarray:
        """The pool as a numeric matrix, built once for all K targets."""
        return numeric_matrix(self.prepared.features)

    def _live_queries(self, k: int) -> LiveQueries:
        """New queries to model ``k``: its cached outputs cannot answer perturbed records, so it is trained
        again with its own rows and seed (the same model, up to float rounding for PyTorch)."""
        prepared = self.prepared
        job = prepared.jobs[k]

        def live_target() -> Any:
            mask = job.train_mask
            return prepared.recipe.fit(prepared.features[mask], prepared.raw_labels[mask], prepared.classes, job.seed)

        others = np.flatnonzero(np.arange(self.keep.shape[0]) != k)
        return LiveQueries(live_target, prepared.features, self.labels, self.white_box.references(others))

    @cached_property
    def white_box(self) -> RetrainedWhiteBox:
        """Every model's white-box signals, each model trained again once and shared by the K targets."""
        prepared = self.prepared

        def fit(k: int) -> Any:
            mask = prepared.jobs[k].train_mask
            seed = prepared.jobs[k].seed
            return prepared.recipe.fit(prepared.features[mask], prepared.raw_labels[mask], prepared.classes, seed)

        return RetrainedWhiteBox(fit, prepared.n_models, prepared.features, self.labels)


class PooledAttack:
    """One attack played K times: its scores of every (model k, record i) trial at ``k * n + i``."""

    def __init__(self, attack: Attack, position: int, n_attacks: int, progress: ProgressCallback) -> None:
        self.attack = attack
        self.name, self.title, self.citation, self.access = attack.name, attack.title, attack.citation, attack.access
        self._position, self._n_attacks, self._progress = position, n_attacks, progress
        self._params: list[dict[str, object]] = []

    def score(self, inputs: GameInputs) -> np.ndarray:
        n_models, n = inputs.keep.shape
        out = np.empty((n_models, n), dtype=np.float64)
        self._params = []
        for k in range(n_models):
            game = inputs.for_target(k, self.attack.needs_queries, self.attack.needs_features)
            out[k] = np.asarray(self.attack.score(game))[:n]
            self._params.append(self.attack.params())
            self._progress("models attacked", self._position * n_models + k + 1, self._n_attacks * n_models)
        return out.reshape(-1)

    def params(self) -> dict[str, object]:
        """The attack's settings; those it calibrates per target (RMIA's) are listed model by model."""
        if all(p == self._params[0] for p in self._params[1:]):
            return self._params[0] if self._params else {}
        return {"per_model": self._params}


def plan_recipe_audit(config: AuditConfig) -> AuditPlan:
    """``--plan`` for a recipe audit: the K models, how many are cached, and an estimate of the rest."""
    prepared = prepare_recipe_audit(config)
    return plan_jobs(
        config,
        prepared.recipe,
        prepared.features,
        prepared.raw_labels,
        prepared.classes,
        prepared.jobs,
        prepared.data_fingerprint,
    )
