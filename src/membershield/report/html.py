"""The HTML report: one self-contained file that reads top-down, from the verdict to the audit trail.

Plots are inline PNG data URIs, styles are inline, and the page has no scripts, fonts or other
resources to fetch, so it opens the same offline, from an e-mail attachment or from a CI artifact.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from membershield import metrics
from membershield.report import (
    fmt_count_rate,
    fmt_fpr,
    fmt_interval,
    fmt_pct,
    fmt_rate,
    headline,
    not_measurable,
    plots,
    verdict,
    write_text,
)
from membershield.report.subjects import rarity_view, user_level_view, worst_slice_view
from membershield.report.synthetic import synthetic_view
from membershield.result import AuditResult

CALIBRATION_BINS = 10
BOOTSTRAP_RESAMPLES = 1000


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("membershield.report", "templates"),
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=fmt_pct,
        fpr=fmt_fpr,
        rate=fmt_rate,
        count_rate=fmt_count_rate,
        interval=fmt_interval,
        not_measurable=not_measurable,
        num=_num,
        seconds=_seconds,
        cfg=_config_value,
    )
    return env


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _config_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_config_value(v) for v in value) if value else "—"
    return str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{1000 * value:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


# --------------------------------------------------------------------------------------------------
# calibration


@dataclass(frozen=True)
class Calibration:
    label: str
    n: int
    correct: int
    ece: float
    ece_low: float
    ece_high: float
    curve: plots.ReliabilityCurve


def _ece(bin_index: np.ndarray, confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    counts = np.bincount(bin_index, minlength=n_bins)
    gap = np.abs(
        np.bincount(bin_index, weights=correct, minlength=n_bins)
        - np.bincount(bin_index, weights=confidence, minlength=n_bins)
    )
    return float(gap.sum() / max(counts.sum(), 1))


def calibration(label: str, confidence: np.ndarray, correct: np.ndarray, seed: int) -> Calibration:
    """Expected calibration error over equal-width confidence bins, with a 95% bootstrap interval.

    ECE = Σ_b (n_b / n) |accuracy_b − confidence_b| (Naeini et al. 2015, "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning", AAAI; Guo et al. 2017, "On Calibration of Modern Neural
    Networks", ICML). The interval is a percentile bootstrap over records (seeded).
    """
    n_bins = CALIBRATION_BINS
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bin_index = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    ece = _ece(bin_index, confidence, correct, n_bins)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, confidence.size, size=(BOOTSTRAP_RESAMPLES, confidence.size))
    resampled = [_ece(bin_index[d], confidence[d], correct[d], n_bins) for d in draws]
    low, high = np.quantile(resampled, [0.025, 0.975])
    counts = np.bincount(bin_index, minlength=n_bins)
    used = counts > 0
    mean_conf = np.bincount(bin_index, weights=confidence, minlength=n_bins)[used] / counts[used]
    accuracy = np.bincount(bin_index, weights=correct, minlength=n_bins)[used] / counts[used]
    curve = plots.ReliabilityCurve(label, mean_conf, accuracy, counts[used], ece)
    return Calibration(label, int(confidence.size), int(correct.sum()), ece, float(low), float(high), curve)


def _calibration_section(document: dict[str, Any], scores: pd.DataFrame | None, note: str | None) -> dict[str, Any]:
    if document.get("mode") == "recipe":
        # Its bootstrap would resample trials as if independent, and hold them all in memory at once.
        note = "a recipe audit has one calibration per model; each model's accuracy is in audit.json (game.per_model)"
        return {"available": False, "note": note}
    if document.get("mode") == "diffusion":
        note = "a diffusion model predicts no labels to calibrate; its denoising loss per group is above"
        return {"available": False, "note": note}
    if document.get("mode") == "synthetic":
        note = (
            "a synthetic table has no model of its own to calibrate; the accuracy of the model trained on it"
            " (with --label-column) is above"
        )
        return {"available": False, "note": note}
    if scores is None:
        return {"available": False, "note": note}
    if not {"predicted_label", "predicted_confidence", "label"} <= set(scores.columns):
        return {
            "available": False,
            "note": "scores.csv has no predicted_label / predicted_confidence columns (it was written by an older"
            " membershield), so calibration cannot be shown; re-run the audit to include them",
        }
    confidence = scores["predicted_confidence"].to_numpy(dtype=np.float64)
    if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
        return {"available": False, "note": "predicted_confidence in scores.csv is not a probability in [0, 1]"}
    correct = (scores["predicted_label"].astype(str) == scores["label"].astype(str)).to_numpy()
    is_member = scores["is_member"].to_numpy(dtype=bool)
    seed = int(document["config"].get("seed", 0))
    groups = [
        calibration("non-members", confidence[~is_member], correct[~is_member], seed),
        calibration("members", confidence[is_member], correct[is_member], seed + 1),
    ]
    return {
        "available": True,
        "groups": groups,
        "bins": CALIBRATION_BINS,
        "resamples": BOOTSTRAP_RESAMPLES,
        "reliability_plot": plots.reliability_diagram([g.curve for g in groups]),
        "confidence_plot": plots.confidence_histogram(confidence, is_member),
    }


# --------------------------------------------------------------------------------------------------
# per-record plots, slices, exposure


def _score_plots(document: dict[str, Any], scores: pd.DataFrame | None) -> dict[str, Any]:
    if scores is None:
        return {"roc": None, "histograms": [], "missing": []}
    is_member = scores["is_member"].to_numpy(dtype=bool)
    series, histograms, missing = [], [], []
    for attack in document["attacks"]:
        name = attack["name"]
        if name not in scores.columns:
            missing.append(name)
            continue
        values = scores[name].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            missing.append(name)
            continue
        curve = metrics.roc(values, is_member)
        series.append(plots.RocSeries(name, curve.fpr, curve.tpr, attack["auc"]))
        histograms.append({"name": name, "src": plots.score_histogram(name, values, is_member, attack["auc"])})
    roc = None
    if series:
        data = document["data"]
        roc = plots.roc_plot(series, data["n_members"], data["n_nonmembers"], document["config"].get("fprs", []))
    return {"roc": roc, "histograms": histograms, "missing": missing}


def _slice_tables(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One table per slicing (class, then ``--slice-column``): rows are values, cells are per attack."""
    tables: dict[str, dict[str, Any]] = {}
    for attack in document["attacks"]:
        for entry in attack["slices"]:
            table = tables.setdefault(entry["by"], {"by": entry["by"], "rows": {}, "fpr": None})
            row = table["rows"].setdefault(
                entry["slice"],
                {
                    "slice": entry["slice"],
                    "n_members": entry["n_members"],
                    "n_nonmembers": entry["n_nonmembers"],
                    "cells": {},
                },
            )
            rate = entry["tpr_at_fpr"][0] if entry["tpr_at_fpr"] else None
            if rate is not None:
                table["fpr"] = rate["fpr"]
            row["cells"][attack["name"]] = {
                "auc": entry["auc"],
                "auc_ci_low": entry["auc_ci_low"],
                "auc_ci_high": entry["auc_ci_high"],
                "significant": entry["auc_ci_low"] is not None and entry["auc_ci_low"] > 0.5,
                "rate": rate,
            }
    ordered = []
    for table in tables.values():
        rows = list(table["rows"].values())
        rows.sort(key=lambda r: (0, float(r["slice"])) if _is_number(r["slice"]) else (1, r["slice"]))
        ordered.append({**table, "rows": rows})
    return ordered


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _exposed(document: dict[str, Any], scores: pd.DataFrame | None, strongest: str) -> list[dict[str, Any]]:
    labels = scores["label"].astype(str).tolist() if scores is not None and "label" in scores.columns else None
    sections = []
    for attack in document["attacks"]:
        records = [
            {**record, "label": labels[record["index"]] if labels and record["index"] < len(labels) else None}
            for record in attack["top_exposed"]
        ]
        n_members = sum(1 for r in records if r["is_member"])
        sections.append(
            {"name": attack["name"], "records": records, "n_members": n_members, "open": attack["name"] == strongest}
        )
    return sections


def _accuracy(document: dict[str, Any]) -> dict[str, Any]:
    utility, data = document["utility"], document["data"]
    n_in, n_out = data["n_members"], data["n_nonmembers"]
    train = round(utility["train_accuracy"] * n_in) if utility.get("train_accuracy") is not None else None
    holdout = round(utility["holdout_accuracy"] * n_out) if utility.get("holdout_accuracy") is not None else None
    detail = _accuracy_detail
    if document.get("mode") == "recipe":  # trials of K models: not independent, so no binomial interval

        def detail(correct: int | None, n: int) -> str:
            return f"{correct} of {n} trials, pooled over the models"

    return {
        "train_detail": detail(train, n_in),
        "holdout_detail": detail(holdout, n_out),
        "gap": utility.get("accuracy_gap"),
        "train_value": utility.get("train_accuracy"),
        "holdout_value": utility.get("holdout_accuracy"),
    }


def _accuracy_detail(correct: int | None, n: int) -> str:
    if correct is None or n == 0:
        return "n/a"
    interval = metrics.clopper_pearson(correct, n)
    return f"95% CI {fmt_interval(interval.low, interval.high)}; {correct} of {n} correct"


def _package_versions(document: dict[str, Any]) -> list[tuple[str, str]]:
    recorded = dict(document.get("environment") or {})
    rows = list(recorded.items())
    for package in ("jinja2", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            rows.append((f"{package} (rendering)", metadata.version(package)))
    return rows


def _sources(document: dict[str, Any]) -> list[dict[str, Any]]:
    config = document["config"]
    paths = {
        "members": config.get("train"),
        "nonmembers": config.get("holdout"),
        "population": config.get("population"),
    }
    return [
        {"name": name, "path": paths.get(name), "sha256": digest}
        for name, digest in document["data"].get("fingerprints", {}).items()
    ]


def context(result: AuditResult | dict[str, Any], scores: pd.DataFrame | None, scores_note: str | None) -> dict:
    """Everything the template shows, computed once; the template only lays it out."""
    document = result.to_dict() if isinstance(result, AuditResult) else result
    top = headline(document)
    fprs = document["config"].get("fprs") or sorted({r["fpr"] for r in document["attacks"][0]["tpr_at_fpr"]})
    n_out = document["data"]["n_nonmembers"]
    unresolved = metrics.unresolved_fprs(fprs, n_out)
    try:
        version = metadata.version("membershield")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "r": document,
        "verdict": verdict(document),
        "top": top,
        "eps_attack": max(
            document["attacks"],
            key=lambda a: a["epsilon_lower_bound"] if a["epsilon_lower_bound"] is not None else -1.0,
        ),
        "fprs": fprs,
        "unresolved": unresolved,
        "needed_nonmembers": metrics.nonmembers_needed(min(unresolved)) if unresolved else None,
        "accuracy": _accuracy(document),
        "plots": _score_plots(document, scores),
        "scores_note": scores_note,
        "slices": _slice_tables(document),
        "worst_slice": worst_slice_view(document),
        "user_level": user_level_view(document),
        "rarity": rarity_view(document),
        "synthetic": synthetic_view(document),
        "exposed": _exposed(document, scores, top.attack["name"]),
        "calibration": _calibration_section(document, scores, scores_note),
        "sources": _sources(document),
        "versions": _package_versions(document),
        "timings": list((document.get("timings") or {}).items()),
        "config_rows": [(k, v) for k, v in document["config"].items()],
        "version": version,
    }


def render_html(
    result: AuditResult | dict[str, Any], scores: pd.DataFrame | None, scores_note: str | None = None
) -> str:
    """The report as one HTML document. Without ``scores`` (per-record scores) the plots say why they are absent."""
    if scores is None and scores_note is None:
        scores_note = "no per-record scores were given, so per-record plots are left out"
    return environment().get_template("report.html.j2").render(**context(result, scores, scores_note))


def write_html_report(result: AuditResult, scores: pd.DataFrame | None, path: str | Path) -> Path:
    """Write ``report.html`` for a result in memory (what ``membershield audit`` does after the audit)."""
    return write_text(path, render_html(result, scores))
