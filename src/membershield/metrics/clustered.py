"""Intervals for pooled trials that share records and models: the two-way (pigeonhole) bootstrap.

A recipe audit scores every record under every model: ``K × n`` trials, each a (model, record) pair with
its score and whether that model trained on that record. Trials of one record are correlated (an
atypical record stands out under every model) and so are trials of one model (one run overfits more),
so a binomial interval on ``K × n`` independent trials would be far too narrow. Here records and models
are resampled independently, and each trial's weight in a resample is the product of its record's and
its model's multiplicity (Owen 2007, "The pigeonhole bootstrap", Annals of Applied Statistics 1(2);
McCullagh 2000, "Resampling and exchangeable arrays", Bernoulli 6(2)). Its variance slightly
over-states that of a crossed design (Owen 2007), so the intervals err on the wide side.

Every statistic is recomputed in each resample from the weighted trials (the threshold of a TPR at an
FPR included, so its uncertainty is in the interval) and the interval is the percentile interval of the
resamples. The advantage and the ε bound choose their threshold on one block of trials and measure it
on another that shares no record and no model with it (:func:`crossed_blocks`).

Trials are given as flat arrays: ``scores``, ``is_member``, and ``record``/``model``, the integer id of
each trial's record and model. Resampling weights are drawn once (:meth:`TwoWayBootstrap.draw`) and
shared by every statistic of an audit, so the intervals of different attacks come from the same
resamples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from membershield.errors import ConfigError, InputDataError
from membershield.metrics._checks import _check, _check_confidence, _check_rate
from membershield.metrics.advantage import Advantage, _best_gap_threshold
from membershield.metrics.epsilon import EpsilonBound, _best_rule, _implied_epsilon
from membershield.metrics.intervals import Interval, _cp_bounds
from membershield.metrics.rates import TprAtFpr, _enough_nonmembers, _tpr_tail, _unmeasurable
from membershield.metrics.roc import RocCurve, auc, roc

METHOD = "two-way (pigeonhole) bootstrap over records and models, percentile intervals"
CHUNK_ELEMENTS = 4_000_000  # trial weights held at once (resamples x trials): bounds the memory


@dataclass(frozen=True)
class TwoWayBootstrap:
    """How often each record and each model appears in each resample (multinomial multiplicities).

    ``record_weights[b, i]`` and ``model_weights[b, k]``: the copies of record ``i`` and model ``k`` in
    resample ``b``; a trial (k, i) counts ``record_weights[b, i] * model_weights[b, k]`` times.

    >>> boot = TwoWayBootstrap.draw(n_records=5, n_models=3, resamples=4, seed=0)
    >>> boot.record_weights.shape, boot.model_weights.shape, boot.record_weights.sum(axis=1).tolist()
    ((4, 5), (4, 3), [5, 5, 5, 5])
    """

    record_weights: np.ndarray
    model_weights: np.ndarray
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def draw(
        cls, n_records: int, n_models: int, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
    ) -> TwoWayBootstrap:
        """``resamples`` draws of ``n_records`` records and ``n_models`` models, each with replacement."""
        if n_records < 2 or n_models < 2:
            raise InputDataError(
                f"a two-way bootstrap needs at least 2 records and 2 models, got {n_records} and {n_models}"
            )
        if resamples < 2:
            raise ConfigError(f"resamples must be 2 or more, got {resamples}")
        rng = np.random.default_rng(seed)
        records = rng.multinomial(n_records, np.full(n_records, 1.0 / n_records), size=resamples)
        models = rng.multinomial(n_models, np.full(n_models, 1.0 / n_models), size=resamples)
        return cls(records.astype(np.int32), models.astype(np.int32), _check_confidence(confidence), seed)

    @property
    def resamples(self) -> int:
        return int(self.record_weights.shape[0])

    def chunks(self, record: np.ndarray, model: np.ndarray, width: int | None = None) -> Iterator[np.ndarray]:
        """The trials' weights, ``(b, n_trials)`` int32 blocks of resamples, in resample order; ``b`` is
        set by ``width`` trials (default: these), so that blocks of two sets of trials line up."""
        step = max(1, CHUNK_ELEMENTS // max(width or len(record), 1))
        for start in range(0, self.resamples, step):
            rows = slice(start, start + step)
            yield self.record_weights[rows][:, record] * self.model_weights[rows][:, model]

    def percentile(self, values: np.ndarray) -> Interval:
        """The percentile interval of resampled values (resamples without a value, NaN, are left out)."""
        tail = (1.0 - self.confidence) / 2.0
        kept = values[np.isfinite(values)]
        if not kept.size:
            return Interval(0.0, 1.0)
        low, high = np.quantile(kept, [tail, 1.0 - tail])
        return Interval(float(low), float(high))


def _trials(
    scores: ArrayLike, is_member: ArrayLike, record: ArrayLike, model: ArrayLike, boot: TwoWayBootstrap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s, m = _check(scores, is_member)
    r, k = np.asarray(record, dtype=np.int64), np.asarray(model, dtype=np.int64)
    if r.shape != s.shape or k.shape != s.shape:
        raise InputDataError(f"record and model ids must give one id per trial ({s.size}), got {r.size} and {k.size}")
    n_records, n_models = boot.record_weights.shape[1], boot.model_weights.shape[1]
    if r.min() < 0 or r.max() >= n_records or k.min() < 0 or k.max() >= n_models:
        raise InputDataError(f"record ids must lie in [0, {n_records}) and model ids in [0, {n_models})")
    return s, m, r, k


@dataclass(frozen=True)
class ClusteredRoc:
    """AUC and TPR at each FPR of pooled trials, with two-way clustered bootstrap intervals."""

    auc: float
    auc_interval: Interval
    rates: list[TprAtFpr]


def _resampled_curves(
    s: np.ndarray, m: np.ndarray, r: np.ndarray, k: np.ndarray, fprs: Sequence[float], boot: TwoWayBootstrap
) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: the weighted AUC ``(B,)`` and the weighted TPR at each FPR ``(B, F)``.

    Members and non-members are sorted apart once, and where each member falls among the non-members is
    found once (``searchsorted``): a resample then only cumulates weights. A member's AUC credit is the
    non-member weight below its score plus half the weight tied with it. The TPR at FPR f flags the
    scores above ``v``, the highest non-member score at which the non-member weight from the top first
    exceeds f of the total: every threshold above ``v`` is admissible and none at or below it, so this is
    the most liberal admissible threshold, as in :func:`~membershield.metrics.tpr_at_fpr`.
    """
    neg_order, pos_order = np.argsort(s[~m], kind="stable"), np.argsort(-s[m], kind="stable")
    s_neg, r_neg, k_neg = s[~m][neg_order], r[~m][neg_order], k[~m][neg_order]  # ascending
    s_pos, r_pos, k_pos = s[m][pos_order], r[m][pos_order], k[m][pos_order]  # descending
    below = np.searchsorted(s_neg, s_pos, side="left")
    up_to = np.searchsorted(s_neg, s_pos, side="right")
    count = np.int32 if s.size < 5_000_000 else np.int64  # weighted counts stay far below 2**31 / 100
    aucs, rates = [], []
    chunks = zip(boot.chunks(r_neg, k_neg, s.size), boot.chunks(r_pos, k_pos, s.size), strict=True)
    for neg, pos in chunks:
        # cum_neg[:, j]: non-member weight strictly below s_neg[j]; cum_pos[:, j]: of the j highest members
        cum_neg = np.zeros((neg.shape[0], neg.shape[1] + 1), dtype=count)
        np.cumsum(neg, axis=1, dtype=count, out=cum_neg[:, 1:])
        cum_pos = np.zeros((pos.shape[0], pos.shape[1] + 1), dtype=count)
        np.cumsum(pos, axis=1, dtype=count, out=cum_pos[:, 1:])
        total_neg, total_pos = cum_neg[:, -1].astype(np.float64), cum_pos[:, -1].astype(np.float64)
        credit = (pos * (cum_neg[:, below] + cum_neg[:, up_to])).sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs.append(credit / (2.0 * total_pos * total_neg))
        column = []
        for f in fprs:
            # non-members j with weight from s_neg[j] up above f of the total: the first `passing` of them
            passing = (cum_neg[:, :-1] < ((1.0 - f) * total_neg)[:, None]).sum(axis=1)
            v = s_neg[np.maximum(passing - 1, 0)]
            flagged = np.searchsorted(-s_pos, -v, side="left")  # members scoring above v
            picked = np.take_along_axis(cum_pos, flagged[:, None], axis=1)[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                column.append(np.where(passing > 0, picked, total_pos) / total_pos)
        rates.append(np.stack(column, axis=1) if column else np.zeros((len(neg), 0)))
    return np.concatenate(aucs), np.concatenate(rates)


def clustered_roc(
    scores: ArrayLike,
    is_member: ArrayLike,
    record: ArrayLike,
    model: ArrayLike,
    fprs: Sequence[float],
    boot: TwoWayBootstrap,
) -> ClusteredRoc:
    """AUC and TPR at each of ``fprs`` on pooled trials, with two-way clustered bootstrap intervals.

    Point estimates and counts are those of the pooled trials (:func:`~membershield.metrics.tpr_at_fpr`);
    a TPR is measurable when the pooled non-member trials reach
    :func:`~membershield.metrics.nonmembers_needed`. Each interval is the percentile interval of the
    statistic recomputed on every resample of records and models (its threshold re-chosen there).

    Ten models scoring 300 records with a strong record effect and no membership signal: the clustered
    AUC interval is wider than DeLong's on the 3,000 trials, which treats them as independent.

    >>> from membershield.metrics import auc_with_ci
    >>> rng = np.random.default_rng(0)
    >>> record, model = np.tile(np.arange(300), 10), np.repeat(np.arange(10), 300)
    >>> member = rng.random(3000) < 0.5
    >>> scores = rng.normal(size=300)[record] + 0.1 * rng.normal(size=3000)
    >>> pooled = clustered_roc(scores, member, record, model, [0.1], TwoWayBootstrap.draw(300, 10, 500))
    >>> naive = auc_with_ci(scores, member)[1]
    >>> round(pooled.auc, 3), pooled.auc_interval.high - pooled.auc_interval.low > naive.high - naive.low
    (0.486, True)
    >>> rate = pooled.rates[0]
    >>> rate.tp, rate.fp, rate.ci_low < 0.1 < rate.ci_high
    (132, 146, True)
    """
    s, m, r, k = _trials(scores, is_member, record, model, boot)
    fprs = [_check_rate("fpr", f) for f in fprs]
    resampled_auc, resampled_tpr = _resampled_curves(s, m, r, k, fprs, boot)
    curve = roc(s, m)
    rates = [_pooled_rate(curve, f, boot.percentile(resampled_tpr[:, j]), boot.confidence) for j, f in enumerate(fprs)]
    return ClusteredRoc(auc(s, m), boot.percentile(resampled_auc), rates)


def _pooled_rate(curve: RocCurve, fpr: float, interval: Interval, confidence: float) -> TprAtFpr:
    """The pooled trials' TPR at ``fpr`` (the threshold of :func:`~membershield.metrics.tpr_at_fpr`) with
    the clustered interval; not measurable where a model audit with that many non-members would not be."""
    n_pos, n_neg = curve.n_members, curve.n_nonmembers
    if fpr <= 0.0 or not _enough_nonmembers(n_neg, fpr, _tpr_tail(confidence)):
        return _unmeasurable(fpr, n_pos, n_neg)
    last = int(np.flatnonzero(curve.fp / n_neg <= fpr)[-1])
    best = int(np.flatnonzero(curve.tp == curve.tp[last])[0])  # that TPR at the lowest FPR
    tp, fp = int(curve.tp[best]), int(curve.fp[best])
    return TprAtFpr(fpr, tp / n_pos, interval.low, interval.high, fp / n_neg, tp, fp, n_pos, n_neg, True)


def crossed_blocks(record: np.ndarray, model: np.ndarray, n_records: int, n_models: int, seed: int) -> np.ndarray:
    """Each trial's block, 0-3: records and models are split in halves at random (``seed``), and block
    ``2 * (model in the second half) + (record in the second half)``. Blocks ``b`` and ``3 - b`` share no
    record and no model, so a threshold chosen on one is measured honestly on the other.

    >>> crossed_blocks(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), 2, 2, seed=0).tolist()
    [3, 2, 1, 0]
    """
    rng = np.random.default_rng(seed)
    second_record = np.zeros(n_records, dtype=bool)
    second_record[rng.permutation(n_records)[: n_records // 2]] = True
    second_model = np.zeros(n_models, dtype=bool)
    second_model[rng.permutation(n_models)[: n_models // 2]] = True
    return 2 * second_model[model].astype(np.int64) + second_record[record].astype(np.int64)


def _weighted_rates(boot: TwoWayBootstrap, r: np.ndarray, k: np.ndarray, m: np.ndarray, flagged: np.ndarray):
    """Per resample, the weighted TPR and FPR of fixed flags ``(B,)`` each.

    A weighted sum over trials factorises: with ``X[i, k]`` the value of trial (k, i) (0 where there is
    none), ``sum_t w_t x_t = sum_k model_weight[k] * (record_weights @ X)[k]``, two small products.
    """
    shape = (boot.record_weights.shape[1], boot.model_weights.shape[1])

    def weighted_sum(values: np.ndarray) -> np.ndarray:
        grid = np.zeros(shape)
        np.add.at(grid, (r, k), values)
        return ((boot.record_weights @ grid) * boot.model_weights).sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = weighted_sum((flagged & m).astype(np.float64)) / weighted_sum(m.astype(np.float64))
        fpr = weighted_sum((flagged & ~m).astype(np.float64)) / weighted_sum((~m).astype(np.float64))
    return tpr, fpr


def clustered_advantage(
    scores: ArrayLike, is_member: ArrayLike, record: ArrayLike, model: ArrayLike, boot: TwoWayBootstrap
) -> Advantage:
    """Membership advantage ``TPR - FPR`` of pooled trials, cross-fitted over crossed blocks.

    The trials fall in four blocks (:func:`crossed_blocks`, seeded by the bootstrap's seed); each block is
    flagged with the threshold that maximises ``TPR - FPR`` on the block sharing no record and no model
    with it, and the flags of all four are pooled. The interval is the percentile interval of the
    advantage of those flags over the resamples (the thresholds held fixed, as the single-model advantage
    conditions on them).

    >>> scores = [0.9, 0.1, 0.8, 0.2] * 2 + [0.1, 0.9, 0.2, 0.8] * 2
    >>> member = [True, False, True, False] * 2 + [False, True, False, True] * 2
    >>> record, model = [0, 1, 2, 3, 4, 5, 6, 7] * 2, [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    >>> clustered_advantage(scores, member, record, model, TwoWayBootstrap.draw(8, 4, 50)).value
    1.0
    """
    s, m, r, k = _trials(scores, is_member, record, model, boot)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    blocks = crossed_blocks(r, k, boot.record_weights.shape[1], boot.model_weights.shape[1], boot.seed)
    flagged = np.zeros(s.size, dtype=bool)
    for block in range(4):
        chosen, measured = blocks == 3 - block, blocks == block
        threshold = _best_gap_threshold(s[chosen], m[chosen]) if chosen.any() else math.inf
        flagged[measured] = s[measured] >= threshold
    tp, fp = int((flagged & m).sum()), int((flagged & ~m).sum())
    resampled_tpr, resampled_fpr = _weighted_rates(boot, r, k, m, flagged)
    interval = boot.percentile(resampled_tpr - resampled_fpr)
    return Advantage(tp / n_pos - fp / n_neg, interval.low, interval.high, tp, fp, n_pos, n_neg)


def _design_effect(resampled: np.ndarray, rate: float, n: int) -> float | None:
    """Resampled variance over the binomial variance of ``n`` independent trials (None at a rate of 0 or 1)."""
    kept = resampled[np.isfinite(resampled)]
    if not 0.0 < rate < 1.0 or kept.size < 2:
        return None
    return float(np.var(kept, ddof=1) / (rate * (1.0 - rate) / n))


@dataclass(frozen=True)
class ClusteredEpsilon:
    """The ε bound of pooled trials and how its limits were made (the design effects and the counts)."""

    bound: EpsilonBound
    design_effect_tpr: float | None
    design_effect_fpr: float | None
    tp: int | None
    fp: int | None
    n_members: int  # member trials of the measuring block
    n_nonmembers: int


def clustered_epsilon_lower_bound(
    scores: ArrayLike,
    is_member: ArrayLike,
    record: ArrayLike,
    model: ArrayLike,
    boot: TwoWayBootstrap,
    delta: float = 1e-5,
) -> ClusteredEpsilon:
    """Empirical ε lower bound of pooled trials, with Clopper-Pearson limits on effective trial counts.

    The flagging rule (threshold and direction, as in
    :func:`~membershield.metrics.empirical_epsilon_lower_bound`) is chosen on crossed block 0 and
    measured on block 3, which shares no record and no model with it. Its TPR and FPR there are
    correlated trials: each count is divided by its design effect (the two-way bootstrap variance over
    the binomial one, at least 1), and the one-sided Clopper-Pearson limits are taken on those effective
    counts (Korn & Graubard 1998, "Confidence intervals for proportions with small expected number of
    positive counts estimated from survey data", Survey Methodology 24(2)). A rate of 0 has no variance
    to measure: it borrows the other rate's design effect.

    >>> scores = [0.9] * 200 + [0.1] * 200
    >>> member = [True] * 200 + [False] * 200
    >>> record, model = list(range(200)) * 2, [0] * 100 + [1] * 100 + [0] * 100 + [1] * 100
    >>> result = clustered_epsilon_lower_bound(scores, member, record, model, TwoWayBootstrap.draw(200, 2, 50))
    >>> result.bound.epsilon > 0, result.fp
    (True, 0)
    """
    delta = float(delta)
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must lie in [0, 1), got {delta}")
    s, m, r, k = _trials(scores, is_member, record, model, boot)
    confidence = boot.confidence
    blocks = crossed_blocks(r, k, boot.record_weights.shape[1], boot.model_weights.shape[1], boot.seed)
    chosen, measured = blocks == 0, blocks == 3
    n_pos, n_neg = int((m & measured).sum()), int((~m & measured).sum())
    nothing = EpsilonBound(0.0, delta, None, None, None, confidence)
    if min(n_pos, n_neg, int((m & chosen).sum()), int((~m & chosen).sum())) < 2:
        return ClusteredEpsilon(nothing, None, None, None, None, n_pos, n_neg)
    rule = _best_rule(s[chosen], m[chosen], delta, confidence)
    if rule is None:
        return ClusteredEpsilon(nothing, None, None, None, None, n_pos, n_neg)
    threshold, sign = rule
    flagged = (sign * s >= threshold) & measured
    tp, fp = int((flagged & m).sum()), int((flagged & ~m).sum())
    in_block = np.flatnonzero(measured)
    resampled_tpr, resampled_fpr = _weighted_rates(boot, r[in_block], k[in_block], m[in_block], flagged[in_block])
    effect_tpr = _design_effect(resampled_tpr, tp / n_pos, n_pos)
    effect_fpr = _design_effect(resampled_fpr, fp / n_neg, n_neg)
    d_tpr = max(1.0, effect_tpr if effect_tpr is not None else (effect_fpr or 1.0))
    d_fpr = max(1.0, effect_fpr if effect_fpr is not None else (effect_tpr or 1.0))
    tpr_low, _ = _cp_bounds(np.array([tp / d_tpr]), n_pos / d_tpr, confidence)
    _, fpr_high = _cp_bounds(np.array([fp / d_fpr]), n_neg / d_fpr, confidence)
    eps = float(_implied_epsilon(tpr_low, fpr_high, delta)[0])
    bound = nothing
    if eps > 0.0:
        bound = EpsilonBound(eps, delta, sign * threshold, float(tpr_low[0]), float(fpr_high[0]), confidence)
    return ClusteredEpsilon(bound, effect_tpr, effect_fpr, tp, fp, n_pos, n_neg)
