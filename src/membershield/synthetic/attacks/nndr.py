"""Nearest-neighbour distance ratio (NNDR): a record whose closest synthetic record is much closer than its
second closest has a synthetic record made from it, not merely a dense neighbourhood.

The attacker holds only the synthetic records; the ratio of the distances to the closest and the second
closest synthetic record (Lowe 2004's ratio test for matching, used to judge synthetic tables' privacy by
Zhao et al. 2021, "CTAB-GAN: Effective Table Data Synthesizing", ACML) is small where one synthetic record
copies the candidate and near 1 in a crowd, so it separates copies from common records that DCR also
finds close. The holdout is the baseline.
"""

from __future__ import annotations

import numpy as np

from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs


class NndrAttack(SyntheticAttack):
    name = "nndr"
    title = "Nearest-neighbour distance ratio"
    citation = "Zhao et al. 2021 (CTAB-GAN, ACML); Lowe 2004 (IJCV)"
    threat_model = (
        "holds the synthetic records only, and flags a record whose closest synthetic record is much closer"
        " than its second closest"
    )

    def __init__(self, *, floor: float = 1e-9) -> None:
        self.floor = floor  # distances below it count as it: two exact copies give a ratio of 1, not 0/0

    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        nearest = np.maximum(inputs.synthetic_neighbours(2), self.floor)
        second = np.where(np.isfinite(nearest[:, 1]), nearest[:, 1], nearest[:, 0])  # one synthetic record only
        return -(nearest[:, 0] / second)
