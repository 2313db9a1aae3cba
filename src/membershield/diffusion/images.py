"""Audit images: read from a folder of PNGs or an ``.npz``, checked, and mapped to the model's range.

An ``.npz`` holds an ``images`` array, N×H×W (one channel) or N×C×H×W, of uint8 0–255 (or other whole
numbers in that range) or floats in [0, 1]. A folder's PNGs are read in file-name order, in the colour
mode of the model's channel count (L for 1, RGB for 3, RGBA for 4), as a diffusers training script reads
them. Every image is kept in [0, 1] as float32 here; :func:`to_model_range` maps it to the range the
pipeline samples in ([-1, 1] for DDPM) only when a batch goes to the model.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from membershield.errors import InputDataError

PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
FLOAT_SLACK = 1e-6  # floats written from [0, 1] arithmetic may overshoot by rounding


@dataclass(frozen=True)
class ImageSet:
    """Images of one side of the audit: ``pixels`` float32 N×C×H×W in [0, 1], one name per image."""

    path: Path
    pixels: np.ndarray
    names: list[str]
    sha256: str
    stored_as: str  # "png", "npz uint8" or "npz float"

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every image."""
        _, c, h, w = self.pixels.shape
        return int(c), int(h), int(w)

    def subset(self, keep: np.ndarray) -> ImageSet:
        names = [n for n, k in zip(self.names, keep, strict=True) if k]
        return ImageSet(self.path, self.pixels[keep], names, self.sha256, self.stored_as)


def to_model_range(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """[0, 1] pixels mapped linearly onto the model's ``[low, high]``.

    >>> to_model_range(np.array([0.0, 0.5, 1.0]), -1.0, 1.0).tolist()
    [-1.0, 0.0, 1.0]
    """
    return (low + (high - low) * np.asarray(pixels, dtype=np.float32)).astype(np.float32)


def unit_range(array: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """An image array as float32 in [0, 1], and what it was stored as; an error naming ``where`` otherwise.

    >>> unit_range(np.array([0, 255], dtype=np.uint8), "x")[0].tolist()
    [0.0, 1.0]
    >>> unit_range(np.array([0.25]), "x")
    (array([0.25], dtype=float32), 'float')
    """
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise InputDataError(f"{where}: images must be uint8 0-255 or floats in [0, 1], got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise InputDataError(
                f"{where}: whole-number pixels must be 0-255, found {low}..{high}; store uint8 or floats in [0, 1]"
            )
        return (array.astype(np.float32) / 255.0), "uint8"
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputDataError(f"{where}: images hold NaN or infinite values; fix or drop those images")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:
        hint = " (they look like 0-255: divide by 255)" if high > 1.5 else ""
        raise InputDataError(f"{where}: float pixels must be in [0, 1], found {low:.3g}..{high:.3g}{hint}")
    return np.clip(values, 0.0, 1.0), "float"


def _as_nchw(array: np.ndarray, where: str, channels: int | None) -> np.ndarray:
    if array.ndim == 3:
        return array[:, None]
    if array.ndim != 4:
        raise InputDataError(f"{where}: 'images' must be N×H×W or N×C×H×W, got shape {array.shape}")
    if channels is not None and array.shape[1] != channels and array.shape[3] == channels:
        raise InputDataError(
            f"{where}: 'images' has shape {array.shape}, channels last; store N×C×H×W"
            " (np.transpose(images, (0, 3, 1, 2)))"
        )
    return array


def _load_npz(path: Path, channels: int | None) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "images" not in keys:
                found = ", ".join(keys) if keys else "no arrays"
                raise InputDataError(f"{path}: no 'images' array (it holds {found}); save with np.savez(f, images=X)")
            array = archive["images"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"{path}: cannot read the .npz ({type(exc).__name__}: {exc})") from exc
    if array.shape[0] == 0:
        raise InputDataError(f"{path}: 'images' holds no images")
    pixels, kind = unit_range(_as_nchw(array, str(path), channels), str(path))
    names = [f"images[{i}]" for i in range(pixels.shape[0])]
    return ImageSet(path, np.ascontiguousarray(pixels), names, _file_sha256(path), f"npz {kind}")


def _load_png_folder(path: Path, channels: int | None) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise InputDataError(f"{path}: no PNG images in this folder (pass a folder of .png files or an .npz)")
    if channels is not None and channels not in PNG_MODES:
        raise InputDataError(f"{path}: PNGs have 1, 3 or 4 channels but the model takes {channels}; pass an .npz")
    digest, arrays, first = hashlib.sha256(), [], None
    for file in files:
        try:
            with Image.open(file) as image:
                mode = PNG_MODES[channels] if channels is not None else ("L" if image.mode in ("1", "L") else "RGB")
                array = np.asarray(image.convert(mode))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputDataError(f"{file}: cannot read this PNG ({type(exc).__name__}: {exc})") from exc
        if first is None:
            first = (file.name, array.shape)
        elif array.shape != first[1]:
            raise InputDataError(
                f"{path}: images of mixed sizes: {first[0]} is {_size(first[1])}, {file.name} is {_size(array.shape)};"
                " resize them all to the model's size"
            )
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
        arrays.append(array if array.ndim == 3 else array[..., None])
    stacked = np.transpose(np.stack(arrays), (0, 3, 1, 2))
    return ImageSet(path, stacked.astype(np.float32) / 255.0, [f.name for f in files], digest.hexdigest(), "png")


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}×{shape[0]}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_images(path: str | Path, channels: int | None = None) -> ImageSet:
    """Read the images at ``path`` (a folder of PNGs or an ``.npz``); ``channels``: the model's, if known."""
    path = Path(path)
    if not path.exists():
        raise InputDataError(f"image path not found: {path} (pass a folder of PNGs or an .npz)")
    if path.is_dir():
        return _load_png_folder(path, channels)
    if path.suffix.lower() == ".npz":
        return _load_npz(path, channels)
    raise InputDataError(f"{path}: not a folder of PNGs or an .npz with an 'images' array")


def check_fits(images: ImageSet, shape: tuple[int, int, int], side: str) -> None:
    """An error naming the side and both shapes when the images are not the size the model takes (a model
    that declares no size, 0 × 0, takes any)."""
    if images.shape != shape and (shape[1:] != (0, 0) or images.shape[0] != shape[0]):
        c, h, w = images.shape
        mc, mh, mw = shape
        raise InputDataError(
            f"{images.path}: {side} images are {c}×{h}×{w} (channels×height×width) but the model takes"
            f" {mc}×{mh}×{mw}; resize them (or pass the images the model was trained on)"
        )


def image_hashes(pixels: np.ndarray) -> list[str]:
    """One digest per image of its pixel values, so identical images match whatever file held them."""
    return [hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in pixels]


@dataclass(frozen=True)
class ImageOverlap:
    """Images present on both sides: their positions among the members and among the non-members."""

    member_rows: np.ndarray
    nonmember_rows: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {"member_rows": self.member_rows.tolist(), "nonmember_rows": self.nonmember_rows.tolist()}


def find_overlap(members: ImageSet, nonmembers: ImageSet) -> ImageOverlap | None:
    """Exact duplicates across the two sides (same pixels), or None when there are none."""
    member_hashes = image_hashes(members.pixels)
    nonmember_hashes = image_hashes(nonmembers.pixels)
    shared = set(member_hashes) & set(nonmember_hashes)
    if not shared:
        return None
    return ImageOverlap(
        np.array([i for i, h in enumerate(member_hashes) if h in shared], dtype=np.int64),
        np.array([i for i, h in enumerate(nonmember_hashes) if h in shared], dtype=np.int64),
    )


def refuse_or_drop(
    members: ImageSet, nonmembers: ImageSet, drop: bool
) -> tuple[ImageSet, ImageSet, ImageOverlap | None]:
    """The two sides without shared images: an error unless ``drop``, which removes them from both."""
    overlap = find_overlap(members, nonmembers)
    if overlap is None:
        return members, nonmembers, None
    if not drop:
        first_m = ", ".join(members.names[i] for i in overlap.member_rows[:3])
        first_n = ", ".join(nonmembers.names[i] for i in overlap.nonmember_rows[:3])
        raise InputDataError(
            f"{overlap.member_rows.size} member image(s) are also non-members (identical pixels; members {first_m},"
            f" non-members {first_n}): an image cannot be both; fix the split, or pass --drop-overlap"
        )
    keep_m = np.ones(len(members), dtype=bool)
    keep_m[overlap.member_rows] = False
    keep_n = np.ones(len(nonmembers), dtype=bool)
    keep_n[overlap.nonmember_rows] = False
    if not keep_m.any() or not keep_n.any():
        raise InputDataError("every member or every non-member image is on both sides: nothing is left to audit")
    return members.subset(keep_m), nonmembers.subset(keep_n), overlap
