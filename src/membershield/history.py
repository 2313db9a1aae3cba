"""The audit-history workflows: record a finished audit, and gate one against a policy and the last
passing audit of the same model. They read results through :mod:`membershield.result`, judge them with
the pure :mod:`membershield.gate` and keep rows in the :mod:`membershield.store`; the command line only
prints what they return."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from membershield.gate import Verdict, evaluate, load_policy, write_junit
from membershield.lineage import record_audit_lineage
from membershield.result import load_document
from membershield.store import AuditRecord, open_store


@dataclass(frozen=True)
class Recorded:
    record: AuditRecord
    store: str  # where, for people


def record_audit(
    out: str | Path,
    store: str | None = None,
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    dataset_version: str | None = None,
) -> Recorded:
    """Record the audit in ``out`` (its ``audit.json``) in the history store, with the datasets it read
    (``dataset_version`` labels its training data); the same audit is one row."""
    audit_file = Path(out) / "audit.json"
    document = load_document(audit_file)
    with open_store(store) as history:
        record = history.record_audit(
            document,
            model_name=model_name,
            model_version=model_version,
            report_path=str(audit_file),
            out_dir=str(out),
        )
        record_audit_lineage(history, record, document, dataset_version)
        return Recorded(record, history.display)


@dataclass(frozen=True)
class GateOutcome:
    verdict: Verdict
    record: AuditRecord  # the audit's history row, with its verdict recorded

    @property
    def failures(self) -> list[str]:
        return [check.describe() for check in self.verdict.failures]


def gate_audit(
    audit_file: str | Path,
    policy_file: str | Path,
    *,
    store: str | None = None,
    model_name: str | None = None,
    junit: str | Path | None = None,
) -> GateOutcome:
    """Judge an ``audit.json`` against a policy file, with ``max_regression`` against the last passing audit
    of the same model; the verdict is recorded next to the audit (recorded first if it was not)."""
    audit_file = Path(audit_file)
    document = load_document(audit_file)
    rules = load_policy(policy_file)
    with open_store(store) as history:
        record = history.find(document)
        if record is None:
            record = history.record_audit(
                document, model_name=model_name, report_path=str(audit_file), out_dir=str(audit_file.parent)
            )
            record_audit_lineage(history, record, document)
        if model_name and model_name != record.model_name:
            record = history.rename(record.id, model_name)
        previous = history.last_passing(record.model_name, exclude=record) if rules.max_regression else None
        verdict = evaluate(document, rules, previous=previous.comparison() if previous else None)
        outcome = GateOutcome(verdict, record)
        history.record_verdict(
            record.id,
            passed=verdict.passed,
            failures=outcome.failures,
            policy=rules.to_dict(),
            compared_with=verdict.compared_with,
        )
    if junit is not None:
        write_junit(verdict, junit)
    return outcome
