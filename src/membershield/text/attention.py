"""Memorisation diagnostic from the extraction seeds: attention heads that focus on one position for members.

For every extraction seed (a member record's prompt: the model's leading special tokens and the first
``prefix_tokens`` tokens, exactly what ``extract`` decodes from) and for the same-length prompts of
non-member records, the model is run once with its attention weights. For each layer and head, a query
position *focuses* when its largest attention weight is at least ``threshold`` (near-unit weight on a
single key position). Each text gets, per head, the share of its query positions that focus; texts are
the unit of comparison, never positions, since positions of one text are not independent.

Many heads put almost all their weight on the first position for every text (the *attention sink*,
Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks", ICLR), or on the previous
token, memorised or not. Focus on position 0 is therefore counted apart (``sink`` rates, reported, never
flagged); query position 0, which can only see itself, is left out. A head is flagged as a memorisation
head only when members' per-text focus rates are above the non-members': the Mann-Whitney AUC of the
per-text rates (members against non-members, :func:`membershield.metrics.auc_with_ci`, DeLong interval)
has its interval above 0.5, at a confidence corrected for the number of heads tested (Bonferroni), so
that a model of many heads does not flag some by chance. Heads that are sharp for every text (a previous-
token head, a sink) have the same rates on both sides and are not flagged.

The idea follows Stoehr et al. 2024 ("Localizing Paragraph Memorization in Language Models"), who found
a head of GPT-Neo 125M whose attention on distinctive prefix tokens is stronger for memorised paragraphs.

:func:`focus_rates` and :func:`compare_heads` are pure (arrays in, numbers out); :func:`seed_attention`
is the model pass; :func:`attention_heads` assembles the ``attention_heads`` section of extraction.json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from membershield.errors import ConfigError, InputDataError, ModelLoadError
from membershield.metrics import auc_with_ci
from membershield.text.data import TextRecords

ProgressCallback = Callable[[str, int, int], None]
SINK_POSITIONS = 1  # key positions counted as the attention sink: the first one


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1]; a ConfigError otherwise.

    >>> check_threshold(0.9)
    0.9
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ConfigError(f"--attention-threshold must lie in (0, 1] (e.g. 0.9), got {threshold}")
    return float(threshold)


@dataclass(frozen=True)
class FocusRates:
    """Per text, layer and head (``(texts, layers, heads)``): the share of query positions whose largest
    weight reaches the threshold on a position after the sink (``focused``) or on the sink (``sink``),
    and how many of the focused ones look at the previous token (``previous``, a count)."""

    focused: np.ndarray
    sink: np.ndarray
    previous: np.ndarray
    queries: int  # query positions per text that count (all but the first)


def focus_rates(weights: np.ndarray, threshold: float) -> FocusRates:
    """Near-unit focus of attention weights ``(texts, layers, heads, queries, keys)`` of causal attention.

    The first query (which sees only itself) is left out; focus on key 0 counts as ``sink``.

    >>> w = np.zeros((1, 1, 2, 3, 3))
    >>> w[0, 0, 0] = [[1, 0, 0], [0.05, 0.95, 0], [0.02, 0.03, 0.95]]  # head 0: each query on itself
    >>> w[0, 0, 1] = [[1, 0, 0], [0.97, 0.03, 0], [0.5, 0.25, 0.25]]  # head 1: sink, then spread
    >>> r = focus_rates(w, 0.9)
    >>> r.focused.tolist(), r.sink.tolist(), r.previous.tolist(), r.queries
    ([[[1.0, 0.0]]], [[[0.0, 0.5]]], [[[0, 0]]], 2)
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 5 or w.shape[3] < 2 or w.shape[3] != w.shape[4]:
        raise InputDataError(f"attention weights must be (texts, layers, heads, n, n) with n >= 2, got {w.shape}")
    w = w[:, :, :, 1:, :]
    top, where = w.max(axis=-1), w.argmax(axis=-1)
    near_unit = top >= check_threshold(threshold)
    on_sink = near_unit & (where < SINK_POSITIONS)
    focused = near_unit & ~on_sink
    query = np.arange(1, w.shape[3] + 1)
    previous = focused & (where == query - 1)
    return FocusRates(focused.mean(axis=-1), on_sink.mean(axis=-1), previous.sum(axis=-1), int(w.shape[3]))


def compare_heads(member: FocusRates, nonmember: FocusRates, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per (layer, head): member and non-member mean focus rates, their difference, the AUC of
    the per-text rates with its Bonferroni-corrected DeLong interval, the sink rates, and ``flagged``
    (the interval lies above 0.5: members' seeds focus more often).

    >>> rng = np.random.default_rng(0)
    >>> m = FocusRates(rng.uniform(0.3, 0.6, (30, 1, 2)), np.zeros((30, 1, 2)), np.zeros((30, 1, 2)), 8)
    >>> n = FocusRates(rng.uniform(0.0, 0.3, (30, 1, 2)), np.zeros((30, 1, 2)), np.zeros((30, 1, 2)), 8)
    >>> n.focused[:, 0, 1] = m.focused[:, 0, 1]  # head 1 focuses alike on both sides
    >>> [(r["head"], r["auc"], r["flagged"]) for r in compare_heads(m, n)]
    [(0, 1.0, True), (1, 0.5, False)]
    """
    n_m, n_n = member.focused.shape[0], nonmember.focused.shape[0]
    if n_m < 2 or n_n < 2:
        raise InputDataError(f"the attention comparison needs 2 or more texts on each side, got {n_m} and {n_n}")
    if member.focused.shape[1:] != nonmember.focused.shape[1:]:
        raise InputDataError(f"layers x heads differ: {member.focused.shape[1:]} and {nonmember.focused.shape[1:]}")
    layers, heads = member.focused.shape[1:]
    per_head = 1.0 - (1.0 - confidence) / (layers * heads)
    is_member = np.r_[np.ones(n_m, dtype=bool), np.zeros(n_n, dtype=bool)]
    rows = []
    for layer in range(layers):
        for head in range(heads):
            a, b = member.focused[:, layer, head], nonmember.focused[:, layer, head]
            value, interval = auc_with_ci(np.concatenate([a, b]), is_member, per_head)
            focused = member.focused[:, layer, head].sum() * member.queries
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "member_rate": round(float(a.mean()), 6),
                    "nonmember_rate": round(float(b.mean()), 6),
                    "difference": round(float(a.mean() - b.mean()), 6),
                    "auc": round(value, 6),
                    "auc_ci_low": round(interval.low, 6),
                    "auc_ci_high": round(interval.high, 6),
                    "flagged": bool(interval.low > 0.5),
                    "member_sink_rate": round(float(member.sink[:, layer, head].mean()), 6),
                    "nonmember_sink_rate": round(float(nonmember.sink[:, layer, head].mean()), 6),
                    "member_previous_token_share": round(
                        float(member.previous[:, layer, head].sum() / focused) if focused else 0.0, 6
                    ),
                }
            )
    return rows


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """The model switched to eager attention (the implementation that returns its weights) for the
    block, and back afterwards; the weights stay where they are."""
    before = getattr(model.config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if before != "eager":
        if switch is None:
            raise ModelLoadError(f"{type(model).__name__} cannot switch to eager attention to return its weights")
        try:
            switch("eager")
        except (ValueError, NotImplementedError, ImportError) as exc:
            raise ModelLoadError(f"{type(model).__name__} cannot return attention weights: {exc}") from exc
    try:
        yield
    finally:
        if before is not None and before != "eager":
            switch(before)


def seed_prompts(lm: Any, records: TextRecords, prefix_tokens: int) -> np.ndarray:
    """The prompts of every record with at least ``prefix_tokens`` tokens: the leading special tokens
    and its first ``prefix_tokens``; an error naming the file when none is that long."""
    start = lm.leading_context_tokens()
    ids = lm.encode(records.texts)
    long_enough = [x[: start + prefix_tokens] for x in ids if len(x) >= start + prefix_tokens]
    if len(long_enough) < 2:
        raise InputDataError(
            f"{records.path}: {len(long_enough)} record(s) have {prefix_tokens} tokens; the attention comparison"
            " needs 2 or more (add non-member texts or lower --prefix-tokens)"
        )
    return np.array(long_enough, dtype=np.int64)


def read_attention(lm: Any, input_ids: Any) -> Any:
    """``(texts, layers, heads, n, n)`` attention weights of a batch of token ids (a torch tensor), in
    eager attention; a ModelLoadError when the model gives none (a state-space model, say)."""
    import torch

    with eager_attention(lm.model), torch.inference_mode():
        try:
            attentions = getattr(lm.model(input_ids=input_ids, output_attentions=True), "attentions", None)
        except TypeError as exc:  # a forward pass without the output_attentions argument
            raise ModelLoadError(f"{lm.path}: the model cannot return attention weights ({exc})") from exc
    if not attentions or any(a is None for a in attentions):
        raise ModelLoadError(
            f"{lm.path}: the model returns no attention weights ({type(lm.model).__name__});"
            " run extract with --no-attention-heads (or without --nonmembers) for it"
        )
    return torch.stack([a.float() for a in attentions], dim=1)


def check_attention(lm: Any) -> None:
    """Fail before any decoding when the model's attention weights cannot be read."""
    import torch

    ids = (lm.encode(["a b"])[0] * 2)[:2]  # two positions, so that attention has a choice
    read_attention(lm, torch.as_tensor([ids], dtype=torch.long, device=lm.device))


def seed_attention(
    lm: Any, prompts: np.ndarray, threshold: float, batch_size: int = 32, progress: ProgressCallback | None = None
) -> FocusRates:
    """One forward pass per batch of equal-length prompts with attention weights; their focus rates."""
    import torch

    report = progress or (lambda stage, done, total: None)
    parts: list[FocusRates] = []
    report("attention of the seeds", 0, prompts.shape[0])
    for start in range(0, prompts.shape[0], batch_size):
        chunk = torch.as_tensor(prompts[start : start + batch_size], dtype=torch.long, device=lm.device)
        parts.append(focus_rates(read_attention(lm, chunk).cpu().numpy(), threshold))
        report("attention of the seeds", min(start + batch_size, prompts.shape[0]), prompts.shape[0])
    return FocusRates(
        np.concatenate([p.focused for p in parts]),
        np.concatenate([p.sink for p in parts]),
        np.concatenate([p.previous for p in parts]),
        parts[0].queries,
    )


def attention_heads(
    lm: Any,
    member_prompts: np.ndarray,
    nonmembers: TextRecords,
    threshold: float = 0.9,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """The ``attention_heads`` section of extraction.json: the seeds' focus against the non-members'."""
    threshold = check_threshold(threshold)
    if member_prompts.shape[1] < 2:
        raise ConfigError("the attention comparison needs seeds of 2 or more tokens; raise --prefix-tokens")
    start = lm.leading_context_tokens()
    prefix_tokens = member_prompts.shape[1] - start
    nonmember_prompts = seed_prompts(lm, nonmembers, prefix_tokens)
    member = seed_attention(lm, member_prompts, threshold, batch_size, progress)
    nonmember = seed_attention(lm, nonmember_prompts, threshold, batch_size, progress)
    rows = compare_heads(member, nonmember)
    layers, heads = member.focused.shape[1:]
    keep = ("head", "member_rate", "nonmember_rate", "difference", "auc", "auc_ci_low", "auc_ci_high")
    return {
        "threshold": threshold,
        "statistic": "per text and head, the share of query positions (all but the first) whose largest attention"
        " weight reaches the threshold on one position after the first; members against non-members by the AUC"
        " of those per-text shares",
        "confidence": 0.95,
        "per_head_confidence": 1.0 - 0.05 / (layers * heads),
        "correction": f"Bonferroni over {layers * heads} heads ({layers} layers x {heads})",
        "sink_positions": list(range(SINK_POSITIONS)),
        "prompt_tokens": int(member_prompts.shape[1]),
        "queries_per_text": member.queries,
        "n_member_texts": int(member_prompts.shape[0]),
        "n_nonmember_texts": int(nonmember_prompts.shape[0]),
        "nonmembers": {"path": nonmembers.path, "sha256": nonmembers.sha256, "n_records": len(nonmembers)},
        "n_flagged": sum(r["flagged"] for r in rows),
        "layers": [
            {"layer": layer, "flagged": [{k: r[k] for k in keep} for r in rows if r["layer"] == layer and r["flagged"]]}
            for layer in range(layers)
        ],
        "sink_heads": [
            {"layer": r["layer"], "head": r["head"], "member_sink_rate": r["member_sink_rate"]}
            for r in rows
            if min(r["member_sink_rate"], r["nonmember_sink_rate"]) >= 0.5
        ],
        "heads": rows,
    }
