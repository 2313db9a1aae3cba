"""Guard overhead and detection quality.

1. Added latency: a digits MLP served by a lean plain endpoint (raw ASGI, orjson, uvicorn with uvloop and
   httptools) is called directly and through ``membershield guard`` (key check, rate limit and budget,
   input checks, output hardening, probing detector, metrics, request log to SQLite), each server in its
   own process, at a fixed open-loop rate of one-record requests. Two guard modes: ``local`` (the guard
   loads the same model file) and ``upstream`` (the guard forwards to the plain endpoint). The load
   generator is this process: raw asyncio streams over kept-alive connections, requests sent at their
   scheduled times whatever the answers do, latency measured from the scheduled send time, so a stalled
   server cannot hide its stall by delaying the next request. Direct and guarded runs alternate in rounds
   so both see the same background load. Also reported: CPU time per request of each server process and
   the throughput of each with 32 requests in flight.
2. Detection: how many perturbation-probing queries (a record plus Gaussian noise at several scales) and
   population-sweep queries pass before the detector's alert, with the default policy.
3. False alarms: alerts raised over 10,000 normal queries (digits records drawn with replacement by 20 keys,
   5 per second each).

Run: ``flock /tmp/ms-bench.lock .venv/bin/python bench/guard_latency.py`` (about two minutes);
``--mode local|upstream|both``, ``--rate``, ``--seconds`` and ``--rounds`` change the latency runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import orjson
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from membershield.guard.detector import ProbingDetector
from membershield.guard.keys import issue_key
from membershield.guard.policy import DetectorConfig
from membershield.store import open_store

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the plain endpoint ----------------------------------------------------------------------------------


def plain_app(model_path: str):
    """The model behind the leanest endpoint we can write: what "calling the model directly" costs."""
    model = joblib.load(model_path)
    classes = model.classes_.tolist()

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        proba = model.predict_proba(np.asarray(orjson.loads(body)["records"], dtype=np.float64))
        predictions = [{"label": classes[row.argmax()], "probabilities": row.tolist()} for row in proba]
        answer = orjson.dumps({"predictions": predictions})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve_plain(model_path: str, port: int) -> None:
    import gc

    import uvicorn

    app = plain_app(model_path)
    gc.collect()
    gc.freeze()  # as the guard does at start-up: no full collection walks the loaded libraries mid-request
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,  # the guard keeps its connections to the model open between requests
    )


# -- the load generator ----------------------------------------------------------------------------------


class Target:
    """One server under load: a pool of kept-alive connections and a prepared request per record."""

    def __init__(self, port: int, path: str, headers: dict[str, str], records: np.ndarray) -> None:
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.requests = []
        for record in records:
            body = orjson.dumps({"records": [record.tolist()]})
            head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
            self.requests.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def prepare(self, connections: int = 16) -> None:
        """Fresh connections before a round: servers close the ones left idle (uvicorn after 5 s)."""
        self.close()
        for _ in range(connections):
            self.idle.append(await asyncio.open_connection("127.0.0.1", self.port))

    async def call(self, i: int) -> int:
        while True:
            connection = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = connection
            writer.write(self.requests[i % len(self.requests)])
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except asyncio.IncompleteReadError as exc:
                writer.close()
                if exc.partial:
                    raise
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        self.idle.append(connection)
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle = []


async def open_loop(target: Target, rate: float, seconds: float) -> tuple[np.ndarray, float]:
    """Latencies (ms, from each request's scheduled send time) at ``rate`` requests per second."""
    n = int(rate * seconds)
    latencies = np.full(n, np.nan)
    failures = []

    async def one(i: int, scheduled: float) -> None:
        status = await target.call(i)
        latencies[i] = (time.perf_counter() - scheduled) * 1000
        if status != 200:
            failures.append(status)

    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first with HTTP {failures[0]}")
    return latencies, n / elapsed


async def closed_loop(target: Target, in_flight: int, seconds: float) -> float:
    """Requests per second with ``in_flight`` requests always outstanding."""
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            await target.call(i)
            done += 1
            i += in_flight

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return done / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not start") from None
            time.sleep(0.2)


def report(name: str, values: np.ndarray, rate: float, cpu_ms: float) -> None:
    print(
        f"  {name:>8}: n={len(values)} p50={np.percentile(values, 50):.2f} ms p99={np.percentile(values, 99):.2f} ms"
        f" max={values.max():.2f} ms, {rate:.1f} requests/s sent and answered, server CPU {cpu_ms:.3f} ms/request"
    )


async def compare(mode: str, model_path: str, records: np.ndarray, args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp())
    store = str(directory / "guard.db")
    with open_store(store) as opened:
        key = issue_key(opened, "bench")
    policy = directory / "guard.toml"
    policy.write_text("[output]\nclip_top1 = 0.9\nround_decimals = 2\n[limits]\nrequests_per_minute = 1000000\n")
    plain_port, guard_port = free_port(), free_port()
    plain = start([sys.executable, __file__, "--serve-plain", model_path, "--port", str(plain_port)], plain_port)
    source = ["--upstream", f"http://127.0.0.1:{plain_port}/predict"] if mode == "upstream" else ["--model", model_path]
    guard_command = [sys.executable, "-m", "membershield", "guard", *source, "--policy", str(policy)]
    guard = start([*guard_command, "--port", str(guard_port), "--store", store], guard_port)
    try:
        direct = Target(plain_port, "/predict", {}, records)
        guarded = Target(guard_port, "/v1/predict", {"Authorization": f"Bearer {key}"}, records)
        for target in (direct, guarded):  # warm-up: connections, caches, the guard's cost estimates
            await target.prepare()
            await open_loop(target, args.rate, 2.0)
        results = {"direct": [], "guarded": []}
        rates = {"direct": [], "guarded": []}
        cpu = {"direct": 0.0, "guarded": 0.0}
        for _ in range(args.rounds):
            for name, target, pid in (("direct", direct, plain.pid), ("guarded", guarded, guard.pid)):
                await target.prepare()
                before = cpu_seconds(pid) + (cpu_seconds(plain.pid) if name == "guarded" else 0.0)
                latencies, achieved = await open_loop(target, args.rate, args.seconds)
                after = cpu_seconds(pid) + (cpu_seconds(plain.pid) if name == "guarded" else 0.0)
                results[name].append(latencies)
                rates[name].append(achieved)
                cpu[name] += after - before
        n = args.rounds * int(args.rate * args.seconds)
        print(f"{mode} mode, {args.rate:g} requests/s of one record, {args.rounds} x {args.seconds:g} s alternating:")
        both = {name: np.concatenate(values) for name, values in results.items()}
        for name in ("direct", "guarded"):
            report(name, both[name], float(np.mean(rates[name])), cpu[name] / n * 1000)
        p50 = np.percentile(both["guarded"], 50) - np.percentile(both["direct"], 50)
        p99 = np.percentile(both["guarded"], 99) - np.percentile(both["direct"], 99)
        print(f"     added: p50={p50:.2f} ms p99={p99:.2f} ms (target: p99 under 2 ms)")
        await direct.prepare(32)
        direct_max = await closed_loop(direct, 32, 3.0)
        await guarded.prepare(32)
        guarded_max = await closed_loop(guarded, 32, 3.0)
        print(f"  throughput, 32 in flight: direct {direct_max:.0f} requests/s, guarded {guarded_max:.0f} requests/s")
        direct.close()
        guarded.close()
    finally:
        for process in (guard, plain):
            process.terminate()
            process.wait(timeout=30)


# -- detection ---------------------------------------------------------------------------------------------


def detection(X: np.ndarray) -> None:
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


def false_alarms(X: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    clock = [0.0]
    detector = ProbingDetector(DetectorConfig(), clock=lambda: clock[0])
    alerts = []
    for i in range(10_000):
        clock[0] += 0.01  # 20 keys, 5 queries per second each
        alerts += detector.observe(f"key{i % 20}", X[rng.integers(len(X))][None, :])
    print(f"false alarms over 10,000 normal queries (20 keys, 5/s each): {len(alerts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["local", "upstream", "both"], default="both")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/guarded rounds")
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--serve-plain", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain, args.port)
        return
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0).fit(X, y)
    if not args.skip_detection:
        detection(X)
        false_alarms(X)
    model_path = str(Path(tempfile.mkdtemp()) / "digits.joblib")
    joblib.dump(model, model_path)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    import uvloop

    for mode in ("local", "upstream") if args.mode == "both" else (args.mode,):
        uvloop.run(compare(mode, model_path, X, args))


if __name__ == "__main__":
    main()
