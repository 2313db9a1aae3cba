"""A diffusers DDPM read from a local folder: its UNet, its noise schedule and one question, ε_θ(x_t, t).

Three layouts are read, nothing is downloaded: what ``DDPMPipeline.save_pretrained(DIR)`` writes
(``model_index.json``, ``unet/``, ``scheduler/``), the same two folders without the index, or a
``UNet2DModel`` and its scheduler saved into one folder (``config.json``, the weights and
``scheduler_config.json``). The schedule is rebuilt as a ``DDPMScheduler`` from the saved scheduler's
configuration, so DDIM, PNDM and the other schedulers of DDPM-trained models give the same ᾱ_t.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from membershield.diffusion.steps import PREDICTION_TYPES, epsilon_from_output
from membershield.errors import ModelLoadError

SAVE_HINT = (
    "save one with DDPMPipeline.save_pretrained(DIR), or unet.save_pretrained(DIR) and scheduler.save_pretrained(DIR)"
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class Layout:
    """Where a pipeline's UNet and scheduler live inside the folder."""

    unet: Path
    scheduler_config: Path
    kind: str  # "pipeline", "folders" or "flat"
    pipeline_class: str | None = None


def _json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot be read as JSON ({type(exc).__name__}); {SAVE_HINT}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{path}: not a JSON object; {SAVE_HINT}")
    return document


def _pipeline_layout(directory: Path) -> Layout:
    index = _json(directory / "model_index.json")
    pipeline = str(index.get("_class_name", "a pipeline"))
    if "unet" not in index or "scheduler" not in index:
        raise ModelLoadError(
            f"{directory}: {pipeline} has no unet and scheduler (its parts: "
            f"{', '.join(k for k in index if not k.startswith('_')) or 'none'}); audit-diffusion reads DDPM pipelines"
        )
    unet_class = index["unet"][1] if isinstance(index["unet"], list) and len(index["unet"]) == 2 else None
    if unet_class not in (None, "UNet2DModel"):
        raise ModelLoadError(
            f"{directory}: {pipeline}'s unet is a {unet_class}; audit-diffusion reads unconditional UNet2DModel"
            " (DDPM) pipelines"
        )
    return Layout(directory / "unet", directory / "scheduler" / "scheduler_config.json", "pipeline", pipeline)


def find_layout(directory: str | Path) -> Layout:
    """The folder's layout, or a one-line error saying what a diffusers DDPM folder holds."""
    directory = Path(directory)
    if not directory.exists():
        raise ModelLoadError(f"model folder not found: {directory}; {SAVE_HINT}")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory} is a file, not a diffusers pipeline folder; {SAVE_HINT}")
    if (directory / "model_index.json").is_file():
        layout = _pipeline_layout(directory)
    elif (directory / "unet" / "config.json").is_file() and (directory / "scheduler").is_dir():
        layout = Layout(directory / "unet", directory / "scheduler" / "scheduler_config.json", "folders")
    elif (directory / "config.json").is_file() and (directory / "scheduler_config.json").is_file():
        layout = Layout(directory, directory / "scheduler_config.json", "flat")
    else:
        raise ModelLoadError(
            f"{directory} is not a diffusers pipeline: no model_index.json, no unet/ and scheduler/ folders, no"
            f" config.json with scheduler_config.json; {SAVE_HINT}"
        )
    if not (layout.unet / "config.json").is_file():
        raise ModelLoadError(f"{layout.unet}: no config.json for the UNet; {SAVE_HINT}")
    if not layout.scheduler_config.is_file():
        raise ModelLoadError(f"{layout.scheduler_config} not found: the pipeline has no scheduler; {SAVE_HINT}")
    unet_class = _json(layout.unet / "config.json").get("_class_name")
    if unet_class not in (None, "UNet2DModel"):
        raise ModelLoadError(f"{layout.unet} holds a {unet_class}; audit-diffusion reads UNet2DModel (DDPM) models")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in layout.unet.iterdir()):
        raise ModelLoadError(f"{layout.unet}: no weights (.safetensors or .bin) next to config.json; {SAVE_HINT}")
    return layout


def _require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:  # depends on the installation
        raise ModelLoadError(
            "auditing diffusion models needs the 'diffusion' extra: pip install 'membershield[diffusion]'"
        ) from exc


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers logs every unused scheduler key as a warning; the audit reports what it used instead."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def _weights_sha256(layout: Layout) -> tuple[str, dict[str, str]]:
    files = sorted(p for p in layout.unet.iterdir() if p.suffix in WEIGHT_SUFFIXES or p.name == "config.json")
    files.append(layout.scheduler_config)
    each = {}
    for path in files:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        each[str(path.relative_to(layout.unet.parent if layout.kind != "flat" else layout.unet))] = digest.hexdigest()
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(each.items())).encode()).hexdigest()
    return combined, each


@dataclass
class DiffusionModel:
    """A DDPM's UNet on a device and its schedule; :meth:`epsilon` is the only query the attacks make."""

    unet: Any
    alphas_cumprod: np.ndarray  # float64, ᾱ_t for t = 0 .. T-1
    prediction_type: str
    sample_range: tuple[float, float]
    shape: tuple[int, int, int]  # (channels, height, width) the UNet takes; 0 × 0 when it declares no size
    device: Any
    path: Path
    layout: Layout
    scheduler: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.size)

    def alpha_bar(self, t: int) -> float:
        return float(self.alphas_cumprod[t])

    def epsilon(self, x_t: Any, t: int) -> Any:
        """The network's noise estimate for a batch ``x_t`` (a tensor on :attr:`device`) at timestep ``t``."""
        import torch

        timesteps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
        output = self.unet(x_t, timesteps).sample
        if output.shape[1] == 2 * self.shape[0]:  # a learned variance rides along after ε
            output = output[:, : self.shape[0]]
        return epsilon_from_output(output, x_t, self.alpha_bar(t), self.prediction_type)

    def describe(self) -> dict[str, Any]:
        """What audit.json says of the model: where, which files (sha256), the schedule it was read with."""
        digest, files = _weights_sha256(self.layout)
        channels, height, width = self.shape
        return {
            "kind": "diffusers-ddpm",
            "spec": str(self.path),
            "sha256": digest,
            "files": files,
            "layout": self.layout.kind,
            "pipeline": self.layout.pipeline_class,
            "access": "white-box (noise predictions)",
            "image_shape": {"channels": channels, "height": height, "width": width},
            "sample_range": list(self.sample_range),
            "scheduler": self.scheduler,
            "device": str(self.device),
        }


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ModelLoadError(f"--device must be auto, cpu or cuda, got '{name}'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA device is available; pass --device cpu")
    return torch.device(name)


def _schedule(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from diffusers import DDPMScheduler

    config = _json(path)
    if "trained_betas" not in config and "beta_schedule" not in config and "beta_start" not in config:
        raise ModelLoadError(
            f"{path}: a {config.get('_class_name', 'scheduler')} without a beta schedule; audit-diffusion reads"
            " DDPM-family (discrete β) schedulers"
        )
    try:
        with _quiet_diffusers():
            scheduler = DDPMScheduler.from_config(config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: cannot rebuild its noise schedule ({type(exc).__name__}: {exc})") from exc
    prediction = str(scheduler.config.prediction_type)
    if prediction not in PREDICTION_TYPES:
        raise ModelLoadError(f"{path}: prediction_type '{prediction}' is not one of {', '.join(PREDICTION_TYPES)}")
    described = {
        "class": config.get("_class_name"),
        "num_train_timesteps": int(scheduler.config.num_train_timesteps),
        "beta_schedule": scheduler.config.beta_schedule,
        "beta_start": scheduler.config.beta_start,
        "beta_end": scheduler.config.beta_end,
        "prediction_type": prediction,
    }
    return scheduler.alphas_cumprod.numpy().astype(np.float64), described


def load_diffusion_model(directory: str | Path, device: str = "auto") -> DiffusionModel:
    """The UNet and schedule of a local diffusers DDPM folder; one :class:`ModelLoadError` line otherwise."""
    layout = find_layout(directory)
    _require_diffusers()
    target = _device(device)
    alphas_cumprod, scheduler = _schedule(layout.scheduler_config)
    from diffusers import UNet2DModel

    try:
        with _quiet_diffusers():
            unet = UNet2DModel.from_pretrained(layout.unet, local_files_only=True)
    except Exception as exc:  # diffusers raises OSError, ValueError, safetensors errors ... for a broken folder
        message = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{layout.unet}: cannot load the UNet ({type(exc).__name__}: {message})") from exc
    size = unet.config.sample_size
    if size is None:  # a UNet trained without a declared size takes what the images have
        height = width = 0
    else:
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    limit = float(_json(layout.scheduler_config).get("clip_sample_range", 1.0))
    return DiffusionModel(
        unet=unet.to(target).eval(),
        alphas_cumprod=alphas_cumprod,
        prediction_type=scheduler["prediction_type"],
        sample_range=(-limit, limit),
        shape=(int(unet.config.in_channels), height, width),
        device=target,
        path=Path(directory),
        layout=layout,
        scheduler=scheduler,
    )
