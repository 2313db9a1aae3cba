"""The gate: thresholds on an audit result, turned into a pass/fail verdict with one reason per check.

A policy (TOML) sets upper limits on what an attack may achieve against the model. Each limit is judged on
the 95% interval the audit reports, not only on the point estimate: with ``bound = "upper"`` (the default)
a limit fails as soon as the upper end of the interval exceeds it, so a small audit cannot pass a model by
luck; ``bound = "point"`` compares the point estimate. A TPR the audit could not measure (too few
non-members for the FPR) fails, unless the policy says ``allow_unmeasurable = true``.

``max_regression`` compares the worst attack with the last *passing* audit of the same model, e.g.
``{auc = 0.02}``: the worst AUC may not exceed that audit's worst AUC by more than 0.02. Both audits are
judged the same way (upper ends of the intervals under ``bound = "upper"``, point estimates otherwise), so
re-auditing an unchanged model does not fail.

Everything here is pure: no printing, no database. The CLI renders a :class:`Verdict`; the history store
supplies the previous audit.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from membershield.attacks import REGISTRY
from membershield.errors import ConfigError
from membershield.metrics import nonmembers_needed, rate_difference_interval
from membershield.result import AuditResult, check_document, fpr_key, load_document, rate_in, summary

BOUNDS = ("upper", "point")
REGRESSION_METRICS = ("auc", "advantage", "epsilon_lower_bound")


# --------------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class Policy:
    """Limits a model's audit must respect. ``None`` (or an empty table) means "no limit on this"."""

    max_auc: float | None = None
    max_tpr_at_fpr: dict[float, float] = field(default_factory=dict)
    max_worst_slice_tpr_at_fpr: dict[float, float] = field(default_factory=dict)  # over every slice (gate_slices)
    max_advantage: float | None = None
    max_epsilon_lower_bound: float | None = None
    max_accuracy_gap: float | None = None
    max_dcr_risk: float | None = None  # synthetic-data audits (gate_synthetic)
    max_anonymeter_risk: float | None = None  # synthetic-data audits: each anonymeter risk (gate_synthetic)
    require_split_check: bool = False
    attacks: tuple[str, ...] | None = None
    max_regression: dict[str, float] = field(default_factory=dict)
    bound: str = "upper"
    allow_unmeasurable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The policy as TOML-shaped plain data (FPR keys as strings), e.g. to store next to a verdict."""
        data = asdict(self)
        data["max_tpr_at_fpr"] = {fpr_key(f): v for f, v in self.max_tpr_at_fpr.items()}
        data["max_worst_slice_tpr_at_fpr"] = {fpr_key(f): v for f, v in self.max_worst_slice_tpr_at_fpr.items()}
        data["attacks"] = list(self.attacks) if self.attacks is not None else None
        return data


POLICY_KEYS = tuple(f for f in Policy.__dataclass_fields__)
_LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "max_auc": (0.0, 1.0),
    "max_advantage": (0.0, 1.0),
    "max_epsilon_lower_bound": (0.0, math.inf),
    "max_accuracy_gap": (-1.0, 1.0),
    "max_dcr_risk": (0.0, 1.0),
    "max_anonymeter_risk": (0.0, 1.0),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _suggest(name: str, choices: tuple[str, ...] | list[str], n: int = 1) -> str:
    close = difflib.get_close_matches(name, list(choices), n=n)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def policy_problems(table: Mapping[str, Any]) -> list[str]:
    """Every problem with a policy table, each explained with its fix; an empty list means it is valid."""
    problems: list[str] = []
    for key in table:
        if key not in POLICY_KEYS:
            problems.append(f"unknown key '{key}'{_suggest(key, POLICY_KEYS)}; valid keys are {', '.join(POLICY_KEYS)}")
    for key, (low, high) in _LIMIT_RANGES.items():
        if key not in table:
            continue
        value = table[key]
        if not _is_number(value):
            problems.append(f"'{key}' must be a number, got {value!r}")
        elif not low <= value <= high:
            span = f"at least {low:g}" if math.isinf(high) else f"between {low:g} and {high:g}"
            problems.append(f"'{key}' must be {span}, got {value!r}")
    for key in ("require_split_check", "allow_unmeasurable"):
        if key in table and not isinstance(table[key], bool):
            problems.append(f"'{key}' must be true or false, got {table[key]!r}")
    if "bound" in table and table["bound"] not in BOUNDS:
        problems.append(f'\'bound\' must be "upper" or "point", got {table["bound"]!r}')
    for key in ("max_tpr_at_fpr", "max_worst_slice_tpr_at_fpr"):
        if key not in table:
            continue
        rates = table[key]
        if not isinstance(rates, Mapping):
            problems.append(f"'{key}' must be a table of FPR = TPR limit, e.g. {{\"0.01\" = 0.05}}, got {rates!r}")
        else:
            for fpr, limit in rates.items():
                try:
                    as_float = float(fpr)
                except ValueError:
                    as_float = math.nan
                if not 0 < as_float < 1:
                    problems.append(f"'{key}' key {fpr!r} must be an FPR strictly between 0 and 1")
                if not _is_number(limit) or not 0 <= limit <= 1:
                    problems.append(f"'{key}' limit for FPR {fpr} must be a number in [0, 1], got {limit!r}")
    if "attacks" in table:
        names = table["attacks"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            problems.append(f"'attacks' must be a non-empty list of attack names, got {names!r}")
        else:
            known = _attack_names()
            for name in names:
                if name not in known:
                    problems.append(
                        f"unknown attack '{name}' in 'attacks'{_suggest(name, known, n=2)};"
                        f" known attacks are {', '.join(known)}"
                    )
    if "max_regression" in table:
        regression = table["max_regression"]
        if not isinstance(regression, Mapping):
            problems.append(f"'max_regression' must be a table such as {{auc = 0.02}}, got {regression!r}")
        else:
            for metric, limit in regression.items():
                if metric not in REGRESSION_METRICS:
                    problems.append(
                        f"unknown metric '{metric}' in 'max_regression'{_suggest(metric, REGRESSION_METRICS)};"
                        f" choose from {', '.join(REGRESSION_METRICS)}"
                    )
                if not _is_number(limit) or limit < 0:
                    problems.append(f"'max_regression' allowance for {metric} must be a number ≥ 0, got {limit!r}")
    limits = (
        "max_auc",
        "max_tpr_at_fpr",
        "max_worst_slice_tpr_at_fpr",
        "max_advantage",
        "max_epsilon_lower_bound",
        "max_accuracy_gap",
        "max_dcr_risk",
        "max_anonymeter_risk",
    )
    sets_something = any(table.get(k) not in (None, {}) for k in (*limits, "max_regression"))
    if not problems and not sets_something and table.get("require_split_check") is not True:
        problems.append(f"the policy sets no limit; add at least one of {', '.join(limits)}, max_regression")
    return problems


def _attack_names() -> list[str]:
    """Every attack an audit can report: classifier attacks, then text (language-model), diffusion and
    synthetic-data attacks."""
    from membershield.diffusion.attacks import REGISTRY as DIFFUSION_REGISTRY
    from membershield.synthetic.attacks import REGISTRY as SYNTHETIC_REGISTRY
    from membershield.text.attacks import KNOWN as TEXT_REGISTRY

    names = [*REGISTRY, *(name for name in TEXT_REGISTRY if name not in REGISTRY)]
    names += [name for name in DIFFUSION_REGISTRY if name not in names]
    return [*names, *(name for name in SYNTHETIC_REGISTRY if name not in names)]


def parse_policy(table: Mapping[str, Any], source: str = "policy") -> Policy:
    """A validated :class:`Policy`; raises :class:`ConfigError` listing every problem on one line."""
    problems = policy_problems(table)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    attacks = table.get("attacks")
    return Policy(
        max_auc=table.get("max_auc"),
        max_tpr_at_fpr={float(k): float(v) for k, v in table.get("max_tpr_at_fpr", {}).items()},
        max_worst_slice_tpr_at_fpr={float(k): float(v) for k, v in table.get("max_worst_slice_tpr_at_fpr", {}).items()},
        max_advantage=table.get("max_advantage"),
        max_epsilon_lower_bound=table.get("max_epsilon_lower_bound"),
        max_accuracy_gap=table.get("max_accuracy_gap"),
        max_dcr_risk=table.get("max_dcr_risk"),
        max_anonymeter_risk=table.get("max_anonymeter_risk"),
        require_split_check=bool(table.get("require_split_check", False)),
        attacks=tuple(attacks) if attacks is not None else None,
        max_regression={str(k): float(v) for k, v in table.get("max_regression", {}).items()},
        bound=table.get("bound", "upper"),
        allow_unmeasurable=bool(table.get("allow_unmeasurable", False)),
    )


def load_policy(path: str | Path) -> Policy:
    """Read a policy file: the ``[gate]`` table of a TOML file, or its top level."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"policy file not found: {p} (pass --policy FILE.toml)")
    try:
        document = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {p} is not valid TOML: {exc}") from exc
    table = document.get("gate", document)
    if not isinstance(table, dict):
        raise ConfigError(f"policy file {p}: [gate] must be a table")
    if table is not document:
        # Settings beside a [gate] table would be silently ignored; a file holds one or the other.
        stray = [key for key, value in document.items() if key != "gate" and not isinstance(value, dict)]
        if stray:
            raise ConfigError(
                f"policy file {p}: {', '.join(stray)} outside the [gate] table would be ignored; move them into"
                " [gate] (or drop the [gate] header)"
            )
    return parse_policy(table, source=f"policy file {p}")


# --------------------------------------------------------------------------------------------------
# Audit input


def load_audit(path: str | Path) -> dict[str, Any]:
    """The validated document of an ``audit.json`` (:func:`membershield.result.load_document`)."""
    return load_document(path)


# --------------------------------------------------------------------------------------------------
# Checks and verdict


@dataclass(frozen=True)
class Check:
    """One limit applied to one attack (or to the audit as a whole when ``attack`` is None)."""

    attack: str | None
    metric: str
    passed: bool
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    limit: float | None = None
    reason: str = ""

    @property
    def subject(self) -> str:
        return self.attack if self.attack is not None else "audit"

    def describe(self) -> str:
        """One line: attack, metric, value with its interval, limit, and why it passed or failed."""
        parts = [f"{self.subject} {self.metric}"]
        if self.value is not None:
            number = f"{_fmt(self.value)}"
            if self.ci_low is not None and self.ci_high is not None:
                number += f" (95% CI {_fmt(self.ci_low)}–{_fmt(self.ci_high)})"
            parts.append(number)
        if self.limit is not None:
            parts.append(f"limit {_fmt(self.limit)}")
        line = ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]
        return f"{line}: {self.reason}" if self.reason else line


def _fmt(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    compared_with: str | None = None  # the earlier audit a regression limit was judged against

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "compared_with": self.compared_with,
            "checks": [asdict(c) | {"line": c.describe()} for c in self.checks],
        }


def _judged(point: float, high: float | None, bound: str) -> tuple[float, str]:
    if bound == "upper" and high is not None:
        return high, "upper end of the 95% interval"
    return point, "point estimate"


def _limit_check(
    attack: str | None,
    metric: str,
    limit: float,
    bound: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    what: str = "",
    aside: str = "",
) -> Check:
    if value is None:
        return Check(attack, metric, False, limit=limit, reason="the audit has no value for it (null)")
    judged, judged_what = _judged(value, high, bound)
    what = what or judged_what
    if judged > limit:
        reason = f"{what} {_fmt(judged)} exceeds the limit{aside}"
        return Check(attack, metric, False, value, low, high, limit, reason)
    return Check(attack, metric, True, value, low, high, limit, f"{what} {_fmt(judged)} within the limit{aside}")


def _tpr_checks(attack: Mapping[str, Any], policy: Policy, n_nonmembers: Any) -> list[Check]:
    checks = []
    rates = attack.get("tpr_at_fpr") or []
    for fpr, limit in sorted(policy.max_tpr_at_fpr.items()):
        metric = f"TPR@{100 * fpr:g}%FPR"
        entry = rate_in(rates, fpr)
        if entry is None:
            measured = ", ".join(f"{100 * r['fpr']:g}%" for r in rates if "fpr" in r) or "none"
            reason = f"the audit did not measure this FPR (it has {measured}); rerun it with this FPR in fprs"
            checks.append(Check(attack["name"], metric, False, limit=limit, reason=reason))
            continue
        if not entry.get("measurable", False):
            have = entry.get("n_nonmembers", n_nonmembers)
            need = f"not measurable: need ≥ {nonmembers_needed(fpr)} non-members (the audit has {have})"
            if policy.allow_unmeasurable:
                checks.append(Check(attack["name"], metric, True, limit=limit, reason=f"{need}; allowed by policy"))
            else:
                checks.append(Check(attack["name"], metric, False, limit=limit, reason=need))
            continue
        checks.append(
            _limit_check(
                attack["name"], metric, limit, policy.bound, entry.get("tpr"), entry.get("ci_low"), entry.get("ci_high")
            )
        )
    return checks


def accuracy_gap_interval(
    train_accuracy: float, n_train: int, holdout_accuracy: float, n_holdout: int
) -> tuple[float, float]:
    """95% interval of the train - holdout accuracy gap (:func:`metrics.rate_difference_interval`)."""
    interval = rate_difference_interval(
        round(train_accuracy * n_train), n_train, round(holdout_accuracy * n_holdout), n_holdout
    )
    return interval.low, interval.high


def _accuracy_gap_check(audit: Mapping[str, Any], policy: Policy) -> Check:
    assert policy.max_accuracy_gap is not None
    utility, data = audit.get("utility", {}), audit.get("data", {})
    gap = utility.get("accuracy_gap")
    low = high = None
    n_in, n_out = data.get("n_members"), data.get("n_nonmembers")
    train, holdout = utility.get("train_accuracy"), utility.get("holdout_accuracy")
    if all(isinstance(v, int) and v > 0 for v in (n_in, n_out)) and None not in (train, holdout):
        low, high = accuracy_gap_interval(train, n_in, holdout, n_out)
    return _limit_check(None, "accuracy gap", policy.max_accuracy_gap, policy.bound, gap, low, high)


def _split_check(audit: Mapping[str, Any]) -> Check:
    split = audit.get("split_check")
    if not isinstance(split, Mapping):
        return Check(None, "split check", False, reason="the audit ran without the split check; rerun it with it on")
    value, low, high = split.get("blind_auc"), split.get("ci_low"), split.get("ci_high")
    if split.get("ok"):
        return Check(None, "split check", True, value, low, high, reason="members and non-members look alike")
    reason = "SPLIT CHECK FAILED: members and non-members differ without querying the model"
    return Check(None, "split check", False, value, low, high, reason=reason)


def _worst(attacks: Mapping[str, Mapping[str, Any]], names: list[str], metric: str, bound: str):
    """(attack name, judged value) of the attack with the highest judged ``metric`` among ``names``."""
    best: tuple[str, float] | None = None
    for name in names:
        entry = attacks.get(name)
        if entry is None or entry.get(metric) is None:
            continue
        value = entry[metric]
        if metric == "auc" and bound == "upper" and entry.get("auc_ci_high") is not None:
            value = entry["auc_ci_high"]
        if best is None or value > best[1]:
            best = (name, value)
    return best


def _regression_checks(
    current: Mapping[str, Any], previous: Mapping[str, Any] | None, names: list[str], policy: Policy
) -> list[Check]:
    checks = []
    for metric, allowance in sorted(policy.max_regression.items()):
        label = f"{metric} regression"
        now = _worst(current["attacks"], names, metric, policy.bound)
        what = "upper end of the 95% interval" if metric == "auc" and policy.bound == "upper" else "point estimate"
        if now is None:
            checks.append(Check(None, label, False, reason=f"the audit has no {metric} for the judged attacks"))
            continue
        if previous is None:
            reason = "no earlier passing audit of this model to compare with"
            checks.append(Check(now[0], label, True, now[1], reason=reason))
            continue
        before = _worst(previous["attacks"], names, metric, policy.bound)
        if before is None:
            reason = "the earlier passing audit has none of these attacks; nothing to compare"
            checks.append(Check(now[0], label, True, now[1], reason=reason))
            continue
        limit = before[1] + allowance
        source = previous.get("label") or "the last passing audit"
        detail = f"worst attack's {metric} ({what}) vs {_fmt(before[1])} in {source} ({before[0]}) + {_fmt(allowance)}"
        passed = now[1] <= limit
        reason = ("within: " if passed else "regressed: ") + detail
        checks.append(Check(now[0], label, passed, now[1], limit=limit, reason=reason))
    return checks


def evaluate(
    audit: AuditResult | Mapping[str, Any], policy: Policy, previous: Mapping[str, Any] | None = None
) -> Verdict:
    """Judge an audit result (or its ``audit.json`` document) against a policy.

    ``previous`` is the last passing audit of the same model, as an audit document or as its
    :func:`membershield.result.summary` (optionally with a ``label`` naming it); it is needed only for
    ``max_regression``.
    """
    if isinstance(audit, AuditResult):
        audit = audit.to_dict()
    check_document(audit)
    by_name = {a["name"]: a for a in audit["attacks"]}
    names = list(policy.attacks) if policy.attacks is not None else list(by_name)
    n_nonmembers = audit.get("data", {}).get("n_nonmembers")
    checks: list[Check] = []
    for name in names:
        attack = by_name.get(name)
        if attack is None:
            reason = (
                f"the audit has no result for this attack (it ran {', '.join(by_name) or 'none'});"
                " rerun the audit with it in --attacks"
            )
            checks.append(Check(name, "present", False, reason=reason))
            continue
        if policy.max_auc is not None:
            checks.append(
                _limit_check(
                    name,
                    "AUC",
                    policy.max_auc,
                    policy.bound,
                    attack.get("auc"),
                    attack.get("auc_ci_low"),
                    attack.get("auc_ci_high"),
                )
            )
        checks += _tpr_checks(attack, policy, n_nonmembers)
        if policy.max_advantage is not None:
            low, high = attack.get("advantage_ci_low"), attack.get("advantage_ci_high")
            aside = "" if high is not None else " (this audit gives no interval for it)"
            value, limit = attack.get("advantage"), policy.max_advantage
            checks.append(_limit_check(name, "advantage", limit, policy.bound, value, low, high, aside=aside))
        if policy.max_epsilon_lower_bound is not None:
            value = attack.get("epsilon_lower_bound")
            what = "95% lower confidence bound"
            checks.append(
                _limit_check(name, "ε lower bound", policy.max_epsilon_lower_bound, "point", value, what=what)
            )
    if policy.max_worst_slice_tpr_at_fpr:
        from membershield.gate_slices import worst_slice_checks  # it builds on this module's checks

        checks += worst_slice_checks(audit, policy, [n for n in names if n in by_name])
    if policy.max_accuracy_gap is not None:
        checks.append(_accuracy_gap_check(audit, policy))
    if policy.max_dcr_risk is not None or policy.max_anonymeter_risk is not None:
        from membershield.gate_synthetic import synthetic_checks  # it builds on this module's checks

        checks += synthetic_checks(audit, policy)
    if policy.require_split_check:
        checks.append(_split_check(audit))
    if isinstance(audit.get("unlearning"), Mapping):
        from membershield.gate_unlearning import unlearning_checks  # it builds on this module's checks

        checks += unlearning_checks(audit["unlearning"])
    compared_with = None
    if policy.max_regression:
        current = summary(audit)
        before = None
        if previous is not None:
            before = dict(previous) if isinstance(previous.get("attacks"), Mapping) else summary(previous)
            before.setdefault("label", previous.get("label"))
            compared_with = before.get("label") or "the last passing audit"
        present = [n for n in names if n in by_name]
        checks += _regression_checks(current, before, present, policy)
    return Verdict(checks=checks, compared_with=compared_with)


# --------------------------------------------------------------------------------------------------
# JUnit XML


def junit_tree(verdict: Verdict, suite: str = "membershield gate") -> ET.ElementTree:
    """JUnit XML for CI systems: one testcase per check, a ``<failure>`` for each failed one."""
    root = ET.Element(
        "testsuites", name=suite, tests=str(len(verdict.checks)), failures=str(len(verdict.failures)), errors="0"
    )
    testsuite = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(verdict.checks)),
        failures=str(len(verdict.failures)),
        errors="0",
        skipped="0",
    )
    for check in verdict.checks:
        case = ET.SubElement(testsuite, "testcase", classname=f"membershield.{check.subject}", name=check.metric)
        if check.passed:
            ET.SubElement(case, "system-out").text = check.describe()
        else:
            failure = ET.SubElement(case, "failure", message=check.describe(), type="PolicyViolation")
            failure.text = check.describe()
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(verdict: Verdict, path: str | Path) -> None:
    p = Path(path)
    try:
        if p.parent != Path():
            p.parent.mkdir(parents=True, exist_ok=True)
        junit_tree(verdict).write(p, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise ConfigError(f"cannot write JUnit XML to {p}: {exc.strerror}") from exc
