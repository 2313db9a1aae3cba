"""Reference-model training speed: K models at once (membershield.training.vectorised) against a plain loop.

On Purchase100-like data made here (10,000 rows of 600 binary features, 100 classes), every model is a
600-256-100 ReLU MLP trained with Adam on half of the rows (membership_plan, in_fraction 0.5) for 20
epochs in minibatches of 128. One run measures, in this order:

(a) the float32 matmul peak of this machine: best of repeated 2048 x 2048 products by each of the two
    libraries in PyTorch, MKL (``torch.mm``) and oneDNN (``torch.ops.mkldnn._linear_pointwise``), the
    peak being the faster (on AMD CPUs MKL runs its AVX2 kernels and oneDNN its AVX-512 ones, about twice
    as fast, so ``torch.mm`` alone understates the machine); and, for reference, the rate of a training
    step's matrix products run alone, as the vectorised trainer runs them (same kernel, layouts and
    threads: the most a step could reach with everything else free), and of those products plus Adam's
    update, which every step must also make (a pass over each model's weights, gradients and moments);
(b) a plain sequential PyTorch loop (randperm, forward, backward, ``torch.optim.Adam``), seconds per model;
(c) the vectorised trainer with 16 models: seconds per model, achieved GFLOP/s and % of the peak;
(d) scaling: seconds per model with 4, 16 and 64 models;
(e) the process's peak resident memory (``resource.getrusage``) after the 16-model run, before any
    larger one.

Counted FLOPs are the matrix products a training step needs per real (non-padding) row: forward
``2 W``, weight gradients ``2 W`` and input gradients ``2 (W - W1)`` (none for the first layer, whose
input needs no gradient), i.e. ``6 W - 2 W1`` per row per epoch, with ``W`` the number of weights in the
linear layers (biases left out) and ``W1`` those of the first one. Elementwise work (ReLU, softmax, Adam)
is not counted.

    .venv/bin/python bench/reference_training.py            # the full run
    .venv/bin/python bench/reference_training.py --quick    # fewer rows and epochs, smaller model counts
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from purchase_task import HIDDEN, N_CLASSES, N_FEATURES, build, purchase_like

from membershield.training.plan import membership_plan
from membershield.training.vectorised import VectorisedSpec, _linear_for, thread_groups, train_vectorised


@dataclass(frozen=True)
class Setting:
    rows: int = 10_000
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    main_models: int = 16
    scaling: tuple[int, ...] = (4, 16, 64)
    sequential_models: int = 2


QUICK = Setting(rows=3_000, epochs=3, main_models=8, scaling=(2, 8, 16), sequential_models=2)


def flops_per_row() -> int:
    weights = [N_FEATURES * HIDDEN, HIDDEN * N_CLASSES]
    return 6 * sum(weights) - 2 * weights[0]


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peaks(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of a float32 ``size``-square product by MKL (``torch.mm``) and, where built in, oneDNN."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size**3
    peaks = {"torch.mm (MKL)": flops / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9}
    if torch.backends.mkldnn.is_available():
        onednn = torch.ops.mkldnn._linear_pointwise
        seconds = _best_seconds(lambda: onednn(a, b, None, "none", [], ""), repeats)
        peaks["oneDNN"] = flops / seconds / 1e9
    return peaks


def step_ceiling(models: int, batch_size: int, repeats: int = 5) -> tuple[float, float]:
    """GFLOP/s of one training step's matrix products alone, and of those products plus Adam's update.

    The products the vectorised trainer runs for this MLP, one per model, with the same kernel, operand
    layouts (some operands are transposed views, as the trainer passes them) and threading: groups of
    models, one Python thread with one intra-op thread each. Adam is the fused update the trainer calls,
    on each group's weights and biases. No autograd, loss or data: the most a step could reach.
    """
    threads = torch.get_num_threads()
    sizes = np.diff(thread_groups(models, threads))
    groups = len(sizes)
    linear = _linear_for(torch.empty(1))  # a @ w.T; every operand below is one model's
    B = batch_size

    def group_work(K: int) -> tuple[int, Callable[[], None], Callable[[], None]]:
        def r(*shape: int) -> list[torch.Tensor]:
            return list(torch.randn(K, *shape).unbind(0))

        x, h, g = r(B, N_FEATURES), r(B, HIDDEN), r(B, N_CLASSES)  # layer inputs and output gradient
        w1, w2 = r(HIDDEN, N_FEATURES), r(N_CLASSES, HIDDEN)
        g1_t, g_t = r(HIDDEN, B), r(N_CLASSES, B)  # output gradients, transposed into row-major as the trainer does
        products = [
            *((x[k], w1[k]) for k in range(K)),  # forward, layer 1
            *((h[k], w2[k]) for k in range(K)),  # forward, layer 2
            *((g[k], w2[k].T) for k in range(K)),  # input gradient, layer 2
            *((g_t[k], h[k].T) for k in range(K)),  # weight gradient, layer 2
            *((g1_t[k], x[k].T) for k in range(K)),  # weight gradient, layer 1
        ]
        params = [t for k in range(K) for t in (w1[k], torch.randn(HIDDEN), w2[k], torch.randn(N_CLASSES))]
        state = [[torch.randn_like(p) for p in params] for _ in range(3)]  # gradients and both moments
        steps = [torch.ones(()) for _ in params]

        def run_products() -> None:
            for a, w in products:
                linear(a, w)

        def run_adam() -> None:
            torch._fused_adam_(
                params, *state, [], steps, amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999,
                weight_decay=0.0, eps=1e-8, maximize=False, grad_scale=None, found_inf=None,
            )  # fmt: skip

        return sum(2 * a.shape[0] * a.shape[1] * w.shape[0] for a, w in products), run_products, run_adam

    work = [group_work(int(K)) for K in sizes]
    flops = sum(w[0] for w in work)

    def step(parts: tuple[int, ...]) -> Callable[[], None]:
        def run_group(group: int) -> None:
            torch.set_num_threads(1)
            for part in parts:
                work[group][part]()

        def run() -> None:
            list(pool.map(run_group, range(groups)))

        return run

    try:
        with ThreadPoolExecutor(groups) as pool:
            products_alone = _best_seconds(step((1,)), repeats)
            with_adam = _best_seconds(step((1, 2)), repeats)
    finally:
        torch.set_num_threads(threads)
    return flops / products_alone / 1e9, flops / with_adam / 1e9


def sequential_loop(X: np.ndarray, y: np.ndarray, spec: VectorisedSpec, seed: int) -> nn.Module:
    """What a recipe author writes: one model, one optimiser, shuffled minibatches."""
    generator = torch.Generator().manual_seed(seed)
    model = spec.build(X, y, N_CLASSES, seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    features, labels = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(spec.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            optimiser.zero_grad()
            loss_fn(model(features[batch]), labels[batch]).backward()
            optimiser.step()
    return model.eval()


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    parser.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="time everything this often, keep the best")
    args = parser.parse_args()
    setting = QUICK if args.quick else Setting()
    if args.batch_size:
        setting = replace(setting, batch_size=args.batch_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = VectorisedSpec(build=build, epochs=setting.epochs, batch_size=setting.batch_size, lr=setting.lr)
    X, y = purchase_like(setting.rows)
    # The main count first, so that the peak memory read after it is not that of a larger run.
    counts = sorted({setting.main_models, *setting.scaling}, key=lambda k: (k != setting.main_models, k))
    plans = {k: membership_plan(setting.rows, k, 0.5, seed=k) for k in counts}
    per_row = flops_per_row()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(
        f"data {setting.rows} x {N_FEATURES}, {N_CLASSES} classes; MLP {N_FEATURES}-{HIDDEN}-{N_CLASSES};"
        f" {setting.epochs} epochs, batch {setting.batch_size}; {per_row:,} FLOPs per row per epoch;"
        f" best of {args.repeats}"
    )
    rss_start = peak_rss_gib()
    # Warm-up, untimed: first calls pay one-off set-up costs (allocator, kernels).
    small = replace(spec, epochs=1)
    sequential_loop(X[:512], y[:512], small, seed=0)
    train_vectorised(small, X[:512], y[:512], N_CLASSES, np.ones((2, 512), dtype=bool), seeds=[0, 1])

    main_plan = plans[setting.main_models]
    peaks: dict[str, float] = {}
    ceiling = (0.0, 0.0)
    sequential = [math.inf] * setting.sequential_models
    vectorised = dict.fromkeys(counts, math.inf)
    rss_main = 0.0
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}: load average {os.getloadavg()[0]:.2f} (other processes share these cores)")
        for library, rate_now in matmul_peaks().items():
            peaks[library] = max(peaks.get(library, 0.0), rate_now)
        ceilings_now = step_ceiling(setting.main_models, setting.batch_size)
        ceiling = (max(ceiling[0], ceilings_now[0]), max(ceiling[1], ceilings_now[1]))
        for k in range(setting.sequential_models):
            start = time.perf_counter()
            sequential_loop(X[main_plan[k]], y[main_plan[k]], spec, seed=k)
            sequential[k] = min(sequential[k], time.perf_counter() - start)
        for k in counts:
            start = time.perf_counter()
            train_vectorised(spec, X, y, N_CLASSES, plans[k], seeds=list(range(k)))
            vectorised[k] = min(vectorised[k], time.perf_counter() - start)
            if repeat == 0 and k == setting.main_models:
                rss_main = peak_rss_gib()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")

    def rate(rows: int, seconds: float) -> float:
        return rows * setting.epochs * per_row / seconds / 1e9

    peak = max(peaks.values())
    by_library = ", ".join(f"{library} {value:.1f}" for library, value in peaks.items())
    print(f"(a) matmul peak (2048 x 2048, best of 10): {peak:.1f} GFLOP/s ({by_library})")
    mkl = peaks["torch.mm (MKL)"]
    print(
        f"    the {setting.main_models}-model step's products alone, threaded as the trainer runs them:"
        f" {ceiling[0]:.1f} GFLOP/s ({100 * ceiling[0] / peak:.0f}% of peak); with Adam's update:"
        f" {ceiling[1]:.1f} GFLOP/s ({100 * ceiling[1] / peak:.0f}% of peak)"
    )
    seq_rate = rate(int(main_plan[: setting.sequential_models].sum()), sum(sequential))
    seq_per_model = float(np.mean(sequential))
    print(
        f"(b) sequential loop ({setting.sequential_models} models): {seq_per_model:.3f} s/model,"
        f" {seq_rate:.1f} GFLOP/s ({100 * seq_rate / peak:.0f}% of peak)"
    )
    rows_main = int(main_plan.sum())
    main_rate = rate(rows_main, vectorised[setting.main_models])
    print(
        f"(c) vectorised, {setting.main_models} models: {vectorised[setting.main_models]:.2f} s,"
        f" {vectorised[setting.main_models] / setting.main_models:.3f} s/model, {main_rate:.1f} GFLOP/s"
        f" ({100 * main_rate / peak:.0f}% of peak, {100 * main_rate / mkl:.0f}% of torch.mm's),"
        f" {main_rate / seq_rate:.2f}x the sequential loop's rows per second"
    )
    print("(d) scaling:")
    first = min(counts)
    for k in sorted(counts):
        r = rate(int(plans[k].sum()), vectorised[k])
        print(
            f"    {k:3d} models: {vectorised[k]:7.2f} s, {vectorised[k] / k:.3f} s/model,"
            f" {r:.1f} GFLOP/s ({100 * r / peak:.0f}% of peak), {r / seq_rate:.2f}x the sequential loop,"
            f" per-row time {rate(int(plans[first].sum()), vectorised[first]) / r:.2f}x that of {first} models"
        )
    print(
        f"(e) peak resident memory of this process after the {setting.main_models}-model run: {rss_main:.2f} GiB"
        f" (before any training, data made: {rss_start:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
