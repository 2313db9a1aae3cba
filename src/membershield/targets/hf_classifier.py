"""A Hugging Face sequence classifier (``--model hf:DIR``) scored on one text column (``--text-column``).

``DIR`` is what ``model.save_pretrained(DIR)`` and ``tokenizer.save_pretrained(DIR)`` write; the model is
loaded with ``AutoModelForSequenceClassification`` and ``AutoTokenizer`` without network access
(``local_files_only``) and queried in batches, without gradients, on the CPU. Its classes are the labels
of ``config.id2label`` in id order (the audit's label column must hold them); a model that kept
transformers' default names ``LABEL_0 .. LABEL_{C-1}`` has the classes ``0 .. C-1``.

Reference models come from ``--recipe``: in practice a cheaper stand-in pipeline on the same text column,
such as a scikit-learn ``ColumnTransformer`` with a ``TfidfVectorizer`` on that column and a
``LogisticRegression``, fitted on a DataFrame and saved with joblib. That is a weaker attacker than one
who fine-tunes the transformer itself for every reference, so the reference attacks' numbers are a lower
bound of what such an attacker would find. Without ``--recipe`` those attacks refuse.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import InputDataError, ModelLoadError
from membershield.targets.kind import LoadedModel, TargetKind

PREFIX = "hf:"
BATCH_SIZE = 32  # texts per forward pass: bounds the padded batch's memory


class HfClassifierTarget:
    """A sequence classifier's log-probabilities on the texts of one column; black-box access."""

    kind = "hf-classifier"
    access = "black-box"

    def __init__(self, model: Any, tokenizer: Any, classes: np.ndarray, text_column: str | None, where: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.classes = classes
        self.text_column = text_column
        self.where = where
        accepted = inspect.signature(model.forward).parameters
        # a tokenizer can return token_type_ids to a model that takes none (DistilBERT): only the model's own
        self.model_inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]
        self.max_length = _max_length(model.config, tokenizer)

    def texts(self, features: pd.DataFrame) -> list[str]:
        """The text column's values; a missing column or a record without text is an error."""
        column = self.text_column
        if column is None:
            if features.shape[1] != 1:
                shown = ", ".join(str(c) for c in list(features.columns)[:6])
                raise InputDataError(
                    f"{self.where} classifies one text column and the data has {features.shape[1]} feature"
                    f" columns ({shown}): name the text with --text-column"
                )
            column = str(features.columns[0])
        if column not in features.columns:
            raise InputDataError(
                f"--text-column '{column}' is not a column of the data (it has"
                f" {', '.join(str(c) for c in list(features.columns)[:6])}): name the column holding the texts"
            )
        values = features[column]
        empty = np.flatnonzero(values.isna().to_numpy())
        if empty.size:
            raise InputDataError(
                f"text column '{column}' has no text in {empty.size} record(s) (first: row {int(empty[0])});"
                " give every record its text or drop those rows"
            )
        return values.astype(str).tolist()

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        import torch

        texts = self.texts(features)
        # without a padding token texts of unequal length cannot share a batch
        step = BATCH_SIZE if self.tokenizer.pad_token is not None else 1
        parts = [np.zeros((0, len(self.classes)), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                encoded = self.tokenizer(
                    texts[start : start + step],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                inputs = {name: encoded[name] for name in self.model_inputs if name in encoded}
                logits = self.model(**inputs).logits.float()
                parts.append(torch.log_softmax(logits, dim=-1).numpy())
        return np.concatenate(parts)


def _max_length(config: Any, tokenizer: Any) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(v) for v in limits if isinstance(v, int) and 1 < v < 1_000_000]
    return min(usable) if usable else 512


def classes_of(config: Any) -> np.ndarray:
    """The labels of ``config.id2label`` in id order; transformers' default names are read as ``0..C-1``."""
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(n)]
    if labels == [f"LABEL_{i}" for i in range(n)]:
        return np.arange(n, dtype=np.int64)
    return np.asarray([str(label) for label in labels], dtype=object)


def _check_sequence_classifier(config: Any, directory: Path) -> None:
    """Refuse a directory without a classification head: loading it would add an untrained one."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    architectures = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", "")
    if architectures:
        ok = any(name.endswith("ForSequenceClassification") for name in architectures)
    else:
        ok = model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if not ok:
        shown = ", ".join(architectures) or f"model type '{model_type}'"
        raise ModelLoadError(
            f"{directory} holds {shown}, not a sequence classifier; hf: needs a model saved from"
            " AutoModelForSequenceClassification (a language model directory is audited with audit-text)"
        )


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ModelLoadError("hf: classifiers need transformers: pip install 'membershield[text]'") from exc
    transformers.logging.set_verbosity_error()  # its load reports would bury the audit's output
    transformers.logging.disable_progress_bar()
    return transformers


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_classifier(directory: Path) -> tuple[Any, Any, str]:
    """The model (eval mode, CPU), its tokenizer and the sha256 over its weight files."""
    from membershield.text.model import weights_fingerprint

    if not directory.is_dir():
        what = "is a file" if directory.exists() else "not found"
        raise ModelLoadError(f"classifier directory {what}: {directory} (give hf:DIR, a save_pretrained directory)")
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory} has no config.json: not a transformers model directory (save_pretrained)")
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # a malformed config fails with JSON, value or key errors alike
        raise ModelLoadError(f"{directory}: cannot read the model configuration: {_first_line(exc)}") from exc
    _check_sequence_classifier(config, directory)
    sha, files = weights_fingerprint(directory)
    if not files:
        raise ModelLoadError(f"{directory} has no weights file (*.safetensors or *.bin); save it with save_pretrained")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # transformers raises many types here; all mean "no usable tokenizer"
        raise ModelLoadError(
            f"{directory}: no usable tokenizer ({_first_line(exc)}); save it next to the model with"
            " tokenizer.save_pretrained"
        ) from exc
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{directory}: cannot load the model weights: {_first_line(exc)}") from exc
    model.eval()
    return model.to("cpu"), tokenizer, sha


class HfClassifierDirectory(TargetKind):
    name = "hf-classifier"
    description = "Hugging Face sequence classifier directory (save_pretrained) on a text column"
    example = "hf:models/review-classifier/"
    access = "black-box"
    gives_recipe = False  # unless --recipe names a stand-in pipeline
    audit_command = "audit"
    serves = None  # the guard's records are numbers and categories, not free text

    def recognises(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def load(self, spec: str, **options: Any) -> LoadedModel:
        """``options``: ``text_column`` (the column of texts) and ``recipe`` (the references' pipeline)."""
        from membershield.targets.registry import recipe_from  # the registry lists this module

        directory = Path(spec.removeprefix(PREFIX))
        model, tokenizer, sha = load_classifier(directory)
        target = HfClassifierTarget(model, tokenizer, classes_of(model.config), options.get("text_column"), spec)
        recipe = recipe_from(options["recipe"]) if options.get("recipe") else None
        return LoadedModel(target=target, recipe=recipe, kind=self.name, spec=spec, sha256=sha)
