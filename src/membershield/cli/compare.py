"""``membershield compare``: the recipe trained with each defense, every variant audited the same way."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from membershield.cli.common import RichProgress, console, errors, pct
from membershield.result import HEADLINE_FPR, rate_in


def compare(
    recipe: Annotated[
        str, typer.Option(help="PyTorch recipe file.py:function (declaring vectorised_spec()) or a .joblib model.")
    ],
    data: Annotated[str, typer.Option(help="Pool of labelled records; split 50/50 into members and holdout.")],
    label_column: Annotated[str, typer.Option(help="Name of the label column.")],
    defenses: Annotated[
        str, typer.Option(help="Comma-separated defenses, e.g. none,dp:epsilon=8,relaxloss,output:top_k=1.")
    ] = "none,dp:epsilon=8,relaxloss,label-smoothing:0.1",
    attacks: Annotated[str, typer.Option(help="Comma-separated attacks, the same for every variant.")] = (
        "loss,confidence,lira,rmia"
    ),
    references: Annotated[int, typer.Option(help="Reference models per variant (trained with its defense).")] = 8,
    ignore_columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns that are not model features.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, of every model and of the attacks.")] = 0,
    out: Annotated[str, typer.Option(help="Output directory: compare.json, compare.html, one audit per variant.")] = (
        "membershield-compare"
    ),
    reports: Annotated[bool, typer.Option(help="Also write each variant's HTML audit report.")] = True,
    backend: Annotated[
        str, typer.Option(help="Where the models train: local, processes (joblib) or ray; same seed, same numbers.")
    ] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local one).")] = None,
    n_jobs: Annotated[int | None, typer.Option(help="Parallel workers for the processes and ray backends.")] = None,
    recommend: Annotated[
        str | None,
        typer.Option(help="Name the least leaky variant within an accuracy budget, e.g. max_accuracy_drop=0.02."),
    ] = None,
) -> None:
    """Train the recipe with each defense, audit every variant the same way, compare privacy and utility."""
    from membershield.defenses.compare import CompareOptions, run_compare

    options = CompareOptions(
        recipe=recipe,
        data=data,
        label_column=label_column,
        defenses=defenses,
        attacks=[a.strip() for a in attacks.split(",") if a.strip()],
        references=references,
        seed=seed,
        out=out,
        ignore_columns=[c.strip() for c in ignore_columns.split(",") if c.strip()] if ignore_columns else [],
        reports=reports,
        backend=backend,
        n_jobs=n_jobs,
        ray_address=ray_address,
        recommend=recommend,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        variants = progress.add_task("variants", total=None)

        def on_variant(i: int, n: int, name: str) -> None:
            progress.update(variants, completed=i, total=n, description=f"variant {name}")

        run = run_compare(options, progress=RichProgress(progress), on_variant=on_variant)
    _print_comparison(run)


def _print_comparison(run: Any) -> None:
    """The comparison table, the recommendation, the notes and what was written."""
    document = run.document
    attack = document["headline"]["attack"]
    table = Table(title=f"Defenses compared ({attack} at 1% FPR is the headline)", title_justify="left")
    for column in ("defense", "holdout acc.", f"{attack} AUC", f"{attack} TPR @ 1% FPR", "ε (accountant)", "ε ≥"):
        table.add_column(column, justify="left" if column == "defense" else "right", no_wrap=column == "defense")
    table.add_column("Pareto")
    table.add_column("verdict")
    for variant in document["variants"]:
        found = next(a for a in variant["attacks"] if a["name"] == attack)
        rate = rate_in(found["tpr_at_fpr"], HEADLINE_FPR)
        shown = "not measurable"
        if rate is not None and rate["measurable"]:
            shown = f"{pct(rate['tpr'])} ({pct(rate['ci_low'])}–{pct(rate['ci_high'])})"
        bound = variant.get("empirical_epsilon_lower_bound")
        table.add_row(
            variant["name"],
            f"{100 * variant['holdout_accuracy']:.1f}",
            f"{found['auc']:.3f}",
            shown,
            f"{variant['epsilon']:.2f}" if variant.get("epsilon") is not None else "—",
            f"{bound:.2f}" if bound is not None else "n/a",
            "yes" if variant["pareto"] else "no",
            variant["verdict"],
        )
    console.print(table)
    advice = document["frontier"].get("recommendation")
    if advice is not None:
        console.print(f"recommended: {advice['reason']}", markup=False, highlight=False)
    for note in document["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)
    written = f"{run.out / 'compare.json'}, {run.out / 'compare.html'}"
    console.print(f"wrote {written} and one audit per variant", markup=False)
