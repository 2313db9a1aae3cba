"""Throughput of a black-box audit's queries against the guard on loopback, next to a bare client loop.

The guard (`membershield guard`, its own process, limits opened, detector off) serves a digits MLP. Two
clients send the same 1,797 records in the same batches over one kept-alive connection, alternating:
- bare: a plain `httpx.Client.post` loop of the same request bodies, built before the clock starts;
- audit: `EndpointClient.answers`, what `membershield audit --model http://...` runs: records to JSON per
  format, record keys, the on-disk answer cache written batch by batch, answer parsing and checks.
The ratio (audit records/s over bare records/s, same run) is the audit's own overhead.

    .venv/bin/python bench/endpoint_audit_throughput.py [--rounds 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).parent))
from guard_latency import free_port, start

from membershield.endpoint.cache import AnswerCache
from membershield.endpoint.client import EndpointClient, QueryPolicy
from membershield.endpoint.formats import FORMATS
from membershield.guard.app import issue_key
from membershield.store import open_store


def bare(url: str, headers: dict[str, str], frame: pd.DataFrame, batch: int) -> float:
    # the same request bodies as the audit's (records as objects by column name), built before the clock
    values = [{"records": frame.iloc[i : i + batch].to_dict(orient="records")} for i in range(0, len(frame), batch)]
    with httpx.Client(headers=headers, timeout=30) as client:
        started = time.perf_counter()
        for body in values:
            response = client.post(url, json=body)
            response.raise_for_status()
            response.json()
        return len(frame) / (time.perf_counter() - started)


def audited(url: str, headers: dict[str, str], frame: pd.DataFrame, batch: int, cache_dir: Path) -> float:
    cache = AnswerCache(cache_dir, f"bench-{time.time_ns()}")  # a fresh key: nothing is cached yet
    client = EndpointClient(url, FORMATS["membershield"], headers, QueryPolicy(batch_size=batch), cache)
    started = time.perf_counter()
    answers = client.answers(frame)
    elapsed = time.perf_counter() - started
    client.close()
    assert len(answers) == len(frame)
    return len(frame) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    frame = pd.DataFrame(X, columns=[f"pixel_{i}" for i in range(X.shape[1])])
    directory = Path(tempfile.mkdtemp())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        joblib.dump(
            MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0).fit(frame, y), directory / "m.joblib"
        )
    store = str(directory / "guard.db")
    with open_store(store) as opened:
        key = issue_key(opened, "bench")
    policy = directory / "guard.toml"
    policy.write_text(
        "[limits]\nrequests_per_minute = 1000000\ndaily_query_budget = 100000000\n[detector]\nenabled = false\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "membershield", "guard", "--model", str(directory / "m.joblib")]
    guard = start([*command, "--policy", str(policy), "--port", str(port), "--store", store], port)
    url, headers = f"http://127.0.0.1:{port}/v1/predict", {"Authorization": f"Bearer {key}"}
    try:
        bare(url, headers, frame, args.batch_size)  # warm-up
        rates: dict[str, list[float]] = {"bare": [], "audit": []}
        for _ in range(args.rounds):
            rates["bare"].append(bare(url, headers, frame, args.batch_size))
            rates["audit"].append(audited(url, headers, frame, args.batch_size, directory / "cache"))
    finally:
        guard.terminate()
        guard.wait(timeout=30)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {len(frame)} records,")
    print(f"batches of {args.batch_size}, {args.rounds} alternating rounds each")
    for name, values in rates.items():
        print(
            f"  {name:5s}: median {np.median(values):7.0f} records/s  (rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )
    print(f"  audit / bare: {np.median(rates['audit']) / np.median(rates['bare']):.2f}")


if __name__ == "__main__":
    main()
