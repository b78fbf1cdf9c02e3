"""A model too large for the dense history: seeded synthetic rows x 1,000 features x 100 classes.

With p = 100 x 1001 = 100,100 parameters the exact profile's p x p inverse would take 80 GB, so
``train --history-budget 1GiB`` picks a smaller profile. Then, in this one process, for each
forget ratio: Mini-Unlearning with ``tol=1e-3`` (certified) and retraining from scratch on R
(the judge, Newton-CG to ||grad|| <= 1e-9), timed in the same process so their ratio is fair. Mini's
time is the median of ``--repeats`` runs of the same request.

    PYTHONPATH=src .venv/bin/python benchmarks/large_model.py                       # 100,000 x 1,000 x 100
    PYTHONPATH=src .venv/bin/python benchmarks/large_model.py --rows 20000 --features 200 --classes 20
    PYTHONPATH=src .venv/bin/python benchmarks/large_model.py --profile kron:k=28 --out benchmarks/results/large_model-kron

writes ``benchmarks/results/large_model/results.json`` and ``results.md``. ``peak_rss_bytes`` of a
request is the service's measurement for that request; ``process_peak_rss_bytes`` is the kernel's
maximum resident set of the whole process (data generation, training and every request).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from miniunlearn.core.text import parse_bytes
from miniunlearn.data import load_dataset
from miniunlearn.runs import train
from miniunlearn.service import forget
from miniunlearn.service.requests import random_forget_ids

RESULTS = Path(__file__).resolve().parent / "results" / "large_model"


def process_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's shape and penalty (also read by ``classblock_study.py``)."""
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--l2", type=float, default=1e-3)


def model_spec(args) -> str:
    return f"synthetic:n_samples={args.rows},n_features={args.features},n_classes={args.classes},seed=0"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--budget", default="1GiB")
    parser.add_argument("--profile", default="auto", help="history profile (auto: the best that fits --budget)")
    parser.add_argument("--ratios", default="0.01,0.1")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3, help="Mini-Unlearning runs per request (median time)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = model_spec(args)
    start = time.perf_counter()
    dataset = load_dataset(spec)
    load_s = time.perf_counter() - start
    def write():
        mini_meta, training = state["history"], state["training"]
        payload = {
            "spec": spec, "l2": args.l2, "history_budget": args.budget, "tol": args.tol,
            "n_train": dataset.n_train, "n_params": rows_out[0]["n_params"] if rows_out else None,
            "dense_exact_bytes": 8 * (args.classes * (args.features + 1)) ** 2,
            "history": mini_meta, "training": training, "data_load_s": load_s,
            "process_peak_rss_bytes": process_peak_rss(),
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                        "load_average": os.getloadavg()},
            "rows": rows_out,
        }
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        def split(kinds):
            return "" if not kinds else " / ".join(f"{kinds[k]:.0f}" for k in ("gradient", "hvp", "line_search",
                                                                               "certificate"))

        lines = [f"# Large model: {spec}, l2 {args.l2:g}, --history-budget {args.budget}, tol {args.tol:g}", "",
                 (f"p = {payload['n_params']:,} (dense exact profile: {payload['dense_exact_bytes'] / 2**30:.1f} GiB); "
                 f"history profile `{mini_meta['profile_spec']}`: {mini_meta['profile_bytes'] / 2**20:.1f} MiB, "
                 f"built in {mini_meta['time_s']:.1f} s; training {training['passes']:.0f} passes, "
                 f"{training['time_s']:.0f} s; process peak RSS {payload['process_peak_rss_bytes'] / 2**30:.2f} GiB."), "",
                 ("| ratio | method | passes over R | (g / hvp / ls / cert) | relative residual | certified | time (s) | speedup vs retrain "
                 "| peak RSS (GiB) |"), "|---:|---|---:|---|---:|---|---:|---:|---:|"]
        for r in rows_out:
            rss = r["peak_rss_bytes"]
            lines.append(f"| {r['ratio']:.0%} | {r['method']} | {r['passes_retained']:.1f} | {split(r.get('passes_by_kind'))} "
                         f"| {r['relative_residual']:.2e} "
                         f"| {r['certified']} | {r['time_s']:.1f} | {r['speedup_vs_retrain']:.1f}x "
                         f"| {'' if rss is None else f'{rss / 2**30:.2f}'} |")
        (out / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))

    rows_out = []
    state: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = train(dataset, args.l2, Path(tmp) / "run", profile=args.profile,
                    history_budget=parse_bytes(args.budget))
        mini_meta = run.meta["history"]["mini"]
        training = run.meta["training"]
        state.update(history=mini_meta, training=training)
        print(f"trained: {training['passes']:.0f} passes, {training['time_s']:.1f} s; history {mini_meta['profile_spec']} "
              f"{mini_meta['profile_bytes']} bytes, built in {mini_meta['time_s']:.1f} s", flush=True)
        w_T = run.theta()
        for ratio in (float(r) for r in args.ratios.split(",")):
            ids = random_forget_ids(dataset.n_train, ratio, 1000)
            minis = [forget(run, ids, "mini", tol=args.tol, ledger=False) for _ in range(args.repeats)]
            mini_times = sorted(m.stats["time_s"] for m in minis)
            mini = minis[0]
            mini.stats["time_s"] = statistics.median(mini_times)
            print(f"{ratio:.0%} mini: {mini.stats['passes_retained']:.1f} passes, {mini.stats['time_s']:.1f} s, "
                  f"certified {mini.stats.get('converged')}", flush=True)
            retrain = forget(run, ids, "retrain", ledger=False)
            print(f"{ratio:.0%} retrain: {retrain.stats['passes_retained']:.1f} passes, "
                  f"{retrain.stats['time_s']:.1f} s", flush=True)
            w_R = retrain.theta
            scale = float((w_R - w_T).norm())
            for method, result in (("mini", mini), ("retrain", retrain)):
                s = result.stats
                rows_out.append({
                    "dataset": spec, "method": method, "ratio": ratio,
                    "profile": mini_meta["profile_spec"] if method == "mini" else None,
                    "n_params": run.model.n_params,
                    "history_bytes": mini_meta["profile_bytes"] if method == "mini" else 0,
                    "passes_retained": s["passes_retained"], "passes_forget": s.get("passes_forget"),
                    "passes_by_kind": s.get("passes_by_kind"), "history_load_s": s.get("history_load_s"),
                    "relative_residual": float((result.theta - w_R).norm()) / scale,
                    "certificate_relative": s.get("certified_relative"), "certified": s.get("converged"),
                    "time_s": s["time_s"], "times_s": mini_times if method == "mini" else [s["time_s"]],
                    "speedup_vs_retrain": retrain.stats["time_s"] / s["time_s"],
                    "passes_ratio_vs_retrain": retrain.stats["passes_retained"] / max(s["passes_retained"], 1e-12),
                    "peak_rss_bytes": s.get("peak_rss_bytes"),
                })
            write()
if __name__ == "__main__":
    main()
