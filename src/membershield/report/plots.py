"""Figures for the HTML report, drawn with matplotlib's Agg renderer and returned as PNG data URIs.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through ``pyplot``, so
drawing a report neither needs a display nor changes global matplotlib state. Every function takes
plain arrays and returns ``data:image/png;base64,...``, ready for an ``<img src>``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MEMBER = "#c2410c"
NONMEMBER = "#2563eb"
CHANCE = "#9ca3af"
INK = "#1f2937"
GRID = "#e5e7eb"
PALETTE = ("#0f766e", "#7c3aed", "#db2777", "#ca8a04", "#0284c7", "#4b5563", "#65a30d", "#9333ea", "#ea580c")
DPI = 150

_STYLE = {
    "font.size": 9.5,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": INK,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _styled():
    import matplotlib

    return matplotlib.rc_context(_STYLE)


def _grid(ax) -> None:
    ax.grid(True, which="major", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


@dataclass(frozen=True)
class RocSeries:
    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float | None


def roc_plot(series: Sequence[RocSeries], n_members: int, n_nonmembers: int, fprs: Sequence[float]) -> str:
    """ROC curves on log-log axes with the chance line, the reported FPRs and the unresolvable region.

    Log axes show the low-FPR regime where membership inference matters (Carlini et al. 2022). Points
    with a zero coordinate cannot sit on a log axis and are left out; below ``1 / n_nonmembers`` no FPR
    can be measured, and that band is shaded.
    """
    floor_x = 1.0 / max(n_nonmembers, 1)
    floor_y = 1.0 / max(n_members, 1)
    low_x, low_y = floor_x / 2, floor_y / 2
    with _styled():
        figure = _figure(6.6, 4.4)
        ax = figure.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvspan(low_x, floor_x, color="#f3f4f6", zorder=0, lw=0)
        ax.text(low_x * 1.08, 0.9, "not\nmeasurable", fontsize=7.5, color="#6b7280", va="top", ha="left", zorder=1)
        line = np.array([low_x, 1.0])
        ax.plot(line, line, linestyle="--", color=CHANCE, linewidth=1.1, label="chance (TPR = FPR)", zorder=2)
        for fpr in fprs:
            if fpr >= floor_x:
                ax.axvline(fpr, color="#d1d5db", linewidth=0.9, linestyle=":", zorder=1)
        for i, s in enumerate(series):
            keep = (s.fpr > 0) & (s.tpr > 0)
            auc = f"AUC {s.auc:.3f}" if s.auc is not None else "AUC n/a"
            ax.plot(
                s.fpr[keep],
                s.tpr[keep],
                color=PALETTE[i % len(PALETTE)],
                linewidth=1.6,
                label=f"{s.name} ({auc})",
                zorder=3,
            )
        ax.set_xlim(low_x, 1.0)
        ax.set_ylim(low_y, 1.0)
        ax.set_xlabel("false-positive rate (non-members flagged)")
        ax.set_ylabel("true-positive rate (members found)")
        _grid(ax)
        ax.legend(loc="lower right")
        return _png(figure)


def _bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges over the central 99% of the values, so a few extreme scores do not flatten the rest."""
    low, high = np.quantile(values, [0.005, 0.995])
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        low, high = float(values.min()) - 0.5, float(values.max()) + 0.5
    return np.linspace(low, high, n_bins + 1)


def score_histogram(name: str, scores: np.ndarray, is_member: np.ndarray, auc: float | None) -> str:
    """Member vs non-member score distributions of one attack (higher score = more likely member)."""
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    edges = _bins(scores, 40)
    clipped = np.clip(scores, edges[0], edges[-1])
    with _styled():
        figure = _figure(3.7, 2.5)
        ax = figure.add_subplot()
        for mask, colour, label in ((~is_member, NONMEMBER, "non-members"), (is_member, MEMBER, "members")):
            ax.hist(clipped[mask], bins=edges, color=colour, alpha=0.35, label=f"{label} (n={int(mask.sum())})")
            ax.hist(clipped[mask], bins=edges, color=colour, histtype="step", linewidth=1.2)
        title = name if auc is None else f"{name}  ·  AUC {auc:.3f}"
        ax.set_title(title, loc="left")
        ax.set_xlabel("attack score (higher = more likely member)")
        ax.set_ylabel("records")
        _grid(ax)
        ax.legend(loc="best", fontsize=7.5)
        return _png(figure)


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per confidence bin: mean confidence, accuracy and record count (bins without records dropped)."""

    label: str
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float


def reliability_diagram(curves: Sequence[ReliabilityCurve]) -> str:
    """Accuracy against confidence per bin; the diagonal is perfect calibration. Marker area ∝ records."""
    colours = {"members": MEMBER, "non-members": NONMEMBER}
    with _styled():
        figure = _figure(4.4, 3.4)
        ax = figure.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color=CHANCE, linewidth=1.1, label="perfect calibration")
        for curve in curves:
            colour = colours.get(curve.label, INK)
            total = max(int(curve.count.sum()), 1)
            ax.plot(curve.confidence, curve.accuracy, color=colour, linewidth=1.2, alpha=0.8)
            ax.scatter(
                curve.confidence,
                curve.accuracy,
                s=14 + 110 * curve.count / total,
                color=colour,
                alpha=0.75,
                edgecolors="white",
                linewidths=0.6,
                label=f"{curve.label} (ECE {curve.ece:.3f})",
                zorder=3,
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("predicted confidence (max. probability)")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability diagram", loc="left")
        _grid(ax)
        ax.legend(loc="upper left")
        return _png(figure)


def confidence_histogram(confidence: np.ndarray, is_member: np.ndarray) -> str:
    """Distribution of the target's top-class probability for members and non-members (log count axis)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    low = min(float(confidence.min()), 0.9)
    edges = np.linspace(np.floor(low * 20) / 20, 1.0, 41)
    with _styled():
        figure = _figure(4.4, 3.4)
        ax = figure.add_subplot()
        for mask, colour, label in ((~is_member, NONMEMBER, "non-members"), (is_member, MEMBER, "members")):
            ax.hist(confidence[mask], bins=edges, color=colour, alpha=0.35, label=f"{label} (n={int(mask.sum())})")
            ax.hist(confidence[mask], bins=edges, color=colour, histtype="step", linewidth=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("predicted confidence (max. probability)")
        ax.set_ylabel("records (log scale)")
        ax.set_title("Confidence of the target", loc="left")
        _grid(ax)
        ax.legend(loc="upper left")
        return _png(figure)
