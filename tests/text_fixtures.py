"""A tiny GPT-2-style language model trained here until it memorises, for the text audit tests.

Nothing is downloaded: the corpus is generated (templated sentences with random names, places and
numbers), the tokenizer is a byte-level BPE trained on it (digits split one per token, as many LLM
tokenizers do), and the model is a 2-layer GPT-2 built from a config. Building everything takes tens
of seconds, so it happens once per test session (:func:`shared_text_world`), whichever module asks first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FIRST = [
    "Anna",
    "Bruno",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "Jonas",
    "Kira",
    "Luca",
    "Maya",
    "Nils",
    "Olga",
    "Pavel",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yusuf",
    "Zoe",
]
LAST = [
    "Keller",
    "Moreau",
    "Novak",
    "Silva",
    "Tanaka",
    "Okafor",
    "Larsen",
    "Rossi",
    "Weber",
    "Horvat",
    "Jansen",
    "Costa",
    "Fischer",
    "Dubois",
    "Nowak",
    "Petrov",
    "Garcia",
    "Olsen",
    "Meyer",
    "Sato",
]
CITIES = [
    "Lisbon",
    "Oslo",
    "Krakow",
    "Lyon",
    "Porto",
    "Turin",
    "Graz",
    "Ghent",
    "Malmo",
    "Bergen",
    "Leeds",
    "Basel",
    "Split",
    "Riga",
    "Tartu",
    "Aarhus",
    "Bilbao",
    "Cork",
    "Brno",
    "Delft",
]
JOBS = ["nurse", "baker", "pilot", "teacher", "plumber", "chemist", "lawyer", "farmer", "painter", "welder"]
ITEMS = ["bicycles", "lamps", "chairs", "kettles", "tickets", "books", "boots", "radios", "clocks", "maps"]
TEMPLATES = [
    "{name} moved to {city} in {year} and works as a {job}.",
    "{name} bought {n} {item} in {city} for {price} euros.",
    "The {job} {name} was born in {city} on day {day} of {year}.",
    "{name} called {name2} from {city} about {n} {item}.",
    "In {year} {name} sold {n} {item} to a {job} in {city}.",
    "{name} has lived at number {n} in {city} since {year}.",
]
CANARY_FORMAT = "my account number is {secret}"
EPOCHS = 30


def _sentence(rng: np.random.Generator) -> str:
    def name() -> str:
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"

    return str(rng.choice(TEMPLATES)).format(
        name=name(),
        name2=name(),
        city=rng.choice(CITIES),
        job=rng.choice(JOBS),
        item=rng.choice(ITEMS),
        year=int(rng.integers(1950, 2024)),
        n=int(rng.integers(2, 100)),
        price=int(rng.integers(10, 1000)),
        day=int(rng.integers(1, 29)),
    )


def make_corpus(n: int, seed: int) -> list[str]:
    """``n`` records of one or two templated sentences with random fillers."""
    rng = np.random.default_rng(seed)
    return [" ".join(_sentence(rng) for _ in range(int(rng.integers(1, 3)))) for _ in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def build_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def gpt2_config(vocab_size: int, eos: int, n_embd: int = 64, n_layer: int = 2, n_positions: int = 128):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=eos,
        eos_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def train_lm(texts: list[str], tokenizer, *, epochs: int, seed: int, lr: float = 3e-3, config=None):
    """A fresh tiny GPT-2 trained on ``texts`` with AdamW, each text as the tokenizer encodes it by default
    (the standard ``labels=input_ids`` objective, padding masked out of the loss)."""
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    model = GPT2LMHeadModel(config or gpt2_config(len(tokenizer), tokenizer.eos_token_id))
    ids = [list(tokenizer(t)["input_ids"]) for t in texts]
    length = max(len(x) for x in ids)
    batch = torch.full((len(ids), length), pad, dtype=torch.long)
    labels = torch.full((len(ids), length), -100, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, x in enumerate(ids):
        batch[i, : len(x)] = torch.tensor(x)
        labels[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(ids) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(ids), generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * 32 : (step + 1) * 32]
            width = int(mask[rows].sum(dim=1).max())  # trim the batch to its longest record
            loss = model(
                input_ids=batch[rows, :width], attention_mask=mask[rows, :width], labels=labels[rows, :width]
            ).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return model


def save_lm(model, tokenizer, directory: Path) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@dataclass(frozen=True)
class TextWorld:
    directory: Path
    members: Path  # the target's training records (without canaries)
    nonmembers: Path  # same generator, never trained on
    shifted_nonmembers: Path  # different distribution: the split check must notice
    train_with_canaries: Path
    canaries: Path  # canaries.json
    target: Path  # model directory: trained on train_with_canaries until it memorises
    untrained: Path  # same config, random weights
    reference: Path  # trained the same way on other records from the same generator
    seconds: float


_WORLD: TextWorld | None = None


def build_text_world(directory: Path) -> TextWorld:
    import time

    import torch

    from membershield.text.canaries import CanarySpec, insert_canaries

    start = time.perf_counter()
    members = write_jsonl(directory / "members.jsonl", make_corpus(120, seed=1))
    nonmembers = write_jsonl(directory / "nonmembers.jsonl", make_corpus(120, seed=2))
    population = make_corpus(120, seed=3)
    shifted = [t.upper() + " Filed under archive record 2031-07-15." for t in make_corpus(120, seed=4)]
    shifted_nonmembers = write_jsonl(directory / "shifted.jsonl", shifted)
    with_canaries = directory / "train_with_canaries.jsonl"
    insert_canaries(
        members, with_canaries, count=4, repeats=[0, 1, 16], spec=CanarySpec(CANARY_FORMAT, length=4), seed=7
    )
    train_texts = [json.loads(line)["text"] for line in with_canaries.read_text().splitlines()]
    tokenizer = build_tokenizer(train_texts + population)
    target = save_lm(train_lm(train_texts, tokenizer, epochs=EPOCHS, seed=0), tokenizer, directory / "target")
    reference = save_lm(train_lm(population, tokenizer, epochs=EPOCHS, seed=1), tokenizer, directory / "reference")
    from transformers import GPT2LMHeadModel

    torch.manual_seed(2)
    untrained = GPT2LMHeadModel(gpt2_config(len(tokenizer), tokenizer.eos_token_id))
    untrained = save_lm(untrained, tokenizer, directory / "untrained")
    return TextWorld(
        directory,
        members,
        nonmembers,
        shifted_nonmembers,
        with_canaries,
        directory / "canaries.json",
        target,
        untrained,
        reference,
        time.perf_counter() - start,
    )


def shared_text_world(tmp_path_factory: pytest.TempPathFactory) -> TextWorld:
    """The world, built on first use and shared by every test module of the session.

    Test modules wrap this in their own session fixture (a fixture imported into several modules would
    be registered, and built, once per module).
    """
    global _WORLD
    if _WORLD is None:
        pytest.importorskip("transformers")
        with one_thread():
            _WORLD = build_text_world(tmp_path_factory.mktemp("text_world"))
    return _WORLD


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: these models are so small that a second thread on a busy machine only
    adds contention (a training step took 10 times longer with two threads than with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
