"""Text attacks that ask the model more than the audit's shared per-token scores.

ReCaLL scores each text again behind a prefix, the neighbourhood attack scores perturbed copies, DC-PDD
reads the token ids of each text and of a reference corpus. The audit hands such an attack a
:class:`TextModelQueries` (inside :class:`QueryingInputs`); what it asks costs forward passes, so these
attacks run only when named in ``--attacks``. Like every attack they return one score per text, higher =
more likely a member.

Known non-members (the audit's non-member rows) may calibrate an attack (a ReCaLL prefix, DC-PDD token
frequencies), but a text never calibrates its own score: each attack leaves it out of what it is
compared with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from membershield.errors import ConfigError, InputDataError
from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.scoring import TokenScores, batch_token_budget, score_token_ids

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TextModelQueries:
    """The target model, the audit texts as it encodes them, which rows are known non-members, and how
    the audit scores (batch budget, window, stride), for attacks that query the model themselves."""

    lm: Any  # membershield.text.model.LanguageModel
    ids: list[list[int]]  # each audit text's token ids (the first one is context, never scored)
    nonmember_rows: np.ndarray  # rows of the audit texts known to be non-members
    texts: list[str]
    text_field: str = "text"
    batch_tokens: int = 8192
    max_length: int | None = None
    stride: int | None = None
    seed: int = 0
    progress: ProgressCallback | None = None

    @property
    def window(self) -> int:
        """The longest sequence scored in one forward pass."""
        return min(self.max_length or self.lm.max_positions, self.lm.max_positions)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.lm.encode(texts)

    def score_ids(self, ids: list[list[int]], label: str) -> TokenScores:
        """Per-token log-probabilities of token-id sequences, scored as the audit scores its texts."""
        return score_token_ids(
            self.lm,
            ids,
            distribution=False,
            batch_tokens=self.batch_tokens,
            max_length=self.max_length,
            stride=self.stride,
            progress=self.progress,
            label=label,
        )

    def top_next_tokens(
        self, k: int, label: str = "next-token candidates"
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text, ``(n - 1, k)`` int64 and float64: the model's ``k`` likeliest tokens at each scored
        position ``t`` (row ``t - 1``) given the text's tokens before ``t``, and their log-probabilities;
        rows past the window hold -1 and -inf."""
        import torch

        lm, window = self.lm, self.window
        out = [np.full((max(len(x) - 1, 0), k), -1, dtype=np.int64) for x in self.ids]
        logprob = [np.full((max(len(x) - 1, 0), k), -np.inf) for x in self.ids]
        rows = sorted((i for i, x in enumerate(self.ids) if len(x) >= 2), key=lambda i: -min(len(self.ids[i]), window))
        budget = batch_token_budget(self.batch_tokens, lm.vocab_size)
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        report = self.progress or (lambda stage, done, total: None)
        done = 0
        with torch.inference_mode():
            while done < len(rows):
                longest = min(len(self.ids[rows[done]]), window)
                batch = rows[done : done + max(1, budget // longest)]
                input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, i in enumerate(batch):  # right padding: real tokens keep positions 0, 1, ...
                    chunk = self.ids[i][:window]
                    input_ids[row, : len(chunk)] = torch.tensor(chunk, dtype=torch.long)
                    mask[row, : len(chunk)] = 1
                logits = lm.model(input_ids=input_ids.to(lm.device), attention_mask=mask.to(lm.device)).logits
                top = torch.log_softmax(logits[:, :-1].float(), dim=-1).topk(k, dim=-1)
                ids, values = top.indices.cpu().numpy(), top.values.double().cpu().numpy()
                for row, i in enumerate(batch):
                    n = min(len(self.ids[i]), window) - 1
                    out[i][:n], logprob[i][:n] = ids[row, :n], values[row, :n]
                done += len(batch)
                report(label, done, len(rows))
        return out, logprob


@dataclass(frozen=True)
class QueryingInputs(TextAttackInputs):
    """The shared scores plus the model itself, for the attacks that query it."""

    queries: TextModelQueries | None = None


class QueryingTextAttack(TextAttack):
    """A text attack that queries the model beyond the shared scores (only run when named)."""

    queries_model: ClassVar[bool] = True

    def queries_of(self, inputs: TextAttackInputs) -> TextModelQueries:
        queries = getattr(inputs, "queries", None)
        if queries is None:
            raise ConfigError(f"attack '{self.name}' queries the model itself; run it through membershield audit-text")
        return queries


def check_count(value: int, flag: str, least: int = 1) -> int:
    """An integer option that must be at least ``least``.

    >>> check_count(3, "--recall-shots")
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{flag} must be a whole number of at least {least}, got {value!r}")
    return value


def existing_file(path: str | None, flag: str) -> str | None:
    """``path`` when it names a file (or None); a one-line error naming the flag otherwise."""
    if path is not None and not Path(path).is_file():
        raise InputDataError(f"{flag} {path}: not found (give a JSONL file with one text object per line)")
    return path


def rows_of_texts(texts: list[str], audit_texts: list[str]) -> list[int]:
    """For each text, the audit row holding the same text, or -1: what a text must not be compared with.

    >>> rows_of_texts(["b", "z"], ["a", "b"])
    [1, -1]
    """
    where = {t: i for i, t in enumerate(audit_texts)}
    return [where.get(t, -1) for t in texts]
