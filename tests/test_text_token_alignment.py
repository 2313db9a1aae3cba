"""Text audits score exactly the tokens the model was trained on: LOSS equals the model's own loss.

The reference value is the standard one, ``model(input_ids=ids, labels=ids).loss`` with ``ids`` the
tokenizer's default encoding of the text, computed one record at a time, here and not by membershield.
Three tokenizer set-ups: one that adds no special token and has none, one that puts a BOS first
(Llama-style, padding on the left) and a GPT-2 tokenizer (BOS = EOS = ``<|endoftext|>``, adds nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run_cli
from tests.text_fixtures import gpt2_config, make_corpus, one_thread, save_lm, train_lm, write_jsonl

SETUPS = ("no-special-tokens", "bos-added", "gpt2")


def _bpe(texts: list[str], special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def build_tokenizer(setup: str, texts: list[str]):
    from tokenizers import processors
    from transformers import GPT2Tokenizer, PreTrainedTokenizerFast

    if setup == "no-special-tokens":
        return PreTrainedTokenizerFast(tokenizer_object=_bpe(texts, ["<pad>"]), pad_token="<pad>")
    if setup == "bos-added":
        tok = _bpe(texts, ["<s>", "</s>", "<pad>"])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
        )
    model = json.loads(_bpe(texts, ["<|endoftext|>"]).to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = GPT2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def own_losses(lm, texts: list[str]) -> np.ndarray:
    """``model(input_ids=ids, labels=ids).loss`` of each text on its own, ids from ``tokenizer(text)``."""
    import torch

    out = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
            out.append(float(lm.model(input_ids=ids, labels=ids).loss))
    return np.array(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("alignment")
    texts = make_corpus(40, seed=21)
    out = {}
    with one_thread():
        for setup in SETUPS:
            tokenizer = build_tokenizer(setup, texts)
            config = gpt2_config(len(tokenizer), tokenizer.pad_token_id, n_positions=96)
            model = train_lm(texts, tokenizer, epochs=4, seed=0, config=config)
            out[setup] = save_lm(model, tokenizer, directory / setup)
    write_jsonl(directory / "members.jsonl", texts)
    write_jsonl(directory / "nonmembers.jsonl", make_corpus(40, seed=22))
    return out


@pytest.mark.parametrize("setup", SETUPS)
def test_every_record_scores_its_own_loss_in_any_batch_and_padding(models, setup) -> None:
    from membershield.text.model import load_language_model
    from membershield.text.scoring import score_texts

    lm = load_language_model(models[setup], "cpu")
    texts = make_corpus(16, seed=23)
    expected = own_losses(lm, texts)
    assert (lm.tokenizer(texts[0])["input_ids"][0] == lm.tokenizer.bos_token_id) == (setup == "bos-added")
    for side in ("right", "left"):
        for batch_tokens in (1, 64, 8192):  # one record a batch, a few, all at once
            with one_thread():
                scores = score_texts(lm, texts, batch_tokens=batch_tokens, padding_side=side)
            np.testing.assert_allclose(scores.mean_nll(), expected, atol=1e-4, err_msg=f"{side}, {batch_tokens}")
            assert (scores.n_tokens == [len(lm.tokenizer(t)["input_ids"]) - 1 for t in texts]).all()


def test_bos_override_puts_or_drops_the_bos(models) -> None:
    from membershield.errors import ConfigError
    from membershield.text.model import load_language_model

    text = "Anna moved to Oslo"
    gpt2 = load_language_model(models["gpt2"], "cpu", add_bos=True)
    plain = gpt2.tokenizer(text)["input_ids"]
    assert gpt2.encode([text])[0] == [gpt2.tokenizer.bos_token_id, *plain]
    assert gpt2.leading_context_tokens() == 1
    llama = load_language_model(models["bos-added"], "cpu", add_bos=False)
    assert llama.encode([text])[0] == llama.tokenizer(text)["input_ids"][1:]
    assert load_language_model(models["bos-added"], "cpu").leading_context_tokens() == 1
    with pytest.raises(ConfigError, match="no BOS token"):
        load_language_model(models["no-special-tokens"], "cpu", add_bos=True)


def test_audit_json_says_which_tokens_were_scored(models, tmp_path, monkeypatch, capsys) -> None:
    data = models["gpt2"].parent
    args = ["audit-text", "--model", str(models["bos-added"]), "--members", str(data / "members.jsonl")]
    args += ["--nonmembers", str(data / "nonmembers.jsonl"), "--attacks", "loss", "--out", str(tmp_path / "a")]
    with one_thread():
        code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["target"]["encoding"]["starts_with"] == ["<s>"]
    assert doc["target"]["encoding"]["special_tokens"] == "the tokenizer's default"
    assert doc["target"]["encoding"]["first_token_scored"] is False
    assert doc["data"]["tokens_per_record"]["min"] >= 1
    with one_thread():
        code, _, err = run_cli(monkeypatch, capsys, *args[:-1], str(tmp_path / "b"), "--no-add-bos")
    assert code == 0, err
    doc = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert doc["target"]["encoding"]["starts_with"] == []
    assert doc["target"]["encoding"]["special_tokens"] == "--no-add-bos"
    code, _, err = run_cli(monkeypatch, capsys, *[*args[:2], str(models["no-special-tokens"]), *args[3:]], "--add-bos")
    assert_one_line_error(code, err, "no BOS token", "--add-bos")
