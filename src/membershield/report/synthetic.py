"""What the reports show of a synthetic-data audit beyond its attacks: the DCR risk, verbatim copies,
anonymeter's three risks and what the gate's ``max_dcr_risk`` and ``max_anonymeter_risk`` would compare.

The figures are read from the validated result (``result.py`` checks the ``synthetic`` and ``anonymeter``
sections of a ``mode: "synthetic"`` audit) and worded here once, for the HTML page and the Markdown summary
alike. A risk anonymeter did not compute is shown as not computed, with the reason, never as 0.
"""

from __future__ import annotations

from typing import Any

from membershield.report import fmt_interval, fmt_pct
from membershield.result import ANONYMETER_RISKS

DCR_MEANING = (
    "whether synthetic records sit closer to the training records than to real records the generator never saw:"
    " each synthetic record's closest real record is sought among as many training as holdout records, a generator"
    " that did not memorise hits a training record half the time, and risk = max(0, 2·share − 1) is 0 at that half"
    " and 1 when every synthetic record is closest to a training record (Platzer & Reutterer 2021)"
)
ANONYMETER_MEANING = {
    "singling_out": "can a query on the synthetic records single out one training record?",
    "linkability": "can two halves of a training record's columns be linked through the synthetic records?",
    "inference": "can a secret column of a training record be guessed from its other columns?",
}
POINT = 'bound = "point"'  # the policy setting under which the gate compares the estimate instead
NOT_COMPUTED = {
    "inference": "no secret column: pass --secret-columns (or --label-column)",
    "linkability": "the table has a single column, so there are no two halves to link",
    "singling_out": "not in this audit",
}


def fmt_risk(value: float | None, low: float | None, high: float | None) -> str:
    """A risk in [0, 1] with its 95% interval.

    >>> fmt_risk(0.5, 0.25, 0.75), fmt_risk(0.1, None, None)
    ('0.500 (95% CI 0.250–0.750)', '0.100 (no interval)')
    """
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.3f} (no interval)"
    return f"{value:.3f} (95% CI {fmt_interval(low, high, percent=False)})"


def _count(value: float | None) -> str:
    """Anonymeter's counts: whole, except its singling-out control count, scaled to the training set's size.

    >>> _count(43.0), _count(12.5), _count(None)
    ('43', '12.5', 'n/a')
    """
    if value is None:
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _rate(rate: dict[str, float] | None) -> str:
    """An anonymeter success rate as it gives it: the Wilson-centred value ± its error."""
    return "n/a" if rate is None else f"{fmt_pct(rate['value'])} ± {fmt_pct(rate['error'])}"


def dcr_view(section: dict[str, Any]) -> dict[str, Any]:
    """The DCR risk and the verbatim copies, worded."""
    risk, copies = section["dcr_risk"], section.get("exact_copies") or {}
    share = f"{fmt_pct(risk['share_closer_to_train'])}"
    if risk.get("share_ci_low") is not None and risk.get("share_ci_high") is not None:
        share += f", 95% CI {fmt_interval(risk['share_ci_low'], risk['share_ci_high'])}"
    counts = (
        f"{risk['closer_to_train']} of {risk['n_synthetic']} synthetic records are closer to a training record than"
        f" to any holdout record, each compared with {risk['n_per_side']} training and {risk['n_per_side']} holdout"
        f" records (share {share}; 50% without memorisation)"
    )
    if risk.get("ties"):
        counts += f"; {risk['ties']} equally close to both, settled by a seeded coin"
    flagged = risk.get("ci_low") is not None and risk["ci_low"] > 0.0
    copied = None
    if copies:
        copied = (
            f"{copies['of_train']} of {copies['n_synthetic']} synthetic records are training records verbatim"
            f" (reproducing {copies['train_reproduced']} of {copies['n_train']} training records);"
            f" {copies['of_holdout']} are holdout records verbatim"
        )
    return {
        "risk": risk,
        "shown": fmt_risk(risk["risk"], risk.get("ci_low"), risk.get("ci_high")),
        "flagged": flagged,
        "state": "closer to the training records than chance" if flagged else "at the holdout baseline",
        "counts": counts,
        "copies": copied,
        "finding": section.get("finding"),
    }


def _setting(name: str, entry: dict[str, Any]) -> str:
    if name == "singling_out":
        return f"{entry.get('mode', 'multivariate')} queries on {entry.get('n_cols', 3)} columns"
    if name == "linkability":
        halves = entry.get("aux_cols") or [[], []]
        return (
            f"columns {', '.join(halves[0])} linked to {', '.join(halves[-1])}"
            f" through the {entry.get('n_neighbors', 10)} nearest synthetic records"
        )
    task = "regression" if entry.get("regression") else "classification"
    return f"'{entry.get('secret')}' guessed from every other column ({task})"


def anonymeter_row(name: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    """One anonymeter risk: its figures and counts as anonymeter reports them, or why it was not computed."""
    label = name.replace("_", "-")
    if entry is not None and entry.get("secret"):
        label += f" of '{entry['secret']}'"
    row: dict[str, Any] = {"name": name, "label": label, "question": ANONYMETER_MEANING[name], "measured": False}
    if entry is None:
        return {**row, "why": f"not computed: {NOT_COMPUTED[name]}"}
    if entry.get("risk") is None:
        return {
            **row,
            "why": f"not computed: anonymeter stopped ({entry.get('error')})",
            "setting": _setting(name, entry),
        }
    n = entry["n_attacks"]
    return {
        **row,
        "measured": True,
        "entry": entry,
        "shown": fmt_risk(entry["risk"], entry["ci_low"], entry["ci_high"]),
        "flagged": entry["ci_low"] > 0.0,
        "setting": _setting(name, entry),
        "n_attacks": n,
        "successes": {
            "train": f"{entry['n_success']} of {n}",
            "control": f"{_count(entry.get('n_control'))} of {n}",
            "baseline": f"{entry['n_baseline']} of {n}",
        },
        "rates": {
            "train": _rate(entry.get("attack_rate")),
            "control": _rate(entry.get("control_rate")),
            "baseline": _rate(entry.get("baseline_rate")),
        },
        "notes": list(entry.get("notes") or []),
    }


def _per_secret(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every secret's inference risk when there are several (the worst is the ``inference`` row)."""
    secrets = (entry or {}).get("per_secret") or []
    return [anonymeter_row("inference", s) for s in secrets] if len(secrets) > 1 else []


def _gate_view(dcr: dict[str, Any] | None, rows: list[dict[str, Any]], section: dict[str, Any] | None) -> list[dict]:
    """What each gate key would compare with its limit (the upper 95% bound by default, or the estimate)."""
    compares = "nothing: the audit has no DCR risk, so the check fails unless allow_unmeasurable = true"
    if dcr is not None:
        risk = dcr["risk"]
        upper = "n/a" if risk.get("ci_high") is None else f"{risk['ci_high']:.3f}"
        compares = f"the DCR risk's upper 95% bound, {upper} (its estimate, {risk['risk']:.3f}, with {POINT})"
    keys = [{"key": "max_dcr_risk", "compares": compares}]
    if section is None:
        compares = "nothing: anonymeter was not run, so the check fails unless allow_unmeasurable = true"
    else:
        parts = [
            f"{r['label']} {r['entry']['ci_high']:.3f} (estimate {r['entry']['risk']:.3f})"
            if r["measured"]
            else f"{r['label']} not computed (fails unless allow_unmeasurable = true)"
            for r in rows
        ]
        compares = f"each risk's upper 95% bound (estimate with {POINT}): " + "; ".join(parts)
    keys.append({"key": "max_anonymeter_risk", "compares": compares})
    return keys


def synthetic_view(document: dict[str, Any]) -> dict[str, Any] | None:
    """Everything the reports show of a synthetic-data audit's risks; None for every other audit."""
    if document.get("mode") != "synthetic":
        return None
    dcr = dcr_view(document["synthetic"]) if document.get("synthetic") else None
    section = document.get("anonymeter")
    rows = [anonymeter_row(name, section.get(name)) for name in ANONYMETER_RISKS] if section else []
    anonymeter = None
    if section is not None:
        anonymeter = {
            "rows": rows,
            "per_secret": _per_secret(section.get("inference")),
            "package": section.get("package", "anonymeter"),
            "control": section.get("control", "holdout"),
        }
    return {
        "dcr": dcr,
        "dcr_meaning": DCR_MEANING,
        "anonymeter": anonymeter,
        "anonymeter_missing": None if section is not None else "not computed: the audit ran with --no-anonymeter",
        "gate": _gate_view(dcr, rows, section),
        "generator": (document.get("target") or {}).get("generator"),
    }
