"""The first stage of a model audit: load and check the model and the data, and decide which models must
exist (the reference plan). Nothing trains here; ``--plan`` stops after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from membershield import metrics
from membershield.attacks import DEFAULT_ATTACKS, REGISTRY, Attack, create_attack
from membershield.config import AuditConfig
from membershield.data.overlap import row_hashes
from membershield.data.pool import Pool, Tables, build_pool, load_population
from membershield.data.rarity import Rarity, find_rare_records
from membershield.errors import ConfigError, InputDataError
from membershield.targets import LoadedModel
from membershield.targets.registry import load_for
from membershield.training import ReferenceJob, membership_plan
from membershield.training.cache import cache_key


@dataclass
class PreparedAudit:
    """Everything loaded and checked before any model trains: shared by the audit and its ``--plan``."""

    loaded: LoadedModel
    attacks: list[Attack]
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
    rarity: Rarity | None = None  # each record's quasi-identifier combination count (audit, then population)

    @property
    def n_audit(self) -> int:
        return len(self.pool)


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


def _requirement_problems(attack: Attack, loaded: LoadedModel) -> list[str]:
    problems = attack.requirement_problems(
        target_access=loaded.access,
        gives_recipe=loaded.recipe is not None,
        queryable=loaded.target is not None or loaded.recipe is not None,
    )
    form = getattr(loaded.target, "form", None)  # what a model behind an API turned out to answer
    if form is not None and form.access == "label-only" and attack.access != "label-only":
        problems.append(f"'{attack.name}' needs probabilities, and the endpoint answers {form.description}")
    if attack.min_references and loaded.recipe is None and loaded.target is not None:
        problems = [p + " (give --recipe: the training pipeline)" if "recipe" in p else p for p in problems]
    return problems


def _candidates(config: AuditConfig, loaded: LoadedModel, default: bool) -> list[str]:
    """The attacks to try: as asked, and by default the label-only ones too where that is all there is."""
    if default and loaded.access == "label-only":
        extra = [
            name
            for name, cls in REGISTRY.items()
            if cls.access == "label-only" and not cls.by_name_only and name not in config.attacks
        ]
        return [*config.attacks, *extra]
    return list(config.attacks)


def attack_settings(config: AuditConfig, name: str) -> dict[str, object]:
    """The settings of attack ``name`` that audit options set (the rest keep their defaults)."""
    if name == "label-only-boundary":
        return {"queries_per_record": config.label_only_queries}
    return {}


def _skipped(name: str, problems: list[str]) -> str:
    reasons = [p.removeprefix(f"'{name}' ") for p in problems]
    return f"skipped '{name}': it " + " and ".join(reasons)


def _attacks_for(config: AuditConfig, loaded: LoadedModel) -> tuple[list[Attack], int, list[str]]:
    """The attacks, checked against what the target gives (access, a recipe, queries), the number of
    reference models they need, and the attacks of the default list skipped with why.

    An attack asked for by name that cannot run is an error (every problem at once); from the default
    list it is skipped and said so, so that the default audit of a label-only endpoint runs exactly the
    label-only attacks."""
    default = list(config.attacks) == list(DEFAULT_ATTACKS)
    attacks = [create_attack(name, attack_settings(config, name)) for name in _candidates(config, loaded, default)]
    problems = {attack.name: _requirement_problems(attack, loaded) for attack in attacks}
    skipped: list[str] = []
    if default:
        skipped = [_skipped(a.name, problems[a.name]) for a in attacks if problems[a.name]]
        attacks = [a for a in attacks if not problems[a.name]]
        if not attacks:
            raise ConfigError(f"{config.model}: no attack of the default list can run: " + "; ".join(skipped))
    elif any(problems.values()):
        found = [p for a in attacks for p in problems[a.name]]
        raise ConfigError(f"{config.model}: " + "; ".join(found) + " (drop those attacks from --attacks)")
    # an attack that only calibrates with references trains them where the target gives a recipe
    wanted = any(a.min_references or (a.uses_references and loaded.recipe is not None) for a in attacks)
    n_references = config.references if wanted else 0
    for attack in attacks:
        attack.check(n_references)
    return attacks, n_references, skipped


def _refuse_white_box_endpoint(config: AuditConfig, loaded: LoadedModel) -> None:
    """A model behind an API never gives its weights: white-box attacks fail before the first query."""
    if not hasattr(loaded.target, "discover_access") or list(config.attacks) == list(DEFAULT_ATTACKS):
        return
    white_box = [name for name in config.attacks if name in REGISTRY and REGISTRY[name].access == "white-box"]
    if white_box:
        raise ConfigError(
            f"{config.model}: {', '.join(repr(n) for n in white_box)} need{'s' if len(white_box) == 1 else ''}"
            " white-box access (the model's weights),"
            " and a model behind an API answers queries only (drop those attacks from --attacks, or audit the"
            " PyTorch recipe itself)"
        )


def _query_endpoint_first(loaded: LoadedModel, features: pd.DataFrame) -> None:
    """A model behind an API: the budget checked before the first query, then the first batch asked, so
    that the attacks can be chosen by what its answers hold."""
    if hasattr(loaded.target, "discover_access"):
        loaded.target.discover_access(features)


def _check_query_budget(loaded: LoadedModel, attacks: list[Attack], features: pd.DataFrame) -> None:
    if hasattr(loaded.target, "check_budget"):
        per_record = sum(getattr(a, "queries_per_record", 0) for a in attacks if a.needs_queries)
        loaded.target.check_budget(features, per_record * len(features))


def target_options(config: AuditConfig) -> dict[str, Any]:
    """What a target kind may need besides ``--model``; each kind reads the options it knows."""
    return {
        "recipe": config.recipe,
        "api_format": config.api_format,
        "headers": tuple(config.headers),
        "max_queries": config.max_queries,
        "queries_per_second": config.queries_per_second,
        "batch_size": config.batch_size,
        "cache": config.cache,
        "text_column": config.text_column,
    }


def _member_count_warning(n_members: int) -> list[str]:
    floor = metrics.smallest_resolvable_tpr(n_members)
    if floor <= 0.05:
        return []
    return [
        f"only {n_members} members: a TPR below {100 * floor:.0f}% cannot be told from 0 (with no member"
        f" flagged, its 95% interval reaches {100 * floor:.0f}%) and every TPR moves in steps of"
        f" {100 / n_members:.0f}%; give more members to resolve smaller rates"
    ]


def _with_population(
    config: AuditConfig, pool: Pool, fingerprints: dict[str, str], warnings: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The audit records followed by the population records (``--population``), whose fingerprint joins
    ``fingerprints``; a population record that is also an audit record is a warning."""
    if not config.population:
        return pool.features, pool.labels
    features, labels, fingerprints["population"] = load_population(
        config.population, config.label_column, list(pool.features.columns)
    )
    seen = np.flatnonzero(np.isin(row_hashes(features), row_hashes(pool.features)))
    if seen.size:
        warnings.append(
            f"{seen.size} population record(s) of {config.population} are also members or non-members"
            f" (rows {', '.join(str(r) for r in seen[:5])}{', ...' if seen.size > 5 else ''}): population"
            " records must be unseen by the target; remove them"
        )
    return pd.concat([pool.features, features], ignore_index=True), np.concatenate([pool.labels, labels])


def _sorted_labels(values: np.ndarray) -> np.ndarray:
    return np.array(sorted(set(values.tolist()), key=lambda v: (str(type(v)), v)))


def _classes(loaded: LoadedModel, pool: Pool, raw_labels: np.ndarray) -> np.ndarray:
    if loaded.target is not None and loaded.target.classes is not None:
        return np.asarray(loaded.target.classes)
    if loaded.target is not None:
        # a model behind an API that does not name its classes: the labels of the records, sorted as a
        # scikit-learn model orders its probability columns
        classes = _sorted_labels(raw_labels[: len(pool)])
        loaded.target.bind_classes(classes)
        return classes
    return _sorted_labels(raw_labels[: len(pool)][pool.is_member])


def prepare_audit(config: AuditConfig, model: LoadedModel | None = None, tables: Tables | None = None) -> PreparedAudit:
    """Load and validate the model and data, and decide which models must exist.

    ``model`` replaces loading ``config.model`` from disk, and ``tables`` reading ``config.train`` and
    ``config.holdout``, for callers that hold them in memory (``compare``); the paths then only name them.
    """
    config.validate()
    loaded = model if model is not None else load_for("audit", config.model, **target_options(config))
    pool = build_pool(
        config.train,
        config.holdout,
        config.label_column,
        config.slice_column,
        tuple(config.ignore_columns),
        id_column=config.id_column,
        user_column=config.user_column,
        drop_overlap=config.drop_overlap,
        tables=tables,
    )
    fingerprints = dict(pool.fingerprints)
    warnings = pool.split_warnings() + _member_count_warning(pool.n_members)
    features, raw_labels = _with_population(config, pool, fingerprints, warnings)
    rarity = find_rare_records(features, config.quasi_identifiers, config.rarity_k)  # before anything trains
    warnings += rarity.warnings(len(pool))
    _refuse_white_box_endpoint(config, loaded)
    _query_endpoint_first(loaded, features)
    attacks, n_references, skipped = _attacks_for(config, loaded)
    _check_query_budget(loaded, attacks, features)
    warnings += skipped
    classes = _classes(loaded, pool, raw_labels)
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
        attacks=attacks,
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
        rarity=rarity,
    )
