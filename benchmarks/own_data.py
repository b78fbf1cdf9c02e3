"""Your own data at scale: a 1,000,000 x 50 CSV with a user-id column, in bounded memory.

A seeded CSV (``user_id``, 50 numeric features, a text label of three classes; about ten rows per
user) is generated once, then every step runs as its own command, as a user would run it, under
``/usr/bin/time -v`` -- the peak RSS is the kernel's maximum resident set size of the process
(pages of the float32 memory map included):

    miniunlearn train   --dataset csv:path=F,target=label,id=user_id --l2 L2 --out RUN   (reads the CSV twice
                        into a float32 memory map in a fresh cache directory, then trains)
    miniunlearn forget  RUN --keys USERS --method mini --refine 1 --out DIR            (100 users, by key)
    miniunlearn predict DIR --data csv:path=F,id=user_id --out predictions.csv         (every row, streamed)

    .venv/bin/python benchmarks/own_data.py                    # 1,000,000 x 50 (a few minutes)
    .venv/bin/python benchmarks/own_data.py --rows 100000      # a quick look

writes ``benchmarks/results/own_data/results.json`` and ``results.md``. The target: training
from the CSV within 1.5 GiB peak RSS.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import Runner  # noqa: E402  (the benchmark scripts share their measured-command runner)

RESULTS = Path(__file__).resolve().parent / "results" / "own_data"
TARGET_BYTES = int(1.5 * 2**30)
CLASSES = np.array(["bronze", "silver", "gold"])


def write_csv(path: Path, rows: int, features: int, seed: int, chunk: int = 100_000) -> None:
    """The seeded table, written in chunks (the generator never holds more than ``chunk`` rows)."""
    import pandas as pd

    teacher = np.random.default_rng([seed, 0]).normal(size=(features, len(CLASSES))) / np.sqrt(features) * 2
    users = max(1, rows // 10)
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        for index, start in enumerate(range(0, rows, chunk)):
            rng = np.random.default_rng([seed, index + 1])
            m = min(chunk, rows - start)
            X = rng.normal(size=(m, features)) * rng.uniform(0.5, 20, size=features) + rng.normal(0, 5, size=features)
            logits = (X - X.mean(0)) / X.std(0) @ teacher + rng.gumbel(size=(m, len(CLASSES)))
            frame = pd.DataFrame(X, columns=[f"f{j:02d}" for j in range(features)])
            frame.insert(0, "user_id", rng.integers(100_000, 100_000 + users, size=m))
            frame["label"] = CLASSES[logits.argmax(axis=1)]
            frame.to_csv(handle, header=start == 0, index=False, float_format="%.6g")
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--users-to-forget", type=int, default=100)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads per process")
    parser.add_argument("--work", default=None, help="scratch folder (CSV, cache, runs); default a temporary one")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    from miniunlearn.core.storage import atomic_write_bytes, atomic_write_json
    from miniunlearn.runs import open_run

    work = Path(args.work or tempfile.mkdtemp(prefix="miniunlearn-own-data-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / f"cache-{time.time_ns()}"  # fresh: the memory map is built by the measured command
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MINIUNLEARN_NO_PROGRESS": "1",
           "MINIUNLEARN_CACHE": str(cache)}

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    csv = work / f"users-{args.rows}x{args.features}-seed{args.seed}.csv"
    if not csv.exists():
        log(f"writing {csv}")
        start = time.perf_counter()
        write_csv(csv, args.rows, args.features, args.seed)
        log(f"wrote {csv.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.0f} s")
    run_cmd = Runner(work, env, log)
    spec = f"csv:path={csv},target=label,id=user_id"
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    train = run_cmd("train", ["train", "--dataset", spec, "--l2", str(args.l2), "--out", str(work / "run"),
                              "--overwrite", "--json"])
    run = open_run(work / "run")
    keys = list(dict.fromkeys(run.keys_of(np.arange(0, run.n_train, max(1, run.n_train // args.users_to_forget)))))
    keys_file = work / "users.txt"
    atomic_write_bytes(keys_file, "".join(f"{k}\n" for k in keys[:args.users_to_forget]).encode())
    forget = run_cmd("forget", ["forget", str(work / "run"), "--keys", str(keys_file), "--method", "mini",
                                "--refine", "1", "--out", str(work / "mini"), "--overwrite", "--json"])
    predict = run_cmd("predict", ["predict", str(work / "mini"), "--data", f"csv:path={csv},id=user_id",
                                  "--out", str(work / "predictions.csv"), "--json"])
    meta = run.meta
    result = {
        "command": f"python benchmarks/own_data.py --rows {args.rows} --features {args.features}",
        "started": started, "machine": platform.platform(),
        "cpus": os.cpu_count(), "threads": args.threads, "load_average_before": load_before,
        "csv": {"rows": args.rows, "features": args.features, "bytes": csv.stat().st_size, "users": args.rows // 10},
        "target_peak_rss_bytes": TARGET_BYTES,
        "train": {"peak_rss_bytes": train["peak_rss_bytes"], "command_wall_s": train["command_wall_s"],
                  "training_time_s": meta["training"]["time_s"], "n_train": meta["dataset"]["n_train"],
                  "n_test": meta["dataset"]["n_test"], "test_accuracy": meta["metrics"]["test_accuracy"],
                  "grad_norm": meta["training"].get("grad_norm"),
                  "within_target": train["peak_rss_bytes"] <= TARGET_BYTES},
        "forget": {"users": len(keys[:args.users_to_forget]), "rows": forget["payload"]["n_forget"],
                   "peak_rss_bytes": forget["peak_rss_bytes"], "command_wall_s": forget["command_wall_s"],
                   "time_s": forget["payload"]["time_s"], "certificate": forget["payload"].get("certificate")},
        "predict": {"rows": predict["payload"]["rows"], "peak_rss_bytes": predict["peak_rss_bytes"],
                    "command_wall_s": predict["command_wall_s"]},
    }
    out = Path(args.out)
    atomic_write_json(out / "results.json", result)
    atomic_write_bytes(out / "results.md", report(result).encode())
    log(f"wrote {out / 'results.md'}")
    print(report(result))


def report(r: dict) -> str:
    gib = 2**30
    t, f, p = r["train"], r["forget"], r["predict"]
    return "\n".join([
        "# Your own data at scale: a CSV with a user-id column",
        "",
        f"`{r['command']}` on {r['machine']} ({r['cpus']} CPUs, {r['threads']} thread per process, load average "
        f"{r['load_average_before'][0]:.1f} before; a shared machine). Each step is its own command under "
        "`/usr/bin/time -v`; peak RSS is the kernel's maximum resident set size.",
        "",
        f"CSV: {r['csv']['rows']:,} rows x {r['csv']['features']} features + `user_id` + a text label "
        f"(3 classes), {r['csv']['bytes'] / 2**20:.0f} MiB.",
        "",
        "| step | peak RSS | wall time | notes |",
        "|---|---|---|---|",
        f"| `train --dataset csv:...` (CSV -> float32 memory map -> Newton-CG + history) | "
        f"**{t['peak_rss_bytes'] / gib:.2f} GiB** (target {r['target_peak_rss_bytes'] / gib:.1f} GiB: "
        f"{'met' if t['within_target'] else 'MISSED'}) | {t['command_wall_s']:.0f} s | "
        f"{t['n_train']:,} training rows, training itself {t['training_time_s']:.0f} s, test accuracy "
        f"{t['test_accuracy']:.3f} |",
        f"| `forget --keys` ({f['users']} users) | {f['peak_rss_bytes'] / gib:.2f} GiB | {f['command_wall_s']:.0f} s | "
        f"{f['rows']} rows, method {f['time_s']:.2f} s, certificate {f['certificate']:.2e} |",
        f"| `predict` (every row, streamed to CSV) | {p['peak_rss_bytes'] / gib:.2f} GiB | {p['command_wall_s']:.0f} s | "
        f"{p['rows']:,} rows |",
        "",
    ])


if __name__ == "__main__":
    main()
