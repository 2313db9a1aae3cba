"""DC-PDD: token probabilities calibrated by how frequent each token is in a reference corpus.

Zhang et al. 2024, "Pretraining Data Detection for Large Language Models: A Divergence-based
Calibration Method" (EMNLP). A member's tokens are likely under the model even where they are rare in
ordinary text. For each scored token ``x_i`` (every token after the first, as in the audit):

- ``p_i = p(x_i | x_<i)`` under the model,
- ``f_i = (count(x_i) + 1) / (N + |V|)``, its Laplace-smoothed frequency in the reference corpus
  (``N`` tokens, vocabulary ``|V|``),
- ``α_i = min(-p_i · log f_i, a)``, capped at ``a`` so no single token dominates (the paper's a = 0.01);

the score is the mean of ``α_i`` over the first occurrence of each distinct token of the text, higher =
more likely member.

The reference corpus is ``--reference-corpus FILE`` (JSONL, encoded with the model's tokenizer), or else
the audit's non-members. Each text's own tokens are taken out of the counts before it is scored (for a
text that is in the corpus), so no text is calibrated on itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from membershield.errors import ConfigError, InputDataError
from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.attacks.querying import QueryingTextAttack, existing_file, rows_of_texts


def first_occurrences(tokens: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct token, in order.

    >>> first_occurrences(np.array([7, 3, 7, 9, 3])).tolist()
    [0, 1, 3]
    """
    _, first = np.unique(tokens, return_index=True)
    return np.sort(first)


def dc_pdd_score(tokens: np.ndarray, logprob: np.ndarray, log_freq: np.ndarray, cap: float) -> float:
    """Mean over first occurrences of ``min(-p · log f, cap)``; ``log_freq`` is per token of ``tokens``.

    >>> round(dc_pdd_score(np.array([1, 2, 1]), np.log([0.5, 1.0, 0.9]), np.log([0.1, 0.01, 0.1]), 10.0), 3)
    2.878
    """
    first = first_occurrences(tokens)
    alpha = np.exp(logprob[first]) * -log_freq[first]
    return float(np.minimum(alpha, cap).mean())


class DCPDDAttack(QueryingTextAttack):
    name = "dc-pdd"
    title = "DC-PDD (token-frequency calibration)"
    citation = (
        "Zhang et al. Pretraining Data Detection for Large Language Models: A Divergence-based Calibration"
        " Method. EMNLP 2024."
    )

    def __init__(self, *, cap: float = 0.01, corpus: str | None = None, text_field: str = "text") -> None:
        if not cap > 0:
            raise ConfigError(f"--dc-pdd-cap must be a positive number (the paper uses 0.01), got {cap}")
        self.cap = float(cap)
        self.corpus = existing_file(corpus, "--reference-corpus")
        self.text_field = text_field
        self._stats: dict[str, object] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        return cls(
            cap=options.get("dc_pdd_cap", 0.01),
            corpus=options.get("reference_corpus"),
            text_field=options.get("text_field", "text"),
        )

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        queries = self.queries_of(inputs)
        vocab = int(queries.lm.vocab_size)
        if self.corpus is not None:
            from membershield.text.data import load_jsonl

            texts = load_jsonl(self.corpus, self.text_field).texts
            corpus_ids, rows = queries.encode(texts), rows_of_texts(texts, queries.texts)
        else:
            rows = [int(i) for i in queries.nonmember_rows]
            corpus_ids = [queries.ids[i] for i in rows]
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in corpus_ids])
        if flat.size and int(flat.max()) >= vocab:
            raise InputDataError(f"{self.corpus}: token ids beyond the model's vocabulary of {vocab}")
        counts = np.bincount(flat, minlength=vocab).astype(np.float64)
        own: dict[int, list[int]] = {}
        for ids, row in zip(corpus_ids, rows, strict=True):
            if row >= 0:
                own.setdefault(row, []).extend(ids)
        scores = np.zeros(len(queries.ids))
        for i, (ids, logprob) in enumerate(zip(queries.ids, inputs.target.logprob, strict=True)):
            tokens = np.asarray(ids[1:], dtype=np.int64)
            mine = np.asarray(own.get(i, []), dtype=np.int64)
            left_out = np.bincount(mine, minlength=vocab)[tokens] if mine.size else 0.0
            log_freq = np.log(counts[tokens] - left_out + 1.0) - np.log(flat.size - mine.size + vocab)
            scores[i] = dc_pdd_score(tokens, logprob, log_freq, self.cap)
        self._stats = {"corpus_tokens": int(flat.size), "corpus_texts": len(corpus_ids)}
        return scores

    def params(self) -> dict[str, object]:
        source = self.corpus or "the audit's non-members (each text's own tokens left out)"
        return {"cap": self.cap, "reference_corpus": source, **self._stats}
