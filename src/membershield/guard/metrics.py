"""The guard's Prometheus metrics, in a registry of the service's own (several guards may share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GuardMetrics:
    """Requests, latency, records, alerts, rejections, redactions and the verbatim filter's actions."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "membershield_guard_requests", "Requests served", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "membershield_guard_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.records = Counter("membershield_guard_records", "Records scored", registry=self.registry)
        self.alerts = Counter("membershield_guard_alerts", "Probing alerts", ["pattern"], registry=self.registry)
        self.rejections = Counter(
            "membershield_guard_rejections", "Requests refused", ["reason"], registry=self.registry
        )
        self.redactions = Counter(
            "membershield_guard_redactions", "Personal data redacted from outputs", ["kind"], registry=self.registry
        )
        self.verbatim = Counter(
            "membershield_guard_verbatim_answers",
            "Answers of POST /v1/generate checked by the verbatim filter, by what it did (passed, refused, truncated)",
            ["action"],
            registry=self.registry,
        )
        self.verbatim_removed = Counter(
            "membershield_guard_verbatim_tokens_removed",
            "Tokens (words, in front of an upstream endpoint) the verbatim filter cut from answers",
            registry=self.registry,
        )
        # labels() takes a lock and hashes its arguments; the children of the hot path are kept here
        self._request_children: dict[tuple[str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def observe(self, route: str, status: int, elapsed: float) -> None:
        counter = self._request_children.get((route, status))
        if counter is None:
            counter = self._request_children[(route, status)] = self.requests.labels(endpoint=route, status=str(status))
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(endpoint=route)
        histogram.observe(elapsed)

    def count_verbatim(self, action: str, tokens_removed: int) -> None:
        self.verbatim.labels(action=action).inc()
        if tokens_removed and action == "truncated":
            self.verbatim_removed.inc(tokens_removed)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
