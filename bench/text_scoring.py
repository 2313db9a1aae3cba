"""Throughput of token scoring for the language-model audit: tokens scored per second.

Scores random token sequences with :func:`membershield.text.scoring.score_token_ids`, the function every
text attack reads from (one forward pass per batch; with ``distribution`` it also computes the mean and
variance of the next-token log-probabilities that Min-K%++ needs). Models are GPT-2 configurations with
random weights (no download; throughput does not depend on the weights):

- ``tiny``: 2 layers, 64 dimensions, 400-token vocabulary (the test suite's model);
- ``small``: 6 layers, 384 dimensions, 8,192-token vocabulary;
- ``gpt2``: the GPT-2 small shape, 12 layers, 768 dimensions, 50,257-token vocabulary (124 M parameters);
- ``smollm2``: the SmolLM2-135M shape (Llama, 30 layers, 576 dimensions, 49,152-token vocabulary), the
  pretrained model of ``bench/text_audit.py``.

    .venv/bin/python bench/text_scoring.py [--models tiny,small,gpt2,smollm2] [--texts 64] [--length 128]
        [--threads N] [--device cpu]

Prints one row per model and mode with tokens scored, seconds, tokens per second and the ratio to a bare
forward pass of the model over the same batches (best of ``--repeats`` runs after one warm-up, the two
alternating so that drift on a shared machine hits both); the issue's target is a ratio of 0.90 or more.
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
    "smollm2": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
}

# Each shape's context length: the scorer's batches are laid out for it, as they are for the real models.
CONTEXT = {"tiny": 128, "small": 512, "gpt2": 1024, "smollm2": 8192}


def build(name: str, n_positions: int, device: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from membershield.text.model import LanguageModel

    torch.manual_seed(0)
    if "hidden_size" in CONFIGS[name]:
        model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=n_positions, **CONFIGS[name]))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_positions=n_positions, **CONFIGS[name]))
    tokenizer = SimpleNamespace(pad_token_id=0, bos_token_id=0, eos_token_id=0)
    return LanguageModel(f"<{name}>", model.eval().to(device), tokenizer, n_positions, "-", {}, name)


def measure(lm, ids: list[list[int]], distribution: bool, batch_tokens: int, repeats: int) -> tuple[int, float, float]:
    """Tokens scored, and the best seconds of the scorer and of a bare forward pass over the same batches
    (texts of equal length, so both see the same rows per batch and no padding)."""
    import torch

    from membershield.text.scoring import batch_token_budget, score_token_ids

    n_tokens = sum(len(x) - 1 for x in ids)
    per_batch = max(1, batch_token_budget(batch_tokens, lm.vocab_size) // len(ids[0]))
    batches = [torch.tensor(ids[i : i + per_batch], device=lm.device) for i in range(0, len(ids), per_batch)]

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                lm.model(input_ids=batch, attention_mask=torch.ones_like(batch))

    def scored() -> None:
        score_token_ids(lm, ids, distribution=distribution, batch_tokens=batch_tokens)

    best = {bare: float("inf"), scored: float("inf")}
    bare(), scored()  # warm-up
    for _ in range(repeats):
        for run in best:
            start = time.perf_counter()
            run()
            best[run] = min(best[run], time.perf_counter() - start)
    return n_tokens, best[scored], best[bare]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,small,gpt2,smollm2")
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
    print(f"{'model':8s} {'params':>8s} {'mode':>22s} {'tokens':>8s} {'seconds':>8s} {'tokens/s':>10s} {'vs bare':>8s}")
    rng = np.random.default_rng(0)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        lm = build(name, max(args.length, CONTEXT[name]), args.device)
        vocab = CONFIGS[name]["vocab_size"]
        ids = [[0, *rng.integers(1, vocab, args.length - 1).tolist()] for _ in range(args.texts)]
        params = sum(p.numel() for p in lm.model.parameters()) / 1e6
        for distribution in (False, True):
            mode = "log-probs + mean/var" if distribution else "log-probs"
            n, seconds, bare = measure(lm, ids, distribution, args.batch_tokens, args.repeats)
            speed = f"{n:8d} {seconds:8.2f} {n / seconds:10.0f} {bare / seconds:8.2f}"
            print(f"{name:8s} {params:7.1f}M {mode:>22s} {speed}", flush=True)


if __name__ == "__main__":
    main()
