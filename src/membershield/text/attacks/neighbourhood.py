"""Neighbourhood attack: a member is much likelier than texts a token away from it.

Mattern et al. 2023, "Membership Inference Attacks against Language Models via Neighbourhood
Comparison" (Findings of ACL). The paper compares a text's loss with the mean loss of neighbours made
by swapping words for a masked language model's suggestions; a memorised text sits in a sharp dip
that its neighbours do not share, while a merely easy text has easy neighbours too. The score is
``mean nll(neighbours) - nll(x)``, higher = more likely member.

No second model is downloaded: the audited model proposes the replacements itself. At a scored position
``t`` it sees the text's tokens before ``t``, and the likeliest token other than ``x_t`` is the
candidate there (the greedy replacement of a causal model, which sees only the left context where a
masked model sees both). As in the paper, a neighbour differs from the text in one token, and the
neighbours kept are the most plausible ones: the ``neighbours`` positions whose candidate the model
finds likeliest. Neighbours are scored on the same tokens as the text (every token after its first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from membershield.text.attacks.base import TextAttack, TextAttackInputs
from membershield.text.attacks.querying import QueryingTextAttack, check_count


def greedy_alternatives(
    tokens: np.ndarray, top2: np.ndarray, top2_logprob: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the likeliest token other than the one there and its log-probability (-1 and -inf
    where there is no candidate).

    ``tokens`` are the scored tokens ``x_1..x_{n-1}``, ``top2`` the model's two likeliest tokens at each.

    >>> ids, lp = greedy_alternatives(np.array([4, 9, 2]), np.array([[4, 7], [3, 9], [-1, -1]]),
    ...                               np.log([[0.9, 0.05], [0.6, 0.3], [1.0, 1.0]]))
    >>> ids.tolist(), np.exp(lp).round(2).tolist()
    ([7, 3, -1], [0.05, 0.6, 0.0])
    """
    other = top2[:, 0] == tokens
    alternative = np.where(other, top2[:, 1], top2[:, 0])
    logprob = np.where(other, top2_logprob[:, 1], top2_logprob[:, 0])
    return alternative, np.where(alternative >= 0, logprob, -np.inf)


def make_neighbours(ids: list[int], alternatives: np.ndarray, logprob: np.ndarray, count: int) -> list[list[int]]:
    """Up to ``count`` copies of ``ids``, each with one scored token replaced by its alternative: the
    positions whose alternative is likeliest (ties: the earlier position first).

    >>> make_neighbours([1, 2, 3, 4], np.array([5, 6, -1]), np.array([-2.3, -1.2, -np.inf]), 5)
    [[1, 2, 6, 4], [1, 5, 3, 4]]
    """
    usable = np.flatnonzero(alternatives >= 0)
    chosen = usable[np.argsort(-logprob[usable], kind="stable")][:count]
    out = []
    for k in chosen:
        neighbour = list(ids)
        neighbour[int(k) + 1] = int(alternatives[k])  # alternatives[t - 1] is for token position t
        out.append(neighbour)
    return out


def neighbourhood_gap(neighbour_nll: np.ndarray, owner: np.ndarray, nll: np.ndarray) -> np.ndarray:
    """Per text, the mean NLL of its neighbours (``owner`` says whose each is) minus its own; 0 without any.

    >>> neighbourhood_gap(np.array([2.0, 3.0, 1.5]), np.array([0, 0, 1]), np.array([0.5, 1.0, 9.0])).tolist()
    [2.0, 0.5, 0.0]
    """
    total = np.bincount(owner, weights=neighbour_nll, minlength=nll.size)
    count = np.bincount(owner, minlength=nll.size)
    return np.where(count > 0, total / np.maximum(count, 1) - nll, 0.0)


class NeighbourhoodAttack(QueryingTextAttack):
    name = "neighbourhood"
    title = "neighbourhood comparison"
    citation = (
        "Mattern et al. Membership Inference Attacks against Language Models via Neighbourhood Comparison."
        " Findings of ACL 2023."
    )

    def __init__(self, *, neighbours: int = 10) -> None:
        self.neighbours = check_count(neighbours, "--neighbours")
        self._stats: dict[str, object] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TextAttack:
        return cls(neighbours=options.get("neighbours", 10))

    def score(self, inputs: TextAttackInputs) -> np.ndarray:
        queries = self.queries_of(inputs)
        top2, top2_logprob = queries.top_next_tokens(2, "neighbour candidates")
        sequences: list[list[int]] = []
        owner: list[int] = []
        for i, ids in enumerate(queries.ids):
            tokens = np.asarray(ids[1:], dtype=np.int64)
            alternatives, logprob = greedy_alternatives(tokens, top2[i], top2_logprob[i])
            made = make_neighbours(ids, alternatives, logprob, self.neighbours)
            sequences += made
            owner += [i] * len(made)
        nll = inputs.target.mean_nll()
        if not sequences:
            return np.zeros_like(nll)
        scored = queries.score_ids(sequences, "scoring neighbours")
        self._stats = {"neighbours_scored": len(sequences), "texts_without_neighbours": int(nll.size - len(set(owner)))}
        return neighbourhood_gap(scored.mean_nll(), np.asarray(owner, dtype=np.int64), nll)

    def params(self) -> dict[str, object]:
        return {"neighbours": self.neighbours, "replacements": "the model's likeliest other token", **self._stats}
