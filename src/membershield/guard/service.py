"""The state every endpoint shares: store, request log, keys, limits, detector, metrics, model access."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import Request

from membershield.guard.auth import KeyAuthenticator
from membershield.guard.config import GuardConfig
from membershield.guard.cost import WorkCost
from membershield.guard.detector import ProbingDetector
from membershield.guard.errors import GuardError
from membershield.guard.generate import LocalGenerator
from membershield.guard.leakage_metrics import LeakageCollector, latest_audit
from membershield.guard.limits import RateLimiter
from membershield.guard.metrics import GuardMetrics
from membershield.guard.pii import presidio_analyzer, redact
from membershield.guard.predict import Hardener, LocalScorer
from membershield.guard.query_log import AnsweredQuery
from membershield.guard.request_log import RequestLog
from membershield.guard.upstream import UpstreamClient
from membershield.store import GuardKey, StoreError, open_store

if TYPE_CHECKING:
    import numpy as np

    from membershield.guard.incident_report import IncidentAnalyst


class GuardService:
    """Opens the store (and migrates it) on creation; :meth:`close` drains the request log and closes it."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        self.policy = config.policy
        self.store = open_store(config.store)
        self.log = RequestLog(self.store)
        self.auth = KeyAuthenticator(self.store)
        self.limiter = RateLimiter(config.policy.limits, clock=config.clock)
        self.detector = ProbingDetector(config.policy.detector, clock=config.clock)
        self.metrics = GuardMetrics()
        self.metrics.registry.register(LeakageCollector(config.model_name, latest_audit(self.store)))
        self.hardener = Hardener(config.policy.output, config.seed)
        self.model_cost = WorkCost()
        self.detector_cost = WorkCost()
        self.scorer = LocalScorer(config.target, config.schema) if config.target is not None else None
        self.generator = (
            LocalGenerator(config.language_model, config.policy.generation)
            if config.language_model is not None
            else None
        )
        try:
            used = self.store.guard_usage(since=self.limiter.day_start(), limit=1_000_000, model_name=config.model_name)
            self.limiter.seed_usage({row["key"]: row["records"] for row in used})
        except StoreError:
            pass
        # Presidio (with an installed spaCy model) adds names and places to the validators' findings;
        # built once, and only where text can come out of the service
        self.analyzer = presidio_analyzer() if config.serves_text or config.upstream else None
        self.upstream = (
            UpstreamClient(config.upstream, config.policy.server.upstream_timeout_seconds) if config.upstream else None
        )
        self._incidents: IncidentAnalyst | None = None

    @property
    def incidents(self) -> IncidentAnalyst:
        """What alerts' keys learnt (made on first use: it loads the attacks and, per audit, its model and data)."""
        if self._incidents is None:
            from membershield.guard.incident_report import IncidentAnalyst

            self._incidents = IncidentAnalyst(self.store, fallback=self.policy.output)
        return self._incidents

    def close(self) -> None:
        self.auth.close()
        self.log.close()
        if self.upstream is not None:
            self.upstream.close()
        self.store.close()

    def authenticate(self, request: Request, allow_query: bool = False) -> GuardKey:
        return self.auth.authenticate(request, allow_query)

    def require_admin(self, request: Request, allow_query: bool = False) -> GuardKey:
        key = self.authenticate(request, allow_query)
        if not key.admin:
            raise GuardError(403, f"key '{key.name}' is not an admin key", "forbidden")
        return key

    def admit(self, key: GuardKey) -> None:
        """Throttle and rate limit of one request."""
        wait = self.detector.throttled_for(key.name)
        if wait is not None:
            raise GuardError(
                429, f"key '{key.name}' is throttled after a probing alert", "throttled", {"Retry-After": str(wait)}
            )
        wait = self.limiter.check_rate(key.name)
        if wait is not None:
            limit = self.policy.limits.requests_per_minute
            raise GuardError(
                429, f"rate limit of {limit} requests per minute reached", "rate_limit", {"Retry-After": str(wait)}
            )

    def spend(self, key: GuardKey, n_records: int) -> None:
        wait = self.limiter.check_budget(key.name, n_records)
        if wait is not None:
            budget = self.policy.limits.daily_query_budget
            raise GuardError(
                429,
                f"daily budget of {budget} records for key '{key.name}' would be exceeded",
                "budget",
                {"Retry-After": str(wait)},
            )

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        redacted, counts = redact(text, self.analyzer)
        for kind, n in counts.items():
            self.metrics.redactions.labels(kind=kind).inc(n)
        return redacted, dict(counts)

    def log_query(self, key: GuardKey, records: np.ndarray, answer: dict[str, Any]) -> None:
        """Keep the records a key sent and the answers it got (written by the request log's thread)."""
        if self.policy.detector.record_queries:
            self.log.add_query(
                AnsweredQuery(
                    key.name, self.config.model_name, datetime.now(UTC), records, answer["predictions"],
                    answer.get("classes"),
                )
            )  # fmt: skip

    def record_alerts(self, alerts: list) -> list[dict[str, Any]]:
        written = []
        policy = self.policy.to_dict()  # with the alert: the output hardening the key's answers had
        for alert in alerts:
            self.metrics.alerts.labels(pattern=alert.pattern).inc()
            written.append(
                self.store.record_alert(
                    alert.key, self.config.model_name, alert.pattern, alert.evidence, alert.time, policy
                )
            )
        return written
