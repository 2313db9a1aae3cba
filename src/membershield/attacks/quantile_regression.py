"""Quantile-regression attack: Bertran, Tang, Kearns, Morgenstern, Roth, Wu, "Scalable Membership Inference
Attacks via Quantile Regression", NeurIPS 2023.

A record is hard or easy for any model of its kind, and that difficulty is a property of the record. The
paper learns it from records alone: one regression model, fitted on records the target never trained on,
predicts from a record's features (and label) the score ``q(x)`` that a non-member would reach at level
``1 - α``; the record is called a member when the target's actual score exceeds it. That gives each
record its own threshold, as LiRA's reference models do, from a single regressor instead of models of the
target's architecture: an audit for users who cannot retrain their model.

* score: the target's scaled logit ``log(p_y / (1 - p_y))`` on the true label (the statistic LiRA models,
  close to the paper's hinge score and exact where ``p_y`` rounds to 1); the membership score is its
  excess over the predicted quantile, ``s(x) - q(x)``, higher = member. Thresholded at 0 it is the
  paper's test at false-positive rate ``α``; other thresholds rank records for the whole ROC curve.
* level: one regressor at a single level, as the paper does. The default is the median (``quantile=0.5``):
  on the digits table it ranked best of the levels 0.3-0.8 both in AUC and in TPR at 1% FPR (a deep
  random forest: 0.892 and 11.7% at the median, 0.657 and 8.0% at 0.8). An overfit model gives many
  non-members of easy records the capped probability 1 too, so an upper quantile reaches that cap and
  members there can no longer exceed it; the median stays below the cap for more records.
* regressor: scikit-learn's ``HistGradientBoostingRegressor(loss="quantile")``. It is the well-kept
  quantile learner that scales (histogram binning: linear in the rows, seconds on tens of thousands),
  fits non-linear difficulty without feature scaling, takes the label as a categorical feature and
  missing values as they are. ``QuantileRegressor`` is linear and solves a linear program whose cost grows
  much faster with the rows; ``GradientBoostingRegressor`` is exact but many times slower.

The regressor never scores a record it was fitted on; a fit that saw a record's own score would predict
that score back, and the record would look like the non-members it learnt from. It is fitted on the
population rows (non-members by construction) when there are at least ``MIN_POPULATION`` of them, else
on every row (audit records included; their membership is never read). Rows it is fitted on are
cross-fitted: they are split into ``folds`` folds and each fold is scored by a regressor fitted on the
others. The remaining rows (audit rows, when a population is given) get the mean of the fold regressors'
predictions. Identical records share a fold: a population that holds the non-members themselves (or
copies of any audit record) is cross-fitted with them, so no record is scored by a regressor fitted on
its copy. A disjoint population is stronger: fitted on audit records, the quantiles are pulled up by the
members among them.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from membershield.attacks.base import Attack, AttackInputs
from membershield.errors import ConfigError
from membershield.signals import scaled_logit

CITATION = (
    "Bertran, Tang, Kearns, Morgenstern, Roth, Wu. Scalable Membership Inference Attacks via Quantile"
    " Regression. NeurIPS 2023."
)
MIN_POPULATION = 100  # fewer population rows than this fit too coarse a regressor: every row is used
MAX_CATEGORICAL_CLASSES = 255  # the most categories HistGradientBoosting bins as one categorical feature
# Below this many rows a fit runs in one thread: more gain nothing measurable (960 rows: 0.7 s in one
# thread, 0.7 s in all, on an idle 2-core machine), and on a busy machine OpenMP's waiting threads made
# the same fit 25 times slower (45 s against 1.8 s).
THREADED_MIN_ROWS = 20_000


def fold_assignment(n_rows: int, folds: int, seed: int) -> np.ndarray:
    """Each row's fold in ``[0, folds)``: a random permutation dealt round, so folds differ by at most one row.

    >>> fold_of = fold_assignment(10, 3, seed=0)
    >>> sorted(np.bincount(fold_of).tolist()), bool((fold_assignment(10, 3, seed=0) == fold_of).all())
    ([3, 3, 4], True)
    """
    order = np.random.default_rng(seed).permutation(n_rows)
    fold_of = np.empty(n_rows, dtype=np.int64)
    fold_of[order] = np.arange(n_rows) % folds
    return fold_of


def design_matrix(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The regressor's input: the records' features with the label as a last column, and which columns
    are categorical (the label, when there are few enough classes to bin it as one).

    A record's difficulty depends on its label (the score is the confidence in that label), so the label is
    a feature. Infinite values become NaN, which the regressor treats as missing.

    >>> X, categorical = design_matrix(np.array([[1.0], [np.inf]]), np.array([0, 2]))
    >>> X.tolist(), categorical.tolist()
    ([[1.0, 0.0], [nan, 2.0]], [False, True])
    """
    values = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
    values = np.where(np.isinf(values), np.nan, values)
    labels = np.asarray(labels, dtype=np.int64)
    X = np.column_stack([values, labels.astype(np.float64)])
    categorical = np.zeros(X.shape[1], dtype=bool)
    categorical[-1] = labels.size > 0 and int(labels.max()) < MAX_CATEGORICAL_CLASSES
    return X, categorical


def record_groups(X: np.ndarray) -> np.ndarray:
    """Each row's group: rows with identical values (features and label; NaN equal to NaN) share one.

    >>> record_groups(np.array([[1.0, 0.0], [2.0, 1.0], [1.0, 0.0], [np.nan, 1.0], [np.nan, 1.0]])).tolist()
    [0, 1, 0, 2, 2]
    """
    if X.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    canonical = np.where(np.isnan(X), np.nan, X + 0.0)  # one bit pattern for NaN, and -0.0 read as 0.0
    rows = np.ascontiguousarray(canonical).view(np.dtype((np.void, canonical.dtype.itemsize * X.shape[1])))
    _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    # number the groups in order of first appearance, so that the numbering does not depend on the values
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inverse.ravel()].astype(np.int64)


def cross_fitted_quantile(
    X: np.ndarray,
    signal: np.ndarray,
    fit_rows: np.ndarray,
    regressor: HistGradientBoostingRegressor,
    folds: int,
    seed: int,
) -> np.ndarray:
    """The predicted quantile of every row, from regressors that never saw that row's own signal, nor that
    of any copy of the row.

    Identical rows (:func:`record_groups`) are kept in one fold, so a record whose copy is among
    ``fit_rows`` (a population that holds the non-members themselves) is predicted by the regressor
    fitted without that copy. The groups of ``fit_rows`` are split into ``folds`` folds; every row of a
    fold's groups is predicted by a copy of ``regressor`` fitted on the other folds, and every row with no
    copy among ``fit_rows`` by the mean of the ``folds`` copies.
    """
    group_of = record_groups(X)
    fit_groups = np.unique(group_of[fit_rows])
    fold_of_group = np.full(int(group_of.max(initial=-1)) + 1, -1, dtype=np.int64)
    fold_of_group[fit_groups] = fold_assignment(len(fit_groups), folds, seed)
    fold_of = fold_of_group[group_of]  # -1: no copy among the fit rows
    predicted = np.zeros(X.shape[0], dtype=np.float64)
    outside = fold_of < 0
    with threadpool_limits(1 if len(fit_rows) < THREADED_MIN_ROWS else None):
        for fold in range(folds):
            fitted_rows = fit_rows[fold_of[fit_rows] != fold]
            fitted = clone(regressor).fit(X[fitted_rows], signal[fitted_rows])
            held_out = fold_of == fold
            if held_out.any():
                predicted[held_out] = fitted.predict(X[held_out])
            if outside.any():
                predicted[outside] += fitted.predict(X[outside]) / folds
    return predicted


class QuantileRegressionAttack(Attack):
    name = "quantile-regression"
    title = "Quantile regression"
    citation = CITATION
    needs_features = True

    def __init__(self, *, quantile: float = 0.5, folds: int = 5, max_iter: int = 100) -> None:
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (folds, max_iter))
        if not (isinstance(quantile, int | float) and 0.0 < quantile < 1.0) or not whole or folds < 2 or max_iter < 1:
            raise ConfigError(
                f"attack '{self.name}': quantile must lie in (0, 1), folds be a whole number of at least 2 and"
                f" max_iter of at least 1; got quantile={quantile!r}, folds={folds!r}, max_iter={max_iter!r}"
            )
        self.quantile = quantile
        self.folds = folds
        self.max_iter = max_iter
        self.fitted_on: str | None = None

    def params(self) -> dict[str, object]:
        return {"quantile": self.quantile, "folds": self.folds, "max_iter": self.max_iter, "fitted_on": self.fitted_on}

    def _fit_rows(self, inputs: AttackInputs) -> np.ndarray:
        population = inputs.population_rows
        if population.size >= MIN_POPULATION:
            self.fitted_on = f"{population.size} population rows"
            return population
        n = inputs.labels.shape[0]
        if n < 2 * self.folds:
            raise ConfigError(
                f"attack '{self.name}' cross-fits on {self.folds} folds and has {n} records to fit on;"
                f" give at least {2 * self.folds} records (or --population)"
            )
        self.fitted_on = f"all {n} rows, cross-fitted" + (f" ({population.size} population)" if population.size else "")
        return np.arange(n)

    def _checked_features(self, inputs: AttackInputs) -> np.ndarray:
        if inputs.features is None:
            raise ConfigError(
                f"attack '{self.name}' learns from the records' features, and this audit passes none:"
                " run it in a model or recipe audit of a table (--train/--holdout or --data)"
            )
        features = np.asarray(inputs.features, dtype=np.float64)
        if features.shape[0] != inputs.labels.shape[0]:
            raise ConfigError(
                f"attack '{self.name}': the feature matrix has {features.shape[0]} rows and the audit"
                f" {inputs.labels.shape[0]}; give one feature row per record"
            )
        return features

    def score(self, inputs: AttackInputs) -> np.ndarray:
        X, categorical = design_matrix(self._checked_features(inputs), inputs.labels)
        signal = scaled_logit(inputs.target_logits, inputs.labels)
        regressor = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=self.quantile,
            max_iter=self.max_iter,
            categorical_features=categorical,
            random_state=inputs.seed,
        )
        fit_rows = self._fit_rows(inputs)
        if fit_rows.size < X.shape[0]:  # fitted on the population: say how many audit rows it holds copies of
            groups = record_groups(X)
            copied = int(np.isin(groups[: inputs.n_audit], groups[fit_rows]).sum())
            if copied:
                self.fitted_on += f"; {copied} audit rows with a copy among them cross-fitted with it"
        predicted = cross_fitted_quantile(X, signal, fit_rows, regressor, self.folds, inputs.seed)
        return signal - predicted
