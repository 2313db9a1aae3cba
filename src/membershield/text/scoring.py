"""Per-token scores of texts under a causal LM, computed once per model and shared by every attack.

A text is scored as the model was trained on it: its tokenizer's default encoding (see
:meth:`~membershield.text.model.LanguageModel.encode`), the first token being context only, exactly the
tokens ``model(input_ids=ids, labels=ids).loss`` averages over. For each scored token ``x_t`` (every
token after the first), one forward pass gives

- ``logprob[t] = log p(x_t | x_<t)``,
- ``mean[t] = E_{z ~ p(.|x_<t)} log p(z | x_<t)`` (minus the entropy of the next-token distribution),
- ``var[t] = Var_{z ~ p(.|x_<t)} log p(z | x_<t)``,

the last two being what Min-K%++ normalises with (Zhang et al. 2024). Texts are batched, padded on the
tokenizer's side with the padding masked out and position ids counting real tokens only (so a record's
scores do not depend on its batch), under a token budget (the logits tensor is ``batch x length x
vocabulary``, so the budget bounds memory), and a text longer than the model's context is scored in
overlapping windows: each window starts ``stride`` tokens after the previous one and scores only tokens
not scored before, so every token is scored once with at least ``window - stride`` tokens of context
(after the first window).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from membershield.errors import ConfigError, InputDataError
from membershield.text.model import LanguageModel

ProgressCallback = Callable[[str, int, int], None]

# Upper bound on the elements of one float32 (batch, length, vocabulary) tensor: 2^26 is 256 MiB.
MAX_LOGIT_ELEMENTS = 1 << 26
LOG_PROB_FLOOR = -1e4  # a token the model gives probability 0 scores this instead of -inf
# Rows of logits processed together after the forward pass: 2^18 float32 values (1 MiB) stay in cache.
CHUNK_ELEMENTS = 1 << 18


@dataclass
class TokenScores:
    """Ragged per-token arrays, one entry per text (float64)."""

    logprob: list[np.ndarray]
    mean: list[np.ndarray] | None = None
    var: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.logprob)

    @property
    def n_tokens(self) -> np.ndarray:
        return np.array([a.size for a in self.logprob], dtype=np.int64)

    def mean_nll(self) -> np.ndarray:
        """Average negative log-likelihood per token of each text (log of its perplexity), in nats."""
        return np.array([-a.mean() for a in self.logprob], dtype=np.float64)

    def total_nll(self) -> np.ndarray:
        """Sum of negative log-likelihoods of each text, in nats."""
        return np.array([-a.sum() for a in self.logprob], dtype=np.float64)


@dataclass(frozen=True)
class Window:
    record: int
    start: int  # first token of the window in the record's id list
    stop: int  # one past the last token
    first_target: int  # first token (record position) whose score this window contributes


def plan_windows(lengths: list[int], window: int, stride: int) -> list[Window]:
    """Windows covering every token position ``1..n-1`` of each record exactly once."""
    if window < 2:
        raise ConfigError(f"the scoring window must hold at least 2 tokens, got {window}")
    if not 1 <= stride <= window - 1:
        raise ConfigError(f"stride must lie in 1..{window - 1} for a window of {window} tokens, got {stride}")
    out: list[Window] = []
    for record, n in enumerate(lengths):
        if n < 2:
            continue
        start, scored_until = 0, 1
        while True:
            stop = min(start + window, n)
            out.append(Window(record, start, stop, scored_until))
            scored_until = stop
            if stop == n:
                break
            start += stride
    return out


def batch_token_budget(batch_tokens: int, vocab_size: int) -> int:
    """Tokens per forward pass: the caller's budget, capped so that the logits stay under
    ``MAX_LOGIT_ELEMENTS``; a batch still takes one window however long (the caller's rule).

    The cap is not raised to the model's context: with SmolLM2's 8,192 positions that would make every
    batch 8,192 tokens (1.6 GB of logits), and scoring slower than the forward pass over the same rows.

    >>> batch_token_budget(8192, 49152), batch_token_budget(8192, 400)
    (1365, 8192)
    """
    return max(1, min(batch_tokens, MAX_LOGIT_ELEMENTS // max(vocab_size, 1)))


def _padded_batch(batch: list[Window], ids: list[list[int]], pad: int, left: bool) -> tuple[Any, Any, Any, list[int]]:
    """Input ids, attention mask and position ids of a batch of windows, and where each window starts.

    Position ids count only real tokens, so a left-padded window sees the positions it would alone
    (models with absolute positions, such as GPT-2, otherwise shift every token by the padding).
    """
    import torch

    longest = max(w.stop - w.start for w in batch)
    input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    offsets = []
    for row, w in enumerate(batch):
        chunk = ids[w.record][w.start : w.stop]
        offset = longest - len(chunk) if left else 0
        input_ids[row, offset : offset + len(chunk)] = torch.tensor(chunk, dtype=torch.long)
        mask[row, offset : offset + len(chunk)] = 1
        offsets.append(offset)
    positions = (mask.cumsum(dim=1) - 1).clamp_(min=0)
    return input_ids, mask, positions, offsets


def _accepts_position_ids(model: Any) -> bool:
    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a forward without an inspectable signature
        return False


def score_token_ids(
    lm: LanguageModel,
    ids: list[list[int]],
    *,
    distribution: bool = True,
    batch_tokens: int = 8192,
    max_length: int | None = None,
    stride: int | None = None,
    padding_side: str | None = None,
    progress: ProgressCallback | None = None,
    label: str = "scoring tokens",
) -> TokenScores:
    """Score token-id sequences (the first token of each is context) under ``lm``; see module docs.

    ``padding_side`` (default: the tokenizer's) only changes how batches are laid out, never a score.
    """
    import torch

    window = min(max_length or lm.max_positions, lm.max_positions)
    stride = stride or max(1, window // 2)
    windows = plan_windows([len(x) for x in ids], window, stride)
    budget = batch_token_budget(batch_tokens, lm.vocab_size)
    logprob = [np.zeros(max(len(x) - 1, 0)) for x in ids]
    mean = [np.zeros(max(len(x) - 1, 0)) for x in ids] if distribution else None
    var = [np.zeros(max(len(x) - 1, 0)) for x in ids] if distribution else None
    order = sorted(range(len(windows)), key=lambda i: windows[i].stop - windows[i].start, reverse=True)
    total, done = sum(w.stop - w.first_target for w in windows), 0
    report = progress or (lambda stage, d, t: None)
    report(label, 0, total)
    left = (padding_side or lm.padding_side) == "left"
    with_positions = _accepts_position_ids(lm.model)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    position = 0
    with torch.inference_mode():
        while position < len(order):
            longest = windows[order[position]].stop - windows[order[position]].start
            batch = [windows[i] for i in order[position : position + max(1, budget // longest)]]
            position += len(batch)
            input_ids, mask, positions, offsets = _padded_batch(batch, ids, pad, left)
            token_lp, mu_np, var_np = _forward_scores(
                lm, input_ids, mask, positions if with_positions else None, distribution
            )
            for row, w in enumerate(batch):
                # logits row j predicts window token j + 1, i.e. record position w.start + j + 1
                first = offsets[row] + w.first_target - w.start - 1
                last = offsets[row] + w.stop - w.start - 1
                target = slice(w.first_target - 1, w.stop - 1)  # record arrays index position t at t - 1
                logprob[w.record][target] = token_lp[row, first:last]
                if distribution:
                    mean[w.record][target] = mu_np[row, first:last]  # type: ignore[index]
                    var[w.record][target] = var_np[row, first:last]  # type: ignore[index]
                done += w.stop - w.first_target
            report(label, done, total)
    return TokenScores(logprob, mean, var)


def _forward_scores(
    lm: LanguageModel, input_ids: Any, mask: Any, positions: Any | None, distribution: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Log-probability of each next token, and the mean and variance of the next-token log-probability."""
    import torch

    device = lm.device
    extra = {"position_ids": positions.to(device)} if positions is not None else {}
    input_ids = input_ids.to(device)
    logits = lm.model(input_ids=input_ids, attention_mask=mask.to(device), **extra).logits
    # Row by row: ``logits[row, :-1]`` is contiguous where ``logits[:, :-1]`` is not, and flattening that would
    # copy the whole batch x length x vocabulary tensor (a tenth of the forward pass for SmolLM2).
    rows = [next_token_moments(logits[row, :-1], input_ids[row, 1:], distribution) for row in range(len(logits))]
    token_lp, mu, sigma2 = (
        None if parts[0] is None else torch.stack(parts).double().cpu().numpy() for parts in zip(*rows, strict=True)
    )
    return token_lp, mu, sigma2


def next_token_moments(logits: Any, targets: Any, distribution: bool = True) -> tuple[Any, Any | None, Any | None]:
    """Per row of ``logits`` (positions x vocabulary): ``log p(target)``, and the mean and variance of
    ``log p(z)`` under ``z ~ p`` (``p = softmax(row)``). ``logits`` is overwritten.

    One exponential per logit, in chunks of rows that stay in the CPU's cache: with ``z = row - max``,
    ``S = Σ exp z``, ``log p = z - log S``, the mean is ``Σ exp(z)·z / S - log S`` and the variance (shift
    invariant) ``Σ exp(z)·z² / S - (Σ exp(z)·z / S)²``; the passes over the logits are what scoring costs
    beyond the model's forward pass.

    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]))
    >>> lp, mean, var = next_token_moments(logits.clone(), torch.tensor([0, 1]))
    >>> [round(v, 4) for v in lp.tolist()], [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in var.tolist()]
    ([-0.6931, -69.0776], [-1.0397, -0.0], [0.1201, 0.0])
    """
    import torch

    rows = logits.shape[0]
    chunk = max(1, CHUNK_ELEMENTS // max(logits.shape[-1], 1))
    token_lp = torch.empty(rows, dtype=torch.float32, device=logits.device)
    mean = torch.empty_like(token_lp) if distribution else None
    var = torch.empty_like(token_lp) if distribution else None
    for lo in range(0, rows, chunk):
        z = logits[lo : lo + chunk].float()  # a view when the model already answers float32
        z.sub_(z.amax(dim=-1, keepdim=True))
        e = z.exp()
        total = e.sum(dim=-1)
        log_total = total.log()
        picked = z.gather(-1, targets[lo : lo + chunk, None]).squeeze(-1)
        token_lp[lo : lo + chunk] = (picked - log_total).clamp_(min=LOG_PROB_FLOOR)
        if distribution:
            weighted = e.mul_(z)  # exp(z)·z, then exp(z)·z² in the same buffer
            first = weighted.sum(dim=-1) / total
            second = weighted.mul_(z).sum(dim=-1) / total
            mean[lo : lo + chunk] = first - log_total  # type: ignore[index]
            var[lo : lo + chunk] = (second - first * first).clamp_(min=0.0)  # type: ignore[index]
    return token_lp, mean, var


def score_texts(
    lm: LanguageModel,
    texts: list[str],
    *,
    distribution: bool = True,
    batch_tokens: int = 8192,
    max_length: int | None = None,
    stride: int | None = None,
    padding_side: str | None = None,
    progress: ProgressCallback | None = None,
    label: str = "scoring tokens",
    where: list[str] | None = None,
) -> TokenScores:
    """Tokenise ``texts`` with the model's tokenizer and score them; every text needs a scored token.

    ``where`` names each text's origin (``file:line``) for the error about a text with nothing to score.
    """
    ids = lm.encode(texts)
    empty = [i for i, x in enumerate(ids) if len(x) < 2]
    if empty:
        place = where[empty[0]] if where else f"text {empty[0] + 1}"
        raise InputDataError(
            f"{place}: no token to score (the text encodes to {len(ids[empty[0]])} token(s) and the first one is"
            " only context); give longer texts, or --add-bos if the model was trained with a BOS token first"
        )
    return score_token_ids(
        lm,
        ids,
        distribution=distribution,
        batch_tokens=batch_tokens,
        max_length=max_length,
        stride=stride,
        padding_side=padding_side,
        progress=progress,
        label=label,
    )
