"""Command-line interface. Commands only parse options, call the library and render; no logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
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
from membershield.config import build_config, read_config_file
from membershield.errors import MembershieldError
from membershield.result import AuditResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure membership-inference leakage of machine-learning models.",
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, files) has no terminal width; 140 columns keeps the summary table unwrapped.
console = Console() if Console().is_terminal else Console(width=140)
errors = Console(stderr=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def summary_table(result: AuditResult) -> Table:
    n_in, n_out = result.data["n_members"], result.data["n_nonmembers"]
    table = Table(title=f"Membership inference audit: {n_in} members, {n_out} non-members", title_justify="left")
    table.add_column("attack", no_wrap=True)
    table.add_column("AUC (95% CI)", justify="right")
    for fpr in result.config["fprs"]:
        table.add_column(f"TPR % @ {100 * fpr:g}% FPR", justify="right")
    table.add_column("adv.", justify="right")
    table.add_column(f"ε ≥ (δ={result.config['delta']:g})", justify="right")
    for attack in result.attacks:
        cells = [attack.name, f"{attack.auc:.3f} ({attack.auc_ci_low:.3f}–{attack.auc_ci_high:.3f})"]
        for rate in attack.tpr_at_fpr:
            if rate["measurable"]:
                cells.append(f"{_pct(rate['tpr'])} ({_pct(rate['ci_low'])}–{_pct(rate['ci_high'])})")
            else:
                cells.append("not measurable")
        cells += [f"{attack.advantage:.3f}", f"{attack.epsilon_lower_bound:.2f}"]
        table.add_row(*cells)
    return table


def print_summary(result: AuditResult, out: Path) -> None:
    console.print(summary_table(result))
    unresolved = [f for f in result.config["fprs"] if f * result.data["n_nonmembers"] < 1]
    if unresolved:
        need = round(1 / min(unresolved))
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
    console.print(f"wrote {out / 'audit.json'}, {out / 'scores.csv'} and {out / 'report.html'}")


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = "attacks" if stage.startswith("attack") else stage
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(stage, total=total or None)
        self.progress.update(self.tasks[key], completed=done, total=total or None, description=stage)


@app.command()
def audit(
    model: Annotated[
        str | None, typer.Option(help="Fitted classifier (.joblib/.pkl) or PyTorch recipe file.py:function.")
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
    seed: Annotated[int | None, typer.Option(help="Seed for every random choice; same seed, same audit.")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory for audit.json and scores.csv.")] = None,
    cache: Annotated[str | None, typer.Option(help="Directory of cached reference-model outputs.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the same options; flags override it.")] = None,
    backend: Annotated[
        str | None, typer.Option(help="Where reference models train: local, processes (joblib) or ray.")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one).")] = None,
    n_jobs: Annotated[int | None, typer.Option(help="Parallel workers for the processes and ray backends.")] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Print how many models will train, how many are cached, and an ETA.")
    ] = False,
) -> None:
    """Audit a trained classifier: attack it, measure the leakage, write audit.json and scores.csv."""
    from membershield.audit import run_audit  # deferred: keeps `membershield --help` fast

    file_values = read_config_file(config) if config is not None else {}
    flags = {
        "model": model,
        "train": train,
        "holdout": holdout,
        "label_column": label_column,
        "attacks": attacks,
        "references": references,
        "population": population,
        "slice_column": slice_column,
        "backend": backend,
        "ray_address": ray_address,
        "n_jobs": n_jobs,
        "seed": seed,
        "out": out,
        "cache": cache,
        "ignore_columns": [c.strip() for c in ignore_columns.split(",") if c.strip()] if ignore_columns else None,
    }
    cfg = build_config(file_values, flags)
    if plan:
        from membershield.audit import plan_audit

        console.print(plan_audit(cfg).describe())
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as progress:
        run = run_audit(cfg, progress=_RichProgress(progress))
    from membershield.report.html import write_html_report  # deferred like run_audit: matplotlib loads slowly

    write_html_report(run.result, run.scores, Path(cfg.out) / "report.html")
    print_summary(run.result, Path(cfg.out))


@app.command("attacks")
def list_attacks() -> None:
    """List the available attacks, their access needs and papers."""
    table = Table(title="Attacks")
    for column in ("name", "access", "min. references", "paper"):
        table.add_column(column)
    for name, cls in REGISTRY.items():
        table.add_row(name, cls.access, str(cls.min_references), cls.citation)
    console.print(table)


@app.command()
def report(
    audit_file: Annotated[
        Path, typer.Argument(metavar="AUDIT_JSON", help="The audit.json written by `membershield audit`.")
    ],
    output_format: Annotated[
        str, typer.Option("--format", help="html: the full report; md: a short summary for a pull-request comment.")
    ] = "html",
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: report.html next to audit.json; md prints instead).")
    ] = None,
) -> None:
    """Render the report of a finished audit from its audit.json and the scores.csv next to it."""
    from membershield.report import write_report

    path, text = write_report(audit_file, output_format, out)
    if path is None:
        typer.echo(text, nl=False)
    else:
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    try:
        app(standalone_mode=False)
    except MembershieldError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        errors.print("interrupted: finished reference models are cached; run the same command again to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
