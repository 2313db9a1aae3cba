"""The latest recorded audit of the guarded model as Prometheus gauges, so that an existing Prometheus and
Grafana stack alerts on leakage as it alerts on latency.

Series (labels ``model``, ``attack``, ``fpr`` as the audit names them):

- ``membershield_leakage_auc{model,attack}``
- ``membershield_leakage_tpr_at_fpr_upper{model,attack,fpr}``: the upper end of the TPR's 95% interval,
  the number an alert should compare with a limit (what the audit cannot rule out); a rate the audit could
  not measure at that FPR has no series rather than a made-up value
- ``membershield_leakage_epsilon_lower_bound{model,attack}``
- ``membershield_gate_passed{model}``: 1 passed, 0 failed; no series before the audit was gated
- ``membershield_leakage_audit_timestamp_seconds{model}``: when that audit ran, to alert on stale audits

The store is read at most once per ``ttl`` seconds: scrapes come every few seconds from every Prometheus
replica, and an audit is recorded a few times a day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from membershield.store import AuditRecord

LEAKAGE_TTL_S = 10.0


def leakage_families(model: str, record: AuditRecord | None) -> list[GaugeMetricFamily]:
    """The gauges of one recorded audit (empty families when the model has no recorded audit)."""
    auc = GaugeMetricFamily(
        "membershield_leakage_auc", "AUC of each attack in the latest audit", labels=["model", "attack"]
    )
    upper = GaugeMetricFamily(
        "membershield_leakage_tpr_at_fpr_upper",
        "Upper end of the 95% interval of each attack's TPR at each FPR, latest audit (measurable rates only)",
        labels=["model", "attack", "fpr"],
    )
    epsilon = GaugeMetricFamily(
        "membershield_leakage_epsilon_lower_bound",
        "Empirical lower bound on epsilon of each attack in the latest audit",
        labels=["model", "attack"],
    )
    passed = GaugeMetricFamily("membershield_gate_passed", "1 when the latest audit passed its gate", labels=["model"])
    stamp = GaugeMetricFamily(
        "membershield_leakage_audit_timestamp_seconds", "When the latest audit ran (Unix time)", labels=["model"]
    )
    families = [auc, upper, epsilon, passed, stamp]
    if record is None:
        return families
    for attack, metrics in record.metrics.get("attacks", {}).items():
        _add_attack(model, attack, metrics, auc, upper, epsilon)
    if record.verdict in ("pass", "fail"):
        passed.add_metric([model], 1.0 if record.verdict == "pass" else 0.0)
    stamp.add_metric([model], record.created_at.timestamp())
    return families


def _add_attack(
    model: str,
    attack: str,
    metrics: Mapping[str, Any],
    auc: GaugeMetricFamily,
    upper: GaugeMetricFamily,
    epsilon: GaugeMetricFamily,
) -> None:
    if metrics.get("auc") is not None:
        auc.add_metric([model, attack], float(metrics["auc"]))
    if metrics.get("epsilon_lower_bound") is not None:
        epsilon.add_metric([model, attack], float(metrics["epsilon_lower_bound"]))
    for fpr, rate in metrics.get("tpr_at_fpr", {}).items():
        if rate.get("measurable") and rate.get("ci_high") is not None:
            upper.add_metric([model, attack, fpr], float(rate["ci_high"]))


class LeakageCollector(Collector):
    """Reads the latest audit of ``model`` from ``latest`` (a store lookup) on scrape, at most once per ``ttl``."""

    def __init__(
        self,
        model: str,
        latest: Callable[[str], AuditRecord | None],
        *,
        ttl: float = LEAKAGE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self._latest = latest
        self._ttl = ttl
        self._clock = clock
        self._read_at: float | None = None
        self._record: AuditRecord | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # registering must not read the store; the families are known only once it is read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._ttl:
            self._record = self._latest(self.model)
            self._read_at = now
        yield from leakage_families(self.model, self._record)


def latest_audit(store: Any) -> Callable[[str], AuditRecord | None]:
    """The store lookup a :class:`LeakageCollector` reads: the most recent audit recorded under a name."""

    def lookup(model: str) -> AuditRecord | None:
        recent = store.history(model, limit=1)
        return recent[-1] if recent else None

    return lookup
