"""The synthetic-data audit: load, check, attack, measure, write.

Data flow: the training, holdout, synthetic (and population) tables (:mod:`.tables`: same columns, one
type per column, overlap refused, verbatim copies counted) and the generator when named
(:mod:`.generators`) -> the records as points (:mod:`.encode`, fitted on the real records) -> each
attack's scores (:mod:`.attacks`) -> the metrics, shared with every audit kind
(:mod:`membershield.audit.measure`) -> the DCR risk (:mod:`.dcr_risk`), anonymeter's risks
(:mod:`.anonymeter_risks`) and the split check -> an :class:`~membershield.result.AuditResult` with
``mode: "synthetic"`` (:mod:`.assemble`) -> every artifact (:func:`membershield.audit.write_audit_outputs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from membershield.audit.measure import MeasureSettings, ProgressCallback, run_attacks
from membershield.audit.outputs import AuditRun, write_audit_outputs
from membershield.config import DEFAULT_FPRS
from membershield.errors import ConfigError
from membershield.synthetic.anonymeter_risks import anonymeter_risks
from membershield.synthetic.assemble import SyntheticAuditResult, origin, scores_frame, synthetic_result
from membershield.synthetic.attacks import (
    REGISTRY,
    SyntheticAttack,
    SyntheticAttackInputs,
    create_synthetic_attack,
    parse_synthetic_attack_list,
)
from membershield.synthetic.dcr_risk import dcr_risk
from membershield.synthetic.encode import TableEncoder, category
from membershield.synthetic.generators import parse_generator
from membershield.synthetic.tables import SyntheticTables, load_synthetic_tables

# Below this many records (real and synthetic) every fit runs in one thread: more gain nothing measurable on
# tables this size, and on a busy machine OpenMP's waiting threads made the split check's 600-record fit
# 3.4 s instead of 0.02 s (the model audits' quantile-regression attack found the same).
THREADED_MIN_ROWS = 20_000


@dataclass
class SyntheticAuditConfig:
    train: str
    holdout: str
    synthetic: str
    population: str | None = None
    generator: str | None = None  # sdv:gaussian-copula, sdv:ctgan[:k=v,...] or FILE.py:function
    label_column: str | None = None  # what the classifier attack predicts (and the default secret)
    secret_columns: list[str] | None = None  # anonymeter's inference secrets (default: the label column)
    ignore_columns: list[str] = field(default_factory=list)
    attacks: list[str] | None = None  # None: every built-in attack the inputs allow
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    anonymeter: bool = True
    anonymeter_attacks: int = 500
    out: str = "membershield-synthetic-audit"
    seed: int = 0
    fprs: list[float] = field(default_factory=lambda: list(DEFAULT_FPRS))
    delta: float = 1e-5
    prior: float = 0.5
    top_k: int = 10
    split_check: bool = True
    drop_overlap: bool = False

    def validate(self) -> SyntheticAuditConfig:
        if self.attacks:
            self.attacks = parse_synthetic_attack_list(self.attacks)
        unknown = sorted(set(self.attack_options) - set(REGISTRY))
        if unknown:
            raise ConfigError(f"settings given for unknown synthetic-data attack(s) {', '.join(unknown)}")
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ConfigError(f"fprs must be numbers strictly between 0 and 1, got {self.fprs}")
        self.fprs = sorted(float(f) for f in self.fprs)
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1), got {self.delta}")
        if self.anonymeter_attacks < 1:
            raise ConfigError(f"--anonymeter-attacks must be 1 or more, got {self.anonymeter_attacks}")
        for name in self.attacks or REGISTRY:
            self.attack(name)  # a bad setting fails before anything loads
        return self

    def attack(self, name: str) -> SyntheticAttack:
        return create_synthetic_attack(name, self.attack_options.get(name))

    @property
    def secrets(self) -> list[str]:
        if self.secret_columns is not None:
            return list(self.secret_columns)
        return [self.label_column] if self.label_column else []


def _check_columns(config: SyntheticAuditConfig, tables: SyntheticTables) -> None:
    named = [("--label-column", c) for c in [config.label_column] if c] + [
        ("--secret-columns", c) for c in config.secrets
    ]
    for flag, column in named:
        if column not in tables.columns:
            raise ConfigError(f"{flag} names '{column}', which the tables lack (they have {', '.join(tables.columns)})")


def _chosen_attacks(config: SyntheticAuditConfig, warnings: list[str]) -> list[SyntheticAttack]:
    """The attacks asked for (each must be able to run), or by default every one that can, the others
    listed in the warnings with their reason."""
    has = {"has_label": config.label_column is not None, "has_generator": config.generator is not None}
    chosen = []
    for name in config.attacks or list(REGISTRY):
        problem = REGISTRY[name].requirement_problem(**has)
        if problem is not None and config.attacks:
            raise ConfigError(problem)
        if problem is not None:
            warnings.append(f"skipped: {problem}")
            continue
        chosen.append(config.attack(name))
    return chosen


def prepare_synthetic_audit(
    config: SyntheticAuditConfig,
) -> tuple[SyntheticAttackInputs, list[SyntheticAttack], list[str]]:
    """Load and check the tables and the generator; the attacks' inputs, the attacks and the warnings so far."""
    generator = parse_generator(config.generator) if config.generator else None
    tables = load_synthetic_tables(
        config.train,
        config.holdout,
        config.synthetic,
        config.population,
        ignore_columns=tuple(config.ignore_columns),
        drop_overlap=config.drop_overlap,
    )
    _check_columns(config, tables)
    warnings = [finding] if (finding := tables.copies.finding()) else []
    warnings += tables.warnings
    attacks = _chosen_attacks(config, warnings)
    encoder = TableEncoder.fit(tables.real, tables.numeric, tables.categorical)
    inputs = SyntheticAttackInputs(tables, encoder, config.label_column, generator, config.seed)
    return inputs, attacks, warnings


def _split_check(
    config: SyntheticAuditConfig, inputs: SyntheticAttackInputs, warnings: list[str]
) -> dict[str, Any] | None:
    from membershield.split_check import blind_split_check

    if not config.split_check:
        return None
    is_member = np.arange(inputs.n_audit) < inputs.n_members
    check = blind_split_check(inputs.tables.records, np.zeros(inputs.n_audit, dtype=int), is_member, seed=config.seed)
    if (warning := check.warning("the real records alone")) is not None:
        warnings.append(warning.replace("never queries the model", "never sees the synthetic records"))
    return check.to_dict()


def _anonymeter(
    config: SyntheticAuditConfig, inputs: SyntheticAttackInputs, warnings: list[str]
) -> dict[str, Any] | None:
    if not config.anonymeter:
        return None
    tables = inputs.tables
    risks = anonymeter_risks(
        tables.train,
        tables.synthetic,
        tables.holdout,
        secrets=config.secrets,
        n_attacks=config.anonymeter_attacks,
        seed=config.seed,
    )
    for name in ("singling_out", "linkability", "inference"):
        entry = risks.get(name)
        if entry is not None and entry.get("error"):
            warnings.append(f"anonymeter {name} could not be measured: {entry['error']}")
    if risks["inference"] is None:
        warnings.append("anonymeter inference not measured: pass --secret-columns (or --label-column)")
    return risks


def run_synthetic_audit(
    config: SyntheticAuditConfig, progress: ProgressCallback | None = None, *, reports: tuple[str, ...] = ()
) -> AuditRun:
    """Audit synthetic records against the real records they were made from; write ``audit.json``
    (``mode: "synthetic"``), ``scores.csv`` (one row per real record) and the ``reports`` asked for."""
    report = progress or (lambda stage, done, total: None)
    config.validate()
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    report("loading tables", 0, 0)
    inputs, attacks, warnings = prepare_synthetic_audit(config)
    inputs.progress = report
    timings["load"] = time.perf_counter() - clock
    rows = len(inputs.tables.real) + len(inputs.tables.synthetic)
    with threadpool_limits(1 if rows < THREADED_MIN_ROWS else None):
        result, columns = _measure(config, inputs, attacks, warnings, timings, report)
    run = AuditRun(result, scores_frame(inputs, columns))
    write_audit_outputs(run, config.out, reports=reports)
    return run


def _measure(
    config: SyntheticAuditConfig,
    inputs: SyntheticAttackInputs,
    attacks: list[SyntheticAttack],
    warnings: list[str],
    timings: dict[str, float],
    report: ProgressCallback,
) -> tuple[SyntheticAuditResult, dict[str, np.ndarray]]:
    """The attacks, the DCR and anonymeter risks and the split check, assembled into the result."""
    label = inputs.label_column
    slices = {label: np.array([category(v) for v in inputs.tables.records[label]])} if label else {}
    is_member = np.arange(inputs.n_audit) < inputs.n_members
    results, columns = run_attacks(
        attacks,
        inputs,
        is_member,
        MeasureSettings.of(config),
        slices=slices,
        origin=lambda i: origin(inputs, i),
        progress=report,
    )
    timings["attacks"] = sum(r.seconds for r in results)
    clock = time.perf_counter()
    n = inputs.n_members
    risk = dcr_risk(inputs.synthetic_points, inputs.audit_points[:n], inputs.audit_points[n:], seed=config.seed)
    report("anonymeter", 0, 0)
    anonymeter = _anonymeter(config, inputs, warnings)
    timings["risks"] = time.perf_counter() - clock
    clock = time.perf_counter()
    split = _split_check(config, inputs, warnings)
    if split is not None:
        timings["split_check"] = time.perf_counter() - clock
    return synthetic_result(inputs, config, results, risk, anonymeter, split, timings, warnings), columns
