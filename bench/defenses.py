"""Training-time overhead of each defense, relative to undefended training, measured in one run.

Every defense trains the same model (``examples/torch_mlp.py``'s declared training: a 256-256 MLP, Adam,
minibatches of 64) on the same records (half of scikit-learn's bundled digits table, 898 rows) for the
same number of epochs, from the same seed. The variants are timed in rounds: each round trains every
variant once, in a fresh random order, so a slow spell on a shared machine hits all of them alike; the
figure per variant is its median over the rounds, and the ratio is that median over the median of
``none``. One warm-up model is trained first and not timed.

What the ratios mean: ``relaxloss``, ``label-smoothing``, ``confidence-penalty``, ``l2`` and ``dropout``
change only the loss or the model, so they cost about what undefended training costs. ``early-stopping``
trains on 80% of the rows and may stop early (cheaper). ``distillation`` trains two models on half of the
rows each. ``adv-reg`` adds an attack network's forward and backward passes to every step. ``dp``
clips each record's gradient (Opacus, ghost clipping: a second backward pass instead of a gradient per
record) and runs the privacy accountant; calibrating the noise for a target ε is a search over
accountant evaluations, and that share is printed separately. ``memguard`` trains the undefended model
plus a shadow model on half of the rows and its defense classifier; it also costs time on every query
(the noise search), shown as the seconds to answer the held-out rows.

    .venv/bin/python bench/defenses.py [--epochs 60] [--rounds 3] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits

from membershield.defenses.registry import OutputDefense, parse_defense
from membershield.defenses.training import DefendedRecipe, HardenedRecipe, NoDefense

DEFENSES = (
    "none",
    "dp:epsilon=8",
    "dp:noise=1.0,accountant=rdp",
    "relaxloss",
    "label-smoothing:0.1",
    "confidence-penalty:0.1",
    "early-stopping",
    "l2:1e-3",
    "dropout:0.3",
    "distillation",
    "adv-reg",
    "memguard:budget=0.5",
    "mist",
    "hamp",
    "selena",
    "pruning",
    "augmentation:kind=noise",
    "augmentation:kind=mixup",
)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_mlp.py"


def example_spec():
    loader = importlib.util.spec_from_file_location("bench_defenses_torch_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module
    loader.loader.exec_module(module)
    return module.vectorised_spec()


def make_recipe(spec, text: str) -> DefendedRecipe | HardenedRecipe:
    defense = parse_defense(text)
    if isinstance(defense, OutputDefense):
        return HardenedRecipe(DefendedRecipe(spec, NoDefense()), defense.policy, memguard=defense.memguard)
    return DefendedRecipe(spec, defense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the example's epochs (default: its own)")
    parser.add_argument("--rounds", type=int, default=3, help="timed trainings per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--defenses", default=None, help="comma-separated subset of the defenses to time (none is always timed)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = example_spec()
    if args.epochs is not None:
        spec = replace(spec, epochs=args.epochs)
    frame = load_digits(as_frame=True).frame
    rows = frame.sample(frac=0.5, random_state=args.seed)
    features = rows.drop(columns="target").reset_index(drop=True)
    labels = rows["target"].to_numpy()
    classes = np.arange(10)

    chosen = list(DEFENSES)
    if args.defenses:
        chosen = ["none", *(d.strip() for d in args.defenses.split(",") if d.strip() and d.strip() != "none")]
    recipes = {text: make_recipe(spec, text) for text in chosen}
    DefendedRecipe(replace(spec, epochs=1), parse_defense("none")).fit(features, labels, classes, args.seed)
    seconds: dict[str, list[float]] = {text: [] for text in chosen}
    accounting: dict[str, list[float]] = {text: [] for text in chosen}
    accuracy: dict[str, float] = {}
    answering: dict[str, list[float]] = {text: [] for text in chosen}
    last_reports: dict[str, dict] = {}
    rest = frame.drop(index=rows.index)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.rounds):
        for text in rng.permutation(chosen):
            start = time.perf_counter()
            target = recipes[text].fit(features, labels, classes, args.seed)
            seconds[text].append(time.perf_counter() - start)
            report = recipes[text].reports.pop(args.seed)  # the next round records its own
            accounting[text].append(report.get("accounting_seconds", 0.0))
            last_reports[text] = report
            start = time.perf_counter()
            predicted = target.logits(rest.drop(columns="target")).argmax(axis=1)
            answering[text].append(time.perf_counter() - start)
            accuracy[text] = float((predicted == rest["target"].to_numpy()).mean())

    base = statistics.median(seconds["none"])
    table = pd.DataFrame(
        {
            "defense": chosen,
            "median s": [statistics.median(seconds[t]) for t in chosen],
            "min s": [min(seconds[t]) for t in chosen],
            "max s": [max(seconds[t]) for t in chosen],
            "× none": [statistics.median(seconds[t]) / base for t in chosen],
            "of which accounting s": [statistics.median(accounting[t]) for t in chosen],
            "holdout acc.": [accuracy[t] for t in chosen],
            f"answer {len(rest)} rows s": [statistics.median(answering[t]) for t in chosen],
        }
    )
    print(
        f"{len(labels)} training rows, {spec.epochs} epochs, batch {spec.batch_size}; {args.rounds} rounds;"
        f" torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for text in chosen:
        report = last_reports[text]
        if report.get("name") == "dp":
            print(
                f"{text}: ε = {report['epsilon']:.3f} (δ = {report['delta']:g}, {report['accountant']}),"
                f" σ = {report['noise_multiplier']:.3f}, q = {report['sample_rate']:.4f}, {report['steps']} steps"
            )


if __name__ == "__main__":
    main()
