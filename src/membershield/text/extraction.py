"""Verbatim extraction: does greedy decoding from a record's beginning reproduce the rest of it?

For each record, the model is given its first ``prefix_tokens`` tokens (after the model's prefix
token) and greedily generates ``suffix_tokens`` more. The record counts as *extracted* when they equal
the record's next ``suffix_tokens`` tokens exactly. This is the discoverable-memorisation test of Carlini
et al. 2023 ("Quantifying Memorization Across Neural Language Models", ICLR) and the verification step
of Carlini et al. 2021 ("Extracting Training Data from Large Language Models", USENIX Security).
Records shorter than ``prefix_tokens + suffix_tokens`` tokens are skipped and counted.

Every prompt has the same length, so prompts are batched without padding and decoded with the key/value
cache.
"""

from __future__ import annotations

from collections.abc import Callable
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
