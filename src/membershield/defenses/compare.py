"""Side-by-side privacy/utility comparison of defenses on one recipe and one pool of records.

``run_compare`` splits the pool in two halves (seeded, stratified by label): members and holdout. For
every defense it trains the target from the defended recipe on the members and audits it with the same
attacks, reference models trained from the *same defended recipe* (an attacker who knows the defense),
and the same seed. Each variant's audit lands in ``OUT/<variant>/`` as an ordinary audit; ``compare.json``
lines them up with their holdout accuracy and, for DP-SGD, the accounting that states the theoretical ε
next to the empirical lower bound the attacks establish.

The judgement is one plain question per variant: did it lower LiRA's true-positive rate at 1% FPR (the
headline of Carlini et al. 2022) against the undefended model? The answer is written out either way.
Output-only defenses (``output:...`` and ``memguard``) change what the model reveals, not what it
learned; every variant is then also attacked by the label-only and threshold attacks, and an output
defense is never counted as protection, since its labels, and with them the label-only attacks' view,
are unchanged.

Models train on the audit's backend (in-process, worker processes or Ray); the recipes pickle by
reference to the recipe file, so every backend trains the same models for the same seed (up to float
rounding in PyTorch's kernels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from membershield.attacks import parse_attack_list
from membershield.audit import ProgressCallback, run_audit
from membershield.config import AuditConfig
from membershield.data.io import load_table
from membershield.data.pool import Tables
from membershield.defenses.frontier import pareto, parse_budget, point_of, recommend
from membershield.defenses.registry import Defense, OutputDefense, parse_defense_list, slug
from membershield.defenses.training import DefendedRecipe, HardenedRecipe, NoDefense, TrainingDefense
from membershield.errors import ConfigError, InputDataError, MembershieldError, ModelLoadError
from membershield.metrics import nonmembers_needed
from membershield.result import HEADLINE_FPR, environment_stamp, rate_in
from membershield.targets import LoadedModel, load_model
from membershield.targets.base import Recipe
from membershield.training.backends import BACKENDS

SCHEMA_VERSION = "1.0"
DEFAULT_DEFENSES = "none,dp:epsilon=8,relaxloss,label-smoothing:0.1"
DEFAULT_ATTACKS = ("loss", "confidence", "lira", "rmia")
OUTPUT_DEFENSE_ATTACKS = ("label-only-gap", "label-only-noise", "loss", "confidence")
LABEL_ONLY_ATTACKS = ("label-only-gap", "label-only-noise")
HEADLINE_ATTACK = "lira"
DP_FIELDS = ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "accountant", "max_grad_norm")


@dataclass
class CompareOptions:
    recipe: str
    data: str
    label_column: str
    defenses: str = DEFAULT_DEFENSES
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    references: int = 8
    seed: int = 0
    out: str = "membershield-compare"
    ignore_columns: list[str] = field(default_factory=list)
    reports: bool = True  # an HTML audit report per variant as well
    backend: str = "local"  # where the models train: local, processes or ray (training.backends)
    n_jobs: int | None = None
    ray_address: str | None = None
    recommend: str | None = None  # an accuracy budget, "max_accuracy_drop=0.02" (defenses.frontier)


@dataclass
class Variant:
    name: str  # the spec string as given
    slug: str
    defense: Defense
    recipe: Recipe

    @property
    def kind(self) -> str:
        if isinstance(self.defense, OutputDefense):
            return "output"
        return "none" if isinstance(self.defense, NoDefense) else "training"


def _base_spec(loaded: LoadedModel) -> Any:
    """The recipe's declared training (``vectorised_spec()``), or None."""
    from membershield.training.vectorised import vectorised_spec_of

    function = getattr(loaded.recipe, "function", None)
    if function is None:
        return None
    try:
        return vectorised_spec_of(function)
    except Exception as exc:  # user code: one line, with the file
        raise ModelLoadError(
            f"recipe {loaded.spec}: vectorised_spec() failed: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc


def build_variants(options: CompareOptions, loaded: LoadedModel) -> tuple[list[Variant], list[str]]:
    """One recipe per defense, all checked before anything trains. ``none`` is added first if missing."""
    parsed = parse_defense_list(options.defenses)
    notes: list[str] = []
    if not any(isinstance(d, NoDefense) for _, d in parsed):
        parsed.insert(0, ("none", NoDefense()))
        notes.append("added the undefended baseline 'none', which every defense is compared with")
    spec = _base_spec(loaded) if loaded.target is None else None
    is_sklearn = loaded.kind == "sklearn"

    def defended(defense: TrainingDefense, text: str) -> Recipe:
        if spec is None:
            if isinstance(defense, NoDefense):
                return loaded.recipe
            if is_sklearn:
                raise ConfigError(
                    f"defense '{text}' trains PyTorch models, but {loaded.spec} is a scikit-learn model;"
                    " training-time defenses need a PyTorch recipe file.py:function that declares"
                    " vectorised_spec() (see examples/torch_mlp.py); output:... defenses work on any model"
                )
            raise ConfigError(
                f"defense '{text}' needs the recipe's training declared, but {loaded.spec.rpartition(':')[0]} has no"
                " vectorised_spec() (see examples/torch_mlp.py)"
            )
        try:
            return DefendedRecipe(
                spec,
                defense,
                source=loaded.recipe.identity(),
                report_seed=options.seed,
                recipe_file=getattr(loaded.recipe, "spec", None),
            )
        except MembershieldError:
            raise
        except Exception as exc:
            raise ConfigError(f"defense '{text}': {type(exc).__name__}: {exc}".splitlines()[0]) from exc

    variants: list[Variant] = []
    used: set[str] = set()
    for text, defense in parsed:
        if isinstance(defense, OutputDefense):
            recipe: Recipe = HardenedRecipe(
                defended(NoDefense(), "none"), defense.policy, memguard=defense.memguard, report_seed=options.seed
            )
        else:
            recipe = defended(defense, text)
        name = slug(text)
        while name in used:
            name += "-2"
        used.add(name)
        variants.append(Variant(text, name, defense, recipe))
    return variants, notes


def split_pool(options: CompareOptions, out: Path) -> tuple[Path, Path, dict[str, Any], Tables]:
    """Members and holdout halves of the pool, stratified by label, written under ``out`` (for the record
    and for re-running an audit by hand) and handed to every variant's audit in memory."""
    from sklearn.model_selection import train_test_split

    table = load_table(options.data)
    if options.label_column not in table.columns:
        shown = ", ".join(list(table.columns)[:12])
        raise InputDataError(
            f"{options.data}: no column '{options.label_column}' (columns: {shown}); pass the right --label-column"
        )
    if len(table) < 4:
        raise InputDataError(f"{options.data}: {len(table)} rows are too few to split into members and holdout")
    labels = table[options.label_column]
    counts = labels.value_counts()
    stratify = labels if counts.min() >= 2 else None
    members, holdout = train_test_split(
        table, test_size=0.5, random_state=options.seed, shuffle=True, stratify=stratify
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "members.csv", out / "holdout.csv"
    try:
        members.to_csv(paths[0], index=False)
        holdout.to_csv(paths[1], index=False)
    except OSError as exc:
        raise MembershieldError(f"cannot write to {out}: {exc.strerror} (pass --out DIR)") from exc
    info = {
        "pool": str(options.data),
        "label_column": options.label_column,
        "n_pool": len(table),
        "n_members": len(members),
        "n_holdout": len(holdout),
        "members": paths[0].name,
        "holdout": paths[1].name,
        "stratified": stratify is not None,
        "split_seed": options.seed,
    }
    return paths[0], paths[1], info, Tables(members.reset_index(drop=True), holdout.reset_index(drop=True))


def rate_at(attack: dict[str, Any], fpr: float = HEADLINE_FPR) -> Mapping[str, Any] | None:
    return rate_in(attack["tpr_at_fpr"], fpr)


def _point(attack: dict[str, Any]) -> dict[str, Any]:
    rate = rate_at(attack) or {}
    return {
        "attack": attack["name"],
        "fpr": HEADLINE_FPR,
        "tpr": rate.get("tpr") if rate.get("measurable") else None,
        "tpr_ci_low": rate.get("ci_low") if rate.get("measurable") else None,
        "tpr_ci_high": rate.get("ci_high") if rate.get("measurable") else None,
        "measurable": bool(rate.get("measurable")),
        "auc": attack["auc"],
        "auc_ci_low": attack["auc_ci_low"],
        "auc_ci_high": attack["auc_ci_high"],
    }


def _worst(attacks: list[dict[str, Any]], names: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    chosen = [a for a in attacks if names is None or a["name"] in names]
    if not chosen:
        return None
    return _point(max(chosen, key=lambda a: ((rate_at(a) or {}).get("tpr") or -1.0, a["auc"] or 0.0)))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def judge(entry: dict[str, Any], baseline: dict[str, Any], headline_attack: str) -> None:
    """Fill ``lowers_lira_tpr``, ``counts_as_protection`` and the plain-language ``verdict``."""
    if entry is baseline:
        entry.update(lowers_lira_tpr=None, counts_as_protection=None, verdict="baseline (no defense)")
        return
    mine = next(a for a in entry["attacks"] if a["name"] == headline_attack)
    theirs = next(a for a in baseline["attacks"] if a["name"] == headline_attack)
    now, before = _point(mine), _point(theirs)
    label = f"{'LiRA' if headline_attack == 'lira' else headline_attack} TPR at 1% FPR"
    lowered: bool | None = None
    clearly: bool | None = None
    if not (now["measurable"] and before["measurable"]):
        text = f"{label} not measurable: at least {nonmembers_needed(HEADLINE_FPR)} non-members are needed"
    else:
        lowered = now["tpr"] < before["tpr"]
        clearly = lowered and now["tpr_ci_high"] < before["tpr_ci_low"]
        if lowered:
            strength = "" if clearly else " (within the 95% intervals: not clearly)"
            text = f"lowers {label}: {_pct(now['tpr'])} vs {_pct(before['tpr'])} undefended{strength}"
        else:
            text = f"did NOT lower {label}: {_pct(now['tpr'])} vs {_pct(before['tpr'])} undefended"
    protects = lowered
    if entry["defense"]["kind"] == "output":
        protects = False
        label_only = _worst(entry["attacks"], LABEL_ONLY_ATTACKS)
        base_label_only = _worst(baseline["attacks"], LABEL_ONLY_ATTACKS)
        if label_only is not None and base_label_only is not None:
            text += (
                f"; NOT protection: it hides confidences only and the labels are unchanged, so the label-only"
                f" attack {label_only['attack']} still reaches AUC {label_only['auc']:.3f}"
                f" (undefended {base_label_only['auc']:.3f})"
            )
        else:
            text += "; NOT protection: it hides confidences only and the labels are unchanged"
    entry.update(lowers_lira_tpr=lowered, clearly_lowers_lira_tpr=clearly, counts_as_protection=protects, verdict=text)


def _entry(variant: Variant, audit: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    defense = variant.defense
    entry: dict[str, Any] = {
        "name": variant.name,
        "slug": variant.slug,
        "defense": {
            "name": defense.name,
            "kind": variant.kind,
            "spec": defense.label(),
            "params": defense.params(),
            "citation": getattr(defense, "citation", ""),
        },
        "audit": f"{variant.slug}/audit.json",
        "holdout_accuracy": audit["utility"]["holdout_accuracy"],
        "train_accuracy": audit["utility"]["train_accuracy"],
        "accuracy_gap": audit["utility"]["accuracy_gap"],
        "n_members": audit["data"]["n_members"],
        "n_nonmembers": audit["data"]["n_nonmembers"],
        "training_seconds": (report or {}).get("training_seconds"),
        "training_fits": (report or {}).get("training_fits"),
        "defense_report": report,
        "attacks": audit["attacks"],
    }
    if defense.name == "dp" and report:
        entry.update({k: report.get(k) for k in DP_FIELDS})
    bounds = [(a["epsilon_lower_bound"], a["name"]) for a in audit["attacks"] if a["epsilon_lower_bound"] is not None]
    best = max(bounds, default=(None, None))
    entry["empirical_epsilon_lower_bound"] = best[0]
    entry["empirical_epsilon_attack"] = best[1]
    entry["worst_attack"] = _worst(audit["attacks"])
    return entry


def _warm_up(loaded: LoadedModel, members: Path, options: CompareOptions) -> None:
    """One epoch on a few rows before anything is timed: the first model trained in a process pays for
    PyTorch's one-off start-up, which would otherwise be charged to the baseline's training time."""
    from dataclasses import replace

    spec = _base_spec(loaded) if loaded.target is None else None
    if spec is None:
        return
    rows = load_table(members).head(2 * spec.batch_size)
    features = rows.drop(columns=[options.label_column, *[c for c in options.ignore_columns if c in rows]])
    labels = rows[options.label_column].to_numpy()
    try:
        DefendedRecipe(replace(spec, epochs=1), NoDefense()).fit(features, labels, np.unique(labels), 0)
    except Exception:  # only a warm-up: the audit itself reports any problem with the recipe or the data
        return


def _train_target_here(config: AuditConfig, model: LoadedModel, tables: Tables) -> None:
    """Train the variant's target in this process as the audit will, so that its recipe records the
    defense report (DP accounting, training time): a model trained in a worker reports nothing back.
    The audit trains it again on the backend; the same seed gives the same model."""
    from membershield.audit import prepare_audit

    if not hasattr(model.recipe, "defense_report"):
        return
    prepared = prepare_audit(config, model, tables)
    assert prepared.target_job is not None
    rows = prepared.target_job.train_mask
    model.recipe.fit(prepared.features[rows], prepared.raw_labels[rows], prepared.classes, prepared.target_job.seed)


@dataclass
class CompareRun:
    document: dict[str, Any]
    out: Path


def _with_output_defense_attacks(attacks: list[str], variants: list[Variant], notes: list[str]) -> list[str]:
    """``attacks`` plus the ones an output defense (or a training defense that rewrites answers) must face,
    noting any added."""
    if any(v.kind == "output" or getattr(v.defense, "modifies_outputs", False) for v in variants):
        added = [a for a in OUTPUT_DEFENSE_ATTACKS if a not in attacks]
        attacks += added
        if added:
            notes.append(
                f"added {', '.join(added)} for every variant: a defense that changes the answers must also face"
                " attacks that need no confidences"
            )
    return attacks


def _variant_config(
    options: CompareOptions, variant: Variant, index: int, attacks: list[str], members: Path, holdout: Path
) -> AuditConfig:
    return AuditConfig(
        model=options.recipe,
        train=str(members),
        holdout=str(holdout),
        label_column=options.label_column,
        attacks=list(attacks),
        references=options.references,
        ignore_columns=list(options.ignore_columns),
        seed=options.seed,
        out=str(Path(options.out) / variant.slug),
        cache="",  # each variant's recipe is new; its report needs the target trained in this run
        split_check=index == 0,  # the same split for every variant: checked once
        backend=options.backend,
        n_jobs=options.n_jobs,
        ray_address=options.ray_address,
    )


def _variant_model(options: CompareOptions, loaded: LoadedModel, variant: Variant) -> LoadedModel:
    return LoadedModel(
        target=None,
        recipe=variant.recipe,
        kind=f"{loaded.kind}+defense" if variant.kind != "none" else loaded.kind,
        spec=f"{options.recipe} [{variant.name}]",
        sha256=loaded.sha256,
    )


def _audit_variants(
    options: CompareOptions,
    loaded: LoadedModel,
    variants: list[Variant],
    attacks: list[str],
    pool: tuple[Path, Path, Tables],
    progress: ProgressCallback | None,
    on_variant: Callable[[int, int, str], None] | None,
) -> tuple[list[dict[str, Any]], Any]:
    """One comparison entry per variant, and the split check of the first audit (the same split for all)."""
    members, holdout, tables = pool
    entries: list[dict[str, Any]] = []
    split_check = None
    for i, variant in enumerate(variants):
        if on_variant:
            on_variant(i, len(variants), variant.name)
        config = _variant_config(options, variant, i, attacks, members, holdout)
        model = _variant_model(options, loaded, variant)
        if options.backend != "local":
            _train_target_here(config, model, tables)
        reports = ("html",) if options.reports else ()
        run = run_audit(config, progress=progress, model=model, tables=tables, reports=reports)
        audit = run.result.to_dict()
        if i == 0:
            split_check = audit["split_check"]
        entries.append(_entry(variant, audit, getattr(variant.recipe, "defense_report", None)))
    return entries, split_check


def _judge_against_baseline(
    entries: list[dict[str, Any]], headline_attack: str | None, notes: list[str]
) -> tuple[dict[str, Any], str]:
    """Judge every entry against the undefended one; returns it and the attack the verdicts use."""
    baseline = next(e for e in entries if e["defense"]["kind"] == "none")
    if headline_attack is None:
        worst = baseline["worst_attack"]
        headline_attack = worst["attack"] if worst else entries[0]["attacks"][0]["name"]
        notes.append(f"'lira' was not among the attacks; verdicts use the strongest on the baseline, {headline_attack}")
    base_seconds = baseline.get("training_seconds")
    for entry in entries:
        judge(entry, baseline, headline_attack)
        seconds = entry.get("training_seconds")
        entry["training_time_ratio"] = seconds / base_seconds if seconds and base_seconds else None
    return baseline, headline_attack


def _mark_frontier(
    entries: list[dict[str, Any]], baseline: dict[str, Any], budget: dict[str, float] | None
) -> dict[str, Any]:
    """Mark each entry ``pareto`` (with who ``dominated_by`` it) and add the recommendation when asked."""
    points = [point_of(e, accuracy_interval(e["holdout_accuracy"], e["n_nonmembers"])) for e in entries]
    dominated = pareto(points)
    for entry, point in zip(entries, points, strict=True):
        entry["pareto"] = not dominated[point.name]
        entry["dominated_by"] = dominated[point.name]
        entry["holdout_accuracy_ci"] = [point.accuracy_low, point.accuracy_high]
    frontier: dict[str, Any] = {
        "accuracy": "holdout accuracy, 95% Clopper-Pearson interval",
        "leakage": f"TPR at {HEADLINE_FPR:g} FPR of each variant's strongest attack, with its 95% interval",
        "rule": "dominated only when another variant is not clearly worse on either axis and clearly better on"
        " one (non-overlapping intervals)",
        "pareto": [p.name for p in points if not dominated[p.name]],
    }
    if budget is not None:
        frontier["recommendation"] = recommend(points, baseline["name"], budget)
    return frontier


def run_compare(
    options: CompareOptions,
    progress: ProgressCallback | None = None,
    on_variant: Callable[[int, int, str], None] | None = None,
) -> CompareRun:
    """Train and audit every variant; write ``compare.json`` and ``compare.html`` under ``options.out``."""
    out = Path(options.out)
    if options.backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{options.backend}': choose one of {', '.join(BACKENDS)}")
    attacks = parse_attack_list(options.attacks)
    budget = parse_budget(options.recommend) if options.recommend is not None else None
    loaded = load_model(options.recipe)
    variants, notes = build_variants(options, loaded)
    attacks = _with_output_defense_attacks(attacks, variants, notes)
    headline_attack = HEADLINE_ATTACK if HEADLINE_ATTACK in attacks else None
    members, holdout, data_info, tables = split_pool(options, out)
    _warm_up(loaded, members, options)
    entries, split_check = _audit_variants(
        options, loaded, variants, attacks, (members, holdout, tables), progress, on_variant
    )
    baseline, headline_attack = _judge_against_baseline(entries, headline_attack, notes)
    frontier = _mark_frontier(entries, baseline, budget)
    document = {
        "schema_version": SCHEMA_VERSION,
        "recipe": {"spec": options.recipe, "kind": loaded.kind, "sha256": loaded.sha256},
        "data": data_info,
        "attacks": attacks,
        "references": options.references,
        "seed": options.seed,
        "baseline": baseline["name"],
        "headline": {"attack": headline_attack, "fpr": HEADLINE_FPR},
        "split_check": split_check,
        "notes": notes,
        "variants": entries,
        "frontier": frontier,
        "environment": environment_stamp(),
    }
    write_compare(document, out)
    return CompareRun(document, out)


def write_compare(document: dict[str, Any], out: Path) -> None:
    import json

    from membershield.report.comparison import render_compare_html
    from membershield.result import jsonable

    try:
        (out / "compare.json").write_text(json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n")
        (out / "compare.html").write_text(render_compare_html(document), encoding="utf-8")
    except OSError as exc:
        raise MembershieldError(f"cannot write results to {out}: {exc.strerror} (pass --out DIR)") from exc


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95% Clopper–Pearson interval of an accuracy measured on ``n`` records."""
    from membershield.metrics import clopper_pearson

    interval = clopper_pearson(round(accuracy * n), n)
    return interval.low, interval.high


__all__ = ["CompareOptions", "CompareRun", "build_variants", "run_compare", "split_pool"]
