"""White-box gradient norm (Nasr, Shokri, Houmansadr, "Comprehensive Privacy Analysis of Deep Learning",
IEEE S&P 2019, §IV: the gradient of the loss with respect to the parameters is the strongest white-box
feature; a training record's is small, since training drove its loss towards a stationary point).

Each record's score is from the L2 norm, over every trainable parameter, of the gradient of its own
cross-entropy loss (per-record gradients with ``torch.func``: :mod:`membershield.signals_whitebox`).

Some records have large gradients under any model (hard or atypical ones), so where there are reference
models the log norm is compared per record with the log norms of the references that did not train on it,
as offline LiRA compares the scaled logit (Carlini et al. 2022, §IV-D; Gaussian fits and their variance
choice shared with :mod:`.lira`): the score is how many standard deviations the target's log norm lies
*below* theirs. The references are the audit's own (``--references``, trained by the recipe), trained
again for their gradients. Without references the score is the negative log norm, a global threshold.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.attacks.lira import choose_variance, fit_gaussians
from membershield.errors import ConfigError

CITATION = (
    "Nasr, Shokri, Houmansadr. Comprehensive Privacy Analysis of Deep Learning: Passive and Active White-box"
    " Inference Attacks against Centralized and Federated Learning. IEEE S&P 2019."
)
# Below float64's smallest normal: a gradient exactly 0 gets a finite log, lower than every other.
NORM_FLOOR = 1e-300


def log_norms(norms: np.ndarray) -> np.ndarray:
    """``log`` of gradient norms, an exact 0 floored so that it stays finite (and lowest).

    >>> log_norms(np.array([1.0, 0.0])).round(1).tolist()
    [0.0, -690.8]
    """
    return np.log(np.maximum(norms, NORM_FLOOR))


def below_out_references(
    value: np.ndarray, reference: np.ndarray, reference_in: np.ndarray, variance: str = "auto"
) -> tuple[np.ndarray, str]:
    """Per row, how many standard deviations ``value`` lies below the row's values under the references that
    did not train on it (``reference[k, i]`` where not ``reference_in[k, i]``), and the variance used.

    >>> reference = np.array([[1.0, 5.0], [3.0, 7.0]])
    >>> z, how = below_out_references(np.array([0.0, 8.0]), reference, np.zeros((2, 2), bool))
    >>> z.round(2).tolist(), how
    ([1.41, -1.41], 'pooled')
    """
    out = ~reference_in
    used = choose_variance(variance, out)
    fit = fit_gaussians(reference, out, used)
    return (fit.mean - value) / fit.std, used


class GradientNormAttack(Attack):
    name = "gradient-norm"
    title = "Gradient norm (white-box)"
    citation = CITATION
    access = "white-box"
    # reads the live model (a recipe's target trained again for it) through inputs.queries
    needs_queries: ClassVar[bool] = True
    by_name_only: ClassVar[bool] = True  # trains the target and its references again
    uses_references: ClassVar[bool] = True

    def __init__(self) -> None:
        self.calibration: str | None = None

    def params(self) -> dict[str, object]:
        return {"calibration": self.calibration}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.queries is None:
            raise ConfigError("gradient-norm needs the model's weights: give a PyTorch recipe, --model f.py:function")
        target = log_norms(inputs.queries.gradient_norms())
        if not inputs.n_references:
            self.calibration = "none (no reference models): the negative log gradient norm"
            return -target
        reference = log_norms(inputs.queries.reference_gradient_norms())
        if reference.shape != inputs.reference_in.shape:
            raise ConfigError(
                f"gradient-norm got gradients of {reference.shape[0]} reference models for"
                f" {inputs.n_references}: the references must be trainable again (a recipe)"
            )
        scores, variance = below_out_references(target, reference, inputs.reference_in)
        self.calibration = f"per record, on the {inputs.n_references} references' OUT log norms ({variance} variance)"
        return scores.astype(np.float64)
