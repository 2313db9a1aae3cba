"""Anonymeter's singling-out, linkability and attribute-inference risks (Giomi et al. 2023, "A Unified
Framework for Quantifying Privacy Risk in Synthetic Data", PoPETs), as the ``anonymeter`` package gives
them.

Anonymeter attacks the training records (``ori``) through the synthetic ones and, as its control, the
holdout records, which the generator never saw: the risk is the attack's success on the training records
beyond its success on the control records, ``(attack − control) / (1 − control)``, with the interval
anonymeter derives from Wilson intervals of both rates. The settings:

- singling out: ``multivariate`` queries on 3 columns (anonymeter's default), ``n_attacks`` of them;
- linkability: the attacker holds the first half of the columns in one table and the second half in
  another, and links them through the 10 nearest synthetic records;
- inference: for each secret column (``--secret-columns``, else the label column), the attacker knows
  every other column; a numeric secret with more than 20 values is a regression (anonymeter's tolerance).

Anonymeter seeds its singling-out queries with the audit's seed and draws its targets from NumPy's global
stream, which is seeded before each evaluator; its random-guess baseline draws from an unseeded stream of
its own, so a baseline rate may differ between runs (the risk does not use it). What anonymeter warns
about (an attack no better than the baseline, a control attack that always succeeds) is kept in
``notes``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

NEIGHBOURS = 10
MAX_CLASSES = 20


def _rate(rate: Any) -> dict[str, float] | None:
    return None if rate is None else {"value": float(rate.value), "error": float(rate.error)}


def _measured(run: Callable[[], Any], confidence: float, **settings: Any) -> dict[str, Any]:
    """Run one evaluator (``run`` returns it evaluated) and read its risk and rates, with its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            evaluator = run()
            results = evaluator.results(confidence_level=confidence)
            risk = results.risk()
        except Exception as exc:  # anonymeter refuses some tables (too few records, no query found): say why
            return {"risk": None, "ci_low": None, "ci_high": None, "error": f"{type(exc).__name__}: {exc}", **settings}
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    return {
        "risk": float(risk.value),
        "ci_low": float(risk.ci[0]),
        "ci_high": float(risk.ci[1]),
        "attack_rate": _rate(results.attack_rate),
        "baseline_rate": _rate(results.baseline_rate),
        "control_rate": _rate(results.control_rate),
        "n_attacks": int(results.n_attacks_ori),
        "n_success": int(results.n_success),
        "n_baseline": int(results.n_baseline),
        "n_control": None if results.n_control is None else float(results.n_control),
        "notes": notes,
        **settings,
    }


def _inference(
    ori: pd.DataFrame,
    syn: pd.DataFrame,
    control: pd.DataFrame,
    secret: str,
    n_attacks: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    from anonymeter.evaluators import InferenceEvaluator

    regression = (
        pd.api.types.is_float_dtype(ori[secret]) and pd.concat([ori[secret], control[secret]]).nunique() > MAX_CLASSES
    )
    aux = [c for c in ori.columns if c != secret]

    def run() -> Any:
        np.random.seed(seed)
        evaluator = InferenceEvaluator(
            ori=ori, syn=syn, control=control, aux_cols=aux, secret=secret, regression=regression, n_attacks=n_attacks
        )
        return evaluator.evaluate(n_jobs=1)

    return _measured(run, confidence, secret=secret, regression=bool(regression))


def anonymeter_risks(
    train: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    secrets: Sequence[str],
    n_attacks: int = 500,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The ``anonymeter`` section of audit.json (see the module docstring); ``inference`` is None without
    a secret column, ``linkability`` None for a one-column table."""
    from anonymeter.evaluators import LinkabilityEvaluator, SinglingOutEvaluator

    attacks = max(1, min(n_attacks, len(train), len(holdout)))
    columns = list(train.columns)

    def singling_out() -> Any:
        evaluator = SinglingOutEvaluator(ori=train, syn=synthetic, control=holdout, n_attacks=attacks, seed=seed)
        return evaluator.evaluate(mode="multivariate")

    half = len(columns) // 2
    aux = (columns[:half], columns[half:])

    def linkability() -> Any:
        np.random.seed(seed)
        evaluator = LinkabilityEvaluator(
            ori=train, syn=synthetic, control=holdout, aux_cols=aux, n_attacks=attacks, n_neighbors=NEIGHBOURS
        )
        return evaluator.evaluate(n_jobs=1)

    by_secret = [_inference(train, synthetic, holdout, s, attacks, seed, confidence) for s in secrets]
    measured = [entry for entry in by_secret if entry["risk"] is not None]
    inference = None
    if by_secret:
        worst = max(measured, key=lambda e: e["ci_high"]) if measured else by_secret[0]
        inference = {**worst, "per_secret": by_secret}
    return {
        "singling_out": _measured(singling_out, confidence, mode="multivariate", n_cols=3),
        "linkability": _measured(linkability, confidence, aux_cols=[list(a) for a in aux], n_neighbors=NEIGHBOURS)
        if half >= 1
        else None,
        "inference": inference,
        "confidence": confidence,
        "control": "holdout",
        "package": f"anonymeter {metadata.version('anonymeter')}",
    }
