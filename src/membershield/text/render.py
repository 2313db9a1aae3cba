"""Rich tables and summary lines for the text commands (the CLI only prints what these build)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from membershield.metrics import nonmembers_needed, unresolved_fprs
from membershield.result import AuditResult


def text_audit_lines(result: AuditResult, out: str) -> list[str]:
    """The lines printed under the attack table of ``audit-text`` (Rich markup)."""
    u, d = result.utility, result.data
    lines = [
        f"perplexity: members {u['member_perplexity']:.2f}, non-members {u['nonmember_perplexity']:.2f}"
        f" (mean token NLL {u['member_mean_nll']:.3f} vs {u['nonmember_mean_nll']:.3f} nats;"
        f" {d['n_tokens_members']} and {d['n_tokens_nonmembers']} tokens scored)"
    ]
    reference = result.target.get("reference_model")
    if reference:
        lines.append(f"reference model: {reference['spec']} (sha256 {reference['sha256'][:12]})")
    unresolved = unresolved_fprs(result.config["fprs"], d["n_nonmembers"])
    if unresolved:
        lines.append(
            f"not measurable: {d['n_nonmembers']} non-members cannot resolve an FPR of"
            f" {', '.join(f'{100 * f:g}%' for f in unresolved)}"
            f" (that needs at least {nonmembers_needed(min(unresolved))})."
        )
    if result.split_check:
        s = result.split_check
        state = "[green]ok[/green]" if s["ok"] else "[bold red]FAILED[/bold red]"
        lines.append(f"split check: blind AUC {s['blind_auc']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f}) {state}")
    lines += [f"[bold yellow]warning:[/bold yellow] {w}" for w in result.warnings]
    lines.append(f"wrote {out}/audit.json, {out}/scores.csv, {out}/report.html and {out}/summary.md")
    return lines


def exposure_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"Canary exposure ({doc['method']}; at most {doc['max_exposure']:.1f} bits for"
        f" {doc['space_size']} candidate secrets)",
        title_justify="left",
    )
    for column in ("repeats", "canaries", "mean exposure", "median", "min", "max", "fully exposed"):
        table.add_column(column, justify="right")
    for row in doc["by_repeats"]:
        table.add_row(
            str(row["repeats"]),
            str(row["n_canaries"]),
            f"{row['mean_exposure']:.2f}",
            f"{row['median_exposure']:.2f}",
            f"{row['min_exposure']:.2f}",
            f"{row['max_exposure']:.2f}",
            str(row["n_fully_exposed"]),
        )
    return table


def extraction_table(doc: dict[str, Any]) -> Table:
    n, k = doc["n_tested"], doc["n_extracted"]
    table = Table(
        title=f"Verbatim extraction: {k} of {n} records ({100 * doc['extracted_share']:.1f}%,"
        f" 95% CI {100 * doc['extracted_share_ci_low']:.1f}–{100 * doc['extracted_share_ci_high']:.1f}%)"
        f" continue exactly for {doc['suffix_tokens']} tokens after {doc['prefix_tokens']}",
        title_justify="left",
    )
    for column in ("line", "reproduced", "exact", "prefix", "generated"):
        table.add_column(column, justify="right" if column in ("line", "reproduced") else "left", overflow="fold")
    for row in doc["longest"]:
        table.add_row(
            str(row["line"]),
            f"{row['reproduced_tokens']}/{doc['suffix_tokens']}",
            "yes" if row["exact"] else "no",
            _short(row["prefix"], tail=True),
            _short(row["generated"]),
        )
    return table


def _short(text: str, width: int = 60, tail: bool = False) -> str:
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return "…" + flat[-(width - 1) :] if tail else flat[: width - 1] + "…"


def attention_output(section: dict[str, Any]) -> list[Table | str]:
    """The flagged heads per layer (or the line saying there are none), then the sink heads."""
    title = (
        f"Attention heads that focus (weight >= {section['threshold']:g} on one position after the first) more"
        f" often for the {section['n_member_texts']} seeds than for {section['n_nonmember_texts']} non-members"
        f" ({section['prompt_tokens']} tokens each; AUC interval above 0.5, {section['correction']})"
    )
    parts: list[Table | str] = []
    if section["n_flagged"]:
        table = Table(title=title, title_justify="left")
        for column in ("layer", "head", "member rate", "non-member rate", "difference", "AUC (CI)"):
            table.add_column(column, justify="right")
        for layer in section["layers"]:
            for row in layer["flagged"]:
                table.add_row(
                    str(layer["layer"]),
                    str(row["head"]),
                    f"{100 * row['member_rate']:.1f}%",
                    f"{100 * row['nonmember_rate']:.1f}%",
                    f"{100 * row['difference']:+.1f} pts",
                    f"{row['auc']:.3f} ({row['auc_ci_low']:.3f}–{row['auc_ci_high']:.3f})",
                )
        parts.append(table)
    else:
        best = max(section["heads"], key=lambda r: r["auc"])
        parts.append(
            f"attention heads: no head focuses more often for the {section['n_member_texts']} seeds than for the"
            f" {section['n_nonmember_texts']} non-members (weight >= {section['threshold']:g}, AUC interval above"
            f" 0.5, {section['correction']}); closest: layer {best['layer']} head {best['head']}, AUC"
            f" {best['auc']:.3f} ({best['auc_ci_low']:.3f}–{best['auc_ci_high']:.3f})"
        )
    if section["sink_heads"]:
        shown = ", ".join(f"L{h['layer']}H{h['head']}" for h in section["sink_heads"])
        parts.append(f"sink heads (near-unit weight on the first position for most queries, not flagged): {shown}")
    return parts


def nucleus_table(doc: dict[str, Any]) -> Table:
    """Per top-p: records with an exact sample (and their 95% interval), and the share the exact
    probabilities expect."""
    table = Table(
        title=f"Nucleus extraction: {doc['n_tested']} records, {doc['samples']} samples each at temperature"
        f" {doc['temperature']:g}; extracted = a sample continues exactly for {doc['suffix_tokens']} tokens"
        f" after {doc['prefix_tokens']}",
        title_justify="left",
    )
    for column in ("top-p", "extracted", "share (95% CI)", "exact samples", "expected share"):
        table.add_column(column, justify="right")
    for row in doc["by_top_p"]:
        table.add_row(
            f"{row['top_p']:g}",
            f"{row['n_extracted']}/{row['n_tested']}",
            f"{100 * row['extracted_share']:.1f}% ({100 * row['extracted_share_ci_low']:.1f}–"
            f"{100 * row['extracted_share_ci_high']:.1f}%)",
            f"{row['exact_samples']}/{row['n_tested'] * doc['samples']}",
            f"{100 * row['expected_share']:.1f}%",
        )
    return table
