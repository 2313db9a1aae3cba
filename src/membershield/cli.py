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
from membershield.metrics import nonmembers_needed, unresolved_fprs
from membershield.result import HEADLINE_FPR, AuditResult, rate_in, summary_rate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure membership-inference leakage of machine-learning models.",
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, files) has no terminal width; 140 columns keeps the summary table unwrapped.
console = Console() if Console().is_terminal else Console(width=140)
errors = Console(stderr=True)

DropOverlapOption = Annotated[
    bool, typer.Option("--drop-overlap", help="Remove records found on both sides from both (else: an error).")
]
# The encoding a language model is scored under; the tokenizer's default is how `labels=input_ids` trains.
AddBosOption = Annotated[
    bool | None,
    typer.Option(
        "--add-bos/--no-add-bos",
        help="Put the BOS token first / never (default: encode as the tokenizer does, as the model trained).",
    ),
]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


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
                cells.append(f"{_pct(rate['tpr'])} ({_pct(rate['ci_low'])}–{_pct(rate['ci_high'])})")
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
    console.print(f"wrote {out / 'audit.json'}, {out / 'scores.csv'} and {out / 'report.html'}")


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


class _RichProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = "attacks" if stage.startswith("attack") else stage
        if key not in self.tasks:
            # A stage without countable steps is over when the next one begins: shown done, not pulsing.
            for task in self.progress.tasks:
                if task.total is None:
                    self.progress.update(task.id, total=1, completed=1)
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
        "trainer": trainer,
        "seed": seed,
        "out": out,
        "cache": cache,
        "ignore_columns": [c.strip() for c in ignore_columns.split(",") if c.strip()] if ignore_columns else None,
        "id_column": id_column,
        "drop_overlap": drop_overlap or None,
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
    if mlflow:
        from membershield.mlflow_log import log_audit

        console.print(f"logged to MLflow run {log_audit(run.result.to_dict(), cfg.out)}")
    _record_audit(Path(cfg.out), store, model_name, model_version)  # after the files exist: they survive a store error


@app.command("attacks")
def list_attacks() -> None:
    """List the available attacks, their access needs and papers."""
    table = Table(title="Attacks")
    for column in ("name", "access", "min. references", "paper"):
        table.add_column(column)
    for name, cls in REGISTRY.items():
        table.add_row(name, cls.access, str(cls.min_references), cls.citation)
    console.print(table)


def _record_audit(out: Path, store: str | None, model_name: str | None, model_version: str | None) -> None:
    from membershield.result import load_document
    from membershield.store import open_store

    audit_file = out / "audit.json"
    with open_store(store) as history:
        record = history.record_audit(
            load_document(audit_file),
            model_name=model_name,
            model_version=model_version,
            report_path=str(audit_file),
            out_dir=str(out),
        )
        console.print(f"recorded as audit #{record.id} of '{record.model_name}' in {history.display}", markup=False)


@app.command()
def gate(
    audit_file: Annotated[
        Path, typer.Argument(metavar="AUDIT_JSON", help="The audit.json written by `membershield audit`.")
    ],
    policy: Annotated[Path, typer.Option(help="Policy TOML with the limits the audit must respect.")],
    junit: Annotated[Path | None, typer.Option(help="Also write the checks as JUnit XML to this file.")] = None,
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model name to judge and record under (default: as recorded, or file stem).")
    ] = None,
) -> None:
    """Judge an audit against a policy: exit 0 if every check passes, 1 if any fails, 2 on bad input."""
    from membershield.gate import evaluate, load_audit, load_policy, write_junit
    from membershield.store import open_store

    audit_doc = load_audit(audit_file)
    rules = load_policy(policy)
    with open_store(store) as history:
        record = history.find(audit_doc) or history.record_audit(
            audit_doc, model_name=model_name, report_path=str(audit_file), out_dir=str(audit_file.parent)
        )
        if model_name and model_name != record.model_name:
            record = history.rename(record.id, model_name)
        previous = history.last_passing(record.model_name, exclude=record) if rules.max_regression else None
        verdict = evaluate(audit_doc, rules, previous=previous.comparison() if previous else None)
        failures = [check.describe() for check in verdict.failures]
        history.record_verdict(
            record.id,
            passed=verdict.passed,
            failures=failures,
            policy=rules.to_dict(),
            compared_with=verdict.compared_with,
        )
    if junit is not None:
        write_junit(verdict, junit)
    for line in failures:
        console.print(f"FAIL {line}", markup=False, highlight=False, soft_wrap=True)
    n = len(verdict.checks)
    if verdict.passed:
        console.print(f"gate passed: {n} checks on '{record.model_name}' (audit #{record.id})", markup=False)
    else:
        console.print(f"gate FAILED: {len(failures)} of {n} checks on '{record.model_name}' (audit #{record.id})")
        sys.exit(verdict.exit_code)


@app.command()
def history(
    model: Annotated[str | None, typer.Option(help="Only the audits of this model name.")] = None,
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (default .membershield/history.db).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    limit: Annotated[int | None, typer.Option(help="Only the most recent N audits.", min=1)] = None,
) -> None:
    """Show recorded audits and their verdicts, oldest first, as a trend table or JSON."""
    import json

    from membershield.errors import ConfigError
    from membershield.store import open_store

    if output_format not in ("table", "json"):
        raise ConfigError(f"--format must be 'table' or 'json', got '{output_format}'")
    with open_store(store) as opened:
        records = opened.history(model_name=model, limit=limit)
        where = opened.display
    if output_format == "json":
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        console.print(f"no audits recorded in {where}" + (f" for model '{model}'" if model else ""), markup=False)
        return
    table = Table(title=f"Audit history ({where})", title_justify="left")
    for column in ("#", "audited (UTC)", "model", "version", "worst attack", "AUC (95% CI)", "Δ AUC"):
        table.add_column(column, no_wrap=column != "model", justify="right" if column in ("#", "Δ AUC") else "left")
    table.add_column("TPR % @ 1% FPR", justify="right")
    table.add_column("verdict")
    table.add_column("report")
    last_auc: dict[str, float] = {}
    for record in records:
        worst = record.worst_attack()
        name, m = worst if worst else ("-", {})
        auc = m.get("auc")
        shown_auc = f"{auc:.3f} ({m['auc_ci_low']:.3f}–{m['auc_ci_high']:.3f})" if auc is not None else "n/a"
        delta = f"{auc - last_auc[record.model_name]:+.3f}" if auc is not None and record.model_name in last_auc else ""
        if auc is not None:
            last_auc[record.model_name] = auc
        rate = summary_rate(m) if m else None
        if rate is None:
            shown_tpr = "-"
        elif not rate.get("measurable"):
            shown_tpr = "not measurable"
        else:
            shown_tpr = f"{_pct(rate['tpr'])} ({_pct(rate['ci_low'])}–{_pct(rate['ci_high'])})"
        verdict = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]"}.get(record.verdict or "", "-")
        table.add_row(
            str(record.id),
            record.created_at.strftime("%Y-%m-%d %H:%M"),
            record.model_name,
            record.model_version or "",
            name,
            shown_auc,
            delta,
            shown_tpr,
            verdict,
            record.out_dir or "",
        )
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


@app.command("audit-text")
def audit_text(
    model: Annotated[str, typer.Option(help="Causal LM directory (save_pretrained: config, weights, tokenizer).")],
    members: Annotated[str, typer.Option(help="JSONL of texts the model was trained on, one object per line.")],
    nonmembers: Annotated[str, typer.Option(help="JSONL of texts from the same distribution the model never saw.")],
    reference_model: Annotated[
        str | None, typer.Option(help="Reference model directory, e.g. the base model of a fine-tune.")
    ] = None,
    attacks: Annotated[
        str | None, typer.Option(help="Comma-separated: loss,zlib,lowercase,reference,min-k,min-k-plus-plus.")
    ] = None,
    text_field: Annotated[str, typer.Option(help="Field of each JSON object holding the text.")] = "text",
    out: Annotated[
        str, typer.Option(help="Output directory for audit.json and scores.csv.")
    ] = "membershield-text-audit",
    seed: Annotated[int, typer.Option(help="Seed for the split check and the ε bound.")] = 0,
    min_k: Annotated[float, typer.Option(help="Fraction of least likely tokens for Min-K% and Min-K%++.")] = 0.2,
    batch_tokens: Annotated[int, typer.Option(help="Tokens per forward pass (bounds memory).")] = 8192,
    max_length: Annotated[
        int | None, typer.Option(help="Scoring window in tokens (default: the model's context).")
    ] = None,
    stride: Annotated[int | None, typer.Option(help="Step between windows of long texts (default: half).")] = None,
    add_bos: AddBosOption = None,
    drop_overlap: DropOverlapOption = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Audit a causal language model with text membership attacks; write audit.json and scores.csv."""
    from membershield.text.audit import TextAuditConfig, run_text_audit
    from membershield.text.render import text_audit_lines

    cfg = TextAuditConfig(
        model=model,
        members=members,
        nonmembers=nonmembers,
        reference_model=reference_model,
        attacks=[a for a in attacks.split(",") if a.strip()] if attacks else None,
        text_field=text_field,
        out=out,
        seed=seed,
        min_k=min_k,
        batch_tokens=batch_tokens,
        max_length=max_length,
        stride=stride,
        device=device,
        add_bos=add_bos,
        drop_overlap=drop_overlap,
    )
    with Progress(*_text_progress_columns(), console=errors, transient=True) as progress:
        run = run_text_audit(cfg, progress=_RichProgress(progress))
    console.print(summary_table(run.result))
    for line in text_audit_lines(run.result, out):
        console.print(line)


def _text_progress_columns() -> tuple[Any, ...]:
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


canaries_app = typer.Typer(
    no_args_is_help=True, help="Insert secret canaries into training data and measure their exposure."
)
app.add_typer(canaries_app, name="canaries")


@canaries_app.command("insert")
def canaries_insert(
    data: Annotated[Path, typer.Option(help="JSONL training file, one object per line.")],
    out: Annotated[Path, typer.Option(help="JSONL file to write: the data with the canaries inserted.")],
    count: Annotated[int, typer.Option(help="Canaries per repeat count.")] = 20,
    repeats: Annotated[str, typer.Option(help="Times each canary is inserted; 0 makes controls.")] = "1,4,16",
    secret_format: Annotated[
        str, typer.Option("--format", help="Canary text with {secret}.")
    ] = "my account number is {secret}",
    alphabet: Annotated[str, typer.Option(help="Characters secrets are drawn from.")] = "0123456789",
    length: Annotated[int, typer.Option(help="Characters per secret.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed for the secrets and their positions.")] = 0,
    text_field: Annotated[str, typer.Option(help="Field of each JSON object holding the text.")] = "text",
) -> None:
    """Insert random-secret canaries at random lines; write their metadata to canaries.json next to --out."""
    from membershield.text.canaries import CanarySpec, insert_canaries

    meta = insert_canaries(data, out, count, repeats, CanarySpec(secret_format, alphabet, length), seed, text_field)
    n_copies = sum(c["repeats"] for c in meta["canaries"])
    console.print(
        f"wrote {out}: {meta['source']['n_records']} records + {n_copies} canary lines"
        f" ({len(meta['canaries'])} canaries, repeats {meta['repeats']}); metadata in {meta['metadata_path']}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@canaries_app.command("exposure")
def canaries_exposure(
    model: Annotated[str, typer.Option(help="Causal language model directory trained on the data with canaries.")],
    canaries: Annotated[Path, typer.Option(help="The canaries.json written by `canaries insert`.")],
    out: Annotated[str, typer.Option(help="Output directory for exposure.json.")] = "membershield-exposure",
    max_enumerate: Annotated[
        int, typer.Option(help="Score every candidate secret up to this many; else fit a distribution.")
    ] = 100_000,
    samples: Annotated[int, typer.Option(help="Sampled candidates for the distribution fit.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed for the sampled candidates.")] = 0,
    batch_tokens: Annotated[int, typer.Option(help="Tokens per forward pass (bounds memory).")] = 8192,
    add_bos: AddBosOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Exposure (Secret Sharer) of each canary, summarised per repeat count; writes exposure.json."""
    from membershield.text.canaries import canary_exposure, load_canaries
    from membershield.text.model import load_language_model
    from membershield.text.render import exposure_table

    load_canaries(canaries)  # a bad canaries file fails before the model loads
    lm = load_language_model(model, device, add_bos=add_bos)
    with Progress(*_text_progress_columns(), console=errors, transient=True) as progress:
        doc = canary_exposure(
            lm,
            canaries,
            max_enumerate=max_enumerate,
            samples=samples,
            seed=seed,
            batch_tokens=batch_tokens,
            progress=_RichProgress(progress),
        )
    _write_text_json(Path(out) / "exposure.json", doc)
    console.print(exposure_table(doc))
    console.print(f"wrote {Path(out) / 'exposure.json'}", markup=False, highlight=False, soft_wrap=True)


@app.command("extract")
def extract(
    model: Annotated[str, typer.Option(help="Causal language model directory.")],
    data: Annotated[Path, typer.Option(help="JSONL records to try to extract (e.g. the training members).")],
    prefix_tokens: Annotated[int, typer.Option(help="Tokens of each record given to the model.")] = 32,
    suffix_tokens: Annotated[int, typer.Option(help="Tokens that must be reproduced exactly.")] = 32,
    text_field: Annotated[str, typer.Option(help="Field of each JSON object holding the text.")] = "text",
    out: Annotated[str, typer.Option(help="Output directory for extraction.json.")] = "membershield-extraction",
    batch_size: Annotated[int, typer.Option(help="Records decoded together.")] = 32,
    top: Annotated[int, typer.Option(help="Records with the longest reproduced spans to list.")] = 10,
    add_bos: AddBosOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Greedy-decode each record from its prefix; report how many continue verbatim; writes extraction.json."""
    from membershield.text.data import load_jsonl
    from membershield.text.extraction import extract_verbatim
    from membershield.text.model import load_language_model
    from membershield.text.render import extraction_table

    records = load_jsonl(data, text_field)
    lm = load_language_model(model, device, add_bos=add_bos)
    with Progress(*_text_progress_columns(), console=errors, transient=True) as progress:
        doc = extract_verbatim(lm, records, prefix_tokens, suffix_tokens, batch_size, top, _RichProgress(progress))
    _write_text_json(Path(out) / "extraction.json", doc)
    console.print(extraction_table(doc))
    console.print(f"wrote {Path(out) / 'extraction.json'}", markup=False, highlight=False, soft_wrap=True)


def _write_text_json(path: Path, doc: dict[str, Any]) -> None:
    import json

    from membershield.result import jsonable

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise MembershieldError(f"cannot write {path}: {exc.strerror} (pass --out DIR)") from exc


@app.command()
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
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        variants = progress.add_task("variants", total=None)

        def on_variant(i: int, n: int, name: str) -> None:
            progress.update(variants, completed=i, total=n, description=f"variant {name}")

        run = run_compare(options, progress=_RichProgress(progress), on_variant=on_variant)
    document = run.document
    attack = document["headline"]["attack"]
    table = Table(title=f"Defenses compared ({attack} at 1% FPR is the headline)", title_justify="left")
    for column in ("defense", "holdout acc.", f"{attack} AUC", f"{attack} TPR @ 1% FPR", "ε (accountant)", "ε ≥"):
        table.add_column(column, justify="left" if column == "defense" else "right", no_wrap=column == "defense")
    table.add_column("verdict")
    for variant in document["variants"]:
        found = next(a for a in variant["attacks"] if a["name"] == attack)
        rate = rate_in(found["tpr_at_fpr"], HEADLINE_FPR)
        shown = "not measurable"
        if rate is not None and rate["measurable"]:
            shown = f"{_pct(rate['tpr'])} ({_pct(rate['ci_low'])}–{_pct(rate['ci_high'])})"
        bound = variant.get("empirical_epsilon_lower_bound")
        table.add_row(
            variant["name"],
            f"{100 * variant['holdout_accuracy']:.1f}",
            f"{found['auc']:.3f}",
            shown,
            f"{variant['epsilon']:.2f}" if variant.get("epsilon") is not None else "—",
            f"{bound:.2f}" if bound is not None else "n/a",
            variant["verdict"],
        )
    console.print(table)
    for note in document["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)
    written = f"{run.out / 'compare.json'}, {run.out / 'compare.html'}"
    console.print(f"wrote {written} and one audit per variant", markup=False)


@app.command()
def guard(
    model: Annotated[
        str | None,
        typer.Option(
            help="Fitted .joblib/.pkl classifier (with --upstream: checks shapes) or language model directory."
        ),
    ] = None,
    upstream: Annotated[
        str | None, typer.Option(help="JSON endpoint to forward to instead of scoring locally (same shapes).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Guard policy TOML: [output], [limits], [detector], [server].")
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    store: Annotated[
        str | None, typer.Option(help="History database, a file or URL (keys, requests and alerts go there too).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model name in the history (default: the model file's stem).")
    ] = None,
    text: Annotated[
        bool, typer.Option(help="The --upstream generates text: serve POST /v1/generate with PII redaction.")
    ] = False,
) -> None:
    """Serve a model behind API keys, output hardening, rate limits, probing detection and PII redaction.

    --model takes a fitted classifier file (POST /v1/predict) or a causal language model directory written
    by save_pretrained (POST /v1/generate)."""
    from membershield.guard.app import create_app, guard_config
    from membershield.guard.policy import load_policy
    from membershield.guard.serve import bind, serve, url

    config = guard_config(model, upstream, load_policy(policy), store=store, model_name=model_name, text=text)
    sock = bind(host, port)
    try:
        application = create_app(config)
    except BaseException:
        sock.close()
        raise
    console.print(f"guarding '{config.model_name}' on {url(host, sock)} (dashboard: /?key=ADMIN_KEY)", markup=False)
    serve(application, sock)


keys_app = typer.Typer(help="API keys of the guard service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for (unique).")],
    admin: Annotated[bool, typer.Option(help="May read alerts and the dashboard.")] = False,
    store: Annotated[str | None, typer.Option(help="History database, a file or URL.")] = None,
) -> None:
    """Create an API key and print it once; only its sha256 is stored."""
    from membershield.guard.keys import issue_key
    from membershield.store import open_store

    with open_store(store) as opened:
        token = issue_key(opened, name, admin=admin)
    typer.echo(token)


@keys_app.command("list")
def keys_list(store: Annotated[str | None, typer.Option(help="History database, a file or URL.")] = None) -> None:
    """Key names, roles and creation times (never the keys themselves)."""
    from membershield.store import open_store

    with open_store(store) as opened:
        for key in opened.guard_keys():
            role = "admin" if key.admin else "user"
            typer.echo(f"{key.name}\t{role}\t{key.created_at.isoformat(timespec='seconds')}")


INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT
INTERRUPTED_MESSAGE = "interrupted: finished reference models are cached; run the same command again to resume"


def main() -> None:
    try:
        # Typer turns Ctrl-C inside a command into a returned 130 when not in standalone mode.
        code = app(standalone_mode=False)
        if code == INTERRUPTED:
            errors.print(INTERRUPTED_MESSAGE)
            sys.exit(INTERRUPTED)
    except MembershieldError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        errors.print(INTERRUPTED_MESSAGE)
        sys.exit(INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors come through here with standalone_mode=False
        import click

        # typer vendors its own click: its usage errors are TyperExceptions, not click.ClickExceptions
        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "format_message"):
            # One line, like every other input error; the usage block is one --help away.
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "membershield"
            message = " ".join(exc.format_message().split())
            errors.print(f"error: {message} (see '{command} --help')", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        raise
