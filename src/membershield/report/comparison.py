"""The HTML page of a defense comparison (``compare.html``): one table and two privacy/utility plots.

Self-contained like the audit report: inline styles, plots as PNG data URIs, nothing to fetch. Every
rate carries its 95% interval: holdout accuracy (Clopper–Pearson), TPR at 1% FPR (Clopper–Pearson),
AUC (DeLong). A defense that did not lower the headline attack's TPR says so in words.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from matplotlib.ticker import PercentFormatter

from membershield.metrics import clopper_pearson
from membershield.report import fmt_pct
from membershield.report.plots import CHANCE, INK, PALETTE, _figure, _grid, _png, _styled
from membershield.result import rate_in

MARKERS = ("o", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def _accuracy_ci(accuracy: float, n: int) -> tuple[float, float]:
    interval = clopper_pearson(round(accuracy * n), n)
    return interval.low, interval.high


def _headline(variant: dict[str, Any], attack: str, fpr: float) -> dict[str, Any]:
    found = next((a for a in variant["attacks"] if a["name"] == attack), None)
    if found is None:
        return {"measurable": False, "tpr": None, "auc": None}
    rate = rate_in(found["tpr_at_fpr"], fpr) or {}
    measurable = bool(rate.get("measurable")) and rate.get("tpr") is not None
    return {
        "measurable": measurable,
        "tpr": rate.get("tpr") if measurable else None,
        "tpr_low": rate.get("ci_low"),
        "tpr_high": rate.get("ci_high"),
        "n_nonmembers": rate.get("n_nonmembers"),
        "auc": found["auc"],
        "auc_low": found["auc_ci_low"],
        "auc_high": found["auc_ci_high"],
    }


def _scatter(points: list[dict[str, Any]], metric: str, label: str, chance: float, chance_label: str) -> str:
    """Holdout accuracy (x) against a leakage metric (y), both with 95% intervals as error bars."""
    with _styled():
        figure = _figure(5.6, 4.2)
        ax = figure.add_subplot()
        ax.axhline(chance, color=CHANCE, linestyle="--", linewidth=1.0, label=chance_label)
        for i, p in enumerate(points):
            y = p[metric]
            if y is None:
                continue
            low, high = p[f"{metric}_low"], p[f"{metric}_high"]
            colour = INK if p["baseline"] else PALETTE[i % len(PALETTE)]
            marker = "s" if p["baseline"] else MARKERS[i % len(MARKERS)]
            ax.errorbar(
                p["accuracy"],
                y,
                xerr=[[p["accuracy"] - p["accuracy_low"]], [p["accuracy_high"] - p["accuracy"]]],
                yerr=[[y - low], [high - y]] if low is not None and high is not None else None,
                fmt=marker,
                color=colour,
                ecolor=colour,
                elinewidth=1.0,
                capsize=2.5,
                markersize=6,
                label=p["name"],
            )
        ax.set_xlabel("holdout accuracy (utility) →")
        ax.set_ylabel(label)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        if metric == "tpr":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _grid(ax)
        ax.legend(loc="best", fontsize=7.5)
        return _png(figure)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Defense comparison · {{ recipe }}</title>
<style>
body { margin: 0; background: #f8fafc; color: #111827;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 56px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0 0 8px; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 20px 22px; margin: 0 0 16px; }
.sub, .note { color: #6b7280; font-size: 13.5px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { background: #f8fafc; font-size: 12px; color: #374151; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.name { min-width: 150px; max-width: 220px; }
.ci { display: block; color: #6b7280; font-size: 11.5px; white-space: normal; }
tr.verdict td { border-bottom: 2px solid #e5e7eb; padding-top: 0; font-size: 12.5px; }
.no { color: #b91c1c; font-weight: 600; } .yes { color: #047857; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
img { max-width: 100%; height: auto; }
code { background: #f1f5f9; padding: 1px 5px; border-radius: 4px; font-size: 12.5px; }
</style></head><body><main>
<h1>Defenses compared: privacy against utility</h1>
<p class="sub">Recipe <code>{{ recipe }}</code> · pool <code>{{ pool }}</code>: {{ n_members }} members,
{{ n_holdout }} held-out records (split {{ 'stratified by label' if stratified else 'at random' }}, seed {{ seed }}) ·
attacks {{ attacks }} · {{ references }} reference models per variant, trained with the variant's own defense.</p>
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}
<section><h2>Results</h2>
<p class="note">Headline: {{ headline_attack }} TPR at {{ headline_fpr }} FPR (share of members found while
flagging at most that share of non-members), with 95% intervals. "ε (accountant)" is DP-SGD's theoretical
guarantee; "ε ≥ (attacks)" the lower bound the strongest attack proves at 95% confidence (δ={{ delta }}); the
first must be at least the second.</p>
<div style="overflow-x:auto"><table>
<thead><tr><th>defense</th><th class="num">holdout acc.</th><th class="num">train acc.</th>
<th class="num">{{ headline_attack }} AUC</th><th class="num">{{ headline_attack }} TPR @ {{ headline_fpr }} FPR</th>
<th class="num">worst TPR @ {{ headline_fpr }} FPR</th><th class="num">ε (accountant)</th>
<th class="num">ε ≥ (attacks)</th><th class="num">training time</th></tr></thead>
<tbody>
{% for row in rows %}<tr>
<td class="name"><b>{{ row.name }}</b>{% if row.citation %}<span class="ci">{{ row.citation }}</span>{% endif %}
{%- if row.frontier %}<span class="ci">{{ row.frontier }}</span>{% endif %}</td>
<td class="num">{{ row.accuracy }}<span class="ci">{{ row.accuracy_ci }}</span></td>
<td class="num">{{ row.train_accuracy }}</td>
<td class="num">{{ row.auc }}<span class="ci">{{ row.auc_ci }}</span></td>
<td class="num">{{ row.tpr }}<span class="ci">{{ row.tpr_ci }}</span></td>
<td class="num">{{ row.worst }}<span class="ci">{{ row.worst_attack }}</span></td>
<td class="num">{{ row.epsilon }}<span class="ci">{{ row.epsilon_detail }}</span></td>
<td class="num">{{ row.empirical }}<span class="ci">{{ row.empirical_attack }}</span></td>
<td class="num">{{ row.seconds }}<span class="ci">{{ row.ratio }}</span></td>
</tr>
<tr class="verdict"><td colspan="9" class="{{ row.verdict_class }}">{{ row.verdict }}</td></tr>{% endfor %}
</tbody></table></div>
{% if frontier_rule %}<p class="note">Pareto-optimal: no other variant is clearly better on accuracy or on the
strongest attack's TPR at {{ headline_fpr }} FPR without being clearly worse on the other
({{ frontier_rule }}).</p>{% endif %}
{% if recommendation %}<p class="note"><b>Recommendation</b> ({{ recommendation_budget }}):
{{ recommendation }}</p>{% endif %}
</section>
<section><h2>Privacy against utility</h2>
<p class="note">Up and to the right is a model that is accurate but leaks; a good defense moves a point down
without moving it far left. Error bars are 95% intervals on both axes.</p>
<div class="plots"><img alt="holdout accuracy against TPR at 1% FPR" src="{{ tpr_plot }}">
<img alt="holdout accuracy against AUC" src="{{ auc_plot }}"></div>
</section>
<p class="note">Each variant's full audit:
{% for row in rows %}<code>{{ row.audit }}</code>{{ ", " if not loop.last }}{% endfor %}.</p>
</main></body></html>
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"


def _verdict_class(lowered: bool | None, protects: bool | None, clearly: bool | None) -> str:
    """Green for a clear reduction, red for none (or for an output defense), plain when within noise."""
    if lowered is None:
        return ""
    if not protects:
        return "no"
    return "yes" if clearly else ""


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _epsilon_detail(variant: dict[str, Any]) -> str:
    return (
        f"{variant['accountant']}, δ={variant['delta']:g}; σ={variant['noise_multiplier']:.3g};"
        f" q={variant['sample_rate']:.3g}; {variant['steps']} steps"
    )


def _variant_row(variant: dict[str, Any], h: dict[str, Any], accuracy_ci: tuple[float, float]) -> dict[str, Any]:
    """One line of the comparison table: ``h`` is the variant's headline attack point."""
    acc_low, acc_high = accuracy_ci
    worst = variant.get("worst_attack") or {}
    dp = variant["defense"]["name"] == "dp" and variant.get("epsilon") is not None
    ratio = variant.get("training_time_ratio")
    lowered = variant.get("lowers_lira_tpr")
    protects = variant.get("counts_as_protection")
    return {
        "name": variant["name"],
        "citation": variant["defense"].get("citation"),
        "accuracy": fmt_pct(variant["holdout_accuracy"]),
        "accuracy_ci": f"{fmt_pct(acc_low)}–{fmt_pct(acc_high)}",
        "train_accuracy": fmt_pct(variant["train_accuracy"]),
        "auc": _num(h["auc"]),
        "auc_ci": f"{_num(h.get('auc_low'))}–{_num(h.get('auc_high'))}" if h["auc"] is not None else "",
        "tpr": fmt_pct(h["tpr"]) if h["measurable"] else "not measurable",
        "tpr_ci": f"{fmt_pct(h['tpr_low'])}–{fmt_pct(h['tpr_high'])}" if h["measurable"] else "",
        "worst": fmt_pct(worst.get("tpr")) if worst.get("measurable") else "n/a",
        "worst_attack": worst.get("attack", ""),
        "epsilon": _num(variant["epsilon"], 2) if dp else "—",
        "epsilon_detail": _epsilon_detail(variant) if dp else "",
        "empirical": _num(variant.get("empirical_epsilon_lower_bound"), 2),
        "empirical_attack": variant.get("empirical_epsilon_attack") or "",
        "seconds": _seconds(variant.get("training_seconds")),
        "ratio": f"×{ratio:.2f} vs none" if ratio else "",
        "verdict": variant.get("verdict", ""),
        "verdict_class": _verdict_class(lowered, protects, variant.get("clearly_lowers_lira_tpr")),
        "audit": variant["audit"],
        "frontier": _frontier_label(variant),
    }


def _frontier_label(variant: dict[str, Any]) -> str:
    if "pareto" not in variant:  # written before the frontier was computed
        return ""
    if variant["pareto"]:
        return "Pareto-optimal"
    return "dominated by " + ", ".join(variant.get("dominated_by", []))


def _variant_point(
    variant: dict[str, Any], h: dict[str, Any], accuracy_ci: tuple[float, float], baseline: str
) -> dict[str, Any]:
    """One marker of the privacy/utility scatter plots, with its intervals."""
    acc_low, acc_high = accuracy_ci
    return {
        "name": variant["name"],
        "baseline": variant["name"] == baseline,
        "accuracy": variant["holdout_accuracy"],
        "accuracy_low": acc_low,
        "accuracy_high": acc_high,
        "tpr": h["tpr"],
        "tpr_low": h.get("tpr_low"),
        "tpr_high": h.get("tpr_high"),
        "auc": h["auc"],
        "auc_low": h.get("auc_low"),
        "auc_high": h.get("auc_high"),
    }


def render_compare_html(document: dict[str, Any]) -> str:
    attack_name = document["headline"]["attack"]
    headline_attack = "LiRA" if attack_name == "lira" else attack_name
    fpr = document["headline"]["fpr"]
    rows, points = [], []
    baseline = document["baseline"]
    for variant in document["variants"]:
        h = _headline(variant, attack_name, fpr)
        accuracy_ci = _accuracy_ci(variant["holdout_accuracy"], variant["n_nonmembers"])
        rows.append(_variant_row(variant, h, accuracy_ci))
        points.append(_variant_point(variant, h, accuracy_ci, baseline))
    data = document["data"]
    attacks = document["attacks"]
    delta = next(
        (a["epsilon_detail"].get("delta") for v in document["variants"] for a in v["attacks"] if a["epsilon_detail"]),
        1e-5,
    )
    frontier = document.get("frontier") or {}  # compare.json files written before the frontier have none
    recommendation = frontier.get("recommendation") or {}
    environment = Environment(autoescape=select_autoescape(default_for_string=True), undefined=StrictUndefined)
    return environment.from_string(_TEMPLATE).render(
        recipe=document["recipe"]["spec"],
        pool=data["pool"],
        n_members=data["n_members"],
        n_holdout=data["n_holdout"],
        stratified=data["stratified"],
        seed=document["seed"],
        attacks=", ".join(attacks),
        references=document["references"],
        notes=document.get("notes", []),
        headline_attack=headline_attack,
        headline_fpr=f"{100 * fpr:g}%",
        delta=f"{delta:g}",
        rows=rows,
        frontier_rule=frontier.get("rule", ""),
        recommendation=recommendation.get("reason", ""),
        recommendation_budget=", ".join(f"{k}={v:g}" for k, v in (recommendation.get("budget") or {}).items()),
        tpr_plot=_scatter(
            points, "tpr", f"{headline_attack} TPR at {100 * fpr:g}% FPR (leakage) ↑", fpr, "chance (TPR = FPR)"
        ),
        auc_plot=_scatter(points, "auc", f"{headline_attack} AUC (leakage) ↑", 0.5, "chance (AUC 0.5)"),
    )
