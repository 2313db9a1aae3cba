"""Distance to closest record (DCR): a record with a synthetic record close to it was probably a member.

The attacker holds only the released synthetic records and a candidate record, and flags the candidate
when some synthetic record lies closer to it than synthetic records usually lie to unseen records (the
full black-box attack of Chen et al. 2020, "GAN-Leaks: A Taxonomy of Membership Inference Attacks
against Generative Models", CCS; DCR as a privacy measure of synthetic tables: Park et al. 2018, "Data
Synthesis based on Generative Adversarial Networks", VLDB). The holdout is the baseline: without
memorisation, members are no closer to the synthetic records than non-members are, and the AUC is 0.5.
"""

from __future__ import annotations

import numpy as np

from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs


class DcrAttack(SyntheticAttack):
    name = "dcr"
    title = "Distance to closest synthetic record"
    citation = "Chen et al. 2020 (GAN-Leaks, CCS); Park et al. 2018 (VLDB)"
    threat_model = (
        "holds the synthetic records only, and flags a record that has a synthetic record unusually close to it"
    )

    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        return -inputs.synthetic_neighbours(1)[:, 0]
