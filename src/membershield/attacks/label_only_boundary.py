"""Label-only boundary distance (Choquette-Choo, Tramèr, Carlini, Papernot, "Label-Only Membership
Inference Attacks", ICML 2021, §5 "decision boundary distance"): members sit further from the decision
boundary, so the smallest perturbation that changes the target's label is larger for them.

The distance is found from labels alone by a decision-based search in the manner of HopSkipJump (Chen,
Jordan, Wainwright, IEEE S&P 2020; :mod:`membershield.boundary_search`), with at most
``queries_per_record`` records sent to the target per record, all records searched together. It is the
L2 norm of the perturbation in units of each numeric feature's standard deviation; other features are not
perturbed. A wrong clean prediction scores lowest, as in ``label-only-noise``.

Some records sit near a boundary under any model, and some classes further from one than others, whatever
the membership. The log distance is calibrated for that:

* with reference models (the audit's ``--references``, where the target gives a recipe): each reference
  is trained again and searched with the same budget (queries to the references, not to the target). A
  record's log distance is compared with its mean log distance under the references that did not train on
  it and label it correctly (offline, as LiRA compares the scaled logit: Carlini et al. 2022), in units of
  its class's spread of those log distances around the records' means: how many class standard deviations
  the target puts it further from the boundary than models that never saw it. A record with no such
  reference is compared with its class's median under the references.
* without references: each log distance is centred on the median log distance of the population records
  of its class (which the target never saw); a class with fewer than ``MIN_CLASS_REFERENCE`` correctly
  labelled population records is centred on all its records instead (membership unknown, so members and
  non-members alike).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from membershield.attacks.base import Attack, AttackInputs
from membershield.attacks.label_only import CITATION as LABEL_ONLY_CITATION
from membershield.errors import ConfigError
from membershield.signals import is_correct

CITATION = (
    f"{LABEL_ONLY_CITATION} Search: Chen, Jordan, Wainwright. HopSkipJumpAttack: A Query-Efficient Decision-Based"
    " Attack. IEEE S&P 2020."
)
# On the digits MLP of bench/label_only_boundary.py the AUC rose from 25 to 100 queries per record and
# gained little beyond (bench/RESULTS.md, "Label-only boundary distance").
BOUNDARY_QUERIES = 100
MIN_CLASS_REFERENCE = 10
SPREAD_FLOOR = 1e-6  # a class whose log distances do not vary under the references


def log_distances(distance: np.ndarray, usable: np.ndarray, farthest: float) -> np.ndarray:
    """``log`` of boundary distances where ``usable``; ``inf`` (nothing found within the budget) becomes
    ``farthest``, and unusable rows 0 (they are scored apart).

    >>> log_distances(np.array([1.0, np.inf, 0.0]), np.array([True, True, False]), np.e).tolist()
    [0.0, 1.0, 0.0]
    """
    return np.log(np.where(usable, np.where(np.isfinite(distance), distance, farthest), 1.0))


class LabelOnlyBoundary(Attack):
    name = "label-only-boundary"
    title = "Label-only (boundary distance)"
    citation = CITATION
    access = "label-only"
    needs_queries: ClassVar[bool] = True
    by_name_only: ClassVar[bool] = True  # queries_per_record x records: spent only when asked for
    uses_references: ClassVar[bool] = True  # calibrates on them where there are some

    def __init__(self, *, queries_per_record: int = BOUNDARY_QUERIES) -> None:
        if isinstance(queries_per_record, bool) or not isinstance(queries_per_record, int) or queries_per_record < 1:
            raise ConfigError(
                f"label-only-boundary needs queries_per_record (--label-only-queries) of 1 or more,"
                f" got {queries_per_record!r}"
            )
        self.queries_per_record = queries_per_record
        self.calibration: str | None = None

    def params(self) -> dict[str, object]:
        return {"queries_per_record": self.queries_per_record, "calibration": self.calibration}

    def score(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.queries is None:
            raise ConfigError("label-only-boundary needs the target's answers on perturbed records")
        budget = {"queries_per_record": self.queries_per_record, "seed": inputs.seed}
        distance = inputs.queries.boundary_distance(**budget)
        correct = is_correct(inputs.target_logits, inputs.labels) & (distance > 0)
        reference = np.zeros((0, distance.shape[0]))
        if inputs.n_references:
            reference = inputs.queries.reference_boundary_distance(**budget)
            if reference.shape != inputs.reference_in.shape:
                raise ConfigError(
                    f"label-only-boundary got boundary distances of {reference.shape[0]} reference models for"
                    f" {inputs.n_references}: the references must be trainable again (a recipe)"
                )
        found = np.concatenate([distance[correct], reference[reference > 0]])
        found = found[np.isfinite(found)]
        # Nothing labelled otherwise within the budget: at least as far as every boundary found.
        farthest = 2.0 * found.max() if found.size else 1.0
        values = log_distances(distance, correct, farthest)
        if reference.shape[0]:
            usable = ~inputs.reference_in & (reference > 0)
            reference_values = log_distances(reference, reference > 0, farthest)
            calibrated, self.calibration = calibrate_on_references(
                values, inputs.labels, reference_values, usable, inputs.population_rows, correct
            )
        else:
            calibrated, self.calibration = centre_by_class(values, inputs.labels, correct, inputs.population_rows)
        lowest = calibrated[correct].min() - 1.0 if correct.any() else 0.0
        return np.where(correct, calibrated, lowest).astype(np.float64)


def _class_fit(reference: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, float] | None:
    """One class's per-record mean of its usable reference values (their median over the class for records
    with none) and its spread around the records' means; None where it has fewer than 2 usable values."""
    count = usable.sum(axis=0)
    if count.sum() < 2:
        return None
    median = float(np.median(reference[usable]))
    mean = np.where(count > 0, np.where(usable, reference, 0.0).sum(axis=0) / np.maximum(count, 1), median)
    repeated = count >= 2  # the spread within records, where a record has two values to show it
    if repeated.any():
        squared = np.where(usable[:, repeated], (reference[:, repeated] - mean[repeated]) ** 2, 0.0).sum()
        spread = float(np.sqrt(squared / (count[repeated] - 1).sum()))
    else:
        spread = float(reference[usable].std())
    return mean, max(spread, SPREAD_FLOOR)


def calibrate_on_references(
    values: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    usable: np.ndarray,
    population: np.ndarray,
    correct: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Per row, how many of its class's standard deviations ``values`` lies above the row's mean under the
    references where ``usable[k, i]`` (OUT, labelled correctly), and how the rows were calibrated. A class
    with fewer than 2 usable reference values is centred as without references (:func:`centre_by_class`)
    and divided by the mean spread of the other classes.

    Record 0 sits further from the boundary than its OUT references put it, record 1 nearer:

    >>> reference = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]])
    >>> usable = np.array([[True, True, False], [True, True, False]])
    >>> z, how = calibrate_on_references(
    ...     np.array([4.0, 1.0, 9.0]), np.array([0, 0, 1]), reference, usable, np.arange(3, 3), np.ones(3, bool))
    >>> z.round(2).tolist(), how
    ([1.41, -1.41, 0.0], 'per record on 2 references, spread per class (1 of 2 classes as without references)')
    """
    out = values.copy()
    spreads: dict[int, float] = {}
    unresolved = []
    classes = np.unique(labels)
    for c in classes:
        rows = labels == c
        fit = _class_fit(reference[:, rows], usable[:, rows])
        if fit is None:
            unresolved.append(c)
            continue
        mean, spread = fit
        out[rows] = (values[rows] - mean) / spread
        spreads[int(c)] = spread
    how = f"per record on {reference.shape[0]} references, spread per class"
    if not unresolved:
        return out, how
    fallback = np.isin(labels, unresolved)
    centred, _ = centre_by_class(values, labels, correct & fallback, population)
    scale = float(np.mean(list(spreads.values()))) if spreads else 1.0
    out[fallback] = centred[fallback] / scale
    return out, how + f" ({len(unresolved)} of {len(classes)} classes as without references)"


def centre_by_class(
    values: np.ndarray, labels: np.ndarray, usable: np.ndarray, population: np.ndarray
) -> tuple[np.ndarray, str]:
    """``values`` less, per class, the median over the class's usable population rows (all its usable rows
    where the population has fewer than ``MIN_CLASS_REFERENCE``), and how the classes were centred.

    >>> values = np.array([5.0, 1.0, 6.0, 2.0, 4.0, 0.0])
    >>> centred, how = centre_by_class(values, np.array([0, 1, 0, 1, 0, 1]), np.ones(6, bool), np.arange(4, 6))
    >>> centred.tolist(), how
    ([0.0, 0.0, 1.0, 1.0, -1.0, -1.0], 'per class, on all records (population too small)')
    """
    in_population = np.zeros(len(values), dtype=bool)
    in_population[population] = True
    out = values.copy()
    fell_back = 0
    classes = np.unique(labels)
    for c in classes:
        of_class = (labels == c) & usable
        reference = of_class & in_population
        if reference.sum() < MIN_CLASS_REFERENCE:
            reference, fell_back = of_class, fell_back + 1
        if reference.any():
            out[labels == c] -= np.median(values[reference])
    if not fell_back:
        return out, "per class, on the population"
    if fell_back == len(classes):
        return out, "per class, on all records (population too small)"
    return out, f"per class, on the population ({fell_back} of {len(classes)} classes on all records: too few)"
