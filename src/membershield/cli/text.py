"""``membershield audit-text``, ``canaries`` and ``extract``: what a language model memorised."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from membershield.cli.audit import summary_table
from membershield.cli.common import (
    AddBosOption,
    DropOverlapOption,
    RichProgress,
    console,
    errors,
    progress_columns,
    write_json,
)


def audit_text(
    model: Annotated[str, typer.Option(help="Causal LM directory (save_pretrained: config, weights, tokenizer).")],
    members: Annotated[str, typer.Option(help="JSONL of texts the model was trained on, one object per line.")],
    nonmembers: Annotated[str, typer.Option(help="JSONL of texts from the same distribution the model never saw.")],
    reference_model: Annotated[
        str | None, typer.Option(help="Reference model directory, e.g. the base model of a fine-tune.")
    ] = None,
    attacks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: loss,zlib,lowercase,reference,min-k,min-k-plus-plus (the default), and"
            " recall,dc-pdd,neighbourhood (they query the model again, so only when named)."
        ),
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
    recall_shots: Annotated[int, typer.Option(help="ReCaLL: non-member texts in the prefix.")] = 4,
    recall_prefix: Annotated[
        str | None, typer.Option(help="ReCaLL: JSONL of known non-members for the prefix (default: the non-members).")
    ] = None,
    reference_corpus: Annotated[
        str | None, typer.Option(help="DC-PDD: JSONL corpus for token frequencies (default: the non-members).")
    ] = None,
    dc_pdd_cap: Annotated[float, typer.Option(help="DC-PDD: upper bound a of each token's score.")] = 0.01,
    neighbours: Annotated[int, typer.Option(help="Neighbourhood: one-token neighbours per text.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Audit a causal language model with text membership attacks; write audit.json and scores.csv."""
    from membershield.audit import REPORTS
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
        recall_shots=recall_shots,
        recall_prefix=recall_prefix,
        reference_corpus=reference_corpus,
        dc_pdd_cap=dc_pdd_cap,
        neighbours=neighbours,
    )
    with Progress(*progress_columns(), console=errors, transient=True) as progress:
        run = run_text_audit(cfg, progress=RichProgress(progress), reports=REPORTS)
    console.print(summary_table(run.result))
    for line in text_audit_lines(run.result, out):
        console.print(line)


canaries_app = typer.Typer(
    no_args_is_help=True, help="Insert secret canaries into training data and measure their exposure."
)


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
    from membershield.targets.registry import load_for
    from membershield.text.canaries import canary_exposure, load_canaries
    from membershield.text.render import exposure_table

    load_canaries(canaries)  # a bad canaries file fails before the model loads
    lm = load_for("audit-text", model, device=device, add_bos=add_bos).target
    with Progress(*progress_columns(), console=errors, transient=True) as progress:
        doc = canary_exposure(
            lm,
            canaries,
            max_enumerate=max_enumerate,
            samples=samples,
            seed=seed,
            batch_tokens=batch_tokens,
            progress=RichProgress(progress),
        )
    write_json(Path(out) / "exposure.json", doc)
    console.print(exposure_table(doc))
    console.print(f"wrote {Path(out) / 'exposure.json'}", markup=False, highlight=False, soft_wrap=True)


def extract(
    model: Annotated[str, typer.Option(help="Causal language model directory.")],
    data: Annotated[Path, typer.Option(help="JSONL records to try to extract (e.g. the training members).")],
    prefix_tokens: Annotated[int, typer.Option(help="Tokens of each record given to the model.")] = 32,
    suffix_tokens: Annotated[int, typer.Option(help="Tokens that must be reproduced exactly.")] = 32,
    text_field: Annotated[str, typer.Option(help="Field of each JSON object holding the text.")] = "text",
    out: Annotated[str, typer.Option(help="Output directory for extraction.json.")] = "membershield-extraction",
    batch_size: Annotated[int, typer.Option(help="Sequences decoded together.")] = 32,
    top: Annotated[int, typer.Option(help="Records with the longest reproduced spans to list (greedy).")] = 10,
    sampling: Annotated[
        str, typer.Option(help="greedy (argmax) or nucleus (top-p sampling, as a deployed model decodes).")
    ] = "greedy",
    top_p: Annotated[
        str | None, typer.Option(help="Nucleus: top-p values, comma-separated, e.g. 0.5,0.9,1 (default 0.9).")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Nucleus: samples per record and top-p (default 10).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Nucleus: sampling temperature (default 1).")] = None,
    seed: Annotated[int, typer.Option(help="Nucleus: seed of the samples.")] = 0,
    nonmembers: Annotated[
        Path | None, typer.Option(help="JSONL texts the model never saw, for the attention-head comparison.")
    ] = None,
    attention_heads: Annotated[
        bool | None,
        typer.Option(
            "--attention-heads/--no-attention-heads",
            help="Heads focusing on one position more for the seeds than for --nonmembers (default: on with"
            " --nonmembers; one forward pass per text).",
        ),
    ] = None,
    attention_threshold: Annotated[
        float, typer.Option(help="Attention heads: weight on one position that counts as near-unit.")
    ] = 0.9,
    add_bos: AddBosOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Decode each record from its prefix (greedy, or nucleus-sampled at each top-p); report how many
    continue verbatim; with --nonmembers, list the attention heads that focus on one position more often
    for the records' prefixes than for the non-members'; writes extraction.json."""
    from membershield.targets.registry import load_for
    from membershield.text.data import load_jsonl
    from membershield.text.extraction import extract_sampled, extract_verbatim
    from membershield.text.render import attention_output, extraction_table, nucleus_table

    settings = _sampling_settings(sampling, top_p, samples, temperature, seed, batch_size)
    comparison = _attention_comparison(attention_heads, nonmembers, attention_threshold, text_field, prefix_tokens)
    records = load_jsonl(data, text_field)
    lm = load_for("audit-text", model, device=device, add_bos=add_bos).target
    if comparison is not None:
        from membershield.text.attention import attention_heads as heads_section
        from membershield.text.attention import check_attention

        check_attention(lm)  # a model without readable attention fails before any decoding
    with Progress(*progress_columns(), console=errors, transient=True) as progress:
        if settings is None:
            doc = extract_verbatim(lm, records, prefix_tokens, suffix_tokens, batch_size, top, RichProgress(progress))
        else:
            doc = extract_sampled(lm, records, prefix_tokens, suffix_tokens, settings, RichProgress(progress))
        if comparison is not None:
            from membershield.text.extraction import extraction_prompts

            prompts = extraction_prompts(lm, records, prefix_tokens, suffix_tokens, batch_size)[2]
            doc["attention_heads"] = heads_section(
                lm, prompts, comparison, attention_threshold, batch_size, RichProgress(progress)
            )
    write_json(Path(out) / "extraction.json", doc)
    console.print(extraction_table(doc) if settings is None else nucleus_table(doc))
    if comparison is not None:
        for part in attention_output(doc["attention_heads"]):
            console.print(part, markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {Path(out) / 'extraction.json'}", markup=False, highlight=False, soft_wrap=True)


def _sampling_settings(
    sampling: str, top_p: str | None, samples: int | None, temperature: float | None, seed: int, batch_size: int
):
    """The nucleus settings, or None for greedy decoding; a nucleus flag without --sampling nucleus fails."""
    from membershield.errors import ConfigError
    from membershield.text.extraction import SamplingSettings, parse_top_ps

    if sampling not in ("greedy", "nucleus"):
        raise ConfigError(f"--sampling must be greedy or nucleus, got '{sampling}'")
    nucleus_flags = {"--top-p": top_p, "--samples": samples, "--temperature": temperature}
    if sampling == "greedy" and any(v is not None for v in nucleus_flags.values()):
        given = ", ".join(flag for flag, v in nucleus_flags.items() if v is not None)
        raise ConfigError(f"{given} apply to nucleus sampling; add --sampling nucleus")
    if sampling == "greedy":
        return None
    return SamplingSettings(
        top_ps=tuple(parse_top_ps(top_p or "0.9")),
        samples=10 if samples is None else samples,
        temperature=1.0 if temperature is None else temperature,
        seed=seed,
        batch_size=batch_size,
    ).validate()


def _attention_comparison(
    wanted: bool | None, nonmembers: Path | None, threshold: float, text_field: str, prefix_tokens: int
):
    """The non-member texts for the attention-head diagnostic, or None when it is off; bad options fail
    here, before the model loads."""
    from membershield.errors import ConfigError
    from membershield.text.attention import check_threshold
    from membershield.text.data import load_jsonl

    if wanted and nonmembers is None:
        raise ConfigError("--attention-heads compares the seeds with texts the model never saw: add --nonmembers FILE")
    if wanted is False or nonmembers is None:
        return None
    check_threshold(threshold)
    if prefix_tokens < 2:
        raise ConfigError(
            f"the attention comparison needs seeds of 2 or more tokens, got --prefix-tokens {prefix_tokens}:"
            " raise it, or pass --no-attention-heads"
        )
    return load_jsonl(nonmembers, text_field)


canaries_app.command("insert")(canaries_insert)
canaries_app.command("exposure")(canaries_exposure)
