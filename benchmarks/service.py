"""The deletion service under load: `miniunlearn serve` against one process per request and a scikit-learn refit.

On a Fashion-MNIST run (l2 1e-3; keys are row numbers, so one "user" is one row):

1. ``single`` -- sequential 1-user requests at ``tol 1e-3``, each timed from POST to ``done`` as
   a client sees it (polling ``GET /v1/deletions/{id}`` every 5 ms).
2. ``stream`` -- 8 concurrent clients send 200 deletion requests of 1-20 users each (disjoint
   sets drawn with a seed used nowhere else); each client waits for ``done`` before its next
   request. Throughput = requests / wall time; latency POST -> done per request.
3. ``large`` -- then one 10 % and one 50 % request (of the training rows), end to end.
4. ``cli`` -- the first ``--cli-requests`` requests of the same stream through ``miniunlearn
   forget RUN --keys FILE --out DIR --tol 1e-3``, one process per request (on a fresh copy of
   the run, one after the other: the ledger lock serialises them anyway). Throughput = requests /
   wall time of that prefix.
5. ``sklearn`` -- for the 10 % and 50 % requests: ``LogisticRegression(solver="newton-cg",
   warm_start=True)`` refit on the kept rows from the model served before the request (the same
   objective: a constant feature column for the penalised intercept, ``C = 1 / (lambda |R|)``),
   fit time only, at the smallest ``max_iter`` whose result is as close to the service's model as
   the service's certificate (``<= tol * ||w - w_before||``).

Writes ``benchmarks/results/service/results.json`` and ``results.md``. Run with the machine to itself:

    ../shared/tools/exclusive .venv/bin/python benchmarks/service.py --run runs/fm-1e-3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json
from miniunlearn.runs import open_run
from miniunlearn.service.ledger import Ledger
from miniunlearn.service.requests import write_keys_file
from sklearn_refit import warm_refit

RESULTS = Path(__file__).resolve().parent / "results" / "service"
SEED = 2718281  # forget sets: a seed no other benchmark or test uses
SKLEARN_MAX_ITER = 32  # the largest max_iter tried
ROOT = Path(__file__).resolve().parents[1]
MINIUNLEARN = [sys.executable, "-m", "miniunlearn"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen([*MINIUNLEARN, "serve", str(run_dir), "--port", str(port), "--log-level", "warning",
                                "--max-names", "1000000", "--max-body-bytes", str(64 << 20)],
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, "MINIUNLEARN_NO_PROGRESS": "1"})
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url, time.perf_counter() - start
        except httpx.HTTPError:
            time.sleep(0.2)


def delete_and_wait(client: httpx.Client, keys: list[str], poll: float = 0.005) -> dict:
    """POST one deletion and poll until it is done; the status with the client-side latency."""
    start = time.perf_counter()
    answer = client.post("/v1/deletions", json={"keys": keys, "tol": 1e-3})
    if answer.status_code != 202:
        raise SystemExit(f"deletion refused: {answer.status_code} {answer.text}")
    request_id = answer.json()["id"]
    while True:
        status = client.get(f"/v1/deletions/{request_id}").json()
        if status["status"] in ("done", "failed"):
            if status["status"] == "failed":
                raise SystemExit(f"deletion failed: {status['error']}")
            return {**status, "latency_s": time.perf_counter() - start}
        time.sleep(poll)


def percentiles(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"n": int(values.size), "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max())}


def draw_requests(run, n_single: int, n_stream: int, rng) -> tuple[list, list, list, list]:
    keys = run.keys_of(np.arange(run.n_train))
    order = rng.permutation(run.n_train)
    single = [[keys[i]] for i in order[:n_single]]
    at, streams = n_single, ([], [])
    for stream in streams:
        for _ in range(n_stream):
            size = int(rng.integers(1, 21))
            stream.append([keys[i] for i in order[at:at + size]])
            at += size
    large = []
    for share in (0.10, 0.50):
        size = int(round(share * run.n_train))
        large.append([keys[i] for i in order[at:at + size]])
        at += size
    return single, *streams, large


def run_stream(url: str, stream: list, clients: int) -> tuple[list, float]:
    results, lock, work = [], threading.Lock(), list(enumerate(stream))

    def client():
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not work:
                        return
                    _, keys = work.pop(0)
                status = delete_and_wait(http, keys)
                with lock:
                    results.append(status)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def run_open_stream(url: str, stream: list, clients: int) -> tuple[list, float]:
    """Each client posts its share of the stream without waiting, then polls its requests until done."""
    results, lock = [], threading.Lock()

    def client(share):
        with httpx.Client(base_url=url, timeout=600) as http:
            sent = []
            for keys in share:
                answer = http.post("/v1/deletions", json={"keys": keys, "tol": 1e-3})
                if answer.status_code != 202:
                    raise SystemExit(f"deletion refused: {answer.status_code} {answer.text}")
                sent.append((answer.json()["id"], time.perf_counter()))
            for request_id, posted in sent:
                while True:
                    status = http.get(f"/v1/deletions/{request_id}").json()
                    if status["status"] in ("done", "failed"):
                        break
                    time.sleep(0.005)
                if status["status"] == "failed":
                    raise SystemExit(f"deletion failed: {status['error']}")
                with lock:
                    results.append({**status, "latency_s": time.perf_counter() - posted})

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(stream[c::clients],)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def stream_summary(results: list, wall: float, clients: int) -> dict:
    return {"requests": len(results), "clients": clients, "wall_s": wall, "throughput_rps": len(results) / wall,
            "solves": len({r["ledger_request"] for r in results}), "keys": int(sum(r["n_keys"] for r in results)),
            "latency": percentiles([r["latency_s"] for r in results]),
            "max_certified_relative": max(r["certified_relative"] for r in results)}


def cli_stream(run_dir: Path, requests: list, work: Path) -> dict:
    """One ``miniunlearn forget`` process per request, one after the other."""
    times = []
    start = time.perf_counter()
    for i, keys in enumerate(requests):
        write_keys_file(work / f"keys-{i}.txt", keys)
        t0 = time.perf_counter()
        subprocess.run([*MINIUNLEARN, "--no-progress", "forget", str(run_dir), "--keys", str(work / f"keys-{i}.txt"),
                        "--method", "mini", "--tol", "1e-3", "--out", str(work / f"out-{i}"), "--json"],
                       check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MINIUNLEARN_NO_PROGRESS": "1"})
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {"requests": len(requests), "wall_s": wall, "throughput_rps": len(requests) / wall, **percentiles(times)}


def model_matrix(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    return np.hstack([arrays["weight"], arrays["bias"][:, None]]).astype(np.float64)


def sklearn_refit(run, forgotten: np.ndarray, W_before: np.ndarray, W_service: np.ndarray, target: float) -> dict:
    """Warm-started newton-cg on the kept rows: fit time at the smallest max_iter within ``target`` of the service."""
    fit = warm_refit(run, forgotten, W_before, W_service, target, "newton-cg", max_iter_cap=SKLEARN_MAX_ITER)
    return {"max_iter": fit["max_iter"], "fit_s": fit["time_s"], "distance_to_service": fit["distance"],
            "target": target, "reached": fit["reached"]}


def large_requests(url: str, run_dir: Path, large: list) -> list[dict]:
    rows = []
    with httpx.Client(base_url=url, timeout=1200) as http:
        for keys in large:
            before = http.get("/v1/model").json()
            status = delete_and_wait(http, keys, poll=0.02)
            rows.append({"share": round(len(keys) / open_run(run_dir).n_train, 3), "n_keys": len(keys),
                         "latency_s": status["latency_s"], "solve_s": status["timings"]["solve_s"],
                         "certificate": status["certificate"], "certified_relative": status["certified_relative"],
                         "before_ledger_request": before["ledger_request"], "ledger_request": status["ledger_request"]})
    return rows


def sklearn_rows(run_dir: Path, large_rows: list[dict]) -> None:
    run = open_run(run_dir)
    with Ledger.open(run) as book:
        for row in large_rows:
            record = book.request(row["ledger_request"])
            before = row["before_ledger_request"]
            W_before = model_matrix(book.request(before).model_path) if before else model_matrix(run.base.dir /
                                                                                                  "model.safetensors")
            W_service = model_matrix(record.model_path)
            target = 1e-3 * float(np.linalg.norm(W_service - W_before))
            row["sklearn"] = sklearn_refit(run, record.cumulative_ids(), W_before, W_service, target)
            row["speedup_vs_sklearn"] = row["sklearn"]["fit_s"] / row["latency_s"]
            print(f"  sklearn {row['share']:.0%}: {row['sklearn']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a trained Fashion-MNIST run (l2 1e-3); trained if missing")
    parser.add_argument("--single", type=int, default=20, help="sequential 1-user requests")
    parser.add_argument("--stream", type=int, default=200, help="requests in the concurrent stream")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cli-requests", type=int, default=12, help="requests of the stream sent through the CLI")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--dataset", default="fashion-mnist", help="to train the run when it is missing")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results.json and results.md go")
    args = parser.parse_args()
    run_path = Path(args.run)
    if not (run_path / "run.json").exists():
        subprocess.run([*MINIUNLEARN, "--no-progress", "train", "--dataset", args.dataset, "--l2", "1e-3", "--out",
                        str(run_path)], check=True, stdout=subprocess.DEVNULL)
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "run": str(run_path), "seed": SEED}
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        tmp = Path(tmp)
        served = tmp / "served"
        shutil.copytree(run_path, served, ignore=shutil.ignore_patterns("ledger.*", "serve"))
        run = open_run(served)
        report["n_train"] = run.n_train
        single, stream, open_stream, large = draw_requests(run, args.single, args.stream, np.random.default_rng(SEED))
        process, url, startup = start_server(served, tmp / "server.log")
        report["server_startup_s"] = startup
        print(f"server ready in {startup:.1f} s", flush=True)
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                delete_and_wait(http, single[0])  # first request: one-time costs (thread pools, allocations)
                singles = [delete_and_wait(http, keys) for keys in single[1:]]
            report["single"] = {**percentiles([s["latency_s"] for s in singles]),
                                "solve_s_p50": float(np.median([s["timings"]["solve_s"] for s in singles]))}
            print(f"single: {report['single']}", flush=True)
            report["stream"] = stream_summary(*run_stream(url, stream, args.clients), args.clients)
            print(f"stream (each client waits for done): {report['stream']}", flush=True)
            report["open_stream"] = stream_summary(*run_open_stream(url, open_stream, args.clients), args.clients)
            print(f"stream (clients post, then poll): {report['open_stream']}", flush=True)
            report["large"] = large_requests(url, served, large)
            print(f"large: {report['large']}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)
        if not args.skip_sklearn:
            sklearn_rows(served, report["large"])
        cli_run = tmp / "cli"
        shutil.copytree(run_path, cli_run, ignore=shutil.ignore_patterns("ledger.*", "serve"))
        report["cli"] = cli_stream(cli_run, stream[:args.cli_requests], tmp)
        print(f"cli: {report['cli']}", flush=True)
    report["targets"] = targets(report)
    atomic_write_json(args.results / "results.json", report)
    atomic_write_bytes(args.results / "results.md", markdown(report).encode())
    print(markdown(report))


def targets(r: dict) -> dict:
    found = {"single_p50_le_1s": r["single"]["p50"] <= 1.0}
    for name in ("stream", "open_stream"):
        found[f"{name}_vs_cli_ratio"] = r[name]["throughput_rps"] / r["cli"]["throughput_rps"]
        found[f"{name}_ge_10x_cli"] = found[f"{name}_vs_cli_ratio"] >= 10
    for row in r["large"]:
        if "sklearn" in row:
            found[f"share_{row['share']}_ge_10x_sklearn"] = row["speedup_vs_sklearn"] >= 10
    return found


def markdown(r: dict) -> str:
    s, c, t = r["single"], r["cli"], r["targets"]
    mark = {True: "met", False: "**missed**"}
    lines = [
        f"# Deletion service benchmark ({r['run']}, l2 1e-3, tol 1e-3)", "",
        f"{r['n_train']} training rows; {r['machine']['cpus']} CPUs; server start-up (warm run) "
        f"{r['server_startup_s']:.1f} s. Latencies are POST -> `done` as a client sees it.", "",
        "| measurement | result | target |", "|---|---|---|",
        f"| 1-user request, end to end (n={s['n']}) | p50 {s['p50']:.3f} s, p95 {s['p95']:.3f} s, p99 {s['p99']:.3f} s "
        f"(solve p50 {s['solve_s_p50']:.3f} s) | p50 <= 1 s: {mark[t['single_p50_le_1s']]} |",
        *[f"| stream, {label}: {st['requests']} requests of 1-20 users, {st['clients']} clients | "
          f"{st['throughput_rps']:.2f} requests/s in {st['wall_s']:.1f} s ({st['solves']} solves); latency p50 "
          f"{st['latency']['p50']:.2f} s, p95 {st['latency']['p95']:.2f} s, p99 {st['latency']['p99']:.2f} s | "
          f">= 10x the CLI: {mark[t[name + '_ge_10x_cli']]} ({t[name + '_vs_cli_ratio']:.1f}x) |"
          for name, label in (("stream", "each client waits for done before its next request"),
                              ("open_stream", "clients post their requests, then poll"))
          for st in (r[name],)],
        f"| the CLI, one process per request (the stream's first {c['requests']} requests) | "
        f"{c['throughput_rps']:.3f} requests/s (p50 {c['p50']:.2f} s per request) | |",
    ]
    for row in r["large"]:
        sk = row.get("sklearn")
        key = f"share_{row['share']}_ge_10x_sklearn"
        skl = "not run" if sk is None else (f"{sk['fit_s']:.2f} s fit (max_iter {sk['max_iter']}"
                                            f"{'' if sk['reached'] else ', target not reached'})")
        verdict = "" if sk is None else f"{mark[t[key]]} ({row['speedup_vs_sklearn']:.1f}x)"
        lines.append(f"| {row['share']:.0%} request ({row['n_keys']} users), end to end | {row['latency_s']:.2f} s "
                     f"(solve {row['solve_s']:.2f} s, certified relative {row['certified_relative']:.1e}); "
                     f"scikit-learn newton-cg warm start: {skl} | >= 10x faster than the refit: {verdict} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
