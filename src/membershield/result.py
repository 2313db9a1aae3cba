"""The audit result document (``audit.json``): its schema, ``save`` and a validating ``load``, and the
questions everyone asks of a result.

Nothing else in membershield parses ``audit.json``: the report, the gate, the history store, ``compare``,
MLflow logging and the command line read results through :func:`load` (or :func:`load_document` for the
JSON object itself, whose sha256 identifies an audit in the history) and ask them through
:meth:`AttackResult.rate_at`, :meth:`AuditResult.headline` and :func:`summary`. One rule decides which
entry is "the TPR at this FPR" (:func:`fpr_matches`).
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from membershield.errors import InputDataError, MembershieldError

SCHEMA_VERSION = "1.0"
HEADLINE_FPR = 0.01


def fpr_matches(a: float, b: float) -> bool:
    """Whether two FPRs are the same operating point (the one matching rule; floats from TOML, JSON and
    arithmetic differ in their last bits).

    >>> fpr_matches(0.01, 0.1 / 10), fpr_matches(0.01, 0.011)
    (True, False)
    """
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def rate_in(rates: list[Mapping[str, Any]], fpr: float) -> Mapping[str, Any] | None:
    """The entry of a ``tpr_at_fpr`` list at ``fpr`` (measurable or not), or None when it was not asked for.

    >>> rate_in([{"fpr": 0.001}, {"fpr": 0.01, "tpr": 0.2}], 0.01)["tpr"]
    0.2
    """
    return next((r for r in rates if isinstance(r.get("fpr"), int | float) and fpr_matches(r["fpr"], fpr)), None)


def measured(rate: Mapping[str, Any] | None) -> bool:
    """Whether a rate entry holds a number (measurable, with a TPR)."""
    return bool(rate) and bool(rate.get("measurable")) and rate.get("tpr") is not None


@dataclass
class AttackResult:
    name: str
    title: str
    citation: str
    access: str
    auc: float
    auc_ci_low: float
    auc_ci_high: float
    advantage: float
    epsilon_lower_bound: float
    epsilon_detail: dict[str, Any]
    tpr_at_fpr: list[dict[str, Any]]
    ppv: dict[str, Any]
    slices: list[dict[str, Any]]
    top_exposed: list[dict[str, Any]]
    params: dict[str, Any]
    seconds: float
    advantage_ci_low: float | None = None  # absent from audits written before the advantage had an interval
    advantage_ci_high: float | None = None

    def rate_at(self, fpr: float) -> Mapping[str, Any] | None:
        """This attack's TPR entry at ``fpr`` (see :func:`rate_in`)."""
        return rate_in(self.tpr_at_fpr, fpr)


@dataclass(frozen=True)
class Headline:
    """The strongest attack at the headline FPR (1% when measured, else the lowest measurable one)."""

    attack: AttackResult
    rate: Mapping[str, Any] | None  # None when no attack has a measurable TPR at any FPR


@dataclass
class AuditResult:
    target: dict[str, Any]
    data: dict[str, Any]
    utility: dict[str, Any]
    split_check: dict[str, Any] | None
    references: dict[str, Any]
    attacks: list[AttackResult]
    config: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    # "model": one trained model audited (records are trials); "recipe": the privacy game, K models of one
    # training pipeline, each the target of the others, whose (model, record) trials are pooled (``game``
    # says how: the models, the clustered intervals, the per-record exposure); "diffusion": one diffusion
    # model, its records images (audit-diffusion); "synthetic": a synthetic table, its records the real ones
    # it was made from (audit-synthetic). Older audits are "model".
    mode: str = "model"
    game: dict[str, Any] | None = None
    # One decision per data subject (--user-column): per attack, per aggregation, an entry shaped like an
    # attack entry whose counts are users (audit.user_level). None without a user column, and in older audits.
    user_level: dict[str, Any] | None = None
    # The slice and attack with the highest TPR at 1% FPR over every slicing (worst_slice.worst_slice);
    # worked out from the attacks when not given, absent (None) in audits written before it existed.
    worst_slice: dict[str, Any] | None = None
    # The unlearning check (--forgotten): per attack, the forgotten records against the holdout (AUC with
    # its interval) and whether any attack tells them apart. None without --forgotten, and in older audits.
    unlearning: dict[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, str] = field(default_factory=lambda: environment_stamp())
    # The JSON object this result was loaded from (its sha256 identifies the audit); None when made here.
    # A loaded result is read, not edited: to_dict() gives this object back unchanged.
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source is None and self.worst_slice is None and self.attacks:
            from membershield.worst_slice import worst_slice  # it asks questions of results: imports this module

            unit = "trials" if self.mode == "recipe" else "records"
            attacks = [jsonable(asdict(a)) for a in self.attacks]
            self.worst_slice = jsonable(worst_slice(attacks, self.user_level, unit=unit))

    def to_dict(self) -> dict[str, Any]:
        """The ``audit.json`` document: as loaded (unchanged) for a loaded result, else as written."""
        if self.source is not None:
            return self.source
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "source"}
        document["attacks"] = [asdict(a) for a in self.attacks]
        return jsonable(document)

    def write_json(self, path: str | Path) -> None:
        save(self, path)

    def attack(self, name: str) -> AttackResult:
        for result in self.attacks:
            if result.name == name:
                return result
        raise KeyError(name)

    def headline(self, fpr: float = HEADLINE_FPR) -> Headline:
        """The attack with the highest TPR at ``fpr`` (ties: higher AUC), or at the lowest FPR the audit
        measured when ``fpr`` is not measurable; by AUC alone when no TPR is measurable."""
        measurable = sorted({r["fpr"] for a in self.attacks for r in a.tpr_at_fpr if measured(r)})
        chosen = next((f for f in measurable if fpr_matches(f, fpr)), measurable[0] if measurable else None)
        if chosen is None:
            return Headline(max(self.attacks, key=lambda a: _or_low(a.auc)), None)

        def strength(attack: AttackResult) -> tuple[float, float]:
            rate = attack.rate_at(chosen)
            return (rate["tpr"] if measured(rate) else -1.0), _or_low(attack.auc)

        best = max(self.attacks, key=strength)
        return Headline(best, best.rate_at(chosen))


def _or_low(value: float | None) -> float:
    return value if value is not None else -1.0


# --------------------------------------------------------------------------------------------------
# The history summary: what the store keeps of an audit, and what regression checks compare.


def fpr_key(fpr: float) -> str:
    """How an FPR is written as a key of the stored summary.

    >>> fpr_key(0.01)
    '0.01'
    """
    return repr(float(fpr))


def summary(audit: AuditResult | Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of an audit that history and regression checks need, as plain JSON data."""
    document = audit.to_dict() if isinstance(audit, AuditResult) else audit
    attacks = {}
    for attack in document.get("attacks", []):
        attacks[attack["name"]] = {
            "auc": attack.get("auc"),
            "auc_ci_low": attack.get("auc_ci_low"),
            "auc_ci_high": attack.get("auc_ci_high"),
            "advantage": attack.get("advantage"),
            "epsilon_lower_bound": attack.get("epsilon_lower_bound"),
            "tpr_at_fpr": {
                fpr_key(rate["fpr"]): {k: rate.get(k) for k in ("tpr", "ci_low", "ci_high", "measurable")}
                for rate in attack.get("tpr_at_fpr", [])
            },
        }
    data = document.get("data", {})
    split = document.get("split_check")
    return {
        "attacks": attacks,
        "accuracy_gap": document.get("utility", {}).get("accuracy_gap"),
        "split_check_ok": split.get("ok") if isinstance(split, Mapping) else None,
        "n_members": data.get("n_members"),
        "n_nonmembers": data.get("n_nonmembers"),
    }


def summary_rate(metrics: Mapping[str, Any], fpr: float = HEADLINE_FPR) -> Mapping[str, Any] | None:
    """An attack's stored rate at ``fpr`` from its :func:`summary` entry (the same matching rule)."""
    rates = metrics.get("tpr_at_fpr", {})
    return next((r for key, r in rates.items() if fpr_matches(float(key), fpr)), None)


def worst_in_summary(stored: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The attack of a stored summary with the highest AUC, with its metrics."""
    attacks = [(n, m) for n, m in stored.get("attacks", {}).items() if m.get("auc") is not None]
    return max(attacks, key=lambda item: item[1]["auc"]) if attacks else None


# --------------------------------------------------------------------------------------------------
# save and load


def save(result: AuditResult, path: str | Path) -> None:
    """Write ``audit.json`` (non-finite numbers as null: JSON has no NaN, and a reader must not guess)."""
    try:
        Path(path).write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise MembershieldError(f"cannot write {path}: {exc.strerror} (pass --out DIR)") from exc


REQUIRED = ("target", "data", "utility", "split_check", "references", "attacks", "config", "timings")
OBJECTS = ("target", "data", "utility", "references", "config", "timings")
NUMBERS_OR_NULL = ("auc", "auc_ci_low", "auc_ci_high", "advantage", "epsilon_lower_bound")


def _attack_problems(i: int, entry: Any) -> list[str]:
    where = f"attack #{i + 1}"
    if not isinstance(entry, Mapping):
        return [f"{where} is not an object"]
    where = f"attack #{i + 1} ({entry.get('name', 'unnamed')})"
    required = [f.name for f in fields(AttackResult) if f.name not in ("advantage_ci_low", "advantage_ci_high")]
    problems = [f"{where} lacks '{name}'" for name in required if name not in entry]
    return problems + _number_problems(where, entry) + _rates_problems(where, entry)


def _number_problems(where: str, entry: Mapping[str, Any]) -> list[str]:
    problems = []
    for name in NUMBERS_OR_NULL:
        value = entry.get(name)
        if name in entry and value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{where}: '{name}' must be a number or null, got {value!r}")
    return problems


def _rates_problems(where: str, entry: Mapping[str, Any]) -> list[str]:
    rates = entry.get("tpr_at_fpr")
    if "tpr_at_fpr" in entry and not (
        isinstance(rates, list) and all(isinstance(r, Mapping) and "fpr" in r and "measurable" in r for r in rates)
    ):
        return [f"{where}: 'tpr_at_fpr' must be a list of objects with 'fpr' and 'measurable'"]
    return []


def document_problems(document: Any) -> list[str]:
    """Every problem that makes a JSON value unusable as an audit result; empty when it is one."""
    if not isinstance(document, Mapping):
        return [f"it is a JSON {type(document).__name__}, not an object"]
    problems = []
    version = str(document.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(
            f"schema version {version or 'missing'} is not supported (this membershield reads"
            f" {SCHEMA_VERSION.split('.')[0]}.x; re-run the audit with this version)"
        )
    attacks = document.get("attacks")
    if not isinstance(attacks, list):
        problems.append("it has no 'attacks' list with named attack results")
    elif not attacks:
        problems.append("its 'attacks' list is empty: an audit that ran no attack cannot be reported or gated")
    else:
        for i, entry in enumerate(attacks):
            problems += _attack_problems(i, entry)
    problems += [f"it lacks '{name}'" for name in REQUIRED if name not in document and name != "attacks"]
    problems += [f"'{n}' must be an object" for n in OBJECTS if n in document and not _is_object(document[n])]
    problems += _mode_problems(document)
    problems += _synthetic_problems(document)
    problems += _user_level_problems(document.get("user_level"))
    problems += _unlearning_problems(document.get("unlearning"))
    worst = document.get("worst_slice")
    if worst is not None and not (_is_object(worst) and isinstance(worst.get("slicings"), list)):
        problems.append("'worst_slice' must be null or an object with a 'slicings' list")
    data = document.get("data")
    if _is_object(data):
        for name in ("n_members", "n_nonmembers"):
            if not isinstance(data.get(name), int) or isinstance(data.get(name), bool):
                problems.append(f"'data.{name}' must be a whole number")
    return problems


def _user_level_problems(user_level: Any) -> list[str]:
    """``user_level`` is optional (null or absent before user-level audits existed); when present, each
    (attack, aggregation) entry must have the numbers and rates an attack entry has."""
    if user_level is None:
        return []
    if not _is_object(user_level) or not _is_object(user_level.get("attacks")):
        return ["'user_level' must be null or an object with an 'attacks' object"]
    problems = []
    for name, by_aggregation in user_level["attacks"].items():
        if not _is_object(by_aggregation):
            problems.append(f"'user_level.attacks.{name}' must be an object of aggregations")
            continue
        for how, entry in by_aggregation.items():
            where = f"user_level {name} {how}"
            if not _is_object(entry):
                problems.append(f"{where} is not an object")
                continue
            problems += [f"{where} lacks '{key}'" for key in ("auc", "tpr_at_fpr", "n_users") if key not in entry]
            problems += _number_problems(where, entry)
            problems += _rates_problems(where, entry)
    return problems


def _unlearning_problems(unlearning: Any) -> list[str]:
    """``unlearning`` is optional (null or absent without --forgotten); when present, it says whether the
    forgotten records are distinguishable and each attack's AUC over them."""
    if unlearning is None:
        return []
    if not _is_object(unlearning) or not isinstance(unlearning.get("attacks"), list):
        return ["'unlearning' must be null or an object with an 'attacks' list"]
    problems = []
    if not isinstance(unlearning.get("forgotten_distinguishable"), bool):
        problems.append("'unlearning.forgotten_distinguishable' must be true or false")
    for key in ("n_forgotten", "n_holdout"):
        if not isinstance(unlearning.get(key), int) or isinstance(unlearning.get(key), bool):
            problems.append(f"'unlearning.{key}' must be a whole number")
    for i, entry in enumerate(unlearning["attacks"]):
        where = f"unlearning attack #{i + 1}"
        if not _is_object(entry):
            problems.append(f"{where} is not an object")
            continue
        needed = ("name", "auc", "auc_ci_low", "auc_ci_high")
        problems += [f"{where} lacks '{key}'" for key in needed if key not in entry]
        problems += _number_problems(where, entry)
    return problems


# "diffusion": images of a diffusion model (audit-diffusion); "synthetic": a synthetic table's real source
# records (audit-synthetic), with its own "synthetic" and "anonymeter" sections.
MODES = ("model", "recipe", "diffusion", "synthetic")


def _mode_problems(document: Mapping[str, Any]) -> list[str]:
    """An audit is of one model (the default, as before modes existed), of a recipe, with its game, or of a
    diffusion model's images."""
    mode = document.get("mode", "model")
    if mode not in MODES:
        return [f"'mode' must be one of {', '.join(MODES)}, got {mode!r}"]
    if mode == "recipe" and not _is_object(document.get("game")):
        return ["a recipe audit ('mode': 'recipe') must have a 'game' object"]
    return []


# What the report and the gate read of a synthetic-data audit's own sections.
ANONYMETER_RISKS = ("singling_out", "linkability", "inference")
DCR_COUNTS = ("n_synthetic", "n_per_side", "closer_to_train")
DCR_NUMBERS = ("risk", "share_closer_to_train")
DCR_INTERVALS = ("ci_low", "ci_high", "share_ci_low", "share_ci_high")
ANONYMETER_COUNTS = ("n_attacks", "n_success", "n_baseline")


def _synthetic_problems(document: Mapping[str, Any]) -> list[str]:
    """A synthetic-data audit's ``synthetic`` section (null: no DCR risk, which the gate fails unless allowed) is
    an object whose ``dcr_risk`` holds its counts, share and risk (intervals may be null); its ``anonymeter``
    section is null (run without anonymeter) or an object."""
    if document.get("mode", "model") != "synthetic":
        return []
    section = document.get("synthetic")
    if section is not None and not (_is_object(section) and _is_object(section.get("dcr_risk"))):
        return ["'synthetic' must be null or an object with a 'dcr_risk' object"]
    if section is None:
        return _anonymeter_problems(document.get("anonymeter"))
    risk = section["dcr_risk"]
    where = "'synthetic.dcr_risk."
    problems = [f"{where}{k}' must be a whole number" for k in DCR_COUNTS if not _whole(risk.get(k))]
    problems += [f"{where}{k}' must be a number" for k in DCR_NUMBERS if not _number(risk.get(k))]
    problems += [
        f"{where}{k}' must be a number or null" for k in DCR_INTERVALS if not _number(risk.get(k), or_null=True)
    ]
    return problems + _anonymeter_problems(document.get("anonymeter"))


def _anonymeter_problems(section: Any) -> list[str]:
    """Each anonymeter risk is null (not computed), an entry with the ``error`` that stopped it, or a risk
    with its interval and anonymeter's attack counts."""
    if section is None:
        return []
    if not _is_object(section):
        return ["'anonymeter' must be null or an object"]
    problems = []
    for name in ANONYMETER_RISKS:
        entry, where = section.get(name), f"'anonymeter.{name}"
        if entry is None:
            continue
        if not _is_object(entry):
            problems.append(f"{where}' must be null or an object")
        elif entry.get("risk") is None:
            if not isinstance(entry.get("error"), str):
                problems.append(f"{where}' has no 'risk' and no 'error' saying why")
        else:
            problems += [
                f"{where}.{k}' must be a number" for k in ("risk", "ci_low", "ci_high") if not _number(entry.get(k))
            ]
            problems += [f"{where}.{k}' must be a whole number" for k in ANONYMETER_COUNTS if not _whole(entry.get(k))]
            if not _number(entry.get("n_control"), or_null=True):
                problems.append(f"{where}.n_control' must be a number or null")
    return problems


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, or_null: bool = False) -> bool:
    if value is None:
        return or_null
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid(path: object, problems: list[str]) -> InputDataError:
    return InputDataError(
        f"{path}: not an audit result membershield can read: {'; '.join(problems)}"
        " (pass the audit.json that `membershield audit` wrote)"
    )


def audit_json_path(path: str | Path) -> Path:
    """``path``, or the ``audit.json`` inside it when it is a directory; an error when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "audit.json"
    if not path.is_file():
        raise InputDataError(f"{path}: file not found; pass the audit.json written by `membershield audit`")
    return path


def load_document(path: str | Path) -> dict[str, Any]:
    """The validated JSON object of an ``audit.json`` (or of the one in a directory).

    Raises one :class:`InputDataError` naming the file and every problem found: missing, not JSON, an
    incompatible schema version, a missing or malformed field.
    """
    path = audit_json_path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputDataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); pass the audit.json written by"
            " `membershield audit`"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot be read ({exc}); check the file and its permissions") from exc
    check_document(document, path)
    return document


def check_document(document: Any, where: object = "audit result") -> None:
    """Raise :class:`InputDataError` listing every problem when ``document`` is not an audit result."""
    problems = document_problems(document)
    if problems:
        raise _invalid(where, problems)


def from_document(document: Mapping[str, Any]) -> AuditResult:
    """An :class:`AuditResult` over a validated document (kept as its :attr:`~AuditResult.source`)."""
    check_document(document)
    names = {f.name for f in fields(AttackResult)}
    attacks = [AttackResult(**{k: v for k, v in entry.items() if k in names}) for entry in document["attacks"]]
    known = {f.name for f in fields(AuditResult)} - {"attacks", "source"}
    values = {k: v for k, v in document.items() if k in known}
    return AuditResult(attacks=attacks, source=dict(document), **values)


def load(path: str | Path) -> AuditResult:
    """Read and validate an ``audit.json`` (or a directory holding one)."""
    return from_document(load_document(path))


# --------------------------------------------------------------------------------------------------
# provenance


@cache
def _code_version() -> str | None:
    """The git commit of the checkout membershield runs from, with ``+dirty`` for local changes."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def environment_stamp() -> dict[str, str]:
    """Versions of Python, the platform, membershield (and its git commit from a checkout) and the libraries
    the numbers depend on."""
    stamp = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("membershield", "numpy", "scipy", "scikit-learn", "pandas", "torch"):
        try:
            stamp[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            stamp[package] = "not installed"
    commit = _code_version()
    if commit is not None:
        stamp["membershield_git"] = commit
    return stamp


def jsonable(value: Any) -> Any:
    """Plain JSON types; non-finite floats become None (JSON has no NaN, and a reader must not guess).

    >>> jsonable({"a": np.float32(1.5), "b": [float("nan"), np.int64(2)]})
    {'a': 1.5, 'b': [None, 2]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
