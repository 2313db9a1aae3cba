"""A model behind an HTTP API (``--model http://HOST/PATH``), audited as an attacker who can only query it.

The threat model: the attacker sends records and reads the answers, nothing else; its reference models
come from ``--recipe``, the training pipeline the attacker is assumed to know. The access is what the
answers turn out to hold (labels only, the top k probabilities, rounded or full probabilities), read
from the first batch before any attack is chosen.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from membershield.endpoint.access import AnswerForm, answer_form, answer_logits
from membershield.endpoint.cache import AnswerCache
from membershield.endpoint.client import EndpointClient, QueryPolicy
from membershield.endpoint.formats import FORMATS, EndpointError
from membershield.endpoint.headers import expand_headers, recorded_headers
from membershield.errors import ConfigError
from membershield.targets.kind import LoadedModel, TargetKind

THREAT_MODEL = (
    "black-box attacker of a deployed endpoint: sends records and reads the answers; reference models"
    " trained from the pipeline it is assumed to know (--recipe)"
)


class EndpointTarget:
    """A :class:`~membershield.targets.base.Target` whose answers come over HTTP (cached on disk)."""

    kind = "http-endpoint"

    def __init__(self, client: EndpointClient, recorded: list[str]) -> None:
        self.client = client
        self.recorded_headers = recorded
        self.form: AnswerForm | None = None
        self._classes: np.ndarray | None = None

    @property
    def access(self) -> str | None:
        return self.form.access if self.form is not None else None

    @property
    def classes(self) -> np.ndarray | None:
        """The answers' own class names where they give them, else the audit's labels (``bind_classes``)."""
        if self._classes is not None:
            return self._classes
        return np.asarray(self.client.classes) if self.client.classes is not None else None

    def bind_classes(self, classes: np.ndarray) -> None:
        self._classes = np.asarray(classes)

    def check_budget(self, features: pd.DataFrame, extra_queries: int = 0) -> None:
        """Refuse, before sending anything, an audit of ``features`` (plus ``extra_queries`` perturbed
        records for attacks that ask them) that the query budget cannot pay for."""
        needed = self.client.uncached(features) + extra_queries
        self.client.check_budget(needed, f"auditing {len(features)} records")

    def discover_access(self, features: pd.DataFrame) -> AnswerForm:
        """Query the first batch (its answers are cached, so nothing is asked twice) and read the access."""
        self.check_budget(features)
        rows = self.client.answers(features.iloc[: self.client.policy.batch_size])
        self.form = answer_form(rows)
        return self.form

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        rows = self.client.answers(features)
        if self.form is None:
            self.form = answer_form(rows)
        classes = self.classes
        if classes is None:
            raise EndpointError(f"{self.client.url} names no classes and none were bound from the audit's labels")
        return answer_logits(rows, classes.tolist(), self.client.classes, self.client.url)

    def describe(self) -> dict[str, Any]:
        """What audit.json records about the endpoint: never a secret header value."""
        return {
            "url": self.client.url,
            "api_format": self.client.api_format.name,
            "headers": self.recorded_headers,
            "answers": self.form.description if self.form is not None else None,
            "queries_sent": self.client.sent,
            "threat_model": THREAT_MODEL,
        }


def endpoint_identity(url: str, api_format: str) -> str:
    return hashlib.sha256(f"{api_format} {url}".encode()).hexdigest()


class HttpEndpoint(TargetKind):
    name = "http-endpoint"
    description = "model behind an HTTP API (the guard, an MLflow scoring server, a KServe v2 server)"
    example = "http://127.0.0.1:8080/v1/predict"
    access = "black-box"  # or less: what the answers hold
    gives_recipe = False  # unless --recipe names the pipeline
    audit_command = "audit"
    serves = None  # the guard forwards to such a model with --upstream, not as its --model

    def recognises(self, spec: str) -> bool:
        return spec.startswith(("http://", "https://"))

    def load(self, spec: str, **options: Any) -> LoadedModel:
        from membershield.targets.registry import recipe_from  # the registry lists this module

        api_format = options.get("api_format") or "membershield"
        if api_format not in FORMATS:
            raise ConfigError(f"unknown --api-format '{api_format}': choose one of {', '.join(FORMATS)}")
        headers = list(options.get("headers") or ())
        policy = QueryPolicy(
            batch_size=options.get("batch_size") or 64,
            max_queries=options.get("max_queries"),
            queries_per_second=options.get("queries_per_second"),
        )
        identity = endpoint_identity(spec, api_format)
        cache = AnswerCache(options["cache"], identity) if options.get("cache") else None
        client = EndpointClient(spec, FORMATS[api_format], expand_headers(headers), policy, cache)
        recipe = recipe_from(options["recipe"]) if options.get("recipe") else None
        target = EndpointTarget(client, recorded_headers(headers))
        return LoadedModel(
            target=target, recipe=recipe, kind=self.name, spec=spec, sha256=identity, kind_access=self.access
        )
