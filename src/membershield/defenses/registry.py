"""Defense spec strings: ``name`` or ``name:value`` or ``name:key=value,key=value``.

Built-in defenses are listed in :data:`DEFENSES` (no import side effects). Each parameter has a type and
an allowed range, so ``dp:epsilon=0``, ``label-smoothing:abc`` or ``relaxlos`` fail with one line that
names the defense, the parameter and the fix (the closest known name is suggested).

In a list (``--defenses``) the entries are separated by commas too; a comma-separated piece that is a
``key=value`` (or a flag such as ``label_only``) continues the defense before it, so
``none,dp:epsilon=8,delta=1e-5,relaxloss`` is three defenses.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from membershield.defenses.adversarial import AdversarialRegularisation
from membershield.defenses.augmentation import KINDS as AUGMENTATION_KINDS
from membershield.defenses.augmentation import Augmentation
from membershield.defenses.distillation import Distillation
from membershield.defenses.dp import DPSGD
from membershield.defenses.hamp import Hamp
from membershield.defenses.memguard import CITATION as MEMGUARD_CITATION
from membershield.defenses.memguard import DEFAULT_BUDGET, MAX_BUDGET, MemGuardSettings
from membershield.defenses.mist import Mist
from membershield.defenses.output import OutputPolicy
from membershield.defenses.pruning import Pruning
from membershield.defenses.regularisation import ConfidencePenalty, Dropout, EarlyStopping, LabelSmoothing, WeightDecay
from membershield.defenses.relaxloss import RelaxLoss
from membershield.defenses.selena import Selena
from membershield.defenses.training import NoDefense, TrainingDefense, format_value
from membershield.errors import ConfigError


@dataclass(frozen=True)
class Param:
    kind: type  # float, int, str or bool (a flag)
    check: Callable[[Any], bool] = lambda value: True
    requirement: str = ""


@dataclass(frozen=True)
class DefenseType:
    name: str
    factory: Callable[..., Any]
    params: dict[str, Param]
    positional: str | None  # the parameter a bare value sets: label-smoothing:0.1
    summary: str
    example: str = ""  # a spec that builds it (default: the bare name, every parameter at its default)

    @property
    def example_spec(self) -> str:
        return self.example or self.name


class OutputDefense:
    """Output hardening (``defenses.output``) named in a spec string: ``output:top_k=1``."""

    name = "output"
    memguard: MemGuardSettings | None = None

    def __init__(self, **values: Any) -> None:
        if not values:
            keys = ", ".join(DEFENSES["output"].params)
            raise ConfigError(f"defense 'output' needs at least one parameter: {keys} (e.g. output:top_k=1)")
        self.policy = OutputPolicy(**values)
        self.values = values

    def params(self) -> dict[str, Any]:
        return dict(self.values)

    def label(self) -> str:
        return "output:" + ",".join(k if v is True else f"{k}={format_value(v)}" for k, v in self.values.items())


class MemGuardDefense(OutputDefense):
    """MemGuard (``defenses.memguard``) named in a spec string: ``memguard:budget=0.5``."""

    name = "memguard"
    citation = MEMGUARD_CITATION

    def __init__(self, budget: float = DEFAULT_BUDGET) -> None:
        self.memguard = MemGuardSettings(budget)
        self.policy = OutputPolicy()
        self.values = {"budget": budget}

    def label(self) -> str:
        return f"memguard:budget={format_value(self.memguard.budget)}"


Defense = TrainingDefense | OutputDefense

_positive = Param(float, lambda v: v > 0, "greater than 0")
_non_negative = Param(float, lambda v: v >= 0, "0 or more")
_two_or_more = Param(int, lambda v: v >= 2, "2 or more")
_fraction = Param(float, lambda v: 0 < v < 1, "strictly between 0 and 1")

DEFENSES: dict[str, DefenseType] = {
    d.name: d
    for d in (
        DefenseType("none", NoDefense, {}, None, "the recipe's training, unchanged (the baseline)"),
        DefenseType(
            "dp",
            DPSGD,
            {
                "epsilon": _positive,
                "noise": _positive,
                "delta": _fraction,
                "max_grad_norm": _positive,
                "accountant": Param(str, lambda v: v in ("prv", "rdp"), "prv or rdp"),
            },
            "epsilon",
            "DP-SGD through Opacus (Abadi et al. 2016): dp:epsilon=E[,delta=D,max_grad_norm=C,accountant=rdp]"
            " or dp:noise=σ",
            "dp:epsilon=8",
        ),
        DefenseType(
            "relaxloss",
            RelaxLoss,
            {"alpha": _positive},
            "alpha",
            "RelaxLoss (Chen et al. 2022): keep the training loss near alpha",
        ),
        DefenseType(
            "label-smoothing",
            LabelSmoothing,
            {"amount": Param(float, lambda v: 0 <= v < 1, "in [0, 1)")},
            "amount",
            "label smoothing (Szegedy et al. 2016)",
        ),
        DefenseType(
            "confidence-penalty",
            ConfidencePenalty,
            {"beta": Param(float, lambda v: v >= 0, "0 or more")},
            "beta",
            "entropy bonus against confident outputs (Pereyra et al. 2017)",
        ),
        DefenseType(
            "early-stopping",
            EarlyStopping,
            {"patience": Param(int, lambda v: v >= 1, "1 or more"), "validation": _fraction},
            "patience",
            "stop when the loss on a validation split stops improving",
        ),
        DefenseType(
            "l2",
            WeightDecay,
            {"weight_decay": Param(float, lambda v: v >= 0, "0 or more")},
            "weight_decay",
            "L2 weight decay",
        ),
        DefenseType(
            "dropout",
            Dropout,
            {"rate": Param(float, lambda v: 0 <= v < 1, "in [0, 1)")},
            "rate",
            "dropout after every activation (or at this rate in the model's own dropout layers)",
        ),
        DefenseType(
            "distillation",
            Distillation,
            {"temperature": _positive, "reference_fraction": _fraction},
            "temperature",
            "DMP-style distillation (Shejwalkar & Houmansadr 2021): a student learns the teacher's soft labels",
        ),
        DefenseType(
            "adv-reg",
            AdversarialRegularisation,
            {"weight": Param(float, lambda v: v >= 0, "0 or more"), "reference_fraction": _fraction},
            "weight",
            "adversarial regularisation (Nasr et al. 2018): train against a membership attack trained alongside",
        ),
        DefenseType(
            "mist",
            Mist,
            {"submodels": _two_or_more, "weight": _non_negative},
            "submodels",
            "MIST (Li et al. 2024): copies on shares of the rows, averaged; none learns a record past what a"
            " copy without it predicts",
        ),
        DefenseType(
            "hamp",
            Hamp,
            {"entropy": Param(float, lambda v: 0 <= v < 1, "in [0, 1)"), "alpha": _non_negative},
            "entropy",
            "HAMP (Chen & Pattabiraman 2024): high-entropy soft labels, and answers with a random input's"
            " confidences in the query's class order",
        ),
        DefenseType(
            "selena",
            Selena,
            {"models": _two_or_more, "excluded": Param(int, lambda v: v >= 1, "1 or more")},
            "models",
            "SELENA (Tang et al. 2022): sub-models each without part of the rows; the released model distils"
            " their predictions on the rows they never saw",
        ),
        DefenseType(
            "pruning",
            Pruning,
            {
                "sparsity": Param(float, lambda v: 0 < v < 1, "in (0, 1)"),
                "rounds": Param(int, lambda v: v >= 1, "1 or more"),
                "finetune_epochs": Param(int, lambda v: v >= 1, "1 or more"),
            },
            "sparsity",
            "iterative magnitude pruning with fine-tuning (Wang et al. 2021)",
        ),
        DefenseType(
            "augmentation",
            Augmentation,
            {
                "kind": Param(str, lambda v: v in AUGMENTATION_KINDS, " or ".join(AUGMENTATION_KINDS)),
                "strength": _positive,
            },
            "kind",
            "data augmentation of every minibatch: Gaussian noise or mixup (Zhang et al. 2018)",
        ),
        DefenseType(
            "memguard",
            MemGuardDefense,
            {
                "budget": Param(
                    float, lambda v: 0 < v <= MAX_BUDGET, "in (0, 2] (an L1 distance between probability vectors)"
                )
            },
            "budget",
            "MemGuard (Jia et al. 2019): noise on each answer so that a membership classifier reads 0.5;"
            " the label is kept and the expected L1 change of the probabilities is at most budget",
        ),
        DefenseType(
            "output",
            OutputDefense,
            {
                "top_k": Param(int, lambda v: v >= 1, "1 or more"),
                "clip_top1": Param(float, lambda v: 0.5 < v <= 1, "in (0.5, 1]"),
                "round_decimals": Param(int, lambda v: v >= 0, "0 or more"),
                "label_only": Param(bool),
                "noise_std": Param(float, lambda v: v >= 0, "0 or more"),
                "temperature": _positive,
            },
            None,
            "output hardening: top_k, clip_top1, round_decimals, label_only, noise_std, temperature",
            "output:top_k=1,round_decimals=2",
        ),
    )
}

_TYPE_WORDS = {float: "a number", int: "a whole number", str: "a word", bool: "true or false"}


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'? " if close else ""


def _convert(defense: str, key: str, text: str, param: Param) -> Any:
    value: Any
    try:
        if param.kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            value = lowered in ("true", "1", "yes")
        elif param.kind is int:
            value = int(text)
        elif param.kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
        else:
            value = text
    except ValueError:
        example = {float: "0.1", int: "3", bool: "true", str: "prv"}[param.kind]
        raise ConfigError(
            f"defense '{defense}': {key} must be {_TYPE_WORDS[param.kind]}, got '{text}'"
            f" (e.g. {defense}:{key}={example})"
        ) from None
    if not param.check(value):
        raise ConfigError(f"defense '{defense}': {key} must be {param.requirement}, got {text}")
    return value


def parse_defense(text: str) -> Defense:
    """A defense from its spec string; raises ConfigError naming the problem and the fix."""
    text = text.strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower().replace("_", "-")
    kind = DEFENSES.get(name)
    if kind is None:
        raise ConfigError(
            f"unknown defense '{name or text}': {_suggest(name, list(DEFENSES))}"
            f"known defenses are {', '.join(DEFENSES)}"
        )
    values: dict[str, Any] = {}
    pieces = [p.strip() for p in rest.split(",")] if rest.strip() else []
    for i, piece in enumerate(pieces):
        if not piece:
            raise ConfigError(f"defense '{name}': empty parameter in '{text}'")
        key, equals, raw = piece.partition("=")
        key = key.strip().replace("-", "_")
        if not equals:
            param = kind.params.get(key)
            if param is not None and param.kind is bool:
                values[key] = True
                continue
            if i == 0 and kind.positional is not None:
                key, raw = kind.positional, piece
            elif not kind.params:
                raise ConfigError(f"defense '{name}' takes no parameters, got '{piece}'")
            else:
                raise ConfigError(
                    f"defense '{name}': '{piece}' is not key=value; parameters are {', '.join(kind.params)}"
                )
        if key not in kind.params:
            known = ", ".join(kind.params) if kind.params else "none"
            raise ConfigError(
                f"defense '{name}' has no parameter '{key}': {_suggest(key, list(kind.params))}"
                f"its parameters are {known}"
            )
        if key in values:
            raise ConfigError(f"defense '{name}': parameter '{key}' given twice")
        values[key] = _convert(name, key, raw.strip(), kind.params[key])
    return kind.factory(**values)


def _starts_defense(piece: str) -> bool:
    head = piece.split(":", 1)[0].strip()
    return ":" in piece or "=" not in head


def split_defense_list(text: str) -> list[str]:
    """Split ``--defenses`` into one spec string per defense (see the module docstring)."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        current = specs[-1].split(":", 1)[0].strip().lower().replace("_", "-") if specs else None
        kind = DEFENSES.get(current) if current else None
        flag = kind is not None and piece.replace("-", "_") in kind.params
        if specs and ":" in specs[-1] and (flag or not _starts_defense(piece)):
            specs[-1] += "," + piece
        elif specs and ":" not in specs[-1] and "=" in piece and ":" not in piece:
            raise ConfigError(
                f"'{piece}' in --defenses looks like a parameter, but '{specs[-1]}' has none before it;"
                f" write {specs[-1]}:{piece}"
            )
        else:
            specs.append(piece)
    return specs


def parse_defense_list(text: str) -> list[tuple[str, Defense]]:
    """``[(spec string, defense), ...]`` in the given order; an empty list or a duplicate is an error."""
    specs = split_defense_list(text)
    if not specs:
        raise ConfigError("no defenses given: pass --defenses with names such as none,dp:epsilon=8,relaxloss")
    parsed = [(spec, parse_defense(spec)) for spec in specs]
    seen: dict[str, str] = {}
    for spec, defense in parsed:
        label = defense.label()
        if label in seen:
            raise ConfigError(f"defense '{spec}' is listed twice (as '{seen[label]}' and '{spec}')")
        seen[label] = spec
    return parsed


def slug(text: str) -> str:
    """A directory name for a defense spec: ``dp:epsilon=1`` -> ``dp-epsilon-1``."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "variant"
