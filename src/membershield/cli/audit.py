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
from membershield.cli.common import DropOverlapOption, RichProgress, console, errors, pct
from membershield.config import build_config, read_config_file
from membershield.metrics import nonmembers_needed, unresolved_fprs
from membershield.result import AuditResult


def summary_table(result: AuditResult) -> Table:
    n_in, n_out = result.data["n_members"], result.data["n_nonmembers"]
    table = Table(title=f"Membership inference audit: {n_in} members, {n_out} non-members", title_justify="left")
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
    if unresolved:
        need = nonmembers_needed(min(unresolved))
        console.print(
            f"not measurable: {result.data['n_nonmembers']} non-members cannot resolve an FPR of"
            f" {', '.join(f'{100 * f:g}%' for f in unresolved)} (that needs at least {need})."
        )
    u = result.utility
    console.print(
        f"target accuracy: train {u['train_accuracy']:.3f}, holdout {u['holdout_accuracy']:.3f}"
        f" (gap {u['accuracy_gap']:+.3f}); reference models: {result.references['count']}"
        f" ({result.references['loaded_from_cache']} from cache)"
    )
    if result.split_check:
        s = result.split_check
        state = "[green]ok[/green]" if s["ok"] else "[bold red]FAILED[/bold red]"
        console.print(f"split check: blind AUC {s['blind_auc']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {state}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    console.print(time_summary(result))
    console.print(f"wrote {out / 'audit.json'}, {out / 'scores.csv'}, {out / 'report.html'} and {out / 'summary.md'}")


TIMING_NAMES = {"load": "loading", "target": "target", "references": "reference models", "split_check": "split check"}


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
    model: Annotated[
        str | None,
        typer.Option(help="Fitted classifier (.joblib/.pkl), PyTorch recipe file.py:function, or http(s):// endpoint."),
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Members: the records the model was trained on (CSV, Parquet, NPZ).")
    ] = None,
    holdout: Annotated[str | None, typer.Option(help="Non-members: records the model never saw.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Name of the label column.")] = None,
    attacks: Annotated[
        str | None, typer.Option(help="Comma-separated attack names (see `membershield attacks`).")
    ] = None,
    references: Annotated[
        int | None, typer.Option(help="Reference (shadow) models to train for LiRA, RMIA, shadow.")
    ] = None,
    population: Annotated[
        str | None, typer.Option(help="Extra records from the same distribution, unseen by the model.")
    ] = None,
    slice_column: Annotated[str | None, typer.Option(help="Column to report per-value results for.")] = None,
    ignore_columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns that are not model features.")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column identifying each record: overlap is checked by id; not a feature.")
    ] = None,
    drop_overlap: DropOverlapOption = False,
    seed: Annotated[int | None, typer.Option(help="Seed for every random choice; same seed, same audit.")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory for audit.json and scores.csv.")] = None,
    cache: Annotated[str | None, typer.Option(help="Directory of cached reference-model outputs.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the same options; flags override it.")] = None,
    backend: Annotated[
        str | None, typer.Option(help="Where reference models train: local, processes (joblib) or ray.")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one).")] = None,
    n_jobs: Annotated[int | None, typer.Option(help="Parallel workers for the processes and ray backends.")] = None,
    trainer: Annotated[
        str | None,
        typer.Option(help="auto (K models at once when the recipe declares vectorised_spec), vectorised, sequential."),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Training pipeline (file.py:function or a model file whose clone is trained): the reference"
            " models of an endpoint or ONNX audit, or every model of a recipe audit (--data)."
        ),
    ] = None,
    api_format: Annotated[
        str | None,
        typer.Option(help="How an --model http://... endpoint talks: membershield (the guard), mlflow or kserve-v2."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            help="HTTP header 'Name: value' for the endpoint (repeatable); ${VAR} is read from the environment."
        ),
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(help="Most records the audit may send to the endpoint (refused up front if too few).")
    ] = None,
    queries_per_second: Annotated[
        float | None, typer.Option(help="Most records per second sent to the endpoint.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Records per request to the endpoint (default 64).")] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Print how many models will train, how many are cached, and an ETA.")
    ] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Also log metrics and files to MLflow (the active or a new run).")
    ] = False,
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name the audit is recorded under (default: the model file's stem).")
    ] = None,
    model_version: Annotated[str | None, typer.Option(help="Model version recorded with the audit.")] = None,
) -> None:
    """Audit a trained classifier: attack it, measure the leakage, write audit.json and scores.csv."""
    flags = _config_flags(dict(locals()))  # before any import below adds a local
    from membershield.audit import REPORTS, run_audit  # deferred: keeps `membershield --help` fast
    from membershield.history import record_audit

    cfg = build_config(read_config_file(config) if config is not None else {}, flags)
    if plan:
        from membershield.audit import plan_audit

        console.print(plan_audit(cfg).describe())
        return
    with Progress(*AUDIT_PROGRESS, console=errors, transient=True) as progress:
        run = run_audit(cfg, progress=RichProgress(progress), reports=REPORTS)
    print_summary(run.result, Path(cfg.out))
    if mlflow:
        from membershield.mlflow_log import log_audit

        console.print(f"logged to MLflow run {log_audit(run.result.to_dict(), cfg.out)}")
    # after the files exist: they survive a store error
    recorded = record_audit(cfg.out, store, model_name=model_name, model_version=model_version)
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
NOT_CONFIG = ("config", "plan", "mlflow", "store", "model_name", "model_version")


def _config_flags(given: dict) -> dict:
    """The audit's flags as AuditConfig values (None: not given, so the config file or the default holds)."""
    flags = {k: v for k, v in given.items() if k not in NOT_CONFIG}
    ignore = flags.pop("ignore_columns")
    flags["ignore_columns"] = [c.strip() for c in ignore.split(",") if c.strip()] if ignore else None
    flags["drop_overlap"] = flags["drop_overlap"] or None
    flags["headers"] = flags.pop("header") or None
    return flags


def list_attacks(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also each attack's settings and defaults.")] = False,
) -> None:
    """List the available attacks (model and text attacks), their access needs and papers."""
    from membershield.text.attacks import REGISTRY as TEXT_REGISTRY

    table = Table(title="Attacks")
    for column in ("name", "audits", "access", "min. references", "paper"):
        table.add_column(column)
    if verbose:
        table.add_column("settings (defaults)")
    rows = [(name, cls, "audit", str(cls.min_references)) for name, cls in REGISTRY.items()]
    rows += [(name, cls, "audit-text", "-") for name, cls in TEXT_REGISTRY.items()]
    for name, cls, command, references in rows:
        cells = [name, command, cls.access, references, cls.citation]
        if verbose:
            cells.append(", ".join(f"{k}={v}" for k, v in cls.settings().items()) or "-")
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
