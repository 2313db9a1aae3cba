"""DOMIAS: membership from where the synthetic data are denser than the real data (van Breugel et al. 2023,
"Membership Inference Attacks against Synthetic Data through Overfitting Detection", AISTATS).

A generator that overfits puts more synthetic mass near its training records than the real distribution
has there. The attacker holds the synthetic records and real reference records from the same
distribution, and scores a record by the log ratio of the two densities, ``log p_syn(x) − log p_ref(x)``:
the ratio, not the synthetic density alone, so records in dense regions are not mistaken for members.

Both densities are isotropic Gaussian kernel estimates in the audit's encoded space (the paper's KDE
variant), each bandwidth chosen by leave-one-out likelihood on its own records. The reference records are
the population and the non-members; a non-member's reference density leaves the non-member itself out,
so no record's score reads its own copy.
"""

from __future__ import annotations

import numpy as np

from membershield.synthetic.attacks.base import SyntheticAttack, SyntheticAttackInputs
from membershield.synthetic.encode import kde_log_density, select_bandwidth


class DomiasAttack(SyntheticAttack):
    name = "domias"
    title = "DOMIAS density ratio (kernel density estimates)"
    citation = "van Breugel et al. 2023 (AISTATS)"
    access = "synthetic records + real reference records"
    threat_model = (
        "holds the synthetic records and real records from the same population, and flags a record where the"
        " synthetic data are denser than the real data"
    )

    def __init__(self, *, bandwidth: float | None = None) -> None:
        self.bandwidth = bandwidth  # None: chosen by leave-one-out likelihood, per density

    def score(self, inputs: SyntheticAttackInputs) -> np.ndarray:
        records, synthetic = inputs.audit_points, inputs.synthetic_points
        reference = np.concatenate([inputs.population_points, records[inputs.n_members :]])
        # Each non-member's own row in the reference set is left out of its reference density.
        own = np.full(len(records), -1, dtype=np.int64)
        own[inputs.n_members :] = len(inputs.population_points) + np.arange(len(records) - inputs.n_members)
        h_syn = self.bandwidth or select_bandwidth(synthetic, inputs.seed)
        h_ref = self.bandwidth or select_bandwidth(reference, inputs.seed)
        self.chosen = {"synthetic": h_syn, "reference": h_ref, "n_reference": len(reference)}
        return kde_log_density(records, synthetic, h_syn) - kde_log_density(records, reference, h_ref, exclude=own)

    def params(self) -> dict[str, object]:
        return {"bandwidth": self.bandwidth, **getattr(self, "chosen", {})}
