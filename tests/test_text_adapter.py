"""A LoRA adapter directory audited as the fine-tuned model it stands for (``audit-text --model ADAPTER``).

The adapter is made here with peft on the tiny GPT-2 of the text tests, with non-zero LoRA weights so
that it changes the model; its base is a local directory named in adapter_config.json.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import TextWorld, one_thread, shared_text_world

if os.environ.get("CI") != "true":
    pytest.importorskip("peft", reason="LoRA adapters need the llm extra (peft)")


@pytest.fixture(scope="module")
def text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    return shared_text_world(tmp_path_factory)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def adapter(text_world: TextWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(text_world.reference)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False)
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(out)
    settings = json.loads((out / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = str(text_world.reference)
    (out / "adapter_config.json").write_text(json.dumps(settings))
    return out


def test_an_adapter_scores_as_its_base_with_the_adapter_merged(text_world, adapter) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from membershield.text.model import load_language_model
    from membershield.text.scoring import score_token_ids

    lm = load_language_model(adapter, device="cpu")
    base = load_language_model(text_world.reference, device="cpu")
    texts = [json.loads(line)["text"] for line in text_world.members.read_text().splitlines()[:8]]
    ids = lm.encode(texts)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(text_world.reference), adapter)
    merged = merged.merge_and_unload().eval()
    with torch.inference_mode():
        expected = [float(merged(input_ids=torch.tensor([x]), labels=torch.tensor([x])).loss) for x in ids]
    ours = score_token_ids(lm, ids).mean_nll()
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert np.abs(ours - score_token_ids(base, ids).mean_nll()).max() > 1e-3  # the adapter changed the model
    described = lm.describe()
    assert described["base_model"] == str(text_world.reference)
    assert described["sha256"] != base.weights_sha256 and "adapter_model.safetensors" in described["weight_files"]


def test_audit_text_takes_an_adapter_and_records_its_base(text_world, adapter, tmp_path, monkeypatch, capsys):
    out = tmp_path / "audit"
    code, _, err = run_cli(
        monkeypatch, capsys, "audit-text", "--model", str(adapter), "--members", str(text_world.members),
        "--nonmembers", str(text_world.nonmembers), "--attacks", "loss,zlib", "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    target = json.loads((out / "audit.json").read_text())["target"]
    assert target["spec"] == str(adapter) and target["base_model"] == str(text_world.reference)


def test_an_adapter_without_its_base_is_one_line(text_world, adapter, tmp_path, monkeypatch, capsys) -> None:
    orphan = tmp_path / "orphan"
    shutil.copytree(adapter, orphan)
    settings = json.loads((orphan / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M"
    (orphan / "adapter_config.json").write_text(json.dumps(settings))
    args = ["--members", str(text_world.members), "--nonmembers", str(text_world.nonmembers), "--device", "cpu"]
    code, _, err = run_cli(monkeypatch, capsys, "audit-text", "--model", str(orphan), *args)
    assert_one_line_error(code, err, "LoRA adapter", "HuggingFaceTB/SmolLM2-135M", "nothing is downloaded")
