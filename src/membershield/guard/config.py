"""What a guard serves and how: resolved from ``--model`` / ``--upstream`` into a :class:`GuardConfig`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from membershield.errors import ConfigError, ModelLoadError
from membershield.guard.columns import input_schema, with_safe_ranges
from membershield.guard.policy import GuardPolicy
from membershield.guard.records import InputSchema
from membershield.targets.base import Target


@dataclass
class GuardConfig:
    """What the service guards and how. ``target`` scores locally; otherwise ``upstream`` is called."""

    policy: GuardPolicy
    model_name: str
    target: Target | None = None
    upstream: str | None = None
    store: str | None = None
    schema: InputSchema = field(default_factory=lambda: InputSchema((), named=False))  # () : not known here
    language_model: Any | None = None  # a membershield.text.model.LanguageModel generating locally
    text: bool = False  # the model produces text: POST /v1/generate instead of /v1/predict
    clock: Callable[[], float] = field(default=time.time)
    seed: int = 0

    @property
    def serves_text(self) -> bool:
        return self.text or self.language_model is not None


def _target_schema(target: Target) -> InputSchema:
    """The target's columns, kinds and the numeric ranges it was seen to score (probed once, at start)."""
    estimator = getattr(target, "estimator", None)
    columns = getattr(target, "columns", None)
    if estimator is None:
        return InputSchema((), named=False)
    return with_safe_ranges(input_schema(estimator, list(columns) if columns else None), target.logits)


def guard_config(
    model: str | None,
    upstream: str | None,
    policy: GuardPolicy,
    store: str | None = None,
    model_name: str | None = None,
    text: bool = False,
) -> GuardConfig:
    """Resolve ``--model`` / ``--upstream``: a fitted model file scores locally (and, with ``--upstream``,
    only checks the records' columns); a model directory (``save_pretrained``) is a causal language model
    that generates locally; ``text`` says an upstream generates text. A recipe cannot serve predictions."""
    from membershield.targets.registry import resolve

    if not model and not upstream:
        raise ConfigError(
            "give --model (a fitted .joblib/.pkl classifier or a language model directory) or --upstream URL"
        )
    if upstream and not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http:// or https:// URL, got '{upstream}'")
    name = model_name or (Path(model.rstrip("/")).stem if model else "upstream")
    kind = resolve(model) if model else None
    if text and not upstream and (kind is None or kind.serves != "POST /v1/generate"):
        raise ConfigError("--text needs --upstream URL or a language model directory as --model")
    if kind is not None and kind.serves is None:
        raise ModelLoadError(
            f"{model} is a training recipe, which cannot serve predictions (a {kind.name} target has no model"
            " to serve): give a fitted model file (.joblib/.pkl) or --upstream URL"
        )
    if kind is not None and kind.serves == "POST /v1/generate":
        if upstream:
            raise ConfigError("give either a language model directory (--model) or --upstream URL, not both")
        language_model = kind.load(model).target
        return GuardConfig(policy=policy, model_name=name, store=store, language_model=language_model, text=True)
    target = None
    schema = InputSchema((), named=False)
    if kind is not None and (Path(model).exists() or not upstream):
        target = kind.load(model).target
        schema = _target_schema(target)
    return GuardConfig(
        policy=policy,
        model_name=name,
        target=None if upstream else target,
        upstream=upstream,
        store=store,
        schema=schema,
        text=text,
    )
