"""Throughput of token scoring for the language-model audit: tokens scored per second.

Scores random token sequences with :func:`membershield.text.scoring.score_token_ids`, the function every
text attack reads from (one forward pass per batch; with ``distribution`` it also computes the mean and
variance of the next-token log-probabilities that Min-K%++ needs). Models are GPT-2 configurations with
random weights (no download; throughput does not depend on the weights):

- ``tiny``: 2 layers, 64 dimensions, 400-token vocabulary (the test suite's model);
- ``small``: 6 layers, 384 dimensions, 8,192-token vocabulary;
- ``gpt2``: the GPT-2 small shape, 12 layers, 768 dimensions, 50,257-token vocabulary (124 M parameters).

    .venv/bin/python bench/text_scoring.py [--models tiny,small,gpt2] [--texts 64] [--length 128]
        [--threads N] [--device cpu]

Prints one row per model and mode with tokens scored, seconds and tokens per second (best of
``--repeats`` runs after one warm-up).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from types import SimpleNamespace

import numpy as np

CONFIGS = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 400},
    "small": {"n_layer": 6, "n_embd": 384, "n_head": 6, "vocab_size": 8192},
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257},
}


def build(name: str, n_positions: int, device: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from membershield.text.model import LanguageModel

    torch.manual_seed(0)
    config = GPT2Config(n_positions=n_positions, **CONFIGS[name])
    model = GPT2LMHeadModel(config).eval().to(device)
    tokenizer = SimpleNamespace(pad_token_id=0, bos_token_id=0, eos_token_id=0)
    return LanguageModel(f"<{name}>", model, tokenizer, n_positions, "-", {}, "gpt2")


def measure(lm, ids: list[list[int]], distribution: bool, batch_tokens: int, repeats: int) -> tuple[int, float]:
    from membershield.text.scoring import score_token_ids

    n_tokens = sum(len(x) - 1 for x in ids)
    score_token_ids(lm, ids[:4], distribution=distribution, batch_tokens=batch_tokens)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score_token_ids(lm, ids, distribution=distribution, batch_tokens=batch_tokens)
        best = min(best, time.perf_counter() - start)
    return n_tokens, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small,gpt2")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--length", type=int, default=128, help="tokens per text (the prefix token included)")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(
        f"# torch {torch.__version__}, transformers {transformers.__version__}, {platform.processor() or 'cpu'},"
        f" {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, device {args.device}"
    )
    print(f"# {args.texts} texts x {args.length} tokens, batch budget {args.batch_tokens} tokens")
    print(f"{'model':8s} {'params':>8s} {'mode':>22s} {'tokens':>8s} {'seconds':>8s} {'tokens/s':>10s}")
    rng = np.random.default_rng(0)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        lm = build(name, max(args.length, 128), args.device)
        vocab = CONFIGS[name]["vocab_size"]
        ids = [[0, *rng.integers(1, vocab, args.length - 1).tolist()] for _ in range(args.texts)]
        params = sum(p.numel() for p in lm.model.parameters()) / 1e6
        for distribution in (False, True):
            mode = "log-probs + mean/var" if distribution else "log-probs"
            n, seconds = measure(lm, ids, distribution, args.batch_tokens, args.repeats)
            print(f"{name:8s} {params:7.1f}M {mode:>22s} {n:8d} {seconds:8.2f} {n / seconds:10.0f}")


if __name__ == "__main__":
    main()
