"""``membershield audit-synthetic``: does a synthetic table leak the real records it was made from?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from membershield.cli.audit import summary_table, time_summary
from membershield.cli.audit_options import MlflowOption, ModelNameOption, ModelVersionOption, StoreOption
from membershield.cli.common import DropOverlapOption, RichProgress, console, errors, progress_columns
from membershield.result import AuditResult


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def audit_synthetic(
    train: Annotated[str, typer.Option(help="Real records the generator was fitted on (members; CSV, Parquet, NPZ).")],
    holdout: Annotated[str, typer.Option(help="Real records from the same source the generator never saw.")],
    synthetic: Annotated[str, typer.Option(help="The generator's output: the synthetic records to audit.")],
    generator: Annotated[
        str | None,
        typer.Option(
            help="The generator, for shadow generators: sdv:gaussian-copula, sdv:ctgan[:epochs=N,...], FILE.py:fn."
        ),
    ] = None,
    shadow_generators: Annotated[
        int | None, typer.Option(help="Shadow generators to fit for the shadow-generators attack (default 4).")
    ] = None,
    population: Annotated[
        str | None, typer.Option(help="More real records the generator never saw (DOMIAS reference, shadow pool).")
    ] = None,
    secret_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns anonymeter's inference attack guesses (default: the label)."),
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Column the synthetic-classifier attack's model predicts.")
    ] = None,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: dcr,nndr,domias,synthetic-classifier,shadow-generators (default: all that can run)."
        ),
    ] = None,
    ignore_columns: Annotated[str | None, typer.Option(help="Comma-separated columns left out (identifiers).")] = None,
    anonymeter: Annotated[
        bool, typer.Option("--anonymeter/--no-anonymeter", help="Measure anonymeter's risks.")
    ] = True,
    anonymeter_attacks: Annotated[int, typer.Option(help="Records (or queries) each anonymeter attack tries.")] = 500,
    drop_overlap: DropOverlapOption = False,
    seed: Annotated[int, typer.Option(help="Seed of every random choice; same seed, same audit.")] = 0,
    out: Annotated[
        str, typer.Option(help="Output directory for audit.json and scores.csv.")
    ] = "membershield-synthetic-audit",
    mlflow: MlflowOption = False,
    store: StoreOption = None,
    model_name: ModelNameOption = None,
    model_version: ModelVersionOption = None,
) -> None:
    """Audit a synthetic table for membership leakage of its training records; write audit.json and scores.csv."""
    from membershield.audit import REPORTS
    from membershield.history import record_audit
    from membershield.synthetic.audit import SyntheticAuditConfig, run_synthetic_audit

    cfg = SyntheticAuditConfig(
        train=train,
        holdout=holdout,
        synthetic=synthetic,
        population=population,
        generator=generator,
        label_column=label_column,
        secret_columns=_names(secret_columns),
        ignore_columns=_names(ignore_columns) or [],
        attacks=_names(attacks),
        attack_options={"shadow-generators": {"shadows": shadow_generators}} if shadow_generators is not None else {},
        anonymeter=anonymeter,
        anonymeter_attacks=anonymeter_attacks,
        out=out,
        seed=seed,
        drop_overlap=drop_overlap,
    )
    with Progress(*progress_columns(), console=errors, transient=True) as progress:
        run = run_synthetic_audit(cfg, progress=RichProgress(progress), reports=REPORTS)
    print_synthetic_summary(run.result, Path(out))
    if mlflow:
        from membershield.mlflow_log import log_audit

        console.print(f"logged to MLflow run {log_audit(run.result.to_dict(), out)}")
    recorded = record_audit(out, store, model_name=model_name, model_version=model_version)
    record = recorded.record
    console.print(f"recorded as audit #{record.id} of '{record.model_name}' in {recorded.store}", markup=False)


def _interval(entry: dict[str, Any]) -> str:
    return f"{entry['risk']:.3f} (95% CI {entry['ci_low']:.3f}–{entry['ci_high']:.3f})"


def _anonymeter_line(section: dict[str, Any]) -> str:
    parts = []
    for name in ("singling_out", "linkability", "inference"):
        entry = section.get(name)
        label = name.replace("_", "-")
        if entry is None or entry.get("risk") is None:
            parts.append(f"{label} not measured")
        else:
            secret = f" of '{entry['secret']}'" if entry.get("secret") else ""
            parts.append(f"{label}{secret} {_interval(entry)}")
    return "anonymeter risks: " + "; ".join(parts)


def print_synthetic_summary(result: AuditResult, out: Path) -> None:
    """The finding (a copy of the training file), the attack table, the DCR and anonymeter risks, the split
    check, warnings, time and files."""
    from membershield.metrics import nonmembers_needed, unresolved_fprs

    document = result.to_dict()
    section = document["synthetic"]
    if section.get("finding"):
        console.print(f"[bold red]{section['finding']}[/bold red]", highlight=False)
    console.print(summary_table(result))
    unresolved = unresolved_fprs(result.config["fprs"], result.data["n_nonmembers"])
    if unresolved:
        need = nonmembers_needed(min(unresolved))
        console.print(
            f"not measurable: {result.data['n_nonmembers']} non-members cannot resolve an FPR of"
            f" {', '.join(f'{100 * f:g}%' for f in unresolved)} (that needs at least {need})."
        )
    risk = section["dcr_risk"]
    state = "[bold red]flagged[/bold red]" if risk["flagged"] else "[green]at the holdout baseline[/green]"
    console.print(
        f"DCR risk: {_interval(risk)}: {risk['closer_to_train']} of {risk['n_synthetic']} synthetic records are"
        f" closer to a training record than to any of {risk['n_per_side']} holdout records (baseline half) {state}"
    )
    u = result.utility
    console.print(
        f"median distance to the closest synthetic record: members {u['member_median_dcr']:.3f},"
        f" non-members {u['nonmember_median_dcr']:.3f}"
    )
    if u.get("train_accuracy") is not None:
        console.print(
            f"model trained on the synthetic records: accuracy on members {u['train_accuracy']:.3f}, on non-members"
            f" {u['holdout_accuracy']:.3f} (gap {u['accuracy_gap']:+.3f})"
        )
    if document.get("anonymeter"):
        console.print(_anonymeter_line(document["anonymeter"]), highlight=False)
    if result.split_check:
        s = result.split_check
        state = "[green]ok[/green]" if s["ok"] else "[bold red]FAILED[/bold red]"
        console.print(f"split check: blind AUC {s['blind_auc']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {state}")
    for warning in result.warnings:
        if warning != section.get("finding"):
            console.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    console.print(time_summary(result))
    console.print(
        f"wrote {out / 'audit.json'}, {out / 'scores.csv'}, {out / 'report.html'} and {out / 'summary.md'}",
        markup=False,
    )
