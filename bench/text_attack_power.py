"""Power of every text attack, canary exposure and verbatim extraction on a memorising tiny GPT-2.

The model and data are the test suite's (``tests/text_fixtures.py``, built here from scratch, nothing
downloaded): 120 members with inserted canaries, 120 non-members from the same generator, a reference
model trained on other records, a BPE tokenizer whose default encoding adds no special token, and the
standard ``labels=input_ids`` objective for 30 epochs. Two encodings are scored in the same run: the
tokenizer's default (what the model trained on, membershield's default) and the same texts with an
``<|endoftext|>`` token put first (``--add-bos``, a model the text was never trained as). The LOSS
AUC is also computed independently with ``roc_auc_score`` on ``model(input_ids=ids, labels=ids).loss``.

    .venv/bin/python bench/text_attack_power.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def audit(world, out: Path, **changes):
    from membershield.text.audit import TextAuditConfig, run_text_audit

    config = TextAuditConfig(
        model=str(world.target),
        members=str(world.members),
        nonmembers=str(world.nonmembers),
        reference_model=str(world.reference),
        out=str(out),
        device="cpu",
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return run_text_audit(config).result


def own_loss_auc(world) -> float:
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world.target)
    model = AutoModelForCausalLM.from_pretrained(world.target).eval()
    losses, truth = [], []
    with torch.no_grad():
        for path, member in ((world.members, 1), (world.nonmembers, 0)):
            for line in path.read_text().splitlines():
                ids = torch.tensor([tokenizer(json.loads(line)["text"])["input_ids"]])
                losses.append(float(model(input_ids=ids, labels=ids).loss))
                truth.append(member)
    return float(roc_auc_score(truth, -np.array(losses)))


def rate(row: dict) -> str:
    if not row["measurable"]:
        return "not measurable"
    return f"{100 * row['tpr']:.1f} ({100 * row['ci_low']:.1f}–{100 * row['ci_high']:.1f})"


def attack_rows(result, label: str) -> list[str]:
    rows = []
    for a in result.attacks:
        by_fpr = {r["fpr"]: r for r in a.tpr_at_fpr}
        rows.append(
            f"| {label} | {a.name} | {a.auc:.3f} ({a.auc_ci_low:.3f}–{a.auc_ci_high:.3f}) | {rate(by_fpr[0.01])}"
            f" | {rate(by_fpr[0.1])} |"
        )
    return rows


def canary_figures(world, directory: Path) -> list[str]:
    from membershield.text.canaries import canary_exposure
    from membershield.text.data import load_jsonl
    from membershield.text.extraction import extract_verbatim
    from membershield.text.model import load_language_model

    lm = load_language_model(world.target, "cpu")
    doc = canary_exposure(lm, world.canaries)
    lines = [
        f"exposure, {r['repeats']} repeats: mean {r['mean_exposure']:.2f} bits (min {r['min_exposure']:.2f},"
        f" max {r['max_exposure']:.2f}) of at most {doc['max_exposure']:.2f}"
        for r in doc["by_repeats"]
    ]
    meta = json.loads(world.canaries.read_text())
    data = directory / "canary_lines.jsonl"
    data.write_text("".join(json.dumps({"text": c["text"]}) + "\n" for c in meta["canaries"]))
    prefix = len(lm.tokenizer("my account number is 12")["input_ids"])
    extraction = extract_verbatim(lm, load_jsonl(data), prefix_tokens=prefix, suffix_tokens=2)
    exact = {r["line"]: r["exact"] for r in extraction["records"]}
    for repeats in sorted({c["repeats"] for c in meta["canaries"]}):
        hits = [exact[i + 1] for i, c in enumerate(meta["canaries"]) if c["repeats"] == repeats]
        lines.append(f"extraction of canaries repeated {repeats} times: {sum(hits)} of {len(hits)}")
    members = extract_verbatim(lm, load_jsonl(world.members), prefix_tokens=8, suffix_tokens=8)
    nonmembers = extract_verbatim(lm, load_jsonl(world.nonmembers), prefix_tokens=8, suffix_tokens=8)
    for name, d in (("members", members), ("non-members", nonmembers)):
        lines.append(
            f"extraction 8+8 tokens, {name}: {d['n_extracted']} of {d['n_tested']}"
            f" ({100 * d['extracted_share']:.1f}%, {100 * d['extracted_share_ci_low']:.1f}–"
            f"{100 * d['extracted_share_ci_high']:.1f}), mean reproduced {d['mean_reproduced_tokens']:.2f} tokens"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    from tests.text_fixtures import build_text_world

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        (directory / "world").mkdir()
        world = build_text_world(directory / "world")
        print(f"built the model, tokenizer and data in {time.perf_counter() - start:.1f} s")
        default = audit(world, directory / "default")
        with_bos = audit(world, directory / "bos", add_bos=True, split_check=False)
        untrained = audit(world, directory / "untrained", model=str(world.untrained), attacks=["loss"])
        print("| encoding | attack | AUC (95% CI) | TPR % @ 1% FPR | TPR % @ 10% FPR |")
        print("|---|---|---|---:|---:|")
        for line in attack_rows(default, "tokenizer default") + attack_rows(with_bos, "BOS put first"):
            print(line)
        print(f"independent LOSS AUC (roc_auc_score on the model's own losses): {own_loss_auc(world):.3f}")
        u = untrained.attacks[0]
        print(f"untrained copy, LOSS AUC {u.auc:.3f} ({u.auc_ci_low:.3f}–{u.auc_ci_high:.3f})")
        for result, label in ((default, "tokenizer default"), (with_bos, "BOS put first")):
            print(
                f"{label}: mean token NLL members {result.utility['member_mean_nll']:.3f},"
                f" non-members {result.utility['nonmember_mean_nll']:.3f} nats"
            )
        for line in canary_figures(world, directory):
            print(line)


if __name__ == "__main__":
    main()
