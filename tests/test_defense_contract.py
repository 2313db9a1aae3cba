"""Every registered defense, found in the registry (adding one without meeting this contract fails here):
its example spec builds it, its label names it back, it trains (or hardens) a real model on real data,
keeps each record's predicted label where it only touches outputs, and reports what it did."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from membershield.defenses.registry import DEFENSES, OutputDefense, parse_defense
from membershield.defenses.training import DefendedRecipe, HardenedRecipe, NoDefense
from membershield.training.vectorised import VectorisedSpec


@pytest.fixture(scope="module")
def task() -> tuple[pd.DataFrame, np.ndarray]:
    frame = load_digits(as_frame=True).frame.sample(240, random_state=4)
    features = frame.drop(columns="target").astype(np.float32).reset_index(drop=True)
    return features, frame["target"].to_numpy()


def spec() -> VectorisedSpec:
    def build(X, y, n_classes, seed):
        return nn.Sequential(nn.Linear(X.shape[1], 32), nn.ReLU(), nn.Linear(32, n_classes))

    return VectorisedSpec(build=build, epochs=3, batch_size=32, lr=1e-3)


def recipe_for(defense):
    if isinstance(defense, OutputDefense):
        return HardenedRecipe(DefendedRecipe(spec(), NoDefense()), defense.policy, memguard=defense.memguard)
    return DefendedRecipe(spec(), defense)


@pytest.mark.parametrize("name", list(DEFENSES))
def test_every_defense_builds_trains_and_reports(name, task) -> None:
    kind = DEFENSES[name]
    assert kind.summary, name
    defense = parse_defense(kind.example_spec)
    assert parse_defense(defense.label()).params() == defense.params(), name  # the label names it back
    features, labels = task
    classes = np.arange(10)
    torch.set_num_threads(1)
    recipe = recipe_for(defense)
    target = recipe.fit(features, labels, classes, seed=1)
    logits = np.asarray(target.logits(features))
    assert logits.shape == (len(features), 10) and np.isfinite(logits).all(), name
    if isinstance(defense, OutputDefense):  # output defenses never change a label
        plain = DefendedRecipe(spec(), NoDefense()).fit(features, labels, classes, seed=1)
        np.testing.assert_array_equal(logits.argmax(axis=1), np.asarray(plain.logits(features)).argmax(axis=1))
    report = recipe.defense_report
    assert report and report["name"] in (name, "output", "none"), (name, report)
    json.dumps(report)  # recorded in audit.json as it is
    if name != "none":
        assert recipe.identity() != DefendedRecipe(spec(), NoDefense()).identity(), name


def test_a_defense_that_rewrites_answers_is_also_attacked_without_confidences() -> None:
    # HAMP trains the model and then replaces its confidences; an attacker reading labels only is untouched
    # by the second part, so compare must run the label-only attacks beside the requested ones.
    from membershield.defenses.compare import OUTPUT_DEFENSE_ATTACKS, Variant, _with_output_defense_attacks

    def variants(*specs: str) -> list[Variant]:
        return [Variant(spec, spec, parse_defense(spec), recipe=None) for spec in specs]  # type: ignore[arg-type]

    notes: list[str] = []
    attacks = _with_output_defense_attacks(["lira"], variants("none", "hamp"), notes)
    assert set(OUTPUT_DEFENSE_ATTACKS) <= set(attacks) and attacks[0] == "lira"
    assert notes and "no confidences" in notes[0]
    assert _with_output_defense_attacks(["lira"], variants("none", "mist", "selena"), []) == ["lira"]
