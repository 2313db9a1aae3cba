"""``membershield compare-text``: a LoRA fine-tune undefended and under DP-SGD, each audited the same way."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from membershield.cli.common import console, errors


def compare_text(
    model: Annotated[str, typer.Option(help="Base causal LM directory (save_pretrained) to fine-tune with LoRA.")],
    data: Annotated[str, typer.Option(help="JSONL pool of texts; split 50/50 into members and held-out texts.")],
    defenses: Annotated[
        str, typer.Option(help="Comma-separated: none, dp:epsilon=E[,delta=D,max_grad_norm=C] or dp:noise=σ.")
    ] = "none,dp:epsilon=8",
    attacks: Annotated[
        str | None, typer.Option(help="Comma-separated text attacks (default: every attack that applies).")
    ] = None,
    text_field: Annotated[str, typer.Option(help="Field of each JSON object holding the text.")] = "text",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Texts per minibatch (expected size under DP's sampling).")] = 8,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate of the LoRA parameters.")] = 2e-3,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the split, the fine-tunes and the attacks.")] = 0,
    out: Annotated[str, typer.Option(help="Output directory: compare-text.json and one audit per variant.")] = (
        "membershield-compare-text"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (for the audits).")] = "auto",
) -> None:
    """Fine-tune a base LM with LoRA per defense (DP-SGD via Opacus), audit each against the base, compare."""
    from membershield.text.compare import TextCompareOptions, run_text_compare
    from membershield.text.finetune import LoraSettings

    options = TextCompareOptions(
        model=model,
        data=data,
        defenses=_split_defenses(defenses),
        attacks=[a.strip() for a in attacks.split(",") if a.strip()] if attacks else None,
        text_field=text_field,
        lora=LoraSettings(
            rank=lora_rank, alpha=2 * lora_rank, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate
        ),
        seed=seed,
        out=out,
        device=device,
    )
    document = run_text_compare(options, progress=lambda message: errors.print(message, highlight=False))
    console.print(_table(document))
    for variant in document["variants"]:
        console.print(variant["verdict"], markup=False, highlight=False)
    console.print(f"wrote {out}/compare-text.json and one audit per variant", markup=False, highlight=False)


def _split_defenses(text: str) -> list[str]:
    """Comma-separated defenses, where a ``key=value`` item continues the defense before it."""
    specs: list[str] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item and specs:
            specs[-1] += "," + item
        else:
            specs.append(item)
    return specs


def _table(document: dict[str, Any]) -> Table:
    table = Table(title="LoRA fine-tunes compared (strongest attack)", title_justify="left")
    for column in ("variant", "strongest attack", "AUC (95% CI)", "TPR @ 1% FPR", "ε spent", "ε ≥ (attacks)"):
        table.add_column(column)
    for v in document["variants"]:
        worst, rate = v["worst"], v["worst"]["rate"]
        tpr = "not measurable" if not rate or rate.get("tpr") is None else f"{100 * rate['tpr']:.1f}%"
        spent = v["training"].get("epsilon")
        table.add_row(
            v["name"],
            worst["attack"],
            f"{worst['auc']:.3f} ({worst['auc_ci_low']:.3f}–{worst['auc_ci_high']:.3f})",
            tpr,
            "—" if spent is None else f"{spent:.2f}",
            f"{v['empirical_epsilon_lower_bound']:.2f}",
        )
    return table
