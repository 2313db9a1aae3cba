"""A LoRA (or other PEFT) adapter directory as the model to audit: its base is read from disk, the adapter
applied and merged, so the audit scores exactly what the fine-tune serves.

``peft`` writes an adapter as ``adapter_config.json`` and ``adapter_model.safetensors``; the config names
the base in ``base_model_name_or_path``. Nothing is downloaded: the base must be a local directory (as
written, or relative to the adapter directory). The fingerprint covers the base's weights and the
adapter's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from membershield.errors import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_directory(directory: Path) -> bool:
    """Whether ``directory`` holds a PEFT adapter rather than a full model."""
    return (directory / ADAPTER_CONFIG).is_file() and not (directory / "config.json").is_file()


def adapter_base(directory: Path) -> Path:
    """The local directory of the adapter's base model, or a one-line error naming how to give it."""
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{directory / ADAPTER_CONFIG} cannot be read as JSON ({type(exc).__name__})") from exc
    named = config.get("base_model_name_or_path")
    if not named:
        raise ModelLoadError(
            f"{directory} is a LoRA adapter that names no base model (base_model_name_or_path is empty);"
            " set it in adapter_config.json to the base model's local directory"
        )
    for candidate in (Path(named), directory / str(named)):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelLoadError(
        f"{directory} is a LoRA adapter whose base model '{named}' is not a local model directory; save the"
        " base with save_pretrained and set base_model_name_or_path in adapter_config.json to that directory"
        " (nothing is downloaded)"
    )


def merge_adapter(model: Any, directory: Path) -> Any:
    """``model`` (the base, loaded) with the adapter applied and merged into its weights."""
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelLoadError(
            f"{directory} is a LoRA adapter; reading it needs peft: pip install 'membershield[llm]'"
        ) from exc
    try:
        return PeftModel.from_pretrained(model, directory, is_trainable=False).merge_and_unload()
    except Exception as exc:  # peft raises many types for an adapter that does not fit its base
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelLoadError(
            f"{directory}: the adapter cannot be applied to its base ({type(exc).__name__}: {first})"
        ) from exc


def combined_fingerprint(base_sha: str, directory: Path) -> tuple[str, dict[str, str]]:
    """One sha256 over the base's weights fingerprint and every adapter weights file, and the files."""
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.startswith("adapter_model")
    }
    if not files:
        raise ModelLoadError(f"{directory} has no adapter weights (adapter_model.safetensors); save it with peft")
    text = base_sha + "".join(f"{name}\0{h}\n" for name, h in files.items())
    return hashlib.sha256(text.encode()).hexdigest(), files
