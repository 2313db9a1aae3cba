"""Load a causal language model and its tokenizer from a local directory (no network).

The directory is what ``model.save_pretrained(d)`` and ``tokenizer.save_pretrained(d)`` write. Loading
never contacts a hub (``local_files_only=True``). ``transformers`` is imported here, lazily, so the
rest of membershield works without the ``text`` extra.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from membershield.errors import ConfigError, ModelLoadError
from membershield.targets.kind import sha256_file
from membershield.text.adapter import adapter_base, combined_fingerprint, is_adapter_directory, merge_adapter

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


@dataclass
class LanguageModel:
    """A loaded causal LM: the torch module, its tokenizer, and what identifies it."""

    path: str
    model: Any  # transformers PreTrainedModel, in eval mode
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    max_positions: int
    weights_sha256: str
    weight_files: dict[str, str] = field(default_factory=dict)
    model_type: str = ""
    add_bos: bool | None = None  # None: the tokenizer's own special tokens; see encode()
    base_model: str | None = None  # the base directory, when ``path`` is a LoRA adapter merged into it

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text as the model was trained on them: the tokenizer's default encoding.

        That is ``tokenizer(text)["input_ids"]`` with the tokenizer's own special tokens, exactly what
        ``model(input_ids=ids, labels=ids)`` scores. ``add_bos`` overrides the tokenizer for a model
        trained otherwise: ``True`` puts the BOS token first where the tokenizer does not, ``False``
        drops a BOS the tokenizer puts first. The first token is context, never scored.
        """
        encoded = self.tokenizer(list(texts))["input_ids"]
        bos = self.bos_token_id() if self.add_bos is not None else None
        out = []
        for ids in encoded:
            ids = list(ids)
            if self.add_bos is True and (not ids or ids[0] != bos):
                ids = [bos, *ids]
            elif self.add_bos is False and ids and ids[0] == bos:
                ids = ids[1:]
            out.append(ids)
        return out

    def bos_token_id(self) -> int:
        """The tokenizer's BOS token; an error for ``--add-bos``/``--no-add-bos`` when it has none."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            raise ConfigError(
                f"{self.path}: the tokenizer has no BOS token, so --add-bos/--no-add-bos cannot apply;"
                " leave both off to score the tokenizer's own encoding"
            )
        return int(bos)

    def leading_context_tokens(self) -> int:
        """How many special tokens the encoding puts before a text's own tokens (0 or 1 in practice)."""
        ids = self.encode(["a"])[0]
        special = set(self.tokenizer.all_special_ids)
        count = 0
        while count < len(ids) and ids[count] in special:
            count += 1
        return count

    def encoding(self) -> dict[str, Any]:
        """What the audit scored: the ``scoring`` entry of a text audit's result."""
        ids = self.encode(["a"])[0]
        special = set(self.tokenizer.all_special_ids)
        leading = self.leading_context_tokens()
        policy = {None: "the tokenizer's default", True: "--add-bos", False: "--no-add-bos"}[self.add_bos]
        return {
            "special_tokens": policy,
            "starts_with": self.tokenizer.convert_ids_to_tokens(ids[:leading]) if leading else [],
            "ends_with_special_token": bool(ids) and len(ids) > leading and ids[-1] in special,
            "first_token_scored": False,
            "padding_side": self.padding_side,
        }

    @property
    def padding_side(self) -> str:
        side = getattr(self.tokenizer, "padding_side", "right")
        return side if side in ("left", "right") else "right"

    def describe(self) -> dict[str, Any]:
        """The ``target`` (or reference) entry of an audit result."""
        from importlib import metadata

        return {
            "kind": "hf-causal-lm",
            "spec": self.path,
            "model_type": self.model_type,
            "sha256": self.weights_sha256,
            "weight_files": self.weight_files,
            "max_positions": self.max_positions,
            "vocab_size": self.vocab_size,
            "encoding": self.encoding(),
            "transformers": metadata.version("transformers"),
            **({"base_model": self.base_model} if self.base_model else {}),
        }


def weights_fingerprint(directory: str | Path) -> tuple[str, dict[str, str]]:
    """sha256 of every weights file in the directory, and one sha256 over the (name, hash) pairs."""
    d = Path(directory)
    files = {p.name: sha256_file(p) for p in sorted(d.iterdir()) if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}
    combined = hashlib.sha256("".join(f"{name}\0{h}\n" for name, h in files.items()).encode()).hexdigest()
    return combined, files


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelLoadError(
            "auditing language models needs the 'text' extra: pip install 'membershield[text]'"
        ) from exc
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # membershield shows its own progress
    return transformers


def _check_causal(config: Any, directory: Path) -> None:
    """Refuse encoders (BERT, RoBERTa, ...) and encoder-decoders: their scores are not next-token likelihoods."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", "")
    architectures = list(getattr(config, "architectures", None) or [])
    causal_names = [a for a in architectures if a.endswith(("ForCausalLM", "LMHeadModel")) and "Masked" not in a]
    is_causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        is_causal = False  # an encoder that can be built as a decoder, but this one was not
    if architectures:
        is_causal = is_causal and bool(causal_names)
    if not is_causal:
        shown = ", ".join(architectures) or f"model type '{model_type}'"
        raise ModelLoadError(
            f"{directory} holds {shown}, which is not a causal (next-token) language model;"
            " audit-text needs a decoder such as GPT-2 or Llama"
        )


def load_language_model(directory: str | Path, device: str = "auto", *, add_bos: bool | None = None) -> LanguageModel:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from ``directory`` without network access.

    ``add_bos`` is the encoding policy of :meth:`LanguageModel.encode` (``None``: the tokenizer's own).
    """
    d = Path(directory)
    if not d.exists():
        raise ModelLoadError(f"model directory not found: {d} (give a directory written by save_pretrained)")
    if not d.is_dir():
        raise ModelLoadError(f"{d} is a file; give the model directory written by save_pretrained")
    if is_adapter_directory(d):
        return _load_adapter(d, device, add_bos)
    if not (d / "config.json").is_file():
        raise ModelLoadError(
            f"{d} has no config.json: not a transformers model directory (save it with save_pretrained)"
        )
    try:
        json.loads((d / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{d / 'config.json'} is not valid JSON: {exc}") from exc
    transformers = _require_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(d, local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"{d}: cannot read the model configuration: {_first_line(exc)}") from exc
    _check_causal(config, d)
    sha, files = weights_fingerprint(d)
    if not files:
        raise ModelLoadError(f"{d} has no weights file (*.safetensors or *.bin); save the model with save_pretrained")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)
    except Exception as exc:  # transformers raises many types here; all mean "no usable tokenizer"
        raise ModelLoadError(
            f"{d}: no usable tokenizer ({_first_line(exc)}); save it next to the model with tokenizer.save_pretrained"
        ) from exc
    try:
        probe = tokenizer("The quick brown fox", add_special_tokens=False)["input_ids"]
    except Exception:  # a tokenizer that cannot encode plain text is as unusable as a missing one
        probe = []
    if len(tokenizer) < 2 or not probe:
        raise ModelLoadError(
            f"{d}: the tokenizer is empty (no tokenizer files next to the model?);"
            " save it there with tokenizer.save_pretrained"
        )
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(d, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{d}: cannot load the model weights: {_first_line(exc)}") from exc
    model.eval()
    model.to(resolve_device(device))
    max_positions = _max_positions(config, tokenizer)
    lm = LanguageModel(
        path=str(d),
        model=model,
        tokenizer=tokenizer,
        max_positions=max_positions,
        weights_sha256=sha,
        weight_files=files,
        model_type=str(getattr(config, "model_type", "")),
        add_bos=add_bos,
    )
    if add_bos is not None:
        lm.bos_token_id()  # a policy the tokenizer cannot follow fails here, before any scoring
    return lm


def _load_adapter(directory: Path, device: str, add_bos: bool | None) -> LanguageModel:
    """The adapter's base, loaded as any model directory, with the adapter merged into its weights."""
    base = load_language_model(adapter_base(directory), device, add_bos=add_bos)
    merged = merge_adapter(base.model, directory).eval()
    sha, files = combined_fingerprint(base.weights_sha256, directory)
    return LanguageModel(
        path=str(directory),
        model=merged,
        tokenizer=base.tokenizer,
        max_positions=base.max_positions,
        weights_sha256=sha,
        weight_files=files,
        model_type=base.model_type,
        add_bos=add_bos,
        base_model=base.path,
    )


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{device}': use auto, cpu or cuda") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but no CUDA GPU is available; use --device cpu")
    return resolved


def _max_positions(config: Any, tokenizer: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 1 < limit < 1_000_000 else 2048


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
