"""A small DDPM trained here until it memorises, for the diffusion audit tests and benchmark.

Nothing is downloaded: the images are scikit-learn's bundled 8×8 handwritten digits (1,797 of them,
grey levels 0-16), the model is a diffusers ``UNet2DModel`` with two blocks of 32 and 64 channels and a
1,000-step linear ``DDPMScheduler``, trained with the standard ε-prediction objective. Trained long enough
on few images it memorises them; a copy trained the same way on other images never saw the members.
Both are written with ``DDPMPipeline.save_pretrained``, the images as PNG folders and ``.npz`` files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DiffusionWorld:
    directory: Path
    target: Path  # DDPM trained on the members
    unseen: Path  # the same recipe trained on other images, never the members
    members_png: Path
    nonmembers_png: Path
    members_npz: Path
    nonmembers_npz: Path
    train_seconds: float  # training the target alone
    unseen_train_seconds: float


def digits_images() -> np.ndarray:
    """The digits as uint8 N×8×8 (0-16 grey levels stretched to 0-255), in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    order = np.random.default_rng(0).permutation(len(images))
    return np.round(images[order] * (255.0 / 16.0)).astype(np.uint8)


def small_unet(channels: tuple[int, int] = (32, 64)) -> Any:
    """A two-block UNet2DModel for 8×8 one-channel images, without attention."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        add_attention=False,  # an attention layer at 4×4 adds a third of the step time and nothing to memorise
        norm_num_groups=8,
    )


def train_ddpm(
    images: np.ndarray,
    out: Path,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 2e-3,
    channels: tuple[int, int] = (32, 64),
) -> float:
    """Train the small DDPM on ``images`` (uint8 N×H×W) and save the pipeline to ``out``; returns seconds."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(seed)
    unet = small_unet(channels)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    data = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]
    optimiser = torch.optim.Adam(unet.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    unet.train()
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        noise = torch.randn(batch.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(batch, noise, t), t).sample, noise)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(out)
    return seconds


def write_png_folder(images: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return folder


def build_world(
    directory: Path,
    *,
    n_members: int,
    steps: int,
    batch_size: int,
    seed: int = 0,
    channels: tuple[int, int] = (32, 64),
    n_nonmembers: int | None = None,
) -> DiffusionWorld:
    """Members (the first ``n_members`` digits), non-members (the next ``n_nonmembers``, as many as members by
    default), the target trained on the members and a copy trained the same way on the last ``n_members``
    digits, which are neither."""
    images = digits_images()
    n_out = n_members if n_nonmembers is None else n_nonmembers
    if 2 * n_members + n_out > len(images):
        raise ValueError(f"{len(images)} digits cannot give {n_members} members, {n_out} non-members and a copy")
    members, nonmembers = images[:n_members], images[n_members : n_members + n_out]
    others = images[len(images) - n_members :]
    recipe = {"steps": steps, "batch_size": batch_size, "seed": seed, "channels": channels}
    seconds = train_ddpm(members, directory / "ddpm", **recipe)
    unseen_seconds = train_ddpm(others, directory / "ddpm-unseen", **recipe)
    np.savez(directory / "members.npz", images=members)
    np.savez(directory / "nonmembers.npz", images=nonmembers.astype(np.float32) / 255.0)
    return DiffusionWorld(
        directory=directory,
        target=directory / "ddpm",
        unseen=directory / "ddpm-unseen",
        members_png=write_png_folder(members, directory / "members"),
        nonmembers_png=write_png_folder(nonmembers, directory / "nonmembers"),
        members_npz=directory / "members.npz",
        nonmembers_npz=directory / "nonmembers.npz",
        train_seconds=seconds,
        unseen_train_seconds=unseen_seconds,
    )
