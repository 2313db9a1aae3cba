"""A causal language model in a local ``save_pretrained`` directory (config, weights, tokenizer); loaded
with transformers without network access (see :mod:`membershield.text.model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from membershield.targets.kind import LoadedModel, TargetKind


class LanguageModelDirectory(TargetKind):
    name = "hf-causal-lm"
    description = "causal language model directory written by save_pretrained (GPT-2, Llama, ...)"
    example = "models/support-lm/"
    access = "next-token distributions"
    gives_recipe = False
    audit_command = "audit-text"
    serves = "POST /v1/generate"

    def recognises(self, spec: str) -> bool:
        return Path(spec).is_dir()

    def load(self, spec: str, **options: Any) -> LoadedModel:
        """``options``: ``device`` and ``add_bos``, as :func:`membershield.text.model.load_language_model`."""
        from membershield.text.model import load_language_model

        lm = load_language_model(spec, options.get("device", "auto"), add_bos=options.get("add_bos"))
        return LoadedModel(
            target=lm,
            recipe=None,
            kind=self.name,
            spec=lm.path,
            sha256=lm.weights_sha256,
            kind_access=self.access,
        )
