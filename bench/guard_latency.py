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
4. Query logging: each latency run has a second guard with ``[detector] record_queries = false`` (the
   default keeps every key's records and answers for incident reports) in the same alternating rounds, and
   prints the on / off ratio of its latency and CPU per request.
5. The verbatim filter of ``POST /v1/generate``: the n-gram index of 10,000 and 100,000 generated texts
   (build time, size, peak memory; in a GPT-2 tokenizer's tokens and in words), the filter's own time per
   answer, and ``/v1/generate`` through in-process guards of the same model, filter off, off again (the
   noise floor) and on, requests alternating between them, with the on / off ratio.

Run: ``flock /tmp/ms-bench.lock .venv/bin/python bench/guard_latency.py`` (about five minutes);
``--mode local|upstream|both``, ``--rate``, ``--seconds`` and ``--rounds`` change the latency runs,
``--corpus-sizes``, ``--ngram`` and ``--generate-rounds`` the filter's; ``--skip-latency``,
``--skip-detection`` and ``--skip-generation`` leave parts out.
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


def _start_guard(name: str, source: list[str], policy_text: str, directory: Path) -> tuple:
    """A guard process of its own store and key; the port, the process and the request headers."""
    store = str(directory / f"{name}.db")
    with open_store(store) as opened:
        key = issue_key(opened, "bench")
    policy = directory / f"{name}.toml"
    policy.write_text(policy_text)
    port = free_port()
    command = [sys.executable, "-m", "membershield", "guard", *source, "--policy", str(policy)]
    process = start([*command, "--port", str(port), "--store", store], port)
    return port, process, {"Authorization": f"Bearer {key}"}


async def compare(mode: str, model_path: str, records: np.ndarray, args: argparse.Namespace) -> None:
    """The plain endpoint against two guards of the same model, the default one (``[detector]
    record_queries`` on: each key's records and answers kept for incident reports) and one with
    ``record_queries = false``, in alternating rounds."""
    directory = Path(tempfile.mkdtemp())
    base = "[output]\nclip_top1 = 0.9\nround_decimals = 2\n[limits]\nrequests_per_minute = 1000000\n"
    plain_port = free_port()
    plain = start([sys.executable, __file__, "--serve-plain", model_path, "--port", str(plain_port)], plain_port)
    source = ["--upstream", f"http://127.0.0.1:{plain_port}/predict"] if mode == "upstream" else ["--model", model_path]
    processes = [plain]
    try:
        targets = {"direct": (Target(plain_port, "/predict", {}, records), [plain.pid])}
        for name, extra in (("guarded", ""), ("unlogged", "[detector]\nrecord_queries = false\n")):
            port, process, headers = _start_guard(name, source, base + extra, directory)
            processes.append(process)
            pids = [process.pid] + ([plain.pid] if mode == "upstream" else [])
            targets[name] = (Target(port, "/v1/predict", headers, records), pids)
        for target, _ in targets.values():  # warm-up: connections, caches, the guard's cost estimates
            await target.prepare()
            await open_loop(target, args.rate, 2.0)
        results: dict[str, list] = {name: [] for name in targets}
        rates: dict[str, list] = {name: [] for name in targets}
        cpu = dict.fromkeys(targets, 0.0)
        for _ in range(args.rounds):
            for name, (target, pids) in targets.items():
                await target.prepare()
                before = sum(cpu_seconds(pid) for pid in pids)
                latencies, achieved = await open_loop(target, args.rate, args.seconds)
                cpu[name] += sum(cpu_seconds(pid) for pid in pids) - before
                results[name].append(latencies)
                rates[name].append(achieved)
        n = args.rounds * int(args.rate * args.seconds)
        print(f"{mode} mode, {args.rate:g} requests/s of one record, {args.rounds} x {args.seconds:g} s alternating:")
        both = {name: np.concatenate(values) for name, values in results.items()}
        for name in targets:
            report(name, both[name], float(np.mean(rates[name])), cpu[name] / n * 1000)
        for name in ("guarded", "unlogged"):
            p50 = np.percentile(both[name], 50) - np.percentile(both["direct"], 50)
            p99 = np.percentile(both[name], 99) - np.percentile(both["direct"], 99)
            print(f"     added ({name}): p50={p50:.2f} ms p99={p99:.2f} ms (target: p99 under 2 ms)")
        ratio = {q: np.percentile(both["guarded"], q) / np.percentile(both["unlogged"], q) for q in (50, 99)}
        print(
            f"  record_queries on / off: p50 x{ratio[50]:.2f}, p99 x{ratio[99]:.2f},"
            f" server CPU per request x{cpu['guarded'] / cpu['unlogged']:.2f}"
        )
        maxima = {}
        for name, (target, _) in targets.items():
            await target.prepare(32)
            maxima[name] = await closed_loop(target, 32, 3.0)
            target.close()
        print("  throughput, 32 in flight: " + ", ".join(f"{k} {v:.0f} requests/s" for k, v in maxima.items()))
    finally:
        for process in reversed(processes):
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


# -- text generation: the verbatim filter ------------------------------------------------------------------


def text_model(directory: Path, n_texts: int) -> tuple[Path, list[str]]:
    """``n_texts`` generated records (the test suite's generator) and a GPT-2 of 4 layers x 128 with a BPE
    tokenizer trained on them. Its weights are random: what the filter costs does not depend on what the
    model learnt, and answers that repeat no corpus n-gram take the filter's whole path and are redacted."""
    import torch
    from transformers import GPT2LMHeadModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.text_fixtures import build_tokenizer, gpt2_config, make_corpus, save_lm

    texts = make_corpus(n_texts, seed=5)
    tokenizer = build_tokenizer(texts[:20_000], vocab_size=2000)
    torch.manual_seed(0)
    config = gpt2_config(len(tokenizer), tokenizer.eos_token_id, n_embd=128, n_layer=4, n_positions=256)
    return save_lm(GPT2LMHeadModel(config), tokenizer, directory / "lm"), texts


def index_sizes(lm, texts: list[str], sizes: list[int], n: int) -> None:
    """Build time, size and peak memory of the index, in the model's tokens and in words (upstream)."""
    import tracemalloc

    from membershield.guard.verbatim import index_texts

    for size in sizes:
        part = texts[:size]
        start = time.perf_counter()
        for i in range(0, size, 2048):
            lm.encode(part[i : i + 2048])
        encoding = time.perf_counter() - start
        for unit, model in (("tokens", lm), ("words", None)):
            built = index_texts(part, n, "refuse", model)
            tracemalloc.start()
            index_texts(part, n, "refuse", model)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            index = built.index
            spent = f" (encoding {encoding:.1f} s of it)" if model is not None else ""
            print(
                f"  index of {size:,} texts in {unit} ({index.tokens:,} {unit}): {len(index):,} distinct {n}-grams,"
                f" built in {built.build_seconds:.2f} s{spent}, {index.nbytes / 2**20:.1f} MiB,"
                f" peak {peak / 2**20:.0f} MiB of Python/numpy memory while building"
            )


def lookup_cost(lm, texts: list[str], n: int, answers: int = 2000, length: int = 32) -> None:
    """The filter's own time per answer: ``length`` random answer tokens after an 8-token prompt."""
    from membershield.guard.verbatim import index_texts

    verbatim = index_texts(texts, n, "refuse", lm)
    rng = np.random.default_rng(0)
    vocabulary = len(lm.tokenizer)
    cases = [
        (rng.integers(0, vocabulary, 8).tolist(), rng.integers(0, vocabulary, length).tolist()) for _ in range(answers)
    ]
    start = time.perf_counter()
    for prompt, answer in cases:
        verbatim.check_tokens(prompt, answer, "text")
    per = (time.perf_counter() - start) / answers * 1e6
    print(f"  filter check of a {length}-token answer against {len(texts):,} texts: {per:.0f} us (mean of {answers})")


def generate_overhead(lm_path: Path, corpus: Path, prompts: list[str], rounds: int, n: int) -> None:
    """POST /v1/generate through in-process guards of the same model, filter off (twice) and on (refuse),
    requests alternating between them; the model's generation is most of each request."""
    from fastapi.testclient import TestClient

    from membershield.guard.app import create_app, guard_config
    from membershield.guard.policy import policy_from_dict

    directory = Path(tempfile.mkdtemp())
    base = {"limits": {"requests_per_minute": 1_000_000, "daily_query_budget": 10**9}}
    # a second guard without the filter: the spread between two identical guards is the noise floor
    filtering = {**base, "generation": {"corpus": str(corpus), "verbatim_ngram": n}}
    policies = {"off": base, "off, again": base, "on": filtering}
    clients, times = {}, {name: [] for name in policies}
    for name, policy in policies.items():
        store = str(directory / f"{name}.db")
        with open_store(store) as opened:
            key = issue_key(opened, "bench")
        app = create_app(guard_config(str(lm_path), None, policy_from_dict(policy), store))
        clients[name] = TestClient(app, headers={"Authorization": f"Bearer {key}"}).__enter__()
        if app.state.verbatim is not None:
            print(f"  guard start-up: corpus indexed in {app.state.verbatim.build_seconds:.1f} s")
    try:
        clients["off"].post("/v1/generate", json={"prompt": prompts[0], "max_new_tokens": 32})  # warm-up
        # prompts whose answers the filter passes: a refusal skips the redaction after it, and would flatter it
        checked = {p: clients["on"].post("/v1/generate", json={"prompt": p, "max_new_tokens": 32}) for p in prompts}
        prompts = [p for p, answer in checked.items() if answer.status_code == 200][:20]
        print(
            f"  {len(checked) - sum(a.status_code == 200 for a in checked.values())} of {len(checked)} prompts refused"
        )
        for round_ in range(rounds):
            order = list(clients.items()) if round_ % 2 == 0 else list(reversed(clients.items()))
            for prompt in prompts:
                for name, http in order:
                    start = time.perf_counter()
                    answer = http.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": 32})
                    times[name].append((time.perf_counter() - start) * 1000)
                    if answer.status_code != 200:
                        raise RuntimeError(f"/v1/generate answered {answer.status_code}: {answer.text}")
    finally:
        for http in clients.values():
            http.__exit__(None, None, None)
    p50 = {name: float(np.percentile(values, 50)) for name, values in times.items()}
    mean = {name: float(np.mean(values)) for name, values in times.items()}
    for name in policies:
        print(
            f"  /v1/generate, filter {name:>10}: n={len(times[name])} p50={p50[name]:.1f} ms mean={mean[name]:.1f} ms"
        )
    for name in ("on", "off, again"):
        print(f"  filter {name} / off: p50 x{p50[name] / p50['off']:.3f}, mean x{mean[name] / mean['off']:.3f}")


def verbatim_bench(args: argparse.Namespace) -> None:
    import torch

    from membershield.text.model import load_language_model

    torch.set_num_threads(1)
    sizes = [int(size) for size in args.corpus_sizes.split(",")]
    directory = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    lm_path, texts = text_model(directory, max(sizes))
    made = time.perf_counter() - start
    print(f"verbatim filter ([generation] verbatim_ngram = {args.ngram}); corpus and model made in {made:.0f} s:")
    lm = load_language_model(lm_path)
    index_sizes(lm, texts, sizes, args.ngram)
    lookup_cost(lm, texts, args.ngram)
    corpus = directory / "corpus.jsonl"
    corpus.write_text("".join(orjson.dumps({"text": text}).decode() + "\n" for text in texts))
    # the first 8 tokens of corpus texts: a random model's answers rarely continue them
    prompts = [lm.tokenizer.decode(lm.encode([text])[0][:8]) for text in texts[:40]]
    generate_overhead(lm_path, corpus, prompts, args.generate_rounds, args.ngram)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["local", "upstream", "both"], default="both")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/guarded rounds")
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--skip-latency", action="store_true", help="skip the /v1/predict latency runs")
    parser.add_argument("--skip-generation", action="store_true", help="skip the verbatim filter's measurements")
    parser.add_argument("--corpus-sizes", default="10000,100000", help="texts in the indexed corpora")
    parser.add_argument("--ngram", type=int, default=8, help="[generation] verbatim_ngram")
    parser.add_argument("--generate-rounds", type=int, default=10, help="rounds of 20 prompts per guard")
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

    if not args.skip_latency:
        for mode in ("local", "upstream") if args.mode == "both" else (args.mode,):
            uvloop.run(compare(mode, model_path, X, args))
    if not args.skip_generation:
        verbatim_bench(args)


if __name__ == "__main__":
    main()
