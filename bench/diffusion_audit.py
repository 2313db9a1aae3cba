"""A DDPM that memorised its training images, audited: scikit-learn's 8×8 digits, nothing downloaded.

The realistic run behind the README's diffusion figures. A diffusers ``UNet2DModel`` (two blocks of 32
and 64 channels, 1,000-step linear schedule) is trained with the ε-prediction objective on 200 digits for
1,500 steps of batch 64, which is long enough for it to memorise them; a copy is trained the same way on
200 other digits, so it never saw the members. Both are saved with ``DDPMPipeline.save_pretrained`` and
audited from the command line, as a user would:

    membershield audit-diffusion --model WORK/ddpm --members WORK/members --nonmembers WORK/nonmembers.npz

(the command is printed and run). The non-members are every digit that trained neither model (1,397 of
them), enough to resolve a 1% FPR (437 are needed). Measured: training time, audit time, and every
attack's AUC and TPR at 1% FPR with their 95% intervals, for the target and for the copy.

    .venv/bin/python bench/diffusion_audit.py [--members 200] [--steps 1500] [--batch-size 64]
        [--threads 1] [--work /tmp/membershield-diffusion-bench]

Needs the ``diffusion`` extra (diffusers). About 4-5 minutes on one free core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.diffusion_fixtures import build_world, digits_images  # noqa: E402


def audit(
    model: Path, members: Path, nonmembers: Path, out: Path, store: Path, threads: int
) -> tuple[dict, float, list[str]]:
    """Run ``membershield audit-diffusion`` in a fresh process on ``threads`` torch threads; its audit.json,
    wall time and command."""
    command = [
        str(Path(sys.executable).with_name("membershield")),
        "audit-diffusion",
        "--model",
        str(model),
        "--members",
        str(members),
        "--nonmembers",
        str(nonmembers),
        "--out",
        str(out),
        "--store",
        str(store),
    ]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - start
    return json.loads((out / "audit.json").read_text()), seconds, command


def rate_at(attack: dict, fpr: float) -> str:
    for rate in attack["tpr_at_fpr"]:
        if abs(rate["fpr"] - fpr) < 1e-12:
            if not rate["measurable"]:
                return "not measurable"
            return f"{100 * rate['tpr']:.1f} ({100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f})"
    return "-"


def table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| model | attack | AUC (95% CI) | TPR % @ 1% FPR (95% CI) | TPR % @ 10% FPR (95% CI) | attack s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, document in rows:
        for attack in document["attacks"]:
            auc = f"{attack['auc']:.3f} ({attack['auc_ci_low']:.3f}–{attack['auc_ci_high']:.3f})"
            lines.append(
                f"| {label} | {attack['name']} | {auc} | {rate_at(attack, 0.01)} | {rate_at(attack, 0.1)} |"
                f" {attack['seconds']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    # One thread: on two shared cores a second torch thread made a training step 24 times slower (0.07 s
    # against 1.7 s at batch 64, measured with other jobs on both cores); on idle cores try 2.
    parser.add_argument("--threads", type=int, default=1, help="torch threads, training and audit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/membershield-diffusion-bench"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    n_nonmembers = len(digits_images()) - 2 * args.members
    print(f"training two DDPMs ({args.steps} steps of batch {args.batch_size}, {args.threads} threads) ...", flush=True)
    world = build_world(
        args.work,
        n_members=args.members,
        n_nonmembers=n_nonmembers,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    print(f"trained: target {world.train_seconds:.1f} s, copy {world.unseen_train_seconds:.1f} s", flush=True)
    store = args.work / "history.db"
    target, target_s, command = audit(
        world.target, world.members_png, world.nonmembers_npz, args.work / "out", store, args.threads
    )
    unseen, unseen_s, _ = audit(
        world.unseen, world.members_png, world.nonmembers_npz, args.work / "out-copy", store, args.threads
    )
    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
        "members": args.members,
        "nonmembers": n_nonmembers,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seconds": {"target": world.train_seconds, "copy": world.unseen_train_seconds},
        "audit_seconds": {"target": target_s, "copy": unseen_s},
        "audit_timings": {"target": target["timings"], "copy": unseen["timings"]},
        "denoising_loss": {"target": target["utility"], "copy": unseen["utility"]},
        "split_check": target["split_check"],
        "command": " ".join(command),
    }
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print(table([("memorising target", target), ("copy trained on other digits", unseen)]))
    print()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
