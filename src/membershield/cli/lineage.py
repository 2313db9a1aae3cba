"""``membershield lineage`` and ``risk``: which datasets a model came from (and whether they changed),
which models used a dataset, and which training records to protect first."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from membershield.cli.common import console
from membershield.errors import ConfigError

StoreOption = Annotated[
    str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
]
ROLE_WORDS = {
    "trained": "trained on",
    "forgotten": "forgotten (removed)",
    "audited": "audited on",
    "population": "population",
}
ROLE_ORDER = list(ROLE_WORDS)
INTEGRITY_STYLE = {"unchanged": "green", "changed": "bold red", "missing": "bold red", "unreadable": "bold red"}


def _rows(value: int | None) -> str:
    return "?" if value is None else str(value)


def _chain_table(found: Any, verify: bool) -> Table:
    title = f"Lineage of '{found.model}'" + (f" version {found.version}" if found.version else "") + f" ({found.store})"
    table = Table(title=title, title_justify="left")
    for column in ("model version", "audits", "role", "file", "fingerprint", "rows", "dataset version"):
        table.add_column(column, justify="right" if column == "rows" else "left", no_wrap=column != "file")
    if verify:
        table.add_column("integrity")
    versions: list[str | None] = []
    for link in found.links:
        if link.model_version not in versions:
            versions.append(link.model_version)
    ordered = sorted(found.links, key=lambda k: (versions.index(k.model_version), ROLE_ORDER.index(k.role)))
    for link in ordered:
        d = link.dataset
        cells = [
            link.model_version or "-",
            ", ".join(f"#{i}" for i in link.audit_ids),
            ROLE_WORDS[link.role],
            d.file_name,
            d.short,
            _rows(d.n_rows),
            d.version or "-",
        ]
        if verify:
            state = link.integrity or "-"
            cells.append(f"[{INTEGRITY_STYLE.get(state, 'white')}]{state}[/]")
        table.add_row(*cells)
    return table


def _print_model(found: Any, verify: bool, output_format: str) -> None:
    if output_format == "json":
        typer.echo(json.dumps(found.to_dict(), indent=2))
    elif not found.links:
        console.print(
            f"no datasets are recorded for '{found.model}' in {found.store} (its audits were recorded before"
            " lineage was kept; audit it again to record them)",
            markup=False,
        )
    else:
        console.print(_chain_table(found, verify))
    if verify:
        states = {link.dataset.fingerprint: link.integrity for link in found.links}
        if output_format == "table":  # JSON holds each link's integrity; its output stays one document
            counts = {s: sum(1 for v in states.values() if v == s) for s in INTEGRITY_STYLE}
            shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n or state != "unreadable")
            console.print(f"integrity of {len(states)} recorded dataset(s): {shown}", markup=False)
        if any(v != "unchanged" for v in states.values()):
            sys.exit(1)


def _print_dataset(found: Any, output_format: str) -> None:
    if output_format == "json":
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    d = found.dataset
    label = f" version {d.version}" if d.version else ""
    console.print(
        f"dataset {d.file_name}{label}: fingerprint {d.fingerprint}, {_rows(d.n_rows)} rows, at {d.path}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not found.uses:
        console.print(f"no recorded model used it in {found.store}", markup=False)
        return
    table = Table(title=f"Models that used it ({found.store})", title_justify="left")
    for column in ("model", "version", "role", "audits"):
        table.add_column(column)
    for use in found.uses:
        audits = ", ".join(f"#{i}" for i in use.audit_ids)
        table.add_row(use.model_name, use.model_version or "-", ROLE_WORDS[use.role], audits)
    console.print(table)
    trained = {(u.model_name, u.model_version) for u in found.uses if u.role == "trained"}
    console.print(
        f"withdrawing it: {len(trained)} model version(s) trained on it must be retrained without it",
        markup=False,
    )


def lineage(
    model: Annotated[
        str | None, typer.Argument(metavar="MODEL", help="Model name as recorded (see `membershield history`).")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="Only this model version.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", metavar="FINGERPRINT", help="List the models that used this dataset (any prefix)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-fingerprint each recorded file: unchanged, changed or missing.")
    ] = False,
    store: StoreOption = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Show a model's chain of datasets per version, or (--dataset) the models that used a dataset; with
    --verify, exit 1 when a recorded file changed or is missing."""
    from membershield.lineage import dataset_users, model_lineage

    if output_format not in ("table", "json"):
        raise ConfigError(f"--format must be 'table' or 'json', got '{output_format}'")
    if (model is None) == (dataset is None):
        raise ConfigError("give a MODEL name or --dataset FINGERPRINT (one of them)")
    if dataset is not None:
        if version is not None or verify:
            raise ConfigError("--version and --verify apply to a MODEL's lineage, not to --dataset")
        _print_dataset(dataset_users(dataset, store), output_format)
        return
    assert model is not None
    _print_model(model_lineage(model, version, store, verify=verify), verify, output_format)


def _flag_rate(row: Any) -> str:
    low, high = 100 * row["flag_fpr_ci_low"], 100 * row["flag_fpr_ci_high"]
    return (
        f"{100 * row['flag_fpr']:.1f}% ({row['nonmembers_at_or_above']} of {row['n_nonmembers']};"
        f" 95% CI {low:.1f}–{high:.1f}%)"
    )


def _register_table(register: Any, top: int) -> Table:
    shown = register.records.head(top)
    table = Table(
        title=f"Risk register: top {len(shown)} of {register.n_members} training records ({register.attack})",
        title_justify="left",
    )
    for column in ("rank", "row", "priority", "seen (k)", "tier", "quasi-identifiers", "flagged at FPR"):
        table.add_column(column, justify="right" if column in ("rank", "row") else "left")
    for _, row in shown.iterrows():
        count = row["combination_count"]
        seen = f"{int(count)}× (k={register.k})" if row["rare"] else f"≥ {register.k}"
        table.add_row(
            str(row["rank"]),
            str(row["row"]),
            row["priority"],
            seen,
            row["tier"],
            row["quasi_identifier_values"] or "-",
            _flag_rate(row),
        )
    return table


def risk(
    audit_file: Annotated[Path, typer.Option("--audit", help="The audit.json (scores.csv next to it).")],
    scan_file: Annotated[Path, typer.Option("--scan", help="The scan.json of the audit's training data.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the register (default: risk.csv by audit.json).")
    ] = None,
    attack: Annotated[str | None, typer.Option(help="Attack to rank by (default: the audit's strongest).")] = None,
    fpr: Annotated[float, typer.Option(help="A record is exposed when flagged at this FPR or lower.")] = 0.01,
    top: Annotated[int, typer.Option(help="Records to print.", min=1)] = 10,
    store: StoreOption = None,
) -> None:
    """Rank the training records to protect first: exposure from the audit joined with rarity and tier
    from the data scan; write risk.csv and print the top records."""
    from membershield.lineage import keep_scan
    from membershield.report import fmt_count_rate
    from membershield.result import audit_json_path
    from membershield.risk import build_register, load_scan, write_register

    register = build_register(audit_file, scan_file, attack=attack, fpr=fpr)
    register = write_register(register, out or audit_json_path(audit_file).parent / "risk.csv")
    console.print(_register_table(register, top))
    n = register.n_members
    both = fmt_count_rate(register.n_exposed_and_rare, n)
    console.print(
        f"exposed ({register.attack} flags them at ≤ {100 * fpr:g}% FPR, against {register.n_nonmembers}"
        f" non-members): {fmt_count_rate(register.n_exposed, n)}; rare (quasi-identifiers seen fewer than"
        f" {register.k} times): {fmt_count_rate(register.n_rare, n)}; both: {both}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"wrote {register.path}", markup=False, highlight=False, soft_wrap=True)
    # after risk.csv exists: it survives a store error
    kept = keep_scan(audit_json_path(audit_file), load_scan(scan_file), store)
    if kept is not None:
        console.print(f"kept the scan summary with dataset {kept.file_name} ({kept.short})", markup=False)


def unlearning_line(unlearning: dict[str, Any]) -> str:
    """One line on the unlearning check for the audit's summary."""
    attacks = unlearning.get("attacks") or []
    counts = f"{unlearning['n_forgotten']} forgotten vs {unlearning['n_holdout']} holdout records"
    found = [a for a in attacks if a.get("distinguishable")]
    shown = sorted(found or attacks, key=lambda a: a.get("auc") or 0.0, reverse=True)[:3]
    aucs = ", ".join(f"{a['name']} AUC {a['auc']:.3f} ({a['auc_ci_low']:.3f}–{a['auc_ci_high']:.3f})" for a in shown)
    if unlearning.get("forgotten_distinguishable"):
        return f"unlearning check: FAILED, forgotten records are still distinguishable ({counts}; {aucs})"
    return f"unlearning check: passed, every attack at chance on {counts} (highest: {aucs})"
