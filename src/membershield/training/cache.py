"""Content-addressed cache of model logits, verified by checksum so a partial file is never used.

An entry is ``KEY.npy`` (the logits) plus ``KEY.json`` (its sha256 and shape), written to temporary
names and renamed into place, so an audit killed mid-write leaves either a whole entry or none; a
damaged entry fails its checksum and is trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from membershield.errors import ConfigError


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class LogitCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cache directory {self.directory} is not writable ({exc.strerror}); pass --cache DIR"
            ) from exc

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.npy", self.directory / f"{key}.json"

    def load(self, key: str) -> np.ndarray | None:
        """The cached array, or None when absent or damaged (a damaged entry is removed)."""
        data_path, meta_path = self._paths(key)
        if not (data_path.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            raw = data_path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch")
            array = np.load(data_path, allow_pickle=False)
            if list(array.shape) != meta["shape"]:
                raise ValueError("shape mismatch")
            return array
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            for path in (data_path, meta_path):
                path.unlink(missing_ok=True)
            return None

    def store(self, key: str, array: np.ndarray) -> None:
        """Write an entry whole or not at all; a failed write (full disk, directory gone) is a ConfigError."""
        data_path, meta_path = self._paths(key)
        tmp_data = data_path.with_suffix(f".npy.{os.getpid()}.tmp")
        tmp_meta = meta_path.with_suffix(f".json.{os.getpid()}.tmp")
        try:
            with tmp_data.open("wb") as handle:
                np.save(handle, array, allow_pickle=False)
            raw = tmp_data.read_bytes()
            meta = {"sha256": hashlib.sha256(raw).hexdigest(), "shape": list(array.shape), "dtype": str(array.dtype)}
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_data, data_path)
            os.replace(tmp_meta, meta_path)
        except OSError as exc:
            for path in (tmp_data, tmp_meta):
                with contextlib.suppress(OSError):  # the directory itself may be gone: nothing to clean
                    path.unlink(missing_ok=True)
            raise ConfigError(
                f"cannot write to cache directory {self.directory} ({exc.strerror or exc}); entries written"
                " before are kept: free space or pass --cache DIR, then run again"
            ) from exc
