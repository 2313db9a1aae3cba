"""Verbatim extraction: does greedy decoding from a record's beginning reproduce the rest of it?

For each record, the model is given its first ``prefix_tokens`` tokens (after the model's prefix
token) and greedily generates ``suffix_tokens`` more. The record counts as *extracted* when they equal
the record's next ``suffix_tokens`` tokens exactly. This is the discoverable-memorisation test of Carlini
et al. 2023 ("Quantifying Memorization Across Neural Language Models", ICLR) and the verification step
of Carlini et al. 2021 ("Extracting Training Data from Large Language Models", USENIX Security).
Records shorter than ``prefix_tokens + suffix_tokens`` tokens are skipped and counted.

With ``sampling="nucleus"`` (:func:`extract_sampled`) the model decodes as a deployed one does: nucleus
(top-p) sampling (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", ICLR) at a
temperature, ``samples`` times per record and top-p, and a record counts as extracted when at least one
sample reproduces its suffix exactly (the (n, p)-discoverable extraction of Hayes et al. 2024,
"Measuring memorization through probabilistic discoverable extraction"). Beside the sampled count, the
exact probability that one sample reproduces the suffix is computed in one teacher-forced pass (the
product over the suffix of each true token's probability under the filtered distribution, 0 when a
true token falls outside the nucleus), which gives the expected share of records extracted in
``samples`` draws without sampling noise.

Every prompt has the same length, so prompts are batched without padding and decoded with the key/value
cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from membershield.errors import ConfigError, InputDataError
from membershield.metrics import clopper_pearson
from membershield.text.data import TextRecords

ProgressCallback = Callable[[str, int, int], None]


def greedy_continuations(
    lm: Any, prompts: np.ndarray, n_new: int, batch_size: int = 32, progress: ProgressCallback | None = None
) -> np.ndarray:
    """Greedy (argmax) continuation of ``n_new`` tokens for each row of the int array ``prompts``."""
    import torch

    report = progress or (lambda stage, done, total: None)
    out = np.zeros((prompts.shape[0], n_new), dtype=np.int64)
    report("greedy decoding", 0, prompts.shape[0])
    with torch.inference_mode():
        for start in range(0, prompts.shape[0], batch_size):
            chunk = torch.as_tensor(prompts[start : start + batch_size], dtype=torch.long, device=lm.device)
            result = lm.model(input_ids=chunk, use_cache=True)
            past = result.past_key_values
            token = result.logits[:, -1].argmax(-1)
            generated = [token]
            for _ in range(n_new - 1):
                result = lm.model(input_ids=token[:, None], past_key_values=past, use_cache=True)
                past = result.past_key_values
                token = result.logits[:, -1].argmax(-1)
                generated.append(token)
            out[start : start + chunk.shape[0]] = torch.stack(generated, dim=1).cpu().numpy()
            report("greedy decoding", min(start + batch_size, prompts.shape[0]), prompts.shape[0])
    return out


def _leading_matches(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Tokens reproduced before the first mismatch, per row."""
    equal = generated == truth
    return np.where(equal.all(axis=1), equal.shape[1], np.argmin(equal, axis=1))


def _longest_run(equal_row: np.ndarray) -> int:
    best = run = 0
    for same in equal_row:
        run = run + 1 if same else 0
        best = max(best, run)
    return best


def extraction_prompts(
    lm: Any, records: TextRecords, prefix_tokens: int, suffix_tokens: int, batch_size: int
) -> tuple[int, list[int], np.ndarray, np.ndarray]:
    """The leading context tokens, the records long enough, their prompts and their true suffixes."""
    if prefix_tokens < 1 or suffix_tokens < 1:
        raise ConfigError(
            f"--prefix-tokens and --suffix-tokens must be 1 or more, got {prefix_tokens}, {suffix_tokens}"
        )
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be 1 or more, got {batch_size}")
    start = lm.leading_context_tokens()  # a BOS the encoding puts first is context, not part of the record
    needed = start + prefix_tokens + suffix_tokens
    if needed > lm.max_positions:
        raise ConfigError(
            f"prefix + suffix = {prefix_tokens + suffix_tokens} tokens exceed the model's context of"
            f" {lm.max_positions - start}; use fewer tokens"
        )
    ids = lm.encode(records.texts)
    usable = [i for i, x in enumerate(ids) if len(x) >= needed]
    if not usable:
        longest = max(len(x) for x in ids) - start
        raise InputDataError(
            f"{records.path}: no record has {prefix_tokens + suffix_tokens} tokens (the longest has {longest});"
            " lower --prefix-tokens or --suffix-tokens"
        )
    prompts = np.array([ids[i][: start + prefix_tokens] for i in usable], dtype=np.int64)
    truth = np.array([ids[i][start + prefix_tokens : needed] for i in usable], dtype=np.int64)
    return start, usable, prompts, truth


def extract_verbatim(
    lm: Any,
    records: TextRecords,
    prefix_tokens: int = 32,
    suffix_tokens: int = 32,
    batch_size: int = 32,
    top: int = 10,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Greedy-decode every long-enough record from its prefix; report exact reproductions and spans."""
    start, usable, prompts, truth = extraction_prompts(lm, records, prefix_tokens, suffix_tokens, batch_size)
    generated = greedy_continuations(lm, prompts, suffix_tokens, batch_size, progress)
    matched = _leading_matches(generated, truth)
    exact = matched == suffix_tokens
    decode = lm.tokenizer.decode
    rows = []
    for row, i in enumerate(usable):
        rows.append(
            {
                "line": records.lines[i],
                "reproduced_tokens": int(matched[row]),
                "longest_aligned_run": _longest_run(generated[row] == truth[row]),
                "exact": bool(exact[row]),
                "prefix": decode(prompts[row, start:].tolist()),
                "true_suffix": decode(truth[row].tolist()),
                "generated": decode(generated[row].tolist()),
            }
        )
    ranked = sorted(rows, key=lambda r: (-r["reproduced_tokens"], -r["longest_aligned_run"], r["line"]))
    n, k = len(usable), int(exact.sum())
    interval = clopper_pearson(k, n)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": lm.describe(),
        "data": {"path": records.path, "sha256": records.sha256, "n_records": len(records)},
        "prefix_tokens": prefix_tokens,
        "suffix_tokens": suffix_tokens,
        "decoding": "greedy",
        "n_tested": n,
        "n_too_short": len(records) - n,
        "n_extracted": k,
        "extracted_share": k / n,
        "extracted_share_ci_low": interval.low,
        "extracted_share_ci_high": interval.high,
        "mean_reproduced_tokens": float(matched.mean()),
        "longest": ranked[:top],
        "records": sorted(rows, key=lambda r: r["line"]),
    }


def parse_top_ps(text: str | list[float] | tuple[float, ...]) -> list[float]:
    """``"0.5, 0.9,1"`` (or a list) as validated, de-duplicated top-p values in increasing order.

    >>> parse_top_ps("0.9, 0.5,1")
    [0.5, 0.9, 1.0]
    """
    parts = [p for p in (text.split(",") if isinstance(text, str) else text) if str(p).strip()]
    try:
        values = sorted({float(p) for p in parts})
    except ValueError as exc:
        raise ConfigError(f"--top-p takes numbers in (0, 1] separated by commas, e.g. 0.5,0.9,1; got {text!r}") from exc
    if not values or any(not 0.0 < p <= 1.0 for p in values):
        raise ConfigError(f"--top-p takes numbers in (0, 1] separated by commas, e.g. 0.5,0.9,1; got {text!r}")
    return values


def nucleus_log_probs(logits: Any, top_p: float, temperature: float = 1.0) -> Any:
    """Log-probabilities of the nucleus distribution: softmax of ``logits / temperature`` restricted to
    the smallest set of likeliest tokens whose mass reaches ``top_p`` (the likeliest token always in),
    renormalised; ``-inf`` outside it. ``logits`` is a torch tensor ``(..., vocabulary)``."""
    import torch

    lp = torch.log_softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return lp
    sorted_lp, order = lp.sort(dim=-1, descending=True)
    mass_before = sorted_lp.exp().cumsum(dim=-1) - sorted_lp.exp()
    drop_sorted = mass_before >= top_p  # the mass before this token already reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.log_softmax(lp.masked_fill(drop, float("-inf")), dim=-1)


def sampled_continuations(
    lm: Any, prompts: np.ndarray, n_new: int, settings: SamplingSettings, top_p: float, seed: int
) -> np.ndarray:
    """``(rows, samples, n_new)``: ``settings.samples`` nucleus-sampled continuations of each prompt."""
    import torch

    rows = np.repeat(prompts, settings.samples, axis=0)
    out = np.zeros((rows.shape[0], n_new), dtype=np.int64)
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    with torch.inference_mode():
        for start in range(0, rows.shape[0], settings.batch_size):
            chunk = torch.as_tensor(rows[start : start + settings.batch_size], dtype=torch.long, device=lm.device)
            result, generated = lm.model(input_ids=chunk, use_cache=True), []
            for step in range(n_new):
                lp = nucleus_log_probs(result.logits[:, -1], top_p, settings.temperature)
                token = torch.multinomial(lp.exp(), 1, generator=generator)[:, 0]
                generated.append(token)
                if step + 1 < n_new:
                    result = lm.model(input_ids=token[:, None], past_key_values=result.past_key_values, use_cache=True)
            out[start : start + chunk.shape[0]] = torch.stack(generated, dim=1).cpu().numpy()
    return out.reshape(prompts.shape[0], settings.samples, n_new)


def exact_suffix_log_probs(
    lm: Any, prompts: np.ndarray, truth: np.ndarray, top_p: float, temperature: float, batch_size: int
) -> np.ndarray:
    """Per record, the log-probability that one nucleus sample reproduces its suffix exactly."""
    import torch

    sequences = np.concatenate([prompts, truth], axis=1)
    out = np.zeros(prompts.shape[0])
    first = prompts.shape[1] - 1  # logits row predicting the first suffix token
    with torch.inference_mode():
        for start in range(0, sequences.shape[0], batch_size):
            chunk = torch.as_tensor(sequences[start : start + batch_size], dtype=torch.long, device=lm.device)
            logits = lm.model(input_ids=chunk).logits[:, first:-1]
            lp = nucleus_log_probs(logits, top_p, temperature)
            true_lp = lp.gather(-1, chunk[:, first + 1 :, None]).squeeze(-1)
            out[start : start + chunk.shape[0]] = true_lp.double().sum(dim=1).cpu().numpy()
    return out


@dataclass(frozen=True)
class SamplingSettings:
    """How a deployed model decodes: ``samples`` draws per record and top-p, at ``temperature``."""

    top_ps: tuple[float, ...] = (1.0,)
    samples: int = 10
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 32

    def validate(self) -> SamplingSettings:
        if self.samples < 1:
            raise ConfigError(f"--samples must be 1 or more, got {self.samples}")
        if not self.temperature > 0:
            raise ConfigError(
                f"--temperature must be above 0 (1 leaves the model's distribution), got {self.temperature}"
            )
        return SamplingSettings(tuple(parse_top_ps(list(self.top_ps))), *astuple(self)[1:])


def _at_top_p(matches: np.ndarray, log_p: np.ndarray, top_p: float, samples: int) -> dict[str, Any]:
    """One row of ``by_top_p``: records with an exact sample, and the share expected from the probabilities."""
    n, k = matches.shape[0], int((matches > 0).sum())
    interval = clopper_pearson(k, n)
    p_one = np.exp(log_p)
    return {
        "top_p": top_p,
        "n_tested": n,
        "n_extracted": k,
        "extracted_share": k / n,
        "extracted_share_ci_low": interval.low,
        "extracted_share_ci_high": interval.high,
        "exact_samples": int(matches.sum()),
        "exact_sample_share": float(matches.sum() / (n * samples)),
        "mean_exact_probability": float(p_one.mean()),
        "expected_share": float((-np.expm1(samples * np.log1p(-np.minimum(p_one, 1.0 - 1e-16)))).mean()),
    }


def extract_sampled(
    lm: Any,
    records: TextRecords,
    prefix_tokens: int = 32,
    suffix_tokens: int = 32,
    settings: SamplingSettings | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Nucleus-sample every long-enough record's continuation at each top-p; report the share reproduced."""
    settings = (settings or SamplingSettings()).validate()
    _, usable, prompts, truth = extraction_prompts(lm, records, prefix_tokens, suffix_tokens, settings.batch_size)
    report = progress or (lambda stage, done, total: None)
    by_top_p, per_record = [], [{"line": records.lines[i], "exact_samples": {}, "probability": {}} for i in usable]
    for j, top_p in enumerate(settings.top_ps):
        report(f"nucleus sampling (top-p {top_p:g})", j, len(settings.top_ps))
        generated = sampled_continuations(lm, prompts, suffix_tokens, settings, top_p, settings.seed + j)
        matches = (generated == truth[:, None, :]).all(axis=2).sum(axis=1)
        log_p = exact_suffix_log_probs(lm, prompts, truth, top_p, settings.temperature, settings.batch_size)
        by_top_p.append(_at_top_p(matches, log_p, top_p, settings.samples))
        for row, record in enumerate(per_record):
            record["exact_samples"][f"{top_p:g}"] = int(matches[row])
            record["probability"][f"{top_p:g}"] = float(np.exp(log_p[row]))
    report("nucleus sampling", len(settings.top_ps), len(settings.top_ps))
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": lm.describe(),
        "data": {"path": records.path, "sha256": records.sha256, "n_records": len(records)},
        "prefix_tokens": prefix_tokens,
        "suffix_tokens": suffix_tokens,
        "decoding": "nucleus",
        "samples": settings.samples,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "n_tested": len(usable),
        "n_too_short": len(records) - len(usable),
        "by_top_p": by_top_p,
        "records": per_record,
    }
