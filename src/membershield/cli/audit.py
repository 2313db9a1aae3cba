"""``membershield audit``, ``attacks`` and ``targets``: run an audit and print its summary; list what can
be attacked and how."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from membershield.attacks import REGISTRY
from membershield.cli.audit_options import (
    ApiFormatOption,
    AttacksOption,
    BackendOption,
    BatchSizeOption,
    CacheOption,
    ConfigOption,
    DataOption,
    DatasetVersionOption,
    ForgottenOption,
    HeaderOption,
    HoldoutOption,
    IdColumnOption,
    IgnoreColumnsOption,
    LabelColumnOption,
    LabelOnlyQueriesOption,
    MaxQueriesOption,
    MlflowOption,
    ModelNameOption,
    ModelOption,
    ModelsOption,
    ModelVersionOption,
    NJobsOption,
    OutOption,
    PlanOption,
    PopulationOption,
    QuasiIdentifiersOption,
    QueriesPerSecondOption,
    RarityKOption,
    RayAddressOption,
    RecipeOption,
    ReferencesOption,
    SeedOption,
    SliceColumnOption,
    StoreOption,
    TextColumnOption,
    TrainerOption,
    TrainOption,
    UserColumnOption,
)
from membershield.cli.common import DropOverlapOption, RichProgress, console, errors, pct
from membershield.cli.slices_summary import print_subject_results
from membershield.config import build_config, read_config_file
from membershield.metrics import nonmembers_needed, unresolved_fprs
from membershield.result import AuditResult


def summary_table(result: AuditResult) -> Table:
    n_in, n_out = result.data["n_members"], result.data["n_nonmembers"]
    title = f"Membership inference audit: {n_in} members, {n_out} non-members"
    if result.mode == "recipe" and result.game is not None:
        game = result.game
        title = (
            f"Recipe audit: {game['n_models']} models × {game['n_records']} records = {game['n_trials']} trials"
            f" ({n_in} member, {n_out} non-member); intervals clustered by record and model"
        )
    table = Table(title=title, title_justify="left")
    table.add_column("attack", no_wrap=True)
    table.add_column("AUC (95% CI)", justify="right")
    for fpr in result.config["fprs"]:
        table.add_column(f"TPR % @ {100 * fpr:g}% FPR", justify="right")
    table.add_column("adv. (95% CI)", justify="right")
    table.add_column(f"ε ≥ (δ={result.config['delta']:g})", justify="right")
    for attack in result.attacks:
        cells = [attack.name, f"{attack.auc:.3f} ({attack.auc_ci_low:.3f}–{attack.auc_ci_high:.3f})"]
        for rate in attack.tpr_at_fpr:
            if rate["measurable"]:
                cells.append(f"{pct(rate['tpr'])} ({pct(rate['ci_low'])}–{pct(rate['ci_high'])})")
            else:
                cells.append("not measurable")
        advantage = f"{attack.advantage:.3f}"
        if attack.advantage_ci_low is not None and attack.advantage_ci_high is not None:
            advantage += f" ({attack.advantage_ci_low:.2f}–{attack.advantage_ci_high:.2f})"
        cells += [advantage, f"{attack.epsilon_lower_bound:.2f}"]
        table.add_row(*cells)
    return table


def print_summary(result: AuditResult, out: Path) -> None:
    console.print(summary_table(result))
    unresolved = unresolved_fprs(result.config["fprs"], result.data["n_nonmembers"])
    recipe = result.mode == "recipe"
    if unresolved:
        need = nonmembers_needed(min(unresolved))
        console.print(
            f"not measurable: {result.data['n_nonmembers']} non-member{' trial' if recipe else ''}s cannot"
            f" resolve an FPR of {', '.join(f'{100 * f:g}%' for f in unresolved)} (that needs at least {need})."
        )
    print_subject_results(result)
    u = result.utility
    if recipe:
        _print_recipe_lines(result)
    else:
        console.print(
            f"target accuracy: train {u['train_accuracy']:.3f}, holdout {u['holdout_accuracy']:.3f}"
            f" (gap {u['accuracy_gap']:+.3f}); reference models: {result.references['count']}"
            f" ({result.references['loaded_from_cache']} from cache)"
        )
    if result.split_check:
        s = result.split_check
        state = "[green]ok[/green]" if s["ok"] else "[bold red]FAILED[/bold red]"
        console.print(f"split check: blind AUC {s['blind_auc']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {state}")
    if result.unlearning is not None:
        from membershield.cli.lineage import unlearning_line

        console.print(unlearning_line(result.unlearning), markup=False, highlight=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    console.print(time_summary(result))
    exposure = f", {out / 'exposure.csv'}" if recipe else ""
    console.print(
        f"wrote {out / 'audit.json'}, {out / 'scores.csv'}{exposure}, {out / 'report.html'} and {out / 'summary.md'}"
    )


def _print_recipe_lines(result: AuditResult) -> None:
    """A recipe audit's models, their accuracy and the records exposed by every model that trained on them."""
    u, game, references = result.utility, result.game or {}, result.references
    console.print(
        f"models' accuracy (all trials): train {u['train_accuracy']:.3f}, holdout {u['holdout_accuracy']:.3f}"
        f" (gap {u['accuracy_gap']:+.3f}); {references['models']} models ({references['loaded_from_cache']} from"
        f" cache), each the target of the other {references['count']}"
    )
    exposure = game.get("exposure") or {}
    entry = (exposure.get("by_attack") or {}).get(exposure.get("attack"))
    if entry:
        always = [r for r in entry["records"] if r["n_exposed"] == r["n_member_models"] >= 2]
        rows = ", ".join(str(r["row"]) for r in always[:5])
        console.print(
            f"exposed by every model that trained on them ({exposure['attack']} at {100 * exposure['fpr']:g}% FPR"
            f" per model): {entry['always_exposed']} of {game['n_records']} records"
            + (f" (rows {rows}{', ...' if entry['always_exposed'] > 5 else ''}; see exposure.csv)" if rows else "")
        )


TIMING_NAMES = {
    "load": "loading",
    "target": "target",
    "references": "reference models",
    "split_check": "split check",
    "models": "models",
    "intervals": "clustered intervals",
}


def time_summary(result: AuditResult) -> str:
    """One line: where the audit's time went, the slowest attacks named."""
    parts = []
    for stage, seconds in result.timings.items():
        if stage == "attacks":
            slowest = sorted(result.attacks, key=lambda a: a.seconds, reverse=True)[:3]
            detail = ", ".join(f"{a.name} {a.seconds:.1f}" for a in slowest if a.seconds >= 0.05)
            parts.append(f"attacks {seconds:.1f} s" + (f" ({detail})" if detail else ""))
        else:
            parts.append(f"{TIMING_NAMES.get(stage, stage)} {seconds:.1f} s")
    return "time: " + ", ".join(parts)


def audit(
    model: ModelOption = None,
    train: TrainOption = None,
    holdout: HoldoutOption = None,
    label_column: LabelColumnOption = None,
    attacks: AttacksOption = None,
    references: ReferencesOption = None,
    population: PopulationOption = None,
    slice_column: SliceColumnOption = None,
    ignore_columns: IgnoreColumnsOption = None,
    id_column: IdColumnOption = None,
    user_column: UserColumnOption = None,
    quasi_identifiers: QuasiIdentifiersOption = None,
    rarity_k: RarityKOption = None,
    drop_overlap: DropOverlapOption = False,
    seed: SeedOption = None,
    out: OutOption = None,
    cache: CacheOption = None,
    config: ConfigOption = None,
    backend: BackendOption = None,
    ray_address: RayAddressOption = None,
    n_jobs: NJobsOption = None,
    trainer: TrainerOption = None,
    recipe: RecipeOption = None,
    data: DataOption = None,
    models: ModelsOption = None,
    api_format: ApiFormatOption = None,
    header: HeaderOption = None,
    max_queries: MaxQueriesOption = None,
    queries_per_second: QueriesPerSecondOption = None,
    batch_size: BatchSizeOption = None,
    label_only_queries: LabelOnlyQueriesOption = None,
    text_column: TextColumnOption = None,
    plan: PlanOption = False,
    mlflow: MlflowOption = False,
    store: StoreOption = None,
    model_name: ModelNameOption = None,
    model_version: ModelVersionOption = None,
    forgotten: ForgottenOption = None,
    dataset_version: DatasetVersionOption = None,
) -> None:
    """Audit a trained classifier: attack it, measure the leakage, write audit.json and scores.csv; with
    --recipe and --data, audit the training pipeline itself (K models on random halves of the pool)."""
    flags = _config_flags(dict(locals()))  # before any import below adds a local
    from membershield.audit import REPORTS, run_audit  # deferred: keeps `membershield --help` fast
    from membershield.history import record_audit

    cfg = build_config(read_config_file(config) if config is not None else {}, flags)
    if plan:
        from membershield.audit import plan_audit
        from membershield.audit.recipe_game import plan_recipe_audit

        console.print((plan_recipe_audit if cfg.data else plan_audit)(cfg).describe())
        return
    runner = run_audit
    if cfg.data:
        from membershield.audit.recipe_run import run_recipe_audit as runner  # the privacy game
    with Progress(*AUDIT_PROGRESS, console=errors, transient=True) as progress:
        run = runner(cfg, progress=RichProgress(progress), reports=REPORTS)
    print_summary(run.result, Path(cfg.out))
    if mlflow:
        from membershield.mlflow_log import log_audit

        console.print(f"logged to MLflow run {log_audit(run.result.to_dict(), cfg.out)}")
    # after the files exist: they survive a store error
    recorded = record_audit(
        cfg.out, store, model_name=model_name, model_version=model_version, dataset_version=dataset_version
    )
    record = recorded.record
    console.print(f"recorded as audit #{record.id} of '{record.model_name}' in {recorded.store}", markup=False)


AUDIT_PROGRESS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    TextColumn("ETA"),
    TimeRemainingColumn(),
)
# Flags of `audit` that are not settings of the audit itself (AuditConfig).
NOT_CONFIG = ("config", "plan", "mlflow", "store", "model_name", "model_version", "dataset_version")


def _config_flags(given: dict) -> dict:
    """The audit's flags as AuditConfig values (None: not given, so the config file or the default holds)."""
    flags = {k: v for k, v in given.items() if k not in NOT_CONFIG}
    ignore = flags.pop("ignore_columns")
    flags["ignore_columns"] = [c.strip() for c in ignore.split(",") if c.strip()] if ignore else None
    flags["drop_overlap"] = flags["drop_overlap"] or None
    flags["headers"] = flags.pop("header") or None
    qis = flags.pop("quasi_identifiers")
    flags["quasi_identifiers"] = [c.strip() for c in qis.split(",") if c.strip()] if qis is not None else None
    return flags


def list_attacks(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also each attack's settings and defaults.")] = False,
) -> None:
    """List the available attacks (model, text, diffusion and synthetic-data attacks), their access and papers."""
    from membershield.diffusion.attacks import REGISTRY as DIFFUSION_REGISTRY
    from membershield.synthetic.attacks import REGISTRY as SYNTHETIC_REGISTRY
    from membershield.text.attacks import KNOWN as TEXT_REGISTRY

    table = Table(title="Attacks")
    for column in ("name", "audits", "access", "min. references", "paper"):
        table.add_column(column, overflow="fold")  # a narrow terminal folds a name, never cuts it short
    if verbose:
        # each setting on its own line, so that a narrow terminal folds the paper, not a setting
        table.add_column("settings (defaults)", no_wrap=True)
    rows = [(name, cls, "audit", str(cls.min_references)) for name, cls in REGISTRY.items()]
    rows += [(name, cls, "audit-text", "-") for name, cls in TEXT_REGISTRY.items()]
    rows += [(name, cls, "audit-diffusion", "-") for name, cls in DIFFUSION_REGISTRY.items()]
    rows += [(name, cls, "audit-synthetic", "-") for name, cls in SYNTHETIC_REGISTRY.items()]
    for name, cls, command, references in rows:
        cells = [name, command, cls.access, references, cls.citation]
        if verbose:
            cells.append("\n".join(f"{k}={v}" for k, v in cls.settings().items()) or "-")
        table.add_row(*cells)
    console.print(table)


def list_targets() -> None:
    """List the kinds of model --model can name, what access each gives and which command audits it."""
    from membershield.targets import KINDS

    table = Table(title="Target kinds (matched in this order)")
    for column in ("name", "--model", "access", "recipe", "audited by", "guard serves", "what"):
        table.add_column(column)
    for kind in KINDS:
        recipe = "yes" if kind.gives_recipe else "no"
        table.add_row(
            kind.name, kind.example, kind.access, recipe, kind.audit_command, kind.serves or "-", kind.description
        )
    console.print(table)
