"""ReCaLL: how much a text's likelihood changes when known non-member texts are put before it.

Xie et al. 2024, "ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods" (EMNLP). A
non-member prefix ``P`` lowers the log-likelihood of a member more than that of a non-member (the
prefix pulls the model away from the memorised continuation). The score is the paper's ratio
``LL(x | P) / LL(x)`` of average token log-likelihoods, here written with negative log-likelihoods
(the same ratio): ``nll(x | P) / nll(x)``, higher = more likely member.

The prefix is ``shots`` non-member texts, each followed by the tokenizer's end-of-text token (how
documents are separated in training), then the text's own encoding; the text's tokens are scored as in
the audit (every token after its first), so both likelihoods average over the same tokens. The prefix
texts come from ``--recall-prefix FILE``, or else from the audit's non-members in a seeded random order;
either way a text is never put behind itself (the next candidate stands in). When a text and the prefix
do not fit the scoring window, the prefix loses its oldest tokens; a text that fills the window alone
gets no prefix and scores 1 (counted in the params).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.attacks.querying import (
    QueryingTextAttack,
    TextModelQueries,
    check_count,
    existing_file,
    rows_of_texts,
)

_FLOOR = 1e-6  # mean NLLs this close to 0 are treated as 1e-6 to keep the ratio finite


def recall_ratio(conditional_nll: np.ndarray, nll: np.ndarray) -> np.ndarray:
    """``nll(x | P) / nll(x)`` per text (the ReCaLL score; higher = more likely member).

    >>> recall_ratio(np.array([0.9, 2.1]), np.array([0.3, 2.0])).round(2).tolist()
    [3.0, 1.05]
    """
    return np.maximum(conditional_nll, _FLOOR) / np.maximum(nll, _FLOOR)


def with_separators(pieces: list[list[int]], eos: int | None) -> list[int]:
    """The pieces concatenated, each ending with ``eos`` (when there is one and it does not already).

    >>> with_separators([[5, 6], [7, 0]], 0)
    [5, 6, 0, 7, 0]
    """
    out: list[int] = []
    for piece in pieces:
        out += piece
        if eos is not None and (not piece or piece[-1] != eos):
            out.append(eos)
    return out


class ReCaLLAttack(QueryingTextAttack):
    name = "recall"
    title = "ReCaLL (non-member prefix)"
    citation = "Xie et al. ReCaLL: Membership Inference via Relative Conditional Log-Likelihoods. EMNLP 2024."

    def __init__(self, *, shots: int = 4, prefix: str | None = None, text_field: str = "text") -> None:
        self.shots = check_count(shots, "--recall-shots")
        self.prefix = existing_file(prefix, "--recall-prefix")
        self.text_field = text_field
        self._stats: dict[str, object] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        return cls(
            shots=options.get("recall_shots", 4),
            prefix=options.get("recall_prefix"),
            text_field=options.get("text_field", "text"),
        )

    def _candidates(self, queries: TextModelQueries) -> tuple[list[list[int]], list[int]]:
        """Prefix candidates (token ids, in order) and the audit row each one is (-1: none)."""
        if self.prefix is not None:
            from membershield.text.data import load_jsonl

            texts = load_jsonl(self.prefix, self.text_field).texts[: self.shots + 1]
            return queries.encode(texts), rows_of_texts(texts, queries.texts)
        order = np.random.default_rng(queries.seed).permutation(queries.nonmember_rows)[: self.shots + 1]
        return [queries.ids[i] for i in order], [int(i) for i in order]

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        queries = self.queries_of(inputs)
        candidates, rows = self._candidates(queries)
        eos = queries.lm.tokenizer.eos_token_id
        sequences, starts, cut, bare = [], [], 0, 0
        for i, ids in enumerate(queries.ids):
            chosen = [c for c, row in zip(candidates, rows, strict=True) if row != i][: self.shots]
            prefix = with_separators(chosen, eos)
            room = max(queries.window - len(ids), 0)
            if len(prefix) > room:
                cut += 1
                prefix = prefix[len(prefix) - room :] if room else []
            bare += not prefix
            sequences.append(prefix + ids)
            starts.append(len(prefix))
        scored = queries.score_ids(sequences, "scoring texts behind the ReCaLL prefix")
        conditional = np.array(
            [-lp[start:].mean() for lp, start in zip(scored.logprob, starts, strict=True)], dtype=np.float64
        )
        self._stats = {
            "prefix_texts": min(self.shots, len(candidates)),
            "prefix_tokens_max": int(max(starts)),
            "texts_with_shortened_prefix": cut,
            "texts_without_prefix": bare,
        }
        return recall_ratio(conditional, inputs.target.mean_nll())

    def params(self) -> dict[str, object]:
        source = self.prefix or "the audit's non-members (a text never behind itself)"
        return {"shots": self.shots, "prefix_source": source, **self._stats}
