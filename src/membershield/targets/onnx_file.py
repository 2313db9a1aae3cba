"""A classifier exported to ONNX (``--model model.onnx``), queried with onnxruntime on the CPU.

What is read from the file:

- **Inputs.** One input: every feature column, in the data's column order, as one ``(n, F)`` tensor (what
  ``skl2onnx.to_onnx(model, X)`` and ``torch.onnx.export`` of a ``(batch, F)`` module give). Several
  inputs: one per column, each ``(n, 1)`` or ``(n,)``, matched to the columns by name (skl2onnx names
  them after a DataFrame's columns), else by position when the counts agree. Each input gets its declared
  element type; a fixed batch dimension (an export without dynamic axes) is fed in chunks of that size.
- **Output.** The probabilities: an output whose name holds ``prob`` (skl2onnx's ``output_probability``
  or ``probabilities``), a ZipMap (a list of ``{class: probability}``), else the first float tensor. A
  tensor is read as probabilities when it is named so or every row is non-negative and sums to 1, else
  as logits (a torch export's usual output); either way the target answers log-probabilities.
- **Classes**, first found: the model's ``metadata_props`` entry ``classes`` (a JSON list, e.g. set with
  ``onnx.helper.set_model_props(model, {"classes": json.dumps(["cat", "dog"])})``); the class labels
  skl2onnx writes into its ZipMap or classifier node (``classlabels_*``); skl2onnx's ``classes``
  initializer; else ``0..C-1`` for a C-column output, the usual labels of a torch classifier.

An ONNX file is weights, not a pipeline: reference models come from ``--recipe`` (a recipe file or a
model file whose clone is trained), and without one the attacks that need them refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import InputDataError, ModelLoadError
from membershield.targets.base import LOG_FLOOR
from membershield.targets.kind import LoadedModel, TargetKind, sha256_file

INSTALL_HINT = "pip install 'membershield[onnx]'"
CHUNK_ROWS = 8192  # rows per run with a dynamic batch: bounds the memory of one call
NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
LABEL_ATTRIBUTES = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: Any
    shape: tuple[Any, ...]  # dims: int when fixed, str or None when free

    @property
    def width(self) -> int | None:
        """The number of columns this input takes, when its shape fixes it."""
        if len(self.shape) < 2:
            return 1
        return self.shape[1] if isinstance(self.shape[1], int) else None

    @property
    def batch(self) -> int | None:
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None


@dataclass(frozen=True)
class _Output:
    name: str
    is_map: bool  # a ZipMap: one {class: probability} dict per row
    is_probability: bool | None  # None: decided from the values
    width: int | None


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(
            f"reading ONNX models needs onnx and onnxruntime ({exc.name} is not installed): {INSTALL_HINT}"
        ) from exc
    return onnx, onnxruntime


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _open(path: Path) -> tuple[Any, Any]:
    """The graph (without external weights: only its structure is read) and an inference session."""
    onnx, onnxruntime = _import_onnx()
    fix = "is it a complete .onnx file? export it again"
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have no common public type
        raise ModelLoadError(f"cannot read ONNX model file {path}: {_first_line(exc)} ({fix})") from exc
    try:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings would bury the audit's output
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {_first_line(exc)} ({fix})") from exc
    return proto, session


def _inputs(session: Any, path: Path) -> list[_Input]:
    inputs = []
    for node in session.get_inputs():
        if node.type not in NUMPY_TYPES:
            raise ModelLoadError(
                f"{path}: input '{node.name}' is {node.type}; membershield feeds tabular columns"
                f" ({', '.join(NUMPY_TYPES)}): export the model with tensor inputs"
            )
        inputs.append(_Input(node.name, NUMPY_TYPES[node.type], tuple(node.shape)))
    if not inputs:
        raise ModelLoadError(f"{path} declares no inputs: export the model with its feature input")
    return inputs


def _output(session: Any, path: Path) -> _Output:
    outputs = session.get_outputs()
    maps = [o for o in outputs if o.type.startswith("seq(map(")]
    tensors = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)") and len(o.shape) == 2]
    named = [o for o in maps + tensors if "prob" in o.name.lower()]
    chosen = (named or maps or tensors or [None])[0]
    if chosen is None:
        shown = ", ".join(f"{o.name} {o.type}" for o in outputs)
        raise ModelLoadError(
            f"{path} has no probability or logit output ({shown}); export the classifier's scores as a"
            " float (n, classes) tensor"
        )
    is_map = chosen in maps
    width = chosen.shape[1] if not is_map and isinstance(chosen.shape[1], int) else None
    return _Output(chosen.name, is_map, True if (is_map or chosen in named) else None, width)


def _metadata_classes(session: Any, path: Path) -> list[Any] | None:
    text = session.get_modelmeta().custom_metadata_map.get("classes")
    if text is None:
        return None
    try:
        classes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{path}: metadata 'classes' is not JSON ({exc}); set it to a JSON list of labels"
        ) from exc
    if not isinstance(classes, list) or not classes or not all(isinstance(c, int | str) for c in classes):
        raise ModelLoadError(f"{path}: metadata 'classes' must be a JSON list of int or string labels, got {text!r}")
    return classes


def _graph_classes(proto: Any) -> list[Any] | None:
    """The labels skl2onnx writes: its ZipMap's, else the last classifier node's, else its ``classes``."""
    from onnx import helper, numpy_helper

    found: list[Any] | None = None
    for node in proto.graph.node:
        if node.domain != "ai.onnx.ml":
            continue
        for attribute in node.attribute:
            if attribute.name in LABEL_ATTRIBUTES:
                values = list(helper.get_attribute_value(attribute))
                labels = [v.decode() if isinstance(v, bytes) else int(v) for v in values]
                if node.op_type == "ZipMap":
                    return labels
                found = labels
    if found is not None:
        return found
    for initializer in proto.graph.initializer:
        if initializer.name == "classes" and len(initializer.dims) == 1:
            values = numpy_helper.to_array(initializer).tolist()
            return [v.decode() if isinstance(v, bytes) else v for v in values]
    return None


def _class_array(labels: list[Any]) -> np.ndarray:
    if all(isinstance(c, int) for c in labels):
        return np.asarray(labels, dtype=np.int64)
    return np.asarray([str(c) for c in labels], dtype=object)


class OnnxTarget:
    """An ONNX classifier behind onnxruntime; black-box access (its answers, not its gradients)."""

    kind = "onnx"
    access = "black-box"

    def __init__(self, session: Any, path: Path, inputs: list[_Input], output: _Output, classes: np.ndarray) -> None:
        self.session = session
        self.path = path
        self.inputs = inputs
        self.output = output
        self.classes = classes

    def _feeds(self, features: pd.DataFrame) -> dict[str, np.ndarray]:
        """The data in the model's input layout (see the module docstring)."""
        columns = [str(c) for c in features.columns]
        if len(self.inputs) == 1:
            single = self.inputs[0]
            if single.width is not None and single.width != features.shape[1]:
                raise InputDataError(
                    f"{self.path} expects {single.width} feature columns in its input '{single.name}' but the"
                    f" data has {features.shape[1]} (all columns except the label and --ignore-columns, in the"
                    " model's order): drop or add columns to match"
                )
            values = features.to_numpy()
            return {single.name: values.reshape(len(values)) if len(single.shape) == 1 else values}
        names = [i.name for i in self.inputs]
        if set(names) <= set(columns):
            picked = [features.iloc[:, columns.index(name)] for name in names]
        elif len(names) == len(columns):
            picked = [features.iloc[:, k] for k in range(len(columns))]
        else:
            missing = [n for n in names if n not in columns]
            raise InputDataError(
                f"{self.path} has {len(names)} inputs, one per column, but the data has {len(columns)} feature"
                f" columns and lacks '{missing[0]}' ({len(missing)} missing): give the model's columns"
                " (all columns except the label and --ignore-columns)"
            )
        return {
            i.name: column.to_numpy().reshape(-1, 1) if len(i.shape) != 1 else column.to_numpy()
            for i, column in zip(self.inputs, picked, strict=True)
        }

    def _typed(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        typed = {}
        for spec in self.inputs:
            values = feeds[spec.name]
            try:
                typed[spec.name] = (
                    values.astype(str).astype(object) if spec.dtype is np.object_ else values.astype(spec.dtype)
                )
            except (TypeError, ValueError) as exc:
                raise InputDataError(
                    f"{self.path}: input '{spec.name}' takes {np.dtype(spec.dtype).name} values and the data"
                    f" cannot be read as such ({_first_line(exc)}); check the feature columns' contents"
                ) from exc
        return typed

    def _run(self, feeds: dict[str, np.ndarray], n: int) -> np.ndarray:
        fixed = {spec.batch for spec in self.inputs} - {None}
        batch = fixed.pop() if len(fixed) == 1 else None
        step = batch or CHUNK_ROWS
        parts = []
        for start in range(0, n, step):
            chunk = {name: values[start : start + step] for name, values in feeds.items()}
            rows = min(step, n - start)
            if batch is not None and rows < batch:
                # an export with a fixed batch size: the last chunk is padded, and the padding dropped
                chunk = {
                    name: np.concatenate([v, np.repeat(v[-1:], batch - rows, axis=0)]) for name, v in chunk.items()
                }
            parts.append(self._matrix(self.session.run([self.output.name], chunk)[0])[:rows])
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))

    def _matrix(self, answer: Any) -> np.ndarray:
        if self.output.is_map:
            order = self.classes.tolist()
            return np.asarray([[row[c] for c in order] for row in answer], dtype=np.float64)
        return np.asarray(answer, dtype=np.float64)

    def logits(self, features: pd.DataFrame) -> np.ndarray:
        feeds = self._typed(self._feeds(features))
        try:
            scores = self._run(feeds, len(features))
        except Exception as exc:  # onnxruntime's own errors: the data does not fit the graph
            if isinstance(exc, InputDataError):
                raise
            raise InputDataError(
                f"{self.path} cannot score the data: {_first_line(exc)} (check the feature columns against"
                " the model's inputs)"
            ) from exc
        if scores.shape[1] != len(self.classes):
            raise InputDataError(
                f"{self.path} answered {scores.shape[1]} columns for {len(self.classes)} classes; set its metadata"
                " 'classes' to the labels of its outputs"
            )
        return _log_proba(scores, self.output.is_probability)


def _log_proba(scores: np.ndarray, is_probability: bool | None) -> np.ndarray:
    if is_probability is None:
        sums = scores.sum(axis=1)
        is_probability = bool(np.all(scores >= 0) and np.allclose(sums, 1.0, atol=1e-3))
    if is_probability:
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(scores), LOG_FLOOR).astype(np.float32)
    shifted = scores - scores.max(axis=1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)


def _classes(proto: Any, session: Any, output: _Output, inputs: list[_Input], path: Path) -> np.ndarray:
    labels = _metadata_classes(session, path) or _graph_classes(proto)
    width = output.width
    if labels is None and width is None:
        width = _probe_width(session, output, inputs, path)
    if labels is None:
        return np.arange(width, dtype=np.int64)
    if width is not None and len(labels) != width:
        raise ModelLoadError(
            f"{path} names {len(labels)} classes but its output '{output.name}' has {width} columns;"
            " set its metadata 'classes' to one label per output column"
        )
    return _class_array(labels)


def _probe_width(session: Any, output: _Output, inputs: list[_Input], path: Path) -> int:
    """The output's width when the graph leaves it free: one all-zero record is scored."""
    feeds = {}
    for spec in inputs:
        if spec.width is None:
            raise ModelLoadError(
                f"{path}: neither its classes nor its output width are declared; set its metadata 'classes'"
            )
        shape = (spec.batch or 1,) if len(spec.shape) == 1 else (spec.batch or 1, spec.width)
        feeds[spec.name] = (
            np.zeros(shape, dtype=spec.dtype) if spec.dtype is not np.object_ else np.full(shape, "", object)
        )
    try:
        answer = session.run([output.name], feeds)[0]
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot find its number of classes ({_first_line(exc)}); set its metadata 'classes'"
        ) from exc
    return int(np.asarray(answer).shape[1])


class OnnxFile(TargetKind):
    name = "onnx"
    description = "classifier exported to ONNX (skl2onnx, torch.onnx), run with onnxruntime"
    example = "model.onnx"
    access = "black-box"
    gives_recipe = False  # unless --recipe names the pipeline
    audit_command = "audit"
    serves = "POST /v1/predict"

    def recognises(self, spec: str) -> bool:
        return spec.lower().endswith(".onnx") and not Path(spec).is_dir()

    def load(self, spec: str, **options: Any) -> LoadedModel:
        from membershield.targets.registry import recipe_from  # the registry lists this module

        path = Path(spec)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path} (give an .onnx file exported from the classifier)")
        proto, session = _open(path)
        inputs, output = _inputs(session, path), _output(session, path)
        target = OnnxTarget(session, path, inputs, output, _classes(proto, session, output, inputs, path))
        recipe = recipe_from(options["recipe"]) if options.get("recipe") else None
        return LoadedModel(target=target, recipe=recipe, kind=self.name, spec=str(path), sha256=sha256_file(path))
