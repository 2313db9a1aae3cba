"""The generator that made the synthetic records, named on the command line (``--generator``), so that the
shadow-generators attack can fit it again on data of its choosing.

- ``sdv:gaussian-copula`` and ``sdv:ctgan`` are SDV's ``GaussianCopulaSynthesizer`` and
  ``CTGANSynthesizer`` (Patki et al. 2016, "The Synthetic Data Vault"; Xu et al. 2019, "Modeling Tabular
  Data using Conditional GAN", NeurIPS), with settings after a colon:
  ``sdv:ctgan:epochs=300,batch_size=100``. Numeric columns are SDV's ``numerical``, every other one
  ``categorical``; a missing categorical value is its own category while SDV fits, and missing again in
  what it samples.
- ``path/to/file.py:function`` is any generator: ``function(train: DataFrame, n: int, *, seed: int) ->
  DataFrame`` fits on ``train`` and returns ``n`` synthetic records with the same columns.

Every random choice of a fit and its sample is seeded (Python's, NumPy's and PyTorch's global streams,
which SDV draws from).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from membershield.errors import ConfigError, InputDataError, ModelLoadError
from membershield.synthetic.encode import MISSING

SDV_SYNTHESIZERS = {"gaussian-copula": "GaussianCopulaSynthesizer", "ctgan": "CTGANSynthesizer"}
TABLE = "records"  # the one table's name in SDV's metadata
KNOWN = ", ".join([*(f"sdv:{name}" for name in SDV_SYNTHESIZERS), "FILE.py:function"])


def _value(text: str) -> Any:
    """A setting's value: a whole number, a number, true/false, else text.

    >>> _value("300"), _value("2e-4"), _value("false"), _value("beta")
    (300, 0.0002, False, 'beta')
    """
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _settings(text: str, spec: str) -> dict[str, Any]:
    """``"epochs=3,batch_size=50"`` as a dict; a part without ``=`` is an error."""
    settings: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"generator '{spec}': settings are key=value separated by commas, got '{part}'")
        settings[key.strip()] = _value(value.strip())
    return settings


ONE_THREAD_ROWS = 20_000  # SDV fits on fewer training records run in one torch thread: as fast, and on a
# busy machine far faster (CTGAN on 107 records: 50 epochs in 2.8 s in one thread; 1,000 epochs took about
# 7 minutes in two)


@contextmanager
def _torch_threads(rows: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if rows < ONE_THREAD_ROWS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class SdvGenerator:
    """One of SDV's single-table synthesizers with its settings."""

    name: str  # a key of SDV_SYNTHESIZERS
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.settings.items())
        return f"sdv:{self.name}" + (f":{options}" if options else "")

    def synthesizer_class(self) -> type:
        from sdv import single_table

        return getattr(single_table, SDV_SYNTHESIZERS[self.name])

    def check(self) -> None:
        """Unknown settings fail before anything fits."""
        try:
            parameters = inspect.signature(self.synthesizer_class().__init__).parameters
        except ImportError as exc:
            raise ConfigError(
                f"generator '{self.spec}' needs SDV: install it as the README's synthetic-data section says ({exc})"
            ) from exc
        unknown = [k for k in self.settings if k not in parameters or k in ("self", "metadata")]
        if unknown:
            allowed = [p for p in parameters if p not in ("self", "metadata")]
            raise ConfigError(
                f"generator '{self.spec}': unknown setting(s) {', '.join(unknown)}; {SDV_SYNTHESIZERS[self.name]}"
                f" takes {', '.join(allowed)}"
            )

    def fit_sample(self, train: pd.DataFrame, n: int, *, seed: int) -> pd.DataFrame:
        from sdv.logging.utils import disable_single_table_logger
        from sdv.metadata import Metadata

        categorical = [c for c in train.columns if not pd.api.types.is_float_dtype(train[c])]
        columns = {c: {"sdtype": "categorical" if c in categorical else "numerical"} for c in train.columns}
        metadata = Metadata.load_from_dict({"tables": {TABLE: {"columns": columns}}})
        data = train.copy()
        for name in categorical:  # SDV 2.0 on pandas 3 cannot fit a missing categorical value: a category
            data[name] = pd.Series([MISSING if v is None else v for v in data[name]], dtype=object)
        _seed_everything(seed)
        with warnings.catch_warnings(), disable_single_table_logger(), _torch_threads(len(data)):
            warnings.simplefilter("ignore")
            synthesizer = self.synthesizer_class()(metadata, **self.settings)
            synthesizer.fit({TABLE: data})
            sampled = synthesizer.sample(n)
        out = (sampled[TABLE] if isinstance(sampled, dict) else sampled).reset_index(drop=True)
        for name in categorical:
            out[name] = pd.Series([None if v == MISSING else v for v in out[name]], dtype=object)
        return out

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        return {"spec": self.spec, "kind": "sdv", "synthesizer": SDV_SYNTHESIZERS[self.name],
                "settings": dict(self.settings), "sdv": metadata.version("sdv")}  # fmt: skip


@dataclass(frozen=True)
class FileGenerator:
    """A function ``fit_sample(train, n, *, seed) -> DataFrame`` in a Python file."""

    path: str
    function_name: str
    function: Callable[..., Any]
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.path}:{self.function_name}"

    def check(self) -> None:
        parameters = inspect.signature(self.function).parameters
        if "seed" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            raise ModelLoadError(
                f"generator {self.spec} must take a 'seed' keyword: def {self.function_name}(train, n, *, seed)"
            )

    def fit_sample(self, train: pd.DataFrame, n: int, *, seed: int) -> pd.DataFrame:
        _seed_everything(seed)
        try:
            return self.function(train.copy(), n, seed=seed)
        except Exception as exc:  # user code: its error on one line, with the generator named
            message = f"generator {self.spec} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            raise ModelLoadError(message) from exc

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": "python-file", "sha256": self.sha256}


Generator = SdvGenerator | FileGenerator


def _load_file_generator(spec: str) -> FileGenerator:
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ModelLoadError(f"generator file not found: {path} (give --generator FILE.py:function)")
    source = path.read_bytes()
    module_name = "membershield_generator_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelLoadError(f"cannot import generator file {path}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # any error in user code: on one line, with the file
        del sys.modules[module_name]
        raise ModelLoadError(
            f"generator file {path} does not import: {type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise ModelLoadError(f"generator file {path} has no function '{name}'")
    return FileGenerator(str(path), name, function, hashlib.sha256(source).hexdigest())


def parse_generator(spec: str) -> Generator:
    """The generator named by ``spec`` (see the module docstring), checked; unknown names fail with the known ones.

    >>> parse_generator("sdv:copula")
    Traceback (most recent call last):
    ...
    membershield.errors.ConfigError: unknown generator 'sdv:copula': use one of sdv:gaussian-copula, ...
    """
    spec = spec.strip()
    if spec.startswith("sdv:"):
        name, _, options = spec[len("sdv:") :].partition(":")
        if name not in SDV_SYNTHESIZERS:
            raise ConfigError(f"unknown generator '{spec}': use one of {KNOWN}")
        generator: Generator = SdvGenerator(name, _settings(options, spec))
    elif ".py:" in spec:
        generator = _load_file_generator(spec)
    else:
        raise ConfigError(f"unknown generator '{spec}': use one of {KNOWN}")
    generator.check()
    return generator


def generate(generator: Generator, train: pd.DataFrame, n: int, *, seed: int, numeric: tuple[str, ...]) -> pd.DataFrame:
    """``n`` records of ``generator`` fitted on ``train``, with ``train``'s columns and the audit's types."""
    from membershield.synthetic.tables import conform

    out = generator.fit_sample(train, n, seed=seed)
    where = f"the output of generator {generator.spec}"
    if not isinstance(out, pd.DataFrame):
        raise ModelLoadError(f"{where} is a {type(out).__name__}, not a pandas DataFrame")
    if set(out.columns) != set(train.columns):
        missing = [c for c in train.columns if c not in out.columns]
        extra = [c for c in out.columns if c not in train.columns]
        raise InputDataError(
            f"{where} lacks columns {missing} and has extra {extra}: it must have the training columns"
        )
    if len(out) == 0:
        raise InputDataError(f"{where} has no records")
    return conform(out[list(train.columns)].reset_index(drop=True), numeric, where)
