"""Guard overhead and detection quality.

1. Added latency: a digits MLP served by a plain FastAPI endpoint on loopback, called directly and through
   ``membershield guard --upstream`` (output hardening, key check, limits, detector, request log to SQLite),
   at 200 requests per second of one record each; p50/p99 of both and of the difference.
2. Detection: how many perturbation-probing queries (a record plus Gaussian noise at several scales) and
   population-sweep queries pass before the detector's alert, with the default policy.
3. False alarms: alerts raised over 10,000 normal queries (digits records drawn with replacement by 20 keys,
   5 per second each).

Run: ``.venv/bin/python bench/guard_latency.py`` (about a minute).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from membershield.guard.app import issue_key
from membershield.guard.detector import ProbingDetector
from membershield.guard.policy import DetectorConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.guard_server import serving

RATE, SECONDS, THREADS = 200, 10, 4


def upstream_app(model) -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:
        proba = model.predict_proba(np.asarray(body["records"], dtype=float))
        return {"predictions": [{"label": int(p.argmax()), "probabilities": p.tolist()} for p in proba]}

    return app


def paced(url: str, headers: dict, records: np.ndarray) -> np.ndarray:
    """Latencies (ms) of RATE requests per second for SECONDS, spread over THREADS clients."""
    latencies: list[float] = []
    lock = threading.Lock()
    interval = THREADS / RATE

    def client(offset: int) -> None:
        with httpx.Client(headers=headers) as http:
            start = time.perf_counter() + offset * interval / THREADS
            for i in range(RATE * SECONDS // THREADS):
                wait = start + i * interval - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                body = {"records": [records[(i * THREADS + offset) % len(records)].tolist()]}
                t0 = time.perf_counter()
                answer = http.post(url, json=body)
                elapsed = (time.perf_counter() - t0) * 1000
                assert answer.status_code == 200, answer.text
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(latencies)


def latency(X, model) -> None:
    """The guard runs as its own process (``membershield guard``), as deployed; the upstream in this one."""
    import os
    import socket
    import subprocess

    from membershield.store import open_store

    directory = Path(tempfile.mkdtemp())
    store = str(directory / "guard.db")
    with open_store(store) as opened:
        key = issue_key(opened, "bench")
    policy = directory / "guard.toml"
    policy.write_text("[output]\nclip_top1 = 0.9\nround_decimals = 2\n[limits]\nrequests_per_minute = 100000\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with serving(upstream_app(model)) as upstream:
        target = f"{upstream}/predict"
        command = [sys.executable, "-m", "membershield", "guard", "--upstream", target, "--policy", str(policy)]
        guard = subprocess.Popen(
            [*command, "--port", str(port), "--store", store], env=os.environ.copy(), stdout=subprocess.DEVNULL
        )
        try:
            guarded = f"http://127.0.0.1:{port}"
            while True:
                try:
                    httpx.get(f"{guarded}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            headers = {"Authorization": f"Bearer {key}"}
            paced(target, {}, X[:50])  # warm-up
            paced(f"{guarded}/v1/predict", headers, X[:50])
            direct = paced(target, {}, X)
            through = paced(f"{guarded}/v1/predict", headers, X)
        finally:
            guard.terminate()
            guard.wait(timeout=30)
    for name, values in (("direct", direct), ("through guard", through)):
        p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
        print(f"{name:>14}: n={len(values)} p50={p50:.2f} ms p99={p99:.2f} ms")
    print(
        f"{'added':>14}: p50={np.percentile(through, 50) - np.percentile(direct, 50):.2f} ms"
        f" p99={np.percentile(through, 99) - np.percentile(direct, 99):.2f} ms"
    )


def detection(X) -> None:
    rng = np.random.default_rng(0)
    for std in (0.1, 0.5, 1.0, 2.0):
        counts = []
        for target in range(20):
            clock = [0.0]
            detector = ProbingDetector(DetectorConfig(), clock=lambda clock=clock: clock[0])
            found = None
            for i in range(1, 201):
                clock[0] += 1.0
                probe = np.clip(X[target] + rng.normal(0, std, X.shape[1]), 0, 16)
                if detector.observe("attacker", probe[None, :]):
                    found = i
                    break
            counts.append(found)
        detected = [c for c in counts if c is not None]
        print(
            f"perturbation probing, noise std {std:g} (pixels 0-16): detected {len(detected)}/20 records"
            + (f", median {int(np.median(detected))} queries, max {max(detected)}" if detected else "")
        )
    clock = [0.0]
    detector = ProbingDetector(DetectorConfig(), clock=lambda: clock[0])
    for i in range(1, 100_000):
        clock[0] += 0.01  # 100 distinct population records per second
        if detector.observe("sweeper", X[rng.integers(len(X))][None, :]):
            print(f"population sweep at 100 records/s: detected after {i} queries")
            break


def false_alarms(X) -> None:
    rng = np.random.default_rng(1)
    clock = [0.0]
    detector = ProbingDetector(DetectorConfig(), clock=lambda: clock[0])
    alerts = []
    for i in range(10_000):
        clock[0] += 0.01  # 20 keys, 5 queries per second each
        alerts += detector.observe(f"key{i % 20}", X[rng.integers(len(X))][None, :])
    print(f"false alarms over 10,000 normal queries (20 keys, 5/s each): {len(alerts)}")


def main() -> None:
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0).fit(X, y)
    detection(X)
    false_alarms(X)
    latency(X, model)


if __name__ == "__main__":
    main()
